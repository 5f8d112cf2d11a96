r"""Swap a model's torch.nn layers for minitorch_nn's (and back), keeping every weight and setting.

``minitorch_nn.convert(model)`` walks the module tree and replaces each layer whose class has a
counterpart with an instance of the counterpart that holds **the same** ``Parameter`` and buffer
objects, the same hyperparameters, train/eval mode, hooks and extra attributes, on the same
device and in the same dtype. The converted model computes the same function, so its outputs,
gradients and training steps match the original's up to floating-point rounding (our reference
ops sum in a different order than torch's kernels).

Which classes have counterparts is not a hand-written list: it is every name exported by
:mod:`minitorch_nn.nn` that also exists in :mod:`torch.nn` as a different class, *and* whose
constructor signature (argument names, kinds and defaults) is the same, so that the original's
settings can be passed straight to the counterpart's constructor. A layer added to
``minitorch_nn.nn.__all__`` with torch's signature is picked up without touching this file.

How one layer is converted (``_convert_layer``):

1. Read the constructor arguments back from the layer: each argument of the signature is the
   attribute of the same name (``in_features``, ``eps``, ``padding``, ...); ``bias`` is
   ``layer.bias is not None``; ``device`` / ``dtype`` are those of its tensors. An argument
   that is not stored (torch's deprecated ``size_average``) keeps its default.
2. Build the counterpart with them. Construction initialises new weights; the random number
   generators are forked and restored around it, so converting does not change later draws.
3. Put the original's ``Parameter`` and buffer objects in place of the new ones. Every tensor
   the counterpart registers must be there under the same name (else the layer is left alone);
   tensors the user registered on top come along. With ``inplace=True``, an optimizer built on
   the original model keeps training the converted one.
4. Copy ``training``, the hook dictionaries, and any public attribute the counterpart lacks.

Exact classes only: a subclass of ``torch.nn.Linear`` may override ``forward``, so it is left
alone. Code that calls ``torch.nn.functional`` directly in a custom ``forward`` is not
changed either: only modules are swapped.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import nn as _ours

__all__ = ["ConversionReport", "Converted", "Counterparts", "convert", "counterparts"]

DIRECTIONS = ("minitorch_nn", "torch")

# Registered containers with no computation of their own: walked into, never reported.
_CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


class Counterparts(NamedTuple):
    """The class mapping in both directions, and the names excluded for a signature mismatch."""

    to_ours: dict[type, type]
    to_torch: dict[type, type]
    signature_mismatch: dict[str, str]  # name -> what differs


def _signature(cls: type) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]


def _describe(params: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(
        name if default is inspect.Parameter.empty else f"{name}={default!r}" for name, _, default in params
    )


def counterparts(ours: Any = None, theirs: Any = None) -> Counterparts:
    """Pair every class exported by ``ours`` (minitorch_nn.nn) with the same name in ``theirs`` (torch.nn).

    A pair counts only if both are Module classes, they are not the same class (the re-exported
    containers), and their constructors have the same signature.

    Example::

        >>> import torch
        >>> pairs = counterparts()
        >>> pairs.to_ours[torch.nn.Conv2d]
        <class 'minitorch_nn.nn.conv.Conv2d'>
        >>> torch.nn.Sequential in pairs.to_ours   # the same class in both namespaces
        False
    """
    ours = _ours if ours is None else ours
    theirs = torch.nn if theirs is None else theirs
    to_ours, to_torch, mismatch = {}, {}, {}
    for name in getattr(ours, "__all__", ()):
        mine, torch_cls = getattr(ours, name, None), getattr(theirs, name, None)
        if not all(isinstance(c, type) and issubclass(c, torch.nn.Module) for c in (mine, torch_cls)):
            continue
        if mine is torch_cls:
            continue
        a, b = _signature(mine), _signature(torch_cls)
        if a != b:
            first = next(i for i in range(len(a) + 1) if i >= min(len(a), len(b)) or a[i] != b[i])
            mismatch[name] = (
                f"constructor signature differs: minitorch_nn.nn has ({_describe(a[first:])}) "
                f"where torch.nn has ({_describe(b[first:])})"
            )
            continue
        to_ours[torch_cls] = mine
        to_torch[mine] = torch_cls
    return Counterparts(to_ours, to_torch, mismatch)


@dataclass
class ConversionReport:
    """What :func:`convert` did, layer by layer.

    Attributes:
        to: the target, ``'minitorch_nn'`` or ``'torch'``.
        converted: ``(path, from_class, to_class)`` for every replaced layer; ``path`` is the
            name in ``named_modules()`` (``''`` for the root).
        left_alone: ``(path, class, reason)`` for every layer of the source library (torch.nn,
            or minitorch_nn.nn going back) that was not replaced: no counterpart, a subclass,
            a constructor signature that differs, or state that does not match. Containers
            (Sequential, ModuleList, ModuleDict) and your own Module classes are walked into
            and not listed.
    """

    to: str
    converted: list[tuple[str, str, str]] = field(default_factory=list)
    left_alone: list[tuple[str, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"converted to {self.to}: {len(self.converted)} layer(s), left alone: {len(self.left_alone)}"]
        lines += [f"  {path or '<root>'}: {a} -> {b}" for path, a, b in self.converted]
        lines += [f"  left alone {path or '<root>'}: {cls} ({reason})" for path, cls, reason in self.left_alone]
        return "\n".join(lines)


class Converted(NamedTuple):
    """What :func:`convert` returns: the converted model and the :class:`ConversionReport`."""

    model: torch.nn.Module
    report: ConversionReport


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _tensors(module: torch.nn.Module) -> Iterator[Tensor]:
    yield from (t for t in module._parameters.values() if t is not None)
    yield from (t for t in module._buffers.values() if t is not None)


def _constructor_kwargs(layer: torch.nn.Module, target: type) -> dict[str, Any]:
    """The arguments that rebuild ``layer`` as ``target``, read back from ``layer``'s attributes."""
    tensors = list(_tensors(layer))
    floating = [t for t in tensors if t.is_floating_point()]
    kwargs = {}
    for p in inspect.signature(target.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == "device" and tensors:
            kwargs["device"] = tensors[0].device
        elif p.name == "dtype" and floating:
            kwargs["dtype"] = floating[0].dtype
        elif p.name == "bias" and "bias" in layer._parameters:
            kwargs["bias"] = layer._parameters["bias"] is not None
        elif p.name in layer.__dict__ or p.name in layer._parameters or p.name in layer._buffers:
            kwargs[p.name] = getattr(layer, p.name)
        elif p.default is p.empty:
            raise _CannotConvert(f"constructor argument {p.name!r} is not stored on the layer")
    return kwargs


class _CannotConvert(Exception):
    pass


@contextlib.contextmanager
def _rng_untouched(layer: torch.nn.Module):
    """Fork the CPU (and used CUDA devices') generators: construction's draws are undone."""
    cuda = sorted({t.device.index or 0 for t in _tensors(layer) if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        yield


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _pruned(layer: torch.nn.Module) -> list[str]:
    """Names of the tensors ``torch.nn.utils.prune`` recomputes on ``layer`` (a forward pre-hook each)."""
    from torch.nn.utils.prune import BasePruningMethod

    return [h._tensor_name for h in layer._forward_pre_hooks.values() if isinstance(h, BasePruningMethod)]


def _convert_layer(layer: torch.nn.Module, target: type) -> torch.nn.Module:
    """``layer`` rebuilt as ``target`` around the same parameter and buffer objects (see module docstring)."""
    if pruned := _pruned(layer):
        # Its parameter is `weight_orig`, and `weight` a tensor the pruning hook recomputes: the
        # counterpart has no place for either.
        raise _CannotConvert(
            f"pruned with torch.nn.utils.prune ({', '.join(map(repr, pruned))}); make the pruning permanent "
            f"with torch.nn.utils.prune.remove(layer, name) first and the layer converts"
        )
    kwargs = _constructor_kwargs(layer, target)
    with _rng_untouched(layer):
        new = target(**kwargs)
    for kind in ("_parameters", "_buffers"):
        mine, theirs = getattr(new, kind), getattr(layer, kind)
        # Every tensor the counterpart registers must be there, None where it is None; tensors
        # the user registered on top (e.g. a non-persistent buffer) come along.
        if not mine.keys() <= theirs.keys() or any((mine[k] is None) != (theirs[k] is None) for k in mine):
            got = {k: v is not None for k, v in mine.items()}
            want = {k: v is not None for k, v in theirs.items()}
            raise _CannotConvert(f"{kind[1:]} differ: the counterpart has {got}, the layer {want}")
        mine.update(theirs)  # the very same Parameter / buffer objects
    new._non_persistent_buffers_set = set(layer._non_persistent_buffers_set)
    new.training = layer.training
    for name in _HOOK_DICTS:
        if hasattr(layer, name):
            setattr(new, name, getattr(layer, name))
    new._is_full_backward_hook = getattr(layer, "_is_full_backward_hook", None)
    for name, value in layer.__dict__.items():  # attributes set on the layer by its user
        if not name.startswith("_") and name not in new.__dict__:
            new.__dict__[name] = value
    for name, child in layer._modules.items():
        new._modules[name] = child
    return new


def _why_not_deep_copyable(model: torch.nn.Module) -> str:
    """What in ``model`` stops ``copy.deepcopy``, and what to do about it (after deepcopy failed)."""
    for path, module in model.named_modules(remove_duplicate=True):
        where = f"layer {path!r} ({type(module).__name__})" if path else f"the model ({type(module).__name__})"
        if pruned := _pruned(module):
            name = pruned[0]
            return (
                f"{where} is pruned with torch.nn.utils.prune: its {name!r} is recomputed from "
                f"{name}_orig and {name}_mask, and torch cannot deep-copy such a computed (non-leaf) tensor. "
                f"Make the pruning permanent first with torch.nn.utils.prune.remove(layer, {name!r}) (the layer "
                f"then converts too), or pass inplace=True to convert the model itself, without a copy (a pruned "
                f"layer is then left alone, and listed in the report)"
            )
        # Each attribute on its own (children are visited in turn), to name the one that fails.
        own = {k: v for k, v in module.__dict__.items() if k not in ("_modules", "_parameters", "_buffers")}
        own |= {k: v for k, v in module._parameters.items() if v is not None}
        own |= {k: v for k, v in module._buffers.items() if v is not None}
        for name, value in own.items():
            try:
                copy.deepcopy(value)
            except Exception as e:
                return (
                    f"attribute {name!r} of {where}, a {type(value).__name__}, cannot be deep-copied "
                    f"({type(e).__name__}: {e}). Remove it or make it copyable (e.g. give its class a "
                    f"__deepcopy__), or pass inplace=True to convert the model itself, without a copy"
                )
    return "pass inplace=True to convert the model itself, without a copy"


def _deepcopy_or_explain(model: torch.nn.Module) -> torch.nn.Module:
    """``copy.deepcopy(model)``; if that fails, the same exception type, saying what failed and what to do."""
    try:
        return copy.deepcopy(model)
    except Exception as e:
        problem = _why_not_deep_copyable(model)
        message = f"convert(inplace=False) deep-copies the model first, and it cannot be copied: {problem}"
        try:
            error = type(e)(message)
        except Exception:
            error = RuntimeError(message)
        raise error from e


def _source_library(to: str) -> str:
    return "torch.nn" if to == "minitorch_nn" else "minitorch_nn.nn"


def _reportable(module: torch.nn.Module, mapping: dict[type, type], to: str) -> bool:
    """A module of the source library that computes something (not a container, not user code),
    or a subclass of a layer that has a counterpart."""
    cls = type(module)
    if cls in _CONTAINERS or cls is torch.nn.Module:
        return False
    if any(base in mapping for base in cls.__mro__[1:]):
        return True  # a subclass of a layer that has a counterpart (see _left_alone_reason)
    library = _source_library(to)
    return cls.__module__ == library or cls.__module__.startswith(library + ".")


def _left_alone_reason(module: torch.nn.Module, mapping: dict[type, type], pairs: Counterparts, to: str) -> str:
    cls = type(module)
    if cls.__name__ in pairs.signature_mismatch:
        return pairs.signature_mismatch[cls.__name__]
    for base in cls.__mro__[1:]:
        if base in mapping:
            return f"subclass of {_qualname(base)}: only exact classes are converted"
    other = "minitorch_nn.nn" if to == "minitorch_nn" else "torch.nn"
    return f"no counterpart in {other}"


def convert(model: torch.nn.Module, *, to: str = "minitorch_nn", inplace: bool = False) -> Converted:
    r"""Replace every layer of ``model`` that has a counterpart: torch.nn -> minitorch_nn.nn, or back.

    Args:
        model: any ``torch.nn.Module``; its tree is walked recursively.
        to: ``'minitorch_nn'`` (default: torch.nn layers become ours) or ``'torch'`` (ours become
            torch.nn's, e.g. to compare a model built from minitorch_nn with torch).
        inplace: ``False`` (default) converts a ``copy.deepcopy`` and leaves ``model`` untouched,
            so the two can be run side by side. ``True`` swaps layers inside ``model`` itself; the
            new layers hold the original ``Parameter`` objects, so an optimizer created before
            the conversion keeps working, and nothing needs to be copyable. Either way, use the
            returned model: if ``model`` is itself a layer with a counterpart, the root is replaced.

    Returns:
        ``Converted(model, report)``, a named tuple: the converted model and a
        :class:`ConversionReport` listing what was converted and what was left alone (layers
        without a counterpart still work: torch.nn and minitorch_nn layers mix freely).

    Raises:
        ValueError: ``to`` is not one of ``'minitorch_nn'``, ``'torch'``.
        TypeError: ``model`` is not a ``torch.nn.Module``.
        RuntimeError, TypeError, ...: with ``inplace=False``, a model that ``copy.deepcopy`` cannot
            copy gets the exception type deepcopy raised, with a message naming the layer and what
            stops the copy, and what to do; deepcopy's own error is its ``__cause__``. A model
            pruned with ``torch.nn.utils.prune`` (RuntimeError: its pruned tensor is computed, not
            a leaf): call ``prune.remove`` first, or pass ``inplace=True``. An attribute such as a
            lock or a generator object (TypeError): remove it, or pass ``inplace=True``.

    TorchScript: a converted model works with ``torch.jit.trace`` (the reference ops' autograd
    Functions are recorded as Python ops; same outputs), with ``TracerWarning``\s where an op's
    argument checks read tensor sizes: those checks, and the shapes they saw, are frozen into
    the trace, so trace again for other shapes. It does **not** work with ``torch.jit.script``:
    the reference ops are Python that TorchScript cannot compile (keyword-argument checks,
    ``Sequence[int]`` annotations, ``autograd.Function``), and it raises
    ``torch.jit.frontend.NotSupportedError`` or ``RuntimeError``, whichever construct it meets
    first (``RuntimeError`` too on a retry in the same process). Of our layers only ``Flatten``
    and ``Identity``, which call no reference op, script. To script, convert back with
    ``to='torch'``. (torch 2.13 deprecates
    both in favour of ``torch.compile`` / ``torch.export``.)

    Preserved: parameters and buffers (the same objects; so their values, ``requires_grad``,
    ``.grad``, device and dtype), persistent/non-persistent buffers, constructor hyperparameters
    (including ones changed after construction, e.g. ``bn.momentum = 0.01``), train/eval mode,
    hooks (the same hook dictionaries), public attributes you set on a layer, and sharing (a
    layer used twice becomes one converted layer used twice). Random state is left untouched.

    Example::

        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> ours, report = convert(model)
        >>> print(report)
        converted to minitorch_nn: 3 layer(s), left alone: 0
          0: torch.nn.modules.linear.Linear -> minitorch_nn.nn.linear.Linear
          1: torch.nn.modules.activation.ReLU -> minitorch_nn.nn.activation.ReLU
          2: torch.nn.modules.linear.Linear -> minitorch_nn.nn.linear.Linear
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(ours(x), model(x))
        True
        >>> back, _ = convert(ours, to="torch")
        >>> type(back[0]) is torch.nn.Linear
        True
    """
    if to not in DIRECTIONS:
        raise ValueError(f"to must be one of {DIRECTIONS}, got {to!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    pairs = counterparts()
    mapping = pairs.to_ours if to == "minitorch_nn" else pairs.to_torch
    report = ConversionReport(to)
    if not inplace:
        model = _deepcopy_or_explain(model)
    done: dict[int, torch.nn.Module] = {}  # id(original) -> replacement, so shared layers stay shared

    def visit(module: torch.nn.Module, path: str) -> torch.nn.Module:
        if id(module) in done:
            return done[id(module)]
        new = module
        target = mapping.get(type(module))
        if target is not None:
            try:
                new = _convert_layer(module, target)
                report.converted.append((path, _qualname(type(module)), _qualname(target)))
            except _CannotConvert as e:
                report.left_alone.append((path, _qualname(type(module)), str(e)))
        elif _reportable(module, mapping, to):
            report.left_alone.append((path, _qualname(type(module)), _left_alone_reason(module, mapping, pairs, to)))
        done[id(module)] = new
        for name, child in list(new._modules.items()):
            if child is not None:
                new._modules[name] = visit(child, f"{path}.{name}" if path else name)
        return new

    return Converted(visit(model, ""), report)
