"""``threads=`` (CLI ``--threads``) and the busy-machine warning (issue 22, item 5):
torch's intra-op threads for one run, put back afterwards, never a change of bits; one
warning when other work holds the cores the threads need."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import fastneuron as fn
from fastneuron import api, engine, machine
from fastneuron.__main__ import main as cli_main


@pytest.fixture
def threads_as_they_were():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(engine, "_warned_busy", [False])
    monkeypatch.setattr(engine, "BUSY_WARNING_WORK", 64 * 4)  # _busy_run's work


@pytest.mark.parametrize("bad, says", [(0, "threads must be >= 1, got 0"), (-2, "threads must be >= 1"),
                                       (1.0, "threads must be an integer"), (True, "threads must be an integer"),
                                       ("2", "threads must be an integer"), (10**6, "threads must be <= 1024")])
def test_threads_is_validated(bad, says):
    with pytest.raises(ValueError, match=says):
        fn.train(range(4), 0.01, 4, backend="eager", threads=bad)


def test_cli_threads_is_validated(capsys):
    assert cli_main(["train", "--seeds", "0:4", "--steps", "4", "--backend", "eager", "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["eager", "compile"])
def test_threads_change_no_bits_and_are_put_back(backend, threads_as_they_were, fresh_warning, monkeypatch):
    monkeypatch.setattr(machine, "running_elsewhere", lambda: 0)
    torch.set_num_threads(2)
    seen = []
    real_run = engine.run

    def run(spec, **kw):
        seen.append(torch.get_num_threads())
        return real_run(spec, **kw)

    monkeypatch.setattr(api, "run", run)
    kw = dict(seeds=range(3000), lrs=[0.01, 0.05, 0.5] * 1000, steps=48, backend=backend, progress=False)
    one = fn.train(**kw, threads=1)
    assert torch.get_num_threads() == 2
    two = fn.train(**kw, threads=2)
    default = fn.train(**kw)
    assert seen == [1, 2, 2] and torch.get_num_threads() == 2
    assert (one.diverged_at >= 0).any() and (one.diverged_at < 0).any()  # lr 0.5 diverges, 0.01 does not
    for r in (two, default):
        assert torch.equal(one.diverged_at, r.diverged_at)
        for name in ("weight", "bias"):  # the bits (NaN included)
            assert torch.equal(getattr(one, name).view(torch.int32), getattr(r, name).view(torch.int32)), name
    assert "threads" not in one.settings  # how it ran, not what it computed: a resume may change it


def test_threads_are_put_back_after_a_failed_run(threads_as_they_were, monkeypatch):
    torch.set_num_threads(2)

    def fail(spec, **kw):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "run", fail)
    with pytest.raises(RuntimeError, match="boom"):
        fn.train(range(4), 0.01, 4, backend="eager", threads=1)
    assert torch.get_num_threads() == 2


def _busy_run(**kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn.train(range(64), 0.01, 4, backend="eager", device="cpu", progress=False, **kw)
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_warns_once_when_other_work_holds_the_cores(threads_as_they_were, fresh_warning, monkeypatch):
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    monkeypatch.setattr(machine, "running_elsewhere", lambda: 1)  # one other job, always running
    torch.set_num_threads(2)
    said = _busy_run()
    assert len(said) == 1
    assert said[0].startswith("fastneuron: 1 other thread(s) are running on this machine's 2 usable cores and "
                              "this run uses 2 torch threads")
    assert "pass train(threads=1) (CLI --threads 1) or set OMP_NUM_THREADS=1" in said[0]
    assert _busy_run() == []  # once a process
    engine._warned_busy[0] = False
    assert _busy_run(threads=1) == []  # one thread waits on no other
    monkeypatch.setattr(engine, "BUSY_WARNING_WORK", 64 * 4 + 1)
    assert _busy_run() == []  # a short run: a second at most either way


def test_no_warning_on_an_idle_machine_or_a_passing_blip(threads_as_they_were, fresh_warning, monkeypatch):
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    torch.set_num_threads(2)
    monkeypatch.setattr(machine, "running_elsewhere", lambda: 0)
    assert _busy_run() == []
    samples = iter([1, 0, 0, 0, 0])  # one thread ran for a moment: the confirming samples say idle
    monkeypatch.setattr(machine, "running_elsewhere", lambda: next(samples))
    assert _busy_run() == []


def test_load_average_where_there_is_no_proc(monkeypatch):
    """Without /proc/loadavg the 1-minute load average decides (mocked here)."""
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    monkeypatch.setattr(machine, "running_elsewhere", lambda: None)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (1.2, 1.0, 0.5))
    assert machine.busy_cores(2) == (1, 2)
    assert machine.busy_cores(1) is None
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert machine.busy_cores(2) is None


def test_running_elsewhere_reads_proc_loadavg():
    n = machine.running_elsewhere()
    assert n is None or n >= 0


def test_running_elsewhere_leaves_out_this_process_threads(monkeypatch):
    """torch's OpenMP workers spin for a while after a parallel loop: they are this
    process's, not another job's (an idle machine warned from inside the bench before)."""
    if not os.path.exists("/proc/self/task"):
        pytest.skip("no /proc (not Linux): the load average stands in")
    assert machine._own_running() >= 1  # the caller itself
    monkeypatch.setattr(machine, "_own_running", lambda: 10**6)  # every runnable thread is ours
    assert machine.running_elsewhere() == 0
