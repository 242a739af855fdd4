"""TrainResult: what a run returns (SPEC §5), and its file format.

A result file is a NumPy ``.npz`` archive of plain arrays, read back with
``allow_pickle=False``, so loading never runs code. The member ``settings`` holds a
UTF-8 JSON document with the run's settings, ``format`` ("fastneuron-result"),
``format_version``, ``member_options`` and the fastneuron version that wrote it. The
arrays are:

=================  ========  ===========================================
name               dtype     shape / meaning
=================  ========  ===========================================
``seeds``          uint64    (M,)
``lrs``            float32   (M,)
each option        float32   (M,) the optimizer's per-member options, named in the
                             header's ``member_options`` (SGD: ``momentum``,
                             ``weight_decay``; format 1 files have exactly those)
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

from .optim import run_option_names
from .problems import PROBLEMS, population_risk  # noqa: F401  (population_risk: re-exported)

FORMAT = "fastneuron-result"
#: 2: per-member options named in the header (``member_options``). 1: always momentum
#: and weight_decay (SGD), read as such.
FORMAT_VERSION = 2
_V1_MEMBER_OPTIONS = ("momentum", "weight_decay")
_ARRAYS = {
    "seeds": np.uint64, "lrs": np.float32,
    "weight": np.float32, "bias": np.float32, "diverged_at": np.int64,
    "history_steps": np.int64, "history_weight": np.float32, "history_bias": np.float32,
}


@dataclass
class TrainResult:
    """Final parameters of every member, and the history when ``log_every`` was given.

    Tensors live on the CPU. ``seeds`` is a uint64 NumPy array (torch has no full
    uint64 arithmetic). ``member_options`` holds the optimizer's per-member options by
    name, each also an attribute (SGD: ``result.momentum``, ``result.weight_decay``).
    ``settings`` holds the run-wide settings (``fastneuron.spec.RunSpec.settings``):
    steps, batch_size, log_every, optimizer and its options, problem and its options,
    backend, device.
    """

    seeds: np.ndarray
    lrs: torch.Tensor
    member_options: dict
    weight: torch.Tensor
    bias: torch.Tensor
    diverged_at: torch.Tensor
    settings: dict
    history_steps: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    history_weight: Optional[torch.Tensor] = None
    history_bias: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.weight.numel()

    def __getattr__(self, name: str):
        options = self.__dict__.get("member_options") or {}
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self) -> str:
        s = self.settings
        return (f"TrainResult(members={len(self)}, steps={s['steps']}, backend={s['backend']!r}, "
                f"diverged={int((self.diverged_at >= 0).sum())}, logged={len(self.history_steps)})")

    @property
    def problem(self):
        """The run's problem object (:mod:`fastneuron.problems`), from the settings."""
        cls = PROBLEMS[self.settings.get("problem", "linear")]
        return cls(**{k: self.settings[k] for k in run_option_names(cls)})

    def _risk(self, w, b) -> torch.Tensor:
        return self.problem.population_risk(w, b)

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
        from ._version import __version__

        arrays: dict[str, Any] = {
            "seeds": self.seeds, "lrs": self.lrs, "weight": self.weight, "bias": self.bias,
            "diverged_at": self.diverged_at, "history_steps": self.history_steps,
        }
        if self.history_weight is not None:
            arrays["history_weight"] = self.history_weight
            arrays["history_bias"] = self.history_bias
        dtypes = {**_ARRAYS, **dict.fromkeys(self.member_options, np.float32)}
        arrays.update(self.member_options)
        arrays = {k: np.ascontiguousarray(np.asarray(v), dtype=dtypes[k]) for k, v in arrays.items()}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastneuron_version": __version__,
                "member_options": list(self.member_options), "settings": self.settings}
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
    option_names = meta.get("member_options", list(_V1_MEMBER_OPTIONS)) if version >= 2 else _V1_MEMBER_OPTIONS
    if not isinstance(option_names, list | tuple) or not all(isinstance(k, str) and k not in _ARRAYS
                                                              for k in option_names):
        raise ValueError(f"{path}: broken '{FORMAT}' header (member_options {option_names!r})")
    dtypes = {**_ARRAYS, **dict.fromkeys(option_names, np.float32)}
    missing = [k for k in dtypes if k not in data and not k.startswith("history_w") and k != "history_bias"]
    if ("history_weight" in data) != ("history_bias" in data):
        missing.append("history_bias" if "history_weight" in data else "history_weight")
    for k, v in data.items():
        if k not in dtypes or v.dtype != dtypes[k]:
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
        seeds=data["seeds"].copy(), lrs=t["lrs"], member_options={k: t[k] for k in option_names},
        weight=t["weight"], bias=t["bias"], diverged_at=t["diverged_at"], settings=meta["settings"],
        history_steps=t["history_steps"], history_weight=t.get("history_weight"),
        history_bias=t.get("history_bias"),
    )
