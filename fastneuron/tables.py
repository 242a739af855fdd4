"""Results as labeled data: pandas, xarray and Parquet (``pip install 'fastneuron[analysis]'``).

pandas, xarray and pyarrow are optional: this module imports them only inside the
function that needs them (a missing one is an ImportError naming the extra), and
:mod:`fastneuron.result` imports this module only when ``to_pandas``, ``to_xarray``,
``to_parquet`` or a Parquet ``load`` is called, so a run costs no import of them.

Columns (:func:`to_pandas`, one row per member, index ``member`` = 0 .. M-1):

==================  ========  =================================================
name                dtype     meaning
==================  ========  =================================================
``seed``            uint64    the member's seed
``lr``              float32   its learning rate
each option         float32   the optimizer's per-member options by name (SGD:
                              ``momentum``, ``weight_decay``; Adam:
                              ``weight_decay``, ``eps``), in
                              ``result.member_options`` order
``weight``          float32   final weight, NaN where diverged
``bias``            float32   final bias, NaN where diverged
``risk``            float64   final population risk of the run's problem
                              (``result.risk``), NaN where diverged
``diverged_at``     int64     step that made w or b non-finite, else -1
``step_below_tol``  float64   only when a history was logged: the converged
                              step, the first logged step whose population risk
                              is below ``tol`` (the definition of
                              ``summary()``); NaN when the member never gets
                              there (diverged members included)
==================  ========  =================================================

``to_pandas(history=True)`` is the long form, one row per (member, step), sorted by
member then step: ``member`` int64, ``step`` int64, ``weight`` float32, ``bias``
float32, ``risk`` float64 (NaN from a member's divergence on).

**An input dimension** (a run with ``inputs`` d > 1, SPEC §6f: ``weight`` (M, d)): every
form gains an ``input`` dimension (0 .. d-1) for the weight. ``to_pandas()`` has one row
per (member, input), index (``member``, ``input``): ``weight`` is coordinate ``input``
of the member's weight, the member's other columns repeat on its d rows;
``to_pandas(history=True)`` one row per (member, step, input), sorted so, columns
``member``, ``step``, ``input``, ``weight``, ``bias``, ``risk``. :func:`to_xarray`:
``weight`` over (..., ``input``), ``history_weight`` over (..., ``step``, ``input``).
:func:`to_parquet`: still one row per member, ``weight`` a ``list<float32>`` of its d
values and ``history_weight`` one of L*d values (step-major: the d values of each logged
step in turn); format version 3. A run of one input gives exactly what it gave before.

:func:`to_xarray`: when the members are a grid (see :func:`grid_axes`) a Dataset with
one dimension per axis, slowest first (``fastneuron.grid(seeds=S, lrs=L)``: ``seed``,
``lr``; the CLI: ``seed``, ``lr``, ``momentum``, ``weight_decay``; an option that is
the same for every member is a scalar coordinate instead), each a coordinate holding
the axis values; otherwise one ``member`` dimension with ``seed``, ``lr`` and
the options as coordinates along it. Data variables: ``weight``, ``bias``, ``risk``,
``diverged_at`` and, with a history, ``step_below_tol`` and ``history_weight``,
``history_bias``, ``history_risk`` with a last dimension ``step``. ``attrs``:
``settings`` (the run's settings as JSON) and ``tol``.

:func:`to_parquet`: the per-member columns above, plus, with a history,
``history_weight`` and ``history_bias`` as ``list<float32>`` columns (one list of L
values per member, the values at the logged steps), then a float64 column
``<name>_float64`` for each of ``result.float64`` (the values as given that torch.optim's
float64 arithmetic uses, SPEC §3c; format version 2, written only then); the key
``fastneuron`` of the file's metadata holds JSON: ``format`` ("fastneuron-result-parquet"),
``format_version``, ``fastneuron_version``, ``member_options``, ``settings``,
``history_steps``, ``tol`` and, in version 2, ``float64`` (the names). Plain pandas reads it
without fastneuron; the columns
are standard Parquet types (uint64, int64, float32, float64, lists of float32), for
polars or duckdb alike. No pickle is written or read. :func:`fastneuron.load` reads it back as a ``TrainResult``.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np

from ._extras import need as _need
from .files import MAX_HEADER_BYTES, atomic_write, float64_column_name, float64_names
from .summary import _first_step_below

PARQUET_FORMAT = "fastneuron-result-parquet"
PARQUET_FORMAT_VERSION = 3  # 2: the float64 columns (version 1 files have none); 3: inputs d > 1
_META_KEY = b"fastneuron"
_FIXED = {"seed": np.uint64, "lr": np.float32}  # then the options (float32)
_FINAL = {"weight": np.float32, "bias": np.float32, "risk": np.float64, "diverged_at": np.int64}


def _np(x) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def member_columns(result) -> dict:
    """The per-member hyperparameters: ``seed`` (uint64), ``lr`` and each option (float32)."""
    cols = {"seed": np.asarray(result.seeds, dtype=np.uint64), "lr": _np(result.lrs).astype(np.float32, copy=False)}
    for name, values in result.member_options.items():
        cols[name] = _np(values).astype(np.float32, copy=False)
    return cols


def _columns(result, tol: float) -> dict:
    """All per-member columns, in the documented order and dtypes (each (M,))."""
    cols = member_columns(result)
    cols.update(weight=_np(result.weight), bias=_np(result.bias), risk=_np(result.risk),
                diverged_at=_np(result.diverged_at))
    if result.history_weight is not None:
        first = _first_step_below(result, tol)  # None when no step was logged
        cols["step_below_tol"] = (np.full(len(result), np.nan) if first is None else
                                  np.where(np.isfinite(first), first, np.nan))
    dtypes = {**_FIXED, **_FINAL, "step_below_tol": np.float64}
    return {k: np.ascontiguousarray(v, dtype=dtypes.get(k, np.float32)) for k, v in cols.items()}


def _inputs(result) -> int:
    """d, the inputs of the result's neurons (1 for a v2 run)."""
    from .model import settings_model

    return settings_model(result.settings).inputs


