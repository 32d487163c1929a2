"""Generation: predict -> sample -> append, with one cached step per token.

`generate` is the public entry point: it checks the settings, turns prompts
(strings or token ids, ragged or not) into id rows that fit the context,
collects stop ids and stop strings, and hands the rows to the compiled
decoding loop in `keras_gpt.generation.decoding`. On the host side, `_Watch` streams
new tokens and text pieces and finds stop strings; the results are cut and
decoded here.
"""

import numpy as np
from keras import ops

from keras_gpt.generation.decoding import decoder_for
from keras_gpt.generation.samplers import SamplerSettings, is_int


def generate(model, prompts, *, tokenizer=None, max_new_tokens,
             temperature=1.0, top_k=None, top_p=None, min_p=None,
             repetition_penalty=None, stop=None, seed=None, use_cache=True,
             stream=None, eot_id="auto", include_prompt=False,
             truncate_prompt=False, sliding_window=False):
    """Continues each prompt by up to `max_new_tokens` tokens.

    Args:
        model: A `keras_gpt.GPT` (anything with its `config`, `init_cache`
            and `call_with_cache`).
        prompts: A string or list of strings (needs `tokenizer`), or token
            ids: a list of ints, a list of lists (ragged is fine) or a 2-D
            array. An empty prompt starts from the end-of-text token.
        tokenizer: Anything with `encode(str) -> list[int]`,
            `decode(ids) -> str` and `eot_id`.
        max_new_tokens: Most tokens to add to each prompt (>= 1).
        temperature: 0 is greedy (argmax); otherwise logits are divided by
            it before the softmax.
        top_k: Sample among the k most likely tokens only; 0 or None is
            off.
        top_p: Nucleus sampling: among the smallest set of most likely
            tokens whose probability reaches p.
        min_p: Drop tokens less likely than `min_p` times the top token.
        repetition_penalty: Penalize tokens already in the row (> 1 repeats
            less; see `keras_gpt.generation.samplers.SamplerSettings`).
        stop: Token ids and/or strings that end a row, besides end-of-text.
            Each row stops on its own; neither stop ids nor stop strings are
            part of the output.
        seed: An int: the same seed, prompt and backend give the same
            output. Row i's draws depend only on (seed, i, position), never
            on its batch-mates or on padding. None draws a seed from
            NumPy's global generator (`keras.utils.set_random_seed` fixes
            it).
        use_cache: False recomputes the whole context each step (slow; a
            reference for tests).
        stream: Called as `stream(row, token_id, text)` for each new token
            as soon as it is decided; `text` is the newly decodable text
            (may be "" while a UTF-8 character or a possible stop string is
            incomplete, None without a tokenizer). When a row ends, held
            back text comes in one last call with `token_id=None`.
        eot_id: The end-of-text id; "auto" takes `tokenizer.eot_id`, None
            means none (no default stop, and empty prompts are refused).
        include_prompt: Return each prompt (as given) followed by its
            continuation, instead of the continuation alone.
        truncate_prompt: Keep the last tokens of prompts that do not fit
            the context (instead of raising).
        sliding_window: Let generation run past `context_length`: when the
            context is full, the last 3/4 of it is re-encoded from position
            0 and decoding continues. Approximate: tokens then see a shorter
            context, and with learned positions at new positions.

    Returns:
        For string prompts, the generated text (a string, or a list for a
        list of prompts); for token ids, lists of ids (one list, or a list
        of lists).

    Raises:
        ValueError: On a bad setting (the message names value and limit),
            ids out of range, string prompts without a tokenizer, or a
            prompt plus `max_new_tokens` past `context_length`.

    Example:

    ```python
    model = keras_gpt.GPT("tiny")
    ids = keras_gpt.generate(model, [[1, 2, 3], [4]], max_new_tokens=8,
                             temperature=0.8, top_k=40, seed=1)
    text = keras_gpt.generate(
        model, "Once upon a time", tokenizer=tokenizer, max_new_tokens=50,
        temperature=0, stream=lambda row, token, piece: print(piece, end=""))
    ```
    """
    config = model.config
    vocab, context = config.vocab_size, config.context_length
    settings = SamplerSettings(temperature, top_k, top_p, min_p,
                               repetition_penalty).validate(vocab)
    if not is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is out of range: "
                         "it must be an integer >= 1.")
    if eot_id == "auto":
        eot_id = getattr(tokenizer, "eot_id", None)
    if eot_id is not None and (not is_int(eot_id)
                               or not 0 <= eot_id < vocab):
        raise ValueError(f"eot_id={eot_id!r} is out of range: it must be in "
                         f"[0, {vocab}) for vocab_size={vocab}.")
    if seed is None:
        seed = int(np.random.randint(0, 2 ** 31 - 1))
    elif not is_int(seed):
        raise ValueError(f"seed={seed!r} is invalid: it must be an integer.")
    if stream is not None and not callable(stream):
        raise ValueError(f"stream={stream!r} is not callable.")
    texts, given, single = _prompt_ids(prompts, tokenizer, vocab)
    rows = [row or _start_from_eot(i, eot_id) for i, row in enumerate(given)]
    stop_ids, stop_strings = _stop_lists(stop, tokenizer, vocab, eot_id)
    rows = _fit_context(rows, max_new_tokens, context, truncate_prompt,
                        sliding_window, single)

    watch = _Watch(len(rows), tokenizer, stop_strings, stream)
    decoder = decoder_for(model)
    outputs = decoder.run(rows, max_new_tokens, settings, int(seed),
                          stop_ids, watch, use_cache, sliding_window)

    results = []
    for i, ids in enumerate(outputs):
        if texts is not None:
            text = watch.final_text(i, ids)
            results.append(texts[i] + text if include_prompt else text)
        else:
            ids = watch.final_ids(i, ids)
            results.append(given[i] + ids if include_prompt else ids)
    return results[0] if single else results


# Normalising the inputs -------------------------------------------------------

def _start_from_eot(index, eot_id):
    if eot_id is None:
        raise ValueError(
            f"Prompt {index} is empty and there is no end-of-text id to "
            "start from: pass a tokenizer or eot_id=.")
    return [eot_id]


def _prompt_ids(prompts, tokenizer, vocab):
    """-> (texts or None, id rows (maybe empty), single)."""
    if hasattr(prompts, "shape") and not isinstance(prompts, (str, list)):
        prompts = np.asarray(ops.convert_to_numpy(prompts))
        if prompts.ndim not in (1, 2):
            raise ValueError("Token id prompts must be 1-D or 2-D; got shape "
                             f"{prompts.shape}.")
        if prompts.size and not np.issubdtype(prompts.dtype, np.integer):
            raise ValueError("Token ids must be integers; got dtype "
                             f"{prompts.dtype}.")
        single = prompts.ndim == 1
        prompts = prompts.tolist()
        prompts = [prompts] if single else prompts
        texts = None
    elif isinstance(prompts, str):
        single, texts = True, [prompts]
    elif isinstance(prompts, (list, tuple)) and prompts:
        if all(isinstance(p, str) for p in prompts):
            single, texts = False, list(prompts)
        elif all(is_int(p) for p in prompts):
            single, texts, prompts = True, None, [list(prompts)]
        else:
            single, texts = False, None
    elif isinstance(prompts, (list, tuple)):
        raise ValueError("prompts is empty: pass a string, a list of strings, "
                         "token ids or a list of token id lists.")
    else:
        raise ValueError(f"prompts of type {type(prompts).__name__} are not "
                         "supported: pass strings or token ids.")
    if texts is not None:
        if tokenizer is None:
            raise ValueError("The prompts are strings but no tokenizer was "
                             "given: pass tokenizer=... (or token ids).")
        prompts = [tokenizer.encode(t) for t in texts]
    rows = []
    for i, row in enumerate(prompts):
        if not isinstance(row, (list, tuple, np.ndarray)) or isinstance(
                row, str):
            raise ValueError(f"Prompt {i} is a {type(row).__name__}; expected "
                             "a list of token ids (or pass only strings).")
        row = row.tolist() if isinstance(row, np.ndarray) else list(row)
        for x in row:
            if not is_int(x):
                raise ValueError(f"Prompt {i} holds {x!r}: token ids must be "
                                 "integers.")
            if not 0 <= x < vocab:
                raise ValueError(f"Token id {x} in prompt {i} is out of range: "
                                 f"ids must be in [0, {vocab}) for "
                                 f"vocab_size={vocab}.")
        rows.append([int(x) for x in row])
    return texts, rows, single


def _stop_lists(stop, tokenizer, vocab, eot_id):
    """-> (stop ids, stop strings); end-of-text is always a stop id."""
    if stop is None:
        stop = []
    elif isinstance(stop, (str, int, np.integer)):
        stop = [stop]
    ids = [] if eot_id is None else [eot_id]
    strings = []
    for s in stop:
        if isinstance(s, str):
            if tokenizer is None:
                raise ValueError(f"Stop string {s!r} needs a tokenizer: pass "
                                 "tokenizer=... or stop ids.")
            if not s:
                raise ValueError("A stop string must not be empty.")
            strings.append(s)
            encoded = tokenizer.encode(s)
            if len(encoded) == 1 and tokenizer.decode(encoded) == s:
                ids.append(int(encoded[0]))  # also stop inside the loop
        elif is_int(s):
            if not 0 <= s < vocab:
                raise ValueError(f"Stop id {s} is out of range: ids must be in "
                                 f"[0, {vocab}) for vocab_size={vocab}.")
            ids.append(int(s))
        else:
            raise ValueError(f"stop holds {s!r}: expected token ids or "
                             "strings.")
    return sorted(set(ids)), strings


def _fit_context(rows, max_new, context, truncate, sliding, single):
    fitted = []
    for i, row in enumerate(rows):
        name = "The prompt" if single else f"Prompt {i}"
        if len(row) > context and not truncate:
            raise ValueError(
                f"{name} has {len(row)} tokens, more than context_length="
                f"{context}; pass truncate_prompt=True to keep its last "
                "tokens.")
        if sliding:
            row = row[-context:]
        elif len(row) + max_new > context:
            if max_new >= context:
                raise ValueError(
                    f"max_new_tokens={max_new} leaves no room for a prompt in "
                    f"context_length={context}: lower it, or pass "
                    "sliding_window=True (approximate).")
            if not truncate:
                raise ValueError(
                    f"{name} ({len(row)} tokens) + max_new_tokens={max_new} = "
                    f"{len(row) + max_new} exceeds context_length={context}; "
                    "lower max_new_tokens, pass truncate_prompt=True to drop "
                    "the prompt's oldest tokens, or sliding_window=True "
                    "(approximate).")
            row = row[len(row) + max_new - context:]
        fitted.append(row)
    return fitted


# Text, streaming and stop strings (host side) ---------------------------------

class _Watch:
    """Per row: streams tokens and text pieces, and finds stop strings."""

    def __init__(self, n_rows, tokenizer, stop_strings, stream):
        self.tokenizer = tokenizer
        self.stop_strings = stop_strings
        self.stream = stream
        self.ids = [[] for _ in range(n_rows)]
        self.emitted = [0] * n_rows
        self.stopped = [False] * n_rows
        self.active = stream is not None or bool(stop_strings)

    def push(self, row, token):
        """A new token of `row`; returns True if a stop string ended it."""
        self.ids[row].append(token)
        piece = None
        if self.tokenizer is not None:
            text = self.tokenizer.decode(self.ids[row])
            cut = self._stop_at(text)
            if cut is not None:
                self.stopped[row] = True
                safe = cut
            else:
                safe = len(text) - self._hold_back(text)
            safe = max(safe, self.emitted[row])
            piece = text[self.emitted[row]:safe]
            self.emitted[row] = safe
        if self.stream is not None:
            self.stream(row, token, piece)
        return self.stopped[row]

    def finish(self, row):
        """The row has ended: flush what was held back."""
        if self.stream is None or self.tokenizer is None:
            return
        text = self.final_text(row, self.ids[row])
        if len(text) > self.emitted[row]:
            self.stream(row, None, text[self.emitted[row]:])
        self.emitted[row] = len(text)

    def final_text(self, row, ids):
        text = self.tokenizer.decode(ids)
        cut = self._stop_at(text)
        return text if cut is None else text[:cut]

    def final_ids(self, row, ids):
        """`ids` cut before the token where a stop string begins."""
        if not self.stop_strings or self.tokenizer is None:
            return ids
        cut = self._stop_at(self.tokenizer.decode(ids))
        if cut is None:
            return ids
        low, high = 0, len(ids)  # the longest prefix decoding within `cut`
        while low < high:
            mid = (low + high + 1) // 2
            if len(self.tokenizer.decode(ids[:mid])) <= cut:
                low = mid
            else:
                high = mid - 1
        return ids[:low]

    def _stop_at(self, text):
        found = [text.find(s) for s in self.stop_strings]
        found = [i for i in found if i >= 0]
        return min(found) if found else None

    def _hold_back(self, text):
        """Characters at the end that may still change or start a stop."""
        held = len(text) - len(text.rstrip("\ufffd"))
        for s in self.stop_strings:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    held = max(held, n)
                    break
        return held
