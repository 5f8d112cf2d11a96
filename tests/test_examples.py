"""The digits example: a shortened run trains ours and torch's twin to the same curve."""

from __future__ import annotations

import pytest
import torch

from minitorch_nn.examples import digits

EPOCHS = 2  # 46 steps; about 5 s on one core


@pytest.fixture(scope="module")
def result():
    pytest.importorskip("sklearn")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the example does: tiny batches, and robust on a busy machine
    try:
        lines = []
        yield digits.train(epochs=EPOCHS, seed=0, log=lines.append), lines
    finally:
        torch.set_num_threads(threads)


def test_both_loss_curves_agree_step_by_step_to_the_stated_tolerance(result):
    res, _ = result
    assert len(res.difference) == len(res.tol) == EPOCHS * 23  # ceil(1437 / 64) batches per epoch
    assert res.smooth
    assert res.agree, f"max |ΔL|/tol = {res.worst_ratio}"
    # The tolerance is not vacuous: far below the loss itself.
    assert float((res.tol / torch.tensor(res.theirs.step_losses, dtype=torch.float64)).max()) < 1e-4


def test_the_first_step_sees_identical_weights_so_only_the_batch_sum_order_differs(result):
    res, _ = result
    u = torch.finfo(torch.float32).eps / 2
    first = res.theirs.step_losses[0]
    assert res.difference[0] <= 2 * 64 * u / (1 - 64 * u) * first + 2 * abs(first - res.control.step_losses[0])


def test_both_models_learn_and_reach_the_same_accuracy(result):
    res, lines = result
    assert res.ours.test_accuracy[-1] > 0.8  # chance is 0.1
    assert res.ours.test_accuracy == pytest.approx(res.theirs.test_accuracy, abs=1 / 360)  # at most one digit
    assert res.ours.step_losses[-1] < res.ours.step_losses[0] / 5
    assert len(lines) == 2 + EPOCHS  # a header, the column names, one row per epoch


def test_the_command_line_prints_the_comparison_and_saves_the_plot(result, monkeypatch, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    res, _ = result
    monkeypatch.setattr(digits, "train", lambda *args, **kwargs: res)  # the run itself is tested above
    out = tmp_path / "curves.png"
    assert digits.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "agree to the tolerance" in printed
    assert f"plot saved to {out}" in printed
    assert out.stat().st_size > 10_000


def test_missing_extras_give_the_install_command(monkeypatch):
    monkeypatch.setattr(digits, "_has", lambda module: module != "sklearn")
    with pytest.raises(
        SystemExit, match=r'scikit-learn\. Install the examples extra:\n    pip install "minitorch_nn\[examples\]"'
    ):
        digits.main(["--quick"])
