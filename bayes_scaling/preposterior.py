"""How a posterior would change if a run were added, without refitting (preposterior updates).

Two updates, one interface (``start`` state, ``variance(state)``, ``after(state, candidates)``
for each candidate's expected posterior variance of the question once it is added, and
``commit(state, candidate)``), used by :mod:`bayes_scaling.design`'s greedy search:

- :class:`LinearUpdate` (the default): the draws' joint covariance of the question's
  quantities and the candidates' ln expected losses, conditioned on each chosen run by a
  rank-one Schur update, with the run noise as a normal-equivalent variance
  (:func:`noise_variance`, matched on the 90% interval). Exact for a law linear in its
  parameters near the posterior with Gaussian noise; it needs no outcomes, so it does not
  degenerate as runs accumulate (its error is the linearisation's: strongly curved questions,
  such as a bowl's optimum seen from a run at the optimum, are underrated).
- :class:`ImportanceUpdate`: each *scenario* takes one draw as the truth and simulates the run's
  outcome from the model's own likelihood (the law plus Student-t run noise on ln loss); the
  posterior after it is the draws reweighted by the outcome's likelihood, the truth's own draw
  left out (:func:`simulated_log_likelihood`). Exact up to Monte Carlo error and nonlinear, but
  the weights degenerate once a few sharp runs are added (each divides the effective sample
  size by roughly the ratio of predictive to noise spread), so it suits one or two runs.

:class:`ReachVariance` is the part of a loss question's variance that the extrapolation
discrepancy adds, and how it falls as runs extend the data towards the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from bayes_scaling.discrepancy import student_t_logpdf
from bayes_scaling.posterior import Posterior
from bayes_scaling.questions import Question, loss_frame

__all__ = [
    "ImportanceUpdate",
    "LinearUpdate",
    "ReachVariance",
    "noise_variance",
    "simulated_log_likelihood",
]


def _weighted_variance(q: np.ndarray, log_w: np.ndarray) -> np.ndarray:
    """Mean over quantities of the weighted variance of q (sample, quantity) under each row of
    log weights (..., sample): shape (...)."""
    weights = np.exp(log_w - logsumexp(log_w, axis=-1, keepdims=True))
    mean = weights @ q
    second = weights @ (q * q)
    return np.clip(second - mean * mean, 0.0, None).mean(axis=-1)


def noise_variance(sigma: np.ndarray, nu: np.ndarray, prob: float = 0.9) -> np.ndarray:
    """A new run's Student-t noise as a normal-equivalent variance per draw: the square of its
    central ``prob`` interval's half-width over the normal's (finite for every nu, unlike the
    variance, which needs nu > 2)."""
    from scipy.stats import norm
    from scipy.stats import t as student_t

    level = 0.5 + prob / 2
    return np.asarray((sigma * student_t.ppf(level, nu) / norm.ppf(level)) ** 2)


def simulated_log_likelihood(
    mean: np.ndarray,
    sigma: np.ndarray,
    nu: np.ndarray,
    truth: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The log likelihood, under every draw, of each candidate's outcome simulated under each
    scenario's true draw: (candidate, scenario, draw), float32 to keep hundreds of
    candidates in memory; and the scenarios' starting log weights (scenario, draw), 0 except
    -inf at the scenario's own truth.

    ``mean`` is ln expected loss (draw, candidate); ``sigma`` and ``nu`` the Student-t run
    noise per draw; ``truth`` the draw index of each scenario."""
    shape = mean[truth].shape
    outcome = mean[truth] + sigma[truth, None] * rng.standard_t(nu[truth, None], shape)
    log_lik = student_t_logpdf(
        outcome.T[:, :, None] - mean.T[:, None, :], nu[None, None, :], sigma[None, None, :]
    ).astype(np.float32)
    log_w = np.zeros((truth.size, mean.shape[0]))
    log_w[np.arange(truth.size), truth] = -np.inf
    return log_lik, log_w


class ImportanceUpdate:
    """Updates by importance weighting on simulated outcomes: ``log_lik`` (candidate, scenario,
    draw) added to the scenarios' log weights (scenario, draw) run by run."""

    def __init__(self, q: np.ndarray, log_lik: np.ndarray, log_w: np.ndarray) -> None:
        self.q, self.log_lik, self.start = q, log_lik, log_w

    def variance(self, state: np.ndarray) -> float:
        return float(_weighted_variance(self.q, state).mean())

    def after(self, state: np.ndarray, open_: list[int]) -> np.ndarray:
        parts = (open_[i : i + 64] for i in range(0, len(open_), 64))
        return np.concatenate(
            [_weighted_variance(self.q, state[None] + self.log_lik[p]).mean(axis=1) for p in parts]
        )

    def commit(self, state: np.ndarray, pick: int) -> np.ndarray:
        return state + self.log_lik[pick]


class LinearUpdate:
    """Linear-Gaussian updates: the draws' joint covariance of the question's quantities (T)
    and the candidates' ln expected losses (C), conditioned on each chosen run's outcome
    (its expected loss plus noise of variance ``noise``) by a rank-one Schur update. Exact
    for a law linear in its parameters near the posterior with Gaussian noise; it needs no
    outcomes, so it does not degenerate as runs accumulate."""

    def __init__(self, q: np.ndarray, mean: np.ndarray, noise: float) -> None:
        joint = np.concatenate([q, mean], axis=1)
        self.start = np.atleast_2d(np.cov(joint, rowvar=False, bias=True))
        self.t, self.noise = q.shape[1], noise

    def variance(self, state: np.ndarray) -> float:
        return float(np.clip(np.diag(state)[: self.t], 0.0, None).mean())

    def after(self, state: np.ndarray, open_: list[int]) -> np.ndarray:
        columns = self.t + np.asarray(open_)
        cross = state[: self.t, columns]  # (T, open)
        explained = (cross**2).sum(axis=0) / self.t / (state[columns, columns] + self.noise)
        return self.variance(state) - explained

    def commit(self, state: np.ndarray, pick: int) -> np.ndarray:
        column = state[:, self.t + pick]
        return state - np.outer(column, column) / (column[self.t + pick] + self.noise)


class ReachVariance:
    """The discrepancy's variance at a loss question's targets, E[kappa^2] e^2, given the
    fitted runs plus some candidates (zero for the other questions)."""

    def __init__(self, posterior: Posterior, question: Question, candidates: pd.DataFrame):
        self.active = question.kind == "loss"
        if not self.active:
            return
        from bayes_scaling.discrepancy import default_rate, law_axes

        rate = getattr(posterior, "discrepancy", None) or default_rate()
        self.kappa2 = float(np.sum(np.exp(rate.log_weight) * rate.kappa**2))
        self.axes = law_axes(posterior.spec.law)  # type: ignore[union-attr]
        columns = ["arch", *self.axes]
        self.fitted = posterior.fitted_runs
        self.fitted = self.fitted[[c for c in columns if c in self.fitted]]
        assert question.targets is not None
        self.targets = loss_frame(posterior, question.targets, "target")
        frame = loss_frame(posterior, candidates, "candidates")
        if "flops" in candidates:  # the candidates' own count (a trainer's includes attention)
            frame["flops"] = candidates["flops"].to_numpy(float)
        self.candidates = frame[[c for c in columns if c in self.fitted]]

    def variance(self, chosen: Sequence[int]) -> float:
        if not self.active:
            return 0.0
        from bayes_scaling.discrepancy import extrapolation

        fitted = pd.concat([self.fitted, self.candidates.iloc[list(chosen)]], ignore_index=True)
        distance = extrapolation(fitted, self.targets, self.axes)["distance"].to_numpy(float)
        return self.kappa2 * float(np.mean(distance**2))
