"""``python -m fastneuron.bench``: fastneuron against other ways to train the tutorial's neuron.

Every contestant trains M neurons (a=2, c=1, x ~ U[1, 5), learning rates swept over
[1e-3, 2e-2]) for T steps of per-sample SGD; see ``fastneuron/_bench_contestants.py``.
Each (contestant, M) is run once to warm up (that run includes torch.compile or
jax.jit) and then timed ``--repeats`` times. Throughput is neuron-steps per second
(M * T / seconds): a rate, so the slow contestants run fewer members or steps than
the fast ones, and every row says which M and T it used.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import datetime
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# No jax or fastneuron kernels at module level: --interpret and --cold-cache set
# environment variables that Triton and Inductor read when a kernel is first defined
# or compiled, which must come after main() has set them.
from ._bench_contestants import BY_KEY, CONTESTANTS, Contestant

#: (members, steps) per contestant when --members/--steps are not given. The slow
#: peers run fewer members or steps so that the default run takes a few minutes.
#: fastneuron compile at M = 2**20, T = 3000 on CPU is the headline.
_SIZES = {
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
_TUTORIAL_NEURONS = 4


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    if args.cold_cache:
        cache = tempfile.mkdtemp(prefix="fastneuron-bench-cache-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    if args.plot:
        _require_matplotlib()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("fastneuron.bench: --device cuda, but torch sees no CUDA device")
    if device == "cuda" and args.interpret:
        sys.exit("fastneuron.bench: --interpret is for CPU runs (Triton runs natively on CUDA)")

    started = time.perf_counter()
    plan, skipped = _plan(args, device)
    rows, failed = [], []
    for i, (contestant, members, steps) in enumerate(plan, 1):
        label = f"[{i}/{len(plan)}] {contestant.name}, M={_fmt_members(members)}, T={steps}"
        _progress(f"{label}: set-up and warm-up ...")
        try:
            timing = _measure(contestant, members, steps, device, args.repeats)
        except Exception as exc:  # a broken contestant should not hide the others' results
            _progress(f"{label}: FAILED: {type(exc).__name__}: {exc}")
            failed.append({"contestant": contestant.name, "members": members, "steps": steps,
                           "reason": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append(_row(contestant, members, steps, timing, args))
        _progress(f"{label}: warm-up {timing.warmup_s:.2f} s, median "
                  f"{_fmt_rate(rows[-1]['neuron_steps_per_s']['median'])} neuron-steps/s")

    report = _report(rows, skipped, failed, device, args)
    print(_format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.csv:
        _write_csv(args.csv, rows)
    if args.plot:
        _plot(args.plot, rows)
    _progress(f"done in {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


def _parse_args(argv) -> argparse.Namespace:
    keys = ", ".join(c.key for c in CONTESTANTS)
    parser = argparse.ArgumentParser(
        prog="python -m fastneuron.bench",
        description="Time fastneuron against other ways of training the tutorial's neuron "
                    "(a=2, c=1, x in [1, 5), one learning rate per member in [1e-3, 2e-2]). "
                    "Prints neuron-steps per second (median of the timed runs, with the 20th and "
                    "80th percentiles), each row's ratio to the fastest peer, warm-up seconds and "
                    "peak memory; then the machine and library versions.",
        epilog="Contestants: tutorial (the tutorial's loop, one neuron at a time), torch.func "
               "(PyTorch's model-ensembling recipe), eager (fastneuron.train backend='eager', "
               "plain torch ops), jax (jax.jit over lax.scan), compile and triton (fastneuron's "
               "fast backends). Peers are the first four; ratios are to the fastest peer row. "
               "Exit status 1 when a contestant failed (skips for a stated reason are fine).",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="where to train (default: cuda when available, else cpu)")
    parser.add_argument("--members", type=_int_list, default=None, metavar="M[,M...]",
                        help="numbers of members, e.g. 16384,2**20 (default: per contestant; "
                             f"the tutorial trains {_TUTORIAL_NEURONS} neurons one at a time)")
    parser.add_argument("--steps", type=_positive_int, default=None, metavar="T",
                        help="steps of every contestant (default: per contestant, 3000 for the fast ones)")
    parser.add_argument("--contestants", type=_contestant_list, default=list(CONTESTANTS),
                        metavar="NAME[,NAME...]", help=f"which to run, of: {keys} (default: all)")
    parser.add_argument("--repeats", type=_repeats, default=None, metavar="N",
                        help="timed runs after the warm-up, at least 3 (default: 5, 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 3 repeats: under a minute on 2 CPU cores")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--csv", metavar="PATH", help="also write the rows as CSV")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="plot throughput against M, log-log, one line per contestant (matplotlib)")
    parser.add_argument("--interpret", action="store_true",
                        help="run fastneuron triton on CPU under TRITON_INTERPRET=1: a tiny smoke run, "
                             "shown but not compared")
    parser.add_argument("--cold-cache", action="store_true",
                        help="compile into a fresh, empty Inductor/Triton cache, so that the first "
                             "call's compile time is a cold compile (default: your usual cache)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    return args


def _int_list(text: str) -> list:
    """'16384,2**20,1e5' -> [16384, 1048576, 100000]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "**" in part:
                base, exp = part.split("**")
                value = int(base) ** int(exp)
            else:
                value = int(float(part)) if "e" in part.lower() else int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {part!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1: {part!r}")
        out.append(value)
    return out


def _positive_int(text: str) -> int:
    values = _int_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"one number, not a list: {text!r}")
    return values[0]


