"""The engine: runs a :class:`~fastneuron.spec.RunSpec` to its
:class:`~fastneuron.result.TrainResult`.

:func:`run` owns everything around the backends: memory sizing, the loop over
blocks of members, the chunks of steps within a block (a backend's
:class:`~fastneuron.kernels.Stepper` advances one block by one chunk), progress,
checkpoints and resume, and the assembly of the result. Nothing here validates
input: the spec was validated when it was built.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
import zipfile
from typing import Callable, Optional

import numpy as np
import torch

from . import kernels
from .checkpoint import check_diverged, check_header, load_checkpoint, save_checkpoint
from .machine import busy_cores, busy_message
from .progress import Progress
from .files import Npz, ResultNotSaved, check_arrays, read_header
from .members import describe
from .part_writer import CHECKPOINT, PartWriter, part_name
from .reference import Constants, History, Members, State, StepConfig, dense_members
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
#: Device bytes of a block member per input past the first (SPEC §6): the weight in the
#: compiled backend's three buffer sets and its gradient sums (16), the data stream's
#: int64 Philox words and their float32 samples for a block of four (eager and compile's
#: graph temporaries, 4 * 8 + 4 * 4), and the tree's partial sums (8), rounded up.
BYTES_PER_INPUT = 112


def run(spec: RunSpec, *, between_chunks: Optional[Callable[[], None]] = None):
    """Train every member of ``spec``; the whole result (TrainResult, on the host), or
    None when the results stream to a parts directory (``spec.out``: this process writes
    part ``spec.part``; the caller writes the manifest).

    ``between_chunks()`` runs after every chunk of steps (a distributed run checks on
    its peers there); an exception from it ends the run."""
    m, steps, dev = len(spec), spec.steps, spec.device
    # A host store allocates the history when made: only after the memory check, which then
    # refuses a run too large with its message, not with an allocator's error.
    store = _PartStore(spec) if spec.out is not None else None
    block = max(1, member_block(m, spec.n_logged, dev, spec.member_block, len(spec.state_names()),
                                len(spec.member_options) + len(spec.problem_options) + len(spec.model_options),
                                host_bytes=None if store is None else store.host_bytes, inputs=spec.model.inputs))
    if store is None:
        store = _HostStore(spec)
    start, t_start = 0, 0
    if spec.resume is not None:
        position = store.resume()
        start, t_start = position["block_start"], position["step"]
        block = max(1, position["block_stop"] - position["block_start"])

    stepper = kernels.make_stepper(spec.backend)
    consts, config = spec.constants(dev), spec.config
    bar = Progress(spec.progress, steps, m)
    last_save = [time.monotonic()]

    def save(first: int, stop: int, t: int, state: Optional[State], history: Optional[History]) -> None:
        if state is not None:
            store.store_block(first, stop, state, history, final=False)
        store.checkpoint(first, stop, t)
        last_save[0] = time.monotonic()

    def due() -> bool:
        return store.checkpoints and time.monotonic() - last_save[0] >= spec.checkpoint_every

    try:
        for first in range(start, m, block):
            stop = min(m, first + block)
            # torch.compile specializes on a block of one member: give it a second.
            pad = 1 if spec.backend == "compile" and stop - first == 1 else 0
            members = spec.block(first, stop, dev, pad)
            if getattr(stepper, "dense_members", True):
                members = dense_members(members)
            resumed = first == start and t_start > 0
            history = store.block_history(first, stop, pad, resumed)
            if resumed:
                state, t = store.saved_state(first, stop, pad), t_start
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
            store.store_block(first, stop, state, history, final=True)
            if stop < m and due():
                save(stop, min(m, stop + block), 0, None, None)
    finally:
        bar.close()
    # The last block's constants and the stepper's spare buffers are no longer needed:
    # let their memory serve the result below.
    members = stepper = state = None
    return store.finish(save)


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
                 tuple(torch.zeros_like(b0) for _ in state_names), torch.full_like(b0, -1, dtype=torch.int64))


# -- threads ------------------------------------------------------------------------

#: Backends whose work runs on torch's intra-op threads (on the CPU).
THREADED_BACKENDS = ("eager", "compile")
#: Runs shorter than this many neuron-steps are not warned about: beside another job two
#: threads still ran 2**14 members at 2.0e8-3.1e8 neuron-steps/s on 2 cores
#: (bench/results/busy-machine-2026-12-07.txt), so such a run loses well under a second.
BUSY_WARNING_WORK = 10**7
_warned_busy = [False]


@contextlib.contextmanager
def torch_threads(spec: RunSpec):
    """torch's intra-op threads for the run: ``spec.threads`` inside (when given), as they
    were afterwards. A CPU run of a threaded backend with more than one thread warns
    once a process when other work holds the cores those threads need
    (:func:`fastneuron.machine.busy_cores`), for runs of :data:`BUSY_WARNING_WORK`
    neuron-steps or more. Threads change no result: every member's
    arithmetic is the same whichever thread runs it. A count new to the process makes
    dynamo trace the compiled graph again (it guards on it): about 2 s from Inductor's
    cache, once; so the count is the caller's choice, never switched here."""
    before = torch.get_num_threads()
    if spec.threads is not None and spec.threads != before:
        torch.set_num_threads(spec.threads)
    try:
        threads = torch.get_num_threads()
        if (threads > 1 and not _warned_busy[0] and spec.device.type == "cpu" and spec.backend in THREADED_BACKENDS
                and len(spec) * spec.steps >= BUSY_WARNING_WORK and (busy := busy_cores(threads)) is not None):
            _warned_busy[0] = True
            warnings.warn(busy_message(*busy, threads), RuntimeWarning, stacklevel=5)
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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


def check_host_memory(m: int, n_logged: int, n_state: int = 1, n_options: int = 2,
                      host_bytes: Optional[int] = None, inputs: int = 1) -> None:
    """ValueError when the inputs and results of ``m`` members with ``n_logged`` logged
    steps, ``n_state`` optimizer buffers per parameter and ``n_options`` per-member
    options (defaults: SGD with momentum) cannot fit in the host's available memory
    (``host_bytes``: the bytes per member instead, when the caller knows better). Each
    input past the first adds a weight, its optimizer states and its logged values."""
    per_member = HOST_BYTES_PER_MEMBER + 8 * n_state + 4 * n_options + 8 * n_logged \
        + 4 * (inputs - 1) * (1 + n_state + n_logged)
    host_need = m * (per_member if host_bytes is None else host_bytes)
    host_free = available_bytes(torch.device("cpu"))
    if host_need > host_free:
        if host_bytes is None:  # the results are kept in memory
            ways = ["fewer members", *(["a larger log_every"] if n_logged else []),
                    'out="DIR/" (the results, history included, stream to files in DIR instead of memory)']
        else:  # a parts directory's members, given as arrays
            ways = ["fewer members", "members described by fastneuron.grid or a range of seeds, not given as arrays"]
        raise ValueError(f"seeds: {m} members" + (f" with {n_logged} logged steps" if n_logged else "")
                         + f" need about {host_need / 2**30:.1f} GiB of memory for inputs and results, and "
                         f"{host_free / 2**30:.1f} GiB is available; use {', '.join(ways[:-1])} or {ways[-1]}")


def member_block(m: int, n_logged: int, device: torch.device, requested: Optional[int], n_state: int = 1,
                 n_options: int = 2, host_bytes: Optional[int] = None, inputs: int = 1) -> int:
    """How many of ``m`` members to train at once on ``device`` (``requested``, or what
    a quarter of its free memory holds); ValueError when the run cannot fit at all.
    ``n_state``, ``n_options`` and ``host_bytes`` as for :func:`check_host_memory`."""
    check_host_memory(m, n_logged, n_state, n_options, host_bytes, inputs)
    if requested is not None:
        return min(m, requested)
    free = available_bytes(device) // 4
    per_member = BLOCK_BYTES_PER_MEMBER + 24 * n_state + 4 * n_options + 8 * n_logged \
        + (inputs - 1) * BYTES_PER_INPUT + (inputs - 1) * (12 * n_state + 4 * n_logged)
    return min(m, max(1, free // per_member))


# -- where results go: the host's memory, or a part of a parts directory --------------


def _state_values(spec: RunSpec, state: State) -> dict:
    names = spec.state_names()
    return {"weight": state.weight, "bias": state.bias, "diverged_at": state.diverged_at,
            **{f"{s}_weight": x for s, x in zip(names, state.weight_state)},
            **{f"{s}_bias": x for s, x in zip(names, state.bias_state)}}


class _HostStore:
    """The run's results and state on the host, by checkpoint name, filled block by
    block (None until a block stores them); checkpoints hold all of them. A one-block
    run on the CPU adopts its state tensors instead of copying them."""

    host_bytes = None  # check_host_memory's count: inputs and results of every member

    def __init__(self, spec: RunSpec):
        self.spec = spec
        names = ["weight", "bias", "diverged_at"]
        names += [f"{s}_{p}" for s in spec.state_names() for p in ("weight", "bias")]
        self.host: dict = dict.fromkeys(names)
        wshape = spec.model.weight_shape(len(spec))  # the members last, as in training
        self.host["history_weight"] = torch.empty(spec.n_logged, *wshape) if spec.log_every else None
        self.host["history_bias"] = torch.empty(spec.n_logged, len(spec)) if spec.log_every else None
        self.checkpoints = spec.checkpoint is not None

    def resume(self) -> dict:
        position, saved = load_checkpoint(self.spec.resume, self.spec)
        self.host.update(saved)
        return position

    def block_history(self, first: int, stop: int, pad: int, resumed: bool) -> Optional[History]:
        spec, host = self.spec, self.host
        if not spec.log_every:
            return None
        if spec.device.type == "cpu" and not pad and stop - first == len(spec):
            return History(host["history_weight"], host["history_bias"], spec.log_every)
        return History(take(host["history_weight"], first, stop, spec.device, pad, dim=-1),
                       take(host["history_bias"], first, stop, spec.device, pad, dim=-1), spec.log_every)

    def saved_state(self, first: int, stop: int, pad: int) -> State:
        def get(name):
            return take(self.host[name], first, stop, self.spec.device, pad, dim=-1)

        names = self.spec.state_names()
        return State(get("weight"), get("bias"), tuple(get(f"{s}_weight") for s in names),
                     tuple(get(f"{s}_bias") for s in names), get("diverged_at"))

    def store_block(self, first: int, stop: int, state: State, history: Optional[History], final: bool) -> None:
        """Copy a block's state (members [first, stop), padding dropped) and history into the host."""
        host, m, n = self.host, len(self.spec), stop - first
        for k, x in _state_values(self.spec, state).items():
            if n == m and x.device.type == "cpu" and x.shape[-1] == m:
                host[k] = x  # the whole run in one block, on the host: adopt, do not copy
                continue
            if host[k] is None:
                host[k] = torch.empty(*x.shape[:-1], m, dtype=x.dtype)
            # Straight from the device into the host array: no temporary of the block's state.
            host[k][..., first:stop].copy_(x[..., :n])
        if history is not None and history.weight is not host["history_weight"]:
            host["history_weight"][..., first:stop].copy_(history.weight[..., :n])
            host["history_bias"][..., first:stop].copy_(history.bias[..., :n])

    def checkpoint(self, first: int, stop: int, t: int) -> None:
        if self.checkpoints:
            save_checkpoint(self.spec.checkpoint, self.spec, block_start=first, block_stop=stop, step=t,
                            arrays=self.host)

    def finish(self, save):
        """The TrainResult, after the last checkpoint (ResultNotSaved, with the result,
        when that cannot be written)."""
        spec, m = self.spec, len(self.spec)
        not_saved = None
        if self.checkpoints:
            try:
                save(m, m, spec.steps, None, None)
            except (OSError, ValueError) as exc:  # the run is done: hand its result over with the error
                not_saved = exc
        host = self.host
        w, b, div = host["weight"], host["bias"], host["diverged_at"]
        hist_w, hist_b = host["history_weight"], host["history_bias"]
        _mark_diverged(spec, w, b, div, hist_w, hist_b)
        w, hist_w = member_major(w, spec.model.inputs), member_major(hist_w, spec.model.inputs)
        result = spec.result(w, b, div, hist_w, hist_b)
        if not_saved is not None:
            raise ResultNotSaved(spec.checkpoint, result, not_saved) from not_saved
        return result


def _any_diverged(div: torch.Tensor) -> bool:
    """Whether some member diverged (``diverged_at`` >= 0): one read and no (M,) mask,
    about 8 ms at 2**24 members against 24 for (div >= 0).any() (the 2-core cpu family
    23 machine)."""
    return bool(div.numel()) and int(div.max()) >= 0


def member_major(x: Optional[torch.Tensor], inputs: int) -> Optional[torch.Tensor]:
    """A weight (d, M) or its history (L, d, M), in training's layout, as results hold it:
    (M, d), (L, M, d). One input's (M,) and (L, M) stay as they are."""
    if x is None or inputs == 1:
        return x
    return x.transpose(-1, -2).contiguous()


def _mark_diverged(spec: RunSpec, w, b, div, hist_w, hist_b) -> None:
    """NaN where diverged (SPEC §4, §5), in place."""
    if not _any_diverged(div):
        return
    diverged = div >= 0
    w.masked_fill_(diverged, float("nan"))
    b.masked_fill_(diverged, float("nan"))
    if hist_w is not None:
        # A member's logged values from its divergence on are NaN, whatever non-finite
        # (or, in the compiled backend, parked) value the arithmetic left.
        gone = diverged & (div <= spec.logged_steps[:, None])
        hist_w.masked_fill_(gone if hist_w.dim() == 2 else gone[:, None, :], float("nan"))
        hist_b.masked_fill_(gone, float("nan"))


class _PartStore:
    """The run's results in its part of a parts directory (``spec.out``, part
    ``spec.part``; :mod:`fastneuron.part_writer`), written block by block: host memory
    O(block), not O(M). A block's final results go to the part's files when it ends;
    the history's rows as they are produced. The checkpoint, every ``checkpoint_every``
    seconds, is ``checkpoint.npz`` in the part: the header (settings, members' digest,
    block and step) and the block in training's state, apart from the results (a
    block's results are never read back as its state), written atomically after the
    part's files are synced. It stays in the finished part, so that a resume checks it.

    With ``inputs`` d > 1 (SPEC §6f) the part's ``weight.npy`` is (n, d) and its
    ``history_weight.npy`` (L, n, d), as results hold them (member-major), while training
    and the checkpoint keep the block's weight as (d, n) (coordinate-major): a block's
    (d, n) is written as its members' (n, d) rows at their offsets."""

    checkpoints = True

    def __init__(self, spec: RunSpec):
        self.spec = spec
        m, log, d = len(spec), spec.n_logged, spec.model.inputs
        self.inputs = d
        weight = (np.float32, (m,)) if d == 1 else (np.float32, (m, d), 0)
        self.results = {"weight": weight, "bias": (np.float32, (m,)), "diverged_at": (np.int64, (m,))}
        if spec.log_every:
            history = (np.float32, (log, m)) if d == 1 else (np.float32, (log, m, d), 1)
            self.results.update(history_weight=history, history_bias=(np.float32, (log, m)))
        # The per-member columns given as arrays; a grid's (or one shared value) go in the manifest.
        self.columns = {k: x for k, x in spec.member_columns().items() if describe(x) is None}
        for k, x in self.columns.items():  # (the float64 columns, lrs_float64 say, hold the values as given)
            self.results[k] = (np.uint64 if k == "seeds" else np.float64 if x.dtype == torch.float64 else np.float32,
                               (m,))
        # Explicit inputs cost their bytes on the host (the caller's arrays); the rest is O(block).
        self.host_bytes = sum(np.dtype(self.results[k][0]).itemsize for k in self.columns)
        self.pending: Optional[dict] = None  # the block in training's state at the last store, on the host
        os.makedirs(spec.out, exist_ok=True)
        final = os.path.join(spec.out, part_name(spec.part))
        self.done = spec.resume is not None and os.path.isdir(final) and not os.path.isdir(final + ".tmp")
        self.writer = None
        # A finished part's checkpoint is checked in resume() too.
        self.path = os.path.join(final if self.done else final + ".tmp", CHECKPOINT)
        if spec.resume is not None and not os.path.exists(self.path):
            raise ValueError(f"resume: {self.path} is missing (the part stopped before its first checkpoint: "
                             f"start the run again)")
        if self.done:
            return
        self.writer = PartWriter(spec.out, spec.part, self.results, resume=spec.resume is not None)
        if spec.resume is None:
            for k, x in self.columns.items():
                for a in range(0, m, 1 << 22):
                    b = min(m, a + (1 << 22))
                    self.writer.write(k, a, b, x[a:b].numpy().view(np.uint64) if k == "seeds" else x[a:b].numpy())

    def _state_names(self) -> list:
        return ["weight", "bias", "diverged_at",
                *(f"{s}_{p}" for s in self.spec.state_names() for p in ("weight", "bias"))]

    def resume(self) -> dict:
        spec, path = self.spec, self.path
        try:
            with Npz(path) as z:
                meta = read_header(z, "meta")
                check_header(path, meta, spec)
                n = meta["block_stop"] - meta["block_start"] if meta["step"] else 0
                expected = {k: (np.int64 if k == "diverged_at" else np.float32,
                                spec.model.weight_shape(n) if k.endswith("weight") else (n,))
                            for k in self._state_names()}
                check_arrays(z, expected if n else {}, header="meta")
                saved = {k: torch.from_numpy(z.read(k)) for k in expected} if n else {}
        except (OSError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"resume: {path} is not a fastneuron checkpoint ({exc})") from None
        if self.done:
            if (meta["block_start"], meta["step"]) != (len(spec), spec.steps):
                raise ValueError(f"resume: {path} is a broken fastneuron checkpoint (its part is finished, "
                                 f"its checkpoint is not)")
            return meta
        b0 = meta["block_start"]
        check_diverged(path, meta, spec, lambda a, b: self.writer.read("diverged_at", a, b) if b <= b0
                       else saved["diverged_at"][a - b0:b - b0])
        self.pending = saved
        return meta

    def block_history(self, first: int, stop: int, pad: int, resumed: bool) -> Optional[History]:
        spec = self.spec
        if not spec.log_every:
            return None
        if resumed:  # the rows before the step resumed from: final, or rewritten below
            return History(*(take(self._training_layout(torch.from_numpy(self.writer.read(k, first, stop)), k), 0,
                                  stop - first, spec.device, pad, dim=-1)
                             for k in ("history_weight", "history_bias")), spec.log_every)
        shape = (spec.n_logged, stop - first + pad)
        wshape = (spec.n_logged, *spec.model.weight_shape(stop - first + pad))
        return History(torch.empty(wshape, device=spec.device), torch.empty(shape, device=spec.device),
                       spec.log_every)

    def _training_layout(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """A weight's (n, d) or history's (L, n, d) from the part as training holds it:
        (d, n), (L, d, n) (one input: as it is)."""
        if self.inputs == 1 or not name.endswith("weight"):
            return x
        return x.transpose(-1, -2)

    def _part_layout(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """A block's weight (d, n) or history (L, d, n) as the part holds it: (n, d), (L, n, d)."""
        if self.inputs == 1 or not name.endswith("weight"):
            return x
        return x.transpose(-1, -2).contiguous()

    def saved_state(self, first: int, stop: int, pad: int) -> State:
        def get(name):  # the members' axis is the last: (n,) or a weight's (d, n)
            return take(self.pending[name], 0, stop - first, self.spec.device, pad, dim=-1)

        names = self.spec.state_names()
        return State(get("weight"), get("bias"), tuple(get(f"{s}_weight") for s in names),
                     tuple(get(f"{s}_bias") for s in names), get("diverged_at"))

    def store_block(self, first: int, stop: int, state: State, history: Optional[History], final: bool) -> None:
        n = stop - first
        values = {k: x[..., :n].cpu() for k, x in _state_values(self.spec, state).items()}
        hist = None if history is None else (history.weight[..., :n].cpu(), history.bias[:, :n].cpu())
        if not final:  # the block's state waits for the checkpoint; its history rows so far go to the part
            self.pending = {k: x.clone() for k, x in values.items()}
        else:  # the results only, NaN where diverged (copies: the state may be the stepper's buffers)
            self.pending = None
            values = {k: values[k] for k in ("weight", "bias", "diverged_at")}
            if _any_diverged(values["diverged_at"]):
                values["weight"], values["bias"] = values["weight"].clone(), values["bias"].clone()
                hist = None if hist is None else tuple(h.clone() for h in hist)
                _mark_diverged(self.spec, values["weight"], values["bias"], values["diverged_at"],
                               *(hist or (None, None)))
            for k, x in values.items():
                self.writer.write(k, first, stop, self._part_layout(x, k).numpy())
        if hist is not None:
            self.writer.write("history_weight", first, stop, self._part_layout(hist[0], "history_weight").numpy())
            self.writer.write("history_bias", first, stop, hist[1].numpy())

    def checkpoint(self, first: int, stop: int, t: int) -> None:
        if self.writer is None:
            return
        self.writer.sync()  # the results the checkpoint counts as done are on disk first
        arrays = self.pending if t and self.pending is not None else {}
        save_checkpoint(self.path, self.spec, block_start=first, block_stop=stop, step=t, arrays=arrays)

    def finish(self, save) -> None:
        if self.writer is not None:
            save(len(self.spec), len(self.spec), self.spec.steps, None, None)
            self.writer.finish()
        return None
