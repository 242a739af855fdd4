"""The loop around the backends: member blocks, step chunks, history, progress and
checkpoints. Backends only advance a block of members by some steps."""

from __future__ import annotations

import sys
import time
from typing import Optional

import torch

from .reference import Members, Problem, State, StepOptions, run_steps
from .rng import init_params, split_seeds

#: Steps per call of the eager reference: a multiple of 4 keeps every call aligned
#: on the data stream's blocks of four samples.
EAGER_CHUNK_STEPS = 4


class EagerStepper:
    """The reference itself, four steps a call."""

    chunk_steps = EAGER_CHUNK_STEPS

    def init(self, hp: Members):
        return init_params(hp.s_lo, hp.s_hi)

    def __call__(self, state, t0, hp, prob, *, nsteps, opts, record):
        return run_steps(state, t0, hp, prob, nsteps=nsteps, opts=opts, record=record)


def make_stepper(backend: str):
    if backend == "compile":
        from fastneuron.kernels.compiled import CompiledStepper

        return CompiledStepper()
    if backend == "triton":
        from fastneuron.kernels.triton_sgd import TritonStepper

        return TritonStepper()
    return EagerStepper()


#: Seconds before the bar appears: shorter runs show none.
PROGRESS_DELAY_S = 2.0


class Progress:
    """A tqdm bar on stderr, shown only for runs longer than about 2 s."""

    def __init__(self, enabled: Optional[bool], total_steps: int, members: int):
        """``total_steps``: steps of the whole run; a block of k of the M members
        advances the bar by k/M of a step for each of its steps."""
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.members = members
        self.bar = None
        self._t0 = time.perf_counter()
        self._done = self._all = 0  # neuron-steps: timed here, and all
        if enabled and total_steps:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, unit="step", delay=PROGRESS_DELAY_S, file=sys.stderr,
                            dynamic_ncols=True, desc=f"{members} members")

    def update(self, steps: int, members: int, timed: bool = True) -> None:
        """``steps`` more steps done on a block of ``members`` (``timed=False``: done
        before this process started, by the run it resumes; not in the rate)."""
        if timed:
            self._done += steps * members
        self._all += steps * members
        if self.bar is not None:
            rate = self._done / max(time.perf_counter() - self._t0, 1e-9)
            self.bar.set_postfix_str(f"{rate:.3g} neuron-steps/s", refresh=False)
            self.bar.update(self._all // self.members - self.bar.n)  # whole steps, no float drift

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def take_members(x: torch.Tensor, b0: int, b1: int, dev, pad: int, *, dim: int = 0,
                 copy: bool = True) -> torch.Tensor:
    """Members [b0, b1) of a host array (along ``dim``) on ``dev``, plus ``pad`` copies of
    the first. ``copy=False`` allows a view, for callers that derive new tensors anyway."""
    x = x.narrow(dim, b0, b1 - b0)
    if pad:
        x = torch.cat([x, x.narrow(dim, 0, 1).expand(*([-1] * dim), pad)], dim=dim)
    return x.to(dev, copy=copy)


def block_members(hp_cpu, start: int, stop: int, dev, pad: int) -> Members:
    """Per-member constants of members [start, stop) on ``dev`` (``pad`` extra copies of the first).

    The seed words and -lr are new tensors anyway; momentum and weight decay are
    copied, since a view here would make torch.compile guard on its base.
    """
    seeds64, lr32, mu32, wd32, has_mu, has_wd = hp_cpu
    s_lo, s_hi = split_seeds(take_members(seeds64, start, stop, dev, pad, copy=False))
    return Members(s_lo=s_lo, s_hi=s_hi, neg_lr=-take_members(lr32, start, stop, dev, pad, copy=False),
                   momentum=take_members(mu32, start, stop, dev, pad) if has_mu else None,
                   weight_decay=take_members(wd32, start, stop, dev, pad) if has_wd else None)


def keep_logged(rec, t: int, n: int, log_every: int, hist_w, hist_b) -> None:
    """Copy the recorded rows of steps t .. t+n-1 that are logged (step % log_every == 0)."""
    first = -(-t // log_every) * log_every
    for step in range(first, t + n, log_every):
        hist_w[step // log_every] = rec[0][step - t]
        hist_b[step // log_every] = rec[1][step - t]


def run_block(stepper, state: State, t: int, steps: int, hp: Members, prob: Problem, opts: StepOptions,
              log_every, hist, on_chunk) -> State:
    """Advance one block of members from step ``t`` to ``steps``.

    ``hist`` is None or (hist_w, hist_b) of shape (L, block) on the device; ``on_chunk(t, state, n)``
    runs after each chunk.
    """
    dev = state.weight.device
    while t < steps:
        n = min(stepper.chunk_steps, steps - t)
        t0 = torch.tensor(t, dtype=torch.int64, device=dev)
        if getattr(stepper, "writes_history", False):
            state = stepper(state, t0, hp, prob, nsteps=n, opts=opts, log_every=log_every, hist=hist)
        else:
            state, rec = stepper(state, t0, hp, prob, nsteps=n, opts=opts, record=hist is not None)
            if rec is not None:
                keep_logged(rec, t, n, log_every, *hist)
        t += n
        on_chunk(t, state, n)
    return state


def fresh_state(stepper, hp: Members, opts: StepOptions) -> State:
    w0, b0 = stepper.init(hp)
    buf = torch.zeros_like(w0) if opts.momentum else None
    return State(w0, b0, buf, None if buf is None else torch.zeros_like(w0),
                 torch.full_like(w0, -1, dtype=torch.int64))
