"""Issue 13 item 13: the example writes where it is told (or to a temporary directory),
never over the tracked docs/*.png. (The skip that needed ../shared is gone: issue 22
item 6, tests/test_first_use.py.)"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lr_sweep.py"
FIGURES = ("lr_sweep_risk_vs_lr.png", "lr_sweep_risk_vs_step.png", "lr_sweep_trajectories.png")


def _run_example(*args, cwd):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(EXAMPLE), "--seeds", "2", "--rates", "46", "--steps", "20",
                           "--backend", "eager", *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=env)


def _docs_state():
    return {name: (REPO / "docs" / name).stat().st_mtime_ns for name in FIGURES if (REPO / "docs" / name).exists()}


def test_lr_sweep_writes_to_out_or_a_temp_dir_not_docs(tmp_path):
    before = _docs_state()
    out = tmp_path / "figs"
    p = _run_example("--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert all((out / name).is_file() for name in FIGURES)
    assert p.stdout.strip().splitlines()[-1] == f"figures in {out}"
    p = _run_example(cwd=tmp_path)  # the default: a new temporary directory, printed
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("figures in ")
    where = pathlib.Path(last[len("figures in "):])
    try:
        assert where.resolve() != (REPO / "docs").resolve()
        assert all((where / name).is_file() for name in FIGURES)
    finally:
        for name in FIGURES:
            (where / name).unlink(missing_ok=True)
        where.rmdir()
    assert _docs_state() == before  # the tracked figures are untouched


def test_adam_lr_sweep_writes_where_told(tmp_path):
    """examples/adam_lr_sweep.py (issue 12): its figure goes to --out, and it reports each
    optimizer's edge."""
    env = dict(os.environ, MPLBACKEND="Agg")
    before = (REPO / "docs" / "adam_lr_sweep.png").stat().st_mtime_ns
    p = subprocess.run([sys.executable, str(REPO / "examples" / "adam_lr_sweep.py"), "--seeds", "3", "--rates", "8",
                        "--steps", "300", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "adam_lr_sweep.png").is_file()
    assert p.stdout.strip().splitlines()[-1] == f"figure: {tmp_path / 'adam_lr_sweep.png'}"
    assert "sgd\n" in p.stdout and "adam\n" in p.stdout and "first diverged seed at lr" in p.stdout
    assert (REPO / "docs" / "adam_lr_sweep.png").stat().st_mtime_ns == before
