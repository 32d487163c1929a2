"""Fine-tuning examples: JSON Lines (`keras_gpt.data.jsonl`) tokenized once,
fitted to the context, cached, and padded into arrays for `fit`.

- `build_sft_examples(path, tokenizer, context_length)` -> `SFTExamples`:
  per line, the token ids (prompt, completion, end-of-text) and which of
  them the loss counts.
- `build_preference_pairs(path, tokenizer, context_length)` ->
  `PreferencePairs`: per line, the prompt's ids and the chosen and rejected
  completions' ids (each ending with end-of-text).

Fitting the context: an example keeps at most `context_length + 1` tokens
(the model reads all but the last and predicts all but the first). A
longer one loses the oldest tokens of its prompt (counted in `stats`
["truncated"]); if even then its learned part (a completion or assistant
turn, end-of-text included, or the longer of chosen and rejected) would not
fit beside one prompt token, i.e. if it has more than `context_length`
tokens, the file is refused with an error naming the line.

With `cache_dir`, the result is stored in `cache_dir/examples-*.npz`, keyed
by the file's bytes, the tokenizer and the context length, and read from
there the next time (as `keras_gpt.data.build_token_file` does for text).
"""

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from keras_gpt.data.fitting import tokenize_preferences, tokenize_sft
from keras_gpt.data.token_files import token_dtype
from keras_gpt.files import replace_atomically

FORMAT_VERSION = 1


class Sequences:
    """Ragged int sequences: one flat array and row offsets."""

    def __init__(self, values, offsets):
        self.values, self.offsets = np.asarray(values), np.asarray(offsets)

    @classmethod
    def from_rows(cls, rows, dtype):
        offsets = np.zeros(len(rows) + 1, np.int64)
        offsets[1:] = np.cumsum([len(r) for r in rows])
        values = (np.concatenate(rows).astype(dtype) if rows
                  else np.zeros(0, dtype))
        return cls(values, offsets)

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self):
        return np.diff(self.offsets)

    def take(self, indices):
        return Sequences.from_rows([self[i] for i in indices],
                                   self.values.dtype)


class _Examples:
    """What SFT examples and preference pairs share: lines, stats, split."""

    def __len__(self):
        return len(self.lines)

    def split(self, val_fraction=0.1, seed=0):
        """`(train, held out)`: a seeded random `val_fraction` of the lines
        (at least one) is held out.

        Raises:
            ValueError: fewer than 2 examples, or `val_fraction` outside
                (0, 1).
        """
        n = len(self)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"--val-fraction {val_fraction} must be in "
                             "(0, 1).")
        if n < 2:
            raise ValueError(f"{self.stats['file']} has {n} usable "
                             "example(s): at least 2 are needed, one held out "
                             "for validation.")
        held = min(n - 1, max(1, int(round(n * val_fraction))))
        order = np.random.default_rng(seed).permutation(n)
        return (self.take(np.sort(order[held:])),
                self.take(np.sort(order[:held])))


@dataclasses.dataclass
class SFTExamples(_Examples):
    """Tokenized SFT lines.

    Attributes:
        tokens: `Sequences` of ids: prompt (or chat turns), completion,
            end-of-text.
        learned: `Sequences` of 0/1, one per token: 1 where the loss
            counts it (completion or assistant turns, and their
            end-of-text).
        lines: The source line number of each example.
        pad_id: The id that pads rows (the end-of-text id).
        stats: `file`, `examples`, `truncated` (prompts cut from the left),
            `longest` (tokens).
    """

    tokens: Sequences
    learned: Sequences
    lines: np.ndarray
    pad_id: int
    stats: dict

    def take(self, indices):
        return SFTExamples(self.tokens.take(indices),
                           self.learned.take(indices), self.lines[indices],
                           self.pad_id, {**self.stats,
                                         "examples": len(indices)})

    def arrays(self, length=None):
        """`(tokens, weights)`: ids (N, length) int32, padded with `pad_id`,
        and the loss weight of each next-token target (N, length - 1)
        float32: `weights[i, t]` is 1 when `tokens[i, t + 1]` is learned,
        0 for prompt tokens and padding. `length` defaults to the longest
        example."""
        length = _length(length, int(self.tokens.lengths.max()))
        tokens = _pad(self.tokens, length, self.pad_id, np.int32)
        learned = _pad(self.learned, length, 0, np.float32)
        return tokens, learned[:, 1:]


