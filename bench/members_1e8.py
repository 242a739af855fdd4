"""A hundred million members on the CPU, trained in member blocks.

    python bench/members_1e8.py                      # 10**8 members, T = 12, compile
    python bench/members_1e8.py --members 1e7 --steps 64 --member-block auto

The run's inputs and results stay on the host (about 56 bytes a member: seed, lr,
momentum, weight decay, w, b, diverged_at); only one block of members at a time is
trained. The script first trains 1024 members to compile the kernels, so that the
timed run measures training, then prints the block size, the wall time, the peak
resident memory of the process and the rate in neuron-steps/s. Needs about 6 GB.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time

import numpy as np
import torch


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 2**20 if sys.platform != "darwin" else kib / 2**30


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=float, default=1e8, help="number of members (default: 1e8)")
    ap.add_argument("--steps", type=int, default=12,
                    help="steps T (default: 12, one compiled chunk; fewer steps run the eager remainder)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--backend", default="compile")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--member-block", default=str(2**24),
                    help="members per block, or 'auto' for fastneuron's choice (default: 2**24)")
    ap.add_argument("--progress", action="store_true", help="show the progress bar on stderr")
    args = ap.parse_args(argv)

    import fastneuron
    from fastneuron import engine

    m = int(args.members)
    block = None if args.member_block == "auto" else int(float(args.member_block))
    dev = torch.device(args.device)
    shown_block = engine.member_block(m, 0, dev, block)  # what train() will use
    print(f"fastneuron {fastneuron.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {dev}, backend {args.backend}")
    print(f"members        {m:,}")
    print(f"steps          {args.steps}")
    print(f"member block   {shown_block:,} ({math.ceil(m / shown_block)} blocks)"
          + (" (auto)" if block is None else ""))

    t0 = time.perf_counter()
    fastneuron.train(range(1024), args.lr, args.steps, backend=args.backend, device=dev, progress=False)
    print(f"warm-up        {time.perf_counter() - t0:.2f} s (1024 members: compiles the kernels)")
    rss0 = peak_rss_gib()

    t0 = time.perf_counter()
    r = fastneuron.train(range(m), args.lr, args.steps, backend=args.backend, device=dev,
                         member_block=block, progress=args.progress)
    wall = time.perf_counter() - t0
    ok = (r.diverged_at < 0).numpy()
    print(f"wall time      {wall:.2f} s")
    print(f"peak RSS       {peak_rss_gib():.2f} GiB (before the run: {rss0:.2f} GiB)")
    print(f"neuron-steps/s {m * args.steps / wall:.3g}")
    print(f"diverged       {int((~ok).sum())}")
    print(f"median weight  {float(np.median(r.weight.numpy()[ok])):.6g} after {args.steps} steps")
    # Spot check: the last member, alone, gives the same bits.
    last = fastneuron.train([m - 1], args.lr, args.steps, backend="eager", progress=False)
    same = torch.equal(last.weight.view(torch.int32), r.weight[-1:].view(torch.int32))
    print(f"member {m - 1:,} alone (eager) equal: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
