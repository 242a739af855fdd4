"""Sweep summaries: per group of members (e.g. per learning rate, over the seeds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Summary:
    """Rows of a summary: one dict per group. ``str()`` gives a readable table."""

    by: tuple
    tol: float
    rows: list
    #: Lines printed under the table (:func:`notes`): why a column is empty, what the
    #: spread columns are the spread over.
    notes: tuple = ()

    def to_dataframe(self):
        """The rows as a pandas DataFrame (pandas is optional)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe() needs pandas; the rows are in .rows as dicts") from None
        return pd.DataFrame(self.rows)

    def to_xarray(self):
        """The rows as an xarray Dataset: one dimension per ``by`` column, its coordinate
        the groups' values; count, diverged, the risk quantiles and step_below_tol as
        variables (NaN where a group never got below tol). Needs pandas and xarray
        (``pip install 'fastneuron[analysis]'``)."""
        from ._extras import need

        need("pandas", "Summary.to_xarray()")
        need("xarray", "Summary.to_xarray()")
        frame = self.to_dataframe()
        frame["step_below_tol"] = frame["step_below_tol"].astype("float64")  # None -> NaN
        return frame.set_index(list(self.by)).to_xarray()

    def __str__(self) -> str:
        cols = [*self.by, "count", "diverged", "risk_median", "risk_p10", "risk_p90", "step_below_tol"]
        head = [*self.by, "count", "diverged", "risk median", "risk p10", "risk p90", f"step risk<{self.tol:g}"]
        if self.rows and "w_std" in self.rows[0]:  # label noise: the spread over each group's members
            cols += list(SPREAD_COLUMNS)
            head += ["w std", "w std se", "w std pred", "b std", "b std se", "b std pred"]

        def fmt(v):
            if v is None:
                return "-"
            if isinstance(v, float):
                return f"{v:.4g}"
            return str(v)

        cells = [[fmt(r[c]) for c in cols] for r in self.rows]
        widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(head)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
        return "\n".join([*lines, *self.notes])

    __repr__ = __str__


#: The spread columns of a result with label noise (see :func:`summarize`).
SPREAD_COLUMNS = ("w_std", "w_std_se", "w_std_pred", "b_std", "b_std_se", "b_std_pred")


def notes(tol: float, *, logged: bool, spread_over: Optional[list] = None) -> tuple:
    """The lines under a summary's table. Without a log (``logged`` False) the column of
    the first step below ``tol`` is all "-": say that it needs ``log_every``. With the
    spread columns (``spread_over``: the member columns, not in ``by``, whose values
    differ between members; None without those columns), say what they are the spread
    over: over the seeds only when the seeds are what differs within a group."""
    lines = []
    if not logged:
        lines.append(f"step risk<{tol:g}: needs a log (train with log_every=k, or --log-every K)")
    if spread_over is not None:
        differ = " and ".join(spread_over) if spread_over else "nothing (no spread)"
        lines.append(f"w std, b std (se: standard error): the spread of the final w, b over each group's members, "
                     f"which differ in {differ}")
        lines.append("w std pred, b std pred: theory's spread over seeds, for a group of one lr and one noise "
                     "(plain SGD; else nan)")
    return tuple(lines)


def varying(columns: dict, by: tuple) -> list:
    """The names of ``columns`` (see :func:`member_columns`) not in ``by`` whose values
    are not all equal, in the columns' order."""
    return [k for k, x in columns.items() if k not in by and len(x) and x.min() != x.max()]


