"""Writing a parts directory (``out=DIR/``): one part per rank, then a manifest.

A run with ``out=DIR/`` never holds its results in memory: each process writes its
members' arrays into ``DIR/part-{index:05d}.tmp/`` block by block, as plain ``.npy``
files (a header, then the data; written with ``pwrite`` at the block's offset, so
memory stays O(block)), and renames the directory to ``DIR/part-{index:05d}`` when its
members are done. ``DIR/manifest.json`` is written last, atomically, when every part
is done: a directory without it is a run in progress (or a killed one, which resumes
from its parts' ``checkpoint.npz``). :mod:`fastneuron.parts` reads the result.

Layout (``n`` members in a part, ``L`` logged steps):

- ``weight.npy``, ``bias.npy`` float32 (n,), NaN where diverged; ``diverged_at.npy``
  int64 (n,); ``history_weight.npy``, ``history_bias.npy`` float32 (L, n) with a log
  (with ``inputs`` d > 1, SPEC §6f: ``weight.npy`` (n, d), ``history_weight.npy`` (L, n, d));
- ``seeds.npy`` uint64 (n,), ``lrs.npy`` and each per-member option's float32 (n,),
  and ``<name>_float64.npy`` float64 (n,) for the values as given that the manifest's
  ``float64`` names (SPEC §3c, §3d), for the columns given as arrays (a grid's columns
  are described in the manifest);
- ``checkpoint.npz``: the part's checkpoint (:mod:`fastneuron.engine`'s ``_PartStore``:
  the header, and the state of the block in training), kept when the part is done.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from .files import atomic_write, read_npy_header

FORMAT = "fastneuron-parts"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint.npz"


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def is_directory_path(path) -> bool:
    """``out`` names a parts directory: it ends with a separator or is a directory."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or os.path.isdir(text)


def _read_header(path: str) -> tuple:
    """(shape, dtype, data offset) of an ``.npy`` file, from its header alone."""
    with open(path, "rb") as f:
        shape, fortran, dtype = read_npy_header(f)
        if fortran or dtype.hasobject:
            raise ValueError(f"{path}: not a plain C-ordered array")
        return shape, dtype, f.tell()


class PartWriter:
    """One part's ``.npy`` files, written by member ranges.

    ``arrays``: name -> (dtype, shape), the last axis the part's members, or (dtype,
    shape, axis) with the members along ``axis`` (a weight (n, d): axis 0; its history
    (L, n, d): axis 1). A fresh writer (``resume=False``) empties ``DIR/part-XXXXX.tmp``;
    ``resume=True`` reopens it and checks that each file has the dtype and shape given
    (ValueError naming the file otherwise)."""

    def __init__(self, directory, index: int, arrays: dict, *, resume: bool = False):
        self.directory = os.fspath(directory)
        self.final = os.path.join(self.directory, part_name(index))
        self.path = self.final + ".tmp"
        self.arrays = {k: (np.dtype(v[0]), tuple(v[1])) for k, v in arrays.items()}
        self.axes = {k: (v[2] if len(v) > 2 else len(v[1]) - 1) % len(v[1]) for k, v in arrays.items()}
        if not resume:
            shutil.rmtree(self.path, ignore_errors=True)
            os.makedirs(self.path)
        self._fds: dict = {}
        self._offsets: dict = {}
        for name, (dtype, shape) in self.arrays.items():
            file = os.path.join(self.path, name + ".npy")
            if resume:
                if not os.path.exists(file):
                    raise ValueError(f"resume: {file} is missing")
                got_shape, got_dtype, offset = _read_header(file)
                if got_shape != shape or got_dtype != dtype:
                    raise ValueError(f"resume: {file} holds {got_dtype} {got_shape}, the run writes {dtype} {shape}")
            else:
                # The header, then a sparse file of the data's size: blocks land at their offsets.
                with open(file, "wb") as f:
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
                    offset = f.tell()
                    f.truncate(offset + dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
            self._fds[name] = os.open(file, os.O_RDWR)
            self._offsets[name] = offset

    def _ranges(self, name: str, start: int, stop: int):
        """(row, byte offset, byte count) of members [start, stop) in each row of ``name``
        (a row: an index of the axes before the members'; each member's values after them
        are contiguous)."""
        dtype, shape = self.arrays[name]
        axis = self.axes[name]
        n, rows = shape[axis], int(np.prod(shape[:axis], dtype=np.int64))
        size = dtype.itemsize * int(np.prod(shape[axis + 1:], dtype=np.int64))
        for r in range(rows):
            yield r, self._offsets[name] + (r * n + start) * size, (stop - start) * size

    def write(self, name: str, start: int, stop: int, values) -> None:
        """Members ``[start, stop)`` of array ``name`` (``values``: its shape with
        ``stop - start`` members: (..., stop - start), or (stop - start, d), (L, stop - start, d))."""
        dtype, shape = self.arrays[name]
        axis = self.axes[name]
        rows = int(np.prod(shape[:axis], dtype=np.int64))
        values = np.ascontiguousarray(np.asarray(values), dtype=dtype).reshape(rows, -1)
        for r, offset, count in self._ranges(name, start, stop):
            data = memoryview(values[r]).cast("B")
            done = 0
            while done < count:
                done += os.pwrite(self._fds[name], data[done:], offset + done)

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Members ``[start, stop)`` of array ``name``: its shape with ``stop - start`` members."""
        dtype, shape = self.arrays[name]
        axis = self.axes[name]
        rows = [np.frombuffer(_pread(self._fds[name], count, offset), dtype=dtype)
                for _, offset, count in self._ranges(name, start, stop)]
        return np.stack(rows).reshape(*shape[:axis], stop - start, *shape[axis + 1:])

    def sync(self) -> None:
        for fd in self._fds.values():
            os.fsync(fd)

    def finish(self) -> None:
        """Close the files and rename the part into place (its checkpoint stays)."""
        self.sync()
        self.close()
        _fsync_dir(self.path)
        shutil.rmtree(self.final, ignore_errors=True)
        os.rename(self.path, self.final)
        _fsync_dir(self.directory)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _pread(fd: int, count: int, offset: int) -> bytes:
    chunks, done = [], 0
    while done < count:
        chunk = os.pread(fd, count - done, offset + done)
        if not chunk:
            raise ValueError("a part file is shorter than its header says")
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory, *, settings: dict, n_members: int, member_options: list, described: dict,
                   history_steps: list, bounds: list, float64: list = ()) -> None:
    """``DIR/manifest.json``, atomically: the run is complete once it exists.
    ``bounds``: each part's members ``(start, stop)``, in order. ``float64``: the columns
    ("lrs", options) whose values as given the parts hold as ``<name>_float64`` (the key is
    written only when there are some)."""
    from ._version import __version__

    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastneuron_version": __version__,
                "settings": settings, "n_members": n_members, "member_options": list(member_options),
                "described": described, "history_steps": [int(s) for s in history_steps],
                "parts": [{"name": part_name(i), "start": a, "stop": b} for i, (a, b) in enumerate(bounds)]}
    if float64:
        manifest["float64"] = list(float64)
    atomic_write(os.path.join(os.fspath(directory), MANIFEST), lambda f: f.write(json.dumps(manifest).encode()))
