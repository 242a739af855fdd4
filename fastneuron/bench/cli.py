"""The command line of ``python -m fastneuron.bench``: arguments, environment, run loop."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# No torch, jax or fastneuron kernels at module level (here or in the modules imported
# below): --interpret and --cold-cache set environment variables that Triton and
# Inductor read when a kernel is first defined or compiled, which must come after
# main() has set them.
from .contestants import BY_KEY, CONTESTANTS
from .measure import TUTORIAL_NEURONS, LoadWatch, load_average, measure, plan_runs
from .report import build_report, format_report, format_members, format_rate, make_row, plot, write_csv


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--sass"]:  # the Triton kernel's instruction budget, compiled without a GPU
        from fastneuron.kernels import sass

        return sass.main(argv[1:])
    args = _parse_args(argv)
    # JAX on a GPU takes 75% of its memory when first imported, which would starve the
    # torch and Triton rows after it (and hide its own footprint): allocate on demand.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
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
    load = LoadWatch(_progress)
    load_at_start = load_average()
    load.check("at start")
    plan, skipped = plan_runs(args.contestants, device, quick=args.quick, interpret=args.interpret,
                              members=args.members, steps=args.steps, on_skip=_report_skip)
    rows, failed = [], []
    for i, (contestant, members, steps) in enumerate(plan, 1):
        label = f"[{i}/{len(plan)}] {contestant.name}, M={format_members(members)}, T={steps}"
        _progress(f"{label}:")
        load.where = f"during {label}"
        try:
            timing = measure(contestant, members, steps, device, args.repeats,
                             say=lambda line: _progress(f"  {line}"), every=args.progress_every,
                             on_tick=load.check)
        except Exception as exc:  # a broken contestant should not hide the others' results
            _progress(f"{label}: FAILED: {type(exc).__name__}: {exc}")
            failed.append({"contestant": contestant.name, "members": members, "steps": steps,
                           "reason": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append(make_row(contestant, members, steps, timing, interpret=args.interpret))
        _progress(f"{label}: median {format_rate(rows[-1]['neuron_steps_per_s']['median'])} neuron-steps/s")

    report = build_report(rows, skipped, failed, device, args)
    report["load"] = {"warnings": load.warnings, "start": load_at_start, "end": load_average(),
                      "cores_usable": report["machine"]["cores_usable"]}
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.csv:
        write_csv(args.csv, rows)
    if args.plot:
        plot(args.plot, rows)
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
               "fast backends), compile-adam, compile-adamw and compile-rmsprop (the compiled backend "
               "with those optimizers, at the headline size; not in --quick), compile-noise and "
               "compile-schedule (label noise 0.1; a warm-up + cosine lr schedule; likewise), compile-log100 "
               "(log_every=100; likewise), triton-kernel (the "
               "Triton kernel's launches alone, CUDA events). "
               "Peers are the first four; ratios are to the fastest peer row. "
               "Exit status 1 when a contestant failed (skips for a stated reason are fine). Progress goes "
               "to stderr, with a warning when the 1-minute load average is above the usable cores.",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="where to train (default: cuda when available, else cpu)")
    parser.add_argument("--members", type=_int_list, default=None, metavar="M[,M...]",
                        help="numbers of members, e.g. 16384,2**20 (default: per contestant; "
                             f"the tutorial trains {TUTORIAL_NEURONS} neurons one at a time)")
    parser.add_argument("--steps", type=_positive_int, default=None, metavar="T",
                        help="steps of every contestant (default: per contestant, 3000 for the fast ones)")
    parser.add_argument("--contestants", type=_contestant_list, default=list(CONTESTANTS),
                        metavar="NAME[,NAME...]", help=f"which to run, of: {keys} (default: all)")
    parser.add_argument("--repeats", type=_repeats, default=None, metavar="N",
                        help="timed runs after the warm-up, at least 3 (default: 5, 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 3 repeats: under a minute on 2 CPU cores")
    parser.add_argument("--progress-every", type=float, default=10.0, metavar="S", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--csv", metavar="PATH", help="also write the rows as CSV")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="plot throughput against M, log-log, one line per contestant (matplotlib)")
    parser.add_argument("--sass", action="store_true",
                        help="instead of timing: the Triton kernel's SASS instructions per neuron-step on sm_90, "
                             "compiled here without a GPU (first argument; the rest go to "
                             "python -m fastneuron.kernels.sass, e.g. --json PATH)")
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


def _report_skip(skipped: dict) -> None:
    _progress(f"skipping {skipped['contestant']}: {skipped['reason']}")
