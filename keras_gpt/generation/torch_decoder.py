"""`TorchDecoder`: the GPT's cached forward pass in plain PyTorch.

`keras_gpt.generation.decoding` runs its loop over it on the torch backend.
torch is imported inside methods only.
"""

import keras

from keras_gpt.backend import pytorch
from keras_gpt.model import GPT


def _delta(layer):
    """A float layer's LoRA delta, (alpha / rank) A @ B."""
    return keras.ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b) * (
        layer.lora_alpha / layer.lora_rank)


def _low_rank(layer):
    """(A, B, alpha / rank) of an int8 layer's LoRA, or None."""
    if not getattr(layer, "lora_enabled", False):
        return None
    return (layer.lora_kernel_a.value.detach(),
            layer.lora_kernel_b.value.detach(),
            layer.lora_alpha / layer.lora_rank)


def int8_products(device_type="cpu"):
    """The products `TorchDecoder` runs for int8 kernels on a device type.

    "torch._int_mm": Keras' int8 arithmetic (the rows quantized too), on
    CPUs with VNNI or AMX (`pytorch.int8_products_are_fast`).
    "weight-only, bfloat16 rows": other CPUs; up to
    `pytorch.WEIGHT_ONLY_MAX_ROWS` rows torch's `_weight_int8pack_mm`,
    beyond, float32 rows times the kernels dequantized to float32.
    "weight-only, float32 rows": the dequantized kernels only (GPUs, or a
    torch without `_weight_int8pack_mm`). `torch._int_mm` is a CPU choice
    here: on CUDA it refuses 16 rows or fewer.
    """
    if device_type == "cpu" and pytorch.int8_products_are_fast():
        return "torch._int_mm"
    if device_type == "cpu" and pytorch.weight_only_int8_available():
        return "weight-only, bfloat16 rows"
    return "weight-only, float32 rows"


