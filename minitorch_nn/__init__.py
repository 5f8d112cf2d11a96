"""minitorch_nn: torch.nn building blocks reimplemented from scratch, to read and to measure.

* :mod:`minitorch_nn.functional` — reference ops with hand-written forward and backward passes.
* :mod:`minitorch_nn.nn` — torch.nn-compatible Modules built on them.
* :mod:`minitorch_nn.init` — Xavier / Kaiming / truncated-normal initialisation.
* :mod:`minitorch_nn.models` — the tutorial's models (FlexibleMLP, ConvBlock, ResidualBlock,
  SmallCNN), built only from :mod:`minitorch_nn.nn` layers.
* :func:`minitorch_nn.convert` — swap a model's torch.nn layers for ours, or back
  (``convert(model, to="torch")``), keeping weights, buffers and settings; it returns the
  model and a report. It lives in :mod:`minitorch_nn.conversion`, so that the function and
  a module of the same name never shadow each other.
* ``python -m minitorch_nn.examples.digits`` — trains a SmallCNN on scikit-learn's 8x8 digits
  with our layers and with torch's, side by side (needs ``pip install "minitorch_nn[examples]"``).
"""

from . import conversion, functional, init, models, nn
from .conversion import convert

__version__ = "0.1.0"

__all__ = ["__version__", "conversion", "convert", "functional", "init", "models", "nn"]
