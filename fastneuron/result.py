"""TrainResult: what a run returns (SPEC §5), and its file format.

A result file is a NumPy ``.npz`` archive of plain arrays, read back with
``allow_pickle=False``, so loading never runs code. The member ``settings`` holds a
UTF-8 JSON document with the run's settings, ``format`` ("fastneuron-result"),
``format_version`` and the fastneuron version that wrote it. The arrays are:

=================  ========  ===========================================
name               dtype     shape / meaning
=================  ========  ===========================================
``seeds``          uint64    (M,)
``lrs``            float32   (M,)
``momentum``       float32   (M,)
``weight_decay``   float32   (M,)
``weight``         float32   (M,) final weight, NaN where diverged
``bias``           float32   (M,) final bias, NaN where diverged
``diverged_at``    int64     (M,) step that made w or b non-finite, else -1
``history_steps``  int64     (L,) logged steps (0, k, 2k, ...)
``history_weight`` float32   (L, M)
``history_bias``   float32   (L, M)
=================  ========  ===========================================
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

FORMAT = "fastneuron-result"
FORMAT_VERSION = 1
_ARRAYS = {
    "seeds": np.uint64, "lrs": np.float32, "momentum": np.float32, "weight_decay": np.float32,
    "weight": np.float32, "bias": np.float32, "diverged_at": np.int64,
    "history_steps": np.int64, "history_weight": np.float32, "history_bias": np.float32,
}


def population_risk(weight, bias, *, a: float, c: float, lo: float, hi: float) -> torch.Tensor:
    """R(w, b) = E_x[(w x + b - a x - c)^2] for x ~ U[lo, hi), in float64 (SPEC §5)."""
    dw = torch.as_tensor(weight).to(torch.float64) - a
    db = torch.as_tensor(bias).to(torch.float64) - c
    ex = (lo + hi) / 2.0
    ex2 = (lo * lo + lo * hi + hi * hi) / 3.0
    return dw * dw * ex2 + 2.0 * dw * db * ex + db * db


@dataclass
class TrainResult:
    """Final parameters of every member, and the history when ``log_every`` was given.

    Tensors live on the CPU. ``seeds`` is a uint64 NumPy array (torch has no full
    uint64 arithmetic). ``settings`` holds the run-wide settings: steps, batch_size,
    a, c, lo, hi, dampening, nesterov, log_every, backend, device.
    """

    seeds: np.ndarray
    lrs: torch.Tensor
    momentum: torch.Tensor
    weight_decay: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    diverged_at: torch.Tensor
    settings: dict
    history_steps: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    history_weight: Optional[torch.Tensor] = None
    history_bias: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.weight.numel()

    def __repr__(self) -> str:
        s = self.settings
        return (f"TrainResult(members={len(self)}, steps={s['steps']}, backend={s['backend']!r}, "
                f"diverged={int((self.diverged_at >= 0).sum())}, logged={len(self.history_steps)})")

    def _risk(self, w, b) -> torch.Tensor:
        s = self.settings
        # The x stream's support: lo32 + span32 * [0, 1).
        lo = float(np.float32(s["lo"]))
        hi = lo + float(np.float32(np.float64(s["hi"]) - np.float64(s["lo"])))
        return population_risk(w, b, a=float(np.float32(s["a"])), c=float(np.float32(s["c"])), lo=lo, hi=hi)

    @property
    def risk(self) -> torch.Tensor:
        """Final population risk of each member, float64 (M,); NaN where diverged."""
        return self._risk(self.weight, self.bias)

    @property
    def history_risk(self) -> Optional[torch.Tensor]:
        """Population risk at each logged step, float64 (L, M), or None without a log."""
        if self.history_weight is None:
            return None
        return self._risk(self.history_weight, self.history_bias)

    def member(self, i: int) -> torch.nn.Module:
        """Member ``i`` as the tutorial's network (``fc = nn.Linear(1, 1)``)."""
        from .notebook import Net

        if not -len(self) <= i < len(self):
            raise IndexError(f"member {i} out of range for {len(self)} members")
        net = Net()
        with torch.no_grad():
            net.fc.weight.fill_(float(self.weight[i]))
            net.fc.bias.fill_(float(self.bias[i]))
        return net

    def summary(self, by=("lr",), tol: float = 1e-4):
        """Per group of members (``by``: any of "lr", "momentum", "weight_decay", "seed"):
        count, fraction diverged, median and p10/p90 of the final population risk, and
        the median first logged step with risk below ``tol``. See :mod:`fastneuron.summary`."""
        from .summary import summarize

        return summarize(self, by=by, tol=tol)

    # -- files -----------------------------------------------------------------
    def save(self, path) -> None:
        """Write the result to ``path`` (``.npz``) atomically: a temporary file, then a rename."""
        from . import __version__

        arrays: dict[str, Any] = {
            "seeds": self.seeds, "lrs": self.lrs, "momentum": self.momentum,
            "weight_decay": self.weight_decay, "weight": self.weight, "bias": self.bias,
            "diverged_at": self.diverged_at, "history_steps": self.history_steps,
        }
        if self.history_weight is not None:
            arrays["history_weight"] = self.history_weight
            arrays["history_bias"] = self.history_bias
        arrays = {k: np.ascontiguousarray(np.asarray(v), dtype=_ARRAYS[k]) for k, v in arrays.items()}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastneuron_version": __version__,
                "settings": self.settings}
        arrays["settings"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_npz(path) -> dict:
    """The arrays of an ``.npz`` archive, read without pickle (ValueError for a plain ``.npy``)."""
    z = np.load(path, allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError("an .npy array, not an .npz archive")
    with z:
        return {k: z[k] for k in z.files}


def load(path) -> TrainResult:
    """Read a file written by :meth:`TrainResult.save`. No pickle is ever loaded."""
    try:
        data = read_npz(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a fastneuron result file ({exc})") from None
    try:
        meta = json.loads(bytes(data.pop("settings")).decode())
        ok = meta.get("format") == FORMAT
    except (KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: not a fastneuron result file (no '{FORMAT}' header)")
    version = meta.get("format_version")
    if not isinstance(version, int) or not isinstance(meta.get("settings"), dict):
        raise ValueError(f"{path}: broken '{FORMAT}' header (format_version {version!r}, "
                         f"settings of type {type(meta.get('settings')).__name__})")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {version} is newer than this "
                         f"fastneuron reads ({FORMAT_VERSION})")
    missing = [k for k in _ARRAYS if k not in data and not k.startswith("history_w") and k != "history_bias"]
    if ("history_weight" in data) != ("history_bias" in data):
        missing.append("history_bias" if "history_weight" in data else "history_weight")
    for k, v in data.items():
        if k not in _ARRAYS or v.dtype != _ARRAYS[k]:
            raise ValueError(f"{path}: unexpected array {k!r} of {v.dtype}")
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    m, n_logged = data["seeds"].shape[:1], data["history_steps"].shape[:1]
    shapes = {k: (n_logged + m if k.startswith("history_w") or k == "history_bias" else
                  n_logged if k == "history_steps" else m) for k in data}
    for k, v in data.items():
        if v.shape != shapes[k]:
            raise ValueError(f"{path}: array {k!r} has shape {v.shape}, expected {shapes[k]}")
    t = {k: torch.from_numpy(v.copy()) for k, v in data.items() if k != "seeds"}
    return TrainResult(
        seeds=data["seeds"].copy(), lrs=t["lrs"], momentum=t["momentum"], weight_decay=t["weight_decay"],
        weight=t["weight"], bias=t["bias"], diverged_at=t["diverged_at"], settings=meta["settings"],
        history_steps=t["history_steps"], history_weight=t.get("history_weight"),
        history_bias=t.get("history_bias"),
    )
