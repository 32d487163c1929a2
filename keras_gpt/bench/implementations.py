"""The implementations the benchmark runs side by side, on the same shapes.

Training (`TRAINERS`): each maker `(spec, x, y)` returns `block`, where
`block()` runs one optimizer step per `spec["batch_size"]` rows of `x, y`
(token ids) and returns the last loss (a float, so the work is finished
when it returns).

- keras_gpt: `GPT` + `compile_for_pretraining`, `fit` (what `keras-gpt
  train` runs);
- keras_gpt_plain: `GPT` + the plain `model.compile(optimizer=AdamW,
  loss=SparseCategoricalCrossentropy(from_logits=True))`, `fit` (what the
  README's example and Keras users write); the AdamW is the same
  `make_optimizer` one as in the other rows, so the two rows of ours differ
  by the compile path only;
- keras_hub: `GPT2Backbone` + `GPT2CausalLM(preprocessor=None)`, compiled
  with the same optimizer and loss, `fit` on the same arrays;
- hf_torch: transformers' `GPT2LMHeadModel` in a plain PyTorch loop (AdamW,
  clipping), eager, as its users write it.

Decoding (`DECODERS`): each maker returns `run()` generating `new_tokens`
tokens after `prompts` (no early stop); greedy or top-k.
"""

import numpy as np

TOP_K = 50


def random_batches(model, batch_size, steps, seed=0):
    """(x, y): `batch_size * steps` rows of random ids of the `model` dict's
    vocabulary and context, y = x shifted by one (what every trainer
    reads)."""
    ids = np.random.default_rng(seed).integers(
        0, model["vocab_size"], (batch_size * steps,
                                 model["context_length"] + 1))
    return ids[:, :-1].astype("int32"), ids[:, 1:].astype("int32")


def _keras_dtype(spec):
    return spec["dtype"]


def _optimizer():
    from keras_gpt.training import make_optimizer

    return make_optimizer(total_steps=10 ** 6)


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_keras_gpt(spec, x, y):
    from keras_gpt.config import GPTConfig
    from keras_gpt.model import GPT
    from keras_gpt.training import compile_for_pretraining

    model = GPT(GPTConfig(**spec["model"], dropout=0.0),
                dtype=_keras_dtype(spec))
    compile_for_pretraining(model, total_steps=10 ** 6)  # as users do
    return _fit_block(model, x, y, spec["batch_size"])


def train_keras_gpt_plain(spec, x, y):
    from keras_gpt.config import GPTConfig
    from keras_gpt.model import GPT

    model = GPT(GPTConfig(**spec["model"], dropout=0.0),
                dtype=_keras_dtype(spec))
    model.compile(optimizer=_optimizer(), loss=_loss())
    return _fit_block(model, x, y, spec["batch_size"])


def _keras_hub_lm(spec):
    """KerasHub's GPT-2 of the same shape, without a preprocessor."""
    import keras_hub

    m = spec["model"]
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=m["vocab_size"], num_layers=m["n_layers"],
        num_heads=m["n_heads"], hidden_dim=m["d_model"],
        intermediate_dim=4 * m["d_model"],
        max_sequence_length=m["context_length"], dropout=0.0,
        dtype=_keras_dtype(spec))
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def train_keras_hub(spec, x, y):
    lm = _keras_hub_lm(spec)
    lm.compile(optimizer=_optimizer(), loss=_loss(), weighted_metrics=[])
    inputs = {"token_ids": x, "padding_mask": np.ones_like(x, bool)}
    return _fit_block(lm, inputs, y, spec["batch_size"])


def _fit_block(model, x, y, batch_size):
    import keras

    if keras.backend.backend() == "tensorflow":
        # Keras feeds arrays through an autotuned tf.data pipeline here,
        # and deleting its iterator when `fit` returns may wait for the
        # autotuner (see keras_gpt.data.windows.PARALLEL_READS): at random, for
        # every implementation alike, and not a cost of training. So every
        # implementation gets the same untuned pipeline.
        import tensorflow as tf

        from keras_gpt.data.windows import PREFETCH_BATCHES, without_autotune

        dataset = without_autotune(tf.data.Dataset.from_tensor_slices(
            (x, y)).batch(batch_size).prefetch(PREFETCH_BATCHES))
        fit = lambda: model.fit(dataset, epochs=1, shuffle=False,  # noqa: E731
                                verbose=0)
    else:
        fit = lambda: model.fit(x, y, batch_size=batch_size,  # noqa: E731
                                epochs=1, shuffle=False, verbose=0)

    def block():
        return float(fit().history["loss"][-1])

    return block


