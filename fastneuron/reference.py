"""The eager reference: SPEC §3, §3b, §3d and §4, one float32 operation per line.

The fast backends do not copy this code. ``kernels/compiled.py`` hands
:func:`run_steps` to ``torch.compile``; the Triton kernel is checked against it
bit for bit. Every line below, and in the optimizer's and problem's code it calls
(:mod:`fastneuron.optim`, :mod:`fastneuron.problems`, whose samples, label noise and
Gaussian x come from :mod:`fastneuron.rng` and :mod:`fastneuron.normal`), is one
separately rounded float32 operation, as the SPEC asks: no fused multiply-add, no
reassociation, no float64 (but SPEC §3d's one float64 product of an lr and its
schedule's factor, and §3c's tables and float64 divisions, from the lrs as given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch

from .model import NeuronFlags, output_grad
from .rng import consecutive_words


@dataclass(frozen=True)
class StepConfig:
    """What the traced code depends on (Python values, fixed for a run): the batch
    size, the optimizer and problem classes and their flags, and whether the lr follows
    a schedule. Hashable: one compiled graph per config."""

    batch_size: int
    optimizer: type
    flags: Any
    problem: type
    problem_flags: Any = None  # None: the problem's defaults (no noise, uniform x)
    schedule: bool = False
    model_flags: Any = None  # None: v2's neuron (NeuronFlags()), SPEC §6

    @property
    def model(self) -> NeuronFlags:
        return NeuronFlags() if self.model_flags is None else self.model_flags


class Constants(NamedTuple):
    """Run-wide values as 0-dim float32 tensors."""

    problem: tuple  # the problem's constants (e.g. problems.LinearConstants)
    optimizer: tuple  # the optimizer's constants (e.g. optim.SGDConstants)
    batch: torch.Tensor  # float32(B): the divisor of the batch mean
    lr_factors: Optional[torch.Tensor] = None  # float64 (>= steps,): the lr schedule's f[t] (SPEC §3d)
    model: Optional[tuple] = None  # the model's constants (model.NeuronConstants), None: v2's neuron


class Members(NamedTuple):
    """Per-member constants of a block of members on its device, shape (M,).

    A value every member shares may be one value expanded (stride 0): neg_lr and
    neg_lr64 (one lr) and s_hi (seeds below 2**32, say). With ``s_lo_step`` 1, s_lo is
    one value expanded too, the first member's low word, and member i's is
    ``s_lo[0] + i`` (a range of seeds: the engine makes sure no low word wraps).
    :func:`dense_members` makes every tensor hold each member's own value.

    ``neg_lr64``: -lr in float64 as the user gave it (the Python float torch.optim
    computes with), present when the run's arithmetic uses it: an lr schedule (SPEC §3d)
    or an optimizer with ``LR_FLOAT64`` (Adam, SPEC §3c); None otherwise (then
    :func:`neg_lr64` reads ``neg_lr`` exactly as float64). ``neg_lr`` is its float32
    rounding."""

    s_lo: torch.Tensor  # int32 bit pattern of seed & 0xFFFFFFFF (rng.split_seeds)
    s_hi: torch.Tensor  # int32 bit pattern of seed >> 32
    neg_lr: torch.Tensor  # float32, -lr (negation is exact)
    options: tuple  # the optimizer's MemberOptions (fields None when off)
    problem_options: Optional[tuple] = None  # the problem's MemberOptions (None: none used)
    s_lo_step: int = 0  # 0: s_lo holds each member's word; 1: s_lo[0] + i (see above)
    neg_lr64: Optional[torch.Tensor] = None  # float64, -lr as given (see above), or None
    model_options: Optional[tuple] = None  # the model's MemberOptions (init_scale), None: none used


def neg_lr64(members: Members) -> torch.Tensor:
    """Each member's -lr in float64: ``members.neg_lr64``, or ``neg_lr`` (float32, exact in
    float64) when the members carry no float64 lr."""
    return members.neg_lr.to(torch.float64) if members.neg_lr64 is None else members.neg_lr64


def dense_members(members: Members) -> Members:
    """``members`` with each member's own values in contiguous tensors (``members``
    itself when they are already)."""
    s_lo, s_hi, neg_lr, lr64 = members.s_lo, members.s_hi, members.neg_lr, members.neg_lr64
    if not members.s_lo_step and s_hi.is_contiguous() and neg_lr.is_contiguous() and \
            (lr64 is None or lr64.is_contiguous()):
        return members
    if members.s_lo_step:
        s_lo = consecutive_words(int(s_lo[0]) & 0xFFFFFFFF, s_lo.numel(), s_lo.device)
    return members._replace(s_lo=s_lo, s_hi=s_hi.contiguous(), neg_lr=neg_lr.contiguous(), s_lo_step=0,
                            neg_lr64=None if lr64 is None else lr64.contiguous())


class State(NamedTuple):
    """What changes from step to step: (M,), the weight and its optimizer state (d, M) for
    d > 1 inputs (SPEC §6; the members are the last dimension of every tensor)."""

    weight: torch.Tensor
    bias: torch.Tensor
    weight_state: tuple  # the optimizer's state of the weight, in its state_names order
    bias_state: tuple  # ... and of the bias
    diverged_at: torch.Tensor  # int64, -1 while finite


class History(NamedTuple):
    """Where a stepper writes the logged steps: rows (L, M) on the block's device (the
    weight's (L, d, M) for d > 1); row ``r`` holds (w, b) after step ``r * log_every``
    of the whole run."""

    weight: torch.Tensor
    bias: torch.Tensor
    log_every: int


def seed_words(members: Members) -> tuple:
    """(s_lo, s_hi), each member's seed words; ValueError for a seed range's block as
    ``RunSpec.block`` builds it (``s_lo_step`` 1), which :func:`dense_members` expands."""
    if members.s_lo_step:
        raise ValueError("members.s_lo_step is 1 (a range of seeds, described): pass dense_members(members)")
    return members.s_lo, members.s_hi


def draw(members: Members, q, consts: Constants, config: StepConfig):
    """Samples 4q .. 4q+3 of each member's data stream: the problem's four (x, target) pairs."""
    flags = config.problem.Flags() if config.problem_flags is None else config.problem_flags
    return config.problem.draw(*seed_words(members), q, consts.problem, flags, members.problem_options)


def accumulate(w, b, samples, gw=None, gb=None, config: Optional[StepConfig] = None, consts=None):
    """Add the gradients of ``samples`` (pairs (x, target) of float32 tensors) at (w, b)
    to the sums (gw, gb), left to right; None starts a sum with its first term. The
    gradient dL/dz is the model's (SPEC §6e; v2's neuron: ``2*(w*x + b - target)``)."""
    flags = NeuronFlags() if config is None else config.model
    model_consts = None if consts is None else consts.model
    for x, target in samples:
        g = output_grad(w, b, x, target, flags, model_consts)
        gw = g * x if gw is None else gw + g * x
        gb = g if gb is None else gb + g
    return gw, gb


def finite(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M,) bool: every coordinate of w, and b, finite (SPEC §4)."""
    ok = torch.isfinite(w)
    if ok.dim() > 1:
        ok = ok.all(dim=0)
    return ok & torch.isfinite(b)


