"""Which run to train next: Bayesian design of scaling studies by preposterior analysis.

A study is run to answer a question (:class:`Question`): the loss at a target configuration,
the compute-optimal model size at a budget, whether MoE beats dense at a budget (the gap of
their optimal ln losses), or the optimal learning rate and batch size at a target. The question
is a quantity ``q`` with one value per posterior draw, and its uncertainty the posterior
variance of ``q``. A candidate run is worth what it is expected to remove from that variance.

What a run would teach is computed without refitting (:mod:`bayes_scaling.preposterior`): by
default by conditioning the draws' joint covariance of ``q`` and the candidates' expected
losses on the run's outcome (linear-Gaussian), or by importance weighting the draws on
simulated outcomes (``method="importance"``). A batch of ``k`` runs for parallel hardware is
chosen greedily, each run scored given the ones before it, so a run that would teach what an
already chosen one teaches gains little. The greedy rule is the variance removed per FLOP;
under a FLOP budget the better of that and plain gain-greedy is kept, since per-FLOP alone
can spend a budget on cheap runs that each teach little (the CELF rule of Leskovec et al.,
2007, for budgeted submodular selection).

For the loss at a target the predictive also carries the extrapolation discrepancy
(:mod:`bayes_scaling.discrepancy`): its variance E[kappa^2] e(target)^2 falls when a run
extends the data towards the target, and that term is counted too, so a larger run is worth
what it buys in reach as well as in the law's parameters.

The result is a :class:`Plan`: the chosen runs in order, each with its marginal gain, its
gain per FLOP and the question's standard deviation expected once it is in, and every
candidate ranked by its gain as the first run. ``plan.json`` (:meth:`Plan.write`) carries each
run's trainer config when the candidates came from a sweep file, for
``bayes-scaling sweep --plan``.
"""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.posterior import Posterior
from bayes_scaling.preposterior import (
    ImportanceUpdate,
    LinearUpdate,
    ReachVariance,
    noise_variance,
    simulated_log_likelihood,
)
from bayes_scaling.questions import (
    QUESTIONS,
    DesignError,
    HyperOutcomes,
    Question,
    candidate_name,
    check_positive,
    hyper_cells,
    loss_frame,
    question_draws,
)
from bayes_scaling.spec import HyperSpec

__all__ = [
    "METHODS",
    "QUESTIONS",
    "DesignError",
    "Plan",
    "Question",
    "auto_candidates",
    "plan_runs",
    "question_draws",
    "simulated_log_likelihood",
]

PLAN_VERSION = 1
METHODS = ("linear", "importance")


