"""Posterior predictive extrapolation of the loss, with intervals, to any scale.

Two quantities per point: the **expected loss**, the law's value under each posterior draw
(parameter uncertainty only), and the **loss of a new run**, which adds the fitted Student-t
noise on the log loss. The law is evaluated with the same functions the PyMC model uses
(:mod:`bayes_scaling.laws`), vectorized over draws, so predictions far outside the data (1e25
FLOPs) cost no recompilation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bayes_scaling.fit import Posterior
from bayes_scaling.laws import LAWS, log_inputs
from bayes_scaling.spec import ModelSpec

__all__ = ["PredictionError", "law_draws", "predict_loss", "recommend_hyperparameters"]


class PredictionError(ValueError):
    """A prediction request that names an arch, eval set or value the posterior cannot serve."""


def _points_frame(points: pd.DataFrame | dict[str, object], posterior: Posterior) -> pd.DataFrame:
    """Complete a request: default arch / eval set when unambiguous, experts = granularity = 1."""
    frame = pd.DataFrame(points).reset_index(drop=True)
    for column in ("n_active", "tokens"):
        if column not in frame:
            raise PredictionError(f"prediction points need a {column!r} column")
        values = pd.to_numeric(frame[column], errors="coerce")
        if not (values > 0).all():
            raise PredictionError(f"column {column!r}: every value must be a positive number")
    archs = sorted(posterior.runs["arch"].unique())
    eval_sets = sorted(posterior.runs["eval_set"].unique())
    for column, known in (("arch", archs), ("eval_set", eval_sets)):
        if column not in frame:
            if len(known) > 1:
                raise PredictionError(f"the posterior has several {column}s; name one of {known}")
            frame[column] = known[0]
        unknown = sorted(set(frame[column]) - set(known))
        if unknown:
            raise PredictionError(f"unknown {column} {unknown}; the posterior knows {known}")
    frame["experts"] = frame.get("experts", 1.0)
    frame["granularity"] = frame.get("granularity", 1.0)
    frame["flops"] = 6.0 * frame["n_active"].astype(float) * frame["tokens"].astype(float)
    return frame


def _draws(posterior: Posterior, name: str) -> np.ndarray:
    """A posterior variable with chain and draw stacked into one leading ``sample`` axis."""
    array = posterior.idata["posterior"][name]
    return array.stack(sample=("chain", "draw")).transpose("sample", ...).to_numpy()


def law_draws(posterior: Posterior, points: pd.DataFrame | dict[str, object]) -> np.ndarray:
    """ln of the expected loss at each point under each draw: shape (sample, point)."""
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
    out["loss_median"] = np.exp(np.median(log_mean, axis=0))
    out["loss_mean"] = np.exp(log_mean).mean(axis=0)
    for prob in probs:
        tail = (1.0 - prob) / 2.0
        label = f"{100 * prob:g}"
        for name, values in (("loss", log_mean), ("new_run", log_new)):
            out[f"{name}_low_{label}"] = np.exp(np.quantile(values, tail, axis=0))
            out[f"{name}_high_{label}"] = np.exp(np.quantile(values, 1.0 - tail, axis=0))
    return out


def _hyper_draws(posterior: Posterior, name: str, arch_idx: np.ndarray | None) -> np.ndarray:
    """(sample, point) draws of a per-arch variable, or (sample, 1) of a scalar."""
    values = _draws(posterior, name)
    return values[:, arch_idx] if arch_idx is not None else values[:, np.newaxis]


def recommend_hyperparameters(
    posterior: Posterior,
    points: pd.DataFrame | dict[str, object],
    probs: Sequence[float] = (0.9,),
    random_seed: int = 0,
) -> pd.DataFrame:
    """Optimal learning rate and batch size (tokens) for planned runs, with intervals.

    Each point is a new cell (``arch``, ``n_active``, ``tokens``, optional ``n_total``): the
    posterior predictive of its bowl adds the cell-to-cell deviations (``tau_*``) to the law,
    so the intervals are those of a cell never run. The recommendation is the posterior median
    of the optimum; ``penalty_mean`` / ``penalty_q90`` are the expected and 90th-percentile
    relative loss increase (a fraction) of training at it instead of at the unknown true
    optimum, from each draw's bowl. ``min_loss_*`` is the cell's loss at its optimum.
    """
    from bayes_scaling.hyper_model import LOG_L_REF, centre_law, min_loss_law, term_values
    from bayes_scaling.spec import HyperSpec

    spec = posterior.spec
    if not isinstance(spec, HyperSpec):
        raise PredictionError("recommendations need a hyperparameter posterior (kind 'hyper')")
    for prob in probs:
        if not 0.0 < prob < 1.0:
            raise PredictionError(f"interval probability {prob} must lie strictly in (0, 1)")
    frame = pd.DataFrame(points).reset_index(drop=True)
    for column in ("n_active", "tokens"):
        if column not in frame:
            raise PredictionError(f"prediction points need a {column!r} column")
        if not (pd.to_numeric(frame[column], errors="coerce") > 0).all():
            raise PredictionError(f"column {column!r}: every value must be a positive number")
    frame["n_total"] = frame["n_total"] if "n_total" in frame else frame["n_active"]
    archs = [str(a) for a in posterior.idata["posterior"]["arch"].to_numpy()]
    if "arch" not in frame:
        if len(archs) > 1:
            raise PredictionError(f"the posterior has several archs; name one of {archs}")
        frame["arch"] = archs[0]
    unknown = sorted(set(frame["arch"]) - set(archs))
    if unknown:
        raise PredictionError(f"unknown arch {unknown}; the posterior knows {archs}")
    arch_idx = pd.Categorical(frame["arch"], archs).codes
    rng = np.random.default_rng(random_seed)

    def arch_draw(name: str) -> np.ndarray:
        return _hyper_draws(posterior, name, arch_idx)

    def new_cell(mean: np.ndarray, tau: str) -> np.ndarray:
        scale = _hyper_draws(posterior, tau, None)
        return mean + scale * rng.standard_normal(mean.shape)

    covariates = {k: v[np.newaxis, :] for k, v in term_values(frame).items()}
    log_loss = new_cell(min_loss_law(arch_draw, covariates), "tau_loss")
    covariates["log_l"] = log_loss - LOG_L_REF
    centre = {}
    for prefix, terms in (("lr", spec.lr_terms), ("batch", spec.batch_terms)):
        centre[prefix] = new_cell(centre_law(arch_draw, terms, covariates, prefix), f"tau_{prefix}")
    h_lr = np.exp(new_cell(arch_draw("log_h_lr"), "tau_h"))
    h_b = np.exp(new_cell(arch_draw("log_h_batch"), "tau_h"))
    rho = arch_draw("rho")
    out = frame[["arch", "n_active", "n_total", "tokens"]].copy()
    out["flops"] = 6.0 * out["n_active"].astype(float) * out["tokens"].astype(float)
    for name, values in (("lr", centre["lr"]), ("batch", centre["batch"]), ("min_loss", log_loss)):
        out[f"{name}_median"] = np.exp(np.median(values, axis=0))
        for prob in probs:
            tail, label = (1.0 - prob) / 2.0, f"{100 * prob:g}"
            out[f"{name}_low_{label}"] = np.exp(np.quantile(values, tail, axis=0))
            out[f"{name}_high_{label}"] = np.exp(np.quantile(values, 1.0 - tail, axis=0))
    du = np.log(out["lr_median"].to_numpy())[np.newaxis, :] - centre["lr"]
    dv = np.log(out["batch_median"].to_numpy())[np.newaxis, :] - centre["batch"]
    penalty = np.expm1(
        0.5 * (h_lr * du**2 + 2.0 * rho * np.sqrt(h_lr * h_b) * du * dv + h_b * dv**2)
    )
    out["penalty_mean"] = penalty.mean(axis=0)
    out["penalty_q90"] = np.quantile(penalty, 0.9, axis=0)
    return out
