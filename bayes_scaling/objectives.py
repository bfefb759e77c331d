"""Objectives of a budget decision: small callables over loss draws, as pymc-marketing's risk
functions. An :class:`Objective` maps a (sample, candidate) array of losses to one score per
candidate; :func:`expected_loss` and :func:`loss_quantile` score the law's expected loss per draw
(parameter uncertainty), :func:`p_target` the loss a **new run** would measure (the expected loss
plus the fitted Student-t noise on ln loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bayes_scaling.frontier import DecisionError

__all__ = [
    "OBJECTIVES",
    "Objective",
    "expected_loss",
    "loss_quantile",
    "make_objective",
    "p_target",
]

OBJECTIVES = ("mean", "q90", "p-target")  # the names make_objective knows


@dataclass(frozen=True)
class Objective:
    """A score over loss draws: ``score(loss)`` maps (sample, candidate) to one value per
    candidate; the best candidate has the lowest score, or the highest when ``maximize``.

    ``new_run``: score the loss a new training run would measure (expected loss plus the fitted
    noise) rather than the law's expected loss. ``description`` says what the score is.
    """

    name: str
    score: Callable[[np.ndarray], np.ndarray]
    description: str
    maximize: bool = False
    new_run: bool = False
    target: float | None = None


def expected_loss() -> Objective:
    """Lowest posterior mean of the expected loss."""
    return Objective("mean", lambda loss: loss.mean(axis=0), "mean expected loss")


def loss_quantile(quantile: float = 0.9) -> Objective:
    """Lowest ``quantile`` of the expected loss over draws (risk averse)."""
    if not 0.0 < quantile < 1.0:
        raise DecisionError(f"quantile {quantile} must lie strictly in (0, 1)")
    return Objective(
        f"q{100 * quantile:g}",
        lambda loss: np.quantile(loss, quantile, axis=0),
        f"{100 * quantile:g}th percentile of the expected loss",
    )


def p_target(target: float) -> Objective:
    """Highest probability that a new run's loss is at most ``target`` (run noise included)."""
    if not target > 0:
        raise DecisionError(f"target loss must be a positive number, not {target}")
    return Objective(
        "p-target",
        lambda loss: (loss <= target).mean(axis=0),
        f"P(a new run's loss <= {target:g})",
        maximize=True,
        new_run=True,
        target=target,
    )


def make_objective(name: str, target: float | None = None, quantile: float = 0.9) -> Objective:
    """The objective called ``name`` (one of :data:`OBJECTIVES`)."""
    if name == "mean":
        return expected_loss()
    if name == "q90":
        return loss_quantile(quantile)
    if name == "p-target":
        if target is None:
            raise DecisionError("objective 'p-target' needs a target loss (--target)")
        return p_target(target)
    raise DecisionError(f"unknown objective {name!r}; expected one of {list(OBJECTIVES)}")
