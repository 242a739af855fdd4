"""Side-by-side throughput of two checkouts of fastneuron, in one run.

    git worktree add /tmp/before <commit>
    python bench/ab_trees.py /tmp/before . --members 1048576 --steps 3000 --rounds 5

Each round trains the same run with each checkout in a fresh process (the checkout
first on ``PYTHONPATH``), alternating A, B, A, B, ... so that a change of load on the
machine hits both alike. Every process warms up first (compiles, or loads the
Inductor cache) and then times ``--repeats`` runs; the report gives each side's median
and p20/p80 over all timed runs and the ratio B / A of the medians. A result that
looks like a change should be run again: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import json, sys, time
import torch
import fastneuron as fn
m, t, repeats, backend = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seeds = torch.arange(m)
lrs = torch.linspace(1e-3, 2e-2, m)
t0 = time.perf_counter()
fn.train(seeds, lrs, t, backend=backend, device="cpu", progress=False)
warmup = time.perf_counter() - t0
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    fn.train(seeds, lrs, t, backend=backend, device="cpu", progress=False)
    times.append(time.perf_counter() - t0)
print(json.dumps({"file": fn.__file__, "warmup_s": warmup, "times_s": times}))
"""


def _quantile(xs: list, q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _run(tree: str, args) -> dict:
    tree = os.path.abspath(tree)
    env = dict(os.environ, PYTHONPATH=tree)
    # From a neutral directory: ``python -c`` puts the working directory first on sys.path.
    out = subprocess.run([sys.executable, "-c", _CHILD, str(args.members), str(args.steps), str(args.repeats),
                          args.backend], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"ab_trees: the run with {tree} failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["file"].startswith(tree + os.sep):
        raise SystemExit(f"ab_trees: the child imported {got['file']}, not the checkout {tree}")
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="checkout A (the baseline)")
    ap.add_argument("b", help="checkout B")
    ap.add_argument("--members", type=int, default=2**20)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5, help="processes per checkout (default: 5)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per process (default: 3)")
    ap.add_argument("--backend", default="compile")
    args = ap.parse_args(argv)

    times: dict = {"A": [], "B": []}
    files = {}
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, M = {args.members}, T = {args.steps}, "
          f"backend {args.backend}, {args.rounds} rounds x {args.repeats} timed runs, load {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        for side, tree in (("A", args.a), ("B", args.b)):
            got = _run(tree, args)
            files[side] = got["file"]
            times[side] += got["times_s"]
            rates = [args.members * args.steps / s for s in got["times_s"]]
            print(f"round {r + 1} {side}: warm-up {got['warmup_s']:.2f} s, "
                  f"median {statistics.median(rates):.3e} neuron-steps/s", flush=True)
    medians = {}
    for side in ("A", "B"):
        rates = [args.members * args.steps / s for s in times[side]]
        medians[side] = statistics.median(rates)
        print(f"{side} ({files[side]}): median {medians[side]:.3e} neuron-steps/s, "
              f"p20 {_quantile(rates, 0.2):.3e}, p80 {_quantile(rates, 0.8):.3e} ({len(rates)} runs)")
    print(f"B / A = {medians['B'] / medians['A']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
