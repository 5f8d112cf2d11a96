r"""Softmax, log-softmax and the two classification losses, each with its backward written out.

Names: a score (logit) tensor x of shape (N, C, d1, ...), N samples, C classes, and any number of
extra positions d1, ... (a segmentation map: one class distribution per pixel). The class
dimension is dim 1, or dim 0 for an unbatched input (C,). Sums over c run over the C classes.

Softmax and log-softmax
-----------------------
    p_c    = softmax(x)_c = e^{x_c} / Σ_k e^{x_k}
    log p_c = x_c − lse(x),        lse(x) = log Σ_k e^{x_k}     (log-sum-exp)

Stability: e^{x} overflows float32 past x = 88.7, and a row of very negative scores underflows
to 0 / 0. Both are independent of a shift of the whole row (p is unchanged by x → x − m), so
with m = max_k x_k

    lse(x) = m + log Σ_k e^{x_k − m}

exponentiates only numbers <= 0, and the largest term is e^0 = 1, so the sum is in [1, C]
and its log is finite. Scores of ±1e4 give exact log-probabilities (0, −1e4, −2e4, ...).

Backward (upstream gradient dy, reduced over the class dimension):

    ∂p_j/∂x_i     = p_j (δ_ij − p_i)        ⇒  dx = p · (dy − Σ_c dy_c p_c)
    ∂log p_j/∂x_i = δ_ij − p_i              ⇒  dx = dy − p · Σ_c dy_c

Both save their *output* (p, or log p with p = e^{log p}), as torch does.

Rows torch treats specially, and so do we: a row that is all −inf has no maximum to shift by
(−inf − (−inf) is NaN), so its softmax is NaN; a row with a +inf entry is NaN too. A −inf entry in
an otherwise finite row is a masked class: p = 0, log p = −inf, and no gradient flows into it
through softmax (its p is 0).

Cross-entropy, as one fused step
--------------------------------
With a target distribution q over the classes (for every sample and position), the loss is

    ℓ = −Σ_c q_c log p_c = Σ_c q_c (lse(x) − x_c)

and its gradient, with Q = Σ_c q_c (1 for a probability distribution),

    ∂ℓ/∂x_i = Q·p_i − q_i          ("softmax minus target", when Q = 1)
    ∂ℓ/∂q_c = −log p_c

term by term: the lse term contributes Q·∂lse/∂x_i = Q·p_i; the −x_c term contributes −q_i.
Every option of torch's ``cross_entropy`` is a choice of q and of the divisor of the mean:

    class index y, no options       q = onehot(y)
    class weights w                 q_c = w_c · t_c
    label smoothing ε               t = (1 − ε)·onehot(y) + ε/C     (t itself if probabilities)
    ignore_index                    q = 0 for that sample: it contributes no loss, no gradient
    reduction 'mean'                class indices:   Σ ℓ / Σ_n w_{y_n}   over non-ignored n
                                    probabilities:   Σ ℓ / (number of samples and positions)

Writing the gradient out (instead of letting autograd go through log_softmax, gather and the
weights) is the classic fusion: one pass computes p, the gradient is p·Q − q, and nothing
overflows: p ∈ [0, 1] and log p comes from the shifted lse above.

Why a classifier's last layer has no activation: ``log(softmax(x))`` computed as written
underflows p to 0 for a score 104 below the row's maximum (float32) and returns −inf, then NaN
gradients; ``lse(x) − x_c`` is exact there. So a model outputs raw scores (logits) and the loss
applies softmax and log together; likewise ``binary_cross_entropy_with_logits`` fuses the sigmoid
into BCE. Apply softmax/sigmoid separately only to read off probabilities at inference.

Binary cross-entropy with logits
--------------------------------
With σ(x) = 1/(1 + e^{−x}), a target t ∈ [0, 1] and the weight of positives pw (``pos_weight``):

    ℓ = −[pw·t·log σ(x) + (1 − t)·log(1 − σ(x))]
      = pw·t·softplus(−x) + (1 − t)·softplus(x)

using −log σ(x) = softplus(−x) = log(1 + e^{−x}) and −log(1 − σ(x)) = −log σ(−x) = softplus(x).
softplus(z) = max(z, 0) + log1p(e^{−|z|}) never exponentiates a positive number (see ``_math``);
with pw = 1 the loss is the familiar max(x, 0) − x·t + log1p(e^{−|x|}). Derivatives, using
softplus' = σ:

    ∂ℓ/∂x  = (1 − t)·σ(x) − pw·t·σ(−x)     (= σ(x) − t when pw = 1: "sigmoid minus target")
    ∂ℓ/∂t  = pw·softplus(−x) − softplus(x)
    ∂ℓ/∂pw = t·softplus(−x)

and an elementwise ``weight`` multiplies ℓ (so ∂/∂weight = ℓ). torch refuses gradients for
``weight`` and ``pos_weight`` (and for class weights in the class-index cross-entropy); these
references give them, since they fall out of the same formulas.

The backward passes are written in differentiable tensor ops, so double backward works.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.autograd import Function

from . import _math
from ._common import check_floating, check_tensors, opmath

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "log_softmax", "softmax"]

_REDUCTIONS = ("none", "mean", "sum")


def _shifted(x: Tensor, dim: int) -> Tensor:
    """x − m with m the maximum along ``dim``: every entry <= 0, and e^0 = 1 in each row's sum.

    m is detached: p and log p do not depend on it (any shift gives the same result), so its
    gradient is exactly zero and need not be computed. A dimension of size 0 has no maximum,
    and the result is empty anyway.
    """
    if x.dim() and x.shape[dim] == 0:
        return x.clone()
    return x - x.amax(dim, keepdim=True).detach()


def _log_softmax(x: Tensor, dim: int) -> Tensor:
    """log p = (x − m) − log Σ e^{x − m}, subtracted in that order: exact for scores of ±1e4."""
    shifted = _shifted(x, dim)
    return shifted - torch.log(torch.exp(shifted).sum(dim, keepdim=True))


class LogSoftmaxFunction(Function):
    r"""log p = x − lse(x) along ``dim``; backward dx = dy − p · Σ dy (see the module docstring)."""

    @staticmethod
    def forward(ctx, input: Tensor, dim: int) -> Tensor:
        ctx.dim = dim
        y = _log_softmax(opmath(input), dim).to(input.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        g = opmath(dy)
        p = torch.exp(opmath(y))
        return (g - p * g.sum(ctx.dim, keepdim=True)).to(dy.dtype), None


class SoftmaxFunction(Function):
    r"""p = e^{x − m} / Σ e^{x − m} along ``dim``; backward dx = p · (dy − Σ dy·p)."""

    @staticmethod
    def forward(ctx, input: Tensor, dim: int) -> Tensor:
        ctx.dim = dim
        # e / Σe rather than exp(log p): the latter would turn log p's rounding error, up to
        # u·|log p|, into a relative error of p.
        e = torch.exp(_shifted(opmath(input), dim))
        y = (e / e.sum(dim, keepdim=True)).to(input.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        g, p = opmath(dy), opmath(y)
        return (p * (g - (g * p).sum(ctx.dim, keepdim=True))).to(dy.dtype), None


class SoftmaxCrossEntropyFunction(Function):
    r"""ℓ = Σ_c q_c (lse(x) − x_c) along ``dim``, for a (weighted) target distribution q.

    Returns ℓ with ``dim`` reduced away, in float32 for half-precision inputs (the caller reduces
    and rounds once). Backward (module docstring): dx = g·(p·Q − q) with Q = Σ_c q_c, and
    dq = −g·log p, where g is the upstream gradient of each ℓ.

    A class with q_c = 0 contributes nothing, even where its log p_c is −inf (a masked logit):
    0 · log 0 = 0, the limit of q log q as q → 0.
    """

    @staticmethod
    def forward(ctx, input: Tensor, q: Tensor, dim: int) -> Tensor:
        ctx.save_for_backward(input, q)
        ctx.dim = dim
        log_p = _log_softmax(opmath(input), dim)
        terms = torch.where(q == 0, torch.zeros_like(log_p), q * log_p)
        return -terms.sum(dim)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        input, q = ctx.saved_tensors
        g = g.unsqueeze(ctx.dim)
        # log p through our own Function, so a second derivative uses its hand-written backward.
        log_p = LogSoftmaxFunction.apply(opmath(input), ctx.dim)
        dx = dq = None
        if ctx.needs_input_grad[0]:
            p = torch.exp(log_p)
            dx = (g * (p * q.sum(ctx.dim, keepdim=True) - q)).to(input.dtype)
        if ctx.needs_input_grad[1]:
            dq = (-g * log_p).to(q.dtype)
        return dx, dq, None


class BCEWithLogitsFunction(Function):
    r"""ℓ = pw·t·softplus(−x) + (1 − t)·softplus(x), elementwise (module docstring).

    ``pos_weight`` may be None (pw = 1) or broadcast against x. Returns ℓ in float32 for
    half-precision inputs.
    """

    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, pos_weight: Tensor | None) -> Tensor:
        ctx.save_for_backward(input, target, pos_weight)
        x, t = opmath(input), opmath(target)
        pos = t * _math.softplus(-x)
        if pos_weight is not None:
            pos = opmath(pos_weight) * pos
        return pos + (1 - t) * _math.softplus(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        input, target, pos_weight = ctx.saved_tensors
        x, t = opmath(input), opmath(target)
        pw = 1 if pos_weight is None else opmath(pos_weight)
        dx = dt = dpw = None
        if ctx.needs_input_grad[0]:
            dx = (g * ((1 - t) * _math.sigmoid(x) - pw * t * _math.sigmoid(-x))).to(input.dtype)
        if ctx.needs_input_grad[1]:
            dt = (g * (pw * _math.softplus(-x) - _math.softplus(x))).to(target.dtype)
        if ctx.needs_input_grad[2]:
            dpw = (g * t * _math.softplus(-x)).sum_to_size(pos_weight.shape).to(pos_weight.dtype)
        return dx, dt, dpw


# --- softmax / log_softmax ------------------------------------------------------------------


def _softmax_dim(name: str, ndim: int, stacklevel: int) -> int:
    """torch's legacy choice when ``dim`` is omitted: 0 for 0-, 1- and 3-D inputs, else 1."""
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an argument.",
        stacklevel=stacklevel,
    )
    return 0 if ndim in (0, 1, 3) else 1


