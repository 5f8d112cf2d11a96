r"""Train a SmallCNN on 8x8 handwritten digits, with minitorch_nn's layers and with torch.nn's.

Run it::

    python -m minitorch_nn.examples.digits            # 6 epochs: ~99% test accuracy in ~20 s on one core
    python -m minitorch_nn.examples.digits --quick    # 2 epochs, a smoke test
    python -m minitorch_nn.examples.digits --epochs 12 --seed 3 --out curves.png

It needs scikit-learn (for its bundled digits: 1,797 8x8 grayscale images, no download) and
matplotlib: ``pip install "minitorch_nn[examples]"``.

What it does
------------
1. Builds :class:`~minitorch_nn.models.SmallCNN` from minitorch_nn layers, and a torch.nn twin
   with ``minitorch_nn.convert(model, to="torch")``: the same initial weights, exactly.
2. Trains both with SGD (momentum 0.9) on the same batches in the same order, ours with
   :func:`minitorch_nn.functional.cross_entropy`, torch's with ``torch.nn.functional.cross_entropy``.
   A third run, the torch twin in float64, measures how much float32 rounding moves the curve.
3. Prints both runs' loss and test accuracy per epoch side by side, checks the two float32 loss
   curves step by step against the tolerance below, and saves a plot of both curves.

The tolerance, step by step
---------------------------
The two float32 runs compute the same function in a different order (our convolution is an
im2col matmul, torch's a oneDNN kernel), so every step carries different rounding, and the
weights drift apart by a few units of rounding per step, which training then carries along.
At step t, with ``L`` a batch's mean loss, the two runs' losses may differ by

    tol_t = 2 · D_t  +  2 · γ_B · L_t,        γ_B = B·u / (1 − B·u),  u = 2⁻²⁴ (float32)

* ``D_t = max_{s <= t} |L_s(torch, float32) − L_s(torch, float64)|``: how far float32 rounding
  has moved torch's own loss curve from the (nearly) exact float64 one by step t. Both float32
  runs are that exact run plus rounding drift of this size, so they can be twice it apart.
  It is a running maximum: the drift of step s is still in the weights at step t.
* ``2 · γ_B · L_t``: the batch's B per-sample losses are summed in different orders on the two
  sides; a sum of B positive terms is off by at most γ_B times their sum (Higham, *Accuracy
  and Stability of Numerical Algorithms*, §4.2), on each side. This covers step 0, where the
  weights are still identical and D is just float32's forward error.

A wrong gradient would not hide in this: a 1% error in one layer's weight gradient changes the
next step's loss by about ``lr · 1% · |g|²`` ~ 1e-4, far above the ~1e-6 that rounding gives.

Threads
-------
One by default (``--threads``). The batches are tiny (64 images of 8x8), so a second thread
buys little, and on a busy machine OpenMP threads that wait at each op's barrier for a
descheduled sibling make every step 10-40x slower.

Why the default activation is SiLU, not ReLU
--------------------------------------------
The check above assumes that a tiny change to the weights makes a tiny change to the next
gradient. SiLU (x · σ(x)) is smooth, so it does, and the curves stay within ~1e-6 for the
whole run. ReLU's derivative jumps from 0 to 1 at 0: a pre-activation that rounding puts on the
other side of 0 in one run switches that unit's gradient on, changing the weight update by an
amount of order ``lr`` rather than of order rounding. Among ~60,000 pre-activations per layer
per batch one lands within rounding of 0 every few dozen steps, and from then on the two
ReLU runs differ by ~1e-3 (both still train equally well). ``--activation relu`` shows this:
the step-by-step check is then reported, not enforced.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as TF
from torch import Tensor

from .. import convert
from .. import functional as F
from ..models import ACTIVATIONS, SmallCNN

EXTRAS = 'pip install "minitorch_nn[examples]"'
SMOOTH_ACTIVATIONS = ("silu", "gelu", "mish", "softplus", "tanh", "sigmoid")
"""Activations with a continuous derivative, for which the step-by-step check is enforced."""


def require_extras() -> None:
    """Exit with a clear message if scikit-learn or matplotlib is missing."""
    missing = [pip for module, pip in (("sklearn", "scikit-learn"), ("matplotlib", "matplotlib")) if not _has(module)]
    if missing:
        raise SystemExit(f"This example needs {' and '.join(missing)}. Install the examples extra:\n    {EXTRAS}")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- data -----------------------------------------------------------------------------------


def load_digits_split(seed: int, test_fraction: float = 0.2) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits as ``(N, 1, 8, 8)`` float32 in [0, 1], split stratified by class.

    Returns ``x_train, y_train, x_test, y_test``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # pixel values are 0..16
    y = torch.tensor(digits.target, dtype=torch.long)
    train, test = train_test_split(
        range(len(y)), test_size=test_fraction, random_state=seed, stratify=digits.target, shuffle=True
    )
    train, test = torch.tensor(train), torch.tensor(test)
    return x[train], y[train], x[test], y[test]


def batch_order(n: int, epochs: int, batch_size: int, seed: int) -> list[list[Tensor]]:
    """Each epoch's shuffled mini-batches of indices into the training set, drawn once for all runs."""
    g = torch.Generator().manual_seed(seed)
    return [list(torch.randperm(n, generator=g).split(batch_size)) for _ in range(epochs)]


