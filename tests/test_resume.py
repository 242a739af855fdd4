"""Checkpoint and resume: a resumed run ends bit for bit where an uninterrupted run
ends (weights, biases, diverged_at, history), from any checkpoint the run wrote, and
after a real SIGKILL of the command line; a checkpoint of another run is refused."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from compare import bits, assert_same_results

import fastneuron
from fastneuron import engine

U64_MAX = 2**64 - 1


def assert_same(r1, r2) -> None:
    assert_same_results(r1, r2, members=True)



def ckpt_meta(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(bytes(z["meta"]).decode())


# -- (a) in process: resume from every checkpoint a run writes ----------------------

#: 7 members in blocks of 3 (the last block has one member), momentum on some,
#: weight decay, batch 2, a log every 5 steps; lr 0.5, 2 and 20 diverge near steps
#: 40, 24 and 14 of 50.
RUN = dict(
    seeds=[0, 1, U64_MAX, 2**63, 5, 6, 7],
    lrs=[0.01, 0.5, 0.02, 2.0, 20.0, 0.01, 0.03],
    steps=50, batch_size=2, log_every=5, member_block=3,
    momentum=[0.0, 0.9, 0.5, 0.0, 0.5, 0.9, 0.0], weight_decay=[0.0, 1e-3, 0.0, 0.0, 1e-2, 0.0, 0.0],
)


def run_with_snapshots(monkeypatch, tmp_path, **kw):
    """Train with a checkpoint after every chunk; return the result and a copy of
    every checkpoint written, with its (block_start, block_stop, step)."""
    real = engine.save_checkpoint
    snaps = []

    def spy(path, spec, **k):
        real(path, spec, **k)
        dst = tmp_path / f"snap{len(snaps):03d}.ckpt"
        shutil.copyfile(path, dst)
        snaps.append((dst, (k["block_start"], k["block_stop"], k["step"])))

    with monkeypatch.context() as mp:
        mp.setattr(engine, "save_checkpoint", spy)
        r = fastneuron.train(**kw, checkpoint=tmp_path / "live.ckpt", checkpoint_every=0, progress=False)
    return r, snaps


@pytest.fixture(scope="module")
def reference():
    return fastneuron.train(**RUN, backend="eager", progress=False)


@pytest.mark.parametrize("backend", ["eager", "compile"])
def test_resume_from_every_checkpoint(backend, reference, monkeypatch, tmp_path):
    ref = reference
    assert set(ref.diverged_at.tolist()) - {-1}, "some members must diverge"
    assert (ref.diverged_at < 0).sum() >= 3, "and some not"
    r, snaps = run_with_snapshots(monkeypatch, tmp_path, **RUN, backend=backend)
    assert_same(ref, r)  # checkpointing changes nothing
    positions = [p for _, p in snaps]
    m, steps = len(RUN["seeds"]), RUN["steps"]
    # Mid-block checkpoints in every block, between blocks, and the final one.
    for b0 in (0, 3, 6):
        assert any(p[0] == b0 and 0 < p[2] < steps for p in positions), (b0, positions)
    assert (3, 6, 0) in positions and (6, 7, 0) in positions
    assert positions[-1] == (m, m, steps)
    real_run_block = engine.train_block
    for snap, (b0, b1, t) in snaps:
        # The resumed run must start where the checkpoint stands, not redo the run:
        # it trains the rest of the block at step t, then the later blocks from 0.
        calls = []

        def counting_run_block(stepper, state, t_from, t_to, *args, calls=calls, **kwargs):
            calls.append((t_from, state.weight.shape[0]))
            return real_run_block(stepper, state, t_from, t_to, *args, **kwargs)

        with monkeypatch.context() as mp:
            mp.setattr(engine, "train_block", counting_run_block)
            resumed = fastneuron.train(**RUN, backend=backend, resume=snap, progress=False)
        try:
            assert_same(ref, resumed)
        except AssertionError as exc:
            raise AssertionError(f"resume from {(b0, b1, t)} differs: {exc}") from None
        later = [(s0, min(m, s0 + RUN["member_block"])) for s0 in range(b1, m, RUN["member_block"])]
        blocks = ([(b0, b1)] if b0 < m else []) + later
        # (The compiled backend pads a block of one member to two.)
        rows = [s1 - s0 + (backend == "compile" and s1 - s0 == 1) for s0, s1 in blocks]
        assert calls == [(t if i == 0 else 0, r) for i, r in enumerate(rows)], ((b0, b1, t), calls)


def test_resume_batch_5_from_every_checkpoint(monkeypatch, tmp_path):
    """B = 5 (segments of 12 samples in the compiled backend, steps ending inside
    them): every checkpoint of a compiled run resumes to the eager run's bits, on
    compile and on eager."""
    run = dict(RUN, batch_size=5, steps=40, member_block=None)
    ref = fastneuron.train(**run, backend="eager", progress=False)
    assert (ref.diverged_at >= 0).any() and (ref.diverged_at < 0).any()
    r, snaps = run_with_snapshots(monkeypatch, tmp_path, **run, backend="compile")
    assert_same(ref, r)
    assert any(0 < t < run["steps"] for _, (_, _, t) in snaps)
    for snap, position in snaps:
        for backend in ("compile", "eager"):
            try:
                assert_same(ref, fastneuron.train(**run, backend=backend, resume=snap, progress=False))
            except AssertionError as exc:
                raise AssertionError(f"{backend} resumed from {position} differs: {exc}") from None


def test_resume_reads_the_checkpoint(reference, monkeypatch, tmp_path):
    """Changing a checkpoint changes the resumed run, as it should: the state comes
    from the file (members already done keep the file's final values)."""
    _, snaps = run_with_snapshots(monkeypatch, tmp_path, **RUN, backend="eager")
    snap = next(p for p, (b0, _, t) in snaps if b0 == 3 and t == 20)
    with np.load(snap, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert reference.diverged_at[0] < 0 and reference.diverged_at[5] < 0
    arrays["weight"] = arrays["weight"].copy()
    arrays["weight"][0] = np.float32(0.125)  # done (block 0)
    arrays["weight"][5] = np.float32(0.125)  # in the block being trained, at step 20
    np.savez(tmp_path / "edited.npz", **arrays)
    r = fastneuron.train(**RUN, backend="eager", resume=tmp_path / "edited.npz", progress=False)
    assert r.weight[0].item() == 0.125
    assert r.weight[5].item() != reference.weight[5].item()
    keep = [1, 2, 3, 4, 6]
    assert torch.equal(bits(r.weight[keep]), bits(reference.weight[keep]))
    assert torch.equal(bits(r.bias[keep]), bits(reference.bias[keep]))


def test_resume_on_another_backend(reference, monkeypatch, tmp_path):
    """Every backend computes the same numbers, so a checkpoint moves between them."""
    for written, resumed_on in (("eager", "compile"), ("compile", "eager")):
        d = tmp_path / written
        d.mkdir()
        _, snaps = run_with_snapshots(monkeypatch, d, **RUN, backend=written)
        # Mid-block checkpoints after and before divergence, and one between blocks.
        picks = [s for s in snaps if s[1][2] in (4, 8, 16, 32, 40, 48)] + [s for s in snaps if s[1][2] == 0]
        assert len(picks) >= 4
        for snap, pos in picks:
            r = fastneuron.train(**RUN, backend=resumed_on, resume=snap, progress=False)
            try:
                assert_same(reference, r)
            except AssertionError as exc:
                raise AssertionError(f"{written} -> {resumed_on} from {pos}: {exc}") from None


def test_uninterrupted_checkpoint_then_resume_is_a_no_op(reference, tmp_path):
    path = tmp_path / "c.ckpt"
    r1 = fastneuron.train(**RUN, backend="eager", checkpoint=path, progress=False)
    meta = ckpt_meta(path)
    assert (meta["block_start"], meta["step"]) == (len(RUN["seeds"]), RUN["steps"])
    r2 = fastneuron.train(**RUN, backend="eager", resume=path, checkpoint=path, progress=False)
    assert_same(reference, r1)
    assert_same(reference, r2)


# -- refusals --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mid_checkpoint(tmp_path_factory):
    """A checkpoint from the middle of an eager run of RUN."""
    d = tmp_path_factory.mktemp("mid")
    real = engine.save_checkpoint
    kept = []

    def spy(path, spec, **k):
        real(path, spec, **k)
        if k["step"] == 20 and not kept:
            shutil.copyfile(path, d / "mid.ckpt")
            kept.append(k)

    mp = pytest.MonkeyPatch()
    mp.setattr(engine, "save_checkpoint", spy)
    try:
        fastneuron.train(**RUN, backend="eager", checkpoint=d / "live.ckpt", checkpoint_every=0, progress=False)
    finally:
        mp.undo()
    assert kept
    return d / "mid.ckpt"


@pytest.mark.parametrize("change, named", [
    (dict(steps=60), ["steps"]),
    (dict(batch_size=1), ["batch_size"]),
    (dict(log_every=10), ["log_every"]),
    (dict(log_every=None), ["log_every"]),
    (dict(a=2.5, c=0.5), ["a=", "c="]),
    (dict(lo=0.0, hi=4.0), ["lo=", "hi="]),
    (dict(dampening=0.1), ["dampening"]),
    (dict(momentum=0.5, nesterov=True), ["nesterov"]),
])
def test_resume_with_other_settings_names_them(mid_checkpoint, change, named):
    with pytest.raises(ValueError, match="other settings") as info:
        fastneuron.train(**{**RUN, **change}, backend="eager", resume=mid_checkpoint, progress=False)
    for name in named:
        assert name in str(info.value)


@pytest.mark.parametrize("change", [
    dict(seeds=[0, 1, U64_MAX, 2**63, 5, 6, 8]),
    dict(seeds=list(reversed(RUN["seeds"]))),
    dict(lrs=[0.01, 0.5, 0.02, 2.0, 20.0, 0.01, 0.031]),
    dict(momentum=[0.0, 0.9, 0.5, 0.0, 0.5, 0.9, 0.1]),
    dict(weight_decay=0.0),
])
def test_resume_with_other_members(mid_checkpoint, change):
    with pytest.raises(ValueError, match="other members"):
        fastneuron.train(**{**RUN, **change}, backend="eager", resume=mid_checkpoint, progress=False)


def test_resume_with_fewer_members(mid_checkpoint):
    run = {**RUN, "seeds": RUN["seeds"][:6]}
    run.update({k: RUN[k][:6] for k in ("lrs", "momentum", "weight_decay")})
    with pytest.raises(ValueError, match="other members"):
        fastneuron.train(**run, backend="eager", resume=mid_checkpoint, progress=False)


def test_resume_with_other_backend_or_block_is_fine(mid_checkpoint, reference):
    r = fastneuron.train(**{**RUN, "member_block": 5}, backend="eager", resume=mid_checkpoint, progress=False)
    assert_same(reference, r)


def test_missing_or_corrupt_checkpoint(mid_checkpoint, tmp_path, reference):
    def refused(path, needle):
        with pytest.raises(ValueError, match=needle):
            fastneuron.train(**RUN, backend="eager", resume=path, progress=False)

    refused(tmp_path / "absent.ckpt", "no checkpoint at")
    data = mid_checkpoint.read_bytes()
    rng = np.random.default_rng(1)
    bad = {
        "random": rng.bytes(2000), "empty": b"", "half": data[: len(data) // 2], "tail-cut": data[:-5],
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        refused(tmp_path / name, "not a fastneuron checkpoint")
    np.save(tmp_path / "a.npy", np.zeros(3))
    refused(tmp_path / "a.npy", "not a fastneuron checkpoint")
    reference.save(tmp_path / "result.npz")  # a result file is not a checkpoint
    refused(tmp_path / "result.npz", "not a fastneuron checkpoint")
    # The right format, but a header without settings or position.
    with np.load(mid_checkpoint, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    for drop in ("settings", "step", "members_digest"):
        broken = {k: v for k, v in meta.items() if k != drop}
        np.savez(tmp_path / f"no-{drop}.npz", **{**arrays, "meta": np.frombuffer(json.dumps(broken).encode(),
                                                                              dtype=np.uint8)})
        refused(tmp_path / f"no-{drop}.npz", "broken fastneuron checkpoint")


# -- (b) a real kill ---------------------------------------------------------------------

#: About 4 s of eager training on an idle machine: 2 x 40000 members (lr 0.02 and
#: 0.09: the second diverges for about half of the seeds), momentum, a log every 250
#: steps, 3 member blocks.
N_KILL = 40000
KILL_ARGS = ["--seeds", f"0:{N_KILL}", "--lrs", "0.02,0.09", "--momentum", "0.5", "--steps", "2000",
             "--log-every", "250", "--member-block", "32000", "--backend", "eager", "--quiet"]
KILL_RUN = dict(seeds=np.repeat(np.arange(N_KILL, dtype=np.uint64), 2), lrs=np.tile([0.02, 0.09], N_KILL),
                momentum=0.5, steps=2000, log_every=250, member_block=32000, backend="eager")


def _cli(*args):
    return [sys.executable, "-m", "fastneuron", "train", *args]


@pytest.fixture(scope="module")
def kill_reference():
    return fastneuron.train(**KILL_RUN, progress=False)


def ckpt_meta_or_none(path):
    try:
        return ckpt_meta(path)
    except (OSError, ValueError, KeyError):
        return None


def done_fraction(meta: dict, m: int, steps: int) -> float:
    """How much of the run a checkpoint holds: members before the block are done."""
    return (meta["block_start"] * steps + (meta["block_stop"] - meta["block_start"]) * meta["step"]) / (m * steps)


def _run_and_kill(args, ckpt, target: float, extra: float, m: int, steps: int, cwd) -> dict:
    """Start the command line; once its checkpoint holds ``target`` of the run, wait
    ``extra`` seconds more (a random moment between two checkpoints, maybe in the middle
    of writing one), SIGKILL it; return the header of the checkpoint left behind.

    The moment is chosen by progress, not by the clock, so that the kill lands inside
    the run however busy the machine is.
    """
    proc = subprocess.Popen(_cli(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while True:
            meta = ckpt_meta_or_none(ckpt)
            if meta is not None and done_fraction(meta, m, steps) >= target:
                break
            assert proc.poll() is None, f"exited before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "no progress within 600 s"
            time.sleep(0.01)
        time.sleep(extra)
        assert proc.poll() is None, "the run ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return ckpt_meta(ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("seed, kills", [(2024, 1), (7, 2)])
def test_sigkill_then_resume(seed, kills, kill_reference, tmp_path):
    ref = kill_reference
    assert (ref.diverged_at >= 0).any() and (ref.diverged_at < 0).any()
    m, steps = len(ref), KILL_RUN["steps"]
    rng = random.Random(seed)
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.npz"
    args = [*KILL_ARGS, "--checkpoint", str(ckpt), "--checkpoint-every", "0.2"]
    done = 0.0
    for k in range(kills):
        # A random point of the run (of what is left of it, after a resume).
        target = done + rng.uniform(0.05, 0.8) * (1 - done)
        resume = ["--resume", str(ckpt)] if k else []
        meta = _run_and_kill([*args, *resume], ckpt, target, rng.uniform(0.0, 0.25), m, steps, tmp_path)
        new = done_fraction(meta, m, steps)
        assert done <= new < 1, (done, new, meta)  # a mid-run checkpoint, never a step back
        done = new
    # --resume goes on writing the checkpoint it resumed from.
    finished = subprocess.run(_cli(*KILL_ARGS, "--resume", str(ckpt), "--out", str(out)), cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert f"members        {m} " in finished.stdout
    assert f"resumed: {100.0 * done:.3g}% of the run was done before" in finished.stdout
    assert_same(ref, fastneuron.load(out))
    meta = ckpt_meta(ckpt)
    assert (meta["block_start"], meta["step"]) == (m, steps)


def test_cli_resume_mismatch_is_one_line(mid_checkpoint, tmp_path):
    p = subprocess.run(_cli("--seeds", "0:7", "--steps", "50", "--backend", "eager", "--resume",
                            str(mid_checkpoint), "--quiet"), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    # The CLI names its flags (issue 13): --resume, --batch-size.
    assert len(lines) == 1 and lines[0].startswith("fastneuron: error: --resume: ")
    assert "other settings" in lines[0] and "--batch-size" in lines[0]
    assert os.listdir(tmp_path) == [], "a refused resume writes nothing"
