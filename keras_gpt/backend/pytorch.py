"""PyTorch-only code: the CPU product choice (oneDNN or torch's own GEMM),
the cross-entropy whose gradient reuses its buffer, the decoding loop's
per-token bookkeeping and the int8 products; the lean decoding step is in
`keras_gpt.generation.torch_decoder`.

`keras_gpt.backend` dispatches here (the tests and the benchmark also ask
`onednn_linear_available` and `cpu_gemm`). torch is imported inside
functions only, so the package loads on every backend.
"""

import functools
import os

# Which product the float32 CPU projections use: "onednn", "torch" (the
# wheel's own GEMM) or "auto" (timed once per process: `cpu_gemm`).
GEMM_ENV = "KERAS_GPT_TORCH_GEMM"
GEMM_CHOICES = ("auto", "onednn", "torch")
# "auto" takes oneDNN only when it is clearly faster: on a tie torch's own
# GEMM needs no transposed copies and is what torch.compile lowers.
_ONEDNN_MARGIN = 0.9
_CPU_GEMM = None
# `linear` calls torch's ops itself; `tools/ab_speed.py torch-products` sets
# this False to time Keras' ops (`ops.matmul`, then the bias) instead.
DIRECT_PRODUCTS = True


def linear(x, kernel, bias=None):
    """`x @ kernel + bias` on torch tensors (x 2-D rows, kernel (in, out)).

    oneDNN's linear op where it is this processor's faster product
    (`onednn_applies`); otherwise one `torch.addmm`, the bias added in the
    GEMM as `torch.nn.Linear` does. Keras' `ops.matmul` and the bias add
    cost ~12 us of dispatch per op (`any_symbolic_tensors` flattens every
    call's arguments) and a pass over the output: on nanoGPT's CPU "baby"
    shape, 17 projections a step, this made a training step 1.03x faster
    (`tools/ab_speed.py torch-products --config baby --steps 20 --rounds
    8`; 1.01x on the benchmark's larger model, `--steps 2 --rounds 5`).
    `kernel` and `bias` may be Keras variables (their values are used, as
    `ops.convert_to_tensor` would) and are cast to `x`'s dtype.
    """
    kernel, bias = _like(kernel, x), _like(bias, x)
    if onednn_applies(x, kernel):
        return onednn_linear_function().apply(x, kernel, bias)
    if not DIRECT_PRODUCTS:
        from keras import ops

        y = ops.matmul(x, kernel)
        return y if bias is None else y + bias
    import torch

    if bias is None or x.dim() != 2:
        y = torch.matmul(x, kernel)
        return y if bias is None else y + bias
    return torch.addmm(bias, x, kernel)


def _like(value, x):
    """`value` (None, a Keras variable or an array) as a torch tensor of
    `x`'s dtype and device."""
    if value is None:
        return None
    import keras
    import torch

    if isinstance(value, keras.Variable):
        value = value.value
    value = torch.as_tensor(value, device=x.device)
    return value if value.dtype == x.dtype else value.to(x.dtype)


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
        choice = gemm_env()
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


def gemm_env():
    """`KERAS_GPT_TORCH_GEMM`: "auto" when unset, "onednn" or "torch";
    another value is a ValueError naming the choices."""
    choice = os.environ.get(GEMM_ENV, "auto")
    if choice not in GEMM_CHOICES:
        raise ValueError(f"{GEMM_ENV}={choice!r}: expected one of "
                         f"{', '.join(GEMM_CHOICES)}.")
    return choice


def _time_projections(rows=1024, d_in=384, d_out=1536, rounds=3):
    """Best seconds of a (rows, d_in) x (d_in, d_out) projection's forward
    and backward pass, {"onednn": ..., "torch": ...}, timed interleaved
    after one warm-up call each."""
    import torch

    from keras_gpt.backend.timing import interleaved_best

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


