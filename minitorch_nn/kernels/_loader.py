"""Loads ``minitorch_nn._C`` once, and remembers why not if it cannot."""

from __future__ import annotations

from pathlib import Path

_BUILD_ERROR = Path(__file__).resolve().parent.parent / "_C.build-error.txt"


def _load() -> tuple[bool, str | None]:
    try:
        from .. import _C  # noqa: F401  (loading the library registers the ops with torch)
    except ImportError as e:
        reason = f"minitorch_nn._C could not be imported ({e})"
        if _BUILD_ERROR.exists():
            reason += f"; the last build failed: {_BUILD_ERROR.read_text().strip()}"
        else:
            reason += (
                "; build it with `pip install --no-build-isolation -e .` (needs a C++ compiler, and torch "
                "installed first)"
            )
        return False, reason
    return True, None


AVAILABLE, UNAVAILABLE_REASON = _load()


def require() -> None:
    """Raises RuntimeError, saying why, if the compiled ops are unavailable."""
    if not AVAILABLE:
        raise RuntimeError(f"minitorch_nn's compiled kernels are unavailable: {UNAVAILABLE_REASON}")
