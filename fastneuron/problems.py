"""Problems: what each member learns, one object behind one seam (SPEC §1, §2, §5).

A problem class provides:

- ``name``, and its run-wide options as dataclass fields (validated in ``__post_init__``);
- ``MEMBER_OPTIONS`` (per-member options with their :class:`~fastneuron._validate.Bound`,
  validated by the run spec like the optimizer's) and ``MemberOptions``, the NamedTuple
  they travel in to the device (a field is None when no member uses it);
- :meth:`settings` (for results and checkpoints), :meth:`flags` (static facts the traced
  code and kernels specialize on: a ``Flags`` NamedTuple, whose defaults mean that no
  option is used) and :meth:`constants` (0-dim float32 tensors);
- :meth:`draw`: samples ``4q .. 4q+3`` of each member's data stream as four
  ``(x, target)`` pairs, the sampler of x and of the target;
- :meth:`rest_point`: a (w, b) where every noise-free sample's gradient is 0;
- :meth:`population_risk`: ``E[(w x + b - target)^2]`` in float64, closed form.

The tutorial's problem, :class:`LinearTarget`, is the first: ``a*x + c`` with
``x ~ U[lo, hi)``, or ``x ~ N(x_mean, x_std**2)`` with ``x_dist="normal"``, and per
member label noise ``noise*eps``, eps standard normal from its own stream (SPEC §2b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Optional, Protocol

import numpy as np
import torch

from ._validate import Bound, check_float, distinct
from .rng import data_block, noise_block, normal_data_block

#: ``x_dist`` values: the x sampler of :class:`LinearTarget`.
X_DISTS = ("uniform", "normal")


class Problem(Protocol):
    """What a problem provides (see the module docstring)."""

    name: ClassVar[str]
    MEMBER_OPTIONS: ClassVar[dict[str, Bound]]
    MemberOptions: ClassVar[type]
    Flags: ClassVar[type]

    def settings(self) -> dict: ...

    def flags(self, member_options: dict) -> Any: ...

    def constants(self, device: torch.device) -> tuple: ...

    @staticmethod
    def draw(s_lo, s_hi, q, consts, flags, options) -> tuple: ...

    @staticmethod
    def rest_point(consts) -> tuple: ...

    def population_risk(self, weight, bias, member_options: Optional[dict] = None) -> torch.Tensor: ...


class LinearConstants(NamedTuple):
    """:class:`LinearTarget`'s settings as 0-dim float32 tensors (tensors, not Python
    floats, so that compiled code neither specializes on them nor computes in float64)."""

    a: torch.Tensor
    c: torch.Tensor
    lo: torch.Tensor
    span: torch.Tensor  # float32(hi - lo), the difference taken in float64 first
    x_mean: torch.Tensor  # float32(x_mean)
    x_std: torch.Tensor  # float32(x_std)


class LinearOptions(NamedTuple):
    """:class:`LinearTarget`'s per-member options on the device, float32 (M,), or None
    when no member uses it."""

    noise: Optional[torch.Tensor]


class LinearFlags(NamedTuple):
    """What the traced code and kernels specialize on: label noise (some member has
    ``noise != 0``) and Gaussian x."""

    noise: bool = False
    normal: bool = False


@dataclass(frozen=True)
class LinearTarget:
    """The tutorial's problem: learn ``a*x + c`` from ``x ~ U[lo, hi)`` (SPEC §1), or from
    ``x ~ N(x_mean, x_std**2)`` with ``x_dist="normal"``; per member, label noise
    ``noise * eps`` added to the target (SPEC §2b)."""

    name: ClassVar[str] = "linear"
    MEMBER_OPTIONS: ClassVar[dict[str, Bound]] = {"noise": Bound(default=0.0, lo=0.0)}
    MemberOptions: ClassVar[type] = LinearOptions
    Flags: ClassVar[type] = LinearFlags  # Flags(): no per-member option used, uniform x

    a: float = 2.0
    c: float = 1.0
    lo: float = 1.0
    hi: float = 5.0
    x_dist: str = "uniform"
    x_mean: float = 0.0
    x_std: float = 1.0

    def __post_init__(self) -> None:
        for name in ("a", "c", "lo", "hi", "x_mean", "x_std"):
            object.__setattr__(self, name, check_float(name, getattr(self, name)))
        if not np.float32(self.lo) < np.float32(self.hi):
            raise ValueError(f"lo must be < hi (in float32), got lo={self.lo}, hi={self.hi}")
        check_float("hi - lo", self.hi - self.lo)
        if self.x_dist not in X_DISTS:
            raise ValueError(f"x_dist must be one of {', '.join(map(repr, X_DISTS))}; got {self.x_dist!r}")
        if not np.float32(self.x_std) > 0:
            raise ValueError(f"x_std must be > 0 (in float32), got {self.x_std}")

    @property
    def normal(self) -> bool:
        return self.x_dist == "normal"

    def settings(self) -> dict:
        """The run-wide settings; Gaussian x's only when x is Gaussian, so that a run
        without them records (and resumes from) exactly what it did before they existed."""
        gauss = {"x_dist": self.x_dist, "x_mean": self.x_mean, "x_std": self.x_std} if self.normal else {}
        return {"a": self.a, "c": self.c, "lo": self.lo, "hi": self.hi, **gauss}

    def flags(self, member_options: dict) -> LinearFlags:
        """``member_options``: the validated float32 (M,) tensors by name."""
        return LinearFlags(noise=bool((distinct(member_options["noise"]) != 0).any()), normal=self.normal)

    def constants(self, device: torch.device) -> LinearConstants:
        f32 = lambda v: torch.tensor(np.float32(v), device=device)  # noqa: E731
        return LinearConstants(a=f32(self.a), c=f32(self.c), lo=f32(self.lo),
                               span=f32(np.float64(self.hi) - np.float64(self.lo)),
                               x_mean=f32(self.x_mean), x_std=f32(self.x_std))

    @staticmethod
    def draw(s_lo, s_hi, q, consts: LinearConstants, flags: LinearFlags, options: LinearOptions):
        """Samples 4q .. 4q+3 of the data stream (SPEC §2, §2b) with their targets
        ``a*x + c``, plus ``noise*eps`` where the member's noise is not 0 (a member
        without noise skips the addition: its target is exactly the noise-free one)."""
        if flags.normal:
            xs = normal_data_block(s_lo, s_hi, q, consts.x_mean, consts.x_std)
        else:
            xs = data_block(s_lo, s_hi, q, consts.lo, consts.span)
        targets = [consts.a * x + consts.c for x in xs]
        if flags.noise:
            sigma = options.noise
            eps = noise_block(s_lo, s_hi, q)
            targets = [torch.where(sigma != 0, t + sigma * e, t) for t, e in zip(targets, eps)]
        return tuple(zip(xs, targets))

    @staticmethod
    def rest_point(consts: LinearConstants):
        """(w, b) where every sample's gradient is 0: the compiled backend parks diverged
        members there."""
        return consts.a, consts.c

    def x_moments(self) -> tuple[float, float]:
        """(E[x], E[x**2]) in float64: over the uniform stream's actual support
        ``lo32 + span32 * [0, 1)``, or of N(x_mean32, x_std32**2)."""
        if self.normal:
            mean, std = float(np.float32(self.x_mean)), float(np.float32(self.x_std))
            return mean, mean * mean + std * std
        lo = float(np.float32(self.lo))
        hi = lo + float(np.float32(np.float64(self.hi) - np.float64(self.lo)))
        return (lo + hi) / 2.0, (lo * lo + lo * hi + hi * hi) / 3.0

    def population_risk(self, weight, bias, member_options: Optional[dict] = None) -> torch.Tensor:
        """Float64 risk ``E[(w x + b - a x - c - noise*eps)**2]`` (SPEC §5): the noise-free
        risk plus each member's ``noise**2`` (``member_options["noise"]``, float32 (M,);
        absent means 0)."""
        ex, ex2 = self.x_moments()
        noise = (member_options or {}).get("noise")
        return population_risk(weight, bias, a=float(np.float32(self.a)), c=float(np.float32(self.c)),
                               ex=ex, ex2=ex2, noise=noise)


def population_risk(weight, bias, *, a: float, c: float, lo: Optional[float] = None, hi: Optional[float] = None,
                    ex: Optional[float] = None, ex2: Optional[float] = None, noise=None) -> torch.Tensor:
    """R(w, b) = E[(w x + b - a x - c - noise*eps)^2] in float64 (SPEC §5), for x ~ U[lo, hi)
    or given x's moments ``ex = E[x]``, ``ex2 = E[x**2]``; ``noise`` (scalar or per member)
    adds its square, the risk's floor."""
    dw = torch.as_tensor(weight).to(torch.float64) - a
    db = torch.as_tensor(bias).to(torch.float64) - c
    if ex is None:
        ex = (lo + hi) / 2.0
        ex2 = (lo * lo + lo * hi + hi * hi) / 3.0
    risk = dw * dw * ex2 + 2.0 * dw * db * ex + db * db
    if noise is not None:
        sigma = torch.as_tensor(noise).to(torch.float64)
        risk = risk + sigma * sigma
    return risk


#: Problems by name: what ``train(problem=...)`` accepts.
PROBLEMS: dict[str, type] = {LinearTarget.name: LinearTarget}


def register_problem(cls: type) -> type:
    """Make ``cls`` (a class following :class:`Problem`) available by its ``name``."""
    PROBLEMS[cls.name] = cls
    return cls
