"""Optimizers: each one object behind one seam (SPEC §3b for SGD).

An optimizer class says everything the rest of fastneuron needs to know about it:

- ``name`` (what ``train(optimizer=...)`` and results call it);
- ``MEMBER_OPTIONS``: its per-member hyperparameters besides the learning rate, with
  their default and range (:class:`Bound`), validated once by the run spec;
- ``MemberOptions``: the NamedTuple type those per-member tensors travel in (a field
  is None when no member uses it);
- its run-wide options: the dataclass fields of the object (validated in ``__post_init__``);
- :meth:`flags`: the static facts the traced code and the kernels specialize on (a
  flag named like a per-member option and False means no member uses the option:
  it is then not carried to the device at all);
- :meth:`state_names`: the per-parameter state it keeps (e.g. the momentum buffer);
- :meth:`constants`: run-wide values as 0-dim float32 tensors, given the device and
  the run's ``steps``: values that depend on the step only (Adam's bias corrections) are
  computed here, on the host, as tables indexed by the step (a device never calls ``pow``);
- :meth:`update`: the reference update of one parameter at step ``t`` (a 0-dim int64
  tensor, counted from 0), one float32 op a line; it gets ``neg_lr``, the member's -lr in
  float32, or in float64 as given when the class sets ``LR_FLOAT64 = True`` (Adam, whose
  torch counterpart divides the Python float lr by the bias correction in float64).

Optional, for what torch.optim computes on the host from the Python floats it was given
before rounding to float32 (SPEC §3c): ``float64_options()`` names the per-member options
whose float64 value that arithmetic uses (the run keeps them as given, beside their
float32 values: RMSprop's ``alpha``, AdamW's ``weight_decay``), and
``derived_options(flags, float64)`` computes, once per block of members on the device,
extra ``MemberOptions`` fields from those float64 tensors (``float64`` holds them by name,
with "lrs" when ``LR_FLOAT64``): RMSprop's ``f32(1 - alpha)``, AdamW's ``f32(1 - lr*wd)``.

Adding an optimizer: its class here (or in its own module, passed to
:func:`register_optimizer`), its update in each kernel that supports it, its tests
and its CLI flag. The engine, checkpoints and results read the seam and need no edit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple, Optional, Protocol

import numpy as np
import torch

from ._validate import Bound, check_float, distinct  # noqa: F401  (Bound, distinct: the seam's names)
from .optim_adam import Adam, AdamW, RMSprop


class Optimizer(Protocol):
    """What an optimizer provides (see the module docstring)."""

    name: ClassVar[str]
    MEMBER_OPTIONS: ClassVar[dict[str, Bound]]
    MemberOptions: ClassVar[type]

    def settings(self) -> dict: ...

    def flags(self, member_options: dict) -> Any: ...

    def state_names(self, flags) -> tuple[str, ...]: ...

    def constants(self, device: torch.device, steps: int) -> tuple: ...

    @staticmethod
    def update(flags, p, d, state: tuple, t, neg_lr, options, consts) -> tuple: ...


class SGDOptions(NamedTuple):
    """SGD's per-member options on the device, float32 (M,), or None when off for all."""

    momentum: Optional[torch.Tensor]
    weight_decay: Optional[torch.Tensor]


class SGDFlags(NamedTuple):
    """What SGD's traced code and kernels depend on: an option that no member uses is
    left out of the arithmetic (SPEC §3b: off means skipped, not computed with 0)."""

    momentum: bool = False
    weight_decay: bool = False
    nesterov: bool = False


class SGDConstants(NamedTuple):
    one_minus_dampening: torch.Tensor  # float32(1 - tau), rounded once as torch.optim.SGD does


@dataclass(frozen=True)
class SGD:
    """``torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov)`` per member."""

    name: ClassVar[str] = "sgd"
    MEMBER_OPTIONS: ClassVar[dict[str, Bound]] = {
        "momentum": Bound(default=0.0, lo=0.0, hi=1.0),
        "weight_decay": Bound(default=0.0, lo=0.0),
    }
    MemberOptions: ClassVar[type] = SGDOptions

    dampening: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        dampening = check_float("dampening", self.dampening)
        if not 0.0 <= dampening < 1.0:
            raise ValueError(f"dampening must be in [0, 1), got {dampening}")
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False, got {self.nesterov!r}")
        object.__setattr__(self, "dampening", dampening)
        object.__setattr__(self, "nesterov", bool(self.nesterov))

    def settings(self) -> dict:
        return {"dampening": self.dampening, "nesterov": self.nesterov}

    def flags(self, member_options: dict) -> SGDFlags:
        """``member_options``: the validated float32 (M,) tensors by name."""
        mu, wd = distinct(member_options["momentum"]), distinct(member_options["weight_decay"])
        if self.nesterov and not bool((mu > 0).all()):
            raise ValueError("nesterov=True needs momentum > 0 for every member")
        return SGDFlags(momentum=bool((mu != 0).any()), weight_decay=bool((wd != 0).any()), nesterov=self.nesterov)

    def state_names(self, flags: SGDFlags) -> tuple[str, ...]:
        return ("buf",) if flags.momentum else ()

    def constants(self, device: torch.device, steps: int) -> SGDConstants:
        return SGDConstants(torch.tensor(np.float32(1.0 - self.dampening), device=device))

    @staticmethod
    def update(flags: SGDFlags, p, d, state: tuple, t, neg_lr, options: SGDOptions, consts: SGDConstants):
        """One parameter's ``torch.optim.SGD`` update (SPEC §3b) from its gradient ``d`` at
        step ``t`` (0-dim int64). Returns (p, state); at step 0 the buffer starts as ``d``."""
        if flags.weight_decay:
            wd = options.weight_decay
            d = torch.where(wd != 0, d + wd * p, d)  # d = gp + wd*p
        if flags.momentum:
            mu = options.momentum
            v = torch.where(t == 0, d, mu * state[0] + consts.one_minus_dampening * d)
            d_m = d + mu * v if flags.nesterov else v
            d = torch.where(mu != 0, d_m, d)
            state = (v,)
        p = p + neg_lr * d  # p.add_(d, alpha=-lr)
        return p, state


#: Optimizers by name: what ``train(optimizer=...)`` accepts.
OPTIMIZERS: dict[str, type] = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop)}


def register_optimizer(cls: type) -> type:
    """Make ``cls`` (a class following :class:`Optimizer`) available by its ``name``."""
    OPTIMIZERS[cls.name] = cls
    return cls


def run_option_names(cls: type) -> tuple[str, ...]:
    """The run-wide options of an optimizer or problem class: its dataclass fields."""
    return tuple(f.name for f in fields(cls) if f.init)
