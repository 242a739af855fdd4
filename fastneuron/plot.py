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


def risk_vs_lr(result, path=None, title: str = "Final population risk against learning rate"):
    """Median final risk per lr (over seeds) with a p10-p90 band, log-log; learning
    rates where members diverged are marked along the top (x: every member diverged)."""
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
    ax.legend(loc="best", fontsize=8)
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
    """(w, b) paths of a few members from their init to the target (a, c)."""
    plt = _plt()
    if result.history_weight is None:
        raise ValueError("trajectories needs a history: train with log_every")
    if members is None:
        members = np.linspace(0, len(result) - 1, min(n, len(result))).round().astype(int)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i in members:
        w, b = result.history_weight[:, i].numpy(), result.history_bias[:, i].numpy()
        (line,) = ax.plot(w, b, lw=1, label=f"seed {result.seeds[i]}, lr {float(result.lrs[i]):.3g}")
        ax.plot(w[:1], b[:1], "o", color=line.get_color(), ms=4)
    s = result.settings
    ax.plot([s["a"]], [s["c"]], "k*", ms=12, label=f"target ({s['a']:g}, {s['c']:g})")
    ax.set_xlabel("w")
    ax.set_ylabel("b")
    ax.set_title("(w, b) trajectories (dots: after step 0)")
    ax.legend(fontsize=7)
    return _finish(fig, path)
