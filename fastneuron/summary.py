"""Sweep summaries: per group of members (e.g. per learning rate, over the seeds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

@dataclass
class Summary:
    """Rows of a summary: one dict per group. ``str()`` gives a readable table."""

    by: tuple
    tol: float
    rows: list

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
        return "\n".join(lines)

    __repr__ = __str__


def summarize(result, by=("lr",), tol: float = 1e-4) -> Summary:
    """Count, fraction diverged, median/p10/p90 of the final population risk over the
    members that did not diverge (None when all did), and the median over members of
    the first logged step whose risk is below ``tol`` (None when the median member
    never gets there, or without a history)."""
    if isinstance(by, str):
        by = (by,)
    by = tuple(by)
    columns = {"lr": result.lrs.numpy(), **{k: v.numpy() for k, v in result.member_options.items()},
               "seed": result.seeds}
    for key in by:
        if key not in columns:
            raise ValueError(f"by: unknown column {key!r}; choose from {', '.join(columns)}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    keys = np.stack([columns[k].astype(np.float64) if k != "seed" else columns[k].astype(np.uint64).astype(object)
                     for k in by], axis=1) if by else np.zeros((len(result), 0))
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
        row = {k: (int(v) if k == "seed" else float(np.float32(v))) for k, v in zip(by, key)}
        row["count"] = int(idx.size)
        row["diverged"] = float(diverged[idx].mean())
        if ok.size:
            p10, med, p90 = np.quantile(risk[ok], [0.1, 0.5, 0.9])
            row.update(risk_median=float(med), risk_p10=float(p10), risk_p90=float(p90))
        else:
            row.update(risk_median=None, risk_p10=None, risk_p90=None)
        row["step_below_tol"] = None
        if first_below is not None:
            # Members that never get below tol count as infinitely late.
            med_step = np.quantile(first_below[idx], 0.5, method="lower")
            row["step_below_tol"] = None if not np.isfinite(med_step) else int(med_step)
        rows.append(row)
    return Summary(by=by, tol=tol, rows=rows)


def _first_step_below(result, tol: float):
    """Per member, the first logged step whose risk is below tol (inf if none); None without history."""
    hist = result.history_risk
    if hist is None or hist.shape[0] == 0:
        return None
    below = (hist < tol).numpy()  # NaN (diverged) compares False
    steps = result.history_steps.numpy().astype(np.float64)
    first = np.where(below.any(axis=0), steps[below.argmax(axis=0)], np.inf)
    return first
