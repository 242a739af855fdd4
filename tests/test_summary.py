"""TrainResult.summary and the plots."""

import numpy as np
import pytest
import torch

import fastneuron as fn


@pytest.fixture(scope="module")
def sweep():
    return fn.train(**fn.grid(seeds=range(12), lrs=[0.002, 0.02, 0.3]), steps=400, log_every=20, backend="eager")


def test_summary_groups_by_lr(sweep):
    rows = sweep.summary(by="lr", tol=1e-4).rows
    assert [r["lr"] for r in rows] == [float(np.float32(v)) for v in (0.002, 0.02, 0.3)]
    assert all(r["count"] == 12 for r in rows)
    assert rows[2]["diverged"] == 1.0 and rows[2]["risk_median"] is None
    assert rows[0]["diverged"] == 0.0
    # Faster rates converge further in 400 steps.
    assert rows[1]["risk_median"] < rows[0]["risk_median"]
    # The median of the final risk over the seeds of lr 0.02, computed by hand.
    cols = sweep.lrs == torch.tensor(0.02, dtype=torch.float32)
    assert rows[1]["risk_median"] == pytest.approx(float(np.quantile(sweep.risk[cols].numpy(), 0.5)), rel=1e-12)
    # First logged step with risk < 1e-4, median over seeds, by hand.
    below = (sweep.history_risk[:, cols] < 1e-4).numpy()
    first = np.where(below.any(0), sweep.history_steps.numpy()[below.argmax(0)], np.inf)
    expected = np.quantile(first, 0.5, method="lower")
    assert rows[1]["step_below_tol"] == (None if not np.isfinite(expected) else int(expected))
    assert rows[0]["step_below_tol"] is None  # lr 0.002 does not get there in 400 steps


def test_summary_table_and_errors(sweep):
    text = str(sweep.summary())
    assert "risk median" in text and len(text.splitlines()) == 4
    assert len(sweep.summary(by=("lr", "seed")).rows) == 36
    with pytest.raises(ValueError, match="by"):
        sweep.summary(by="colour")
    with pytest.raises(ValueError, match="tol"):
        sweep.summary(tol=0)


def test_plots_write_files(sweep, tmp_path):
    pytest.importorskip("matplotlib", reason="requires matplotlib (the plot extra)")
    from fastneuron import plot

    for name, fig in [("lr", plot.risk_vs_lr(sweep, path=tmp_path / "lr.png")),
                      ("step", plot.risk_vs_step(sweep, path=tmp_path / "step.png")),
                      ("traj", plot.trajectories(sweep, path=tmp_path / "traj.png"))]:
        assert fig.axes, name
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("lr.png", "step.png", "traj.png"))
    no_history = fn.train([1, 2], 0.01, 10, backend="eager")
    with pytest.raises(ValueError, match="log_every"):
        plot.risk_vs_step(no_history)
