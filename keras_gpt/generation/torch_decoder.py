"""`TorchDecoder`: the GPT's cached forward pass in plain PyTorch.

`keras_gpt.generation.decoding` runs its loop over it on the torch backend.
torch is imported inside methods only.
"""

import keras

from keras_gpt.backend import pytorch
from keras_gpt.generation.torch_products import (TorchProducts, delta,
                                                  low_rank)
from keras_gpt.model import GPT

# Steps of at most this many rows (batch x new tokens) may run their products
# on torch's `addmm` of float32 kernels instead of oneDNN's packed ones or
# weight-only int8: `TorchDecoder._few_rows_gemm`.
FEW_ROWS = 4
# ... when both ways were timed and `addmm` took under this share of oneDNN's
# time (its wins were large: 0.4x; near a tie the timing can mislead), and
# never when the packed kernels exceed this many bytes (it won only where
# they stay in the processor's cache; from memory, oneDNN's blocked layout
# streams faster).
_PLAIN_MARGIN = 0.8
_MAX_TIMED_BYTES = 64 * 2**20


class TorchDecoder:
    """The GPT's cached forward pass in plain PyTorch, for decoding.

    Keras-on-torch runs every layer call and op through Python dispatch
    (keras#22561), which at one token per step costs far more than the
    arithmetic; `torch.compile` of Keras layers breaks into many graphs.
    This class reads the weights of a `keras_gpt.GPT` (prepared for their
    products by `keras_gpt.generation.torch_products`) and computes the
    same function as `GPT.call_with_cache` with a handful of torch calls
    per layer: the keys and values are written in place into a
    preallocated cache, laid out (batch, heads, max_length, d_head) for
    `scaled_dot_product_attention`. `tests/generation/test_torch_decoder.py`
    checks it against the Keras model.

    Example:

    ```python
    decoder = TorchDecoder.for_model(model)    # torch backend only
    decoder.refresh()                          # read the current weights
    cache = decoder.init_cache(batch_size=2, max_length=64)
    logits = decoder.step(token_ids, cache, 0)  # prefill; then one token
    ```
    """

    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.layers = None
        self.products = TorchProducts()
        self._few_rows = {}  # rows -> "default" or "addmm" (timed)

    @classmethod
    def for_model(cls, model):
        """A decoder, or None when `model` is not a `keras_gpt.GPT` (float,
        int8, with or without LoRA)."""
        if type(model) is not GPT:
            return None
        if model.quantization_modes() - {"int8"}:
            return None
        return cls(model)

    def refresh(self):
        """Reads the model's current weights (cast to the compute dtype)."""
        import torch

        model, c = self.model, self.config
        dtype = getattr(torch, keras.backend.standardize_dtype(
            model.compute_dtype))
        self.dtype = dtype
        products = self.products

        def w(variable):  # a variable, or a tensor computed from some
            value = getattr(variable, "value", variable).detach()
            return value if value.dtype == dtype else value.to(dtype)

        def dense(layer):
            bias = w(layer.bias) if c.use_bias else None
            if layer.quantization_mode == "int8":
                return products.int8_linear(layer._kernel, layer.kernel_scale,
                                            bias, low_rank(layer))
            return products.linear(w(layer.kernel), bias)  # LoRA merged in

        def norm(layer):
            return (layer.gamma.value.detach(), layer.beta.value.detach(),
                    layer.epsilon)

        products.begin()
        self.layers = []
        for block in model.blocks:
            self.layers.append(dict(
                ln1=norm(block.ln1), qkv=dense(block.attention.qkv),
                out=dense(block.attention.out), ln2=norm(block.ln2),
                up=dense(block.mlp.up), down=dense(block.mlp.down)))
        self.final_norm = norm(model.final_norm)
        embedding, unembedding = model.token_embedding, model.unembedding
        self.token_embeddings = embedding.embeddings.value.detach()
        self.token_scales = None
        if embedding.quantization_mode == "int8":
            self.token_scales = embedding.embeddings_scale.value.detach()
        else:
            self.token_embeddings = w(embedding.embeddings)
        self.device = self.token_embeddings.device
        if c.tie_embeddings and self.token_scales is not None:
            self.unembedding = products.int8_linear(
                embedding.embeddings, embedding.embeddings_scale, None, None,
                transposed=True)
        elif c.tie_embeddings:
            self.unembedding = products.linear(self.token_embeddings.T, None)
        elif unembedding.quantization_mode == "int8":
            self.unembedding = products.int8_linear(
                unembedding.kernel, unembedding.kernel_scale, None,
                low_rank(unembedding))
        else:
            kernel = w(unembedding.kernel)
            if getattr(unembedding, "lora_enabled", False):
                kernel = kernel + w(delta(unembedding))  # merged
            self.unembedding = products.linear(kernel, None)
        self.position_table = self.rotary_table = None
        positions = torch.arange(c.context_length, dtype=torch.float32,
                                 device=self.device)
        if c.positions == "learned":
            self.position_table = w(model.position_embedding.embeddings)
        elif c.positions == "sinusoidal":
            wavelength = model.position_embedding.max_wavelength
            exponents = torch.arange(0, c.d_model, 2, dtype=torch.float32,
                                     device=self.device) / c.d_model
            angles = positions[:, None] * float(wavelength) ** -exponents
            table = torch.stack([angles.sin(), angles.cos()], dim=-1)
            self.position_table = table.reshape(
                c.context_length, c.d_model).to(dtype)
        else:
            half = c.d_head // 2
            inverse = float(c.rotary_max_wavelength) ** (-torch.arange(
                0, half, dtype=torch.float32, device=self.device) / half)
            angles = positions[:, None] * inverse[None, :]
            angles = torch.cat([angles, angles], dim=-1)
            self.rotary_table = (angles.cos().to(dtype), angles.sin().to(dtype))
        products.end()
        return self

    def init_cache(self, batch_size, max_length):
        """Per layer, zero (keys, values) of (batch, heads, length, d_head)."""
        import torch

        c = self.config
        shape = (batch_size, c.n_heads, max_length, c.d_head)
        return [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                 torch.zeros(shape, dtype=self.dtype, device=self.device))
                for _ in range(c.n_layers)]

    def step(self, token_ids, cache, index):
        """float32 logits (batch, seq, vocab) of `token_ids` at `index`.

        Writes their keys and values into `cache` in place. Tokens attend to
        cache positions up to their own, so positions after them may hold
        anything.
        """
        rows = token_ids.shape[0] * token_ids.shape[1]
        self.products.plain = (rows <= FEW_ROWS and self._few_rows_gemm(
            token_ids, rows) == "addmm")
        return self._step(token_ids, cache, index)

    def _few_rows_gemm(self, token_ids, rows):
        """"default" or "addmm": the products a step of `token_ids` (`rows`
        rows, a few) runs, timed the first time: oneDNN's packed float32 kernels
        and weight-only int8 (`TorchProducts.dense`), or torch's `addmm` of
        the plain (float32, or int8 dequantized) kernels.

        oneDNN's packed product costs a fixed 25-40 us per call on an AVX2
        EPYC (torch 2.13), more than a small kernel's whole product on
        MKL's GEMV: a step of nanoGPT's baby shape (4 layers, d_model 128)
        at one row took 1.6-1.9 ms on oneDNN and 0.7 ms on `addmm`. Larger
        kernels stream from memory, which oneDNN's blocked layout does
        faster (the bench model's step: 4.3 against 5.0 ms), and from two
        rows on MKL's GEMM falls behind. Weight-only int8 reads a quarter
        of the bytes, but costs more per call than `addmm` of a small
        kernel. So, per row count, whole steps are timed both ways on a
        scratch cache (interleaved, best of 3 rounds of 2 steps), unless
        `KERAS_GPT_TORCH_GEMM=onednn` asks for the default (`=torch`
        packs nothing for oneDNN) or the float32 kernels are too large for
        a cache (`_MAX_TIMED_BYTES`). `tools/ab_speed.py torch-decode`
        compares this with the default always.
        """
        choice = self._few_rows.get(rows)
        if choice is not None:
            return choice
        products = [layer[name] for layer in self.layers
                    for name in ("qkv", "out", "up", "down")]
        kernels = self.products.plain_kernels(products + [self.unembedding])
        choice = "default"
        if (kernels and pytorch.gemm_env() != "onednn"
                and sum(k.nbytes for k in kernels) <= _MAX_TIMED_BYTES):
            from keras_gpt.backend.timing import interleaved_best

            scratch = self.init_cache(token_ids.shape[0], token_ids.shape[1])

            def steps(plain):
                def run():
                    self.products.plain = plain
                    for _ in range(2):
                        self._step(token_ids, scratch, 0)
                return run

            runs = {"default": steps(False), "addmm": steps(True)}
            for run in runs.values():
                run()
            seconds = interleaved_best(runs, 3)
            if seconds["addmm"] < _PLAIN_MARGIN * seconds["default"]:
                choice = "addmm"
        self._few_rows[rows] = choice
        return choice

    def _step(self, token_ids, cache, index):
        import torch
        import torch.nn.functional as F

        c = self.config
        start = int(index)
        batch, length = token_ids.shape
        end = start + length
        x = F.embedding(token_ids.long(), self.token_embeddings)
        if self.token_scales is not None:
            x = (x.float() / self.token_scales[token_ids.long()][..., None]
                 ).to(self.dtype)
        if self.position_table is not None:
            x = x + self.position_table[start:end]
        # The residual stream as (rows, d_model) rows, so that the products
        # need no reshaping (25 per token at one row, each a Python call).
        x = x.reshape(batch * length, c.d_model)
        rotary = None
        if self.rotary_table is not None:
            rotary = tuple(t[start:end][None, :, None, :]
                           for t in self.rotary_table)
        for layer, (keys, values) in zip(self.layers, cache):
            h = self._norm(x, layer["ln1"])
            qkv = self.products.dense(h, layer["qkv"]).view(
                batch, length, 3, c.n_heads, c.d_head)
            q, k, v = qkv.unbind(2)
            if rotary is not None:
                q, k = self._rotate(q, rotary), self._rotate(k, rotary)
            keys[:, :, start:end] = k.transpose(1, 2)
            values[:, :, start:end] = v.transpose(1, 2)
            q = q.transpose(1, 2)
            if length == 1:  # one query sees every key so far: no mask
                mask, causal = None, False
            elif start == 0:
                mask, causal = None, True
            else:
                mask = (torch.arange(end, device=self.device)[None, :]
                        <= torch.arange(start, end,
                                        device=self.device)[:, None])
                causal = False
            attended = F.scaled_dot_product_attention(
                q, keys[:, :, :end], values[:, :, :end], attn_mask=mask,
                is_causal=causal, scale=1.0 / c.d_head ** 0.5)
            attended = attended.transpose(1, 2).reshape(
                batch * length, c.n_heads * c.d_head)
            x = x + self.products.dense(attended, layer["out"])
            h = self.products.dense(self._norm(x, layer["ln2"]), layer["up"])
            if c.activation == "gelu":
                h = F.gelu(h, approximate="tanh")
            else:
                h = F.relu(h)
            x = x + self.products.dense(h, layer["down"])
        x = self._norm(x, self.final_norm)
        return self.products.dense(x, self.unembedding).float().view(
            batch, length, -1)

    def _norm(self, x, params):
        """LayerNorm in float32, returned in the compute dtype (torch's
        own op: `F.layer_norm`'s Python wrapper cost more than the op)."""
        import torch

        gamma, beta, epsilon = params
        if x.dtype == torch.float32:
            return torch.layer_norm(x, x.shape[-1:], gamma, beta, epsilon)
        out = torch.layer_norm(x.float(), x.shape[-1:], gamma, beta, epsilon)
        return out.to(self.dtype)

    @staticmethod
    def _rotate(x, rotary):
        import torch

        cos, sin = rotary
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin
