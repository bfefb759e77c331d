"""Learning rate and batch size for planned runs, chosen by the lowest expected loss penalty.

A planned run is a new cell (:mod:`bayes_scaling.hyper_model`): under each posterior draw its
bowl has an optimum (the power law plus a cell-to-cell deviation), a minimum loss and a shape.
Training at (lr, batch) instead of at a draw's optimum costs a relative loss increase, the
**penalty** ``expm1(bowl(...))``, written with the same :func:`~bayes_scaling.hyper_model.bowl`
as the likelihood. The recommendation is the (lr, batch) with the lowest penalty averaged over
the draws; the posterior median of the optimum and its intervals are reported next to it. The
two differ when the bowl is steeper on one side (``skew``): the expected-penalty choice then
stays further from the steep side, where a miss costs more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.hyper_model import (
    LOG_L_REF,
    assign_cells,
    bowl,
    centre_law,
    min_loss_law,
    term_values,
)
from bayes_scaling.intervals import add_intervals
from bayes_scaling.points import PredictionError, check_points, pick_labels
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import HyperSpec

__all__ = [
    "BowlDraws",
    "HyperRecommendation",
    "choose_hyperparameters",
    "fitted_bowls",
    "new_cell_bowls",
    "recommend",
    "recommend_hyperparameters",
]

# The candidate grid of :func:`choose_hyperparameters`: GRID_POINTS per axis (odd, so the
# previous best is always a candidate), refined PASSES times to +-1 step of the last best; the
# first pass spans the 90% interval width of the optimum's draws on each side of the median.
GRID_POINTS = 11
PASSES = 4
MIN_HALF_WIDTH = 0.05  # ln units: a grid even when the draws of the optimum barely move


@dataclass(frozen=True)
class BowlDraws:
    """Posterior draws of one bowl per point (a planned or a fitted cell): every field is an
    array of shape (sample, point), ln values for the optimum and the minimum loss."""

    log_lr_opt: np.ndarray
    log_batch_opt: np.ndarray
    log_min_loss: np.ndarray
    h_lr: np.ndarray
    h_batch: np.ndarray
    rho: np.ndarray
    skew_lr: np.ndarray
    skew_batch: np.ndarray

    def penalty(self, log_lr: Any, log_batch: Any) -> np.ndarray:
        """Relative loss increase (a fraction) of training at (ln lr, ln batch) instead of at
        each draw's optimum; broadcasts like the fields, e.g. (sample, point)."""
        surface = bowl(
            log_lr - self.log_lr_opt,
            log_batch - self.log_batch_opt,
            self.h_lr,
            self.h_batch,
            self.rho,
            self.skew_lr,
            self.skew_batch,
        )
        return np.expm1(surface)

    def select(self, index: int) -> BowlDraws:
        """One point's draws, shaped (sample, 1, 1) to broadcast over a 2-d grid of candidates."""
        return BowlDraws(
            **{f.name: getattr(self, f.name)[:, index, None, None] for f in fields(self)}
        )

    def median(self) -> BowlDraws:
        """The median of every field over draws, shaped (1, point)."""
        return BowlDraws(
            **{
                f.name: np.median(getattr(self, f.name), axis=0, keepdims=True)
                for f in fields(self)
            }
        )


def fitted_bowls(posterior: Posterior) -> BowlDraws:
    """Draws of every fitted cell's bowl, (sample, cell), cells in :func:`assign_cells` order."""
    _, cells = assign_cells(posterior.fitted_runs)
    archs = [str(a) for a in posterior.idata["posterior"]["arch"].to_numpy()]
    arch_idx = pd.Categorical(cells["arch"].astype(str), archs).codes
    return BowlDraws(
        log_lr_opt=posterior.draws("log_lr_opt"),
        log_batch_opt=posterior.draws("log_batch_opt"),
        log_min_loss=posterior.draws("cell_log_loss"),
        h_lr=np.exp(posterior.draws("log_h_lr_cell")),
        h_batch=np.exp(posterior.draws("log_h_batch_cell")),
        rho=posterior.draws("rho")[:, arch_idx],
        skew_lr=posterior.draws("skew_lr")[:, arch_idx],
        skew_batch=posterior.draws("skew_batch")[:, arch_idx],
    )


def new_cell_bowls(
    posterior: Posterior, frame: pd.DataFrame, rng: np.random.Generator
) -> BowlDraws:
    """Draws of the bowl of a never-run cell at each row of ``frame`` (columns ``arch``,
    ``n_active``, ``n_total``, ``tokens``): the laws plus one draw of each cell deviation."""
    spec = posterior.spec
    if not isinstance(spec, HyperSpec):
        raise PredictionError("recommendations need a hyperparameter posterior (kind 'hyper')")
    archs = [str(a) for a in posterior.idata["posterior"]["arch"].to_numpy()]
    arch_idx = pd.Categorical(frame["arch"].astype(str), archs).codes

    def arch_draw(name: str) -> np.ndarray:
        return posterior.draws(name)[:, arch_idx]

    def new_cell(mean: np.ndarray, tau: str) -> np.ndarray:
        return mean + posterior.draws(tau)[:, np.newaxis] * rng.standard_normal(mean.shape)

    covariates = {k: v[np.newaxis, :] for k, v in term_values(frame).items()}
    log_loss = new_cell(min_loss_law(arch_draw, covariates), "tau_loss")
    covariates["log_l"] = log_loss - LOG_L_REF
    centre = {
        prefix: new_cell(centre_law(arch_draw, terms, covariates, prefix), f"tau_{prefix}")
        for prefix, terms in (("lr", spec.lr_terms), ("batch", spec.batch_terms))
    }
    return BowlDraws(
        log_lr_opt=centre["lr"],
        log_batch_opt=centre["batch"],
        log_min_loss=log_loss,
        h_lr=np.exp(new_cell(arch_draw("log_h_lr"), "tau_h")),
        h_batch=np.exp(new_cell(arch_draw("log_h_batch"), "tau_h")),
        rho=arch_draw("rho"),
        skew_lr=arch_draw("skew_lr"),
        skew_batch=arch_draw("skew_batch"),
    )


def choose_hyperparameters(bowls: BowlDraws) -> tuple[np.ndarray, np.ndarray]:
    """(ln lr, ln batch) per point with the lowest mean penalty over the draws.

    A grid search around the median optimum, refined :data:`PASSES` times; the median is a
    candidate, so the choice never has a higher expected penalty than the median.
    """
    offsets = np.linspace(-1.0, 1.0, GRID_POINTS)
    chosen = []
    for index in range(bowls.log_lr_opt.shape[1]):
        draws = bowls.select(index)
        centre, half = [], []
        for values in (draws.log_lr_opt.ravel(), draws.log_batch_opt.ravel()):
            low, mid, high = np.quantile(values, [0.05, 0.5, 0.95])
            centre.append(mid)
            half.append(max(high - low, MIN_HALF_WIDTH))
        for _ in range(PASSES):
            u = centre[0] + half[0] * offsets[:, np.newaxis]  # (G, 1)
            v = centre[1] + half[1] * offsets[np.newaxis, :]  # (1, G)
            expected = draws.penalty(u, v).mean(axis=0)  # (G, G)
            best_u, best_v = np.unravel_index(np.argmin(expected), expected.shape)
            centre = [u[best_u, 0], v[0, best_v]]
            half = [width / ((GRID_POINTS - 1) / 2) for width in half]  # +-1 step of this pass
        chosen.append(centre)
    log_lr, log_batch = np.asarray(chosen, dtype=float).reshape(-1, 2).T
    return log_lr, log_batch


def _planned_cells(posterior: Posterior, points: Any) -> pd.DataFrame:
    """The request as a frame with ``arch`` and ``n_total`` filled in, or an error naming it."""
    frame = pd.DataFrame(points).reset_index(drop=True)
    if "n_active" in frame and "n_total" not in frame:
        frame["n_total"] = frame["n_active"]
    check_points(frame)
    pick_labels(frame, "arch", [str(a) for a in posterior.idata["posterior"]["arch"].to_numpy()])
    return frame


def recommend_hyperparameters(
    posterior: Posterior,
    points: pd.DataFrame | Mapping[str, object],
    probs: Sequence[float] = (0.9,),
    random_seed: int = 0,
) -> pd.DataFrame:
    """Learning rate and batch size (tokens) for planned runs, with the optimum's intervals.

    Parameters
    ----------
    posterior
        A fitted hyperparameter model (spec kind ``hyper``).
    points
        Columns ``n_active``, ``tokens``, optionally ``n_total`` (default ``n_active``) and
        ``arch`` (default the posterior's only one). Each point is a cell never run: the
        intervals include the cell-to-cell deviations (``tau_*``).
    probs
        Central interval probabilities, e.g. 0.9 gives the 5% and 95% quantiles.
    random_seed
        Seed of the draws of the new cells' deviations.

    Returns
    -------
    pandas.DataFrame
        One row per point: the request and ``flops``; ``lr_recommended`` and
        ``batch_recommended``, the lowest expected penalty, with ``penalty_mean`` and
        ``penalty_q90`` (relative loss increase, a fraction) of training there instead of at
        the unknown true optimum; the optimum's posterior median ``lr_median`` /
        ``batch_median`` with ``<name>_low_<p>`` / ``<name>_high_<p>`` (p in percent), and
        ``penalty_mean_at_median``; ``min_loss_*``, the cell's loss at its optimum.
    """
    if not isinstance(posterior.spec, HyperSpec):
        raise PredictionError("recommendations need a hyperparameter posterior (kind 'hyper')")
    for prob in probs:
        if not 0.0 < prob < 1.0:
            raise PredictionError(f"interval probability {prob} must lie strictly in (0, 1)")
    frame = _planned_cells(posterior, points)
    bowls = new_cell_bowls(posterior, frame, np.random.default_rng(random_seed))
    out = frame[["arch", "n_active", "n_total", "tokens"]].copy()
    out["flops"] = 6.0 * out["n_active"].astype(float) * out["tokens"].astype(float)
    log_lr, log_batch = choose_hyperparameters(bowls)
    penalty = bowls.penalty(log_lr, log_batch)  # (sample, point)
    out["lr_recommended"] = np.exp(log_lr)
    out["batch_recommended"] = np.exp(log_batch)
    out["penalty_mean"] = penalty.mean(axis=0)
    out["penalty_q90"] = np.quantile(penalty, 0.9, axis=0)
    summaries = (
        ("lr", bowls.log_lr_opt),
        ("batch", bowls.log_batch_opt),
        ("min_loss", bowls.log_min_loss),
    )
    for name, values in summaries:
        add_intervals(out, name, values, probs, transform=np.exp)
    at_median = bowls.penalty(
        np.median(bowls.log_lr_opt, axis=0), np.median(bowls.log_batch_opt, axis=0)
    )
    out["penalty_mean_at_median"] = at_median.mean(axis=0)
    return out


@dataclass(frozen=True)
class HyperRecommendation:
    """The recommendation for one planned run; ``to_dict()`` is JSON-ready.

    ``lr`` / ``batch_tokens`` are the choice with the lowest expected penalty; ``*_median``
    and ``*_interval`` describe the optimum itself (central ``prob`` interval); penalties are
    relative loss increases (fractions) against the unknown true optimum.
    """

    arch: str
    n_active: float
    n_total: float
    tokens: float
    flops: float
    prob: float
    lr: float
    batch_tokens: float
    expected_loss_penalty: float
    loss_penalty_q90: float
    lr_median: float
    lr_interval: tuple[float, float]
    batch_median: float
    batch_interval: tuple[float, float]
    expected_loss_penalty_at_median: float
    min_loss_median: float
    min_loss_interval: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain floats, strings and two-element lists."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }

    def __str__(self) -> str:
        label = f"{100 * self.prob:g}%"
        return (
            f"{self.arch} N={self.n_active:.3g} D={self.tokens:.3g}: "
            f"lr {self.lr:.3g}, batch {self.batch_tokens:.4g} tokens; expected loss penalty vs "
            f"the true optimum {100 * self.expected_loss_penalty:.3f}% "
            f"(q90 {100 * self.loss_penalty_q90:.3f}%). Optimum: lr {self.lr_median:.3g} "
            f"[{self.lr_interval[0]:.3g}, {self.lr_interval[1]:.3g}], batch "
            f"{self.batch_median:.4g} [{self.batch_interval[0]:.4g}, "
            f"{self.batch_interval[1]:.4g}] ({label})"
        )


def recommend(
    posterior: Posterior, point: Mapping[str, Any], prob: float = 0.9, random_seed: int = 0
) -> HyperRecommendation:
    """The recommendation for one planned run: ``point`` has scalar ``n_active``, ``tokens``
    and optionally ``n_total``, ``arch`` (see :func:`recommend_hyperparameters`).

    Example
    -------
    >>> recommend(posterior, {"n_active": 7e9, "tokens": 1e12}).to_dict()["lr"]  # doctest: +SKIP
    """
    row = recommend_hyperparameters(
        posterior,
        {key: [value] for key, value in point.items()},
        probs=(prob,),
        random_seed=random_seed,
    ).iloc[0]
    label = f"{100 * prob:g}"

    def interval(name: str) -> tuple[float, float]:
        return float(row[f"{name}_low_{label}"]), float(row[f"{name}_high_{label}"])

    return HyperRecommendation(
        arch=str(row["arch"]),
        n_active=float(row["n_active"]),
        n_total=float(row["n_total"]),
        tokens=float(row["tokens"]),
        flops=float(row["flops"]),
        prob=prob,
        lr=float(row["lr_recommended"]),
        batch_tokens=float(row["batch_recommended"]),
        expected_loss_penalty=float(row["penalty_mean"]),
        loss_penalty_q90=float(row["penalty_q90"]),
        lr_median=float(row["lr_median"]),
        lr_interval=interval("lr"),
        batch_median=float(row["batch_median"]),
        batch_interval=interval("batch"),
        expected_loss_penalty_at_median=float(row["penalty_mean_at_median"]),
        min_loss_median=float(row["min_loss_median"]),
        min_loss_interval=interval("min_loss"),
    )
