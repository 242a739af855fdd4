"""RunSpec: one run, validated once, read by everything downstream.

``train()`` and the CLI build a :class:`RunSpec` from their arguments with
:meth:`RunSpec.build`; the engine, the kernels (through :meth:`RunSpec.block`),
checkpoints and results read it. It is the one place that knows the run's settings
(:attr:`RunSpec.settings`, one list of keys for results and checkpoints), its
members' digest, how to cut a shard or a block of members onto a device, the logged
steps and how to make the :class:`~fastneuron.result.TrainResult`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from . import _validate as V
from . import kernels
from .files import check_writable
from .members import describe, is_column, seed_range
from .part_writer import is_directory_path, write_manifest
from .optim import OPTIMIZERS, run_option_names
from .model import Neuron
from .problems import PROBLEMS
from .reference import Constants, Members, StepConfig
from .result import TrainResult, float64_column_name
from .rng import split_seeds
from .optim_adam import padded_table
from .schedules import check_lr_range, make_schedule, schedule_settings

#: Settings that are not part of what a run computes: a resumed run may change them.
EXECUTION_KEYS = ("backend", "device")
#: The most intra-op threads ``threads=`` takes (a bound against typos such as 10**6).
MAX_THREADS = 1024


@dataclass(frozen=True)
class RunSpec:
    """A validated run. Per-member tensors live on the CPU, shape (M,)."""

    seeds: torch.Tensor  # int64: the two's complement of each seed in [0, 2**64)
    lrs: torch.Tensor  # float32
    member_options: dict  # the optimizer's per-member options by name, float32 (a stride-0 view if shared)
    problem_options: dict  # the problem's per-member options by name (noise), likewise
    steps: int
    batch_size: int
    log_every: Optional[int]
    optimizer: Any  # an optimizer object (fastneuron.optim), with its run-wide options
    problem: Any  # a problem object (fastneuron.problems)
    backend: str  # resolved: eager, compile or triton
    device: torch.device
    progress: Optional[bool] = None
    checkpoint: Optional[str] = None
    checkpoint_every: float = 5.0
    resume: Optional[str] = None
    member_block: Optional[int] = None
    # torch's intra-op threads during the run (None: as they are): how it runs, not what it computes,
    # so not one of the settings results and checkpoints record.
    threads: Optional[int] = None
    distributed: bool = False
    seeds_shared: bool = True  # ``seeds`` may be the caller's memory: results copy it
    lr_schedule: Any = None  # a schedule object (fastneuron.schedules), None for a constant lr
    out: Optional[str] = None  # a parts directory (fastneuron.part_writer): results stream there
    part: int = 0  # the part this process writes (its rank)
    recorded: Optional[tuple] = None  # a shard's: the whole run's per-member columns (member_columns)
    # The values as given (float64, a stride-0 view if shared, or a grid's column) of the per-member
    # columns whose float64 value torch.optim's arithmetic uses (float64_names), for those where some
    # member's value is not a float32 value; the float32 columns above hold their rounding.
    float64: dict = dataclasses.field(default_factory=dict)
    model: Any = Neuron()  # the model (fastneuron.model.Neuron): d inputs, bias, activation, loss (SPEC §6)
    model_options: dict = dataclasses.field(default_factory=dict)  # the model's per-member options (init_scale)

    # -- building ---------------------------------------------------------------
    @classmethod
    def build(cls, seeds, lrs, steps, *, optimizer: str = "sgd", problem: str = "linear", batch_size=1,
              log_every=None, backend="auto", device=None, progress=None, checkpoint=None, checkpoint_every=5.0,
              resume=None, member_block=None, distributed=False, lr_schedule=None, out=None, threads=None,
              **options) -> "RunSpec":
        """Validate ``train()``'s arguments (see its docstring); ValueError naming the bad one.

        ``options`` are the optimizer's (per-member and run-wide) and the problem's."""
        opt_cls = _lookup("optimizer", optimizer, OPTIMIZERS)
        prob_cls = _lookup("problem", problem, PROBLEMS)
        member_names, opt_names, prob_names = opt_cls.MEMBER_OPTIONS, run_option_names(opt_cls), \
            run_option_names(prob_cls)
        model_names, model_member_names = run_option_names(Neuron), Neuron.MEMBER_OPTIONS
        prob_member_names = {**prob_cls.MEMBER_OPTIONS, **model_member_names}
        unknown = sorted(set(options) - set(member_names) - set(opt_names) - set(prob_names) - set(prob_member_names)
                         - set(model_names))
        if unknown:
            known = sorted({*member_names, *opt_names, *prob_names, *prob_member_names, *model_names})
            raise ValueError(f"unknown option {unknown[0]!r} for optimizer {optimizer!r} and problem {problem!r}; "
                             f"they take: {', '.join(known)}")
        # A grid's column (fastneuron.grid(..., a=[1, 2])) for an option that is one value for the run.
        run_wide = sorted(k for k in options if is_column(options[k]) and k not in member_names
                          and k not in prob_member_names)
        if run_wide:
            raise ValueError(f"{run_wide[0]} is run-wide for optimizer {optimizer!r} and problem {problem!r} (one "
                             f"value for the whole run), so it cannot be an axis of fastneuron.grid: run one train() "
                             f"per value; per member (grid axes): seeds, lrs, "
                             f"{', '.join(sorted({*member_names, *prob_member_names}))}")
        seeds_in = seeds
        seeds = seed_range(seeds) or seeds  # a range stays three numbers, as in a grid
        if is_column(seeds):  # a grid's: described, expanded block by block on the device
            if seeds.dtype != "uint64":
                raise ValueError(f"seeds must be integers, got a grid column of {seeds.dtype}")
        else:
            seeds = V.seeds_to_int64(seeds)
        m = seeds.numel()
        if m == 0:
            raise ValueError("seeds is empty: a run needs at least one member")
        lrs_in = lrs
        lrs = _per_member("lrs", lrs, m, lo=0.0, lo_open=True)
        member_options, problem_options, model_options = (
            {name: _per_member(name, options.get(name, b.default), m, lo=b.lo, lo_open=b.lo_open, hi=b.hi)
             for name, b in names.items()} for names in (member_names, prob_cls.MEMBER_OPTIONS, model_member_names))
        opt = opt_cls(**{k: options[k] for k in opt_names if k in options})
        opt.flags(member_options)  # run-wide checks that need the members (e.g. nesterov)
        model = Neuron(**{k: options[k] for k in model_names if k in options})
        prob = prob_cls(**{k: options[k] for k in prob_names if k in options}).bind(model)
        steps = V.check_int("steps", steps, 0)
        schedule = make_schedule(lr_schedule)
        # torch.optim computes some things from the Python floats it was given, in float64, before
        # rounding to float32 (SPEC §3c, §3d): those values are kept as given, where not float32 values.
        given = {"lrs": lrs_in, **{name: options.get(name, b.default) for name, b in member_names.items()}}
        float64 = {}
        for name in float64_names(opt, schedule is not None):
            f32 = lrs if name == "lrs" else member_options[name]
            x = f32.float64_column() if is_column(f32) else V.float64_values(given[name], f32)
            if x is not None:
                float64[name] = x
        if schedule is not None:
            if opt_cls.name != "sgd":
                raise ValueError(f"lr_schedule works with optimizer='sgd' (torch.optim.SGD under LambdaLR), "
                                 f"not {opt_cls.name!r}")
            # A bad factor (negative, not finite) is refused here, naming its step, and so is an lr
            # that leaves float32's range (torch.optim refuses it too).
            check_lr_range(schedule.factors(steps), float(V.distinct(float64.get("lrs", lrs)).max()))
        # Arrays of 64-bit integers are used in place (V.seeds_to_int64); all else is ours.
        seeds_shared = isinstance(seeds_in, (np.ndarray, torch.Tensor))
        checkpoint_every = V.check_float("checkpoint_every", checkpoint_every)
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 seconds, got {checkpoint_every}")
        check_writable("checkpoint", checkpoint)
        out, resume = _check_out(out, checkpoint, resume)
        dev = V.check_device(device)
        return cls(
            seeds=seeds, lrs=lrs, member_options=member_options, problem_options=problem_options, steps=steps,
            batch_size=V.check_int("batch_size", batch_size, 1),
            log_every=None if log_every is None else V.check_int("log_every", log_every, 1),
            optimizer=opt, problem=prob, backend=kernels.resolve(backend, dev, opt.name, prob.name, model.settings()),
            device=dev,
            progress=progress, checkpoint=_path(checkpoint), checkpoint_every=checkpoint_every,
            resume=_path(resume), out=out,
            member_block=None if member_block is None else V.check_int("member_block", member_block, 1),
            threads=None if threads is None else V.check_int("threads", threads, 1, MAX_THREADS),
            distributed=bool(distributed), seeds_shared=seeds_shared, lr_schedule=schedule, float64=float64,
            model=model, model_options=model_options,
        )

    # -- what the run is ----------------------------------------------------------
    def __len__(self) -> int:
        return self.seeds.numel()

    @property
    def settings(self) -> dict:
        """The run-wide settings, as results and checkpoints record them."""
        schedule = {} if self.lr_schedule is None else schedule_settings(self.lr_schedule, self.steps)
        return {"steps": self.steps, "batch_size": self.batch_size, "log_every": self.log_every,
                "optimizer": self.optimizer.name, **self.optimizer.settings(), **schedule,
                "problem": self.problem.name, **self.problem.settings(), **self.model.settings(),
                "backend": self.backend, "device": str(self.device)}

    @property
    def run_settings(self) -> dict:
        """The settings a resumed run must share with the run it resumes."""
        return {k: v for k, v in self.settings.items() if k not in EXECUTION_KEYS}

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of the members: their count, then each per-member array's dtype and bytes
        (seeds, lrs, the optimizer's options in order, then the problem's that some member
        uses: a run without noise has the digest it had before noise existed). When some
        column is a grid's (:mod:`fastneuron.members`), the grid's columns and the values
        shared by every member count by their description: O(axes), not O(M). Then, each
        under its name, the values as given of ``float64`` (none when every value is a
        float32 value: such a run has the digest it had before they were kept)."""
        h = hashlib.sha256(str(len(self)).encode())
        columns = [(None, x) for x in (self.seeds, self.lrs, *self.member_options.values(),
                                       *self.used_problem_options.values(), *self.used_model_options.values())]
        columns += [(f"float64 {name}", x) for name, x in self.float64.items()]
        described = any(is_column(x) for _, x in columns)
        for label, x in columns:
            if label is not None:
                h.update(label.encode())
            if described and (c := describe(x)) is not None:
                h.update(b"grid-column" + json.dumps(c.to_json()).encode())
                continue
            h.update(str(x.dtype).encode())
            h.update(x.contiguous().numpy())  # the array's buffer: no copy of its bytes
        return h.hexdigest()

    @functools.cached_property
    def flags(self):
        """The optimizer's static flags for these members."""
        return self.optimizer.flags(self.member_options)

    @functools.cached_property
    def problem_flags(self):
        """The problem's static flags for these members."""
        return self.problem.flags(self.problem_options)

    @functools.cached_property
    def model_flags(self):
        """The model's static flags for these members (SPEC §6)."""
        return self.model.flags(self.model_options)

    @property
    def used_model_options(self) -> dict:
        """The model's per-member options some member uses (init_scale != 1)."""
        return {k: v for k, v in self.model_options.items() if getattr(self.model_flags, k, True)}

    @property
    def used_problem_options(self) -> dict:
        """The problem's per-member options some member uses (a flag named like the option
        and False says none does, as for the optimizer's)."""
        return {k: v for k, v in self.problem_options.items() if getattr(self.problem_flags, k, True)}

    @property
    def config(self) -> StepConfig:
        return StepConfig(batch_size=self.batch_size, optimizer=type(self.optimizer), flags=self.flags,
                          problem=type(self.problem), problem_flags=self.problem_flags,
                          schedule=self.lr_schedule is not None,
                          model_flags=None if self.model_flags == type(self.model_flags)() else self.model_flags)

    def state_names(self) -> tuple[str, ...]:
        """The optimizer's state per parameter (e.g. ``("buf",)``)."""
        return self.optimizer.state_names(self.flags)

    @property
    def n_logged(self) -> int:
        return len(range(0, self.steps, self.log_every)) if self.log_every else 0

    @property
    def logged_steps(self) -> torch.Tensor:
        """The logged steps 0, k, 2k, ... (int64)."""
        return torch.arange(0, self.steps if self.log_every else 0, self.log_every or 1, dtype=torch.int64)

    # -- cutting ------------------------------------------------------------------
    def constants(self, device: torch.device) -> Constants:
        factors = None
        if self.lr_schedule is not None:  # float64 (steps,), padded as Adam's tables
            factors = torch.from_numpy(padded_table(self.lr_schedule.factors(self.steps), self.steps)).to(device)
        return Constants(problem=self.problem.constants(device), optimizer=self.optimizer.constants(device, self.steps),
                         batch=torch.tensor(np.float32(self.batch_size), device=device), lr_factors=factors,
                         model=self.model.constants(device))

    def block(self, start: int, stop: int, device: torch.device, pad: int = 0) -> Members:
        """Per-member constants of members [start, stop) on ``device`` (``pad`` extra
        copies of the first). Options no member uses are None.

        A value every member shares is one value expanded (stride 0), not M copies: one
        lr, and for consecutive seeds that share their high word (a ``range``) both seed
        words, the low one with ``s_lo_step`` 1 (:class:`~fastneuron.reference.Members`).
        Nothing of size M is made for them here: the Triton kernels read them so, the
        engine makes them dense for the other backends. The options are copied, since a
        view here would make torch.compile guard on its base.

        Where the run's arithmetic uses an lr as given (:func:`float64_names`), ``neg_lr64``
        is -lr in float64 (shared as ``neg_lr`` is); the optimizer's ``derived_options``
        (RMSprop's ``f32(1 - alpha)``, AdamW's ``f32(1 - lr*wd)``) are computed here, on the
        device, from the float64 values as given (SPEC §3c)."""
        first = self.seeds.consecutive_seeds(start, stop) if is_column(self.seeds) and not pad else None
        if first is None:
            s_lo, s_hi, s_lo_step = *split_seeds(take(self.seeds, start, stop, device, pad, copy=False)), 0
        else:  # int32 bit patterns of the first seed's words
            s_lo, s_hi = (torch.tensor([w - 2**32 if w >= 2**31 else w], dtype=torch.int32, device=device)
                          .expand(stop - start) for w in (first & 0xFFFFFFFF, first >> 32))
            s_lo_step = 1
        lrs = self.lrs
        if not pad and not is_column(lrs) and lrs.stride(0) == 0:
            # One lr: one value on the device too (.to(device) of the expanded tensor copies M).
            neg_lr = (-lrs[:1].to(device)).expand(stop - start)
        else:
            neg_lr = -take(lrs, start, stop, device, pad, copy=False)
        # A flag named like an option and False says that no member uses it (optim.py).
        def options(values: dict, flags) -> dict:
            return {name: take(x, start, stop, device, pad) if getattr(flags, name, True) else None
                    for name, x in values.items()}

        values64 = {name: self._float64_block(name, start, stop, device, pad)
                    for name in float64_names(self.optimizer, self.lr_schedule is not None)}
        optimizer_options = options(self.member_options, self.flags)
        derive = getattr(self.optimizer, "derived_options", None)
        if derive is not None:
            optimizer_options.update(derive(self.flags, values64))
        return Members(s_lo=s_lo, s_hi=s_hi, neg_lr=neg_lr,
                       options=self.optimizer.MemberOptions(**optimizer_options),
                       problem_options=self.problem.MemberOptions(**options(self.problem_options,
                                                                            self.problem_flags)),
                       s_lo_step=s_lo_step, neg_lr64=-values64["lrs"] if "lrs" in values64 else None,
                       model_options=self.model.MemberOptions(**options(self.model_options, self.model_flags)))

    def _float64_block(self, name: str, start: int, stop: int, device: torch.device, pad: int) -> torch.Tensor:
        """Members [start, stop) (plus ``pad``) of column ``name``'s values as given, float64 on
        ``device``: ``float64[name]``, or the float32 column (exact in float64) when every
        value is a float32 value. One value shared by every member stays one value expanded."""
        x = self.float64.get(name)
        if x is None:
            x = self.lrs if name == "lrs" else self.member_options[name]
        if not pad and not is_column(x) and x.stride(0) == 0:
            return x[:1].to(device, torch.float64).expand(stop - start)
        return take(x, start, stop, device, pad, copy=False).to(torch.float64)

    def shard(self, start: int, stop: int, device: torch.device, suffix: str, progress: Optional[bool],
              part: int = 0) -> "RunSpec":
        """Members [start, stop) as a run of their own on ``device`` (one rank's part of a
        distributed run): checkpoints get ``suffix``, a parts directory's part is ``part``;
        the backend is resolved anew."""
        backend = kernels.resolve(self.backend, device, self.optimizer.name, self.problem.name, self.model.settings())
        return dataclasses.replace(
            self, seeds=self.seeds[start:stop], lrs=self.lrs[start:stop],
            member_options={k: v[start:stop] for k, v in self.member_options.items()},
            float64={k: v[start:stop] for k, v in self.float64.items()},
            problem_options={k: v[start:stop] for k, v in self.problem_options.items()}, device=device,
            model_options={k: v[start:stop] for k, v in self.model_options.items()},
            backend=backend, progress=progress, distributed=False,
            checkpoint=None if self.checkpoint is None else self.checkpoint + suffix,
            resume=self.resume if self.resume is None or self.out is not None else self.resume + suffix,
            part=part, recorded=tuple(self.member_columns()))

    def member_columns(self) -> dict:
        """The per-member columns a result records, by name: seeds, lrs, the optimizer's
        options, the problem's that some member uses, then the values as given of
        ``float64`` (``lrs_float64``, say) (of the whole run, for a shard: every part of a
        parts directory holds the same columns)."""
        columns = {"seeds": self.seeds, "lrs": self.lrs, **self.member_options, **self.problem_options,
                   **self.model_options, **{float64_column_name(k): v for k, v in self.float64.items()}}
        names = self.recorded or ("seeds", "lrs", *self.member_options, *self.used_problem_options,
                                  *self.used_model_options, *map(float64_column_name, self.float64))
        return {k: columns[k] for k in names}

    # -- results -----------------------------------------------------------------
    def write_manifest(self, bounds: list, **extra_settings) -> None:
        """``out``'s manifest (:func:`fastneuron.part_writer.write_manifest`) once its
        parts (members ``bounds[i]``) are done."""
        described = {k: c.to_json() for k, x in self.member_columns().items() if (c := describe(x)) is not None}
        write_manifest(self.out, settings={**self.settings, **extra_settings}, n_members=len(self),
                       member_options=[*self.member_options, *self.used_problem_options, *self.used_model_options],
                       described=described,
                       history_steps=self.logged_steps.tolist(), bounds=bounds, float64=list(self.float64))

    def result(self, weight, bias, diverged_at, history_weight=None, history_bias=None, **extra_settings):
        """The :class:`~fastneuron.result.TrainResult` of this run from its final arrays."""
        seeds = self.seeds if is_column(self.seeds) else self.seeds.numpy().view(np.uint64)
        return TrainResult(
            seeds=seeds.copy() if self.seeds_shared else seeds, lrs=self.lrs,
            member_options={**self.member_options, **self.used_problem_options, **self.used_model_options},
            weight=weight, bias=bias,
            diverged_at=diverged_at,
            settings={**self.settings, **extra_settings}, history_steps=self.logged_steps,
            history_weight=history_weight, history_bias=history_bias, float64=dict(self.float64))


