"""Budget decisions from a loss-law posterior: compute-optimal allocation and architecture
choice, each as a distribution rather than a point.

Everything works per posterior draw, vectorized over (draw, budget):

- :func:`frontier`: for FLOP budgets C, the optimal active parameters N and tokens D (C = 6 N D)
  and the loss reached, per draw; closed form for the Chinchilla and experts laws (the expert
  term only rescales A), a vectorized golden-section search otherwise. ``Frontier.summary``
  gives intervals; ``Frontier.exponents`` the allocation exponents (N_opt ~ C^a, D_opt ~ C^b).
- :func:`recommend`: one configuration (n_active, tokens, experts; lr and batch from a
  hyperparameter posterior when given) optimizing the expected loss, a quantile of the loss, or
  the probability of reaching a target, under a maximum total parameter count, a maximum number
  of tokens, and inference-aware cost (FLOPs spent serving tokens count against the budget).
- :func:`moe_vs_dense`: P(MoE beats dense) at each budget, MoE's data-efficiency gain (tokens
  saved at equal loss) and Efficiency Leverage (dense compute / MoE compute at equal loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.fit import Posterior
from bayes_scaling.laws import LAWS, optimal_allocation
from bayes_scaling.spec import HyperSpec, ModelSpec

__all__ = [
    "DecisionError",
    "Frontier",
    "Recommendation",
    "frontier",
    "law_parameters",
    "moe_vs_dense",
    "published_posterior",
    "recommend",
]


class DecisionError(ValueError):
    """A decision request that cannot be served: bad budget, unreachable target, no feasible
    configuration; the message says which."""


def _arch_experts(posterior: Posterior, arch: str) -> list[float]:
    """Expert counts of an arch's runs, the most common last ([1.0] without runs)."""
    runs = posterior.runs[posterior.runs["arch"].astype(str) == arch]
    if runs.empty:
        return [1.0]
    common = float(runs["experts"].mode().iloc[0])
    return [*sorted({float(e) for e in runs["experts"]} - {common}), common]


def published_posterior(
    law: str, params: dict[str, dict[str, float]], log_e: float, experts: float = 1.0
) -> Posterior:
    """A one-draw "posterior" holding published coefficients (raw units) per arch, so the
    decision code can be checked against the literature. ``params`` maps arch -> law params."""
    import xarray as xr

    archs = sorted(params)
    names = LAWS[law].arch_params
    data = {
        name: (("chain", "draw", "arch"), [[[params[a][name] for a in archs]]]) for name in names
    }
    data["log_e"] = (("chain", "draw", "eval_set"), [[[log_e]]])
    dataset = xr.Dataset(data, coords={"arch": archs, "eval_set": ["published"]})
    runs = pd.DataFrame({"arch": archs, "experts": experts, "eval_set": "published"})
    return Posterior(
        ModelSpec(law=law, pooling="separate"), runs, xr.DataTree.from_dict({"posterior": dataset})
    )


def _add_intervals(
    out: pd.DataFrame, name: str, values: np.ndarray, probs: Sequence[float]
) -> None:
    """Columns ``<name>_median`` and ``<name>_low_/high_<p>`` over draws (axis 0)."""
    out[f"{name}_median"] = np.median(values, axis=0)
    for prob in probs:
        tail, label = (1.0 - prob) / 2.0, f"{100 * prob:g}"
        out[f"{name}_low_{label}"] = np.quantile(values, tail, axis=0)
        out[f"{name}_high_{label}"] = np.quantile(values, 1.0 - tail, axis=0)


def _check_budgets(budgets: Any) -> np.ndarray:
    values = np.atleast_1d(np.asarray(budgets, dtype=float))
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise DecisionError(f"FLOP budgets must be positive numbers, not {values.tolist()}")
    return values


def _loss_spec(posterior: Posterior) -> ModelSpec:
    if not isinstance(posterior.spec, ModelSpec):
        raise DecisionError("budget decisions need a loss-law posterior, not a hyperparameter one")
    return posterior.spec


