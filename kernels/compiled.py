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

A log (``log_every=k``) keeps only its rows: a segment without a logged step runs the
unlogged graph; one with a logged step runs a second graph that also writes the state
after that step, picked by selects in registers (:func:`log_stride`; every k >= 12 at
B = 1 shares it), and the stepper copies that row into the history. Nothing records
every step (before issue 22 the compiled path returned each step's (w, b) and kept a
few of them). Its cost and the measurement: :class:`CompiledStepper`.

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
                                  finite, run_steps, sample_steps, seed_words)
from fastneuron.kernels.inductor_cache import inductor_backend
from fastneuron.model import NeuronFlags
from fastneuron.model import init_params as model_init
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


def _slots(config: StepConfig) -> int:
    """The states a segment passes through: one after each of its steps (whole steps) or samples."""
    return _whole_steps(config) or segment_samples(config)


def log_stride(config: StepConfig, log_every: int) -> int:
    """Slots between two logged states of one segment: ``log_every`` steps (times B in
    segments of samples) when a segment can end more than one logged step, else all its
    slots (one logged state at most, at any of them). The logged graph's key: every
    ``log_every`` of at least the steps a segment ends (12 at B = 1) shares one graph."""
    k = _whole_steps(config)
    ends = k or -(-segment_samples(config) // config.batch_size)
    return _slots(config) if log_every >= ends else log_every * (1 if k else config.batch_size)


def _segment_fn(state: State, partial, out: State, out_partial, first: torch.Tensor, where, members: Members,
                consts: Constants, picks: torch.Tensor, rows_out, *, config: StepConfig, stride: int):
    """One segment from step (whole steps) or sample ``first``, written into ``out``;
    ``where`` is :func:`~fastneuron.reference.sample_steps` of a segment of samples.

    ``stride`` > 0 (:func:`log_stride`; 0: no log): the logged states as well. Row r
    of ``ceil(slots / stride)`` is the state after slot ``picks[r]`` (int64, one per
    row), which lies in slots ``[r * stride, (r + 1) * stride)``; ``rows_out[2r]``
    and ``rows_out[2r + 1]`` get its (w, b), a select per candidate slot on the states
    the segment passes through, in registers: no (steps, M) record. A row past the
    segment's logged states (``picks[r]`` -1) holds any of its candidates."""
    k, n_slots = _whole_steps(config), _slots(config)
    kept: list = [None] * (-(-n_slots // stride) if stride else 0)

    def observe(i: int, cur: State) -> None:
        r = i // stride
        if i % stride == 0:  # the row's first candidate
            kept[r] = (cur.weight, cur.bias)
        else:
            hit = picks[r] == i
            kept[r] = (torch.where(hit, cur.weight, kept[r][0]), torch.where(hit, cur.bias, kept[r][1]))

    if k:
        new, _ = run_steps(state, first, members, consts, nsteps=k, config=config, track_divergence=False,
                           observe=observe if stride else None)
    else:
        new, new_partial, _ = run_samples(state, partial, first, *where, members, consts, config=config,
                                          observe=observe if stride else None)
        for dst, src in zip(out_partial, new_partial):
            dst.copy_(src)
    # Written into the caller's buffers: fresh outputs every chunk cost about 10% (the
    # first touch of new pages).
    for dst, src in zip(_values(out), _values(new)):
        dst.copy_(src)
    for r, (w, b) in enumerate(kept):
        rows_out[2 * r].copy_(w)
        rows_out[2 * r + 1].copy_(b)
    # 0 while every w and b is finite, NaN otherwise (inf*0 and NaN*0 are NaN): one
    # in-graph reduction a segment instead of per-step tracking (isfinite, compare and
    # an int64 select each step cost a third of the throughput). amax, not sum: a float
    # sum over more than 4096 members makes Inductor guard on M and compile a second graph.
    return _probe(new)


@functools.lru_cache(maxsize=None)
def compiled_segment(config: StepConfig, stride: int, device_type: str):
    """The compiled segment for this static config and log stride (0: no log; see
    :func:`log_stride`), compiled on first call."""
    fn = functools.partial(_segment_fn, config=config, stride=stride)
    return _compile(fn, device_type)


def _compile(fn, device_type: str):
    """``torch.compile(fn)`` with Inductor and :func:`_options`; on CPU Inductor compiles
    in the cache directory of this CPU kind and vector ISA (:mod:`.inductor_cache`: its
    own key leaves the ISA out, and code cached under another ISA fails to build or runs
    scalar), set only while it compiles, not around every call."""
    if device_type == "cpu":
        return torch.compile(fn, fullgraph=True, backend=inductor_backend(_options(device_type)))
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
    return _compile(init_params, device_type)


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
            if isinstance(x, torch.Tensor) and x.dim() in (1, 2) and not hasattr(x, "_dynamo_dynamic_indices"):
                torch._dynamo.mark_dynamic(x, x.dim() - 1)  # the members: last ((d, M) weights, SPEC §6)


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


def _logged_slots(first: int, config: StepConfig, every: int) -> list:
    """[(slot, row)] of the segment from step (whole steps) or sample ``first``: the
    offsets in it of the states after logged steps, and their history rows."""
    k = _whole_steps(config)
    if k:
        return [(s - first, s // every) for s in range(-(-first // every) * every, first + k, every)]
    batch, hits = config.batch_size, []
    for i in range(segment_samples(config)):
        done = first + i + 1
        if done % batch == 0 and (done // batch - 1) % every == 0:
            hits.append((i, (done // batch - 1) // every))
    return hits


def _pick(tree, idx):
    """The members ``idx`` of every (M,) tensor in ``tree`` (0-dim tensors stay)."""
    return pytree.tree_map(lambda x: x[..., idx] if isinstance(x, torch.Tensor) and x.dim() in (1, 2) else x, tree)


class CompiledStepper:
    """Runs the segments of one training run.

    The state a call starts from stays untouched until the call ends (members that
    diverge are replayed from it), so segments alternate between two more sets of
    buffers (state and gradient sums); the sets are reused from call to call.
    """

    chunk_steps = CHUNK_STEPS

    def __init__(self) -> None:
        self._pool: list = []  # [(State, (gw, gb) or None)], buffers of the block's shape
        self._row_buffers: tuple = ()  # a segment's logged (w, b), see _rows

    def init(self, members: Members, config: StepConfig):
        s_lo, s_hi = seed_words(members)
        if config.model != NeuronFlags():  # SPEC §6b's init: eager (d Philox calls a member)
            return model_init(s_lo, s_hi, config.model, members.model_options)
        if s_lo.numel() <= EAGER_INIT_MEMBERS:
            return init_params(s_lo, s_hi)
        return compiled_init(s_lo, s_hi)

    def __call__(self, state: State, t0: int, members: Members, consts: Constants, *, nsteps: int,
                 config: StepConfig, history: Optional[History]) -> State:
        """Run steps ``t0 .. t0 + nsteps - 1``: whole segments compiled, the rest eager.

        With ``history``, the logged rows only (see the module docstring). What a log
        costs ``train()`` against the same run unlogged, M = 2**18 and 200,000, T = 6000
        (2-core AMD EPYC VM, AVX-512, torch 2.13, 2026-12-07; ``python bench/log_cost.py``,
        bench/results/log-cost-2026-12-07.txt; 2 threads, wall / 1 thread, CPU seconds):
        k = 1000: 0-3% / 0%; k = 100: 6-12% / 6-7%; k = 10: 38-44% / 37-40% (before:
        75-85% / 44-79% for every k). Most of what is left is the history's new memory:
        writing its rows alone (8 bytes a member a row, first touch of the pages) costs
        3-5% at k = 100 and 27-34% at k = 10 on that machine, whose step is fast
        (1.8e9 neuron-steps/s unlogged); the logged graph itself about 11% more than the
        unlogged one per segment that runs it. A cold compile of the logged graph: 11-14 s,
        beside the unlogged graph's (which unlogged runs share).

        Members found diverged are parked at the problem's rest point (where every
        gradient is 0) with zeroed optimizer state, so that they stop setting off the
        probe; they are reported as NaN (final values, and history from
        ``diverged_at`` on) whatever they hold.
        """
        start, record = state, history is not None
        spares = self._spares(state)
        device_type, dev = state.weight.device.type, state.weight.device
        k, batch, n_seg = _whole_steps(config), config.batch_size, segment_samples(config)
        every = history.log_every if record else 0
        # Segments without a logged step run the unlogged graph; those with one, the logged graph.
        plain = compiled_segment(config, 0, device_type)
        stride = log_stride(config, every) if record else 0
        logged = compiled_segment(config, stride, device_type) if record else None
        rows_out = self._rows(state, -(-_slots(config) // stride) if record else 0)
        no_picks = torch.empty(0, dtype=torch.int64, device=dev)
        mark_members_dynamic(members)
        probes = []

        def compiled(cur: State, partial, first: int):
            (out, out_partial), spares[:] = spares[0], spares[::-1]
            out = out._replace(diverged_at=cur.diverged_at)
            mark_members_dynamic(cur, out, partial, out_partial)
            at = torch.tensor(first, dtype=torch.int64, device=dev)
            where = () if k else sample_steps(first, n_seg, batch, dev)
            hits = _logged_slots(first, config, every) if record else []
            with torch._dynamo.config.patch(_DYNAMO_CONFIG):
                if hits:
                    picks = [i for i, _ in hits]
                    picks = torch.tensor(picks + [-1] * (len(rows_out) // 2 - len(picks)), dtype=torch.int64,
                                         device=dev)
                    probe = logged(cur, partial, out, out_partial, at, where, members, consts, picks, rows_out)
                else:
                    probe = plain(cur, partial, out, out_partial, at, where, members, consts, no_picks, ())
            probes.append(probe)
            for r, (_, row) in enumerate(hits):
                history.weight[row].copy_(rows_out[2 * r])
                history.bias[row].copy_(rows_out[2 * r + 1])
            return out, out_partial

        if k:  # segments of k whole steps
            t, stop = t0, t0 + nsteps
            while t < stop:
                n = min(k, stop - t)
                if n == k:
                    state, _ = compiled(state, (), t)
                else:
                    state, recorded = run_steps(state, torch.tensor(t), members, consts, nsteps=n, config=config,
                                                record=record, track_divergence=False)
                    probes.append(_probe(state))
                    keep_logged(recorded, t, n, history)
                t += n
        else:  # segments of n_seg samples, steps ending anywhere in them
            partial = (torch.full_like(state.weight, -0.0), torch.full_like(state.bias, -0.0))
            i, stop = t0 * batch, (t0 + nsteps) * batch
            while i < stop:
                n = min(n_seg, stop - i)
                if n == n_seg:
                    state, partial = compiled(state, partial, i)
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

    def _rows(self, state: State, n_rows: int) -> tuple:
        """``2 * n_rows`` buffers for a segment's logged (w, b), of their shapes, reused."""
        rows, like = self._row_buffers, state.weight
        if len(rows) != 2 * n_rows or (rows and (rows[0].shape != like.shape or rows[1].shape != state.bias.shape
                                                 or rows[0].device != like.device)):
            rows = self._row_buffers = tuple(torch.empty_like(like if i % 2 == 0 else state.bias)
                                             for i in range(2 * n_rows))
            mark_members_dynamic(rows)
        return rows

    def _spares(self, state: State) -> list:
        """Two buffer sets (state, gradient sums) of ``state``'s shape, neither holding
        ``state`` itself; ``state`` joins the pool for the next call."""
        like = state.weight

        def sums():  # a gradient sum of each parameter's shape
            return torch.empty_like(like), torch.empty_like(state.bias)

        spares = []
        for s, partial in self._pool:
            if len(spares) < 2 and s.weight.shape == like.shape and s.weight is not like:
                spares.append((s, partial if partial is not None else sums()))
        while len(spares) < 2:
            spares.append((pytree.tree_map(torch.empty_like, state), sums()))
        self._pool = spares + [(state, None)]
        return list(spares)

    @staticmethod
    def _replay_diverged(state: State, out: State, start, members: Members, consts: Constants, nsteps: int,
                         config: StepConfig) -> State:
        """Find the step of each member that went non-finite in this chunk (replayed
        eagerly from the chunk's start), then park it (see ``__call__``)."""
        idx = (~finite(out.weight, out.bias)).nonzero().squeeze(1)
        replay, _ = run_steps(_pick(state, idx), start, _pick(members, idx), consts, nsteps=nsteps, config=config)
        park_w, park_b = config.problem.rest_point(consts.problem)

        def put(x, v):
            x = x.clone()
            x[..., idx] = torch.as_tensor(v, dtype=x.dtype, device=x.device)  # v: 0-dim, or (d, 1) (a teacher's a)
            return x

        return State(put(out.weight, park_w), put(out.bias, park_b),
                     tuple(put(x, 0.0) for x in out.weight_state), tuple(put(x, 0.0) for x in out.bias_state),
                     put(out.diverged_at, replay.diverged_at))
