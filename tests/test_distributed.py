"""Distributed runs (fastneuron.distributed) on CPU with gloo: the gathered result is
bit for bit the single-process result, with 2 ranks and with 3 (uneven shards, and a
rank with no member); a rank that dies or fails makes the run fail fast with a
message naming it; per-rank checkpoints resume every shard.

Each rank is a real process started as torchrun starts it (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); the last test goes through torchrun itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
import torch

from compare import assert_same_results

import fastneuron
from fastneuron.distributed import shard_bounds

REPO = pathlib.Path(__file__).resolve().parents[1]
U64_MAX = 2**64 - 1
PEER_TIMEOUT = 5

#: 7 members, blocks of 2, momentum and weight decay on some, batch 2, a log every 5
#: steps; the members with lr 0.5, 2 and 20 diverge (at steps 42, 23 and 14).
RUN = dict(
    seeds=[0, 1, U64_MAX, 2**63, 5, 6, 7],
    lrs=[0.01, 0.5, 0.02, 2.0, 20.0, 0.01, 0.03],
    steps=50, batch_size=2, log_every=5, member_block=2, backend="eager", device="cpu",
    momentum=[0.0, 0.9, 0.5, 0.0, 0.5, 0.9, 0.0], weight_decay=[0.0, 1e-3, 0.0, 0.0, 1e-2, 0.0, 0.0],
)

WORKER = """
import json, sys
import fastneuron, fastneuron.distributed
kw = json.loads(sys.argv[1])
fastneuron.distributed._GATHER_CHUNK_BYTES = kw.pop("_gather_chunk_bytes", 64 << 20)
r = fastneuron.train(**kw, distributed=True)
print("RESULT", r is not None, flush=True)
if r is not None:
    r.save(sys.argv[2])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, kw: dict, out, extra_env=None, timeout: float = 120):
    """Start ``world`` ranks of WORKER as torchrun would; [(returncode, stdout, stderr)], seconds."""
    port = free_port()
    procs = []
    t0 = time.monotonic()
    for r in range(world):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   FASTNEURON_DIST_PEER_TIMEOUT=str(PEER_TIMEOUT), **(extra_env or {}))
        env.pop("TORCHELASTIC_RESTART_COUNT", None)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(kw), str(out)], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
            results.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results, time.monotonic() - t0


def assert_same(r1, r2) -> None:
    assert_same_results(r1, r2, members=True)



_refs: dict = {}


def reference(**kw):
    key = json.dumps(kw, sort_keys=True)
    if key not in _refs:
        _refs[key] = fastneuron.train(**kw)
    return _refs[key]