def _repeats(text: str) -> int:
    value = _positive_int(text)
    if value < 3:
        raise argparse.ArgumentTypeError("the median and percentiles need at least 3 timed runs")
    return value


def _contestant_list(text: str) -> list:
    names = {c.key: c for c in CONTESTANTS} | {c.name: c for c in CONTESTANTS}
    chosen = []
    for part in text.split(","):
        part = part.strip()
        if part not in names:
            raise argparse.ArgumentTypeError(f"unknown contestant {part!r}; choose from {', '.join(BY_KEY)}")
        if names[part] not in chosen:
            chosen.append(names[part])
    return chosen


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("fastneuron.bench: --plot needs matplotlib: pip install 'fastneuron[plot]'")


def _progress(message: str) -> None:
    print(f"fastneuron.bench: {message}", file=sys.stderr, flush=True)


# --- what to run ----------------------------------------------------------------------

def _plan(args, device: str):
    """[(contestant, M, T)] in run order, and [{contestant, reason}] for the skipped."""
    sizes = _SIZES[(device, "quick" if args.quick else "default")]
    plan, skipped = [], []
    for contestant in args.contestants:
        why = contestant.unavailable(device, args.interpret)
        if why is None and contestant.key not in sizes:
            why = f"no default size on {device}"
        if why:
            skipped.append({"contestant": contestant.name, "reason": why})
            _progress(f"skipping {contestant.name}: {why}")
            continue
        members, steps = sizes[contestant.key]
        smoke = contestant.key == "triton" and device == "cpu"
        if args.members and not smoke:
            members = [_TUTORIAL_NEURONS] if contestant.one_at_a_time else args.members
        if args.steps and not smoke:
            steps = args.steps
        plan += [(contestant, m, steps) for m in sorted(members)]
    return plan, skipped


# --- measuring ------------------------------------------------------------------------

@dataclass
class Timing:
    warmup_s: float
    run_s: list
    peak_mem_bytes: Optional[int]
    peak_mem_method: str


def _measure(contestant: Contestant, members: int, steps: int, device: str, repeats: int) -> Timing:
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


# --- rows and report ------------------------------------------------------------------

def _row(contestant: Contestant, members: int, steps: int, timing: Timing, args) -> dict:
    import numpy as np

    rates = members * steps / np.asarray(timing.run_s)
    median_s = float(np.median(timing.run_s))
    return {
        "contestant": contestant.name,
        "peer": contestant.peer,
        "comparable": not (contestant.key == "triton" and args.interpret),
        "device": None,  # filled in by _report
        "device_name": None,
        "members": members,
        "steps": steps,
        "repeats": len(timing.run_s),
        "neuron_steps_per_s": {
            "median": float(np.median(rates)),
            "p20": float(np.percentile(rates, 20)),
            "p80": float(np.percentile(rates, 80)),
        },
        "ratio": None,
        "ratio_to": None,
        "warmup_s": timing.warmup_s,
        # The first call's extra time over a steady one: compilation (torch.compile,
        # jax.jit, Triton) and first-touch costs. Cold only with --cold-cache.
        "compile_s": max(0.0, timing.warmup_s - median_s),
        "peak_mem_bytes": timing.peak_mem_bytes,
        "peak_mem_method": timing.peak_mem_method,
        "note": "TRITON_INTERPRET=1 smoke run: not comparable" if contestant.key == "triton"
                and args.interpret else contestant.note,
    }


