"""Hypothesis profiles and shared fixtures.

Profiles (select with ``pytest --hypothesis-profile=NAME``):

* ``ci`` (the default): a fixed seed (``derandomize``) so a run is reproducible, and example
  counts sized so the whole suite finishes in a few minutes on a 2-core machine.
* ``thorough``: ten times the examples and a fresh random seed each run, for a local soak
  before touching an op's numerics.

Neither has a deadline: op timings vary far too much with the shapes drawn and the machine's
load for a per-example time limit to mean anything.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=400, **_COMMON)
settings.load_profile("ci")

# Tests compare against torch on the CPU; keep torch's own default dtype explicit.
torch.set_default_dtype(torch.float32)