def summarize(result, by=("lr",), tol: float = 1e-4) -> Summary:
    """Count, fraction diverged, median/p10/p90 of the final population risk over the
    members that did not diverge (None when all did), and the median over members of
    the first logged step whose risk is below ``tol`` (None when the median member
    never gets there, or without a history).

    With label noise (some member's ``noise`` > 0) each row also has the spread over
    the group's members (:data:`SPREAD_COLUMNS`, floats, NaN where undefined):

    - ``w_std``, ``b_std``: the standard deviation (ddof=1) of the final w and b over the
      group's non-diverged members; ``w_std_se``, ``b_std_se`` its standard error from
      the sample kurtosis (:func:`fastneuron.theory.std_with_se`);
    - ``w_std_pred``, ``b_std_pred``: the prediction of :mod:`fastneuron.theory`, exact
      after the run's ``steps`` from the U(-1, 1) init (:func:`fastneuron.theory.moments_at`;
      the stationary spread of :func:`fastneuron.theory.stationary` once the run has mixed).
      NaN unless the run is plain SGD (:func:`fastneuron.theory.plain_sgd`: optimizer "sgd",
      momentum and weight decay 0 for every member, no lr schedule) and the group has a
      single lr and a single noise, below the mean-square edge
      (:func:`fastneuron.theory.mean_square_edge`).

    Without label noise (no ``noise`` option, or 0 for every member) the rows are exactly
    as before: no spread columns. With ``inputs`` d > 1 (weight (M, d)) ``w_std`` is the
    root mean of the coordinates' variances and ``w_std_se`` its standard error
    (:func:`combine_spread`); the prediction is NaN (the theory is ``nn.Linear(1, 1)``'s).
    The risk is the result's ``risk`` (SPEC §6f: the evaluation set's mean loss for an
    activation or BCE).

    The printed table (``str()``) ends with :func:`notes`: that the step column needs a
    log, when there is none; what the spread columns are the spread over (the columns
    not in ``by`` that vary: the seeds for ``by="lr"``, the lrs for ``by="seed"``)."""
    columns = member_columns(result)
    by = check_by(by, columns, tol)
    keys = group_keys(columns, by, len(result))
    risk = result.risk.numpy()
    diverged = result.diverged_at.numpy() >= 0
    first_below = _first_step_below(result, tol)

    groups: dict = {}
    for i, key in enumerate(map(tuple, keys)):
        groups.setdefault(key, []).append(i)
    rows = []
    for key in sorted(groups):
        idx = np.asarray(groups[key])
        ok = idx[~diverged[idx]]
        row = group_row(by, key, count=int(idx.size), diverged=float(diverged[idx].mean()))
        row.update(risk_quantiles(risk[ok]))
        row["step_below_tol"] = None if first_below is None else median_step(first_below[idx])
        rows.append(row)
    noise = result.member_options.get("noise")
    spread = noise is not None and bool((np.asarray(noise) > 0).any())
    if spread:
        _add_spread(result, groups, rows, diverged)
    return Summary(by=by, tol=tol, rows=rows, notes=notes(tol, logged=first_below is not None,
                                                          spread_over=varying(columns, by) if spread else None))


# -- the pieces of a summary, shared with fastneuron.parts (which streams over parts) --------

def member_columns(result) -> dict:
    """The columns ``by`` may name: "lr", each per-member option, "seed" (NumPy arrays)."""
    return {"lr": result.lrs.numpy(), **{k: v.numpy() for k, v in result.member_options.items()},
            "seed": result.seeds}


