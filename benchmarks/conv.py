"""conv2d: the compiled kernel ladder, rung by rung, beside torch's convolution (oneDNN on a CPU).

Shapes are the ResNet-50 layers at batch 8, in NCHW float32, plus the forward at batch 1.
FLOPs count one multiply and one add per weight tap per output (2·N·O·H'·W'·(C/g)·kh·kw for
the forward); the backward computes dx and dW, twice that, so fwd+bwd is 3x the forward.
`% peak` is against the FMA peak measured in the same run (csrc/cpu/peak.cpp), on the same
threads. Every implementation allocates its outputs the same way (a plain allocation).

On a GPU (a CUDA build of torch and of the extension) the family is the CUDA ladder beside cuDNN
instead (`gpu_cases`): the same layers at batch 32 and 128, float32 NCHW with TF32 off on both
sides (`torch.backends.cudnn.allow_tf32 = False`: our rung 2 computes in full float32) for rungs
1-2, and bfloat16 channels_last for rungs 2-3; cuDNN with `cudnn.benchmark = True` picks its
fastest algorithm per shape; the fused conv+ReLU against cuDNN's conv then a ReLU.

Rows: `torch` (oneDNN), each rung of ours (`direct` rung 1, `im2col` rung 2, `gemm` rung 3,
`implicit` rung 4, `depthwise` for the depthwise layer), and the Python `reference` (im2col in
Python, which materializes the im2col matrix, (C/g)·kh·kw times the input's size, before its one
matmul). Rung 1 runs only where a call takes well under a second. The `conv+relu` cases time
the fused epilogue (`activation="relu"`) against torch's conv followed by a ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F
import minitorch_nn.kernels as K

from .harness import MODES, Case, autograd_setup, seeded_inputs

# (name, N, C, H, W, O, kernel, stride, padding, groups): ResNet-50's layers (issue 11's list).
LAYERS = [
    ("stem 7x7/2 3->64 @224", 3, 224, 224, 64, 7, 2, 3, 1),
    ("3x3 64->64 @56", 64, 56, 56, 64, 3, 1, 1, 1),
    ("1x1 64->256 @56", 64, 56, 56, 256, 1, 1, 0, 1),
    ("1x1 256->64 @56", 256, 56, 56, 64, 1, 1, 0, 1),
    ("1x1/2 256->512 @56", 256, 56, 56, 512, 1, 2, 0, 1),
    ("3x3 128->128 @28", 128, 28, 28, 128, 3, 1, 1, 1),
    ("3x3 256->256 @14", 256, 14, 14, 256, 3, 1, 1, 1),
    ("1x1 1024->256 @14", 1024, 14, 14, 256, 1, 1, 0, 1),
    ("3x3 512->512 @7", 512, 7, 7, 512, 3, 1, 1, 1),
    ("3x3 depthwise 256 @28", 256, 28, 28, 256, 3, 1, 1, 256),
]
QUICK_LAYERS = [("3x3 8->8 @10", 8, 10, 10, 8, 3, 1, 1, 1), ("3x3 depthwise 8 @10", 8, 10, 10, 8, 3, 1, 1, 8)]
# Rung 1 runs at ~1-3 GFLOP/s; beyond this many forward FLOPs a call takes over a second.
DIRECT_MAX_FLOPS = 0.5e9
# The Python reference, likewise (it is also a memory hog: the im2col matrix of the whole batch).
REFERENCE_MAX_FLOPS = 2e9


def _rungs(groups: int, channels: int) -> list[str]:
    """Every general rung, and the depthwise one for a depthwise layer (where the GEMM rungs show why not)."""
    rungs = [a for a in K.CPU_ALGORITHMS if a not in ("auto", "depthwise")]
    if groups > 1 and groups == channels and "depthwise" in K.CPU_ALGORITHMS:
        rungs.append("depthwise")
    return rungs


# The CUDA ladder's rows: (dtype, memory format, rungs). Rung 1 only where it takes under a second.
GPU_VARIANTS = (
    (torch.float32, torch.contiguous_format, ("direct", "implicit")),
    (torch.bfloat16, torch.channels_last, ("implicit", "mma")),
)
GPU_DIRECT_MAX_FLOPS = 50e9


def epilogue_cases(device, dtype, fmt, layers, n: int, tag: str) -> list[Case]:
    """The fused epilogue, forward: conv + bias + ReLU in the kernel's output stage against torch's
    conv then a ReLU; and, for inference, a BatchNorm folded into the conv (K.fold_batch_norm: the
    BatchNorm becomes the bias) against torch's conv, eval-mode BatchNorm and ReLU."""
    out = []
    for name, c, h, w, o, k, s, p, _g in layers:
        inputs = seeded_inputs(
            lambda n=n, c=c, h=h, w=w: torch.randn(n, c, h, w, device=device, dtype=dtype).contiguous(
                memory_format=fmt
            ),
            lambda o=o, c=c, k=k: (torch.randn(o, c, k, k, device=device, dtype=dtype) / (c * k * k) ** 0.5).contiguous(
                memory_format=fmt
            ),
            lambda o=o: torch.randn(o, device=device, dtype=dtype),
        )
        conf = {"stride": s, "padding": p}
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        flops = 2 * n * o * oh * ow * c * k * k
        impls = {
            "torch": autograd_setup(lambda x, w, b, conf=conf: torch.relu(TF.conv2d(x, w, b, **conf)), inputs, "fwd"),
            "ours, conv then relu": autograd_setup(
                lambda x, w, b, conf=conf: torch.relu(K.conv2d(x, w, b, **conf)), inputs, "fwd"
            ),
            "ours, fused relu": autograd_setup(
                lambda x, w, b, conf=conf: K.conv2d(x, w, b, **conf, activation="relu"), inputs, "fwd"
            ),
        }
        shape = f"{n}x{c}x{h}x{w} -> {o}"
        out.append(Case("conv", f"conv2d+relu {name}{tag}", shape, dtype, "fwd", impls, flops=flops))

        # Inference: conv -> BatchNorm (running statistics) -> ReLU. The same weights for both sides;
        # ours runs the folded conv (what fold_batch_norm builds), its time excluding the one-off fold.
        def bn_inputs(inputs=inputs, o=o):
            x, w, b = inputs()
            stats = [torch.rand(o, device=device, dtype=dtype) + 0.5 for _ in range(2)]  # var, gamma
            mean, beta = torch.randn(o, device=device, dtype=dtype), torch.randn(o, device=device, dtype=dtype)
            return [x, w, b, mean, stats[0], stats[1], beta]

        def torch_bn(x, w, b, mean, var, gamma, beta, conf=conf):
            return torch.relu(TF.batch_norm(TF.conv2d(x, w, b, **conf), mean, var, gamma, beta, False, 0.0, 1e-5))

        def folded(inputs_bn=bn_inputs):
            x, w, b, mean, var, gamma, beta = inputs_bn()
            scale = gamma.double() / (var.double() + 1e-5).sqrt()
            w_f = (w.double() * scale.view(-1, 1, 1, 1)).to(dtype).contiguous(memory_format=fmt)
            b_f = ((b.double() - mean.double()) * scale + beta.double()).to(dtype)
            return [x, w_f, b_f]

        bn_impls = {
            "torch": autograd_setup(torch_bn, bn_inputs, "fwd"),
            "ours, folded bn + fused relu": autograd_setup(
                lambda x, w, b, conf=conf: K.conv2d(x, w, b, **conf, activation="relu"), folded, "fwd"
            ),
        }
        out.append(Case("conv", f"conv2d+bn+relu (inference) {name}{tag}", shape, dtype, "fwd", bn_impls, flops=flops))
    return out


