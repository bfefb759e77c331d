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
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import ModelSpec
from bayes_scaling.stacking import (
    MAX_PARETO_K,
    CompareError,
    StackedPosterior,
    check_same_runs,
    elpd_data,
    extrapolation_weights,
    stacking_weights,
)

__all__ = [
    "MAX_PARETO_K",
    "CompareError",
    "Comparison",
    "StackedPosterior",
    "compare",
    "loo",
    "loo_pit",
    "stacked_backtest",
    "stacking_weights",
]


def loo(posterior: Posterior) -> ELPDData:
    """PSIS-LOO of a loss posterior (pointwise), computing its log likelihood if missing."""
    from bayes_scaling.fit import add_log_likelihood

    if "log_likelihood" not in posterior.idata.children:
        add_log_likelihood(posterior)
    with warnings.catch_warnings():  # our own warning below names the runs and the advice
        warnings.simplefilter("ignore")
        return az.loo(posterior.idata, pointwise=True, var_name="log_loss")


def loo_pit(posterior: Posterior, random_seed: int = 0) -> np.ndarray:
    """PSIS-LOO probability integral transform of each fitted run's ln loss, shape (run,):
    P(a new run's ln loss <= the observed one | the other runs), from ArviZ's ``loo_pit`` with
    one Student-t noise draw per posterior draw (seeded). Uniform on [0, 1] when the law and
    noise model are right; piled at the ends when the intervals are too narrow, in the middle
    when too wide."""
    from bayes_scaling.predict import law_draws

    if "log_likelihood" not in posterior.idata.children:
        from bayes_scaling.fit import add_log_likelihood

        add_log_likelihood(posterior)
    log_lik = posterior.idata["log_likelihood"].to_dataset()
    shape = tuple(log_lik["log_loss"].shape)
    rng = np.random.default_rng(random_seed)
    sigma = posterior.draws("sigma").reshape(-1, 1)
    nu = posterior.draws("nu").reshape(-1, 1)
    mean = law_draws(posterior, posterior.runs)
    replicate = mean + sigma * rng.standard_t(np.broadcast_to(nu, mean.shape))
    observed = np.log(posterior.runs["loss"].to_numpy(float))
    tree = xr.DataTree.from_dict({
        "posterior": posterior.idata["posterior"].to_dataset(),
        "log_likelihood": log_lik,
        "posterior_predictive": xr.Dataset(
            {"log_loss": (log_lik["log_loss"].dims, replicate.reshape(shape))},
            coords=log_lik.coords),
        "observed_data": xr.Dataset({"log_loss": ("run", observed)},
                                    coords={"run": log_lik["run"].to_numpy()}),
    })  # fmt: skip
    with warnings.catch_warnings():  # high Pareto k is reported by loo() with run names
        warnings.simplefilter("ignore")
        values = az.loo_pit(tree, var_names="log_loss", random_state=random_seed)
    return np.asarray(values["log_loss"] if hasattr(values, "data_vars") else values, float)


def _high_k(result: ELPDData) -> list[str]:
    k = result.pareto_k
    return [str(run) for run in k["run"].to_numpy()[k.to_numpy() > MAX_PARETO_K]]


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
    stacked_by: str = "loo"

    def weights(self, by: str = "loo") -> dict[str, float]:
        """Stacking weights: ``"loo"``, ``"extrapolation"`` (within-data backtests of the
        fitted runs, :func:`~bayes_scaling.stacking.extrapolation_weights`; when
        :func:`compare` was given ``extrapolation_cut``) or ``"backtest"`` (the backtests'
        held-out densities: a score of the hypotheses, not weights to predict with)."""
        column = {s: f"weight_{s}" for s in ("loo", "extrapolation", "backtest")}.get(by)
        if column is None or column not in self.table:
            raise CompareError(
                f"no weights {by!r}; expected 'loo', 'extrapolation' (compare(..., "
                "extrapolation_cut=...)) or 'backtest' (with backtests)"
            )
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
            "stacked_by": self.stacked_by,
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
    elpds = {n: elpd_data(b.scores["lpd"].to_numpy(), samples[n]) for n, b in backtests.items()}
    out["weight_backtest"] = pd.Series(stacking_weights(elpds))
    return out


def compare(
    posteriors: Mapping[str, Posterior] | Sequence[Posterior],
    backtests: Mapping[str, Backtest] | None = None,
    extrapolation_cut: str | None = None,
    random_seed: int = 0,
    **settings: Any,
) -> Comparison:
    """Compare loss hypotheses fitted on the same run table.

    Parameters
    ----------
    posteriors
        Named posteriors (a sequence is named by each spec's ``name``).
    backtests
        Optional backtests of the same hypotheses (same names, cut and thresholds).
    extrapolation_cut
        With a cut (``compute``, ``n_active`` or ``tokens``), also stack for extrapolation:
        ``weight_extrapolation`` from backtests inside the fitted runs
        (:func:`~bayes_scaling.stacking.extrapolation_weights`, one refit per hypothesis with
        ``random_seed`` and ``settings``), and the stacked backtest uses those weights at each
        cut. Otherwise the stacked backtest stacks each cut's refits by LOO.

    Returns
    -------
    Comparison
        ``table`` columns: ``law``, ``pooling``, ``shared``, ``elpd_loo``, ``se``, ``p_loo``,
        ``elpd_diff``, ``dse``, ``high_pareto_k`` (runs above 0.7), ``weight_loo``, and with
        backtests ``backtest_*`` scores and ``weight_backtest``; ``stacked_scores`` the
        stacked predictive's backtest summary, weighted as ``stacked_by`` says.
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
    by = "loo"
    if extrapolation_cut is not None:
        by = "extrapolation"
        weights, _ = extrapolation_weights(
            posteriors, extrapolation_cut, random_seed=random_seed, **settings
        )
        table["weight_extrapolation"] = pd.Series(weights)
    stacked_scores = None
    if backtests:
        missing = sorted(set(posteriors) - set(backtests))
        if missing:
            raise CompareError(f"no backtest for {missing}; backtest every hypothesis or none")
        table = table.join(_backtest_columns({n: backtests[n] for n in posteriors}))
        chosen = {n: backtests[n] for n in posteriors}
        stacked_scores = summarize(stacked_backtest(chosen, by, random_seed, **settings))
    table = table.sort_values("elpd_loo", ascending=False)
    table.index.name = "hypothesis"
    return Comparison(table, posteriors, results, dict(backtests or {}), notes, stacked_scores, by)


def stacked_backtest(
    backtests: Mapping[str, Backtest],
    by: str = "loo",
    random_seed: int = 0,
    **settings: Any,
) -> pd.DataFrame:
    """Backtest of the stacked predictive, honestly: at each cut, the hypotheses' refits are
    stacked with weights computed on the fitted runs only (``by``: ``"loo"``, or
    ``"extrapolation"``: within-data backtests of those runs along the backtest's own cut,
    one more refit per hypothesis and cut), and the mixture is scored on the runs above the
    cut (columns as :attr:`Backtest.scores`)."""
    if by not in ("loo", "extrapolation"):
        raise CompareError(f"stacked backtest weights by {by!r}; expected loo or extrapolation")
    first = next(iter(backtests.values()))
    frames = []
    for threshold in first.thresholds:
        fits = {name: b.fits[threshold] for name, b in backtests.items()}
        if by == "loo":
            weights = stacking_weights({name: loo(p) for name, p in fits.items()})
        else:
            weights, _ = extrapolation_weights(fits, first.cut, random_seed=random_seed, **settings)
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