def _report(rows: list, skipped: list, failed: list, device: str, args) -> dict:
    machine = _machine(device)
    versions = _versions()
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    device_name = machine["gpu"] if device == "cuda" else machine["cpu"]
    for row in rows:
        row.update(device=device, device_name=device_name, versions=versions, date=date,
                   cold_cache=args.cold_cache)
    fastest_peer = max((r for r in rows if r["peer"] and r["comparable"]),
                       key=lambda r: r["neuron_steps_per_s"]["median"], default=None)
    if fastest_peer:
        for row in rows:
            if row["comparable"]:
                row["ratio"] = row["neuron_steps_per_s"]["median"] / fastest_peer["neuron_steps_per_s"]["median"]
                row["ratio_to"] = _row_label(fastest_peer)
    return {
        "device": device,
        "device_name": device_name,
        "rows": rows,
        "headline": _headline(rows),
        "skipped": skipped,
        "failed": failed,
        "machine": machine,
        "versions": versions,
        "date": date,
        "settings": {"quick": args.quick, "repeats": args.repeats, "cold_cache": args.cold_cache,
                     "interpret": args.interpret},
    }


def _headline(rows: list) -> list:
    """Each fastneuron contestant's fastest row against each peer's fastest row."""
    def best_by_contestant(peer: bool) -> dict:
        best = {}
        for r in rows:
            if r["peer"] == peer and r["comparable"]:
                name = r["contestant"]
                if name not in best or r["neuron_steps_per_s"]["median"] > best[name]["neuron_steps_per_s"]["median"]:
                    best[name] = r
        return best

    peers = best_by_contestant(True)
    lines = []
    for row in best_by_contestant(False).values():
        rate = row["neuron_steps_per_s"]["median"]
        lines.append({
            "contestant": row["contestant"], "members": row["members"], "steps": row["steps"],
            "neuron_steps_per_s": rate,
            "times_peer": {name: {"ratio": rate / p["neuron_steps_per_s"]["median"], "members": p["members"],
                                  "steps": p["steps"]} for name, p in peers.items()},
        })
    return lines


def _row_label(row: dict) -> str:
    return f"{row['contestant']} (M={_fmt_members(row['members'])}, T={row['steps']})"


def _machine(device: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "platform": platform.platform(),
    }


