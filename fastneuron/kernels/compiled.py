"""``backend="compile"``: K steps of the eager reference fused into one kernel.

``torch.compile`` traces :func:`fastneuron.reference.run_steps` itself (no copy of
the step) for a fixed chunk of ``K`` steps. Inductor fuses the unrolled Philox
rounds and updates into one loop over members, so (w, b) stay in registers for K
steps and x never touches memory.

Chunk length: the project's prototypes (MEASUREMENTS.md, 2 Zen 5 cores) gave K = 4
3.4e9 neuron-steps/s, K = 8 4.2e9, K = 16 about 3e9, K = 32 2.7e9 with a 21 s cold
compile. This code, same machine, M = 2**20, T = 3000, two runs side by side: K = 8
3.68e9 and 3.72e9, K = 12 3.82e9 and 3.98e9 (cold compile 15 s against 13 s), K = 16
1.7e9. K = 12 it is (a multiple of 4, so every chunk starts a Philox block, and 3000
steps are 250 chunks). One compiled graph serves every M (dim 0 is dynamic), every T
(the chunk's first step is a tensor) and every value of the settings (tensors too);
a remainder of T % K steps runs the same function uncompiled.

Divergence (SPEC §4) is found once per chunk, not per step. A non-finite w or b
never becomes finite again (``p + (-lr)*d`` of a non-finite p is non-finite), so a
member that is non-finite after a chunk and was not before diverged inside it; the
driver replays just those members eagerly from the chunk's start to find the step.
"""

from __future__ import annotations

import functools

import torch

from fastneuron.reference import Members, Problem, State, StepOptions, run_steps
from fastneuron.rng import init_params

#: Steps per compiled chunk (see the module docstring for the measurement).
CHUNK_STEPS = 12

#: Each option set (batch size, momentum, weight decay, nesterov, history, device) is
#: one more specialization of the same traced function; dynamo's default limit of 8
#: per function would refuse the ninth set. Applied only around fastneuron's calls.
_DYNAMO_CONFIG = {"recompile_limit": 256}


def _chunk_fn(state: State, out: State, t0: torch.Tensor, hp: Members, prob: Problem, *,
              opts: StepOptions, record: bool):
    new, history = run_steps(state, t0, hp, prob, nsteps=CHUNK_STEPS, opts=opts, record=record,
                             track_divergence=False)
    # Written into the caller's buffers: fresh outputs every chunk cost about 10%
    # (3.75e9 against 4.15e9 neuron-steps/s, M = 2**20), the first touch of new pages.
    for dst, src in zip(out[:4], new[:4]):
        if dst is not None:
            dst.copy_(src)
    # 0 while every w and b is finite, NaN otherwise (inf*0 and NaN*0 are NaN). Per step
    # tracking (isfinite, compare, int64 select) ran at 1.2e9 neuron-steps/s against
    # 1.9e9 without; a bool mask per chunk cost 2.5 ms a chunk (its store is not
    # vectorized); this in-graph reduction costs about 1% (4.19e9 vs 4.15e9 with none,
    # K = 8, M = 2**20). amax, not sum: a float sum over more than 4096 members makes
    # Inductor guard on M and compile a second graph.
    probe = (new.weight * 0.0 + new.bias * 0.0).amax()
    return history, probe


@functools.lru_cache(maxsize=None)
def compiled_chunk(opts: StepOptions, record: bool, device_type: str):
    """The compiled K-step chunk for these static options (compiled on first call)."""
    fn = functools.partial(_chunk_fn, opts=opts, record=record)
    return torch.compile(fn, fullgraph=True, options=_options(device_type))


def _options(device_type: str) -> dict:
    options = {}
    if device_type == "cpu":
        # The graph is compiled at the first call's M; without this, a first call with
        # a few hundred members yields a loop that never runs on more than one thread
        # (1.2e9 instead of 2.3e9 neuron-steps/s on 2 cores).
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
    """:func:`fastneuron.rng.init_params`, compiled: eager Philox over 2**20 members
    took 57 ms, 7% of a 3000-step run."""
    mark_members_dynamic((s_lo, s_hi))
    with torch._dynamo.config.patch(_DYNAMO_CONFIG):
        return _compiled_init(s_lo.device.type)(s_lo, s_hi)


def mark_members_dynamic(*trees) -> None:
    """Mark dim 0 (members) of every (M,) tensor as dynamic: one graph for all M."""
    for tree in trees:
        for x in tree:
            # Once per tensor: marking costs ~4 us a tensor, 40 us a chunk if repeated.
            if isinstance(x, torch.Tensor) and x.dim() == 1 and not hasattr(x, "_dynamo_dynamic_indices"):
                torch._dynamo.mark_dynamic(x, 0)


def _pick(tree, idx):
    return type(tree)(*(None if x is None else x[idx] for x in tree))


class CompiledStepper:
    """Runs chunks for one training run, alternating between two sets of state buffers.

    Each compiled chunk reads one set and writes the other, so the chunk's starting
    state is still there when members that diverged in it must be replayed.
    """

    chunk_steps = CHUNK_STEPS

    def __init__(self) -> None:
        self._spare: State | None = None

    def init(self, hp: Members):
        return compiled_init(hp.s_lo, hp.s_hi)

    def __call__(self, state: State, t0: torch.Tensor, hp: Members, prob: Problem, *, nsteps: int,
                 opts: StepOptions, record: bool):
        """Run ``nsteps`` steps from ``t0``: compiled when ``nsteps == CHUNK_STEPS``.

        Members found diverged are parked at (w, b) = (a, c) with zeroed buffers,
        where the gradient is 0, so that they stop setting off the probe; they are
        reported as NaN (final values, and history from ``diverged_at`` on) whatever
        they hold.
        """
        if nsteps != CHUNK_STEPS:
            return run_steps(state, t0, hp, prob, nsteps=nsteps, opts=opts, record=record)
        out = self._spare
        if out is None or out.weight.shape != state.weight.shape:
            out = State(*(None if x is None else torch.empty_like(x) for x in state[:4]), None)
        out = out._replace(diverged_at=state.diverged_at)
        mark_members_dynamic(state, out, hp)
        with torch._dynamo.config.patch(_DYNAMO_CONFIG):
            history, probe = compiled_chunk(opts, record, t0.device.type)(state, out, t0, hp, prob)
        self._spare = state
        if torch.isnan(probe):
            idx = (~(torch.isfinite(out.weight) & torch.isfinite(out.bias))).nonzero().squeeze(1)
            replay, _ = run_steps(_pick(state, idx), t0, _pick(hp, idx), prob, nsteps=nsteps, opts=opts)
            park = [prob.a, prob.c, 0.0, 0.0, replay.diverged_at]
            out = State(*(x if x is None else x.index_put((idx,), torch.as_tensor(v, dtype=x.dtype, device=x.device))
                          for x, v in zip(out, park)))
        return out, history
