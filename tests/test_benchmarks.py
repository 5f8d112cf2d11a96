"""The benchmark harness: the entry point writes its reports, and a wrong answer is never timed."""

from __future__ import annotations

import json

import torch

from benchmarks import run
from benchmarks.harness import Case, Timer, autograd_setup, run_case, seeded_inputs


def test_entry_point_writes_markdown_and_json(tmp_path, capsys):
    assert run.main(["--quick", "--device", "cpu", "--families", "linear,dropout", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    impls = {(r["family"], r["impl"]) for r in data["results"]}
    assert impls == {(f, i) for f in ("linear", "dropout") for i in ("torch", "reference")}
    assert all(r["median_us"] > 0 and r["error"] is None for r in data["results"])
    assert all(r["gflops"] > 0 for r in data["results"] if r["family"] == "linear")
    assert all(r["pct_copy_bw"] > 0 for r in data["results"] if r["family"] == "dropout")
    assert "torch" in data["environment"]
    assert "## linear" in (tmp_path / "report.md").read_text()
    assert "vs torch" in capsys.readouterr().out


def test_an_implementation_with_a_wrong_answer_is_reported_not_timed():
    inputs = seeded_inputs(lambda: torch.randn(8, 8))
    case = Case(
        "activation",
        "relu",
        "8x8",
        torch.float32,
        "fwd",
        {
            "torch": autograd_setup(torch.relu, inputs, "fwd"),
            "wrong": autograd_setup(lambda x: torch.relu(x) + 1e-3, inputs, "fwd"),
        },
    )
    torch_row, wrong_row = run_case(case, Timer(torch.device("cpu"), min_run_time=0.01), {})
    assert torch_row.median_us > 0
    assert wrong_row.median_us is None
    assert "differs from the baseline" in wrong_row.error