def _versions() -> dict:
    import fastneuron

    versions = {"python": platform.python_version(), "fastneuron": fastneuron.__version__}
    for module in ("torch", "triton", "jax", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    versions["fastneuron_commit"] = _git_commit()
    return versions


def _git_commit() -> Optional[str]:
    """The checkout's commit (with '+dirty' for local changes), when run from one."""
    root = Path(__file__).resolve().parent.parent
    if not ((root / ".git").exists() and (root / "pyproject.toml").exists()):
        return None  # an installed copy: whatever repository encloses it is not fastneuron's
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


# --- output ---------------------------------------------------------------------------

_COLUMNS = [  # (header, width, formatter of a row)
    ("contestant", 19, lambda r: r["contestant"]),
    ("M", 7, lambda r: _fmt_members(r["members"])),
    ("T", 5, lambda r: str(r["steps"])),
    ("median/s", 9, lambda r: _fmt_rate(r["neuron_steps_per_s"]["median"])),
    ("p20/s", 8, lambda r: _fmt_rate(r["neuron_steps_per_s"]["p20"])),
    ("p80/s", 8, lambda r: _fmt_rate(r["neuron_steps_per_s"]["p80"])),
    ("ratio", 8, lambda r: "-" if r["ratio"] is None else _fmt_ratio(r["ratio"])),
    ("warm-up s", 9, lambda r: f"{r['warmup_s']:.2f}"),
    ("compile s", 9, lambda r: f"{r['compile_s']:.2f}"),
    ("peak mem", 9, lambda r: _fmt_bytes(r["peak_mem_bytes"])),
]


def _format_report(report: dict) -> str:
    rows, machine, versions = report["rows"], report["machine"], report["versions"]
    lines = [f"fastneuron.bench on {report['device']} ({report['device_name']}): neuron-steps per second, "
             f"median and 20th/80th percentiles of {report['settings']['repeats']} timed runs after a warm-up",
             ""]
    lines.append("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w, _) in enumerate(_COLUMNS)))
    lines.append("  ".join("-" * w for _, w, _ in _COLUMNS))
    for row in rows:
        lines.append("  ".join(f(row).rjust(w) if i else f(row).ljust(w)
                               for i, (_, w, f) in enumerate(_COLUMNS)))
    lines.append("")
    ratio_to = next((r["ratio_to"] for r in rows if r["ratio_to"]), None)
    lines.append(f"ratio: median over the fastest peer row, {ratio_to or 'none measured'}; "
                 "peers: tutorial, torch.func, torch eager, jax scan.")
    lines.append("M: members trained at once (tutorial: neurons trained one after another); T: steps.")
    lines.append("warm-up s: the first call (includes torch.compile / jax.jit); compile s: warm-up minus the "
                 "median run" + (" (fresh cache: a cold compile)." if report["settings"]["cold_cache"]
                                 else " (Inductor's on-disk cache may be warm; --cold-cache for a cold compile)."))
    methods = sorted({r["peak_mem_method"] for r in rows})
    lines.append("peak mem: what the set-up keeps (inputs) plus the peak of one more steady run above it "
                 f"({', '.join(methods) or '-'}).")
    notes = {row["contestant"]: row["note"] for row in rows if row["note"]}
    lines += [f"  {name}: {note}" for name, note in notes.items()]
    if report["headline"]:
        lines.append("")
        for item in report["headline"]:
            against = ", ".join(f"{_fmt_ratio(v['ratio'])} {name} (M={_fmt_members(v['members'])}, T={v['steps']})"
                                for name, v in item["times_peer"].items())
            lines.append(f"{item['contestant']} at its best (M={_fmt_members(item['members'])}, T={item['steps']}): "
                         f"{_fmt_rate(item['neuron_steps_per_s'])} neuron-steps/s = {against or 'no peer measured'}")
    for kind in ("skipped", "failed"):
        for item in report[kind]:
            where = f" (M={_fmt_members(item['members'])}, T={item['steps']})" if "members" in item else ""
            lines.append(f"{kind}: {item['contestant']}{where}: {item['reason']}")
    lines.append("")
    lines.append(f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable, "
                 f"torch uses {machine['torch_threads']} threads)"
                 + (f", GPU {machine['gpu']}" if machine["gpu"] else ", no GPU used"))
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None))
    lines.append(f"date: {report['date']}")
    return "\n".join(lines)


def _write_csv(path: str, rows: list) -> None:
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if k not in ("neuron_steps_per_s", "versions")}
        for stat, value in row["neuron_steps_per_s"].items():
            out[f"neuron_steps_per_s_{stat}"] = value
        for lib, version in row["versions"].items():
            out[f"version_{lib}"] = version
        flat.append(out)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat[0]) if flat else ["contestant"])
        writer.writeheader()
        writer.writerows(flat)


def _plot(path: str, rows: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["contestant"] for r in rows):
        mine = sorted((r for r in rows if r["contestant"] == name), key=lambda r: r["members"])
        m = [r["members"] for r in mine]
        med = [r["neuron_steps_per_s"]["median"] for r in mine]
        spread = [[a - r["neuron_steps_per_s"]["p20"] for a, r in zip(med, mine)],
                  [r["neuron_steps_per_s"]["p80"] - a for a, r in zip(med, mine)]]
        steps = ", ".join(map(str, sorted({r["steps"] for r in mine})))
        if all(r["comparable"] for r in mine):
            ax.errorbar(m, med, yerr=spread, marker="o", capsize=3, label=f"{name} (T={steps})")
        else:
            ax.errorbar(m, med, yerr=spread, marker="x", capsize=3, linestyle=":", color="grey",
                        label=f"{name} (T={steps}; interpreter smoke run, not comparable)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("members M")
    ax.set_ylabel("neuron-steps / s (median, p20-p80)")
    device = rows[0]["device_name"] if rows else ""
    ax.set_title(f"fastneuron.bench: {device}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt_members(m: int) -> str:
    if m >= 1024 and m & (m - 1) == 0:
        return f"2**{m.bit_length() - 1}"
    return str(m)


def _fmt_rate(x: float) -> str:
    return f"{x:.2e}".replace("e+0", "e").replace("e+", "e")


def _fmt_ratio(x: float) -> str:
    return f"{x:.3g}x" if x < 1000 else f"{x:.2e}x".replace("e+0", "e").replace("e+", "e")


def _fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    if abs(n) < 1 << 20:
        return f"{n / 1024:.0f} KiB"
    return f"{n / (1 << 20):.0f} MiB"


if __name__ == "__main__":
    sys.exit(main())
