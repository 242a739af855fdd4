"""Training across processes, GPUs and nodes: ``train(..., distributed=True)`` under torchrun.

Members are independent (SPEC §1), so a run splits into shards without any
communication while it trains. With a world of W processes (ranks), rank ``r``
trains the contiguous members ``[r*M//W, (r+1)*M//W)``: the run's spec cut to that
shard (``RunSpec.shard``) and run by the ordinary engine (``engine.run``), on
``cuda:LOCAL_RANK`` when the device is CUDA (one GPU per process), else on the CPU. Every number is the one a
single-process run computes, bit for bit: the shards are the same members with the
same seeds and hyperparameters.

At the end the shards are gathered to rank 0 (``torch.distributed.gather`` of the
final weight, bias, diverged_at and history as raw 32-bit words, in chunks of at most
64 MiB per rank), and **rank 0 returns the whole** :class:`~fastneuron.TrainResult`;
**every other rank returns None**. Seeds and per-member hyperparameters are not sent:
every rank was given all of them (and checks that they agree, see below). The result's
``settings`` are those of rank 0 (``device`` is rank 0's device) plus ``world_size``.

Setting up. If ``torch.distributed`` is already initialized, its default group is
used. Otherwise the group is initialized here from torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), with backend
``nccl`` for CUDA and ``gloo`` for CPU, and with a timeout of
``FASTNEURON_DIST_TIMEOUT`` seconds (default 600) for setting up and for the gather.
Without either, ``distributed=True`` trains in this process alone, with a warning.

A dead peer is an error, not a hang. A run does not wait inside a collective while
other ranks still train (a shard may well take hours longer than another): each rank
beats a heartbeat counter in the group's key-value store every second from a
background thread, and posts "done" (or the error it met) when its shard is trained.
Rank 0 waits for every "done"; a rank whose heartbeat has not moved for
``FASTNEURON_DIST_PEER_TIMEOUT`` seconds (default 60) is declared dead, and a rank
that posted an error fails the run with that error. Rank 0 then posts its verdict,
which the other ranks wait for while they watch rank 0's heartbeat (and the store,
which lives with rank 0 or with torchrun's agent). Every rank ends in
:class:`DistributedError` naming the failed rank, or all of them enter the gather.
Under torchrun, a process that dies also makes torchrun stop its other processes.

Progress: only rank 0 shows a bar (for its own shard). Checkpoints: ``checkpoint=P``
makes rank ``r`` checkpoint its shard to ``P.rank{r}``, and ``resume=P`` resumes
every shard from its ``P.rank{r}``; a resumed run needs the same number of ranks.

Command lines (one process per GPU; ``--distributed`` on the ``train`` command):

    # one machine, 8 GPUs
    torchrun --standalone --nproc-per-node 8 -m fastneuron train \\
        --seeds 0:100000000 --lrs 0.01 --distributed --out run.npz

    # 4 machines with 8 GPUs each: the same line on every machine
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST0:29500 --rdzv-id run42 -m fastneuron train \\
        --seeds 0:1000000000 --lrs 0.01 --distributed --checkpoint run.ckpt --out run.npz

    # CPU only: 4 processes
    torchrun --standalone --nproc-per-node 4 -m fastneuron train \\
        --seeds 0:100000 --lrs 0.01 --device cpu --distributed --out run.npz

``--out`` is written by rank 0 only, on rank 0's machine; with ``--checkpoint`` every
machine writes its ranks' ``.rank{r}`` files, so use a path each machine can write
(shared or local; a restart must find each rank's file where that rank runs).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import itertools
import json
import os
import sys
import threading
import time
import warnings
from typing import Optional

import torch

from . import engine
from .result import TrainResult
from .spec import RunSpec

#: Seconds for setting up the process group and for the gather (environment variable).
TIMEOUT_ENV = "FASTNEURON_DIST_TIMEOUT"
#: Seconds without a heartbeat after which a peer counts as dead (environment variable).
PEER_TIMEOUT_ENV = "FASTNEURON_DIST_PEER_TIMEOUT"
#: Test hook: ``R`` makes rank R exit (status 1) before it trains, ``R:after`` after
#: it has trained its shard (and written its checkpoint) but before it reports.
TEST_FAIL_ENV = "FASTNEURON_TEST_FAIL_RANK"

HEARTBEAT_SECONDS = 1.0
_GATHER_CHUNK_BYTES = 64 << 20
_calls = itertools.count()


class DistributedError(RuntimeError):
    """A distributed run failed on some rank, or lost a rank."""


def shard_bounds(m: int, rank: int, world: int) -> tuple[int, int]:
    """Members ``[start, stop)`` of ``rank``: an even split, ``[r*M//W, (r+1)*M//W)``."""
    return rank * m // world, (rank + 1) * m // world


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be > 0 seconds, got {text!r}")
    return value


def _init_group(device_type: str) -> bool:
    """Initialize the default group from torchrun's variables; False without them."""
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"distributed=True: RANK and WORLD_SIZE are set but {', '.join(missing)} "
                         "is not; start the run with torchrun")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        local, count = _local_rank(int(os.environ["RANK"])), torch.cuda.device_count()
        if local >= count:
            raise ValueError(f"distributed=True: LOCAL_RANK is {local}, but this machine has {count} CUDA "
                             "device(s): start at most one process per GPU (torchrun --nproc-per-node)")
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=_seconds(TIMEOUT_ENV, 600.0)))
    atexit.register(_destroy_group)
    return True


