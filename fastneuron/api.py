"""``fastneuron.train`` and ``fastneuron.grid``: build the run's spec, hand it over."""

from __future__ import annotations

import itertools
from typing import Optional

import numpy as np

from .distributed import run_distributed
from .engine import run
from .result import TrainResult
from .spec import RunSpec


def grid(seeds, lrs, **per_member) -> dict:
    """The product of seeds, learning rates and any other per-member option.

    Returns a dict of equal-length lists to pass on: ``train(**grid(seeds=range(10),
    lrs=[1e-3, 1e-2]), steps=100)``. The first argument varies slowest, as in
    ``itertools.product``: member ``i`` of ``grid(seeds=S, lrs=L)`` has seed
    ``S[i // len(L)]`` and lr ``L[i % len(L)]``.
    """
    names = ["seeds", "lrs", *per_member]
    axes = [list(seeds), [lrs] if np.isscalar(lrs) else list(lrs)]
    axes += [[v] if np.isscalar(v) else list(v) for v in per_member.values()]
    for name, axis in zip(names, axes):
        if not axis:
            raise ValueError(f"{name} is empty: a grid needs at least one value on each axis")
    columns = zip(*itertools.product(*axes))
    return {name: list(col) for name, col in zip(names, columns)}


def train(seeds, lrs, steps: int, *, optimizer: str = "sgd", problem: str = "linear", batch_size: int = 1,
          log_every: Optional[int] = None, backend: str = "auto", device=None, progress: Optional[bool] = None,
          checkpoint=None, checkpoint_every: float = 5.0, resume=None, member_block: Optional[int] = None,
          distributed: bool = False, lr_schedule=None, **options) -> Optional[TrainResult]:
    """Train one ``nn.Linear(1, 1)`` per member by per-sample SGD, as SPEC.md says.

    Member ``m`` has ``seeds[m]`` (an integer in [0, 2**64)) and ``lrs[m]`` (a scalar
    gives every member the same). ``batch_size`` samples a step; ``log_every=k`` keeps
    (w, b) after steps 0, k, 2k, ...

    ``options`` belong to the optimizer and the problem (:mod:`fastneuron.optim`,
    :mod:`fastneuron.problems`); an unknown one is a ValueError. For
    ``optimizer="sgd"`` (``torch.optim.SGD``): ``momentum`` and ``weight_decay`` (a
    scalar or one value per member), ``dampening`` and ``nesterov`` (run-wide). For
    ``"adam"`` and ``"adamw"`` (``torch.optim.Adam``/``AdamW``): ``weight_decay`` and
    ``eps`` per member, ``betas=(beta1, beta2)`` and ``amsgrad`` run-wide; for
    ``"rmsprop"``: ``alpha``, ``eps`` and ``weight_decay`` per member, ``momentum`` and
    ``centered`` run-wide (SPEC §3c). For
    ``problem="linear"``: the target ``a*x + c`` with ``x ~ U[lo, hi)`` (``a=2, c=1,
    lo=1, hi=5``), or ``x ~ N(x_mean, x_std**2)`` with ``x_dist="normal"`` (``x_mean=0,
    x_std=1``); ``noise`` (a scalar or one value per member, >= 0) adds label noise
    ``noise * eps``, eps standard normal from its own random stream (SPEC §2b).

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
    (default: as many as a quarter of the free memory holds).

    ``distributed=True`` (under torchrun, or with ``torch.distributed`` initialized)
    shards the members across the processes, each on its own device; see
    :mod:`fastneuron.distributed`. Checkpoints go to ``checkpoint + ".rank{r}"``.

    Returns:
        A :class:`TrainResult` (on the host): per member the seed, lr and options,
        the final ``weight`` and ``bias`` (NaN where diverged), ``diverged_at`` (the
        step that made w or b non-finite, -1 if none) and the logged history. Under
        ``distributed=True``, rank 0 returns the whole result and the other ranks None.

    Raises:
        ValueError: for any bad argument, naming it, before any work starts (a
            ``checkpoint`` path that cannot be written included).
        fastneuron.result.ResultNotSaved: an ``OSError``: the run finished but its final
            checkpoint could not be written; it names the path, and ``.result`` holds
            the TrainResult.
    """
    spec = RunSpec.build(seeds, lrs, steps, optimizer=optimizer, problem=problem, batch_size=batch_size,
                         log_every=log_every, backend=backend, device=device, progress=progress,
                         checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                         member_block=member_block, distributed=distributed, lr_schedule=lr_schedule, **options)
    return run_distributed(spec) if spec.distributed else run(spec)
