"""Runnable examples. They need the optional extra: ``pip install "minitorch_nn[examples]"``.

* ``python -m minitorch_nn.examples.digits``: a :class:`~minitorch_nn.models.SmallCNN` trained on
  scikit-learn's bundled 8x8 digits, once with minitorch_nn's layers and once with torch.nn's,
  from the same initial weights and batch order, with the two loss curves compared step by step.
"""
