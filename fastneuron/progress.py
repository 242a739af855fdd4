"""The progress bar of long runs: tqdm on stderr, whole steps and neuron-steps/s.

The first chunk of steps carries the start-up (``torch.compile``'s compilation, Triton's
JIT, the first allocations), which can take longer than all the rest of a small run.
So the bar's rate and ETA start after the first chunk, which is shown apart as
"start-up", and every :class:`Progress` records its timings for the caller:
:func:`last_run_timing` gives those of the most recent run in this process (the
command line prints them in its summary).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Optional

#: Seconds before the bar appears: shorter runs show none.
PROGRESS_DELAY_S = 2.0


@dataclass
class RunTiming:
    """Timings of one run (one :class:`Progress`), in seconds and neuron-steps.

    ``start_up_s``: from the start of the run's progress (after the inputs are checked
    and the host arrays made) to the end of its first chunk of steps, None before any
    chunk ran; ``first_chunk_neuron_steps``: the work of that chunk; ``neuron_steps``:
    all the work this process did (not what a resumed checkpoint held);
    ``train_s``: from the end of the first chunk to the end of the last (0 with one
    chunk); ``first_chunk_end``: ``time.perf_counter()`` at the end of the first chunk
    (None before), for a caller that times the whole call; ``finished``: whether the
    run's progress was closed."""

    start_up_s: Optional[float] = None
    first_chunk_end: Optional[float] = None
    first_chunk_neuron_steps: int = 0
    neuron_steps: int = 0
    train_s: float = 0.0
    finished: bool = False

    @property
    def rate(self) -> Optional[float]:
        """Neuron-steps per second after the first chunk (None when there is none)."""
        rest = self.neuron_steps - self.first_chunk_neuron_steps
        return rest / self.train_s if rest > 0 and self.train_s > 0 else None


_last: Optional[RunTiming] = None


def last_run_timing() -> Optional[RunTiming]:
    """The :class:`RunTiming` of the most recent run in this process (None before any).

    Read it right after ``fastneuron.train`` returns: the next run replaces it. Under
    ``distributed=True`` it is this rank's own shard."""
    return _last


class Progress:
    """A tqdm bar on stderr, shown only for runs longer than about 2 s."""

    def __init__(self, enabled: Optional[bool], total_steps: int, members: int):
        """``total_steps``: steps of the whole run; a block of k of the M members
        advances the bar by k/M of a step for each of its steps."""
        global _last
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.members = members
        self.bar = None
        self._t0 = time.perf_counter()
        self._t_first: Optional[float] = None  # end of the first timed chunk
        self._t_last = self._t0
        self._timed = self._all = 0  # neuron-steps: done by this process, and all
        self.timing = _last = RunTiming()
        if enabled and total_steps:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, unit="step", delay=PROGRESS_DELAY_S, file=sys.stderr,
                            dynamic_ncols=True, desc=f"{members} members")

    def update(self, steps: int, members: int, timed: bool = True) -> None:
        """``steps`` more steps done on a block of ``members`` (``timed=False``: done
        before this process started, by the run it resumes; not in the rate)."""
        now = time.perf_counter()
        first = timed and self._t_first is None
        if timed:
            self._timed += steps * members
            self._t_last = now
            self.timing.neuron_steps = self._timed
            if first:
                self._t_first = now
                self.timing.start_up_s = now - self._t0
                self.timing.first_chunk_end = now
                self.timing.first_chunk_neuron_steps = steps * members
            self.timing.train_s = now - self._t_first
        self._all += steps * members
        if self.bar is None:
            return
        whole = self._all // self.members  # whole steps, no float drift
        if first:
            self._restart_clock(whole)
            return
        rate = self.timing.rate
        start = f"start-up {self.timing.start_up_s:.3g} s, " if self.timing.start_up_s is not None else ""
        self.bar.set_postfix_str(start + (f"{rate:.3g} neuron-steps/s" if rate else "neuron-steps/s ..."),
                                 refresh=False)
        self.bar.update(whole - self.bar.n)

    def _restart_clock(self, whole: int) -> None:
        """After the first chunk: move the bar to ``whole`` steps without letting tqdm
        time them, and start its clock (rate, ETA, elapsed) from now. The bar still
        appears about PROGRESS_DELAY_S after the run began."""
        bar = self.bar
        now = bar._time()  # tqdm's own clock (time.time)
        shown_after = max(0.0, bar.delay - (now - bar.start_t))
        bar.n = bar.last_print_n = bar.initial = whole
        bar.start_t = bar.last_print_t = now
        bar.delay = shown_after
        bar.set_postfix_str(f"start-up {self.timing.start_up_s:.3g} s, neuron-steps/s ...", refresh=False)
        if shown_after == 0.0:
            bar.refresh()

    def close(self) -> None:
        self.timing.finished = True
        if self.bar is not None:
            self.bar.close()
