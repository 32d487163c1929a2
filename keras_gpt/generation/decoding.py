"""The compiled decoding loop behind `keras_gpt.generate`.

The prompt runs through the model once (the prefill), writing every
position's keys and values into a preallocated cache, then one token is
decoded per step: each step feeds only the newest token, reads the cache and
writes its own keys and values in place. The loop is compiled whole —
`jax.lax.while_loop` under `jax.jit`, `tf.while_loop` under
`tf.function(jit_compile=True)` — and on PyTorch it is a lean eager loop
over `keras_gpt.generation.torch_decoder.TorchDecoder`. It stops as soon as every row
has stopped.

Ragged batches: prompts are right-padded into one (batch, length) buffer.
The prefill covers the positions every prompt has; from the shortest
prompt's end, each step writes the row's own prompt token while the row is
still inside its prompt and a sampled token after, so every row sees
exactly its own tokens at its own positions (a row's cache entries past its
prompt are rewritten before any query reads them). Shapes are bucketed
(prompt and total lengths round up), so new prompt lengths rarely retrace.

`watch` (`keras_gpt.generation.generator._Watch`) is the host side: with a stream or
stop strings the loop runs in short chunks and hands it each new token.
"""

import keras
import numpy as np
from keras import ops

from keras_gpt import backend as backend_lib
from keras_gpt.backend import int8
from keras_gpt.generation.samplers import next_tokens, row_keys
from keras_gpt.generation.torch_decoder import TorchDecoder

_STOP_STRING_CHUNK = 16  # steps between host-side stop-string checks


def bucket_length(n):
    """Round a length up: powers of two to 64, then multiples of 64."""
    if n <= 64:
        return max(8, 1 << (n - 1).bit_length())
    return -(-n // 64) * 64


def attention_bounds(total):
    """Cache lengths the decoding loop attends over, in turn: 64, 128, ...

    Reading a 256-long cache while only 20 positions are filled wastes most
    of the attention's memory traffic (a quarter of a batch-8 step).
    """
    bounds, bound = [], 64
    while bound < total:
        bounds.append(bound)
        bound *= 2
    return bounds + [total]


def decoder_for(model):
    """The `_Decoder` of `model`, made on first use and kept on the model
    (made anew when its variables changed: LoRA, quantization)."""
    decoder = getattr(model, "_keras_gpt_decoder", None)
    if decoder is None or decoder.variables != _variable_ids(model):
        decoder = _Decoder(model)
        # Plain attribute: not tracked by Keras, not saved.
        object.__setattr__(model, "_keras_gpt_decoder", decoder)
    return decoder


def _lean_decoder(model):
    """A `TorchDecoder` for `model` on torch when it supports it, else None.

    On JAX and TensorFlow the model's own `call_with_cache` is compiled into
    the loop, so no lean path is needed.
    """
    if keras.backend.backend() != "torch":
        return None
    return TorchDecoder.for_model(model)


def _int8_kernels(model):
    """The (in, out) int8 kernels of `model`'s projections."""
    return [layer._kernel for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.Dense)
            and layer.quantization_mode == "int8"]


def _variable_ids(model):
    return [id(v) for v in model.variables]


class _Decoder:
    """Compiled prefill and decode functions of one model, reused."""

    def __init__(self, model):
        self.model = model
        self.variables = _variable_ids(model)
        self.lean = _lean_decoder(model)
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
        total = min(bucket_length(int(limits.max())), context)
        start = int(lengths.min())
        prefix = min(bucket_length(start), total)
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
            init_cache = model.init_cache
            cached_step = model.call_with_cache
        # int8 kernels the loop reads transposed (`int8.kernels_transposed`).
        transposed = [] if self.lean is not None else _int8_kernels(model)

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
                    return (state["t"] < stop) & ~ops.all(state["done"])
                return cond

            # Booleans combine with &, |, ~: the same ops inside XLA, and on
            # PyTorch, where this body runs eagerly once per token, torch's
            # own (Keras' logical ops took ~12 us each there, these ~2).
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
                hit = is_stop & ~(in_prompt | done)
                ended = hit | (t + 1 >= consts["limits"])
                now = ended & ~done
                state["finish"] = ops.where(
                    now, ops.where(hit, t, t + 1), state["finish"])
                state["done"] = done | ended
                state["tokens"] = tokens = backend_lib.write_column(
                    tokens, t, token)
                if penalty:
                    state["presence"] = state["presence"] | (
                        ops.one_hot(token, vocab) > 0)
                if use_cache:
                    logits, state["cache"] = cached_step(
                        token[:, None], state["cache"], t)
                    state["logits"] = logits[:, 0]
                else:
                    state["logits"] = ops.take(model(tokens), t, axis=1)
                state["t"] = t + 1
                return state

            with int8.kernels_transposed(transposed):
                return loops(state, t_stop, body, until, segmented)

        def loops(state, t_stop, body, until, segmented):
            total = state["tokens"].shape[1]
            if not (segmented and use_cache and self.lean is None):
                return ops.while_loop(until(t_stop), body, state)
            # Attention reads only the cache's first `bound` positions while
            # t < bound: one loop per bound, each over a shorter cache.
            caches = state["cache"]
            for bound in attention_bounds(total):
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
