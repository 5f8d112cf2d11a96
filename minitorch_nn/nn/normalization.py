"""``BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm``, ``GroupNorm`` on the reference normalization ops.

Constructor arguments, parameters, buffers (``running_mean``, ``running_var``,
``num_batches_tracked``), ``repr`` and ``state_dict`` keys are torch.nn's, so state dicts load
both ways. The math is documented in :mod:`minitorch_nn.functional.normalization`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import Module, Parameter

from .. import functional as F
from .. import init

__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "LayerNorm"]


def _register_affine(module: Module, shape: Sequence[int], scale: bool, shift: bool, factory_kwargs: dict) -> None:
    """``weight`` (γ) and ``bias`` (β) parameters of ``shape``, or ``None`` entries as torch registers them."""
    for name, wanted in (("weight", scale), ("bias", scale and shift)):
        param = Parameter(torch.empty(shape, **factory_kwargs)) if wanted else None
        module.register_parameter(name, param)


def _reset_affine(module: Module) -> None:
    """γ = 1 and β = 0: the layer starts as a pure standardization."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class _BatchNorm(Module):
    r"""Shared by BatchNorm1d/2d, which differ only in the input ranks they accept.

    Training: normalize with the batch's per-channel mean and biased variance, and fold the batch
    into the running estimates (unbiased variance) with weight ``momentum``, or, with
    ``momentum=None``, as a cumulative average: the t-th batch gets weight 1/t, so after t
    batches the running values are the plain mean of the t batch statistics.
    Evaluation: normalize with the running estimates, so the layer is a fixed affine map.
    ``track_running_stats=False`` keeps no estimates and uses batch statistics in both modes.
    """

    _version = 2  # torch's state-dict version for BatchNorm (the one with num_batches_tracked)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _register_affine(self, (num_features,), affine, bias, factory_kwargs)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(num_features, **factory_kwargs))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        _reset_affine(self)

    def _check_input_dim(self, input: Tensor) -> None:
        raise NotImplementedError

    def _batch_norm_arguments(self) -> tuple[Tensor | None, Tensor | None, bool, float]:
        """``(running_mean, running_var, training, momentum)`` for a batch_norm call, torch's rules.

        Counts the batch in ``num_batches_tracked`` when training with tracked statistics. Shared
        by the fused ``minitorch_nn.kernels.BatchNormAct2d``.
        """
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)  # cumulative moving average
        # Batch statistics in training, and in eval when there are no running estimates.
        use_batch_stats = self.training or self.running_mean is None
        # Running estimates are passed only to be updated (training, tracked) or used (eval).
        track = not self.training or self.track_running_stats
        return (self.running_mean if track else None, self.running_var if track else None, use_batch_stats, momentum)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        running_mean, running_var, training, momentum = self._batch_norm_arguments()
        return F.batch_norm(input, running_mean, running_var, self.weight, self.bias, training, momentum, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs) -> None:
        # State dicts older than version 2 (or plain dicts, with no version) may lack
        # num_batches_tracked: keep the layer's own count, as torch does (0 for a fresh layer).
        # Resetting it would restart momentum=None's cumulative average.
        key = prefix + "num_batches_tracked"
        if (local_metadata.get("version") or 0) < 2 and self.track_running_stats and key not in state_dict:
            own = self.num_batches_tracked
            state_dict[key] = own if own is not None and not own.is_meta else torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization of ``(N, C)`` or ``(N, C, L)`` input, per channel C.

    Example::

        >>> import torch
        >>> m = BatchNorm1d(3)
        >>> m(torch.randn(8, 3, 5)).shape
        torch.Size([8, 3, 5])
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization of ``(N, C, H, W)`` input, per channel C (any memory format).

    Example::

        >>> import torch
        >>> m = BatchNorm2d(3).eval()   # an affine map with the running estimates (0 and 1)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> torch.allclose(m(x), x / (1 + m.eps) ** 0.5)
        True
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class LayerNorm(Module):
    r"""Layer normalization over the trailing ``normalized_shape`` dims; the same in train and eval.

    Args:
        normalized_shape: an int (the last dim) or a sequence of trailing dim sizes.
        eps: added to the variance. Default: 1e-5.
        elementwise_affine: learn a per-element scale (ones) and, with ``bias``, shift (zeros).
        bias: learn the shift. Default: ``True``.

    Example::

        >>> import torch
        >>> LayerNorm(16)(torch.randn(4, 10, 16)).shape
        torch.Size([4, 10, 16])
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _register_affine(self, self.normalized_shape, elementwise_affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class GroupNorm(Module):
    r"""Group normalization: per sample, over groups of ``num_channels / num_groups`` channels.

    Args:
        num_groups: G, which must divide ``num_channels``.
        num_channels: C.
        eps: added to the variance. Default: 1e-5.
        affine: learn a per-channel scale (ones) and, with ``bias``, shift (zeros).

    Raises:
        ValueError: ``num_channels`` not divisible by ``num_groups`` (as torch).

    Differs from torch (on purpose): with a zero spatial size (empty groups) the weight's gradient
    is 0, the empty sum; torch's is NaN (docs/findings.md).

    Example::

        >>> import torch
        >>> GroupNorm(2, 6)(torch.randn(1, 6, 4, 4)).shape   # batch size 1 is fine
        torch.Size([1, 6, 4, 4])
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _register_affine(self, (num_channels,), affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={bias}"
