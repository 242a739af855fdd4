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

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Optional, Protocol

import numpy as np
import torch

from ._validate import Bound, check_float, distinct
from .model import activate, check_activation, tree_sum
from .normal import normal_block
from .rng import MASK32, coordinate_key, data_block, noise_block, normal_data_block, philox4x32, uint32_to_uniform

#: ``x_dist`` values: the x sampler of :class:`LinearTarget`.
X_DISTS = ("uniform", "normal")
#: The evaluation set's stream (SPEC §6f): coordinate i from key (3, i), seed 0.
EVAL_KEY = (3, 0)
#: ``eval_samples``: its default, and the most it takes (a bound against typos: the set is
#: held on the host in float64, eval_samples x inputs values).
DEFAULT_EVAL_SAMPLES = 4096
MAX_EVAL_SAMPLES = 1 << 22


#: The most values (eval_samples x inputs) the evaluation set may hold: 256 MiB of float64.
MAX_EVAL_VALUES = 1 << 25


def check_eval_memory(eval_samples: int, inputs: int) -> None:
    """ValueError naming eval_samples when the evaluation set of ``inputs`` coordinates
    would not fit in :data:`MAX_EVAL_VALUES` (checked before the run, not at the first risk)."""
    if eval_samples * inputs > MAX_EVAL_VALUES:
        raise ValueError(f"eval_samples: {eval_samples} samples of {inputs} inputs is {eval_samples * inputs} values, "
                         f"more than the evaluation set's {MAX_EVAL_VALUES} (256 MiB of float64); "
                         f"use at most {MAX_EVAL_VALUES // inputs} samples")


