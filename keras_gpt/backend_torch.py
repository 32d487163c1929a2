"""PyTorch-only code: the CPU product choice (oneDNN or torch's own GEMM),
the cross-entropy whose gradient reuses its buffer, and the lean decoding
step.

`keras_gpt.backend` dispatches here (the tests and the benchmark also ask
`onednn_linear_available` and `cpu_gemm`). torch is imported inside
functions only, so the module loads on every backend.
"""

import os

import keras

# Which product the float32 CPU projections use: "onednn", "torch" (the
# wheel's own GEMM) or "auto" (timed once per process: `cpu_gemm`).
GEMM_ENV = "KERAS_GPT_TORCH_GEMM"
GEMM_CHOICES = ("auto", "onednn", "torch")
# "auto" takes oneDNN only when it is clearly faster: on a tie torch's own
# GEMM needs no transposed copies and is what torch.compile lowers.
_ONEDNN_MARGIN = 0.9
_CPU_GEMM = None


def onednn_applies(x, kernel):
    import torch

    # Inductor (torch.compile) cannot lower the op with an unpacked weight.
    return (x.dim() == 2 and x.dtype == torch.float32
            and x.device.type == "cpu" and kernel.dtype == torch.float32
            and not torch.compiler.is_compiling()
            and cpu_gemm() == "onednn")


def cpu_gemm():
    """The product float32 projections use on this CPU: "onednn" or "torch".

    Which is faster depends on the processor, not on the model: on the AMD
    EPYC machines with AVX-512 that this project first measured on (Zen 4),
    the wheel's MKL ran the projections 2-3x slower than oneDNN, while on
    AVX2-only EPYCs (Zen 3) the two products run at the same rate and the
    transposed copies that oneDNN's kernel gradient needs made the whole
    training step slower (`tools/ab_speed.py torch-gemm`). So, unless
    `KERAS_GPT_TORCH_GEMM` names one, the first call times one projection's
    forward and backward pass both ways (`_time_projections`) and
    keeps oneDNN only if it took under `_ONEDNN_MARGIN` of torch's time.
    The choice holds for the rest of the process.
    """
    global _CPU_GEMM
    if _CPU_GEMM is None:
        choice = os.environ.get(GEMM_ENV, "auto")
        if choice not in GEMM_CHOICES:
            raise ValueError(f"{GEMM_ENV}={choice!r}: expected one of "
                             f"{', '.join(GEMM_CHOICES)}.")
        if choice == "onednn" and not onednn_linear_available():
            raise ValueError(f"{GEMM_ENV}=onednn, but this PyTorch build has "
                             "no working oneDNN linear op.")
        if choice == "auto":
            choice = "torch"
            if onednn_linear_available():
                seconds = _time_projections()
                if seconds["onednn"] < _ONEDNN_MARGIN * seconds["torch"]:
                    choice = "onednn"
        _CPU_GEMM = choice
    return _CPU_GEMM


def _time_projections(rows=1024, d_in=384, d_out=1536, rounds=3):
    """Best seconds of a (rows, d_in) x (d_in, d_out) projection's forward
    and backward pass, {"onednn": ..., "torch": ...}, timed interleaved
    after one warm-up call each."""
    import torch

    from keras_gpt.bench.measure import interleaved_best

    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.enable_grad():
        x, kernel, bias = (torch.randn(*shape, generator=generator,
                                       requires_grad=True)
                           for shape in ((rows, d_in), (d_in, d_out),
                                         (d_out,)))
        upstream = torch.randn(rows, d_out, generator=generator)
        products = {"onednn": lambda: onednn_linear_function().apply(
                        x, kernel, bias),
                    "torch": lambda: torch.matmul(x, kernel) + bias}
        runs = {name: (lambda p=product: p().backward(upstream))
                for name, product in products.items()}
        for run in runs.values():
            run()
        return interleaved_best(runs, rounds)


def cross_entropy(logits, targets):
    """Per-token cross-entropy: logits (..., vocab), int targets (...).

    `F.cross_entropy`'s values (one fused log-softmax kernel); the gradient
    is `cross_entropy_function`'s.
    """
    vocab_size = logits.shape[-1]
    losses = cross_entropy_function().apply(logits.reshape(-1, vocab_size),
                                            targets.reshape(-1).long())
    return losses.reshape(targets.shape)


_CROSS_ENTROPY = None


def cross_entropy_function():
    """A torch autograd Function: (rows, vocab) logits, (rows,) targets ->
    (rows,) losses, whose backward reuses the forward's buffer.

    `F.cross_entropy`'s backward fills a fresh zero (rows, vocab) buffer,
    writes -upstream at the targets, then runs log-softmax's backward into
    another fresh buffer; on CPU a fresh 64 MB buffer is also a fresh
    mapping whose pages fault in as they are written. Here the gradient,
    (softmax - one-hot) * upstream, is written over the saved
    log-probabilities: forward and backward of batch 8 x 256, vocab 8192
    took 81.6 instead of 136.0 ms (AVX2 EPYC, 2 cores;
    `tools/loss_speed.py`). So the graph's backward can run once only: a
    second one (`retain_graph=True`) raises torch's error for a saved
    tensor modified in place.
    """
    global _CROSS_ENTROPY
    if _CROSS_ENTROPY is not None:
        return _CROSS_ENTROPY
    import torch
    from torch.autograd.function import once_differentiable

    class TokenCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, targets):
            log_probs = torch.log_softmax(logits, dim=-1)
            ctx.save_for_backward(log_probs, targets)
            return -log_probs.gather(-1, targets[:, None])[:, 0]

        @staticmethod
        @once_differentiable
        def backward(ctx, upstream):
            log_probs, targets = ctx.saved_tensors
            upstream = upstream[:, None]
            grad = log_probs.exp_().mul_(upstream)
            grad.scatter_add_(-1, targets[:, None], -upstream)
            return grad, None

    _CROSS_ENTROPY = TokenCrossEntropy
    return TokenCrossEntropy


