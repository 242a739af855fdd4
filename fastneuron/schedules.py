"""Learning-rate schedules (SPEC §3d): ``torch.optim.lr_scheduler.LambdaLR`` over the optimizer.

A schedule is a table of factors ``f[t]``, t = 0..T-1, computed on the host in float64
(Python floats, the closed forms of torch's ``_get_closed_form_lr``). At step t member m
uses ``lr_t = float64(lr_m) * f[t]`` and the update's ``-lr`` becomes
``f32(-(float64(lr_m) * f[t]))``, rounded once, as torch rounds ``p.add_(d, alpha=-lr_t)``'s
Python-float alpha. That is ``torch.optim.SGD(lr=lr_m)`` with
``LambdaLR(opt, lambda t: f[t])``, the scheduler stepped after every optimizer step.

Text forms (``parse``; ``describe()`` writes the canonical one)::

    constant
    step:size=S[,gamma=G]                  G ** (t // S)                    StepLR (gamma 0.1)
    multistep:milestones=M1/M2/..[,gamma=G] G ** bisect_right(milestones, t) MultiStepLR (gamma 0.1)
    exponential:gamma=G                    G ** t                           ExponentialLR
    cosine:t_max=N[,floor=F]               F + (1 - F) * (1 + cos(pi * t / N)) / 2
                                           CosineAnnealingLR, eta_min = F*lr (floor 0)
    warmup:steps=W[,start=S]               S + (1 - S) * min(t, W) / W      LinearLR(S, 1, W) (start 1/3)
    warmup:steps=W[,start=S]+<another>     the warm-up's factor times the other's

A Python callable ``f(t)`` is a schedule too (:class:`Lambda`): ``describe()`` gives
``"callable"``, which cannot be parsed back; results and checkpoints identify every
schedule by its table's SHA-256 (:func:`schedule_settings`).

Only NumPy and the standard library: the kernels get the table, never this module's objects.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from ._validate import INT_MAX, _is_int, show

NAME = "lr_schedule"

SYNTAX = ("constant | step:size=S[,gamma=G] | multistep:milestones=M1/M2/...[,gamma=G] | exponential:gamma=G | "
          "cosine:t_max=N[,floor=F] | warmup:steps=W[,start=S] | warmup:steps=W[,start=S]+<one of the others> "
          "(e.g. 'warmup:steps=100,start=0.1+cosine:t_max=3000')")


def _error(message: str) -> ValueError:
    return ValueError(f"{NAME}: {message}")


def _int(kind: str, name: str, value, minimum: int) -> int:
    if not _is_int(value):
        raise _error(f"{kind} {name} must be an integer, got {show(value)}")
    if not minimum <= value <= INT_MAX:
        raise _error(f"{kind} {name} must be an integer in [{minimum}, 2**62], got {int(value)}")
    return int(value)


def _float(kind: str, name: str, value, lo: float, hi: Optional[float] = None, lo_open: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _error(f"{kind} {name} must be a real number, got {show(value)}")
    v = float(value)
    bad = not math.isfinite(v) or (v <= lo if lo_open else v < lo) or (hi is not None and v > hi)
    if bad:
        rng = f"{'(' if lo_open else '['}{lo:g}, {'inf)' if hi is None else f'{hi:g}]'}"
        raise _error(f"{kind} {name} must be finite and in {rng}, got {v!r}")
    return v + 0.0  # -0.0 -> 0.0: one canonical text


def _fmt(v: float) -> str:
    return repr(float(v))  # the shortest text that reads back to the same double


class Schedule:
    """A learning-rate schedule: :meth:`factor` of step t (float64), :meth:`factors` of a
    run, :meth:`describe` (its canonical text)."""

    kind: ClassVar[str] = ""

    def factor(self, t: int) -> float:
        raise NotImplementedError

    def factors(self, steps: int) -> np.ndarray:
        """``f[0..steps-1]`` as float64 (shape (steps,), read-only); ValueError naming
        ``lr_schedule`` and the step if a factor is not finite and >= 0 (or its float64
        overflows). The last table is kept: a run asks for it several times (checks, settings,
        each block of members), and a callable is then called once per step only."""
        steps = _int("the run's", "steps", steps, 0)
        cached = self.__dict__.get("_last_table")
        if cached is not None and cached.shape[0] == steps:
            return cached
        table = self._table(steps)
        table.setflags(write=False)
        object.__setattr__(self, "_last_table", table)  # not a field: no part of ==, hash or repr
        return table

    def _table(self, steps: int) -> np.ndarray:
        out = np.empty(steps, dtype=np.float64)
        for t in range(steps):
            out[t] = self._checked(t)
        return out

    def _checked(self, t: int) -> float:
        try:
            v = self.factor(t)
        except OverflowError:
            raise _error(f"{self.describe()}: the factor of step {t} overflows float64") from None
        if not math.isfinite(v) or not v >= 0.0:
            raise _error(f"{self.describe()}: the factor of step {t} is {v!r}; factors must be finite and >= 0")
        return v

    def describe(self) -> str:
        raise NotImplementedError

    def __call__(self, t: int) -> float:
        """The factor of step t: ``LambdaLR(opt, schedule)`` runs the same schedule in torch."""
        return self._checked(t)

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True, eq=True)
class Constant(Schedule):
    """Factor 1: the same run as no schedule, bit for bit."""

    kind: ClassVar[str] = "constant"

    def factor(self, t: int) -> float:
        return 1.0

    def _table(self, steps: int) -> np.ndarray:
        return np.ones(steps, dtype=np.float64)

    def describe(self) -> str:
        return "constant"


@dataclass(frozen=True, eq=True)
class Step(Schedule):
    """``StepLR(step_size=size, gamma=gamma)``: ``gamma ** (t // size)``."""

    size: int
    gamma: float = 0.1
    kind: ClassVar[str] = "step"

    def __post_init__(self):
        object.__setattr__(self, "size", _int("step", "size", self.size, 1))
        object.__setattr__(self, "gamma", _float("step", "gamma", self.gamma, 0.0, lo_open=True))

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.size)

    def _table(self, steps: int) -> np.ndarray:
        k = np.arange(steps, dtype=np.int64) // self.size
        values = np.array([self._checked(i * self.size) for i in range(int(k[-1]) + 1 if steps else 0)],
                          dtype=np.float64)  # gamma ** i once per i, as factor(t) computes it
        return values[k] if steps else np.empty(0, dtype=np.float64)

    def describe(self) -> str:
        return f"step:size={self.size},gamma={_fmt(self.gamma)}"


