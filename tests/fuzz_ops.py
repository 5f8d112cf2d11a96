"""The differential fuzzer's machinery: tensor specs, one call strategy per op, and the checker.

A *call* names a public reference op of ``minitorch_nn.functional`` and its arguments, with every
tensor argument given as a :class:`T` spec (shape, dtype, values, memory layout) rather than a
tensor. :func:`check_call` materializes the spec three times, fresh: one copy for torch, one for
us, one kept pristine for the tolerances. So each side gets its own tensors (an op that writes to
an argument, such as batch_norm's running statistics, is compared as torch writes it, and one that
writes where torch does not is caught), and a failing call prints as a small, exact, copy-pasteable
example (``Call(...)``) that a regression test replays.

The contract checked for every call (see tests/test_fuzz.py for the profiles):

* torch raises   -> we raise an exception of exactly the same class (``type(ours) is type(torch)``,
  not a subclass: a caller's ``except`` clause written against torch then behaves the same with
  us, and a subclass would let a stray error class hide behind a broad one), with a message;
* torch returns  -> we return the same dtype and shape, values within the error model of
  tests/compare.py (NaN and ±Inf at exactly the same positions), and the same gradients for every
  floating-point argument that requires grad (torch's backward raises -> ours raises the same);
* every tensor argument afterwards equals torch's copy of it: unchanged where torch leaves it
  alone, updated within the error model where torch updates it (running statistics).

Tolerances are the per-op ones the op's own tests derive (``norm_tolerances``,
``softmax_tolerances``, ``ce_tolerances``, ``bce_tolerances``, ``pointwise_tol``), or, for the
ops that are linear in each argument (linear, conv2d, avg_pool2d, adaptive_avg_pool2d),
``reduction_tol(dtype, k, S)`` with ``k`` the longest sum the op or its gradients form and ``S``
the op itself evaluated in float64 on the arguments' absolute values (so ``S`` is exactly
``Σ |terms|`` of each output, and of each gradient by back-propagating ``|dy|``). Non-finite
inputs enter the tolerances as 0: the outputs they reach are NaN or ±Inf, compared by position.

Values stay in ranges where the error model holds: "huge" is ``2^(emax/2 − 4)`` of the dtype (its
square, and sums of a few thousand squares, do not overflow), so a sum that overflows in one
summation order and not in another, which no tolerance can describe, is not generated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as TF
from hypothesis import strategies as st
from torch import Tensor

import minitorch_nn.functional as F

from .compare import Tol, assert_close, pointwise_tol, reduction_tol, upstream_gradient
from .test_loss import bce_tolerances, ce_tolerances, softmax_tolerances, target_distribution
from .test_normalization import (
    channel_grouping,
    group_grouping,
    norm_tolerances,
    running_stat_tolerances,
    trailing_grouping,
)

f32, f64, bf16, f16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
VALID_DTYPES = (f32, f32, f64, bf16)  # float32 drawn twice as often
ODD_DTYPES = (f16, torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64)
FILLS = ("normal", "wide", "special", "constant", "near_constant")
LAYOUTS = ("contiguous", "contiguous", "permuted", "strided", "offset", "expand")


# --- tensor specs ---------------------------------------------------------------------------


def huge(dtype: torch.dtype) -> float:
    """A large magnitude whose square, summed a few thousand times, still fits ``dtype``."""
    return 2.0 ** (math.log2(torch.finfo(dtype).max) // 2 - 4)


def special_points(dtype: torch.dtype) -> tuple[float, ...]:
    fi = torch.finfo(dtype)
    points = (math.nan, math.inf, huge(dtype), fi.tiny / 4, fi.tiny, 0.0, 1.0, 1e-3)
    return tuple(s * p for p in points for s in (1.0, -1.0))


@dataclass(frozen=True)
class T:
    """A tensor to build afresh on each side: ``shape``, ``dtype``, values, memory layout.

    fill: ``normal`` N(0, 1); ``wide`` ±10^U(-4, 4); ``special`` normal with 30 % of the entries
    NaN, ±Inf, huge, subnormal or ±0; ``constant`` one value c with |c| up to 1e5 everywhere;
    ``near_constant`` c·(1 + 2^-20·N(0, 1)); ``positive`` 10^U(-4, 4) (variances).
    Integer dtypes round, bool takes ``> 0``, complex takes a second draw as the imaginary part.
    layout: ``permuted`` / ``strided`` / ``offset`` are views into a larger NaN-filled storage
    (tests/strategies.py); ``expand`` repeats one slice along dim 0 with stride 0.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype = f32
    fill: str = "normal"
    seed: int = 0
    layout: str = "contiguous"
    grad: bool = False

    def make(self) -> Tensor:
        shape = self.shape
        if self.layout == "expand" and shape:
            shape = (1, *shape[1:])
        g = torch.Generator().manual_seed(self.seed)
        real_dtype = {torch.complex64: f32, torch.complex128: f64}.get(self.dtype, self.dtype)
        v = _values(self.fill, shape, real_dtype if real_dtype.is_floating_point else f32, g)
        if self.dtype.is_complex:
            v = torch.complex(v.to(real_dtype), _values(self.fill, shape, real_dtype, g).to(real_dtype))
        elif self.dtype == torch.bool:
            v = v > 0
        elif not self.dtype.is_floating_point:
            info = torch.iinfo(self.dtype)
            v = torch.nan_to_num(v, 0.0, 0.0, 0.0).round().clamp(info.min, info.max)
        t = v.to(self.dtype)
        t = _lay_out(t, self.layout, self.shape)
        if self.grad and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_()
        return t