def _check_tol(tol) -> float:
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    return float(tol)


def to_pandas(result, history: bool = False, tol: float = 1e-4):
    """The result as a pandas DataFrame.

    ``history=False``: one row per member (index ``member``), columns ``seed``,
    ``lr``, the per-member options, ``weight``, ``bias``, ``risk``, ``diverged_at``
    and, when a history was logged, ``step_below_tol`` (first logged step with risk
    below ``tol``, NaN if none); dtypes in the module docstring.
    ``history=True``: the long form, columns ``member``, ``step`` (int64),
    ``weight``, ``bias`` (float32), ``risk`` (float64), sorted by member then step
    (ValueError for a run without a log). Join the two on ``member``."""
    pd = _need("pandas", "to_pandas()")
    tol = _check_tol(tol)
    d = _inputs(result)
    if not history:
        if d > 1:  # one row per (member, input)
            cols = {k: (v.reshape(-1) if k == "weight" else np.repeat(v, d)) for k, v in _columns(result, tol).items()}
            index = pd.MultiIndex.from_arrays([np.repeat(np.arange(len(result), dtype=np.int64), d),
                                               np.tile(np.arange(d, dtype=np.int64), len(result))],
                                              names=["member", "input"])
            return pd.DataFrame(cols, index=index)
        return pd.DataFrame(_columns(result, tol), index=pd.RangeIndex(len(result), name="member"))
    if result.history_weight is None:
        raise ValueError("history=True: the run logged no history (train(..., log_every=k) logs one)")
    steps = _np(result.history_steps)
    n_steps, m = len(steps), len(result)
    if d > 1:  # one row per (member, step, input)
        per_row = lambda x: np.repeat(np.ascontiguousarray(_np(x).T).reshape(-1), d)  # noqa: E731
        return pd.DataFrame({
            "member": np.repeat(np.arange(m, dtype=np.int64), n_steps * d),
            "step": np.tile(np.repeat(steps.astype(np.int64), d), m),
            "input": np.tile(np.arange(d, dtype=np.int64), m * n_steps),
            "weight": np.ascontiguousarray(_np(result.history_weight).transpose(1, 0, 2)).reshape(-1),
            "bias": per_row(result.history_bias),
            "risk": per_row(result.history_risk),
        })
    return pd.DataFrame({
        "member": np.repeat(np.arange(m, dtype=np.int64), n_steps),
        "step": np.tile(steps.astype(np.int64), m),
        "weight": np.ascontiguousarray(_np(result.history_weight).T).reshape(-1),
        "bias": np.ascontiguousarray(_np(result.history_bias).T).reshape(-1),
        "risk": np.ascontiguousarray(_np(result.history_risk).T).reshape(-1),
    })