def test_shard_bounds_even_split():
    for m in range(1, 12):
        for w in range(1, 6):
            bounds = [shard_bounds(m, r, w) for r in range(w)]
            assert bounds[0][0] == 0 and bounds[-1][1] == m
            assert all(bounds[r][1] == bounds[r + 1][0] for r in range(w - 1))
            assert {b - a for a, b in bounds} <= {m // w, -(-m // w)}
    assert [shard_bounds(7, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 7)]


@pytest.mark.parametrize("world, members", [(2, 7), (3, 7), (3, 2)], ids=["2ranks", "3ranks-uneven", "3ranks-2members"])
def test_ranks_equal_one_process(tmp_path, world, members):
    kw = dict(RUN, seeds=RUN["seeds"][:members], lrs=RUN["lrs"][:members], momentum=RUN["momentum"][:members],
              weight_decay=RUN["weight_decay"][:members])
    out = tmp_path / "out.npz"
    # 3 ranks: gather in chunks of 2 members (24 words each), the last chunk partly empty.
    results, _ = launch(world, dict(kw, _gather_chunk_bytes=2 * 24 * 4 if world == 3 else 64 << 20), out)
    for r, (rc, stdout, stderr) in enumerate(results):
        assert rc == 0, f"rank {r}: {stderr[-3000:]}"
        assert f"RESULT {r == 0}" in stdout  # rank 0 returns the result, the others None
    got = fastneuron.load(out)
    ref = reference(**kw)
    assert_same(got, ref)
    if members == 7:
        assert (got.diverged_at >= 0).sum() == 3
    assert got.settings == dict(ref.settings, world_size=world)


def test_compile_backend_across_ranks(tmp_path):
    kw = dict(RUN, backend="compile")
    out = tmp_path / "out.npz"
    results, _ = launch(2, kw, out, timeout=300)
    for r, (rc, _, stderr) in enumerate(results):
        assert rc == 0, f"rank {r}: {stderr[-3000:]}"
    got = fastneuron.load(out)
    assert got.settings["backend"] == "compile"
    # Every backend computes the eager reference's numbers (SPEC; tests/test_compile.py).
    assert_same(got, reference(**RUN))


def test_dead_rank_fails_the_run_then_checkpoints_resume_every_shard(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    kw = dict(RUN, checkpoint=str(ckpt), checkpoint_every=0.0)
    # Rank 1 trains its shard (and checkpoints it), then dies before it reports.
    results, seconds = launch(2, kw, tmp_path / "out.npz", {"FASTNEURON_TEST_FAIL_RANK": "1:after"})
    assert seconds < 60
    (rc0, _, err0), (rc1, _, err1) = results
    assert rc1 == 1 and "rank 1 exits after training" in err1
    assert rc0 != 0
    assert "DistributedError: fastneuron: rank 1 of 2 stopped: no heartbeat for 5 s" in err0
    assert not (tmp_path / "out.npz").exists()
    assert (tmp_path / "run.ckpt.rank0").exists() and (tmp_path / "run.ckpt.rank1").exists()

    # A rank that fails (here: its checkpoint is gone) stops every rank, and rank 0
    # names it and its error.
    kw = dict(RUN, checkpoint=str(ckpt), resume=str(ckpt))
    saved = (tmp_path / "run.ckpt.rank1").read_bytes()
    (tmp_path / "run.ckpt.rank1").unlink()
    results, seconds = launch(2, kw, tmp_path / "out.npz")
    assert seconds < 60
    (rc0, _, err0), (rc1, _, err1) = results
    assert rc0 != 0 and rc1 != 0
    assert (f"DistributedError: fastneuron: rank 1 of 2 failed: ValueError: resume: no checkpoint at "
            f"{ckpt}.rank1 (a distributed run resumes with as many ranks as it started with, here 2)") in err0
    assert "ValueError: resume: no checkpoint at" in err1
    assert not (tmp_path / "out.npz").exists()

    # The restarted run resumes both shards from their files and ends as one process does.
    (tmp_path / "run.ckpt.rank1").write_bytes(saved)
    results, _ = launch(2, kw, tmp_path / "out.npz")
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2][-3000:]
    assert_same(fastneuron.load(tmp_path / "out.npz"), reference(**RUN))


def test_dead_rank_0_fails_the_run(tmp_path):
    results, seconds = launch(2, RUN, tmp_path / "out.npz", {"FASTNEURON_TEST_FAIL_RANK": "0"})
    assert seconds < 60
    (rc0, _, err0), (rc1, _, err1) = results
    assert rc0 == 1 and "rank 0 exits before training" in err0
    assert rc1 != 0
    # Rank 0's process held the key-value store here (torchrun's agent holds it otherwise).
    assert "DistributedError: fastneuron: rank 1 of 2 lost contact with the run's key-value store" in err1 or \
        "DistributedError: fastneuron: rank 0 of 2 stopped: no heartbeat" in err1


def test_without_torchrun_trains_in_this_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert not torch.distributed.is_initialized()
    with pytest.warns(RuntimeWarning, match="training in this process alone"):
        got = fastneuron.train(**RUN, distributed=True)
    assert_same(got, reference(**RUN))


def torchrun(nproc: int, *args, extra_env=None, timeout: float = 120):
    env = dict(os.environ, FASTNEURON_DIST_PEER_TIMEOUT=str(PEER_TIMEOUT), **(extra_env or {}))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                        "-m", "fastneuron", "train", *args], env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    return p, time.monotonic() - t0


CLI_RUN = ["--seeds", "0:5", "--lrs", "0.01,0.5", "--momentum", "0,0.9", "--steps", "60", "--log-every", "7",
           "--batch-size", "2", "--backend", "eager", "--device", "cpu", "--quiet", "--distributed"]


def test_torchrun_command_line(tmp_path):
    out = tmp_path / "out.npz"
    p, _ = torchrun(2, *CLI_RUN, "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("members        20 (5 seeds x 2 lrs x 2 momenta)") == 1  # rank 0 only
    assert "eager on cpu (2 ranks)" in p.stdout
    ref = fastneuron.train(**fastneuron.grid(seeds=range(5), lrs=[0.01, 0.5], momentum=[0.0, 0.9]), steps=60,
                           log_every=7, batch_size=2, backend="eager", device="cpu")
    got = fastneuron.load(out)
    assert (got.diverged_at >= 0).any()
    assert_same(got, ref)


def test_torchrun_command_line_fails_when_a_rank_dies(tmp_path):
    out = tmp_path / "out.npz"
    p, seconds = torchrun(2, *CLI_RUN, "--out", str(out), extra_env={"FASTNEURON_TEST_FAIL_RANK": "1:after"})
    assert seconds < 60
    assert p.returncode != 0
    assert "rank 1 exits after training" in p.stderr
    assert "ChildFailedError" in p.stderr and "exitcode  : 1" in p.stderr
    assert not out.exists()
