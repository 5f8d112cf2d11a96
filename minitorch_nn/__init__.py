"""minitorch_nn: torch.nn building blocks reimplemented from scratch, to read and to measure.

* :mod:`minitorch_nn.functional` — reference ops with hand-written forward and backward passes.
* :mod:`minitorch_nn.nn` — torch.nn-compatible Modules built on them.
* :mod:`minitorch_nn.init` — Xavier / Kaiming / truncated-normal initialisation.
"""

from . import functional, init, nn

__version__ = "0.1.0"

__all__ = ["__version__", "functional", "init", "nn"]
