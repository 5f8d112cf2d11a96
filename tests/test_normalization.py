"""BatchNorm, LayerNorm, GroupNorm: values, gradients and running statistics against torch.nn."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import minitorch_nn.functional as F
import minitorch_nn.nn as nn

from .compare import (
    Tol,
    assert_close,
    assert_raises_like_torch,
    assert_same_as_torch,
    check_gradients,
    constructor_signature,
    reduction_tol,
    upstream_gradient,
)
from .strategies import dtypes, tensors, values

# Well-conditioned values: "extreme" mixes 1e18 with 1 in one group, whose variance then
# overflows or loses the small values entirely, in torch as in any float implementation.
REGIMES = ("normal", "wide")
eps_values = st.sampled_from([1e-5, 1e-3, 0.1])


# --- tolerances -----------------------------------------------------------------------------


@dataclass
class Grouping:
    """How an op forms its groups: ``view(x)`` reshapes x so that ``dims`` reduce one group."""

    view: Callable[[torch.Tensor], torch.Tensor]
    dims: tuple[int, ...]
    param_shape: tuple[int, ...]  # γ, β viewed to broadcast against x


def norm_tolerances(x, grouping: Grouping, weight, bias, eps, stats=None) -> dict[str, Tol]:
    """Bounds on |ours − torch| per output, from a float64 error model (see compare.py).

    With M the group size and u the unit roundoff, the computed mean is off by at most
    γ_M · mean|x|, which shifts x̂ = (x − μ)·rstd by γ_M · mean|x| · rstd; the variance's
    relative error is O(γ_M). So with

        X = max|x̂|,  R = max rstd,  D = max(mean|x| · rstd)   (D: how far the data sits from
                                                               zero relative to its spread)
        δx̂ <= γ_M · (D + X)
        y  = γ·x̂ + β                       scale  Γ·(D + X) + |β|
        dx = rstd·(g − mean g − x̂·mean(g x̂))  scale  R·G·(2 + 2X² + 2X·(D + X)),  g = γ·dy, G = max|g|
        dγ = Σ dy·x̂  (K terms)             scale  max Σ|dy| · (2X + D)
        dβ = Σ dy    (K terms)             scale  max Σ|dy|

    and each bound is ``reduction_tol`` of its length and scale. The length is the group size
    plus the formula's own elementwise roundings (about 5 in the forward, 10 in the three-term
    backward), which dominate for tiny groups: with M = 2 the three terms cancel to O(ε), and
    what is left is those roundings. With ``stats`` (BatchNorm in eval: given running mean and
    variance) nothing is reduced to form x̂ and D uses (|x| + |running mean|) · rstd.
    """
    dtype = x.dtype
    if x.numel() == 0:
        return dict.fromkeys(("output", "input", "weight", "bias"), Tol(0.0, 0.0))
    xd = grouping.view(x.detach().double())
    if stats is None:
        mean = xd.mean(grouping.dims, keepdim=True)
        var = ((xd - mean) ** 2).mean(grouping.dims, keepdim=True)
        rstd = (var + eps).rsqrt()
        x_hat = (xd - mean) * rstd
        centering = xd.abs().mean(grouping.dims, keepdim=True) * rstd
        m = math.prod(xd.shape[d] for d in grouping.dims)
    else:
        rm, rv = (s.detach().double().view(grouping.param_shape) for s in stats)
        rstd = (rv + eps).rsqrt()
        x_hat = (xd - rm) * rstd
        centering = (xd.abs() + rm.abs()) * rstd
        m = 0  # no reduction: only the formula's own roundings
    x_hat = x_hat.reshape(x.shape)

    def biggest(t):
        return float(t.max()) if t.numel() else 0.0

    X, R, D = biggest(x_hat.abs()), biggest(rstd), biggest(centering)
    gamma = 1.0 if weight is None else biggest(weight.detach().double().abs())
    beta = 0.0 if bias is None else biggest(bias.detach().double().abs())
    dy = upstream_gradient(x.shape, dtype).double().abs()
    G = biggest(dy) * gamma
    k = x.numel() // max(math.prod(grouping.param_shape), 1)  # terms summed into each γ, β
    dy_sums = dy.sum_to_size(grouping.param_shape)
    return {
        "output": reduction_tol(dtype, m + 5, gamma * (D + X) + beta),
        "input": reduction_tol(dtype, m + 10, R * G * (2 + 2 * X * X + 2 * X * (D + X))),
        "weight": reduction_tol(dtype, max(m + 5, k), biggest(dy_sums) * (2 * X + D)),
        "bias": reduction_tol(dtype, k, biggest(dy_sums)),
    }


def running_stat_tolerances(batches, dtype, m, steps) -> tuple[Tol, Tol]:
    """Bounds for running_mean / running_var after ``steps`` updates from ``batches``.

    Each update is a convex combination, so the error is at most the largest error of a batch
    statistic (mean: γ_m · mean|x|; unbiased variance: γ_m · (σ² + 2·mean|x|·σ) · m/(m−1)),
    plus one rounding to the buffer's dtype per step.
    """
    mean_scale, var_scale = 0.0, 1.0  # the running variance starts at 1
    for x in batches:
        xd = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)  # (C, m)
        var = xd.var(1, unbiased=False)
        mean_scale = max(mean_scale, float(xd.abs().mean(1).max()))
        var_scale = max(var_scale, float(((var + 2 * xd.abs().mean(1) * var.sqrt()) * m / (m - 1)).max()))
    return reduction_tol(dtype, m + 3 * steps, mean_scale), reduction_tol(dtype, m + 3 * steps, var_scale)


def channel_grouping(x) -> Grouping:
    """BatchNorm: one group per channel, over N and every position."""
    return Grouping(lambda t: t, (0, *range(2, x.dim())), (1, x.shape[1], *[1] * (x.dim() - 2)))


def trailing_grouping(x, k) -> Grouping:
    """LayerNorm: one group per leading index, over the last k dims."""
    return Grouping(lambda t: t, tuple(range(x.dim() - k, x.dim())), tuple(x.shape[x.dim() - k :]))


def group_grouping(x, g) -> Grouping:
    """GroupNorm: one group per (sample, group of C/G channels)."""
    n, c = x.shape[:2]
    return Grouping(lambda t: t.reshape(n, g, (c // g) * math.prod(x.shape[2:])), (2,), (1, c, *[1] * (x.dim() - 2)))


# --- strategies -----------------------------------------------------------------------------


@st.composite
def params(draw, shape, dtype, *, affine=None):
    """(weight, bias): each present or None, drawn around 1 and 0 like trained parameters."""
    affine = draw(st.booleans()) if affine is None else affine
    weight = draw(tensors(shape, dtype, regimes=("normal",))).requires_grad_() if affine else None
    with_bias = affine and draw(st.booleans())
    bias = draw(tensors(shape, dtype, regimes=("normal",))).requires_grad_() if with_bias else None
    return weight, bias


@st.composite
def batch_inputs(draw, dtype=dtypes(bf16=True), *, training=None):
    """x of shape (N, C), (N, C, L) or (N, C, H, W), any layout (channels_last among them)."""
    dtype = draw(dtype)
    ndim = draw(st.integers(2, 4))
    shape = [draw(st.integers(1, 5)) for _ in range(ndim)]
    training = draw(st.booleans()) if training is None else training
    if training and math.prod(shape) // shape[1] == 1:
        shape[0] = 2  # training needs more than one value per channel (tested separately)
    x = draw(tensors(tuple(shape), dtype, regimes=REGIMES)).requires_grad_()
    return x, training


def gradcheck_with_params(op, x, weight, bias):
    """gradcheck/gradgradcheck of ``op(x, weight, bias)`` with respect to the tensors present."""
    present = [t for t in (weight, bias) if t is not None]

    def fn(x, *p):
        it = iter(p)
        return op(x, next(it) if weight is not None else None, next(it) if bias is not None else None)

    check_gradients(fn, [x, *present])


# --- batch_norm -----------------------------------------------------------------------------


def contiguous(t):
    """What the oracle gets: a dense copy (differentiable, so gradients still reach ``t``).

    torch 2.13's CPU batch_norm backward mishandles two layouts the strategies draw, silently:
    - for (N, C) input, a strided weight is read as if it were contiguous: outside the view
      (into the NaN the layouts strategy fences views with) and at the wrong elements;
    - an input laid out channels-last with unusual strides on its size-1 dims (e.g. shape
      (1, 2, 2, 1), strides (1, 1, 2, 1)) gets a gradient mixed across positions, off by 2x.
    Our op still sees the original layouts; the tests named ..._differentiates_correctly and
    ..._odd_strides_... check ours directly on those two.
    """
    return None if t is None else t.contiguous()


@given(st.data())
def test_batch_norm_matches_torch(data):
    x, training = data.draw(batch_inputs())
    c = x.shape[1]
    weight, bias = data.draw(params((c,), x.dtype))
    momentum, eps = data.draw(st.floats(0, 1)), data.draw(eps_values)
    with_stats = not training or data.draw(st.booleans())
    stats = None
    if with_stats:
        rm = data.draw(values((c,), x.dtype, regimes=("normal",)))
        rv = data.draw(values((c,), x.dtype, regimes=("normal",))).abs() + 0.5
        stats = (rm, rv)
    ours_stats = [s.clone() for s in stats] if stats else [None, None]
    torch_stats = [s.clone() for s in stats] if stats else [None, None]

    assert_same_as_torch(
        lambda x, w, b: F.batch_norm(x, *ours_stats, w, b, training, momentum, eps),
        lambda x, w, b: TF.batch_norm(contiguous(x), *torch_stats, contiguous(w), b, training, momentum, eps),
        {"input": x, "weight": weight, "bias": bias},
        tol=norm_tolerances(x, channel_grouping(x), weight, bias, eps, None if training else stats),
    )
    if training and with_stats:
        m = x.numel() // c
        tol_mean, tol_var = running_stat_tolerances([x], x.dtype, m, steps=1)
        assert_close(ours_stats[0], torch_stats[0], tol_mean, "running_mean")
        assert_close(ours_stats[1], torch_stats[1], tol_var, "running_var")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@given(data=st.data())
def test_batch_norm_gradcheck_and_gradgradcheck(training, affine, data):
    x, _ = data.draw(batch_inputs(st.just(torch.float64), training=training))
    x = x[:3, :3].detach().requires_grad_()  # numerical Jacobians: one evaluation per element
    c = x.shape[1]
    weight, bias = data.draw(params((c,), torch.float64, affine=affine))
    rm = torch.randn(c, dtype=torch.float64)
    rv = torch.rand(c, dtype=torch.float64) + 0.5
    gradcheck_with_params(
        lambda x, w, b: F.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-3), x, weight, bias
    )


def test_batch_norm_with_strided_weight_on_2d_input_differentiates_correctly():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    storage = torch.full((6,), math.nan, dtype=torch.float64)
    storage[::2] = torch.tensor([1.5, -0.3, 0.7], dtype=torch.float64)
    strided = storage[::2].requires_grad_()
    for training in (True, False):
        stats = (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
        dx, dw = torch.autograd.grad(F.batch_norm(x, *stats, strided, None, training).sum(), (x, strided))
        dense = strided.detach().contiguous().requires_grad_()
        dx_ref, dw_ref = torch.autograd.grad(TF.batch_norm(x, *stats, dense, None, training).sum(), (x, dense))
        torch.testing.assert_close(dx, dx_ref)
        torch.testing.assert_close(dw, dw_ref)


def test_batch_norm_input_with_odd_strides_on_size_one_dims_differentiates_correctly():
    values = torch.tensor([[[[0.6614], [0.2669]], [[0.0617], [0.6213]]]], dtype=torch.float64)
    odd = torch.empty(4, dtype=torch.float64).as_strided((1, 2, 2, 1), (1, 1, 2, 1)).copy_(values)
    dy = torch.tensor([[[[0.3], [-0.7]], [[0.2], [0.5]]]], dtype=torch.float64)
    for x in (odd, values):
        x.requires_grad_()
        (dx,) = torch.autograd.grad(F.batch_norm(x, None, None, training=True), x, dy)
        dense = x.detach().contiguous().requires_grad_()
        (dx_ref,) = torch.autograd.grad(TF.batch_norm(dense, None, None, training=True), dense, dy)
        torch.testing.assert_close(dx, dx_ref)


def test_running_var_uses_unbiased_estimate():
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64)  # one channel, m = 4
    rm, rv = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    F.batch_norm(x, rm, rv, training=True, momentum=1.0)  # momentum 1: the running stats *are* the batch's
    assert rm.item() == pytest.approx(3.0)
    assert rv.item() == pytest.approx(x.var(unbiased=True).item())  # 14/3, not the biased 14/4
    # ...while the normalization itself uses the biased variance:
    y = F.batch_norm(x, None, None, training=True, eps=1e-300)  # torch refuses eps <= 0 in training
    assert y.pow(2).mean().item() == pytest.approx(1.0)


def test_batch_norm_fails_on_one_value_per_channel_in_training():
    for shape in [(1, 3), (1, 3, 1), (1, 3, 1, 1)]:
        x = torch.randn(shape)
        error = assert_raises_like_torch(
            lambda x=x: F.batch_norm(x, None, None, training=True),
            lambda x=x: TF.batch_norm(x, None, None, training=True),
        )
        assert isinstance(error, ValueError)
    # Evaluation uses the running statistics, so a single sample is fine there.
    x = torch.randn(1, 3)
    assert torch.isfinite(F.batch_norm(x, torch.zeros(3), torch.ones(3), training=False)).all()


def test_batch_norm_in_eval_is_an_affine_map():
    m = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        m.running_mean.copy_(torch.randn(4))
        m.running_var.copy_(torch.rand(4) + 0.5)
        m.weight.copy_(torch.randn(4))
        m.bias.copy_(torch.randn(4))
    a, b = torch.randn(2, 4, 3, 3, dtype=torch.float32), torch.randn(2, 4, 3, 3)
    # f(αa + βb) = αf(a) + βf(b) whenever α + β = 1: the definition of an affine map.
    torch.testing.assert_close(m(0.3 * a + 0.7 * b), 0.3 * m(a) + 0.7 * m(b))
    # ...and each sample is normalized independently of the others in its batch.
    torch.testing.assert_close(m(a)[:1], m(a[:1]))


def test_batch_of_zero_leaves_running_stats_alone_like_torch():
    x = torch.randn(0, 3, 4, requires_grad=True)
    ours, theirs = (torch.zeros(3), torch.ones(3)), (torch.zeros(3), torch.ones(3))
    y = F.batch_norm(x, *ours, training=True)
    TF.batch_norm(x, *theirs, training=True)
    assert y.shape == x.shape
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    (dx,) = torch.autograd.grad(y.sum(), x)
    assert dx.shape == x.shape


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((torch.randn(4, 3), torch.zeros(4), torch.ones(4), None, None, True), id="running-mean-size"),
        pytest.param((torch.randn(4, 3), torch.zeros(3), torch.ones(3), torch.ones(4), None, True), id="weight-size"),
        pytest.param((torch.randn(4, 3), torch.zeros(3), torch.ones(3), None, torch.ones(2), False), id="bias-size"),
        pytest.param((torch.randn(4, 3), None, None, None, None, False), id="eval-without-stats"),
        pytest.param((torch.randn(3), torch.zeros(3), torch.ones(3), None, None, True), id="1d-input"),
    ],
)
def test_batch_norm_bad_arguments_raise_like_torch(args):
    assert_raises_like_torch(lambda: F.batch_norm(*args), lambda: TF.batch_norm(*args))


# --- layer_norm -----------------------------------------------------------------------------


@st.composite
def layer_inputs(draw, dtype=dtypes(bf16=True)):
    dtype = draw(dtype)
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    if draw(st.integers(0, 7)) == 7:
        shape = (0, *shape[1:]) if len(shape) > 1 else shape
    k = draw(st.integers(1, len(shape)))
    x = draw(tensors(shape, dtype, regimes=REGIMES)).requires_grad_()
    return x, k


@given(st.data())
def test_layer_norm_matches_torch(data):
    x, k = data.draw(layer_inputs())
    normalized_shape = tuple(x.shape[x.dim() - k :])
    weight, bias = data.draw(params(normalized_shape, x.dtype))
    eps = data.draw(eps_values)
    spelled = normalized_shape[0] if k == 1 and data.draw(st.booleans()) else normalized_shape
    assert_same_as_torch(
        lambda x, w, b: F.layer_norm(x, spelled, w, b, eps),
        lambda x, w, b: TF.layer_norm(x, normalized_shape, w, b, eps),
        {"input": x, "weight": weight, "bias": bias},
        tol=norm_tolerances(x, trailing_grouping(x, k), weight, bias, eps),
    )


@pytest.mark.parametrize("affine", [True, False])
@given(data=st.data())
def test_layer_norm_gradcheck_and_gradgradcheck(affine, data):
    x, k = data.draw(layer_inputs(st.just(torch.float64)))
    if x.numel() == 0 or x.numel() > 40:
        x = torch.randn(3, 4, dtype=torch.float64)
    x = x.detach().requires_grad_()
    shape = tuple(x.shape[x.dim() - k :])
    weight, bias = data.draw(params(shape, torch.float64, affine=affine))
    gradcheck_with_params(lambda x, w, b: F.layer_norm(x, shape, w, b, 1e-3), x, weight, bias)


def test_layer_norm_constant_row_gives_finite_outputs_and_gradients():
    # σ² = 0: x̂ = 0 · rstd with rstd = 1/√ε, finite; the gradient is rstd·(g − mean g).
    x = torch.full((2, 8), 3.0, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    y = F.layer_norm(x, 8, w)
    dx, dw = torch.autograd.grad(y.sum(), (x, w))
    for t in (y, dx, dw):
        assert torch.isfinite(t).all()
    assert torch.equal(y, torch.zeros_like(y))
    check_gradients(lambda x: F.layer_norm(x, 8, eps=1e-3), [x])


def test_layer_norm_behaves_the_same_in_train_and_eval():
    m = nn.LayerNorm(6)
    x = torch.randn(4, 6)
    train_out = m.train()(x)
    eval_out = m.eval()(x)
    assert torch.equal(train_out, eval_out)
    assert list(m.buffers()) == []  # no running statistics to switch to


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((torch.randn(2, 3), (4,)), id="shape-mismatch"),
        pytest.param((torch.randn(3), (2, 3)), id="more-dims-than-input"),
        pytest.param((torch.randn(2, 3), (3,), torch.ones(4)), id="weight-shape"),
        pytest.param((torch.randn(2, 3), (3,), None, torch.ones(2)), id="bias-shape"),
        pytest.param((torch.randn(2, 3).double(), (3,), torch.ones(3)), id="weight-dtype"),
    ],
)
def test_layer_norm_bad_arguments_raise_like_torch(args):
    assert_raises_like_torch(lambda: F.layer_norm(*args), lambda: TF.layer_norm(*args))


# --- group_norm -----------------------------------------------------------------------------


@st.composite
def group_inputs(draw, dtype=dtypes(bf16=True)):
    dtype = draw(dtype)
    groups, per_group = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 4), max_size=2))
    n = draw(st.integers(0, 3))
    if n * per_group * math.prod(spatial) == 1:
        n = 2  # a lone sample with one value per group is refused (tested separately)
    x = draw(tensors((n, groups * per_group, *spatial), dtype, regimes=REGIMES)).requires_grad_()
    return x, groups


@given(st.data())
def test_group_norm_matches_torch(data):
    x, g = data.draw(group_inputs())
    weight, bias = data.draw(params((x.shape[1],), x.dtype))
    eps = data.draw(eps_values)
    assert_same_as_torch(
        lambda x, w, b: F.group_norm(x, g, w, b, eps),
        lambda x, w, b: TF.group_norm(x, g, w, b, eps),
        {"input": x, "weight": weight, "bias": bias},
        tol=norm_tolerances(x, group_grouping(x, g), weight, bias, eps),
    )


@pytest.mark.parametrize("affine", [True, False])
@given(data=st.data())
def test_group_norm_gradcheck_and_gradgradcheck(affine, data):
    x, g = data.draw(group_inputs(st.just(torch.float64)))
    if x.numel() == 0 or x.numel() > 48:
        x, g = torch.randn(2, 4, 3, dtype=torch.float64), 2
    x = x.detach().requires_grad_()
    weight, bias = data.draw(params((x.shape[1],), torch.float64, affine=affine))
    gradcheck_with_params(lambda x, w, b: F.group_norm(x, g, w, b, 1e-3), x, weight, bias)


def test_group_norm_spans_layer_norm_and_instance_norm():
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    # One group: each sample normalized over all its channels and positions.
    torch.testing.assert_close(F.group_norm(x, 1), F.layer_norm(x, (6, 5)))
    # One group per channel: instance normalization.
    torch.testing.assert_close(F.group_norm(x, 6), TF.instance_norm(x))


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((torch.randn(2, 6, 3), 4), id="groups-do-not-divide-channels"),
        pytest.param((torch.randn(6), 3), id="1d-input"),
        pytest.param((torch.randn(2, 6, 3), 3, torch.ones(5)), id="weight-size"),
        pytest.param((torch.randn(1, 3), 3), id="one-value-per-group"),
        pytest.param((torch.randn(1, 4, 1, 1), 4), id="one-value-per-group-2d"),
    ],
)
def test_group_norm_bad_arguments_raise_like_torch(args):
    assert_raises_like_torch(lambda: F.group_norm(*args), lambda: TF.group_norm(*args))


# --- modules --------------------------------------------------------------------------------


@st.composite
def batch_norm_modules(draw):
    """Matching (ours, torch's) BatchNorm1d/2d with drawn options, weights and running buffers."""
    two_d = draw(st.booleans())
    c = draw(st.integers(1, 4))
    kwargs = {
        "eps": draw(eps_values),
        "momentum": draw(st.none() | st.floats(0.01, 1)),
        "affine": draw(st.booleans()),
        "track_running_stats": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "dtype": draw(dtypes()),
    }
    name = "BatchNorm2d" if two_d else "BatchNorm1d"
    theirs = getattr(torch.nn, name)(c, **kwargs)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p))
    ours = getattr(nn, name)(c, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs, kwargs["dtype"]


@given(batch_norm_modules(), st.data())
def test_batch_norm_module_matches_torch_over_training_steps_and_eval(modules, data):
    ours, theirs, dtype = modules
    c, n = ours.num_features, data.draw(st.integers(2, 4))
    if isinstance(ours, nn.BatchNorm2d):
        shape = (n, c, 3, 3)
    else:
        shape = data.draw(st.sampled_from([(n, c), (n, c, data.draw(st.integers(1, 4)))]))
    batches = [data.draw(tensors(shape, dtype, regimes=("normal",))).requires_grad_() for _ in range(3)]
    param = {"ours": dict(ours.named_parameters()), "torch": dict(theirs.named_parameters())}

    def oracle(x):
        return theirs(contiguous(x))  # see contiguous(): torch's backward and odd strides

    for x in batches:  # training steps
        tol = norm_tolerances(x, channel_grouping(x), ours.weight, ours.bias, ours.eps)
        assert_same_as_torch(
            ours, oracle, {"input": x}, tol=tol, ours_params=param["ours"], oracle_params=param["torch"]
        )
    if ours.track_running_stats:
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
        tol_mean, tol_var = running_stat_tolerances(batches, dtype, x.numel() // c, steps=3)
        assert_close(ours.running_mean, theirs.running_mean, tol_mean, "running_mean")
        assert_close(ours.running_var, theirs.running_var, tol_var, "running_var")
    ours.eval()
    theirs.eval()
    x = batches[0]
    stats = (theirs.running_mean, theirs.running_var) if ours.track_running_stats else None
    tol = norm_tolerances(x, channel_grouping(x), ours.weight, ours.bias, ours.eps, stats)
    assert_same_as_torch(ours, oracle, {"input": x}, tol=tol, ours_params=param["ours"], oracle_params=param["torch"])


def test_momentum_none_is_the_cumulative_average_of_batch_statistics():
    m = nn.BatchNorm1d(2, momentum=None)
    batches = [torch.randn(16, 2, dtype=torch.float32) * (i + 1) + i for i in range(4)]
    for x in batches:
        m(x)
    expected_mean = torch.stack([x.mean(0) for x in batches]).mean(0)
    expected_var = torch.stack([x.var(0, unbiased=True) for x in batches]).mean(0)
    torch.testing.assert_close(m.running_mean, expected_mean)
    torch.testing.assert_close(m.running_var, expected_var)


def test_batch_norm2d_accepts_channels_last():
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    tol = norm_tolerances(x, channel_grouping(x), ours.weight, ours.bias, ours.eps)
    assert_same_as_torch(
        ours,
        theirs,
        {"input": x},
        tol=tol,
        ours_params=dict(ours.named_parameters()),
        oracle_params=dict(theirs.named_parameters()),
    )


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        ("BatchNorm1d", (3,), {}),
        ("BatchNorm2d", (5,), {"eps": 1e-3, "momentum": None, "affine": False, "track_running_stats": False}),
        ("BatchNorm2d", (4,), {"bias": False, "dtype": torch.float64}),
        ("LayerNorm", (6,), {}),
        ("LayerNorm", ((2, 3),), {"elementwise_affine": False}),
        ("LayerNorm", ([4],), {"bias": False, "eps": 0.1}),
        ("GroupNorm", (2, 6), {}),
        ("GroupNorm", (3, 6), {"affine": False, "eps": 1e-3}),
        ("GroupNorm", (1, 4), {"bias": False}),
    ],
)
def test_module_interface_and_state_dict_match_torch(cls, args, kwargs):
    ours, theirs = getattr(nn, cls)(*args, **kwargs), getattr(torch.nn, cls)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    assert constructor_signature(type(ours)) == constructor_signature(type(theirs))
    assert ours._parameters.keys() == theirs._parameters.keys()
    assert ours._buffers.keys() == theirs._buffers.keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key  # same default init and buffers
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p))
    ours.load_state_dict(theirs.state_dict())
    back = getattr(torch.nn, cls)(*args, **kwargs)
    back.load_state_dict(ours.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in theirs.state_dict().items())


