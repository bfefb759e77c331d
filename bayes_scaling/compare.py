"""Comparing hypotheses: PSIS-LOO, backtest scores, stacking weights, a stacked predictive.

:func:`compare` takes loss posteriors fitted on one run table (and optionally their
:class:`~bayes_scaling.backtest.Backtest` results) and returns a :class:`Comparison`: one row
per hypothesis with its LOO elpd and standard error (ArviZ 1.x, ``az.loo`` / ``az.compare``),
the runs whose Pareto k exceeds 0.7, the backtest scores, and stacking weights (Yao et al. 2018)
from LOO and from the backtests' held-out log densities. :class:`StackedPosterior` is the
mixture of the hypotheses' predictive draws under such weights; ``predict_loss`` and
``recommend`` accept it like any loss posterior.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from arviz_stats.utils import ELPDData

from bayes_scaling.backtest import Backtest, score_held_out, summarize
from bayes_scaling.discrepancy import DiscrepancyRate
from bayes_scaling.frontier import ArchLaw, arch_law
from bayes_scaling.posterior import Posterior
from bayes_scaling.predict import law_draws
from bayes_scaling.spec import ModelSpec

__all__ = [
    "MAX_PARETO_K",
    "CompareError",
    "Comparison",
    "StackedPosterior",
    "compare",
    "loo",
    "stacked_backtest",
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


def loo(posterior: Posterior) -> ELPDData:
    """PSIS-LOO of a loss posterior (pointwise), computing its log likelihood if missing."""
    from bayes_scaling.fit import add_log_likelihood

    if "log_likelihood" not in posterior.idata.children:
        add_log_likelihood(posterior)
    with warnings.catch_warnings():  # our own warning below names the runs and the advice
        warnings.simplefilter("ignore")
        return az.loo(posterior.idata, pointwise=True, var_name="log_loss")


def _high_k(result: ELPDData) -> list[str]:
    k = result.pareto_k
    return [str(run) for run in k["run"].to_numpy()[k.to_numpy() > MAX_PARETO_K]]


def _elpd(values: np.ndarray, samples: int) -> ELPDData:
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


@dataclass
class Comparison:
    """A table over hypotheses (``table``, one row each, best LOO first) and the posteriors,
    LOO results and backtests it came from."""

    table: pd.DataFrame
    posteriors: dict[str, Posterior] = field(repr=False)
    loo: dict[str, ELPDData] = field(repr=False)
    backtests: dict[str, Backtest] = field(default_factory=dict, repr=False)
    warnings: list[str] = field(default_factory=list)
    stacked_scores: dict[str, float] | None = None

    def weights(self, by: str = "loo") -> dict[str, float]:
        """Stacking weights from ``"loo"`` or from the ``"backtest"`` held-out densities."""
        column = {"loo": "weight_loo", "backtest": "weight_backtest"}.get(by)
        if column is None or column not in self.table:
            raise CompareError(f"no weights {by!r}; expected 'loo' or 'backtest' (with backtests)")
        return {str(k): float(v) for k, v in self.table[column].items()}

    def stacked(self, by: str = "loo", random_seed: int = 0) -> StackedPosterior:
        """The stacked predictive of the hypotheses under the ``by`` weights."""
        return StackedPosterior(self.posteriors, self.weights(by), random_seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: one record per hypothesis, the warnings, the stacked backtest scores."""
        records = self.table.reset_index().replace({np.nan: None}).to_dict(orient="records")
        return {
            "hypotheses": records,
            "warnings": self.warnings,
            "stacked_backtest": self.stacked_scores,
        }


def _backtest_columns(backtests: Mapping[str, Backtest]) -> pd.DataFrame:
    """Per hypothesis: held-out elpd, coverage, interval score and errors, and the backtest
    stacking weights; backtests must share their cut and held-out runs."""
    keys = {
        name: list(zip(b.scores["threshold"], b.scores["run_id"], strict=True))
        for name, b in backtests.items()
    }
    names = list(backtests)
    for name in names[1:]:
        if keys[name] != keys[names[0]]:
            raise CompareError(
                f"backtests of {names[0]} and {name} hold out different runs or cuts; "
                "run them with the same cut and thresholds"
            )
    rows = {name: summarize(b.scores, b.probs) for name, b in backtests.items()}
    out = pd.DataFrame(rows).T.add_prefix("backtest_")
    samples = {name: b.scores.shape[0] for name, b in backtests.items()}
    elpds = {n: _elpd(b.scores["lpd"].to_numpy(), samples[n]) for n, b in backtests.items()}
    out["weight_backtest"] = pd.Series(stacking_weights(elpds))
    return out


