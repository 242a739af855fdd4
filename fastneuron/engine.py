"""The engine: runs a :class:`~fastneuron.spec.RunSpec` to its
:class:`~fastneuron.result.TrainResult`.

:func:`run` owns everything around the backends: memory sizing, the loop over
blocks of members, the chunks of steps within a block (a backend's
:class:`~fastneuron.kernels.Stepper` advances one block by one chunk), progress,
checkpoints and resume, and the assembly of the result. Nothing here validates
input: the spec was validated when it was built.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from . import kernels
from .checkpoint import load_checkpoint, save_checkpoint
from .progress import Progress
from .files import ResultNotSaved
from .reference import Constants, History, Members, State, StepConfig
from .spec import RunSpec, take

#: Bytes of device memory one member of a block needs while it trains with no
#: optimizer state and no per-member option (w and b in the compiled backend's three
#: buffer sets and its gradient sums, seed words, -lr, diverged_at and the temporaries
#: of the eager Philox), rounded up; each optimizer state buffer (per parameter) adds
#: 24 bytes (three sets of two floats), each per-member option 4.
BLOCK_BYTES_PER_MEMBER = 256
#: Bytes of host memory per member for the inputs and results without optimizer state
#: or options (seed 8, lr 4, weight and bias 8, diverged_at 8); each state buffer adds 8
#: (two parameters), each per-member option 4.
HOST_BYTES_PER_MEMBER = 28


def run(spec: RunSpec, *, between_chunks: Optional[Callable[[], None]] = None):
    """Train every member of ``spec``; the whole result (TrainResult, on the host).

    ``between_chunks()`` runs after every chunk of steps (a distributed run checks on
    its peers there); an exception from it ends the run."""
    m, steps, dev = len(spec), spec.steps, spec.device
    block = member_block(m, spec.n_logged, dev, spec.member_block, len(spec.state_names()),
                         len(spec.member_options) + len(spec.problem_options))
    host = _host_arrays(spec)
    start, t_start = 0, 0
    if spec.resume is not None:
        position, saved = load_checkpoint(spec.resume, spec)
        host.update(saved)
        start, t_start = position["block_start"], position["step"]
        block = max(1, position["block_stop"] - position["block_start"])

    stepper = kernels.make_stepper(spec.backend)
    consts, config = spec.constants(dev), spec.config
    bar = Progress(spec.progress, steps, m)
    last_save = [time.monotonic()]

    def save(first: int, stop: int, t: int, state: Optional[State], history: Optional[History]) -> None:
        if state is not None:
            _store_block(host, spec, first, stop, state, history)
        save_checkpoint(spec.checkpoint, spec, block_start=first, block_stop=stop, step=t, arrays=host)
        last_save[0] = time.monotonic()

    def due() -> bool:
        return spec.checkpoint is not None and time.monotonic() - last_save[0] >= spec.checkpoint_every

    try:
        for first in range(start, m, block):
            stop = min(m, first + block)
            # torch.compile specializes on a block of one member: give it a second.
            pad = 1 if spec.backend == "compile" and stop - first == 1 else 0
            members = spec.block(first, stop, dev, pad)
            history = _block_history(host, spec, first, stop, pad)
            if first == start and t_start:
                state, t = _saved_state(host, spec, first, stop, pad), t_start
                bar.update(t, stop - first, timed=False)
            else:
                state, t = fresh_state(stepper, members, config, spec.state_names()), 0

            def on_chunk(t_now: int, state_now: State, n: int, first=first, stop=stop, history=history) -> None:
                bar.update(n, stop - first)
                if between_chunks is not None:
                    between_chunks()
                if t_now < steps and due():
                    save(first, stop, t_now, state_now, history)

            state = train_block(stepper, state, t, steps, members, consts, config, history, on_chunk)
            _store_block(host, spec, first, stop, state, history)
            if stop < m and due():
                save(stop, min(m, stop + block), 0, None, None)
    finally:
        bar.close()
    # The last block's constants and the stepper's spare buffers are no longer needed:
    # let their memory serve the result below.
    members = stepper = state = None
    not_saved = None
    if spec.checkpoint is not None:
        try:
            save(m, m, steps, None, None)
        except (OSError, ValueError) as exc:  # the run is done: hand its result over with the error
            not_saved = exc
    result = _result(spec, host)
    if not_saved is not None:
        raise ResultNotSaved(spec.checkpoint, result, not_saved) from not_saved
    return result


def train_block(stepper: kernels.Stepper, state: State, t: int, steps: int, members: Members, consts: Constants,
                config: StepConfig, history: Optional[History], on_chunk) -> State:
    """Advance one block of members from step ``t`` to ``steps`` in the stepper's chunks;
    ``on_chunk(t, state, n)`` runs after each chunk of ``n`` steps."""
    while t < steps:
        n = min(stepper.chunk_steps, steps - t)
        state = stepper(state, t, members, consts, nsteps=n, config=config, history=history)
        t += n
        on_chunk(t, state, n)
    return state


def fresh_state(stepper: kernels.Stepper, members: Members, config: StepConfig, state_names: tuple) -> State:
    """Step 0 of a block: (w0, b0) from the init stream, zeroed optimizer state."""
    w0, b0 = stepper.init(members, config)
    return State(w0, b0, tuple(torch.zeros_like(w0) for _ in state_names),
                 tuple(torch.zeros_like(w0) for _ in state_names), torch.full_like(w0, -1, dtype=torch.int64))


# -- memory -------------------------------------------------------------------------


def available_bytes(dev: torch.device) -> int:
    """Free memory of ``dev`` (MemAvailable for the host)."""
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


def check_host_memory(m: int, n_logged: int, n_state: int = 1, n_options: int = 2) -> None:
    """ValueError when the inputs and results of ``m`` members with ``n_logged`` logged
    steps, ``n_state`` optimizer buffers per parameter and ``n_options`` per-member
    options (defaults: SGD with momentum) cannot fit in the host's available memory."""
    host_need = m * (HOST_BYTES_PER_MEMBER + 8 * n_state + 4 * n_options + 8 * n_logged)
    host_free = available_bytes(torch.device("cpu"))
    if host_need > host_free:
        raise ValueError(f"seeds: {m} members with {n_logged} logged steps need about "
                         f"{host_need / 2**30:.1f} GiB of memory for inputs and results, and "
                         f"{host_free / 2**30:.1f} GiB is available; use fewer members or a larger log_every")


