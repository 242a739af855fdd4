"""What ``python -m fastneuron.bench`` runs and how it is measured: the default sizes,
the run plan, the timed runs after a warm-up, and the memory probe."""

from __future__ import annotations

import gc
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .contestants import Contestant

#: (members, steps) per contestant when --members/--steps are not given. The slow
#: peers run fewer members or steps so that the default run takes a few minutes.
#: fastneuron compile at M = 2**20, T = 3000 on CPU is the headline.
SIZES = {
    ("cpu", "default"): {
        "tutorial": ([4], 500),
        "torch.func": ([2**14, 2**17], 200),
        "eager": ([2**14, 2**17, 2**20], 200),
        "jax": ([2**14, 2**17, 2**20], 3000),
        "compile": ([2**14, 2**17, 2**20], 3000),
        "triton": ([2**10], 64),  # only with --interpret: a smoke run of the interpreter
    },
    ("cpu", "quick"): {
        "tutorial": ([2], 200),
        "torch.func": ([2**14], 50),
        "eager": ([2**14, 2**17], 100),
        "jax": ([2**14, 2**17, 2**20], 400),
        "compile": ([2**14, 2**17, 2**20], 400),
        "triton": ([2**10], 32),
    },
    # The GPU headline is triton at M = 2**24, T = 3000 (and eager at the same M).
    ("cuda", "default"): {
        "torch.func": ([2**14, 2**17], 200),
        "eager": ([2**14, 2**20, 2**24], 200),
        "jax": ([2**14, 2**20, 2**24], 3000),
        "compile": ([2**14, 2**20, 2**24], 3000),
        "triton": ([2**14, 2**17, 2**20, 2**24], 3000),
    },
    ("cuda", "quick"): {
        "torch.func": ([2**14], 50),
        "eager": ([2**14, 2**20], 100),
        "jax": ([2**14, 2**20], 800),
        "compile": ([2**14, 2**20], 800),
        "triton": ([2**14, 2**20], 800),
    },
}

#: Neurons the tutorial trains one after another when --members is given.
TUTORIAL_NEURONS = 4


def plan_runs(contestants: list, device: str, *, quick: bool, interpret: bool,
              members: Optional[list], steps: Optional[int], on_skip: Callable[[dict], None]):
    """[(contestant, M, T)] in run order, and [{contestant, reason}] for the skipped,
    each also handed to ``on_skip`` as it is found.

    ``members`` and ``steps`` (from --members/--steps) replace the default sizes, except
    for the CPU triton smoke run; the tutorial then trains TUTORIAL_NEURONS neurons.
    """
    sizes = SIZES[(device, "quick" if quick else "default")]
    plan, skipped = [], []
    for contestant in contestants:
        why = contestant.unavailable(device, interpret)
        if why is None and contestant.key not in sizes:
            why = f"no default size on {device}"
        if why:
            skipped.append({"contestant": contestant.name, "reason": why})
            on_skip(skipped[-1])
            continue
        run_members, run_steps = sizes[contestant.key]
        smoke = contestant.key == "triton" and device == "cpu"
        if members and not smoke:
            run_members = [TUTORIAL_NEURONS] if contestant.one_at_a_time else members
        if steps and not smoke:
            run_steps = steps
        plan += [(contestant, m, run_steps) for m in sorted(run_members)]
    return plan, skipped


@dataclass
class Timing:
    warmup_s: float
    run_s: list
    peak_mem_bytes: Optional[int]
    peak_mem_method: str


def measure(contestant: Contestant, members: int, steps: int, device: str, repeats: int) -> Timing:
    """Set up, warm up once, time ``repeats`` runs, then one more run to watch memory.

    Memory has a run of its own because measuring it means first handing freed heap
    back to the OS, and a timed run right after that would pay to fault it back in.
    """
    memory = _MemoryProbe(device, contestant.allocator)
    memory.start()
    run = contestant.prepare(members, steps, device)
    memory.inputs_ready()
    start = time.perf_counter()
    run()
    warmup_s = time.perf_counter() - start
    run_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        run_s.append(time.perf_counter() - start)
    memory.start()
    run()
    peak = memory.peak_of_run()
    del run
    gc.collect()
    return Timing(warmup_s, run_s, peak, memory.method)


class _MemoryProbe:
    """The memory a contestant needs: what its set-up keeps (its inputs, as it builds
    them) plus the peak a steady run adds on top. Warm-up leftovers (compiled code,
    libraries loaded on first use) are not counted.

    CPU: resident set size. Linux keeps the process's peak (VmHWM) and resets it on
    ``echo 5 > /proc/self/clear_refs``; elsewhere only ``ru_maxrss`` (the lifetime peak)
    exists, which says nothing when an earlier row peaked higher. Freed heap goes back
    to the OS first (malloc_trim), or a run could reuse it unseen. CUDA: torch's
    allocator; JAX's is not read (None).
    """

    def __init__(self, device: str, allocator: str):
        if device.startswith("cuda"):
            self.method = "torch.cuda.max_memory_allocated" if allocator == "torch" else "unavailable"
        elif Path("/proc/self/clear_refs").exists():
            self.method = "VmHWM"
        else:
            self.method = "ru_maxrss"
        self._inputs = 0
        self._base = 0
        self._maxrss_before = 0

    def start(self) -> None:
        """Take the baseline (before set-up, and again before the memory run)."""
        self._base = self._in_use()
        if self.method == "torch.cuda.max_memory_allocated":
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.method == "VmHWM":
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.method = "ru_maxrss"
        self._maxrss_before = _maxrss_bytes()

    def inputs_ready(self) -> None:
        self._inputs = max(0, self._in_use() - self._base)

    def peak_of_run(self) -> Optional[int]:
        if self.method == "torch.cuda.max_memory_allocated":
            import torch

            peak = torch.cuda.max_memory_allocated()
        elif self.method == "VmHWM":
            peak = _proc_status_bytes("VmHWM")
        elif self.method == "ru_maxrss" and _maxrss_bytes() > self._maxrss_before:
            peak = _maxrss_bytes()
        else:
            return None
        return self._inputs + max(0, peak - self._base)

    def _in_use(self) -> int:
        _release_free_memory()
        if self.method == "torch.cuda.max_memory_allocated":
            import torch

            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        if self.method in ("VmHWM", "ru_maxrss"):
            return _rss_bytes()
        return 0


def _release_free_memory() -> None:
    gc.collect()
    if sys.platform == "linux":
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise KeyError(field)


def _rss_bytes() -> int:
    if Path("/proc/self/status").exists():
        return _proc_status_bytes("VmRSS")
    return _maxrss_bytes()  # no current RSS without /proc or psutil: the peak stands in


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; Linux: kB
