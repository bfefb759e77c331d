"""Posterior predictive extrapolation of the loss, with intervals, to any scale.

Two quantities per point: the **expected loss**, the law's value under each posterior draw
(parameter uncertainty only), and the **loss of a new run**, which adds the fitted Student-t
noise on the log loss. The law is evaluated with the same functions the PyMC model uses
(:mod:`bayes_scaling.laws`), vectorized over draws, so predictions far outside the data (1e25
FLOPs) cost no recompilation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from bayes_scaling.intervals import add_intervals
from bayes_scaling.laws import LAWS, log_inputs
from bayes_scaling.points import PredictionError, check_points, pick_labels
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import ModelSpec

__all__ = [
    "LossPrediction",
    "PredictionError",
    "law_draws",
    "log_likelihood",
    "predict_loss",
    "predict_point",
]


def _points_frame(points: pd.DataFrame | dict[str, object], posterior: Posterior) -> pd.DataFrame:
    """Complete a request: default arch / eval set when unambiguous, experts = granularity = 1."""
    frame = pd.DataFrame(points).reset_index(drop=True)
    frame["experts"] = frame.get("experts", 1.0)
    frame["granularity"] = frame.get("granularity", 1.0)
    check_points(frame)
    pick_labels(frame, "arch", sorted(posterior.runs["arch"].unique()))
    pick_labels(frame, "eval_set", sorted(posterior.runs["eval_set"].unique()))
    frame["flops"] = 6.0 * frame["n_active"].astype(float) * frame["tokens"].astype(float)
    return frame


def _draws(posterior: Posterior, name: str) -> np.ndarray:
    """A posterior variable with chain and draw stacked into one leading ``sample`` axis."""
    return posterior.draws(name)


def law_draws(posterior: Posterior, points: pd.DataFrame | dict[str, object]) -> np.ndarray:
    """ln of the expected loss at each point under each draw: shape (sample, point).

    A stacked predictive (:class:`bayes_scaling.compare.StackedPosterior`) answers with its
    members' draws in proportion to their weights."""
    if hasattr(posterior, "log_loss_draws"):
        return np.asarray(posterior.log_loss_draws(_points_frame(points, posterior)))
    spec = posterior.spec
    if not isinstance(spec, ModelSpec):
        raise PredictionError(
            "loss predictions need a loss-law posterior; for a hyperparameter posterior use "
            "recommend_hyperparameters"
        )
    frame = _points_frame(points, posterior)
    law = LAWS[spec.law]
    archs = sorted(posterior.runs["arch"].unique())
    arch_idx = pd.Categorical(frame["arch"], archs).codes
    params = {name: _draws(posterior, name)[:, arch_idx] for name in law.arch_params}
    if law.has_irreducible:
        eval_sets = sorted(posterior.runs["eval_set"].unique())
        params["log_e"] = _draws(posterior, "log_e")[
            :, pd.Categorical(frame["eval_set"], eval_sets).codes
        ]
    inputs = {key: value[np.newaxis, :] for key, value in log_inputs(frame).items()}
    return np.asarray(law.log_loss(inputs, params))


def log_likelihood(posterior: Posterior, runs: pd.DataFrame) -> np.ndarray:
    """The Student-t log density of each run's ln loss under each draw, shape (sample, run):
    the model's own likelihood, evaluated in numpy (no compilation), for LOO and backtests."""
    from scipy.stats import t as student_t

    mean = law_draws(posterior, runs)
    sigma = _draws(posterior, "sigma")[:, np.newaxis]
    nu = _draws(posterior, "nu")[:, np.newaxis]
    observed = np.log(runs["loss"].to_numpy(float))[np.newaxis, :]
    return np.asarray(student_t.logpdf(observed, df=nu, loc=mean, scale=sigma))


def predict_loss(
    posterior: Posterior,
    points: pd.DataFrame | dict[str, object],
    probs: Sequence[float] = (0.5, 0.9),
    random_seed: int = 0,
) -> pd.DataFrame:
    """Expected loss and new-run loss at each point, with central intervals.

    Parameters
    ----------
    posterior
        A fitted loss model.
    points
        Columns ``n_active``, ``tokens``, optionally ``experts``, ``granularity``, ``arch``,
        ``eval_set`` (the last two default to the posterior's only one).
    probs
        Central interval probabilities, e.g. 0.9 gives the 5% and 95% quantiles.
    random_seed
        Seed of the new-run noise draws.

    Returns
    -------
    pandas.DataFrame
        One row per point: the request, ``loss_median``, ``loss_mean`` and for each p
        ``loss_low_<p>`` / ``loss_high_<p>`` (expected loss) and ``new_run_low_<p>`` /
        ``new_run_high_<p>`` (a new run), with p in percent.
    """
    for prob in probs:
        if not 0.0 < prob < 1.0:
            raise PredictionError(f"interval probability {prob} must lie strictly in (0, 1)")
    frame = _points_frame(points, posterior)
    log_mean = law_draws(posterior, frame)
    rng = np.random.default_rng(random_seed)
    sigma = _draws(posterior, "sigma")[:, np.newaxis]
    nu = _draws(posterior, "nu")[:, np.newaxis]
    log_new = log_mean + sigma * rng.standard_t(nu, size=log_mean.shape)
    out = frame[["arch", "eval_set", "n_active", "tokens", "flops", "experts"]].copy()
    add_intervals(out, "loss", log_mean, probs, transform=np.exp)
    out["loss_mean"] = np.exp(log_mean).mean(axis=0)
    new_run = pd.DataFrame(index=out.index)
    add_intervals(new_run, "new_run", log_new, probs, transform=np.exp)
    return pd.concat([out, new_run.drop(columns="new_run_median")], axis=1)


@dataclass(frozen=True)
class LossPrediction:
    """The predicted loss at one point: expected loss (parameter uncertainty) and a new run's
    loss (plus the fitted noise), each as a median and a central ``prob`` interval."""

    arch: str
    eval_set: str
    n_active: float
    tokens: float
    experts: float
    flops: float
    prob: float
    loss_median: float
    loss_interval: tuple[float, float]
    new_run_interval: tuple[float, float]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        out = asdict(self)
        out["loss_interval"] = list(self.loss_interval)
        out["new_run_interval"] = list(self.new_run_interval)
        return out


def predict_point(
    posterior: Posterior, point: dict[str, object], prob: float = 0.9, random_seed: int = 0
) -> LossPrediction:
    """:func:`predict_loss` at one point, as a labelled result."""
    row = predict_loss(posterior, {k: [v] for k, v in point.items()}, (prob,), random_seed)
    first = row.iloc[0]
    label = f"{100 * prob:g}"
    return LossPrediction(
        arch=str(first["arch"]),
        eval_set=str(first["eval_set"]),
        n_active=float(first["n_active"]),
        tokens=float(first["tokens"]),
        experts=float(first["experts"]),
        flops=float(first["flops"]),
        prob=prob,
        loss_median=float(first["loss_median"]),
        loss_interval=(float(first[f"loss_low_{label}"]), float(first[f"loss_high_{label}"])),
        new_run_interval=(
            float(first[f"new_run_low_{label}"]),
            float(first[f"new_run_high_{label}"]),
        ),
    )