def _values(fill: str, shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator) -> Tensor:
    normal = torch.randn(shape, generator=g, dtype=f64)
    if fill == "normal":
        return normal
    if fill == "wide":
        sign = torch.randint(0, 2, shape, generator=g) * 2 - 1
        return 10 ** (torch.rand(shape, generator=g, dtype=f64) * 8 - 4) * sign
    if fill == "positive":
        return 10 ** (torch.rand(shape, generator=g, dtype=f64) * 8 - 4)
    if fill == "special":
        points = torch.tensor(special_points(dtype), dtype=f64)
        pick = points[torch.randint(len(points), shape, generator=g)]
        return torch.where(torch.rand(shape, generator=g) < 0.3, pick, normal)
    c = float(torch.randn((), generator=g, dtype=f64)) * 10 ** float(torch.randint(0, 6, (), generator=g))
    if fill == "constant":
        return torch.full(shape, c, dtype=f64)
    if fill == "near_constant":
        return c * (1 + 2**-20 * normal)
    raise ValueError(fill)


def _lay_out(t: Tensor, layout: str, shape: tuple[int, ...]) -> Tensor:
    if layout == "contiguous" or t.dim() == 0:
        return t
    if layout == "expand":
        return t.expand(shape)
    n = t.dim()
    perm, steps, offset = tuple(range(n)), (1,) * n, 0
    if layout == "permuted":
        perm = tuple(reversed(range(n)))
    elif layout == "strided":
        steps = (2,) * n
    elif layout == "offset":
        offset = 3
    physical_shape = [t.shape[d] * steps[d] for d in perm]
    if t.is_floating_point() or t.is_complex():
        fill = math.nan
    else:
        fill = True if t.dtype == torch.bool else torch.iinfo(t.dtype).max
    storage = torch.full((offset + math.prod(physical_shape),), fill, dtype=t.dtype)
    physical = storage[offset:].view(physical_shape)[tuple(slice(None, None, steps[d]) for d in perm)]
    view = physical.permute([perm.index(d) for d in range(n)])
    view.copy_(t)
    return view


