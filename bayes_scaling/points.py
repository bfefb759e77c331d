"""Requests for predictions at planned runs: the checks the loss and the lr / batch predictions
share, so that both refuse the same impossible points with the same message."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["PredictionError", "check_points", "pick_labels"]


class PredictionError(ValueError):
    """A prediction request that names an arch, eval set or value the posterior cannot serve."""


# column -> (lower bound, whether the bound itself is allowed): the laws take logs, so a zero,
# negative, infinite or NaN input would come back as NaN rather than as an error.
RULES = {
    "n_active": (0.0, False),
    "n_total": (0.0, False),
    "tokens": (0.0, False),
    "experts": (1.0, True),
    "granularity": (0.0, False),
}


def check_points(frame: pd.DataFrame, required: Sequence[str] = ("n_active", "tokens")) -> None:
    """Refuse a missing required column, and any value outside its rule or not finite, naming
    the column, the value and the point (counted from 1); ``n_total`` must be >= ``n_active``."""
    for column in required:
        if column not in frame:
            raise PredictionError(f"prediction points need a {column!r} column")
    for column, (low, inclusive) in RULES.items():
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < low) | ((values == low) & (not inclusive))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            relation = ">=" if inclusive else ">"
            raise PredictionError(
                f"{column} = {values[row]:g} (point {row + 1}); "
                f"expected a finite number {relation} {low:g}"
            )
    if "n_total" in frame:
        below = np.flatnonzero(frame["n_total"].to_numpy(float) < frame["n_active"].to_numpy(float))
        if below.size:
            row = int(below[0])
            raise PredictionError(
                f"n_total = {frame['n_total'].iloc[row]:g} < n_active = "
                f"{frame['n_active'].iloc[row]:g} (point {row + 1}); expected n_total >= n_active"
            )


def pick_labels(frame: pd.DataFrame, column: str, known: Sequence[str]) -> None:
    """Fill ``column`` with the posterior's only label, or refuse an ambiguous or unknown one."""
    if column not in frame:
        if len(known) > 1:
            raise PredictionError(f"the posterior has several {column}s; name one of {list(known)}")
        frame[column] = known[0]
    unknown = sorted(set(frame[column].astype(str)) - set(known))
    if unknown:
        raise PredictionError(f"unknown {column} {unknown}; the posterior knows {list(known)}")
