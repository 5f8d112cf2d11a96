"""conv2d: the im2col reference against torch's convolution (oneDNN on a CPU, cuDNN on a GPU).

Shapes are ResNet layers at batch 8. FLOPs count one multiply and one add per weight tap per
output (2·N·O·H'·W'·(C/g)·kh·kw for the forward); the backward computes dx and dW, twice that.
The reference materializes the im2col matrix, (C/g)·kh·kw times the input's size, before its
one matmul: that copy is the cost implicit-GEMM kernels (cuDNN, oneDNN) avoid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F

from .harness import MODES, Case, autograd_setup, seeded_inputs

# (name, N, C, H, W, O, kernel, stride, padding, groups)
SHAPES = [
    ("stem 7x7/2", 8, 3, 224, 224, 64, 7, 2, 3, 1),
    ("3x3, 64ch @56", 8, 64, 56, 56, 64, 3, 1, 1, 1),
    ("3x3, 128ch @28", 8, 128, 28, 28, 128, 3, 1, 1, 1),
    ("3x3, 256ch @14", 8, 256, 14, 14, 256, 3, 1, 1, 1),
    ("1x1, 64->256 @56", 8, 64, 56, 56, 256, 1, 1, 0, 1),
    ("3x3 depthwise, 128ch @28", 8, 128, 28, 28, 128, 3, 1, 1, 128),
]
QUICK_SHAPES = [("3x3, 8ch @10", 2, 8, 10, 10, 8, 3, 1, 1, 1), ("3x3 depthwise", 2, 8, 10, 10, 8, 3, 1, 1, 8)]


def cases(device: torch.device, quick: bool) -> list[Case]:
    dtype = torch.float32
    out = []
    for name, n, c, h, w, o, k, s, p, g in QUICK_SHAPES if quick else SHAPES:
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
        for mode in MODES:
            out.append(
                Case(
                    "conv",
                    f"conv2d {name}",
                    f"{n}x{c}x{h}x{w} -> {o}",
                    dtype,
                    mode,
                    {
                        "torch": autograd_setup(
                            lambda x, w, b, conf=conf: TF.conv2d(x, w, b, **conf), inputs, mode, (0, 1, 2)
                        ),
                        "reference": autograd_setup(
                            lambda x, w, b, conf=conf: F.conv2d(x, w, b, **conf), inputs, mode, (0, 1, 2)
                        ),
                    },
                    flops=(1 if mode == "fwd" else 3) * flops,
                )
            )
    return out
