"""What ``log_every`` costs ``backend="compile"`` (issue 22, item 2): logged against
unlogged throughput, measured side by side in one process.

    python bench/log_cost.py [--members 262144,200000] [--steps 6000] [--every none,1000,100,10]
                             [--rounds 7] [--threads N] [--clock wall|cpu] [--warm-cache]
                             [--out bench/results/log-cost-2026-12-07.txt]

Every variant (no log, then ``log_every=k`` for each k) first runs once untimed: its
warm-up, which compiles whatever graph it needs that the variants before it did not
(with an empty Inductor cache, a temporary one, unless ``--warm-cache``); the warm-up
less the variant's median run (wall seconds both) is printed as its compile seconds. Then ``--rounds``
rounds each time one ``fastneuron.train(range(M), lrs, T, log_every=k, backend="compile",
device="cpu")`` of every (M, variant) in turn, round-robin, so that the machine's ups and
downs hit every variant alike. Printed per (M, variant): the median and p20/p80 of
neuron-steps per second (M * T / seconds of train(), the history's allocation and
copy to the result included) and the ratio of its median to the unlogged median at the
same M, from the same run, and the median of the per-round ratios (each logged run
against the unlogged run of its round: the machine's drifts cancel).

Floor: each round also times what writing the history alone costs, as the stepper
writes it (two fresh (L, M) float32 arrays, ``copy_`` of one (M,) row at a time: the
first touch of the pages is most of it); ``floor`` is the ratio a logged run would
reach if logging cost nothing else, median unlogged / (median unlogged + median write).
``--out`` appends the report (with the command, the CPU, the versions, the date and
the load) to a file.

On a shared machine, ``--threads 1 --clock cpu`` times the process's CPU seconds on one
thread instead: other processes then barely move the figures (with two threads, a
thread that waits for a core stalls the other at every segment's end, and wall times
spread over 8x), while every cost of the run, page faults included, still counts.

The script uses only ``fastneuron.train``: it measures any checkout, e.g. the one
before a change (``git worktree add /tmp/base <commit>``, then ``PYTHONPATH=/tmp/base
python bench/log_cost.py``); the report names the fastneuron it imported.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time


def _quantile(xs: list, q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _every(text: str):
    return None if text == "none" else int(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", default="262144,200000", help="comma-separated member counts")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--every", default="none,1000,100,10", help="comma-separated log_every values ('none': no log)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall seconds, or the process's CPU seconds (with --threads 1 on a shared machine)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use the usual Inductor cache (default: an empty temporary one, so warm-ups time cold "
                         "compiles)")
    ap.add_argument("--out", help="append the report to this file")
    args = ap.parse_args(argv)
    members = [int(m) for m in args.members.split(",")]
    variants = [_every(k) for k in args.every.split(",")]
    if variants[0] is not None:
        ap.error("--every must start with 'none' (the ratios' base)")
    command = "python bench/log_cost.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if os.environ.get("PYTHONPATH"):
        command = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} {command}"
    cache = None
    if not args.warm_cache:
        cache = tempfile.TemporaryDirectory(prefix="fastneuron-log-cost-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name  # before torch is imported

    import torch

    import fastneuron as fn
    from fastneuron.bench.report import _machine, _versions

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    machine, versions = _machine("cpu"), _versions()
    say(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {command}")
    say(f"# cpu {machine['cpu']}, {machine['cores_usable']} usable cores, {machine['torch_threads']} torch threads; "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None))
    say(f"# fastneuron from {os.path.dirname(fn.__file__)}; Inductor cache "
        f"{'usual (--warm-cache)' if cache is None else 'empty (a temporary one)'}; {args.clock} clock; "
        f"load average at start {os.getloadavg()[0]:.2f}")

    def run(m: int, every) -> float:
        lrs = torch.linspace(1e-3, 2e-2, m)
        t0, wall = clock(), time.perf_counter()
        result = fn.train(range(m), lrs, args.steps, log_every=every, backend="compile", device="cpu",
                          progress=False)
        seconds, wall = clock() - t0, time.perf_counter() - wall
        del result  # after the clock: freeing the result is not train()'s cost
        return seconds, wall

    def write_history(m: int, every) -> float:
        rows, src = -(-args.steps // every), torch.zeros(m)
        t0 = clock()
        for h in (torch.empty(rows, m), torch.empty(rows, m)):
            for r in range(rows):
                h[r].copy_(src)
        return clock() - t0

    warmup: dict = {}  # wall seconds: Inductor compiles in worker processes, whose CPU seconds are not ours
    for m in members:
        for every in variants:
            warmup[m, every] = run(m, every)[1]
            print(f"  warm-up M={m} log_every={every}: {warmup[m, every]:.2f} s", file=sys.stderr, flush=True)
    times: dict = {key: [] for key in warmup}
    walls: dict = {key: [] for key in warmup}
    floor: dict = {key: [] for key in warmup if key[1] is not None}
    for r in range(args.rounds):
        for m in members:
            for every in variants:
                seconds, wall = run(m, every)
                times[m, every].append(seconds)
                walls[m, every].append(wall)
                if every is not None:
                    floor[m, every].append(write_history(m, every))
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    say(f"\nT = {args.steps} steps, {args.rounds} rounds round-robin; neuron-steps/s (M * T / {args.clock} s of "
        f"train()); "
        f"ratio: median / the unlogged median at the same M; cost: 1 - ratio; by round: the median of the "
        f"rounds' ratios; floor: the ratio with the history's writes as the only cost (see --help)")
    say(f"{'M':>8} {'log_every':>9} {'median/s':>10} {'p20/s':>10} {'p80/s':>10} {'ratio':>6} {'cost':>6} "
        f"{'by round':>8} {'floor':>6} {'warm-up s':>9} {'compile s':>9}")
    for m in members:
        rates = {every: [m * args.steps / s for s in times[m, every]] for every in variants}
        base, base_s = statistics.median(rates[None]), statistics.median(times[m, None])
        for every in variants:
            med = statistics.median(rates[every])
            by_round = statistics.median(a / b for a, b in zip(rates[every], rates[None]))
            best = "-" if every is None else f"{base_s / (base_s + statistics.median(floor[m, every])):.3f}"
            compile_s = warmup[m, every] - statistics.median(walls[m, every])
            say(f"{m:8d} {str(every):>9} {med:10.3g} {_quantile(rates[every], 0.2):10.3g} "
                f"{_quantile(rates[every], 0.8):10.3g} {med / base:6.3f} {1 - med / base:6.1%} {by_round:8.3f} "
                f"{best:>6} {warmup[m, every]:9.2f} {compile_s:9.2f}")
    say(f"# load average at the end {os.getloadavg()[0]:.2f}")
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    if cache is not None:
        cache.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
