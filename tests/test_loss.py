"""Softmax, log-softmax, cross-entropy and BCE-with-logits against torch, gradcheck, bad input, modules."""

from __future__ import annotations

import math
import warnings

import mpmath
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import minitorch_nn.functional as F
import minitorch_nn.nn as nn

from .compare import (
    Tol,
    assert_raises_like_torch,
    assert_same_as_torch,
    check_gradients,
    constructor_signature,
    reduction_tol,
    upstream_gradient,
)
from .strategies import REGIMES, dtypes, layouts, shapes, tensors, values

REDUCTIONS = ("none", "mean", "sum")
_HALF = (torch.float16, torch.bfloat16)

# --- tolerances -----------------------------------------------------------------------------
#
# Every bound below is compare.reduction_tol(dtype, k, S): both sides' summation error
# 2·γ_k·S plus their final roundings, with S the largest sum of |terms| an output element is
# built from (computed in float64 from the data), and k the number of terms plus the formula's
# own elementwise roundings. The ingredients:
#
# * log p_c = (x_c − m) − log Σ_k e^{x_k − m}. Both sides subtract the max first and the
#   log-sum last (torch's CPU kernel in that order too), so log p_c is off by at most
#   2u·|log p_c| (two subtractions; |x_c − m| <= |log p_c|) plus the log-sum's error,
#   γ_{C+2}·(1 + ln C) (C exponentials of 1-ulp accuracy summed, then a log). So per unit of
#   |log p| and of 1 + ln C the error is γ_{C+4}: k = C + 4 and S = |log p| + 1 + ln C.
# * p = e^{x − m} / Σ e^{x − m}: relative error γ_{C+3} (exp, sum, division) on each side.
# * cross-entropy ℓ = Σ_c q_c·(−log p_c) over C classes, then Σ over M samples (and positions):
#   k = C + M + 8, S = Σ |q|·(|log p| + 1 + ln C) / divisor. Its gradient q-weights p and log p,
#   whose errors are above: S = |g|/divisor · (Σ_c|q_c|·p·(1 + |log p| + ln C) + |q|).
# * bfloat16: both sides compute in float32 (γ with float32's u), but torch's composite paths
#   round intermediates to bfloat16: the cross-entropy with smoothing or weights rounds
#   log p, the weighted product, the class sum, the batch sum, the division, the scaling and
#   the final add (7, plus the output: 8); BCE likewise (log σ, 1 + (pw−1)t, two products,
#   1 − t, the subtraction, the weight: 8). Each is one u of the half type on a quantity
#   bounded by the sum of |terms| (for the loss, Σ|q·log p| without the 1 + ln C above, which
#   only bounds float32's log-sum error).


def loss_tol(dtype: torch.dtype, k: int, abs_sum: float, half_sum: float | None = None, roundings: int = 8) -> Tol:
    """reduction_tol plus, for half types, torch's extra roundings of intermediates (see above).

    reduction_tol counts one output rounding per side; torch's half-precision path has
    ``roundings`` of them, each of a quantity bounded by ``half_sum`` (default ``abs_sum``).
    """
    tol = reduction_tol(dtype, k, abs_sum)
    if dtype not in _HALF:
        return tol
    u_out = torch.finfo(dtype).eps / 2
    extra = (roundings - 1) * u_out * (abs_sum if half_sum is None else half_sum)
    return Tol(tol.rtol, tol.atol + extra)


def _max(t: torch.Tensor) -> float:
    return float(t.max()) if t.numel() else 0.0


def _finite_log(log_p: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(log_p), log_p, torch.zeros_like(log_p))


# --- softmax / log_softmax ------------------------------------------------------------------


@st.composite
def softmax_inputs(draw, dtype=dtypes(bf16=True), regimes=REGIMES):
    x = draw(tensors(shapes(min_dims=1, max_dims=4), dtype, regimes=regimes)).requires_grad_()
    dim = draw(st.integers(-x.dim(), x.dim() - 1))
    return x, dim


def softmax_tolerances(x: torch.Tensor, dim: int, log: bool) -> dict[str, Tol]:
    """Bounds for (log-)softmax and its gradient from the float64 p and log p (see the top)."""
    c = x.shape[dim]
    if x.numel() == 0:
        return dict.fromkeys(("output", "input"), Tol(0.0, 0.0))
    x64 = x.detach().double()
    log_p = _finite_log(TF.log_softmax(x64, dim))
    p = log_p.exp()
    dy = upstream_gradient(x.shape, x.dtype).double().abs()
    dtype = x.dtype
    if log:
        # log p's error 2u·|log p| + γ(1 + ln C) per side: rtol carries 2 · 2u (= 2 eps), atol the rest.
        tol = reduction_tol(dtype, c + 4, 1 + math.log(c))
        out = Tol(tol.rtol + 2 * torch.finfo(torch.float32 if dtype in _HALF else dtype).eps, tol.atol)
        grad = loss_tol(dtype, c + 4, _max(dy + p * dy.sum(dim, keepdim=True)), roundings=2)
        return {"output": out, "input": grad}
    # Relative error γ_{C+3} in p: rtol; atol only for results that underflow differently.
    out = reduction_tol(dtype, c + 3, 0.0)
    out = Tol(out.rtol + 2 * (c + 3) * torch.finfo(torch.float32 if dtype in _HALF else dtype).eps / 2, out.atol)
    grad = loss_tol(dtype, c + 4, _max(p * (dy + (dy * p).sum(dim, keepdim=True))), roundings=2)
    return {"output": out, "input": grad}


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_and_log_softmax_match_torch(name, data):
    x, dim = data.draw(softmax_inputs())
    assert_same_as_torch(
        lambda t: getattr(F, name)(t, dim),
        lambda t: getattr(TF, name)(t, dim),
        {"input": x},
        tol=softmax_tolerances(x, dim, log=name == "log_softmax"),
    )


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_and_log_softmax_gradcheck_and_gradgradcheck(name, data):
    x = data.draw(tensors(shapes(max_dims=3, max_side=4, allow_empty=False), torch.float64, regimes=("normal",)))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
    check_gradients(lambda t: getattr(F, name)(t, dim), [x.requires_grad_()])


