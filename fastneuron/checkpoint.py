"""Checkpoints: the state of a run between two chunks, for an exact resume.

The counter-based random streams need no RNG state: a run is fully described by
its spec (:class:`~fastneuron.spec.RunSpec`) and, per member, its (w, b, optimizer
state, diverged_at) at a step. A checkpoint is an ``.npz`` archive (loaded with
``allow_pickle=False``) written atomically, like result files:

- ``meta``: UTF-8 JSON with ``format`` ("fastneuron-checkpoint"), ``format_version``,
  the fastneuron version, the run's settings (``RunSpec.run_settings``: what a resumed
  run must share; backend and device may change), ``members_digest``
  (``RunSpec.digest``), ``block_start``, ``block_stop``, ``step``;
- ``weight``, ``bias`` (float32), ``diverged_at`` (int64), all (M,): final for
  members before ``block_start``, at ``step`` for the block being trained;
- ``{name}_weight``, ``{name}_bias`` (float32 (M,)) for each of the optimizer's state
  names (SGD with momentum: ``buf_weight``, ``buf_bias``);
- ``history_weight``, ``history_bias`` (float32 (L, M)) when logging.

Format 1 (no ``format_version``) was SGD on the linear problem only; it resumes as such.

:func:`load_checkpoint` resumes a checkpoint exactly or refuses it with one line
(ValueError "resume: PATH ..."): the zip directory and each array's ``.npy`` header
are checked against the arrays above (names, dtypes, shapes for the run's M and L)
before any data is read; the position must be one the run passes through
(``0 <= block_start <= block_stop <= M``, ``0 <= step <= steps``, ints not bools, a
step where a chunk can start: ``step * batch_size % 4 == 0``), and ``diverged_at``
of the members trained so far a step they reached, or -1.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import torch

from .files import Npz, atomic_write, check_arrays, read_header

FORMAT = "fastneuron-checkpoint"
FORMAT_VERSION = 2
#: What a format 1 checkpoint's settings leave implicit.
_V1_DEFAULTS = {"optimizer": "sgd", "problem": "linear"}


def save_checkpoint(path, spec, *, block_start: int, block_stop: int, step: int, arrays: dict) -> None:
    """Write ``arrays`` (host tensors by name, None for absent ones) of run ``spec`` at
    the given position to ``path``, atomically."""
    meta = header(spec, block_start=block_start, block_stop=block_stop, step=step)
    data = {k: v.numpy() for k, v in arrays.items() if v is not None}
    data["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **data))


def header(spec, *, block_start: int, block_stop: int, step: int) -> dict:
    """A checkpoint's header (``meta``): also a parts directory's ``progress.json``."""
    from ._version import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "fastneuron_version": __version__,
            "settings": spec.run_settings, "members_digest": spec.digest,
            "block_start": block_start, "block_stop": block_stop, "step": step}


def load_checkpoint(path, spec) -> tuple[dict, dict]:
    """(meta, arrays) of a checkpoint that belongs to run ``spec`` and that it resumes
    exactly; ValueError ("resume: PATH ...", one line) otherwise.

    The zip directory, the header and every array's ``.npy`` header are checked
    before any array data is read: the names, dtypes and shapes are those run ``spec``
    writes, and the position is one it can resume from (``0 <= block_start <=
    block_stop <= M``, ``0 <= step <= steps``, a step where a chunk can start:
    ``step * batch_size % 4 == 0``)."""
    try:
        z = Npz(path)
    except FileNotFoundError:
        raise ValueError(f"resume: no checkpoint at {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"resume: {path} is not a fastneuron checkpoint ({_one_line(exc)})") from None
    with z:
        try:
            meta = read_header(z, "meta")
        except KeyError:
            raise ValueError(f"resume: {path} is not a fastneuron checkpoint (it has no 'meta' header)") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"resume: {path} is not a fastneuron checkpoint ({_one_line(exc)})") from None
        check_header(path, meta, spec)
        try:
            check_arrays(z, expected_arrays(spec), header="meta")
            arrays = {k: torch.from_numpy(z.read(k)) for k in sorted(z.names - {"meta"})}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"resume: {path} is a broken fastneuron checkpoint ({_one_line(exc)})") from None
    _check_values(path, meta, spec, arrays)
    return meta, arrays


def expected_arrays(spec) -> dict:
    """The arrays (name: (dtype, shape)) a checkpoint of run ``spec`` holds."""
    m = len(spec)
    wshape = spec.model.weight_shape(m)  # (M,), or (d, M) for d > 1: training's layout (SPEC §6)
    names = ["bias", *(f"{s}_bias" for s in spec.state_names())]
    expected = {**{k: (np.float32, (m,)) for k in names}, "diverged_at": (np.int64, (m,))}
    expected.update({k: (np.float32, wshape) for k in ["weight", *(f"{s}_weight" for s in spec.state_names())]})
    if spec.log_every:
        expected.update(history_weight=(np.float32, (spec.n_logged, *wshape)),
                        history_bias=(np.float32, (spec.n_logged, m)))
    return expected


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def check_header(path, meta: dict, spec) -> None:
    """ValueError (\"resume: PATH ...\") unless ``meta`` is a checkpoint header run ``spec`` resumes."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"resume: {path} is not a fastneuron checkpoint")
    version = meta.get("format_version", 1)
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"resume: {path} has checkpoint format version {version!r}; this fastneuron reads "
                         f"versions 1 to {FORMAT_VERSION}")
    if not isinstance(meta.get("settings"), dict) or not isinstance(meta.get("members_digest"), str) or not all(
            type(meta.get(k)) is int for k in ("block_start", "block_stop", "step")):
        raise ValueError(f"resume: {path} is a broken fastneuron checkpoint (its header lacks settings or position)")
    theirs = {**_V1_DEFAULTS, **meta["settings"]} if version == 1 else meta["settings"]
    ours = spec.run_settings
    if theirs != ours:
        diff = sorted(k for k in {*ours, *theirs} if theirs.get(k) != ours.get(k))
        raise ValueError(f"resume: {path} was written by a run with other settings ({', '.join(diff)}: "
                         + ", ".join(f"{k}={theirs.get(k)!r} there, {ours.get(k)!r} here" for k in diff) + ")")
    if meta["members_digest"] != spec.digest:
        raise ValueError(f"resume: {path} was written by a run with other members "
                         f"(seeds, lrs or {', '.join(spec.member_options) or 'options'} differ)")
    m, steps = len(spec), spec.steps
    b0, b1, t = meta["block_start"], meta["block_stop"], meta["step"]
    where = f"block_start={b0}, block_stop={b1}, step={t}"
    if not 0 <= b0 <= b1 <= m:
        raise ValueError(f"resume: {path} is a broken fastneuron checkpoint ({where}: members must satisfy "
                         f"0 <= block_start <= block_stop <= {m})")
    if not 0 <= t <= steps:
        raise ValueError(f"resume: {path} is a broken fastneuron checkpoint ({where}: step must be in [0, {steps}])")
    if b0 == m and t != steps or b0 < m and b0 == b1:
        raise ValueError(f"resume: {path} is a broken fastneuron checkpoint ({where}: no run stops there)")
    if t < steps and t * spec.batch_size % 4:
        raise ValueError(f"resume: {path} is a broken fastneuron checkpoint ({where}: a chunk of steps cannot "
                         f"start at step {t} with batch_size {spec.batch_size}; step * batch_size must be a "
                         f"multiple of 4)")


def _check_values(path, meta: dict, spec, arrays: dict) -> None:
    """diverged_at of the members trained so far names a step they have reached, or -1."""
    check_diverged(path, meta, spec, lambda a, b: arrays["diverged_at"][a:b])


def check_diverged(path, meta: dict, spec, read) -> None:
    """diverged_at (``read(start, stop)``: members [start, stop)) of the members trained
    so far names a step they have reached, or -1; read in pieces of 2**22 members."""
    b0, b1, t = meta["block_start"], meta["block_stop"], meta["step"]
    bad = False
    for a in range(0, b0, 1 << 22):
        done = read(a, min(b0, a + (1 << 22)))
        bad |= bool((done < -1).any() | (done >= spec.steps).any())
    if t:
        block = read(b0, b1)
        bad |= bool((block < -1).any() | (block >= t).any())
    if bad:
        raise ValueError(f"resume: {path} is a broken fastneuron checkpoint (diverged_at holds a step the "
                         f"members have not reached)")
