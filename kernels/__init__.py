"""The backends: their registry and the stepper protocol they implement.

================  =======================  =============================================
name              module                   what it is
================  =======================  =============================================
``eager``         :mod:`.eager`            the reference itself (any optimizer, problem)
``compile``       :mod:`.compiled`         chunks of the reference under ``torch.compile``
``triton``        :mod:`.triton_sgd`       one Triton kernel, every step in registers (SGD;
                                           Adam, AdamW and RMSprop in :mod:`.triton_adam`,
                                           shared pieces in :mod:`.triton_common`; SPEC §6's
                                           neuron beyond v2's and the teacher problem in
                                           :mod:`.triton_neuron`)
================  =======================  =============================================

A backend is a :class:`Stepper`: the engine (:mod:`fastneuron.engine`) hands it a
block of members and asks it to advance them by a chunk of steps at a time, so that
it can show progress and checkpoint between chunks. Backends never see the run's
spec, only the block's tensors and the static :class:`~fastneuron.reference.StepConfig`.

This module imports neither torch nor triton at load time (the CLI's ``--help``
reads :data:`BACKENDS`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:
    import torch

    from fastneuron.reference import Constants, History, Members, State, StepConfig


class Stepper(Protocol):
    """A backend's one call signature.

    ``chunk_steps``: the steps the engine asks for per call (fewer at the end of a run).

    ``init(members, config)``: the initial (weight, bias), float32 (M,) each, from the
    init stream (SPEC §2).

    ``stepper(state, t0, members, consts, nsteps=, config=, history=)``: steps
    ``t0 .. t0 + nsteps - 1`` (``t0`` a Python int with ``t0 * B % 4 == 0``) of every
    member in the block; returns the new :class:`~fastneuron.reference.State` (the
    stepper may update ``state``'s tensors in place and return them). ``history``
    (None or a :class:`~fastneuron.reference.History`) gets the rows of the logged
    steps among them. Members that diverge report the step in ``diverged_at``; their
    w and b may hold any value from then on (the engine reports NaN).

    ``dense_members`` (optional, True when absent): whether the stepper needs each
    member's values in contiguous tensors. False: it takes
    :class:`~fastneuron.reference.Members` as the engine builds them, shared values
    expanded (stride 0) and a seed range's low words as ``s_lo_step`` (the Triton
    kernels, which read them so); True: the engine hands it
    :func:`~fastneuron.reference.dense_members` of each block.
    """

    chunk_steps: int

    def init(self, members: Members, config: StepConfig) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __call__(self, state: State, t0: int, members: Members, consts: Constants, *, nsteps: int,
                 config: StepConfig, history: Optional[History]) -> State: ...


@dataclass(frozen=True)
class Backend:
    """A registry entry: where the stepper lives and what it can run."""

    module: str
    stepper: str
    optimizers: Optional[tuple[str, ...]] = None  # names it has kernels for; None: any
    problems: Optional[tuple[str, ...]] = None
    neuron: bool = True  # runs SPEC §6's whole neuron (d inputs, activations, bce, no bias); else v2's only


BACKENDS: dict[str, Backend] = {
    "eager": Backend("fastneuron.kernels.eager", "EagerStepper"),
    "compile": Backend("fastneuron.kernels.compiled", "CompiledStepper"),
    "triton": Backend("fastneuron.kernels.triton_neuron", "TritonStepper",
                      optimizers=("sgd", "adam", "adamw", "rmsprop"), problems=("linear", "teacher")),
}
#: What ``train(backend=...)`` accepts.
BACKEND_CHOICES = ("auto", *BACKENDS)


def unavailable(name: str, device: torch.device, optimizer: str = "sgd", problem: str = "linear",
                model: Optional[dict] = None) -> Optional[str]:
    """None when backend ``name`` can run this optimizer, problem and model (the model's
    settings that differ from v2's neuron, ``Neuron.settings()``) on ``device``, else why not."""
    entry = BACKENDS[name]
    if model and not entry.neuron:
        key = next(iter(model))
        return f"it has no kernel for {key}={model[key]!r} yet (it runs v2's one-input neuron)"
    if entry.optimizers is not None and optimizer not in entry.optimizers:
        return f"it has no kernel for optimizer {optimizer!r} (it has {', '.join(entry.optimizers)})"
    if entry.problems is not None and problem not in entry.problems:
        return f"it has no kernel for problem {problem!r} (it has {', '.join(entry.problems)})"
    if name == "triton":
        if sys.platform != "linux":
            return "Triton is only installed on Linux"
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton needs a CUDA device (or TRITON_INTERPRET=1, set before import, on CPU)"
    if name == "compile":
        if device.type == "cpu" and not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")):
            return "torch.compile on CPU needs a C++ compiler (g++), and none is on PATH"
        if device.type == "cuda" and importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs triton"
    return None


_warned: set = set()


def resolve(name: str, device: torch.device, optimizer: str = "sgd", problem: str = "linear",
            model: Optional[dict] = None) -> str:
    """The backend to run: ``name`` itself (ValueError when it cannot run), or for
    ``auto`` triton on CUDA, compile on CPU, eager (with one warning) when neither runs."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, ('auto', *BACKENDS)))}; got {name!r}")
    if name != "auto":
        why = unavailable(name, device, optimizer, problem, model)
        if why:
            raise ValueError(f"backend {name!r} cannot run on {device}: {why}")
        return name
    order = ("triton", "compile") if device.type == "cuda" else ("compile",)
    reasons = []
    for candidate in order:
        why = unavailable(candidate, device, optimizer, problem, model)
        if why is None:
            if reasons:
                _warn_once(f"fastneuron: backend 'auto' uses {candidate!r} on {device}: {reasons[0]}")
            return candidate
        reasons.append(why)
    _warn_once(f"fastneuron: backend 'auto' falls back to 'eager' on {device}: {reasons[-1]}")
    return "eager"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def make_stepper(name: str) -> Stepper:
    """A new stepper of backend ``name`` (one per block loop: steppers may keep buffers)."""
    entry = BACKENDS[name]
    return getattr(importlib.import_module(entry.module), entry.stepper)()
