"""``fastneuron.train`` and ``fastneuron.grid``."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import sys
import time
import warnings
from typing import Optional

import numpy as np
import torch

from . import _validate as V
from .reference import Members, Problem, State, StepOptions, run_steps
from .result import TrainResult
from .rng import init_params, split_seeds

#: Steps per call of the eager reference: a multiple of 4 keeps every call aligned
#: on the data stream's blocks of four samples.
EAGER_CHUNK_STEPS = 4


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
) -> TrainResult:
    """Train one ``nn.Linear(1, 1)`` per member by per-sample SGD, as SPEC.md says.

    Member ``m`` has ``seeds[m]`` (an integer in [0, 2**64)) and ``lrs[m]``; ``lrs``,
    ``momentum`` and ``weight_decay`` take a scalar (every member) or one value per
    member. The target is ``a*x + c`` with ``x ~ U[lo, hi)``. ``log_every=k`` keeps
    (w, b) after steps 0, k, 2k, ... ``backend`` is ``"auto"`` (triton on CUDA,
    compile on CPU), ``"eager"``, ``"compile"`` or ``"triton"``; ``device`` defaults
    to CUDA when present. ``progress`` shows a bar on stderr for runs past 2 s
    (None: when stderr is a terminal).
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
    V.check_backend(backend)
    dev = V.check_device(device)
    backend = resolve_backend(backend, dev)

    settings = dict(steps=steps, batch_size=batch_size, a=a, c=c, lo=lo, hi=hi,
                    dampening=dampening, nesterov=bool(nesterov), log_every=log_every,
                    backend=backend, device=str(dev))
    opts = StepOptions(batch_size=batch_size, weight_decay=bool((wd32 != 0).any()),
                       momentum=bool((mu32 != 0).any()), nesterov=bool(nesterov))

    # torch.compile specializes on M == 1: give it a second member and drop it after.
    pad = 1 if backend == "compile" and m == 1 else 0
    def member_tensor(x):
        x = torch.cat([x, x[:1]]) if pad else x
        return x.to(dev)

    s_lo, s_hi = split_seeds(member_tensor(seeds64))
    f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=dev)  # noqa: E731
    prob = Problem(a=f32(a), c=f32(c), lo=f32(lo), span=f32(np.float32(np.float64(hi) - np.float64(lo))),
                   batch=f32(batch_size), one_minus_dampening=f32(np.float32(1.0) - np.float32(dampening)))
    hp = Members(s_lo=s_lo, s_hi=s_hi, neg_lr=-member_tensor(lr32),
                 momentum=member_tensor(mu32) if opts.momentum else None,
                 weight_decay=member_tensor(wd32) if opts.weight_decay else None)

    w, b, div, hist_steps, hist_w, hist_b = _run(backend, hp, prob, opts, steps, log_every, dev, progress)

    if pad:
        w, b, div = w[:m], b[:m], div[:m]
        if hist_w is not None:
            hist_w, hist_b = hist_w[:, :m], hist_b[:, :m]
    w, b, div = w.cpu(), b.cpu(), div.cpu()
    diverged = div >= 0
    nan = torch.tensor(float("nan"))
    w, b = torch.where(diverged, nan, w), torch.where(diverged, nan, b)
    if hist_w is not None:
        # A member's logged values from its divergence on are NaN (SPEC §4), whatever
        # non-finite value the arithmetic left there.
        gone = diverged & (div <= hist_steps[:, None])
        hist_w = torch.where(gone, nan, hist_w.cpu())
        hist_b = torch.where(gone, nan, hist_b.cpu())
    return TrainResult(
        seeds=seeds64.numpy().view(np.uint64).copy(), lrs=lr32, momentum=mu32, weight_decay=wd32,
        weight=w, bias=b, diverged_at=div, settings=settings, history_steps=hist_steps,
        history_weight=hist_w, history_bias=hist_b,
    )


def _run(backend, hp: Members, prob: Problem, opts: StepOptions, steps: int, log_every, dev, progress):
    """Run all steps on one backend; returns (w, b, diverged_at, hist_steps, hist_w, hist_b)."""
    m = hp.s_lo.numel()
    hist_steps = torch.arange(0, steps, log_every, dtype=torch.int64) if log_every else torch.zeros(0, dtype=torch.int64)
    hist_w = hist_b = None
    if log_every:
        hist_w = torch.empty(len(hist_steps), m, dtype=torch.float32, device=dev)
        hist_b = torch.empty_like(hist_w)

    bar = _progress_bar(progress, steps, m)
    try:
        if backend == "triton":
            from fastneuron.kernels.triton_sgd import train_triton

            w, b, div = train_triton(hp, prob, opts, steps, log_every=log_every, hist_w=hist_w,
                                     hist_b=hist_b, on_progress=bar.update)
            return w, b, div, hist_steps, hist_w, hist_b

        if backend == "compile":
            from fastneuron.kernels.compiled import CHUNK_STEPS, CompiledRunner, compiled_init

            chunk, init = CompiledRunner(), compiled_init
        else:
            CHUNK_STEPS, chunk, init = EAGER_CHUNK_STEPS, run_steps, init_params

        w0, b0 = init(hp.s_lo, hp.s_hi)
        buf = torch.zeros_like(w0) if opts.momentum else None
        state = State(w0, b0, buf, None if buf is None else buf.clone(),
                      torch.full((m,), -1, dtype=torch.int64, device=dev))
        t = 0
        while t < steps:
            n = min(CHUNK_STEPS, steps - t)
            t0 = torch.tensor(t, dtype=torch.int64, device=dev)
            state, rec = chunk(state, t0, hp, prob, nsteps=n, opts=opts, record=log_every is not None)
            if rec is not None:
                _keep_logged(rec, t, n, log_every, hist_w, hist_b)
            t += n
            bar.update(n)
        return state.weight, state.bias, state.diverged_at, hist_steps, hist_w, hist_b
    finally:
        bar.close()


def _keep_logged(rec, t: int, n: int, log_every: int, hist_w, hist_b) -> None:
    """Copy the rows of steps t .. t+n-1 that are logged (t % log_every == 0) into the history."""
    first = -(-t // log_every) * log_every
    for step in range(first, t + n, log_every):
        hist_w[step // log_every] = rec[0][step - t]
        hist_b[step // log_every] = rec[1][step - t]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: Optional[bool], steps: int, m: int):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    # delay=2: runs shorter than about two seconds show no bar at all.
    return tqdm(total=steps, unit="step", delay=2.0, file=sys.stderr, dynamic_ncols=True,
                postfix=f"{m} members", unit_scale=False)
