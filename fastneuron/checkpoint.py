"""Checkpoints: the state of a run between two chunks, for an exact resume.

The counter-based random streams need no RNG state: a run is fully described by
its settings, its members and, per member, (w, b, momentum buffers, diverged_at)
at a step. A checkpoint is an ``.npz`` archive (loaded with ``allow_pickle=False``)
written atomically, like result files:

- ``meta``: UTF-8 JSON with ``format`` ("fastneuron-checkpoint"), the fastneuron
  version, the run-wide settings, ``members_digest`` (SHA-256 of the seeds and
  per-member hyperparameters), ``block_start``, ``block_stop``, ``step``;
- ``weight``, ``bias`` (float32), ``diverged_at`` (int64), all (M,): final for
  members before ``block_start``, at ``step`` for the block being trained;
- ``buf_weight``, ``buf_bias`` (float32 (M,)) when momentum is on;
- ``history_weight``, ``history_bias`` (float32 (L, M)) when logging.
"""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import torch

from .result import atomic_write, read_npz

FORMAT = "fastneuron-checkpoint"
#: Settings that must match for a resume; backend and device may change, since
#: every backend computes the same numbers.
RUN_KEYS = ("steps", "batch_size", "a", "c", "lo", "hi", "dampening", "nesterov", "log_every")


def members_digest(*arrays: torch.Tensor, sample: bool = False) -> str:
    """SHA-256 of the members' seeds and hyperparameters. ``sample``: only every k-th
    member beyond 2**20 (a cheap fingerprint, for ranks to compare their arguments;
    checkpoints use the full digest)."""
    h = hashlib.sha256(str(arrays[0].numel()).encode())
    for x in arrays:
        h.update(str(x.dtype).encode())
        h.update(x[::max(1, x.numel() >> 20) if sample else 1].contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path, *, settings: dict, digest: str, block_start: int, block_stop: int,
                    step: int, arrays: dict) -> None:
    from . import __version__

    meta = {"format": FORMAT, "fastneuron_version": __version__,
            "settings": {k: settings[k] for k in RUN_KEYS}, "members_digest": digest,
            "block_start": block_start, "block_stop": block_stop, "step": step}
    data = {k: v.numpy() for k, v in arrays.items() if v is not None}
    data["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **data))


def load_checkpoint(path, *, settings: dict, digest: str) -> tuple[dict, dict]:
    """(meta, arrays) of a checkpoint that belongs to this run; ValueError otherwise."""
    try:
        data = read_npz(path)
        meta = json.loads(bytes(data.pop("meta")).decode())
    except FileNotFoundError:
        raise ValueError(f"resume: no checkpoint at {path}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"resume: {path} is not a fastneuron checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"resume: {path} is not a fastneuron checkpoint")
    if not isinstance(meta.get("settings"), dict) or not isinstance(meta.get("members_digest"), str) or not all(
            isinstance(meta.get(k), int) for k in ("block_start", "block_stop", "step")):
        raise ValueError(f"resume: {path} is a broken fastneuron checkpoint (its header lacks settings or position)")
    ours = {k: settings[k] for k in RUN_KEYS}
    if meta["settings"] != ours:
        diff = sorted(k for k in RUN_KEYS if meta["settings"].get(k) != ours[k])
        raise ValueError(f"resume: {path} was written by a run with other settings ({', '.join(diff)}: "
                         + ", ".join(f"{k}={meta['settings'].get(k)!r} there, {ours[k]!r} here" for k in diff) + ")")
    if meta["members_digest"] != digest:
        raise ValueError(f"resume: {path} was written by a run with other members "
                         "(seeds, lrs, momentum or weight_decay differ)")
    return meta, {k: torch.from_numpy(v.copy()) for k, v in data.items()}