def float64_names(optimizer, schedule: bool) -> tuple:
    """The per-member columns whose float64 value, as given, the run's arithmetic uses
    (SPEC §3c, §3d): "lrs" with an lr schedule (``base_lr * factor`` in float64) or an
    optimizer whose update takes -lr in float64 (``LR_FLOAT64``: Adam's ``lr /
    bias_correction1``), then the optimizer's ``float64_options()`` (RMSprop's alpha,
    AdamW's weight_decay)."""
    lr = schedule or getattr(type(optimizer), "LR_FLOAT64", False)
    own = getattr(optimizer, "float64_options", None)
    return (("lrs",) if lr else ()) + (tuple(own()) if own is not None else ())


def take(x: torch.Tensor, start: int, stop: int, device, pad: int = 0, *, dim: int = 0,
         copy: bool = True) -> torch.Tensor:
    """Members [start, stop) of a host array (along ``dim``) on ``device``, plus ``pad``
    copies of the first. ``copy=False`` allows a view, for callers that derive new
    tensors anyway. A grid's column is expanded there, on ``device``."""
    if is_column(x):
        return x.take(start, stop, device, pad)
    dim = dim % x.dim()  # the members: dim -1 is the last (a (d, M) weight, an (L, d, M) history)
    x = x.narrow(dim, start, stop - start)
    if pad:
        x = torch.cat([x, x.narrow(dim, 0, 1).expand(*([-1] * dim), pad, *([-1] * (x.dim() - dim - 1)))], dim=dim)
    return x.to(device, copy=copy)


