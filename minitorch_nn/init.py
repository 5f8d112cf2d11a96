r"""Weight initialisation: why the scale of the first random draw matters, and how to pick it.

A layer ``y = W x`` with ``fan_in`` inputs, zero-mean weights of variance Var(W) and inputs
of variance Var(x) produces outputs of variance

    Var(y) = fan_in · Var(W) · Var(x).

Keep ``fan_in · Var(W) = 1`` and the signal neither explodes nor vanishes with depth; the
backward pass asks the same of ``fan_out`` (each input feeds ``fan_out`` outputs).

* **Xavier / Glorot** (for tanh, sigmoid, linear): compromise between the two,
  Var(W) = gain² · 2 / (fan_in + fan_out). A uniform U(−a, a) has variance a²/3, so
  a = gain · √(6 / (fan_in + fan_out)).
* **Kaiming / He** (for ReLU-family): ReLU zeroes half its inputs, halving the variance it
  passes on, so double it back: Var(W) = gain² / fan with gain² = 2 for ReLU,
  i.e. a = √(6 / fan_in). He's range is therefore wider than Xavier's for the same layer
  (for 128 -> 64: Xavier ±0.177, He ±0.217).

``fan_in`` / ``fan_out`` of a weight of shape ``(out, in, *kernel)`` are ``in · k`` and
``out · k`` with ``k`` the number of kernel elements (1 for a Linear layer).

Every function here draws with the same tensor methods, in the same order, as
``torch.nn.init``, so under one seed (or one ``generator``) both produce bit-identical
tensors; bounds are computed with the same floating-point operations for the same reason
(``√3 · (gain / √fan)`` and ``√3 · gain / √fan`` can differ in the last bit).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = [
    "calculate_gain",
    "constant_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

_LINEAR_GAIN_NAMES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    r"""The factor by which a nonlinearity's preferred weight standard deviation is scaled.

    ================= ================================================
    nonlinearity      gain
    ================= ================================================
    linear / conv*    1
    sigmoid           1
    tanh              5/3
    relu              √2
    leaky_relu        √(2 / (1 + negative_slope²)), slope default 0.01
    selu              3/4
    ================= ================================================

    Raises:
        ValueError: an unknown ``nonlinearity``, or a ``param`` that is not an int or float.

    Example::

        >>> calculate_gain("leaky_relu", 0.2)
        1.3867504905630728
    """
    if nonlinearity in _LINEAR_GAIN_NAMES:
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            negative_slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shaped ``(out, in, *kernel)``; see the module docstring."""
    if tensor.dim() < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive_field = 1
    for size in tensor.shape[2:]:
        receptive_field *= size
    return tensor.size(1) * receptive_field, tensor.size(0) * receptive_field


def _fan(tensor: Tensor, mode: str) -> int:
    mode = mode.lower()
    valid_modes = ["fan_in", "fan_out"]
    if mode not in valid_modes:
        raise ValueError(f"Mode {mode} not supported, please use one of {valid_modes}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill ``tensor`` in place from U(a, b). Returns ``tensor``."""
    with torch.no_grad():
        return tensor.uniform_(a, b, generator=generator)


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill ``tensor`` in place from N(mean, std²). Returns ``tensor``."""
    with torch.no_grad():
        return tensor.normal_(mean, std, generator=generator)


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill ``tensor`` in place with ``val``."""
    with torch.no_grad():
        return tensor.fill_(val)


def ones_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` in place with 1."""
    return constant_(tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` in place with 0."""
    with torch.no_grad():
        return tensor.zero_()


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Glorot uniform: U(−a, a) with a = gain · √(6 / (fan_in + fan_out)).

    Example::

        >>> import torch
        >>> w = xavier_uniform_(torch.empty(64, 128))
        >>> bool(w.abs().max() <= (6 / (128 + 64)) ** 0.5)
        True
    """
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std  # U(-a, a) has std a/√3
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Glorot normal: N(0, std²) with std = gain · √(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    fan = _fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""He uniform: U(−bound, bound) with bound = √3 · gain / √fan.

    Args:
        tensor: weight of at least 2 dimensions.
        a: negative slope of the leaky ReLU that follows (only used with ``'leaky_relu'``;
            0 gives plain ReLU's gain √2).
        mode: ``'fan_in'`` keeps the forward pass's variance, ``'fan_out'`` the backward's.
        nonlinearity: name for :func:`calculate_gain`; ``'relu'`` or ``'leaky_relu'`` advised.
        generator: optional ``torch.Generator`` to draw from.

    A zero-element tensor is left unchanged, with a warning (as torch).

    Example::

        >>> import torch
        >>> w = kaiming_uniform_(torch.empty(64, 128), nonlinearity="relu")
        >>> bool(w.abs().max() <= (6 / 128) ** 0.5)
        True
    """
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""He normal: N(0, std²) with std = gain / √fan. Arguments as :func:`kaiming_uniform_`."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    return normal_(tensor, 0, _kaiming_std(tensor, a, mode, nonlinearity), generator)


def _normal_cdf(x: float) -> float:
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill ``tensor`` from N(mean, std²) restricted to [a, b], by rejection sampling.

    Two proposals, picked by the probability mass P = Φ((b − mean)/std) − Φ((a − mean)/std)
    that [a, b] holds:

    * P > 0.3: draw from the normal itself and redraw the elements that land outside [a, b].
      Each round keeps a fraction P, so few rounds are needed.
    * P <= 0.3 (a narrow or far-off interval): draw uniformly on [a, b] and accept a candidate
      c with probability pdf(c) / pdf(mode), the normal density relative to its largest value
      on [a, b] (``mode`` is the point of [a, b] closest to ``mean``). Accepted samples then
      follow the normal's shape on [a, b] exactly.

    The bounds are compared in the tensor's own dtype, so no value outside [a, b] can appear
    after rounding. Warns if ``mean`` is more than two standard deviations outside [a, b].
    """
    if tensor.is_meta:
        return tensor
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn(
            "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
            "The distribution of values may be incorrect.",
            stacklevel=2,
        )
    with torch.no_grad():
        mass = _normal_cdf((b - mean) / std) - _normal_cdf((a - mean) / std)
        if mass > 0.3:
            _trunc_normal_by_redrawing(tensor, mean, std, a, b, generator)
        else:
            _trunc_normal_by_uniform_proposals(tensor, mean, std, a, b, generator)
    return tensor


def _trunc_normal_by_redrawing(tensor: Tensor, mean: float, std: float, a: float, b: float, generator) -> None:
    lo = tensor.new_tensor(a, device="cpu").item()  # the bounds as the tensor's dtype rounds them
    hi = tensor.new_tensor(b, device="cpu").item()
    samples = tensor.normal_(mean, std, generator=generator)
    while True:
        outside = (samples < lo) | (samples > hi)
        if not outside.any():
            break
        samples = torch.where(outside, torch.empty_like(samples).normal_(mean, std, generator=generator), samples)
    if samples is not tensor:
        tensor.copy_(samples)


def _trunc_normal_by_uniform_proposals(tensor: Tensor, mean: float, std: float, a: float, b: float, generator) -> None:
    mode = max(a, min(mean, b))
    log_peak = -0.5 * ((mode - mean) / std) ** 2

    def log_density_ratio(c: Tensor) -> Tensor:
        """log(pdf(c) / pdf(mode)) <= 0, computed in place on ``c``."""
        return c.sub_(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)

    def reject(log_ratio: Tensor, u_buffer: Tensor) -> Tensor:
        """Reject where log(u) > log_ratio for fresh u ~ U(0, 1)."""
        return u_buffer.uniform_(generator=generator).log_().gt(log_ratio)

    candidates = torch.empty_like(tensor)
    u_buffer = torch.empty_like(tensor)
    tensor.uniform_(a, b, generator=generator)  # the first round's proposals go straight in
    candidates.copy_(tensor)
    pending = reject(log_density_ratio(candidates), u_buffer)
    if not pending.any():
        return
    result = tensor
    while True:
        candidates.uniform_(a, b, generator=generator)
        result = torch.where(pending, candidates, result)
        pending = torch.where(pending, reject(log_density_ratio(candidates), u_buffer), pending)
        if not pending.any():
            break
    tensor.copy_(result)
