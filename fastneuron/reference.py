"""The eager reference: SPEC §3, §3b and §4, one float32 operation per line.

The fast backends do not copy this code. ``fastneuron/kernels/compiled.py`` hands
:func:`run_steps` to ``torch.compile``; the Triton kernel is checked against it
bit for bit. Every line below is one separately rounded float32 operation, as the
SPEC asks: no fused multiply-add, no reassociation, no float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from .rng import data_block


@dataclass(frozen=True)
class StepOptions:
    """What the traced code depends on (Python values, fixed for a run).

    ``weight_decay`` / ``momentum`` say whether any member uses the option, so that
    a run without it carries none of its operations (SPEC §3b: an option that is
    off is skipped, not computed with zero).
    """

    batch_size: int = 1
    weight_decay: bool = False
    momentum: bool = False
    nesterov: bool = False


class Problem(NamedTuple):
    """Run-wide settings as 0-dim float32 tensors (tensors, not Python floats, so
    that compiled code neither specializes on them nor computes them in float64)."""

    a: torch.Tensor
    c: torch.Tensor
    lo: torch.Tensor
    span: torch.Tensor  # float32(hi - lo)
    batch: torch.Tensor  # float32(B): the divisor of the batch mean
    one_minus_dampening: torch.Tensor  # float32(1 - tau), rounded first (SPEC §3b)


class Members(NamedTuple):
    """Per-member constants, shape (M,). ``momentum``/``weight_decay`` are None when off."""

    s_lo: torch.Tensor  # int32 bit pattern of seed & 0xFFFFFFFF (rng.split_seeds)
    s_hi: torch.Tensor  # int32 bit pattern of seed >> 32
    neg_lr: torch.Tensor  # float32, -lr (negation is exact)
    momentum: Optional[torch.Tensor]
    weight_decay: Optional[torch.Tensor]


class State(NamedTuple):
    """What changes from step to step, shape (M,). Buffers are None without momentum."""

    weight: torch.Tensor
    bias: torch.Tensor
    buf_weight: Optional[torch.Tensor]
    buf_bias: Optional[torch.Tensor]
    diverged_at: torch.Tensor  # int64, -1 while finite


def sgd_update(p, grad, buf, first, hp: Members, prob: Problem, opts: StepOptions):
    """One parameter's ``torch.optim.SGD`` update (SPEC §3b). Returns (p, buf)."""
    d = grad
    if opts.weight_decay:
        wd = hp.weight_decay
        d = torch.where(wd != 0, d + wd * p, d)  # d = gp + wd*p
    if opts.momentum:
        mu = hp.momentum
        v = torch.where(first, d, mu * buf + prob.one_minus_dampening * d)
        d_m = d + mu * v if opts.nesterov else v
        d = torch.where(mu != 0, d_m, d)
        buf = v
    p = p + hp.neg_lr * d  # p.add_(d, alpha=-lr)
    return p, buf


def sgd_step(state: State, xs, t, hp: Members, prob: Problem, opts: StepOptions,
             track_divergence: bool = True) -> State:
    """Step ``t`` (0-dim int64 tensor) on the samples ``xs`` (B float32 tensors)."""
    w, b = state.weight, state.bias
    gw = gb = None
    for x in xs:  # the step's samples, all drawn with the old (w, b); sums left to right
        y = w * x + b
        target = prob.a * x + prob.c
        g = 2.0 * (y - target)  # dL/dy of (y - t)**2
        gw = g * x if gw is None else gw + g * x
        gb = g if gb is None else gb + g
    if len(xs) > 1:
        gw = gw / prob.batch
        gb = gb / prob.batch
    first = t == 0
    w, buf_w = sgd_update(w, gw, state.buf_weight, first, hp, prob, opts)
    b, buf_b = sgd_update(b, gb, state.buf_bias, first, hp, prob, opts)
    diverged_at = state.diverged_at
    if track_divergence:  # SPEC §4
        newly = (diverged_at < 0) & ~(torch.isfinite(w) & torch.isfinite(b))
        diverged_at = torch.where(newly, t, diverged_at)
    return State(w, b, buf_w, buf_b, diverged_at)


def run_steps(state: State, t0, hp: Members, prob: Problem, *, nsteps: int,
              opts: StepOptions, record: bool = False, track_divergence: bool = True):
    """Steps ``t0 .. t0 + nsteps - 1``; ``t0`` is a 0-dim int64 tensor with ``t0*B % 4 == 0``.

    Sample n = t*B + j is word ``n % 4`` of the data stream's block ``q = n // 4``;
    the alignment of ``t0`` makes ``n % 4`` a Python int, so each block of four
    samples costs one Philox call. Returns the new state and, when ``record``,
    the (nsteps, M) weights and biases after each step (else None).

    ``track_divergence=False`` leaves ``diverged_at`` alone; callers that use it
    rely on non-finite w or b staying non-finite (``p + (-lr)*d`` of a non-finite
    p is never finite) and find the step afterwards (see ``fastneuron/kernels/compiled.py``).
    """
    q0 = t0 * opts.batch_size // 4
    block = None
    ws, bs = [], []
    for k in range(nsteps):
        xs = []
        for j in range(opts.batch_size):
            s = k * opts.batch_size + j
            if s % 4 == 0:
                block = data_block(hp.s_lo, hp.s_hi, q0 + s // 4, prob.lo, prob.span)
            xs.append(block[s % 4])
        state = sgd_step(state, xs, t0 + k, hp, prob, opts, track_divergence)
        if record:
            ws.append(state.weight)
            bs.append(state.bias)
    history = (torch.stack(ws), torch.stack(bs)) if record and nsteps else None
    return state, history
