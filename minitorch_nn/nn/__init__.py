"""Modules with torch.nn's names, constructor arguments, parameters and ``state_dict`` keys.

Each module is a ``torch.nn.Module`` whose ``forward`` calls the reference op in
:mod:`minitorch_nn.functional`, so it mixes freely with torch.nn layers, containers and
optimizers. torch's containers and base classes are re-exported, so a whole model can be
written against this namespace.

A container must be a registered ``Module`` (``ModuleList``, not a Python ``list``):
assigning a Module as an attribute registers its parameters, a list hides them from
``parameters()``, ``state_dict()``, ``.to()`` and the optimizer.
"""

from torch.nn import Module, ModuleDict, ModuleList, Parameter, Sequential

from .activation import GELU, LeakyReLU, LogSoftmax, Mish, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "GELU",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "GroupNorm",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MaxPool2d",
    "Mish",
    "Module",
    "ModuleDict",
    "ModuleList",
    "Parameter",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
]