#: False once a distributed run failed: its group may hold a dead peer, and tearing it
#: down (NCCL) could wait on it, so it is left to the end of the process.
_group_healthy = True


def _destroy_group() -> None:
    """At exit: tear down the group this module set up, unless a run failed on it."""
    import torch.distributed as dist

    if _group_healthy and dist.is_initialized():
        dist.destroy_process_group()


def _local_rank(rank: int) -> int:
    local = os.environ.get("LOCAL_RANK")
    if local is not None:
        return int(local)
    count = torch.cuda.device_count()
    return rank % count if count else 0


class _Watch:
    """Heartbeats and "done" reports of the ranks, in the group's key-value store."""

    def __init__(self, store, rank: int, world: int):
        import torch.distributed as dist

        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.store = dist.PrefixStore(f"fastneuron/attempt{attempt}/run{next(_calls)}/", store)
        self.rank, self.world = rank, world
        self.peer_timeout = _seconds(PEER_TIMEOUT_ENV, 60.0)
        self._stop = threading.Event()
        self._call("starting", self._beat)  # the store may already be gone with a dead rank 0
        self._thread = threading.Thread(target=self._beating, name="fastneuron-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self.store.add(f"hb{self.rank}", 1)

    def _beating(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._beat()
            except Exception:  # the store is gone: the main thread finds out and says so
                return

    def stop(self) -> None:
        # Joined, so that the thread is never inside a store call when the process exits.
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except DistributedError:
            raise
        except Exception as exc:
            raise DistributedError(
                f"fastneuron: rank {self.rank} of {self.world} lost contact with the run's key-value store "
                f"while {what} (it lives with rank 0 or with torchrun's agent: did that process die?): {exc}"
            ) from None

    def post(self, key: str, message: dict) -> None:
        self._call("reporting", self.store.set, key, json.dumps(message))

    def _wait(self, keys: dict, what: str) -> dict:
        """Wait for ``keys`` ({key: rank whose heartbeat vouches for it}); their messages."""
        got: dict = {}
        seen: dict = {}
        pause = min(1.0, 0.05 * max(1, len(keys)) ** 0.5)
        while len(got) < len(keys):
            now = time.monotonic()
            for key, peer in keys.items():
                if key in got:
                    continue
                if self._call(what, self.store.check, [key]):
                    got[key] = json.loads(self._call(what, self.store.get, key).decode())
                    continue
                beats = self._call(what, self.store.add, f"hb{peer}", 0)
                if peer not in seen or seen[peer][0] != beats:
                    seen[peer] = (beats, now)
                elif now - seen[peer][1] > self.peer_timeout:
                    raise DistributedError(
                        f"fastneuron: rank {peer} of {self.world} stopped: no heartbeat for "
                        f"{self.peer_timeout:g} s while rank {self.rank} was {what} (its process died, "
                        f"or its machine is gone; {PEER_TIMEOUT_ENV} sets the limit). The run is abandoned.")
            time.sleep(pause)
        return got

    def wait_done(self) -> dict:
        """Rank 0: every other rank's report, by rank."""
        keys = {f"done{p}": p for p in range(self.world) if p != self.rank}
        got = self._wait(keys, "waiting for the other ranks to finish their shards")
        return {keys[k]: v for k, v in got.items()}

    def wait_verdict(self) -> dict:
        return self._wait({"verdict": 0}, "waiting for rank 0")["verdict"]


def run_distributed(spec: RunSpec) -> Optional[TrainResult]:
    """Run ``spec`` (``distributed=True``) sharded across the ranks: each rank runs its
    shard through the engine; rank 0 returns the whole result, the other ranks None."""
    global _group_healthy
    import torch.distributed as dist

    if not _init_group(spec.device.type):
        warnings.warn("fastneuron: distributed=True, but torch.distributed is not initialized and RANK/WORLD_SIZE "
                      "are not set (start the run with torchrun): training in this process alone",
                      RuntimeWarning, stacklevel=3)
        return engine.run(dataclasses.replace(spec, distributed=False))

    rank, world = dist.get_rank(), dist.get_world_size()
    m = len(spec)
    b0, b1 = shard_bounds(m, rank, world)
    dev = torch.device("cuda", _local_rank(rank)) if spec.device.type == "cuda" else spec.device
    if dev.type == "cuda" and dev.index < torch.cuda.device_count():
        torch.cuda.set_device(dev)
    mine = spec.shard(b0, b1, dev, suffix=f".rank{rank}", progress=spec.progress if rank == 0 else False)
    watch = _Watch(dist.distributed_c10d._get_default_store(), rank, world)
    try:
        fail = os.environ.get(TEST_FAIL_ENV, "")
        _test_fail(fail, rank, "before")
        report: dict = {"ok": True}
        shard = None
        try:
            if b1 > b0:
                shard = engine.run(mine)
            # Every rank was given all members: compare what each was given, in full.
            report["members"] = spec.digest
            report["settings"] = {**spec.run_settings, "backend": mine.backend}
        except Exception as exc:
            hint = ""
            if spec.resume is not None and "resume:" in str(exc):
                hint = f" (a distributed run resumes with as many ranks as it started with, here {world})"
            error = f"{type(exc).__name__}: {exc}{hint}"
            if rank != 0:
                watch.post(f"done{rank}", {"ok": False, "error": error})
                raise
            watch.post("verdict", {"ok": False, "error": f"rank 0 failed: {error}"})
            raise DistributedError(f"fastneuron: rank 0 of {world} failed: {error}") from exc
        _test_fail(fail, rank, "after")

        if rank != 0:
            watch.post(f"done{rank}", report)
            verdict = watch.wait_verdict()
            if not verdict["ok"]:
                raise DistributedError(f"fastneuron: rank 0 abandoned the run: {verdict['error']}")
        else:
            try:
                _check_reports(report, watch.wait_done(), world)
            except DistributedError as exc:
                watch.post("verdict", {"ok": False, "error": str(exc)})
                raise
            watch.post("verdict", {"ok": True})
        out = _gather(shard, spec, rank, world, dev)
    except BaseException:
        _group_healthy = False
        raise
    finally:
        watch.stop()
    if rank != 0:
        return None
    whole = spec.shard(0, m, dev, suffix="", progress=None)  # the whole run, as rank 0 ran it
    return whole.result(out["weight"], out["bias"], out["diverged_at"], out.get("history_weight"),
                        out.get("history_bias"), world_size=world)


def _test_fail(spec: str, rank: int, when: str) -> None:
    if not spec:
        return
    who, _, at = spec.partition(":")
    if int(who) == rank and (at or "before") == when:
        print(f"fastneuron: {TEST_FAIL_ENV}={spec}: rank {rank} exits {when} training", file=sys.stderr, flush=True)
        os._exit(1)


def _check_reports(mine: dict, reports: dict, world: int) -> None:
    for p in sorted(reports):
        r = reports[p]
        if not r["ok"]:
            raise DistributedError(f"fastneuron: rank {p} of {world} failed: {r['error']}")
        if r["members"] != mine["members"] or r["settings"] != mine["settings"]:
            raise DistributedError(f"fastneuron: rank {p} of {world} was given other members or settings "
                                   "than rank 0: every rank must be given the same arguments")


def _gather(shard: Optional[TrainResult], spec: RunSpec, rank: int, world: int,
            dev: torch.device) -> Optional[dict]:
    """The shards' final arrays, gathered to rank 0 (None elsewhere) as raw 32-bit words."""
    import torch.distributed as dist

    m, n_logged, log_every = len(spec), spec.n_logged, spec.log_every
    cols = 4 + 2 * n_logged  # weight, bias, diverged_at (two words), history weight and bias
    sizes = [shard_bounds(m, p, world) for p in range(world)]
    n_max = max(b - a for a, b in sizes)
    n_mine = sizes[rank][1] - sizes[rank][0]
    rows = max(1, _GATHER_CHUNK_BYTES // (4 * cols))
    # NCCL moves CUDA tensors only (one GPU per rank); gloo, or a "cpu:gloo,cuda:nccl" group, CPU tensors.
    comm_dev = torch.device("cpu")
    if dist.get_backend() == "nccl":
        comm_dev = dev if dev.type == "cuda" else torch.device("cuda", _local_rank(rank))

    out = None
    if rank == 0:
        out = {"weight": torch.empty(m, dtype=torch.float32), "bias": torch.empty(m, dtype=torch.float32),
               "diverged_at": torch.empty(m, dtype=torch.int64)}
        if log_every:
            out["history_weight"] = torch.empty(n_logged, m, dtype=torch.float32)
            out["history_bias"] = torch.empty(n_logged, m, dtype=torch.float32)
    for i in range(0, n_max, rows):
        r = min(rows, n_max - i)
        buf = torch.zeros(r, cols, dtype=torch.int32)
        k = max(0, min(i + r, n_mine) - i)
        if k:
            lo, hi = i, i + k
            buf[:k, 0] = shard.weight[lo:hi].view(torch.int32)
            buf[:k, 1] = shard.bias[lo:hi].view(torch.int32)
            buf[:k, 2:4] = shard.diverged_at[lo:hi].contiguous().view(torch.int32).view(k, 2)
            if n_logged:
                buf[:k, 4:4 + n_logged] = shard.history_weight[:, lo:hi].t().view(torch.int32)
                buf[:k, 4 + n_logged:] = shard.history_bias[:, lo:hi].t().view(torch.int32)
        buf = buf.to(comm_dev)
        parts = [torch.empty_like(buf) for _ in range(world)] if rank == 0 else None
        try:
            dist.gather(buf, parts, dst=0)
        except Exception as exc:
            raise DistributedError(f"fastneuron: rank {rank} of {world}: gathering the results failed "
                                   f"(a rank died during the gather?): {exc}") from None
        if rank != 0:
            continue
        for p, part in enumerate(parts):
            start, stop = sizes[p]
            k = max(0, min(i + r, stop - start) - i)
            if not k:
                continue
            part = part[:k].cpu()
            lo, hi = start + i, start + i + k
            out["weight"].view(torch.int32)[lo:hi] = part[:, 0]
            out["bias"].view(torch.int32)[lo:hi] = part[:, 1]
            out["diverged_at"].view(torch.int32).view(m, 2)[lo:hi] = part[:, 2:4]
            if n_logged:
                out["history_weight"].view(torch.int32)[:, lo:hi] = part[:, 4:4 + n_logged].t()
                out["history_bias"].view(torch.int32)[:, lo:hi] = part[:, 4 + n_logged:].t()
    return out
