"""Normalization: the reference BatchNorm / LayerNorm / GroupNorm against torch's kernels.

Memory-bound: ``bytes_moved`` counts one read of x and one write of y for the forward, plus a
read of dy and x and a write of dx for the backward (a kernel that keeps a row in registers
reads it once; the per-channel statistics and parameters are negligible). The reference makes
a full pass over memory for each tensor op of the standardization and of the three-term
backward, which is the traffic the fused kernels of csrc/ remove.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F

from .harness import MODES, Case, autograd_setup, numel, seeded_inputs, shape_str


def _case(op, shape, device, dtype, mode, ours, theirs, channels):
    size = numel(shape) * torch.tensor([], dtype=dtype).element_size()
    inputs = seeded_inputs(
        lambda: torch.randn(shape, device=device, dtype=dtype),
        lambda: torch.rand(channels, device=device, dtype=dtype) + 0.5,
        lambda: torch.randn(channels, device=device, dtype=dtype),
    )
    return Case(
        "normalization",
        op,
        shape_str(shape),
        dtype,
        mode,
        {
            "torch": autograd_setup(theirs, inputs, mode, (0, 1, 2)),
            "reference": autograd_setup(ours, inputs, mode, (0, 1, 2)),
        },
        bytes_moved=(2 if mode == "fwd" else 5) * size,
        copy_elements=numel(shape),
    )


def cases(device: torch.device, quick: bool) -> list[Case]:
    dtype = torch.float32
    rows = (64, 96) if quick else (8192, 1024)
    image = (4, 8, 6, 6) if quick else (32, 64, 56, 56)  # a ResNet stage-1 activation
    groups = 4 if quick else 32
    out = []
    for mode in MODES:
        out.append(
            _case(
                "layer_norm",
                rows,
                device,
                dtype,
                mode,
                lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b),
                lambda x, w, b: TF.layer_norm(x, x.shape[-1:], w, b),
                rows[-1],
            )
        )
        out.append(
            _case(
                "batch_norm (training)",
                image,
                device,
                dtype,
                mode,
                lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
                image[1],
            )
        )
        out.append(
            _case(
                f"group_norm ({groups} groups)",
                image,
                device,
                dtype,
                mode,
                lambda x, w, b: F.group_norm(x, groups, w, b),
                lambda x, w, b: TF.group_norm(x, groups, w, b),
                image[1],
            )
        )
    return out