def _build(value):
    if isinstance(value, T):
        return value.make()
    if isinstance(value, list):
        return [_build(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_build(v) for v in value)
    return value


# --- calls and the checker ------------------------------------------------------------------


@dataclass
class Call:
    """One call of ``op`` (a name in both ``torch.nn.functional`` and ``minitorch_nn.functional``)."""

    op: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def build(self) -> tuple[tuple, dict]:
        return _build(self.args), {k: _build(v) for k, v in self.kwargs.items()}


def _run(fn: Callable, args: tuple, kwargs: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs), None
        except Exception as e:  # every exception is compared with torch's
            return None, e


def _tensors(args: tuple, kwargs: dict) -> list[tuple[str, Tensor]]:
    named = [(str(i), a) for i, a in enumerate(args)] + list(kwargs.items())
    return [(name, t) for name, t in named if isinstance(t, Tensor)]


def deliberate_error(call: Call) -> type[BaseException] | None:
    """The exception we raise on purpose where torch raises another or none (DELIBERATE below)."""
    first = call.args[0] if call.args else None
    if not isinstance(first, T):
        return TypeError
    if call.op in COMPLEX_FUNCTIONS and first.dtype.is_complex:
        return NotImplementedError
    return None


# Where we deliberately differ from torch, each pinned by a named test in tests/test_fuzz.py:
DELIBERATE = {
    "a list or a number where the input tensor belongs: TypeError, checked first (torch raises "
    "AttributeError from some ops, e.g. sigmoid, softmax, group_norm, adaptive_avg_pool2d, or "
    "another error it finds first)": "test_a_non_tensor_input_is_a_type_error_first",
    "sigmoid, tanh and silu refuse complex input (NotImplementedError) where torch computes the "
    "complex function": "test_activations_refuse_complex_input_torch_computes_the_complex_function",
    "binary_cross_entropy_with_logits with a lower-precision target returns the promoted dtype, "
    "computed in it, where torch returns (and computes in) the target's dtype": (
        "test_bce_with_logits_computes_in_the_promoted_dtype_not_the_targets"
    ),
}
COMPLEX_FUNCTIONS = ("sigmoid", "tanh", "silu")  # the activations torch computes on complex input


def _same_exception(ours: BaseException | None, theirs: BaseException, what: str, expected=None) -> None:
    assert ours is not None, f"torch raised {type(theirs).__name__} ({theirs}) {what}, we did not"
    if expected is not None:
        assert type(ours) is expected, f"{what}: expected our deliberate {expected.__name__}, got {ours!r}"
        assert str(ours), f"{what}: our {type(ours).__name__} has no message"
        return
    assert type(ours) is type(theirs), (
        f"{what}: torch raised {type(theirs).__name__} ({theirs}), we raised {type(ours).__name__} ({ours})"
    )
    assert str(ours), f"{what}: our {type(ours).__name__} has no message"


def _outputs(out) -> tuple[Tensor, ...]:
    return tuple(out) if isinstance(out, tuple) else (out,)


def check_call(call: Call) -> str:
    """Run ``call`` on torch and on us; assert the contract in the module docstring.

    Returns "raised", "returned" or "differentiated" (what torch did), for the statistics.
    """
    theirs_args, theirs_kwargs = call.build()
    ours_args, ours_kwargs = call.build()
    expected, their_error = _run(getattr(TF, call.op), theirs_args, theirs_kwargs)
    actual, our_error = _run(getattr(F, call.op), ours_args, ours_kwargs)
    deliberate = deliberate_error(call)
    if deliberate is not None and their_error is None:
        their_error = RuntimeError("torch returned")
    if their_error is not None:
        _same_exception(our_error, their_error, f"calling {call.op}", deliberate)
        return "raised"
    if our_error is not None:
        raise AssertionError(f"torch returned, we raised {type(our_error).__name__}: {our_error}") from our_error
    pristine_args, pristine_kwargs = call.build()
    tols = TOLERANCES[call.op](pristine_args, pristine_kwargs)
    expected, actual = _outputs(expected), _outputs(actual)
    assert len(actual) == len(expected), f"{len(actual)} outputs, torch {len(expected)}"
    context = dict(_tensors(pristine_args, pristine_kwargs))
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype, f"output {i}: dtype {a.dtype}, torch {e.dtype}"
        assert a.shape == e.shape, f"output {i}: shape {tuple(a.shape)}, torch {tuple(e.shape)}"
        exact = not (e.is_floating_point() or e.is_complex())
        assert_close(a.detach(), e.detach(), Tol(0, 0) if exact else tols["output"], f"output {i}", context)

    result = "returned"
    ours_t, theirs_t = _tensors(ours_args, ours_kwargs), _tensors(theirs_args, theirs_kwargs)
    leaves = [i for i, (_, t) in enumerate(theirs_t) if t.requires_grad]
    out, exp = actual[0], expected[0]
    if leaves and exp.requires_grad:
        assert out.requires_grad, "torch's output requires grad, ours does not"
        dy = upstream_gradient(exp.shape, exp.dtype)
        their_grads, their_error = _run(
            torch.autograd.grad, (exp, [theirs_t[i][1] for i in leaves], dy), {"allow_unused": True}
        )
        our_grads, our_error = _run(
            torch.autograd.grad, (out, [ours_t[i][1] for i in leaves], dy), {"allow_unused": True}
        )
        if their_error is not None:
            _same_exception(our_error, their_error, f"differentiating {call.op}")
        else:
            assert our_error is None, f"torch differentiated, we raised {type(our_error).__name__}: {our_error}"
            result = "differentiated"
            for i, a, e in zip(leaves, our_grads, their_grads, strict=True):
                name, leaf = theirs_t[i]
                a = torch.zeros_like(leaf) if a is None else a
                e = torch.zeros_like(leaf) if e is None else e
                assert_close(a, e, tols[f"grad {name}"], f"gradient wrt argument {name}", context)
    for (name, a), (_, e) in zip(ours_t, theirs_t, strict=True):
        tol = tols.get(f"after {name}", Tol(0, 0))
        assert_close(a.detach(), e.detach(), tol, f"argument {name} after the call (torch's copy as reference)")
    return result


# --- tolerances -----------------------------------------------------------------------------


def _finite(t: Tensor | None) -> Tensor | None:
    """``t`` detached, in float64, non-finite entries set to 0 (they are compared by position)."""
    if t is None or not isinstance(t, Tensor):
        return t
    t = t.detach().double() if t.is_floating_point() else t.detach()
    return torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0) if t.is_floating_point() else t


