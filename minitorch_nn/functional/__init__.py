"""Reference ops: readable autograd.Functions with hand-written backward passes.

Signatures mirror those of torch's functional API. Each op family lives in one file whose docstring
carries the math of the forward and backward pass; the same file name appears in
``minitorch_nn/nn``, ``tests`` and ``benchmarks``.

None of these call the torch op they reimplement; ``tests/test_reference_purity.py`` checks.
"""

from .activation import gelu, leaky_relu, mish, relu, sigmoid, silu, softplus, tanh
from .conv import conv2d
from .dropout import dropout
from .linear import linear
from .loss import binary_cross_entropy_with_logits, cross_entropy, log_softmax, softmax
from .normalization import batch_norm, group_norm, layer_norm
from .pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "conv2d",
    "cross_entropy",
    "dropout",
    "gelu",
    "group_norm",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "max_pool2d",
    "mish",
    "relu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
]
