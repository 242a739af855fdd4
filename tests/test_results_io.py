"""TrainResult.save / fastneuron.load: exact round trip, atomic writes, and refusal
(ValueError, never a pickle) of anything that is not a result file."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

import fastneuron
from fastneuron import checkpoint as ckpt
from fastneuron import result as result_mod
from fastneuron.spec import RunSpec

U64_MAX = 2**64 - 1


def bits(x: torch.Tensor) -> torch.Tensor:
    """float32 as int32, so that NaN == NaN and -0.0 != 0.0."""
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def assert_same(r1: fastneuron.TrainResult, r2: fastneuron.TrainResult) -> None:
    assert r1.seeds.dtype == r2.seeds.dtype == np.uint64
    assert np.array_equal(r1.seeds, r2.seeds)
    for name in ("lrs", "momentum", "weight_decay", "weight", "bias", "diverged_at", "history_steps"):
        a, b = getattr(r1, name), getattr(r2, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(bits(a), bits(b)), name
    for name in ("history_weight", "history_bias"):
        a, b = getattr(r1, name), getattr(r2, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
            assert torch.equal(bits(a), bits(b)), name
    assert r1.settings == r2.settings


@pytest.fixture(scope="module")
def run() -> fastneuron.TrainResult:
    seeds = [0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, U64_MAX, U64_MAX]
    lrs = [0.01, 0.02, 0.5, 0.01, 1e-3, 0.3, 0.01, 2.0]  # 0.5, 0.3 and 2.0 diverge
    mus = [0.0, 0.9, 0.0, 0.5, 0.0, 0.0, 0.9, 0.0]
    return fastneuron.train(seeds, lrs, 50, backend="eager", log_every=7, momentum=mus,
                            weight_decay=1e-3, progress=False)


def test_round_trip_bit_for_bit(run, tmp_path):
    r = run
    assert int((r.diverged_at >= 0).sum()) >= 2, "the run must have diverged members"
    assert torch.isnan(r.weight).any() and torch.isnan(r.history_weight).any()
    assert r.seeds[-1] == np.uint64(U64_MAX)
    path = tmp_path / "r.npz"
    r.save(path)
    back = fastneuron.load(path)
    assert_same(r, back)
    assert torch.equal(back.risk.view(torch.int64), r.risk.view(torch.int64))
    assert torch.equal(back.history_risk.view(torch.int64), r.history_risk.view(torch.int64))
    # Saving what was loaded gives the same arrays again (str paths work too).
    back.save(str(tmp_path / "again.npz"))
    assert_same(r, fastneuron.load(str(tmp_path / "again.npz")))


def test_round_trip_without_history_and_zero_steps(tmp_path):
    for steps in (0, 13):
        r = fastneuron.train([U64_MAX, 0, 5], [0.01, 0.01, 3.0], steps, backend="eager", progress=False,
                             batch_size=3, a=-1.5, c=0.25, lo=-2.0, hi=0.5)
        assert r.history_weight is None
        r.save(tmp_path / "r.npz")
        back = fastneuron.load(tmp_path / "r.npz")
        assert_same(r, back)
        assert back.history_weight is None and back.history_bias is None and len(back.history_steps) == 0


def test_file_holds_plain_arrays_and_a_json_header(run, tmp_path):
    run.save(tmp_path / "r.npz")
    with zipfile.ZipFile(tmp_path / "r.npz") as z:
        names = sorted(n.removesuffix(".npy") for n in z.namelist())
    assert names == sorted(["seeds", "lrs", "momentum", "weight_decay", "weight", "bias", "diverged_at",
                            "history_steps", "history_weight", "history_bias", "settings"])
    with np.load(tmp_path / "r.npz", allow_pickle=False) as z:
        meta = json.loads(bytes(z["settings"]).decode())
        assert z["seeds"].dtype == np.uint64 and z["weight"].dtype == np.float32
    assert meta["format"] == "fastneuron-result" and meta["settings"] == run.settings


def test_overwrite_replaces_the_file(run, tmp_path):
    path = tmp_path / "r.npz"
    small = fastneuron.train([1], 0.01, 3, backend="eager", progress=False)
    small.save(path)
    run.save(path)
    assert_same(run, fastneuron.load(path))
    assert sorted(os.listdir(tmp_path)) == ["r.npz"]


# -- atomic writes -----------------------------------------------------------------


def _crashing_savez(exc: BaseException):
    def savez(file, *args, **kwds):
        file.write(b"PK\x03\x04" + b"\0" * 1000)  # a partial archive ...
        file.flush()
        raise exc  # ... and then the crash

    return savez


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_crash_mid_write_leaves_no_file(run, tmp_path, monkeypatch, exc):
    path = tmp_path / "r.npz"
    monkeypatch.setattr(np, "savez", _crashing_savez(exc))
    with pytest.raises(type(exc)):
        run.save(path)
    assert os.listdir(tmp_path) == [], "neither the final file nor a temporary file may remain"


def test_crash_mid_write_keeps_the_old_file(run, tmp_path, monkeypatch):
    path = tmp_path / "r.npz"
    old = fastneuron.train([7, 8], 0.01, 5, backend="eager", progress=False)
    old.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", _crashing_savez(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        run.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["r.npz"]
    monkeypatch.undo()
    assert_same(old, fastneuron.load(path))


def test_checkpoint_write_is_atomic_too(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    monkeypatch.setattr(np, "savez", _crashing_savez(OSError("disk full")))
    with pytest.raises(OSError):
        fastneuron.train([1, 2], 0.01, 10, backend="eager", progress=False, checkpoint=path)
    assert os.listdir(tmp_path) == []


# -- refusing what is not a result file -----------------------------------------------


def _npz(path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _header(**meta) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def _good_arrays(run) -> dict:
    """The arrays of a valid file, as a dict, to be broken one way or another."""
    buf = io.BytesIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(result_mod, "atomic_write", lambda path, write: write(buf))
        run.save("unused")
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _expect_refused(path, *needles) -> str:
    with pytest.raises(ValueError) as info:
        fastneuron.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def test_random_bytes_empty_and_text_files(tmp_path):
    rng = np.random.default_rng(0)
    for name, data in [("random", rng.bytes(4096)), ("empty", b""), ("text", b"w,b\n1.0,2.0\n"),
                       ("zip-magic", b"PK\x03\x04" + rng.bytes(200))]:
        path = tmp_path / name
        path.write_bytes(data)
        _expect_refused(path, "not a fastneuron result file")


def test_missing_file(tmp_path):
    _expect_refused(tmp_path / "nothing.npz", "No such file")


def test_truncated_files(run, tmp_path):
    run.save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    for n in (1, 10, 100, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        path = tmp_path / f"cut{n}.npz"
        path.write_bytes(data[:n])
        _expect_refused(path, "not a fastneuron result file")


def test_flipped_bytes_in_the_data(run, tmp_path):
    run.save(tmp_path / "good.npz")
    data = bytearray((tmp_path / "good.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "good.npz") as z:
        info = z.getinfo("weight.npy")
    # Inside the weight array's data: the zip CRC catches it.
    pos = info.header_offset + 30 + len(info.filename) + info.file_size - 3
    data[pos] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    _expect_refused(tmp_path / "flip.npz", "not a fastneuron result file")


def test_npy_instead_of_npz(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3, dtype=np.float32))
    _expect_refused(tmp_path / "w.npy", "not a fastneuron result file")


def test_npz_without_the_header(run, tmp_path):
    arrays = _good_arrays(run)
    del arrays["settings"]
    _npz(tmp_path / "noheader.npz", **arrays)
    _expect_refused(tmp_path / "noheader.npz", "fastneuron-result")
    _npz(tmp_path / "foreign.npz", x=np.arange(4))
    _expect_refused(tmp_path / "foreign.npz", "fastneuron-result")


def test_foreign_or_broken_headers(run, tmp_path):
    arrays = _good_arrays(run)
    good = json.loads(bytes(arrays["settings"]).decode())
    cases = {
        "checkpoint": _header(format="fastneuron-checkpoint", settings=good["settings"]),
        "notjson": np.frombuffer(b"\xff\xfe{not json", dtype=np.uint8),
        "list": _header(),  # replaced below
        "noversion": _header(format="fastneuron-result", settings=good["settings"]),
        "strversion": _header(format="fastneuron-result", format_version="1", settings=good["settings"]),
        "nosettings": _header(format="fastneuron-result", format_version=1),
        "badsettings": _header(format="fastneuron-result", format_version=1, settings=[1, 2]),
    }
    cases["list"] = np.frombuffer(b"[1, 2]", dtype=np.uint8)
    for name, header in cases.items():
        _npz(tmp_path / f"{name}.npz", **{**arrays, "settings": header})
        _expect_refused(tmp_path / f"{name}.npz")


def test_newer_format_version(run, tmp_path):
    arrays = _good_arrays(run)
    meta = json.loads(bytes(arrays["settings"]).decode())
    newer = result_mod.FORMAT_VERSION + 1
    _npz(tmp_path / "newer.npz", **{**arrays, "settings": _header(**{**meta, "format_version": newer})})
    _expect_refused(tmp_path / "newer.npz", f"format version {newer}")


def test_format_1_still_loads(run, tmp_path):
    """A file of format 1 (SGD's momentum and weight_decay always there, no
    member_options in the header) loads as before."""
    arrays = _good_arrays(run)
    meta = json.loads(bytes(arrays["settings"]).decode())
    del meta["member_options"]
    v1_settings = {k: v for k, v in meta["settings"].items() if k not in ("optimizer", "problem")}
    _npz(tmp_path / "v1.npz", **{**arrays, "settings": _header(**{**meta, "format_version": 1,
                                                                   "settings": v1_settings})})
    got = fastneuron.load(tmp_path / "v1.npz")
    assert torch.equal(got.momentum, run.momentum) and torch.equal(got.weight_decay, run.weight_decay)
    assert list(got.member_options) == ["momentum", "weight_decay"]
    torch.testing.assert_close(got.risk, run.risk, rtol=0, atol=0, equal_nan=True)


def test_wrong_arrays(run, tmp_path):
    arrays = _good_arrays(run)
    cases = {
        "dtype": {**arrays, "weight": arrays["weight"].astype(np.float64)},
        "seeds-int64": {**arrays, "seeds": arrays["seeds"].view(np.int64)},
        "extra": {**arrays, "extra": np.zeros(3)},
        "missing": {k: v for k, v in arrays.items() if k != "bias"},
        "short": {**arrays, "bias": arrays["bias"][:-1]},
        "2d": {**arrays, "weight": arrays["weight"].reshape(2, -1)},
        "history-shape": {**arrays, "history_weight": arrays["history_weight"][:, :-1]},
        "history-steps": {**arrays, "history_steps": arrays["history_steps"][:-1]},
        "half-history": {k: v for k, v in arrays.items() if k != "history_bias"},
    }
    for name, data in cases.items():
        _npz(tmp_path / f"{name}.npz", **data)
        _expect_refused(tmp_path / f"{name}.npz")


class _Evil:
    """Unpickling this creates the file ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles(run, tmp_path, monkeypatch):
    marker = str(tmp_path / "unpickled")
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(marker)
    arrays = _good_arrays(run)
    _npz(tmp_path / "obj-weight.npz", **{**arrays, "weight": evil})
    _npz(tmp_path / "obj-header.npz", **{**arrays, "settings": evil})
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(_Evil(marker)))
    np.save(tmp_path / "obj.npy", evil, allow_pickle=True)

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    for name in ("obj-weight.npz", "obj-header.npz", "raw.pkl", "obj.npy"):
        _expect_refused(tmp_path / name)
        spec = RunSpec.build(run.seeds, run.lrs, run.settings["steps"], backend="eager")
        with pytest.raises(ValueError):
            ckpt.load_checkpoint(tmp_path / name, spec)
    assert not os.path.exists(marker)
