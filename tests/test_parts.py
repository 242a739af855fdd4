"""The parts directory (issue 14): load_parts / PartsResult read what the engine writes.

The directories here are written with NumPy and json alone, from in-memory results."""

import itertools
import json
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
import torch

import fastneuron as fn
from fastneuron import parts as P

LRS = (0.002, 0.05, 0.3, 1.5)  # 1.5 diverges (x up to 5), some of 0.3 too


def _members(seeds, lrs, **options):
    """itertools.product of the axes (first slowest), as lists."""
    names = ["seeds", "lrs", *options]
    cols = list(zip(*itertools.product(seeds, lrs, *options.values())))
    return {k: list(v) for k, v in zip(names, cols)}


@pytest.fixture(scope="module")
def logged():
    """41 members (prime): SGD with momentum, a log, some diverged."""
    m = _members(range(5), LRS, momentum=[0.0, 0.5])
    m = {k: v + [v[4]] for k, v in m.items()}
    m["seeds"][-1] = 2**64 - 1
    return fn.train(m["seeds"], m["lrs"], 72, momentum=m["momentum"], log_every=6, backend="eager")


@pytest.fixture(scope="module")
def noisy():
    """Plain SGD with label noise, no log."""
    m = _members(range(7), (0.01, 0.05, 0.3), noise=[0.0, 0.2])
    return fn.train(m["seeds"], m["lrs"], 40, noise=m["noise"], backend="eager")


def write_parts(d: pathlib.Path, r, bounds, described=None, **override) -> pathlib.Path:
    """``r`` as a parts directory split at ``bounds`` (0, ..., M), described columns
    left out of the part folders."""
    described = described or {}
    d.mkdir()
    columns = {"seeds": r.seeds, "lrs": r.lrs.numpy(), **{k: v.numpy() for k, v in r.member_options.items()}}
    parts = []
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        name = f"part-{j:05d}"
        (d / name).mkdir()
        arrays = {"weight": r.weight.numpy()[a:b], "bias": r.bias.numpy()[a:b],
                  "diverged_at": r.diverged_at.numpy()[a:b]}
        if r.history_weight is not None:
            arrays["history_weight"] = r.history_weight.numpy()[:, a:b]
            arrays["history_bias"] = r.history_bias.numpy()[:, a:b]
        arrays.update({k: v[a:b] for k, v in columns.items() if k not in described})
        for k, v in arrays.items():
            np.save(d / name / f"{k}.npy", np.ascontiguousarray(v))
        parts.append({"name": name, "start": a, "stop": b})
    manifest = {"format": "fastneuron-parts", "format_version": 1, "fastneuron_version": fn.__version__,
                "settings": r.settings, "n_members": len(r), "member_options": list(r.member_options),
                "described": described, "history_steps": r.history_steps.tolist(), "parts": parts}
    manifest.update(override)
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def _settings(r):
    return json.loads(json.dumps(r.settings))


