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
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import torch

from .result import atomic_write, read_npz

FORMAT = "fastneuron-checkpoint"
FORMAT_VERSION = 2
#: What a format 1 checkpoint's settings leave implicit.
_V1_DEFAULTS = {"optimizer": "sgd", "problem": "linear"}


def save_checkpoint(path, spec, *, block_start: int, block_stop: int, step: int, arrays: dict) -> None:
    """Write ``arrays`` (host tensors by name, None for absent ones) of run ``spec`` at
    the given position to ``path``, atomically."""
    from ._version import __version__

    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastneuron_version": __version__,
            "settings": spec.run_settings, "members_digest": spec.digest,
            "block_start": block_start, "block_stop": block_stop, "step": step}
    data = {k: v.numpy() for k, v in arrays.items() if v is not None}
    data["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **data))


def load_checkpoint(path, spec) -> tuple[dict, dict]:
    """(meta, arrays) of a checkpoint that belongs to run ``spec``; ValueError otherwise."""
    try:
        data = read_npz(path)
        meta = json.loads(bytes(data.pop("meta")).decode())
    except FileNotFoundError:
        raise ValueError(f"resume: no checkpoint at {path}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"resume: {path} is not a fastneuron checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"resume: {path} is not a fastneuron checkpoint")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"resume: {path} has checkpoint format version {version!r}; this fastneuron reads "
                         f"versions 1 to {FORMAT_VERSION}")
    if not isinstance(meta.get("settings"), dict) or not isinstance(meta.get("members_digest"), str) or not all(
            isinstance(meta.get(k), int) for k in ("block_start", "block_stop", "step")):
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
    return meta, {k: torch.from_numpy(v.copy()) for k, v in data.items()}
