"""Inductor's cache under a changed CPU capability, for two checkouts side by side.

    mkdir /tmp/before && git archive <commit> | tar -x -C /tmp/before
    python bench/inductor_cache_isa.py /tmp/before .

For each checkout, fresh processes (the checkout first on ``PYTHONPATH``) train the
compiled backend against one new Inductor cache directory (``TORCHINDUCTOR_CACHE_DIR``)
in this order:

1. ``cold``: the machine's capability, empty cache (compile time, then the rate);
2. ``warm``: the same again (the cache's load time: it must stay a warm start);
3. ``default``: ``ATEN_CPU_CAPABILITY=default`` on that cache (torch-parity runs,
   SPEC §3c; a machine of another CPU kind sharing the directory fails alike);

then, against a second new directory, ``default first`` and ``after default`` (the
machine's capability on a cache written under ``default``: scalar code or its own; the
count of that directory's C++ sources with vector code says which).
Each process prints its first call's seconds (compile or cache load), the median rate
of ``--repeats`` timed runs and a digest of the final weights' and biases' bits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_CHILD = r"""
import hashlib, json, statistics, sys, time
import numpy as np
import torch
import fastneuron as fn
m, t, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# numpy's linspace: torch's rounds differently under ATEN_CPU_CAPABILITY=default (other inputs).
seeds, lrs = torch.arange(m), torch.from_numpy(np.linspace(1e-3, 2e-2, m, dtype=np.float32))
t0 = time.perf_counter()
r = fn.train(seeds, lrs, t, backend="compile", device="cpu", progress=False)
first = time.perf_counter() - t0
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    fn.train(seeds, lrs, t, backend="compile", device="cpu", progress=False)
    times.append(time.perf_counter() - t0)
digest = hashlib.sha256(r.weight.numpy().tobytes() + r.bias.numpy().tobytes()).hexdigest()[:16]
print(json.dumps({"file": fn.__file__, "capability": torch.backends.cpu.get_cpu_capability(), "first_s": first,
                  "rate": m * t / statistics.median(times), "digest": digest}))
"""


def _child(tree: str, cache: str, capability, args) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, TORCHINDUCTOR_CACHE_DIR=cache)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run([sys.executable, "-c", _CHILD, str(args.members), str(args.steps), str(args.repeats)],
                         env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
        return {"failed": (errors[-1] if errors else out.stderr.strip().splitlines()[-1])[-160:]}
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["file"].startswith(tree + os.sep):
        raise SystemExit(f"inductor_cache_isa: the child imported {got['file']}, not the checkout {tree}")
    return got


def _line(tree: str, what: str, got: dict) -> str:
    if "failed" in got:
        return f"{tree:<24} {what:<14} FAILED: {got['failed']}"
    return (f"{tree:<24} {what:<14} {got['capability']:<8} first call {got['first_s']:6.2f} s   "
            f"{got['rate']:.3g} neuron-steps/s   bits {got['digest']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="checkouts to compare (each on PYTHONPATH in turn)")
    parser.add_argument("--members", type=int, default=2**16)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    trees = [os.path.abspath(t) for t in args.trees]
    import datetime
    import platform
    import shlex

    import torch

    from fastneuron.bench.report import cpu_kind

    print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}\n"
          f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
          f"cpu: {cpu_kind()}, "
          f"{os.cpu_count()} cores; torch {torch.__version__}, python {platform.python_version()}\n"
          f"M = {args.members}, T = {args.steps}, median of {args.repeats} timed runs after the first call; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    for tree in trees:
        with tempfile.TemporaryDirectory(prefix="fastneuron-isa-") as shared, \
                tempfile.TemporaryDirectory(prefix="fastneuron-isa-") as second:
            for what, cache, capability in (("cold", shared, None), ("warm", shared, None),
                                             ("default", shared, "default"),
                                             ("default first", second, "default"), ("after default", second, None)):
                print(_line(tree, what, _child(tree, cache, capability, args)), flush=True)
            sources = [os.path.join(d, f) for d, _, files in os.walk(second) for f in files if f.endswith(".cpp")]
            vec = sum("at::vec::" in open(f, errors="replace").read() for f in sources)
            print(f"{tree:<24} {'':<14} the second cache's C++ sources: {len(sources)}, vectorized (at::vec): {vec}",
                  flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
