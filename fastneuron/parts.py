"""Results at scale: a *parts directory* (issue 14), read lazily, part by part.

A run too large for one ``.npz`` is written as a directory::

    DIR/manifest.json          written last, atomically (UTF-8 JSON, below)
    DIR/part-00000/weight.npy  ...one folder per part: plain .npy files, never pickles

The manifest::

    {"format": "fastneuron-parts", "format_version": 1, "fastneuron_version": "...",
     "settings": {...},                  # exactly TrainResult.settings
     "n_members": M,
     "member_options": ["momentum", "weight_decay"],   # TrainResult.member_options' names, in order
     "described": {"seeds": COLUMN, ...},              # per-member columns stored as a description
     "history_steps": [0, k, 2k, ...],                 # L logged steps ([] without a log)
     "parts": [{"name": "part-00000", "start": 0, "stop": 500}, ...]}

The parts are contiguous and in order and cover ``[0, M)`` (a part may be empty, as a
rank's without members). A part's name is a plain file name (letters, digits, ``_``,
``-``, ``.``; not starting with ``.``). Part ``[start, stop)`` (``n = stop - start``)
holds ``weight.npy``, ``bias.npy`` (float32 (n,), NaN where diverged), ``diverged_at.npy``
(int64 (n,)), with a log ``history_weight.npy`` and ``history_bias.npy`` (float32 (L, n)),
(with ``inputs`` d > 1 in the settings, SPEC §6f: ``weight.npy`` (n, d) and
``history_weight.npy`` (L, n, d), each member's d values contiguous),
and for each column not ``described``: ``seeds.npy`` (uint64 (n,)), ``lrs.npy`` and one
``<option>.npy`` per member option (float32 (n,)), and ``<name>_float64.npy`` (float64
(n,)) for each column the manifest's optional ``"float64": ["lrs", ...]`` names (its
values as given, SPEC §3c, §3d; :attr:`TrainResult.float64`). Other files are ignored. A described
column is :func:`fastneuron.members.column_from_json`'s JSON (``dtype``, ``values`` or
``range``, ``inner``, ``offset``, ``length == M``).

:func:`load_parts` checks the manifest and every needed ``.npy`` header (dtype, shape,
C order, no Python objects, the file's size) before it reads any array data; anything
wrong is a ValueError naming the file. Arrays are then memory-mapped (copy-on-write,
never pickled) when first used. :func:`load` reads a parts directory or a result file.

:meth:`PartsResult.summary` streams over the parts (exact for runs up to about 2**25
members, a stated histogram error past that). The plots of :mod:`fastneuron.plot` take
a PartsResult: ``risk_vs_lr`` and ``spread_vs_lr`` draw from its summary (they read the
``noise``, ``momentum`` and ``weight_decay`` columns whole, 4 bytes a member each, to
decide on edges and the prediction); ``risk_vs_step`` and ``trajectories`` read the
whole history (they work, materializing it).
"""

from __future__ import annotations

import json
import os
import re
import types
from collections.abc import Mapping
from typing import Optional

import numpy as np
import torch

from . import result as _result
from .files import float64_names, read_npy_header
from .part_writer import FORMAT, FORMAT_VERSION, MANIFEST
from .result import TrainResult
from .summary import (Summary, check_by, combine_spread, group_row, member_columns, median_step, notes,
                      risk_quantiles, spread_columns, spread_problem, weight_spread)

#: Largest manifest read (bytes).
MAX_MANIFEST_BYTES = 1 << 26
#: :meth:`PartsResult.summary` is exact while the per-member values it keeps (25 bytes
#: a member: group numbers, diverged flag, float64 risk; 4 more with a log, 8 more with a
#: ``noise`` option) fit in this many bytes (its peak is about twice that, when it sorts
#: them by group at the end); past it, it streams (see there).
EXACT_BYTES = 1 << 30
#: Streaming quantiles: the risk is counted in bins of 2**-HIST_BITS of a binade.
HIST_BITS = 10
#: The summary reads at most this many history values (L x members) at a time.
CHUNK_VALUES = 1 << 22

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\Z")
_FIXED = {"weight": np.float32, "bias": np.float32, "diverged_at": np.int64}
_HISTORY = ("history_weight", "history_bias")
_RESERVED = {"seeds", "lrs", "weight", "bias", "diverged_at", "history_steps", *_HISTORY, "settings", "seed", "lr"}


def _int(v) -> bool:
    return type(v) is int


