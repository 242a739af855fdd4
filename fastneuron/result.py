"""TrainResult: what a run returns (SPEC §5), its file format, and safe file writes.

A result file is a NumPy ``.npz`` archive of plain arrays (uncompressed members),
read back without pickle, so loading never runs code. The member ``settings`` holds
a UTF-8 JSON document with the run's settings, ``format`` ("fastneuron-result"),
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
``weight``         float32   (M,) final weight, NaN where diverged; (M, d) for a
                             run whose settings say ``inputs`` d > 1 (SPEC §6f)
``bias``           float32   (M,) final bias, NaN where diverged
``diverged_at``    int64     (M,) step that made w or b non-finite, else -1
``history_steps``  int64     (L,) logged steps (0, k, 2k, ...)
``history_weight`` float32   (L, M), only with a log; (L, M, d) for d > 1
``history_bias``   float32   (L, M), only with a log
``<name>_float64`` float64   (M,) the values as given of a per-member column
                             ``<name>`` ("lrs", an option) that torch.optim's
                             arithmetic uses in float64 (SPEC §3c, §3d), named in
                             the header's ``float64`` list; only where some member's
                             value is not a float32 value (absent otherwise)
=================  ========  ===========================================

:func:`load` checks the zip directory, the header (``format_version`` an int >= 1,
``settings`` that describe the problem) and each array's ``.npy`` header (name,
dtype, shape, size) before it reads any array data (:class:`Npz`); anything else is
a ValueError naming the file. Checkpoints (:mod:`fastneuron.checkpoint`) are read
the same way.

:func:`atomic_write` writes results and checkpoints: a temporary file beside the
target, fsynced, renamed onto it, the directory fsynced; permissions 0666 less the
umask; a symlink's target is replaced, a FIFO, device, socket or directory is
refused. :func:`check_writable` checks a path before a run; :class:`ResultNotSaved`
is the error of a finished run whose file could not be written.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from .files import (  # noqa: F401  (ResultNotSaved, check_writable, float64_column_name: re-exported)
    Npz, ResultNotSaved, atomic_write, check_arrays, check_writable, float64_column_name, float64_names, read_header)
from .members import is_column
from .model import Neuron, settings_model  # noqa: F401  (settings_model: re-exported)
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

    Tensors live on the CPU; M is the number of members, L the number of logged steps.

    Attributes:
        seeds: uint64 NumPy array (M,), each member's seed (torch has no full uint64
            arithmetic).
        lrs: float32 tensor (M,), each member's learning rate.
        member_options: dict of the optimizer's per-member options by name, each a
            float32 tensor (M,) and also an attribute (SGD: ``result.momentum``,
            ``result.weight_decay``), then the problem's that some member uses
            (``noise``, when label noise is on).
        weight: float32 tensor (M,), the final weight; NaN where the member diverged.
            (M, d) for a run with ``inputs`` d > 1 (``nn.Linear(d, 1)``, SPEC §6f).
        bias: float32 tensor (M,), the final bias; NaN where the member diverged.
        diverged_at: int64 tensor (M,), the step (0-based) that made w or b
            non-finite, or -1 for a member that never diverged (``diverged_at == -1``
            selects the members whose ``weight``/``bias`` are finite).
        settings: dict of the run-wide settings (``fastneuron.spec.RunSpec.settings``):
            steps, batch_size, log_every, optimizer and its options, problem and its
            options, backend, device.
        history_steps: int64 tensor (L,), the logged steps 0, k, 2k, ... (empty
            without a log).
        history_weight: float32 tensor (L, M), the weight after each logged step
            (row i after step ``history_steps[i]``), NaN from a member's divergence on;
            None without a log. (L, M, d) for d > 1.
        history_bias: float32 tensor (L, M), likewise for the bias; None without a log.
        float64: dict of float64 tensors (M,) by column name ("lrs", an option): the
            values as given of the columns whose float64 value torch.optim's arithmetic
            uses (SPEC §3c, §3d: Adam's and a schedule's lr, RMSprop's alpha, AdamW's
            weight_decay), for those where some member's value is not a float32 value
            (empty otherwise); ``lrs`` and ``member_options`` hold their float32 rounding.
            ``train(seeds, result.float64.get("lrs", result.lrs), ...)`` gives the run again.

    A grid's columns (:func:`fastneuron.grid`, or seeds given as a ``range``) stay a
    description until read: ``seeds``, ``lrs`` and ``member_options`` are expanded on
    first access, and ``described`` gives their JSON.

    Derived: ``risk`` (float64 (M,)) and ``history_risk`` (float64 (L, M)), the
    population risk of the run's ``problem`` (SPEC §5, §6f); ``model`` (the run's
    :class:`~fastneuron.model.Neuron`) and ``inputs`` (its d); ``member(i)``; ``summary()``;
    ``save(path)`` (read back with :func:`load`); ``to_pandas()``, ``to_xarray()``,
    ``to_parquet(path)`` (:mod:`fastneuron.tables`, ``pip install 'fastneuron[analysis]'``).
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
    float64: dict = field(default_factory=dict)

    def __post_init__(self):
        # A grid's columns (fastneuron.members) stay described until read: the fields
        # leave the instance, and __getattr__ expands them on first access.
        described = {k: v for k, v in (("seeds", self.seeds), ("lrs", self.lrs), *self.member_options.items(),
                                       *((float64_column_name(n), x) for n, x in self.float64.items()))
                     if is_column(v)}
        if not described:
            return
        self.__dict__["_described"] = described
        lazy = [k for k in ("seeds", "lrs") if k in described]
        if {k for k in described if k not in ("seeds", "lrs")} - set(map(float64_column_name, self.float64)):
            lazy.append("member_options")  # the dict is expanded whole, on first access
        if any(is_column(x) for x in self.float64.values()):
            lazy.append("float64")
        for k in lazy:
            self.__dict__["_lazy_" + k] = self.__dict__.pop(k)

    @property
    def described(self) -> dict:
        """The per-member columns given as a grid's description (name: JSON, see
        :meth:`fastneuron.members.GridColumn.to_json`); empty for explicit arrays."""
        return {k: v.to_json() for k, v in self.__dict__.get("_described", {}).items()}

    def __len__(self) -> int:
        return self.weight.shape[0] if self.weight.dim() else 1

    def __getattr__(self, name: str):
        d = self.__dict__
        if "_lazy_" + name in d:  # a described column, expanded once
            value = d["_lazy_" + name]
            if name == "seeds":
                value = value.numpy()
            elif name == "lrs":
                value = torch.from_numpy(value.numpy())
            elif name == "float64":
                value = {k: torch.from_numpy(v.numpy()) if is_column(v) else v for k, v in value.items()}
            else:
                value = {k: torch.from_numpy(v.numpy()) if is_column(v) else v for k, v in value.items()}
            d[name] = value
            del d["_lazy_" + name]
            return value
        if name.startswith("_") or "member_options" not in d and "_lazy_member_options" not in d:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        options = self.member_options
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self) -> str:
        s = self.settings
        inputs = f", inputs={s['inputs']}" if s.get("inputs", 1) != 1 else ""
        return (f"TrainResult(members={len(self)}{inputs}, steps={s['steps']}, backend={s['backend']!r}, "
                f"diverged={int((self.diverged_at >= 0).sum())}, logged={len(self.history_steps)})")

    @property
    def problem(self):
        """The run's problem object (:mod:`fastneuron.problems`), from the settings, bound
        to the run's model."""
        return _settings_problem(self.settings)

    @property
    def model(self) -> Neuron:
        """The run's model (:class:`fastneuron.model.Neuron`: inputs, bias, activation,
        loss, leaky_slope), from the settings."""
        return settings_model(self.settings)

    @property
    def inputs(self) -> int:
        """d, the inputs of each member's ``nn.Linear(d, 1)`` (1 for a v2 run)."""
        return self.model.inputs

    def _risk(self, w, b) -> torch.Tensor:
        return self.problem.population_risk(w, b, self.member_options)

    @property
    def risk(self) -> torch.Tensor:
        """Final population risk of each member, float64 (M,); NaN where diverged. For the
        identity with mse the closed form (SPEC §5, §6f), otherwise the mean loss on the
        problem's evaluation set (``eval_samples`` draws, the same for every member)."""
        return self._risk(self.weight, self.bias)

    @property
    def history_risk(self) -> Optional[torch.Tensor]:
        """Population risk at each logged step, float64 (L, M), or None without a log."""
        if self.history_weight is None:
            return None
        return self._risk(self.history_weight, self.history_bias)

    def member(self, i: int) -> torch.nn.Module:
        """Member ``i`` as a torch module holding its trained float32 values: for a v2 run
        (one input, a bias, the identity) the tutorial's network (``fc = nn.Linear(1, 1)``,
        :class:`fastneuron.notebook.Net`); otherwise ``nn.Sequential(nn.Linear(d, 1,
        bias=bias), activation)`` with the activation as a module (``nn.Identity``,
        ``nn.ReLU``, ``nn.LeakyReLU(leaky_slope)``, ``nn.Sigmoid``, ``nn.Tanh``, and
        :class:`Erf`, :class:`Abs`, :class:`Square`). With ``loss="bce"`` the output is the
        logit z (``nn.BCEWithLogitsLoss``'s input)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"member {i} out of range for {len(self)} members")
        model = self.model
        weight, bias = self.weight[i], self.bias[i]
        if (model.inputs, model.bias, model.activation) == (1, True, "identity"):
            from .notebook import Net

            net = Net()
            with torch.no_grad():
                net.fc.weight.fill_(float(weight))
                net.fc.bias.fill_(float(bias))
            return net
        linear = torch.nn.Linear(model.inputs, 1, bias=model.bias)
        with torch.no_grad():
            linear.weight.copy_(weight.reshape(1, model.inputs))
            if model.bias:
                linear.bias.fill_(float(bias))
        return torch.nn.Sequential(linear, activation_module(model.activation, model.leaky_slope))

    def summary(self, by=("lr",), tol: float = 1e-4):
        """Per group of members (``by``: any of "lr", "momentum", "weight_decay", "seed"):
        count, fraction diverged, median and p10/p90 of the final population risk, and
        the median first logged step with risk below ``tol``. See :mod:`fastneuron.summary`."""
        from .summary import summarize

        return summarize(self, by=by, tol=tol)

    # -- labeled data (optional: pip install 'fastneuron[analysis]') -------------
    def to_pandas(self, history: bool = False, tol: float = 1e-4):
        """A pandas DataFrame: one row per member, or with ``history=True`` one per
        (member, step). See :func:`fastneuron.tables.to_pandas`."""
        from .tables import to_pandas

        return to_pandas(self, history=history, tol=tol)

    def to_xarray(self, grid=None, tol: float = 1e-4):
        """An xarray Dataset, one dimension per grid axis (else ``member``), plus
        ``step`` for the history. See :func:`fastneuron.tables.to_xarray`."""
        from .tables import to_xarray

        return to_xarray(self, grid=grid, tol=tol)

    def to_parquet(self, path, tol: float = 1e-4) -> None:
        """Write a Parquet file atomically (read back by :func:`load`). See
        :func:`fastneuron.tables.to_parquet`."""
        from .tables import to_parquet

        to_parquet(self, path, tol=tol)

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
        float64 = {float64_column_name(k): v for k, v in self.float64.items()}
        dtypes = {**_ARRAYS, **dict.fromkeys(self.member_options, np.float32), **dict.fromkeys(float64, np.float64)}
        arrays.update(self.member_options)
        arrays.update(float64)
        arrays = {k: np.ascontiguousarray(np.asarray(v), dtype=dtypes[k]) for k, v in arrays.items()}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastneuron_version": __version__,
                "member_options": list(self.member_options), "settings": self.settings}
        if self.float64:  # (absent otherwise: such a result is the file it was before they were kept)
            meta["float64"] = list(self.float64)
        if self.described:  # how the members were built (the arrays are saved anyway)
            meta["described"] = self.described
        arrays["settings"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path) -> TrainResult:
    """Read a file written by :meth:`TrainResult.save` or :meth:`TrainResult.to_parquet`
    (told apart by the Parquet magic; Parquet needs pyarrow). No pickle is ever loaded.

    The zip directory, the header and every array's ``.npy`` header (names, dtypes,
    shapes, sizes) are checked before any array data is read (a Parquet file: its
    metadata, column names and types); anything else is a ValueError naming ``path``."""
    from .tables import is_parquet

    if is_parquet(path):
        from .tables import read_parquet_fields

        fields = read_parquet_fields(path)
        try:
            _settings_problem(fields["settings"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: broken Parquet result metadata (settings do not describe the problem: "
                             f"{type(exc).__name__} {exc})") from None
        return TrainResult(**fields)
    try:
        z = Npz(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a fastneuron result file ({exc})") from None
    with z:
        try:
            meta = read_header(z, "settings")
            ok = meta.get("format") == FORMAT
        except (KeyError, ValueError, EOFError, zipfile.BadZipFile, OSError):
            ok = False
        if not ok:
            raise ValueError(f"{path}: not a fastneuron result file (no '{FORMAT}' header)")
        version = meta.get("format_version")
        if type(version) is not int or version < 1 or not isinstance(meta.get("settings"), dict):
            raise ValueError(f"{path}: broken '{FORMAT}' header (format_version {version!r}, "
                             f"settings of type {type(meta.get('settings')).__name__})")
        if version > FORMAT_VERSION:
            raise ValueError(f"{path}: format version {version} is newer than this "
                             f"fastneuron reads ({FORMAT_VERSION})")
        option_names = meta.get("member_options", list(_V1_MEMBER_OPTIONS)) if version >= 2 else _V1_MEMBER_OPTIONS
        if not isinstance(option_names, list | tuple) or not all(
                isinstance(k, str) and k not in _ARRAYS and k != "settings" for k in option_names) \
                or len(set(option_names)) != len(option_names):
            raise ValueError(f"{path}: broken '{FORMAT}' header (member_options {option_names!r})")
        names64 = float64_names(meta, option_names)
        if names64 is None:
            raise ValueError(f"{path}: broken '{FORMAT}' header (float64 {meta['float64']!r})")
        settings = meta["settings"]
        try:
            _settings_problem(settings)
            d = settings_model(settings).inputs
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: broken '{FORMAT}' header (settings do not describe the problem: "
                             f"{type(exc).__name__} {exc})") from None
        try:
            m = z.header("seeds")[1][:1] if "seeds" in z.names else ()
            n_logged = z.header("history_steps")[1][:1] if "history_steps" in z.names else ()
            inner = (d,) if d > 1 else ()  # the weight's coordinates: only when the settings say inputs=d
            expected = {k: (dtype, n_logged + m if k in ("history_weight", "history_bias") else
                               n_logged if k == "history_steps" else m)
                        for k, dtype in {**_ARRAYS, **dict.fromkeys(option_names, np.float32),
                                         **dict.fromkeys(map(float64_column_name, names64),
                                                         np.float64)}.items()}
            expected["weight"] = (np.float32, m + inner)
            expected["history_weight"] = (np.float32, n_logged + m + inner)
            names = z.names
            if ("history_weight" in names) != ("history_bias" in names):
                absent = "history_bias" if "history_weight" in names else "history_weight"
                raise ValueError(f"missing arrays {[absent]}")
            check_arrays(z, expected, optional=("history_weight", "history_bias"), header="settings")
            data = {k: z.read(k) for k in sorted(names - {"settings"})}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path}: not a fastneuron result file ({exc})") from None
    t = {k: torch.from_numpy(v) for k, v in data.items() if k != "seeds"}
    return TrainResult(
        seeds=data["seeds"], lrs=t["lrs"], member_options={k: t[k] for k in option_names},
        weight=t["weight"], bias=t["bias"], diverged_at=t["diverged_at"], settings=settings,
        history_steps=t["history_steps"], history_weight=t.get("history_weight"),
        history_bias=t.get("history_bias"), float64={k: t[float64_column_name(k)] for k in names64},
    )


class Erf(torch.nn.Module):
    """``erf(z / sqrt(2))``, the ``"erf"`` activation (SPEC §6e), as a module."""

    def forward(self, z):
        return torch.erf(z * (1.0 / 2.0 ** 0.5))


class Abs(torch.nn.Module):
    """``|z|``, the ``"abs"`` activation, as a module."""

    def forward(self, z):
        return torch.abs(z)


class Square(torch.nn.Module):
    """``z * z``, the ``"square"`` activation, as a module."""

    def forward(self, z):
        return z * z


def activation_module(name: str, leaky_slope: float = 0.01) -> torch.nn.Module:
    """The torch module of activation ``name`` (SPEC §6e)."""
    simple = {"identity": torch.nn.Identity, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid,
              "tanh": torch.nn.Tanh, "erf": Erf, "abs": Abs, "square": Square}
    if name == "leaky_relu":
        return torch.nn.LeakyReLU(negative_slope=float(leaky_slope))
    return simple[name]()


def weight_shape(settings: dict, m: int, n_logged: Optional[int] = None) -> tuple:
    """The shape of a result's ``weight`` for ``m`` members ((M,), or (M, d) when the
    settings say ``inputs`` d > 1), or of its ``history_weight`` with ``n_logged`` rows."""
    d = settings_model(settings).inputs
    shape = (m,) if d == 1 else (m, d)
    return shape if n_logged is None else (n_logged, *shape)


def _settings_problem(settings: dict):
    """The problem object ``settings`` describe, bound to the model they describe
    (KeyError, TypeError or ValueError when they do not)."""
    cls = PROBLEMS[settings.get("problem", "linear")]
    # What a default problem records is required (a None there, as the teacher's activation
    # of its own, is not); options recorded only when used (Gaussian x's, when x is
    # uniform) take their defaults when absent.
    required = {k for k, v in cls().settings().items() if v is not None}
    problem = cls(**{k: settings[k] for k in run_option_names(cls) if k in settings or k in required})
    bind = getattr(problem, "bind", None)
    return problem if bind is None else bind(settings_model(settings))
