"""A seed x learning-rate sweep analysed as labeled data with ``result.to_xarray()``.

    python examples/sweep_xarray.py                   # figure in a new temporary directory (printed)
    python examples/sweep_xarray.py figs/sweep.png    # figure at that path

100 seeds x 60 rates, 3000 steps, (w, b) logged every 10 steps. ``to_xarray()`` turns
the grid into a Dataset with dimensions (seed, lr) (+ step for the history), so the
analysis is one line each: the median final risk over the seeds per rate, and the
converged step (first logged step with risk below 1e-4) over (seed, lr) as a heatmap.
Needs ``pip install 'fastneuron[analysis]'`` and matplotlib. (docs/sweep_xarray.png
was made with ``docs/sweep_xarray.png`` as the path; the default never writes over it.)
"""

import argparse
import pathlib
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fastneuron as fn  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", nargs="?", default=None,
                        help="path of the PNG (default: sweep_xarray.png in a new temporary directory)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--backend", default="eager",
                        help="fastneuron backend (default: eager, about 5 s on 2 CPU cores; compile adds a "
                             "cold compile of about 40 s)")
    args = parser.parse_args(argv)

    t = time.perf_counter()
    result = fn.train(**fn.grid(seeds=range(100), lrs=np.geomspace(1e-4, 3e-1, 60)), steps=args.steps,
                      log_every=10, backend=args.backend, progress=False)
    print(f"{len(result)} members x {args.steps} steps on {result.settings['backend']} "
          f"in {time.perf_counter() - t:.1f} s")

    ds = result.to_xarray(tol=1e-4)  # dims (seed: 100, lr: 60, step: 300)
    median_risk = ds.risk.median("seed")  # per lr, over the seeds that did not diverge (NaN: all did)
    converged = ds.step_below_tol  # (seed, lr): first logged step with risk < 1e-4, NaN if never

    print(median_risk.to_series().iloc[::6].to_string(float_format="{:.3g}".format))
    stable = ds.lr.where((ds.diverged_at < 0).all("seed"), drop=True)
    print(f"largest rate with no diverged seed: {float(stable.max()):.4g}")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    median_risk.plot(ax=left, xscale="log", marker=".")
    left.set_yscale("symlog", linthresh=1e-14)  # some rates end at exactly w = 2, b = 1: risk 0
    left.set_ylim(bottom=0)
    left.set(title="median final risk over 100 seeds (gap: every seed diverged)", ylabel="population risk")
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    converged.plot(ax=right, x="lr", y="seed", xscale="log", cmap=cmap,
                   cbar_kwargs={"label": "first logged step with risk < 1e-4"})
    right.set(title="converged step (grey: never, or diverged)")

    path = (pathlib.Path(args.figure) if args.figure is not None
            else pathlib.Path(tempfile.mkdtemp(prefix="sweep_xarray_")) / "sweep_xarray.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