def assert_same(a, b):
    """Two TrainResults equal field by field."""
    assert np.array_equal(a.seeds, b.seeds) and a.seeds.dtype == b.seeds.dtype == np.uint64
    for k in ("lrs", "weight", "bias", "diverged_at", "history_steps"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and torch.equal(x.nan_to_num(-7.0) if x.is_floating_point() else x,
                                                  y.nan_to_num(-7.0) if y.is_floating_point() else y), k
        assert torch.equal(torch.isnan(x), torch.isnan(y)) if x.is_floating_point() else True
    assert list(a.member_options) == list(b.member_options)
    for k in a.member_options:
        assert torch.equal(a.member_options[k], b.member_options[k]), k
    for k in ("history_weight", "history_bias"):
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.shape == y.shape and torch.equal(x.nan_to_num(-7.0), y.nan_to_num(-7.0)), k
            assert torch.equal(torch.isnan(x), torch.isnan(y)), k
    assert _settings(a) == _settings(b)


def _rows_equal(a, b):
    """Summary rows equal (NaN == NaN)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert list(x) == list(y)
        for k in x:
            same = x[k] == y[k] or (isinstance(x[k], float) and isinstance(y[k], float)
                                    and np.isnan(x[k]) and np.isnan(y[k]))
            assert same and type(x[k]) is type(y[k]), (k, x[k], y[k])


def _splits(m):
    return [[0, m], [0, 1, m], [0, 10, 10, m], [0, 5, 17, m], [0, m, m]]


@pytest.mark.parametrize("split", range(5))
def test_round_trip_and_parts(logged, tmp_path, split):
    bounds = _splits(len(logged))[split]
    res = P.load_parts(write_parts(tmp_path / "run", logged, bounds))
    assert len(res) == len(logged) and res.n_parts == len(bounds) - 1
    assert res.member_options.keys() == logged.member_options.keys()
    assert "PartsResult(members=41" in repr(res)
    assert torch.equal(res.history_steps, logged.history_steps)
    assert_same(res.to_result(), logged)
    assert torch.equal(res.momentum, logged.momentum)
    assert torch.equal(res.risk.nan_to_num(-1), logged.risk.nan_to_num(-1))
    assert torch.equal(res.history_risk.nan_to_num(-1), logged.history_risk.nan_to_num(-1))
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = res.part(i)
        assert len(part) == b - a and part.settings == res.settings
        assert np.array_equal(part.seeds, logged.seeds[a:b])
        assert torch.equal(part.weight.nan_to_num(-7), logged.weight[a:b].nan_to_num(-7))
        assert torch.equal(part.history_bias.nan_to_num(-7), logged.history_bias[:, a:b].nan_to_num(-7))
        assert torch.equal(part.momentum, logged.momentum[a:b])
        assert part.weight.numel() == 0 or part.weight.data_ptr() != 0


@pytest.mark.parametrize("by", [("lr",), ("seed",), ("lr", "momentum"), (), ("momentum", "seed")])
@pytest.mark.parametrize("tol", [1e-4, 1e-1])
def test_summary_equals_in_memory(logged, tmp_path, by, tol):
    expected = logged.summary(by=by, tol=tol)
    for j, bounds in enumerate(_splits(len(logged))[:4]):
        res = P.load_parts(write_parts(tmp_path / f"run{j}", logged, bounds))
        got = res.summary(by=by, tol=tol)
        assert got.by == expected.by and got.tol == expected.tol
        _rows_equal(got.rows, expected.rows)
    with pytest.raises(ValueError, match="by"):
        res.summary(by="colour")
    with pytest.raises(ValueError, match="tol"):
        res.summary(tol=0)


def test_fixture_covers_cases(logged):
    rows = logged.summary(by=("lr",), tol=1e-1).rows
    assert rows[-1]["diverged"] == 1.0 and rows[-1]["risk_median"] is None
    assert any(0 < r["diverged"] < 1 for r in rows)
    assert any(r["step_below_tol"] is not None for r in rows)


def test_summary_small_chunks(logged, tmp_path, monkeypatch):
    """Chunks smaller than a part give the same rows."""
    monkeypatch.setattr(P, "CHUNK_VALUES", 25)  # 2 members a chunk with 11 logged steps
    res = P.load_parts(write_parts(tmp_path / "run", logged, [0, 20, len(logged)]))
    _rows_equal(res.summary(by=("lr", "momentum"), tol=1e-1).rows, logged.summary(by=("lr", "momentum"), tol=1e-1).rows)


@pytest.mark.parametrize("by", [("lr",), ("lr", "noise"), ("seed",), ("noise",)])
def test_summary_with_noise(noisy, tmp_path, by):
    expected = noisy.summary(by=by)
    assert "w_std" in expected.rows[0]
    assert any(np.isfinite(r["w_std_pred"]) for r in expected.rows) == (by == ("lr", "noise"))
    res = P.load_parts(write_parts(tmp_path / "run", noisy, [0, 1, 20, 20, len(noisy)]))
    assert res.history_weight is None and res.history_risk is None
    assert_same(res.to_result(), noisy)
    _rows_equal(res.summary(by=by).rows, expected.rows)
    assert str(res.summary(by=by)) == str(expected)


def test_streaming_summary(logged, noisy, tmp_path):
    """Past the exact budget: count, diverged and step exact, quantiles within 2**-11."""
    for j, (r, by, tol) in enumerate([(logged, ("lr", "momentum"), 1e-1), (noisy, ("lr", "noise"), 1e-4),
                                      (logged, ("seed",), 1e-1)]):
        res = P.load_parts(write_parts(tmp_path / f"run{j}", r, [0, 7, 7, 20, len(r)]))
        expected, got = r.summary(by=by, tol=tol).rows, res.summary(by=by, tol=tol, exact_bytes=0).rows
        assert len(got) == len(expected)
        for x, y in zip(got, expected):
            assert list(x) == list(y)
            for k in y:
                if k.startswith("risk_") and y[k] is not None:
                    assert x[k] == pytest.approx(y[k], rel=2.0**-(P.HIST_BITS + 1), abs=0), (k, x[k], y[k])
                elif k.startswith(("w_std", "b_std")) and np.isfinite(y[k]):
                    assert x[k] == pytest.approx(y[k], rel=1e-9), k
                elif k.startswith(("w_std", "b_std")):
                    assert np.isnan(x[k]), k
                else:
                    assert x[k] == y[k], k


def test_described_columns(tmp_path):
    """Seeds as a range, lrs as values: expanded for each part's range only."""
    m = _members(range(3, 8), LRS, momentum=[0.0, 0.25])
    r = fn.train(m["seeds"], m["lrs"], 12, momentum=m["momentum"], log_every=4, backend="eager")
    n = len(r)

    def expand(v, inner, offset):  # the manifest's formula, by hand
        i = np.arange(n)
        return np.asarray(v)[((offset + i) // inner) % len(v)]

    lr32 = [float(np.float32(v)) for v in LRS]
    assert np.array_equal(r.seeds, expand(np.arange(3, 8, dtype=np.uint64), 2 * len(LRS), 0))
    assert np.array_equal(r.lrs.numpy(), expand(np.float32(lr32), 2, 0))
    described = {"seeds": {"dtype": "uint64", "range": [3, 8, 1], "inner": 2 * len(LRS), "offset": 0, "length": n},
                 "lrs": {"dtype": "float32", "values": lr32, "inner": 2, "offset": 0, "length": n},
                 "momentum": {"dtype": "float32", "values": [0.0, 0.25], "inner": 1, "offset": 0, "length": n}}
    res = P.load_parts(write_parts(tmp_path / "run", r, [0, 7, 7, n], described=described))
    assert not (tmp_path / "run" / "part-00000" / "seeds.npy").exists()
    assert_same(res.to_result(), r)
    assert np.array_equal(res.part(2).seeds, r.seeds[7:])
    assert torch.equal(res.part(0).lrs, r.lrs[:7])
    _rows_equal(res.summary(by=("seed", "lr")).rows, r.summary(by=("seed", "lr")).rows)
    bad = dict(described, lrs=dict(described["lrs"], length=n + 1))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "bad" / "manifest.json"))):
        P.load_parts(write_parts(tmp_path / "bad", r, [0, n], described=bad))
    bad = dict(described, lrs=dict(described["lrs"], dtype="uint64", values=[1, 2]))
    with pytest.raises(ValueError, match="described"):
        P.load_parts(write_parts(tmp_path / "bad2", r, [0, n], described=bad))


