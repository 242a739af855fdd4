"""examples/teacher_student.py end to end in its quick mode (eager: no compiling; about 10 s):
it prints the table, writes its figure where told, and leaves docs/teacher_student.png alone."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "teacher_student.py"
DOCS_FIGURE = REPO / "docs" / "teacher_student.png"


def _row(lines, lr: str):
    """The table's row for ``lr`` as (ok, div, dead) per setting: with bias, then without."""
    (row,) = [line for line in lines if line.split("|")[0].strip() == lr]
    cells = [c.split() for c in row.split("|")[1:]]
    return [tuple(float(v) for v in c[:3]) for c in cells]


def test_teacher_student_quick(tmp_path):
    before = DOCS_FIGURE.stat().st_mtime_ns if DOCS_FIGURE.exists() else None
    env = dict(os.environ, MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--backend", "eager", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == f"figure: {tmp_path / 'teacher_student.png'}"
    assert (tmp_path / "teacher_student.png").stat().st_size > 10_000
    assert "10 seeds x 8 rates" in lines[0]
    assert any(line.startswith("with bias: ") for line in lines) and any(line.startswith("no bias: ") for line in lines)
    # The three regimes, even at this size: too slow, converged, unstable.
    assert _row(lines, "0.0003") == [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    assert [ok for ok, _, _ in _row(lines, "0.0208")] == [1.0, 1.0]
    (_, _, dead_b), (_, div_nb, _) = _row(lines, "0.173")
    assert dead_b > 0.5 and div_nb == 1.0  # with a bias the ReLU dies; without one it diverges
    assert (DOCS_FIGURE.stat().st_mtime_ns if DOCS_FIGURE.exists() else None) == before
