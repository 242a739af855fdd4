"""Members as a description: :func:`fastneuron.grid`'s product of axes, never built whole.

A grid of seeds × lrs × options is a handful of short axes. Each per-member column of
it is a :class:`GridColumn`: member ``i`` holds ``V[((offset + i) // inner) % n]``, where
``V`` is the axis' ``n`` values (or, for seeds, a ``range``, kept as its three numbers),
``inner`` the product of the lengths of the axes after it (the first axis varies
slowest, as in ``itertools.product``) and ``offset`` where a slice of the grid starts.
The engine expands only the block of members it trains, on the device
(:meth:`GridColumn.take`), so the host holds O(sum of axis lengths) for the inputs,
not O(M); results record the description (:meth:`GridColumn.to_json`) and expand it
when read (:meth:`GridColumn.numpy`).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from . import _validate as V

_U64 = 2**64
#: Members expanded at a time when a column is materialized on the host (8 MiB of seeds).
_CHUNK = 1 << 20


class GridColumn:
    """One per-member column of a grid (seeds: uint64; anything else: float32, or float64
    for the values as given, see ``float64``).

    ``values``: the axis' values as a NumPy array (uint64, float32 or float64), or None
    with ``rng`` a ``range`` of seeds in [0, 2**64). Behaves as a read-only sequence of
    ``len(self)`` members (``col[i]``, ``col[a:b]``, ``list(col)``,
    ``np.asarray(col)``).

    ``float64``: for a float32 column, the axis' values as given, when some is not a
    float32 value (else None): the run keeps them where torch.optim computes with the
    Python float (SPEC §3c, §3d; :meth:`float64_column`)."""

    __slots__ = ("dtype", "values", "rng", "inner", "offset", "length", "float64")

    def __init__(self, dtype: str, values: Optional[np.ndarray], rng: Optional[range], inner: int, offset: int,
                 length: int, float64: Optional[np.ndarray] = None):
        self.dtype, self.values, self.rng = dtype, values, rng
        self.inner, self.offset, self.length = inner, offset, length
        self.float64 = float64

    # -- the axis --------------------------------------------------------------------
    @property
    def n(self) -> int:
        """The number of values on the axis."""
        return len(self.rng) if self.values is None else len(self.values)

    def with_values(self, values: np.ndarray) -> "GridColumn":
        """The same column over other axis values (the validated float32 ones; the values
        as given, ``float64``, stay)."""
        return GridColumn(self.dtype, values, None, self.inner, self.offset, self.length, self.float64)

    def float64_column(self) -> Optional["GridColumn"]:
        """The column of the axis' values as given (dtype float64), or None when every one
        is a float32 value (see ``float64``)."""
        if self.float64 is None:
            return None
        return GridColumn("float64", self.float64, None, self.inner, self.offset, self.length)

    def axis_values(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Axis values ``[start, stop)`` (a range's expanded: only for short ranges)."""
        stop = self.n if stop is None else stop
        if self.values is not None:
            return self.values[start:stop]
        r = self.rng
        return np.uint64(r.start % _U64) + np.arange(start, stop, dtype=np.uint64) * np.uint64(r.step)

    def distinct(self) -> torch.Tensor:
        """The axis values some member of this column holds (for checks and flags, which
        depend on the set of values only)."""
        k0, k1 = self.offset // self.inner, (self.offset + self.length - 1) // self.inner
        if k1 - k0 + 1 >= self.n:
            vals = self.axis_values()
        else:
            ks = np.arange(k0, k1 + 1) % self.n
            vals = self.axis_values()[ks] if self.values is not None else np.concatenate(
                [self.axis_values(int(k), int(k) + 1) for k in ks])
        return torch.from_numpy(np.ascontiguousarray(vals).view(np.int64) if self.dtype == "uint64" else vals)

    # -- a sequence of members -------------------------------------------------------
    def __len__(self) -> int:
        return self.length

    def numel(self) -> int:
        return self.length

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.length)
            if step != 1:
                raise ValueError("a grid column slices with step 1 only")
            stop = max(start, stop)
            return GridColumn(self.dtype, self.values, self.rng, self.inner, self.offset + start, stop - start,
                              self.float64)
        i = int(key)
        if not -self.length <= i < self.length:
            raise IndexError(f"member {key} out of range for {self.length} members")
        return self.numpy(i % self.length, i % self.length + 1)[0]

    def __iter__(self):
        for a in range(0, self.length, _CHUNK):
            yield from self.numpy(a, min(self.length, a + _CHUNK)).tolist()

    def __array__(self, dtype=None, copy=None):
        x = self.numpy()
        return x if dtype is None else x.astype(dtype)

    def __repr__(self) -> str:
        axis = repr(self.rng) if self.values is None else f"{self.n} values"
        return f"GridColumn({self.dtype}, {axis}, inner={self.inner}, offset={self.offset}, length={self.length})"

    def _digits(self, start: int, stop: int, xp, device=None):
        """The axis index of members [start, stop): runs of ``inner`` equal digits, built
        from one short arange (``xp``: numpy or torch), with no division per member."""
        a, n = start + self.offset, self.n
        if self.inner > stop - start:  # at most two runs: divide, rather than repeat inner times
            idx = np.arange(a, stop + self.offset, dtype=np.int64) if xp is np else \
                torch.arange(a, stop + self.offset, dtype=torch.int64, device=device)
            return idx // self.inner % n
        k0, k1 = a // self.inner, (stop + self.offset - 1) // self.inner
        ks = xp.arange(k0, k1 + 1, dtype=xp.int64) if xp is np else \
            torch.arange(k0, k1 + 1, dtype=torch.int64, device=device)
        if k1 >= n:
            ks = ks % n
        if self.inner > 1:
            skip = a - k0 * self.inner
            ks = (np.repeat(ks, self.inner) if xp is np else ks.repeat_interleave(self.inner))[
                skip:skip + stop - start]
        return ks

    def numpy(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Members ``[start, stop)`` as a host array (uint64, float32 or float64)."""
        stop = self.length if stop is None else stop
        if stop <= start:
            return np.zeros(0, np.dtype(self.dtype))
        k = self._digits(start, stop, np)
        if self.values is not None:
            return self.values[k]
        return np.uint64(self.rng.start % _U64) + k.astype(np.uint64) * np.uint64(self.rng.step)

    def take(self, start: int, stop: int, device, pad: int = 0) -> torch.Tensor:
        """Members ``[start, stop)`` (plus ``pad`` copies of the first) expanded on
        ``device``: seeds as int64 two's complement, anything else float32 (float64 for a
        float64 column)."""
        first = self._consecutive(start, stop)
        if stop <= start:
            x = torch.zeros(0, dtype=torch.int64 if self.dtype == "uint64" else getattr(torch, self.dtype),
                            device=device)
        elif first is not None and first >> 63 == (first + stop - start - 1) >> 63:
            # Consecutive seeds on one side of 2**63: one arange of their int64 words (its
            # end, exclusive, may be 2**63 itself, which int64 cannot hold: then added).
            first = _i64(first)
            x = torch.arange(first, first + stop - start, dtype=torch.int64, device=device) \
                if first + stop - start < 2**63 else \
                torch.arange(stop - start, dtype=torch.int64, device=device) + first
        else:
            k = self._digits(start, stop, torch, device)
            if self.values is None:
                # start + k*step mod 2**64, in int64's wrapping arithmetic (no multiply for step 1).
                x = k + _i64(self.rng.start) if self.rng.step == 1 else _i64(self.rng.start) + k * _i64(self.rng.step)
            else:
                vals = self.values.view(np.int64) if self.dtype == "uint64" else self.values
                x = torch.from_numpy(np.ascontiguousarray(vals)).to(device)[k]
        if pad:
            x = torch.cat([x, x[:1].expand(pad)])
        return x

    def _consecutive(self, start: int, stop: int) -> Optional[int]:
        """The first of seeds ``[start, stop)`` (a non-empty block) when they are
        consecutive (a range of step 1, not repeated), else None."""
        if self.values is not None or self.rng.step != 1 or self.inner != 1 or stop + self.offset > self.n \
                or stop <= start:
            return None
        return self.rng.start + self.offset + start

    def consecutive_seeds(self, start: int, stop: int) -> Optional[int]:
        """The first of seeds ``[start, stop)`` when they are consecutive and share their
        high 32-bit word (``range(M)`` below 2**32, say), else None: such a block needs
        no array of seeds (:meth:`fastneuron.spec.RunSpec.block`)."""
        first = self._consecutive(start, stop)
        return first if first is not None and first >> 32 == (first + stop - start - 1) >> 32 else None

    # -- the description -------------------------------------------------------------
    def to_json(self) -> dict:
        """The column as JSON (results and parts manifests record it): ``dtype``,
        ``values`` (uint64 as ints, float32 and float64 as the floats they are) or
        ``range`` (start, stop, step), ``inner``, ``offset``, ``length``. (A float32
        column's ``float64`` is a column of its own: :meth:`float64_column`.)"""
        d: dict = {"dtype": self.dtype}
        if self.values is None:
            d["range"] = [self.rng.start, self.rng.stop, self.rng.step]
        else:
            d["values"] = [int(v) for v in self.values] if self.dtype == "uint64" else \
                [float(v) for v in self.values]
        d.update(inner=self.inner, offset=self.offset, length=self.length)
        return d


def _i64(v: int) -> int:
    """``v`` in [0, 2**64) as int64 two's complement."""
    v %= _U64
    return v - _U64 if v >= 2**63 else v


def column_from_json(d: dict) -> GridColumn:
    """The :class:`GridColumn` that :meth:`GridColumn.to_json` wrote; ValueError when
    ``d`` is not one."""
    try:
        dtype, inner, offset, length = d["dtype"], d["inner"], d["offset"], d["length"]
        if dtype not in ("uint64", "float32", "float64") or not all(type(v) is int for v in (inner, offset, length)) \
                or inner < 1 or offset < 0 or length < 0:
            raise ValueError
        if "range" in d:
            start, stop, step = d["range"]
            rng = range(start, stop, step)
            if dtype != "uint64" or not 1 <= step < _U64 or start < 0 or stop > _U64 or not len(rng):
                raise ValueError
            return GridColumn(dtype, None, rng, inner, offset, length)
        values = d["values"]
        if not isinstance(values, list) or not values:
            raise ValueError
        if dtype == "uint64":
            if not all(type(v) is int and 0 <= v < _U64 for v in values):
                raise ValueError
            arr = np.array(values, dtype=np.uint64)
        else:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ValueError
            arr = np.array(values, dtype=np.float64)
            if dtype == "float32":
                if not np.array_equal(arr, arr.astype(np.float32).astype(np.float64)):
                    raise ValueError
                arr = arr.astype(np.float32)
            elif not np.isfinite(arr).all():
                raise ValueError
        return GridColumn(dtype, arr, None, inner, offset, length)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"not a grid column description: {str(d)[:200]}") from None