def test_load_dispatches(logged, tmp_path):
    d = write_parts(tmp_path / "run", logged, [0, 30, len(logged)])
    assert isinstance(P.load(d), P.PartsResult)
    assert isinstance(P.load(str(d / "manifest.json")), P.PartsResult)
    logged.save(tmp_path / "r.npz")
    assert_same(P.load(tmp_path / "r.npz"), logged)


def test_zero_members(logged, tmp_path):
    empty = P.load_parts(write_parts(tmp_path / "run", logged, [0, len(logged)], n_members=0, parts=[]))
    assert len(empty) == 0 and empty.summary().rows == []
    r = empty.to_result()
    assert r.weight.shape == (0,) and r.history_weight.shape == (len(logged.history_steps), 0)


# -- refusals: each a ValueError naming the file ---------------------------------------------

def _refused(path):
    return pytest.raises(ValueError, match=re.escape(str(path)))


def test_refusals_manifest(logged, tmp_path):
    m = len(logged)
    with _refused(tmp_path / "none" / "manifest.json"):
        P.load_parts(tmp_path / "none")
    cases = {
        "format": dict(format="fastneuron-result"),
        "version0": dict(format_version=0),
        "versionstr": dict(format_version="1"),
        "settings": dict(settings={"problem": "nonesuch"}),
        "n": dict(n_members=-1),
        "options": dict(member_options=["weight"]),
        "steps": dict(history_steps=[0, 6, 6]),
        "gap": dict(parts=[{"name": "part-00000", "start": 0, "stop": 10},
                           {"name": "part-00001", "start": 11, "stop": m}]),
        "overlap": dict(parts=[{"name": "part-00000", "start": 0, "stop": 10},
                               {"name": "part-00001", "start": 9, "stop": m}]),
        "short": dict(parts=[{"name": "part-00000", "start": 0, "stop": 10}]),
        "dotdot": dict(parts=[{"name": "../part-00000", "start": 0, "stop": m}]),
        "slash": dict(parts=[{"name": "a/b", "start": 0, "stop": m}]),
        "absolute": dict(parts=[{"name": str(tmp_path / "abs"), "start": 0, "stop": m}]),
        "dots": dict(parts=[{"name": "..", "start": 0, "stop": m}]),
        "dup": dict(parts=[{"name": "part-00000", "start": 0, "stop": 10},
                           {"name": "part-00000", "start": 10, "stop": m}]),
        "described": dict(described={"weight": {}}),
    }
    for name, override in cases.items():
        d = write_parts(tmp_path / name, logged, [0, 10, m], **override)
        with _refused(d / "manifest.json"):
            P.load_parts(d)
    d = write_parts(tmp_path / "newer", logged, [0, m], format_version=2)
    with pytest.raises(ValueError, match=r"manifest.json: format version 2 is newer than this fastneuron reads \(1\)"):
        P.load_parts(d)
    d = write_parts(tmp_path / "notjson", logged, [0, m])
    (d / "manifest.json").write_bytes(b"\xff{")
    with _refused(d / "manifest.json"):
        P.load_parts(d)
    (d / "manifest.json").write_text("[1]")
    with _refused(d / "manifest.json"):
        P.load_parts(d)


