"""Splitting a run table at a cut: what a backtest fits and what it holds out (shared by
:mod:`bayes_scaling.backtest` and the within-data backtests of :mod:`bayes_scaling.calibration`)."""

from __future__ import annotations

import pandas as pd

__all__ = ["CUTS", "BacktestError", "cut_column", "split_at"]

# The cut names a user gives -> the run-table column they cut on.
CUTS = {"compute": "flops", "flops": "flops", "n_active": "n_active", "tokens": "tokens"}


class BacktestError(ValueError):
    """A backtest that cannot be run: an unknown cut, or a cut that leaves nothing to fit or
    nothing held out; the message names the cut and the threshold."""


def cut_column(cut: str) -> str:
    if cut not in CUTS:
        raise BacktestError(f"unknown cut {cut!r}; expected one of {sorted(set(CUTS) - {'flops'})}")
    return CUTS[cut]


def split_at(
    runs: pd.DataFrame, cut: str, threshold: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(fitted: at or below ``threshold``, held out: above it and of an arch and eval set the
    fitted runs have, unscored: above it, of an arch or eval set the fit never saw)."""
    column = cut_column(cut)
    below = runs[column].to_numpy(float) <= threshold
    fitted, above = runs[below], runs[~below]
    where = f"a cut at {column} <= {threshold:.4g}"
    if fitted.empty:
        raise BacktestError(f"{where} leaves nothing to fit (smallest: {runs[column].min():.4g})")
    if above.empty:
        raise BacktestError(f"{where} leaves nothing held out (largest: {runs[column].max():.4g})")
    known = above["arch"].isin(set(fitted["arch"])) & above["eval_set"].isin(
        set(fitted["eval_set"])
    )
    if not known.any():
        raise BacktestError(
            f"{where}: every held-out run is of an arch or eval set absent below the cut"
        )
    return (
        fitted.reset_index(drop=True),
        above[known].reset_index(drop=True),
        above[~known].reset_index(drop=True),
    )