class Tols(dict):
    """Tolerances by key ("output", "grad <arg>", "after <arg>"); ``default`` for grads not listed."""

    def __init__(self, default: Tol, **named: Tol):
        super().__init__(named)
        self.default = default

    def __missing__(self, key: str) -> Tol:
        if key.startswith("after"):
            raise KeyError(key)
        return self.default

    def get(self, key, fallback=None):
        return dict.get(self, key, fallback)


def _real(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: f32, torch.complex128: f64}.get(dtype, dtype)


def pointwise(args, kwargs) -> Tols:
    x = args[0]
    dtype = _real(x.dtype) if (x.is_floating_point() or x.is_complex()) else torch.get_default_dtype()
    return Tols(pointwise_tol(dtype))


def multilinear(op: str, longest_sum: Callable[[tuple, dict], int]) -> Callable[[tuple, dict], Tols]:
    """reduction_tol with S from the op on |arguments| in float64 (module docstring)."""

    def tolerances(args, kwargs) -> Tols:
        x = args[0]
        if not x.is_floating_point():
            return Tols(Tol(0, 0))
        k = longest_sum(args, kwargs)
        abs_args = tuple(_finite(a).abs().requires_grad_() if isinstance(a, Tensor) else a for a in args)
        abs_kwargs = {n: _finite(v).abs() if isinstance(v, Tensor) else v for n, v in kwargs.items()}
        out = getattr(TF, op)(*abs_args, **abs_kwargs)
        s = float(out.detach().max()) if out.numel() else 0.0
        tols = Tols(Tol(0, 0), output=reduction_tol(x.dtype, k, s))
        leaves = [(str(i), a) for i, a in enumerate(abs_args) if isinstance(a, Tensor)]
        dy = upstream_gradient(out.shape, f64).abs()
        grads = torch.autograd.grad(out, [a for _, a in leaves], dy, allow_unused=True) if out.numel() else []
        for (name, _), g in zip(leaves, grads, strict=False):
            s = float(g.max()) if g is not None and g.numel() else 0.0
            tols[f"grad {name}"] = reduction_tol(x.dtype, k, s)
        return tols

    return tolerances


def _linear_sum(args, kwargs) -> int:
    x, w = args[0], args[1]
    rows = x.numel() // max(x.shape[-1], 1) if x.dim() else 1
    return max(x.shape[-1] if x.dim() else 1, w.shape[0] if w.dim() == 2 else 1, rows) + 1


