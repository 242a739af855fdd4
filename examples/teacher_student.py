"""Teacher-student with a ReLU neuron in d = 16: which learning rates find the teacher, and how fast.

    python examples/teacher_student.py                # figure in a new temporary directory (printed)
    python examples/teacher_student.py --out docs     # how docs/teacher_student.png was made
    python examples/teacher_student.py --quick        # a small, fast run (the test's)

The teacher is ``relu(a . x)``: ``a`` a fixed unit vector in R^16 (NumPy
``default_rng(0).standard_normal(16)``, normalized; trained as its float32 values), c = 0,
x ~ N(0, I_16) (SPEC §6d, ``problem="teacher"``). The student is ``relu(w . x + b)``
(``nn.Linear(16, 1)``'s init, plain SGD, batch 1, no label noise), trained twice over the same
1000 seeds x 30 rates (log-spaced, 3e-4 to 0.5), 3000 steps: with a bias and without one
(``bias`` is run-wide). The same seeds give both runs the same initial w and the same x stream.

A member succeeds when its final parameters are within 1% of the teacher's:
``||(w, b) - (a, 0)|| / ||a|| < 0.01`` (without a bias, b = 0). The teacher is the one exact
rest point of the noise-free problem, so members that find it end within float32 rounding of
it; everything else fails: members that diverge (a non-finite w or b), dead ReLUs (the
student fires on less than 1% of inputs: ``P(w . x + b > 0) = Phi(b / ||w||)``, in closed
form for Gaussian x, against the teacher's 50%), and the rest (too slow, or thrown far from
the teacher and still wandering). Time to converge: the first logged step (``log_every``
30: a history of 100 x M x 16 float32) at which a successful member's relative error is
below the threshold; the figure shows its median and quartiles over the successes.

Prints a table per rate (success, diverged and dead fractions, median time to converge) and a
few sentences; draws the success fraction and the time to converge against the rate, both
settings on each panel (teacher_student.png).
"""

import argparse
import pathlib
import tempfile
import time

import numpy as np
import torch

import fastneuron as fn

D = 16
TEACHER_SEED = 0
THRESHOLD = 1e-2  # relative parameter error for success
DEAD = 1e-2  # a student that fires on less than this fraction of inputs is dead
QUICK = {"seeds": 10, "rates": 8, "steps": 1000, "log_every": 20}
FULL = {"seeds": 1000, "rates": 30, "steps": 3000, "log_every": 30}


def teacher() -> np.ndarray:
    """The teacher's a: a unit vector from a fixed NumPy seed, as the float32 values that train."""
    g = np.random.default_rng(TEACHER_SEED).standard_normal(D)
    return (g / np.linalg.norm(g)).astype(np.float32)


def sweep(bias: bool, a: np.ndarray, seeds: int, lrs: np.ndarray, steps: int, log_every: int, backend: str,
          threads) -> dict:
    """One run (every seed x every rate) and its per-member outcome, as (seeds, rates) arrays."""
    t = time.perf_counter()
    r = fn.train(**fn.grid(seeds=range(seeds), lrs=lrs), steps=steps, problem="teacher", inputs=D,
                 activation="relu", bias=bias, a=a, c=0.0, x_dist="normal", x_mean=0.0, x_std=1.0,
                 log_every=log_every, backend=backend, threads=threads)
    elapsed = time.perf_counter() - t
    shape = (seeds, len(lrs))  # grid(): the seeds vary slowest, member i = (seed i // R, lr i % R)
    a64 = a.astype(np.float64)
    norm_a = float(np.linalg.norm(a64))

    def rel_err(w, b):
        w, b = torch.as_tensor(w).to(torch.float64), torch.as_tensor(b).to(torch.float64)
        return (((w - torch.from_numpy(a64)) ** 2).sum(-1) + b * b).sqrt().numpy() / norm_a

    w, b = r.weight.to(torch.float64), r.bias.to(torch.float64)
    err = rel_err(w, b)
    diverged = r.diverged_at.numpy() >= 0
    # P(w . x + b > 0) for x ~ N(0, I): Phi(b / ||w||) (w = 0: fires iff b > 0).
    nw = w.norm(dim=-1)
    active = torch.where(nw > 0, torch.special.ndtr(b / nw.clamp_min(1e-300)), (b > 0).to(torch.float64)).numpy()
    success = ~diverged & (err < THRESHOLD)
    dead = ~diverged & ~success & (active < DEAD)

    # First logged step below the threshold, one logged step at a time (the history stays float32).
    steps_logged = r.history_steps.numpy()
    first = np.full(len(err), -1, dtype=np.int64)
    for k in range(len(steps_logged)):
        below = rel_err(r.history_weight[k], r.history_bias[k]) < THRESHOLD
        first = np.where((first < 0) & below, steps_logged[k], first)
    # A success never seen below the threshold in the log got there after the last logged step:
    # the final state, after step steps - 1.
    first = np.where(success & (first < 0), steps - 1, first)
    t_conv = np.where(success, first, np.nan).astype(np.float64)
    print(f"bias={bias}: {len(r)} members x {steps} steps on {r.settings['backend']} in {elapsed:.1f} s")
    return {k: v.reshape(shape) for k, v in
            {"success": success, "diverged": diverged, "dead": dead, "t": t_conv, "err": err}.items()}