@dataclass(frozen=True, eq=True)
class MultiStep(Schedule):
    """``MultiStepLR(milestones, gamma)``: ``gamma ** bisect_right(milestones, t)``."""

    milestones: tuple
    gamma: float = 0.1
    kind: ClassVar[str] = "multistep"

    def __post_init__(self):
        ms = self.milestones
        if isinstance(ms, (str, bytes)) or not hasattr(ms, "__iter__"):
            raise _error(f"multistep milestones must be a sequence of integers, got {show(ms)}")
        ms = tuple(_int("multistep", "milestones", v, 0) for v in ms)
        if not ms:
            raise _error("multistep milestones must hold at least one step")
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise _error(f"multistep milestones must be increasing, got {'/'.join(map(str, ms))}")
        object.__setattr__(self, "milestones", ms)
        object.__setattr__(self, "gamma", _float("multistep", "gamma", self.gamma, 0.0, lo_open=True))

    def factor(self, t: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, t)

    def describe(self) -> str:
        return f"multistep:milestones={'/'.join(map(str, self.milestones))},gamma={_fmt(self.gamma)}"


@dataclass(frozen=True, eq=True)
class Exponential(Schedule):
    """``ExponentialLR(gamma)``: ``gamma ** t``."""

    gamma: float
    kind: ClassVar[str] = "exponential"

    def __post_init__(self):
        object.__setattr__(self, "gamma", _float("exponential", "gamma", self.gamma, 0.0, lo_open=True))

    def factor(self, t: int) -> float:
        return self.gamma ** t

    def describe(self) -> str:
        return f"exponential:gamma={_fmt(self.gamma)}"