def _hf_model(spec):
    import torch
    import transformers

    m = spec["model"]
    config = transformers.GPT2Config(
        vocab_size=m["vocab_size"], n_positions=m["context_length"],
        n_embd=m["d_model"], n_layer=m["n_layers"], n_head=m["n_heads"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
        eos_token_id=None, pad_token_id=0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return transformers.GPT2LMHeadModel(config).to(device), device


def train_hf_torch(spec, x, y):
    import torch
    import torch.nn.functional as F

    model, device = _hf_model(spec)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=6e-4, betas=(0.9, 0.95))
    xs = torch.from_numpy(x).long().to(device)
    ys = torch.from_numpy(y).long().to(device)
    batch = spec["batch_size"]
    vocab = spec["model"]["vocab_size"]
    bf16 = "bfloat16" in spec["dtype"]

    def block():
        for start in range(0, len(xs), batch):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                logits = model(xs[start:start + batch]).logits
            loss = F.cross_entropy(logits.float().view(-1, vocab),
                                   ys[start:start + batch].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return float(loss.item())

    return block


def decode_keras_gpt(spec, prompts, new_tokens, sampler):
    from keras_gpt.config import GPTConfig
    from keras_gpt.generation import generate
    from keras_gpt.model import GPT

    model = GPT(GPTConfig(**spec["model"], dropout=0.0),
                dtype=_keras_dtype(spec))
    kwargs = (dict(temperature=0) if sampler == "greedy"
              else dict(temperature=1.0, top_k=TOP_K, seed=1))

    def run():
        out = generate(model, prompts, max_new_tokens=new_tokens, eot_id=None,
                       **kwargs)
        assert all(len(row) == new_tokens for row in out)

    return run


def decode_keras_hub(spec, prompts, new_tokens, sampler):
    import keras_hub

    lm = _keras_hub_lm(spec)
    lm.compile(sampler="greedy" if sampler == "greedy"
               else keras_hub.samplers.TopKSampler(k=TOP_K, seed=1))
    batch, length = prompts.shape
    total = length + new_tokens
    token_ids = np.zeros((batch, total), "int32")
    token_ids[:, :length] = prompts
    mask = np.zeros((batch, total), bool)
    mask[:, :length] = True
    inputs = {"token_ids": token_ids, "padding_mask": mask}

    def run():
        out = lm.generate(inputs, stop_token_ids=None)
        assert np.asarray(out["token_ids"]).shape == (batch, total)

    return run


def decode_hf_torch(spec, prompts, new_tokens, sampler):
    import torch

    model, device = _hf_model(spec)
    model.eval()
    if "bfloat16" in spec["dtype"]:
        model = model.to(torch.bfloat16)
    ids = torch.tensor(prompts, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    kwargs = (dict(do_sample=False) if sampler == "greedy"
              else dict(do_sample=True, top_k=TOP_K, temperature=1.0,
                        top_p=1.0))

    def run():
        torch.manual_seed(1)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask,
                                 max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, pad_token_id=0,
                                 eos_token_id=None, **kwargs)
        assert tuple(out.shape) == (len(prompts), prompts.shape[1]
                                    + new_tokens)

    return run


TRAINERS = {"keras_gpt": train_keras_gpt,
            "keras_gpt_plain": train_keras_gpt_plain,
            "keras_hub": train_keras_hub, "hf_torch": train_hf_torch}
DECODERS = {"keras_gpt": decode_keras_gpt, "keras_hub": decode_keras_hub,
            "hf_torch": decode_hf_torch}
# Decoding does not depend on the compile path: keras_gpt_plain has no
# decoding row. What each reference needs importable (missing: skipped).
NEEDS = {"keras_hub": ("keras_hub",), "hf_torch": ("torch", "transformers")}
