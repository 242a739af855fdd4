"""``backend="compile"``: K steps of the eager reference fused into one kernel.

``torch.compile`` traces :func:`fastneuron.reference.run_steps` itself (no copy of
the step, so any optimizer or problem of the reference runs here too) for a fixed
chunk of ``K`` steps. Inductor fuses the unrolled Philox rounds and updates into one
loop over members, so (w, b) stay in registers for K steps and x never touches
memory.

Chunk length K = 12: a multiple of 4 (every chunk starts a Philox block; 3000 steps
are 250 chunks), and the fastest of K = 4, 8, 12, 16, 32 measured on 2 Zen 5 cores
(K = 16 ran at half speed; figures in bench/results/README.md). One compiled graph
serves every M (dim 0 is dynamic), every T (the chunk's first step is a tensor) and
every value of the settings (tensors too); a remainder of T % K steps runs the same
function uncompiled.

Divergence (SPEC §4) is found once per chunk, not per step. A non-finite w or b
never becomes finite again (``p + (-lr)*d`` of a non-finite p is non-finite), so a
member that is non-finite after a chunk and was not before diverged inside it; the
driver replays just those members eagerly from the chunk's start to find the step.
"""

from __future__ import annotations

import functools

import torch

from typing import Optional

from torch.utils import _pytree as pytree

from fastneuron.reference import Constants, History, Members, State, StepConfig, keep_logged, run_steps
from fastneuron.rng import init_params

#: Steps per compiled chunk (see the module docstring for the measurement).
CHUNK_STEPS = 12

#: Each step config (batch size, optimizer and its flags, problem), history or device is
#: one more specialization of the same traced function; dynamo's default limit of 8
#: per function would refuse the ninth set. Applied only around fastneuron's calls.
_DYNAMO_CONFIG = {"recompile_limit": 256}


def _values(state: State) -> list:
    """The state's float tensors (w, b, then the optimizer's), without diverged_at."""
    return [state.weight, state.bias, *state.weight_state, *state.bias_state]


def _chunk_fn(state: State, out: State, t0: torch.Tensor, members: Members, consts: Constants, *,
              config: StepConfig, record: bool):
    new, history = run_steps(state, t0, members, consts, nsteps=CHUNK_STEPS, config=config, record=record,
                             track_divergence=False)
    # Written into the caller's buffers: fresh outputs every chunk cost about 10% (the
    # first touch of new pages).
    for dst, src in zip(_values(out), _values(new)):
        dst.copy_(src)
    # 0 while every w and b is finite, NaN otherwise (inf*0 and NaN*0 are NaN): one
    # in-graph reduction a chunk instead of per-step tracking (isfinite, compare and an
    # int64 select each step cost a third of the throughput). amax, not sum: a float sum
    # over more than 4096 members makes Inductor guard on M and compile a second graph.
    probe = (new.weight * 0.0 + new.bias * 0.0).amax()
    return history, probe


@functools.lru_cache(maxsize=None)
def compiled_chunk(config: StepConfig, record: bool, device_type: str):
    """The compiled K-step chunk for this static config (compiled on first call)."""
    fn = functools.partial(_chunk_fn, config=config, record=record)
    return torch.compile(fn, fullgraph=True, options=_options(device_type))


def _options(device_type: str) -> dict:
    options = {}
    if device_type == "cpu":
        # The graph is compiled at the first call's M; without this, a first call with
        # a few hundred members yields a loop that never runs on more than one thread.
        options["cpp.dynamic_threads"] = True
    if device_type == "cuda":
        # Inductor's Triton kernels contract a*b + c into an FMA unless asked to keep
        # eager's separately rounded ops; SPEC §3 forbids the FMA.
        options["emulate_precision_casts"] = True
    return options


@functools.lru_cache(maxsize=None)
def _compiled_init(device_type: str):
    return torch.compile(init_params, fullgraph=True, options=_options(device_type))


def compiled_init(s_lo: torch.Tensor, s_hi: torch.Tensor):
    """:func:`fastneuron.rng.init_params`, compiled (eager Philox over many members
    costs a noticeable share of a short run)."""
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


def _pick(tree, idx):
    """The members ``idx`` of every (M,) tensor in ``tree`` (0-dim tensors stay)."""
    return pytree.tree_map(lambda x: x[idx] if isinstance(x, torch.Tensor) and x.dim() == 1 else x, tree)


class CompiledStepper:
    """Runs chunks for one training run, alternating between two sets of state buffers.

    Each compiled chunk reads one set and writes the other, so the chunk's starting
    state is still there when members that diverged in it must be replayed.
    """

    chunk_steps = CHUNK_STEPS

    def __init__(self) -> None:
        self._spare: State | None = None

    def init(self, members: Members, config: StepConfig):
        return compiled_init(members.s_lo, members.s_hi)

    def __call__(self, state: State, t0: int, members: Members, consts: Constants, *, nsteps: int,
                 config: StepConfig, history: Optional[History]) -> State:
        """Run ``nsteps`` steps from ``t0``: compiled when ``nsteps == CHUNK_STEPS``.

        Members found diverged are parked at the problem's rest point (where every
        gradient is 0) with zeroed optimizer state, so that they stop setting off the
        probe; they are reported as NaN (final values, and history from
        ``diverged_at`` on) whatever they hold.
        """
        start = torch.tensor(t0, dtype=torch.int64, device=state.weight.device)
        if nsteps != CHUNK_STEPS:
            state, recorded = run_steps(state, start, members, consts, nsteps=nsteps, config=config,
                                        record=history is not None)
            keep_logged(recorded, t0, nsteps, history)
            return state
        out = self._spare
        if out is None or out.weight.shape != state.weight.shape:
            out = pytree.tree_map(torch.empty_like, state)
        out = out._replace(diverged_at=state.diverged_at)
        mark_members_dynamic(state, out, members)
        with torch._dynamo.config.patch(_DYNAMO_CONFIG):
            recorded, probe = compiled_chunk(config, history is not None, start.device.type)(
                state, out, start, members, consts)
        keep_logged(recorded, t0, nsteps, history)
        self._spare = state
        if torch.isnan(probe):
            out = self._replay_diverged(state, out, start, members, consts, nsteps, config)
        return out

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
