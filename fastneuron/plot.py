"""Plots of sweeps (matplotlib, the ``plot`` extra). Each function returns the figure
and, given ``path``, saves it there."""

from __future__ import annotations

import warnings

import numpy as np


#: Risk is drawn clipped to this range (log axes): many members end exactly on
#: (a, c) in float32 (risk 0), and unstable ones pass 1e40 before they overflow.
RISK_CLIP = (1e-16, 1e6)


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("fastneuron.plot needs matplotlib: pip install 'fastneuron[plot]'") from None
    return plt


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


#: How the three stability edges of :mod:`fastneuron.theory` are drawn.
EDGE_STYLE = {"mean": ("mean edge", "tab:green", "--"),
              "mean_square": ("mean-square edge", "tab:purple", ":"),
              "almost_sure": ("almost-sure edge", "tab:red", "-.")}


def _has_noise(result) -> bool:
    noise = result.member_options.get("noise")
    return noise is not None and bool((np.asarray(noise) > 0).any())


def _want_edges(result, edges) -> bool:
    """``edges``: True, False or "auto" (drawn for plain SGD with label noise)."""
    from .summary import theory_applies

    if edges == "auto":
        return _has_noise(result) and theory_applies(result)
    if edges and not theory_applies(result):
        raise ValueError("edges: the theory's edges hold for plain SGD (momentum and weight decay 0) of "
                         "nn.Linear(1, 1) (one input, a bias, no activation) only")
    return bool(edges)


def draw_edges(ax, result_or_problem, **problem_args) -> dict:
    """Vertical lines, labeled, at the mean, mean-square and almost-sure edges of
    :mod:`fastneuron.theory` (a result, an SGDProblem or problem arguments); returns the
    edges. The x limits are kept: an edge outside them is not drawn but still labeled."""
    from . import theory

    e = theory.edges(result_or_problem, **problem_args)
    xlim = ax.get_xlim()
    for name, (label, color, ls) in EDGE_STYLE.items():
        lr = float(e[name])
        text = f"{label} {lr:.4g}" + (f" \u00b1 {e[name].se:.1g}" if name == "almost_sure" else "")
        ax.axvline(lr, color=color, ls=ls, lw=1.2, label=text)
    ax.set_xlim(xlim)
    return e


