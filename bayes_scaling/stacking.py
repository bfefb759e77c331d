"""Stacking: weights over hypotheses, and the stacked predictive they define.

Stacking (Yao et al. 2018) chooses the mixture of the hypotheses' predictive distributions that
scores best on runs each was not fitted on. Which held-out runs decides what the weights are for:
PSIS-LOO (:func:`bayes_scaling.compare.loo`) scores interpolation, a run among its neighbours;
:func:`extrapolation_weights` scores what a scaling law is used for, the runs *beyond* the data,
by refitting every hypothesis below the top of its own runs' range and stacking the log
predictive densities (law, run noise and the extrapolation discrepancy) of the runs above.
:class:`StackedPosterior` is the mixture of the hypotheses' draws under such weights;
``predict_loss``, ``recommend`` and the backtests accept it like any loss posterior.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from arviz_stats.utils import ELPDData
from scipy.special import logsumexp

from bayes_scaling.discrepancy import DiscrepancyRate, default_rate, pointwise_log_density
from bayes_scaling.frontier import ArchLaw, arch_law
from bayes_scaling.posterior import Posterior
from bayes_scaling.predict import law_draws
from bayes_scaling.spec import ModelSpec

__all__ = [
    "MAX_PARETO_K",
    "CompareError",
    "StackedPosterior",
    "check_same_runs",
    "elpd_data",
    "extrapolation_weights",
    "stacking_weights",
]

# Vehtari et al. 2024 (Pareto smoothed importance sampling, JMLR 25(72)): above 0.7 the
# importance-sampling estimate of a run's LOO density is unreliable.
MAX_PARETO_K = 0.7
_SAME = ("run_id", "arch", "n_active", "tokens", "loss")


class CompareError(ValueError):
    """Hypotheses that cannot be compared: posteriors of different run tables, a
    hyperparameter posterior, unknown or invalid weights; the message says which and why."""


def check_same_runs(posteriors: Mapping[str, Any]) -> pd.DataFrame:
    """The run table every posterior was fitted on, or :class:`CompareError` naming the first
    pair that differs and how (number of runs, run ids, or values of a column)."""
    if not posteriors:
        raise CompareError("nothing to compare: no posteriors given")
    names = list(posteriors)
    first = posteriors[names[0]].runs
    for name in names:
        if not isinstance(posteriors[name].spec, ModelSpec):
            raise CompareError(f"{name}: a hyperparameter posterior; compare scores loss laws")
    for name in names[1:]:
        runs = posteriors[name].runs
        why = None
        if len(runs) != len(first):
            why = f"{len(first)} runs vs {len(runs)}"
        else:
            for column in _SAME:
                left, right = first[column].to_numpy(), runs[column].to_numpy()
                if column in ("run_id", "arch"):
                    same = (left.astype(str) == right.astype(str)).all()
                else:
                    same = np.allclose(left.astype(float), right.astype(float), rtol=1e-12)
                if not same:
                    why = f"column {column!r} differs"
                    break
        if why:
            raise CompareError(
                f"{names[0]} and {name} were fitted on different run tables ({why}); scores "
                "are comparable only on the same runs: fit every hypothesis on one table"
            )
    return first


def elpd_data(values: np.ndarray, samples: int) -> ELPDData:
    """Held-out log densities as an ELPDData, so ``az.compare`` stacks them."""
    n = len(values)
    return ELPDData(
        elpd=float(values.sum()),
        se=float(np.sqrt(n * np.var(values))),
        p=0.0,
        n_samples=samples,
        n_data_points=n,
        scale="log",
        warning=False,
        good_k=MAX_PARETO_K,
        elpd_i=xr.DataArray(values, dims="point"),
    )


def stacking_weights(elpds: Mapping[str, ELPDData]) -> dict[str, float]:
    """Stacking weights (``az.compare(method="stacking")``); one hypothesis gets weight 1."""
    if len(elpds) == 1:
        return {name: 1.0 for name in elpds}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(dict(elpds), method="stacking", round_to="none")
    return {name: float(table.loc[name, "weight"]) for name in elpds}


def extrapolation_weights(
    posteriors: Mapping[str, Posterior],
    cut: str = "compute",
    fraction: float = 1 / 3,
    random_seed: int = 0,
    **settings: Any,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Stacking weights for extrapolation, learned inside the posteriors' own runs.

    Every hypothesis is refitted on its runs below the top ``fraction`` of the log range of
    ``cut`` (``compute``, ``n_active`` or ``tokens``; the compiled model is reused) and scored
    on the runs above by each run's log predictive density under the law, the run noise and
    the discrepancy at the posterior's own rate (:func:`bayes_scaling.discrepancy.
    pointwise_log_density`); the weights stack those densities. Cut along the direction you
    will extrapolate. ``settings`` go to :func:`bayes_scaling.fit.fit` (``extend`` 0). A
    posterior calibrated with the same cut and fraction (:func:`bayes_scaling.calibration.
    calibrate`) reuses that backtest: no refit.

    Returns the weights and the densities, one row per held-out run, one column per hypothesis.
    """
    from bayes_scaling.calibration import within_data

    runs = check_same_runs(posteriors)
    densities = {}
    for name, posterior in posteriors.items():
        spec = posterior.spec
        assert isinstance(spec, ModelSpec)  # check_same_runs refuses hyperparameter fits
        key = (cut, (fraction,))
        if key not in posterior.within:  # calibrate() may have run this backtest already
            posterior.within[key] = within_data(
                posterior.fitted_runs, spec, cut, (fraction,), random_seed, **settings
            )
        (found,) = posterior.within[key]
        rate = posterior.discrepancy or default_rate()
        densities[name] = pointwise_log_density(
            found.log_mean, found.sigma, found.nu, found.observed, found.distance, rate
        )
    table = pd.DataFrame(densities)
    if table.empty:
        raise CompareError(f"no runs of {len(runs)} lie above the within-data cut by {cut}")
    samples = min(p.draws("sigma").shape[0] for p in posteriors.values())
    weights = stacking_weights({n: elpd_data(v.to_numpy(), samples) for n, v in table.items()})
    return weights, table


