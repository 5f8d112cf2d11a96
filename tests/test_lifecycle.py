"""Lifecycle: every module survives copying, pickling and saving, loads state as torch does, and trains flat.

For every module class exported by :mod:`minitorch_nn.nn` (and the kernel-backed modules of
:mod:`minitorch_nn.kernels` when the extension is built), from one table of cases (``CASES``):

* ``copy.deepcopy``, a ``pickle`` round trip, and ``torch.save`` of the ``state_dict`` then
  ``torch.load(weights_only=True)`` into a fresh instance each give a module whose outputs and
  gradients are **bitwise** equal to the original's (same ops on the same values, in one
  process: nothing may differ), in training and in eval mode, and whose tensors are its own.
* ``load_state_dict`` of a state dict with a key missing, an unexpected key, a wrong shape, or
  no version metadata behaves as the matching torch.nn module does: the same exception type and
  message (class name aside), the same ``missing_keys`` / ``unexpected_keys`` with
  ``strict=False``, and the same tensors loaded, left alone or filled in.
* A thousand SGD steps (MINITORCH_LIFECYCLE_STEPS for more) through one model made of every
  module leave the number of live tensors, of live Python objects and the heap memory in use
  flat (``test_training_keeps_memory_flat``);
  ``test_the_memory_check_catches_each_kind_of_leak`` proves each of the three checks fails on a
  deliberate leak of its kind.
"""

from __future__ import annotations

import collections
import copy
import ctypes
import gc
import io
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import minitorch_nn.kernels as K
import minitorch_nn.nn as nn

TNN = torch.nn


@dataclass(frozen=True)
class Case:
    """One module to put through its lifecycle.

    ``build`` makes the module (non-default settings where it has any); ``inputs`` makes its
    forward arguments; ``oracle`` makes the torch.nn module whose ``load_state_dict`` behaviour
    ours must reproduce (built with the same settings, so it has the same state keys).
    """

    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[], tuple]
    oracle: Callable[[], torch.nn.Module]


def x_(*shape: int) -> Callable[[], tuple]:
    return lambda: (torch.randn(*shape),)


def _with_both(cls_name: str, *args, **kwargs) -> tuple[Callable, Callable]:
    return (lambda: getattr(nn, cls_name)(*args, **kwargs), lambda: getattr(TNN, cls_name)(*args, **kwargs))


def case(cls_name: str, inputs: Callable[[], tuple], *args, **kwargs) -> Case:
    ours, theirs = _with_both(cls_name, *args, **kwargs)
    return Case(cls_name, ours, inputs, theirs)


def _ce_inputs() -> tuple:
    return torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 1])