def test_log_softmax_is_finite_and_exact_for_logits_of_1e4():
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4 + 1]], dtype=dtype, requires_grad=True)
        y = F.log_softmax(x, 1)
        expected = torch.tensor(
            [[0.0, -1e4, -2e4], [-1 - math.log1p(2 * math.exp(-1)), -1 - math.log1p(2 * math.exp(-1)), 0.0]],
            dtype=torch.float64,
        )
        expected[1, 2] = -math.log1p(2 * math.exp(-1))
        torch.testing.assert_close(y.double(), expected, rtol=4 * torch.finfo(dtype).eps, atol=0)
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.isfinite(g).all()


def test_log_of_softmax_underflows_where_log_softmax_does_not():
    # A score 104 below the row's max: its probability is below float32's smallest number,
    # so log(softmax) is -inf; log_softmax keeps the exact -104.
    x = torch.tensor([0.0, -104.0])
    assert F.softmax(x, 0)[1] == 0
    assert torch.log(F.softmax(x, 0))[1] == -math.inf
    assert F.log_softmax(x, 0)[1].item() == pytest.approx(-104.0, abs=1e-5)


def test_softmax_is_unchanged_by_shifting_a_row():
    x = torch.randn(4, 6, dtype=torch.float64)
    shift = torch.randn(4, 1, dtype=torch.float64) * 100
    torch.testing.assert_close(F.softmax(x + shift, 1), F.softmax(x, 1), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_infinite_rows_and_masked_entries_match_torch(name):
    # A row of all -inf or with a +inf has no finite max to shift by: NaN, as torch. A single
    # -inf is a masked class: p = 0 (log p = -inf), and the row's other entries are exact.
    inf = math.inf
    x = torch.tensor(
        [[-inf, -inf, -inf], [0.0, -inf, 1.0], [inf, 0.0, 1.0], [-inf, 2.0, -inf]],
        dtype=torch.float64,
        requires_grad=True,
    )
    # C = 3 classes, values and gradients of order 1 (see the top): γ_{C+4} on a sum of 1 + ln 3.
    tol = reduction_tol(torch.float64, 3 + 4, 1 + math.log(3))
    assert_same_as_torch(lambda t: getattr(F, name)(t, 1), lambda t: getattr(TF, name)(t, 1), {"input": x}, tol=tol)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4), (2, 3, 4, 5), ()])
def test_omitted_dim_warns_and_picks_torchs_dim(name, shape):
    x = torch.randn(shape)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        actual = getattr(F, name)(x)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        expected = getattr(TF, name)(x)
    torch.testing.assert_close(actual, expected)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_dtype_argument_casts_before_computing(name):
    x = torch.randn(3, 4)
    actual = getattr(F, name)(x, 1, dtype=torch.float64)
    assert actual.dtype == torch.float64
    torch.testing.assert_close(actual, getattr(TF, name)(x.double(), 1), rtol=1e-14, atol=1e-15)
    ints = torch.arange(6).view(2, 3)
    torch.testing.assert_close(
        getattr(F, name)(ints, 1, dtype=torch.float32), getattr(TF, name)(ints, 1, dtype=torch.float32)
    )


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((torch.arange(4), 0), {}, id="integer-input"),
        pytest.param((torch.randn(2, 3), 2), {}, id="dim-out-of-range"),
        pytest.param((torch.randn(2, 3), -3), {}, id="negative-dim-out-of-range"),
    ],
)
def test_softmax_bad_arguments_raise_like_torch(name, args, kwargs):
    assert_raises_like_torch(lambda: getattr(F, name)(*args, **kwargs), lambda: getattr(TF, name)(*args, **kwargs))


def test_softmax_and_log_softmax_of_empty_and_scalar_inputs_match_torch():
    for x, dim in [(torch.randn(0, 3), 1), (torch.randn(3, 0), 1), (torch.randn(3, 0), 0), (torch.tensor(2.0), 0)]:
        for name in ("softmax", "log_softmax"):
            actual, expected = getattr(F, name)(x, dim), getattr(TF, name)(x, dim)
            assert actual.shape == expected.shape
            torch.testing.assert_close(actual, expected)


