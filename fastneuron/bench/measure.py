"""What ``python -m fastneuron.bench`` runs and how it is measured: the default sizes,
the run plan, the timed runs after a warm-up, and the memory probe."""

from __future__ import annotations

import gc
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..machine import load_average, usable_cores  # shared with train()'s warning
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
        # One row per optimizer besides SGD, at the headline size (Adam beside SGD's).
        "compile-adam": ([2**20], 3000),
        "compile-adamw": ([2**20], 3000),
        "compile-rmsprop": ([2**20], 3000),
        "compile-noise": ([2**20], 3000),
        "compile-schedule": ([2**20], 3000),
        "compile-log100": ([2**20], 3000),
        "compile-d16-normal": ([2**16], 3000),
        "compile-d16-uniform": ([2**16], 3000),
        "triton": ([2**10], 64),  # only with --interpret: a smoke run of the interpreter
        "triton-kernel": ([2**10], 64),
    },
    # One M per contestant, the headline (compile against the fastest peer) at M = 2**17:
    # 61 s in a fresh venv with an empty Inductor cache (its compile about 31 s), 22 s with
    # a warm one, on 2 cores of the older EPYC (cpu family 23), 2026-11-30.
    ("cpu", "quick"): {
        "tutorial": ([2], 100),
        "torch.func": ([2**14], 50),
        "eager": ([2**17], 100),
        "jax": ([2**17], 400),
        "compile": ([2**17], 400),
        "triton": ([2**10], 32),
        "triton-kernel": ([2**10], 32),
    },
    # The GPU headline is triton at M = 2**24, T = 3000 (and eager at the same M).
    ("cuda", "default"): {
        "torch.func": ([2**14, 2**17], 200),
        "eager": ([2**14, 2**20, 2**24], 200),
        "jax": ([2**14, 2**20, 2**24], 3000),
        "compile": ([2**14, 2**20, 2**24], 3000),
        "compile-adam": ([2**20], 3000),
        "compile-adamw": ([2**20], 3000),
        "compile-rmsprop": ([2**20], 3000),
        "compile-noise": ([2**20], 3000),
        "compile-schedule": ([2**20], 3000),
        "compile-log100": ([2**20], 3000),
        "compile-d16-normal": ([2**20], 3000),
        "compile-d16-uniform": ([2**20], 3000),
        "triton": ([2**14, 2**17, 2**20, 2**24], 3000),
        "triton-kernel": ([2**20, 2**24], 3000),
    },
    ("cuda", "quick"): {
        "torch.func": ([2**14], 50),
        "eager": ([2**14, 2**20], 100),
        "jax": ([2**14, 2**20], 800),
        "compile": ([2**14, 2**20], 800),
        "triton": ([2**14, 2**20], 800),
        "triton-kernel": ([2**20], 800),
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
            why = "not part of --quick" if quick and contestant.key in SIZES[(device, "default")] else \
                f"no default size on {device}"
        if why:
            skipped.append({"contestant": contestant.name, "reason": why})
            on_skip(skipped[-1])
            continue
        run_members, run_steps = sizes[contestant.key]
        smoke = contestant.key.startswith("triton") and device == "cpu"
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


#: Seconds between "still running" lines while one call of a contestant runs.
HEARTBEAT_S = 10.0


def measure(contestant: Contestant, members: int, steps: int, device: str, repeats: int, *,
            say: Optional[Callable[[str], None]] = None, every: float = HEARTBEAT_S,
            on_tick: Optional[Callable[[], None]] = None) -> Timing:
    """Set up, warm up once, time ``repeats`` runs, then one more run to watch memory.

    Memory has a run of its own because measuring it means first handing freed heap
    back to the OS, and a timed run right after that would pay to fault it back in.

    ``say(line)`` hears the progress: each phase as it starts and ends ("warm-up ...",
    "run 2/5: 1.20 s") and, every ``every`` seconds while one call is still running, how
    long it has run; ``on_tick()`` runs at each of those (and after each call) from the
    watching thread, e.g. to check the machine's load. A run that times itself (the
    kernel-only contestant) returns its seconds; otherwise the wall time of ``run()`` counts.
    """
    say = say or (lambda line: None)
    watch = _Heartbeat(say, every, on_tick)
    memory = _MemoryProbe(device, contestant.allocator)
    memory.start()
    with watch.phase("set-up"):
        run = contestant.prepare(members, steps, device)
    memory.inputs_ready()
    with watch.phase("warm-up" + (" (includes the compile)" if contestant.compiles else "")) as phase:
        warmup_s = _timed(run)
        phase.done(f"warm-up: {warmup_s:.2f} s")
    run_s = []
    for i in range(1, repeats + 1):
        with watch.phase(f"run {i}/{repeats}", announce=False) as phase:
            run_s.append(_timed(run))
            phase.done(f"run {i}/{repeats}: {run_s[-1]:.2f} s")
    memory.start()
    with watch.phase("memory run", announce=False):
        run()
    peak = memory.peak_of_run()
    del run
    gc.collect()
    return Timing(warmup_s, run_s, peak, memory.method)


def _timed(run) -> float:
    start = time.perf_counter()
    own = run()
    wall = time.perf_counter() - start
    return float(own) if own is not None else wall


class _Heartbeat:
    """Progress lines for the phases of one measurement, and "still running" lines from
    a watching thread every ``every`` seconds while a phase lasts."""

    def __init__(self, say: Callable[[str], None], every: float, on_tick: Optional[Callable[[], None]]):
        self._say, self._every, self._on_tick = say, every, on_tick

    def phase(self, name: str, *, announce: bool = True) -> "_Phase":
        return _Phase(self, name, announce)


class _Phase:
    def __init__(self, beat: _Heartbeat, name: str, announce: bool):
        self._beat, self._name, self._announce = beat, name, announce
        self._stop = threading.Event()
        self._thread = None
        self._end_line = None

    def done(self, line: str) -> None:
        self._end_line = line

    def __enter__(self) -> "_Phase":
        if self._announce:
            self._beat._say(f"{self._name} ...")
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="fastneuron.bench heartbeat", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self._beat._every):
            self._beat._say(f"{self._name}: still running, {time.monotonic() - self._started:.0f} s")
            self._tick()

    def _tick(self) -> None:
        if self._beat._on_tick is not None:
            try:
                self._beat._on_tick()
            except Exception:  # a failed load check must not end the measurement
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            if self._end_line:
                self._beat._say(self._end_line)
            self._tick()