def is_column(x) -> bool:
    return isinstance(x, GridColumn)


def seed_range(seeds) -> Optional[GridColumn]:
    """A ``range`` of seeds in [0, 2**64) as a column (three numbers, never an array of M);
    None for anything else."""
    if not isinstance(seeds, range):
        return None
    try:
        n = len(seeds)
    except OverflowError:  # len() of a range is a C ssize_t
        raise ValueError("seeds: a range of more than 2**63 - 1 seeds") from None
    if n and 0 < seeds.step < _U64 and seeds.start >= 0 and seeds[-1] < _U64:
        return GridColumn("uint64", None, seeds, 1, 0, n)
    return None


def describe(x) -> Optional[GridColumn]:
    """``x`` as a description: a grid's column itself, one value shared by every member
    (a stride-0 float32 or float64 tensor) as a column of one value; None for an array of
    values."""
    if is_column(x):
        return x
    if x.dim() == 1 and x.numel() and x.stride(0) == 0 and x.dtype in (torch.float32, torch.float64):
        return GridColumn(str(x.dtype).removeprefix("torch."), x[:1].numpy().copy(), None, 1, 0, x.numel())
    return None


class Grid:
    """The product of a few axes (see :func:`grid`): pass it on as
    ``train(**grid, steps=...)``; ``grid["lrs"]`` is the per-member column
    (:class:`GridColumn`), ``grid.size`` the number of members."""

    def __init__(self, columns: dict):
        self._columns = columns

    def keys(self):
        return self._columns.keys()

    def __getitem__(self, name: str) -> GridColumn:
        return self._columns[name]

    def __iter__(self):
        return iter(self._columns)

    @property
    def size(self) -> int:
        return next(iter(self._columns.values())).length

    def __repr__(self) -> str:
        axes = ", ".join(f"{k}={c.n}" for k, c in self._columns.items())
        return f"Grid({axes}: {self.size} members)"


