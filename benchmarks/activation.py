"""Activations: the reference ops against torch's fused CPU/CUDA kernels.

Each activation is memory-bound: a fused kernel reads x and writes y (forward) and reads dy
and x and writes dx (backward), so ``bytes_moved`` is 2 and 5 tensors' worth. The reference
evaluates its formula one tensor op at a time, each a full pass over memory, so its GB/s
(computed from the same minimum traffic) shows how far unfused code sits from the limit.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F

from .harness import MODES, Case, autograd_setup, numel, seeded_inputs, shape_str

OPS = {
    "relu": (F.relu, TF.relu),
    "leaky_relu": (F.leaky_relu, TF.leaky_relu),
    "gelu": (F.gelu, TF.gelu),
    "gelu(tanh)": (partial(F.gelu, approximate="tanh"), partial(TF.gelu, approximate="tanh")),
    "silu": (F.silu, TF.silu),
    "mish": (F.mish, TF.mish),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "softplus": (F.softplus, TF.softplus),
}


def cases(device: torch.device, quick: bool) -> list[Case]:
    shape = (256, 256) if quick else (8192, 1024)
    dtype = torch.float32
    size = numel(shape) * torch.tensor([], dtype=dtype).element_size()
    inputs = seeded_inputs(lambda: torch.randn(shape, device=device, dtype=dtype))
    out = []
    for op, (ours, theirs) in OPS.items():
        for mode in MODES:
            out.append(
                Case(
                    "activation",
                    op,
                    shape_str(shape),
                    dtype,
                    mode,
                    {"torch": autograd_setup(theirs, inputs, mode), "reference": autograd_setup(ours, inputs, mode)},
                    bytes_moved=(2 if mode == "fwd" else 5) * size,
                    copy_elements=numel(shape),
                )
            )
    return out
