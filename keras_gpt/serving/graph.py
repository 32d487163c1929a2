"""The TensorFlow graph of an exported GPT: tokenizer, decoding, signatures.

`keras_gpt.serving.export` builds this under the TensorFlow backend (from any other
backend it runs itself in a TensorFlow subprocess). What is saved:

- `serving_default(prompts)` and `generate(prompts, max_new_tokens,
  temperature, top_k, top_p, seed)`: strings in, strings out. Prompts are
  tokenized in the graph (invalid UTF-8 becomes U+FFFD first; an empty
  prompt starts from end-of-text), right-padded into one (batch,
  context_length) buffer, prefilled through `GPT.call_with_cache`, then
  decoded one token per step in a `tf.while_loop`, row by row until
  end-of-text or `max_new_tokens`. Outputs: `completions` (the new text),
  `token_ids` (the new ids, padded with -1) and `lengths`.
- `logits(token_ids)`: the model's float32 logits.
- `tokenize(texts)` / `detokenize(token_ids)`: ids padded with -1 both ways.

The loop is `keras_gpt.generation.decoding`'s, written for runtime sampling settings:
the same ragged-prompt stepping, the same attention bounds (64, 128, ...
positions read while the sequence is that short) and the same samplers and
counter-based noise (`keras_gpt.generation.samplers`), so greedy output equals
`keras_gpt.generate`'s and a seed gives `generate`'s draws. The prefill and
the two loops (greedy, sampled) are compiled with XLA: `GPT.call_with_cache`
writes its cache with `XlaDynamicUpdateSlice`, so decoding needs XLA in any
case (TF Serving: `--xla_cpu_compilation_enabled=true` on CPU). Prefill
lengths round up to a few buckets, so XLA compiles once per batch size and
bucket. Bad inputs fail with `tf.debugging.Assert` messages that name the
value and the limit.
"""

import keras
import tensorflow as tf

from keras_gpt.backend import argmax
from keras_gpt.generation.decoding import attention_bounds, bucket_length
from keras_gpt.generation.samplers import GOLDEN, gumbel_noise, mix

SIGNATURES = ("serving_default", "generate", "logits", "tokenize",
              "detokenize")


def _check(condition, template, *values):
    """An assertion whose message is `template` with `{}` filled in."""
    message = tf.strings.format(template, values) if values else template
    return tf.debugging.Assert(condition, [message])


def _row_keys(seed, batch):
    """`keras_gpt.generation.samplers.row_keys(seed, range(batch))` in the graph."""
    def word(x):  # the low 32 bits of an int64, as int32
        x = tf.cast(tf.bitwise.bitwise_and(x, 0xFFFFFFFF), tf.uint32)
        return tf.bitcast(x, tf.int32)

    low, high = word(seed), word(tf.bitwise.right_shift(seed, 32))
    key = mix(tf.bitwise.bitwise_xor(mix(low), high))
    rows = tf.range(batch, dtype=tf.int32) + GOLDEN
    return mix(tf.bitwise.bitwise_xor(key, mix(rows)))