_ONEDNN_FUNCTION = None


def onednn_linear_function():
    """A torch autograd Function: linear forward and backward on oneDNN."""
    global _ONEDNN_FUNCTION
    if _ONEDNN_FUNCTION is not None:
        return _ONEDNN_FUNCTION
    import torch

    def product(a, b_t):  # a @ b_t.T
        return torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [],
                                                  "")

    class OneDNNLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, kernel, bias):
            ctx.save_for_backward(x, kernel)
            ctx.has_bias = bias is not None
            return torch.ops.mkldnn._linear_pointwise(
                x, kernel.t(), bias, "none", [], "")

        @staticmethod
        def backward(ctx, grad):
            x, kernel = ctx.saved_tensors
            grad = grad.contiguous()
            grad_x = grad_kernel = grad_bias = None
            if ctx.needs_input_grad[0]:
                grad_x = product(grad, kernel)
            if ctx.needs_input_grad[1]:
                grad_kernel = product(x.t().contiguous(), grad.t().contiguous())
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_bias = grad.sum(0)
            return grad_x, grad_kernel, grad_bias

    _ONEDNN_FUNCTION = OneDNNLinear
    return OneDNNLinear


_ONEDNN_LINEAR = None


def onednn_linear_available():
    """Whether torch's oneDNN packed linear ops exist and give right results."""
    global _ONEDNN_LINEAR
    if _ONEDNN_LINEAR is None:
        import torch

        try:
            weight = torch.randn(8, 4)
            x = torch.randn(3, 4)
            packed = torch.ops.mkldnn._reorder_linear_weight(weight)
            out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none",
                                                     [], "")
            _ONEDNN_LINEAR = bool(torch.allclose(out, x @ weight.T,
                                                 atol=1e-5))
        except (AttributeError, RuntimeError):
            _ONEDNN_LINEAR = False
    return _ONEDNN_LINEAR


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
    `scaled_dot_product_attention`. `tests/test_generation.py` checks it
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
        """A decoder, or None when `model` is not a plain `keras_gpt.GPT`."""
        from keras_gpt.model import GPT

        if type(model) is not GPT:
            return None
        for layer in model._flatten_layers(include_self=False):
            mode = getattr(layer.dtype_policy, "quantization_mode", None)
            if mode:
                return None
        return cls(model)

    def refresh(self):
        """Reads the model's current weights (cast to the compute dtype)."""
        import torch

        model, c = self.model, self.config
        dtype = getattr(torch, keras.backend.standardize_dtype(
            model.compute_dtype))
        self.dtype = dtype

        def w(variable):
            value = variable.value.detach()
            return value if value.dtype == dtype else value.to(dtype)

        def dense(layer):
            return self._linear(w(layer.kernel), w(layer.bias)
                                if c.use_bias else None)

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
        self.token_embeddings = w(model.token_embedding.embeddings)
        self.device = self.token_embeddings.device
        self.unembedding = self._linear(
            self.token_embeddings.T if c.tie_embeddings
            else w(model.unembedding.kernel), None)
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
        if self.position_table is not None:
            x = x + self.position_table[start:end]
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
                batch, length, c.n_heads * c.d_head)
            x = x + self._dense(attended, layer["out"])
            h = self._dense(self._norm(x, layer["ln2"]), layer["up"])
            if c.activation == "gelu":
                h = F.gelu(h, approximate="tanh")
            else:
                h = F.relu(h)
            x = x + self._dense(h, layer["down"])
        x = self._norm(x, self.final_norm)
        return self._dense(x, self.unembedding).float()

    def _norm(self, x, params):
        import torch.nn.functional as F

        gamma, beta, epsilon = params
        out = F.layer_norm(x.float(), x.shape[-1:], gamma, beta, epsilon)
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
        import torch

        if (kernel.dtype == torch.float32 and kernel.device.type == "cpu"
                and onednn_linear_available()):
            key = (kernel.data_ptr(), tuple(kernel.shape), kernel.stride())
            cached = self._packed.get(key)
            if cached is None or cached[0] != kernel._version:
                cached = (kernel._version,
                          torch.ops.mkldnn._reorder_linear_weight(
                              kernel.T.contiguous()))
            self._fresh_packs[key] = cached
            return ("onednn", cached[1], bias)
        return ("addmm", kernel, bias)

    @staticmethod
    def _dense(x, params):
        import torch

        kind, kernel, bias = params
        if kind == "onednn":
            return torch.ops.mkldnn._linear_pointwise(x, kernel, bias, "none",
                                                      [], "")
        if bias is None:
            return x @ kernel
        return torch.addmm(bias, x.reshape(-1, x.shape[-1]), kernel).view(
            *x.shape[:-1], kernel.shape[-1])

    @staticmethod
    def _rotate(x, rotary):
        import torch

        cos, sin = rotary
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin
