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

    This is torch's own algorithm (``torch.nn.init.trunc_normal_`` since torch 2.13), the same
    draws in the same order, so under one seed both give bit-identical tensors; except where
    torch's loop would not finish in practice (below), where we sample differently, exactly.
    (torch before 2.13 used the inverse CDF instead: u ~ U(2Φ(α) − 1, 2Φ(β) − 1), then
    mean + std·√2·erfinv(u), clamped to [a, b]. It lost accuracy as Φ(α) neared 1, and beyond
    ~8.3 std Φ(α) and Φ(β) both round to 1: every value came out as b.)

    With α = (a − mean)/std, β = (b − mean)/std, two proposals, picked by the mass
    P = Φ(β) − Φ(α) that [a, b] holds (in float64):

    * P > 0.3: draw N(mean, std²) and redraw the elements outside [a, b]. Exact: the samples
      are ``normal_``'s draws conditioned on [a, b].
    * P <= 0.3: candidates c ~ U[a, b), each accepted if log u <= log(pdf(c)/pdf(m)) for a fresh
      u ~ U[0, 1), with m the point of [a, b] closest to ``mean``; the rest are redrawn.

    **Exact or not.** The second branch is exact only up to the resolution of u, which is drawn
    in the tensor's own dtype and is exactly 0 with probability 2⁻ᵖ: p = 53 (float64),
    24 (float32), 12 (float16), 9 (bfloat16). A draw u = 0 accepts a candidate of any density,
    so every candidate is accepted with probability at least 2⁻ᵖ, however small its density
    ratio r = pdf(c)/pdf(m) (in float32 and float64, whose u lie on the grid k·2⁻ᵖ, with
    probability r + ε, 0 < ε <= 2⁻ᵖ). Where r is far below 2⁻ᵖ over much of [a, b] (a far,
    wide tail), a fraction of about 2⁻ᵖ/(A + 2⁻ᵖ) of the samples (A the acceptance rate, below)
    is spread uniformly over [a, b] instead. For [10, 100] (mean 0, std 1; A = 1.1·10⁻³) that is
    none in float64, about one sample in 18,000 in float32, and most of them in bfloat16, whose
    samples average 25 instead of 10.098. This is torch's answer, bit for bit, kept for parity
    (``test_trunc_normal_accepts_any_candidate_when_u_is_exactly_zero``,
    ``test_trunc_normal_low_precision_far_tail_is_biased_as_torchs``). The density ratio is
    computed in the tensor's dtype too, with an error of about z²·2⁻ᵖ in its exponent (z the
    standardised candidate): 0.2 at z = 10 in bfloat16, 6·10⁻⁶ in float32.

    **Far tails.** Far from the mean P is tiny (0 beyond ~8.3 std), so the uniform proposals are
    used. For a = 10, b = 11 (mean 0, std 1) a candidate is accepted with probability A = 0.099,
    so 10⁵ values take about 110 rounds; the samples lie in [10, 11] with mean 10.098. In
    general A = (1/W)·∫₀^W exp(−d·t − t²/2) dt for an interval of width W = β − α whose near end
    lies d std from the mean, about 1/(d·W): for a = 10, b = 10⁴, A ≈ 10⁻⁵, and torch's loop
    runs ~ln(N)/A times over the whole tensor (a minute for 10³ values, hours for 10⁶). Where
    A < 10⁻⁴ (finite bounds, std > 0), we draw instead from exponential proposals (Robert,
    1995): z = d + t with t ~ Exp(λ) truncated to [0, W], λ = (d + √(d² + 4))/2, accepted with
    probability exp(−(z − λ)²/2); in float64 (u drawn on a 2⁻⁵³ grid), exact but for float64
    rounding, then rounded into the tensor's dtype. At least 3/4 of the proposals are accepted
    (0.76 for a bound at the mean, rising to 1 as d grows), so a few rounds suffice. This
    deliberately differs from torch, whose loop does not finish there; it is not bit-identical
    to anything.

    **The bounds.** a and b are rounded to the tensor's dtype and the interval is closed: a draw
    equal to a bound is kept, and every value lies in [fl(a), fl(b)]. Bounds torch's
    ``uniform_`` rejects (a > b in the second branch, infinite or out of the dtype's range) raise
    its RuntimeError, as in torch. Warns if ``mean`` is more than 2 std outside [a, b].
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
        elif _uniform_acceptance(mean, std, a, b) < _SLOWEST_ACCEPTANCE:
            _trunc_normal_by_exponential_proposals(tensor, mean, std, a, b, generator)
        else:
            _trunc_normal_by_uniform_proposals(tensor, mean, std, a, b, generator)
    return tensor


# Below this acceptance rate of the uniform proposals, torch's loop needs over 10⁴·ln(N) passes
# over the whole tensor. Every interval torch's parity test draws accepts more than 1.2·10⁻⁴.
_SLOWEST_ACCEPTANCE = 1e-4


def _uniform_acceptance(mean: float, std: float, a: float, b: float) -> float:
    """A, the probability that a uniform candidate on [a, b] is accepted (see trunc_normal_).

    1.0 (take torch's path, and its errors) unless a < b are finite, std > 0 and [a, b] lies on
    one side of the mean: with the mean inside, P <= 0.3 means W < 0.8 and A > 0.7.
    """
    if not (math.isfinite(a) and math.isfinite(b) and a < b and 0 < std < math.inf):
        return 1.0
    alpha, beta = (a - mean) / std, (b - mean) / std
    if alpha < 0 < beta:
        return 1.0
    d, width = min(abs(alpha), abs(beta)), beta - alpha
    # ∫₀^W exp(−d·t − t²/2) dt = √(π/2)·[erfcx(d/√2) − e^(−W(W + 2d)/2)·erfcx((d + W)/√2)],
    # with erfcx(x) = e^(x²)·erfc(x), which neither underflows nor overflows for any d, W >= 0.
    near, far = torch.special.erfcx(torch.tensor([d, d + width], dtype=torch.float64) / math.sqrt(2)).tolist()
    integral = math.sqrt(math.pi / 2) * (near - math.exp(-width * (width + 2 * d) / 2) * far)
    return integral / width


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


def _trunc_normal_by_exponential_proposals(
    tensor: Tensor, mean: float, std: float, a: float, b: float, generator
) -> None:
    """Robert (1995): the tail [d, d + W] of N(0, 1) from truncated Exp(λ) proposals, in float64."""
    tensor.new_empty(0).uniform_(a, b)  # torch's checks of the bounds for this dtype, so torch's errors
    above = a >= mean  # else [a, b] lies below the mean: sample the mirror image, measured from b
    d = (a - mean) / std if above else (mean - b) / std
    width = (b - a) / std
    delta = 2 / (math.hypot(d, 2) + d)  # λ − d = (√(d² + 4) − d)/2, without cancellation
    lam = d + delta
    kept = -math.expm1(-lam * width)  # the mass of Exp(λ) on [0, W]
    n = tensor.numel()
    options = {"dtype": torch.float64, "device": tensor.device}
    t = torch.zeros(n, **options)
    pending = torch.ones(n, dtype=torch.bool, device=tensor.device)
    while pending.any():
        u = torch.rand(n, generator=generator, **options)
        v = torch.rand(n, generator=generator, **options)
        proposal = torch.log1p(u.mul_(-kept)).div_(-lam)  # inverse CDF of Exp(λ) on [0, W]
        # Target ∝ exp(−(d + t)²/2), proposal ∝ exp(−λt): their ratio peaks at d + t = λ.
        accept = v.log_() <= (proposal - delta).square_().mul_(-0.5)
        t = torch.where(pending & accept, proposal, t)
        pending &= ~accept
    # x = a + std·t above the mean, b − std·t below: a bound plus a distance, so a huge d (or a
    # tiny std) cannot overflow; the clamp only undoes float64 rounding.
    x = (a + std * t) if above else (b - std * t)
    tensor.copy_(x.clamp_(a, b).view(tensor.shape))