class ServingGraph:
    """The signature functions of one model and tokenizer.

    Args:
        model: A `keras_gpt.GPT` (TensorFlow backend).
        tokenizer: A `keras_gpt.tokenizers.Tokenizer` whose `vocab_size`
            is at most the model's; ids it cannot decode are never sampled.
        defaults: What `serving_default` uses: a dict of `max_new_tokens`,
            `temperature`, `top_k` (0: off) and `top_p` (1: off). When it
            samples, each call draws a random seed.
    """

    def __init__(self, model, tokenizer, defaults):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError("keras_gpt.serving.graph needs the TensorFlow "
                               "backend; use keras_gpt.export_saved_model.")
        self.model = model
        self.tokenizer = tokenizer
        self.defaults = dict(defaults)
        self.context = model.config.context_length
        self.vocab = model.config.vocab_size
        self.buckets = sorted({min(bucket_length(n), self.context)
                               for n in range(1, self.context + 1)})
        xla = dict(jit_compile=True, autograph=False)
        self._prefill = tf.function(self._prefill_fn, **xla)
        self._greedy = tf.function(self._greedy_fn, **xla)
        self._sampled = tf.function(self._sampled_fn, **xla)

    def input_signatures(self):
        """{signature name: list of `tf.TensorSpec`}, in `SIGNATURES` order."""
        spec = tf.TensorSpec
        return {
            "serving_default": [spec([None], tf.string, "prompts")],
            "generate": [spec([None], tf.string, "prompts"),
                         spec([], tf.int32, "max_new_tokens"),
                         spec([], tf.float32, "temperature"),
                         spec([], tf.int32, "top_k"),
                         spec([], tf.float32, "top_p"),
                         spec([], tf.int64, "seed")],
            "logits": [spec([None, None], tf.int32, "token_ids")],
            "tokenize": [spec([None], tf.string, "texts")],
            "detokenize": [spec([None, None], tf.int32, "token_ids")],
        }

    # Signatures --------------------------------------------------------------

    def serving_default(self, prompts):
        d = self.defaults
        seed = tf.random.uniform([], maxval=2 ** 31 - 1, dtype=tf.int64)
        return self.generate(prompts, tf.constant(d["max_new_tokens"]),
                             tf.constant(d["temperature"], tf.float32),
                             tf.constant(d["top_k"]),
                             tf.constant(d["top_p"], tf.float32), seed)

    def generate(self, prompts, max_new_tokens, temperature, top_k, top_p,
                 seed):
        ids = self._tokenize(prompts)
        batch = ids.nrows(out_type=tf.int32)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        longest = tf.reduce_max(tf.concat([lengths, [1]], 0))
        needed = tf.cast(longest, tf.int64) + tf.cast(max_new_tokens,
                                                      tf.int64)
        checks = [
            _check(batch > 0, "prompts is empty: send at least one prompt."),
            _check(max_new_tokens >= 1, "max_new_tokens={} is out of range: "
                   "it must be >= 1.", max_new_tokens),
            _check(needed <= self.context, "The longest prompt ({} tokens) "
                   "+ max_new_tokens={} = {} exceeds context_length={}: "
                   "lower max_new_tokens or shorten the prompt.", longest,
                   max_new_tokens, needed, self.context),
            _check(tf.math.is_finite(temperature) & (temperature >= 0),
                   "temperature={} is invalid: it must be a finite number "
                   ">= 0 (0 is greedy).", temperature),
            _check((top_k >= 0) & (top_k <= self.vocab), "top_k={} is out "
                   "of range: it must be in [0, vocab_size={}] (0 is off).",
                   top_k, self.vocab),
            _check((top_p > 0) & (top_p <= 1), "top_p={} is out of range: "
                   "it must be in (0, 1] (1 is off).", top_p),
        ]
        with tf.control_dependencies(checks):
            tokens = ids.to_tensor(0, shape=[None, self.context])
        # An empty prompt starts from end-of-text, as in keras_gpt.generate.
        empty = (lengths == 0)[:, None] & (tf.range(self.context) == 0)
        tokens = tf.where(empty, self.tokenizer.eot_id, tokens)
        lengths = tf.maximum(lengths, 1)
        limits = lengths + max_new_tokens
        start = tf.reduce_min(lengths)
        buckets = tf.constant(self.buckets, tf.int32)
        prefix = tf.reduce_min(tf.boolean_mask(buckets, buckets >= start))
        logits, cache = self._prefill(tokens[:, :prefix], start)
        args = (tokens, cache, logits, start, lengths, limits)
        tokens, finish = tf.cond(
            (temperature == 0) | (top_k == 1),
            lambda: self._greedy(*args),
            lambda: self._sampled(*args, seed, temperature, top_k, top_p))
        positions = tf.range(self.context)[None, :]
        new = tf.ragged.boolean_mask(tokens, (positions >= lengths[:, None])
                                     & (positions < finish[:, None]))
        return {"completions": self.tokenizer.detokenize_graph(new),
                "token_ids": new.to_tensor(default_value=-1),
                "lengths": tf.cast(new.row_lengths(), tf.int32)}

    def logits(self, token_ids):
        length = tf.shape(token_ids)[1]
        checks = [
            _check(length <= self.context, "token_ids has {} positions, more "
                   "than context_length={}.", length, self.context),
            _check(tf.reduce_all((token_ids >= 0) & (token_ids < self.vocab)),
                   "token_ids holds ids outside [0, vocab_size={}): smallest "
                   "{}, largest {}.", self.vocab, tf.reduce_min(token_ids),
                   tf.reduce_max(token_ids)),
        ]
        with tf.control_dependencies(checks):
            token_ids = tf.identity(token_ids)
        return {"logits": tf.cast(self.model(token_ids), tf.float32)}

    def tokenize(self, texts):
        ids = self._tokenize(texts)
        return {"token_ids": ids.to_tensor(default_value=-1),
                "lengths": tf.cast(ids.row_lengths(), tf.int32)}

    def detokenize(self, token_ids):
        vocab = self.tokenizer.vocab_size
        check = _check(tf.reduce_all(token_ids < vocab), "token_ids holds "
                       "ids >= the tokenizer's vocab_size={} (largest {}); "
                       "negative ids are padding.", vocab,
                       tf.reduce_max(token_ids))
        with tf.control_dependencies([check]):
            ids = tf.ragged.boolean_mask(token_ids, token_ids >= 0)
        return {"texts": self.tokenizer.detokenize_graph(ids)}

    # Inside: tokenizing, prefill, decoding -----------------------------------

    def _tokenize(self, texts):
        """Ragged int32 ids; invalid UTF-8 becomes U+FFFD first."""
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8",
                                             errors="replace",
                                             replacement_char=0xFFFD)
        return tf.cast(self.tokenizer.tokenize_graph(texts), tf.int32)

    def _prefill_fn(self, prefix, start):
        """The prompts' common prefix into a fresh cache; logits at start-1."""
        cache = self.model.init_cache(tf.shape(prefix)[0], self.context)
        logits, cache = self.model.call_with_cache(prefix, cache, 0)
        return tf.gather(logits, start - 1, axis=1), cache

    def _allowed(self, logits):
        """float32 logits; ids the tokenizer cannot decode get -inf."""
        logits = tf.cast(logits, tf.float32)
        if self.tokenizer.vocab_size < self.vocab:
            known = tf.range(self.vocab) < self.tokenizer.vocab_size
            logits = tf.where(known, logits, float("-inf"))
        return logits

    def _greedy_fn(self, tokens, cache, logits, start, lengths, limits):
        return self._decode(tokens, cache, logits, start, lengths, limits,
                            lambda logits, t: argmax(self._allowed(logits)))

    def _sampled_fn(self, tokens, cache, logits, start, lengths, limits, seed,
                    temperature, top_k, top_p):
        keys = _row_keys(seed, tf.shape(tokens)[0])
        top_k = tf.where((top_k > 0) & (top_k < self.vocab), top_k,
                         self.vocab)
        filtering = (top_k < self.vocab) | (top_p < 1)
        ranks = tf.range(self.vocab)[None, :]

        def choose(logits, t):
            # keras_gpt.generation.samplers.next_tokens with runtime top_k / top_p:
            # candidates sorted when filtering (noise index = rank), else
            # the vocabulary in order (noise index = id).
            logits = self._allowed(logits) / temperature
            noise = gumbel_noise(keys, tf.fill(tf.shape(keys), t), self.vocab)

            def filtered():
                values, indices = tf.math.top_k(logits, self.vocab)
                values = tf.where(ranks < top_k, values, float("-inf"))
                probs = tf.nn.softmax(values, axis=-1)
                before = tf.cumsum(probs, axis=-1) - probs
                values = tf.where((before < top_p) | (top_p >= 1), values,
                                  float("-inf"))
                return tf.gather(indices, argmax(values + noise),
                                 batch_dims=1)

            return tf.cond(filtering, filtered,
                           lambda: argmax(logits + noise))

        return self._decode(tokens, cache, logits, start, lengths, limits,
                            choose)

    def _decode(self, tokens, cache, logits, start, lengths, limits, choose):
        """Steps t = start, start+1, ... until every row has ended.

        A row still inside its prompt at step t takes its own token;
        after, `choose(logits, t)`. Returns the token buffer and, per row,
        the end (exclusive) of its new tokens.
        """
        eot = self.tokenizer.eot_id
        end = tf.reduce_max(limits)

        def body(state):
            state = dict(state)
            t, buffer, done = state["t"], state["tokens"], state["done"]
            in_prompt = t < lengths
            token = tf.where(in_prompt, tf.gather(buffer, t, axis=1),
                             choose(state["logits"], t))
            token = tf.where(done, tf.zeros_like(token), token)
            hit = (token == eot) & ~in_prompt & ~done
            ended = hit | (t + 1 >= limits)
            state["finish"] = tf.where(ended & ~done,
                                       tf.where(hit, t, t + 1),
                                       state["finish"])
            state["done"] = done | ended
            state["tokens"] = keras.ops.slice_update(buffer, (0, t),
                                                     token[:, None])
            logits, state["cache"] = self.model.call_with_cache(
                token[:, None], state["cache"], t)
            state["logits"] = logits[:, 0]
            state["t"] = t + 1
            return state

        state = {"t": start, "tokens": tokens, "logits": logits,
                 "done": tf.zeros(tf.shape(lengths), tf.bool),
                 "finish": limits}
        # Attention reads only the cache's first `bound` positions while
        # t < bound (as keras_gpt.generation.decoding does).
        bounds = attention_bounds(self.context)
        for i, bound in enumerate(bounds):
            part = dict(state, cache=[(k[:, :, :bound], v[:, :bound])
                                      for k, v in cache])
            stop = tf.minimum(end, bound)
            part = keras.ops.while_loop(
                lambda s: (s["t"] < stop) & ~tf.reduce_all(s["done"]), body,
                part)
            if i + 1 < len(bounds):
                cache = [(keras.ops.slice_update(k, (0, 0, 0), pk),
                          keras.ops.slice_update(v, (0, 0, 0), pv))
                         for (k, v), (pk, pv) in zip(cache, part["cache"])]
            state = {k: v for k, v in part.items() if k != "cache"}
        return state["tokens"], state["finish"]