def check_eval_samples(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= int(value) <= MAX_EVAL_SAMPLES:
        raise ValueError(f"eval_samples must be an integer in [1, {MAX_EVAL_SAMPLES}], got {value!r}")
    return int(value)


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
    eval_samples: int = DEFAULT_EVAL_SAMPLES  # the risk's evaluation set, for an activation (SPEC §6f)
    # Bound from the model by bind(): not options of their own.
    activation: str = field(default="identity", init=False)
    leaky_slope: float = field(default=0.01, init=False)

    def __post_init__(self) -> None:
        for name in ("a", "c", "lo", "hi", "x_mean", "x_std"):
            object.__setattr__(self, name, check_float(name, getattr(self, name)))
        object.__setattr__(self, "eval_samples", check_eval_samples(self.eval_samples))
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
        return {"a": self.a, "c": self.c, "lo": self.lo, "hi": self.hi, **gauss, **_eval_setting(self)}

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

    def bind(self, model) -> "LinearTarget":
        """This problem for ``model`` (:class:`fastneuron.model.Neuron`): v2's problem has
        one input and a real-valued target."""
        if model.inputs != 1:
            raise ValueError(f"inputs: problem='linear' has one input (v2's a*x + c); for inputs={model.inputs} "
                             f"use problem='teacher'")
        if model.loss != "mse":
            raise ValueError(f"loss: {model.loss!r} needs problem='teacher' (labels from a teacher), not 'linear'")
        if (model.activation, model.leaky_slope) == (self.activation, self.leaky_slope):
            return self
        bound = dataclasses.replace(self)
        object.__setattr__(bound, "activation", model.activation)
        object.__setattr__(bound, "leaky_slope", model.leaky_slope)
        return bound

    def x_moments(self) -> tuple[float, float]:
        """(E[x], E[x**2]) in float64: over the uniform stream's actual support
        ``lo32 + span32 * [0, 1)``, or of N(x_mean32, x_std32**2)."""
        if self.normal:
            mean, std = float(np.float32(self.x_mean)), float(np.float32(self.x_std))
            return mean, mean * mean + std * std
        lo = float(np.float32(self.lo))
        hi = lo + float(np.float32(np.float64(self.hi) - np.float64(self.lo)))
        return (lo + hi) / 2.0, (lo * lo + lo * hi + hi * hi) / 3.0

    # What the evaluation set (SPEC §6f) needs: the teacher of v2's problem.
    inputs: ClassVar[int] = 1
    loss: ClassVar[str] = "mse"
    target_activation: ClassVar[str] = "identity"

    def a_values(self) -> np.ndarray:
        return np.asarray([self.a], dtype=np.float64).astype(np.float32)

    def population_risk(self, weight, bias, member_options: Optional[dict] = None) -> torch.Tensor:
        """Float64 risk ``E[(w x + b - a x - c - noise*eps)**2]`` (SPEC §5): the noise-free
        risk plus each member's ``noise**2`` (``member_options["noise"]``, float32 (M,);
        absent means 0). With an activation (bound from the model, SPEC §6f): the mean
        squared error on the evaluation set (:func:`evaluation_risk`)."""
        if self.activation != "identity":
            return evaluation_risk(self, weight, bias)
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


class TeacherConstants(NamedTuple):
    """:class:`Teacher`'s settings as float32 tensors: ``a`` 0-dim (one value for every
    coordinate) or (d, 1) (one per coordinate, broadcasting over the members)."""

    a: torch.Tensor
    c: torch.Tensor
    lo: torch.Tensor
    span: torch.Tensor
    x_mean: torch.Tensor
    x_std: torch.Tensor
    slope: torch.Tensor  # the model's f32(leaky_slope), for a leaky_relu teacher


class TeacherFlags(NamedTuple):
    """What the traced code and kernels specialize on (defaults: d = 1, identity, mse)."""

    noise: bool = False
    normal: bool = False
    inputs: int = 1
    bce: bool = False
    target_activation: str = "identity"


@dataclass(frozen=True)
class Teacher:
    """Teacher-student learning (SPEC §6d): the target of a sample is
    ``target_activation(a . x + c) + noise*eps`` (with ``loss="bce"``: the label
    ``a . x + c + noise*eps > 0``), x's d coordinates i.i.d. ``U[lo, hi)`` or
    ``N(x_mean, x_std**2)``. ``a`` is one value for every coordinate or d values."""

    name: ClassVar[str] = "teacher"
    MEMBER_OPTIONS: ClassVar[dict[str, Bound]] = {"noise": Bound(default=0.0, lo=0.0)}
    MemberOptions: ClassVar[type] = LinearOptions
    Flags: ClassVar[type] = TeacherFlags

    a: Any = 2.0
    c: float = 1.0
    lo: float = 1.0
    hi: float = 5.0
    x_dist: str = "uniform"
    x_mean: float = 0.0
    x_std: float = 1.0
    target_activation: Optional[str] = None  # None: the model's activation
    eval_samples: int = DEFAULT_EVAL_SAMPLES  # the risk's evaluation set (SPEC §6f)
    # Bound from the model by bind(): not options of their own.
    inputs: int = field(default=1, init=False)
    loss: str = field(default="mse", init=False)
    leaky_slope: float = field(default=0.01, init=False)
    activation: str = field(default="identity", init=False)

    def __post_init__(self) -> None:
        a = self.a
        if isinstance(a, (list, tuple, np.ndarray, torch.Tensor)):
            values = np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a)
            if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf":
                raise ValueError(f"a must be a number or a 1-D sequence of numbers (one per input), got {a!r}")
            a = tuple(check_float(f"a[{i}]", float(v)) for i, v in enumerate(values))
        else:
            a = check_float("a", a)
        object.__setattr__(self, "a", a)
        LinearTarget(c=self.c, lo=self.lo, hi=self.hi, x_dist=self.x_dist, x_mean=self.x_mean, x_std=self.x_std)
        for name in ("c", "lo", "hi", "x_mean", "x_std"):
            object.__setattr__(self, name, check_float(name, getattr(self, name)))
        if self.target_activation is not None:
            check_activation("target_activation", self.target_activation)
        object.__setattr__(self, "eval_samples", check_eval_samples(self.eval_samples))

    def bind(self, model) -> "Teacher":
        """This teacher for ``model``: its d, loss and leaky slope, and the target
        activation resolved (default: the model's)."""
        if model.loss == "bce" and self.target_activation is not None:
            raise ValueError(f"target_activation: loss='bce' labels samples by the sign of a . x + c (SPEC §6d), "
                             f"so it takes no target activation; got {self.target_activation!r}")
        check_eval_memory(self.eval_samples, model.inputs)
        if isinstance(self.a, tuple) and len(self.a) != model.inputs:
            raise ValueError(f"a has {len(self.a)} values but inputs={model.inputs}: give one value per input, "
                             f"or one number for all")
        a = self.a[0] if isinstance(self.a, tuple) and model.inputs == 1 else self.a  # one input: a number
        target = None if model.loss == "bce" else self.target_activation or model.activation
        bound = dataclasses.replace(self, a=a, target_activation=target)
        for name in ("inputs", "loss", "leaky_slope", "activation"):
            object.__setattr__(bound, name, getattr(model, name))
        return bound

    @property
    def normal(self) -> bool:
        return self.x_dist == "normal"

    def settings(self) -> dict:
        gauss = {"x_dist": self.x_dist, "x_mean": self.x_mean, "x_std": self.x_std} if self.normal else {}
        a = list(self.a) if isinstance(self.a, tuple) else self.a
        target = {} if self.loss == "bce" else {"target_activation": self.target_activation}
        if self.loss != "bce" and self.target_activation == "leaky_relu":  # the teacher's slope is the run's
            target["leaky_slope"] = self.leaky_slope
        return {"a": a, "c": self.c, "lo": self.lo, "hi": self.hi, **gauss, **target, **_eval_setting(self)}

    def flags(self, member_options: dict) -> TeacherFlags:
        return TeacherFlags(noise=bool((distinct(member_options["noise"]) != 0).any()), normal=self.normal,
                            inputs=self.inputs, bce=self.loss == "bce",
                            target_activation=self.target_activation or "identity")

    def a_values(self) -> np.ndarray:
        """a as d float32 values."""
        a = self.a if isinstance(self.a, tuple) else (self.a,) * self.inputs
        return np.asarray(a, dtype=np.float64).astype(np.float32)

    def constants(self, device: torch.device) -> TeacherConstants:
        f32 = lambda v: torch.tensor(np.float32(v), device=device)  # noqa: E731
        if isinstance(self.a, tuple) and self.inputs > 1:
            a = torch.from_numpy(self.a_values()).reshape(self.inputs, 1).to(device)
        else:
            a = f32(self.a if not isinstance(self.a, tuple) else self.a[0])
        return TeacherConstants(a=a, c=f32(self.c), lo=f32(self.lo),
                                span=f32(np.float64(self.hi) - np.float64(self.lo)),
                                x_mean=f32(self.x_mean), x_std=f32(self.x_std), slope=f32(self.leaky_slope))

    @staticmethod
    def draw(s_lo, s_hi, q, consts: TeacherConstants, flags: TeacherFlags, options: LinearOptions):
        """Samples 4q .. 4q+3 (SPEC §6b, §6d): x (M,) or (d, M) and the target (M,)."""
        d = flags.inputs
        if flags.normal:
            xs = normal_data_block(s_lo, s_hi, q, consts.x_mean, consts.x_std, d)
        else:
            xs = data_block(s_lo, s_hi, q, consts.lo, consts.span, d)
        pre = [tree_sum(consts.a * x) + consts.c for x in xs]
        if flags.noise:
            sigma = options.noise
            eps = noise_block(s_lo, s_hi, q)
        if flags.bce:
            if flags.noise:
                pre = [torch.where(sigma != 0, u + sigma * e, u) for u, e in zip(pre, eps)]
            targets = [(u > 0).to(torch.float32) for u in pre]
        else:
            targets = [activate(flags.target_activation, u, consts.slope) for u in pre]
            if flags.noise:
                targets = [torch.where(sigma != 0, t + sigma * e, t) for t, e in zip(targets, eps)]
        return tuple(zip(xs, targets))

    @staticmethod
    def rest_point(consts: TeacherConstants):
        """(w, b) = (a, c): every noise-free sample's gradient is 0 when the student's
        activation is the teacher's (the same tree, so the same z); elsewhere a finite
        parking place (the compiled backend parks diverged members there)."""
        return consts.a, consts.c

    def x_moments(self) -> tuple[float, float]:
        return LinearTarget(lo=self.lo, hi=self.hi, x_dist=self.x_dist, x_mean=self.x_mean,
                            x_std=self.x_std).x_moments()

    def population_risk(self, weight, bias, member_options: Optional[dict] = None) -> torch.Tensor:
        """The risk of each (w, b) (SPEC §6f), float64: for the identity (student and
        teacher) with mse, the closed form ``E[(w.x + b - a.x - c)**2] + noise**2`` (weight
        (M,) or (M, d), or a history's (L, M) or (L, M, d)); otherwise the mean loss on the
        evaluation set (:func:`evaluation_risk`)."""
        target = self.target_activation or self.activation
        if self.loss != "mse" or self.activation != "identity" or target != "identity":
            return evaluation_risk(self, weight, bias)
        mu, m2 = self.x_moments()
        a = torch.from_numpy(self.a_values().astype(np.float64))
        w = torch.as_tensor(weight).to(torch.float64)
        dw = w.unsqueeze(-1) - a if self.inputs == 1 else w - a  # (..., d)
        db = torch.as_tensor(bias).to(torch.float64) - float(np.float32(self.c))
        risk = (dw * dw).sum(-1) * (m2 - mu * mu) + (dw.sum(-1) * mu + db) ** 2
        noise = (member_options or {}).get("noise")
        if noise is not None:
            sigma = torch.as_tensor(noise).to(torch.float64)
            risk = risk + sigma * sigma
        return risk