def check_by(by, names, tol: float) -> tuple:
    """``by`` as a tuple of column names (ValueError naming an unknown one, or a bad ``tol``)."""
    if isinstance(by, str):
        by = (by,)
    by = tuple(by)
    for key in by:
        if key not in names:
            raise ValueError(f"by: unknown column {key!r}; choose from {', '.join(names)}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    return by


def group_keys(columns: dict, by: tuple, n: int) -> np.ndarray:
    """One row per member: its group's key (float64 of the float32 value; a seed as a
    Python int, the array then of dtype object)."""
    return np.stack([columns[k].astype(np.float64) if k != "seed" else columns[k].astype(np.uint64).astype(object)
                     for k in by], axis=1) if by else np.zeros((n, 0))


def group_row(by: tuple, key: tuple, *, count: int, diverged: float) -> dict:
    """A row's key columns, count and fraction diverged."""
    row = {k: (int(v) if k == "seed" else float(np.float32(v))) for k, v in zip(by, key)}
    row["count"] = count
    row["diverged"] = diverged
    return row


def risk_quantiles(risk_ok: np.ndarray) -> dict:
    """risk_median, risk_p10, risk_p90 of the non-diverged members' risks (None when none)."""
    if risk_ok.size:
        p10, med, p90 = np.quantile(risk_ok, [0.1, 0.5, 0.9])
        return dict(risk_median=float(med), risk_p10=float(p10), risk_p90=float(p90))
    return dict(risk_median=None, risk_p10=None, risk_p90=None)


def median_step(first_below: np.ndarray):
    """The median (the lower one) of the members' first logged steps below tol (inf:
    never), or None when that is never."""
    # Members that never get below tol count as infinitely late.
    med_step = np.quantile(first_below, 0.5, method="lower")
    return None if not np.isfinite(med_step) else int(med_step)


def spread_problem(result):
    """The theory's problem for the predicted spread (None unless plain SGD)."""
    from . import theory

    if theory_applies(result):
        try:
            return theory.problem_of(result)
        except (KeyError, TypeError, ValueError):
            return None
    return None


def spread_columns(w_stats: tuple, b_stats: tuple, problem, lr, noise, steps: int) -> dict:
    """The spread columns from ``(std, se)`` of w and b; the prediction for a group of
    one ``lr`` and one ``noise`` (None: several) under ``problem`` (None: NaN)."""
    from . import theory

    (w_std, w_se), (b_std, b_se) = w_stats, b_stats
    w_pred = b_pred = float("nan")
    if problem is not None and lr is not None and noise is not None:
        w_pred, b_pred = theory.predicted_spread(float(lr), float(noise), problem, steps=steps)
    return dict(w_std=w_std, w_std_se=w_se, w_std_pred=w_pred, b_std=b_std, b_std_se=b_se, b_std_pred=b_pred)


def combine_spread(stats: list) -> tuple:
    """One ``(std, se)`` of a weight with d > 1 coordinates from each coordinate's
    ``(s_i, se_i)``: the root mean of their variances ``sqrt(mean_i s_i**2)`` (the
    root-mean-square spread of a coordinate) and its standard error by the delta method,
    ``sqrt(sum_i (s_i se_i)**2) / (d std)`` (the coordinates taken as independent)."""
    s = np.array([a for a, _ in stats], dtype=np.float64)
    se = np.array([b for _, b in stats], dtype=np.float64)
    std = float(np.sqrt(np.mean(s * s)))
    if std == 0:
        return (std, 0.0 if bool((se == 0).all()) else float("nan"))
    return (std, float(np.sqrt(np.sum((s * se) ** 2)) / (s.size * std)))


def weight_spread(weight: np.ndarray) -> tuple:
    """``(std, se)`` of final weights: (n,) (one input) as
    :func:`fastneuron.theory.std_with_se`; (n, d) per coordinate, then
    :func:`combine_spread`."""
    from . import theory

    if weight.ndim == 1:
        return theory.std_with_se(weight)
    return combine_spread([theory.std_with_se(weight[:, i]) for i in range(weight.shape[1])])


def theory_applies(result) -> bool:
    """Whether :mod:`fastneuron.theory` describes ``result``: plain SGD
    (:func:`fastneuron.theory.plain_sgd`) of v2's neuron (one input, a bias, the
    identity, mse, the init unscaled; no v3 setting recorded)."""
    from . import theory

    s = result.settings
    v2_model = s.get("inputs", 1) == 1 and s.get("bias", True) is True \
        and s.get("activation", "identity") == "identity" and s.get("loss", "mse") == "mse" \
        and "init_scale" not in result.member_options  # the prediction starts from the U(-1, 1) init
    return v2_model and theory.plain_sgd(result)


def _add_spread(result, groups: dict, rows: list, diverged: np.ndarray) -> None:
    """The spread columns (see :func:`summarize`), row by row in sorted group order."""
    from . import theory

    weight, bias = result.weight.numpy(), result.bias.numpy()
    lrs = result.lrs.numpy()
    noise = np.asarray(result.member_options["noise"], dtype=np.float32)
    problem = spread_problem(result)
    steps = int(result.settings["steps"])
    for key, row in zip(sorted(groups), rows):
        idx = np.asarray(groups[key])
        ok = idx[~diverged[idx]]
        one = np.unique(lrs[idx]).size == 1 and np.unique(noise[idx]).size == 1
        row.update(spread_columns(weight_spread(weight[ok]), theory.std_with_se(bias[ok]), problem,
                                  lrs[idx[0]] if one else None, noise[idx[0]] if one else None, steps))


def _first_step_below(result, tol: float):
    """Per member, the first logged step whose risk is below tol (inf if none); None without history."""
    hist = result.history_risk
    if hist is None or hist.shape[0] == 0:
        return None
    below = (hist < tol).numpy()  # NaN (diverged) compares False
    steps = result.history_steps.numpy().astype(np.float64)
    first = np.where(below.any(axis=0), steps[below.argmax(axis=0)], np.inf)
    return first
