"""Posterior predictive extrapolation of the loss, with intervals, to any scale.

Two quantities per point: the **expected loss**, the law's value under each posterior draw plus
the extrapolation discrepancy (how wrong the law's form may be that far beyond the data,
:mod:`bayes_scaling.discrepancy`; zero inside the data), and the **loss of a new run**, which
adds the fitted Student-t noise on the log loss. Each point reports its extrapolation ratio and
the approximate share of its interval that comes from the parameters, the discrepancy and the
run noise. The law is evaluated with the same functions the PyMC model uses
(:mod:`bayes_scaling.laws`), vectorized over draws, so predictions far outside the data (1e25
FLOPs) cost no recompilation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from bayes_scaling.discrepancy import default_rate, extrapolation, law_axes
from bayes_scaling.intervals import add_intervals, central_interval
from bayes_scaling.laws import LAWS, log_inputs
from bayes_scaling.points import PredictionError, check_points, pick_labels
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import ModelSpec

__all__ = [
    "LossPrediction",
    "PredictionError",
    "discrepancy_draws",
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


def discrepancy_draws(
    posterior: Posterior, frame: pd.DataFrame, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, pd.DataFrame]:
    """The discrepancy b * e(x) in ln loss per draw and point, shape (size, point), and the
    points' extrapolation (:func:`bayes_scaling.discrepancy.extrapolation`). The rate is the
    posterior's own (a calibrated fit) or the population prior shipped with the package; a
    stacked predictive gives each member's draws its member's own."""
    if hasattr(posterior, "discrepancy_draws"):  # a stacked predictive
        return posterior.discrepancy_draws(frame, size, rng)
    axes = law_axes(posterior.spec.law)  # type: ignore[union-attr]
    reach = extrapolation(posterior.fitted_runs, frame, axes)
    rate = getattr(posterior, "discrepancy", None) or default_rate()
    slopes = rate.slopes(size, rng)
    return slopes[:, np.newaxis] * reach["distance"].to_numpy(float)[np.newaxis, :], reach


def _shares(parts: dict[str, np.ndarray], prob: float) -> dict[str, np.ndarray]:
    """Approximate share of a point's interval from each independent part: the squared width of
    the part's own central interval over the sum of the parts' squared widths."""
    widths = {name: np.subtract(*central_interval(v, prob)[::-1]) ** 2 for name, v in parts.items()}
    total = sum(widths.values())
    return {
        name: np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)
        for name, w in widths.items()
    }


def predict_loss(
    posterior: Posterior,
    points: pd.DataFrame | dict[str, object],
    probs: Sequence[float] = (0.5, 0.9),
    random_seed: int = 0,
    discrepancy: bool = True,
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
        Seed of the discrepancy and new-run noise draws.
    discrepancy
        Add the extrapolation discrepancy (default). ``False`` gives the law's parameter
        uncertainty alone (and the noise for a new run): intervals that are too narrow beyond
        the data, kept for comparison.

    Returns
    -------
    pandas.DataFrame
        One row per point: the request, ``loss_median``, ``loss_mean`` and for each p
        ``loss_low_<p>`` / ``loss_high_<p>`` (expected loss) and ``new_run_low_<p>`` /
        ``new_run_high_<p>`` (a new run), with p in percent; ``extrapolation`` (how many times
        beyond the fitted runs the point lies, 1 inside them) and ``share_parameters``,
        ``share_discrepancy``, ``share_noise`` (of the widest new-run interval).
    """
    for prob in probs:
        if not 0.0 < prob < 1.0:
            raise PredictionError(f"interval probability {prob} must lie strictly in (0, 1)")
    frame = _points_frame(points, posterior)
    log_law = law_draws(posterior, frame)
    rng = np.random.default_rng(random_seed)
    sigma = _draws(posterior, "sigma")[:, np.newaxis]
    nu = _draws(posterior, "nu")[:, np.newaxis]
    noise = sigma * rng.standard_t(nu, size=log_law.shape)
    if discrepancy:
        offset, reach = discrepancy_draws(posterior, frame, log_law.shape[0], rng)
    else:
        offset, reach = np.zeros_like(log_law), pd.DataFrame({"ratio": np.ones(len(frame))})
    log_mean = log_law + offset
    log_new = log_mean + noise
    out = frame[["arch", "eval_set", "n_active", "tokens", "flops", "experts"]].copy()
    add_intervals(out, "loss", log_mean, probs, transform=np.exp)
    out["loss_mean"] = np.exp(log_mean).mean(axis=0)
    new_run = pd.DataFrame(index=out.index)
    add_intervals(new_run, "new_run", log_new, probs, transform=np.exp)
    out = pd.concat([out, new_run.drop(columns="new_run_median")], axis=1)
    out["extrapolation"] = reach["ratio"].to_numpy(float)
    parts = {"parameters": log_law, "discrepancy": offset, "noise": noise}
    for name, share in _shares(parts, max(probs)).items():
        out[f"share_{name}"] = share
    return out


@dataclass(frozen=True)
class LossPrediction:
    """The predicted loss at one point: expected loss (parameters and discrepancy) and a new
    run's loss (plus the fitted noise), each as a median and a central ``prob`` interval; how
    far beyond the fitted runs the point lies (``extrapolation``, 1 inside them) and the share
    of the new-run interval from the parameters, the discrepancy and the run noise."""

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
    extrapolation: float = 1.0
    shares: dict[str, float] | None = None

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
        extrapolation=float(first["extrapolation"]),
        shares={k: float(first[f"share_{k}"]) for k in ("parameters", "discrepancy", "noise")},
    )