def test_batch_norm_loads_a_state_dict_from_before_num_batches_tracked():
    m = nn.BatchNorm1d(3)
    old = {k: v for k, v in torch.nn.BatchNorm1d(3).state_dict().items() if k != "num_batches_tracked"}
    old = type(m.state_dict())(old)
    old._metadata = {"": {"version": 1}}
    m.load_state_dict(old)
    assert int(m.num_batches_tracked) == 0


def test_reset_running_stats_and_parameters():
    m = nn.BatchNorm1d(3)
    m(torch.randn(8, 3) * 5 + 2)
    with torch.no_grad():
        m.weight.mul_(3)
    m.reset_running_stats()
    assert torch.equal(m.running_mean, torch.zeros(3))
    assert torch.equal(m.running_var, torch.ones(3))
    assert int(m.num_batches_tracked) == 0
    assert not torch.equal(m.weight, torch.ones(3))
    m.reset_parameters()
    assert torch.equal(m.weight, torch.ones(3))
    assert torch.equal(m.bias, torch.zeros(3))


@pytest.mark.parametrize(
    ("cls", "args", "bad_input"),
    [
        ("BatchNorm1d", (3,), torch.randn(2, 3, 4, 5)),
        ("BatchNorm2d", (3,), torch.randn(2, 3, 4)),
    ],
)
def test_batch_norm_modules_check_input_rank_like_torch(cls, args, bad_input):
    assert_raises_like_torch(
        lambda: getattr(nn, cls)(*args)(bad_input), lambda: getattr(torch.nn, cls)(*args)(bad_input)
    )


def test_group_norm_module_rejects_indivisible_channels_like_torch():
    assert_raises_like_torch(lambda: nn.GroupNorm(4, 6), lambda: torch.nn.GroupNorm(4, 6))