def _pick(posterior: Posterior, column: str, value: str | None) -> str:
    """An arch or eval set of the posterior: ``value`` checked, or the only one."""
    known = [str(v) for v in posterior.idata["posterior"][column].to_numpy()]
    if value is None:
        if len(known) > 1:
            raise DecisionError(f"the posterior has several {column}s; name one of {known}")
        return known[0]
    if value not in known:
        raise DecisionError(f"unknown {column} {value!r}; the posterior knows {known}")
    return value


def law_parameters(
    posterior: Posterior,
    arch: str | None = None,
    eval_set: str | None = None,
    max_draws: int | None = None,
) -> dict[str, np.ndarray]:
    """The law's raw parameters for one arch (and eval set), one value per posterior draw."""
    spec = _loss_spec(posterior)
    law = LAWS[spec.law]
    arch = _pick(posterior, "arch", arch)
    post = posterior.idata["posterior"]
    params = {
        name: post[name].sel(arch=arch).stack(sample=("chain", "draw")).to_numpy()
        for name in law.arch_params
    }
    if law.has_irreducible:
        eval_set = _pick(posterior, "eval_set", eval_set)
        log_e = post["log_e"].sel(eval_set=eval_set).stack(sample=("chain", "draw"))
        params["log_e"] = log_e.to_numpy()
    if max_draws is not None:
        params = {k: v[:max_draws] for k, v in params.items()}
    return params


