"""``Flatten``: the reshape between a convolutional trunk and a linear head."""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

__all__ = ["Flatten"]


class Flatten(Module):
    r"""Flattens dimensions ``start_dim`` to ``end_dim`` (inclusive) into one.

    Shape:
        ``(*, S_start, ..., S_end, *)`` -> ``(*, S_start · ... · S_end, *)``; the default keeps
        the batch dimension: ``(N, C, H, W)`` -> ``(N, C·H·W)``.

    A view of the input where the strides allow it, a copy otherwise (as ``reshape``).

    Example::

        >>> import torch
        >>> Flatten()(torch.zeros(32, 1, 5, 5)).shape
        torch.Size([32, 25])
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