@dataclasses.dataclass
class PreferencePairs(_Examples):
    """Tokenized preference lines.

    Attributes:
        prompts: `Sequences` of prompt ids (at least one: an empty prompt
            is the end-of-text id).
        chosen, rejected: `Sequences` of completion ids, each ending with
            the end-of-text id.
        lines, pad_id: As in `SFTExamples`.
        stats: `file`, `examples`, `truncated`, `identical` (pairs skipped
            because chosen == rejected) and `identical_lines` (the first
            ten), `longest`.
    """

    prompts: Sequences
    chosen: Sequences
    rejected: Sequences
    lines: np.ndarray
    pad_id: int
    stats: dict

    def take(self, indices):
        return PreferencePairs(
            self.prompts.take(indices), self.chosen.take(indices),
            self.rejected.take(indices), self.lines[indices], self.pad_id,
            {**self.stats, "examples": len(indices)})

    def arrays(self, length=None):
        """The pairs as a dict of arrays: `chosen` and `rejected` ids
        (N, length) int32 (prompt then completion, padded with `pad_id`),
        and `chosen_mask`, `rejected_mask` (N, length - 1) float32: 1 where
        the next-token target is a completion token. `length` defaults to
        the longest sequence."""
        whole = {name: [np.concatenate([self.prompts[i], part[i]])
                        for i in range(len(self))]
                 for name, part in (("chosen", self.chosen),
                                    ("rejected", self.rejected))}
        length = _length(length, max(max(len(r) for r in rows)
                                     for rows in whole.values()))
        out = {}
        for name, part in (("chosen", self.chosen),
                           ("rejected", self.rejected)):
            out[name] = np.full((len(self), length), self.pad_id, np.int32)
            mask = np.zeros((len(self), length - 1), np.float32)
            for i, row in enumerate(whole[name]):
                out[name][i, :len(row)] = row
                start = len(self.prompts[i])
                mask[i, start - 1:start - 1 + len(part[i])] = 1.0
            out[f"{name}_mask"] = mask
        return out


def build_sft_examples(path, tokenizer, context_length, cache_dir=None):
    """Reads and tokenizes an SFT JSON Lines file (see the module docstring).

    Args:
        path: The file (`keras_gpt.data.jsonl` lists the formats).
        tokenizer: A `keras_gpt.tokenizers.Tokenizer`.
        context_length: The model's context (examples keep at most
            `context_length + 1` tokens).
        cache_dir: Where to cache the result (None: no cache).

    Returns:
        `SFTExamples`.

    Raises:
        FileNotFoundError, ValueError: a missing file, a bad line, a
            tokenizer that cannot encode a field, an example that cannot
            fit, or no examples (the message names the file and line).

    Example:

    ```python
    examples = build_sft_examples("chat.jsonl", tokenizer, 256)
    train, val = examples.split(0.1)
    tokens, weights = train.arrays()
    ```
    """
    return _cached("sft", path, tokenizer, context_length, cache_dir,
                   tokenize_sft)


def build_preference_pairs(path, tokenizer, context_length, cache_dir=None,
                           warn=True):
    """Reads and tokenizes a preference JSON Lines file (`prompt`, `chosen`,
    `rejected`); pairs whose chosen and rejected ids are equal are skipped
    (counted in `stats["identical"]`, and a warning if `warn`).

    Args and raises: as `build_sft_examples`.

    Returns:
        `PreferencePairs`.

    Example:

    ```python
    pairs = build_preference_pairs("prefs.jsonl", tokenizer, 256)
    batch = pairs.arrays()      # chosen, rejected, chosen_mask, ...
    ```
    """
    pairs = _cached("preferences", path, tokenizer, context_length,
                    cache_dir, tokenize_preferences)
    if warn and pairs.stats["identical"]:
        warnings.warn(describe(pairs), stacklevel=2)
    return pairs