def _column(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Parameters as (draw, 1) columns that broadcast against budgets."""
    return {k: np.asarray(v, dtype=float)[:, np.newaxis] for k, v in params.items()}


def _log_loss(
    law_name: str, params: dict[str, np.ndarray], log_n: Any, log_d: Any, experts: Any, g: Any
) -> np.ndarray:
    inputs = {
        "log_n": log_n,
        "log_d": log_d,
        "log_experts": np.log(np.asarray(experts, dtype=float)),
        "log_granularity": np.log(np.asarray(g, dtype=float)),
    }
    return np.asarray(LAWS[law_name].log_loss(inputs, params))


def _optimum(
    law_name: str, params: dict[str, np.ndarray], budgets: np.ndarray, experts: float, g: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, ln L) at the compute optimum, shape (draw, budget)."""
    cols = _column(params)
    log_c6 = np.log(budgets / 6.0)[np.newaxis, :]
    if law_name in ("chinchilla", "experts"):
        # Closed form (Hoffmann et al. eq. 4); the expert term rescales A by E^-gamma.
        log_a = cols["log_a"] - (cols["gamma"] * np.log(experts) if law_name == "experts" else 0)
        alpha, beta = cols["alpha"], cols["beta"]
        total = alpha + beta
        log_g = (np.log(alpha) + log_a - np.log(beta) - cols["log_b"]) / total
        log_n = log_g + beta / total * log_c6
        log_n = np.broadcast_to(log_n, np.broadcast(log_n, log_c6).shape)
    else:
        n, _, _ = optimal_allocation(LAWS[law_name], cols, budgets[np.newaxis, :], experts, g)
        log_n = np.log(n)
    log_d = log_c6 - log_n
    return np.exp(log_n), np.exp(log_d), _log_loss(law_name, cols, log_n, log_d, experts, g)


@dataclass
class Frontier:
    """Compute-optimal allocation per draw: arrays of shape (draw, budget)."""

    budgets: np.ndarray
    n_opt: np.ndarray
    d_opt: np.ndarray
    loss: np.ndarray
    arch: str
    experts: float = 1.0
    granularity: float = 1.0

    def summary(self, probs: Sequence[float] = (0.9,)) -> pd.DataFrame:
        """Median and central intervals of N_opt, D_opt, tokens per parameter and loss."""
        out = pd.DataFrame({"flops": self.budgets, "arch": self.arch, "experts": self.experts})
        quantities = {
            "n_opt": self.n_opt,
            "d_opt": self.d_opt,
            "tokens_per_param": self.d_opt / self.n_opt,
            "loss": self.loss,
        }
        for name, values in quantities.items():
            _add_intervals(out, name, values, probs)
        return out

    def exponents(self, probs: Sequence[float] = (0.9,)) -> pd.DataFrame:
        """Allocation exponents a (N_opt ~ C^a) and b (D_opt ~ C^b) per draw, by least squares
        of ln N_opt and ln D_opt on ln C across the budgets; median and intervals."""
        if len(self.budgets) < 2:
            raise DecisionError("allocation exponents need at least two budgets")
        x = np.log(self.budgets) - np.log(self.budgets).mean()
        rows = []
        for name, values in (("a (N_opt ~ C^a)", self.n_opt), ("b (D_opt ~ C^b)", self.d_opt)):
            slopes = (np.log(values) - np.log(values).mean(axis=1, keepdims=True)) @ x / (x @ x)
            row = {"exponent": name, "arch": self.arch, "median": float(np.median(slopes))}
            for prob in probs:
                tail, label = (1.0 - prob) / 2.0, f"{100 * prob:g}"
                row[f"low_{label}"] = float(np.quantile(slopes, tail))
                row[f"high_{label}"] = float(np.quantile(slopes, 1.0 - tail))
            rows.append(row)
        return pd.DataFrame(rows)


def frontier(
    posterior: Posterior,
    budgets: Any,
    arch: str | None = None,
    experts: float | None = None,
    granularity: float = 1.0,
    eval_set: str | None = None,
    max_draws: int | None = None,
) -> Frontier:
    """The compute-optimal frontier of one arch at the given budgets, per posterior draw.

    ``experts`` defaults to the arch's most common expert count in the data (1 for dense).
    """
    budgets = _check_budgets(budgets)
    spec = _loss_spec(posterior)
    arch = _pick(posterior, "arch", arch)
    if experts is None:
        experts = _arch_experts(posterior, arch)[-1]
    params = law_parameters(posterior, arch, eval_set, max_draws)
    n, d, log_loss = _optimum(spec.law, params, budgets, experts, granularity)
    return Frontier(budgets, n, d, np.exp(log_loss), arch, experts, granularity)


@dataclass
class Recommendation:
    """The chosen configuration, its loss distribution (one value per draw), and runners-up."""

    objective: str
    budget: float
    arch: str
    n_active: float
    tokens: float
    experts: float
    n_total: float
    loss_draws: np.ndarray
    score: float
    runners_up: pd.DataFrame
    lr: dict[str, float] = field(default_factory=dict)
    batch_tokens: dict[str, float] = field(default_factory=dict)

    def interval(self, prob: float = 0.9) -> tuple[float, float]:
        """Central interval of the chosen configuration's expected loss."""
        tail = (1.0 - prob) / 2.0
        low, high = np.quantile(self.loss_draws, [tail, 1.0 - tail])
        return float(low), float(high)

    def to_dict(self, prob: float = 0.9) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "objective": self.objective,
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
            "prob": prob,
            "score": self.score,
            "lr": self.lr,
            "batch_tokens": self.batch_tokens,
            "runners_up": self.runners_up.to_dict(orient="records"),
        }


OBJECTIVES = ("mean", "q90", "p-target")


def _score(loss: np.ndarray, objective: str, target: float | None, quantile: float) -> np.ndarray:
    """Lower is better, over candidates (axis 1 of (draw, candidate))."""
    if objective == "mean":
        return loss.mean(axis=0)
    if objective == "q90":
        return np.quantile(loss, quantile, axis=0)
    return -(loss <= target).mean(axis=0)


