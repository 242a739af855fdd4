"""``backend="compile"``: chunks of the eager reference fused into one kernel each.

``torch.compile`` traces the reference itself (no copy of the step, so any optimizer
or problem of the reference runs here too) over a fixed number of samples a compiled
call (12, or 8 or 4, below). Inductor fuses the unrolled Philox rounds and updates into one loop
over members, so (w, b) stay in registers for the whole segment and x never touches
memory.

Two ways to cut a run into segments, by batch size B:

- B divides 12 (1, 2, 3, 4, 6, 12): a segment is K = 12 / B whole steps,
  :func:`fastneuron.reference.run_steps`. K = 12 at B = 1 is the fastest of
  K = 4, 8, 12, 16, 32 measured on 2 Zen 5 cores (K = 16 ran at half speed; figures
  in bench/results/README.md); every segment starts a Philox block.
- any other B: a segment is 8 consecutive samples of the data stream
  (:data:`CUT_SEGMENT_SAMPLES`), :func:`fastneuron.reference.run_samples`, which
  applies the update where a step ends (a select) and carries the gradient sums of an
  unfinished step to the next segment. Unrolling whole steps instead made the compile
  time grow with B (a 12-step chunk at B = 4 took 198 s to compile, B >= 8 did not
  finish in minutes); a fixed number of samples compiles in the same time for every B.
- with normals to draw (label noise, Gaussian x): 4 samples, either way.

One compiled graph serves every M (dim 0 is dynamic), every T (the segment's first
step or sample is a tensor) and every value of the settings (tensors too); what is
left over at the end of a run (less than a segment) runs the same functions
uncompiled.

Divergence (SPEC §4) is found once per call, not per step. A non-finite w or b
never becomes finite again (``p + (-lr)*d`` of a non-finite p is non-finite), so a
member that is non-finite after a call and was not before diverged inside it; the
stepper replays just those members eagerly from the call's start to find the step.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch.utils import _pytree as pytree

from fastneuron.reference import (Constants, History, Members, State, StepConfig, keep_logged, run_samples,
                                  run_steps, sample_steps, seed_words)
from fastneuron.rng import init_params

#: Samples per compiled call (see the module docstring for the measurement).
SEGMENT_SAMPLES = 12
#: Samples per compiled call when B does not divide SEGMENT_SAMPLES (segments cut by
#: samples, each with a possible update at every sample: a larger graph than whole
#: steps'). 8, not 12: a cold first call went from 31-33 s to 24-25 s for B in 5 .. 1024,
#: throughput per sample 0.77-0.84x of B = 1 (0.82-0.86x with 12; the cpu family 23
#: machine, bench/results/compile-batch-2026-11-30.txt).
CUT_SEGMENT_SAMPLES = 8
#: Steps the engine asks for per call: a whole number of segments for every B (24 * B is
#: a multiple of 12 and of 8); one progress update and checkpoint chance per chunk.
CHUNK_STEPS = 24

#: Each step config (batch size, optimizer and its flags, problem), history or device is
#: one more specialization of the same traced function; dynamo's default limit of 8
#: per function would refuse the ninth set. Applied only around fastneuron's calls.
_DYNAMO_CONFIG = {"recompile_limit": 256}


def _values(state: State) -> list:
    """The state's float tensors (w, b, then the optimizer's), without diverged_at."""
    return [state.weight, state.bias, *state.weight_state, *state.bias_state]


#: Samples per compiled call when the problem draws normals (label noise or Gaussian x,
#: SPEC §2b): each Box-Muller pair adds ~45 ops to the graph, and Inductor's code
#: generation costs about a millisecond per op and variant (see segment_samples).
NORMAL_SEGMENT_SAMPLES = 4


def segment_samples(config: StepConfig) -> int:
    """Samples per compiled call: :data:`NORMAL_SEGMENT_SAMPLES` when the problem draws
    normals, else :data:`SEGMENT_SAMPLES` when B divides it, else :data:`CUT_SEGMENT_SAMPLES`."""
    flags = config.problem_flags
    if flags is not None and (getattr(flags, "noise", False) or getattr(flags, "normal", False)):
        return NORMAL_SEGMENT_SAMPLES
    return SEGMENT_SAMPLES if SEGMENT_SAMPLES % config.batch_size == 0 else CUT_SEGMENT_SAMPLES


def _whole_steps(config: StepConfig) -> int:
    """Steps per segment when B divides the segment's samples, else 0 (segments cut by samples)."""
    n = segment_samples(config)
    return n // config.batch_size if n % config.batch_size == 0 else 0


