"""The point-estimate baseline users run today: Huber loss on log loss, L-BFGS from a grid.

Hoffmann et al. 2022 (approach 3) and Besiroglu et al. 2024: minimise
sum Huber_delta(LSE(a - alpha ln N - gamma ln E, b - beta ln D, e) - ln L), delta = 1e-3,
with L-BFGS-B from a grid of starting points, keep the best; intervals by bootstrap resampling
of runs, each refit starting from the full-data optimum.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from bayes_scaling.laws import experts_log_loss, log_inputs

__all__ = ["HuberFit", "RecipeFit", "bootstrap_huber", "fit_huber", "steplaw_recipe"]

# Hoffmann et al.'s grid of initialisations (REFERENCE.md section 6), plus gamma for experts.
GRID = {
    "log_a": np.arange(0.0, 30.0, 5.0),
    "alpha": np.arange(0.0, 2.0, 0.5),
    "gamma": np.array([0.0, 0.1]),
    "log_b": np.arange(0.0, 30.0, 5.0),
    "beta": np.arange(0.0, 2.0, 0.5),
    "log_e": np.arange(-1.0, 1.5, 0.5),
}
NAMES = tuple(GRID)


@dataclass(frozen=True)
class HuberFit:
    """Best parameters (raw units, ln coefficients) and the objective value."""

    params: dict[str, float]
    objective: float

    def log_loss(self, runs: pd.DataFrame) -> np.ndarray:
        """ln of the fitted loss at the runs' (n_active, tokens, experts)."""
        inputs = log_inputs(runs.assign(granularity=1.0))
        return np.asarray(
            experts_log_loss(inputs["log_n"], inputs["log_d"], inputs["log_experts"], **self.params)
        )


def _objective(
    theta: np.ndarray, inputs: dict[str, np.ndarray], log_loss: np.ndarray, delta: float
) -> float:
    """Summed Huber loss of the log-loss residuals."""
    predicted = experts_log_loss(inputs["log_n"], inputs["log_d"], inputs["log_experts"], *theta)
    residual = np.abs(predicted - log_loss)
    huber = np.where(residual <= delta, 0.5 * residual**2, delta * (residual - 0.5 * delta))
    return float(huber.sum())


def fit_huber(
    runs: pd.DataFrame,
    delta: float = 1e-3,
    experts: bool = True,
    starts: list[np.ndarray] | None = None,
) -> HuberFit:
    """Fit the experts law (Chinchilla when ``experts`` is False) by Huber + L-BFGS-B."""
    inputs = log_inputs(runs.assign(granularity=1.0))
    log_loss = np.log(runs["loss"].to_numpy(float))
    grid = dict(GRID) if experts else {**GRID, "gamma": np.array([0.0])}
    if starts is None:
        starts = [np.array(p) for p in itertools.product(*grid.values())]
    bounds: list[tuple[float | None, float | None]] = [(None, None)] * len(NAMES)
    if not experts:
        bounds[NAMES.index("gamma")] = (0.0, 0.0)
    best = None
    for start in starts:
        result = minimize(
            _objective, start, args=(inputs, log_loss, delta), method="L-BFGS-B", bounds=bounds
        )
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None  # starts is never empty
    return HuberFit(dict(zip(NAMES, map(float, best.x), strict=True)), float(best.fun))


def bootstrap_huber(
    runs: pd.DataFrame, resamples: int = 200, random_seed: int = 0, experts: bool = True
) -> tuple[HuberFit, list[HuberFit]]:
    """The full-data fit and ``resamples`` bootstrap refits started from its optimum."""
    full = fit_huber(runs, experts=experts)
    rng = np.random.default_rng(random_seed)
    start = [np.array([full.params[name] for name in NAMES])]
    fits = []
    for _ in range(resamples):
        sample = runs.iloc[rng.integers(0, len(runs), len(runs))]
        fits.append(fit_huber(sample, experts=experts, starts=start))
    return full, fits


@dataclass(frozen=True)
class RecipeFit:
    """Least-squares power laws of the optimum: ln y = coef[0] + sum coef[i] ln x_i."""

    lr_coef: dict[str, float]
    batch_coef: dict[str, float]
    kept_runs: int

    def predict(self, n_active: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Optimal (lr, batch tokens) at the given active parameters and tokens."""
        logs = {"log_n": np.log(n_active), "log_d": np.log(tokens)}
        lr = self.lr_coef["const"] + sum(v * logs[k] for k, v in self.lr_coef.items() if k in logs)
        batch = self.batch_coef["const"] + sum(
            v * logs[k] for k, v in self.batch_coef.items() if k in logs
        )
        return np.exp(lr), np.exp(batch)


def steplaw_recipe(runs: pd.DataFrame, within: float = 0.0025) -> RecipeFit:
    """The Step Law recipe users run today: in each (arch, N, D) cell keep the runs within
    ``within`` (0.25%) of the cell's best loss, then least squares of ln lr on ln N and ln D and
    of ln batch on ln D over the kept runs (Li et al. 2025; REFERENCE.md)."""
    best = runs.groupby(["arch", "n_active", "n_total", "tokens"])["loss"].transform("min")
    kept = runs[runs["loss"] <= (1.0 + within) * best]
    log_n, log_d = np.log(kept["n_active"].to_numpy()), np.log(kept["tokens"].to_numpy())
    ones = np.ones(len(kept))
    lr, *_ = np.linalg.lstsq(np.column_stack([ones, log_n, log_d]), np.log(kept["lr"]), rcond=None)
    batch, *_ = np.linalg.lstsq(
        np.column_stack([ones, log_d]), np.log(kept["batch_tokens"]), rcond=None
    )
    return RecipeFit(
        {"const": float(lr[0]), "log_n": float(lr[1]), "log_d": float(lr[2])},
        {"const": float(batch[0]), "log_d": float(batch[1])},
        len(kept),
    )