def apply_update(state: State, gw, gb, t, members: Members, consts: Constants, config: StepConfig,
                 track_divergence: bool = True) -> State:
    """End of step ``t`` (0-dim int64): the batch mean of the summed gradients, the
    optimizer's update of w and b, and the divergence check (SPEC §3, §3b, §4)."""
    if config.batch_size > 1:
        gw = gw / consts.batch
        gb = gb / consts.batch
    neg_lr = members.neg_lr
    if config.schedule:  # SPEC §3d: f32(-(float64(lr) * f[t])), the product in float64, lr as given
        # t.reshape(1): a tensor index into the host's table (no .item() in traced code)
        neg_lr = (neg_lr64(members) * consts.lr_factors[t.reshape(1)]).to(torch.float32)
    elif getattr(config.optimizer, "LR_FLOAT64", False):  # the update takes -lr in float64 (SPEC §3c)
        neg_lr = neg_lr64(members)
    update = config.optimizer.update
    w, w_state = update(config.flags, state.weight, gw, state.weight_state, t, neg_lr, members.options,
                        consts.optimizer)
    if config.model.bias:
        b, b_state = update(config.flags, state.bias, gb, state.bias_state, t, neg_lr, members.options,
                            consts.optimizer)
    else:  # nn.Linear(d, 1, bias=False): no b to update
        b, b_state = state.bias, state.bias_state
    diverged_at = state.diverged_at
    if track_divergence:  # SPEC §4
        newly = (diverged_at < 0) & ~finite(w, b)
        diverged_at = torch.where(newly, t, diverged_at)
    return State(w, b, w_state, b_state, diverged_at)


def step(state: State, samples, t, members: Members, consts: Constants, config: StepConfig,
         track_divergence: bool = True) -> State:
    """Step ``t`` (0-dim int64 tensor) on ``samples``: B pairs (x, target) of float32 tensors,
    all drawn with the old (w, b)."""
    gw, gb = accumulate(state.weight, state.bias, samples, config=config, consts=consts)
    return apply_update(state, gw, gb, t, members, consts, config, track_divergence)