def compare(
    posteriors: Mapping[str, Posterior] | Sequence[Posterior],
    backtests: Mapping[str, Backtest] | None = None,
) -> Comparison:
    """Compare loss hypotheses fitted on the same run table.

    Parameters
    ----------
    posteriors
        Named posteriors (a sequence is named by each spec's ``name``).
    backtests
        Optional backtests of the same hypotheses (same names, cut and thresholds).

    Returns
    -------
    Comparison
        ``table`` columns: ``law``, ``pooling``, ``shared``, ``elpd_loo``, ``se``, ``p_loo``,
        ``elpd_diff``, ``dse``, ``high_pareto_k`` (runs above 0.7), ``weight_loo``, and with
        backtests ``backtest_*`` scores and ``weight_backtest``.
    """
    if not isinstance(posteriors, Mapping):
        posteriors = {p.spec.name or getattr(p.spec, "law", "?"): p for p in posteriors}
    posteriors = dict(posteriors)
    if len(posteriors) < 1:
        raise CompareError("nothing to compare: no posteriors given")
    check_same_runs(posteriors)
    specs = {n: p.spec for n, p in posteriors.items() if isinstance(p.spec, ModelSpec)}
    results = {name: loo(p) for name, p in posteriors.items()}
    notes = []
    for name, result in results.items():
        high = _high_k(result)
        if high:
            notes.append(
                f"{name}: {len(high)} run(s) with Pareto k > {MAX_PARETO_K} "
                f"({', '.join(high[:6])}{', ...' if len(high) > 6 else ''}): their LOO "
                "densities are unreliable (influential runs; often the largest or outliers). "
                "Trust the backtest scores for this hypothesis, or refit without those runs."
            )
            warnings.warn(notes[-1], stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(results) > 1:
            ranked = az.compare(dict(results), method="stacking", round_to="none")
        else:
            only = next(iter(results))
            ranked = pd.DataFrame({"elpd_diff": [0.0], "dse": [0.0], "weight": [1.0]}, index=[only])
    table = pd.DataFrame(
        {
            "law": {n: s.law for n, s in specs.items()},
            "pooling": {n: s.pooling for n, s in specs.items()},
            "shared": {n: ",".join(s.shared) for n, s in specs.items()},
            "elpd_loo": {n: r.elpd for n, r in results.items()},
            "se": {n: r.se for n, r in results.items()},
            "p_loo": {n: r.p for n, r in results.items()},
            "elpd_diff": ranked["elpd_diff"],
            "dse": ranked["dse"],
            "high_pareto_k": {n: len(_high_k(r)) for n, r in results.items()},
            "weight_loo": ranked["weight"],
        }
    )
    stacked_scores = None
    if backtests:
        missing = sorted(set(posteriors) - set(backtests))
        if missing:
            raise CompareError(f"no backtest for {missing}; backtest every hypothesis or none")
        table = table.join(_backtest_columns({n: backtests[n] for n in posteriors}))
        stacked_scores = summarize(stacked_backtest({n: backtests[n] for n in posteriors}))
    table = table.sort_values("elpd_loo", ascending=False)
    table.index.name = "hypothesis"
    return Comparison(table, posteriors, results, dict(backtests or {}), notes, stacked_scores)


def stacked_backtest(backtests: Mapping[str, Backtest], random_seed: int = 0) -> pd.DataFrame:
    """Backtest of the stacked predictive, honestly: at each cut, the hypotheses' refits are
    stacked with LOO weights computed on the fitted runs only, and the mixture is scored on
    the runs above the cut (columns as :attr:`Backtest.scores`)."""
    first = next(iter(backtests.values()))
    frames = []
    for threshold in first.thresholds:
        fits = {name: b.fits[threshold] for name, b in backtests.items()}
        weights = stacking_weights({name: loo(p) for name, p in fits.items()})
        rows = first.scores[first.scores["threshold"] == threshold]
        held = first.held_out[threshold]
        mixture = StackedPosterior(fits, weights, random_seed)
        scores = score_held_out(mixture, held, first.probs, random_seed)
        frames.append(
            scores.assign(
                threshold=threshold,
                value=rows["value"].to_numpy(),
                extrapolation=rows["extrapolation"].to_numpy(),
            )
        )
    return pd.concat(frames, ignore_index=True)


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
