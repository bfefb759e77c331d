"""MoE against dense: what an MoE configuration weighs, and what it buys at equal compute.

- :func:`expert_share` / :class:`ExpertShare`: total parameters of a candidate (arch, experts,
  n_active) from the shape of the arch's runs; attention, embeddings and shared layers are not
  replicated per expert, so ``n_active * experts`` overstates it (1.4-18x on DeepMind's routed
  models).
- :func:`moe_vs_dense`: P(MoE beats dense) per budget, MoE's data-efficiency gain and its
  Efficiency Leverage, per draw, in a :class:`MoEComparison`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.frontier import (
    DecisionError,
    arch_law,
    check_budgets,
    frontier,
)
from bayes_scaling.intervals import add_intervals
from bayes_scaling.posterior import Posterior

__all__ = [
    "ExpertShare",
    "MoEComparison",
    "UnreachableWarning",
    "expert_share",
    "moe_vs_dense",
]

# How far the equal-loss solves look, in natural-log units either side of the start: e^230 is
# about 1e100, far past any budget or token count anyone will train with.
SEARCH_LIMIT = 230.0


class UnreachableWarning(RuntimeWarning):
    """An equal-loss solve with no solution for some draws (their values are NaN)."""


@dataclass(frozen=True)
class ExpertShare:
    """How an arch's parameters split between routed experts and the rest, by model size.

    ``share`` is the top-1 share s = P_e / (P_rest + P_e) of one routed expert (P_e, summed
    over the routed layers) in a top-1 model whose other parameters are P_rest, at each run
    size ``log_n_active`` (sorted). With k experts active the fraction of ``n_active`` held by
    routed experts is f = k s / (k s + 1 - s), and

        n_total = n_active * (1 + f * (E / k - 1))

    (E = 1 or E = k: n_total = n_active). The assumption: a candidate has the shape of the
    arch's runs of its size (interpolated in ln n_active between run sizes, the nearest size's
    beyond them; from runs with its ``top_k`` when there are any), so parameters outside the
    routed experts are not replicated. Shapes the run table does not record (DeepMind's routing
    frequency sweep) are not told apart: the median over runs of a size stands for them.
    """

    arch: str
    log_n_active: np.ndarray
    share: np.ndarray
    top_k: float

    def n_total(self, n_active: Any, experts: Any, top_k: float | None = None) -> np.ndarray:
        """Total parameters (every expert counted) of configurations of this arch."""
        k = float(top_k if top_k is not None else self.top_k)
        n_active = np.asarray(n_active, dtype=float)
        s = np.interp(np.log(n_active), self.log_n_active, self.share)
        routed = k * s / (k * s + 1.0 - s)
        replicas = np.maximum(np.asarray(experts, dtype=float) / k - 1.0, 0.0)
        return n_active * (1.0 + routed * replicas)


def _top1_share(runs: pd.DataFrame) -> np.ndarray:
    """Per run, the top-1 expert share s implied by its n_total (see :class:`ExpertShare`)."""
    ratio = runs["n_total"].to_numpy(float) / runs["n_active"].to_numpy(float)
    experts, k = runs["experts"].to_numpy(float), runs["top_k"].to_numpy(float)
    routed = (ratio - 1.0) / (experts / k - 1.0)  # f, the routed fraction of n_active
    return routed / (routed + k * (1.0 - routed))


def expert_share(posterior: Posterior, arch: str, top_k: float | None = None) -> ExpertShare:
    """The expert share of an arch, learned from its runs with ``experts > top_k``.

    ``top_k`` defaults to the most common one in those runs; runs with that ``top_k`` are used
    when there are any (a top-2 run has more active parameters than the top-1 run of the same
    shape), all of them otherwise. Raises :class:`DecisionError` naming the arch when no run
    records a sparse configuration with its ``n_total``.
    """
    runs = posterior.runs
    needed = {"arch", "n_active", "n_total", "experts", "top_k"}
    if not needed <= set(runs.columns):
        missing = sorted(needed - set(runs.columns))
        raise DecisionError(
            f"arch {arch!r}: the posterior's run table lacks {missing}, so the total parameters "
            "of its MoE configurations cannot be estimated"
        )
    runs = runs[(runs["arch"].astype(str) == arch) & (runs["experts"] > runs["top_k"])]
    if runs.empty:
        raise DecisionError(
            f"arch {arch!r}: no runs with experts > top_k, so the total parameters of its MoE "
            "configurations cannot be estimated (n_total is learned from the arch's runs)"
        )
    share = _top1_share(runs)
    bad = ~((share >= 0.0) & (share <= 1.0))
    if bad.any():
        row = runs.iloc[int(np.flatnonzero(bad)[0])]
        raise DecisionError(
            f"arch {arch!r}, run {row.get('run_id', '?')}: n_total {row['n_total']:.4g} is "
            f"outside [n_active, n_active * experts / top_k] for n_active "
            f"{row['n_active']:.4g}, experts {row['experts']:g}, top_k {row['top_k']:g}"
        )
    if top_k is None:
        top_k = float(runs["top_k"].mode().iloc[0])
    same_k = (runs["top_k"] == top_k).to_numpy()
    if same_k.any():
        runs, share = runs[same_k], share[same_k]
    # Sizes within 0.1% are one size (the data round parameter counts differently).
    log_n = np.round(np.log(runs["n_active"].to_numpy(float)), 3)
    sizes = np.unique(log_n)
    medians = np.array([np.median(share[log_n == size]) for size in sizes])
    return ExpertShare(arch, sizes, medians, float(top_k))


def _solve_decreasing(
    loss_at: Callable[[np.ndarray], np.ndarray], target: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """x with loss_at(x) = target elementwise, for a loss falling in x: a bracket around
    ``start`` widened until it holds the solution (up to :data:`SEARCH_LIMIT`), then bisection
    to 1e-10. NaN where no x within the limit reaches the target."""
    low, high = start - 1.0, start + 1.0
    for step in 2.0 ** np.arange(1, 9):  # reach 1 + 2 + ... + 256 > SEARCH_LIMIT
        too_low = ~(loss_at(low) >= target)  # the loss at low must not be below the target
        too_high = ~(loss_at(high) <= target)
        if not (too_low | too_high).any():
            break
        low = np.where(too_low, np.maximum(low - step, start - SEARCH_LIMIT), low)
        high = np.where(too_high, np.minimum(high + step, start + SEARCH_LIMIT), high)
    solved = (loss_at(low) >= target) & (loss_at(high) <= target)
    low, high = np.where(solved, low, start), np.where(solved, high, start)
    for _ in range(int(np.ceil(np.log2(max(np.max(high - low), 1e-10) / 1e-10)))):
        mid = 0.5 * (low + high)
        above = loss_at(mid) > target
        low, high = np.where(above, mid, low), np.where(above, high, mid)
    return np.where(solved, 0.5 * (low + high), np.nan)


def _warn_unreachable(values: np.ndarray, budgets: np.ndarray, what: str) -> None:
    """One warning naming the budgets at which some draws have no solution."""
    missing = np.isnan(values).mean(axis=0)
    if missing.any():
        where = ", ".join(
            f"C = {c:.3g} ({100 * m:.2g}% of draws)" for c, m in zip(budgets, missing, strict=True)
            if m > 0
        )  # fmt: skip
        warnings.warn(
            f"{what} at {where}; those draws are NaN (infinite in the summary's quantiles)",
            UnreachableWarning,
            stacklevel=3,
        )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass
class MoEComparison:
    """MoE against dense at equal compute: per budget and draw, both compute-optimal.

    ``p_moe_better`` (budget,); ``data_gain`` and ``leverage`` (draw, budget), NaN for draws
    where no solution exists (see :func:`moe_vs_dense`).
    """

    budgets: np.ndarray
    moe_arch: str
    dense_arch: str
    experts: float
    eval_set: str | None
    p_moe_better: np.ndarray
    data_gain: np.ndarray
    leverage: np.ndarray

    def summary(self, probs: Sequence[float] = (0.9,)) -> pd.DataFrame:
        """One row per budget: ``p_moe_better``, medians and intervals of ``data_gain`` and
        ``leverage`` (draws without a solution counted as -inf and +inf), and the share of
        draws without one (``*_unreachable``)."""
        out = pd.DataFrame(
            {"flops": self.budgets, "moe_arch": self.moe_arch, "experts": self.experts}
        )
        out["p_moe_better"] = self.p_moe_better
        for name, unreachable in (("data_gain", -np.inf), ("leverage", np.inf)):
            values = getattr(self, name)
            # A draw with no solution is still ordered: MoE needs unboundedly many tokens (data
            # gain -inf) or dense unboundedly much compute (leverage +inf). Quantiles over the
            # extended reals, each one a draw's value, so a few such draws do not blank them.
            extended = np.where(np.isnan(values), unreachable, values)
            add_intervals(out, name, extended, probs, method="inverted_cdf")
            out[f"{name}_unreachable"] = np.isnan(values).mean(axis=0)
        return out

    def to_dict(self, prob: float = 0.9) -> dict[str, Any]:
        """JSON-ready summary: lists over budgets (intervals as [low, high] at ``prob``)."""
        table = self.summary((prob,))
        label = f"{100 * prob:g}"
        out: dict[str, Any] = {
            "moe_arch": self.moe_arch,
            "dense_arch": self.dense_arch,
            "experts": self.experts,
            "eval_set": self.eval_set,
            "prob": prob,
            "flops": self.budgets.tolist(),
            "p_moe_better": self.p_moe_better.tolist(),
        }
        for name in ("data_gain", "leverage"):
            bounds = table[[f"{name}_low_{label}", f"{name}_high_{label}"]].to_numpy()
            out[name] = {  # JSON has no infinity: an unbounded end is None
                "median": [_finite(v) for v in table[f"{name}_median"]],
                "interval": [[_finite(low), _finite(high)] for low, high in bounds],
                "unreachable": table[f"{name}_unreachable"].tolist(),
            }
        return out


def moe_vs_dense(
    posterior: Posterior,
    budgets: Any,
    moe_arch: str,
    dense_arch: str = "dense",
    experts: float | None = None,
    eval_set: str | None = None,
    max_draws: int | None = None,
) -> MoEComparison:
    """Architecture questions as posteriors, per budget C (both archs compute-optimal):

    - ``p_moe_better``: P(L*_moe(C) < L*_dense(C)) over draws;
    - ``data_gain``: tokens saved at equal loss, 1 - D_moe / D_dense, where MoE keeps the dense
      optimum's N and needs D_moe tokens to reach the dense optimum's loss (Wang et al.'s data
      efficiency), solved per draw by bisection on ln D;
    - ``leverage``: Efficiency Leverage (Tian et al.), C_dense / C with C_dense the budget at
      which compute-optimal dense reaches MoE's optimal loss at C, solved per draw by
      bisection on ln C_dense against the dense frontier.

    A draw whose equation has no solution within a factor e^230 (~1e100) of the start (MoE's
    loss below anything dense reaches, or MoE unable to match dense at dense's size) gets NaN,
    and an :class:`UnreachableWarning` names the budgets and the share of draws.
    ``eval_set`` may be left out when the posterior has one.
    """
    budgets = check_budgets(budgets)
    dense = frontier(posterior, budgets, dense_arch, eval_set=eval_set, max_draws=max_draws)
    moe = frontier(
        posterior, budgets, moe_arch, experts=experts, eval_set=eval_set, max_draws=max_draws
    )
    moe_law = arch_law(posterior, moe_arch, eval_set, max_draws)
    dense_law = arch_law(posterior, dense_arch, eval_set, max_draws)
    log_n, log_d = np.log(dense.n_opt), np.log(dense.d_opt)
    log_d_moe = _solve_decreasing(
        lambda x: moe_law.log_loss(log_n, x, moe.experts), np.log(dense.loss), log_d
    )
    _warn_unreachable(log_d_moe, budgets, "data gain: MoE at dense's N never reaches its loss")
    log_c = np.broadcast_to(np.log(budgets), moe.loss.shape)
    log_c_dense = _solve_decreasing(
        lambda x: dense_law.optimum(x, dense.experts)[2], np.log(moe.loss), log_c
    )
    _warn_unreachable(
        log_c_dense, budgets, "Efficiency Leverage: no dense budget reaches MoE's loss"
    )
    return MoEComparison(
        budgets=budgets,
        moe_arch=moe_arch,
        dense_arch=dense_arch,
        experts=moe.experts,
        eval_set=moe.eval_set,
        p_moe_better=(moe.loss < dense.loss).mean(axis=0),
        data_gain=1.0 - np.exp(log_d_moe - log_d),
        leverage=np.exp(log_c_dense - log_c),
    )
