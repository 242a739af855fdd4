"""Safe files for results and checkpoints: atomic writes, writability checks, and
``.npz`` archives read without pickle, their directory and headers checked first.

:func:`atomic_write` writes a temporary file beside the target, fsyncs it, renames it
onto the target and fsyncs the directory; permissions are 0666 less the umask; a
symlink's target is replaced, a FIFO, device, socket or directory is refused; stale
temporary files of the same target whose writer died are removed. :class:`Npz` reads
the zip directory and each member's ``.npy`` header (name, dtype, shape, size) before
any array data. :func:`check_writable` checks a path before a run;
:class:`ResultNotSaved` is the error of a finished run whose file could not be written.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
import zipfile
from typing import Optional

import numpy as np


class ResultNotSaved(OSError):
    """A run finished but its final file could not be written: ``.path`` names the
    file, ``.result`` holds the run's :class:`TrainResult` (save it elsewhere)."""

    def __init__(self, path, result, cause: BaseException):
        super().__init__(f"the run finished but {path} could not be written ({cause}); "
                         f"the result is in this error's .result")
        self.path, self.result = os.fspath(path), result


def float64_column_name(name: str) -> str:
    """The array (``.npz`` file, parts file, Parquet column) that holds column ``name``'s
    values as given: ``lrs_float64``."""
    return f"{name}_float64"


def float64_names(meta: dict, options) -> Optional[list]:
    """A header's ``float64`` (the columns, "lrs" or ``options``, whose values as given the
    file holds: ``[]`` when absent), or None when it is not a list of distinct such names."""
    names = meta.get("float64", [])
    if not isinstance(names, list) or not all(isinstance(k, str) and k in ("lrs", *options) for k in names) \
            or len(set(names)) != len(names):
        return None
    return names


def _target(path: str) -> str:
    """The file a write to ``path`` replaces: a symlink's target (resolved); ValueError
    for an existing target that is not a regular file (FIFO, device, socket, directory)."""
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a regular file")
        raise ValueError(f"{path} is {kind}; only a regular file is replaced")
    return real


def check_writable(what: str, path) -> None:
    """ValueError (``"{what}: ..."``) unless a file can be written at ``path``: its
    directory exists and is writable, and ``path`` is not a directory or another
    non-regular file. None passes. Run before the work whose result goes there."""
    if path is None:
        return
    path = os.fspath(path)
    try:
        real = _target(path)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise ValueError(f"{what}: directory {os.path.dirname(os.path.abspath(path))} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: directory {directory} is not writable")


#: A temporary file of a killed writer is removed by the next write of the same target
#: once it is this old (seconds) and its process is gone.
STALE_SECONDS = 5.0
_TMP = re.compile(r"\.(?P<base>.+)\.tmp-(?P<pid>\d+)-[0-9a-z_]+\.part\Z")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a name we cannot judge): keep its file
    return True


def _remove_stale(directory: str, base: str) -> None:
    """Remove the temporary files of writers of ``base`` that died mid-write."""
    now = time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = _TMP.match(name)
        if m is None or m["base"] != base:
            continue
        pid = int(m["pid"])
        tmp = os.path.join(directory, name)
        try:
            if pid == os.getpid() or _pid_alive(pid) or now - os.lstat(tmp).st_mtime < STALE_SECONDS:
                continue
            os.unlink(tmp)
        except OSError:
            pass


def atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The file gets the permissions of a new file (0666 less the umask), is flushed to
    disk, and so is the directory after the rename. A symlink at ``path`` stays: its
    target is replaced. An existing ``path`` that is not a regular file (FIFO, device,
    socket, directory) is refused (ValueError naming it) before anything is written.
    The temporary file is ``.{name}.tmp-{pid}-{random}.part``; those left by killed
    writers of the same target are removed.
    """
    path = os.fspath(path)
    real = _target(path)
    directory, base = os.path.split(real)
    _remove_stale(directory, base)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.tmp-{os.getpid()}-{os.urandom(6).hex()}.part")
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise _naming(exc, path) from None
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException as exc:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise _naming(exc, path) from None
        raise
    _fsync_dir(directory)


def _naming(exc: OSError, path: str) -> OSError:
    """``exc`` again, naming the target ``path`` (not the temporary file, or nothing:
    a full disk's ``[Errno 28]`` says no path at all)."""
    return type(exc)(exc.errno, exc.strerror or str(exc), path)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(fd)


def read_npy_header(f) -> tuple:
    """(shape, fortran_order, dtype) from an ``.npy`` stream at its start, leaving it at
    the data; ValueError for a format other than 1.0 and 2.0."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f".npy format version {version}")


class Npz:
    """An ``.npz`` archive checked before any data is read: a zip of uncompressed
    ``NAME.npy`` members, each exactly as long as its ``.npy`` header says, together no
    larger than the file. ``names`` comes from the zip directory, ``header(name)`` reads
    one member's (dtype, shape), ``read(name)`` its array (never a pickle). Errors:
    OSError, ValueError, zipfile.BadZipFile, EOFError."""

    def __init__(self, path):
        self.zip = zipfile.ZipFile(path)
        try:
            size = os.fstat(self.zip.fp.fileno()).st_size
            infos, total = {}, 0
            for info in self.zip.infolist():
                name = info.filename
                if not name.endswith(".npy") or name[:-4] in infos:
                    raise ValueError(f"unexpected archive member {name!r}")
                if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                    raise ValueError(f"archive member {name!r} is compressed")
                total += info.file_size
                infos[name[:-4]] = info
            if total > size:
                raise ValueError(f"archive members of {total} bytes in a file of {size}")
            self.infos, self._headers, self._fortran = infos, {}, {}
        except BaseException:
            self.zip.close()
            raise

    @property
    def names(self) -> set:
        return set(self.infos)

    def _open(self, name: str):
        info = self.infos[name]
        f = self.zip.open(info)
        try:
            shape, fortran, dtype = read_npy_header(f)
        except ValueError as exc:
            raise ValueError(f"array {name!r} has {exc}") from None
        if dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects")
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if f.tell() + need != info.file_size:
            raise ValueError(f"array {name!r} of shape {shape} is {info.file_size - f.tell()} bytes, not {need}")
        self._headers[name] = (dtype, tuple(shape))
        self._fortran[name] = fortran
        return f

    def header(self, name: str) -> tuple:
        """(dtype, shape) of member ``name``."""
        if name not in self._headers:
            self._open(name).close()
        return self._headers[name]

    def read(self, name: str) -> np.ndarray:
        with self._open(name) as f:
            dtype, shape = self._headers[name]
            flat = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
            view, done = memoryview(flat).cast("B"), 0
            while done < len(view):
                n = f.readinto(view[done:])
                if not n:
                    raise EOFError(f"array {name!r} is cut short")
                done += n
            if f.read(1):  # else at the member's end: the zip CRC is checked there
                raise ValueError(f"array {name!r} is longer than its header says")
        return np.ascontiguousarray(flat.reshape(shape, order="F" if self._fortran[name] else "C"))

    def close(self) -> None:
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: Largest JSON header read (bytes).
MAX_HEADER_BYTES = 1 << 20


def read_header(z: Npz, name: str) -> dict:
    """The JSON object in member ``name`` (uint8 bytes) of ``z``; KeyError when absent,
    ValueError when it is not one."""
    if name not in z.names:
        raise KeyError(name)
    dtype, shape = z.header(name)
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
        raise ValueError(f"header {name!r} is {dtype} {shape}, not JSON bytes")
    meta = json.loads(bytes(z.read(name)).decode())
    if not isinstance(meta, dict):
        raise ValueError(f"header {name!r} is not a JSON object")
    return meta


def check_arrays(z: Npz, expected: dict, *, optional=(), header: str) -> None:
    """ValueError unless the arrays of ``z`` other than the ``header`` member are those
    of ``expected`` (name: (dtype, shape)), those in ``optional`` maybe absent. Reads
    only the ``.npy`` headers."""
    names = z.names - {header}
    unexpected = sorted(names - set(expected))
    if unexpected:
        raise ValueError(f"unexpected array {unexpected[0]!r}")
    missing = sorted(set(expected) - names - set(optional))
    if missing:
        raise ValueError(f"missing arrays {missing}")
    for name in sorted(names):
        dtype, shape = z.header(name)
        want_dtype, want_shape = expected[name]
        if dtype != want_dtype or shape != tuple(want_shape):
            raise ValueError(f"array {name!r} is {dtype} {shape}, expected {np.dtype(want_dtype)} "
                             f"{tuple(want_shape)}")


def read_npz(path) -> dict:
    """The arrays of an ``.npz`` archive, read without pickle (ValueError for a plain ``.npy``)."""
    with Npz(path) as z:
        return {k: z.read(k) for k in sorted(z.names)}