def _prepare(name: str, input: Tensor, dim: int | None, stacklevel: int, dtype: torch.dtype | None) -> tuple:
    check_tensors(name, input=input)
    if dim is None:
        dim = _softmax_dim(name, input.dim(), stacklevel)
    rank = max(input.dim(), 1)
    if not -rank <= dim < rank:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})")
    if dtype is not None:
        input = input.to(dtype)
    if input.numel() != 0:  # torch returns an empty input before looking at its dtype
        check_floating(input, name)
    return input, dim % rank


def log_softmax(
    input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None
) -> Tensor:
    r"""``x − log Σ exp(x)`` along ``dim``, with the max-shift that keeps it finite.

    See :class:`LogSoftmaxFunction` and the module docstring.

    Args:
        input: floating-point tensor of any shape ``(*)``.
        dim: the dimension that sums to one after ``exp``. Omitting it picks one as torch does,
            with the same deprecation warning.
        dtype: cast the input to this dtype first (e.g. to float64 for accuracy).

    Shape: ``(*)`` -> ``(*)``.

    Example::

        >>> import torch
        >>> log_softmax(torch.tensor([1e4, 0.0, -1e4]), dim=0)
        tensor([     0., -10000., -20000.])
    """
    input, dim = _prepare("log_softmax", input, dim, _stacklevel, dtype)
    return LogSoftmaxFunction.apply(input, dim)


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    r"""``exp(x) / Σ exp(x)`` along ``dim``: non-negative, sums to one.

    See :class:`SoftmaxFunction` and the module docstring.

    Args:
        input: floating-point tensor of any shape ``(*)``.
        dim: the dimension that sums to one. Omitting it picks one as torch does, with the same
            deprecation warning.
        dtype: cast the input to this dtype first.

    Shape: ``(*)`` -> ``(*)``.

    Example::

        >>> import torch
        >>> softmax(torch.tensor([1.0, 2.0, 3.0]), dim=0)
        tensor([0.0900, 0.2447, 0.6652])
    """
    input, dim = _prepare("softmax", input, dim, _stacklevel, dtype)
    return SoftmaxFunction.apply(input, dim)