@dataclass(frozen=True, eq=True)
class Cosine(Schedule):
    """``CosineAnnealingLR(T_max=t_max, eta_min=floor*lr)`` as a factor:
    ``floor + (1 - floor) * (1 + cos(pi * t / t_max)) / 2`` (torch's closed form with base_lr 1;
    past t_max it rises again, as torch's closed form does)."""

    t_max: int
    floor: float = 0.0
    kind: ClassVar[str] = "cosine"

    def __post_init__(self):
        object.__setattr__(self, "t_max", _int("cosine", "t_max", self.t_max, 1))
        object.__setattr__(self, "floor", _float("cosine", "floor", self.floor, 0.0, 1.0))

    def factor(self, t: int) -> float:
        return self.floor + (1.0 - self.floor) * (1 + math.cos(math.pi * t / self.t_max)) / 2

    def describe(self) -> str:
        return f"cosine:t_max={self.t_max},floor={_fmt(self.floor)}"


@dataclass(frozen=True, eq=True)
class Warmup(Schedule):
    """``LinearLR(start_factor=start, end_factor=1, total_iters=steps)``:
    ``start + (1 - start) * min(t, steps) / steps``, times ``then``'s factor when given."""

    steps: int
    start: float = 1.0 / 3.0
    then: Optional[Schedule] = None
    kind: ClassVar[str] = "warmup"

    def __post_init__(self):
        object.__setattr__(self, "steps", _int("warmup", "steps", self.steps, 1))
        object.__setattr__(self, "start", _float("warmup", "start", self.start, 0.0, 1.0))
        then = self.then
        if isinstance(then, Constant):
            then = None
        elif then is not None and (not isinstance(then, Schedule) or isinstance(then, (Warmup, Lambda))):
            raise _error(f"a warm-up is followed by one of step, multistep, exponential or cosine, got {show(then)}")
        object.__setattr__(self, "then", then)

    def warmup_factor(self, t: int) -> float:
        return self.start + (1.0 - self.start) * min(t, self.steps) / self.steps

    def factor(self, t: int) -> float:
        w = self.warmup_factor(t)
        return w if self.then is None else w * self.then.factor(t)

    def describe(self) -> str:
        text = f"warmup:steps={self.steps},start={_fmt(self.start)}"
        return text if self.then is None else f"{text}+{self.then.describe()}"


@dataclass(frozen=True, eq=True)
class Lambda(Schedule):
    """Any Python callable ``fn(t) -> factor`` (as LambdaLR's ``lr_lambda``). Its text is
    ``"callable"``; results and resume know it by its table's digest."""

    fn: Callable[[int], Any]
    kind: ClassVar[str] = "callable"

    def __post_init__(self):
        if not callable(self.fn):
            raise _error(f"expected a callable f(t), got {show(self.fn)}")

    def factor(self, t: int) -> float:
        try:
            v = self.fn(t)
        except Exception as exc:  # noqa: BLE001  (train() promises a ValueError for bad input)
            raise _error(f"the callable raised {type(exc).__name__}: {exc} at step {t}") from exc
        if isinstance(v, (bool, np.bool_, str, bytes)) or isinstance(v, complex):
            raise _error(f"the callable returned {show(v)} at step {t}; factors must be real numbers")
        try:
            return float(v)
        except (TypeError, ValueError):
            raise _error(f"the callable returned {show(v)} at step {t}; factors must be real numbers") from None

    def describe(self) -> str:
        return "callable"


_KINDS = {"step": (Step, {"size": "int", "gamma": "float"}, ("size",)),
          "multistep": (MultiStep, {"milestones": "ints", "gamma": "float"}, ("milestones",)),
          "exponential": (Exponential, {"gamma": "float"}, ("gamma",)),
          "cosine": (Cosine, {"t_max": "int", "floor": "float"}, ("t_max",)),
          "warmup": (Warmup, {"steps": "int", "start": "float"}, ("steps",))}


def _parse_value(kind: str, key: str, typ: str, text: str, whole: str):
    def bad(what):
        return _error(f"{kind} {key}: {text!r} is not {what} (in {whole!r}); accepted: {SYNTAX}")
    try:
        if typ == "int":
            return int(text, 10)
        if typ == "ints":
            return tuple(int(v.strip(), 10) for v in text.split("/"))
        return float(text)
    except ValueError:
        raise bad({"int": "an integer", "ints": "integers separated by '/'", "float": "a number"}[typ]) from None