# -- grids -------------------------------------------------------------------
def _bits(x: np.ndarray) -> np.ndarray:
    """Exact comparison key: float32 as uint32 (so -0.0 != 0.0), ints as they are."""
    return x.view(np.uint32) if x.dtype == np.float32 else x


def grid_axes(columns: dict):
    """``(axes, scalars)`` when the members are a full Cartesian product of their
    per-member columns, else None.

    A result does not record how its members were built, so the grid is read off the
    member order: ``fastneuron.grid`` and the CLI make members in ``itertools.product``
    order (first axis slowest). Each column that varies must repeat in runs of a
    constant length (its stride), the strides must nest (each a multiple of the
    next, the fastest 1), each axis's values must be distinct, and every member must
    sit exactly where the product puts it. ``axes``: ``[(name, values), ...]``
    slowest first; ``seed`` and ``lr`` are always axes (length 1 when constant: the
    seed first, the lr right after the seed when the seed axis is the slowest, else
    first, as ``grid`` orders them); another option that is the same for every member is a scalar coordinate
    in ``scalars`` (name: value). An explicit member list that happens to be such a
    product is read as one, too."""
    m = len(next(iter(columns.values())))
    strides = {}
    for name, col in columns.items():
        key = _bits(col)
        diff = np.flatnonzero(key != key[0])
        strides[name] = int(diff[0]) if diff.size else m
    varying = sorted((n for n in columns if strides[n] < m), key=lambda n: -strides[n])
    axes, outer = [], m
    for name in varying:
        s = strides[name]
        if outer % s or outer == s:
            return None
        size = outer // s
        col = columns[name]
        values = col[: size * s : s]
        if np.unique(_bits(values)).size != size:
            return None
        blocks = _bits(col).reshape(m // (size * s), size, s)
        if not (blocks == _bits(values)[None, :, None]).all():
            return None
        axes.append((name, values))
        outer = s
    if outer != 1:
        return None
    # Constant seed / lr: length-1 axes where fastneuron.grid puts them (seeds first, lrs second).
    if strides["seed"] == m:
        axes.insert(0, ("seed", columns["seed"][:1]))
    if strides["lr"] == m:
        axes.insert(1 if axes and axes[0][0] == "seed" else 0, ("lr", columns["lr"][:1]))
    scalars = {n: columns[n][0] for n in columns if strides[n] == m and n not in ("seed", "lr")}
    return axes, scalars


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: the Dataset shares the result's memory instead of copying it."""
    view = a.view()
    view.flags.writeable = False
    return view


def to_xarray(result, grid=None, tol: float = 1e-4):
    """The result as an xarray Dataset (see the module docstring for its variables).

    ``grid=None`` (default): dimensions per grid axis when the members form a grid
    (:func:`grid_axes`), else one ``member`` dimension; ``True``: a grid or a
    ValueError; ``False``: always the ``member`` dimension. Diverged members are NaN in
    ``weight``, ``bias``, ``risk`` and the history (``diverged_at`` >= 0 tells them).
    The arrays are read-only views of the result's where they can be (no copy of the
    history): ``ds.copy(deep=True)`` before writing into them."""
    xr = _need("xarray", "to_xarray()")
    tol = _check_tol(tol)
    d = _inputs(result)
    cols = {k: _read_only(v) for k, v in _columns(result, tol).items()}
    params = {k: _read_only(v) for k, v in member_columns(result).items()}
    found = grid_axes(params) if grid is not False else None
    if grid is True and found is None:
        raise ValueError("grid=True: the members are not a full product of their seeds, lrs and options "
                         "in fastneuron.grid's order")
    if found is not None:
        axes, scalars = found
        dims = tuple(name for name, _ in axes)
        shape = tuple(len(values) for _, values in axes)
        coords = {name: (name, values) for name, values in axes}
        coords.update({name: value for name, value in scalars.items()})
    else:
        dims, shape = ("member",), (len(result),)
        coords = {"member": np.arange(len(result), dtype=np.int64), **{n: ("member", v) for n, v in params.items()}}
    if d > 1:  # the weight's coordinates: an input dimension
        coords["input"] = ("input", np.arange(d, dtype=np.int64))
    data = {name: ((*dims, "input"), cols[name].reshape(*shape, d)) if name == "weight" and d > 1 else
            (dims, cols[name].reshape(shape))
            for name in ("weight", "bias", "risk", "diverged_at", "step_below_tol") if name in cols}
    if result.history_weight is not None:
        steps = _np(result.history_steps).astype(np.int64)
        coords["step"] = ("step", steps)
        for name, values in (("history_weight", result.history_weight), ("history_bias", result.history_bias),
                             ("history_risk", result.history_risk)):
            if d > 1 and name == "history_weight":  # (L, M, d) -> (..., step, input)
                data[name] = ((*dims, "step", "input"),
                              _read_only(_np(values).transpose(1, 0, 2).reshape(*shape, len(steps), d)))
                continue
            data[name] = ((*dims, "step"), _read_only(_np(values).T.reshape(*shape, len(steps))))
    attrs = {"settings": json.dumps(result.settings), "tol": tol}
    return xr.Dataset(data, coords=coords, attrs=attrs)


# -- Parquet -----------------------------------------------------------------
def to_parquet(result, path, tol: float = 1e-4) -> None:
    """Write ``result`` to ``path`` as one Parquet file (pyarrow), atomically (a
    temporary file beside it, then a rename). Columns and metadata: the module
    docstring. Read it back with :func:`fastneuron.load` or any Parquet reader."""
    pa = _need("pyarrow", "to_parquet()")
    pq = _need("pyarrow.parquet", "to_parquet()")
    from ._version import __version__

    tol = _check_tol(tol)
    d = _inputs(result)
    cols = _columns(result, tol)
    arrays = {k: pa.array(v) for k, v in cols.items() if k != "weight" or d == 1}
    steps = _np(result.history_steps).astype(np.int64)
    m = len(result)

    def lists(values: np.ndarray, n: int, large: bool = False):
        """One list of ``n`` values per member (``values``: (M, n) float32); a large list
        (int64 offsets) past 2**31 values, or with ``large``."""
        flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
        if m * n < 2**31 and not large:
            return pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32) * n), flat)
        return pa.LargeListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int64) * n), flat)

    if d > 1:  # the member's d values, in the weight's place
        arrays = {k: v for k, v in zip(cols, (lists(cols[k], d) if k == "weight" else arrays[k] for k in cols))}
    if result.history_weight is not None:
        n = len(steps)
        large = m * n * d >= 2**31  # both history columns of one list type
        for name in ("history_weight", "history_bias"):
            values = _np(getattr(result, name))
            if values.ndim == 3:  # (L, M, d) -> per member, step-major
                arrays[name] = lists(values.transpose(1, 0, 2).reshape(m, n * d), n * d, large)
            else:
                arrays[name] = lists(values.T, n, large)
    float64 = list(result.float64)
    for name in float64:
        arrays[float64_column_name(name)] = pa.array(np.asarray(_np(result.float64[name]), dtype=np.float64))
    version = 3 if d > 1 else 2 if float64 else 1
    meta = {"format": PARQUET_FORMAT, "format_version": version, "fastneuron_version": __version__,
            "member_options": list(result.member_options), "settings": result.settings,
            "history_steps": steps.tolist(), "tol": tol, **({"float64": float64} if float64 else {})}
    table = pa.table(arrays).replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    atomic_write(path, lambda f: pq.write_table(table, f))


