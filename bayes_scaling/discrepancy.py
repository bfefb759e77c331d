"""How wrong a fitted law gets beyond its data: an extrapolation discrepancy with a learned rate.

A law fitted on small runs is a good summary of them, but its functional form is only an
approximation, and the approximation error grows the further a prediction lies from the data.
The predictive adds a discrepancy term to the law's ln loss::

    ln L(x) = law(x; theta) + b * e(x) + run noise,     b ~ Normal(0, kappa^2),

where ``e(x)`` is how far x lies outside the fitted runs (:func:`extrapolation`: the Euclidean
norm of the distances of ln C, ln N, ln D and, for laws with experts, ln E outside the fitted
runs' range for the point's arch; zero inside; :func:`law_axes`) and ``b`` one draw per
posterior draw, shared by every point of a prediction. This is an error in the law's exponents
in disguise: a form that bends where the law does not makes errors linear in the log distance,
of one sign along a direction, which is what leave-largest-out backtests of public scaling
studies show (issue 13: errors of one sign within a task). ``kappa`` is the discrepancy's
growth rate (nats of ln loss per e-fold of extrapolation); it is never set by hand:
:class:`DiscrepancyRate` is a distribution over it on a grid, learned from backtests by the
likelihood :func:`task_log_likelihood` of held-out runs under the law's predictive, across
public studies (the population prior shipped with the package, :func:`population_rate`) and
within the user's own runs (:func:`bayes_scaling.calibration.calibrate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln, logsumexp

__all__ = [
    "KAPPA_GRID",
    "DiscrepancyRate",
    "default_rate",
    "extrapolation",
    "law_axes",
    "pointwise_log_density",
    "population_rate",
    "student_t_logpdf",
    "task_log_likelihood",
]

# kappa from 0 to 0.2 nats per e-fold: 0 plus 80 log-spaced values from 1e-4.
KAPPA_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 0.2, 80)])
# b (the discrepancy's slope in one task) on a grid symmetric about 0, geometric away from it,
# fine enough for a slope pinned by 30 runs at e = 6 (width ~ 1e-4) and wide enough for 1.
_B_HALF = np.geomspace(1e-6, 1.0, 700)
B_GRID = np.concatenate([-_B_HALF[::-1], [0.0], _B_HALF])
# Where the population prior lives (written by benchmarks/calibration.py --write-prior).
PRIOR_FILE = ("models", "discrepancy", "population.json")
AXES = ("flops", "n_active", "tokens", "experts")


def law_axes(law: str) -> tuple[str, ...]:
    """The run-table columns along which a law extrapolates: compute (a run inside the N and D
    ranges can still lie beyond the largest budget: an isoFLOP profile's held-out bowl), and
    the law's own inputs among N, D and E."""
    from bayes_scaling.laws import LAWS

    return ("flops", *(column for column in LAWS[law].columns if column in AXES))


def extrapolation(
    fitted: pd.DataFrame, points: pd.DataFrame, axes: Sequence[str] = AXES
) -> pd.DataFrame:
    """How far each point lies outside the fitted runs: per axis, the distance of its ln value
    outside the range [ln min, ln max] of the fitted runs of the point's arch (of all fitted
    runs for an arch the fit never saw), and ``distance``, their Euclidean norm, and ``ratio``,
    exp(distance) (2.0: twice as far as the data reach). Axes a table lacks are skipped."""
    out = pd.DataFrame(index=points.index)
    arch = points["arch"].astype(str) if "arch" in points else pd.Series("", index=points.index)
    fitted_arch = (
        fitted["arch"].astype(str) if "arch" in fitted else pd.Series("", index=fitted.index)
    )
    squares = np.zeros(len(points))
    for axis in axes:
        if axis not in points or axis not in fitted:
            continue
        values = np.log(points[axis].to_numpy(float))
        low = np.empty(len(points))
        high = np.empty(len(points))
        everything = np.log(fitted[axis].to_numpy(float))
        for label in arch.unique():
            mine = np.log(fitted.loc[fitted_arch == label, axis].to_numpy(float))
            reference = mine if mine.size else everything
            where = (arch == label).to_numpy()
            low[where], high[where] = reference.min(), reference.max()
        excess = np.clip(values - high, 0.0, None) + np.clip(low - values, 0.0, None)
        out[f"excess_{axis}"] = excess
        squares += excess**2
    out["distance"] = np.sqrt(squares)
    out["ratio"] = np.exp(out["distance"])
    return out


def student_t_logpdf(x: np.ndarray, nu: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Log density of a Student-t with location 0 (broadcasting)."""
    z = x / scale
    return (
        gammaln((nu + 1.0) / 2.0)
        - gammaln(nu / 2.0)
        - 0.5 * np.log(nu * math.pi)
        - np.log(scale)
        - (nu + 1.0) / 2.0 * np.log1p(z * z / nu)
    )


def _slope_log_likelihood(
    residual: np.ndarray, sigma: np.ndarray, nu: np.ndarray, distance: np.ndarray, chunk: int = 64
) -> np.ndarray:
    """ln p(held-out runs | b) on :data:`B_GRID`: the law's predictive (mean over draws of the
    product over runs of the Student-t noise), with residual (draw, run) = ln loss - law."""
    samples = residual.shape[0]
    out = np.empty(B_GRID.size)
    for start in range(0, B_GRID.size, chunk):
        b = B_GRID[start : start + chunk, None, None]  # (b, 1, 1)
        shifted = residual[None, :, :] - b * distance[None, None, :]  # (b, draw, run)
        per_draw = student_t_logpdf(shifted, nu[None, :, None], sigma[None, :, None]).sum(-1)
        out[start : start + chunk] = logsumexp(per_draw, axis=1) - math.log(samples)
    return out


def _integrate_slope(slope_ll: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """ln of the integral of exp(slope_ll(b)) Normal(b; 0, kappa^2) db for each kappa (kappa
    = 0: the value at b = 0), by the trapezoid rule on :data:`B_GRID`."""
    out = np.empty(kappa.size)
    centre = int(np.flatnonzero(B_GRID == 0.0)[0])
    widths = np.gradient(B_GRID)
    for index, scale in enumerate(kappa):
        if scale <= 0.0:
            out[index] = slope_ll[centre]
            continue
        log_prior = -0.5 * (B_GRID / scale) ** 2 - math.log(scale * math.sqrt(2.0 * math.pi))
        # Below the grid's resolution near 0 the prior is a spike: put its mass at b = 0.
        terms = slope_ll + log_prior + np.log(widths)
        value = logsumexp(terms)
        mass = logsumexp(log_prior + np.log(widths))
        out[index] = value - mass  # the grid's prior mass normalised to 1
    return out


def task_log_likelihood(
    log_mean: np.ndarray,
    sigma: np.ndarray,
    nu: np.ndarray,
    observed: np.ndarray,
    distance: np.ndarray,
    kappa: np.ndarray = KAPPA_GRID,
    max_draws: int = 400,
) -> np.ndarray:
    """ln p(the held-out runs of one backtest | kappa) for each kappa of the grid.

    Parameters
    ----------
    log_mean
        The law's ln loss under each posterior draw at each held-out run, (draw, run).
    sigma, nu
        The Student-t noise of each draw.
    observed
        ln loss of each held-out run.
    distance
        Each run's extrapolation distance (:func:`extrapolation`).
    kappa
        The rates at which to evaluate.
    max_draws
        Draws used (evenly thinned): the mixture over draws converges long before 4,000.

    The slope b is shared by the runs of the backtest and integrated out; parameter draws are
    shared too, so the result is the joint predictive density of the held-out set.
    """
    log_mean = np.asarray(log_mean, float)
    step = max(1, log_mean.shape[0] // max_draws)
    residual = np.asarray(observed, float)[None, :] - log_mean[::step]
    slope_ll = _slope_log_likelihood(
        residual, np.asarray(sigma, float)[::step], np.asarray(nu, float)[::step], distance
    )
    return _integrate_slope(slope_ll, np.asarray(kappa, float))


def pointwise_log_density(
    log_mean: np.ndarray,
    sigma: np.ndarray,
    nu: np.ndarray,
    observed: np.ndarray,
    distance: np.ndarray,
    rate: DiscrepancyRate,
    max_draws: int = 400,
    chunk: int = 64,
) -> np.ndarray:
    """Each run's own log predictive density, (run,), with its slope b and the rate integrated
    out (one run at a time: the density a backtest scores pointwise). Runs inside the data
    (distance 0) get the law's mixture over draws directly."""
    step = max(1, np.asarray(log_mean).shape[0] // max_draws)
    residual = np.asarray(observed, float)[None, :] - np.asarray(log_mean, float)[::step]
    sigma, nu = np.asarray(sigma, float)[::step, None], np.asarray(nu, float)[::step, None]
    draws = residual.shape[0]
    out = logsumexp(student_t_logpdf(residual, nu, sigma), axis=0) - math.log(draws)
    outside = np.flatnonzero(np.asarray(distance) > 0)
    if outside.size == 0:
        return out
    slope_ll = np.empty((B_GRID.size, outside.size))  # ln p(run | b), (b, run)
    for start in range(0, B_GRID.size, chunk):
        b = B_GRID[start : start + chunk, None, None]
        shifted = residual[None, :, outside] - b * np.asarray(distance)[None, None, outside]
        per_draw = student_t_logpdf(shifted, nu[None], sigma[None])
        slope_ll[start : start + chunk] = logsumexp(per_draw, axis=1) - math.log(draws)
    log_widths = np.log(np.gradient(B_GRID))
    centre = int(np.flatnonzero(B_GRID == 0.0)[0])
    per_kappa = np.empty((rate.kappa.size, outside.size))
    for index, scale in enumerate(rate.kappa):
        if scale <= 0.0:
            per_kappa[index] = slope_ll[centre]
            continue
        log_prior = -0.5 * (B_GRID / scale) ** 2 + log_widths
        log_prior -= logsumexp(log_prior)
        per_kappa[index] = logsumexp(slope_ll + log_prior[:, None], axis=0)
    out[outside] = logsumexp(per_kappa + rate.log_weight[:, None], axis=0)
    return out


@dataclass(frozen=True, eq=False)
class DiscrepancyRate:
    """A distribution over the discrepancy's growth rate kappa on a grid: ``kappa`` values and
    their normalised ``log_weight``; ``source`` says where it was learned."""

    kappa: np.ndarray = field(default_factory=lambda: KAPPA_GRID.copy())
    log_weight: np.ndarray = field(
        default_factory=lambda: np.full(KAPPA_GRID.size, -math.log(KAPPA_GRID.size))
    )
    source: str = "flat"
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        kappa = np.asarray(self.kappa, float)
        weight = np.asarray(self.log_weight, float)
        if kappa.shape != weight.shape or kappa.ndim != 1 or kappa.size == 0:
            raise ValueError("kappa and log_weight must be 1-D arrays of one length")
        if (kappa < 0).any() or not np.isfinite(kappa).all():
            raise ValueError("kappa values must be finite and >= 0")
        if np.isnan(weight).any() or not np.isfinite(weight).any():
            raise ValueError("log_weight must have a finite value somewhere and no NaN")
        object.__setattr__(self, "kappa", kappa)
        object.__setattr__(self, "log_weight", weight - logsumexp(weight))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DiscrepancyRate)
            and self.source == other.source
            and np.array_equal(self.kappa, other.kappa)
            and np.allclose(self.log_weight, other.log_weight, rtol=0, atol=1e-12)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def weights(self) -> np.ndarray:
        """The grid's probabilities."""
        return np.exp(self.log_weight)

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Quantiles of kappa (the grid's CDF, no interpolation)."""
        cdf = np.cumsum(self.weights)
        return self.kappa[np.minimum(np.searchsorted(cdf, np.atleast_1d(q)), self.kappa.size - 1)]

    def mean(self) -> float:
        """E[kappa]."""
        return float((self.weights * self.kappa).sum())

    def scale(self) -> float:
        """sqrt(E[kappa^2]): the sd of the slope b, marginally over kappa."""
        return float(math.sqrt((self.weights * self.kappa**2).sum()))

    def updated(self, log_likelihood: np.ndarray, source: str) -> DiscrepancyRate:
        """The posterior after evidence ``log_likelihood`` (one value per grid point)."""
        return DiscrepancyRate(self.kappa, self.log_weight + log_likelihood, source)

    def slopes(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` draws of the slope b: kappa from the grid, then b ~ Normal(0, kappa^2)."""
        kappa = rng.choice(self.kappa, size=size, p=self.weights)
        return kappa * rng.standard_normal(size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "kappa": self.kappa.tolist(),
            "log_weight": self.log_weight.tolist(),
            "source": self.source,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscrepancyRate:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(data["kappa"], float),
            np.asarray(data["log_weight"], float),
            str(data.get("source", "")),
            dict(data.get("details", {})),
        )

    def describe(self) -> str:
        """One line: the median and 90% interval of kappa, and where it was learned."""
        low, median, high = self.quantile([0.05, 0.5, 0.95])
        return (
            f"discrepancy rate kappa {median:.3g} [{low:.3g}, {high:.3g}] nats per e-fold "
            f"of extrapolation ({self.source})"
        )


def population_rate(
    family_log_likelihoods: Mapping[str, np.ndarray],
    kappa: np.ndarray = KAPPA_GRID,
    source: str = "population",
) -> DiscrepancyRate:
    """The rate of a study not yet seen, from the backtests of several families of studies.

    Each family f has its own rate kappa_f ~ LogNormal(m, s); ``family_log_likelihoods`` maps a
    family to ln p(its backtests | kappa) on ``kappa`` (the sum of its tasks'
    :func:`task_log_likelihood`). (m, s) are integrated on a grid with priors m ~ Normal(ln
    0.01, 1.5) and s ~ HalfNormal(1); the result is the predictive of a new family's kappa,
    sum over (m, s) of p(m, s | families) LogNormal(kappa; m, s), on the grid (kappa = 0 is
    given no mass: every family's law errs somewhat beyond its data).
    """
    kappa = np.asarray(kappa, float)
    positive = kappa > 0
    log_k = np.log(kappa[positive])
    widths = np.gradient(log_k)  # a density on ln kappa, integrated with these widths
    m_grid = np.linspace(math.log(1e-4), math.log(0.2), 61)
    s_grid = np.linspace(0.05, 3.0, 60)
    m, s = np.meshgrid(m_grid, s_grid, indexing="ij")
    # ln LogNormal density of ln kappa: Normal(ln kappa; m, s), (m, s, kappa)
    log_density = (
        -0.5 * ((log_k[None, None, :] - m[..., None]) / s[..., None]) ** 2
        - np.log(s[..., None] * math.sqrt(2.0 * math.pi))
        + np.log(widths)[None, None, :]
    )
    log_density -= logsumexp(log_density, axis=-1, keepdims=True)
    log_post = -0.5 * ((m - math.log(0.01)) / 1.5) ** 2 - 0.5 * s**2
    for values in family_log_likelihoods.values():
        values = np.asarray(values, float)[positive]
        log_post = log_post + logsumexp(log_density + values[None, None, :], axis=-1)
    log_post -= logsumexp(log_post)
    predictive = logsumexp(log_post[..., None] + log_density, axis=(0, 1))
    weight = np.full(kappa.size, -np.inf)
    weight[positive] = predictive
    best = np.unravel_index(np.argmax(log_post), log_post.shape)
    details = {
        "families": sorted(family_log_likelihoods),
        "log_kappa_location_map": float(m_grid[best[0]]),
        "log_kappa_scale_map": float(s_grid[best[1]]),
    }
    return DiscrepancyRate(kappa, weight, source, details)


def default_rate() -> DiscrepancyRate:
    """The population prior shipped with the package (learned across public scaling studies by
    ``benchmarks/calibration.py --write-prior``; its provenance is in the file)."""
    path = resources.files("bayes_scaling").joinpath(*PRIOR_FILE)
    data = json.loads(path.read_text(encoding="utf-8"))
    return DiscrepancyRate.from_dict(data["rate"])
