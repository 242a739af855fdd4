"""Compile time and throughput of ``backend="compile"`` by batch size (issue 13, item 8).

    python bench/compile_batch.py [--batches 1,4,5,13,64,1023,1024] [--members 65536]
                                  [--samples 6144] [--rounds 5] [--skip-cold]

Cold: for each B, a fresh process with an empty Inductor cache times its first
``train(range(2), 0.01, 12, batch_size=B, backend="compile")`` (imports excluded):
the compile of the init and of the segment, and 12 steps on two members.

Warm: one process compiles every B first, then runs ``--rounds`` rounds, each timing
``train(range(M), 0.01, T, batch_size=B)`` for every B in turn (T = samples / B, at
least 1 step), so that the B share the machine's ups and downs. Throughput is in
samples per second (M * T * B / s): per sample, B = 1 and B = 1024 do the same work
apart from the updates. Prints median, p20 and p80 and the ratio of medians to B = 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ab_trees import _quantile  # the same p20/p80 as the A/B script (bench/ is the script's path)

_COLD = """
import time, fastneuron
t = time.perf_counter()
fastneuron.train(range(2), 0.01, 12, batch_size={b}, backend="compile", progress=False)
print(time.perf_counter() - t)
"""


def cold_seconds(batch: int) -> float:
    with tempfile.TemporaryDirectory(prefix="fastneuron-cold-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", _COLD.format(b=batch)], env=env, check=True,
                             capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,4,5,13,64,1023,1024")
    ap.add_argument("--members", type=int, default=65536)
    ap.add_argument("--samples", type=int, default=6144, help="samples per member per timed run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-cold", action="store_true")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]

    import torch

    import fastneuron as fn

    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}; "
          f"fastneuron {fn.__version__}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    if not args.skip_cold:
        print("\ncold first call (fresh process, empty Inductor cache), seconds")
        for b in batches:
            print(f"  B = {b:5d}: {cold_seconds(b):6.1f}", flush=True)

    m = args.members
    steps = {b: max(1, args.samples // b) for b in batches}
    for b in batches:  # compile (or load) every graph before timing
        fn.train(range(2), 0.01, 12, batch_size=b, backend="compile", progress=False)
    rates: dict = {b: [] for b in batches}
    for _ in range(args.rounds):
        for b in batches:
            t = time.perf_counter()
            fn.train(range(m), 0.01, steps[b], batch_size=b, backend="compile", progress=False)
            rates[b].append(m * steps[b] * b / (time.perf_counter() - t))
    base = statistics.median(rates[batches[0]])
    print(f"\nwarm throughput, M = {m}, {args.rounds} rounds interleaved, samples/s "
          f"(ratio: median / median of B = {batches[0]})")
    print("      B   steps     median        p20        p80   ratio")
    for b in batches:
        med = statistics.median(rates[b])
        print(f"  {b:5d} {steps[b]:7d} {med:10.3g} {_quantile(rates[b], 0.2):10.3g} "
              f"{_quantile(rates[b], 0.8):10.3g} {med / base:7.2f}")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