def is_parquet(path) -> bool:
    """Whether ``path`` is a regular file that starts with the Parquet magic ``PAR1``
    (False when it is not, or cannot be read: a FIFO is never opened)."""
    try:
        if not stat.S_ISREG(os.stat(os.fspath(path)).st_mode):
            return False
        with open(os.fspath(path), "rb") as f:
            return f.read(4) == b"PAR1"
    except (OSError, TypeError, ValueError):
        return False


def read_parquet_fields(path) -> dict:
    """The fields of a ``TrainResult`` from a file written by :func:`to_parquet`:
    ``seeds``, ``lrs``, ``member_options``, ``weight``, ``bias``, ``diverged_at``,
    ``settings``, ``history_steps``, ``history_weight``, ``history_bias`` (tensors as
    in a result). The metadata, the column names and types and the null counts are
    checked before the data is used; anything else is a ValueError naming ``path``.
    The derived columns (``risk``, ``step_below_tol``) are checked and dropped."""
    pa = _need("pyarrow", "loading a Parquet result")
    pq = _need("pyarrow.parquet", "loading a Parquet result")
    import torch

    def bad(why):
        return ValueError(f"{path}: not a fastneuron Parquet result ({why})")

    try:
        pfile = pq.ParquetFile(os.fspath(path))
        schema = pfile.schema_arrow
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise bad(exc) from None
    raw = (schema.metadata or {}).get(_META_KEY)
    if raw is None or len(raw) > MAX_HEADER_BYTES:
        raise bad(f"no '{_META_KEY.decode()}' metadata")
    try:
        meta = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != PARQUET_FORMAT:
        raise bad(f"no '{PARQUET_FORMAT}' metadata")
    version = meta.get("format_version")
    if type(version) is not int or version < 1 or version > PARQUET_FORMAT_VERSION:
        raise bad(f"format_version {version!r}; this fastneuron reads 1 .. {PARQUET_FORMAT_VERSION}")
    options, settings, steps = meta.get("member_options"), meta.get("settings"), meta.get("history_steps")
    if not isinstance(options, list) or not all(isinstance(k, str) for k in options) \
            or len(set(options)) != len(options) or set(options) & {*_FIXED, *_FINAL, "step_below_tol"}:
        raise bad(f"member_options {options!r}")
    if not isinstance(settings, dict):
        raise bad(f"settings of type {type(settings).__name__}")
    if not isinstance(steps, list) or not all(type(s) is int for s in steps):
        raise bad("history_steps is not a list of ints")
    float64 = float64_names(meta, options)
    if float64 is None:
        raise bad(f"float64 {meta['float64']!r}")
    from .model import settings_model

    try:
        d = settings_model(settings).inputs
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"settings do not describe the model: {type(exc).__name__} {exc}") from None
    lists = (pa.list_(pa.float32()), pa.large_list(pa.float32()))
    expected = {"seed": pa.uint64(), "lr": pa.float32(), **dict.fromkeys(options, pa.float32()),
                "weight": pa.float32(), "bias": pa.float32(), "risk": pa.float64(), "diverged_at": pa.int64()}
    if d > 1:  # one list of d values per member, only when the settings say inputs=d
        kind = schema.field("weight").type if "weight" in schema.names else None
        expected["weight"] = kind if kind in lists else pa.list_(pa.float32())
    history = "history_weight" in schema.names
    if history:
        expected["step_below_tol"] = pa.float64()
        kind = schema.field("history_weight").type
        if kind not in lists:
            raise bad(f"column 'history_weight' is {kind}")
        expected.update(history_weight=kind, history_bias=kind)
    expected.update({float64_column_name(k): pa.float64() for k in float64})
    got = {f.name: f.type for f in schema}
    if list(got) != list(expected) or len(schema.names) != len(got):
        raise bad(f"columns {schema.names}, expected {list(expected)}")
    for name, kind in expected.items():
        if got[name] != kind:
            raise bad(f"column {name!r} is {got[name]}, expected {kind}")
    try:
        table = pfile.read()
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise bad(exc) from None
    m, n_steps = table.num_rows, len(steps)
    cols = {}
    for name in expected:
        col = table.column(name).combine_chunks()
        if col.null_count:
            raise bad(f"column {name!r} has {col.null_count} nulls")
        if name.startswith("history_") or name == "weight" and d > 1:
            inner = d if name in ("weight", "history_weight") else 1
            per = (1 if name == "weight" else n_steps) * inner
            offsets = np.asarray(col.offsets)
            if not np.array_equal(offsets, np.arange(m + 1) * per):
                what = f"{inner} values (inputs)" if name == "weight" else \
                    f"{n_steps} values (history_steps)" + (f" x {inner} (inputs)" if inner > 1 else "")
                raise bad(f"column {name!r} does not hold {what} per member")
            values = col.values
            if values.null_count:
                raise bad(f"column {name!r} has null values")
            flat = values.to_numpy()
            if name == "weight":
                cols[name] = np.array(flat.reshape(m, d), order="C", copy=True)
            elif inner > 1:  # per member step-major -> (L, M, d)
                cols[name] = np.array(flat.reshape(m, n_steps, d).transpose(1, 0, 2), order="C", copy=True)
            else:
                cols[name] = np.array(flat.reshape(m, n_steps).T, order="C", copy=True)
        else:
            cols[name] = np.array(col.to_numpy(), copy=True)
    t = lambda name: torch.from_numpy(cols[name])  # noqa: E731
    return {
        "seeds": cols["seed"], "lrs": t("lr"), "member_options": {k: t(k) for k in options},
        "weight": t("weight"), "bias": t("bias"), "diverged_at": t("diverged_at"), "settings": settings,
        "history_steps": torch.tensor(steps, dtype=torch.int64),
        "history_weight": t("history_weight") if history else None,
        "history_bias": t("history_bias") if history else None,
        "float64": {k: t(float64_column_name(k)) for k in float64},
    }