def save(model, tokenizer, path, defaults):
    """Writes the SavedModel of `model` and `tokenizer` into `path`.

    What `keras.export.ExportArchive` writes (the model's variables under
    `variables`, `trainable_variables` and `non_trainable_variables`, one
    `tf.function` per signature), with `tf.saved_model.save` itself, so each
    signature is traced once: the archive traces every endpoint to list the
    variables it reads, and the save traces it again (its save context is
    part of a trace's cache key), which doubled the export's time.

    Args:
        model: A `keras_gpt.GPT` (TensorFlow backend).
        tokenizer: Its `keras_gpt.tokenizers.Tokenizer`.
        path: A new directory.
        defaults: `serving_default`'s settings (see `ServingGraph`).
    """
    graph = ServingGraph(model, tokenizer, defaults)
    root = tf.__internal__.tracking.AutoTrackable()
    # On this backend a Keras variable is a trackable TensorFlow variable.
    root.variables = list(model.variables)
    root.trainable_variables = list(model.trainable_variables)
    root.non_trainable_variables = list(model.non_trainable_variables)
    root.tokenizer = tokenizer.graph_module
    signatures = {}
    for name, signature in graph.input_signatures().items():
        signatures[name] = tf.function(getattr(graph, name),
                                       input_signature=signature,
                                       autograph=False)
        setattr(root, name, signatures[name])
    tf.saved_model.save(root, str(path), signatures=signatures)
