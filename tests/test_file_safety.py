"""Result files and checkpoints (issue 13, items 1, 4, 5, 7, 12, 13): a checkpoint is
resumed exactly or refused with one line; paths are checked before a run and a
finished run whose file cannot be written hands its result over; special files are
never replaced; archives are checked before any data is read; files get the umask's
permissions, stale temporary files go, the directory is fsynced; result headers are
validated on load; TrainResult documents its fields."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import pytest
import torch

import fastneuron
from fastneuron import engine
from fastneuron import result as result_mod
from fastneuron.result import TrainResult, atomic_write

# -- helpers -----------------------------------------------------------------------

#: 5 members in blocks of 2, momentum (state arrays buf_*), batch 2, a log every 5 steps.
RUN = dict(seeds=[0, 1, 2, 3, 4], lrs=[0.01, 0.02, 30.0, 0.05, 0.01], steps=20, batch_size=2, log_every=5,
           member_block=2, momentum=0.5, backend="eager", progress=False)


@pytest.fixture(scope="module")
def reference():
    return fastneuron.train(**RUN)


@pytest.fixture(scope="module")
def mid(tmp_path_factory):
    """A checkpoint in the middle of the second block: (2, 4, 8)."""
    d = tmp_path_factory.mktemp("mid")
    real = engine.save_checkpoint
    kept = d / "mid.ckpt"

    def spy(path, spec, **k):
        real(path, spec, **k)
        if (k["block_start"], k["step"]) == (2, 8):
            shutil.copyfile(path, kept)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "save_checkpoint", spy)
        fastneuron.train(**RUN, checkpoint=d / "live.ckpt", checkpoint_every=0)
    assert kept.exists()
    return kept


def same(r1, r2) -> bool:
    def eq(a, b):
        if a is None or b is None:
            return a is b
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            a.view(torch.int32) if a.dtype == torch.float32 else a,
            b.view(torch.int32) if b.dtype == torch.float32 else b)
    return all(eq(getattr(r1, k), getattr(r2, k)) for k in
               ("weight", "bias", "diverged_at", "history_weight", "history_bias"))


def arrays_of(path) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(bytes(arrays.pop("meta")).decode()), arrays


def savez(path, **arrays) -> None:
    """np.savez to exactly ``path`` (np.savez adds ".npz" to a name without it)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def write_ckpt(path, meta, arrays) -> None:
    savez(path, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def refused_resume(path, needle=""):
    with pytest.raises(ValueError) as info:
        fastneuron.train(**RUN, resume=path)
    message = str(info.value)
    assert message.startswith(f"resume: {path}") and "\n" not in message, message
    assert needle in message, message
    return message


# -- item 1: checkpoint arrays and position ---------------------------------------------


def test_valid_checkpoint_resumes_exactly(mid, reference):
    assert reference.diverged_at[2] >= 0 and (reference.diverged_at < 0).sum() == 4
    assert same(fastneuron.train(**RUN, resume=mid), reference)


@pytest.mark.parametrize("change", [
    dict(step=5),  # 5 * batch 2 is not a multiple of 4: no chunk starts there
    dict(step=-4), dict(step=10**6), dict(step=True), dict(step=8.0), dict(step=21),
    dict(block_start=6, block_stop=6), dict(block_start=3, block_stop=2), dict(block_stop=9),
    dict(block_start=-2), dict(block_start=2, block_stop=2), dict(block_start=False),
    dict(block_start=5, block_stop=5, step=8),  # all done, but not at the last step
])
def test_checkpoint_position_refused(mid, tmp_path, change):
    meta, arrays = arrays_of(mid)
    write_ckpt(tmp_path / "bad.ckpt", {**meta, **change}, arrays)
    refused_resume(tmp_path / "bad.ckpt", "broken")


def _array_cases(arrays):
    return {
        "weight-f64": {**arrays, "weight": arrays["weight"].astype(np.float64)},
        "div-i32": {**arrays, "diverged_at": arrays["diverged_at"].astype(np.int32)},
        "no-buf": {k: v for k, v in arrays.items() if k != "buf_weight"},
        "no-weight": {k: v for k, v in arrays.items() if k != "weight"},
        "short-bias": {**arrays, "bias": arrays["bias"][:-1]},
        "long-buf": {**arrays, "buf_bias": np.concatenate([arrays["buf_bias"], [0.0]]).astype(np.float32)},
        "hist-shape": {**arrays, "history_weight": arrays["history_weight"][:-1]},
        "no-hist": {k: v for k, v in arrays.items() if not k.startswith("history")},
        "extra": {**arrays, "junk": np.zeros(5, np.float32)},
        "2d": {**arrays, "weight": arrays["weight"].reshape(1, -1)},
        "div-future": {**arrays, "diverged_at": np.where(np.arange(5) == 2, 15, arrays["diverged_at"])},
        "div-below": {**arrays, "diverged_at": np.where(np.arange(5) == 0, -7, arrays["diverged_at"])},
    }


@pytest.mark.parametrize("case", ["weight-f64", "div-i32", "no-buf", "no-weight", "short-bias", "long-buf",
                                  "hist-shape", "no-hist", "extra", "2d", "div-future", "div-below"])
def test_checkpoint_arrays_refused(mid, tmp_path, case):
    meta, arrays = arrays_of(mid)
    assert set(arrays) == {"weight", "bias", "diverged_at", "buf_weight", "buf_bias", "history_weight",
                           "history_bias"}
    write_ckpt(tmp_path / "bad.ckpt", meta, _array_cases(arrays)[case])
    refused_resume(tmp_path / "bad.ckpt", "broken")


def test_checkpoint_header_not_json_object(mid, tmp_path):
    _, arrays = arrays_of(mid)
    savez(tmp_path / "list.ckpt", **arrays, meta=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    refused_resume(tmp_path / "list.ckpt", "not a fastneuron checkpoint")
    savez(tmp_path / "f32.ckpt", **arrays, meta=np.zeros(3, np.float32))
    refused_resume(tmp_path / "f32.ckpt", "not a fastneuron checkpoint")


# -- item 4: paths checked up front; a final write that fails keeps the result ------------------


def test_checkpoint_path_checked_before_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "train_block", lambda *a, **k: pytest.fail("the run started"))
    for path, needle in [(tmp_path / "no" / "such" / "c.ckpt", "does not exist"), (tmp_path, "directory")]:
        with pytest.raises(ValueError, match=f"^checkpoint: .*{needle}"):
            fastneuron.train(**RUN, checkpoint=path)


def test_final_checkpoint_failure_carries_the_result(tmp_path, monkeypatch, reference):
    real = engine.save_checkpoint

    def full_disk(path, spec, **k):
        if k["block_start"] == len(spec):
            raise OSError(28, "No space left on device", str(path))
        real(path, spec, **k)

    monkeypatch.setattr(engine, "save_checkpoint", full_disk)
    with pytest.raises(result_mod.ResultNotSaved) as info:
        fastneuron.train(**RUN, checkpoint=tmp_path / "c.ckpt")
    err = info.value
    assert isinstance(err, OSError)
    assert str(tmp_path / "c.ckpt") in str(err) and "No space left" in str(err)
    assert same(err.result, reference)


# -- item 5: special files are never replaced ------------------------------------------------


def _write_x(f):
    f.write(b"x")


def test_fifo_and_directory_refused(tmp_path, reference):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path):
        with pytest.raises(ValueError, match=str(target)):
            atomic_write(target, _write_x)
    with pytest.raises(ValueError, match="FIFO"):
        reference.save(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(ValueError, match="^checkpoint: .*FIFO"):
        fastneuron.train(**RUN, checkpoint=fifo)
    assert sorted(os.listdir(tmp_path)) == ["fifo"]


def test_socket_and_device_refused():
    d = tempfile.mkdtemp(prefix="fn")  # short: a socket path has a length limit
    try:
        sock_path = os.path.join(d, "s")
        s = socket.socket(socket.AF_UNIX)
        s.bind(sock_path)
        try:
            with pytest.raises(ValueError, match="socket"):
                atomic_write(sock_path, _write_x)
            assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        finally:
            s.close()
        dev = os.path.join(d, "null")
        try:
            os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, OSError):
            dev = None
        if dev is not None:
            with pytest.raises(ValueError, match="device"):
                atomic_write(dev, _write_x)
            assert stat.S_ISCHR(os.lstat(dev).st_mode)
        with pytest.raises(ValueError, match="device"):
            result_mod.check_writable("--out", "/dev/null")
        assert sorted(os.listdir(d)) == sorted(["s"] + (["null"] if dev else []))
    finally:
        shutil.rmtree(d)


