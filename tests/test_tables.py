"""Results as labeled data (fastneuron.tables): pandas, xarray and Parquet round trips,
grid dimensions, plain-pandas reading, and the ImportError naming the extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import xarray as xr

import fastneuron as fn
from fastneuron import tables
from fastneuron.cli_values import product
from fastneuron.summary import _first_step_below

U64_MAX = 2**64 - 1
SEEDS = [0, 7, 2**63, U64_MAX]
LRS = [0.01, 0.05, 2.0]  # 2.0 diverges within a few steps
OPTION_COLUMNS = ("momentum", "weight_decay")


def bits(x) -> np.ndarray:
    """float32 as uint32 (NaN == NaN, -0.0 != 0.0); float64 as uint64; ints unchanged."""
    x = np.ascontiguousarray(x.numpy() if isinstance(x, torch.Tensor) else x)
    return x.view({np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}.get(x.dtype, x.dtype))


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(bits(a), bits(b))


@pytest.fixture(scope="module")
def grid2() -> fn.TrainResult:
    """seed x lr, with a log and diverged members."""
    r = fn.train(**fn.grid(seeds=SEEDS, lrs=LRS), steps=40, log_every=8, backend="eager", progress=False,
                 weight_decay=1e-3)
    assert (r.diverged_at >= 0).sum() == len(SEEDS) and torch.isnan(r.weight).any()
    return r


@pytest.fixture(scope="module")
def grid3() -> fn.TrainResult:
    """seed x lr x momentum, weight_decay shared, no log."""
    return fn.train(**fn.grid(seeds=[3, 1, 2], lrs=[0.02, 0.01], momentum=[0.0, 0.5, 0.9]), steps=6,
                    backend="eager", progress=False, weight_decay=0.25)


def assert_same_result(r1: fn.TrainResult, r2: fn.TrainResult) -> None:
    assert r1.seeds.dtype == r2.seeds.dtype == np.uint64 and np.array_equal(r1.seeds, r2.seeds)
    assert list(r1.member_options) == list(r2.member_options)
    for name in ("lrs", *r1.member_options, "weight", "bias", "diverged_at", "history_steps"):
        a, b = getattr(r1, name), getattr(r2, name)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            torch.from_numpy(bits(a)), torch.from_numpy(bits(b))), name
    for name in ("history_weight", "history_bias"):
        a, b = getattr(r1, name), getattr(r2, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype == torch.float32 and a.is_contiguous() == b.is_contiguous()
            assert same(a, b), name
    assert r1.settings == r2.settings


# -- pandas ------------------------------------------------------------------
WIDE_DTYPES = {"seed": np.uint64, "lr": np.float32, "momentum": np.float32, "weight_decay": np.float32,
               "weight": np.float32, "bias": np.float32, "risk": np.float64, "diverged_at": np.int64,
               "step_below_tol": np.float64}


def test_to_pandas_one_row_per_member(grid2):
    r = grid2
    df = r.to_pandas()
    assert list(df.columns) == list(WIDE_DTYPES)
    assert {k: np.dtype(v) for k, v in df.dtypes.items()} == {k: np.dtype(v) for k, v in WIDE_DTYPES.items()}
    assert df.index.name == "member" and list(df.index) == list(range(len(r)))
    assert same(df["seed"], r.seeds) and df["seed"].iloc[-1] == np.uint64(U64_MAX)
    for col, arr in (("lr", r.lrs), ("momentum", r.momentum), ("weight_decay", r.weight_decay),
                     ("weight", r.weight), ("bias", r.bias), ("risk", r.risk), ("diverged_at", r.diverged_at)):
        assert same(df[col].to_numpy(), arr.numpy()), col
    diverged = df["diverged_at"] >= 0
    assert diverged.sum() == len(SEEDS)
    assert df.loc[diverged, ["weight", "bias", "risk", "step_below_tol"]].isna().all().all()
    assert df.loc[~diverged, ["weight", "bias", "risk"]].notna().all().all()
    # The converged step is summary()'s definition; NaN where never below tol.
    for tol in (1e-4, 0.5):
        first = _first_step_below(r, tol)
        got = r.to_pandas(tol=tol)["step_below_tol"].to_numpy()
        assert same(got, np.where(np.isfinite(first), first, np.nan))
    assert np.isfinite(r.to_pandas(tol=0.5)["step_below_tol"]).any()
    # Same as the module function; no history -> no converged-step column.
    pd.testing.assert_frame_equal(fn.to_pandas(r), df)
    with pytest.raises(ValueError, match="tol"):
        r.to_pandas(tol=0)


def test_to_pandas_long_form(grid2, grid3):
    r = grid2
    long = r.to_pandas(history=True)
    steps, m = r.history_steps.numpy(), len(r)
    assert list(long.columns) == ["member", "step", "weight", "bias", "risk"]
    assert [long[c].dtype for c in long.columns] == [np.int64, np.int64, np.float32, np.float32, np.float64]
    assert len(long) == m * len(steps)
    assert same(long["member"], np.repeat(np.arange(m), len(steps)))
    assert same(long["step"], np.tile(steps, m))
    for col, hist in (("weight", r.history_weight), ("bias", r.history_bias), ("risk", r.history_risk)):
        assert same(long[col].to_numpy().reshape(m, len(steps)), hist.numpy().T), col
    # Joins with the wide table on member; diverged members are NaN after their divergence.
    joined = long.merge(r.to_pandas(), left_on="member", right_index=True, suffixes=("", "_final"))
    late = joined[(joined.diverged_at >= 0) & (joined.step > joined.diverged_at)]
    assert len(late) and late["weight"].isna().all()
    assert "step_below_tol" not in grid3.to_pandas()
    with pytest.raises(ValueError, match="log_every"):
        grid3.to_pandas(history=True)


# -- xarray ------------------------------------------------------------------
def test_to_xarray_two_axis_grid(grid2):
    r = grid2
    ds = r.to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert dict(ds.sizes) == {"seed": len(SEEDS), "lr": len(LRS), "step": len(r.history_steps)}
    assert ds["weight"].dims == ("seed", "lr") and ds["history_weight"].dims == ("seed", "lr", "step")
    assert same(ds["seed"].values, np.array(SEEDS, dtype=np.uint64))
    assert same(ds["lr"].values, np.array(LRS, dtype=np.float32))
    assert same(ds["step"].values, r.history_steps.numpy())
    assert ds["weight_decay"].dims == () and ds["momentum"].dims == ()
    assert ds["weight_decay"].item() == np.float32(1e-3) and ds["momentum"].item() == 0
    # Member i of grid(seeds=S, lrs=L) sits at (i // len(L), i % len(L)).
    for name, flat in (("weight", r.weight), ("bias", r.bias), ("risk", r.risk), ("diverged_at", r.diverged_at)):
        assert same(ds[name].values, flat.numpy().reshape(len(SEEDS), len(LRS))), name
    for name, hist in (("history_weight", r.history_weight), ("history_risk", r.history_risk)):
        assert same(ds[name].values, hist.numpy().T.reshape(len(SEEDS), len(LRS), -1)), name
    assert same(ds["step_below_tol"].values.ravel(), r.to_pandas()["step_below_tol"].to_numpy())
    # NaN for the diverged column (lr 2.0), finite elsewhere.
    assert ds["risk"].sel(lr=np.float32(2.0)).isnull().all() and (ds["diverged_at"].sel(lr=np.float32(2.0)) >= 0).all()
    assert ds["risk"].sel(lr=np.float32(0.01)).notnull().all()
    # The two-line analysis: median final risk over seeds per lr, as summary() computes it.
    med = ds["risk"].median("seed")
    rows = r.summary(by="lr").rows
    for row, value in zip(rows, med.values):
        assert (row["risk_median"] is None and np.isnan(value)) or row["risk_median"] == pytest.approx(value, rel=1e-12)
    assert json.loads(ds.attrs["settings"]) == r.settings and ds.attrs["tol"] == 1e-4
    # The Dataset shares the result's memory read-only: writing into it cannot change the result.
    with pytest.raises(ValueError, match="read-only"):
        ds["history_weight"].values[0, 0, 0] = 1.0
    deep = ds.copy(deep=True)
    deep["weight"].values[0, 0] = 1.0
    assert r.weight[0].item() != 1.0


def test_to_xarray_three_axis_grid(grid3):
    r = grid3
    ds = r.to_xarray()
    assert dict(ds.sizes) == {"seed": 3, "lr": 2, "momentum": 3}
    assert ds["risk"].dims == ("seed", "lr", "momentum") and "step" not in ds.dims
    assert "history_weight" not in ds and "step_below_tol" not in ds
    assert same(ds["seed"].values, np.array([3, 1, 2], dtype=np.uint64))
    assert same(ds["lr"].values, np.array([0.02, 0.01], dtype=np.float32))
    assert same(ds["momentum"].values, np.array([0.0, 0.5, 0.9], dtype=np.float32))
    assert ds["weight_decay"].dims == () and ds["weight_decay"].item() == np.float32(0.25)
    assert same(ds["weight"].values, r.weight.numpy().reshape(3, 2, 3))
    # Member i sits at (i // 6, i // 3 % 2, i % 3): seed index 0, lr index 1, momentum index 2 is member 5.
    assert ds["bias"].isel(seed=0, lr=1, momentum=2).item() == r.bias[5].item()
    # Keyword order sets the axis order, as in itertools.product.
    r2 = fn.train(**fn.grid(seeds=[0, 1], lrs=0.01, weight_decay=[0.0, 0.1], momentum=[0.0, 0.9]), steps=3,
                  backend="eager", progress=False)
    ds2 = r2.to_xarray()
    assert ds2["weight"].dims == ("seed", "lr", "weight_decay", "momentum")
    assert dict(ds2.sizes) == {"seed": 2, "lr": 1, "weight_decay": 2, "momentum": 2}
    assert same(ds2["weight"].values.ravel(), r2.weight.numpy())


def test_to_xarray_cli_product():
    """The CLI's members: seeds x lrs x momentum x weight-decay (cli_values.product)."""
    seeds, lrs, mus, wds = product(np.array([5, 6], dtype=np.uint64), np.array([0.01, 0.02], np.float32),
                                   np.array([0.0, 0.9], np.float32), np.array([0.0, 1e-3, 1e-2], np.float32))
    r = fn.train(seeds, lrs, 4, momentum=mus, weight_decay=wds, backend="eager", progress=False)
    ds = r.to_xarray(grid=True)
    assert ds["weight"].dims == ("seed", "lr", "momentum", "weight_decay")
    assert dict(ds.sizes) == {"seed": 2, "lr": 2, "momentum": 2, "weight_decay": 3}
    assert same(ds["weight_decay"].values, np.array([0.0, 1e-3, 1e-2], np.float32))
    assert same(ds["weight"].values.ravel(), r.weight.numpy())


