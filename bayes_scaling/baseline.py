"""The point-estimate baseline users run today: Huber loss on log loss, L-BFGS-B from good starts.

Hoffmann et al. 2022 (approach 3) and Besiroglu et al. 2024 (Epoch AI's replication): minimise
sum Huber_delta(LSE(a - alpha ln N - gamma ln E, b - beta ln D, e) - ln L), delta = 1e-3, with
L-BFGS-B, keep the best optimum. Epoch's grid has 4,500 starting points; what people run ranks
them by the objective (one vectorised pass), starts L-BFGS-B from the best 32, and bootstraps
intervals by resampling runs, each refit warm-started from the full-data optimum plus the
resample's own 4 best-ranked starts, spread over worker processes with one BLAS thread each.
The gradient is scipy's finite differences, as in the published replications.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from bayes_scaling.laws import experts_log_loss, log_inputs

__all__ = [
    "HuberFit",
    "RecipeFit",
    "bootstrap_huber",
    "fit_huber",
    "grid_starts",
    "rank_starts",
    "steplaw_recipe",
]

# Epoch AI's grid of initialisations (Besiroglu et al. 2024; Hoffmann et al.'s, REFERENCE.md
# section 6): 6 x 5 x 6 x 5 x 5 = 4,500 starting points, times gamma's two values for experts.
GRID = {
    "log_a": np.arange(0.0, 30.0, 5.0),
    "alpha": np.arange(0.0, 2.5, 0.5),
    "gamma": np.array([0.0, 0.1]),
    "log_b": np.arange(0.0, 30.0, 5.0),
    "beta": np.arange(0.0, 2.5, 0.5),
    "log_e": np.arange(-1.0, 1.5, 0.5),
}
NAMES = tuple(GRID)
TOP_STARTS = 32  # L-BFGS-B runs of the full-data fit
BOOTSTRAP_STARTS = 4  # best-ranked grid starts of each resample, beside the full-data optimum


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


def _huber(residual: np.ndarray, delta: float) -> np.ndarray:
    residual = np.abs(residual)
    return np.where(residual <= delta, 0.5 * residual**2, delta * (residual - 0.5 * delta))


def _objective(
    theta: np.ndarray, inputs: dict[str, np.ndarray], log_loss: np.ndarray, delta: float
) -> float:
    """Summed Huber loss of the log-loss residuals."""
    predicted = experts_log_loss(inputs["log_n"], inputs["log_d"], inputs["log_experts"], *theta)
    return float(_huber(predicted - log_loss, delta).sum())


def grid_starts(experts: bool = True) -> np.ndarray:
    """Epoch AI's 4,500 starting points (9,000 with gamma's two values), one per row."""
    grid = dict(GRID) if experts else {**GRID, "gamma": np.array([0.0])}
    return np.array(list(itertools.product(*grid.values())))


def rank_starts(
    runs: pd.DataFrame, starts: np.ndarray, delta: float = 1e-3, top: int = TOP_STARTS
) -> np.ndarray:
    """The ``top`` starting points of lowest objective on ``runs`` (vectorised), best first."""
    inputs = log_inputs(runs.assign(granularity=1.0))
    log_loss = np.log(runs["loss"].to_numpy(float))
    columns = [starts[:, [i]] for i in range(len(NAMES))]
    predicted = experts_log_loss(inputs["log_n"], inputs["log_d"], inputs["log_experts"], *columns)
    objective = _huber(predicted - log_loss, delta).sum(axis=1)
    return starts[np.argsort(objective, kind="stable")[:top]]


def fit_huber(
    runs: pd.DataFrame,
    delta: float = 1e-3,
    experts: bool = True,
    starts: list[np.ndarray] | np.ndarray | None = None,
    top: int = TOP_STARTS,
) -> HuberFit:
    """Fit the experts law (Chinchilla when ``experts`` is False) by Huber + L-BFGS-B.

    ``starts`` default: the ``top`` best of Epoch AI's grid on these runs.
    """
    inputs = log_inputs(runs.assign(granularity=1.0))
    log_loss = np.log(runs["loss"].to_numpy(float))
    if starts is None:
        starts = rank_starts(runs, grid_starts(experts), delta, top)
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


def _refit(task: tuple[pd.DataFrame, np.ndarray, bool, float]) -> HuberFit:
    """One bootstrap refit: the full-data optimum and the resample's best-ranked grid starts."""
    sample, optimum, experts, delta = task
    ranked = rank_starts(sample, grid_starts(experts), delta, BOOTSTRAP_STARTS)
    return fit_huber(sample, delta, experts, starts=np.vstack([optimum, ranked]))


def _one_blas_thread() -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def bootstrap_huber(
    runs: pd.DataFrame,
    resamples: int = 200,
    random_seed: int = 0,
    experts: bool = True,
    workers: int | None = None,
    delta: float = 1e-3,
) -> tuple[HuberFit, list[HuberFit]]:
    """The full-data fit and ``resamples`` bootstrap refits (runs resampled with replacement).

    Refits run in ``workers`` processes (default: every core) with one BLAS thread each; the
    resamples depend on ``random_seed`` alone, so any number of workers gives the same fits.
    """
    full = fit_huber(runs, delta, experts)
    optimum = np.array([full.params[name] for name in NAMES])
    rng = np.random.default_rng(random_seed)
    tasks = [
        (runs.iloc[rng.integers(0, len(runs), len(runs))], optimum, experts, delta)
        for _ in range(resamples)
    ]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or resamples < 2:
        return full, [_refit(task) for task in tasks]
    # forkserver, not fork: a process that has sampled holds threads, and fork can deadlock them.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bayes_scaling.baseline"])
    with ProcessPoolExecutor(workers, context, initializer=_one_blas_thread) as pool:
        fits = list(pool.map(_refit, tasks, chunksize=max(1, resamples // (4 * workers))))
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
