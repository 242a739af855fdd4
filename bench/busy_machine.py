"""The compiled backend on a busy machine: torch's intra-op threads against another job.

    python bench/busy_machine.py                      # M = 2**14, 2**18, 2**20; 5 rounds
    python bench/busy_machine.py --members 2**14 --rounds 3 --out bench/results/busy.txt

Trains ``backend="compile"`` at each M with torch's intra-op threads set to each of
``--threads`` (``torch.set_num_threads``, as ``train(threads=...)`` does), with the
machine as it is ("as is": the threads running elsewhere are sampled and reported, since
a shared machine is seldom idle) and with ``--competitors`` CPU-bound processes
(``python -c "while True: pass"``) running beside it ("busy"). Every variant runs once a
round, in an order that alternates from round to round, so that a change of load from
elsewhere hits all of them alike; the report gives each variant's median neuron-steps/s
over the rounds with its spread (min - max), and the ratios: busy against as is, and under
load the fewer threads against the default count. Each M's T is set so that a run takes
about ``--seconds`` as is with the default threads. The first call at each thread count
is timed too: dynamo guards on the thread count, so a new count traces the graph again.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time


def _members(text: str) -> list:
    return [int(eval(x, {"__builtins__": {}})) for x in text.split(",")]  # 2**14 and the like


class Competitors:
    """``n`` CPU-bound processes while inside (none for n = 0)."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        if self.procs:
            time.sleep(0.3)  # started and spinning
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=_members, default=[2**14, 2**18, 2**20], metavar="M[,M...]")
    parser.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        metavar="N[,N...]", help="intra-op thread counts (default: 1 and torch's default)")
    parser.add_argument("--competitors", type=int, default=1, help="CPU-bound processes beside the busy runs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.25, help="a run's length as is, at the default threads")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import fastneuron as fn
    from fastneuron.bench.report import cpu_kind
    from fastneuron.machine import running_elsewhere, usable_cores

    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    lines = [f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}",
             f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"cpu: {cpu_kind()}; {os.cpu_count()} cores, {usable_cores()} usable",
             f"torch {torch.__version__}, fastneuron {fn.__version__} ({fn.__file__}), "
             f"python {platform.python_version()}",
             f"torch threads by default: {default_threads}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
             f"load average at start: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}",
             f"busy: {args.competitors} x `python -c 'while True: pass'` beside the run; "
             f"{args.rounds} rounds, variants in alternating order"]
    print("\n".join(lines), flush=True)

    def run(m: int, t: int, n_threads: int) -> float:
        seeds = torch.arange(m)
        lrs = torch.from_numpy(np.linspace(1e-3, 2e-2, m, dtype=np.float32))
        before = torch.get_num_threads()
        torch.set_num_threads(n_threads)
        try:
            t0 = time.perf_counter()
            fn.train(seeds, lrs, t, backend="compile", device="cpu", progress=False)
            return m * t / (time.perf_counter() - t0)
        finally:
            torch.set_num_threads(before)

    steps = {}
    for m in args.members:
        for n in threads:  # compile (or load the cache): dynamo guards on the thread count, one graph each
            t0 = time.perf_counter()
            run(m, 24, n)
            lines.append(f"M = {m}: first call with {n} thread(s) {time.perf_counter() - t0:.2f} s")
            print(lines[-1], flush=True)
        rate = run(m, 240, default_threads)
        steps[m] = max(24, int(args.seconds * rate / m) // 24 * 24)
        print(f"M = {m}: warm, T = {steps[m]}", flush=True)

    variants = [(load, n) for load in ("as is", "busy") for n in threads]
    elsewhere = []  # threads running elsewhere, sampled before each "as is" block
    rates = {(m, v): [] for m in args.members for v in variants}
    for r in range(args.rounds):
        for m in args.members:
            for load in (("as is", "busy") if r % 2 == 0 else ("busy", "as is")):
                if load == "as is":
                    elsewhere.append(running_elsewhere())
                with Competitors(args.competitors if load == "busy" else 0):
                    for n in (threads if r % 2 == 0 else threads[::-1]):
                        rates[(m, (load, n))].append(run(m, steps[m], n))
        print(f"round {r + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    lines.append(f"threads running elsewhere before the 'as is' runs (/proc/loadavg): {elsewhere}")

    out = ["", "| M | T | load | threads | neuron-steps/s (median) | min - max | busy / as is |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    med = {k: statistics.median(v) for k, v in rates.items()}
    for m in args.members:
        for load, n in variants:
            xs = rates[(m, (load, n))]
            ratio = f"{med[(m, (load, n))] / med[(m, ('as is', n))]:.2f}x" if load == "busy" else ""
            out.append(f"| 2**{m.bit_length() - 1} | {steps[m]} | {load} | {n} | {med[(m, (load, n))]:.3g} | "
                       f"{min(xs):.3g} - {max(xs):.3g} | {ratio} |")
    out.append("")
    for m in args.members:
        for n in threads:
            if n != default_threads:
                busy = med[(m, ("busy", n))] / med[(m, ("busy", default_threads))]
                as_is = med[(m, ("as is", n))] / med[(m, ("as is", default_threads))]
                out.append(f"M = 2**{m.bit_length() - 1}: {n} thread(s) against {default_threads}: "
                           f"{busy:.2f}x busy, {as_is:.2f}x as is")
    out.append(f"load average at end: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(out))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines + out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