def _segment_fn(state: State, partial, out: State, out_partial, first: torch.Tensor, where, members: Members,
                consts: Constants, *, config: StepConfig, record: bool):
    """One segment from step (whole steps) or sample ``first``, written into ``out``;
    ``where`` is :func:`~fastneuron.reference.sample_steps` of a segment of samples."""
    k = _whole_steps(config)
    if k:
        new, history = run_steps(state, first, members, consts, nsteps=k, config=config, record=record,
                                 track_divergence=False)
    else:
        new, new_partial, history = run_samples(state, partial, first, *where, members, consts, config=config,
                                                record=record)
        for dst, src in zip(out_partial, new_partial):
            dst.copy_(src)
    # Written into the caller's buffers: fresh outputs every chunk cost about 10% (the
    # first touch of new pages).
    for dst, src in zip(_values(out), _values(new)):
        dst.copy_(src)
    # 0 while every w and b is finite, NaN otherwise (inf*0 and NaN*0 are NaN): one
    # in-graph reduction a segment instead of per-step tracking (isfinite, compare and
    # an int64 select each step cost a third of the throughput). amax, not sum: a float
    # sum over more than 4096 members makes Inductor guard on M and compile a second graph.
    return history, _probe(new)


@functools.lru_cache(maxsize=None)
def compiled_segment(config: StepConfig, record: bool, device_type: str):
    """The compiled segment for this static config (compiled on first call)."""
    fn = functools.partial(_segment_fn, config=config, record=record)
    return torch.compile(fn, fullgraph=True, options=_options(device_type))


def _options(device_type: str) -> dict:
    options = {}
    if device_type == "cpu":
        # The graph is compiled at the first call's M; without this, a first call with
        # a few hundred members yields a loop that never runs on more than one thread.
        options["cpp.dynamic_threads"] = True
        # Trust the vector ISA read off the CPU's flags instead of test-compiling a probe
        # kernel for each candidate ISA and loading it in a subprocess: a cold first call
        # went from 32.4 to 25.7 s (B = 5, 2 members, empty Inductor cache, the cpu family 23
        # machine). A compiler without that ISA fails the kernel's own build, loudly.
        options["cpp.vec_isa_ok"] = True
    if device_type == "cuda":
        # Inductor's Triton kernels contract a*b + c into an FMA unless asked to keep
        # eager's separately rounded ops; SPEC §3 forbids the FMA.
        options["emulate_precision_casts"] = True
        # ... and lowers x / y to the approximate div.full.f32 unless asked for the IEEE
        # division (SPEC §2b's log, the batch mean, Adam); subnormals are kept as on a CPU.
        options["eager_numerics.division_rounding"] = True
        options["eager_numerics.disable_ftz"] = True
    return options


@functools.lru_cache(maxsize=None)
def _compiled_init(device_type: str):
    return torch.compile(init_params, fullgraph=True, options=_options(device_type))


#: Up to this many members the init runs eagerly: 5 ms at 2**16 on the 2-core cpu
#: family 23 machine, against about 12 s to compile the init graph cold (a third of a
#: first run's compile time). Above it, eager Philox costs a noticeable share of a short
#: run (145 ms at 2**20 members, linear in M), so the init is compiled.
EAGER_INIT_MEMBERS = 2**16


def compiled_init(s_lo: torch.Tensor, s_hi: torch.Tensor):
    """:func:`fastneuron.rng.init_params`, compiled (see :data:`EAGER_INIT_MEMBERS`)."""
    mark_members_dynamic((s_lo, s_hi))
    with torch._dynamo.config.patch(_DYNAMO_CONFIG):
        return _compiled_init(s_lo.device.type)(s_lo, s_hi)


def _leaves(tree):
    """The tensors of a state or members tuple (one level of nested tuples), without
    pytree's per-call cost: this runs every chunk."""
    for x in tree:
        if isinstance(x, tuple):
            yield from x
        else:
            yield x


def mark_members_dynamic(*trees) -> None:
    """Mark dim 0 (members) of every (M,) tensor as dynamic: one graph for all M."""
    for tree in trees:
        for x in _leaves(tree):
            # Once per tensor: marking costs microseconds a tensor, every chunk if repeated.
            if isinstance(x, torch.Tensor) and x.dim() == 1 and not hasattr(x, "_dynamo_dynamic_indices"):
                torch._dynamo.mark_dynamic(x, 0)


def _probe(state: State) -> torch.Tensor:
    """NaN when some w or b is not finite, else 0: the probe of a compiled segment (traced
    with it) and of an eager stretch."""
    return (state.weight * 0.0 + state.bias * 0.0).amax()


