"""Linear: the reference (matmul + add, with a hand-written backward) against F.linear.

Compute-bound at these shapes: the forward is 2·N·I·O FLOPs, the backward twice that
(dx = dy W and dW = dyᵀ x). Both sides call the same BLAS (oneDNN / MKL on the CPU, cuBLAS
on a GPU); the differences are the fused bias (addmm) and the reshapes around the
backward's matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F

from .harness import MODES, Case, autograd_setup, seeded_inputs

# (rows N, in_features I, out_features O)
SHAPES = [
    (8192, 1024, 1024),  # a transformer block's projection over 8 sequences of 1024 tokens
    (4096, 768, 3072),  # GPT-2 small's MLP up-projection
    (64, 4096, 4096),  # small batch: reading the 64 MiB weight dominates
]
QUICK_SHAPES = [(64, 128, 96)]


def cases(device: torch.device, quick: bool) -> list[Case]:
    dtype = torch.float32
    out = []
    for n, i, o in QUICK_SHAPES if quick else SHAPES:
        inputs = seeded_inputs(
            lambda n=n, i=i: torch.randn(n, i, device=device, dtype=dtype),
            lambda i=i, o=o: torch.randn(o, i, device=device, dtype=dtype) / i**0.5,
            lambda o=o: torch.randn(o, device=device, dtype=dtype),
        )
        for mode in MODES:
            grad_args = (0, 1, 2)
            out.append(
                Case(
                    "linear",
                    "linear",
                    f"{n}x{i} @ {o}x{i}",
                    dtype,
                    mode,
                    {
                        "torch": autograd_setup(TF.linear, inputs, mode, grad_args),
                        "reference": autograd_setup(F.linear, inputs, mode, grad_args),
                    },
                    flops=(2 if mode == "fwd" else 6) * n * i * o,
                )
            )
    return out
