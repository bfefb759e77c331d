"""Learning the discrepancy's rate from backtests: evidence, within-data calibration.

A backtest (fit below a cut, predict above it) shows how the law errs when it extrapolates.
:class:`Evidence` keeps what a backtest's held-out runs say about the discrepancy rate kappa
(:mod:`bayes_scaling.discrepancy`): the law's draws at each run, the noise draws, the observed
losses and each run's extrapolation distance; its :meth:`Evidence.log_likelihood` is
ln p(held-out runs | kappa) on the rate grid.

:func:`calibrate` runs leave-largest-out backtests *inside* a posterior's own runs (the compiled
model is reused, so each is a warm refit), and updates the population prior of kappa (learned
across public studies, :func:`bayes_scaling.discrepancy.default_rate`) with their evidence; the
result is stored on the posterior, so ``predict`` and ``decide`` use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.discrepancy import (
    KAPPA_GRID,
    DiscrepancyRate,
    default_rate,
    extrapolation,
    law_axes,
    task_log_likelihood,
)
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import ModelSpec

__all__ = ["CalibrationError", "Evidence", "calibrate", "evidence", "inner_splits", "within_data"]


class CalibrationError(ValueError):
    """A posterior that cannot be calibrated (a hyperparameter fit, too few runs to cut)."""


@dataclass(frozen=True)
class Evidence:
    """What one backtest's held-out runs say about kappa (arrays over draws and runs)."""

    log_mean: np.ndarray  # (draw, run): the law's ln loss
    sigma: np.ndarray  # (draw,)
    nu: np.ndarray  # (draw,)
    observed: np.ndarray  # (run,): ln loss
    distance: np.ndarray  # (run,): extrapolation distance

    def log_likelihood(self, kappa: np.ndarray = KAPPA_GRID) -> np.ndarray:
        """ln p(held-out runs | kappa) on ``kappa`` (:func:`task_log_likelihood`)."""
        return task_log_likelihood(
            self.log_mean, self.sigma, self.nu, self.observed, self.distance, kappa
        )

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays by name (for ``np.savez``)."""
        return {f"{prefix}{name}": getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> Evidence:
        """Inverse of :meth:`to_arrays`."""
        return cls(
            **{name: np.asarray(arrays[f"{prefix}{name}"]) for name in cls.__dataclass_fields__}
        )


def evidence(posterior: Posterior, held_out: pd.DataFrame, max_draws: int = 1000) -> Evidence:
    """The :class:`Evidence` of runs a posterior was not fitted on (draws evenly thinned)."""
    from bayes_scaling.predict import law_draws

    if not isinstance(posterior.spec, ModelSpec):
        raise CalibrationError("the discrepancy is learned for loss laws, not lr / batch fits")
    log_mean = law_draws(posterior, held_out)
    step = max(1, log_mean.shape[0] // max_draws)
    distance = extrapolation(posterior.fitted_runs, held_out, law_axes(posterior.spec.law))
    return Evidence(
        log_mean=log_mean[::step],
        sigma=posterior.draws("sigma")[::step],
        nu=posterior.draws("nu")[::step],
        observed=np.log(held_out["loss"].to_numpy(float)),
        distance=distance["distance"].to_numpy(float),
    )


def inner_splits(
    runs: pd.DataFrame, cut: str = "compute", fractions: Sequence[float] = (1 / 3,)
) -> list[tuple[float, pd.DataFrame, pd.DataFrame]]:
    """For each fraction f, (threshold, runs below it, runs above it), the threshold leaving
    the top f of the log range of ``cut`` out."""
    from bayes_scaling.splits import CUTS, BacktestError, split_at

    column = CUTS.get(cut)
    if column is None:
        raise CalibrationError(f"unknown cut {cut!r}; expected one of {sorted(CUTS)}")
    values = np.log(runs[column].to_numpy(float))
    out = []
    for fraction in fractions:
        if not 0.0 < fraction < 1.0:
            raise CalibrationError(f"fraction {fraction!r} must lie strictly in (0, 1)")
        threshold = float(np.exp(values.max() - fraction * (values.max() - values.min())))
        try:
            fitted, held, _ = split_at(runs, cut, threshold)
        except BacktestError as error:
            raise CalibrationError(f"within-data backtest: {error}") from error
        out.append((threshold, fitted, held))
    return out


def within_data(
    runs: pd.DataFrame,
    spec: ModelSpec,
    cut: str = "compute",
    fractions: Sequence[float] = (1 / 3,),
    random_seed: int = 0,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> list[Evidence]:
    """Backtests inside a fit's runs (:func:`inner_splits`): refit ``spec`` below each
    threshold and collect the evidence of the runs above it."""
    from bayes_scaling.fit import fit

    if not isinstance(spec, ModelSpec):
        raise CalibrationError("the discrepancy is learned for loss laws, not lr / batch fits")
    out = []
    settings = {"extend": 0, **settings}
    for threshold, fitted, held in inner_splits(runs, cut, fractions):
        if log:
            log(f"calibration: refit {len(fitted)} runs with {cut} <= {threshold:.4g}")
        refit = fit(fitted, spec, random_seed=random_seed, progressbar=False, **settings)
        out.append(evidence(refit, held))
    return out


def calibrate(
    posterior: Posterior,
    prior: DiscrepancyRate | None = None,
    cut: str = "compute",
    fractions: Sequence[float] = (1 / 3,),
    random_seed: int = 0,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> DiscrepancyRate:
    """Update the discrepancy rate with backtests inside the posterior's own runs, store it on
    the posterior (``posterior.discrepancy``) and return it.

    Parameters
    ----------
    posterior
        A loss-law fit.
    prior
        The rate before these runs: default, the population prior learned across public
        scaling studies (:func:`bayes_scaling.discrepancy.default_rate`).
    cut, fractions
        Each fraction f refits below the top f of the log range of ``cut`` (``compute``,
        ``n_active`` or ``tokens``) and scores the runs above it. Cut along the direction you
        will extrapolate: the rate is learned from errors in that direction.
    random_seed, log, **settings
        Passed to :func:`bayes_scaling.fit.fit` for the refits (``extend`` defaults to 0).
    """
    start = prior or default_rate()
    total = np.zeros(start.kappa.size)
    if not isinstance(posterior.spec, ModelSpec):
        raise CalibrationError("the discrepancy is learned for loss laws, not lr / batch fits")
    found = within_data(
        posterior.fitted_runs, posterior.spec, cut, fractions, random_seed, log, **settings
    )
    posterior.within[(cut, tuple(fractions))] = found
    for item in found:
        total += item.log_likelihood(start.kappa)
    label = f"{start.source}, updated by {len(fractions)} within-data backtest(s) by {cut}"
    rate = start.updated(total, label)
    posterior.discrepancy = rate
    return rate