def _keep_logged_samples(recorded, first: int, n: int, batch: int, history: Optional[History]) -> None:
    """Copy into ``history`` the rows of ``recorded`` ((n, M), after each of samples
    ``first .. first + n - 1``) that end a logged step."""
    if history is None or recorded is None:
        return
    for i in range(n):
        done = first + i + 1
        if done % batch == 0 and (done // batch - 1) % history.log_every == 0:
            row = (done // batch - 1) // history.log_every
            history.weight[row] = recorded[0][i]
            history.bias[row] = recorded[1][i]


def _pick(tree, idx):
    """The members ``idx`` of every (M,) tensor in ``tree`` (0-dim tensors stay)."""
    return pytree.tree_map(lambda x: x[idx] if isinstance(x, torch.Tensor) and x.dim() == 1 else x, tree)


class CompiledStepper:
    """Runs the segments of one training run.

    The state a call starts from stays untouched until the call ends (members that
    diverge are replayed from it), so segments alternate between two more sets of
    buffers (state and gradient sums); the sets are reused from call to call.
    """

    chunk_steps = CHUNK_STEPS

    def __init__(self) -> None:
        self._pool: list = []  # [(State, (gw, gb) or None)], buffers of the block's shape

    def init(self, members: Members, config: StepConfig):
        s_lo, s_hi = seed_words(members)
        if s_lo.numel() <= EAGER_INIT_MEMBERS:
            return init_params(s_lo, s_hi)
        return compiled_init(s_lo, s_hi)

    def __call__(self, state: State, t0: int, members: Members, consts: Constants, *, nsteps: int,
                 config: StepConfig, history: Optional[History]) -> State:
        """Run steps ``t0 .. t0 + nsteps - 1``: whole segments compiled, the rest eager.

        Members found diverged are parked at the problem's rest point (where every
        gradient is 0) with zeroed optimizer state, so that they stop setting off the
        probe; they are reported as NaN (final values, and history from
        ``diverged_at`` on) whatever they hold.
        """
        start, record = state, history is not None
        spares = self._spares(state)
        segment = compiled_segment(config, record, state.weight.device.type)
        mark_members_dynamic(members)
        probes = []
        k, batch, n_seg = _whole_steps(config), config.batch_size, segment_samples(config)

        def compiled(cur: State, partial, first: int):
            (out, out_partial), spares[:] = spares[0], spares[::-1]
            out = out._replace(diverged_at=cur.diverged_at)
            mark_members_dynamic(cur, out, partial, out_partial)
            dev = cur.weight.device
            at = torch.tensor(first, dtype=torch.int64, device=dev)
            where = () if k else sample_steps(first, n_seg, batch, dev)
            with torch._dynamo.config.patch(_DYNAMO_CONFIG):
                recorded, probe = segment(cur, partial, out, out_partial, at, where, members, consts)
            probes.append(probe)
            return out, out_partial, recorded

        if k:  # segments of k whole steps
            t, stop = t0, t0 + nsteps
            while t < stop:
                n = min(k, stop - t)
                if n == k:
                    state, _, recorded = compiled(state, (), t)
                else:
                    state, recorded = run_steps(state, torch.tensor(t), members, consts, nsteps=n, config=config,
                                                record=record, track_divergence=False)
                    probes.append(_probe(state))
                keep_logged(recorded, t, n, history)
                t += n
        else:  # segments of n_seg samples, steps ending anywhere in them
            partial = (torch.full_like(state.weight, -0.0), torch.full_like(state.weight, -0.0))
            i, stop = t0 * batch, (t0 + nsteps) * batch
            while i < stop:
                n = min(n_seg, stop - i)
                if n == n_seg:
                    state, partial, recorded = compiled(state, partial, i)
                else:
                    state, partial, recorded = run_samples(state, partial, torch.tensor(i),
                                                           *sample_steps(i, n, batch, state.weight.device),
                                                           members, consts, config=config, record=record)
                    probes.append(_probe(state))
                _keep_logged_samples(recorded, i, n, batch, history)
                i += n
        if any(bool(torch.isnan(p)) for p in probes):
            state = self._replay_diverged(start, state, torch.tensor(t0), members, consts, nsteps, config)
        return state

    def _spares(self, state: State) -> list:
        """Two buffer sets (state, gradient sums) of ``state``'s shape, neither holding
        ``state`` itself; ``state`` joins the pool for the next call."""
        like = state.weight
        spares = []
        for s, partial in self._pool:
            if len(spares) < 2 and s.weight.shape == like.shape and s.weight is not like:
                spares.append((s, partial if partial is not None else (torch.empty_like(like), torch.empty_like(like))))
        while len(spares) < 2:
            spares.append((pytree.tree_map(torch.empty_like, state), (torch.empty_like(like), torch.empty_like(like))))
        self._pool = spares + [(state, None)]
        return list(spares)

    @staticmethod
    def _replay_diverged(state: State, out: State, start, members: Members, consts: Constants, nsteps: int,
                         config: StepConfig) -> State:
        """Find the step of each member that went non-finite in this chunk (replayed
        eagerly from the chunk's start), then park it (see ``__call__``)."""
        idx = (~(torch.isfinite(out.weight) & torch.isfinite(out.bias))).nonzero().squeeze(1)
        replay, _ = run_steps(_pick(state, idx), start, _pick(members, idx), consts, nsteps=nsteps, config=config)
        park_w, park_b = config.problem.rest_point(consts.problem)

        def put(x, v):
            return x.index_put((idx,), torch.as_tensor(v, dtype=x.dtype, device=x.device))

        return State(put(out.weight, park_w), put(out.bias, park_b),
                     tuple(put(x, 0.0) for x in out.weight_state), tuple(put(x, 0.0) for x in out.bias_state),
                     put(out.diverged_at, replay.diverged_at))