def _conv_sum(args, kwargs) -> int:
    x, w = args[0], args[1]
    groups = kwargs.get("groups", 1)
    positions = x.numel() // max(x.shape[-3] if x.dim() >= 3 else 1, 1)
    taps = w[0].numel() if w.shape[0] else 0
    return (
        max(taps, w.shape[0] // max(groups, 1) * (w[0, 0].numel() if w.shape[0] and w.shape[1] else 0), positions) + 1
    )


def _avg_pool_sum(args, kwargs) -> int:
    k = kwargs.get("kernel_size", args[1] if len(args) > 1 else 1)
    kh, kw = (k, k) if isinstance(k, int) else (k[0], k[-1])
    return kh * kw + 2


def _adaptive_sum(args, kwargs) -> int:
    return args[0].shape[-1] * args[0].shape[-2] + 2


def max_pool(args, kwargs) -> Tols:
    x, k = args[0], args[1]
    kh, kw = (k, k) if isinstance(k, int) else (k[0], k[-1])
    if not x.is_floating_point():
        return Tols(Tol(0, 0))
    # The maximum is exact; each input's gradient sums dy over the (at most kh·kw) windows it wins.
    return Tols(reduction_tol(x.dtype, kh * kw, kh * kw), output=Tol(0, 0))


def _norm_tols(x, grouping, weight, bias, eps, stats, names) -> Tols:
    if not x.is_floating_point() or x.numel() == 0:
        return Tols(Tol(0, 0))
    weight, bias = _finite(weight), _finite(bias)
    tol = norm_tolerances(_finite(x).to(x.dtype), grouping, weight, bias, abs(eps), stats)
    return Tols(tol["input"], output=tol["output"], **{f"grad {n}": tol[k] for k, n in names.items()})


def layer_norm(args, kwargs) -> Tols:
    x, shape = args[0], args[1]
    k = 1 if isinstance(shape, int) else len(shape)
    w, b = kwargs.get("weight"), kwargs.get("bias")
    return _norm_tols(x, trailing_grouping(x, k), w, b, kwargs.get("eps", 1e-5), None, NORM_NAMES)


def group_norm(args, kwargs) -> Tols:
    x, g = args[0], args[1]
    w, b = kwargs.get("weight"), kwargs.get("bias")
    return _norm_tols(x, group_grouping(x, g), w, b, kwargs.get("eps", 1e-5), None, NORM_NAMES)


NORM_NAMES = {"input": "0", "weight": "weight", "bias": "bias"}


def batch_norm(args, kwargs) -> Tols:
    x, rm, rv = args
    w, b = kwargs.get("weight"), kwargs.get("bias")
    training, eps = kwargs.get("training", False), kwargs.get("eps", 1e-5)
    stats = None if training else (_finite(rm), _finite(rv))
    tols = _norm_tols(x, channel_grouping(x), w, b, eps, stats, NORM_NAMES)
    if training and rm is not None and x.numel():
        m = x.numel() // x.shape[1]
        tol_mean, tol_var = running_stat_tolerances([_finite(x)], rm.dtype, m, steps=1)
        tols["after 1"], tols["after 2"] = tol_mean, tol_var
    return tols


def softmax(args, kwargs, log=False) -> Tols:
    x, dim = args[0], kwargs.get("dim", args[1] if len(args) > 1 else None)
    dtype = kwargs.get("dtype") or x.dtype
    if not dtype.is_floating_point:
        return Tols(Tol(0, 0))
    if x.dim() == 0:
        x, dim = x.reshape(1), 0
    tol = softmax_tolerances(_finite(x).to(dtype), dim, log)
    return Tols(tol["input"], output=tol["output"])


def cross_entropy(args, kwargs) -> Tols:
    x, target = args
    weight = kwargs.get("weight")
    reduction = kwargs.get("reduction", "mean")
    reduction = "mean" if reduction == "elementwise_mean" else reduction
    ignore, smoothing = kwargs.get("ignore_index", -100), kwargs.get("label_smoothing", 0.0)
    class_dim = 0 if x.dim() == 1 else 1
    probabilities = target.is_floating_point()
    t, w, divisor = target_distribution(
        _finite(x), _finite(target), _finite(weight), ignore, smoothing, class_dim, probabilities
    )
    if reduction != "none":
        out_shape = ()
    elif probabilities:
        out_shape = tuple(s for d, s in enumerate(x.shape) if d != class_dim)
    else:
        out_shape = tuple(target.shape)
    tol = ce_tolerances(_finite(x).to(x.dtype), t, w, divisor, reduction, class_dim, out_shape)
    return Tols(tol["input"], output=tol["output"], **{"grad 1": tol["target"], "grad weight": tol["weight"]})


def bce(args, kwargs) -> Tols:
    x, t = args
    reduction = kwargs.get("reduction", "mean")
    reduction = "mean" if reduction == "elementwise_mean" else reduction
    w, pw = _finite(kwargs.get("weight")), _finite(kwargs.get("pos_weight"))
    tol = bce_tolerances(_finite(x).to(x.dtype), _finite(t), w, pw, reduction)
    return Tols(tol["input"], output=tol["output"], **{"grad 1": tol["target"]})


TOLERANCES: dict[str, Callable[[tuple, dict], Tols]] = {
    "relu": pointwise,
    "leaky_relu": pointwise,
    "gelu": pointwise,
    "silu": pointwise,
    "mish": pointwise,
    "sigmoid": pointwise,
    "tanh": pointwise,
    "softplus": pointwise,
    "dropout": pointwise,
    "linear": multilinear("linear", _linear_sum),
    "conv2d": multilinear("conv2d", _conv_sum),
    "avg_pool2d": multilinear("avg_pool2d", _avg_pool_sum),
    "adaptive_avg_pool2d": multilinear("adaptive_avg_pool2d", _adaptive_sum),
    "max_pool2d": max_pool,
    "layer_norm": layer_norm,
    "group_norm": group_norm,
    "batch_norm": batch_norm,
    "softmax": softmax,
    "log_softmax": lambda a, k: softmax(a, k, log=True),
    "cross_entropy": cross_entropy,
    "binary_cross_entropy_with_logits": bce,
}


# --- strategies -----------------------------------------------------------------------------


@st.composite
def dtypes(draw, odd: float = 0.15) -> torch.dtype:
    """A floating dtype torch's CPU ops take, or now and then one they may reject."""
    return draw(st.sampled_from(ODD_DTYPES if draw(st.floats(0, 1)) < odd else VALID_DTYPES))


@st.composite
def specs(draw, shape: tuple[int, ...], dtype: torch.dtype | None = None, *, grad: bool = True) -> T:
    """A :class:`T` of ``shape``: any fill and layout, dtype drawn unless given."""
    dtype = draw(dtypes()) if dtype is None else dtype
    fill = draw(st.sampled_from(FILLS))
    layout = draw(st.sampled_from(LAYOUTS))
    return T(tuple(shape), dtype, fill, draw(st.integers(0, 2**16)), layout, grad)


@st.composite
def sizes(draw, n: int, *, low: int = 0, high: int = 5) -> tuple[int, ...]:
    """``n`` sizes in ``low..high``; zero only now and then."""
    return tuple(draw(st.integers(max(low, 1), high) | st.integers(low, high)) for _ in range(n))


@st.composite
def distort(draw, shape: tuple[int, ...], p: float = 0.1) -> tuple[int, ...]:
    """``shape``, or (with probability ``p``) one dim added, dropped or resized: a wrong rank/size."""
    if draw(st.floats(0, 1)) >= p:
        return shape
    kind = draw(st.sampled_from(("add", "drop", "resize")))
    if kind == "add":
        return (*shape, draw(st.integers(0, 3)))
    if kind == "drop" or not shape:
        return shape[:-1]
    i = draw(st.integers(0, len(shape) - 1))
    return (*shape[:i], max(shape[i] + draw(st.sampled_from((-1, 1, 2))), 0), *shape[i + 1 :])


@st.composite
def maybe_list(draw, spec: T, p: float = 0.03):
    """The spec, or rarely a plain nested list (which torch refuses with TypeError)."""
    if draw(st.floats(0, 1)) < p:
        return spec.make().detach().tolist() if spec.dtype.is_floating_point else [1.0, 2.0]
    return spec


def _param(draw, shape, dtype, p_none=0.3):
    if draw(st.floats(0, 1)) < p_none:
        return None
    return draw(specs(draw(distort(shape, 0.1)), dtype if draw(st.floats(0, 1)) < 0.9 else None))


@st.composite
def activation_calls(draw) -> Call:
    op = draw(st.sampled_from(("relu", "leaky_relu", "gelu", "silu", "mish", "sigmoid", "tanh", "softplus", "dropout")))
    x = draw(maybe_list(draw(specs(draw(sizes(draw(st.integers(0, 4))))))))
    kwargs = {}
    if op == "leaky_relu":
        kwargs["negative_slope"] = draw(st.sampled_from((0.01, 0.0, -0.5, 2.0, 1e30)))
    elif op == "gelu":
        kwargs["approximate"] = draw(st.sampled_from(("none", "tanh", "tanh", "exact")))
    elif op == "softplus":
        kwargs["beta"] = draw(st.sampled_from((1.0, 2.0, 0.5, -1.0, 1e-3)))
        kwargs["threshold"] = draw(st.sampled_from((20.0, 1.0, 0.0, -5.0)))
    elif op == "dropout":
        # Deterministic settings only: training=False, or p in {0, 1}; p outside [0, 1] is an error.
        kwargs["p"] = draw(st.sampled_from((0.0, 1.0, 0.5, -0.1, 1.5)))
        kwargs["training"] = kwargs["p"] in (0.0, 1.0, -0.1, 1.5) and draw(st.booleans())
    return Call(op, (x,), kwargs)


@st.composite
def linear_calls(draw) -> Call:
    dtype = draw(dtypes())
    batch = draw(sizes(draw(st.integers(0, 2))))
    i, o = draw(sizes(2))
    x = draw(specs(draw(distort((*batch, i))), dtype))
    w = draw(specs(draw(distort((o, i))), dtype if draw(st.floats(0, 1)) < 0.9 else None))
    b = _param(draw, (o,), dtype) if len(w.shape) == 2 else None  # OPEN[10]: 1-D weight with a bias
    return Call("linear", (draw(maybe_list(x)), w, b))


@st.composite
def conv_calls(draw) -> Call:
    dtype = draw(dtypes(odd=0.1))
    groups = draw(st.sampled_from((1, 1, 2, 0)))
    n, h, w_ = draw(sizes(3, high=6))
    cg, og = draw(sizes(2, high=3))
    # Zero input channels: torch returns a tensor of 0 output channels, we the definition's f(b) with
    # O channels, a deliberate difference (README findings; test_conv_kernels pins ours).
    cg = max(cg, 1)
    kh, kw = draw(sizes(2, high=3))
    x = draw(specs(draw(distort((n, cg * max(groups, 1), h, w_))), dtype))
    if draw(st.floats(0, 1)) < 0.1:
        x = replace(x, shape=x.shape[1:])  # unbatched (C, H, W)
    w = draw(specs(draw(distort((og * max(groups, 1), cg, kh, kw))), dtype))
    b = _param(draw, (og * max(groups, 1),), dtype)
    kwargs = {
        "stride": draw(st.sampled_from((1, 2, (1, 2), 0, -1))),
        "padding": draw(st.sampled_from((0, 1, (0, 1), "same", "valid", -1))),
        "dilation": draw(st.sampled_from((1, 2, 0))),
        "groups": groups,
    }
    if 0 in x.shape and kwargs["dilation"] == 0:
        kwargs["dilation"] = 1  # OPEN[11]: torch returns an empty input before checking the dilation
    return Call("conv2d", (x, w, b), kwargs)


@st.composite
def pool_calls(draw) -> Call:
    op = draw(st.sampled_from(("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")))
    dtype = draw(dtypes(odd=0.1))
    shape = draw(sizes(draw(st.sampled_from((3, 4, 4))), low=1, high=6))  # OPEN[4]: other ranks, empty dims
    x = draw(maybe_list(draw(specs(shape, dtype))))
    if op == "adaptive_avg_pool2d":
        out = draw(st.sampled_from((1, 2, 3, (2, 3), (7, 1), (None, 2), -1)))  # OPEN[4]: output size 0
        return Call(op, (x, out))
    k = draw(st.sampled_from((1, 2, 3, (2, 1), 0, -1)))
    kwargs = {
        "stride": draw(st.sampled_from((None, 1, 2, (1, 2), 0, -1))),
        "padding": draw(st.sampled_from((0, 1, (1, 0), 2, -1))),
        "ceil_mode": draw(st.booleans()),
    }
    if op == "max_pool2d":
        kwargs["dilation"] = draw(st.sampled_from((1, 2, 0)))
        kwargs["return_indices"] = draw(st.booleans())
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(st.sampled_from((None, None, 3, 0, -2)))
    return Call(op, (x, k), kwargs)


EPS = st.sampled_from((1e-5, 1e-5, 0.0, 1e-3, -1.0, 1e30))


@st.composite
def norm_calls(draw) -> Call:
    op = draw(st.sampled_from(("layer_norm", "group_norm", "batch_norm")))
    dtype = draw(dtypes())
    shape = draw(sizes(draw(st.integers(1, 4)), low=1 if op == "batch_norm" else 0, high=5))  # OPEN[1]
    x = draw(specs(shape, dtype))
    if op == "group_norm" and x.layout == "expand":  # OPEN[2]
        x = replace(x, layout="contiguous")
    if op == "batch_norm" and not dtype.is_floating_point and x.layout != "contiguous":
        x = replace(x, layout="contiguous")  # OPEN[13]: torch's error for integer input depends on its layout
    x = draw(maybe_list(x))
    eps = draw(EPS)
    if op == "layer_norm":
        k = draw(st.integers(1, len(shape)))
        normalized = tuple(shape[len(shape) - k :])
        if draw(st.floats(0, 1)) < 0.1:
            normalized = draw(distort(normalized, 1.0))
        w, b = _param(draw, normalized, dtype), _param(draw, normalized, dtype)
        return Call(op, (x, normalized), {"weight": w, "bias": b, "eps": eps})
    c = shape[1] if len(shape) > 1 else 1
    w, b = _param(draw, (c,), dtype), _param(draw, (c,), dtype)
    if op == "group_norm":
        w, b = (None if p is None else replace(p, dtype=dtype) for p in (w, b))  # OPEN[3]
        if b is not None and w is None:  # OPEN[2]: torch's backward fails ("tensor does not have a device")
            w = replace(b, seed=b.seed + 1)
        groups = draw(st.sampled_from((1, c, 2, 0, -1)))
        return Call(op, (x, groups), {"weight": w, "bias": b, "eps": eps})
    training = draw(st.booleans())
    stat_dtype = dtype if draw(st.booleans()) or dtype not in (bf16, f16) else f32
    rm = _param(draw, (c,), stat_dtype, p_none=0.25 if training else 0.05)
    rv = _param(draw, (c,), stat_dtype, p_none=0.25 if training else 0.05)
    if rv is not None:
        rv = replace(rv, fill="positive", grad=False)  # a variance is positive
    if rm is not None:  # OPEN[6]: torch writes running stats through stride-0 views; we refuse
        rm = replace(rm, grad=False, layout="contiguous" if rm.layout == "expand" else rm.layout)
    momentum = draw(st.sampled_from((0.1, 0.0, 1.0, None)))
    kwargs = {"weight": w, "bias": b, "training": training, "momentum": momentum, "eps": eps}
    if momentum is None:
        del kwargs["momentum"]
    return Call(op, (x, rm, rv), kwargs)


@st.composite
def softmax_calls(draw) -> Call:
    op = draw(st.sampled_from(("softmax", "log_softmax")))
    shape = draw(sizes(draw(st.integers(0, 4))))
    x = draw(maybe_list(draw(specs(shape))))
    if isinstance(x, T) and (x.dtype == torch.bool or x.dtype.is_complex):
        x = replace(x, dtype=f32)  # OPEN[12]: bool input, and complex input with autograd (torch's checks differ)
    rank = max(len(shape), 1)
    dim = draw(st.integers(-rank, rank - 1) | st.sampled_from((rank, -rank - 1)))
    kwargs = {"dim": dim}
    if draw(st.floats(0, 1)) < 0.2:
        kwargs["dtype"] = draw(st.sampled_from((f64, f32, torch.int64)))
    return Call(op, (x,), kwargs)


REDUCTIONS = st.sampled_from(("mean", "sum", "none", "elementwise_mean", "average"))


@st.composite
def loss_calls(draw) -> Call:
    dtype = draw(dtypes(odd=0.1))
    if draw(st.booleans()):
        shape = draw(sizes(draw(st.integers(0, 4))))
        x = draw(specs(shape, dtype))
        t_shape = draw(distort(shape))
        t = draw(specs(t_shape, dtype if draw(st.floats(0, 1)) < 0.9 else None))
        t = replace(t, fill="normal" if t.fill in ("special", "wide") else t.fill)
        if dtype.is_floating_point and t.dtype.is_floating_point and torch.promote_types(dtype, t.dtype) != t.dtype:
            t = replace(t, dtype=dtype)  # DELIBERATE: torch computes in a lower-precision target's dtype
        if t.dtype in (bf16, f16):  # OPEN[8]: bfloat16 target gradients 1-2 ulps outside bce_tolerances
            t = replace(t, grad=False)
        kwargs = {"reduction": draw(REDUCTIONS)}
        for name in ("weight", "pos_weight"):
            if draw(st.booleans()):
                kwargs[name] = T(shape[len(shape) - draw(st.integers(0, len(shape))) :], dtype, "wide", 1)
        return Call("binary_cross_entropy_with_logits", (draw(maybe_list(x)), t), kwargs)
    if not dtype.is_floating_point:  # OPEN[9]: order of checks with non-float input and targets
        dtype = f32
    shape = draw(sizes(draw(st.integers(2, 4))))  # OPEN[7]: 1-D input, zero classes
    shape = (shape[0], max(shape[1], 1), *shape[2:])
    x = draw(specs(shape, dtype))
    c = shape[1] if len(shape) > 1 else shape[0]
    class_dim = 1 if len(shape) > 1 else 0
    kwargs = {"reduction": draw(REDUCTIONS), "label_smoothing": draw(st.sampled_from((0.0, 0.1, 1.0, -0.1, 1.5)))}
    if draw(st.booleans()):
        # Class probabilities: x's shape, floating.
        t = draw(specs(draw(distort(shape)), dtype))
        t = replace(t, fill="normal" if t.fill in ("special", "wide") else t.fill)
    else:
        t_shape = tuple(s for d, s in enumerate(shape) if d != class_dim)
        t_shape = draw(distort(t_shape))
        t = IndexTarget(t_shape, c, draw(st.integers(0, 2**16)), torch.int64)  # OPEN[5]: uint8 targets
        kwargs["ignore_index"] = draw(st.sampled_from((-100, 0, c + 5)))
    if draw(st.booleans()):
        # Gradients wrt weight with index targets: torch refuses them, we give them (documented in
        # cross_entropy's docstring), so they are asked for only with probability targets.
        weight_grad = isinstance(t, T) and not isinstance(t, IndexTarget) and draw(st.booleans())
        kwargs["weight"] = T(draw(distort((c,))), dtype, "wide", 2, grad=weight_grad)
    return Call("cross_entropy", (x, t), kwargs)


@dataclass(frozen=True)
class IndexTarget(T):
    """Class indices in [0, classes], the top value out of range (an error) now and then."""

    classes: int = 1
    seed_: int = 0
    index_dtype: torch.dtype = torch.int64

    def __init__(self, shape, classes, seed, index_dtype=torch.int64):
        object.__setattr__(self, "shape", tuple(shape))
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "seed_", seed)
        object.__setattr__(self, "index_dtype", index_dtype)
        object.__setattr__(self, "dtype", index_dtype)

    def make(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed_)
        high = self.classes + (1 if self.seed_ % 10 == 0 else 0)
        return torch.randint(0, max(high, 1), self.shape, generator=g).to(self.index_dtype)

    def __repr__(self) -> str:
        return f"IndexTarget({self.shape}, {self.classes}, {self.seed_}, {self.index_dtype})"


CALLS = {
    "activation": activation_calls(),
    "linear": linear_calls(),
    "conv2d": conv_calls(),
    "pooling": pool_calls(),
    "normalization": norm_calls(),
    "softmax": softmax_calls(),
    "loss": loss_calls(),
}
