"""SGD against Adam on the tutorial's neuron: where each stops converging, and how fast.

    python examples/adam_lr_sweep.py              # figure in a new temporary directory (printed)
    python examples/adam_lr_sweep.py --out docs   # how docs/adam_lr_sweep.png was made

The same seeds (so the same initial weights and the same x stream, SPEC §2) and the same
rates, 1e-4 to 10, for torch.optim.SGD and torch.optim.Adam (default betas and eps), 3000
steps. Prints, per optimizer, the largest rate at which every seed gets below the risk
tolerance, the smallest at which some seed diverges, and the fastest median converged
step; draws the median final risk and the median converged step against the rate.
"""

import argparse
import pathlib
import tempfile
import time

import numpy as np

import fastneuron as fn

TOL = 1e-4


def sweep(optimizer: str, seeds: int, lrs, steps: int, backend: str):
    t = time.perf_counter()
    result = fn.train(**fn.grid(seeds=range(seeds), lrs=lrs), steps=steps, optimizer=optimizer, log_every=10,
                      backend=backend, progress=False)
    print(f"{optimizer}: {len(result)} members x {steps} steps on {result.settings['backend']} "
          f"in {time.perf_counter() - t:.1f} s")
    return result.summary(by="lr", tol=TOL).rows


def describe(optimizer: str, rows) -> None:
    converged = [r["lr"] for r in rows if r["diverged"] == 0 and r["risk_p90"] < TOL]
    diverged = [r["lr"] for r in rows if r["diverged"] > 0]
    fastest = min((r for r in rows if r["step_below_tol"] is not None), key=lambda r: r["step_below_tol"],
                  default=None)
    print(f"  every seed below {TOL:g} up to lr {max(converged):.3g}" if converged else "  no rate converges")
    print(f"  first diverged seed at lr {min(diverged):.3g}" if diverged else "  no seed diverges")
    if fastest is not None:
        print(f"  fastest median converged step {fastest['step_below_tol']} at lr {fastest['lr']:.3g}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--rates", type=int, default=50)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="directory for the figure, created if needed (default: a new temporary directory)")
    parser.add_argument("--backend", default="eager",
                        help="fastneuron backend (default: eager, which needs no compiling at this size)")
    args = parser.parse_args(argv)

    lrs = np.geomspace(1e-4, 10.0, args.rates)
    rows = {opt: sweep(opt, args.seeds, lrs, args.steps, args.backend) for opt in ("sgd", "adam")}
    for opt, r in rows.items():
        print(opt)
        describe(opt, r)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for opt, r in rows.items():
        x = [row["lr"] for row in r]
        # Exactly 0 (w and b at 2 and 1 to the last bit) is drawn at the floor 1e-16.
        risk = [max(row["risk_median"], 1e-16) if row["diverged"] < 0.5 else np.nan for row in r]
        step = [row["step_below_tol"] if row["step_below_tol"] is not None else np.nan for row in r]
        left.loglog(x, risk, ".-", label=opt)
        right.loglog(x, step, ".-", label=opt)
    left.set(xlabel="lr", ylabel="median final population risk (floor 1e-16)", ylim=(1e-17, 1e6),
             title=f"final risk over {args.seeds} seeds (gap: most seeds diverged)")
    right.set(xlabel="lr", ylabel=f"median first logged step with risk < {TOL:g}",
              title="converged step (gap: the median seed never gets there)")
    for ax in (left, right):
        ax.legend()
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    out = pathlib.Path(args.out) if args.out is not None else pathlib.Path(tempfile.mkdtemp(prefix="adam_lr_sweep_"))
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "adam_lr_sweep.png", dpi=110)
    print(f"figure: {out / 'adam_lr_sweep.png'}")


if __name__ == "__main__":
    main()