def describe(examples):
    """One line: what was read, truncated and skipped."""
    s = examples.stats
    text = (f"{s['file']}: {s['examples']} examples, longest {s['longest']} "
            f"tokens; {s['truncated']} prompts cut from the left to fit "
            "context_length + 1 tokens")
    if s.get("identical"):
        lines = ", ".join(str(n) for n in s["identical_lines"])
        more = ", ..." if s["identical"] > len(s["identical_lines"]) else ""
        text += (f"; {s['identical']} pairs skipped because chosen == "
                 f"rejected (lines {lines}{more})")
    return text


# The cache -------------------------------------------------------------------

KINDS = {"sft": SFTExamples, "preferences": PreferencePairs}


def _cached(kind, path, tokenizer, context_length, cache_dir, tokenize):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path}.")
    if context_length < 1:
        raise ValueError(f"context_length={context_length} must be >= 1.")
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256(
            f"{FORMAT_VERSION}\0{kind}\0{tokenizer.kind}\0"
            f"{tokenizer.fingerprint}\0{context_length}\0".encode())
        digest.update(path.read_bytes())
        cache = Path(cache_dir) / f"examples-{kind}-{digest.hexdigest()[:32]}.npz"
        if cache.is_file():
            try:
                return _load(cache, kind, path)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file is rebuilt
    parts = tokenize(path, tokenizer, context_length)
    parts["stats"].update(file=str(path))
    dtype = token_dtype(tokenizer.vocab_size)
    for name, rows in parts.items():
        if name == "lines":
            parts[name] = np.asarray(rows, np.int64)
        elif name != "stats":
            parts[name] = Sequences.from_rows(
                rows, np.uint8 if name == "learned" else dtype)
    result = _assemble(kind, parts, tokenizer.eot_id)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(cache, lambda tmp: _save(tmp, result))
    return result


def _assemble(kind, parts, pad_id):
    stats = dict(parts.pop("stats"))
    if kind == "preferences":
        lengths = parts["prompts"].lengths + np.maximum(
            parts["chosen"].lengths, parts["rejected"].lengths)
    else:
        lengths = parts["tokens"].lengths
    stats.update(examples=len(parts["lines"]), longest=int(lengths.max()))
    return KINDS[kind](**parts, pad_id=int(pad_id), stats=stats)


def _save(path, examples):
    arrays = {"pad_id": np.asarray(examples.pad_id),
              "lines": examples.lines,
              "stats": np.asarray(json.dumps(examples.stats))}
    for field in dataclasses.fields(examples):
        value = getattr(examples, field.name)
        if isinstance(value, Sequences):
            arrays[f"{field.name}.values"] = value.values
            arrays[f"{field.name}.offsets"] = value.offsets
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _load(cache, kind, path):
    with np.load(cache, allow_pickle=False) as data:
        stats = json.loads(str(data["stats"]))
        stats["file"] = str(path)
        fields = {}
        for field in dataclasses.fields(KINDS[kind]):
            if f"{field.name}.values" in data:
                fields[field.name] = Sequences(data[f"{field.name}.values"],
                                               data[f"{field.name}.offsets"])
        return KINDS[kind](**fields, lines=data["lines"],
                           pad_id=int(data["pad_id"]), stats=stats)


def _length(length, longest):
    if length is None:
        return longest
    if length < longest:
        raise ValueError(f"length={length} is shorter than the longest "
                         f"example ({longest} tokens).")
    return int(length)


def _pad(sequences, length, value, dtype):
    out = np.full((len(sequences), length), value, dtype)
    for i in range(len(sequences)):
        row = sequences[i]
        out[i, :len(row)] = row
    return out
