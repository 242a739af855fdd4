"""Where label noise's time goes in the compiled backend (issue 15's "noise on >= 50% of
noise off"): one Philox4x32-10 block against SPEC §2b's two Box-Muller pairs, compiled
alone, over 2**20 counters.

    python bench/noise_cost.py [--members 1048576] [--repeats 7]

A sample of plain SGD costs a quarter of a data block (one word of x) plus its update;
a sample with label noise adds a quarter of a noise block and half a Box-Muller pair
(one normal). With P the block's cost and N a pair's, the ratio of the two rates is
(P/4 + u) / (P/2 + N/2 + u) for an update cost u, below 1/2 whenever N/2 > u: the
block and pair costs printed here bound what the compiled path can reach.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from fastneuron.normal import box_muller
from fastneuron.rng import philox4x32


def _philox(c):
    a, b, d, e = philox4x32(c, c, c + 1, c + 2)
    return a ^ b ^ d ^ e


def _pairs(c):
    z0, z1 = box_muller(c, c ^ 12345)
    z2, z3 = box_muller(c ^ 777, c ^ 99)
    return z0 + z1 + z2 + z3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=1 << 20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    c = torch.arange(args.members, dtype=torch.int64)
    for name, fn, per in (("philox block", _philox, 1), ("box-muller pair", _pairs, 2)):
        compiled = torch.compile(fn)
        compiled(c)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            compiled(c)
            times.append(time.perf_counter() - t)
        ns = statistics.median(times) / args.members / per * 1e9
        print(f"{name:16s} {ns:6.2f} ns (median of {args.repeats}, {args.members} members, "
              f"{torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
