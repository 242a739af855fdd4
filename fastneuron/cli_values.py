"""Values of the command line: seeds, float lists and ranges, and their product, parsed
without building arrays until the run's size has been checked (``python -m fastneuron
train``; see :mod:`fastneuron.__main__`)."""

from __future__ import annotations

import math

import numpy as np

_U64 = 2**64


class CLIError(ValueError):
    """A bad command line: reported as one ``fastneuron: error:`` line, exit status 2."""


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip().replace("_", ""), 10)
    except ValueError:
        raise CLIError(f"{what}: {text.strip()!r} is not an integer") from None


class Seeds:
    """The seeds of ``--seeds`` as written: a list of ``range`` objects (a single seed is
    a range of one), in order. Holds no array: :attr:`count` is known at once, so the CLI
    can refuse a run too large for memory before building anything of its size;
    :meth:`materialize` builds the uint64 array."""

    def __init__(self, ranges: list):
        self.ranges = list(ranges)
        # len(range) overflows past sys.maxsize (2**63 - 1): count with Python ints.
        self.count = sum((r.stop - r.start + r.step - 1) // r.step for r in self.ranges)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"Seeds({self.ranges!r})"

    def materialize(self) -> np.ndarray:
        """The seeds as a uint64 array (in order)."""
        parts = [np.uint64(r.start) + np.arange((r.stop - r.start + r.step - 1) // r.step, dtype=np.uint64)
                 * np.uint64(r.step) for r in self.ranges]  # uint64 arithmetic: exact in [0, 2**64)
        return np.concatenate(parts)


def _items(text: str, what: str):
    """The comma-separated items of ``text``, each with its ``:``-separated fields."""
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise CLIError(f"{what}: empty item in {text!r}")
        yield item, item.split(":")


def parse_seeds(text: str) -> Seeds:
    """``0:1000``, ``0:1000:10``, ``1,2,3`` or a mix, as :class:`Seeds` (ranges, no array;
    ``.materialize()`` gives the uint64 array)."""
    parts = []
    for item, fields in _items(text, "--seeds"):
        if len(fields) == 1:
            v = _int(fields[0], "--seeds")
            if not 0 <= v < _U64:
                raise CLIError(f"--seeds: {v} is not in [0, 2**64)")
            parts.append(range(v, v + 1))
            continue
        if len(fields) > 3:
            raise CLIError(f"--seeds: {item!r} is not start:stop or start:stop:step")
        start, stop = _int(fields[0], "--seeds"), _int(fields[1], "--seeds")
        step = _int(fields[2], "--seeds") if len(fields) == 3 else 1
        if step < 1:
            raise CLIError(f"--seeds: the step of {item!r} must be >= 1")
        if start < 0 or stop > _U64:
            raise CLIError(f"--seeds: range {item!r} leaves [0, 2**64)")
        if stop <= start:
            raise CLIError(f"--seeds: range {item!r} is empty (stop is excluded)")
        parts.append(range(start, stop, step))
    return Seeds(parts)


def _float(text: str, what: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise CLIError(f"{what}: {text.strip()!r} is not a number") from None


def count_floats(text: str, what: str) -> int:
    """How many values :func:`parse_floats` gives for ``text``, without building them
    (CLIError for bad text, as parse_floats)."""
    return sum(n for _, _, _, n in _float_items(text, what))


def parse_floats(text: str, what: str) -> np.ndarray:
    """``0.01``, ``0.01,0.1``, ``1e-4:1e-1:60log``, ``0:1:11lin`` or a mix, as float64."""
    parts = []
    for kind, a, b, n in _float_items(text, what):
        if kind == "value":
            parts.append(np.array([a]))
        elif kind == "log":
            parts.append(np.geomspace(a, b, n))  # both ends exactly a and b
        else:
            parts.append(np.linspace(a, b, n))
    return np.concatenate(parts)


def _float_items(text: str, what: str) -> list:
    """The items of a value list: ("value", v, v, 1), ("log", a, b, n) or ("lin", a, b, n)."""
    parts = []
    for item, fields in _items(text, what):
        if len(fields) == 1:
            v = _float(item, what)
            parts.append(("value", v, v, 1))
            continue
        spec = fields[-1].strip().lower() if len(fields) == 3 else ""
        kind = spec[-3:]
        if len(fields) != 3 or kind not in ("log", "lin"):
            raise CLIError(f"{what}: {item!r} is not a value, a:b:Nlog or a:b:Nlin")
        a, b = _float(fields[0], what), _float(fields[1], what)
        n = _int(spec[:-3], what) if spec[:-3] else -1
        if n < 1:
            raise CLIError(f"{what}: {item!r} needs a count N >= 1 before '{kind}'")
        if not (math.isfinite(a) and math.isfinite(b)):
            raise CLIError(f"{what}: the ends of {item!r} must be finite")
        if kind == "log" and (a <= 0 or b <= 0):
            raise CLIError(f"{what}: a log range needs ends > 0, got {item!r}")
        parts.append((kind, a, b, n))
    return parts


def parse_betas(text: str, what: str = "--betas") -> tuple[float, float]:
    """``0.9,0.999``: Adam's two run-wide betas (range checks are the API's)."""
    items = text.split(",")
    if len(items) != 2 or not all(i.strip() for i in items):
        raise CLIError(f"{what}: expected two numbers B1,B2 (as 0.9,0.999), got {text!r}")
    return _float(items[0], what), _float(items[1], what)


def parse_one_float(text: str, what: str) -> float:
    """A run-wide option's one value (``1e-8``)."""
    if count_floats(text, what) != 1:
        raise CLIError(f"{what}: {text!r} is a list; this option takes one value, shared by the run")
    return float(parse_floats(text, what)[0])


def product(seeds: np.ndarray, *axes: np.ndarray) -> tuple[np.ndarray, ...]:
    """The columns of ``fastneuron.grid(seeds, *axes)`` (first axis slowest), vectorized:
    ``grid`` builds Python lists, too slow for a hundred million members."""
    sizes = [len(seeds)] + [len(x) for x in axes]
    total = math.prod(sizes)
    cols = []
    for i, x in enumerate((seeds, *axes)):
        inner = math.prod(sizes[i + 1:])
        cols.append(np.tile(np.repeat(x, inner), total // (inner * sizes[i])))
    return tuple(cols)