@dataclass(frozen=True)
class _MixtureLaw(ArchLaw):
    """One arch's law under a stacked predictive: each member's draws, in the mixture's
    order (:class:`StackedPosterior`), so any prefix of draws is a mixture too."""

    parts: tuple[tuple[ArchLaw, np.ndarray], ...] = ()
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @property
    def draws(self) -> int:
        return len(self.order)

    def _join(self, values: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(values, axis=0)[self.order]

    def log_loss(self, log_n: Any, log_d: Any, experts: Any = 1.0, granularity: Any = 1.0):
        return self._join(
            [part.log_loss(log_n, log_d, experts, granularity)[i] for part, i in self.parts]
        )

    def check_target(self, target: float | None) -> None:
        for part, _ in self.parts:
            part.check_target(target)

    def optimum(self, log_flops: Any, experts: float = 1.0, granularity: float = 1.0):
        results = [part.optimum(log_flops, experts, granularity) for part, _ in self.parts]
        return tuple(
            self._join([r[k][i] for r, (_, i) in zip(results, self.parts, strict=True)])
            for k in range(3)
        )


@dataclass
class StackedPosterior:
    """The stacked predictive: a mixture of loss posteriors fitted on one run table.

    Each member contributes draws in proportion to its weight (largest remainder over as many
    draws as the largest member has; a member's draws are resampled, with replacement only
    when it needs more than it has), in one fixed shuffled order, so the expected loss, the
    noise and any prefix of draws all come from the same mixture. ``predict_loss``,
    ``law_draws`` and ``recommend`` accept it like a :class:`~bayes_scaling.posterior.Posterior`.
    """

    members: dict[str, Posterior]
    weights: dict[str, float]
    random_seed: int = 0
    picks: dict[str, np.ndarray] = field(init=False, repr=False)
    order: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.runs = check_same_runs(self.members)
        unknown = sorted(set(self.weights) - set(self.members))
        values = np.array([self.weights.get(name, 0.0) for name in self.members], dtype=float)
        if unknown or not np.all(np.isfinite(values)) or (values < 0).any() or values.sum() <= 0:
            raise CompareError(
                f"stacking weights must be non-negative numbers for {list(self.members)}, "
                f"not {self.weights}"
            )
        values = values / values.sum()
        sizes = {name: p.draws("sigma").shape[0] for name, p in self.members.items()}
        total = max(sizes.values())
        counts = np.floor(values * total).astype(int)
        remainder = np.argsort(-(values * total - counts))[: total - counts.sum()]
        counts[remainder] += 1
        rng = np.random.default_rng(self.random_seed)
        self.picks = {
            name: rng.choice(sizes[name], count, replace=count > sizes[name])
            for (name, count) in zip(self.members, counts, strict=True)
            if count > 0
        }
        self.order = rng.permutation(total)

    @property
    def spec(self) -> ModelSpec:
        """A label for output: the first member's spec named after the mixture."""
        first = next(iter(self.members.values())).spec
        named = ", ".join(f"{n} {w:.2f}" for n, w in self.weights.items() if w > 0)
        return ModelSpec(law=first.law, name=f"stacked ({named})")  # type: ignore[union-attr]

    @property
    def fitted_runs(self) -> pd.DataFrame:
        """The members' one run table (what the extrapolation distance is measured from)."""
        return self.runs

    @property
    def discrepancy(self) -> DiscrepancyRate | None:
        """The members' discrepancy rate when they agree (one calibration), else None: the
        population prior shipped with the package."""
        rates = [p.discrepancy for p in self.members.values()]
        return rates[0] if all(r == rates[0] for r in rates) else None

    def _join(self, values: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([values[name][i] for name, i in self.picks.items()])[self.order]

    def discrepancy_draws(
        self, frame: pd.DataFrame, size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Each member's discrepancy at its own rate and its own law's axes, in the mixture's
        draws (``size`` must be the mixture's draw count); the extrapolation reported is the
        heaviest member's."""
        from bayes_scaling.predict import discrepancy_draws

        values, reaches = {}, {}
        for name in self.picks:
            member = self.members[name]
            count = member.draws("sigma").shape[0]
            values[name], reaches[name] = discrepancy_draws(member, frame, count, rng)
        heaviest = max(self.picks, key=lambda n: self.weights.get(n, 0.0))
        joined = self._join(values)
        if joined.shape[0] != size:
            raise CompareError(f"{size} draws asked of a mixture of {joined.shape[0]}")
        return joined, reaches[heaviest]

    def log_density(self, held_out: pd.DataFrame) -> np.ndarray:
        """Each held-out run's log predictive density under the mixture: ln sum_m w_m p_m(y),
        each member's density with its own discrepancy rate and distance."""
        from bayes_scaling.backtest import marginal_lpd

        names = list(self.picks)
        counts = np.array([self.picks[n].size for n in names], float)
        parts = np.stack([marginal_lpd(self.members[n], held_out) for n in names])
        return logsumexp(parts + np.log(counts / counts.sum())[:, None], axis=0)

    def draws(self, name: str) -> np.ndarray:
        """A variable every member has with the same meaning: ``sigma`` or ``nu``."""
        if name not in ("sigma", "nu"):
            raise CompareError(f"a stacked predictive has no common variable {name!r}")
        return self._join({n: self.members[n].draws(name) for n in self.picks})

    def log_loss_draws(self, points: pd.DataFrame) -> np.ndarray:
        """ln expected loss at each point per mixture draw, shape (sample, point)."""
        return self._join({n: law_draws(self.members[n], points) for n in self.picks})

    def arch_law(
        self, arch: str | None = None, eval_set: str | None = None, max_draws: int | None = None
    ) -> ArchLaw:
        """One arch's law per mixture draw (what ``recommend`` and the frontier evaluate)."""
        laws = {n: arch_law(self.members[n], arch, eval_set) for n in self.picks}
        order = self.order[slice(None, max_draws)]
        first = next(iter(laws.values()))
        sigma = self.draws("sigma")[: len(order)]
        nu = self.draws("nu")[: len(order)]
        parts = tuple((laws[n], i) for n, i in self.picks.items())
        return _MixtureLaw(
            "stacked", first.arch, first.eval_set, {}, sigma, nu, parts=parts, order=order
        )
