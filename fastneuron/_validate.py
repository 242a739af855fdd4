"""Input checks for :func:`fastneuron.train`: every bad input is a ValueError naming
its argument, raised before any work starts."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

_U64 = 2**64
#: The largest integer argument accepted (steps, batch_size, log_every, member_block):
#: far beyond any run, and small enough that counts derived from it (logged steps,
#: neuron-steps) stay exact and never overflow a C integer.
INT_MAX = 2**62


@dataclass(frozen=True)
class Bound:
    """Default and allowed range of a per-member option: ``[lo, hi)`` or ``(lo, hi)``
    (an optimizer's ``MEMBER_OPTIONS``, checked by :func:`per_member`)."""

    default: float
    lo: float
    lo_open: bool = False
    hi: Optional[float] = None


def distinct(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself, or its one value when it is a broadcast (stride 0) view: checks of
    a shared option then cost nothing per member. A grid's column
    (:class:`fastneuron.members.GridColumn`) gives the axis values it holds."""
    if hasattr(x, "distinct"):
        return x.distinct()
    return x[:1] if x.dim() == 1 and x.numel() and x.stride(0) == 0 else x


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def show(value) -> str:
    """``repr`` for messages, with NumPy and torch scalars shown as plain Python numbers
    (``-0.01``, not ``np.float64(-0.01)``)."""
    if isinstance(value, (np.generic, torch.Tensor)):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            pass
    return repr(value)


def check_int(name: str, value, minimum: int, maximum: int = INT_MAX):
    """An int in [minimum, maximum] (bools and floats are refused)."""
    if not _is_int(value):
        raise ValueError(f"{name} must be an integer, got {show(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(value)}")
    if value > maximum:
        raise ValueError(f"{name} must be <= 2**62 = {maximum}, got {int(value)}" if maximum == INT_MAX
                         else f"{name} must be <= {maximum}, got {int(value)}")
    return int(value)


def check_float(name: str, value) -> float:
    """A finite real number, and finite once rounded to float32."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {show(value)}")
    value = float(value)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e39 -> inf, refused below without a warning
        f32 = float(np.float32(value))
    if not math.isfinite(value) or not math.isfinite(f32):
        raise ValueError(f"{name} must be finite in float32, got {value!r}")
    return value


def _not_meta(name: str, t: torch.Tensor) -> None:
    """Tensors on the meta device hold no values: refuse them before reading any."""
    if t.device.type == "meta":
        raise ValueError(f"{name} is a tensor on the meta device, which holds no values; "
                         "pass a tensor on the CPU or a GPU")


def _unordered(name: str, value) -> None:
    """Sets have no order, so the members they would give have no defined order."""
    if isinstance(value, (set, frozenset, dict)) or type(value).__name__ in ("dict_keys", "dict_values"):
        raise ValueError(f"{name} must be an ordered sequence (a list, tuple, array or tensor), "
                         f"got a {type(value).__name__}, whose order is not defined")


def seeds_to_int64(seeds) -> torch.Tensor:
    """Seeds in [0, 2**64) as int64 two's complement (CPU tensor of shape (M,))."""
    if isinstance(seeds, torch.Tensor):
        _not_meta("seeds", seeds)
        if seeds.dtype in (torch.bool,) or seeds.dtype.is_floating_point or seeds.is_complex():
            raise ValueError(f"seeds must be integers, got a tensor of {seeds.dtype}")
        arr = seeds.detach().cpu().reshape(-1)
        if arr.dtype == torch.uint64:
            return arr.view(torch.int64)  # no copy, as for NumPy input below
        arr = arr.to(torch.int64)
        if arr.numel() and int(arr.min()) < 0:
            raise ValueError("seeds must lie in [0, 2**64): got a negative seed")
        return arr
    if isinstance(seeds, np.ndarray):
        if seeds.dtype.kind not in "iu":
            raise ValueError(f"seeds must be integers, got an array of {seeds.dtype}")
        arr = seeds.reshape(-1)
        if seeds.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise ValueError("seeds must lie in [0, 2**64): got a negative seed")
        if arr.dtype.itemsize != 8:
            arr = arr.astype(np.uint64)
        # No copy of 64-bit input (8 bytes a member): the run only reads it, and the
        # result keeps a copy of its own.
        return torch.from_numpy(np.ascontiguousarray(arr).view(np.int64))
    if isinstance(seeds, range):
        if len(seeds) and (min(seeds[0], seeds[-1]) < 0 or max(seeds[0], seeds[-1]) >= _U64):
            raise ValueError("seeds must lie in [0, 2**64)")
        if len(seeds) and max(seeds[0], seeds[-1]) < 2**63:
            return torch.arange(seeds.start, seeds.stop, seeds.step, dtype=torch.int64)
    _unordered("seeds", seeds)
    if _is_int(seeds) or isinstance(seeds, (str, bytes)):
        raise ValueError(f"seeds must be a sequence of integers, got {type(seeds).__name__}")
    try:
        values = list(seeds)
    except TypeError:
        raise ValueError(f"seeds must be a sequence of integers, got {type(seeds).__name__}") from None
    for s in values:
        if not _is_int(s):
            raise ValueError(f"seeds must be integers in [0, 2**64), got {show(s)}")
        if not 0 <= s < _U64:
            raise ValueError(f"seeds must lie in [0, 2**64), got {int(s)}")
    return torch.tensor([int(s) - _U64 if s >= 2**63 else int(s) for s in values], dtype=torch.int64)


def per_member(name: str, value, m: int, *, lo: float, lo_open: bool, hi: float | None = None) -> torch.Tensor:
    """A scalar (broadcast) or M values, as float32 (M,), each finite and in range.

    A single value comes back as an expanded (stride 0) view of one float32.

    The range is checked on the float32 values that the run will use, so that, e.g.,
    an lr that rounds to 0 in float32 is refused.
    """
    # Straight to float32 (no float64 copy of M values): a value too large for float32
    # becomes inf and is refused below like any other non-finite value.
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(value, torch.Tensor):
            _not_meta(name, value)
            t = value.detach().cpu().reshape(-1)
            if t.dtype == torch.bool or t.is_complex():
                raise ValueError(f"{name} must be real numbers, got a tensor of {t.dtype}")
            f32 = t.to(torch.float32, copy=True).numpy()  # a copy: the result must not alias it
        elif isinstance(value, np.ndarray):
            if value.dtype.kind not in "iuf":
                raise ValueError(f"{name} must be real numbers, got an array of {value.dtype}")
            f32 = value.reshape(-1).astype(np.float32)
        elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            f32 = np.array([value], dtype=np.float32) if math.isfinite(value) else np.array([np.inf], np.float32)
        else:
            if isinstance(value, (str, bytes)):  # not a sequence of its characters
                raise ValueError(f"{name} must be a number or a sequence of numbers, got {value!r}")
            _unordered(name, value)
            try:
                items = list(value)
            except TypeError:
                raise ValueError(f"{name} must be a number or a sequence of numbers, got {show(value)}") from None
            for v in items:
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                    raise ValueError(f"{name} must be real numbers, got {show(v)}")
            f32 = np.asarray(items, dtype=np.float64).astype(np.float32)
    if f32.size != m and f32.size != 1:
        raise ValueError(f"{name} has {f32.size} values but there are {m} seeds: lengths must match")
    bad = ~np.isfinite(f32)
    bad |= (f32 <= lo) if lo_open else (f32 < lo)
    if hi is not None:
        bad |= f32 >= hi
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        given = value if isinstance(value, numbers.Real) else _item(value, i)
        rng = f"{'(' if lo_open else '['}{lo}, {'inf)' if hi is None else f'{hi})'}"
        raise ValueError(f"{name} must be finite and in {rng} (in float32); member {i} has {show(given)}")
    if f32.size != m:  # one value for every member: a broadcast view, no memory per member
        return torch.from_numpy(f32).expand(m)
    return torch.from_numpy(f32)


def float64_values(value, f32: torch.Tensor) -> Optional[torch.Tensor]:
    """The float64 values of a per-member argument ``value`` whose float32 values
    :func:`per_member` gave as ``f32`` (M,): a float64 CPU tensor (M,) (one value for every
    member: an expanded, stride 0 view), or None when every value is its float32 rounding
    (float32 input, or numbers that are float32 values: nothing more to keep).

    torch.optim does some arithmetic on a hyperparameter as the Python float it was given,
    in float64, before it rounds the result to float32 (SPEC §3c, §3d): the run keeps these
    values for the options where that happens."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().reshape(-1)
        if t.dtype in (torch.float32, torch.float16, torch.bfloat16):
            return None
        v64 = t.to(torch.float64).numpy()
    elif isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and value.dtype.itemsize <= 4:
            return None
        v64 = value.reshape(-1).astype(np.float64)
    elif isinstance(value, numbers.Real):
        v64 = np.array([float(value)], dtype=np.float64)
    else:  # a sequence of numbers (per_member has checked them)
        v64 = np.asarray([float(v) for v in value], dtype=np.float64)
    if v64.size == 1:
        if float(v64[0]) == float(f32[0]):
            return None
        return torch.from_numpy(v64.copy()).expand(f32.numel())
    if np.array_equal(v64, f32.numpy().astype(np.float64)):
        return None
    return torch.from_numpy(np.ascontiguousarray(v64))


def _item(values, i: int):
    """Element i of a tensor, array or sequence, for an error message."""
    if isinstance(values, torch.Tensor):
        return values.reshape(-1)[i].item()
    if isinstance(values, np.ndarray):
        return values.reshape(-1)[i]
    return list(values)[i]


def check_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a device: {exc}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available: torch sees no CUDA device")
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise ValueError(f"device {device!r} is not supported: use 'cpu' or 'cuda'")
