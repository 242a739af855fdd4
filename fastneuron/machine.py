"""How busy the machine is: the usable cores, the load average and the threads running
right now, for ``train()``'s warning and ``fastneuron.bench``'s (no torch here).

torch's intra-op threads (OpenMP) wait for each other at the end of every parallel
loop: when another job holds one of the cores they run on, every loop waits for a
time slice of the scheduler. On 2 cores beside one other CPU-bound job the compiled
backend ran 1.4x (M = 2**20) to 2.4x (M = 2**14) faster with one thread than with two,
while on the idle machine two threads ran 1.4x to 1.8x faster than one
(``python bench/busy_machine.py``, bench/results/busy-machine-2026-12-07.txt): so
the count is left to the user, with a warning, not switched here.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Optional

#: Samples of the running threads (and the seconds between them) that confirm a busy
#: first sample: a thread that just woke up for a moment is not a job that holds a core.
CONFIRM_SAMPLES, CONFIRM_GAP_S = 5, 0.002


def cpu_fields(text: Optional[str] = None) -> dict:
    """The first processor's block of ``/proc/cpuinfo`` (or of ``text``), name -> value
    (stripped strings); empty where there is no /proc/cpuinfo. The CPU's kind lives there:
    the bench's report and the compiled backend's cache key read it."""
    if text is None:
        try:
            with open("/proc/cpuinfo") as f:
                text = f.read()
        except OSError:
            return {}
    fields = {}
    for line in text.strip("\n").split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields


def usable_cores() -> int:
    """The cores this process may run on (its affinity, else the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> Optional[tuple]:
    """(1, 5, 15)-minute load averages, or None where the OS has none."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except (OSError, AttributeError):
        return None


def _own_running() -> int:
    """This process's threads that are runnable right now (state R in
    /proc/self/task/*/stat): the caller, and torch's OpenMP workers, which spin for a
    while after each parallel loop and so count as running between two runs."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        n += stat[stat.rindex(")") + 2:].startswith("R")
    return n


def running_elsewhere() -> Optional[int]:
    """Threads of the whole machine runnable right now besides this process's own:
    /proc/loadavg's running count less :func:`_own_running` (None without /proc).
    Unlike the load average it does not count what this process ran a minute ago."""
    try:
        with open("/proc/loadavg") as f:
            total = int(f.read().split()[3].split("/")[0])
        return max(0, total - max(1, _own_running()))
    except (OSError, IndexError, ValueError):
        return None


def busy_cores(threads: int) -> Optional[tuple]:
    """``(others, cores)`` when the threads running elsewhere leave fewer than ``threads``
    of the usable cores free (the median of :data:`CONFIRM_SAMPLES` samples; the 1-minute
    load average where there is no /proc), else None. One read of /proc/loadavg on an
    idle machine."""
    cores = usable_cores()
    others = running_elsewhere()
    if others is None:
        load = load_average()
        if load is None or load[0] + threads <= cores + 0.5:
            return None
        return round(load[0]), cores
    if others + threads <= cores:
        return None
    samples = [others]
    for _ in range(CONFIRM_SAMPLES - 1):
        time.sleep(CONFIRM_GAP_S)
        samples.append(running_elsewhere() or 0)
    others = int(statistics.median(samples))
    return (others, cores) if others + threads > cores else None


def busy_message(others: int, cores: int, threads: int) -> str:
    """The one line ``train()`` warns with (see the module docstring)."""
    return (f"fastneuron: {others} other thread(s) are running on this machine's {cores} usable cores and this run "
            f"uses {threads} torch threads, which wait on each other when a core is taken (on 2 cores shared with "
            f"another job the compiled backend ran 1.4-2.4x faster with 1 thread than with 2); pass train(threads=1) "
            f"(CLI --threads 1) or set OMP_NUM_THREADS=1")