# --- cross_entropy: inputs ------------------------------------------------------------------


def class_layout(draw) -> tuple[int, tuple[int, ...], int]:
    """(C, input shape, class dim): (C,), (N, C) or (N, C, d1, ...), N possibly 0."""
    c = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(("unbatched", "batched", "spatial")))
    if kind == "unbatched":
        return c, (c,), 0
    n = draw(st.integers(0, 5)) if draw(st.integers(0, 7)) else 0
    extra = () if kind == "batched" else tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    return c, (n, c, *extra), 1


@st.composite
def index_targets(draw, shape: tuple[int, ...], c: int, ignore_index: int) -> torch.Tensor:
    """Class indices for an input of ``shape``, some equal to ``ignore_index``, in any layout."""
    target_shape = () if len(shape) == 1 else (shape[0], *shape[2:])
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    target = torch.randint(0, c, target_shape, generator=g)
    ignored = torch.rand(target_shape, generator=g) < draw(st.sampled_from((0.0, 0.3, 1.0)))
    target = torch.where(ignored, torch.full_like(target, ignore_index), target)
    return draw(layouts(target)) if target.dim() else target


@st.composite
def probability_targets(draw, shape: tuple[int, ...], class_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Class probabilities (a softmax of random scores, or one-hot), or any non-negative numbers."""
    kind = draw(st.sampled_from(("distribution", "onehot", "arbitrary")))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    raw = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "distribution":
        t = TF.softmax(raw * 2, class_dim)
    elif kind == "onehot":
        t = (raw == raw.amax(class_dim, keepdim=True)).double()
    else:
        t = raw.abs() * 2
    return draw(layouts(t.to(dtype)))


@st.composite
def ce_options(draw, c: int, dtype: torch.dtype, *, weight_grad: bool):
    weight = None
    if draw(st.booleans()):
        weight = draw(values((c,), dtype, regimes=("normal",))).abs() + 0.1  # positive, as class weights are
        weight.requires_grad_(weight_grad)
    smoothing = draw(st.sampled_from((0.0, 0.0, 0.1, 1.0)) | st.floats(0, 1))
    return weight, draw(st.sampled_from(REDUCTIONS)), smoothing


def target_distribution(x, target, weight, ignore_index, smoothing, class_dim, probabilities):
    """(t, w, divisor) in float64 for the tolerances, q = t·w: torch's semantics, written independently."""
    c = x.shape[class_dim]
    shape = [1] * x.dim()
    shape[class_dim] = c
    w = torch.ones(shape, dtype=torch.float64) if weight is None else weight.detach().double().view(shape)
    if probabilities:
        t = target.detach().double()
        if smoothing > 0:
            t = t * (1 - smoothing) + smoothing / c
        return t, w, x.numel() // max(c, 1)
    valid = (target != ignore_index).unsqueeze(class_dim)
    onehot = torch.where(valid.squeeze(class_dim), target, 0).unsqueeze(class_dim) == torch.arange(c).view(shape)
    t = (onehot & valid).double()
    divisor = float((t * w).sum())
    if smoothing > 0:
        t = t * (1 - smoothing) + valid * (smoothing / c)
    return t, w, divisor


def ce_tolerances(x, t, w, divisor, reduction, class_dim, out_shape) -> dict[str, Tol]:
    """Bounds for the loss and the gradients wrt input, target and weight (see the top)."""
    dtype = x.dtype
    c = x.shape[class_dim]
    if x.numel() == 0:
        return dict.fromkeys(("output", "input", "target", "weight"), Tol(0.0, 0.0))
    x64 = x.detach().double()
    log_p = _finite_log(TF.log_softmax(x64, class_dim))
    p = log_p.exp()
    lg = log_p.abs() + 1 + math.log(c)
    q = t * w
    per_sample = (q.abs() * lg).sum(class_dim)
    per_sample_half = (q * log_p).abs().sum(class_dim)
    m = per_sample.numel()
    scale = 1.0 if reduction != "mean" else 1.0 / divisor if divisor else 0.0
    g = upstream_gradient(out_shape, dtype).double().abs() * scale
    g = g.unsqueeze(class_dim) if reduction == "none" else g
    if reduction == "none":
        out = loss_tol(dtype, c + 8, _max(per_sample), _max(per_sample_half))
    else:
        out = loss_tol(dtype, c + m + 8, float(per_sample.sum()) * scale, float(per_sample_half.sum()) * scale)
    dx = g * (q.abs().sum(class_dim, keepdim=True) * p * lg + q.abs())
    dt = g * w.abs() * lg
    dw = (g * t.abs() * lg).sum_to_size(w.shape)
    return {
        "output": out,
        "input": loss_tol(dtype, c + 8, _max(dx)),
        "target": loss_tol(dtype, c + 8, _max(dt)),
        "weight": loss_tol(dtype, c + m + 8, _max(dw)),
    }


def output_shape(x, target, reduction, class_dim, probabilities):
    if reduction != "none":
        return ()
    return tuple(s for d, s in enumerate(x.shape) if d != class_dim) if probabilities else tuple(target.shape)


# --- cross_entropy: against torch -----------------------------------------------------------


@given(data=st.data())
def test_cross_entropy_with_class_indices_matches_torch(data):
    dtype = data.draw(dtypes(bf16=True))
    c, shape, class_dim = class_layout(data.draw)
    x = data.draw(tensors(shape, dtype)).requires_grad_()
    ignore_index = data.draw(st.sampled_from((-100, 0, c - 1, c + 3)))
    target = data.draw(index_targets(shape, c, ignore_index))
    weight, reduction, smoothing = data.draw(ce_options(c, dtype, weight_grad=False))
    t, w, divisor = target_distribution(x, target, weight, ignore_index, smoothing, class_dim, probabilities=False)
    out_shape = output_shape(x, target, reduction, class_dim, False)
    kwargs = {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": smoothing}
    assert_same_as_torch(
        lambda x, w: F.cross_entropy(x, target, w, **kwargs),
        lambda x, w: TF.cross_entropy(x, target, w, **kwargs),
        {"input": x, "weight": weight},
        tol=ce_tolerances(x, t, w, divisor, reduction, class_dim, out_shape),
    )


@given(data=st.data())
def test_cross_entropy_with_class_probabilities_matches_torch(data):
    dtype = data.draw(dtypes(bf16=True))
    c, shape, class_dim = class_layout(data.draw)
    x = data.draw(tensors(shape, dtype)).requires_grad_()
    target = data.draw(probability_targets(shape, class_dim, dtype)).requires_grad_()
    weight, reduction, smoothing = data.draw(ce_options(c, dtype, weight_grad=True))
    t, w, divisor = target_distribution(x, target, weight, -100, smoothing, class_dim, probabilities=True)
    out_shape = output_shape(x, target, reduction, class_dim, True)
    kwargs = {"reduction": reduction, "label_smoothing": smoothing}
    assert_same_as_torch(
        lambda x, t, w: F.cross_entropy(x, t, w, **kwargs),
        lambda x, t, w: TF.cross_entropy(x, t, w, **kwargs),
        {"input": x, "target": target, "weight": weight},
        tol=ce_tolerances(x, t, w, divisor, reduction, class_dim, out_shape),
    )


@pytest.mark.parametrize("probabilities", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data())
def test_cross_entropy_gradcheck_and_gradgradcheck(probabilities, reduction, data):
    c = data.draw(st.integers(1, 4))
    shape = data.draw(st.sampled_from([(c,), (3, c), (2, c, 2)]))
    class_dim = 0 if len(shape) == 1 else 1
    x = data.draw(tensors(shape, torch.float64, regimes=("normal",))).requires_grad_()
    weight, _, smoothing = data.draw(ce_options(c, torch.float64, weight_grad=True))
    if probabilities:
        target = data.draw(probability_targets(shape, class_dim, torch.float64)).requires_grad_()
        ignore_index = -100
    else:
        ignore_index = data.draw(st.sampled_from((-100, 0)))
        target = data.draw(index_targets(shape, c, ignore_index))
    inputs = [x, *([target] if probabilities else []), *([weight] if weight is not None else [])]

    def fn(x, *rest):
        t = rest[0] if probabilities else target
        w = rest[-1] if weight is not None else None
        return F.cross_entropy(x, t, w, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)

    if reduction == "mean" and not probabilities and not (target != ignore_index).any():
        return  # the loss is the constant NaN (see test_all_ignored_targets...)
    check_gradients(fn, inputs)


# --- cross_entropy: named behaviours --------------------------------------------------------


def test_cross_entropy_gradient_is_softmax_minus_onehot():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 4, 1])
    (g,) = torch.autograd.grad(F.cross_entropy(x, y, reduction="sum"), x)
    torch.testing.assert_close(g, F.softmax(x, 1) - TF.one_hot(y, 5).double(), rtol=1e-14, atol=1e-15)


