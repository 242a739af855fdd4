"""Distributed runs (fastneuron.distributed) on CPU with gloo: the gathered result is
bit for bit the single-process result, with 2 ranks and with 3 (uneven shards, and a
rank with no member); ranks given different members (one lr past 2**20) fail before
training; a rank that dies or fails, before, while or after it trains, makes the run
fail fast with one line naming it, as does losing the store; per-rank checkpoints
resume every shard.

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
import threading
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
import numpy as np
import fastneuron, fastneuron.distributed
kw = json.loads(sys.argv[1])
fastneuron.distributed._GATHER_CHUNK_BYTES = kw.pop("_gather_chunk_bytes", 64 << 20)
if "_members" in kw:  # [M, lr]: seeds 0..M-1, all with lr, but [index, lr] in _lrs_at
    m, lr = kw.pop("_members")
    kw["seeds"], kw["lrs"] = np.arange(m, dtype=np.uint64), np.full(m, lr, dtype=np.float32)
    for i, v in kw.pop("_lrs_at", []):
        kw["lrs"][i] = v
r = fastneuron.train(**kw, distributed=True)
print("RESULT", r is not None, flush=True)
if r is not None:
    r.save(sys.argv[2])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, kw: dict, out, extra_env=None, timeout: float = 120, rank_kw=None, ends=None,
           worker: str = WORKER):
    """Start ``world`` ranks of ``worker`` as torchrun would (rank r's arguments: ``kw``
    updated with ``rank_kw[r]``); [(returncode, stdout, stderr)], seconds. ``ends``, a
    list, gets the seconds at which each rank ended."""
    port = free_port()
    procs = []
    t0 = time.monotonic()
    for r in range(world):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   FASTNEURON_DIST_PEER_TIMEOUT=str(PEER_TIMEOUT), **(extra_env or {}))
        env.pop("TORCHELASTIC_RESTART_COUNT", None)
        args = json.dumps(dict(kw, **(rank_kw or {}).get(r, {})))
        procs.append(subprocess.Popen([sys.executable, "-c", worker, args, str(out)], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results: list = [None] * world
    done = [None] * world

    def collect(r: int) -> None:
        try:
            stdout, stderr = procs[r].communicate(timeout=timeout)
            results[r] = (procs[r].returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            pass
        done[r] = time.monotonic() - t0

    threads = [threading.Thread(target=collect, args=(r,)) for r in range(world)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, got in enumerate(results):
        if got is None:
            raise subprocess.TimeoutExpired(f"rank {r}", timeout)
    if ends is not None:
        ends[:] = done
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


@pytest.mark.parametrize("world", [2, 3])
def test_neuron_with_inputs_across_ranks(tmp_path, world):
    """SPEC §6: weights (M, d) and history (L, M, d) gathered word for word (3 ranks: chunks
    of 2 members, the last partly empty)."""
    kw = dict(RUN, problem="teacher", inputs=7, activation="tanh", bias=False, a=0.3, c=0.0, lo=-1.0, hi=1.0)
    out = tmp_path / "out.npz"
    d, n_logged = 7, len(range(0, RUN["steps"], RUN["log_every"])) if RUN.get("log_every") else 0
    words = d + 3 + n_logged * (d + 1)
    results, _ = launch(world, dict(kw, _gather_chunk_bytes=2 * words * 4 if world == 3 else 64 << 20), out)
    for r, (rc, _, stderr) in enumerate(results):
        assert rc == 0, f"rank {r}: {stderr[-3000:]}"
    got, ref = fastneuron.load(out), reference(**kw)
    assert got.weight.shape == (len(RUN["seeds"]), d)
    assert_same(got, ref)


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


def error_lines(stderr: str) -> list:
    """The lines that state a DistributedError (without torch's "[rankN]: " prefix)."""
    return [line.split("]: ", 1)[-1] if line.startswith("[rank") else line
            for line in stderr.splitlines() if "DistributedError: " in line]


def test_a_member_past_2_20_given_another_lr_fails_every_rank_before_training(tmp_path):
    # Issue 13 item 2: the check sampled members beyond 2**20, so this run completed,
    # member 2097151 trained with rank 1's lr. Now the full digests differ, and every
    # rank says so before it trains.
    m, index = 2**21 + 1, 2**21 - 1
    kw = dict(_members=[m, 0.01], steps=4, member_block=m, backend="eager", device="cpu")
    results, seconds = launch(2, kw, tmp_path / "out.npz", rank_kw={1: {"_lrs_at": [[index, 0.02]]}})
    (rc0, _, err0), (rc1, _, err1) = results
    assert rc0 != 0 and rc1 != 0, err0[-3000:] + err1[-3000:]
    differ = "the members differ: SHA-256 digests of all seeds, lrs and per-member options"
    assert error_lines(err0) == [f"fastneuron.distributed.DistributedError: fastneuron: rank 1 of 2 was given other "
                                 f"arguments than rank 0 ({differ}): every rank must be given the same arguments"]
    assert error_lines(err1) == [f"fastneuron.distributed.DistributedError: fastneuron: rank 1 of 2 was given other "
                                 f"arguments than rank 0 ({differ}): every rank must be given the same arguments"]
    assert not (tmp_path / "out.npz").exists()
    assert seconds < 60


#: Long enough that a rank would train for minutes: a loss must end it mid-shard.
LONG_RUN = dict(RUN, steps=10**6, log_every=None)


def test_rank_dying_while_training_ends_the_run_on_every_rank(tmp_path):
    # Issue 13 item 3: a dead peer was noticed only after a survivor's own shard.
    ends: list = []
    results, seconds = launch(3, LONG_RUN, tmp_path / "out.npz", {"FASTNEURON_TEST_FAIL_RANK": "2:during"}, ends=ends)
    (rc0, _, err0), (rc1, _, err1), (rc2, _, err2) = results
    assert rc2 == 1 and "rank 2 exits during training" in err2
    assert rc0 != 0 and rc1 != 0
    dead = f"fastneuron: rank 2 of 3 stopped: no heartbeat for {PEER_TIMEOUT} s while rank 0 was training its shard"
    [line0], [line1] = error_lines(err0), error_lines(err1)
    assert line0.startswith(f"fastneuron.distributed.DistributedError: {dead}"), err0[-3000:]
    assert line1.startswith(f"fastneuron.distributed.DistributedError: fastneuron: rank 0 abandoned the run: {dead}")
    # Here: the peer timeout, then at most a look, a chunk and rank 0's verdict read.
    assert ends[0] - ends[2] < PEER_TIMEOUT + 10 and ends[1] - ends[2] < PEER_TIMEOUT + 10, ends
    assert seconds < 60
    assert not (tmp_path / "out.npz").exists()


def test_store_host_dying_while_training_ends_the_run(tmp_path):
    # Rank 0's process holds the key-value store here (torchrun's agent holds it otherwise).
    ends: list = []
    results, seconds = launch(2, LONG_RUN, tmp_path / "out.npz", {"FASTNEURON_TEST_FAIL_RANK": "0:during"}, ends=ends)
    (rc0, _, err0), (rc1, _, err1) = results
    assert rc0 == 1 and "rank 0 exits during training" in err0
    assert rc1 != 0
    [line] = error_lines(err1)
    assert line.startswith("fastneuron.distributed.DistributedError: fastneuron: rank 1 of 2 lost contact with the "
                           "run's key-value store while training its shard"), err1[-3000:]
    assert ends[1] - ends[0] < 10, ends  # a closed connection: at the next heartbeat
    assert seconds < 60


def test_default_peer_timeout_ends_a_run_within_30_s():
    from fastneuron import distributed

    assert distributed.PEER_TIMEOUT_SECONDS + distributed.CHECK_SECONDS + distributed.HEARTBEAT_SECONDS <= 25


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


def children(pid: int) -> list:
    return [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_torchrun_agent_dying_ends_the_workers(tmp_path):
    # Issue 13 item 3: with torchrun's agent (which holds the store) gone, the workers
    # trained to the end. Now each ends at its next chunk, saying so in one line.
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.npz"
    env = dict(os.environ, FASTNEURON_DIST_PEER_TIMEOUT=str(PEER_TIMEOUT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    # A checkpoint after every chunk: each rank's file says that it trains.
    cli = ["--seeds", "0:4", "--lrs", "0.01", "--steps", str(10**6), "--batch-size", "2", "--backend", "eager",
           "--device", "cpu", "--quiet", "--distributed", "--checkpoint", str(ckpt), "--checkpoint-every", "0",
           "--out", str(out)]
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              "-m", "fastneuron", "train", *cli], env=env, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    workers: list = []
    try:
        deadline = time.monotonic() + 120
        while not all(pathlib.Path(f"{ckpt}.rank{r}").exists() for r in range(2)):
            assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()[1][-3000:]
            time.sleep(0.2)
        workers = children(agent.pid)
        assert len(workers) == 2
        agent.kill()
        t0 = time.monotonic()
        # The workers share the agent's stdout and stderr: they are at an end when both are.
        _, stderr = agent.communicate(timeout=60)
        seconds = time.monotonic() - t0
    finally:
        if agent.poll() is None:
            workers = workers or children(agent.pid)
        for pid in workers:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    lost = [line for line in stderr.splitlines() if "lost contact with the run's key-value store" in line]
    assert sorted(line.split(" of 2 ")[0] for line in lost) == [f"fastneuron: error: rank {r}" for r in range(2)], \
        stderr[-3000:]
    assert all(line.startswith("fastneuron: error: rank ") and "while training its shard" in line for line in lost)
    # Issue 13 item 11: c10d's warning with C++ stack frames no longer comes first.
    assert "Exception raised from" not in stderr and "frame #" not in stderr, stderr[-3000:]
    assert seconds < 30
    assert not out.exists()