# --- cross_entropy ----------------------------------------------------------------------------


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """torch's mapping of the deprecated ``size_average`` / ``reduce`` flags to ``reduction``."""
    warnings.warn("size_average and reduce args will be deprecated, please use reduction='sum' instead.", stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        return legacy_reduction(size_average, reduce)
    if reduction == "elementwise_mean":  # torch's old name for 'mean', still accepted
        warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.", stacklevel=3)
        return "mean"
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def _class_shape(input: Tensor, class_dim: int) -> list[int]:
    """Shape that views a (C,) vector to broadcast along ``input``'s class dimension."""
    shape = [1] * input.dim()
    shape[class_dim] = input.shape[class_dim]
    return shape


def _check_index_target(input: Tensor, target: Tensor, ignore_index: int) -> None:
    """The checks of torch's nll_loss, with its exception types and messages."""
    if input.dim() < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {input.dim()})")
    if input.dim() != 1 and input.shape[0] != (target.shape[0] if target.dim() else 0):
        batch = target.shape[0] if target.dim() else 0
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({batch}).")
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {target.dtype}")
    if input.dim() <= 2:
        if target.dim() > 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        if input.dim() == 1 and target.dim() == 1 and target.shape[0] != 1:
            raise RuntimeError(f"size mismatch (got input: {list(input.shape)}, target: {list(target.shape)})")
    elif target.shape[1:] != input.shape[2:]:
        expected = [input.shape[0], *input.shape[2:]]
        raise RuntimeError(f"Expected target size {expected}, got {list(target.shape)}")
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= input.shape[1 if input.dim() > 1 else 0]))
    if bad.any():
        first = target[bad].flatten()[0].item()
        raise IndexError(f"Target {first} is out of bounds.")