def per_rate(out: dict) -> dict:
    """Fractions over the seeds and the time to converge's quartiles over the successes, per rate
    (only where at least 1% of the seeds, and at least one, succeed: a median of a few is noise)."""
    t = out["t"]
    some = (~np.isnan(t)).sum(axis=0) >= max(1, int(np.ceil(0.01 * t.shape[0])))
    q = np.full((3, t.shape[1]), np.nan)
    if some.any():
        q[:, some] = np.nanquantile(t[:, some], [0.25, 0.5, 0.75], axis=0)
    return {"success": out["success"].mean(0), "diverged": out["diverged"].mean(0), "dead": out["dead"].mean(0),
            "t25": q[0], "t50": q[1], "t75": q[2]}


def table(lrs, stats: dict) -> None:
    names = list(stats)
    head = "".join(f"  | {name:^27}" for name in names)
    print(f"{'':>9}{head}")
    sub = "  |    ok   div  dead  t_median" * len(names)
    print(f"{'lr':>9}{sub}")
    for j, lr in enumerate(lrs):
        cells = ""
        for s in stats.values():
            t50 = "-" if np.isnan(s["t50"][j]) else f"{s['t50'][j]:.0f}"
            cells += f"  | {s['success'][j]:5.2f} {s['diverged'][j]:5.2f} {s['dead'][j]:5.2f} {t50:>9}"
        print(f"{lr:9.3g}{cells}")


def describe(name: str, lrs, s: dict, steps: int) -> None:
    good = lrs[s["success"] >= 0.99]
    span = f"at least 99% of the seeds succeed for lr {good.min():.3g} to {good.max():.3g}" if len(good) \
        else f"no rate brings 99% of the seeds there (best: {s['success'].max():.0%})"
    if np.isnan(s["t50"]).all():
        fastest = "no member converges"
    else:
        j = int(np.nanargmin(s["t50"]))
        fastest = f"fastest median time to converge {s['t50'][j]:.0f} steps at lr {lrs[j]:.3g}"
    div = lrs[s["diverged"] > 0]
    first_div = f"the first seed diverges at lr {div.min():.3g}" if len(div) else "no seed diverges"
    j_dead = int(np.argmax(s["dead"]))
    dead = (f"dead ReLUs peak at {s['dead'][j_dead]:.0%} (lr {lrs[j_dead]:.3g})" if s["dead"][j_dead] > 0
            else "no dead ReLU")
    print(f"{name}: {span}; {fastest}; {first_div}; {dead}.")


