"""``CrossEntropyLoss`` and ``BCEWithLogitsLoss`` on the reference losses.

Constructor arguments, the ``weight`` / ``pos_weight`` buffers (registered even when ``None``, so
``state_dict`` keys match), ``reduction`` and ``repr`` are torch.nn's. The math (the fused
softmax/sigmoid, the options, the backward) is documented in
:mod:`minitorch_nn.functional.loss`. Both take raw scores: a classifier ends in a ``Linear``
layer with no softmax or sigmoid after it.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from .. import functional as F
from ..functional.loss import legacy_reduction

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss"]


class _Loss(Module):
    """``reduction``, from the deprecated ``size_average`` / ``reduce`` flags if they are given."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            self.reduction = legacy_reduction(size_average, reduce)
        else:
            self.reduction = reduction


class CrossEntropyLoss(_Loss):
    r"""Cross-entropy between softmax(input) and class indices or class probabilities.

    See :func:`minitorch_nn.functional.cross_entropy` for the math, the options and the shapes.

    Args:
        weight: ``(C,)`` class weights, stored as the buffer ``weight``.
        size_average, reduce: deprecated; map to ``reduction`` as in torch.
        ignore_index: class-index targets with this value add no loss. Default: -100.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        label_smoothing: ε in [0, 1]: targets become ``(1 − ε)·target + ε/C``. Default: 0.

    Example::

        >>> import torch
        >>> CrossEntropyLoss()(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]))
        tensor(0.1698)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class BCEWithLogitsLoss(_Loss):
    r"""Binary cross-entropy of sigmoid(input) against ``target``, computed stably from the logits.

    See :func:`minitorch_nn.functional.binary_cross_entropy_with_logits`.

    Args:
        weight: rescales each element's loss (broadcasts to the input), buffer ``weight``.
        size_average, reduce: deprecated; map to ``reduction`` as in torch.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        pos_weight: weight of positive examples, broadcast along the input's trailing dims
            (``(C,)`` for C labels), buffer ``pos_weight``.

    Example::

        >>> import torch
        >>> BCEWithLogitsLoss()(torch.tensor([0.0]), torch.tensor([1.0]))
        tensor(0.6931)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )
