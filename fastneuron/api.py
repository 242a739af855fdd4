"""``fastneuron.train`` and ``fastneuron.grid``: build the run's spec, hand it over."""

from __future__ import annotations

from typing import Optional

from .distributed import run_distributed
from .engine import run, torch_threads
from .members import grid  # noqa: F401  (fastneuron.grid: re-exported with train)
from .parts import load_parts
from .result import ResultNotSaved, TrainResult, check_writable
from .spec import RunSpec


def train(seeds, lrs, steps: int, *, optimizer: str = "sgd", problem: str = "linear", batch_size: int = 1,
          log_every: Optional[int] = None, backend: str = "auto", device=None, progress: Optional[bool] = None,
          checkpoint=None, checkpoint_every: float = 5.0, resume=None, member_block: Optional[int] = None,
          distributed: bool = False, lr_schedule=None, out=None, threads=None, **options) -> Optional[TrainResult]:
    """Train one ``nn.Linear(1, 1)`` per member by per-sample SGD, as SPEC.md says; or,
    with the model's options below, one full neuron ``act(w . x + b)`` per member (SPEC §6).

    Member ``m`` has ``seeds[m]`` (an integer in [0, 2**64)) and ``lrs[m]`` (a scalar
    gives every member the same). ``batch_size`` samples a step; ``log_every=k`` keeps
    (w, b) after steps 0, k, 2k, ... (8 bytes a member a row, in the result). What it
    costs ``backend="compile"`` against the unlogged speed: k = 1000 0-3%, k = 100 6-12%,
    k = 10 about 40-44%, most of it the first write of the history's new memory (3-5% and
    27-34% alone) on the fast 2-core machine of bench/results/log-cost-2026-12-07.txt.

    ``options`` belong to the optimizer, the problem and the model (docs/API.md lists
    them all; an unknown one is a ValueError): SGD's ``momentum``, ``weight_decay``,
    ``dampening``, ``nesterov``; Adam's, AdamW's and RMSprop's (SPEC §3c), values used as
    given where torch.optim computes in float64 (kept in ``result.float64``); the problem's
    ``a``, ``c``, ``lo``, ``hi``, ``x_dist``, ``x_mean``, ``x_std`` and per-member label
    ``noise`` (SPEC §2b); the model's ``inputs`` (d, 1 to 4096), ``bias``, ``activation``,
    ``loss``, ``leaky_slope`` and per-member ``init_scale`` (SPEC §6). ``problem="teacher"``
    learns ``target_activation(a . x + c)`` (with ``loss="bce"``, its sign) in d inputs; the
    result's ``weight`` is then (M, d), its history (L, M, d).

    ``lr_schedule`` (SGD only): the lr of step t is ``lr * f(t)``, as
    ``torch.optim.lr_scheduler.LambdaLR`` over ``torch.optim.SGD`` (SPEC §3d): a
    string such as ``"cosine:t_max=3000,floor=0.01"``, ``"step:size=100,gamma=0.5"``,
    ``"multistep:milestones=100/200,gamma=0.1"``, ``"exponential:gamma=0.999"``,
    ``"warmup:steps=100,start=0.1+cosine:t_max=3000"``, a schedule object of
    :mod:`fastneuron.schedules`, or any callable ``f(t)`` (evaluated once per step on
    the host, in float64).

    ``backend``: ``"auto"`` (triton on CUDA, compile on CPU), ``"eager"``,
    ``"compile"`` or ``"triton"``; ``device`` defaults to CUDA when present.
    ``progress`` shows a bar on stderr for runs past about 2 s (None: when stderr is
    a terminal). ``checkpoint=PATH`` saves the state there atomically every
    ``checkpoint_every`` seconds and at the end; ``resume=PATH`` continues from such
    a file (same settings and members, else ValueError) and ends bit for bit where an
    uninterrupted run ends. Members are trained in blocks of ``member_block``
    (default: as many as a quarter of the free memory holds). ``threads``: torch's threads
    for the run (None: as set), 1 on a busy machine; results never depend on it.

    Members may be described instead of listed: ``train(**fastneuron.grid(seeds=range(10**9),
    lrs=[...]), ...)`` (or ``seeds=range(...)``) keeps a few numbers per axis on the host and
    expands each block's members on the device (:mod:`fastneuron.members`). ``out=PATH``
    saves the result (``.npz``); ``out="DIR/"`` (a path ending in a separator, or a
    directory) streams the results, history included, to one part per process as the run
    goes (:mod:`fastneuron.part_writer`), checkpoints into the parts (``checkpoint`` must
    be None; ``resume="DIR/"`` continues the run exactly) and returns
    ``fastneuron.load(DIR)``, a lazily read :class:`fastneuron.parts.PartsResult`.

    ``distributed=True`` (under torchrun, or with ``torch.distributed`` initialized)
    shards the members across the processes, each on its own device; see
    :mod:`fastneuron.distributed`. Checkpoints go to ``checkpoint + ".rank{r}"``.

    Returns:
        A :class:`TrainResult` (on the host; a PartsResult with ``out="DIR/"``): per member the seed, lr and options,
        the final ``weight`` and ``bias`` (NaN where diverged), ``diverged_at`` (the
        step that made w or b non-finite, -1 if none) and the logged history. Under
        ``distributed=True``, rank 0 returns the whole result and the other ranks None.

    Raises:
        ValueError: for any bad argument, naming it, before any work starts (a
            ``checkpoint`` path that cannot be written included; ``inputs`` outside [1,
            4096], ``a`` of another length than ``inputs``, an unknown activation or loss,
            ``loss="bce"`` with an activation or without the teacher).
        fastneuron.result.ResultNotSaved: an ``OSError``: the run finished but its final
            checkpoint could not be written; it names the path, and ``.result`` holds
            the TrainResult.
    """
    spec = RunSpec.build(seeds, lrs, steps, optimizer=optimizer, problem=problem, batch_size=batch_size,
                         log_every=log_every, backend=backend, device=device, progress=progress,
                         checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                         member_block=member_block, distributed=distributed, lr_schedule=lr_schedule, out=out,
                         threads=threads, **options)
    return _run(spec, out)


def _run(spec: RunSpec, out) -> Optional[TrainResult]:
    """Run ``spec``: its result, saved to the file ``out``, or read lazily from its parts directory."""
    if out is not None and spec.out is None:
        check_writable("out", out)
    with torch_threads(spec):
        result = run_distributed(spec) if spec.distributed else run(spec)
    if spec.out is not None and not spec.distributed:
        spec.write_manifest([(0, len(spec))])
        return load_parts(spec.out)
    if out is not None and spec.out is None and result is not None:
        try:
            result.save(out)
        except OSError as exc:  # the run is done: hand its result over with the error
            raise ResultNotSaved(out, result, exc) from exc
    return result