def _eval_setting(problem) -> dict:
    """``eval_samples`` for the settings, only when not the default (a run without it
    records what it did before it existed)."""
    return {} if problem.eval_samples == DEFAULT_EVAL_SAMPLES else {"eval_samples": problem.eval_samples}


# -- SPEC §6f: the evaluation set --------------------------------------------------------

#: Rows of (members x samples) float64 values computed at a time by :func:`evaluation_risk`.
EVAL_CHUNK_VALUES = 1 << 22


@functools.lru_cache(maxsize=1)  # one set at a time: up to 256 MiB each
def _evaluation_x(n: int, d: int, normal: bool, a32: float, b32: float) -> torch.Tensor:
    """The evaluation set's x, (n, d) float64 holding float32 values (shared: not to be
    written into): sample
    ``k``'s coordinate i is word ``k % 4`` of block ``q = k // 4`` of key (3, i), counter
    ``(q & 0xFFFFFFFF, q >> 32, 0, 0)`` (seed 0), as uniform ``a32 + b32 * u`` (lo, span)
    or normal ``a32 + b32 * z`` (x_mean, x_std; SPEC §2b's normals of the block)."""
    q = torch.arange((n + 3) // 4, dtype=torch.int64)
    words = philox4x32(q & MASK32, q >> 32, 0, 0, key=coordinate_key(EVAL_KEY, d))
    words = [torch.broadcast_to(w, (d, q.numel())) if w.dim() == 2 else w.reshape(1, -1) for w in words]
    a, b = torch.tensor(np.float32(a32)), torch.tensor(np.float32(b32))
    values = [a + b * z for z in normal_block(*words)] if normal else [a + b * uint32_to_uniform(w) for w in words]
    x = torch.stack(values, dim=-1)  # (d, Q, 4): sample 4q + j at [:, q, j]
    return x.reshape(d, -1)[:, :n].T.to(torch.float64).contiguous()


def evaluation_x(problem) -> np.ndarray:
    """The evaluation set of ``problem`` (a bound :class:`Teacher` or :class:`LinearTarget`):
    (``eval_samples``, ``inputs``) float64 values (each a float32 value of x's law), the
    same for every member, run and backend (SPEC §6f). A copy, read-only."""
    x = _evaluation_x_of(problem).numpy().copy()
    x.flags.writeable = False
    return x


def _evaluation_x_of(problem) -> torch.Tensor:
    if problem.normal:
        a, b = np.float32(problem.x_mean), np.float32(problem.x_std)
    else:
        a, b = np.float32(problem.lo), np.float32(np.float64(problem.hi) - np.float64(problem.lo))
    return _evaluation_x(int(problem.eval_samples), int(problem.inputs), bool(problem.normal), float(a), float(b))


def _activation64(name: str, z: torch.Tensor, slope: float) -> torch.Tensor:
    """``act(z)`` in float64, as torch's modules compute it."""
    if name == "identity":
        return z
    if name == "relu":
        return torch.where(z < 0, torch.zeros_like(z), z)
    if name == "leaky_relu":
        return torch.where(z > 0, z, z * slope)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "erf":
        return torch.erf(z * (1.0 / np.sqrt(2.0)))
    if name == "abs":
        return torch.abs(z)
    if name == "square":
        return z * z
    raise ValueError(f"unknown activation {name!r}")


def evaluation_risk(problem, weight, bias) -> torch.Tensor:
    """The mean loss of each (w, b) on the evaluation set (SPEC §6f), float64, in the
    shape of ``bias`` ((M,), or a history's (L, M)); ``weight`` is (..., d), or (...)
    for one input. In float64 from the float32 x and parameters: the noise-free target
    ``act_T(a.x + c)`` and the mse ``(act(w.x + b) - t)**2``, or, for ``loss="bce"``, the
    logistic loss ``log(1 + exp(z)) - l*z`` against the label ``l = (a.x + c > 0)``."""
    x = _evaluation_x_of(problem)  # (N, d)
    n = x.shape[0]
    a = torch.from_numpy(problem.a_values().astype(np.float64))
    if a.numel() == 1 and problem.inputs > 1:
        a = a.expand(problem.inputs)
    u = x @ a + float(np.float32(problem.c))  # (N,)
    slope = float(np.float32(problem.leaky_slope))
    bce = problem.loss == "bce"
    target = (u > 0).to(torch.float64) if bce else _activation64(problem.target_activation or problem.activation,
                                                                  u, slope)
    b = torch.as_tensor(bias).to(torch.float64)
    w = torch.as_tensor(weight).to(torch.float64)
    w = w.reshape(-1, problem.inputs)
    b = b.reshape(-1)
    out = torch.empty(b.shape[0], dtype=torch.float64)
    rows = max(1, EVAL_CHUNK_VALUES // n)
    for start in range(0, b.shape[0], rows):
        stop = min(b.shape[0], start + rows)
        z = w[start:stop] @ x.T + b[start:stop, None]  # (rows, N)
        if bce:
            loss = torch.logaddexp(torch.zeros_like(z), z) - target * z
        else:
            err = _activation64(problem.activation, z, slope) - target
            loss = err * err
        out[start:stop] = loss.mean(dim=1)
    return out.reshape(torch.as_tensor(bias).shape)


#: Problems by name: what ``train(problem=...)`` accepts.
PROBLEMS: dict[str, type] = {LinearTarget.name: LinearTarget, Teacher.name: Teacher}


def register_problem(cls: type) -> type:
    """Make ``cls`` (a class following :class:`Problem`) available by its ``name``."""
    PROBLEMS[cls.name] = cls
    return cls
