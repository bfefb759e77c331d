"""The compute-optimal frontier of a loss-law posterior, per draw.

For FLOP budgets C, the optimal active parameters N and tokens D (C = 6 N D) and the loss they
reach, one value per posterior draw, vectorized over (draw, budget): closed form for the
Chinchilla and experts laws (the expert term only rescales A), a vectorized golden-section search
otherwise. :class:`ArchLaw` holds one arch's law per draw and evaluates it; :func:`frontier`
returns a :class:`Frontier` whose ``summary`` / ``to_dict`` give medians and intervals and whose
``exponents`` give the allocation exponents (N_opt ~ C^a, D_opt ~ C^b).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.intervals import add_intervals, central_interval, label
from bayes_scaling.laws import LAWS
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import ModelSpec

__all__ = [
    "ArchLaw",
    "DecisionError",
    "Frontier",
    "arch_law",
    "frontier",
    "isoflop",
    "law_parameters",
    "published_posterior",
]

QUANTITIES = ("n_opt", "d_opt", "tokens_per_param", "loss")


class DecisionError(ValueError):
    """A decision request that cannot be served: bad budget, unreachable target, no feasible
    configuration, an ambiguous arch or eval set; the message says which."""


def published_posterior(
    law: str,
    params: dict[str, dict[str, float]],
    log_e: float | Mapping[str, float],
    experts: float = 1.0,
    sigma: float | None = None,
    nu: float | None = None,
) -> Posterior:
    """A one-draw "posterior" holding published coefficients (raw units) per arch, so the
    decision code can be checked against the literature.

    ``params`` maps arch -> law parameters; ``log_e`` is ln E_irr, or a mapping eval set ->
    ln E_irr for several eval sets; ``sigma`` and ``nu`` (both or neither) add the Student-t
    noise on ln loss that new-run predictions need.
    """
    import xarray as xr

    archs = sorted(params)
    log_es = dict(log_e) if isinstance(log_e, Mapping) else {"published": float(log_e)}
    eval_sets = sorted(log_es)
    names = LAWS[law].arch_params
    data: dict[str, Any] = {
        name: (("chain", "draw", "arch"), [[[params[a][name] for a in archs]]]) for name in names
    }
    data["log_e"] = (("chain", "draw", "eval_set"), [[[log_es[e] for e in eval_sets]]])
    if (sigma is None) != (nu is None):
        raise DecisionError("published_posterior needs both sigma and nu, or neither")
    if sigma is not None and nu is not None:
        data["sigma"] = (("chain", "draw"), [[sigma]])
        data["nu"] = (("chain", "draw"), [[nu]])
    dataset = xr.Dataset(data, coords={"arch": archs, "eval_set": eval_sets})
    runs = pd.DataFrame(
        [{"arch": a, "experts": experts, "eval_set": e} for a in archs for e in eval_sets]
    )
    return Posterior(
        ModelSpec(law=law, pooling="separate"), runs, xr.DataTree.from_dict({"posterior": dataset})
    )


def check_budgets(budgets: Any) -> np.ndarray:
    """FLOP budgets as a 1-d float array, refused unless every one is positive and finite."""
    values = np.atleast_1d(np.asarray(budgets, dtype=float))
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise DecisionError(f"FLOP budgets must be positive numbers, not {values.tolist()}")
    return values


def loss_spec(posterior: Posterior) -> ModelSpec:
    """The posterior's loss-law spec; a hyperparameter posterior is refused (and a stacked
    predictive whose members are not all loss laws with a tokens term)."""
    for member in getattr(posterior, "members", {}).values():
        loss_spec(member)
    if not isinstance(posterior.spec, ModelSpec):
        raise DecisionError("budget decisions need a loss-law posterior, not a hyperparameter one")
    if "log_d" not in LAWS[posterior.spec.law].inputs:
        with_tokens = sorted(name for name, law in LAWS.items() if "log_d" in law.inputs)
        raise DecisionError(
            f"the {posterior.spec.law} law has no tokens term, so it cannot split a budget "
            f"between parameters and tokens; fit one of {with_tokens}"
        )
    return posterior.spec


def pick_label(posterior: Posterior, dim: str, value: str | None) -> str:
    """An arch or eval set of the posterior: ``value`` checked, or the only one."""
    known = [str(v) for v in posterior.idata["posterior"][dim].to_numpy()]
    if value is None:
        if len(known) > 1:
            raise DecisionError(f"the posterior has several {dim}s; name one of {known}")
        return known[0]
    if value not in known:
        raise DecisionError(f"unknown {dim} {value!r}; the posterior knows {known}")
    return value


def arch_expert_counts(posterior: Posterior, arch: str) -> list[float]:
    """Expert counts of an arch's runs, the most common last ([1.0] without runs)."""
    runs = posterior.runs[posterior.runs["arch"].astype(str) == arch]
    if runs.empty:
        return [1.0]
    common = float(runs["experts"].mode().iloc[0])
    return [*sorted({float(e) for e in runs["experts"]} - {common}), common]


