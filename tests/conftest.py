"""Hypothesis profiles and shared fixtures.

Profiles (select with ``pytest --hypothesis-profile=NAME``):

* ``ci`` (the default): a fixed seed (``derandomize``) so a run is reproducible, and example
  counts sized so the whole suite finishes in a few minutes on a 2-core machine.
* ``thorough``: ten times the examples and a fresh random seed each run, for a local soak
  before touching an op's numerics.
* ``sanitize``: six examples a test, for the AddressSanitizer build (.ci/sanitize.sh --ci),
  where every call is many times slower.

Neither has a deadline: op timings vary far too much with the shapes drawn and the machine's
load for a per-example time limit to mean anything.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=400, **_COMMON)
# Under AddressSanitizer (.ci/sanitize.sh --ci): every test still runs, on a few examples.
settings.register_profile("sanitize", max_examples=6, derandomize=True, **_COMMON)
settings.load_profile("ci")

# Tests compare against torch on the CPU; keep torch's own default dtype explicit.
torch.set_default_dtype(torch.float32)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``scale`` (tests/test_scale.py: 18 GiB, minutes) run only when selected.

    ``pytest -m scale`` selects them; any other run reports them as skipped, with the command.
    """
    if "scale" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="past 2^31 elements (~18 GiB, minutes): pytest -m scale tests/test_scale.py")
    for item in items:
        if "scale" in item.keywords:
            item.add_marker(skip)