def plot(lrs, stats: dict, path: pathlib.Path, seeds: int, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, constrained_layout=True)
    for (name, s), color in zip(stats.items(), ("C0", "C1")):
        left.plot(lrs, s["success"], "o-", color=color, ms=3.5, label=f"{name}: success")
        left.plot(lrs, s["diverged"], "--", color=color, lw=1, label=f"{name}: diverged")
        if s["dead"].any():
            left.plot(lrs, s["dead"], ":", color=color, lw=1.5, label=f"{name}: dead ReLU")
        right.plot(lrs, s["t50"], "o-", color=color, ms=3.5, label=f"{name}: median")
        right.fill_between(lrs, s["t25"], s["t75"], color=color, alpha=0.2, lw=0, label=f"{name}: quartiles")
    left.set(xscale="log", xlabel="learning rate", ylabel=f"fraction of {seeds} seeds", ylim=(-0.03, 1.03),
             title=f"success: ||(w, b) - (a, 0)|| / ||a|| < {THRESHOLD:g} after {steps} steps")
    left.legend(fontsize=7.5, loc="center left")
    right.axhline(steps, color="0.6", lw=0.8, ls=":")  # the end of the run
    t25 = np.concatenate([s["t25"] for s in stats.values()])
    bottom = 0.5 * max(1.0, np.nanmin(t25)) if not np.isnan(t25).all() else 1.0
    right.set_ylim(bottom, 1.5 * steps)  # fixed: also when no seed converges (no data to scale by)
    right.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="first logged step below the threshold",
              title="time to converge, over the successful seeds")
    right.legend(fontsize=7.5)
    fig.suptitle(f"ReLU teacher-student, d = {D}, x ~ N(0, I), SGD batch 1", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"a small run: {QUICK['seeds']} seeds x {QUICK['rates']} rates, {QUICK['steps']} steps "
                             f"(the options below override it)")
    parser.add_argument("--seeds", type=int, default=None, help=f"default {FULL['seeds']}")
    parser.add_argument("--rates", type=int, default=None, help=f"default {FULL['rates']}")
    parser.add_argument("--steps", type=int, default=None, help=f"default {FULL['steps']}")
    parser.add_argument("--log-every", type=int, default=None, help=f"default {FULL['log_every']}")
    parser.add_argument("--lr-min", type=float, default=3e-4)
    parser.add_argument("--lr-max", type=float, default=0.5)
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="directory for the figure, created if needed (default: a new temporary directory)")
    parser.add_argument("--backend", default="compile", help="fastneuron backend (default: compile)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: fastneuron's choice)")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for k in sizes:
        if getattr(args, k) is not None:
            sizes[k] = getattr(args, k)
    if sizes["seeds"] < 1 or sizes["rates"] < 2 or sizes["steps"] < 1 or sizes["log_every"] < 1:
        parser.error("--seeds must be >= 1, --rates >= 2, --steps and --log-every >= 1")
    if not 0 < args.lr_min < args.lr_max:
        parser.error("need 0 < --lr-min < --lr-max")

    a = teacher()
    lrs = np.geomspace(args.lr_min, args.lr_max, sizes["rates"])
    print(f"teacher a: unit vector from numpy default_rng({TEACHER_SEED}), d = {D}; {sizes['seeds']} seeds x "
          f"{sizes['rates']} rates ({lrs[0]:.3g} to {lrs[-1]:.3g}), {sizes['steps']} steps, "
          f"log every {sizes['log_every']}")
    t = time.perf_counter()
    outs = {name: sweep(bias, a, sizes["seeds"], lrs, sizes["steps"], sizes["log_every"], args.backend, args.threads)
            for name, bias in (("with bias", True), ("no bias", False))}
    print(f"both runs in {time.perf_counter() - t:.1f} s")
    stats = {name: per_rate(o) for name, o in outs.items()}
    print(f"success: relative error < {THRESHOLD:g} at the end; ok / div / dead: fractions of the seeds "
          f"(dead: fires on < {DEAD:.0%} of inputs); t_median: median first logged step below it, over the successes "
          f"(where at least 1% of the seeds succeed)")
    table(lrs, stats)
    for name, s in stats.items():
        describe(name, lrs, s, sizes["steps"])

    out = pathlib.Path(args.out) if args.out is not None else pathlib.Path(tempfile.mkdtemp(prefix="teacher_student_"))
    path = out / "teacher_student.png"
    plot(lrs, stats, path, sizes["seeds"], sizes["steps"])
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