def test_to_xarray_member_list(grid2):
    # Explicit members that are no product: one member dimension, hyperparameters as coordinates.
    r = fn.train([4, 5, 6], [0.01, 0.02, 3.0], 30, momentum=[0.0, 0.9, 0.0], backend="eager", progress=False,
                 log_every=10)
    assert r.diverged_at.tolist()[:2] == [-1, -1] and r.diverged_at[2] >= 0
    ds = r.to_xarray()
    assert dict(ds.sizes) == {"member": 3, "step": 3}
    assert ds["weight"].dims == ("member",) and ds["history_bias"].dims == ("member", "step")
    for name, values in (("seed", r.seeds), ("lr", r.lrs.numpy()), ("momentum", r.momentum.numpy()),
                         ("weight_decay", r.weight_decay.numpy())):
        assert ds[name].dims == ("member",) and same(ds[name].values, values), name
    assert same(ds["weight"].values, r.weight.numpy()) and np.isnan(ds["weight"].values[2])
    assert same(ds["history_bias"].values, r.history_bias.numpy().T)
    with pytest.raises(ValueError, match="grid=True"):
        r.to_xarray(grid=True)
    # A grid can be asked for as a member list.
    flat = grid2.to_xarray(grid=False)
    assert flat["weight"].dims == ("member",) and same(flat["weight"].values, grid2.weight.numpy())


