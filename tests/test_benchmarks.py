"""The benchmark harness: the entry point writes its reports, and a wrong answer is never timed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import run
from benchmarks.harness import (
    Case,
    Result,
    Timer,
    autograd_setup,
    copy_bandwidth_gbps,
    flag_inconsistent,
    run_case,
    seeded_inputs,
)
from benchmarks.report import markdown, write

QUICK_CPU = ["--quick", "--device", "cpu"]


def test_entry_point_runs_each_family_in_its_own_process_and_writes_one_merged_report(tmp_path, capsys):
    assert run.main([*QUICK_CPU, "--families", "linear,dropout", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    impls = {(r["family"], r["impl"]) for r in data["results"]}
    assert impls == {(f, i) for f in ("linear", "dropout") for i in ("torch", "reference")}
    assert all(r["median_us"] > 0 and r["error"] is None for r in data["results"])
    assert all(r["gflops"] > 0 for r in data["results"] if r["family"] == "linear")
    # Each memory-bound row is a percentage of the floor, or flagged if it claims to beat it.
    assert all((r["pct_copy_bw"] or 0) > 0 or "floor" in r["flag"] for r in data["results"] if r["family"] == "dropout")
    assert "torch" in data["environment"]
    # Each child recorded its own process id: two families, two processes, neither this one.
    pids = data["processes"]
    assert set(pids) == {"linear", "dropout"}
    assert len(set(pids.values())) == 2
    assert os.getpid() not in pids.values()
    assert "each family ran in its own fresh process" in data["environment"]["processes"]
    # The limits each child measured for its own cases: dropout's floor and clone figure
    # (linear has no memory-bound rows) and, with the compiled probe, linear's FMA peak.
    assert list(data["memory_floor_gbps"]) == ["65536 x float32"]
    assert list(data["clone_gbps"]) == ["allocate + fault + copy (`x.clone()`), 65536 x float32"]
    report = (tmp_path / "report.md").read_text()
    assert "## linear" in report
    assert "## dropout" in report
    assert "65536 x float32:" in report
    assert "each family ran in its own fresh process" in report
    import minitorch_nn.kernels as K

    if K.AVAILABLE:
        assert data["fma_peak_gflops"]["float32"] > 0
        assert "**FMA peak, float32**" in report
    try:
        import matplotlib  # noqa: F401  (the examples extra; the plots need it)
    except ImportError:
        pass
    else:  # one chart per family, shown in the report
        assert (tmp_path / "linear.png").stat().st_size > 10_000
        assert "![linear](linear.png)" in (tmp_path / "report.md").read_text()
    assert "vs torch" in capsys.readouterr().out


def test_a_crashed_family_is_reported_failed_and_the_other_familys_rows_survive(tmp_path, capsys, monkeypatch):
    # The test-only hook: linear's child kills itself (SIGKILL) before writing its results.
    monkeypatch.setenv(run.TEST_KILL_FAMILY, "linear")
    assert run.main([*QUICK_CPU, "--families", "linear,dropout", "--out", str(tmp_path)]) == 1
    data = json.loads((tmp_path / "results.json").read_text())
    assert {r["family"] for r in data["results"]} == {"dropout"}
    assert all(r["median_us"] > 0 for r in data["results"])
    assert list(data["memory_floor_gbps"]) == ["65536 x float32"]
    assert list(data["failed"]) == ["linear"]
    assert "killed by SIGKILL (exit status -9)" in data["failed"]["linear"]
    assert list(data["processes"]) == ["dropout"]
    report = (tmp_path / "report.md").read_text()
    assert "## dropout" in report
    assert "## linear\n\n**Failed**: the process running linear was killed by SIGKILL" in report
    assert "linear: FAILED" in capsys.readouterr().err


def test_a_child_that_exits_1_with_its_results_is_merged_and_one_without_them_failed(monkeypatch):
    # Exit status 1 is also a child whose implementations failed validation: its results.json
    # says so row by row. Only a child that wrote none crashed.
    broken = Result("dropout", "dropout(p=0.1)", "8", "float32", "fwd", "reference", None, None, error="no")

    def child(writes_results: bool):
        def run_it(command, **kwargs):
            if writes_results:
                write(Path(command[command.index("--out") + 1]), {"pid": "1"}, {}, [broken], charts=False)
            return subprocess.CompletedProcess(command, 1)

        return run_it

    args = run.parse_args(QUICK_CPU)
    monkeypatch.setattr(run.subprocess, "run", child(writes_results=True))
    data = run.run_child(["dropout"], torch.device("cpu"), args)
    assert run.result_rows(data) == [broken]
    monkeypatch.setattr(run.subprocess, "run", child(writes_results=False))
    with pytest.raises(run.ChildFailed, match="running dropout exited with status 1 before writing its results"):
        run.run_child(["dropout"], torch.device("cpu"), args)


def test_a_limit_measured_by_several_families_is_reported_once_per_family():
    merged = run.merge_limits(
        {"dropout": {"64 x float32": 10.0, "8 x float32": 3.0}, "activation": {"64 x float32": 11.0}}
    )
    assert merged == {"64 x float32 (dropout)": 10.0, "8 x float32": 3.0, "64 x float32 (activation)": 11.0}


def test_in_process_runs_every_family_in_this_process(tmp_path):
    assert run.main([*QUICK_CPU, "--in-process", "--families", "dropout", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["processes"] == {}
    assert "pid" not in data["environment"]
    assert data["environment"]["processes"] == "every family in this one process (--in-process)"
    assert {r["family"] for r in data["results"]} == {"dropout"}


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


def copy_case(impls: dict) -> Case:
    n = 1 << 16
    return Case("activation", "copy", str(n), torch.float32, "fwd", impls, bytes_moved=8 * n, copy_elements=n)


def test_the_memory_floor_is_a_plausible_machine_figure():
    gbps = copy_bandwidth_gbps(Timer(torch.device("cpu"), min_run_time=0.05), 1 << 20, torch.float32)
    # Above 0, and below what any machine this runs on can copy (a few hundred GB/s per socket).
    assert 0 < gbps < 2000


def test_a_deliberately_slowed_implementation_shows_a_lower_percentage_of_the_floor():
    x = torch.randn(1 << 16)
    out = torch.empty_like(x)

    def slow():
        for _ in range(20):
            out.copy_(x)
        return out.neg_().neg_()

    case = copy_case({"torch": lambda: lambda: torch.neg(x), "slowed": lambda: lambda: slow().neg()})
    floor = {(1 << 16, torch.float32): 1000.0}  # GB/s: nothing here comes near it
    fast_row, slow_row = run_case(case, Timer(torch.device("cpu"), min_run_time=0.05), floor)
    assert 0 < slow_row.pct_copy_bw < fast_row.pct_copy_bw


def test_a_row_above_the_floor_is_flagged_not_printed():
    x = torch.randn(1 << 16)
    case = copy_case({"torch": lambda: lambda: torch.neg(x)})
    floor = {(1 << 16, torch.float32): 1e-6}  # an absurdly low floor: every row beats it
    (row,) = run_case(case, Timer(torch.device("cpu"), min_run_time=0.01), floor)
    assert row.pct_copy_bw is None
    assert "copy floor" in row.flag
    report = markdown({}, {}, [row])
    assert "FLAGGED" in report
    assert "Flagged (not printed as a percentage)" in report


def test_a_floor_measured_low_is_measured_again_after_the_cases_and_the_rows_recomputed():
    # A busy moment at the start gave a low floor (here: absurdly low): the row is flagged when
    # timed; measured again after the cases, the floor is the machine's, and the row gets its
    # percentage back instead of the flag.
    x = torch.randn(1 << 16)
    case = copy_case({"torch": lambda: lambda: torch.neg(x)})
    timer = Timer(torch.device("cpu"), min_run_time=0.01)
    key = (1 << 16, torch.float32)
    floor = {key: 1e-6}
    rows = run_case(case, timer, floor)
    assert "copy floor" in rows[0].flag
    run.remeasure_limits(timer, floor, {}, {}, [(case, rows)])
    assert floor[key] > 1.0  # GB/s: the copy measured after the cases
    assert rows[0].flag is None
    assert 0 < rows[0].pct_copy_bw == pytest.approx(100 * rows[0].gbps / floor[key])


def test_a_forward_slower_than_its_forward_and_backward_is_flagged():
    def row(mode, impl, ms):
        return Result("norm_act", "layer_norm+gelu", "8x4", "float32", mode, impl, ms * 1e3, None)

    rows = [
        row("fwd", "kernel", 182.0),  # cannot be: its forward+backward took 174 ms
        row("fwd+bwd", "kernel", 174.0),
        row("fwd", "torch", 64.0),  # consistent: left alone
        row("fwd+bwd", "torch", 166.0),
        row("fwd", "reference", 9.0),  # no forward+backward row to compare with
    ]
    flag_inconsistent(rows)
    assert [r.flag is not None for r in rows] == [True, False, False, False, False]
    assert "slower than this implementation's forward+backward" in rows[0].flag
    assert "Flagged" in markdown({}, {}, rows)


def test_a_backward_op_slower_than_its_forward_and_backward_is_flagged():
    def row(op, mode, impl, ms):
        return Result("norm_act", op, "8x4", "float32", mode, impl, ms * 1e3, None)

    rows = [
        row("layer_norm+gelu", "fwd+bwd", "kernel", 27.0),
        row("layer_norm+gelu backward op", "bwd", "kernel", 34.0),  # cannot be: the whole took 27 ms
        row("layer_norm+gelu", "fwd+bwd", "torch", 43.0),
        row("layer_norm+gelu backward op", "bwd", "torch", 15.0),  # consistent: left alone
        row("batch_norm+relu backward op", "bwd", "kernel", 99.0),  # no forward+backward case to compare with
    ]
    flag_inconsistent(rows)
    assert [r.flag is not None for r in rows] == [False, True, False, False, False]
    assert rows[1].flag.startswith("backward op (34.000 ms) slower")


def test_torch_baselines_are_also_timed_with_transparent_huge_pages_in_a_child(tmp_path):
    # The child must really run torch with THP_MEM_ALLOC_ENABLE=1 (torch_with_thp checks the
    # child's own record of its environment), and "vs torch" is then against the faster torch.
    assert run.main([*QUICK_CPU, "--families", "norm_act", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    thp_rows = [r for r in data["results"] if r["impl"] == "torch (THP)"]
    assert thp_rows
    assert all(r["median_us"] > 0 for r in thp_rows)
    assert "THP_MEM_ALLOC_ENABLE=1" in data["environment"]["torch baselines"]
    for thp in thp_rows:
        same_case = [r for r in data["results"] if r["op"] == thp["op"] and r["shape"] == thp["shape"]]
        same_case = [r for r in same_case if r["mode"] == thp["mode"]]
        shipped = next(r for r in same_case if r["impl"] == "torch")
        best = min(shipped["median_us"], thp["median_us"])
        for r in same_case:
            if r["impl"] != "torch" and r["median_us"]:
                assert r["speedup_vs_baseline"] == best / r["median_us"]


def test_the_gpu_conv_family_sets_every_cuda_rung_beside_cudnn_like_for_like():
    # Built (not run) on any machine: the cases are setups, nothing touches a device until timed.
    from benchmarks import conv

    flags = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32
    try:
        cases = conv.cases(torch.device("cuda"), quick=False)
        assert torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.allow_tf32  # float32 rows: full float32 on both sides
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = flags
    assert {c.shape.split("x")[0] for c in cases} == {"32", "128"}
    for c in cases:
        assert c.baseline == "torch"
        assert "torch" in c.impls
        ours = set(c.impls) - {"torch"}
        if c.op.startswith("conv2d+relu"):
            assert ours == {"ours, conv then relu", "ours, fused relu"}
        elif c.op.startswith("conv2d+bn+relu"):
            assert ours == {"ours, folded bn + fused relu"}
        elif c.dtype == torch.float32:
            assert "TF32 off" in c.op
            assert ours <= {"direct", "implicit"}
            assert "implicit" in ours
        else:
            assert c.dtype == torch.bfloat16
            assert "NHWC" in c.op
            assert "implicit" in ours
    assert any("mma" in c.impls for c in cases)


def test_the_layer_norm_cases_time_every_ladder_rung_beside_the_kernel():
    # Built (not run): rungs 1-3 next to "kernel" (rung 4) in every LayerNorm+act case, forward and
    # backward op, on a CPU and a GPU; rung 1 only on the shapes it finishes quickly.
    from benchmarks import norm_act

    for device in ("cpu", "cuda"):
        cases = [c for c in norm_act.cases(torch.device(device), quick=False) if c.op.startswith("layer_norm+gelu")]
        assert cases
        for c in cases:
            rows, hidden = (int(s) for s in c.shape.split("x"))
            rungs = [f"kernel rung {r}" for r in (1, 2, 3) if r > 1 or rows * hidden <= norm_act.RUNG1_MAX_ELEMENTS]
            ours = [name for name in c.impls if name.startswith("kernel")]
            assert ours == [*rungs, "kernel"], (c.op, c.shape, c.mode)


def test_the_cuda_tuning_sweep_enumerates_every_parameters_grid_default_first():
    # Built (not run) on any machine: the cases are setups, nothing touches a device until timed.
    from benchmarks import cuda_tuning

    cases = cuda_tuning.cases(torch.device("cuda"), quick=False)
    swept = {c.op.split(":")[0] for c in cases}
    assert swept == set(cuda_tuning.DEFAULTS)
    for sweep in cuda_tuning.sweeps(quick=False):
        values = cuda_tuning.grid(sweep)
        assert values[0] == cuda_tuning.DEFAULTS[sweep.param]
        assert len(values) == len(set(values)) >= 5
        mine = [c for c in cases if c.op.startswith(sweep.param + ":") and c.dtype == sweep.dtype]
        assert len({c.shape for c in mine}) >= 3
        for c in mine:
            names = [cuda_tuning.impl_name(sweep.param, v) for v in values]
            assert set(names) <= set(c.impls)
            assert c.baseline == names[0] == next(iter(c.impls))  # the default, validated first
            assert c.teardown is not None  # restores the defaults after the case
    # The quick grid: the default and one other value of every parameter.
    quick = cuda_tuning.cases(torch.device("cuda"), quick=True)
    assert {c.op.split(":")[0] for c in quick} == set(cuda_tuning.DEFAULTS)
    assert all(len(c.impls) == 2 for c in quick)


def test_the_cuda_tuning_sweep_is_skipped_with_its_reason_on_a_cpu(tmp_path, capsys):
    from benchmarks import cuda_tuning

    assert cuda_tuning.cases(torch.device("cpu"), quick=True) == []
    assert "needs a CUDA device" in cuda_tuning.skip_reason(torch.device("cpu"))
    if not torch.cuda.is_available():
        assert "torch sees none" in cuda_tuning.skip_reason(torch.device("cuda"))
    assert run.main([*QUICK_CPU, "--families", "cuda_tuning", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["results"] == []
    assert "needs a CUDA device" in data["skipped"]["cuda_tuning"]
    report = (tmp_path / "report.md").read_text()
    assert "## cuda_tuning" in report
    assert "**Skipped**: the CUDA tuning sweep needs a CUDA device" in report
    assert "cuda_tuning: skipped" in capsys.readouterr().err


def test_a_case_teardown_runs_after_its_timings_even_when_an_implementation_fails():
    calls = []

    def broken():
        raise RuntimeError("no")

    case = Case(
        "activation",
        "relu",
        "8",
        torch.float32,
        "fwd",
        {"torch": lambda: lambda: torch.relu(torch.ones(8)), "broken": broken},
        teardown=lambda: calls.append("teardown"),
    )
    rows = run_case(case, Timer(torch.device("cpu"), min_run_time=0.01), {})
    assert calls == ["teardown"]
    assert rows[1].error == "RuntimeError: no"


def test_the_cuda_tuning_summary_names_the_best_value_per_shape_and_per_parameter():
    from benchmarks import cuda_tuning

    def row(shape, value, us):
        impl = cuda_tuning.impl_name("ln_warp_row_max", value)
        op = "ln_warp_row_max: layer_norm+gelu forward op"
        return Result("cuda_tuning", op, shape, "bfloat16", "fwd", impl, us, None)

    rows = [row("8x256", 1024, 10.0), row("8x256", 256, 8.0), row("8x512", 1024, 10.0), row("8x512", 256, 12.0)]
    text = cuda_tuning.summary(rows)
    assert "| ln_warp_row_max: layer_norm+gelu forward op | 8x256 | 256 | 8.0 | 10.0 | 1.25x |" in text
    assert "| ln_warp_row_max: layer_norm+gelu forward op | 8x512 | 1024 | 10.0 | 10.0 | 1.00x |" in text
    assert "`ln_warp_row_max` (default 1024): best on 1 of 2 cases at" in text
