"""Budget decisions: which configuration to train with a FLOP budget, chosen over draws.

:func:`recommend` scores every candidate (arch, expert count, n_active on a log grid; tokens
from the budget) under :class:`Constraints` with an :class:`Objective`, a small callable over
loss draws (``(sample, candidate) -> score per candidate``, as pymc-marketing's risk functions):
:func:`expected_loss` and :func:`loss_quantile` score the law's expected loss per draw
(parameter uncertainty); :func:`p_target` scores the loss a **new run** would measure, the
expected loss plus the fitted Student-t noise on ln loss (``sigma``, ``nu``), seeded. The
frontier and the MoE-vs-dense questions live in :mod:`~bayes_scaling.frontier` and
:mod:`~bayes_scaling.moe`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.frontier import (
    ArchLaw,
    DecisionError,
    arch_expert_counts,
    arch_law,
    check_budgets,
    loss_spec,
)
from bayes_scaling.intervals import central_interval
from bayes_scaling.moe import ExpertShare, expert_share
from bayes_scaling.objectives import (
    OBJECTIVES,
    Objective,
    expected_loss,
    loss_quantile,
    make_objective,
    p_target,
)
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import HyperSpec

__all__ = [
    "OBJECTIVES",
    "Constraints",
    "DecisionError",
    "Objective",
    "Recommendation",
    "expected_loss",
    "loss_quantile",
    "make_objective",
    "p_target",
    "recommend",
]


@dataclass
class Recommendation:
    """The chosen configuration, its loss distribution (one value per draw), and runners-up.

    ``loss_draws`` is the expected loss per posterior draw; ``new_run_draws`` the loss of a new
    run (with the fitted noise), when the posterior has the noise. ``score`` is the objective's
    value at the chosen configuration (a probability for ``p-target``). ``n_total`` is None when
    the arch's runs give no basis to count its experts' parameters.
    """

    objective: str
    budget: float
    arch: str
    n_active: float
    tokens: float
    experts: float
    n_total: float | None
    loss_draws: np.ndarray
    score: float
    runners_up: pd.DataFrame
    scored_on: str = "mean expected loss"
    new_run_draws: np.ndarray | None = None
    lr: dict[str, Any] = field(default_factory=dict)
    batch_tokens: dict[str, Any] = field(default_factory=dict)

    def interval(self, prob: float = 0.9, new_run: bool = False) -> tuple[float, float]:
        """Central interval of the expected loss (or of a new run's loss)."""
        draws = self.new_run_draws if new_run else self.loss_draws
        if draws is None:
            raise DecisionError("no new-run draws: the posterior has no fitted noise")
        low, high = central_interval(draws, prob, axis=None)
        return float(low), float(high)

    def to_dict(self, prob: float = 0.9) -> dict[str, Any]:
        """JSON-ready summary (intervals central at ``prob``)."""
        new_run = self.new_run_draws is not None
        return {
            "objective": self.objective,
            "scored_on": self.scored_on,
            "flops": self.budget,
            "arch": self.arch,
            "n_active": self.n_active,
            "n_total": self.n_total,
            "tokens": self.tokens,
            "experts": self.experts,
            "tokens_per_param": self.tokens / self.n_active,
            "loss_median": float(np.median(self.loss_draws)),
            "loss_mean": float(np.mean(self.loss_draws)),
            "loss_interval": list(self.interval(prob)),
            "new_run_interval": list(self.interval(prob, new_run=True)) if new_run else None,
            "prob": prob,
            "score": self.score,
            "lr": self.lr,
            "batch_tokens": self.batch_tokens,
            "runners_up": self.runners_up.to_dict(orient="records"),
        }


@dataclass(frozen=True)
class Constraints:
    """What a configuration must respect besides the budget.

    ``max_params`` caps total parameters (every expert counted), ``max_tokens`` training
    tokens (the unique data available); ``inference_tokens`` tokens served after training cost
    2 N FLOPs each out of the same budget, so ``6 N D + 2 N inference_tokens = budget``.
    """

    max_params: float | None = None
    max_tokens: float | None = None
    inference_tokens: float = 0.0

    def __post_init__(self) -> None:
        if self.inference_tokens < 0:
            raise DecisionError(f"inference tokens must be >= 0, not {self.inference_tokens}")

    def tokens(self, budget: float, n_active: np.ndarray) -> np.ndarray:
        """Training tokens that the budget leaves to models of ``n_active`` parameters."""
        return (budget - 2.0 * n_active * self.inference_tokens) / (6.0 * n_active)

    def infeasible(self, budget: float) -> DecisionError:
        """The refusal when no configuration meets the constraints, naming each of them."""
        parts = [f"budget {budget:.3g} FLOPs"]
        for value, name in (
            (self.max_params, "max total parameters"),
            (self.max_tokens, "max tokens"),
        ):
            parts += [f"{name} {value:.3g}"] if value is not None else []
        parts += [f"{self.inference_tokens:.3g} inference tokens"] if self.inference_tokens else []
        together = ", ".join(parts)
        return DecisionError(f"no configuration meets the constraints together ({together})")


@dataclass
class _Option:
    """One (arch, expert count) with its feasible sizes and their ln expected loss per draw."""

    arch: str
    experts: float
    n_active: np.ndarray
    tokens: np.ndarray
    n_total: np.ndarray | None
    log_loss: np.ndarray  # (draw, size)


def _options(
    law: ArchLaw,
    counts: Sequence[float],
    share: ExpertShare | DecisionError | None,  # the reason when there is no share
    n_grid: np.ndarray,
    budget: float,
    constraints: Constraints,
) -> list[_Option]:
    """The arch's feasible sizes per expert count under the budget and the constraints."""
    out = []
    tokens = constraints.tokens(budget, n_grid)
    for count in counts:
        n_total = n_grid if count == 1 else None
        if count != 1 and isinstance(share, ExpertShare):
            n_total = share.n_total(n_grid, count)
        feasible = tokens > 0
        if constraints.max_params is not None:
            if n_total is None:
                raise share if isinstance(share, DecisionError) else DecisionError(law.arch)
            feasible &= n_total <= constraints.max_params
        if constraints.max_tokens is not None:
            feasible &= tokens <= constraints.max_tokens
        if feasible.any():
            n, d = n_grid[feasible], tokens[feasible]
            total = n_total[feasible] if n_total is not None else None
            out.append(
                _Option(law.arch, count, n, d, total, law.log_loss(np.log(n), np.log(d), count))
            )
    return out


def recommend(
    posterior: Posterior,
    budget: float,
    objective: str | Objective = "mean",
    target: float | None = None,
    quantile: float = 0.9,
    max_params: float | None = None,
    max_tokens: float | None = None,
    inference_tokens: float = 0.0,
    archs: Sequence[str] | None = None,
    experts: Sequence[float] | None = None,
    hyper: Posterior | None = None,
    eval_set: str | None = None,
    grid: int = 241,
    max_draws: int | None = None,
    random_seed: int | np.random.Generator | None = 0,
    new_runs: int = 4000,
    hyper_prob: float = 0.9,
    sizes: tuple[float, float] | None = None,
) -> Recommendation:
    """Pick the configuration to train with ``budget`` FLOPs.

    Candidates are every (arch, expert count, n_active) on a log grid of ``grid`` sizes, tokens
    following from the budget and :class:`Constraints`.

    Parameters
    ----------
    objective
        ``"mean"``: lowest mean expected loss; ``"q90"``: lowest ``quantile`` of the expected
        loss (risk averse); ``"p-target"``: highest probability that a new run's loss is at
        most ``target`` (the fitted run noise included); or any :class:`Objective`.
    max_params, max_tokens, inference_tokens
        The :class:`Constraints`. Total parameters count every expert, as learned from the
        arch's runs (:class:`bayes_scaling.moe.ExpertShare`), not ``n_active * experts``.
    archs, experts
        Archs to consider (default: all in the posterior) and expert counts for archs with
        experts (default: the counts in their runs).
    hyper
        A hyperparameter posterior: the chosen configuration then gets a learning rate and
        batch size with 90% intervals.
    eval_set
        The eval set the loss is measured on; may be left out when the posterior has one.
    random_seed, new_runs
        Seed and (at least) number of new-run noise draws.
    hyper_prob
        Interval probability of the learning rate and batch size from ``hyper``.
    sizes
        The range of active parameters searched (default: from 1e6, or a hundredth of the
        smallest model in the data, to e^3 sqrt(budget)); a best size on either end is refused.
    """
    budget = float(check_budgets(budget)[0])
    loss_spec(posterior)
    if not isinstance(objective, Objective):
        objective = make_objective(objective, target, quantile)
    constraints = Constraints(max_params, max_tokens, inference_tokens)
    # From well below the smallest model in the data (the package's own CPU runs have 7e3
    # parameters) to e^3 sqrt(C); a choice on the lower edge is refused below, never clamped.
    known = posterior.runs.get("n_active", pd.Series(dtype=float)).dropna()
    smallest = float(known.min()) if len(known) else 1e6
    low, high = sizes or (min(1e6, smallest / 100), np.exp(3.0) * np.sqrt(budget))
    n_grid = np.geomspace(low, high, grid)
    names = archs if archs is not None else sorted(posterior.runs["arch"].astype(str).unique())
    options, laws = [], []
    for arch in names:
        law = arch_law(posterior, arch, eval_set, max_draws)
        law.check_target(target if target is not None else objective.target)
        counts = arch_expert_counts(posterior, arch)
        if experts is not None and max(counts) > 1:
            counts = sorted({float(e) for e in experts})
        share: ExpertShare | DecisionError | None = None
        if max(counts) > 1:
            try:
                share = expert_share(posterior, arch)
            except DecisionError as error:  # raised later, only if a constraint needs n_total
                share = error
        options += _options(law, counts, share, n_grid, budget, constraints)
        laws.append(law)
    if not options:
        raise constraints.infeasible(budget)
    noise = None
    if objective.new_run or laws[0].sigma is not None:  # the noise is shared by every arch
        noise = laws[0].new_run_noise(new_runs, random_seed)  # refuses without sigma
    result = _choose(options, objective, noise, budget, (float(n_grid[0]), float(n_grid[-1])))
    if hyper is not None:
        _attach_hyperparameters(result, hyper, posterior, hyper_prob)
    return result


def _choose(
    options: list[_Option],
    objective: Objective,
    noise: tuple[np.ndarray, np.ndarray] | None,
    budget: float,
    grid_ends: tuple[float, float],
) -> Recommendation:
    """Score every option's sizes, keep each option's best, and the best overall; a best size
    on an end of the candidate grid is refused (the optimum lies outside it)."""
    sign = -1.0 if objective.maximize else 1.0
    rows, best = [], None
    for option in options:
        expected = np.exp(option.log_loss)
        if objective.new_run:
            assert noise is not None  # recommend refuses new-run objectives without noise
            scores = objective.score(np.exp(option.log_loss[noise[0]] + noise[1][:, np.newaxis]))
        else:
            scores = objective.score(expected)
        # Ties (a probability is flat where every draw meets the target) go to the lowest mean.
        ties = np.flatnonzero(sign * scores == np.min(sign * scores))
        index = int(ties[np.argmin(expected[:, ties].mean(axis=0))])
        if option.n_active[index] in grid_ends:
            raise DecisionError(
                f"{option.arch} (E = {option.experts:g}): the best size lies on the end of the "
                f"candidate grid (N = {option.n_active[index]:.3g}); the optimum is outside it"
            )
        row: dict[str, Any] = {
            "arch": option.arch,
            "experts": option.experts,
            "n_active": float(option.n_active[index]),
            "n_total": None if option.n_total is None else float(option.n_total[index]),
            "tokens": float(option.tokens[index]),
            "loss_median": float(np.median(expected[:, index])),
            "score": float(scores[index]),
        }
        rows.append(row)
        if best is None or sign * row["score"] < sign * best[0]["score"]:
            best = (row, option.log_loss[:, index])
    assert best is not None  # recommend refuses when there are no options
    chosen, log_loss = best
    new_run = None if noise is None else np.exp(log_loss[noise[0]] + noise[1])
    table = pd.DataFrame(rows).sort_values("score", ascending=not objective.maximize)
    return Recommendation(
        objective=objective.name,
        budget=budget,
        arch=str(chosen["arch"]),
        n_active=chosen["n_active"],
        tokens=chosen["tokens"],
        experts=chosen["experts"],
        n_total=chosen["n_total"],
        loss_draws=np.exp(log_loss),
        score=chosen["score"],
        runners_up=table.iloc[1:].reset_index(drop=True),
        scored_on=objective.description,
        new_run_draws=new_run,
    )


def _attach_hyperparameters(
    result: Recommendation, hyper: Posterior, posterior: Posterior, prob: float
) -> None:
    """Learning rate and batch size of the chosen configuration from a hyper posterior: the
    values with the lowest expected loss penalty (what ``predict`` reports), and the optimum's
    median with its central ``prob`` interval."""
    from bayes_scaling.hyper_predict import recommend as recommend_lr_batch

    if not isinstance(hyper.spec, HyperSpec):
        raise DecisionError("--hyper needs a hyperparameter posterior (kind 'hyper')")
    hyper_archs = sorted(hyper.runs["arch"].astype(str).unique())
    arch = result.arch if result.arch in hyper_archs else None
    if arch is None and len(hyper_archs) > 1:
        raise DecisionError(
            f"the hyperparameter posterior has no arch {result.arch!r} (it has {hyper_archs})"
        )
    if result.n_total is None:
        expert_share(posterior, result.arch)  # raises, naming the arch and why
    point = {"n_active": result.n_active, "tokens": result.tokens, "n_total": result.n_total,
             "arch": arch or hyper_archs[0]}  # fmt: skip
    choice = recommend_lr_batch(hyper, point, prob=prob)
    # A one-arch hyper posterior answers for the chosen arch too; the output says whose law.
    for target, value, median, interval in (
        (result.lr, choice.lr, choice.lr_median, choice.lr_interval),
        (result.batch_tokens, choice.batch_tokens, choice.batch_median, choice.batch_interval),
    ):
        target.update(
            value=value,
            median=median,
            interval=list(interval),
            prob=prob,
            law_arch=choice.arch,
            expected_loss_penalty=choice.expected_loss_penalty,
        )
