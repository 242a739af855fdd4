"""``fastneuron.train`` and ``fastneuron.grid``."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import time
import warnings
from typing import Optional

import numpy as np
import torch

from . import _validate as V
from ._driver import Progress, block_members, fresh_state, make_stepper, run_block, take_members
from .checkpoint import load_checkpoint, members_digest, save_checkpoint
from .reference import Problem, State, StepOptions
from .result import TrainResult


def grid(seeds, lrs, **per_member) -> dict:
    """The product of seeds, learning rates and any other per-member option.

    Returns a dict of equal-length lists to pass on: ``train(**grid(seeds=range(10),
    lrs=[1e-3, 1e-2]), steps=100)``. The first argument varies slowest, as in
    ``itertools.product``: member ``i`` of ``grid(seeds=S, lrs=L)`` has seed
    ``S[i // len(L)]`` and lr ``L[i % len(L)]``.
    """
    names = ["seeds", "lrs", *per_member]
    axes = [list(seeds), [lrs] if np.isscalar(lrs) else list(lrs)]
    axes += [[v] if np.isscalar(v) else list(v) for v in per_member.values()]
    for name, axis in zip(names, axes):
        if not axis:
            raise ValueError(f"{name} is empty: a grid needs at least one value on each axis")
    columns = zip(*itertools.product(*axes))
    return {name: list(col) for name, col in zip(names, columns)}


_warned: set = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def triton_usable(device: torch.device) -> Optional[str]:
    """None when the Triton backend can run on ``device``, else the reason it cannot."""
    if sys.platform != "linux":
        return "Triton is only installed on Linux"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton needs a CUDA device (or TRITON_INTERPRET=1, set before import, on CPU)"
    return None


def compile_usable(device: torch.device) -> Optional[str]:
    """None when ``torch.compile`` can build kernels for ``device``, else why not."""
    if device.type == "cpu" and not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")):
        return "torch.compile on CPU needs a C++ compiler (g++), and none is on PATH"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch.compile on CUDA needs triton"
    return None


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto``: triton on CUDA, compile on CPU, eager (with one warning) when neither runs."""
    if backend == "triton":
        why = triton_usable(device)
        if why:
            raise ValueError(f"backend 'triton' cannot run on {device}: {why}")
    elif backend == "compile":
        why = compile_usable(device)
        if why:
            raise ValueError(f"backend 'compile' cannot run on {device}: {why}")
    elif backend == "auto":
        first = "triton" if device.type == "cuda" else "compile"
        why = triton_usable(device) if first == "triton" else compile_usable(device)
        if why is None:
            return first
        if first == "triton" and compile_usable(device) is None:
            _warn_once(f"fastneuron: backend 'auto' uses 'compile' on {device}: {why}")
            return "compile"
        _warn_once(f"fastneuron: backend 'auto' falls back to 'eager' on {device}: {why}")
        return "eager"
    return backend


def train(
    seeds,
    lrs,
    steps: int,
    *,
    batch_size: int = 1,
    log_every: Optional[int] = None,
    backend: str = "auto",
    device=None,
    momentum=0.0,
    weight_decay=0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    a: float = 2.0,
    c: float = 1.0,
    lo: float = 1.0,
    hi: float = 5.0,
    progress: Optional[bool] = None,
    checkpoint=None,
    checkpoint_every: float = 5.0,
    resume=None,
    member_block: Optional[int] = None,
    distributed: bool = False,
) -> TrainResult:
    """Train one ``nn.Linear(1, 1)`` per member by per-sample SGD, as SPEC.md says.

    Member ``m`` has ``seeds[m]`` (an integer in [0, 2**64)) and ``lrs[m]``; ``lrs``,
    ``momentum`` and ``weight_decay`` take a scalar (every member) or one value per
    member, ``dampening`` and ``nesterov`` are run-wide, all as in ``torch.optim.SGD``.
    The target is ``a*x + c`` with ``x ~ U[lo, hi)``, ``batch_size`` samples a step.
    ``log_every=k`` keeps (w, b) after steps 0, k, 2k, ...

    ``backend``: ``"auto"`` (triton on CUDA, compile on CPU), ``"eager"``,
    ``"compile"`` or ``"triton"``; ``device`` defaults to CUDA when present.
    ``progress`` shows a bar on stderr for runs past about 2 s (None: when stderr is
    a terminal). ``checkpoint=PATH`` saves the state there atomically every
    ``checkpoint_every`` seconds and at the end; ``resume=PATH`` continues from such
    a file (same settings and members, else ValueError) and ends bit for bit where an
    uninterrupted run ends. Members are trained in blocks of ``member_block``
    (default: as many as a quarter of the free memory holds).

    ``distributed=True`` (under torchrun, or with ``torch.distributed`` initialized)
    shards the members across the processes, each on its own device; rank 0 returns
    the whole result, bit for bit as one process, and the other ranks return None.
    Checkpoints go to ``checkpoint + ".rank{r}"``. See :mod:`fastneuron.distributed`.
    """
    seeds64 = V.seeds_to_int64(seeds)
    m = seeds64.numel()
    if m == 0:
        raise ValueError("seeds is empty: a run needs at least one member")
    lr32 = V.per_member("lrs", lrs, m, lo=0.0, lo_open=True)
    mu32 = V.per_member("momentum", momentum, m, lo=0.0, lo_open=False, hi=1.0)
    wd32 = V.per_member("weight_decay", weight_decay, m, lo=0.0, lo_open=False)
    steps = V.check_int("steps", steps, 0)
    batch_size = V.check_int("batch_size", batch_size, 1)
    if log_every is not None:
        log_every = V.check_int("log_every", log_every, 1)
    dampening = V.check_float("dampening", dampening)
    if not 0.0 <= dampening < 1.0:
        raise ValueError(f"dampening must be in [0, 1), got {dampening}")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
    if nesterov and not bool((mu32 > 0).all()):
        raise ValueError("nesterov=True needs momentum > 0 for every member")
    a, c = V.check_float("a", a), V.check_float("c", c)
    lo, hi = V.check_float("lo", lo), V.check_float("hi", hi)
    if not np.float32(lo) < np.float32(hi):
        raise ValueError(f"lo must be < hi (in float32), got lo={lo}, hi={hi}")
    V.check_float("hi - lo", hi - lo)
    checkpoint_every = V.check_float("checkpoint_every", checkpoint_every)
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 seconds, got {checkpoint_every}")
    if member_block is not None:
        member_block = V.check_int("member_block", member_block, 1)
    V.check_backend(backend)
    if distributed:
        from .distributed import train_distributed

        return train_distributed(seeds64, lr32, mu32, wd32, steps, device=device, progress=progress,
                                 checkpoint=checkpoint, resume=resume, batch_size=batch_size,
                                 log_every=log_every, backend=backend, dampening=dampening,
                                 nesterov=bool(nesterov), a=a, c=c, lo=lo, hi=hi,
                                 checkpoint_every=checkpoint_every, member_block=member_block)
    dev = V.check_device(device)
    backend = resolve_backend(backend, dev)
    n_logged = len(range(0, steps, log_every)) if log_every else 0
    member_block = _member_block(m, n_logged, dev, member_block)

    settings = dict(steps=steps, batch_size=batch_size, a=a, c=c, lo=lo, hi=hi,
                    dampening=dampening, nesterov=bool(nesterov), log_every=log_every,
                    backend=backend, device=str(dev))
    opts = StepOptions(batch_size=batch_size, weight_decay=bool((wd32 != 0).any()),
                       momentum=bool((mu32 != 0).any()), nesterov=bool(nesterov))
    f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=dev)  # noqa: E731
    prob = Problem(a=f32(a), c=f32(c), lo=f32(lo), span=f32(np.float32(np.float64(hi) - np.float64(lo))),
                   batch=f32(batch_size), one_minus_dampening=f32(np.float32(1.0 - dampening)))

    # Results and state of the whole run, on the host, filled block by block. A run of
    # one block on the CPU adopts its state tensors instead of copying them: with the
    # int32 seed words and broadcast scalars, that took a 2**20-member run from 104 to
    # 44 bytes a member above the caller's inputs.
    out = dict.fromkeys(("weight", "bias", "diverged_at", "buf_weight", "buf_bias"))
    out["history_weight"] = torch.empty(n_logged, m, dtype=torch.float32) if log_every else None
    out["history_bias"] = torch.empty(n_logged, m, dtype=torch.float32) if log_every else None
    digest = members_digest(seeds64, lr32, mu32, wd32) if (checkpoint or resume) else ""
    start, t_start = 0, 0
    if resume is not None:
        meta, saved = load_checkpoint(resume, settings=settings, digest=digest)
        for k, v in saved.items():
            out[k] = v
        start, t_start = meta["block_start"], meta["step"]
        member_block = max(1, meta["block_stop"] - meta["block_start"])

    stepper = make_stepper(backend)
    bar = Progress(progress, steps, m)
    last_save = [time.monotonic()]

    def save(b0: int, b1: int, t: int, state: Optional[State], hist) -> None:
        if state is not None:
            _store_block(out, m, b0, b1, state, hist)
        save_checkpoint(checkpoint, settings=settings, digest=digest, block_start=b0, block_stop=b1,
                        step=t, arrays=out)
        last_save[0] = time.monotonic()

    try:
        for b0 in range(start, m, member_block):
            b1 = min(m, b0 + member_block)
            # torch.compile specializes on a block of one member: give it a second.
            pad = 1 if backend == "compile" and b1 - b0 == 1 else 0
            hp = block_members((seeds64, lr32, mu32, wd32, opts.momentum, opts.weight_decay), b0, b1, dev, pad)
            hist = None
            if log_every and dev.type == "cpu" and not pad and b1 - b0 == m:
                hist = (out["history_weight"], out["history_bias"])
            elif log_every:
                hist = (take_members(out["history_weight"], b0, b1, dev, pad, dim=1),
                        take_members(out["history_bias"], b0, b1, dev, pad, dim=1))
            if b0 == start and t_start:
                state = State(*(None if out[k] is None else take_members(out[k], b0, b1, dev, pad)
                                for k in ("weight", "bias", "buf_weight", "buf_bias", "diverged_at")))
                t = t_start
                bar.update(t, b1 - b0, timed=False)
            else:
                state, t = fresh_state(stepper, hp, opts), 0

            def on_chunk(t_now, state_now, n, b0=b0, b1=b1, hist=hist):
                bar.update(n, b1 - b0)
                if checkpoint is not None and t_now < steps and time.monotonic() - last_save[0] >= checkpoint_every:
                    save(b0, b1, t_now, state_now, hist)

            state = run_block(stepper, state, t, steps, hp, prob, opts, log_every, hist, on_chunk)
            _store_block(out, m, b0, b1, state, hist)
            if checkpoint is not None and b1 < m and time.monotonic() - last_save[0] >= checkpoint_every:
                save(b1, min(m, b1 + member_block), 0, None, None)
    finally:
        bar.close()
    # The last block's constants and the stepper's spare buffers are no longer needed:
    # let their memory serve the result below (peak memory, see ``out`` above).
    hp = stepper = state = None
    if checkpoint is not None:
        save(m, m, steps, None, None)

    w, b, div = out["weight"], out["bias"], out["diverged_at"]
    hist_steps = torch.arange(0, steps if log_every else 0, log_every or 1, dtype=torch.int64)
    diverged = div >= 0
    w.masked_fill_(diverged, float("nan"))  # out's own tensors: in place, no copy
    b.masked_fill_(diverged, float("nan"))
    hist_w, hist_b = out["history_weight"], out["history_bias"]
    if hist_w is not None:
        # A member's logged values from its divergence on are NaN (SPEC §4), whatever
        # non-finite (or, in the compiled backend, parked) value the arithmetic left.
        gone = diverged & (div <= hist_steps[:, None])
        hist_w.masked_fill_(gone, float("nan"))
        hist_b.masked_fill_(gone, float("nan"))
    return TrainResult(
        seeds=seeds64.numpy().view(np.uint64).copy(), lrs=lr32, momentum=mu32, weight_decay=wd32,
        weight=w, bias=b, diverged_at=div, settings=settings, history_steps=hist_steps,
        history_weight=hist_w, history_bias=hist_b,
    )


