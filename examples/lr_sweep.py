"""A learning-rate sweep of the tutorial's neuron: 100 seeds x 60 rates, 3000 steps.

    python examples/lr_sweep.py                # figures in a new temporary directory (printed)
    python examples/lr_sweep.py --out figures  # figures in ./figures

Prints the summary and writes lr_sweep_*.png. Shows how convergence speeds up with the
rate and where training turns unstable. (The figures in docs/ were made with
--out docs; the default never writes over them.)
"""

import argparse
import pathlib
import tempfile
import time

import numpy as np

import fastneuron as fn
from fastneuron import plot


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--rates", type=int, default=60)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="directory for the figures, created if needed (default: a new temporary directory)")
    parser.add_argument("--backend", default="auto", help="fastneuron backend (default: auto)")
    args = parser.parse_args(argv)
    if args.rates < 46 or args.seeds < 2:
        parser.error("--rates must be >= 46 and --seeds >= 2 (the trajectories pick rates 15, 35, 45 and seeds 0, 1)")

    lrs = np.geomspace(1e-4, 3e-1, args.rates)
    t = time.perf_counter()
    result = fn.train(**fn.grid(seeds=range(args.seeds), lrs=lrs), steps=args.steps, log_every=10,
                      backend=args.backend)
    print(f"{len(result)} members x {args.steps} steps on {result.settings['backend']} "
          f"in {time.perf_counter() - t:.1f} s")

    summary = result.summary(by="lr", tol=1e-4)
    print(summary)
    rows = summary.rows
    stable = [r["lr"] for r in rows if r["diverged"] == 0]
    unstable = [r["lr"] for r in rows if r["diverged"] > 0]
    print(f"largest rate with no diverged seed: {max(stable):.4g}")
    if unstable:
        print(f"smallest rate with a diverged seed: {min(unstable):.4g} "
              f"({next(r['diverged'] for r in rows if r['lr'] == min(unstable)):.0%} of seeds)")

    out = pathlib.Path(args.out) if args.out is not None else pathlib.Path(tempfile.mkdtemp(prefix="lr_sweep_"))
    out.mkdir(parents=True, exist_ok=True)
    plot.risk_vs_lr(result, path=out / "lr_sweep_risk_vs_lr.png")
    plot.risk_vs_step(result, path=out / "lr_sweep_risk_vs_step.png")
    # A few seeds at three stable rates, slow to fast.
    picks = [int(np.flatnonzero(result.lrs.numpy() == np.float32(lr))[s])
             for lr in (lrs[15], lrs[35], lrs[45]) for s in (0, 1)]
    plot.trajectories(result, members=picks, path=out / "lr_sweep_trajectories.png")
    print(f"figures in {out}")


if __name__ == "__main__":
    main()