@dataclass
class Plan:
    """The chosen runs in order (``runs``: the candidates' columns plus ``flops``, ``gain``,
    the variance it removes given the runs before it, ``gain_per_flop`` and ``sd_after``, the
    question's expected posterior sd once it is in) and the sd before (``sd_now``) and after
    all of them (``sd_after``)."""

    question: Question
    runs: pd.DataFrame
    sd_now: float
    sd_after: float
    candidates: int
    settings: dict[str, Any] = field(default_factory=dict)
    ranked: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    "Every candidate with its gain (and per FLOP) as the first run, best per FLOP first."

    @property
    def flops(self) -> float:
        """FLOPs of the planned runs together."""
        return float(self.runs["flops"].sum()) if len(self.runs) else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the question, the uncertainty before and after, and the runs (with their
        trainer ``config`` where the candidates carried one)."""
        records = []
        for record in self.runs.to_dict(orient="records"):
            config = record.pop("config", None)
            clean = {k: _jsonable(v) for k, v in record.items()}
            if isinstance(config, dict):
                clean["config"] = config
            records.append(clean)
        top = self.ranked.drop(columns=["config"], errors="ignore").head(10)
        return {
            "version": PLAN_VERSION,
            "question": self.question.describe(),
            "kind": self.question.kind,
            "sd_now": _jsonable(self.sd_now),
            "sd_after": _jsonable(self.sd_after),
            "candidates": self.candidates,
            "flops": self.flops,
            "settings": {k: _jsonable(v) for k, v in self.settings.items()},
            "runs": records,
            "ranked": [
                {k: _jsonable(v) for k, v in row.items()} for row in top.to_dict(orient="records")
            ],
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan as JSON, atomically."""
        from bayes_scaling._io import atomic_write

        path = Path(path)
        atomic_write(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _candidate_flops(candidates: pd.DataFrame) -> np.ndarray:
    """Each candidate's FLOPs: its own ``flops`` (checked) or 6 N D."""
    if "flops" in candidates:
        check_positive(candidates, ("flops",))
        return pd.to_numeric(candidates["flops"]).to_numpy(float)
    return 6.0 * candidates["n_active"].to_numpy(float) * candidates["tokens"].to_numpy(float)


def plan_runs(
    posterior: Posterior,
    question: Question,
    candidates: pd.DataFrame,
    k: int = 4,
    budget_flops: float | None = None,
    scenarios: int = 48,
    max_draws: int = 800,
    random_seed: int = 0,
    method: str = "linear",
) -> Plan:
    """Choose up to ``k`` runs from ``candidates`` (greedy on expected variance removed per
    FLOP, see the module notes), their FLOPs together at most ``budget_flops``.

    ``candidates`` has ``n_active``, ``tokens`` and optionally ``arch``, ``experts``,
    ``eval_set``, ``flops`` (default 6 N D), ``config`` (a trainer config, carried into the
    plan); for ``lr-batch`` also ``lr`` and ``batch_tokens`` (and ``n_total``). The same seed
    gives the same plan.
    """
    try:
        whole = operator.index(k) if not isinstance(k, bool) else 0
    except TypeError:
        whole = 0
    if whole < 1:
        raise DesignError(f"k must be a whole number >= 1, not {k!r}")
    k = whole
    if max_draws < 2 or scenarios < 1:
        raise DesignError("max_draws must be >= 2 and scenarios >= 1")
    if method not in METHODS:
        raise DesignError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if budget_flops is not None and not (math.isfinite(budget_flops) and budget_flops > 0):
        raise DesignError(f"budget_flops must be finite and > 0, not {budget_flops!r}")
    if len(candidates) == 0:
        raise DesignError("no candidate runs to choose from")
    candidates = candidates.reset_index(drop=True)
    fitted_ids = set(posterior.fitted_runs["run_id"].astype(str))
    known = candidates["run_id"].astype(str).isin(fitted_ids) if "run_id" in candidates else None
    dropped = int(known.sum()) if known is not None else 0
    if known is not None and dropped:  # a run already in the fit teaches nothing new
        candidates = candidates[~known].reset_index(drop=True)
    if len(candidates) == 0:
        raise DesignError(f"every candidate ({dropped}) is already among the fitted runs")
    check_positive(candidates, ("n_active", "tokens"))
    flops = _candidate_flops(candidates)
    rng = np.random.default_rng(random_seed)
    hyper = isinstance(posterior.spec, HyperSpec)
    if hyper and question.kind == "lr-batch":
        # One object for the target and the candidates: a candidate in the never-run target
        # cell shares the cell's deviation draw with the question.
        outcomes = HyperOutcomes(posterior, pd.DataFrame(question.targets), random_seed)
        q_all = np.concatenate([outcomes.target_lr, outcomes.target_batch], axis=1)
    else:
        q_all = question_draws(posterior, question)
    total = q_all.shape[0]
    index = np.sort(rng.choice(total, size=min(total, max_draws), replace=False))
    q = q_all[index]
    if hyper:
        mean = outcomes.log_mean(candidates)[index]
    else:
        from bayes_scaling.predict import law_draws

        mean = law_draws(posterior, loss_frame(posterior, candidates, "candidates"))[index]
    if not np.isfinite(q).all():
        raise DesignError(f"the question ({question.describe()}) is not finite under every draw")
    bad = np.flatnonzero(~np.isfinite(mean).all(axis=0))
    if bad.size:
        raise DesignError(
            f"{candidate_name(candidates, int(bad[0]))}: its predicted loss is not finite"
        )
    sigma = posterior.draws("sigma")[index]
    nu = posterior.draws("nu")[index]
    draws = len(index)
    update: ImportanceUpdate | LinearUpdate
    if method == "importance":
        truth = rng.choice(draws, size=min(scenarios, draws), replace=False)
        update = ImportanceUpdate(q, *simulated_log_likelihood(mean, sigma, nu, truth, rng))
    else:
        update = LinearUpdate(q, mean, float(np.mean(noise_variance(sigma, nu))))
    search = _Greedy(update, ReachVariance(posterior, question, candidates), flops)
    sd_now = math.sqrt(search.variance_now)
    # Per FLOP alone can spend a budget on cheap runs: the better of it and gain (CELF).
    rules = ["gain per FLOP"] if budget_flops is None else ["gain per FLOP", "gain"]
    results = {rule: search.run(k, budget_flops, rule == "gain per FLOP") for rule in rules}
    rule = min(rules, key=lambda name: results[name][2])
    chosen, rows, current, first = results[rule]
    if not chosen:
        raise DesignError(
            f"no candidate fits the budget of {budget_flops:.3g} FLOPs (the cheapest costs "
            f"{flops.min():.3g})"
            if budget_flops is not None and flops.min() > budget_flops
            else "no candidate would reduce the question's uncertainty"
        )
    ranked = candidates.assign(flops=flops, gain=first, gain_per_flop=first / flops)
    ranked = ranked.sort_values("gain_per_flop", ascending=False, na_position="last")
    runs = candidates.iloc[chosen].reset_index(drop=True)
    runs = runs.drop(columns=[c for c in ("flops",) if c in runs])
    runs = pd.concat([runs, pd.DataFrame(rows)], axis=1)
    settings = {
        "k": k,
        "budget_flops": budget_flops,
        "method": method,
        "scenarios": scenarios if method == "importance" else None,
        "draws": draws,
        "random_seed": int(random_seed),
        "rule": rule,
        "already_fitted": dropped,
    }
    if question.kind == "moe-better":  # the gap's sign is the answer
        settings["p_moe_better"] = float((q_all < 0).mean())
    sd_after = math.sqrt(max(current, 0.0))
    return Plan(question, runs, sd_now, sd_after, len(candidates), settings, ranked)


@dataclass
class _Greedy:
    """Greedy choice of runs, each the best (per FLOP, or in all) given those before it."""

    update: ImportanceUpdate | LinearUpdate
    reach: ReachVariance
    flops: np.ndarray

    @property
    def variance_now(self) -> float:
        return self.update.variance(self.update.start) + self.reach.variance([])

    def run(
        self, k: int, budget: float | None, by_ratio: bool
    ) -> tuple[list[int], list[dict[str, float]], float, np.ndarray]:
        """(chosen candidates, one record each, the expected variance after all of them, and
        every candidate's gain as the first run: NaN where it does not fit the budget)."""
        state: Any = self.update.start
        current, spent = self.variance_now, 0.0
        first = np.full(len(self.flops), np.nan)
        chosen: list[int] = []
        rows = []
        for _ in range(k):
            open_ = [
                c
                for c in range(len(self.flops))
                if c not in chosen and (budget is None or spent + self.flops[c] <= budget)
            ]
            if not open_:
                break
            after = self.update.after(state, open_)
            after = after + np.array([self.reach.variance([*chosen, c]) for c in open_])
            gain = current - after
            if not chosen:
                first[open_] = gain
            best = int(np.argmax(gain / self.flops[open_] if by_ratio else gain))
            if not gain[best] > 0:  # nothing left teaches anything: stop spending
                break
            pick = open_[best]
            chosen.append(pick)
            state = self.update.commit(state, pick)
            current, spent = float(after[best]), spent + self.flops[pick]
            rows.append(
                {
                    "flops": float(self.flops[pick]),
                    "gain": float(gain[best]),
                    "gain_per_flop": float(gain[best] / self.flops[pick]),
                    "sd_after": math.sqrt(max(current, 0.0)),
                }
            )
        return chosen, rows, current, first


def auto_candidates(posterior: Posterior, question: Question, per_axis: int = 6) -> pd.DataFrame:
    """A default candidate grid: for each arch (at its most common expert count), ``per_axis``
    sizes from the smallest fitted N to the larger of 4x the largest and the target's N, each
    at ``per_axis`` token-per-parameter ratios spanning the fitted ones; for ``lr-batch``
    questions, the target cell and the fitted cells at learning rates and batch sizes around
    the fitted optima."""
    from bayes_scaling.frontier import arch_expert_counts

    runs = posterior.fitted_runs
    n = runs["n_active"].to_numpy(float)
    ratio = runs["tokens"].to_numpy(float) / n
    top = n.max() * 4
    if question.targets is not None:
        top = max(top, float(question.targets["n_active"].max()))
    sizes = np.geomspace(n.min(), top, per_axis)
    ratios = np.geomspace(ratio.min(), max(ratio.max(), ratio.min() * 1.01), per_axis)
    rows = []
    for arch in sorted(runs["arch"].astype(str).unique()):
        experts = arch_expert_counts(posterior, arch)[-1]
        for size in sizes:
            for r in ratios:
                rows.append(
                    {"arch": arch, "experts": experts, "n_active": size, "tokens": size * r}
                )
    frame = pd.DataFrame(rows)
    if question.kind != "lr-batch":
        return frame
    cells = runs[["arch", "n_active", "n_total", "tokens"]].drop_duplicates()
    assert question.targets is not None
    target = hyper_cells(posterior, pd.DataFrame(question.targets), "target")
    cells = pd.concat([cells, target[list(cells.columns)]], ignore_index=True)
    lr = np.exp(np.quantile(np.log(runs["lr"].to_numpy(float)), np.linspace(0, 1, per_axis)))
    batch = runs["batch_tokens"].to_numpy(float)
    batches = np.exp(np.quantile(np.log(batch), [0.0, 0.5, 1.0]))
    out = [
        {**cell, "lr": a, "batch_tokens": b}
        for cell in cells.drop_duplicates().to_dict(orient="records")
        for a in lr
        for b in batches
    ]
    return pd.DataFrame(out)