def _store_block(out: dict, m: int, b0: int, b1: int, state: State, hist) -> None:
    """Put the state of members [b0, b1) of m into ``out`` (host arrays, allocated on first use)."""
    n = b1 - b0
    for key, x in zip(("weight", "bias", "buf_weight", "buf_bias", "diverged_at"), state):
        if x is None:
            continue
        if n == m and x.device.type == "cpu" and x.numel() == m:
            out[key] = x  # the whole run in one block, on the host: adopt, do not copy
            continue
        if out[key] is None:
            out[key] = torch.empty(m, dtype=x.dtype)
        out[key][b0:b1] = x[:n].cpu()
    if hist is not None and hist[0] is not out["history_weight"]:
        out["history_weight"][:, b0:b1] = hist[0][:, :n].cpu()
        out["history_bias"][:, b0:b1] = hist[1][:, :n].cpu()


#: Bytes of device memory one member of a block needs while it trains (state, the
#: spare state of the compiled backend, per-member constants and the temporaries of
#: the eager Philox), rounded up.
_BLOCK_BYTES_PER_MEMBER = 256
#: Bytes of host memory per member for the inputs and results (seed, lr, momentum,
#: weight decay, weight, bias, diverged_at, momentum buffers).
_HOST_BYTES_PER_MEMBER = 56


def _available_bytes(dev: torch.device) -> int:
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30  # unknown: assume a small machine


def _member_block(m: int, n_logged: int, dev: torch.device, member_block: Optional[int]) -> int:
    """How many members to train at once; ValueError when the run cannot fit at all."""
    host_need = m * (_HOST_BYTES_PER_MEMBER + 8 * n_logged)
    host_free = _available_bytes(torch.device("cpu"))
    if host_need > host_free:
        raise ValueError(f"seeds: {m} members with {n_logged} logged steps need about "
                         f"{host_need / 2**30:.1f} GiB of memory for inputs and results, and "
                         f"{host_free / 2**30:.1f} GiB is available; use fewer members or a larger log_every")
    if member_block is None:
        free = _available_bytes(dev) // 4
        member_block = max(1, free // (_BLOCK_BYTES_PER_MEMBER + 8 * n_logged))
    return min(m, member_block)