def risk_vs_lr(result, path=None, title: str = "Final population risk against learning rate", edges="auto"):
    """Median final risk per lr (over seeds) with a p10-p90 band, log-log; learning
    rates where members diverged are marked along the top (x: every member diverged).
    ``edges``: draw the stability edges of :mod:`fastneuron.theory` as labeled vertical
    lines (:func:`draw_edges`): "auto" (the default) for a plain-SGD result with label
    noise only (a result without noise draws as before), True for any plain-SGD result,
    False never."""
    plt = _plt()
    rows = result.summary(by=("lr",)).rows
    lr = np.array([r["lr"] for r in rows])
    ok = np.array([r["risk_median"] is not None for r in rows])
    frac = np.array([r["diverged"] for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lo_clip, hi_clip = RISK_CLIP
    if ok.any():
        med, p10, p90 = (np.clip([r[k] for r in rows if r["risk_median"] is not None], lo_clip, hi_clip)
                         for k in ("risk_median", "risk_p10", "risk_p90"))
        ax.fill_between(lr[ok], p10, p90, alpha=0.3, label="p10-p90 over seeds")
        ax.plot(lr[ok], med, "o-", ms=3, label="median")
    some = (frac > 0) & (frac < 1)
    if some.any():
        ax.plot(lr[some], np.full(some.sum(), hi_clip), "v", color="tab:orange", label="some seeds diverged")
    if (frac == 1).any():
        ax.plot(lr[frac == 1], np.full((frac == 1).sum(), hi_clip), "x", color="tab:red",
                label="all seeds diverged")
    ax.set_ylim(lo_clip / 3, hi_clip * 3)
    ax.text(0.01, 0.01, f"risk clipped to [{lo_clip:g}, {hi_clip:g}]; 0 = exactly (a, c) in float32",
            transform=ax.transAxes, fontsize=7, color="0.4")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"population risk after {result.settings['steps']} steps")
    ax.set_title(title)
    if _want_edges(result, edges):
        draw_edges(ax, result)
    ax.legend(loc="best", fontsize=8)
    return _finish(fig, path)


def spread_vs_lr(result, path=None, edges="auto", stationary: bool = True,
                 title: str = "Spread of (w, b) over seeds against learning rate"):
    """The measured spread over seeds (std of the final w and b among non-diverged
    members, with +-2 standard errors, from ``result.summary(by="lr")``) against lr,
    beside the prediction of :mod:`fastneuron.theory` after the run's steps (solid) and,
    with ``stationary``, the stationary one (dotted), log-log; a third panel gives the
    fraction of seeds diverged per lr. ``edges`` as for :func:`risk_vs_lr` (needs plain
    SGD). Needs a result with label noise."""
    from . import theory
    from .summary import theory_applies

    plt = _plt()
    if not _has_noise(result):
        raise ValueError("spread_vs_lr needs a result with label noise (train with noise > 0)")
    rows = result.summary(by=("lr",)).rows
    lr = np.array([r["lr"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharex=True)
    noise = np.unique(np.asarray(result.member_options["noise"], dtype=np.float32))
    problem = theory.problem_of(result) if theory_applies(result) else None
    dense = np.geomspace(lr.min(), lr.max(), 400) if lr.size else lr
    draw = _want_edges(result, edges)
    for ax, name in zip(axes, ("w", "b")):
        std = np.array([r[f"{name}_std"] for r in rows], dtype=float)
        se = np.array([r[f"{name}_std_se"] for r in rows], dtype=float)
        pred = np.array([r[f"{name}_std_pred"] for r in rows], dtype=float)
        ok = np.isfinite(std) & (std > 0)
        # Past the edges the survivors' spread runs to 1e35: the y range follows the
        # rates with a prediction, and points above it sit on its top edge.
        ref = np.concatenate([pred[np.isfinite(pred)], std[ok & np.isfinite(pred)]])
        top = 30 * ref.max() if ref.size else np.inf
        low = ok & (std <= top)
        ax.errorbar(lr[low], std[low], yerr=2 * np.nan_to_num(se[low]), fmt="o", ms=3, capsize=2,
                    label="measured (std over seeds, \u00b12 se)")
        if (ok & ~low).any():
            ax.plot(lr[ok & ~low], np.full((ok & ~low).sum(), top), "^", color="tab:orange",
                    label="measured, above the range")
        if ref.size:
            ax.set_ylim(ref.min() / 3, top * 1.5)
        if np.isfinite(pred).any():
            ax.plot(lr, pred, "-", color="k", lw=1, label=f"predicted after {result.settings['steps']} steps")
        if stationary and problem is not None and noise.size == 1:
            k = 0 if name == "w" else 1
            stat = np.array([theory.predicted_spread(float(v), float(noise[0]), problem)[k] for v in dense])
            ax.plot(dense, stat, ":", color="0.4", lw=1.2, label="predicted, stationary")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"std of final {name} over seeds")
    ax = axes[2]
    ax.plot(lr, [r["diverged"] for r in rows], "o-", ms=3, color="tab:red", label="fraction of seeds diverged")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"diverged within {result.settings['steps']} steps")
    for ax in axes:
        if lr.size:
            ax.set_xlim(lr.min() / 1.1, lr.max() * 1.1)
        if draw:
            draw_edges(ax, result)
        ax.legend(loc="best", fontsize=7)
    sigma = ", ".join(f"{v:g}" for v in noise)
    fig.suptitle(f"{title} (noise {sigma}, batch {result.settings.get('batch_size', 1)})", fontsize=10)
    return _finish(fig, path)


def risk_vs_step(result, lrs=None, path=None, max_lines: int = 6):
    """Median logged risk against step per lr, with a p10-p90 band over seeds (log y).
    ``lrs``: the rates to draw (default: up to ``max_lines`` spread over the sweep)."""
    plt = _plt()
    if result.history_weight is None:
        raise ValueError("risk_vs_step needs a history: train with log_every")
    all_lrs = np.unique(result.lrs.numpy())
    if lrs is None:  # spread over the rates where some seed survives
        alive = result.diverged_at.numpy() < 0
        all_lrs = np.unique(result.lrs.numpy()[alive]) if alive.any() else all_lrs
        pick = np.unique(np.linspace(0, len(all_lrs) - 1, min(max_lines, len(all_lrs))).round().astype(int))
        lrs = all_lrs[pick]
    risk = result.history_risk.numpy()
    steps = result.history_steps.numpy()
    lo_clip, hi_clip = RISK_CLIP
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for lr in np.atleast_1d(np.asarray(lrs, dtype=np.float32)):
        cols = result.lrs.numpy() == lr
        if not cols.any():
            raise ValueError(f"lrs: no member has lr {lr}")
        r = risk[:, cols]
        with warnings.catch_warnings():  # steps where every seed diverged are NaN: no line there
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(r, axis=1)
            p10, p90 = np.nanquantile(r, 0.1, axis=1), np.nanquantile(r, 0.9, axis=1)
        med, p10, p90 = (np.clip(v, lo_clip, hi_clip) for v in (med, p10, p90))
        (line,) = ax.plot(steps, med, label=f"lr {lr:.3g}")
        ax.fill_between(steps, p10, p90, color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_ylim(lo_clip / 3, hi_clip * 3)
    ax.set_xlabel("step")
    ax.set_ylabel("population risk")
    ax.set_title("Risk against step (median, p10-p90 over seeds)")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def trajectories(result, members=None, path=None, n: int = 6):
    """(w, b) paths of a few members from their init to the target (a, c). With d > 1
    inputs, the weight is drawn as its norm |w| (the teacher's |a|)."""
    plt = _plt()
    if result.history_weight is None:
        raise ValueError("trajectories needs a history: train with log_every")
    if members is None:
        members = np.linspace(0, len(result) - 1, min(n, len(result))).round().astype(int)
    s = result.settings
    vector = s.get("inputs", 1) != 1
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i in members:
        w, b = result.history_weight[:, i].numpy(), result.history_bias[:, i].numpy()
        if vector:
            w = np.linalg.norm(w.astype(np.float64), axis=-1)
        (line,) = ax.plot(w, b, lw=1, label=f"seed {result.seeds[i]}, lr {float(result.lrs[i]):.3g}")
        ax.plot(w[:1], b[:1], "o", color=line.get_color(), ms=4)
    if vector:
        a = np.asarray(s["a"], dtype=np.float64)
        a_norm = float(np.linalg.norm(np.broadcast_to(a, (int(s["inputs"]),))))
        ax.plot([a_norm], [s["c"]], "k*", ms=12, label=f"teacher (|a| {a_norm:g}, c {s['c']:g})")
        ax.set_xlabel("|w|")
    else:
        ax.plot([s["a"]], [s["c"]], "k*", ms=12, label=f"target ({s['a']:g}, {s['c']:g})")
        ax.set_xlabel("w")
    ax.set_ylabel("b")
    ax.set_title(("(|w|, b)" if vector else "(w, b)") + " trajectories (dots: after step 0)")
    ax.legend(fontsize=7)
    return _finish(fig, path)