def recommend(
    posterior: Posterior,
    budget: float,
    objective: str = "mean",
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
) -> Recommendation:
    """Pick the configuration to train with ``budget`` FLOPs.

    Candidates are every (arch, expert count, n_active) on a log grid of ``grid`` sizes; tokens
    follow from the budget: ``6 N D + 2 N inference_tokens = budget`` (inference-aware cost:
    serving ``inference_tokens`` tokens costs 2 N FLOPs each and comes out of the budget).

    Parameters
    ----------
    objective
        ``"mean"``: lowest expected loss; ``"q90"``: lowest ``quantile`` of the loss (risk
        averse); ``"p-target"``: highest probability that the loss is at most ``target``.
    max_params
        Cap on total parameters, ``n_total = n_active * experts`` (every expert counted, the
        memory bound of Ludziejewski et al.; conservative when attention is shared).
    max_tokens
        Cap on training tokens (data-limited regime: unique tokens available).
    archs, experts
        Archs to consider (default: all in the posterior) and expert counts for archs with
        experts (default: the counts in their runs).
    hyper
        A hyperparameter posterior: the chosen configuration then gets a learning rate and
        batch size with 90% intervals.
    """
    budget = float(_check_budgets(budget)[0])
    spec = _loss_spec(posterior)
    if objective not in OBJECTIVES:
        raise DecisionError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")
    if objective == "p-target" and target is None:
        raise DecisionError("objective 'p-target' needs a target loss (--target)")
    if inference_tokens < 0:
        raise DecisionError(f"inference tokens must be >= 0, not {inference_tokens}")
    known_archs = sorted(posterior.runs["arch"].astype(str).unique())
    archs = list(archs) if archs is not None else known_archs
    log_c = np.log(budget)
    log_n = np.linspace(np.log(1e6), log_c / 2 + 3.0, grid)
    candidates = []
    for arch in archs:
        params = law_parameters(posterior, arch, eval_set, max_draws)
        if target is not None and LAWS[spec.law].has_irreducible:
            floor = np.exp(params["log_e"])
            if target <= float(np.median(floor)):
                low, high = np.quantile(floor, [0.05, 0.95])
                raise DecisionError(
                    f"target loss {target} is below the irreducible loss of {arch} (median "
                    f"{np.median(floor):.4f}, 90% interval [{low:.4f}, {high:.4f}]); no budget "
                    "reaches it"
                )
        counts = _arch_experts(posterior, arch)
        if experts is not None and max(counts) > 1:
            counts = sorted({float(e) for e in experts})
        for count in counts:
            n = np.exp(log_n)
            d = (budget - 2.0 * n * inference_tokens) / (6.0 * n)
            feasible = d > 0
            if max_params is not None:
                feasible &= n * count <= max_params
            if max_tokens is not None:
                feasible &= d <= max_tokens
            if not feasible.any():
                continue
            n, d = n[feasible], d[feasible]
            loss = np.exp(_log_loss(spec.law, _column(params), np.log(n), np.log(d), count, 1.0))
            candidates.append((arch, count, n, d, loss))
    if not candidates:
        limits = [f"budget {budget:.3g} FLOPs"]
        if max_params is not None:
            limits.append(f"max total parameters {max_params:.3g}")
        if max_tokens is not None:
            limits.append(f"max tokens {max_tokens:.3g}")
        if inference_tokens:
            limits.append(f"{inference_tokens:.3g} inference tokens")
        raise DecisionError(
            "no configuration meets the constraints together ("
            + ", ".join(limits)
            + "): loosen one of them"
        )
    rows = []
    best = None
    for arch, count, n, d, loss in candidates:
        scores = _score(loss, objective, target, quantile)
        index = int(np.argmin(scores))
        row: dict[str, Any] = {
            "arch": arch,
            "experts": count,
            "n_active": float(n[index]),
            "tokens": float(d[index]),
            "loss_median": float(np.median(loss[:, index])),
            "score": float(scores[index]),
        }
        if objective == "p-target":
            row["p_target"] = -row["score"]
        rows.append(row)
        if best is None or row["score"] < best[0]["score"]:
            best = (row, loss[:, index])
    assert best is not None
    chosen, loss_draws = best
    table = pd.DataFrame(rows).sort_values("score").reset_index(drop=True)
    result = Recommendation(
        objective=objective,
        budget=budget,
        arch=str(chosen["arch"]),
        n_active=chosen["n_active"],
        tokens=chosen["tokens"],
        experts=chosen["experts"],
        n_total=chosen["n_active"] * chosen["experts"],
        loss_draws=loss_draws,
        score=chosen["score"] if objective != "p-target" else -chosen["score"],
        runners_up=table.iloc[1:].reset_index(drop=True),
    )
    if hyper is not None:
        _attach_hyperparameters(result, hyper)
    return result