def _parse_one(text: str, whole: str) -> Schedule:
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind in ("constant", "none"):
        if rest.strip():
            raise _error(f"{kind} takes no parameters, got {rest.strip()!r} (in {whole!r}); accepted: {SYNTAX}")
        return Constant()
    if kind not in _KINDS:
        raise _error(f"unknown schedule {kind!r} in {whole!r}; accepted: {SYNTAX}")
    cls, keys, required = _KINDS[kind]
    args = {}
    for item in rest.split(",") if rest.strip() else []:
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key or not value:
            raise _error(f"{kind}: {item.strip()!r} is not key=value (in {whole!r}); accepted: {SYNTAX}")
        if key not in keys:
            raise _error(f"{kind} takes {', '.join(keys)}; got {key!r} (in {whole!r}); accepted: {SYNTAX}")
        if key in args:
            raise _error(f"{kind}: {key} is given twice (in {whole!r})")
        args[key] = _parse_value(kind, key, keys[key], value, whole)
    missing = [k for k in required if k not in args]
    if missing:
        raise _error(f"{kind} needs {', '.join(f'{k}=' for k in missing)} (in {whole!r}); accepted: {SYNTAX}")
    return cls(**args)


_JOIN = re.compile(r"\+(?=\s*[A-Za-z])|\+\s*$")


def parse(text: str) -> Schedule:
    """A schedule from its text (see the module docstring); ValueError naming ``lr_schedule``
    and showing the accepted syntax."""
    if not isinstance(text, str):
        raise _error(f"expected text, got {show(text)}")
    if not text.strip():
        raise _error(f"empty text; accepted: {SYNTAX}")
    parts = _JOIN.split(text)  # a '+' before a kind's name: 1e+16 is a number
    if len(parts) > 2:
        raise _error(f"{text!r} joins more than two schedules; accepted: {SYNTAX}")
    first = _parse_one(parts[0], text)
    if len(parts) == 1:
        return first
    if not isinstance(first, Warmup) or first.then is not None:
        raise _error(f"only a warm-up may come before '+' (in {text!r}); accepted: {SYNTAX}")
    then = _parse_one(parts[1], text)
    if isinstance(then, Warmup):
        raise _error(f"a warm-up cannot follow a warm-up (in {text!r}); accepted: {SYNTAX}")
    return Warmup(steps=first.steps, start=first.start, then=then)


def make_schedule(value) -> Optional[Schedule]:
    """``train(lr_schedule=...)``'s value as a schedule: None, ``"constant"``, ``"none"`` or a
    :class:`Constant` give None (the same run as no schedule); text is parsed; a schedule
    object is kept; any other callable is wrapped in :class:`Lambda`."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse(value)
    elif not isinstance(value, Schedule):
        if not callable(value):
            raise _error(f"expected None, text ({SYNTAX}), a schedule or a callable f(t); got {show(value)}")
        value = Lambda(value)
    return None if isinstance(value, Constant) else value


#: The largest float32 (torch refuses a Python-float ``alpha`` beyond it for a float32 tensor).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_lr_range(factors, max_lr: float) -> None:
    """ValueError naming ``lr_schedule`` if some ``float64(lr) * f[t]`` of the largest lr leaves
    float32's range: torch.optim's ``p.add_(d, alpha=-lr_t)`` refuses such an lr ("value cannot
    be converted to type float without overflow") rather than stepping by -inf. The product is
    monotonic in f, so the largest factor decides."""
    factors = np.asarray(factors, dtype=np.float64)
    if not factors.size:
        return
    t = int(np.argmax(factors))
    peak = float(max_lr) * float(factors[t])
    if not peak <= FLOAT32_MAX:
        raise _error(f"lr {float(max_lr)!r} times the factor {float(factors[t])!r} of step {t} is {peak!r}, beyond "
                     f"float32's largest value {FLOAT32_MAX!r} (torch.optim refuses such an lr)")


def table_digest(factors) -> str:
    """SHA-256 (hex) of a factor table's float64 bytes, little-endian."""
    return hashlib.sha256(np.ascontiguousarray(factors, dtype="<f8").tobytes()).hexdigest()


def schedule_settings(schedule, steps: int) -> dict:
    """What results and checkpoints record: ``{"lr_schedule": text, "lr_schedule_sha256":
    digest of the table of ``steps`` factors}`` (JSON-safe); ``{}`` for no schedule (None or
    constant), so that such a run records what it recorded before schedules existed."""
    schedule = make_schedule(schedule)
    if schedule is None:
        return {}
    return {"lr_schedule": schedule.describe(), "lr_schedule_sha256": table_digest(schedule.factors(steps))}
