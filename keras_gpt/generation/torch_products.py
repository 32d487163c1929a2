"""The products of `TorchDecoder`'s step: each projection's kernel in the
layouts its product reads (oneDNN packs, int8 layouts), made once until the
weight changes, and the products themselves.

torch is imported inside methods only.
"""

import keras

from keras_gpt.backend import pytorch


def delta(layer):
    """A float layer's LoRA delta, (alpha / rank) A @ B."""
    return keras.ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b) * (
        layer.lora_alpha / layer.lora_rank)


def low_rank(layer):
    """(A, B, alpha / rank) of an int8 layer's LoRA, or None."""
    if not getattr(layer, "lora_enabled", False):
        return None
    return (layer.lora_kernel_a.value.detach(),
            layer.lora_kernel_b.value.detach(),
            layer.lora_alpha / layer.lora_rank)


def int8_products(device_type="cpu"):
    """The products `TorchProducts` runs for int8 kernels on a device type.

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


class TorchProducts:
    """Kernels prepared for their products, and the products.

    `linear` and `int8_linear` give a projection's parameters, `dense(x,
    params)` computes it. Between `begin` and `end` (a refresh of the
    weights) the prepared kernels in use are collected; the others are
    dropped at `end`. With `plain` set (a step of few rows where torch's
    `addmm` was faster: `TorchDecoder._few_rows_gemm`), float32 kernels
    packed for oneDNN run on their plain copy instead, and int8 kernels
    on their dequantized float32 copy.
    """

    def __init__(self):
        self.packed = {}  # (data_ptr, shape, stride) -> (version, packed)
        self.fresh = None
        self.plain = False

    def begin(self):
        self.fresh = {}

    def end(self):
        self.packed, self.fresh = self.fresh, None

    @staticmethod
    def plain_kernels(products):
        """The float32 kernels that `plain` would run `addmm` on instead
        of another product (oneDNN packs, weight-only int8)."""
        found = []
        for params in products:
            if params[0] == "onednn":
                found.append(params[3])
            elif params[0] == "int8w" and params[1][0][0] == "onednn":
                found.append(params[1][0][2])  # dequantized, packed too
        return found

    def linear(self, kernel, bias):
        """What `dense` needs to compute `x @ kernel + bias`.

        With float32 weights on a PyTorch built with oneDNN (x86), the
        kernel is also packed once into oneDNN's blocked layout (as
        `torch.compile` does for CPU inference): from a few rows on its
        products ran up to 3x faster than MKL's `addmm` (batch 8), while
        at one row its fixed cost per call often made it slower, so the
        plain kernel is kept too (`plain`). Packs are kept until the weight
        changes (its storage or in-place version counter).
        """
        if self.packable(kernel):
            key = (kernel.data_ptr(), tuple(kernel.shape), kernel.stride())
            cached = self.packed.get(key)
            if cached is None or cached[0] != kernel._version:
                cached = (kernel._version, self.pack(kernel))
            self.fresh[key] = cached
            return ("onednn", cached[1], bias, kernel)
        return ("addmm", kernel, bias)

    @staticmethod
    def packable(kernel):
        import torch

        return (kernel.dtype == torch.float32 and kernel.device.type == "cpu"
                and pytorch.gemm_env() != "torch"
                and pytorch.onednn_linear_available())

    @staticmethod
    def pack(kernel):
        """An (in, out) float32 kernel in oneDNN's blocked layout."""
        import torch

        return torch.ops.mkldnn._reorder_linear_weight(kernel.T.contiguous())

    def int8_linear(self, q_kernel, scale, bias, low_rank, transposed=False):
        """What `dense` needs for an int8 kernel: the kernel in the layouts
        its products read, made once until the weight changes, the bias,
        its scales, and the LoRA factors (A, B, alpha / rank) or None.

        Which products: `int8_products` (Keras' int8 arithmetic where
        `torch._int_mm` is fast, else weight-only int8, as torchao's
        `int8_weight_only` and gpt-fast: float rows times the int8
        kernel's values q / scale). The `torch._int_mm` kernel is kept
        column-major (its fast layout; a transposed W_E already is); for
        weight-only, the kernel dequantized to float32 once and packed like
        a float kernel (`linear`), and for bfloat16 rows the int8 kernel
        (out, in) for `pytorch.weight_only_int8_matmul`.
        """
        import torch

        q = q_kernel.value.detach()
        scale = scale.value.detach()
        products = int8_products(q.device.type)
        fast = products == "torch._int_mm"
        key = (q.data_ptr(), tuple(q.shape), products)
        cached = self.packed.get(key)
        if cached is None or cached[0] != q._version:
            if fast:
                kernel = q.T if transposed else q.T.contiguous().T
            else:
                dequantized = (q.T if transposed else q).float() / scale
                dequantized = (("onednn", self.pack(dequantized),
                                dequantized)
                               if self.packable(dequantized)
                               else ("addmm", dequantized))
                rows_kernel = None
                if products == "weight-only, bfloat16 rows":
                    rows_kernel = (q if transposed else q.T.contiguous(),
                                   torch.ones(scale.shape[-1],
                                              dtype=torch.bfloat16))
                kernel = (dequantized, rows_kernel)
            cached = (q._version, kernel)
        self.fresh[key] = cached
        bias = None if bias is None else bias.float()  # products give float32
        return ("int8" if fast else "int8w", cached[1], bias, scale,
                low_rank)

    def dense(self, x, params):
        """`x @ kernel + bias` for (rows, in) `x` and what `linear` /
        `int8_linear` made.

        Called 25 times per decoded token of a 6-layer model, so the
        Python here is kept to what the products need (at one row it cost
        as much as a product)."""
        import torch

        kind, kernel, bias = params[:3]
        if kind == "onednn":
            if not self.plain:
                return torch.ops.mkldnn._linear_pointwise(
                    x, kernel, bias, "none", [], "")
            kind, kernel = "addmm", params[3]
        if kind == "addmm":
            return x @ kernel if bias is None else torch.addmm(bias, x, kernel)
        if kind == "int8":
            q, row_scale = pytorch.quantize_rows(x)
            y = pytorch.int8_matmul(q, kernel) / (row_scale * params[3])
            if bias is not None:
                y = y + bias
        elif (kernel[1] is not None and not self.plain
              and x.shape[0] <= pytorch.WEIGHT_ONLY_MAX_ROWS):
            y = pytorch.weight_only_int8_matmul(x, *kernel[1])
            y = (torch.div(y, params[3]) if bias is None  # to float32
                 else torch.addcdiv(bias, y, params[3]))
        else:
            y = self.dense(x.float(), kernel[0][:2] + (bias,)
                           + kernel[0][2:])
        if params[4] is not None:
            a, b, factor = params[4]
            y = y + factor * ((x.float() @ a) @ b)
        return y if y.dtype == x.dtype else y.to(x.dtype)
