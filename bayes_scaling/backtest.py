"""Leave-largest-out backtests: refit a hypothesis below a cut, score the runs above it.

A scaling law is used to predict runs larger than any it saw, so that is what a backtest
scores. For each cut (a threshold on compute, ``n_active`` or ``tokens``) the hypothesis is
refitted with :func:`bayes_scaling.fit.fit` on the runs at or below it (the compiled model is
reused: only the data change), and every run above it is scored by

- its **log predictive density** (the model's Student-t on ln loss, averaged over draws, with
  the extrapolation discrepancy of :mod:`bayes_scaling.discrepancy` integrated out);
- **coverage** of the central 50/80/90% intervals of the expected loss (parameters and
  discrepancy) and of a new run's loss (plus the fitted noise);
- the **interval score** of the new-run intervals (Gneiting & Raftery 2007, eq. 43: width plus
  2 / (1 - p) times the distance by which the observation falls outside; lower is better);
- the **relative error** of the expected loss' median, and the **extrapolation ratio** of the
  run (its cut value over the largest one fitted).

Default cuts fit below the top 1/3, 1/2 and 2/3 of the log range of the cut column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from bayes_scaling.intervals import central_interval, label
from bayes_scaling.posterior import Posterior
from bayes_scaling.predict import law_draws, log_likelihood
from bayes_scaling.runs import split_diverged, validate_runs
from bayes_scaling.spec import ModelSpec
from bayes_scaling.splits import CUTS, BacktestError, cut_column, split_at

__all__ = [
    "CUTS",
    "PROBS",
    "Backtest",
    "BacktestError",
    "backtest",
    "cut_thresholds",
    "marginal_lpd",
    "score_held_out",
    "split_at",
]

PROBS = (0.5, 0.8, 0.9)


def cut_thresholds(runs: pd.DataFrame, cut: str = "compute", n_cuts: int = 3) -> list[float]:
    """Thresholds that leave the top 1/3 ... 2/3 of the log range of ``cut`` out (``n_cuts``
    evenly spaced fractions; one cut leaves the top 1/3 out), largest threshold first."""
    column = cut_column(cut)
    if isinstance(n_cuts, bool) or not isinstance(n_cuts, int) or n_cuts < 1:
        raise BacktestError(f"n_cuts must be a whole number >= 1, not {n_cuts!r}")
    values = np.log(runs[column].to_numpy(float))
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        raise BacktestError(
            f"every run has the same {column} ({np.exp(high):.4g}); a cut on {cut} leaves "
            "nothing held out (cut on another column)"
        )
    fractions = np.linspace(1 / 3, 2 / 3, n_cuts) if n_cuts > 1 else np.array([1 / 3])
    return [float(np.exp(high - f * (high - low))) for f in fractions]


def interval_score(
    low: np.ndarray, high: np.ndarray, observed: np.ndarray, prob: float
) -> np.ndarray:
    """Gneiting & Raftery's (2007) interval score of central ``prob`` intervals (lower is
    better): the width, plus 2 / (1 - prob) times how far the observation lies outside."""
    penalty = 2.0 / (1.0 - prob)
    return (
        (high - low)
        + penalty * np.clip(low - observed, 0.0, None)
        + penalty * np.clip(observed - high, 0.0, None)
    )


def marginal_lpd(posterior: Any, held_out: pd.DataFrame) -> np.ndarray:
    """Each run's log predictive density with the discrepancy integrated out
    (:func:`bayes_scaling.discrepancy.pointwise_log_density`), at the posterior's own rate and
    its law's extrapolation distance; a stacked predictive gives its members' mixture."""
    from bayes_scaling.discrepancy import (
        default_rate,
        extrapolation,
        law_axes,
        pointwise_log_density,
    )

    if hasattr(posterior, "log_density"):  # a stacked predictive
        return posterior.log_density(held_out)
    rate = getattr(posterior, "discrepancy", None) or default_rate()
    reach = extrapolation(posterior.fitted_runs, held_out, law_axes(posterior.spec.law))
    return pointwise_log_density(
        law_draws(posterior, held_out),
        posterior.draws("sigma"),
        posterior.draws("nu"),
        np.log(held_out["loss"].to_numpy(float)),
        reach["distance"].to_numpy(float),
        rate,
    )


def score_held_out(
    posterior: Any,
    held_out: pd.DataFrame,
    probs: Sequence[float] = PROBS,
    random_seed: int = 0,
    discrepancy: bool = True,
) -> pd.DataFrame:
    """Score ``held_out`` runs under a fitted loss posterior (or a stacked predictive): one row
    per run with ``lpd``, ``predicted`` (median expected loss), ``rel_error``, and per p
    ``expected_covered_<p>``, ``new_run_covered_<p>``, ``interval_score_<p>`` (new run). The
    predictive is :func:`bayes_scaling.predict.predict_loss`'s: with the extrapolation
    discrepancy unless ``discrepancy`` is False."""
    from bayes_scaling.predict import discrepancy_draws

    log_law = law_draws(posterior, held_out)
    sigma = posterior.draws("sigma")[:, np.newaxis]
    nu = posterior.draws("nu")[:, np.newaxis]
    rng = np.random.default_rng(random_seed)
    noise = sigma * rng.standard_t(nu, size=log_law.shape)
    if discrepancy:
        offset, _ = discrepancy_draws(posterior, held_out, log_law.shape[0], rng)
        lpd = marginal_lpd(posterior, held_out)
    else:
        offset = np.zeros_like(log_law)
        pointwise = log_likelihood(posterior, held_out)
        lpd = logsumexp(pointwise, axis=0) - np.log(pointwise.shape[0])
    log_mean = log_law + offset
    log_new = log_mean + noise
    observed = held_out["loss"].to_numpy(float)
    predicted = np.exp(np.median(log_mean, axis=0))
    out = pd.DataFrame(
        {
            "run_id": held_out["run_id"].astype(str).to_numpy(),
            "arch": held_out["arch"].astype(str).to_numpy(),
            "loss": observed,
            "predicted": predicted,
            "rel_error": (predicted - observed) / observed,
            "lpd": lpd,
        }
    )
    for prob in probs:
        name = label(prob)
        low, high = np.exp(central_interval(log_mean, prob))
        out[f"expected_covered_{name}"] = (low <= observed) & (observed <= high)
        low, high = np.exp(central_interval(log_new, prob))
        out[f"new_run_covered_{name}"] = (low <= observed) & (observed <= high)
        out[f"interval_score_{name}"] = interval_score(low, high, observed, prob)
    return out


def summarize(scores: pd.DataFrame, probs: Sequence[float] = PROBS) -> dict[str, float]:
    """Held-out runs, summed and mean log predictive density, coverages, mean interval scores,
    mean and median absolute relative error, and the largest extrapolation ratio."""
    out: dict[str, float] = {
        "held_out": float(len(scores)),
        "elpd": float(scores["lpd"].sum()),
        "mean_lpd": float(scores["lpd"].mean()),
    }
    for prob in probs:
        name = label(prob)
        out[f"coverage_expected_{name}"] = float(scores[f"expected_covered_{name}"].mean())
        out[f"coverage_new_run_{name}"] = float(scores[f"new_run_covered_{name}"].mean())
        out[f"interval_score_{name}"] = float(scores[f"interval_score_{name}"].mean())
    out["mean_abs_rel_error"] = float(scores["rel_error"].abs().mean())
    out["median_abs_rel_error"] = float(scores["rel_error"].abs().median())
    if "extrapolation" in scores:
        out["max_extrapolation"] = float(scores["extrapolation"].max())
    return out


@dataclass
class Backtest:
    """A hypothesis' backtest: per held-out run scores over every cut (``scores``: columns
    ``threshold``, ``value``, ``extrapolation`` and those of :func:`score_held_out`), the
    refits and the held-out runs by threshold, and the runs above a cut that could not be
    scored (an arch or eval set absent below it)."""

    hypothesis: str
    cut: str
    thresholds: list[float]
    scores: pd.DataFrame
    fits: dict[float, Posterior] = field(default_factory=dict, repr=False)
    held_out: dict[float, pd.DataFrame] = field(default_factory=dict, repr=False)
    unscored: list[str] = field(default_factory=list)
    probs: tuple[float, ...] = PROBS

    def summary(self) -> dict[str, float]:
        """:func:`summarize` over every cut's held-out runs together."""
        return summarize(self.scores, self.probs)

    def by_cut(self) -> pd.DataFrame:
        """One row per cut: its threshold, the runs fitted, and :func:`summarize`."""
        rows = []
        for threshold in self.thresholds:
            part = self.scores[self.scores["threshold"] == threshold]
            fit = self.fits.get(threshold)
            report = fit.convergence() if fit is not None else None
            rows.append(
                {
                    "threshold": threshold,
                    "fitted_runs": len(fit.runs) if fit is not None else np.nan,
                    "converged": report.ok if report is not None else None,
                    **summarize(part, self.probs),
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the hypothesis, the cut, the overall summary and the per-cut rows."""
        per_cut = self.by_cut().replace({np.nan: None}).to_dict(orient="records")
        return {
            "hypothesis": self.hypothesis,
            "cut": self.cut,
            "summary": self.summary(),
            "cuts": per_cut,
            "unscored": self.unscored,
        }


def _stamp(scores: pd.DataFrame, held: pd.DataFrame, column: str, threshold: float, top: float):
    """Add the cut's threshold, each run's cut value and its extrapolation ratio."""
    values = held[column].to_numpy(float)
    return scores.assign(threshold=threshold, value=values, extrapolation=values / top)


def backtest(
    runs: pd.DataFrame,
    spec: ModelSpec,
    cut: str = "compute",
    n_cuts: int = 3,
    thresholds: Sequence[float] | None = None,
    probs: Sequence[float] = PROBS,
    random_seed: int = 0,
    log: Callable[[str], None] | None = None,
    calibrated: bool = False,
    **settings: Any,
) -> Backtest:
    """Refit ``spec`` below each cut and score the runs above it.

    Parameters
    ----------
    runs
        A run table (diverged trainer runs are left out, as by ``fit``).
    spec
        A loss-law hypothesis.
    cut
        ``"compute"`` (FLOPs), ``"n_active"`` or ``"tokens"``.
    n_cuts, thresholds
        Cuts at evenly spaced fractions of the log range (:func:`cut_thresholds`), or explicit
        thresholds (runs at or below one are fitted).
    probs
        Interval probabilities scored.
    random_seed, log, **settings
        Passed to :func:`bayes_scaling.fit.fit` (sampler overrides such as ``draws``).
    calibrated
        Calibrate each refit's discrepancy rate by a backtest inside its own runs along ``cut``
        (:func:`bayes_scaling.calibration.calibrate`: one more refit per cut), as
        ``fit --calibrate`` does, so the scores are those of the calibrated predictive.

    Returns
    -------
    Backtest
    """
    from bayes_scaling.calibration import calibrate
    from bayes_scaling.fit import fit

    if not isinstance(spec, ModelSpec):
        raise BacktestError("backtests score loss laws; this is a hyperparameter hypothesis")
    column = cut_column(cut)
    runs = split_diverged(validate_runs(runs))[0]
    chosen = list(thresholds) if thresholds is not None else cut_thresholds(runs, cut, n_cuts)
    say = log or (lambda message: None)
    frames, fits, held_out, unscored = [], {}, {}, []
    for threshold in chosen:
        fitted, held, unseen = split_at(runs, cut, float(threshold))
        say(f"{spec.name or spec.law}: fit {len(fitted)} runs with {column} <= {threshold:.4g}")
        posterior = fit(fitted, spec, random_seed=random_seed, progressbar=False, **settings)
        if calibrated:
            calibrate(posterior, cut=cut, random_seed=random_seed, log=log, **settings)
        scores = score_held_out(posterior, held, probs, random_seed)
        top = float(fitted[column].max())
        frames.append(_stamp(scores, held, column, float(threshold), top))
        fits[float(threshold)] = posterior
        held_out[float(threshold)] = held
        unscored += unseen["run_id"].astype(str).tolist()
    return Backtest(
        hypothesis=spec.name or spec.law,
        cut=cut,
        thresholds=[float(t) for t in chosen],
        scores=pd.concat(frames, ignore_index=True),
        fits=fits,
        held_out=held_out,
        unscored=sorted(set(unscored)),
        probs=tuple(probs),
    )