def _npy_header(path: str, dtype, shape: tuple) -> None:
    """ValueError (naming ``path``) unless ``path`` is a ``.npy`` file of ``dtype`` and
    ``shape`` in C order, no objects, exactly as long as its header says. Reads only
    the header."""
    try:
        with open(path, "rb") as f:
            got_shape, fortran, got_dtype = read_npy_header(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a plain .npy file ({exc})") from None
    if got_dtype.hasobject:
        raise ValueError(f"{path}: holds Python objects (refused, never unpickled)")
    if got_dtype != np.dtype(dtype) or tuple(got_shape) != tuple(shape):
        raise ValueError(f"{path}: is {got_dtype} {tuple(got_shape)}, expected {np.dtype(dtype)} {tuple(shape)}")
    if fortran:
        raise ValueError(f"{path}: is in Fortran order, expected C order")
    need = int(np.prod(shape, dtype=object)) * got_dtype.itemsize
    if offset + need != size:
        raise ValueError(f"{path}: holds {size - offset} bytes of data, not {need}")


class _Part(types.SimpleNamespace):
    """One part: name, start, stop, directory, the files it holds (name -> (dtype, shape))."""


def _read_manifest(directory: str) -> tuple:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{path}: missing: {directory} is not a fastneuron parts directory") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ValueError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a fastneuron parts manifest (not UTF-8 JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastneuron parts manifest (no format '{FORMAT}')")
    return path, meta


def _check_manifest(directory: str) -> tuple:
    """(manifest path, meta, option names, described columns, history steps, parts): all
    checked, the ``.npy`` headers included; ValueError naming the bad file."""
    path, meta = _read_manifest(directory)

    def broken(what: str):
        return ValueError(f"{path}: broken '{FORMAT}' manifest ({what})")

    version = meta.get("format_version")
    if not _int(version) or version < 1:
        raise broken(f"format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {version} is newer than this fastneuron reads ({FORMAT_VERSION})")
    settings = meta.get("settings")
    if not isinstance(settings, dict):
        raise broken(f"settings of type {type(settings).__name__}")
    try:
        _result._settings_problem(settings)
        d = _result.settings_model(settings).inputs
    except (KeyError, TypeError, ValueError) as exc:
        raise broken(f"settings do not describe the problem: {type(exc).__name__} {exc}") from None
    inner = (d,) if d > 1 else ()  # the weight's coordinates: only when the settings say inputs=d
    m = meta.get("n_members")
    if not _int(m) or m < 0:
        raise broken(f"n_members {m!r}")
    options = meta.get("member_options")
    if not isinstance(options, list) or not all(isinstance(k, str) and k not in _RESERVED for k in options) \
            or len(set(options)) != len(options):
        raise broken(f"member_options {options!r}")
    steps = meta.get("history_steps")
    if not isinstance(steps, list) or not all(_int(s) and 0 <= s < 2**63 for s in steps) \
            or any(a >= b for a, b in zip(steps, steps[1:])):
        raise broken("history_steps: not increasing ints >= 0")
    float64 = float64_names(meta, options)
    if float64 is None:
        raise broken(f"float64 {meta['float64']!r}")
    dtypes = {"seeds": np.uint64, "lrs": np.float32, **dict.fromkeys(options, np.float32),
              **{_result.float64_column_name(k): np.float64 for k in float64}}
    described_json = meta.get("described", {})
    if not isinstance(described_json, dict) or not set(described_json) <= set(dtypes):
        raise broken(f"described: a dict of some of {sorted(dtypes)}")
    described = {}
    if described_json:
        from .members import column_from_json

        for name, d in described_json.items():
            try:
                column = column_from_json(d)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise broken(f"described column {name!r}: {exc}") from None
            length = d.get("length") if isinstance(d, dict) else None
            if length != m or d.get("dtype") != np.dtype(dtypes[name]).name:
                raise broken(f"described column {name!r}: length {length!r} (n_members {m}), "
                             f"dtype {d.get('dtype')!r} (expected {np.dtype(dtypes[name]).name})")
            described[name] = column
    parts_json = meta.get("parts")
    if not isinstance(parts_json, list):
        raise broken("parts: not a list")
    parts, at, names = [], 0, set()
    for p in parts_json:
        if not isinstance(p, dict) or not all(_int(p.get(k)) for k in ("start", "stop")):
            raise broken(f"part {p!r}")
        name = p.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in names:
            raise broken(f"part name {name!r}: not a plain, unique file name")
        if p["start"] != at or p["stop"] < p["start"]:
            raise broken(f"part {name!r} covers [{p['start']}, {p['stop']}), expected to start at {at}")
        names.add(name)
        at = p["stop"]
        parts.append(_Part(name=name, start=p["start"], stop=p["stop"], directory=os.path.join(directory, name)))
    if at != m:
        raise broken(f"parts cover [0, {at}), not the n_members [0, {m})")
    n_logged = len(steps)
    for part in parts:
        if not os.path.isdir(part.directory):
            raise ValueError(f"{part.directory}: missing (a part named in {path})")
        n = part.stop - part.start
        files = {k: (dtype, (n,)) for k, dtype in _FIXED.items()}
        files["weight"] = (np.float32, (n, *inner))
        if n_logged:
            files.update(dict.fromkeys(_HISTORY, (np.float32, (n_logged, n))))
            files["history_weight"] = (np.float32, (n_logged, n, *inner))
        files.update({k: (dtype, (n,)) for k, dtype in dtypes.items() if k not in described})
        for k, (dtype, shape) in files.items():
            _npy_header(os.path.join(part.directory, k + ".npy"), dtype, shape)
        part.files = files
    return path, meta, options, described, torch.tensor(steps, dtype=torch.int64), parts