# --- one training run -----------------------------------------------------------------------


@dataclass
class Run:
    """A model, its loss function and optimizer, and what it recorded."""

    name: str
    model: torch.nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    dtype: torch.dtype
    lr: float
    momentum: float
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.model.to(self.dtype)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum)

    def train_epoch(self, x: Tensor, y: Tensor, batches: Sequence[Tensor]) -> None:
        start = time.perf_counter()
        self.model.train()
        first = len(self.step_losses)
        for index in batches:
            loss = self.loss_fn(self.model(x[index].to(self.dtype)), y[index])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.step_losses.append(loss.item())
        self.epoch_losses.append(sum(self.step_losses[first:]) / (len(self.step_losses) - first))
        self.seconds += time.perf_counter() - start

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> None:
        self.model.eval()  # BatchNorm uses its running statistics
        predicted = self.model(x.to(self.dtype)).argmax(1)
        self.test_accuracy.append((predicted == y).double().mean().item())


# --- the comparison -------------------------------------------------------------------------


def tolerance(torch32: Sequence[float], torch64: Sequence[float], batch_sizes: Sequence[int]) -> Tensor:
    """``tol_t = 2·D_t + 2·γ_B·L_t`` per step; see the module docstring."""
    l32 = torch.tensor(torch32, dtype=torch.float64)
    drift = (l32 - torch.tensor(torch64, dtype=torch.float64)).abs().cummax(0).values  # D_t
    u = torch.finfo(torch.float32).eps / 2
    b = torch.tensor(batch_sizes, dtype=torch.float64)
    gamma = b * u / (1 - b * u)
    return 2 * drift + 2 * gamma * l32.abs()


@dataclass
class Result:
    """Both runs (and the float64 control), the per-step tolerance and the verdict."""

    ours: Run
    theirs: Run
    control: Run
    tol: Tensor
    difference: Tensor  # |L_ours − L_torch| per step
    smooth: bool

    @property
    def worst_ratio(self) -> float:
        """max over steps of |ΔL| / tol: below 1 means the curves agree to the tolerance."""
        return float((self.difference / self.tol).max())

    @property
    def agree(self) -> bool:
        return bool((self.difference <= self.tol).all())