def test_weighted_mean_divides_by_the_weight_of_non_ignored_targets():
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 2, -100, 2])
    w = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    log_p = x - x.exp().sum(1, keepdim=True).log()
    picked = [w[c] * -log_p[n, c] for n, c in enumerate(y.tolist()) if c != -100]
    expected = sum(picked) / (w[0] + w[2] + w[2])  # not by 3 samples, nor by 4
    torch.testing.assert_close(F.cross_entropy(x, y, w), expected, rtol=1e-14, atol=0)


def test_label_smoothing_with_weights_follows_torchs_formula():
    # torch: (1 − ε)·nll(w) + (ε/C)·Σ_n Σ_c w_c·(−log p_nc) / Σ_n w_{y_n}, both terms divided by the
    # targets' total weight: the smoothing term is weighted per class c, not per target y_n.
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 3, -100, 1, 3])
    w = torch.tensor([0.2, 1.0, 2.0, 0.7], dtype=torch.float64)
    eps, c = 0.3, 4
    log_p = x - x.exp().sum(1, keepdim=True).log()
    keep = [n for n in range(5) if y[n] != -100]
    total = sum(w[y[n]] for n in keep)
    nll = sum(w[y[n]] * -log_p[n, y[n]] for n in keep) / total
    smooth = sum((w * -log_p[n]).sum() for n in keep) / total
    expected = (1 - eps) * nll + eps / c * smooth
    torch.testing.assert_close(F.cross_entropy(x, y, w, label_smoothing=eps), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(TF.cross_entropy(x, y, w, label_smoothing=eps), expected, rtol=1e-14, atol=0)


def test_probability_targets_mean_divides_by_samples_not_weights():
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    t = TF.softmax(torch.randn(3, 4, 2, dtype=torch.float64), 1)
    w = torch.tensor([0.1, 2.0, 3.0, 0.5], dtype=torch.float64)
    total = F.cross_entropy(x, t, w, reduction="sum")
    torch.testing.assert_close(F.cross_entropy(x, t, w), total / 6, rtol=1e-15, atol=0)  # N·d1 = 6


def test_index_and_onehot_probability_targets_agree_without_weights():
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    for eps in (0.0, 0.25):
        torch.testing.assert_close(
            F.cross_entropy(x, y, label_smoothing=eps),
            F.cross_entropy(x, TF.one_hot(y, 5).double(), label_smoothing=eps),
            rtol=1e-14,
            atol=0,
        )


def test_cross_entropy_is_finite_and_exact_for_logits_of_1e4():
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    loss = F.cross_entropy(x, torch.tensor([1, 0]), reduction="none")
    torch.testing.assert_close(loss, torch.tensor([2e4, 2e4 + math.log(2)]), rtol=1e-7, atol=0)
    (g,) = torch.autograd.grad(loss.sum(), x)
    torch.testing.assert_close(g, torch.tensor([[1.0, -1.0, 0.0], [-1.0, 0.5, 0.5]]), rtol=0, atol=1e-7)


def test_all_ignored_targets_give_nan_mean_and_zero_gradient_like_torch():
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.full((3,), -100)
    for eps in (0.0, 0.2):
        assert_same_as_torch(
            lambda x, eps=eps: F.cross_entropy(x, y, label_smoothing=eps),
            lambda x, eps=eps: TF.cross_entropy(x, y, label_smoothing=eps),
            {"input": x},
            tol=Tol(0.0, 0.0),
        )
        assert F.cross_entropy(x, y, reduction="sum", label_smoothing=eps).item() == 0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch_matches_torch(reduction):
    for target in (torch.zeros(0, dtype=torch.long), torch.zeros(0, 5)):
        x = torch.randn(0, 5, requires_grad=True)
        actual, expected = (
            F.cross_entropy(x, target, reduction=reduction),
            TF.cross_entropy(x, target, reduction=reduction),
        )
        assert actual.shape == expected.shape
        torch.testing.assert_close(actual, expected, equal_nan=True)
        (g,) = torch.autograd.grad(actual.sum(), x)
        assert g.shape == x.shape


def test_masked_logit_of_minus_inf_is_finite_like_torch():
    # A class masked out with −inf gets p = 0 and no gradient; the target's loss is finite.
    # With label smoothing the masked class has target mass ε/C on −log 0 = ∞, so the loss is ∞.
    x = torch.tensor([[0.0, -math.inf, 1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    tol = reduction_tol(torch.float64, 3 + 8, 3.0)  # C = 3; |log p| of the finite classes below 2
    for eps in (0.0, 0.1):
        assert_same_as_torch(
            lambda x, eps=eps: F.cross_entropy(x, y, label_smoothing=eps),
            lambda x, eps=eps: TF.cross_entropy(x, y, label_smoothing=eps),
            {"input": x},
            tol=tol,
        )


def test_zero_probability_on_a_masked_logit_contributes_zero_where_torch_gives_nan():
    # torch computes −Σ t·log p as a plain product, 0 · (−∞) = NaN. The loss's limit as the
    # target mass goes to 0 is 0 (t·log p → 0), which is what we return; the gradients agree.
    x = torch.tensor([[0.0, -math.inf, 1.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64)
    assert math.isnan(TF.cross_entropy(x, t).item())
    log_p = torch.tensor([0.0, 1.0], dtype=torch.float64)
    log_p = log_p - log_p.exp().sum().log()
    torch.testing.assert_close(F.cross_entropy(x, t), -(0.5 * log_p).sum(), rtol=1e-15, atol=0)
    (ours,) = torch.autograd.grad(F.cross_entropy(x, t), x)
    (theirs,) = torch.autograd.grad(TF.cross_entropy(x, t), x)
    torch.testing.assert_close(ours, theirs)


def test_non_positive_label_smoothing_is_ignored_like_torch():
    x = torch.randn(3, 4)
    y = torch.tensor([0, 3, 1])
    torch.testing.assert_close(
        F.cross_entropy(x, y, label_smoothing=-0.5), TF.cross_entropy(x, y, label_smoothing=-0.5)
    )
    torch.testing.assert_close(F.cross_entropy(x, y, label_smoothing=-0.5), F.cross_entropy(x, y))


def test_class_weight_gradient_is_given_where_torch_refuses():
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 2, -100, 1])
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.autograd.grad(TF.cross_entropy(x, y, w), w)
    check_gradients(lambda w: F.cross_entropy(x, y, w, label_smoothing=0.1), [w])


@pytest.mark.parametrize(("size_average", "reduce"), [(None, False), (True, None), (False, None), (False, True)])
def test_deprecated_size_average_and_reduce_map_to_reduction_like_torch(size_average, reduce):
    x = torch.randn(3, 4)
    y = torch.tensor([0, 3, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actual = F.cross_entropy(x, y, size_average=size_average, reduce=reduce)
        expected = TF.cross_entropy(x, y, size_average=size_average, reduce=reduce)
        torch.testing.assert_close(actual, expected)
        x = torch.randn(3, 4)
        t = torch.rand(3, 4)
        actual = F.binary_cross_entropy_with_logits(x, t, size_average=size_average, reduce=reduce)
        expected = TF.binary_cross_entropy_with_logits(x, t, size_average=size_average, reduce=reduce)
        torch.testing.assert_close(actual, expected)


_x = torch.randn(3, 5)
_xs = torch.randn(2, 3, 4, 5)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((_x, torch.tensor([1, 5, 0])), {}, id="target-out-of-range"),
        pytest.param((_x, torch.tensor([1, -1, 0])), {}, id="negative-target"),
        pytest.param((_x, torch.tensor([7, 8, 0])), {"ignore_index": 8}, id="out-of-range-beside-ignored"),
        pytest.param((_xs, torch.full((2, 4, 5), 3)), {}, id="spatial-target-out-of-range"),
        pytest.param((_x, torch.tensor([1, 0])), {}, id="batch-size-mismatch"),
        pytest.param((_x, torch.tensor(2)), {}, id="scalar-target-for-batch"),
        pytest.param((_x, torch.zeros(3, 2, dtype=torch.long)), {}, id="multi-target"),
        pytest.param((_xs, torch.zeros(2, 4, dtype=torch.long)), {}, id="spatial-target-rank"),
        pytest.param((_xs, torch.zeros(2, 4, 6, dtype=torch.long)), {}, id="spatial-size-mismatch"),
        pytest.param((torch.randn(2, 3, 4), torch.zeros(2, 4, 1, dtype=torch.long)), {}, id="3d-target-rank"),
        pytest.param((_x, torch.rand(3)), {}, id="float-class-indices"),
        pytest.param((_x, torch.tensor([1, 2, 0], dtype=torch.int32)), {}, id="int32-class-indices"),
        pytest.param((_x, torch.ones(3, 5, dtype=torch.long)), {}, id="integer-probabilities"),
        pytest.param((_x, torch.rand(3, 5)), {"ignore_index": 1}, id="ignore-index-with-probabilities"),
        pytest.param((_x, torch.tensor([1, 2, 0])), {"label_smoothing": 1.5}, id="smoothing-above-1"),
        pytest.param((_x, torch.rand(3, 5)), {"label_smoothing": 1.5}, id="smoothing-above-1-probabilities"),
        pytest.param((_x, torch.tensor([1, 2, 0])), {"reduction": "avg"}, id="unknown-reduction"),
        pytest.param((_x, torch.tensor([1, 2, 0]), torch.ones(4)), {}, id="weight-size"),
        pytest.param((_x, torch.tensor([1, 2, 0]), torch.ones(5, 1)), {}, id="weight-rank"),
        pytest.param((_x, torch.rand(3, 5), torch.ones(4)), {}, id="weight-size-probabilities"),
        pytest.param((_x, torch.tensor([1, 2, 0]), torch.ones(5).double()), {}, id="weight-dtype"),
        pytest.param(
            (_x, torch.tensor([1, 2, 0]), torch.ones(4)), {"label_smoothing": 0.1}, id="weight-size-smoothing"
        ),
        pytest.param((torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1])), {}, id="integer-input"),
        pytest.param((torch.tensor(1.0), torch.tensor(0)), {}, id="scalar-input"),
        pytest.param((torch.randn(2, 0), torch.tensor([0, 0])), {}, id="zero-classes"),
    ],
)
def test_cross_entropy_bad_arguments_raise_like_torch(args, kwargs):
    assert_raises_like_torch(lambda: F.cross_entropy(*args, **kwargs), lambda: TF.cross_entropy(*args, **kwargs))


def test_out_of_range_target_names_the_target_like_torch():
    error = assert_raises_like_torch(
        lambda: F.cross_entropy(_x, torch.tensor([1, 5, 0])), lambda: TF.cross_entropy(_x, torch.tensor([1, 5, 0]))
    )
    assert str(error) == "Target 5 is out of bounds."


# --- binary_cross_entropy_with_logits -------------------------------------------------------


@st.composite
def bce_inputs(draw, dtype=dtypes(bf16=True), regimes=REGIMES):
    """(x, t, weight, pos_weight): weight and pos_weight broadcast to x's shape, or None."""
    dtype = draw(dtype)
    x = draw(tensors(shapes(min_dims=0, max_dims=4), dtype, regimes=regimes)).requires_grad_()
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    t = torch.rand(x.shape, generator=g, dtype=torch.float64)
    if draw(st.booleans()):
        t = t.round()  # hard labels
    t = draw(layouts(t.to(dtype))).requires_grad_()

    def broadcastable():
        # x's trailing dims, each kept or set to 1 ((C,) for pos_weight's usual per-label use).
        k = draw(st.integers(0, x.dim()))
        shape = tuple(s if draw(st.booleans()) else 1 for s in x.shape[x.dim() - k :])
        return (torch.rand(shape, generator=g, dtype=torch.float64) * 3).to(dtype)

    weight = broadcastable() if draw(st.booleans()) else None
    pos_weight = broadcastable() if draw(st.booleans()) else None
    return x, t, weight, pos_weight


def bce_tolerances(x, t, weight, pos_weight, reduction) -> dict[str, Tol]:
    """Bounds from the terms of both formulas: ours pw·t·sp(−x) + (1 − t)·sp(x), and torch's
    (1 − t)·x − (1 + (pw − 1)·t)·log σ(x), which cancels for large |x| (see the top)."""
    dtype = x.dtype
    x64, t64 = x.detach().double(), t.detach().double()
    w = torch.ones(()) if weight is None else weight
    pw = torch.ones(()) if pos_weight is None else pos_weight
    w, pw = w.double(), pw.double()
    sp_pos, sp_neg = TF.softplus(x64), TF.softplus(-x64)
    lw = (1 + (pw - 1) * t64).abs()
    terms = (torch.zeros_like(x64) + ((1 - t64).abs() * (x64.abs() + sp_pos) + lw * sp_neg + pw * t64 * sp_neg)) * w
    terms = terms.abs()
    n = max(x.numel(), 1)
    g = upstream_gradient(x.shape if reduction == "none" else (), dtype).double().abs()
    g = g / n if reduction == "mean" else g
    grad_x = g * torch.abs(torch.zeros_like(x64) + w) * (lw + (pw * t64).abs() + (1 - t64).abs() + 1)
    grad_t = g * torch.abs(torch.zeros_like(x64) + w) * (x64.abs() + (pw - 1).abs() * sp_neg + pw * sp_neg + sp_pos)
    if reduction == "none":
        out = loss_tol(dtype, 8, _max(terms))
    else:
        out = loss_tol(dtype, n + 8, float(terms.sum()) / (n if reduction == "mean" else 1))
    return {
        "output": out,
        "input": loss_tol(dtype, 8, _max(grad_x)),
        "target": loss_tol(dtype, 8, _max(grad_t)),
    }


@given(data=st.data())
def test_bce_with_logits_matches_torch(data):
    x, t, weight, pos_weight = data.draw(bce_inputs())
    reduction = data.draw(st.sampled_from(REDUCTIONS))
    assert_same_as_torch(
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, weight, reduction=reduction, pos_weight=pos_weight),
        lambda x, t: TF.binary_cross_entropy_with_logits(x, t, weight, reduction=reduction, pos_weight=pos_weight),
        {"input": x, "target": t},
        tol=bce_tolerances(x, t, weight, pos_weight, reduction),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data())
def test_bce_with_logits_gradcheck_and_gradgradcheck(reduction, data):
    x, t, weight, pos_weight = data.draw(
        bce_inputs(st.just(torch.float64), regimes=("normal",)).filter(lambda i: 0 < i[0].numel() <= 24)
    )
    present = [p.requires_grad_() for p in (weight, pos_weight) if p is not None]

    def fn(x, t, *params):
        it = iter(params)
        w = next(it) if weight is not None else None
        pw = next(it) if pos_weight is not None else None
        return F.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=pw)

    check_gradients(fn, [x, t, *present])