def test_refusals_arrays(logged, tmp_path):
    m = len(logged)

    def broken(name, change):
        d = write_parts(tmp_path / name, logged, [0, 10, m])
        target = change(d / "part-00001")
        with pytest.raises(ValueError, match=re.escape(str(target))) as e:
            P.load_parts(d)
        assert "\n" not in str(e.value)
        return str(e.value)

    def missing_part(p):
        shutil.rmtree(p)
        return p

    def remove(k):
        return lambda p: (os.remove(p / f"{k}.npy"), p / f"{k}.npy")[1]

    def save(k, v, **kw):
        return lambda p: (np.save(p / f"{k}.npy", v, **kw), p / f"{k}.npy")[1]

    n, L = m - 10, len(logged.history_steps)
    broken("part", missing_part)
    broken("noweight", remove("weight"))
    broken("nohistory", remove("history_bias"))
    broken("noseeds", remove("seeds"))
    broken("nooption", remove("momentum"))
    assert "float64" in broken("dtype", save("weight", np.zeros(n)))
    broken("dtype_seeds", save("seeds", np.zeros(n, np.int64)))
    broken("shape", save("bias", np.zeros(n + 1, np.float32)))
    broken("shape_hist", save("history_weight", np.zeros((L + 1, n), np.float32)))
    broken("endian", save("lrs", np.zeros(n, ">f4")))
    broken("fortran", save("history_weight", np.asfortranarray(np.zeros((L, n), np.float32))))

    def cut(p):
        data = (p / "weight.npy").read_bytes()
        (p / "weight.npy").write_bytes(data[:-4])
        return p / "weight.npy"

    broken("cut", cut)

    def longer(p):
        with open(p / "bias.npy", "ab") as f:
            f.write(b"\0" * 4)
        return p / "bias.npy"

    broken("long", longer)
    broken("garbage", lambda p: ((p / "diverged_at.npy").write_bytes(b"not npy at all"), p / "diverged_at.npy")[1])


