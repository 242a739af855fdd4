"""The progress bar of long runs: tqdm on stderr, whole steps and neuron-steps/s."""

from __future__ import annotations

import sys
import time
from typing import Optional

#: Seconds before the bar appears: shorter runs show none.
PROGRESS_DELAY_S = 2.0


class Progress:
    """A tqdm bar on stderr, shown only for runs longer than about 2 s."""

    def __init__(self, enabled: Optional[bool], total_steps: int, members: int):
        """``total_steps``: steps of the whole run; a block of k of the M members
        advances the bar by k/M of a step for each of its steps."""
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.members = members
        self.bar = None
        self._t0 = time.perf_counter()
        self._timed = self._all = 0  # neuron-steps: done by this process, and all
        if enabled and total_steps:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, unit="step", delay=PROGRESS_DELAY_S, file=sys.stderr,
                            dynamic_ncols=True, desc=f"{members} members")

    def update(self, steps: int, members: int, timed: bool = True) -> None:
        """``steps`` more steps done on a block of ``members`` (``timed=False``: done
        before this process started, by the run it resumes; not in the rate)."""
        if timed:
            self._timed += steps * members
        self._all += steps * members
        if self.bar is not None:
            rate = self._timed / max(time.perf_counter() - self._t0, 1e-9)
            self.bar.set_postfix_str(f"{rate:.3g} neuron-steps/s", refresh=False)
            self.bar.update(self._all // self.members - self.bar.n)  # whole steps, no float drift

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