def _check_weight(weight: Tensor | None, classes: int, prefix: str) -> None:
    if weight is not None and (weight.dim() != 1 or weight.numel() != classes):
        raise RuntimeError(
            f"{prefix}weight tensor should be defined either for all {classes} classes or no classes but got "
            f"weight tensor of shape: {list(weight.shape)}"
        )


def _index_target_distribution(input: Tensor, target: Tensor, ignore_index: int, class_dim: int) -> tuple:
    """(onehot, valid): the class-index target as a one-hot distribution, 0 on ignored samples."""
    if input.dim() == 1 and target.dim() == 1:
        target = target.view(())  # (C,) with a one-element target: the unbatched case
    classes = input.shape[class_dim]
    valid = (target != ignore_index).unsqueeze(class_dim)
    index = target.long().unsqueeze(class_dim)
    onehot = (index == torch.arange(classes, device=input.device).view(_class_shape(input, class_dim))) & valid
    return onehot, valid


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Cross-entropy of softmax(input) against class indices or class probabilities.

    ``input`` holds unnormalized scores (logits); do not apply softmax first. The loss per
    sample is ``−Σ_c q_c · log softmax(input)_c`` (see :class:`SoftmaxCrossEntropyFunction` and
    the module docstring for q, the options and the backward).

    Args:
        input: scores ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``.
        target: class indices (int64 or uint8) of shape ``(N)``, ``()`` or ``(N, d1, ...)``,
            each in ``[0, C)`` or equal to ``ignore_index``; or class probabilities, a float
            tensor of ``input``'s shape.
        weight: ``(C,)`` per-class weights. With class indices and ``'mean'``, the sum is
            divided by the total weight of the non-ignored targets.
        size_average, reduce: deprecated; map to ``reduction`` as in torch.
        ignore_index: class-index targets with this value add no loss and no gradient, and do
            not count in the mean's divisor. Not allowed (>= 0) with probability targets.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        label_smoothing: ε in [0, 1]: the target becomes ``(1 − ε)·target + ε/C``.

    Differences from torch: gradients with respect to ``weight`` are available in every mode
    (torch gives them only with probability targets); a probability target of exactly 0 on a
    score of −inf contributes 0 (0 · log 0 = 0) where torch's value is NaN; when the divisor of
    ``'mean'`` is 0 (every target ignored, or their weights all 0) the loss is NaN, as torch's,
    with a zero gradient (torch gives NaN gradients when targets are present but weigh 0).

    Shape: ``'none'`` gives ``target``'s shape for class indices, ``input`` without the class
    dimension for probabilities; ``'mean'`` and ``'sum'`` give a scalar.

    Example::

        >>> import torch
        >>> cross_entropy(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]))
        tensor(0.1698)
    """
    check_tensors("cross_entropy", input=input, target=target, weight=weight)
    reduction = _reduction(size_average, reduce, reduction)
    check_floating(input, "log_softmax")
    class_dim = 0 if input.dim() == 1 else 1
    probabilities = input.shape == target.shape
    smoothing = label_smoothing if label_smoothing > 0 else 0.0  # torch ignores ε <= 0
    if smoothing > 1:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")

    if probabilities:
        if not target.is_floating_point():
            raise RuntimeError(f"Expected floating point type for target with class probabilities, got {target.dtype}")
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        classes = input.shape[class_dim]
        _check_weight(weight, classes, "cross_entropy: ")
        out_dtype = torch.result_type(input, target)
    else:
        _check_index_target(input, target, ignore_index)
        classes = input.shape[class_dim]
        _check_weight(weight, classes, "")
        if weight is not None and weight.dtype != input.dtype:
            raise RuntimeError(f"expected scalar type {input.dtype} but found {weight.dtype}")
        out_dtype = input.dtype
    # q is built in the precision the loss is computed in (float32 for half types).
    acc = torch.promote_types(out_dtype, torch.float32)
    w = None if weight is None else weight.view(_class_shape(input, class_dim)).to(acc)

    if probabilities:
        t = target.to(acc)
        if smoothing:
            t = t * (1 - smoothing) + smoothing / classes
        divisor = torch.tensor(input.numel() // classes if classes else 0)  # samples × positions
    else:
        onehot, valid = _index_target_distribution(input, target, ignore_index, class_dim)
        t = onehot.to(acc)
        if smoothing:
            t = t * (1 - smoothing) + valid.to(acc) * (smoothing / classes)
        # The mean's divisor: the total weight of the targets that count.
        divisor = onehot.sum() if w is None else (onehot * w).sum()

    q = t if w is None else t * w
    loss = SoftmaxCrossEntropyFunction.apply(input, q, class_dim)  # (N, d1, ...), in acc
    return _reduce(loss, reduction, divisor).to(out_dtype)


def _reduce(loss: Tensor, reduction: str, divisor: Tensor | None = None) -> Tensor:
    """'none', 'sum', or 'mean' = sum / divisor (default: the number of elements).

    A divisor of 0 gives NaN, as in torch, through a ``where`` so that its gradient is 0 rather
    than the 0 · ∞ = NaN that dividing by zero would send back.
    """
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    divisor = torch.tensor(loss.numel()) if divisor is None else divisor
    divisor = divisor.to(total.dtype)
    zero = divisor == 0
    return torch.where(zero, torch.full_like(total, float("nan")), total / torch.where(zero, 1, divisor))


# --- binary_cross_entropy_with_logits ------------------------------------------------------


def _check_broadcasts_to(t: Tensor | None, shape: torch.Size) -> None:
    """``t`` must broadcast to ``shape`` without enlarging it (torch's in-place multiply rule)."""
    if t is not None and torch.broadcast_shapes(t.shape, shape) != shape:
        raise RuntimeError(
            f"output with shape {list(shape)} doesn't match the broadcast shape "
            f"{list(torch.broadcast_shapes(t.shape, shape))}"
        )


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    r"""Binary cross-entropy of sigmoid(input) against ``target``, without forming the sigmoid.

    ``ℓ = pos_weight·t·softplus(−x) + (1 − t)·softplus(x)``, times ``weight``; stable for any x.
    See :class:`BCEWithLogitsFunction` and the module docstring.

    Args:
        input: scores (logits) of any shape ``(*)``.
        target: same shape, values in [0, 1] (soft labels allowed). Gets a gradient, as in torch.
        weight: rescales each element's loss; broadcasts to ``input``'s shape.
        size_average, reduce: deprecated; map to ``reduction`` as in torch.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        pos_weight: weight of the positive term, broadcast against ``input`` (typically ``(C,)``
            for C independent labels: ``#negatives / #positives`` balances a rare label).

    Shape: ``(*)`` -> ``(*)`` with ``'none'``, a scalar otherwise.

    Example::

        >>> import torch
        >>> binary_cross_entropy_with_logits(torch.tensor([1e4, -1e4]), torch.tensor([1.0, 0.0]))
        tensor(0.)
    """
    check_tensors("binary_cross_entropy_with_logits", input=input, target=target, weight=weight, pos_weight=pos_weight)
    reduction = _reduction(size_average, reduce, reduction)
    if target.shape != input.shape:
        raise ValueError(f"Target size ({target.shape}) must be the same as input size ({input.shape})")
    check_floating(input, "log_sigmoid_cpu")
    if not target.is_floating_point():
        raise RuntimeError(f"result type Float can't be cast to the desired output type {target.dtype}")
    _check_broadcasts_to(pos_weight, input.shape)
    _check_broadcasts_to(weight, input.shape)
    loss = BCEWithLogitsFunction.apply(input, target, pos_weight)
    if weight is not None:
        loss = loss * opmath(weight)
    return _reduce(loss, reduction).to(torch.result_type(input, target))