class _Boom:
    """Unpickling this writes a file: proof that a pickle ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.path), "pickle ran"))


def test_pickle_never_loaded(logged, tmp_path):
    m = len(logged)
    d = write_parts(tmp_path / "run", logged, [0, 10, m])
    flag = tmp_path / "unpickled"
    arr = np.empty(m - 10, dtype=object)
    arr[:] = [_Boom(flag)] * (m - 10)
    np.save(d / "part-00001" / "lrs.npy", arr, allow_pickle=True)
    with pytest.raises(ValueError, match=re.escape(str(d / "part-00001" / "lrs.npy")) + ".*objects"):
        P.load_parts(d)
    assert not flag.exists()


def test_files_changed_after_load(logged, tmp_path):
    """An array replaced after load_parts checked it is refused when mapped."""
    m = len(logged)
    d = write_parts(tmp_path / "run", logged, [0, 10, m])
    res = P.load_parts(d)
    np.save(d / "part-00000" / "weight.npy", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=re.escape(str(d / "part-00000" / "weight.npy"))):
        res.weight  # noqa: B018


def test_plots_on_parts(logged, noisy, tmp_path):
    pytest.importorskip("matplotlib", reason="requires matplotlib (the plot extra)")
    from fastneuron import plot

    res = P.load_parts(write_parts(tmp_path / "run", logged, [0, 10, len(logged)]))
    noise = P.load_parts(write_parts(tmp_path / "noise", noisy, [0, 10, len(noisy)]))
    figs = [plot.risk_vs_lr(res, path=tmp_path / "lr.png"), plot.risk_vs_lr(noise),
            plot.spread_vs_lr(noise, path=tmp_path / "spread.png"),
            plot.risk_vs_step(res), plot.trajectories(res)]
    assert all(f.axes for f in figs)
    assert (tmp_path / "lr.png").stat().st_size > 10_000 and (tmp_path / "spread.png").stat().st_size > 10_000


def test_engine_writes_what_load_parts_reads(tmp_path):
    """train(out=DIR/) (the engine's writer) against the in-memory run: equal arrays,
    summary and descriptions."""
    g = fn.grid(seeds=range(5), lrs=LRS, momentum=[0.0, 0.5])
    r = fn.train(**g, steps=72, log_every=6, backend="eager")
    res = fn.train(**g, steps=72, log_every=6, backend="eager", out=f"{tmp_path / 'run'}/", member_block=7)
    assert isinstance(res, P.PartsResult)
    same = P.load(tmp_path / "run")
    t = same.to_result()
    assert_same(t, r)
    # The manifest also describes a shared default (weight_decay 0) that the in-memory run holds as an array.
    assert {k: t.described[k] for k in r.described} == r.described and r.described.keys() >= {"seeds", "lrs"}
    for by in (("lr", "momentum"), ("seed",)):
        _rows_equal(same.summary(by=by, tol=0.1).rows, r.summary(by=by, tol=0.1).rows)