# --- the machine's load -----------------------------------------------------------------


class LoadWatch:
    """Warns when the 1-minute load average is above the usable cores: then the
    contestants share the cores with other work, and thread-pooled ones (torch's
    intra-op threads) can slow down many times over. This run's own threads count in
    the load too. It warns at the first check that finds the machine loaded and again
    only after the load has come back down and risen again, so a loaded machine gives
    one line, not one per row."""

    def __init__(self, say: Callable[[str], None]):
        self._say = say
        self._lock = threading.Lock()
        self._loaded = False
        self.where = "at start"
        self.warnings: list = []

    def check(self, where: Optional[str] = None) -> None:
        load = load_average()
        if load is None:
            return
        cores = usable_cores()
        with self._lock:
            loaded, was = load[0] > cores, self._loaded
            self._loaded = loaded
            if not loaded or was:
                return
            self.warnings.append({"where": where or self.where, "load1": load[0], "cores": cores})
            self._say(format_load_warning(self.warnings[-1], explain=len(self.warnings) == 1))


def format_load_warning(w: dict, explain: bool = True) -> str:
    line = f"WARNING: load average {w['load1']:.2f} (1 min) is above the {w['cores']} usable cores {w['where']}"
    if explain:
        line += (": the machine is busy and the timings are unreliable (torch's intra-op threads were seen to "
                 "slow eager 8x on a loaded machine); this run's own threads count in the load too")
    return line


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
