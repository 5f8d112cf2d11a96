"""Pooling: the reference max/avg/adaptive pools against torch's kernels, on ResNet shapes.

Memory-bound: ``bytes_moved`` counts reading the input and writing the output (forward), plus
reading dy and writing dx (backward). The reference gathers every window into a copy (kh·kw
times the output's size) before reducing it, and max pooling also gathers the pixel indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F

from .harness import MODES, Case, autograd_setup, numel, seeded_inputs, shape_str

# (op name, input shape, ours, torch's, output shape)
SHAPES = [
    ("max_pool2d 3x3/2 pad 1", (8, 64, 112, 112), dict(kernel_size=3, stride=2, padding=1), (8, 64, 56, 56)),
    ("avg_pool2d 2x2/2", (8, 256, 56, 56), dict(kernel_size=2), (8, 256, 28, 28)),
    ("adaptive_avg_pool2d -> 1x1", (8, 2048, 7, 7), dict(output_size=1), (8, 2048, 1, 1)),
]
QUICK_SHAPES = [
    ("max_pool2d 3x3/2 pad 1", (2, 4, 12, 12), dict(kernel_size=3, stride=2, padding=1), (2, 4, 6, 6)),
    ("avg_pool2d 2x2/2", (2, 4, 12, 12), dict(kernel_size=2), (2, 4, 6, 6)),
    ("adaptive_avg_pool2d -> 1x1", (2, 4, 7, 7), dict(output_size=1), (2, 4, 1, 1)),
]
OPS = {
    "max_pool2d": (F.max_pool2d, TF.max_pool2d),
    "avg_pool2d": (F.avg_pool2d, TF.avg_pool2d),
    "adaptive_avg_pool2d": (F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d),
}


def cases(device: torch.device, quick: bool) -> list[Case]:
    dtype = torch.float32
    size = torch.tensor([], dtype=dtype).element_size()
    out = []
    for name, shape, kwargs, out_shape in QUICK_SHAPES if quick else SHAPES:
        ours, theirs = OPS[name.split()[0]]
        inputs = seeded_inputs(lambda shape=shape: torch.randn(shape, device=device, dtype=dtype))
        traffic = {"fwd": numel(shape) + numel(out_shape), "fwd+bwd": 2 * (numel(shape) + numel(out_shape))}
        for mode in MODES:
            out.append(
                Case(
                    "pooling",
                    name,
                    shape_str(shape),
                    dtype,
                    mode,
                    {
                        "torch": autograd_setup(lambda x, f=theirs, kw=kwargs: f(x, **kw), inputs, mode),
                        "reference": autograd_setup(lambda x, f=ours, kw=kwargs: f(x, **kw), inputs, mode),
                    },
                    bytes_moved=traffic[mode] * size,
                    copy_elements=numel(shape),
                )
            )
    return out