def test_grid_axes_detection():
    cols = dict(zip(("seed", "lr", "momentum"),
                    product(np.arange(3, dtype=np.uint64), np.array([0.1, 0.2], np.float32),
                            np.array([0.0, 0.5, 0.9, 0.99], np.float32))))
    axes, scalars = tables.grid_axes(cols)
    assert [n for n, _ in axes] == ["seed", "lr", "momentum"] and [len(v) for _, v in axes] == [3, 2, 4]
    assert scalars == {}
    cut = {k: v[:-1] for k, v in cols.items()}  # not a full product
    assert tables.grid_axes(cut) is None
    swapped = {k: v.copy() for k, v in cols.items()}
    swapped["momentum"][[0, 1]] = swapped["momentum"][[1, 0]]  # a member out of place
    assert tables.grid_axes(swapped) is None
    dup = dict(zip(("seed", "lr"), product(np.array([1, 1], np.uint64), np.array([0.1, 0.2], np.float32))))
    assert tables.grid_axes(dup) is None  # a repeated seed is no axis
    one_lr = {"seed": np.arange(4, dtype=np.uint64), "lr": np.full(4, 0.1, np.float32),
              "momentum": np.zeros(4, np.float32)}
    axes, scalars = tables.grid_axes(one_lr)
    assert [(n, len(v)) for n, v in axes] == [("seed", 4), ("lr", 1)] and list(scalars) == ["momentum"]
    # -0.0 and 0.0 are told apart (the bits of the run's values).
    signed = {"seed": np.zeros(2, np.uint64), "lr": np.array([0.0, -0.0], np.float32)}
    assert [len(v) for _, v in tables.grid_axes(signed)[0]] == [1, 2]


