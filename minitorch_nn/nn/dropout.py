"""``Dropout``, built on :func:`minitorch_nn.functional.dropout`."""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from .. import functional as F

__all__ = ["Dropout"]


class Dropout(Module):
    r"""Inverted dropout: in training, zero each element with probability ``p`` and scale the
    survivors by ``1/(1-p)``; in eval mode (``model.eval()``), the identity.

    Because survivors are scaled up during training, the expected activation is the same in
    both modes and nothing needs rescaling at test time.

    Args:
        p: probability of an element being zeroed. Default: 0.5.
        inplace: do the operation in place. Default: ``False``.

    Raises:
        ValueError: ``p`` outside ``[0, 1]``.

    Example::

        >>> import torch
        >>> m = Dropout(p=0.2).eval()
        >>> x = torch.randn(4)
        >>> m(x) is x
        True
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
