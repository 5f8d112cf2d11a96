"""Dropout: the reference (Bernoulli mask, scale, multiply) against torch's dropout.

``bytes_moved`` counts the unavoidable traffic, reading x and writing y (forward) plus
reading dy and writing dx (backward), and ignores the mask: torch stores it as a full
float tensor on the CPU and as bytes on a GPU, the reference as a float tensor.
On the CPU both draw the same mask from the same seed, so results are also validated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F

from .harness import MODES, Case, autograd_setup, numel, seeded_inputs, shape_str


def cases(device: torch.device, quick: bool) -> list[Case]:
    shape = (256, 256) if quick else (8192, 1024)
    dtype = torch.float32
    size = numel(shape) * torch.tensor([], dtype=dtype).element_size()
    inputs = seeded_inputs(lambda: torch.randn(shape, device=device, dtype=dtype))
    out = []
    for p in (0.1, 0.5):
        for mode in MODES:
            out.append(
                Case(
                    "dropout",
                    f"dropout(p={p})",
                    shape_str(shape),
                    dtype,
                    mode,
                    {
                        "torch": autograd_setup(lambda x, p=p: TF.dropout(x, p), inputs, mode),
                        "reference": autograd_setup(lambda x, p=p: F.dropout(x, p), inputs, mode),
                    },
                    bytes_moved=(2 if mode == "fwd" else 4) * size,
                    copy_elements=numel(shape),
                    # CUDA's fused dropout kernel draws its mask differently from the CPU's.
                    validate=device.type == "cpu",
                )
            )
    return out