def test_symlink_writes_its_target(tmp_path, reference):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "r.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    reference.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert same(fastneuron.load(target), reference)
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "data" / "new.npz")
    reference.save(dangling)
    assert dangling.is_symlink() and same(fastneuron.load(tmp_path / "data" / "new.npz"), reference)


# -- item 7: archives checked before any data is read --------------------------------------------


class _ReadMeter:
    """Counts the bytes read out of zip members."""

    def __init__(self, monkeypatch):
        self.total = 0
        real = zipfile.ZipExtFile.read

        def read(f, n=-1):
            data = real(f, n)
            self.total += len(data)
            return data

        monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
        real_into = getattr(zipfile.ZipExtFile, "readinto", None)
        if real_into is not None:
            def readinto(f, b):
                n = real_into(f, b)
                self.total += n or 0
                return n
            monkeypatch.setattr(zipfile.ZipExtFile, "readinto", readinto)


def _add_bomb(path, name="junk.npy", size=64 << 20):
    """Append a deflated member of ``size`` zero bytes (about 64 KiB on disk)."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open(name, "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)


def _forged_shape_npy(shape, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(32)


def test_result_bomb_member_refused_unread(reference, tmp_path, monkeypatch):
    path = tmp_path / "r.npz"
    reference.save(path)
    _add_bomb(path)
    meter = _ReadMeter(monkeypatch)
    with pytest.raises(ValueError, match=str(path)):
        fastneuron.load(path)
    assert meter.total < 1 << 20


def test_result_compressed_weight_refused(reference, tmp_path, monkeypatch):
    """A member compressed to far less than its size (even one of the right name)."""
    path = tmp_path / "r.npz"
    reference.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    meter = _ReadMeter(monkeypatch)
    with pytest.raises(ValueError, match="compressed"):
        fastneuron.load(tmp_path / "c.npz")
    assert meter.total < 1 << 20


def test_result_forged_shape_is_value_error(reference, tmp_path):
    path = tmp_path / "r.npz"
    reference.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    forged = tmp_path / "forged.npz"
    with zipfile.ZipFile(forged, "w") as z:
        for k, v in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, v)
            z.writestr(k + ".npy", _forged_shape_npy((2**40,)) if k == "weight" else buf.getvalue())
    with pytest.raises(ValueError, match=str(forged)):
        fastneuron.load(forged)


def test_checkpoint_bomb_and_forged_shape(mid, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.ckpt"
    shutil.copyfile(mid, bomb)
    _add_bomb(bomb)
    meter = _ReadMeter(monkeypatch)
    refused_resume(bomb)
    assert meter.total < 1 << 20
    meta, arrays = arrays_of(mid)
    forged = tmp_path / "forged.ckpt"
    with zipfile.ZipFile(forged, "w") as z:
        for k, v in {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, v)
            z.writestr(k + ".npy", _forged_shape_npy((2**40,)) if k == "buf_weight" else buf.getvalue())
    refused_resume(forged)


# -- item 12: permissions, stale temporary files, directory fsync, result headers ------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_follow_the_umask(tmp_path, umask, reference):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a", _write_x)
        reference.save(tmp_path / "r.npz")
    finally:
        os.umask(old)
    for name in ("a", "r.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_files_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    old = time.time() - 3600
    stale = tmp_path / f".r.npz.tmp-{dead}-abc123.part"
    fresh_dead = tmp_path / f".r.npz.tmp-{dead}-def456.part"  # just written: maybe not ours to judge yet
    live = tmp_path / f".r.npz.tmp-{alive}-ghi789.part"
    other = tmp_path / f".other.npz.tmp-{dead}-jkl012.part"
    for p in (stale, fresh_dead, live, other):
        p.write_bytes(b"partial")
    for p in (stale, live, other):
        os.utime(p, (old, old))
    seen = []

    def write(f):
        seen.extend(n for n in os.listdir(tmp_path) if n.startswith(f".r.npz.tmp-{os.getpid()}-"))
        f.write(b"x")

    atomic_write(tmp_path / "r.npz", write)
    assert len(seen) == 1 and seen[0].endswith(".part")  # named after the target, with the pid
    assert not stale.exists()
    assert fresh_dead.exists() and live.exists() and other.exists()
    assert (tmp_path / "r.npz").read_bytes() == b"x"


def test_directory_fsynced_after_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append((stat.S_ISDIR(os.fstat(fd).st_mode), os.path.exists(tmp_path / "a")))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write(tmp_path / "a", _write_x)
    assert (False, False) in synced  # the file, before the rename
    assert (True, True) in synced  # the directory, after it


def _with_header(path, out, **changes) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["settings"]).decode())
    meta.update(changes)
    arrays["settings"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(out, **arrays)


def test_result_header_validated_on_load(reference, tmp_path):
    good = tmp_path / "good.npz"
    reference.save(good)
    settings = json.loads(bytes(np.load(good)["settings"]).decode())["settings"]
    cases = {
        "v0": dict(format_version=0), "v-1": dict(format_version=-1), "vtrue": dict(format_version=True),
        "vfloat": dict(format_version=2.0),
        "no-a": dict(settings={k: v for k, v in settings.items() if k != "a"}),
        "empty": dict(settings={}),
        "problem": dict(settings={**settings, "problem": "nope"}),
        "problem-list": dict(settings={**settings, "problem": ["linear"]}),
        "lo-hi": dict(settings={**settings, "lo": 5.0, "hi": 1.0}),
        "a-str": dict(settings={**settings, "a": "two"}),
        "options-dup": dict(member_options=["momentum", "momentum"]),
    }
    for name, change in cases.items():
        _with_header(good, tmp_path / f"{name}.npz", **change)
        with pytest.raises(ValueError) as info:
            fastneuron.load(tmp_path / f"{name}.npz")
        assert str(tmp_path / f"{name}.npz") in str(info.value), name
    assert same(fastneuron.load(good), reference)


def test_loaded_arrays_are_writable_and_owned(reference, tmp_path):
    reference.save(tmp_path / "r.npz")
    r = fastneuron.load(tmp_path / "r.npz")
    assert r.seeds.flags.writeable and r.weight.numpy().flags.writeable
    r.weight.add_(1)  # no warning, no error: tensors over writable memory
    assert torch.equal(r.risk.isnan(), reference.risk.isnan())


# -- item 13: TrainResult documents every field ---------------------------------------------------


def test_train_result_documents_every_field():
    doc = TrainResult.__doc__
    for f in dataclasses.fields(TrainResult):
        assert f"{f.name}:" in doc, f.name
    for needle in ("uint64", "float32", "int64", "(M,)", "(L, M)", "(L,)", "-1", "NaN"):
        assert needle in doc, needle
    mod = result_mod.__doc__
    for needle in ("history_weight", "umask", "symlink", "format_version"):
        assert needle in mod, needle


def test_write_errors_name_the_target(tmp_path, reference, monkeypatch):
    """Issue 13 items 4 and 11: an I/O error of save() names the file asked for, not the
    temporary file beside it, nor nothing at all (a full disk's bare [Errno 28])."""
    import errno

    missing = tmp_path / "no-such-dir" / "out.npz"
    with pytest.raises(FileNotFoundError) as info:
        reference.save(missing)
    assert info.value.filename == str(missing) and ".part" not in str(info.value)

    def full_disk(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "full.npz"
    with pytest.raises(OSError) as info:
        atomic_write(target, full_disk)
    assert info.value.errno == errno.ENOSPC and str(target) in str(info.value)
    assert os.listdir(tmp_path) == []  # no temporary file left