def gpu_cases(device: torch.device, quick: bool) -> list[Case]:
    """The CUDA conv ladder beside cuDNN (issue 16's layers), forward and forward+backward."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False  # stated in the module docstring and the report's case names
    out = []
    layers = QUICK_LAYERS if quick else [layer for layer in LAYERS if layer[-1] == 1]
    for n in (2,) if quick else (32, 128):
        for dtype, fmt, rungs in GPU_VARIANTS:
            tag = "NCHW, TF32 off" if fmt == torch.contiguous_format else "NHWC"
            for name, c, h, w, o, k, s, p, g in layers:
                inputs = seeded_inputs(
                    lambda n=n, c=c, h=h, w=w, dtype=dtype, fmt=fmt: torch.randn(
                        n, c, h, w, device=device, dtype=dtype
                    ).contiguous(memory_format=fmt),
                    lambda o=o, c=c, k=k, g=g, dtype=dtype, fmt=fmt: (
                        torch.randn(o, c // g, k, k, device=device, dtype=dtype) / (c // g * k * k) ** 0.5
                    ).contiguous(memory_format=fmt),
                    lambda o=o, dtype=dtype: torch.randn(o, device=device, dtype=dtype),
                )
                conf = {"stride": s, "padding": p, "groups": g}
                oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
                flops = 2 * n * o * oh * ow * (c // g) * k * k
                for mode in MODES:
                    impls = {
                        "torch": autograd_setup(
                            lambda x, w, b, conf=conf: TF.conv2d(x, w, b, **conf), inputs, mode, (0, 1, 2)
                        )
                    }
                    for rung in rungs:
                        # Rung 1's weight gradient is a thread per weight, each summing N·H'·W' terms: only
                        # small layers get its backward timed.
                        direct_limit = GPU_DIRECT_MAX_FLOPS if mode == "fwd" else GPU_DIRECT_MAX_FLOPS / 25
                        if rung == "direct" and flops > direct_limit:
                            continue
                        if rung == "mma" and (c % 8 or o % 8):
                            continue
                        impls[rung] = autograd_setup(
                            lambda x, w, b, conf=conf, rung=rung: K.conv2d(x, w, b, **conf, algorithm=rung),
                            inputs,
                            mode,
                            (0, 1, 2),
                        )
                    out.append(
                        Case(
                            "conv",
                            f"conv2d {name} ({tag})",
                            f"{n}x{c}x{h}x{w} -> {o}",
                            dtype,
                            mode,
                            impls,
                            flops=(1 if mode == "fwd" else 3) * flops,
                        )
                    )
            if dtype == torch.bfloat16:
                layers_epi = QUICK_LAYERS[:1] if quick else [LAYERS[1], LAYERS[2]]
                out += epilogue_cases(device, dtype, torch.channels_last, layers_epi, n, f" ({tag})")
    return out


def cases(device: torch.device, quick: bool) -> list[Case]:
    if device.type == "cuda" and K.AVAILABLE:
        return gpu_cases(device, quick)
    dtype = torch.float32
    out = []
    batches = ((2, MODES),) if quick else ((8, MODES), (1, ("fwd",)))
    for n, modes in batches:
        for name, c, h, w, o, k, s, p, g in QUICK_LAYERS if quick else LAYERS:
            inputs = seeded_inputs(
                lambda n=n, c=c, h=h, w=w: torch.randn(n, c, h, w, device=device, dtype=dtype),
                lambda o=o, c=c, k=k, g=g: (
                    torch.randn(o, c // g, k, k, device=device, dtype=dtype) / (c // g * k * k) ** 0.5
                ),
                lambda o=o: torch.randn(o, device=device, dtype=dtype),
            )
            conf = {"stride": s, "padding": p, "groups": g}
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            flops = 2 * n * o * oh * ow * (c // g) * k * k
            for mode in modes:
                impls = {
                    "torch": autograd_setup(
                        lambda x, w, b, conf=conf: TF.conv2d(x, w, b, **conf), inputs, mode, (0, 1, 2)
                    )
                }
                if device.type == "cpu" and K.AVAILABLE:
                    for rung in _rungs(g, c):
                        if rung == "direct" and flops > DIRECT_MAX_FLOPS:
                            continue
                        impls[rung] = autograd_setup(
                            lambda x, w, b, conf=conf, rung=rung: K.conv2d(x, w, b, **conf, algorithm=rung),
                            inputs,
                            mode,
                            (0, 1, 2),
                        )
                if flops <= REFERENCE_MAX_FLOPS:
                    impls["reference"] = autograd_setup(
                        lambda x, w, b, conf=conf: F.conv2d(x, w, b, **conf), inputs, mode, (0, 1, 2)
                    )
                out.append(
                    Case(
                        "conv",
                        f"conv2d {name}",
                        f"{n}x{c}x{h}x{w} -> {o}",
                        dtype,
                        mode,
                        impls,
                        flops=(1 if mode == "fwd" else 3) * flops,
                    )
                )
    # The fused epilogue: f(conv + b) in the kernel's output stage, against torch's conv then relu.
    if device.type == "cpu" and K.AVAILABLE:
        layers_epi = QUICK_LAYERS[:1] if quick else [LAYERS[1], LAYERS[2], LAYERS[6]]
        out += epilogue_cases(device, dtype, torch.contiguous_format, layers_epi, 2 if quick else 8, "")
    return out
