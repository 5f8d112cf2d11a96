"""The minitorch_nn benchmark suite; run it with ``python -m benchmarks`` (see run.py)."""