@functools.cache
def onednn_linear_available():
    """Whether torch's oneDNN packed linear ops exist and give right results."""
    import torch

    try:
        generator = torch.Generator().manual_seed(0)  # the user's RNG kept
        weight = torch.randn(8, 4, generator=generator)
        x = torch.randn(3, 4, generator=generator)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none",
                                                 [], "")
        return bool(torch.allclose(out, x @ weight.T, atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


# Decoding-loop bookkeeping (`keras_gpt.generation.decoding`) ----------------
# Once per decoded token, where Keras' own ops cost several times the work.

def argmax(x):
    """int32 index of the largest value along the last axis."""
    import torch

    return torch.argmax(x, dim=-1).to(torch.int32)


def write_column(x, index, column):
    """A copy of `x` (rows, length) with column `index` set to `column`."""
    return x.index_copy(1, index.reshape(1).long(), column[:, None])


# int8 products (`keras_gpt.backend.int8`) ----------------------------------

def quantize_rows(x):
    """Per-row symmetric int8 quantization, as Keras' `AbsMaxQuantizer`:
    `(q int8, scale float32 (rows, 1))` with `x ~= q / scale`. Keras' clip
    to [-127, 127] is left out: |x| * 127 / (max|x| + 1e-7) is below 127
    already."""
    import torch

    x = x.float()
    amax = torch.linalg.vector_norm(x, float("inf"), -1, keepdim=True)
    scale = 127.0 / amax.add_(1e-7)
    return x.mul(scale).round_().to(torch.int8), scale


def int8_products_are_fast():
    """Whether `torch._int_mm` can beat float32 products on this CPU: only
    with VNNI or AMX integer instructions. Without them (AVX2) it took
    4.7 ms for the 25 products of a bench-model decoding step against 2.7
    ms for float32 (`tools/int8_products.py`), and int8 decoding ran at
    0.50x (batch 1) and 0.15x (batch 8) of float32's speed."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in (
        "_is_vnni_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


# Up to this many rows, `weight_only_int8_matmul` beat oneDNN's packed
# float32 product on an AVX2 EPYC (torch 2.13, the bench model's four
# projection shapes and its W_U: 1 row 1.2-2.1x, 4 rows 1.06-1.43x, 8 rows
# 0.5-1.1x).
WEIGHT_ONLY_MAX_ROWS = 4


@functools.cache
def weight_only_int8_available():
    """Whether torch's `_weight_int8pack_mm` exists and gives right results."""
    import torch

    try:
        generator = torch.Generator().manual_seed(0)  # the user's RNG kept
        x = torch.randn(2, 32, generator=generator)
        q = torch.randint(-127, 128, (16, 32), generator=generator,
                          dtype=torch.int8)
        out = weight_only_int8_matmul(
            x, q, torch.ones(16, dtype=torch.bfloat16)).float()
        expected = x.bfloat16().float() @ q.float().T
        return bool(torch.allclose(
            out, expected, rtol=1e-2, atol=1e-2 * float(expected.abs().max())))
    except (AttributeError, RuntimeError):
        return False


def weight_only_int8_matmul(rows, q_kernel, ones):
    """rows (n, in) @ q_kernel.T, q_kernel an int8 (out, in) tensor read as
    int8: torch's `_weight_int8pack_mm` (the weight-only int8 product of
    gpt-fast and torchao) with the rows in bfloat16, unit scales `ones`
    (bfloat16 (out,)), and a bfloat16 (n, out) result (rounded by up to
    0.4%; the caller applies the float32 kernel scales, in float32)."""
    import torch

    return torch._weight_int8pack_mm(rows.to(torch.bfloat16), q_kernel, ones)


def int8_matmul(q_rows, q_kernel):
    """Exact int32 product of int8 (rows, in) and int8 (in, out), as float32.

    `torch._int_mm` (oneDNN, VNNI where the CPU has it) on CPU: a
    column-major kernel (a transposed (out, in) tensor) ran 4x faster at
    one row than a row-major one. Elsewhere, or in a torch without it, the
    same integers multiplied in float32 (exact for these widths).
    """
    import torch

    if q_rows.device.type == "cpu" and hasattr(torch, "_int_mm"):
        return torch._int_mm(q_rows, q_kernel).float()
    return q_rows.float() @ q_kernel.float()


def int8_linear(x, q_kernel, kernel_scale):
    """`keras_gpt.backend.int8.linear` on torch: x (rows, in) float ->
    float32 (rows, out), with the straight-through input gradient."""
    return int8_linear_function().apply(x, q_kernel, kernel_scale)


_INT8_FUNCTION = None


def int8_linear_function():
    """A torch autograd Function: (x, int8 kernel, scales) -> float32."""
    global _INT8_FUNCTION
    if _INT8_FUNCTION is not None:
        return _INT8_FUNCTION
    import torch

    class Int8Linear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, q_kernel, kernel_scale):
            ctx.save_for_backward(q_kernel, kernel_scale)
            ctx.x_dtype = x.dtype
            q, row_scale = quantize_rows(x)
            return int8_matmul(q, q_kernel) / (row_scale * kernel_scale)

        @staticmethod
        def backward(ctx, upstream):
            q_kernel, kernel_scale = ctx.saved_tensors
            kernel = q_kernel.float() / kernel_scale
            grad_x = (upstream.float() @ kernel.T).to(ctx.x_dtype)
            return grad_x, None, None

    _INT8_FUNCTION = Int8Linear
    return Int8Linear
