"""Problems: what each member learns, one object behind one seam (SPEC §1, §2, §5).

A problem class provides:

- ``name``, and its run-wide options as dataclass fields (validated in ``__post_init__``);
- :meth:`settings` (for results and checkpoints) and :meth:`constants` (0-dim
  float32 tensors for the traced code);
- :meth:`draw`: samples ``4q .. 4q+3`` of each member's data stream as four
  ``(x, target)`` pairs, the sampler of x and of the target;
- :meth:`rest_point`: a (w, b) where every sample's gradient is 0;
- :meth:`population_risk`: ``E[(w x + b - target)^2]`` in float64, closed form.

The tutorial's problem, :class:`LinearTarget`, is the first: ``a*x + c`` with
``x ~ U[lo, hi)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Protocol

import numpy as np
import torch

from ._validate import check_float
from .rng import data_block


class Problem(Protocol):
    """What a problem provides (see the module docstring)."""

    name: ClassVar[str]

    def settings(self) -> dict: ...

    def constants(self, device: torch.device) -> tuple: ...

    @staticmethod
    def draw(s_lo, s_hi, q, consts) -> tuple: ...

    @staticmethod
    def rest_point(consts) -> tuple: ...

    def population_risk(self, weight, bias) -> torch.Tensor: ...


class LinearConstants(NamedTuple):
    """:class:`LinearTarget`'s settings as 0-dim float32 tensors (tensors, not Python
    floats, so that compiled code neither specializes on them nor computes in float64)."""

    a: torch.Tensor
    c: torch.Tensor
    lo: torch.Tensor
    span: torch.Tensor  # float32(hi - lo), the difference taken in float64 first


@dataclass(frozen=True)
class LinearTarget:
    """The tutorial's problem: learn ``a*x + c`` from ``x ~ U[lo, hi)`` (SPEC §1)."""

    name: ClassVar[str] = "linear"

    a: float = 2.0
    c: float = 1.0
    lo: float = 1.0
    hi: float = 5.0

    def __post_init__(self) -> None:
        for name in ("a", "c", "lo", "hi"):
            object.__setattr__(self, name, check_float(name, getattr(self, name)))
        if not np.float32(self.lo) < np.float32(self.hi):
            raise ValueError(f"lo must be < hi (in float32), got lo={self.lo}, hi={self.hi}")
        check_float("hi - lo", self.hi - self.lo)

    def settings(self) -> dict:
        return {"a": self.a, "c": self.c, "lo": self.lo, "hi": self.hi}

    def constants(self, device: torch.device) -> LinearConstants:
        f32 = lambda v: torch.tensor(np.float32(v), device=device)  # noqa: E731
        return LinearConstants(a=f32(self.a), c=f32(self.c), lo=f32(self.lo),
                               span=f32(np.float64(self.hi) - np.float64(self.lo)))

    @staticmethod
    def draw(s_lo, s_hi, q, consts: LinearConstants):
        """Samples 4q .. 4q+3 of the data stream (SPEC §2) with their targets ``a*x + c``."""
        xs = data_block(s_lo, s_hi, q, consts.lo, consts.span)
        return tuple((x, consts.a * x + consts.c) for x in xs)

    @staticmethod
    def rest_point(consts: LinearConstants):
        """(w, b) where every sample's gradient is 0: the compiled backend parks diverged
        members there."""
        return consts.a, consts.c

    def population_risk(self, weight, bias) -> torch.Tensor:
        """Float64 risk over the x stream's actual support, ``lo32 + span32 * [0, 1)``."""
        lo = float(np.float32(self.lo))
        hi = lo + float(np.float32(np.float64(self.hi) - np.float64(self.lo)))
        return population_risk(weight, bias, a=float(np.float32(self.a)), c=float(np.float32(self.c)),
                               lo=lo, hi=hi)


def population_risk(weight, bias, *, a: float, c: float, lo: float, hi: float) -> torch.Tensor:
    """R(w, b) = E_x[(w x + b - a x - c)^2] for x ~ U[lo, hi), in float64 (SPEC §5)."""
    dw = torch.as_tensor(weight).to(torch.float64) - a
    db = torch.as_tensor(bias).to(torch.float64) - c
    ex = (lo + hi) / 2.0
    ex2 = (lo * lo + lo * hi + hi * hi) / 3.0
    return dw * dw * ex2 + 2.0 * dw * db * ex + db * db


#: Problems by name: what ``train(problem=...)`` accepts.
PROBLEMS: dict[str, type] = {LinearTarget.name: LinearTarget}


def register_problem(cls: type) -> type:
    """Make ``cls`` (a class following :class:`Problem`) available by its ``name``."""
    PROBLEMS[cls.name] = cls
    return cls