def _attach_hyperparameters(result: Recommendation, hyper: Posterior) -> None:
    """Learning rate and batch size of the chosen configuration from a hyper posterior."""
    from bayes_scaling.predict import recommend_hyperparameters

    if not isinstance(hyper.spec, HyperSpec):
        raise DecisionError("--hyper needs a hyperparameter posterior (kind 'hyper')")
    hyper_archs = sorted(hyper.runs["arch"].astype(str).unique())
    arch = result.arch if result.arch in hyper_archs else None
    if arch is None and len(hyper_archs) > 1:
        raise DecisionError(
            f"the hyperparameter posterior has no arch {result.arch!r} (it has {hyper_archs})"
        )
    point = {
        "n_active": [result.n_active],
        "tokens": [result.tokens],
        "n_total": [result.n_total],
        "arch": [arch or hyper_archs[0]],
    }
    row = recommend_hyperparameters(hyper, point, probs=(0.9,)).iloc[0]
    for name, target in (("lr", result.lr), ("batch", result.batch_tokens)):
        target.update(
            median=float(row[f"{name}_median"]),
            low_90=float(row[f"{name}_low_90"]),
            high_90=float(row[f"{name}_high_90"]),
        )


def moe_vs_dense(
    posterior: Posterior,
    budgets: Any,
    moe_arch: str,
    dense_arch: str = "dense",
    experts: float | None = None,
    probs: Sequence[float] = (0.9,),
    max_draws: int | None = None,
) -> pd.DataFrame:
    """Architecture questions as posteriors, per budget C (both archs compute-optimal):

    - ``p_moe_better``: P(L*_moe(C) < L*_dense(C));
    - ``data_gain``: tokens saved at equal loss, 1 - D_moe / D_dense, where MoE keeps the dense
      optimum's N and needs D_moe tokens to reach the dense optimum's loss (Wang et al.'s
      data efficiency);
    - ``leverage``: Efficiency Leverage (Tian et al.), C_dense / C at equal loss, C_dense the
      budget at which compute-optimal dense reaches MoE's optimal loss at C.
    """
    budgets = _check_budgets(budgets)
    spec = _loss_spec(posterior)
    dense = frontier(posterior, budgets, dense_arch, max_draws=max_draws)
    moe = frontier(posterior, budgets, moe_arch, experts=experts, max_draws=max_draws)
    out = pd.DataFrame({"flops": budgets, "moe_arch": moe_arch, "experts": moe.experts})
    out["p_moe_better"] = (moe.loss < dense.loss).mean(axis=0)
    # Data gain: solve the MoE law for D at the dense optimum's (N, loss), per draw.
    moe_params = _column(law_parameters(posterior, moe_arch, max_draws=max_draws))
    log_n = np.log(dense.n_opt)
    target = np.log(dense.loss)
    low = np.log(dense.d_opt) - 20.0
    high = np.log(dense.d_opt) + 20.0
    for _ in range(100):  # bisection on ln D: the loss falls monotonically with D
        mid = 0.5 * (low + high)
        above = _log_loss(spec.law, moe_params, log_n, mid, moe.experts, 1.0) > target
        low, high = np.where(above, mid, low), np.where(above, high, mid)
    data_gain = 1.0 - np.exp(0.5 * (low + high)) / dense.d_opt
    # Leverage: dense frontier on a fine grid, inverted per draw at MoE's loss.
    grid = np.geomspace(budgets.min() / 1e3, budgets.max() * 1e4, 400)
    dense_fine = frontier(posterior, grid, dense_arch, max_draws=max_draws).loss
    log_grid = np.log(grid)
    leverage = np.empty_like(moe.loss)
    for draw in range(moe.loss.shape[0]):
        # dense loss falls with C: interpolate ln C against -loss (increasing)
        leverage[draw] = np.exp(
            np.interp(-moe.loss[draw], -dense_fine[draw], log_grid) - np.log(budgets)
        )
    for name, values in (("data_gain", data_gain), ("leverage", leverage)):
        _add_intervals(out, name, values, probs)
    return out