def member_block(m: int, n_logged: int, device: torch.device, requested: Optional[int], n_state: int = 1,
                 n_options: int = 2) -> int:
    """How many of ``m`` members to train at once on ``device`` (``requested``, or what
    a quarter of its free memory holds); ValueError when the run cannot fit at all.
    ``n_state`` and ``n_options`` as for :func:`check_host_memory`."""
    check_host_memory(m, n_logged, n_state, n_options)
    if requested is not None:
        return min(m, requested)
    free = available_bytes(device) // 4
    per_member = BLOCK_BYTES_PER_MEMBER + 24 * n_state + 4 * n_options + 8 * n_logged
    return min(m, max(1, free // per_member))


# -- host arrays ----------------------------------------------------------------------


def _host_arrays(spec: RunSpec) -> dict:
    """The run's results and state on the host, by checkpoint name, filled block by
    block (None until a block stores them). A one-block run on the CPU adopts its
    state tensors instead of copying them (see ``_store_block``)."""
    names = ["weight", "bias", "diverged_at"]
    names += [f"{s}_{p}" for s in spec.state_names() for p in ("weight", "bias")]
    host: dict = dict.fromkeys(names)
    for p in ("weight", "bias"):
        host[f"history_{p}"] = torch.empty(spec.n_logged, len(spec), dtype=torch.float32) if spec.log_every else None
    return host


def _block_history(host: dict, spec: RunSpec, first: int, stop: int, pad: int) -> Optional[History]:
    if not spec.log_every:
        return None
    if spec.device.type == "cpu" and not pad and stop - first == len(spec):
        return History(host["history_weight"], host["history_bias"], spec.log_every)
    return History(take(host["history_weight"], first, stop, spec.device, pad, dim=1),
                   take(host["history_bias"], first, stop, spec.device, pad, dim=1), spec.log_every)


def _saved_state(host: dict, spec: RunSpec, first: int, stop: int, pad: int) -> State:
    def get(name):
        return take(host[name], first, stop, spec.device, pad)

    names = spec.state_names()
    return State(get("weight"), get("bias"), tuple(get(f"{s}_weight") for s in names),
                 tuple(get(f"{s}_bias") for s in names), get("diverged_at"))


def _store_block(host: dict, spec: RunSpec, first: int, stop: int, state: State, history: Optional[History]) -> None:
    """Copy a block's state (members [first, stop), padding dropped) and history into ``host``."""
    m, n = len(spec), stop - first
    names = spec.state_names()
    values = {"weight": state.weight, "bias": state.bias, "diverged_at": state.diverged_at,
              **{f"{s}_weight": x for s, x in zip(names, state.weight_state)},
              **{f"{s}_bias": x for s, x in zip(names, state.bias_state)}}
    for k, x in values.items():
        if n == m and x.device.type == "cpu" and x.numel() == m:
            host[k] = x  # the whole run in one block, on the host: adopt, do not copy
            continue
        if host[k] is None:
            host[k] = torch.empty(m, dtype=x.dtype)
        host[k][first:stop] = x[:n].cpu()
    if history is not None and history.weight is not host["history_weight"]:
        host["history_weight"][:, first:stop] = history.weight[:, :n].cpu()
        host["history_bias"][:, first:stop] = history.bias[:, :n].cpu()


def _result(spec: RunSpec, host: dict):
    """The TrainResult, NaN where diverged (SPEC §4, §5)."""
    w, b, div = host["weight"], host["bias"], host["diverged_at"]
    diverged = div >= 0
    any_diverged = bool(diverged.any())
    if any_diverged:
        w.masked_fill_(diverged, float("nan"))  # the host's own tensors: in place, no copy
        b.masked_fill_(diverged, float("nan"))
    hist_w, hist_b = host["history_weight"], host["history_bias"]
    if hist_w is not None and any_diverged:
        # A member's logged values from its divergence on are NaN, whatever non-finite
        # (or, in the compiled backend, parked) value the arithmetic left.
        gone = diverged & (div <= spec.logged_steps[:, None])
        hist_w.masked_fill_(gone, float("nan"))
        hist_b.masked_fill_(gone, float("nan"))
    return spec.result(w, b, div, hist_w, hist_b)