def grid(seeds, lrs, **per_member) -> Grid:
    """The product of seeds, learning rates and any other per-member option, described,
    not built: ``train(**grid(seeds=range(10**9), lrs=[1e-3, 1e-2]), steps=100)``.

    The first argument varies slowest, as in ``itertools.product``: member ``i`` of
    ``grid(seeds=S, lrs=L)`` has seed ``S[i // len(L)]`` and lr ``L[i % len(L)]``. A
    ``range`` of seeds stays three numbers; other axes are held as arrays (seeds
    uint64, the rest float32: the run checks their ranges), with their values as given
    (float64) beside them when some is not a float32 value (``GridColumn.float64``). A
    scalar is an axis of one.
    """
    names = ["seeds", "lrs", *per_member]
    if seed_range(seeds) is not None:
        seed_axis: tuple = (None, seeds, None)
    else:
        if isinstance(seeds, range) and not len(seeds):
            raise ValueError("seeds is empty: a grid needs at least one value on each axis")
        seed_axis = (V.seeds_to_int64(seeds).numpy().view(np.uint64), None, None)
    axes = [seed_axis]  # (values, a range of seeds, the values as given)
    for name, v in zip(names[1:], [lrs, *per_member.values()]):
        vals = [v] if np.isscalar(v) else v if isinstance(v, (np.ndarray, torch.Tensor)) else list(v)
        if not len(vals):
            raise ValueError(f"{name} is empty: a grid needs at least one value on each axis")
        # Real, finite float32 numbers here; the run checks each option's range.
        f32 = V.per_member(name, vals, len(vals), lo=-math.inf, lo_open=False).contiguous()
        f64 = V.float64_values(vals, f32)
        axes.append((f32.numpy(), None, None if f64 is None else f64.contiguous().numpy()))
    sizes = [len(r) if vals is None else len(vals) for vals, r, _ in axes]
    for name, n in zip(names, sizes):
        if not n:
            raise ValueError(f"{name} is empty: a grid needs at least one value on each axis")
    total = math.prod(sizes)
    columns = {}
    for i, (name, (vals, rng, f64)) in enumerate(zip(names, axes)):
        inner = math.prod(sizes[i + 1:])
        columns[name] = GridColumn("uint64" if i == 0 else "float32", vals, rng, inner, 0, total, f64)
    return Grid(columns)
