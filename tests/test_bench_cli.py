"""``python -m fastneuron.bench``: progress lines, the load warning, the compile column,
the --quick plan and the kernel-only contestant; tiny sizes and the cheap contestants."""

import argparse
import json
import os
import time

import torch

from conftest import requires_triton
from fastneuron.bench import cli
from fastneuron.bench.contestants import BY_KEY, Contestant, _always
from fastneuron.bench.measure import SIZES, LoadWatch, Timing, measure, plan_runs
from fastneuron.bench.report import build_report, format_report, make_row

TINY = ["--contestants", "eager", "--members", "64", "--steps", "4", "--repeats", "3"]


def _loadavg(monkeypatch, *values):
    """os.getloadavg returns each of ``values`` in turn (1-minute figure), then the last."""
    calls = []

    def fake():
        calls.append(None)
        v = values[min(len(calls), len(values)) - 1]
        return (v, v, v)

    monkeypatch.setattr(os, "getloadavg", fake)
    return calls


def _run(tmp_path, capsys, *extra):
    out = tmp_path / "report.json"
    assert cli.main([*TINY, "--json", str(out), *extra]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err, json.loads(out.read_text())


# --- the load warning -----------------------------------------------------------------

def test_warns_when_loaded_at_start(monkeypatch, tmp_path, capsys):
    cores = len(os.sched_getaffinity(0))
    _loadavg(monkeypatch, cores + 7.0)
    out, err, report = _run(tmp_path, capsys)
    assert f"WARNING: load average {cores + 7:.2f} (1 min) is above the {cores} usable cores at start" in err
    assert "timings are unreliable" in err
    assert err.count("WARNING") == 1  # a machine that stays loaded warns once, not once per row
    assert f"WARNING: load average {cores + 7:.2f}" in out  # and the report says it too
    assert [w["where"] for w in report["load"]["warnings"]] == ["at start"]
    assert report["load"]["start"][0] == cores + 7


def test_warns_when_load_rises_during_a_run(monkeypatch, tmp_path, capsys):
    cores = len(os.sched_getaffinity(0))
    _loadavg(monkeypatch, 0.1, 0.1, cores + 1.5)
    out, err, report = _run(tmp_path, capsys)
    warnings = report["load"]["warnings"]
    assert len(warnings) == 1 and warnings[0]["where"].startswith("during [1/1] torch eager, M=64, T=4")
    assert "during [1/1] torch eager" in err and "during [1/1] torch eager" in out


def test_no_warning_on_an_idle_machine(monkeypatch, tmp_path, capsys):
    _loadavg(monkeypatch, 0.05)
    out, err, report = _run(tmp_path, capsys)
    assert "WARNING" not in err and "WARNING" not in out
    assert report["load"]["warnings"] == []
    assert "load average (1, 5, 15 min): at start 0.05/0.05/0.05" in out


def test_load_watch_warns_again_after_the_load_fell():
    said = []
    watch = LoadWatch(said.append)
    for load in (5, 5, 0.1, 5, 5):
        os_getloadavg, os.getloadavg = os.getloadavg, (lambda v=load: (v, v, v))
        try:
            watch.check("here")
        finally:
            os.getloadavg = os_getloadavg
    assert len(said) == 2 == len(watch.warnings)
    assert "unreliable" in said[0] and "unreliable" not in said[1]  # explained once


# --- progress -------------------------------------------------------------------------

def test_progress_lines_for_each_phase(monkeypatch, tmp_path, capsys):
    _loadavg(monkeypatch, 0.0)
    _, err, _ = _run(tmp_path, capsys)
    lines = [line.removeprefix("fastneuron.bench: ") for line in err.splitlines()]
    assert "[1/1] torch eager, M=64, T=4:" in lines
    assert "  warm-up ..." in lines  # eager compiles nothing: no "(includes the compile)"
    for phase in ("warm-up", "run 1/3", "run 2/3", "run 3/3"):
        assert any(line.startswith(f"  {phase}: ") and line.endswith(" s") for line in lines), phase
    assert any(line.startswith("[1/1] torch eager, M=64, T=4: median ") for line in lines)


def _sleeper(seconds, returns=None):
    def prepare(members, steps, device):
        def run():
            time.sleep(seconds)
            return returns

        return run

    return prepare


def test_still_running_lines_while_a_call_lasts():
    said, ticks = [], []
    contestant = Contestant("slow", "slow", True, _sleeper(0.3), _always, compiles=True)
    timing = measure(contestant, 4, 4, "cpu", 3, say=said.append, every=0.05, on_tick=lambda: ticks.append(1))
    assert "warm-up (includes the compile) ..." in said
    assert any(line.startswith("warm-up (includes the compile): still running, ") for line in said)
    assert any(line.startswith("run 2/3: still running, ") for line in said)
    assert [line for line in said if line.startswith("run 3/3: ")][-1].endswith(" s")
    assert len(ticks) >= 8  # the load is checked while a call runs, not only between them
    assert min(timing.run_s) >= 0.3


def test_a_run_that_times_itself_reports_its_own_seconds():
    contestant = Contestant("self", "self", False, _sleeper(0.01, returns=0.5), _always)
    timing = measure(contestant, 4, 4, "cpu", 3)
    assert timing.run_s == [0.5, 0.5, 0.5] and timing.warmup_s == 0.5


# --- the compile column ---------------------------------------------------------------

def test_compile_seconds_only_for_contestants_that_compile():
    timing = Timing(warmup_s=5.0, run_s=[1.0, 1.0, 1.0], peak_mem_bytes=2048, peak_mem_method="VmHWM")
    rows = [make_row(BY_KEY[key], 64, 4, timing, interpret=False) for key in ("eager", "compile", "jax")]
    assert [r["compile_s"] for r in rows] == [None, 4.0, 4.0]
    assert make_row(BY_KEY["triton"], 64, 4, timing, interpret=True)["compile_s"] is None  # interpreter
    args = argparse.Namespace(quick=True, repeats=3, cold_cache=False, interpret=False)
    text = format_report(build_report(rows, [], [], "cpu", args))
    table = {line.split()[0] + line.split()[1]: line.split() for line in text.splitlines()
             if line.startswith(("torch eager", "fastneuron compile", "jax scan")) and line.endswith("KiB")}
    # ... warm-up s, compile s, peak mem ("2 KiB")
    assert table["torcheager"][-4:] == ["5.00", "-", "2", "KiB"]
    assert table["fastneuroncompile"][-4:] == ["5.00", "4.00", "2", "KiB"]
    assert table["jaxscan"][-4:] == ["5.00", "4.00", "2", "KiB"]


def test_compiling_contestants():
    assert {c.key for c in BY_KEY.values() if c.compiles} == {"jax", "compile", "compile-adam", "compile-adamw",
                                                               "compile-rmsprop", "compile-noise", "compile-schedule",
                                                               "compile-log100", "compile-d16-normal",
                                                               "compile-d16-uniform", "triton", "triton-kernel"}


def test_optimizer_rows_at_the_headline_size_and_not_in_quick():
    """Issue 12: a compile row per optimizer beside SGD's headline; --quick leaves them
    out and says so."""
    plan, _ = plan_runs(list(BY_KEY.values()), "cpu", quick=False, interpret=False, members=None, steps=None,
                        on_skip=lambda s: None)
    sizes = {(c.key, m, t) for c, m, t in plan}
    for opt in ("adam", "adamw", "rmsprop", "noise", "schedule", "log100"):
        assert (f"compile-{opt}", 2**20, 3000) in sizes and ("compile", 2**20, 3000) in sizes
    _, skipped = plan_runs(list(BY_KEY.values()), "cpu", quick=True, interpret=False, members=None, steps=None,
                           on_skip=lambda s: None)
    reasons = {s["contestant"]: s["reason"] for s in skipped}
    assert reasons["fastneuron compile adam"] == "not part of --quick"
    assert reasons["fastneuron compile noise"] == "not part of --quick"


# --- --quick --------------------------------------------------------------------------

def test_quick_plan_is_small_and_keeps_the_headline():
    """--quick must finish within 60 s on 2 cores even with a cold compile (~40 s): one
    M per contestant, and compile at the M of the peers it is compared with."""
    plan, skipped = plan_runs(list(BY_KEY.values()), "cpu", quick=True, interpret=False, members=None, steps=None,
                              on_skip=lambda s: None)
    keys = [c.key for c, _, _ in plan]
    assert len(keys) == len(set(keys))  # one row each: a second M of compile recompiles
    sizes = {c.key: (m, t) for c, m, t in plan}
    assert "compile" in sizes and "eager" in sizes
    assert sizes["compile"][0] == sizes["eager"][0]
    assert all(m * t <= 2**17 * 400 for m, t in sizes.values())
    assert SIZES[("cpu", "quick")]["jax"] == SIZES[("cpu", "quick")]["compile"]


# --- GPU readiness --------------------------------------------------------------------

def test_jax_does_not_preallocate(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    _loadavg(monkeypatch, 0.0)
    _run(tmp_path, capsys)
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_triton_kernel_needs_cuda_without_interpret():
    contestant = BY_KEY["triton-kernel"]
    assert contestant.unavailable("cpu", False).startswith("needs CUDA")
    assert contestant.unavailable("cpu", True) is None
    _, skipped = plan_runs([contestant], "cpu", quick=True, interpret=False, members=None, steps=None,
                           on_skip=lambda s: None)
    assert skipped == [{"contestant": "triton kernel only", "reason": contestant.unavailable("cpu", False)}]


@requires_triton
def test_triton_kernel_runs_and_times_itself():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = BY_KEY["triton-kernel"].prepare(16, 8, device)
    seconds = run()
    assert isinstance(seconds, float) and seconds > 0
    assert run() > 0  # each run starts again from step 0