def test_bce_with_logits_gradient_is_sigmoid_minus_target():
    x = torch.randn(10, dtype=torch.float64, requires_grad=True)
    t = torch.rand(10, dtype=torch.float64)
    (g,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(x, t, reduction="sum"), x)
    torch.testing.assert_close(g, torch.sigmoid(x) - t, rtol=1e-14, atol=1e-15)


def test_bce_with_logits_is_finite_for_logits_of_1e4():
    x = torch.tensor([-1e4, 1e4, -1e4, 1e4], requires_grad=True)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert loss.tolist() == [0.0, 0.0, 1e4, 1e4]
    gx, gt = torch.autograd.grad(loss.sum(), (x, t))
    assert gx.tolist() == [0.0, 0.0, -1.0, 1.0]
    assert gt.tolist() == [1e4, -1e4, 1e4, -1e4]


def test_bce_with_logits_keeps_small_losses_that_torchs_formula_cancels():
    # torch computes (1 − t)·x − log σ(x): for t = 0, x = −40 that is −40 + 40.000…04 and rounds
    # to 0 in float64. Here it is softplus(−40 as the negative-class term) = log1p(e^{−40}).
    mpmath.mp.dps = 50
    x = torch.tensor([-40.0, -20.0, 35.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    exact = torch.tensor(
        [float(mpmath.log1p(mpmath.exp(mpmath.mpf(-abs(v))))) for v in x.tolist()], dtype=torch.float64
    )
    ours = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(ours, exact, rtol=4 * torch.finfo(torch.float64).eps, atol=0)
    theirs = TF.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert theirs[0] == 0  # torch loses it entirely


def test_pos_weight_scales_only_the_positive_term():
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.rand(6, 3, dtype=torch.float64)
    pw = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    expected = -(pw * t * TF.logsigmoid(x) + (1 - t) * TF.logsigmoid(-x))
    actual = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pw)
    torch.testing.assert_close(actual, expected, rtol=1e-14, atol=1e-15)


def test_bce_weight_and_pos_weight_gradients_are_given_where_torch_refuses():
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    pw = torch.rand(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.autograd.grad(TF.binary_cross_entropy_with_logits(x, t, w, pos_weight=pw), (w, pw))
    check_gradients(lambda w, pw: F.binary_cross_entropy_with_logits(x, t, w, pos_weight=pw), [w, pw])


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((torch.randn(3), torch.rand(4)), {}, id="shape-mismatch"),
        pytest.param((torch.randn(3, 1), torch.rand(3)), {}, id="broadcastable-target"),
        pytest.param((torch.randn(3, 2), torch.rand(3, 2), torch.rand(4)), {}, id="weight-not-broadcastable"),
        pytest.param((torch.randn(3, 2), torch.rand(3, 2), torch.rand(4, 3, 2)), {}, id="weight-enlarges-output"),
        pytest.param((torch.randn(3, 2), torch.rand(3, 2)), {"pos_weight": torch.rand(3)}, id="pos-weight-shape"),
        pytest.param(
            (torch.randn(3, 2), torch.rand(3, 2)), {"pos_weight": torch.rand(5, 3, 2)}, id="pos-weight-enlarges"
        ),
        pytest.param((torch.randn(3), torch.tensor([0, 1, 1])), {}, id="integer-target"),
        pytest.param((torch.tensor([0, 1, 1]), torch.rand(3)), {}, id="integer-input"),
        pytest.param((torch.randn(3), torch.rand(3)), {"reduction": "x"}, id="unknown-reduction"),
    ],
)
def test_bce_with_logits_bad_arguments_raise_like_torch(args, kwargs):
    assert_raises_like_torch(
        lambda: F.binary_cross_entropy_with_logits(*args, **kwargs),
        lambda: TF.binary_cross_entropy_with_logits(*args, **kwargs),
    )


