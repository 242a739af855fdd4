"""``backend="eager"``: the reference itself (:func:`fastneuron.reference.run_steps`),
four steps a call. Runs any optimizer and problem, on any device."""

from __future__ import annotations

from typing import Optional

import torch

from fastneuron.reference import (Constants, History, Members, State, StepConfig, keep_logged, run_steps,
                                  seed_words)
from fastneuron.model import init_params

#: Steps per call: a multiple of 4 keeps every call aligned on the data stream's
#: blocks of four samples.
CHUNK_STEPS = 4


class EagerStepper:
    """The reference as a :class:`~fastneuron.kernels.Stepper`."""

    chunk_steps = CHUNK_STEPS

    def init(self, members: Members, config: StepConfig):
        return init_params(*seed_words(members), config.model, members.model_options)

    def __call__(self, state: State, t0: int, members: Members, consts: Constants, *, nsteps: int,
                 config: StepConfig, history: Optional[History]) -> State:
        start = torch.tensor(t0, dtype=torch.int64, device=state.weight.device)
        state, recorded = run_steps(state, start, members, consts, nsteps=nsteps, config=config,
                                    record=history is not None)
        keep_logged(recorded, t0, nsteps, history)
        return state