def _per_member(name: str, value, m: int, **bounds):
    """``V.per_member``, or for a grid's column the check of its axis' values."""
    if not is_column(value):
        return V.per_member(name, value, m, **bounds)
    if len(value) != m:
        raise ValueError(f"{name} has {len(value)} values but there are {m} seeds: lengths must match")
    if value.dtype != "float32":
        raise ValueError(f"{name} must be real numbers, got a grid column of {value.dtype}")
    try:
        checked = V.per_member(name, value.values, value.n, **bounds)
    except ValueError as exc:  # per_member counts the axis' values, not the members
        raise ValueError(str(exc).replace("; member ", "; value ", 1) + " (of its grid axis)") from None
    return value.with_values(checked.contiguous().numpy())


def _check_out(out, checkpoint, resume) -> tuple:
    """(out, resume) for a parts directory ``out`` (None otherwise: a file ``out`` is the
    caller's to write). A fresh run needs an empty or new directory; ``resume`` must be
    the same directory, whose parts then hold the checkpoint."""
    if out is None or not is_directory_path(out):
        if resume is not None and os.path.isdir(os.fspath(resume)):
            raise ValueError(f"resume: {os.fspath(resume)} is a parts directory; resume it with out= the same "
                             f"directory")
        return None, resume
    out = os.path.abspath(os.fspath(out))
    if checkpoint is not None:
        raise ValueError("checkpoint: a run with out=DIR/ checkpoints into its parts; resume it with resume=DIR/")
    if resume is not None:
        if os.path.abspath(os.fspath(resume)) != out:
            raise ValueError(f"resume: a run with out={out}/ resumes from that directory, not {os.fspath(resume)}")
        if not os.path.isdir(out):
            raise ValueError(f"resume: no parts directory at {out}")
        return out, out
    if os.path.isdir(out) and os.listdir(out):
        raise ValueError(f"out: {out} is not empty (a parts directory is written into a new or empty "
                         f"directory; resume=DIR/ continues a run there)")
    parent = os.path.dirname(out)
    if not os.path.isdir(out) and not os.path.isdir(parent):
        raise ValueError(f"out: directory {parent} does not exist")
    if not os.access(out if os.path.isdir(out) else parent, os.W_OK | os.X_OK):
        raise ValueError(f"out: {out if os.path.isdir(out) else parent} is not writable")
    return out, None


def _lookup(what: str, name, table: dict) -> type:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, table))}; got {name!r}")
    return table[name]


def _path(path) -> Optional[str]:
    return None if path is None else os.fspath(path)