class TorchDecoder:
    """The GPT's cached forward pass in plain PyTorch, for decoding.

    Keras-on-torch runs every layer call and op through Python dispatch
    (keras#22561), which at one token per step costs far more than the
    arithmetic; `torch.compile` of Keras layers breaks into many graphs.
    This class reads the weights of a `keras_gpt.GPT` (float32 matrices on
    CPU are packed once for oneDNN, see `_linear`) and computes the same
    function as `GPT.call_with_cache` with a handful of torch calls per
    layer: the keys and values are written in place into a preallocated
    cache, laid out (batch, heads, max_length, d_head) for
    `scaled_dot_product_attention`. `tests/generation/test_torch_decoder.py` checks it
    against the Keras model.

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
        self._packed = {}  # (data_ptr, shape, stride) -> (version, packed)

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

        def w(variable):  # a variable, or a tensor computed from some
            value = getattr(variable, "value", variable).detach()
            return value if value.dtype == dtype else value.to(dtype)

        def dense(layer):
            bias = w(layer.bias) if c.use_bias else None
            if layer.quantization_mode == "int8":
                return self._int8_linear(layer._kernel, layer.kernel_scale,
                                         bias, _low_rank(layer))
            return self._linear(w(layer.kernel), bias)  # LoRA merged in

        def norm(layer):
            return (layer.gamma.value.detach(), layer.beta.value.detach(),
                    layer.epsilon)

        self._fresh_packs = {}
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
            self.unembedding = self._int8_linear(
                embedding.embeddings, embedding.embeddings_scale, None, None,
                transposed=True)
        elif c.tie_embeddings:
            self.unembedding = self._linear(self.token_embeddings.T, None)
        elif unembedding.quantization_mode == "int8":
            self.unembedding = self._int8_linear(
                unembedding.kernel, unembedding.kernel_scale, None,
                _low_rank(unembedding))
        else:
            kernel = w(unembedding.kernel)
            if getattr(unembedding, "lora_enabled", False):
                kernel = kernel + w(_delta(unembedding))  # merged
            self.unembedding = self._linear(kernel, None)
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
        self._packed, self._fresh_packs = self._fresh_packs, None
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
            qkv = self._dense(h, layer["qkv"]).view(
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
            x = x + self._dense(attended, layer["out"])
            h = self._dense(self._norm(x, layer["ln2"]), layer["up"])
            if c.activation == "gelu":
                h = F.gelu(h, approximate="tanh")
            else:
                h = F.relu(h)
            x = x + self._dense(h, layer["down"])
        x = self._norm(x, self.final_norm)
        return self._dense(x, self.unembedding).float().view(
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

    def _linear(self, kernel, bias):
        """What `_dense` needs to compute `x @ kernel + bias`.

        With float32 weights on a PyTorch built with oneDNN (x86), the
        kernel is packed once into oneDNN's blocked layout (as
        `torch.compile` does for CPU inference): its matrix-vector products
        run about 1.5x (batch 1) to 3x (batch 8) faster than MKL's `addmm`
        here. Packs are kept until the weight changes (its storage or
        in-place version counter).
        """
        if self._packable(kernel):
            key = (kernel.data_ptr(), tuple(kernel.shape), kernel.stride())
            cached = self._packed.get(key)
            if cached is None or cached[0] != kernel._version:
                cached = (kernel._version, self._pack(kernel))
            self._fresh_packs[key] = cached
            return ("onednn", cached[1], bias)
        return ("addmm", kernel, bias)

    @staticmethod
    def _packable(kernel):
        import torch

        return (kernel.dtype == torch.float32 and kernel.device.type == "cpu"
                and pytorch.onednn_linear_available())

    @staticmethod
    def _pack(kernel):
        """An (in, out) float32 kernel in oneDNN's blocked layout."""
        import torch

        return torch.ops.mkldnn._reorder_linear_weight(kernel.T.contiguous())

    def _int8_linear(self, q_kernel, scale, bias, low_rank, transposed=False):
        """What `_dense` needs for an int8 kernel: the kernel in the layouts
        its products read, made once until the weight changes, the bias,
        its scales, and the LoRA factors (A, B, alpha / rank) or None.

        Which products: `int8_products` (Keras' int8 arithmetic where
        `torch._int_mm` is fast, else weight-only int8, as torchao's
        `int8_weight_only` and gpt-fast: float rows times the int8
        kernel's values q / scale). The `torch._int_mm` kernel is kept
        column-major (its fast layout; a transposed W_E already is); for
        weight-only, the kernel dequantized to float32 once and packed like
        a float kernel (`_linear`), and for bfloat16 rows the int8 kernel
        (out, in) for `pytorch.weight_only_int8_matmul`.
        """
        import torch

        q = q_kernel.value.detach()
        scale = scale.value.detach()
        products = int8_products(q.device.type)
        fast = products == "torch._int_mm"
        key = (q.data_ptr(), tuple(q.shape), products)
        cached = self._packed.get(key)
        if cached is None or cached[0] != q._version:
            if fast:
                kernel = q.T if transposed else q.T.contiguous().T
            else:
                dequantized = (q.T if transposed else q).float() / scale
                dequantized = (("onednn", self._pack(dequantized))
                               if self._packable(dequantized)
                               else ("addmm", dequantized))
                rows_kernel = None
                if products == "weight-only, bfloat16 rows":
                    rows_kernel = (q if transposed else q.T.contiguous(),
                                   torch.ones(scale.shape[-1],
                                              dtype=torch.bfloat16))
                kernel = (dequantized, rows_kernel)
            cached = (q._version, kernel)
        self._fresh_packs[key] = cached
        bias = None if bias is None else bias.float()  # products give float32
        return ("int8" if fast else "int8w", cached[1], bias, scale,
                low_rank)

    @staticmethod
    def _dense(x, params):
        """`x @ kernel + bias` for (rows, in) `x` and what `_linear` /
        `_int8_linear` made.

        Called 25 times per decoded token of a 6-layer model, so the
        Python here is kept to what the products need (at one row it cost
        as much as a product)."""
        import torch

        kind, kernel, bias = params[:3]
        if kind == "onednn":
            return torch.ops.mkldnn._linear_pointwise(x, kernel, bias, "none",
                                                      [], "")
        if kind == "addmm":
            return x @ kernel if bias is None else torch.addmm(bias, x, kernel)
        if kind == "int8":
            q, row_scale = pytorch.quantize_rows(x)
            y = pytorch.int8_matmul(q, kernel) / (row_scale * params[3])
            if bias is not None:
                y = y + bias
        elif (kernel[1] is not None
              and x.shape[0] <= pytorch.WEIGHT_ONLY_MAX_ROWS):
            y = pytorch.weight_only_int8_matmul(x, *kernel[1])
            y = (torch.div(y, params[3]) if bias is None  # to float32
                 else torch.addcdiv(bias, y, params[3]))
        else:
            y = TorchDecoder._dense(x.float(), kernel[0] + (bias,))
        if params[4] is not None:
            a, b, factor = params[4]
            y = y + factor * ((x.float() @ a) @ b)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    @staticmethod
    def _rotate(x, rotary):
        import torch

        cos, sin = rotary
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin
