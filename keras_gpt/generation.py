"""Generation: predict -> sample -> append, with one cached step per token.

`generate` runs the prompt through the model once (the prefill), writing
every position's keys and values into a preallocated cache, then decodes one
token per step: each step feeds only the newest token, reads the cache and
writes its own keys and values in place. The loop is compiled whole —
`jax.lax.while_loop` under `jax.jit`, `tf.while_loop` under
`tf.function(jit_compile=True)` — and on PyTorch it is a lean eager loop
over `keras_gpt.backend.TorchDecoder`. It stops as soon as every row has
stopped.

Ragged batches: prompts are right-padded into one (batch, length) buffer.
The prefill covers the positions every prompt has; from the shortest
prompt's end, each step writes the row's own prompt token while the row is
still inside its prompt and a sampled token after, so every row sees
exactly its own tokens at its own positions (a row's cache entries past its
prompt are rewritten before any query reads them). Shapes are bucketed
(prompt and total lengths round up), so new prompt lengths rarely retrace.
"""

import numpy as np
from keras import ops

from keras_gpt import backend as backend_lib
from keras_gpt.samplers import SamplerSettings, next_tokens, row_keys

_STOP_STRING_CHUNK = 16  # steps between host-side stop-string checks


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
        top_k: Sample among the k most likely tokens only.
        top_p: Nucleus sampling: among the smallest set of most likely
            tokens whose probability reaches p.
        min_p: Drop tokens less likely than `min_p` times the top token.
        repetition_penalty: Penalize tokens already in the row (> 1 repeats
            less; see `keras_gpt.samplers.SamplerSettings`).
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
    text = model.generate("Once upon a time", tokenizer=tokenizer,
                          max_new_tokens=50, temperature=0,
                          stream=lambda row, token, piece: print(piece, end=""))
    ```
    """
    config = model.config
    vocab, context = config.vocab_size, config.context_length
    settings = SamplerSettings(temperature, top_k, top_p, min_p,
                               repetition_penalty).validate(vocab)
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is out of range: "
                         "it must be an integer >= 1.")
    if eot_id == "auto":
        eot_id = getattr(tokenizer, "eot_id", None)
    if eot_id is not None and (not _is_int(eot_id)
                               or not 0 <= eot_id < vocab):
        raise ValueError(f"eot_id={eot_id!r} is out of range: it must be in "
                         f"[0, {vocab}) for vocab_size={vocab}.")
    if seed is None:
        seed = int(np.random.randint(0, 2 ** 31 - 1))
    elif not _is_int(seed):
        raise ValueError(f"seed={seed!r} is invalid: it must be an integer.")
    if stream is not None and not callable(stream):
        raise ValueError(f"stream={stream!r} is not callable.")
    texts, given, single = _prompt_ids(prompts, tokenizer, vocab)
    rows = [row or _start_from_eot(i, eot_id) for i, row in enumerate(given)]
    stop_ids, stop_strings = _stop_lists(stop, tokenizer, vocab, eot_id)
    rows = _fit_context(rows, max_new_tokens, context, truncate_prompt,
                        sliding_window, single)

    watch = _Watch(len(rows), tokenizer, stop_strings, stream)
    decoder = _decoder(model)
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

def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


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
        elif all(_is_int(p) for p in prompts):
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
            if not _is_int(x):
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
        elif _is_int(s):
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


# The compiled decoding loop ---------------------------------------------------

def _bucket(n):
    """Round a length up: powers of two to 64, then multiples of 64."""
    if n <= 64:
        return max(8, 1 << (n - 1).bit_length())
    return -(-n // 64) * 64


def _attention_bounds(total):
    """Cache lengths the decoding loop attends over, in turn: 64, 128, ...

    Reading a 256-long cache while only 20 positions are filled wastes most
    of the attention's memory traffic (a quarter of a batch-8 step).
    """
    bounds, bound = [], 64
    while bound < total:
        bounds.append(bound)
        bound *= 2
    return bounds + [total]


def _decoder(model):
    decoder = getattr(model, "_keras_gpt_decoder", None)
    if decoder is None:
        decoder = _Decoder(model)
        # Plain attribute: not tracked by Keras, not saved.
        object.__setattr__(model, "_keras_gpt_decoder", decoder)
    return decoder


class _Decoder:
    """Compiled prefill and decode functions of one model, reused."""

    def __init__(self, model):
        self.model = model
        self.lean = backend_lib.lean_decoder(model)
        self.functions = {}
        self.traces = 0  # times a function was traced (jax, tensorflow)
        self.last_steps = 0  # decoding steps the last segment ran

    def run(self, rows, max_new, settings, seed, stop_ids, watch, use_cache,
            sliding):
        """New ids per row, stop ids excluded, sliding when asked."""
        context = self.model.config.context_length
        keep = max(1, (3 * context) // 4)
        if self.lean is not None and use_cache:
            self.lean.refresh()
        history = [list(r) for r in rows]
        outputs = [[] for _ in rows]
        remaining = [max_new] * len(rows)
        active = list(range(len(rows)))
        first = True
        while active:
            windows, news = [], []
            for r in active:
                window = history[r] if first else history[r][-keep:]
                if len(window) >= context:
                    window = history[r][-keep:]
                windows.append(window)
                news.append(min(remaining[r], context - len(window)))
            offsets = [len(history[r]) - len(w)
                       for r, w in zip(active, windows)]
            new, stopped = self._segment(windows, news, active, offsets,
                                         settings, seed, stop_ids, watch,
                                         use_cache)
            still = []
            for j, r in enumerate(active):
                history[r] += new[j]
                outputs[r] += new[j]
                remaining[r] -= len(new[j])
                if stopped[j] or remaining[r] <= 0:
                    watch.finish(r)
                else:
                    still.append(r)
            active = still if sliding else []
            first = False
        return outputs

    def _segment(self, windows, news, rows, offsets, settings, seed, stop_ids,
                 watch, use_cache):
        batch = len(windows)
        lengths = np.array([len(w) for w in windows], "int32")
        limits = lengths + np.array(news, "int32")
        context = self.model.config.context_length
        total = min(_bucket(int(limits.max())), context)
        start = int(lengths.min())
        prefix = min(_bucket(start), total)
        tokens = np.zeros((batch, total), "int32")
        for i, w in enumerate(windows):
            tokens[i, :len(w)] = w
        stops = np.full((-(-max(len(stop_ids), 1) // 8) * 8,), -1, "int32")
        stops[:len(stop_ids)] = stop_ids
        consts = {
            "lengths": lengths, "limits": limits,
            "keys": row_keys(seed, rows),
            "offsets": np.asarray(offsets, "int32"), "stops": stops,
            "values": settings.values()}
        consts = {k: ops.convert_to_tensor(v) for k, v in consts.items()}
        prefill, decode, decode_chunk = self._functions(settings.key,
                                                        use_cache)
        state = prefill(ops.convert_to_tensor(tokens[:, :prefix]),
                        ops.convert_to_tensor(tokens),
                        ops.convert_to_tensor(np.int32(start)), consts)
        end = int(limits.max())
        host_stopped = np.zeros(batch, bool)
        if not watch.active:
            state = decode(state, consts, ops.convert_to_tensor(np.int32(end)))
        else:
            chunk = 1 if watch.stream is not None else _STOP_STRING_CHUNK
            t = start
            while t < end:
                t_stop = min(t + chunk, end)
                state = decode_chunk(state, consts,
                                     ops.convert_to_tensor(np.int32(t_stop)))
                t_stop = int(ops.convert_to_numpy(state["t"]))
                done, finish = self._watch(state, t, t_stop, lengths, rows,
                                           watch, host_stopped)
                t = t_stop
                if done.all():
                    break
        self.last_steps = int(ops.convert_to_numpy(state["t"])) - start
        generated = ops.convert_to_numpy(state["tokens"])
        finish = ops.convert_to_numpy(state["finish"])
        new = [generated[i, lengths[i]:finish[i]].tolist()
               for i in range(batch)]
        stopped = (finish < limits) | host_stopped
        return new, stopped

    def _watch(self, state, t, t_stop, lengths, rows, watch, host_stopped):
        """Hands the tokens of steps [t, t_stop) to `watch`, row by row."""
        tokens = ops.convert_to_numpy(state["tokens"])
        done = ops.convert_to_numpy(state["done"]).copy()
        finish = ops.convert_to_numpy(state["finish"]).copy()
        for i, r in enumerate(rows):
            if host_stopped[i]:
                continue
            for pos in range(max(t, lengths[i]), min(t_stop, finish[i])):
                if watch.push(r, int(tokens[i, pos])):
                    host_stopped[i] = done[i] = True
                    finish[i] = pos + 1
                    break
        if host_stopped.any():
            state["done"] = ops.convert_to_tensor(done)
            state["finish"] = ops.convert_to_tensor(finish)
        return done, finish

    def _functions(self, key, use_cache):
        """Compiled (prefill, decode, decode in short chunks), built once."""
        if (key, use_cache) not in self.functions:
            prefill, decode = self._build(key, use_cache)
            compile_ = backend_lib.compile_inference
            self.functions[key, use_cache] = (
                compile_(self.model, prefill),
                compile_(self.model, lambda *a: decode(*a, segmented=True)),
                compile_(self.model, lambda *a: decode(*a, segmented=False)))
        return self.functions[key, use_cache]

    def _build(self, key, use_cache):
        """The prefill and decode functions (keras.ops, backend-neutral)."""
        model = self.model
        vocab = model.config.vocab_size
        penalty = key[4]
        if self.lean is not None:
            init_cache = self.lean.init_cache

            def cached_step(ids, cache, index):
                return self.lean.step(ids, cache, index), cache
        else:
            def init_cache(batch, length):
                return model.init_cache(batch, length, per_layer=True)

            cached_step = model.call_with_cache

        def prefill(prefix, tokens, start, consts):
            self.traces += 1
            batch, total = tokens.shape
            state = {"t": start, "tokens": tokens,
                     "done": ops.zeros((batch,), "bool"),
                     "finish": consts["limits"]}
            if use_cache:
                logits, state["cache"] = cached_step(
                    prefix, init_cache(batch, total), 0)
            else:
                logits = model(prefix)
            state["logits"] = ops.take(logits, start - 1, axis=1)
            if penalty:
                seen = ops.arange(prefix.shape[1]) < start
                hot = ops.one_hot(prefix, vocab, dtype="float32")
                hot = hot * ops.cast(seen, "float32")[None, :, None]
                state["presence"] = ops.max(hot, axis=1) > 0
            return state

        def decode(state, consts, t_stop, segmented):
            self.traces += 1

            def until(stop):
                def cond(state):
                    return ops.logical_and(
                        state["t"] < stop,
                        ops.logical_not(ops.all(state["done"])))
                return cond

            def body(state):
                state = dict(state)
                t, tokens, done = state["t"], state["tokens"], state["done"]
                token = next_tokens(
                    state["logits"], key, consts["values"], consts["keys"],
                    t + consts["offsets"], state.get("presence"))
                in_prompt = t < consts["lengths"]
                given = ops.take(tokens, t, axis=1)
                token = ops.where(in_prompt, given, token)
                token = ops.where(done, ops.zeros_like(token), token)
                is_stop = ops.any(token[:, None] == consts["stops"][None, :],
                                  axis=-1)
                hit = ops.logical_and(is_stop, ops.logical_not(
                    ops.logical_or(in_prompt, done)))
                ended = ops.logical_or(hit, t + 1 >= consts["limits"])
                now = ops.logical_and(ended, ops.logical_not(done))
                state["finish"] = ops.where(
                    now, ops.where(hit, t, t + 1), state["finish"])
                state["done"] = ops.logical_or(done, ended)
                state["tokens"] = tokens = ops.slice_update(
                    tokens, (0, t), token[:, None])
                if penalty:
                    state["presence"] = ops.logical_or(
                        state["presence"], ops.one_hot(token, vocab) > 0)
                if use_cache:
                    logits, state["cache"] = cached_step(
                        token[:, None], state["cache"], t)
                    state["logits"] = logits[:, 0]
                else:
                    state["logits"] = ops.take(model(tokens), t, axis=1)
                state["t"] = t + 1
                return state

            total = state["tokens"].shape[1]
            if not (segmented and use_cache and self.lean is None):
                return ops.while_loop(until(t_stop), body, state)
            # Attention reads only the cache's first `bound` positions while
            # t < bound: one loop per bound, each over a shorter cache.
            caches = state["cache"]
            for bound in _attention_bounds(total):
                part = dict(state, cache=[(k[:, :, :bound], v[:, :bound])
                                          for k, v in caches])
                part = ops.while_loop(until(ops.minimum(t_stop, bound)), body,
                                      part)
                caches = [(ops.slice_update(k, (0, 0, 0), pk),
                           ops.slice_update(v, (0, 0, 0), pv))
                          for (k, v), (pk, pv) in zip(caches, part["cache"])]
                state = dict(part, cache=caches)
            return state

        return prefill, decode