@dataclass(frozen=True)
class ArchLaw:
    """One arch's law (for one eval set), one parameter set per posterior draw.

    ``params`` are raw-unit law parameters of shape (draw,); ``sigma`` and ``nu`` the fitted
    Student-t noise on ln loss per draw (None when the posterior has none). Evaluations return
    (draw, ...) arrays: inputs broadcast against a trailing axis.
    """

    law: str
    arch: str
    eval_set: str | None
    params: dict[str, np.ndarray]
    sigma: np.ndarray | None = None
    nu: np.ndarray | None = None

    @property
    def draws(self) -> int:
        """Number of posterior draws."""
        return len(next(iter(self.params.values())))

    def _columns(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=float)[:, np.newaxis] for k, v in self.params.items()}

    def log_loss(
        self, log_n: Any, log_d: Any, experts: Any = 1.0, granularity: Any = 1.0
    ) -> np.ndarray:
        """ln of the expected loss, shape (draw, ...) for inputs broadcasting with (draw, 1)."""
        inputs = {
            "log_n": log_n,
            "log_d": log_d,
            "log_experts": np.log(np.asarray(experts, dtype=float)),
            "log_granularity": np.log(np.asarray(granularity, dtype=float)),
        }
        return np.asarray(LAWS[self.law].log_loss(inputs, self._columns()))

    def check_target(self, target: float | None) -> None:
        """Refuse a target loss at or below the irreducible loss (posterior median)."""
        if target is None or "log_e" not in self.params:
            return
        floor = np.exp(self.params["log_e"])
        if target <= float(np.median(floor)):
            low, high = np.quantile(floor, [0.05, 0.95])
            raise DecisionError(
                f"target loss {target} is below the irreducible loss of {self.arch} (median "
                f"{np.median(floor):.4f}, 90% interval [{low:.4f}, {high:.4f}]); no budget "
                "reaches it"
            )

    def new_run_noise(
        self, samples: int, random_seed: int | np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(draw index, Student-t noise on ln loss) for at least ``samples`` new runs, each
        draw repeated so that a one-draw posterior still gets a distribution. A new run's ln
        loss is ``log_loss[index] + noise``; the same noise for every configuration (common
        random numbers keep comparisons between configurations sharp)."""
        if self.sigma is None or self.nu is None:
            raise DecisionError(
                "a new run's loss needs the fitted noise (sigma, nu); this posterior has none"
            )
        rng = np.random.default_rng(random_seed)
        index = np.tile(np.arange(self.draws), -(-samples // self.draws))
        return index, self.sigma[index] * rng.standard_t(self.nu[index])

    def optimum(
        self, log_flops: Any, experts: float = 1.0, granularity: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ln N, ln D, ln L) at the compute optimum for ln C broadcasting with (draw, 1)."""
        cols = self._columns()
        log_c6 = np.asarray(log_flops, dtype=float) - np.log(6.0)
        log_n = LAWS[self.law].optimal_log_n(cols, log_c6, experts, granularity)
        log_n = np.broadcast_to(log_n, np.broadcast(log_n, log_c6).shape)
        log_d = log_c6 - log_n
        return log_n, log_d, self.log_loss(log_n, log_d, experts, granularity)


def arch_law(
    posterior: Posterior,
    arch: str | None = None,
    eval_set: str | None = None,
    max_draws: int | None = None,
) -> ArchLaw:
    """The law of one arch (and eval set) per posterior draw, the first ``max_draws`` draws.

    ``arch`` and ``eval_set`` may be left out only when the posterior has one of each. A
    stacked predictive (:class:`bayes_scaling.compare.StackedPosterior`) gives its mixture.
    """
    if hasattr(posterior, "arch_law"):
        return posterior.arch_law(arch, eval_set, max_draws)
    spec = loss_spec(posterior)
    law = LAWS[spec.law]
    arch = pick_label(posterior, "arch", arch)
    post = posterior.idata["posterior"]
    draws = slice(None, max_draws)

    def stacked(name: str, **where: str) -> np.ndarray:
        values = post[name].sel(where).stack(sample=("chain", "draw"))
        return values.to_numpy()[draws]

    params = {name: stacked(name, arch=arch) for name in law.arch_params}
    if law.has_irreducible:
        eval_set = pick_label(posterior, "eval_set", eval_set)
        params["log_e"] = stacked("log_e", eval_set=eval_set)
    noise = [stacked(name) if name in post else None for name in ("sigma", "nu")]
    return ArchLaw(spec.law, arch, eval_set, params, noise[0], noise[1])


def law_parameters(
    posterior: Posterior,
    arch: str | None = None,
    eval_set: str | None = None,
    max_draws: int | None = None,
) -> dict[str, np.ndarray]:
    """The law's raw parameters for one arch (and eval set), one value per posterior draw."""
    return arch_law(posterior, arch, eval_set, max_draws).params


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
    eval_set: str | None = None

    def values(self, name: str) -> np.ndarray:
        """Draws of one of :data:`QUANTITIES`, shape (draw, budget)."""
        if name not in QUANTITIES:
            raise DecisionError(f"unknown frontier quantity {name!r}; expected one of {QUANTITIES}")
        return self.d_opt / self.n_opt if name == "tokens_per_param" else getattr(self, name)

    def interval(self, name: str, prob: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(median, low, high) per budget of a quantity, over draws; ``prob`` central."""
        values = self.values(name)
        low, high = central_interval(values, prob)
        return np.median(values, axis=0), low, high

    def summary(self, probs: Sequence[float] = (0.9,)) -> pd.DataFrame:
        """Median and central intervals of N_opt, D_opt, tokens per parameter and loss."""
        out = pd.DataFrame({"flops": self.budgets, "arch": self.arch, "experts": self.experts})
        for name in QUANTITIES:
            add_intervals(out, name, self.values(name), probs)
        return out

    def to_dict(self, prob: float = 0.9) -> dict[str, Any]:
        """JSON-ready summary: per quantity, lists over budgets of ``median`` and
        ``interval`` ([low, high] at ``prob``)."""
        out: dict[str, Any] = {
            "arch": self.arch,
            "experts": self.experts,
            "granularity": self.granularity,
            "eval_set": self.eval_set,
            "prob": prob,
            "flops": self.budgets.tolist(),
        }
        for name in QUANTITIES:
            median, low, high = self.interval(name, prob)
            out[name] = {
                "median": median.tolist(),
                "interval": [[float(a), float(b)] for a, b in zip(low, high, strict=True)],
            }
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
                low, high = central_interval(slopes, prob)
                row[f"low_{label(prob)}"], row[f"high_{label(prob)}"] = float(low), float(high)
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

    Parameters
    ----------
    budgets
        Training FLOP budgets C.
    arch, eval_set
        Which arch and eval set; may be left out when the posterior has only one.
    experts
        Expert count; default the arch's most common one in the data (1 for dense).

    Example
    -------
    >>> optimum = frontier(posterior, [5.76e23])  # doctest: +SKIP
    >>> optimum.to_dict()["n_opt"]["median"]  # doctest: +SKIP
    """
    budgets = check_budgets(budgets)
    law = arch_law(posterior, arch, eval_set, max_draws)
    if experts is None:
        experts = arch_expert_counts(posterior, law.arch)[-1]
    log_n, log_d, log_loss = law.optimum(np.log(budgets)[np.newaxis, :], experts, granularity)
    return Frontier(
        budgets,
        np.exp(log_n),
        np.exp(log_d),
        np.exp(log_loss),
        law.arch,
        experts,
        granularity,
        law.eval_set,
    )


def isoflop(
    posterior: Posterior,
    budget: float,
    n_active: Any,
    arch: str | None = None,
    experts: float | None = None,
    eval_set: str | None = None,
) -> np.ndarray:
    """Expected loss per draw at ``budget`` FLOPs for each model size (tokens = C / 6N):
    shape (draw, size). ``experts`` defaults to the arch's most common count."""
    budget = float(check_budgets(budget)[0])
    law = arch_law(posterior, arch, eval_set)
    if experts is None:
        experts = arch_expert_counts(posterior, law.arch)[-1]
    log_n = np.log(np.asarray(n_active, dtype=float))
    return np.exp(law.log_loss(log_n, np.log(budget / 6.0) - log_n, experts))
