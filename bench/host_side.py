"""The host side of ``fastneuron.train`` with the kernel stubbed out (issue: honest GPU timings).

    python bench/host_side.py [--members 16777216] [--repeats 5]

Registers a backend whose stepper does no arithmetic (its init returns zeros, its steps
return the state unchanged), then times ``train(range(M), 0.01, 3000, backend=...)`` on
the CPU: validation, the spec, member blocks, state and result assembly; everything a
run costs besides the kernel. Prints each run and the median.

The stub takes members as the Triton kernels do (a shared lr and a seed range's words
one value each); ``--dense-members`` makes the engine expand them for it, as for the
eager and compile backends.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

import torch

import fastneuron as fn
from fastneuron import kernels


class StubStepper:
    """A :class:`fastneuron.kernels.Stepper` without arithmetic."""

    chunk_steps = 2048
    #: Members as the engine builds them, as the Triton kernels take them (a shared lr
    #: and a seed range's words one value each, stride 0): what a GPU run's host does.
    dense_members = False

    def init(self, members, config):
        return torch.zeros_like(members.neg_lr), torch.zeros_like(members.neg_lr)

    def __call__(self, state, t0, members, consts, *, nsteps, config, history):
        return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=2**24)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dense-members", action="store_true",
                    help="the stub asks for dense members, as the eager and compile backends do")
    args = ap.parse_args(argv)
    StubStepper.dense_members = args.dense_members
    module = types.ModuleType("fastneuron_host_side_stub")
    module.StubStepper = StubStepper
    sys.modules[module.__name__] = module
    kernels.BACKENDS["stub"] = kernels.Backend(module.__name__, "StubStepper")
    times = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        result = fn.train(range(args.members), 0.01, 3000, backend="stub", device="cpu", progress=False)
        seconds = time.perf_counter() - t0
        del result  # after the clock: freeing the result (~12 ms at 2**24) is not train()'s cost
        print(f"run {i}: {seconds * 1e3:.0f} ms" + (" (warm-up, not counted)" if i == 0 else ""))
        if i:
            times.append(seconds)
    print(f"median {statistics.median(times) * 1e3:.0f} ms over {len(times)} runs, M = {args.members}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