def run_steps(state: State, t0, members: Members, consts: Constants, *, nsteps: int, config: StepConfig,
              record: bool = False, track_divergence: bool = True, observe=None):
    """Steps ``t0 .. t0 + nsteps - 1``; ``t0`` is a 0-dim int64 tensor with ``t0*B % 4 == 0``.

    Sample n = t*B + j is word ``n % 4`` of the data stream's block ``q = n // 4``;
    the alignment of ``t0`` makes ``n % 4`` a Python int, so each block of four
    samples costs one Philox call. Returns the new state and, when ``record``,
    the (nsteps, M) weights and biases after each step (else None).

    ``observe(k, state)``, when given, runs after step ``t0 + k`` (``k`` a Python int)
    with the state then: a caller that keeps only some steps' values takes them there
    instead of the whole record (``kernels/compiled.py``'s logged rows).

    ``track_divergence=False`` leaves ``diverged_at`` alone; callers that use it
    rely on non-finite w or b staying non-finite (``p + (-lr)*d`` of a non-finite
    p is never finite) and find the step afterwards (see ``kernels/compiled.py``).
    """
    batch = config.batch_size
    q0 = t0 * batch // 4
    block = None
    ws, bs = [], []
    for k in range(nsteps):
        samples = []
        for j in range(batch):
            s = k * batch + j
            if s % 4 == 0:
                block = draw(members, q0 + s // 4, consts, config)
            samples.append(block[s % 4])
        state = step(state, samples, t0 + k, members, consts, config, track_divergence)
        if observe is not None:
            observe(k, state)
        if record:
            ws.append(state.weight)
            bs.append(state.bias)
    history = (torch.stack(ws), torch.stack(bs)) if record and nsteps else None
    return state, history


def keep_logged(recorded, t: int, n: int, history: Optional[History]) -> None:
    """Copy the rows of steps t .. t+n-1 that are logged (step % log_every == 0) from
    ``recorded`` ((n, M) weights and biases, as :func:`run_steps` returns) into ``history``."""
    if history is None or recorded is None:
        return
    every = history.log_every
    for s in range(-(-t // every) * every, t + n, every):
        history.weight[s // every] = recorded[0][s - t]
        history.bias[s // every] = recorded[1][s - t]


def sample_steps(first: int, nsamples: int, batch: int, device=None):
    """For samples ``first .. first + nsamples - 1``: the step each belongs to (int64)
    and whether it is that step's last sample (bool), as :func:`run_samples` takes them."""
    n = torch.arange(first, first + nsamples, dtype=torch.int64, device=device)
    return n // batch, (n + 1) % batch == 0


def run_samples(state: State, partial, n0, steps, ends, members: Members, consts: Constants, *,
                config: StepConfig, record: bool = False, observe=None):
    """Samples ``n0 .. n0 + nsamples - 1`` of the data stream (``n0`` a 0-dim int64
    tensor, a multiple of 4), the same arithmetic as :func:`run_steps` bracketed by
    samples instead of steps: where step boundaries fall is data, not code, so one
    traced function serves every batch size with a fixed number of samples.

    ``steps`` and ``ends`` ((nsamples,), from :func:`sample_steps`) give each sample's
    step and whether it ends it; computed once on the host, not per member (an int64
    modulo per sample and member cost a third of the throughput). ``partial`` holds
    the gradient sums (gw, gb) of the step in progress; a step's sums start at -0.0,
    the identity of float32 addition (``-0.0 + v`` is ``v`` for every v, +0.0 and -0.0
    included), so each sum equals :func:`accumulate`'s bit for bit. After a step's last
    sample each member takes :func:`apply_update`'s values and its sums restart;
    elsewhere the computed update is discarded by a select. Divergence is not tracked
    (see ``track_divergence`` in :func:`run_steps`). Returns the new state, the new
    partial sums and, when ``record``, the (nsamples, M) weights and biases after each
    sample (else None); ``observe(i, state)``, when given, runs after sample ``n0 + i``
    (as in :func:`run_steps`).
    """
    gw, gb = partial
    restart_w, restart_b = torch.full_like(gw, -0.0), torch.full_like(gb, -0.0)
    q0 = n0 // 4
    block = None
    ws, bs = [], []
    for i in range(steps.shape[0]):
        if i % 4 == 0:
            block = draw(members, q0 + i // 4, consts, config)
        gw, gb = accumulate(state.weight, state.bias, [block[i % 4]], gw, gb, config, consts)
        end = ends[i]
        new = apply_update(state, gw, gb, steps[i], members, consts, config, track_divergence=False)
        state = State(torch.where(end, new.weight, state.weight), torch.where(end, new.bias, state.bias),
                      tuple(torch.where(end, x, y) for x, y in zip(new.weight_state, state.weight_state)),
                      tuple(torch.where(end, x, y) for x, y in zip(new.bias_state, state.bias_state)),
                      state.diverged_at)
        gw, gb = torch.where(end, restart_w, gw), torch.where(end, restart_b, gb)
        if observe is not None:
            observe(i, state)
        if record:
            ws.append(state.weight)
            bs.append(state.bias)
    history = (torch.stack(ws), torch.stack(bs)) if record and ws else None
    return state, (gw, gb), history