CASES = [
    case("AdaptiveAvgPool2d", x_(2, 3, 5, 7), (2, 3)),
    case("AvgPool2d", x_(2, 3, 7, 7), 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    Case(
        "BCEWithLogitsLoss",
        lambda: nn.BCEWithLogitsLoss(weight=torch.rand(4), pos_weight=torch.rand(4) + 0.5),
        lambda: (torch.randn(3, 4), torch.rand(3, 4)),
        lambda: TNN.BCEWithLogitsLoss(weight=torch.rand(4), pos_weight=torch.rand(4) + 0.5),
    ),
    case("BatchNorm1d", x_(6, 4), 4, momentum=None),
    case("BatchNorm2d", x_(4, 3, 5, 5), 3, eps=1e-3, momentum=0.2),
    case("Conv2d", x_(2, 2, 6, 6), 2, 4, 3, padding=1, groups=2, padding_mode="reflect"),
    Case(
        "CrossEntropyLoss",
        lambda: nn.CrossEntropyLoss(weight=torch.rand(5) + 0.5, ignore_index=1, label_smoothing=0.1),
        _ce_inputs,
        lambda: TNN.CrossEntropyLoss(weight=torch.rand(5) + 0.5, ignore_index=1, label_smoothing=0.1),
    ),
    case("Dropout", x_(4, 8), 0.3),
    case("Flatten", x_(2, 3, 4, 5), 1, 2),
    case("GELU", x_(3, 5), approximate="tanh"),
    case("GroupNorm", x_(3, 4, 5), 2, 4, eps=1e-4),
    case("Identity", x_(3, 2), 7, unused="ignored"),
    case("LayerNorm", x_(2, 3, 4), (3, 4)),
    case("LeakyReLU", x_(3, 5), 0.2),
    case("Linear", x_(5, 4), 4, 3),
    case("LogSoftmax", x_(3, 5), dim=1),
    case("MaxPool2d", x_(2, 3, 7, 7), 3, stride=2, padding=1, ceil_mode=True),
    case("Mish", x_(3, 5)),
    case("ReLU", x_(3, 5)),
    case("SiLU", x_(3, 5)),
    case("Sigmoid", x_(3, 5)),
    case("Softmax", x_(3, 5), dim=0),
    case("Softplus", x_(3, 5), beta=2.0, threshold=5.0),
    case("Tanh", x_(3, 5)),
]
if K.AVAILABLE:  # the kernel-backed modules, against the torch.nn layer whose state they take
    CASES += [
        Case("LayerNormAct", lambda: K.LayerNormAct(8, activation="silu"), x_(3, 8), lambda: TNN.LayerNorm(8)),
        Case(
            "BatchNormAct2d",
            lambda: K.BatchNormAct2d(3, momentum=None, activation="gelu"),
            x_(4, 3, 5, 5),
            lambda: TNN.BatchNorm2d(3, momentum=None),
        ),
        Case(
            "Conv2dAct",
            lambda: K.Conv2dAct(2, 4, 3, padding=1, activation="relu"),
            x_(2, 2, 6, 6),
            lambda: TNN.Conv2d(2, 4, 3, padding=1),
        ),
    ]
BY_NAME = {c.name: c for c in CASES}


@pytest.fixture(autouse=True)
def one_thread():
    """Every tensor here is tiny: a second thread only adds contention (x30 on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CASE_NAMES = list(BY_NAME)


def exported_module_classes() -> set[str]:
    """Our own Module classes in ``minitorch_nn.nn.__all__`` (not torch's re-exported containers)."""
    return {
        name
        for name in nn.__all__
        if isinstance(cls := getattr(nn, name), type)
        and issubclass(cls, torch.nn.Module)
        and cls.__module__.startswith("minitorch_nn.")
    }


def test_every_exported_module_has_a_lifecycle_case():
    assert exported_module_classes() <= set(BY_NAME), "add a Case for each new module"


# --- running a module and comparing two runs ------------------------------------------------


def run(module: torch.nn.Module, inputs: tuple) -> list[torch.Tensor]:
    """Outputs and gradients (inputs', parameters') of one training-mode and one eval-mode call.

    The RNG is seeded before each call, so Dropout draws the same mask for a module and its copy.
    Training mode runs first: BatchNorm's update of its running statistics is part of what a
    copy must reproduce, and the eval call then uses the updated statistics.
    """
    results = []
    for training in (True, False):
        module.train(training)
        torch.manual_seed(0)
        args = [a.clone().requires_grad_(a.is_floating_point()) for a in inputs]
        out = module(*args)
        outs = out if isinstance(out, tuple) else (out,)
        wrt = [a for a in args if a.requires_grad] + list(module.parameters())
        upstream = [torch.linspace(-1, 1, o.numel()).reshape(o.shape) for o in outs]
        grads = torch.autograd.grad(outs, wrt, upstream, allow_unused=True)
        results += [o.detach() for o in outs] + [g for g in grads if g is not None]
    return results


def assert_same_runs(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"result {i} differs (max difference {(x - y).abs().max()})"


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def used(case: Case) -> torch.nn.Module:
    """The case's module with non-initial state: parameters moved off their init, statistics run."""
    module = case.build()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        module.train()
        for _ in range(2):
            module(*(a * 2 + 1 if a.is_floating_point() else a for a in case.inputs()))
    module.note = "an attribute set by its user"
    return module


def pickled(module: torch.nn.Module) -> torch.nn.Module:
    return pickle.loads(pickle.dumps(module))


def saved_and_loaded_into_a_fresh_instance(module: torch.nn.Module, build: Callable) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(12345)  # a fresh instance with other initial weights
    fresh = build()
    fresh.load_state_dict(state)
    fresh.train(module.training)
    return fresh


COPIES = {"deepcopy": lambda m, build: copy.deepcopy(m), "pickle": lambda m, build: pickled(m)}
COPIES["torch_save_state_dict"] = saved_and_loaded_into_a_fresh_instance


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_copy_computes_exactly_what_the_original_does(name, how):
    case = BY_NAME[name]
    torch.manual_seed(0)
    original = used(case)
    clone = COPIES[how](original, case.build)
    assert type(clone) is type(original)
    assert clone.extra_repr() == original.extra_repr()
    assert_same_state(clone, original)
    if how != "torch_save_state_dict":  # a state_dict carries tensors, not attributes
        assert clone.note == original.note
    # The copy owns its tensors: nothing is shared with the original.
    originals = {t.data_ptr() for t in original.state_dict().values() if t.numel()}
    assert not originals & {t.data_ptr() for t in clone.state_dict().values() if t.numel()}
    inputs = case.inputs()
    assert_same_runs(run(clone, inputs), run(original, inputs))
    assert_same_state(clone, original)  # the runs updated both alike (running statistics)


# --- load_state_dict: what torch reports, ours reports --------------------------------------


def state_variants(state: collections.OrderedDict) -> dict[str, dict]:
    """State dicts that are wrong in one way each, plus the complete one."""
    meta = getattr(state, "_metadata", None)

    def derived(items) -> collections.OrderedDict:
        d = collections.OrderedDict(items)
        if meta is not None:
            d._metadata = copy.deepcopy(meta)
        return d

    variants = {"complete": derived(state.items())}
    for key in state:
        variants[f"without {key}"] = derived((k, v) for k, v in state.items() if k != key)
        variants[f"{key} too long"] = derived(
            (k, torch.cat([v.flatten(), v.flatten()[:1]]) if k == key else v) for k, v in state.items()
        )
    variants["with unexpected keys"] = derived(
        [*state.items(), ("stray", torch.ones(2)), ("child.weight", torch.ones(1))]
    )
    if state:
        variants["one missing, one unexpected"] = derived([*list(state.items())[1:], ("stray", torch.ones(2))])
    for key in state:  # a plain dict: no version metadata (a state saved by an old torch, or rebuilt)
        variants[f"plain dict without {key}"] = {k: v for k, v in state.items() if k != key}
    return variants


def load(module: torch.nn.Module, state: dict, strict: bool):
    """``("ok", result)`` or ``("raised", type, message)`` of ``module.load_state_dict``."""
    try:
        result = module.load_state_dict(state, strict=strict)
    except Exception as e:
        return ("raised", type(e), str(e).replace(type(module).__name__, "<module>"))
    return ("ok", result)


def twins(case: Case, wrapped: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Ours and torch's module in the same, used state (BatchNorm has counted batches); with
    ``wrapped``, each inside a Sequential, so the keys carry a prefix (``0.weight``)."""
    theirs = case.oracle()
    torch.manual_seed(1)
    with torch.no_grad():
        theirs(*case.inputs())
    ours = case.build()
    ours.load_state_dict(theirs.state_dict())
    assert_same_state(ours, theirs)
    return (TNN.Sequential(ours), TNN.Sequential(theirs)) if wrapped else (ours, theirs)


def source_state(case: Case, wrapped: bool) -> collections.OrderedDict:
    """A state dict that differs from the twins' in every tensor (counted batches included)."""
    source = case.oracle()
    torch.manual_seed(2)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
        for _ in range(3):
            source(*(a * 3 - 1 if a.is_floating_point() else a for a in case.inputs()))
    return (TNN.Sequential(source) if wrapped else source).state_dict()


@pytest.mark.parametrize("wrapped", [False, True], ids=["alone", "in_sequential"])
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not_strict"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_load_state_dict_reports_and_loads_as_torch_does(name, strict, wrapped):
    case = BY_NAME[name]
    for label, state in state_variants(source_state(case, wrapped)).items():
        ours, theirs = twins(case, wrapped)
        expected = load(theirs, copy.copy(state), strict)
        got = load(ours, copy.copy(state), strict)
        assert got == expected, f"{label}: torch gave {expected}, we gave {got}"
        sa, sb = ours.state_dict(), theirs.state_dict()
        assert list(sa) == list(sb)
        for k in sa:  # what torch loaded, left alone or filled in, we did too
            assert torch.equal(sa[k], sb[k]), f"{label}: {k} is {sa[k]} where torch has {sb[k]}"


def test_state_dict_without_a_batch_counter_keeps_the_count_as_torch_does():
    """Regression: a BatchNorm state dict without ``num_batches_tracked`` and without version
    metadata (saved before torch 0.4.1, or rebuilt as a plain dict) must leave the layer's own
    batch count alone, as torch does; we used to reset it to 0, which restarts the cumulative
    average of ``momentum=None`` and made the next batch overwrite the running statistics."""
    for build in (lambda: nn.BatchNorm1d(2, momentum=None), lambda: TNN.BatchNorm1d(2, momentum=None)):
        bn = build()
        for _ in range(3):
            bn(torch.randn(5, 2))
        state = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
        bn.load_state_dict(state)
        assert bn.num_batches_tracked.item() == 3, type(bn).__module__
    fresh = nn.BatchNorm1d(2)  # a layer that never counted starts from 0, as in torch
    state = {
        "weight": torch.ones(2),
        "bias": torch.zeros(2),
        "running_mean": torch.zeros(2),
        "running_var": torch.ones(2),
    }
    fresh.load_state_dict(state)
    assert fresh.num_batches_tracked.item() == 0


# --- memory over many training steps ------------------------------------------------------


class EveryModule(torch.nn.Module):
    """One small classifier that runs every exported module (and the kernel modules, if built)."""

    def __init__(self) -> None:
        super().__init__()
        kernels = []
        if K.AVAILABLE:
            kernels = [K.Conv2dAct(8, 8, 1, activation="gelu"), K.BatchNormAct2d(8, activation="mish")]
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            *kernels,
            nn.Conv2d(8, 8, 3, padding=1, groups=2),
            nn.GroupNorm(2, 8),
            nn.SiLU(),
            nn.MaxPool2d(2),
            nn.AvgPool2d(3, stride=1, padding=1),
            nn.Mish(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(32, 16),
            nn.BatchNorm1d(16, momentum=None),
            nn.LeakyReLU(0.1),
            nn.Dropout(0.1),
            nn.LayerNorm(16),
            *([K.LayerNormAct(16, activation="silu")] if K.AVAILABLE else []),
            nn.GELU(),
            nn.Tanh(),
            nn.Softplus(),
            nn.Sigmoid(),
            nn.Identity(),
            nn.Linear(16, 5),
        )
        self.softmax, self.log_softmax = nn.Softmax(dim=1), nn.LogSoftmax(dim=1)
        self.cross_entropy, self.bce = nn.CrossEntropyLoss(label_smoothing=0.1), nn.BCEWithLogitsLoss()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(x))
        entropy = -(self.softmax(logits) * self.log_softmax(logits)).sum(1).mean()
        one_hot = (y[:, None] == torch.arange(5)).float()
        return self.cross_entropy(logits, y) + self.bce(logits, one_hot) + 0.01 * entropy


def test_the_memory_model_runs_every_exported_module():
    used_classes = {type(m).__name__ for m in EveryModule().modules()}
    assert exported_module_classes() <= used_classes


@dataclass
class Footprint:
    tensors: int  # live torch.Tensor objects
    objects: int  # live objects tracked by Python's garbage collector
    heap: int  # bytes malloc has handed out and not had back (see heap_in_use); 0 if unknown


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use() -> int | None:
    """Bytes allocated through malloc and not freed, all arenas (glibc's mallinfo2: uordblks +
    hblkhd); None where there is no mallinfo2 (not glibc, or glibc < 2.33).

    Every tensor storage (torch's CPU allocator calls posix_memalign), NumPy buffer and C++ object
    is in it. Resident memory would not do: a leak that fills pages freed by earlier tests does
    not grow it (that made an RSS-based check miss a 14 MiB leak after the rest of the suite).
    """
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def footprint() -> Footprint:
    gc.collect()
    objects = gc.get_objects()
    # type(), not isinstance(): isinstance reads __class__, which wakes deprecated lazy attributes.
    tensors = sum(issubclass(type(o), torch.Tensor) for o in objects)
    n = len(objects)
    del objects
    return Footprint(tensors, n, heap_in_use() or 0)


# Growth allowed between the end of the warm-up and the end of the run, each measured after a
# full garbage collection. In steady state every step allocates and frees the same things, so:
# * live tensors: none (parameters, gradients, buffers, momentum buffers and the last batch
#   are all there is at both points);
# * Python objects: 200, for caches that fill on the first use of a code path after the
#   warm-up (measured: 1, at 600 and at 3,000 steps); a leak of one object per step adds one per step;
# * heap in use: 256 KiB, for caches of torch's and Python's that fill late (measured: 6 KiB at
#   1,000 steps, 3 KiB at 3,000); it sees what Python cannot, e.g. autograd graphs or storages
#   held from C++.
OBJECT_ALLOWANCE = 200
HEAP_ALLOWANCE = 256 << 10
# The default run fits the test suite's time; set MINITORCH_LIFECYCLE_STEPS=5000 (or more) for a soak.
STEPS = int(os.environ.get("MINITORCH_LIFECYCLE_STEPS", 1000))
WARMUP = 100


def check_flat(before: Footprint, after: Footprint) -> None:
    assert after.tensors <= before.tensors, f"live tensors grew from {before.tensors} to {after.tensors}"
    assert after.objects - before.objects <= OBJECT_ALLOWANCE, (
        f"live Python objects grew by {after.objects - before.objects} (allowed {OBJECT_ALLOWANCE})"
    )
    growth = after.heap - before.heap
    assert growth <= HEAP_ALLOWANCE, (
        f"heap memory in use grew by {growth >> 10} KiB (allowed {HEAP_ALLOWANCE >> 10} KiB)"
    )


class TinyModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 5)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)).square().mean()


