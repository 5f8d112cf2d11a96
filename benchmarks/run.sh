#!/usr/bin/env bash
# Set up a virtual environment (once) and run the benchmark suite on the best device present.
#
#   bash benchmarks/run.sh                 # set up .venv if needed, then the full suite
#   bash benchmarks/run.sh --quick         # any argument is passed to `python -m benchmarks`
#   bash benchmarks/run.sh --setup-only    # set up .venv and stop (CI uses this)
#
# The venv sees the system's packages, so a torch already installed there (a CUDA build, say)
# is used as is; without one, $MINITORCH_TORCH (default torch==2.13.0) is installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${MINITORCH_VENV:-.venv}
TORCH_SPEC=${MINITORCH_TORCH:-torch==2.13.0}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  { echo "minitorch_nn needs Python >= 3.10; $PYTHON is $("$PYTHON" --version 2>&1)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
py="$VENV/bin/python"
if ! "$py" -c 'import torch' 2>/dev/null; then
  say "installing $TORCH_SPEC"
  "$py" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC" numpy
fi
say "building minitorch_nn (C++ extension included) against torch $("$py" -c 'import torch; print(torch.__version__)'), with its test and example dependencies"
# No build isolation: the build must see the torch above instead of downloading another.
# ninja compiles the extension's files in parallel.
"$py" -m pip install --quiet --disable-pip-version-check "setuptools>=64" wheel ninja
"$py" -m pip install --quiet --disable-pip-version-check --no-build-isolation -e ".[test,examples]"
"$py" -c 'import minitorch_nn.kernels as K; print("compiled kernels:", "available" if K.AVAILABLE else K.UNAVAILABLE_REASON)' >&2

if [ "${1:-}" = "--setup-only" ]; then
  say "ready: $VENV"
  exit 0
fi
say "running the benchmark suite (python -m benchmarks $*)"
exec "$py" -m benchmarks "$@"
