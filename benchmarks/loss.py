"""Losses: the reference cross-entropy and BCE-with-logits against torch's kernels.

Memory-bound. A fused cross-entropy reads the (N, C) scores once for the forward (the targets
are N integers) and, for the backward, reads them again and writes the (N, C) gradient:
``bytes_moved`` is 1 and 3 score tensors' worth. BCE-with-logits reads scores and targets
(2 tensors) and, with the backward, also writes the gradient (3 reads and 1 write in all: the
backward reads scores and targets again). The reference builds the one-hot target distribution
and evaluates its formula one tensor op at a time, each a full pass over memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F

from .harness import MODES, Case, autograd_setup, numel, seeded_inputs, shape_str


def cases(device: torch.device, quick: bool) -> list[Case]:
    dtype = torch.float32
    rows, classes = (64, 100) if quick else (4096, 1000)  # ImageNet-sized classification head
    logits = (rows, classes)
    size = numel(logits) * torch.tensor([], dtype=dtype).element_size()
    out = []

    def ce_case(op, mode, ours, theirs, makers, grad_args=(0,), bytes_fwd=1, bytes_bwd=3):
        inputs = seeded_inputs(*makers)
        return Case(
            "loss",
            op,
            shape_str(logits),
            dtype,
            mode,
            {
                "torch": autograd_setup(theirs, inputs, mode, grad_args),
                "reference": autograd_setup(ours, inputs, mode, grad_args),
            },
            bytes_moved=(bytes_fwd if mode == "fwd" else bytes_bwd) * size,
            copy_elements=numel(logits),
        )

    def scores():
        return torch.randn(logits, device=device, dtype=dtype) * 3

    def labels():
        return torch.randint(0, classes, (rows,), device=device)

    def soft_labels():
        return torch.rand(logits, device=device, dtype=dtype)

    for mode in MODES:
        out.append(ce_case("cross_entropy", mode, F.cross_entropy, TF.cross_entropy, (scores, labels)))
        out.append(
            ce_case(
                "cross_entropy (label_smoothing=0.1)",
                mode,
                lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1),
                lambda x, y: TF.cross_entropy(x, y, label_smoothing=0.1),
                (scores, labels),
            )
        )
        out.append(
            ce_case(
                "bce_with_logits",
                mode,
                F.binary_cross_entropy_with_logits,
                TF.binary_cross_entropy_with_logits,
                (scores, soft_labels),
                bytes_fwd=2,
                bytes_bwd=3,
            )
        )
    return out