def train(model: torch.nn.Module, steps: int, warmup: int, leak: Callable | None = None) -> tuple:
    """``(footprint after warm-up, footprint at the end)`` of SGD with momentum on ``model``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        if step == warmup:
            before = footprint()
        x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)
        optimizer.zero_grad()
        loss = model.loss(x, y)
        loss.backward()
        optimizer.step()
        if leak is not None:
            leak(x, loss)
    after = footprint()
    assert torch.isfinite(loss), "training diverged"
    return before, after


def test_training_keeps_memory_flat():
    """STEPS forward+backward+SGD steps through every module keep memory flat.

    What it catches (``test_the_memory_check_catches_each_kind_of_leak`` proves each check can
    fail): any tensor kept per step (an output or a saved tensor stored in a list, a cache keyed
    by shape or id, autograd history kept alive by a module attribute); Python objects kept at
    more than OBJECT_ALLOWANCE per STEPS - WARMUP steps (ctx objects in a reference cycle, a
    growing dict or list); and memory held below Python's sight, such as autograd graphs or
    storages leaked in C++, of more than HEAP_ALLOWANCE / (STEPS - WARMUP) a step (291 bytes at the
    default 1,000 steps, which take ~10-15 s: ~10 ms a step is the reference ops' Python overhead).
    """
    torch.manual_seed(0)
    before, after = train(EveryModule(), STEPS, WARMUP)
    check_flat(before, after)


LEAKS = {
    # an output kept in a list: one more live tensor a step
    "live tensors": lambda kept: lambda x, loss: kept.append(loss.detach()),
    # a Python object kept a step (lists are always tracked by the collector; no tensor is kept)
    "live Python objects": lambda kept: lambda x, loss: kept.append([loss.item()]),
    # 3 KiB of storage a step (the batch), kept by a NumPy copy: neither a tensor nor a tracked object
    "heap memory": lambda kept: lambda x, loss: kept.append(x.numpy().copy()),
}


@pytest.mark.parametrize("kind", list(LEAKS))
def test_the_memory_check_catches_each_kind_of_leak(kind):
    """The same loop and checks, on a one-layer model (fast), with one deliberate leak each:
    300 measured steps leak 300 tensors, 300 objects (> OBJECT_ALLOWANCE) or 900 KiB of heap
    (> HEAP_ALLOWANCE)."""
    if kind == "heap memory" and heap_in_use() is None:
        pytest.skip("no mallinfo2 (glibc >= 2.33): heap memory is not measured here")
    kept = []
    before, after = train(TinyModel(), steps=400, warmup=100, leak=LEAKS[kind](kept))
    with pytest.raises(AssertionError, match=kind):
        check_flat(before, after)
