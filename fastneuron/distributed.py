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

With ``out="DIR/"`` nothing is gathered: rank ``r`` writes its shard's results (and its
checkpoints) to ``DIR/part-{r:05d}`` as it trains (:mod:`fastneuron.part_writer`), an
empty part when it has no member; when every rank has reported its part done, rank 0
writes ``DIR/manifest.json``, waits for the others to read its verdict, and returns
``fastneuron.load(DIR)``. ``resume="DIR/"`` continues every part (same world size).

Setting up. If ``torch.distributed`` is already initialized, its default group is
used. Otherwise the group is initialized here from torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), with backend
``nccl`` for CUDA and ``gloo`` for CPU, and with a timeout of
``FASTNEURON_DIST_TIMEOUT`` seconds (default 600) for setting up and for the gather.
Without either, ``distributed=True`` trains in this process alone, with a warning.

Every rank was given all members and settings, and they must agree: before training,
each rank posts the SHA-256 digest of its members (``RunSpec.digest``: every seed, lr
and per-member option, not a sample) and its run settings, and a rank whose digest or
settings differ from rank 0's fails the run on every rank, naming what differs.

A dead peer is an error, not a hang, noticed while the others train. Each rank beats a
heartbeat counter in the group's key-value store every second from a background
thread, which (every ``CHECK_SECONDS`` while the rank trains its shard) also looks at
its peers: rank 0 at every other rank's heartbeat and reported failure, the other ranks
at rank 0's heartbeat and verdict. A rank whose heartbeat has not moved for
``FASTNEURON_DIST_PEER_TIMEOUT`` seconds (default 20) is declared dead, a store that
fails a call or has not answered for as long is declared lost (it lives with rank 0
or with torchrun's agent), and the training rank stops after its current chunk of
steps (``engine.run(between_chunks=...)``; the check itself costs no store call).
When its shard is trained, a rank posts "done" (or the error it met); rank 0 waits for
every "done" while it watches the heartbeats, and a rank that posted an error fails the
run with that error. Rank 0 then posts its verdict (at once, if it fails the run while
it trains), which the other ranks wait for while they watch rank 0's heartbeat. Every
rank ends in :class:`DistributedError`, one line naming the failed rank or the lost
store, or all of them enter the gather. Under torchrun, a process that dies also makes
torchrun stop its other processes.

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
import os
import sys
import warnings
from typing import Optional

import torch

from . import engine
from .distributed_watch import (  # noqa: F401  (re-exported: the errors and knobs of a run)
    ABANDON_SECONDS, CHECK_SECONDS, HEARTBEAT_SECONDS, PEER_TIMEOUT_ENV, PEER_TIMEOUT_SECONDS, DistributedError,
    _seconds, _Watch)
from .parts import load_parts
from .result import TrainResult
from .spec import RunSpec

#: Seconds for setting up the process group and for the gather (environment variable).
TIMEOUT_ENV = "FASTNEURON_DIST_TIMEOUT"
#: Test hook: ``R`` makes rank R exit (status 1) before it trains, ``R:during`` after
#: its first chunk of steps, ``R:after`` after it has trained its shard (and written its
#: checkpoint) but before it reports.
TEST_FAIL_ENV = "FASTNEURON_TEST_FAIL_RANK"

_GATHER_CHUNK_BYTES = 64 << 20


def shard_bounds(m: int, rank: int, world: int) -> tuple[int, int]:
    """Members ``[start, stop)`` of ``rank``: an even split, ``[r*M//W, (r+1)*M//W)``."""
    return rank * m // world, (rank + 1) * m // world


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


def run_distributed(spec: RunSpec) -> Optional[TrainResult]:
    """Run ``spec`` (``distributed=True``) sharded across the ranks: each rank runs its
    shard through the engine; rank 0 returns the whole result, the other ranks None."""
    global _group_healthy
    import torch.distributed as dist

    if not _init_group(spec.device.type):
        warnings.warn("fastneuron: distributed=True, but torch.distributed is not initialized and RANK/WORLD_SIZE "
                      "are not set (start the run with torchrun): training in this process alone",
                      RuntimeWarning, stacklevel=3)
        alone = dataclasses.replace(spec, distributed=False)
        result = engine.run(alone)
        if alone.out is None:
            return result
        alone.write_manifest([(0, len(alone))])
        return load_parts(alone.out)

    rank, world = dist.get_rank(), dist.get_world_size()
    m = len(spec)
    first, stop = shard_bounds(m, rank, world)
    dev = torch.device("cuda", _local_rank(rank)) if spec.device.type == "cuda" else spec.device
    if dev.type == "cuda" and dev.index < torch.cuda.device_count():
        torch.cuda.set_device(dev)
    mine = spec.shard(first, stop, dev, suffix=f".rank{rank}", progress=spec.progress if rank == 0 else False,
                      part=rank)
    watch = _Watch(dist.distributed_c10d._get_default_store(), rank, world)
    try:
        fail = os.environ.get(TEST_FAIL_ENV, "")
        _test_fail(fail, rank, "before")
        _compare_given(watch, spec, mine, rank, world)
        chunks = itertools.count()

        def between_chunks() -> None:
            if next(chunks) == 0:
                _test_fail(fail, rank, "during")
            watch.check()

        shard = None
        watch.training = True
        try:
            if stop > first or spec.out is not None:  # a parts directory has a part for every rank
                shard = engine.run(mine, between_chunks=between_chunks)
        except Exception as exc:
            if isinstance(exc, DistributedError):  # a peer or the store was lost: the watch said which
                error, failure = str(exc), exc
            else:
                hint = ""
                if spec.resume is not None and "resume:" in str(exc):
                    hint = f" (a distributed run resumes with as many ranks as it started with, here {world})"
                error = f"{type(exc).__name__}: {exc}{hint}"
                failure = DistributedError(f"fastneuron: rank 0 of {world} failed: {error}") if rank == 0 else exc
            try:  # tell the others at once; the store itself may be what was lost
                if rank != 0:
                    watch.post(f"done{rank}", {"ok": False, "error": error})
                else:
                    watch.abandon(error if failure is exc else f"rank 0 failed: {error}")
            except DistributedError:
                pass
            if failure is exc:
                raise
            raise failure from exc
        finally:
            watch.training = False
        _test_fail(fail, rank, "after")

        if rank != 0:
            watch.post(f"done{rank}", {"ok": True})
            verdict = watch.wait_verdict()
            if not verdict["ok"]:
                raise DistributedError(f"fastneuron: rank 0 abandoned the run: {verdict['error']}")
            if spec.out is not None:
                watch.acknowledge_verdict()
        else:
            try:
                _check_reports(watch, watch.wait_done(), world)
            except DistributedError as exc:
                watch.abandon(str(exc))
                raise
            if spec.out is not None:  # every part is done: the manifest makes the directory a result
                try:
                    spec.write_manifest([shard_bounds(m, p, world) for p in range(world)], world_size=world)
                except (OSError, ValueError) as exc:
                    error = f"fastneuron: rank 0 of {world} could not write {spec.out}/manifest.json: {exc}"
                    watch.abandon(error)
                    raise DistributedError(error) from exc
            watch.post("verdict", {"ok": True})
            if spec.out is not None:
                watch.wait_read()
        if spec.out is None:
            gathered = _gather(shard, spec, rank, world, dev)
    except BaseException:
        _group_healthy = False
        raise
    finally:
        watch.stop()
    if rank != 0:
        return None
    if spec.out is not None:
        return load_parts(spec.out)
    whole = spec.shard(0, m, dev, suffix="", progress=None)  # the whole run, as rank 0 ran it
    return whole.result(gathered["weight"], gathered["bias"], gathered["diverged_at"],
                        gathered.get("history_weight"), gathered.get("history_bias"), world_size=world)


def _test_fail(spec: str, rank: int, when: str) -> None:
    if not spec:
        return
    who, _, at = spec.partition(":")
    if int(who) == rank and (at or "before") == when:
        # One write, as __main__._say: the ranks share torchrun's stderr.
        sys.stderr.write(f"fastneuron: {TEST_FAIL_ENV}={spec}: rank {rank} exits {when} training\n")
        sys.stderr.flush()
        os._exit(1)


def _compare_given(watch: _Watch, spec: RunSpec, mine: RunSpec, rank: int, world: int) -> None:
    """Before training: DistributedError on every rank unless all ranks were given the same
    members (the full digest) and settings as rank 0."""
    given = {"members": spec.digest, "settings": {**spec.run_settings, "backend": mine.backend}}
    watch.post(f"given{rank}", given)
    if rank != 0:
        theirs = watch.wait_given()[0]
        differ = _differences(theirs, given)
        if differ:
            error = f"fastneuron: rank {rank} of {world} was given other arguments than rank 0 ({differ}): " \
                    "every rank must be given the same arguments"
            raise DistributedError(error)
        return
    theirs = sorted(watch.wait_given().items())
    errors = [f"rank {p} of {world} was given other arguments than rank 0 ({d})" for p, t in theirs
              if (d := _differences(given, t))]
    watch.gone.update(p for p, t in theirs if _differences(given, t))
    if errors:
        error = f"fastneuron: {'; '.join(errors)}: every rank must be given the same arguments"
        watch.abandon(error)
        raise DistributedError(error)


def _differences(ours: dict, theirs: dict) -> str:
    """What differs between two ranks' arguments, in words ("" if nothing)."""
    parts = []
    if theirs["members"] != ours["members"]:
        parts.append("the members differ: SHA-256 digests of all seeds, lrs and per-member options")
    keys = sorted(k for k in {*ours["settings"], *theirs["settings"]}
                  if ours["settings"].get(k) != theirs["settings"].get(k))
    if keys:
        parts.append(f"the settings differ: {', '.join(keys)}")
    return "; ".join(parts)


def _check_reports(watch: _Watch, reports: dict, world: int) -> None:
    for p in sorted(reports):
        r = reports[p]
        if not r["ok"]:
            watch.gone.add(p)
            raise DistributedError(f"fastneuron: rank {p} of {world} failed: {r['error']}")


def _gather(shard: Optional[TrainResult], spec: RunSpec, rank: int, world: int,
            dev: torch.device) -> Optional[dict]:
    """The shards' final arrays, gathered to rank 0 (None elsewhere) as raw 32-bit words."""
    import torch.distributed as dist

    m, n_logged, log_every = len(spec), spec.n_logged, spec.log_every
    d = spec.model.inputs  # a result's weight is (M,) for d = 1, (M, d) else; its history (L, M[, d])
    wshape, hshape = ((m,), (n_logged, m)) if d == 1 else ((m, d), (n_logged, m, d))
    # A row: weight (d words), bias, diverged_at (two words), history weight (L*d) and bias (L)
    hw0 = d + 3
    hb0 = hw0 + n_logged * d
    cols = hb0 + n_logged
    sizes = [shard_bounds(m, p, world) for p in range(world)]
    n_max = max(b - a for a, b in sizes)
    n_mine = sizes[rank][1] - sizes[rank][0]
    rows = max(1, _GATHER_CHUNK_BYTES // (4 * cols))
    # NCCL moves CUDA tensors only (one GPU per rank); gloo, or a "cpu:gloo,cuda:nccl" group, CPU tensors.
    comm_dev = torch.device("cpu")
    if dist.get_backend() == "nccl":
        comm_dev = dev if dev.type == "cuda" else torch.device("cuda", _local_rank(rank))

    gathered = None
    if rank == 0:
        gathered = {"weight": torch.empty(wshape, dtype=torch.float32), "bias": torch.empty(m, dtype=torch.float32),
                    "diverged_at": torch.empty(m, dtype=torch.int64)}
        if log_every:
            gathered["history_weight"] = torch.empty(hshape, dtype=torch.float32)
            gathered["history_bias"] = torch.empty(n_logged, m, dtype=torch.float32)
    for i in range(0, n_max, rows):
        r = min(rows, n_max - i)
        buf = torch.zeros(r, cols, dtype=torch.int32)
        k = max(0, min(i + r, n_mine) - i)
        if k:
            lo, hi = i, i + k
            buf[:k, 0:d] = shard.weight[lo:hi].reshape(k, d).view(torch.int32)
            buf[:k, d] = shard.bias[lo:hi].view(torch.int32)
            buf[:k, d + 1:d + 3] = shard.diverged_at[lo:hi].contiguous().view(torch.int32).view(k, 2)
            if n_logged:
                hist = shard.history_weight[:, lo:hi].reshape(n_logged, k, d).transpose(0, 1)
                buf[:k, hw0:hb0] = hist.reshape(k, n_logged * d).view(torch.int32)
                buf[:k, hb0:] = shard.history_bias[:, lo:hi].t().view(torch.int32)
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
            gathered["weight"].view(torch.int32).view(m, d)[lo:hi] = part[:, 0:d]
            gathered["bias"].view(torch.int32)[lo:hi] = part[:, d]
            gathered["diverged_at"].view(torch.int32).view(m, 2)[lo:hi] = part[:, d + 1:d + 3]
            if n_logged:
                hist = part[:, hw0:hb0].reshape(k, n_logged, d).transpose(0, 1)
                gathered["history_weight"].view(torch.int32).view(n_logged, m, d)[:, lo:hi] = hist
                gathered["history_bias"].view(torch.int32)[:, lo:hi] = part[:, hb0:].t()
    return gathered