class _Columns(Mapping):
    """``PartsResult.member_options``: each option's whole column (float32 tensor (M,)),
    concatenated over the parts when looked up (it materializes: 4 bytes a member)."""

    def __init__(self, owner: "PartsResult"):
        self._owner = owner

    def __getitem__(self, name):
        if name not in self._owner._options:
            raise KeyError(name)
        return self._owner._column(name)

    def __iter__(self):
        return iter(self._owner._options)

    def __len__(self):
        return len(self._owner._options)

    def __repr__(self):
        return f"<member options {list(self._owner._options)} of {self._owner!r}, read on access>"


class PartsResult:
    """A run read from a parts directory (:func:`load_parts`), lazily.

    ``len()`` is M; ``settings``, ``history_steps`` (int64 tensor (L,)), ``n_parts``,
    ``member_options`` (a mapping of the option names; looking one up reads its column)
    and ``problem`` cost no array reads. ``part(i)`` is part ``i`` as a
    :class:`~fastneuron.result.TrainResult` of its members only, its arrays memory-mapped
    (copy-on-write: only what is touched is read).

    The attributes ``weight``, ``bias``, ``diverged_at``, ``history_weight``,
    ``history_bias``, ``seeds``, ``lrs``, each option by name, ``risk`` and
    ``history_risk`` are the whole columns as :class:`TrainResult` has them, concatenated
    over the parts on each access: they MATERIALIZE the column in memory (4 or 8 bytes a
    member, times L for a history). ``to_result()`` materializes everything. ``summary()``
    streams over the parts instead.
    """

    def __init__(self, directory: str, manifest: str, meta: dict, options: list, described: dict,
                 history_steps: torch.Tensor, parts: list):
        self.directory, self.manifest = directory, manifest
        self.settings = meta["settings"]
        self.fastneuron_version = meta.get("fastneuron_version")
        self._n = meta["n_members"]
        self._options = list(options)
        self._float64 = list(meta.get("float64", []))  # checked by _check_manifest
        self._described = described
        self.history_steps = history_steps
        self._parts = parts
        self.member_options = _Columns(self)

    # -- sizes and names ----------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def n_parts(self) -> int:
        return len(self._parts)

    @property
    def parts(self) -> list:
        """``[(name, start, stop), ...]`` of the parts, in order."""
        return [(p.name, p.start, p.stop) for p in self._parts]

    @property
    def problem(self):
        """The run's problem object (:mod:`fastneuron.problems`), from the settings."""
        return _result._settings_problem(self.settings)

    def __repr__(self) -> str:
        s = self.settings
        inputs = f", inputs={s['inputs']}" if s.get("inputs", 1) != 1 else ""
        return (f"PartsResult(members={len(self)}{inputs}, parts={self.n_parts}, steps={s.get('steps')}, "
                f"backend={s.get('backend')!r}, logged={len(self.history_steps)}, directory={self.directory!r})")

    def __getattr__(self, name: str):
        if name in self.__dict__.get("_options", ()):
            return self._column(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # -- arrays ------------------------------------------------------------------------
    def _map(self, part: _Part, name: str) -> np.ndarray:
        """Array ``name`` of ``part``, memory-mapped copy-on-write (never a pickle)."""
        path = os.path.join(part.directory, name + ".npy")
        dtype, shape = part.files[name]
        try:
            a = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: cannot be read ({exc})") from None
        if a.dtype != np.dtype(dtype) or a.shape != tuple(shape):  # changed since load_parts checked it
            raise ValueError(f"{path}: is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {tuple(shape)}")
        return a

    def _numpy(self, part: _Part, name: str) -> np.ndarray:
        """Column ``name`` ("seeds", "lrs", an option) of ``part``: mapped, or expanded
        from its description for the part's range only."""
        if name in self._described:
            column = self._described[name]
            return np.ascontiguousarray(column.numpy(part.start, part.stop), dtype=np.dtype(column.dtype))
        return self._map(part, name)

    def part(self, i: int) -> TrainResult:
        """Part ``i`` as a TrainResult of its members (``part.start`` to ``part.stop``),
        memory-mapped (described columns stay described, for the part's range, until
        read); its settings are the run's."""
        return self._part_result(self._parts[i])

    def _part_result(self, p: _Part, a: int = 0, b: Optional[int] = None) -> TrainResult:
        """Members ``[p.start + a, p.start + b)`` of part ``p`` (views of its maps)."""
        b = p.stop - p.start if b is None else b

        def column(k):
            if k in self._described:
                return self._described[k][p.start + a:p.start + b]
            x = self._map(p, k)[a:b]
            return x if k == "seeds" else torch.from_numpy(x)

        # The members' axis: the first of a final array ((n,), a weight's (n, d)), the second of a history's.
        t = {k: torch.from_numpy(self._map(p, k)[:, a:b] if k in _HISTORY else self._map(p, k)[a:b])
             for k in p.files if k in _FIXED or k in _HISTORY}
        return TrainResult(
            seeds=column("seeds"), lrs=column("lrs"), member_options={k: column(k) for k in self._options},
            weight=t["weight"], bias=t["bias"], diverged_at=t["diverged_at"], settings=self.settings,
            history_steps=self.history_steps, history_weight=t.get("history_weight"),
            history_bias=t.get("history_bias"),
            float64={k: column(_result.float64_column_name(k)) for k in self._float64})

    def iter_parts(self):
        """``(start, TrainResult)`` for each part, in order."""
        for i, p in enumerate(self._parts):
            yield p.start, self.part(i)

    def _cat(self, get, dtype, axis: int = 0, rows: int = 0, inner: tuple = ()) -> np.ndarray:
        pieces = [get(i, p) for i, p in enumerate(self._parts)]
        if not pieces:
            return np.zeros(((rows, 0) if axis else (0,)) + inner, dtype=dtype)
        return np.concatenate(pieces, axis=axis)

    @property
    def inputs(self) -> int:
        """d, the inputs of each member's ``nn.Linear(d, 1)`` (1 for a v2 run)."""
        return _result.settings_model(self.settings).inputs

    @property
    def model(self):
        """The run's model (:class:`fastneuron.model.Neuron`), from the settings."""
        return _result.settings_model(self.settings)

    def _column(self, name: str, dtype=np.float32) -> torch.Tensor:
        return torch.from_numpy(self._cat(lambda i, p: self._numpy(p, name), dtype))

    @property
    def float64(self) -> dict:
        """:attr:`TrainResult.float64`: float64 (M,) by column name (materialized), the
        values as given of the columns the manifest names; empty for most runs."""
        return {k: self._column(_result.float64_column_name(k), np.float64) for k in self._float64}

    def _fixed(self, name: str):
        d = self.inputs
        inner = (d,) if d > 1 and name in ("weight", "history_weight") else ()
        if name in _HISTORY:
            if not len(self.history_steps):
                return None
            return torch.from_numpy(self._cat(lambda i, p: self._map(p, name), np.float32, axis=1,
                                              rows=len(self.history_steps), inner=inner))
        return torch.from_numpy(self._cat(lambda i, p: self._map(p, name), _FIXED[name], inner=inner))

    @property
    def seeds(self) -> np.ndarray:
        """uint64 NumPy array (M,) (materialized)."""
        return self._cat(lambda i, p: self._numpy(p, "seeds"), np.uint64)

    @property
    def lrs(self) -> torch.Tensor:
        """float32 (M,) (materialized)."""
        return self._column("lrs")

    weight = property(lambda self: self._fixed("weight"), doc="float32 (M,), or (M, d) (materialized)")
    bias = property(lambda self: self._fixed("bias"), doc="float32 (M,) (materialized)")
    diverged_at = property(lambda self: self._fixed("diverged_at"), doc="int64 (M,) (materialized)")
    history_weight = property(lambda self: self._fixed("history_weight"),
                              doc="float32 (L, M), or (L, M, d) (materialized), None without a log")
    history_bias = property(lambda self: self._fixed("history_bias"),
                            doc="float32 (L, M) (materialized), None without a log")

    @property
    def risk(self) -> torch.Tensor:
        """Final population risk, float64 (M,), computed part by part (materialized)."""
        return torch.from_numpy(self._cat(lambda i, p: self.part(i).risk.numpy(), np.float64))

    @property
    def history_risk(self) -> Optional[torch.Tensor]:
        """Risk at each logged step, float64 (L, M) (materialized), None without a log."""
        if not len(self.history_steps):
            return None
        return torch.from_numpy(self._cat(lambda i, p: self.part(i).history_risk.numpy(), np.float64, axis=1,
                                          rows=len(self.history_steps)))

    def to_result(self) -> TrainResult:
        """The whole run as one in-memory TrainResult (reads every array; described
        columns stay described, as a grid's run returns them, until read)."""
        def column(k):
            if k in self._described:
                return self._described[k]
            return self.seeds if k == "seeds" else self._column(k)

        def column64(k):
            name = _result.float64_column_name(k)
            return self._described[name] if name in self._described else self._column(name, np.float64)

        return TrainResult(
            seeds=column("seeds"), lrs=column("lrs"), member_options={k: column(k) for k in self._options},
            weight=self._fixed("weight"), bias=self._fixed("bias"), diverged_at=self._fixed("diverged_at"),
            settings=self.settings, history_steps=self.history_steps,
            history_weight=self._fixed("history_weight"), history_bias=self._fixed("history_bias"),
            float64={k: column64(k) for k in self._float64})

    # -- summary -------------------------------------------------------------------------
    def _chunks(self):
        """TrainResults of consecutive members, in order, each within one part and at
        most :data:`CHUNK_VALUES` history values (CHUNK_VALUES members without a log)."""
        step = max(1, CHUNK_VALUES // max(1, len(self.history_steps)))
        for p in self._parts:
            n = p.stop - p.start
            for a in range(0, n, step):
                yield self._part_result(p, a, min(a + step, n))

    def summary(self, by=("lr",), tol: float = 1e-4, *, exact_bytes: int = EXACT_BYTES) -> Summary:
        """:meth:`TrainResult.summary` in one pass over the parts (same rows, same
        :class:`~fastneuron.summary.Summary`); at most one part's chunk of members (and
        :data:`CHUNK_VALUES` history values) is read at a time.

        Exact (equal to ``to_result().summary(by, tol)``, bit for bit) while the
        per-member values it keeps fit ``exact_bytes`` (:data:`EXACT_BYTES`, 1 GiB: 25
        bytes a member, 29 with a log, 37 with a ``noise`` option too: about 2**25
        members; the peak is about twice that). Past that it streams, its memory per
        (group, occupied histogram bin) instead of per member:

        - count, diverged and step_below_tol stay exact (the first step below tol is
          counted per group and logged step);
        - risk_median/p10/p90 come from a histogram of each group's risk in bins of
          2**-:data:`HIST_BITS` of a binade (a float64's exponent and top HIST_BITS
          mantissa bits), each value taken at its bin's middle: relative error below
          2**-(HIST_BITS+1) (< 4.9e-4) for risks above 1e-300 (0 stays 0);
        - the spread columns' std and se come from each group's central moments
          merged chunk by chunk (Pebay's formulas): equal up to float64 rounding.
        """
        names = ["lr", *self._options, "seed"]
        by = check_by(by, names, tol)
        logged = len(self.history_steps)
        noise_option = "noise" in self._options
        per_member = 25 + (4 if logged else 0) + (8 if noise_option else 0)
        acc = _Exact(logged) if len(self) * per_member <= exact_bytes else _Streaming(logged)
        gids: dict = {}
        keys_of: list = []
        flags = {"momentum": False, "weight_decay": False, "noise": False}
        steps_f = self.history_steps.numpy().astype(np.float64)
        lo = hi = lo_noise = hi_noise = np.zeros(0, np.float32)
        spans: dict = {}  # each member column's (min, max) over the run, for the notes on the spread
        for chunk in self._chunks():
            columns = member_columns(chunk)
            if noise_option and len(chunk):
                for k, x in columns.items():
                    a, b = x.min(), x.max()
                    spans[k] = (min(spans[k][0], a), max(spans[k][1], b)) if k in spans else (a, b)
            for k in flags:
                if k in columns:
                    flags[k] |= bool((columns[k] > 0).any() if k == "noise" else (columns[k] != 0).any())
            gid = _group_ids(columns, by, len(chunk), gids, keys_of)
            n_groups = len(keys_of)
            lo, hi = _grow_minmax(lo, hi, n_groups, gid, columns["lr"])
            if noise_option:
                lo_noise, hi_noise = _grow_minmax(lo_noise, hi_noise, n_groups, gid, columns["noise"])
            diverged = chunk.diverged_at.numpy() >= 0
            first = None
            if logged:
                below = (chunk.history_risk < tol).numpy()  # NaN (diverged) compares False
                first = np.where(below.any(axis=0), below.argmax(axis=0), logged)
            ok = ~diverged
            w = chunk.weight.numpy()[ok] if noise_option else None
            b = chunk.bias.numpy()[ok] if noise_option else None
            acc.add(gid, diverged, chunk.risk.numpy()[ok], first, w, b, n_groups)
        order = sorted(range(len(keys_of)), key=keys_of.__getitem__)
        rows = []
        for g in order:
            row = group_row(by, keys_of[g], count=acc.count(g), diverged=acc.diverged(g))
            row.update(acc.risk_quantiles(g))
            row["step_below_tol"] = None if not logged else acc.median_step(g, steps_f)
            rows.append(row)
        spread = noise_option and flags["noise"]
        if spread:
            proxy = types.SimpleNamespace(settings=self.settings, member_options={
                k: np.array([1.0 if flags[k] else 0.0], np.float32) for k in ("momentum", "weight_decay")
                if k in self._options})
            problem = spread_problem(proxy)
            steps = int(self.settings["steps"])
            for g, row in zip(order, rows):
                one = lo[g] == hi[g] and lo_noise[g] == hi_noise[g]
                row.update(spread_columns(*acc.spread(g), problem, lo[g] if one else None,
                                          lo_noise[g] if one else None, steps))
        spread_over = [k for k, (a, b) in spans.items() if k not in by and a != b] if spread else None
        return Summary(by=by, tol=tol, rows=rows, notes=notes(tol, logged=bool(logged), spread_over=spread_over))


def _group_ids(columns: dict, by: tuple, n: int, gids: dict, keys_of: list) -> np.ndarray:
    """Each member's global group number (new groups appended to ``keys_of``), its key
    as :func:`fastneuron.summary.group_keys` gives it (float64 of the float32 value, a
    seed as a Python int)."""
    if not by:
        if () not in gids:
            gids[()] = len(keys_of)
            keys_of.append(())
        return np.full(n, gids[()], dtype=np.int64)
    codes, uniques = [], []
    for k in by:
        col = columns[k].astype(np.uint64) if k == "seed" else columns[k].astype(np.float64)
        u, inv = np.unique(col, return_inverse=True)
        uniques.append([int(v) for v in u] if k == "seed" else [float(v) for v in u])
        codes.append(inv.reshape(-1))
    if len(codes) == 1:
        local, inv = np.arange(len(uniques[0]))[:, None], codes[0]
    else:
        local, inv = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
    to_global = np.empty(len(local), dtype=np.int64)
    for i, row in enumerate(local):
        key = tuple(uniques[j][c] for j, c in enumerate(row))
        if key not in gids:
            gids[key] = len(keys_of)
            keys_of.append(key)
        to_global[i] = gids[key]
    return to_global[inv]


def _grow_minmax(lo, hi, n_groups, gid, values):
    if len(lo) < n_groups:
        extra = n_groups - len(lo)
        lo = np.concatenate([lo, np.full(extra, np.inf, np.float32)])
        hi = np.concatenate([hi, np.full(extra, -np.inf, np.float32)])
    np.minimum.at(lo, gid, values)
    np.maximum.at(hi, gid, values)
    return lo, hi


class _Exact:
    """Keeps each member's values (in member order) and summarizes each group with
    :mod:`fastneuron.summary`'s own code: rows equal to :func:`summarize`'s."""

    def __init__(self, logged: int):
        self.logged = logged
        self.all_gid, self.div, self.first = [], [], []
        self.ok_gid, self.risk, self.w, self.b = [], [], [], []
        self.done = False

    def add(self, gid, diverged, risk_ok, first, w_ok, b_ok, n_groups):
        self.all_gid.append(gid)
        self.div.append(diverged)
        self.ok_gid.append(gid[~diverged])
        self.risk.append(risk_ok)
        if first is not None:
            self.first.append(first.astype(np.int32 if self.logged < 2**31 else np.int64))
        if w_ok is not None:
            self.w.append(w_ok)
            self.b.append(b_ok)

    def _finish(self):
        if self.done:
            return
        self.done = True

        def split(gid_list, value_lists):
            gid = np.concatenate(gid_list) if gid_list else np.zeros(0, np.int64)
            small = gid.astype(np.uint16) if gid.max(initial=0) < 2**16 else gid  # radix sort
            order = np.argsort(small, kind="stable")  # member order within a group
            bounds = np.searchsorted(gid[order], np.arange(int(gid.max(initial=-1)) + 2))
            return bounds, [np.concatenate(v)[order] if v else None for v in value_lists]

        self.bounds_all, (self.div_s, self.first_s) = split(self.all_gid, [self.div, self.first])
        self.bounds_ok, (self.risk_s, self.w_s, self.b_s) = split(self.ok_gid, [self.risk, self.w, self.b])

    def _of(self, bounds, values, g):
        self._finish()
        bounds, values = getattr(self, bounds), getattr(self, values)
        return values[bounds[g]:bounds[g + 1]] if g + 1 < len(bounds) else values[:0]

    def count(self, g):
        return int(self._of("bounds_all", "div_s", g).size)

    def diverged(self, g):
        return float(self._of("bounds_all", "div_s", g).mean())

    def risk_quantiles(self, g):
        return risk_quantiles(self._of("bounds_ok", "risk_s", g))

    def median_step(self, g, steps_f):
        idx = self._of("bounds_all", "first_s", g)
        first = np.where(idx < self.logged, steps_f[np.minimum(idx, max(self.logged - 1, 0))], np.inf)
        return median_step(first)

    def spread(self, g):
        from .theory import std_with_se

        return (weight_spread(self._of("bounds_ok", "w_s", g)),
                std_with_se(self._of("bounds_ok", "b_s", g)))


class _Counts:
    """Sparse counts of (group, bin) pairs, merged as they come."""

    def __init__(self, bins: int):
        self.bins = bins
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self.pending: list = []
        self.n_pending = 0

    def add(self, gid, bins):
        pairs = gid.astype(np.int64) * self.bins + bins.astype(np.int64)
        self.pending.append(pairs)
        self.n_pending += pairs.size
        if self.n_pending > max(1 << 22, 2 * self.keys.size):
            self._merge()

    def _merge(self):
        if not self.pending:
            return
        keys = np.concatenate([self.keys, *self.pending])
        weights = np.concatenate([self.counts, *(np.ones(p.size, np.int64) for p in self.pending)])
        self.keys, inv = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inv.reshape(-1), weights=weights, minlength=self.keys.size).astype(np.int64)
        self.pending, self.n_pending = [], 0

    def of(self, g) -> tuple:
        """(bins, counts) of group ``g``, bins increasing."""
        self._merge()
        lo, hi = np.searchsorted(self.keys, [g * self.bins, (g + 1) * self.bins])
        return self.keys[lo:hi] - g * self.bins, self.counts[lo:hi]


_SHIFT = 52 - HIST_BITS


def _risk_bins(risk: np.ndarray) -> np.ndarray:
    r = np.maximum(np.asarray(risk, np.float64), 0.0) + 0.0  # -0.0 -> 0.0; NaN stays NaN
    r = np.where(np.isnan(r), np.inf, r)
    return r.view(np.int64) >> _SHIFT


def _bin_middle(bins: np.ndarray) -> np.ndarray:
    lower = (bins << _SHIFT).view(np.float64)
    upper = ((bins + 1) << _SHIFT).view(np.float64)
    mid = lower + (upper - lower) / 2
    return np.where(bins == 0, 0.0, np.where(np.isinf(lower), np.inf, mid))


def _order_stat(values, counts, k):
    return values[np.searchsorted(np.cumsum(counts), k, side="right")]


class _Moments:
    """Per group count, mean and central moments 2-4, merged chunk by chunk (Pebay 2008)."""

    def __init__(self):
        self.m = np.zeros((5, 0))

    def add(self, gid, v, n_groups):
        if self.m.shape[1] < n_groups:
            self.m = np.concatenate([self.m, np.zeros((5, n_groups - self.m.shape[1]))], axis=1)
        fin = np.isfinite(v)
        gid, v = gid[fin], v[fin].astype(np.float64)
        nb = np.bincount(gid, minlength=n_groups).astype(np.float64)
        present = nb > 0
        mean_b = np.divide(np.bincount(gid, v, minlength=n_groups), nb, out=np.zeros(n_groups), where=present)
        d = v - mean_b[gid]
        m2b, m3b, m4b = (np.bincount(gid, d**p, minlength=n_groups) for p in (2, 3, 4))
        na, mean_a, m2a, m3a, m4a = self.m
        n = na + nb
        safe = np.where(n > 0, n, 1.0)
        delta = mean_b - mean_a
        mean = mean_a + delta * nb / safe
        m2 = m2a + m2b + delta**2 * na * nb / safe
        m3 = m3a + m3b + delta**3 * na * nb * (na - nb) / safe**2 + 3 * delta * (na * m2b - nb * m2a) / safe
        m4 = (m4a + m4b + delta**4 * na * nb * (na * na - na * nb + nb * nb) / safe**3
              + 6 * delta**2 * (na * na * m2b + nb * nb * m2a) / safe**2 + 4 * delta * (na * m3b - nb * m3a) / safe)
        new = np.stack([n, mean, m2, m3, m4])
        self.m = np.where(present, new, self.m)

    def std_se(self, g) -> tuple:
        """:func:`fastneuron.theory.std_with_se` from the moments."""
        if g >= self.m.shape[1]:
            return (float("nan"), float("nan"))
        n, _, m2_sum, _, m4_sum = (float(x) for x in self.m[:, g])
        if n < 2:
            return (float("nan"), float("nan"))
        s = (m2_sum / (n - 1)) ** 0.5
        if n < 4 or s == 0:
            return (s, float("nan") if n < 4 else 0.0)
        m2 = m2_sum / n
        kappa = (m4_sum / n) / (m2 * m2)
        var_s2 = s**4 * max(kappa - (n - 3) / (n - 1), 0.0) / n
        return (s, var_s2**0.5 / (2.0 * s))


class _Streaming:
    """Memory per group, not per member (see :meth:`PartsResult.summary`)."""

    def __init__(self, logged: int):
        self.logged = logged
        self.n = np.zeros(0, np.int64)
        self.n_div = np.zeros(0, np.int64)
        self.risk = _Counts(1 << (63 - _SHIFT))
        self.first = _Counts(logged + 1)
        self.w, self.b = _Moments(), _Moments()
        self.inputs = 1  # a weight of d > 1 coordinates: group g's coordinate i is moments' group g*d + i

    def add(self, gid, diverged, risk_ok, first, w_ok, b_ok, n_groups):
        self.n = np.concatenate([self.n, np.zeros(n_groups - len(self.n), np.int64)])
        self.n_div = np.concatenate([self.n_div, np.zeros(n_groups - len(self.n_div), np.int64)])
        self.n += np.bincount(gid, minlength=n_groups)
        self.n_div += np.bincount(gid[diverged], minlength=n_groups)
        gid_ok = gid[~diverged]
        self.risk.add(gid_ok, _risk_bins(risk_ok))
        if first is not None:
            self.first.add(gid, first)
        if w_ok is not None:
            if w_ok.ndim == 2:
                d = self.inputs = w_ok.shape[1]
                self.w.add((gid_ok[:, None] * d + np.arange(d)).reshape(-1), w_ok.reshape(-1), n_groups * d)
            else:
                self.w.add(gid_ok, w_ok, n_groups)
            self.b.add(gid_ok, b_ok, n_groups)

    def count(self, g):
        return int(self.n[g])

    def diverged(self, g):
        return float(self.n_div[g] / self.n[g])

    def risk_quantiles(self, g):
        bins, counts = self.risk.of(g)
        n = int(counts.sum())
        if not n:
            return risk_quantiles(np.zeros(0))
        values = _bin_middle(bins)
        out = []
        for q in (0.1, 0.5, 0.9):  # np.quantile's default (linear) method on the bins' middles
            h = (n - 1) * q
            k = int(np.floor(h))
            v0 = _order_stat(values, counts, k)
            v1 = _order_stat(values, counts, min(k + 1, n - 1))
            out.append(float(v0 + (h - k) * (v1 - v0)) if v1 != v0 else float(v0))
        return dict(risk_median=out[1], risk_p10=out[0], risk_p90=out[2])

    def median_step(self, g, steps_f):
        bins, counts = self.first.of(g)
        k = (int(counts.sum()) - 1) // 2  # np.quantile(..., 0.5, method="lower")
        idx = int(_order_stat(bins, counts, k))
        return None if idx >= self.logged else int(steps_f[idx])

    def spread(self, g):
        d = self.inputs
        w = self.w.std_se(g) if d == 1 else combine_spread([self.w.std_se(g * d + i) for i in range(d)])
        return w, self.b.std_se(g)


def load_parts(directory) -> PartsResult:
    """Read a parts directory: the manifest and every needed ``.npy`` header are checked
    first (ValueError naming the file), the arrays memory-mapped when used."""
    directory = os.fspath(directory)
    return PartsResult(directory, *_check_manifest(directory))


def load(path):
    """A parts directory (or its ``manifest.json``): :func:`load_parts`; anything else:
    :func:`fastneuron.result.load` (``.npz`` or Parquet)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        return load_parts(p)
    if os.path.basename(p) == MANIFEST and os.path.isfile(p):
        return load_parts(os.path.dirname(p) or ".")
    return _result.load(p)
