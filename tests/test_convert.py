"""minitorch_nn.convert: torch.nn layers swapped for ours and back, with every weight and setting kept.

Numerical tolerances
--------------------
A converted model computes the same function as the original in a different summation order,
so the two differ by rounding only. For a network of Linear/Conv layers, eval-mode BatchNorm
(an affine map), average pooling and activations with |f(a)| <= |a| and |f'| <= 1 (ReLU, Tanh),
the forward error analysis of a matrix product (Higham §3.5) extends layer by layer: every
output is off by at most γ_K · S, where K is the sum of the layers' reduction lengths along the
network and S is the output of the *absolute network* (every weight, running mean and input
replaced by its absolute value, activations by the identity), which bounds the sum of |terms|
that formed each output. The backward pass is the transposed chain, so the same holds for the
gradients with the absolute network's gradient under |upstream gradient| as S and K doubled
plus the batch reduction of a weight gradient. ``compare.reduction_tol`` turns (K, S) into a
tolerance for the difference (both sides' errors). Max pooling is left out of these checks: its
gradient jumps to another pixel when rounding reorders a tie.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch.nn.utils import prune

import minitorch_nn
import minitorch_nn.nn as nn
from minitorch_nn import convert
from minitorch_nn.conversion import ConversionReport, counterparts
from minitorch_nn.models import FlexibleMLP, SmallCNN

from .compare import Tol, assert_same_as_torch, reduction_tol, upstream_gradient

TNN = torch.nn


def kitchen_sink() -> TNN.Module:
    """A torch model with one of (nearly) every layer that has a counterpart, non-default settings."""
    return TNN.Sequential(
        TNN.Conv2d(3, 8, 3, padding=1, padding_mode="reflect", bias=False),
        TNN.BatchNorm2d(8, momentum=None),
        TNN.LeakyReLU(0.2),
        TNN.Conv2d(8, 8, 3, stride=2, padding="valid", groups=4, dilation=1),
        TNN.GroupNorm(2, 8, eps=1e-3),
        TNN.GELU(approximate="tanh"),
        TNN.MaxPool2d(2, ceil_mode=True),
        TNN.AvgPool2d(1, count_include_pad=False),
        TNN.AdaptiveAvgPool2d((2, 1)),
        TNN.Flatten(),
        TNN.Linear(16, 12, bias=False),
        TNN.LayerNorm(12, elementwise_affine=True, bias=False),
        TNN.SiLU(),
        TNN.Dropout(0.25),
        TNN.Linear(12, 6),
        TNN.BatchNorm1d(6, affine=False, track_running_stats=False),
        TNN.Softplus(beta=2.0, threshold=10.0),
        TNN.Mish(),
        TNN.Tanh(),
        TNN.Sigmoid(),
        TNN.Identity(),
        TNN.ReLU(),
    )


def leaves(model: TNN.Module) -> dict[str, TNN.Module]:
    return {name: m for name, m in model.named_modules() if not m._modules}


# --- structure: classes, state, settings --------------------------------------------------------


def test_round_trip_gives_identical_state_dict_class_types_and_settings():
    torch.manual_seed(0)
    original = kitchen_sink()
    ours, report = convert(original)
    assert not report.left_alone, str(report)
    assert all(type(m).__module__.startswith("minitorch_nn.nn") for m in leaves(ours).values())
    back, report_back = convert(ours, to="torch")
    assert not report_back.left_alone
    assert len(report.converted) == len(report_back.converted) == len(leaves(original))
    for (name, a), b, c in zip(leaves(original).items(), leaves(ours).values(), leaves(back).values(), strict=True):
        assert type(c) is type(a), name
        assert b.extra_repr() == a.extra_repr() == c.extra_repr(), name  # the hyperparameters
    for state in (ours.state_dict(), back.state_dict()):
        assert list(state) == list(original.state_dict())
        for (k, a), b in zip(original.state_dict().items(), state.values(), strict=True):
            assert torch.equal(a, b), k
            assert a.dtype == b.dtype, k


def test_losses_and_softmax_are_converted_without_being_listed_anywhere():
    pairs = counterparts()
    for name in ("CrossEntropyLoss", "BCEWithLogitsLoss", "Softmax", "LogSoftmax"):
        assert pairs.to_ours[getattr(TNN, name)] is getattr(nn, name)
    loss = TNN.CrossEntropyLoss(weight=torch.rand(4), ignore_index=2, label_smoothing=0.1, reduction="sum")
    ours, _ = convert(loss)
    assert type(ours) is nn.CrossEntropyLoss
    assert (ours.ignore_index, ours.label_smoothing, ours.reduction) == (2, 0.1, "sum")
    assert torch.equal(ours.weight, loss.weight)


def test_a_new_export_with_torchs_signature_is_picked_up(monkeypatch):
    class Hardtanh(TNN.Module):  # a layer someone just added to minitorch_nn.nn
        def __init__(self, min_val=-1.0, max_val=1.0, inplace=False, min_value=None, max_value=None):
            super().__init__()
            self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    monkeypatch.setattr(nn, "Hardtanh", Hardtanh, raising=False)
    monkeypatch.setattr(nn, "__all__", [*nn.__all__, "Hardtanh"])
    model, _ = convert(TNN.Sequential(TNN.Hardtanh(-2.0, 3.0)))
    assert type(model[0]) is Hardtanh
    assert (model[0].min_val, model[0].max_val) == (-2.0, 3.0)


def test_a_counterpart_whose_constructor_signature_differs_is_not_used(monkeypatch):
    class Linear(TNN.Module):
        def __init__(self, in_features, out_features, use_bias=True):  # renamed argument
            super().__init__()

    monkeypatch.setattr(nn, "Linear", Linear)
    pairs = counterparts()
    assert TNN.Linear not in pairs.to_ours
    assert pairs.signature_mismatch["Linear"] == (
        "constructor signature differs: minitorch_nn.nn has (use_bias=True) "
        "where torch.nn has (bias=True, device=None, dtype=None)"
    )
    model, report = convert(TNN.Sequential(TNN.Linear(2, 2), TNN.ReLU()))
    assert type(model[0]) is TNN.Linear
    assert type(model[1]) is nn.ReLU
    [(path, cls, reason)] = report.left_alone
    assert path == "0"
    assert cls.endswith("Linear")
    assert "signature differs" in reason


def test_layers_without_counterpart_are_left_alone_and_reported():
    class MyLinear(TNN.Linear):  # may override forward: not converted
        pass

    class MyBlock(TNN.Module):  # user code: walked into, not reported
        def __init__(self):
            super().__init__()
            self.fc = TNN.Linear(3, 3)

        def forward(self, x):
            return self.fc(x)

    model = TNN.Sequential(TNN.Conv1d(1, 1, 1), MyLinear(3, 3), MyBlock(), TNN.GRU(3, 3))
    converted, report = convert(model)
    assert type(converted[0]) is TNN.Conv1d
    assert type(converted[1]) is MyLinear
    assert type(converted[3]) is TNN.GRU
    assert type(converted[2]) is MyBlock
    assert type(converted[2].fc) is nn.Linear
    reasons = {path: reason for path, _, reason in report.left_alone}
    assert reasons == {
        "0": "no counterpart in minitorch_nn.nn",
        "1": "subclass of torch.nn.modules.linear.Linear: only exact classes are converted",
        "3": "no counterpart in minitorch_nn.nn",
    }
    assert [path for path, _, _ in report.converted] == ["2.fc"]
    assert "left alone 0: torch.nn.modules.conv.Conv1d (no counterpart in minitorch_nn.nn)" in str(report)


def test_copy_by_default_leaves_the_original_untouched():
    original = TNN.Sequential(TNN.Linear(3, 3))
    converted, _ = convert(original)
    assert type(original[0]) is TNN.Linear
    assert converted[0].weight is not original[0].weight
    assert torch.equal(converted[0].weight, original[0].weight)


def test_inplace_keeps_the_parameter_objects_so_an_existing_optimizer_trains_the_converted_model():
    model = TNN.Sequential(TNN.Linear(3, 4), TNN.BatchNorm1d(4))
    weight, running_mean = model[0].weight, model[1].running_mean
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    converted, _ = convert(model, inplace=True)
    assert converted is model
    assert type(model[0]) is nn.Linear
    assert model[0].weight is weight
    assert model[1].running_mean is running_mean
    before = weight.detach().clone()
    model(torch.randn(5, 3)).square().sum().backward()
    optimizer.step()
    assert not torch.equal(weight, before)


def test_a_layer_as_the_root_is_replaced_and_returned():
    layer = TNN.Conv2d(1, 2, 3)
    converted, report = convert(layer, inplace=True)
    assert type(converted) is nn.Conv2d
    assert converted.weight is layer.weight
    assert report.converted[0][0] == ""


def test_train_and_eval_mode_dtype_and_requires_grad_are_preserved():
    model = TNN.Sequential(TNN.Linear(3, 3), TNN.Sequential(TNN.BatchNorm1d(3), TNN.Dropout())).double()
    model.eval()
    model[1][1].train()  # a mixed model: one Dropout still in training mode
    model[0].bias.requires_grad_(False)  # a frozen parameter
    converted, _ = convert(model)
    assert [m.training for m in converted.modules()] == [m.training for m in model.modules()]
    assert all(t.dtype == torch.float64 for t in converted.parameters())
    assert converted[1][0].num_batches_tracked.dtype == torch.long
    assert not converted[0].bias.requires_grad
    assert converted[0].weight.requires_grad


def test_settings_changed_after_construction_user_attributes_and_hooks_are_kept():
    bn = TNN.BatchNorm2d(4)
    bn.momentum = 0.01
    bn.note = "frozen stats"
    calls = []
    handle = bn.register_forward_hook(lambda m, args, out: calls.append(type(m).__name__))
    converted, _ = convert(TNN.Sequential(bn), inplace=True)
    ours = converted[0]
    assert (ours.momentum, ours.note) == (0.01, "frozen stats")
    ours(torch.randn(2, 4, 3, 3))
    assert calls == ["BatchNorm2d"]
    assert type(ours) is nn.BatchNorm2d
    handle.remove()  # the handle still reaches the hook, which moved with the layer
    ours(torch.randn(2, 4, 3, 3))
    assert calls == ["BatchNorm2d"]


def test_a_shared_layer_stays_shared():
    shared = TNN.Linear(3, 3)
    converted, report = convert(TNN.Sequential(shared, TNN.Tanh(), shared))
    assert converted[0] is converted[2]
    assert type(converted[0]) is nn.Linear
    assert len(report.converted) == 2


def test_converting_draws_no_random_numbers():
    model = SmallCNN()
    torch.manual_seed(123)
    convert(model, to="torch")
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))


def test_tensors_registered_on_top_of_a_layer_come_along_with_their_persistence():
    model = TNN.Sequential(TNN.BatchNorm1d(3))
    scratch = torch.zeros(3)
    model[0].register_buffer("scratch", scratch, persistent=False)
    converted, report = convert(model)
    assert not report.left_alone
    assert type(converted[0]) is nn.BatchNorm1d
    assert torch.equal(converted[0].scratch, scratch)
    assert "0.scratch" not in converted.state_dict()


def test_report_and_arguments():
    assert isinstance(convert(TNN.ReLU()).report, ConversionReport)
    with pytest.raises(ValueError, match="to must be one of"):
        convert(TNN.ReLU(), to="jax")
    with pytest.raises(TypeError, match=r"expects a torch\.nn\.Module"):
        convert(lambda x: x)
    assert minitorch_nn.convert is convert


def test_our_models_convert_to_torch_and_back_exactly():
    for model in (SmallCNN(3, 4, (4, 8, 8)), FlexibleMLP(5, [8, 8], 2, norm="layer", dropout=0.1)):
        theirs, report = convert(model, to="torch")
        assert not report.left_alone
        assert all(type(m).__module__.startswith("torch.nn") for m in leaves(theirs).values())
        again, _ = convert(theirs)
        assert [type(m) for m in again.modules()] == [type(m) for m in model.modules()]


# --- numerics: outputs, gradients, training -----------------------------------------------------

_IDENTITY_LIKE = (TNN.ReLU, TNN.Tanh, TNN.Dropout, TNN.Identity, nn.ReLU, nn.Tanh, nn.Dropout, nn.Identity)
_POINTWISE_ULPS = 4  # an activation's own rounding, in units of u (ours <= 2.6 eps: see compare.py)


def absolute_network(model: TNN.Module) -> TNN.Module:
    """|W| everywhere, running means −|μ|, activations -> identity: bounds Σ|terms| of every output."""
    twin = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for m in twin.modules():
            for p in m.parameters(recurse=False):
                p.abs_()
            if isinstance(m, TNN.modules.batchnorm._BatchNorm | nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.abs_().neg_()  # (|x| + |μ|)·|γ|/σ + |β| bounds the affine map's terms
    for m in twin.modules():
        for name, child in m._modules.items():
            if isinstance(child, _IDENTITY_LIKE):
                m._modules[name] = TNN.Identity()
    return twin


def reduction_lengths(model: TNN.Module, x: torch.Tensor) -> tuple[int, int]:
    """(K, largest batch reduction): summed reduction lengths of the layers along the network."""
    lengths, batch = [], [1]

    def hook(m, args, out):
        if isinstance(m, TNN.Conv2d | nn.Conv2d):
            lengths.append(m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] + 1)
            batch.append(out.shape[0] * out.shape[2] * out.shape[3])
        elif isinstance(m, TNN.Linear | nn.Linear):
            lengths.append(m.in_features + 1)
            batch.append(out.numel() // out.shape[-1])
        elif isinstance(m, TNN.AvgPool2d | nn.AvgPool2d | TNN.AdaptiveAvgPool2d | nn.AdaptiveAvgPool2d):
            lengths.append(args[0].shape[-1] * args[0].shape[-2] + 1)
        elif not m._modules:
            lengths.append(_POINTWISE_ULPS)  # BN's affine map in eval, activations

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(lengths), max(batch)


def network_tolerances(model: TNN.Module, x: torch.Tensor, upstream: torch.Tensor) -> dict[str, Tol]:
    """Per output / input / parameter, ``reduction_tol`` of (K, S) as the module docstring derives."""
    k, batch = reduction_lengths(model, x)
    twin = absolute_network(model)
    xa = x.detach().double().abs().requires_grad_()
    out = twin(xa)
    params = dict(twin.named_parameters())
    grads = torch.autograd.grad(out, [xa, *params.values()], upstream.double().abs())
    tol = {"output": reduction_tol(x.dtype, k, float(out.detach().max()))}
    for name, g in zip(["input", *params], grads, strict=True):
        tol[name] = reduction_tol(x.dtype, 2 * k + batch, float(g.max()))
    return tol


def bn_free_cnn() -> TNN.Module:
    return TNN.Sequential(
        TNN.Conv2d(3, 8, 3, padding=1),
        TNN.Tanh(),
        TNN.AvgPool2d(2),
        TNN.Flatten(),
        TNN.Linear(8 * 4 * 4, 16),
        TNN.ReLU(),
        TNN.Linear(16, 5),
    )


def cnn_with_batch_norm() -> TNN.Module:
    return TNN.Sequential(
        TNN.Conv2d(3, 8, 3, padding=1, bias=False),
        TNN.BatchNorm2d(8),
        TNN.ReLU(),
        TNN.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
        TNN.BatchNorm2d(8),
        TNN.Tanh(),
        TNN.AvgPool2d(2),
        TNN.Flatten(),
        TNN.Linear(8 * 2 * 2, 16),
        TNN.Dropout(0.5),
        TNN.ReLU(),
        TNN.Linear(16, 5),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("build", [bn_free_cnn, cnn_with_batch_norm])
def test_converted_model_gives_the_same_outputs_and_gradients_within_the_rounding_bound(build, dtype):
    torch.manual_seed(0)
    original = build().to(dtype)
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    with torch.no_grad():
        for _ in range(3):
            original(x * 2 + 1)  # non-trivial running statistics
    original.eval()
    ours, _ = convert(original)
    xg = x.clone().requires_grad_()
    with torch.no_grad():
        out_shape = original(x).shape
    tol = network_tolerances(original, x, upstream_gradient(out_shape, dtype))
    assert_same_as_torch(
        ours,
        original,
        {"input": xg},
        tol=tol,
        ours_params=dict(ours.named_parameters()),
        oracle_params=dict(original.named_parameters()),
    )


def test_a_few_sgd_steps_train_the_same():
    """Plain SGD, T steps, float64. Each step's gradients differ by at most G_t (the bound above);
    the parameters then differ by at most lr·Σ_t G_t·(1 + lr·‖H‖)^(T−t) <= lr·T·2^T·max G_t while
    training is stable (lr·‖H‖ <= 1). A loss differs by its logits' error (cross-entropy moves by
    at most 2·max|Δz| per sample) plus ‖∂L/∂θ‖₁ times the parameters' difference.
    """
    torch.manual_seed(0)
    theirs = bn_free_cnn().double()
    ours, _ = convert(theirs)
    loss_ours, _ = convert(TNN.CrossEntropyLoss())  # the loss is a layer too
    loss_theirs = TNN.CrossEntropyLoss()
    lr, steps = 0.1, 4
    opt_ours = torch.optim.SGD(ours.parameters(), lr=lr)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    worst_grad_tol, param_bound = 0.0, 0.0
    for t in range(steps):
        x = torch.randn(8, 3, 8, 8, dtype=torch.float64, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        logits = theirs(x)
        upstream = torch.autograd.grad(loss_theirs(logits, y), logits)[0]
        tol = network_tolerances(theirs, x, upstream)
        worst_grad_tol = max(worst_grad_tol, *(v.atol for k, v in tol.items() if k not in ("output", "input")))
        losses = []
        for model, loss_fn, opt in ((ours, loss_ours, opt_ours), (theirs, loss_theirs, opt_theirs)):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            losses.append(loss.item())
        grad_l1 = sum(float(p.grad.abs().sum()) for p in theirs.parameters())
        assert abs(losses[0] - losses[1]) <= 2 * tol["output"].atol + grad_l1 * param_bound, f"step {t}"
        opt_ours.step()
        opt_theirs.step()
        param_bound = lr * (t + 1) * 2 ** (t + 1) * worst_grad_tol
    assert param_bound < 1e-10  # the bound is float64-small: it would catch any real difference
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=param_bound, msg=name)


# --- models deepcopy cannot copy; TorchScript ---------------------------------------------------


def deepcopy_error(model: TNN.Module) -> Exception:
    """What ``copy.deepcopy(model)`` raises: the exception type convert() must keep."""
    with pytest.raises(Exception) as raw:  # noqa: PT011 (the test compares its type with convert's)
        copy.deepcopy(model)
    return raw.value


def test_a_pruned_model_gets_deepcopys_exception_type_with_the_layer_and_the_remedies():
    torch.manual_seed(0)
    model = TNN.Sequential(TNN.Linear(4, 3), TNN.ReLU(), TNN.Linear(3, 2))
    prune.l1_unstructured(model[2], "weight", amount=0.5)
    raw = deepcopy_error(model)
    assert type(raw) is RuntimeError  # torch: "Only Tensors created explicitly by the user (graph leaves) ..."
    with pytest.raises(RuntimeError) as error:
        convert(model)
    assert type(error.value) is RuntimeError
    assert type(error.value.__cause__) is RuntimeError
    assert str(error.value.__cause__) == str(raw)
    message = str(error.value)
    for needed in ("layer '2' (Linear)", "torch.nn.utils.prune", "prune.remove(layer, 'weight')", "inplace=True"):
        assert needed in message
    # Each remedy does what the message says. inplace=True: converted, the pruned layer left alone.
    x = torch.randn(5, 4)
    expected = model(x)
    converted, report = convert(model, inplace=True)
    assert (type(converted[0]), type(converted[2])) == (nn.Linear, TNN.Linear)
    [(path, _, reason)] = report.left_alone
    assert path == "2"
    assert "pruned with torch.nn.utils.prune ('weight')" in reason
    torch.testing.assert_close(converted(x), expected, rtol=0, atol=1e-6)  # 4 + 3 terms, |x·W| < 10: 1e-6 >> γ_7·10
    # prune.remove makes the pruning permanent: then the copy, and the layer, convert.
    prune.remove(model[2], "weight")
    ours, report = convert(model)
    assert not report.left_alone
    assert type(ours[2]) is nn.Linear
    assert int((ours[2].weight == 0).sum()) == 3  # half of the 6 weights, pruned for good


@pytest.mark.parametrize(
    ("make", "kind"),
    [(threading.Lock, "lock"), (lambda: (i for i in range(3)), "generator")],
    ids=["lock", "generator"],
)
def test_an_attribute_deepcopy_cannot_copy_is_named_with_deepcopys_exception_type(make, kind):
    model = TNN.Sequential(TNN.Linear(4, 3), TNN.Tanh())
    model[1].resource = make()
    raw = deepcopy_error(model)
    assert type(raw) is TypeError  # "cannot pickle '_thread.lock' object"
    with pytest.raises(TypeError) as error:
        convert(model)
    assert type(error.value) is TypeError
    assert error.value.__cause__ is not None
    assert str(error.value.__cause__) == str(raw)
    assert f"attribute 'resource' of layer '1' (Tanh), a {kind}, cannot be deep-copied" in str(error.value)
    assert "inplace=True" in str(error.value)
    converted, report = convert(model, inplace=True)  # no copy: the attribute moves with the layer
    assert type(converted[1]) is nn.Tanh
    assert converted[1].resource is model[1].resource
    assert not report.left_alone


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit:DeprecationWarning")
def test_a_converted_model_traces_and_the_trace_gives_the_same_outputs():
    torch.manual_seed(0)
    ours, _ = convert(cnn_with_batch_norm().eval())
    x = torch.randn(4, 3, 8, 8)
    traced = torch.jit.trace(ours, x)
    assert torch.equal(traced(x), ours(x))
    other = torch.randn(4, 3, 8, 8)  # new values, the traced shape: the same Python ops run
    assert torch.equal(traced(other), ours(other))


# What torch.jit.script raises on our layers: it compiles forward and every function it calls,
# and stops at the first Python construct TorchScript lacks: NotSupportedError for the argument
# checks' **kwargs, RuntimeError for a ``Sequence[int]`` annotation or a closed-over global, and
# RuntimeError ("Can't redefine method") on any later attempt at a class it failed on before in
# the same process. So which of the two a test sees depends on the order tests run in.
SCRIPT_ERRORS = (torch.jit.frontend.NotSupportedError, RuntimeError)
SCRIPTABLE = {"Flatten", "Identity"}  # no reference op: torch's own code, in effect


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("name", sorted(counterparts().to_torch[c].__name__ for c in counterparts().to_torch))
def test_torch_jit_script_refuses_each_converted_layer_but_flatten_and_identity(name):
    arguments = {
        "AdaptiveAvgPool2d": (2,),
        "AvgPool2d": (2,),
        "BatchNorm1d": (3,),
        "BatchNorm2d": (3,),
        "Conv2d": (3, 4, 3),
        "GroupNorm": (1, 3),
        "LayerNorm": (3,),
        "Linear": (3, 2),
        "MaxPool2d": (2,),
    }
    layer = getattr(nn, name)(*arguments.get(name, ()))
    if name in SCRIPTABLE:
        torch.jit.script(layer)
    else:
        with pytest.raises(SCRIPT_ERRORS):
            torch.jit.script(layer)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_a_converted_model_does_not_script_and_converted_back_it_does():
    torch.manual_seed(0)
    ours, _ = convert(cnn_with_batch_norm().eval())
    with pytest.raises(SCRIPT_ERRORS):
        torch.jit.script(ours)
    back, _ = convert(ours, to="torch")
    scripted = torch.jit.script(back)
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(scripted(x), back(x))