# --- modules --------------------------------------------------------------------------------

LOSS_MODULES = [
    ("CrossEntropyLoss", {}),
    ("CrossEntropyLoss", {"weight": torch.tensor([0.2, 1.0, 3.0]), "ignore_index": 1, "label_smoothing": 0.1}),
    ("CrossEntropyLoss", {"reduction": "sum"}),
    ("CrossEntropyLoss", {"size_average": False}),
    ("BCEWithLogitsLoss", {}),
    ("BCEWithLogitsLoss", {"weight": torch.rand(4, 3), "pos_weight": torch.tensor([1.0, 2.0, 0.5])}),
    ("BCEWithLogitsLoss", {"reduction": "none", "pos_weight": torch.tensor([3.0])}),
]


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
@pytest.mark.parametrize(("cls", "kwargs"), LOSS_MODULES)
def test_loss_module_matches_torch_and_round_trips_its_state_dict(cls, kwargs):
    ours, theirs = getattr(nn, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs)
    assert repr(ours) == repr(theirs)
    assert ours.reduction == theirs.reduction
    assert ours._buffers.keys() == theirs._buffers.keys()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    state = {k: torch.rand_like(v) + 0.5 for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(state)
    ours.load_state_dict(theirs.state_dict())
    back = getattr(torch.nn, cls)(**kwargs)
    back.load_state_dict(ours.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in state.items())

    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 1, 1]) if cls == "CrossEntropyLoss" else torch.rand(4, 3, dtype=torch.float64)
    ours.double()
    theirs.double()
    # float64, C = 3, N = 4, logits of order 1 (|log p| < 10 per term, weights below 3.5).
    tol = reduction_tol(torch.float64, 3 + 12 + 8, 4 * 3 * 10 * 3.5)
    assert_same_as_torch(lambda x: ours(x, target), lambda x: theirs(x, target), {"input": x}, tol=tol)


@pytest.mark.parametrize("cls", ["CrossEntropyLoss", "BCEWithLogitsLoss", "Softmax", "LogSoftmax"])
def test_module_constructor_signature_matches_torch(cls):
    assert constructor_signature(getattr(nn, cls)) == constructor_signature(getattr(torch.nn, cls))


@pytest.mark.parametrize("cls", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_softmax_modules_match_torch(cls, dim):
    ours, theirs = getattr(nn, cls)(dim), getattr(torch.nn, cls)(dim)
    assert repr(ours) == repr(theirs)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tol = reduction_tol(torch.float64, 4 + 4, 1 + math.log(4) + 10)  # C <= 4, |log p| < 10
        assert_same_as_torch(ours, theirs, {"input": x}, tol=tol)


def test_classifier_trains_on_raw_scores_with_cross_entropy():
    # The last layer is Linear with no softmax: CrossEntropyLoss applies log-softmax itself.
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    y = (x[:, 0] * x[:, 1] > 0).long()
    model = torch.nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    first = loss_fn(model(x), y).item()
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < first / 4