# -- Parquet -----------------------------------------------------------------
def test_parquet_round_trip(grid2, grid3, tmp_path):
    for r in (grid2, grid3):
        path = tmp_path / "r.parquet"
        r.to_parquet(path)
        assert open(path, "rb").read(4) == b"PAR1"
        back = fn.load(path)
        assert isinstance(back, fn.TrainResult)
        assert_same_result(r, back)
        assert same(back.risk, r.risk)
        if r.history_weight is not None:
            assert same(back.history_risk, r.history_risk)
        # Writing what was read gives the same file contents again (str paths too).
        back.to_parquet(str(tmp_path / "again.parquet"))
        assert_same_result(r, fn.load(str(tmp_path / "again.parquet")))
        assert sorted(os.listdir(tmp_path)) == ["again.parquet", "r.parquet"]  # no temporary file left
        os.unlink(tmp_path / "again.parquet")


def test_parquet_round_trip_other_optimizer_and_zero_steps(tmp_path):
    for steps, kwargs in ((0, {"log_every": 3}), (5, {"optimizer": "adam", "eps": [1e-8, 1e-6]})):
        r = fn.train([1, U64_MAX], [0.01, 0.5], steps, backend="eager", progress=False, a=-1.5, c=0.25, **kwargs)
        r.to_parquet(tmp_path / "r.parquet")
        back = fn.load(tmp_path / "r.parquet")
        assert_same_result(r, back)
        assert list(back.to_pandas().columns)[:2 + len(r.member_options)] == ["seed", "lr", *r.member_options]


def test_parquet_read_by_plain_pandas(grid2, tmp_path):
    r = grid2
    path = tmp_path / "sweep.parquet"
    fn.to_parquet(r, path)
    df = pd.read_parquet(path)
    wide = r.to_pandas()
    assert list(df.columns) == [*wide.columns, "history_weight", "history_bias"]
    for col in wide.columns:
        assert same(df[col].to_numpy(), wide[col].to_numpy()), col
    assert same(np.stack(df["history_weight"].to_list()), r.history_weight.numpy().T)
    meta = json.loads(pq.read_schema(path).metadata[b"fastneuron"])
    assert meta["settings"] == r.settings and meta["history_steps"] == r.history_steps.tolist()
    assert meta["format"] == "fastneuron-result-parquet" and meta["member_options"] == list(r.member_options)
    # A Python without fastneuron importable reads it with plain pandas.
    code = ("import sys; sys.modules['fastneuron'] = None\n"
            "import numpy as np, pandas as pd\n"
            f"df = pd.read_parquet({str(path)!r})\n"
            "print(len(df), df['seed'].dtype, df['lr'].dtype, df['risk'].dtype, int(df['risk'].isna().sum()), "
            "int(df['seed'].max()), len(df['history_bias'][0]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(r)), "uint64", "float32", "float64", str(len(SEEDS)), str(U64_MAX),
                   str(len(r.history_steps))]