def train(
    epochs: int = 6,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    widths: Sequence[int] = (16, 32),
    activation: str = "silu",
    log: Callable[[str], None] = print,
    conv_kernels: bool = False,
) -> Result:
    """Train ours, torch's twin and the float64 control epoch by epoch; ``log`` each epoch's row.

    With ``conv_kernels``, our model's convolutions run on the compiled conv2d kernels
    (:func:`minitorch_nn.kernels.use_conv_kernels`) instead of the Python reference.
    """
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    torch.manual_seed(seed)
    ours = SmallCNN(in_channels=1, num_classes=10, widths=widths, activation=activation)
    twin, report = convert(ours, to="torch")  # a copy: the same weights, in torch.nn layers
    if report.left_alone:
        raise RuntimeError(f"the torch twin is not all torch.nn:\n{report}")
    if conv_kernels:
        from ..kernels import require, use_conv_kernels

        require()
        use_conv_kernels(ours)
    control = copy.deepcopy(twin)  # .to(float64) inside Run
    batches = batch_order(len(y_train), epochs, batch_size, seed)
    settings = {"lr": lr, "momentum": momentum}
    ours_run = Run("minitorch_nn", ours, F.cross_entropy, torch.float32, **settings)
    torch_run = Run("torch.nn", twin, TF.cross_entropy, torch.float32, **settings)
    control_run = Run("torch.nn float64", control, TF.cross_entropy, torch.float64, **settings)
    runs = (ours_run, torch_run, control_run)

    n = sum(p.numel() for p in ours.parameters())
    log(
        f"SmallCNN(widths={tuple(widths)}, activation={activation!r}): {n:,} parameters; "
        f"{len(y_train)} training and {len(y_test)} test digits; batch {batch_size}, "
        f"SGD lr={lr} momentum={momentum}; {report.to} twin made by convert(): "
        f"{len(report.converted)} layers"
    )
    log(f"{'epoch':>5}  {'train loss (ours | torch)':>25}  {'test accuracy (ours | torch)':>28}  {'max |ΔL|/tol':>12}")
    sizes: list[int] = []
    for epoch, epoch_batches in enumerate(batches, 1):
        for run in runs:
            run.train_epoch(x_train, y_train, epoch_batches)
            run.evaluate(x_test, y_test)
        sizes += [len(b) for b in epoch_batches]
        tol = tolerance(torch_run.step_losses, control_run.step_losses, sizes)
        diff = (torch.tensor(ours_run.step_losses) - torch.tensor(torch_run.step_losses)).double().abs()
        log(
            f"{epoch:>5}  {ours_run.epoch_losses[-1]:>12.5f} | {torch_run.epoch_losses[-1]:<10.5f}  "
            f"{ours_run.test_accuracy[-1]:>14.2%} | {torch_run.test_accuracy[-1]:<11.2%}  "
            f"{float((diff / tol).max()):>12.3f}"
        )
    return Result(ours_run, torch_run, control_run, tol, diff, smooth=activation in SMOOTH_ACTIVATIONS)


def plot(result: Result, path: str) -> None:
    """Both loss curves per step (top) and their difference against the tolerance (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    steps = range(len(result.difference))
    top.plot(steps, result.ours.step_losses, label="minitorch_nn (float32)", linewidth=2)
    top.plot(steps, result.theirs.step_losses, "--", label="torch.nn (float32)", linewidth=1.5)
    top.set_yscale("log")
    top.set_ylabel("training loss per batch")
    top.set_title("SmallCNN on 8x8 digits: the same model, weights and batches")
    top.legend()
    bottom.plot(steps, result.difference.clamp_min(1e-12), ".", markersize=3, label="|ours − torch| (0 drawn at 1e-12)")
    bottom.plot(steps, result.tol, label="tolerance 2·D_t + 2·γ_B·L_t")
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("loss difference")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minitorch_nn.examples.digits",
        description="Train a SmallCNN on scikit-learn's 8x8 digits with minitorch_nn and with torch.nn, side by side.",
    )
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default: 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, split and batch order (default: 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default: 0.05)")
    parser.add_argument(
        "--activation",
        default="silu",
        choices=sorted(ACTIVATIONS),
        help="the CNN's activation (default: silu; see the module docstring for relu)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default: 1; see the module docstring)"
    )
    parser.add_argument(
        "--conv-kernels", action="store_true", help="run our convolutions on the compiled conv2d kernel ladder"
    )
    parser.add_argument("--quick", action="store_true", help="2 epochs: check that everything runs")
    parser.add_argument("--out", default="digits_loss.png", help="where to save the plot (default: ./digits_loss.png)")
    args = parser.parse_args(argv)
    require_extras()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    epochs = 2 if args.quick else args.epochs
    result = train(
        epochs, args.seed, args.batch_size, args.lr, activation=args.activation, conv_kernels=args.conv_kernels
    )
    ours, theirs = result.ours, result.theirs
    print(
        f"\nfinal test accuracy: minitorch_nn {ours.test_accuracy[-1]:.2%}, torch.nn {theirs.test_accuracy[-1]:.2%}\n"
        f"training time: minitorch_nn {ours.seconds:.1f} s, torch.nn {theirs.seconds:.1f} s, "
        f"float64 control {result.control.seconds:.1f} s (torch threads: {torch.get_num_threads()})"
    )
    steps = len(result.difference)
    print(
        f"loss curves over {steps} steps: max |ΔL| = {float(result.difference.max()):.2e}, "
        f"max |ΔL|/tol = {result.worst_ratio:.3f} -> "
        + ("agree to the tolerance" if result.agree else "EXCEED the tolerance")
    )
    failed = result.smooth and not result.agree
    if not result.smooth and not result.agree:
        print(f"({args.activation}'s derivative jumps at 0, so the curves part by ~lr; see the module docstring)")
    plot(result, args.out)
    print(f"plot saved to {args.out}; total {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