def test_load_refuses_other_parquet_files(grid2, tmp_path):
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"seed": np.arange(3, dtype=np.uint64)}).to_parquet(plain)
    with pytest.raises(ValueError, match="plain.parquet.*fastneuron"):
        fn.load(plain)
    good = tmp_path / "good.parquet"
    grid2.to_parquet(good)
    table = pq.read_table(good)
    meta = table.schema.metadata
    # A column of the wrong type.
    bad = table.set_column(table.schema.get_field_index("lr"), "lr", table.column("lr").cast(pa.float64()))
    pq.write_table(bad.replace_schema_metadata(meta), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet.*'lr'"):
        fn.load(tmp_path / "bad.parquet")
    # A history list of the wrong length.
    short = pa.array([v[:-1] for v in table.column("history_bias").to_pylist()], type=pa.list_(pa.float32()))
    cut = table.set_column(table.schema.get_field_index("history_bias"), "history_bias", short)
    pq.write_table(cut.replace_schema_metadata(meta), tmp_path / "cut.parquet")
    with pytest.raises(ValueError, match="cut.parquet.*history_bias"):
        fn.load(tmp_path / "cut.parquet")
    # Settings that describe no problem, and a newer format.
    for name, change in (("noproblem", {"settings": {"problem": "nope"}}), ("newer", {"format_version": 99})):
        m = {**json.loads(meta[b"fastneuron"]), **change}
        pq.write_table(table.replace_schema_metadata({b"fastneuron": json.dumps(m).encode()}),
                       tmp_path / f"{name}.parquet")
        with pytest.raises(ValueError, match=f"{name}.parquet"):
            fn.load(tmp_path / f"{name}.parquet")
    # The .npz path is unchanged.
    grid2.save(tmp_path / "r.npz")
    assert_same_result(grid2, fn.load(tmp_path / "r.npz"))


# -- optional dependencies ---------------------------------------------------
@pytest.mark.parametrize("module, call", [
    ("pandas", lambda r, p: r.to_pandas()),
    ("xarray", lambda r, p: r.to_xarray()),
    ("pyarrow", lambda r, p: r.to_parquet(p)),
    ("pyarrow.parquet", lambda r, p: fn.load(p)),
])
def test_missing_package_names_the_extra(grid3, tmp_path, monkeypatch, module, call):
    path = tmp_path / "r.parquet"
    grid3.to_parquet(path)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'fastneuron\[analysis\]'") as info:
        call(grid3, path)
    assert module.partition(".")[0] in str(info.value)


def test_no_import_cost_without_analysis():
    code = ("import sys, fastneuron as fn\n"
            "r = fn.train([1, 2], 0.01, 3, backend='eager', progress=False)\n"
            "import tempfile, os; p = os.path.join(tempfile.mkdtemp(), 'r.npz'); r.save(p); fn.load(p)\n"
            "print(sorted(m for m in ('pandas', 'xarray', 'pyarrow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_example_writes_where_told(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tracked = os.path.join(repo, "docs", "sweep_xarray.png")
    before = os.stat(tracked).st_mtime_ns if os.path.exists(tracked) else None
    env = dict(os.environ, MPLBACKEND="Agg")
    figure = tmp_path / "figs" / "sweep.png"
    p = subprocess.run([sys.executable, os.path.join(repo, "examples", "sweep_xarray.py"), str(figure),
                        "--steps", "40"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert figure.is_file() and p.stdout.strip().splitlines()[-1] == f"figure: {figure}"
    assert "6000 members x 40 steps" in p.stdout
    assert (os.stat(tracked).st_mtime_ns if os.path.exists(tracked) else None) == before


def test_summary_to_xarray_has_a_dimension_per_group_column():
    """Issue 16 item 2: summary(by=...) converts the same way as a result."""
    lrs, mus = [0.001, 0.01, 0.2], [0.0, 0.9]
    r = fn.train(**fn.grid(seeds=range(4), lrs=lrs, momentum=mus), steps=60, log_every=10, backend="eager")
    s = r.summary(by=("lr", "momentum"))
    ds = s.to_xarray()
    assert dict(ds.sizes) == {"lr": 3, "momentum": 2}
    assert np.array_equal(ds["lr"].values, np.float32(lrs).astype(np.float64))
    assert np.array_equal(ds["momentum"].values, np.float32(mus).astype(np.float64))
    for row in s.rows:
        cell = ds.sel(lr=row["lr"], momentum=row["momentum"])
        assert int(cell["count"]) == 4 and float(cell["diverged"]) == row["diverged"]
        assert float(cell["risk_median"]) == row["risk_median"]
        step = row["step_below_tol"]
        assert np.isnan(cell["step_below_tol"]) if step is None else float(cell["step_below_tol"]) == step
