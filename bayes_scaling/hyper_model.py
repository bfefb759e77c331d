"""Optimal learning rate and batch size: a latent-optimum model fitted on whole grids.

A *cell* is the set of runs that share (arch, n_active, n_total, tokens) and differ only in
learning rate and batch size. Within a cell the log loss is a bowl in u = ln lr and
v = ln batch_tokens (tokens per optimizer step)::

    ln L = m_c + (h_lr du^2 + 2 rho sqrt(h_lr h_b) du dv + h_b dv^2) / 2,
    du = u - u*_c,   dv = v - v*_c,

with the cell's minimum log loss ``m_c``, its curvature (population values per arch with
cell-level deviations) and its centre (u*_c, v*_c), the optimal learning rate and batch size.
The centre follows a power law, linear in the spec's terms::

    u*_c ~ Normal(lr_0 + sum_t lr_<t> x_t,c, tau_lr)        (and the same for v*_c)

where x_t are centred logs (``log_n`` = ln(N / 1e9), ``log_d`` = ln(D / 1e10), ``log_c`` =
ln(C / 6e19), ``log_l`` = m_c - ln 2.5, ``log_sparsity`` = ln(n_active / n_total),
``log_total`` = ln(n_total / 1e9)) and ``tau`` lets cells deviate from the law. The power-law
coefficients are per arch, drawn around population values like the loss model's
(:func:`bayes_scaling.loss_model.create_loss_model`). The cells' minimum losses follow
``m_c ~ Normal(loss_0 + loss_n log_n + loss_d log_d, tau_loss)`` per arch, which gives the
``log_l`` form a loss at cells that were never run.

Every run informs the posterior through a Student-t likelihood, except runs that diverged:
those whose loss exceeds their cell's best by more than ``spec.diverged_above`` (a fraction)
are flagged in the ``diverged`` column of the stored run table and listed by the fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayes_scaling.loss_model import _arch_parameter
from bayes_scaling.priors import LOG_D_REF, LOG_N_REF, Prior
from bayes_scaling.runs import RunProblem, RunTableError
from bayes_scaling.spec import HyperSpec

__all__ = [
    "CELL_COLUMNS",
    "LOG_C_REF",
    "LOG_L_REF",
    "assign_cells",
    "create_hyper_model",
    "flag_diverged",
    "hyper_priors",
    "term_values",
]

CELL_COLUMNS = ("arch", "n_active", "n_total", "tokens")
LOG_C_REF = math.log(6e19)  # 6 N D at the reference N and D
LOG_L_REF = math.log(2.5)

# Weakly informative priors. lr_0 is ln lr at the reference scale (Step Law's law gives
# ln 8e-4 = -7.1 there); batch_0 ln tokens per step (their law: ln 3e5 = 12.6). Slopes are
# exponents; the loss form needs wide ones (ln L spans only ~0.3 across a sweep, so the
# exponent of L is large: Wang et al. report alpha of several units).
_BASE = {
    "lr_0": Prior(-7.0, 1.5, 0.3),
    "batch_0": Prior(13.0, 2.0, 0.5),
    "loss_0": Prior(LOG_L_REF, 0.5, 0.1),
    "loss_n": Prior(-0.05, 0.1, 0.05),
    "loss_d": Prior(-0.05, 0.1, 0.05),
    # Curvature of ln L in (ln lr)^2 and (ln batch)^2: a 10x miss costs 1-3% of loss.
    "log_h_lr": Prior(-5.0, 2.0, 0.5),
    "log_h_batch": Prior(-5.0, 2.0, 0.5),
    "h_corr": Prior(0.0, 0.5, 0.3),  # atanh of the bowl's correlation
    # ln of the ratio of curvatures above and below the optimum (0: a symmetric bowl).
    "skew_lr": Prior(0.0, 1.0, 0.3),
    "skew_batch": Prior(0.0, 1.0, 0.3),
    "tau_lr": Prior(0.0, 0.3),
    "tau_batch": Prior(0.0, 0.3),
    "tau_loss": Prior(0.0, 0.05),
    "tau_h": Prior(0.0, 0.5),
    "sigma": Prior(0.0, 0.01),
    "nu": Prior(2.0, 0.1),
}
_SLOPE = {"log_l": Prior(0.0, 10.0, 2.0)}
_DEFAULT_SLOPE = Prior(0.0, 1.0, 0.2)
# Scalars (not per arch): deviations of cells from the law, and the noise.
SCALARS = ("tau_lr", "tau_batch", "tau_loss", "tau_h", "sigma", "nu")


def hyper_priors(lr_terms: Sequence[str], batch_terms: Sequence[str]) -> dict[str, Prior]:
    """Default priors for a spec with these terms: ``lr_<term>`` / ``batch_<term>`` slopes."""
    priors = dict(_BASE)
    for prefix, terms in (("lr", lr_terms), ("batch", batch_terms)):
        for term in terms:
            priors[f"{prefix}_{term}"] = _SLOPE.get(term, _DEFAULT_SLOPE)
    return priors


def flag_diverged(runs: pd.DataFrame, above: float) -> pd.Series:
    """True for runs whose loss exceeds their cell's best by more than ``above`` (a fraction)."""
    best = runs.groupby(list(CELL_COLUMNS))["loss"].transform("min")
    return runs["loss"] > (1.0 + above) * best


def assign_cells(runs: pd.DataFrame, origin: str = "run table") -> tuple[np.ndarray, pd.DataFrame]:
    """Cell index of every run and one row per cell; refuses what the bowl cannot use.

    Every run needs a positive ``lr`` and ``batch_tokens``, and every cell at least two runs;
    the error names each offending row (counted from 1) or cell.
    """
    problems = []
    for column in ("lr", "batch_tokens"):
        if column not in runs:
            problems.append(RunProblem("the hyperparameter model needs this column", None, column))
            continue
        values = pd.to_numeric(runs[column], errors="coerce")
        for row in np.flatnonzero(~(values > 0).to_numpy()):
            problems.append(
                RunProblem(f"must be a positive number, not {values[row]}", int(row) + 1, column)
            )
    if problems:
        raise RunTableError(problems, origin)
    groups = runs.groupby(list(CELL_COLUMNS), sort=True)
    codes = groups.ngroup().to_numpy()
    table = groups.size().reset_index(name="runs")
    sizes = table["runs"].to_numpy()
    lonely = [
        RunProblem(
            "cell (arch={}, n_active={:.4g}, n_total={:.4g}, tokens={:.4g}) has a single run; "
            "a bowl needs at least two".format(*table.iloc[index]),
            int(np.flatnonzero(codes == index)[0]) + 1,
        )
        for index in np.flatnonzero(sizes < 2)
    ]
    if lonely:
        raise RunTableError(lonely, origin)
    table["best_loss"] = runs.groupby(codes)["loss"].min().to_numpy()
    return codes, table


def term_values(cells: pd.DataFrame, log_loss: Any = None) -> dict[str, Any]:
    """Centred log covariates per cell; ``log_l`` needs the cells' (latent) ln loss."""
    n = np.log(cells["n_active"].to_numpy(float))
    total = np.log(cells["n_total"].to_numpy(float))
    d = np.log(cells["tokens"].to_numpy(float))
    values: dict[str, Any] = {
        "log_n": n - LOG_N_REF,
        "log_d": d - LOG_D_REF,
        "log_c": np.log(6.0) + n + d - LOG_C_REF,
        "log_sparsity": n - total,
        "log_total": total - LOG_N_REF,
    }
    if log_loss is not None:
        values["log_l"] = log_loss - LOG_L_REF
    return values


def centre_law(
    coefficient: Callable[[str], Any], terms: Sequence[str], covariates: dict[str, Any], prefix: str
) -> Any:
    """ln of the optimum the power law gives: ``<prefix>_0 + sum_t <prefix>_<t> x_t``.

    ``coefficient(name)`` returns a parameter aligned with the covariates (PyTensor in the
    model, numpy draws in prediction); only + and * are used, so both backends work.
    """
    law = coefficient(f"{prefix}_0")
    for term in terms:
        law = law + coefficient(f"{prefix}_{term}") * covariates[term]
    return law


def min_loss_law(coefficient: Callable[[str], Any], covariates: dict[str, Any]) -> Any:
    """ln of a cell's minimum loss the regression gives: ``loss_0 + loss_n x_n + loss_d x_d``."""
    return (
        coefficient("loss_0")
        + coefficient("loss_n") * covariates["log_n"]
        + coefficient("loss_d") * covariates["log_d"]
    )


def create_hyper_model(runs: pd.DataFrame, spec: HyperSpec | None = None) -> pm.Model:
    """Build the latent-optimum model for the runs not flagged as diverged.

    Parameters
    ----------
    runs
        A validated run table with ``lr`` and ``batch_tokens``; diverged runs must already be
        removed (see :func:`flag_diverged`). One arch is always fitted pooled.
    spec
        Form, terms, pooling and prior overrides.

    Returns
    -------
    pymc.Model
        Dims ``run``, ``cell``, ``arch``; observed ``log_loss``. Per-arch coefficients are named
        ``lr_<term>`` / ``batch_<term>``; per-cell centres ``log_lr_opt`` / ``log_batch_opt``.
    """
    spec = spec or HyperSpec()
    codes, cells = assign_cells(runs)
    priors = spec.resolved_priors()
    archs = sorted(cells["arch"].astype(str).unique())
    pooling = "pooled" if len(archs) == 1 else spec.pooling
    coords = {
        "run": runs["run_id"].astype(str).tolist(),
        "cell": [f"{a}|{n:.4g}|{t:.4g}|{d:.4g}" for a, n, t, d in cells[list(CELL_COLUMNS)].values],
        "arch": archs,
    }
    covariates = term_values(cells)
    with pm.Model(coords=coords) as model:
        cell_idx = pm.Data("cell_idx", codes, dims="run")
        cell_arch = pd.Categorical(cells["arch"], archs).codes
        log_lr = pm.Data("log_lr", np.log(runs["lr"].to_numpy(float)), dims="run")
        log_batch = pm.Data("log_batch", np.log(runs["batch_tokens"].to_numpy(float)), dims="run")
        arch = {
            key: _arch_parameter(key, prior, pooling)
            for key, prior in priors.items()
            if key not in SCALARS
        }
        tau = {
            key: pm.HalfNormal(key, priors[key].sigma)
            for key in ("tau_lr", "tau_batch", "tau_loss", "tau_h")
        }

        def per_cell(name: str) -> Any:
            return arch[name][cell_arch]

        # Cell-level values are centred: a cell of ~100 runs pins its own minimum, centre and
        # curvature down, which is the regime where the centred form samples well.
        cell_log_loss = pm.Normal(
            "cell_log_loss", min_loss_law(per_cell, covariates), tau["tau_loss"], dims="cell"
        )
        covariates["log_l"] = cell_log_loss - LOG_L_REF
        centres = {}
        for prefix, terms in (("lr", spec.lr_terms), ("batch", spec.batch_terms)):
            law = centre_law(per_cell, terms, covariates, prefix)
            centres[prefix] = pm.Normal(f"log_{prefix}_opt", law, tau[f"tau_{prefix}"], dims="cell")
        curvature = {}
        for name in ("lr", "batch"):
            log_h = pm.Normal(
                f"log_h_{name}_cell", per_cell(f"log_h_{name}"), tau["tau_h"], dims="cell"
            )
            curvature[name] = pt.exp(log_h)
        rho = pm.Deterministic("rho", pt.tanh(arch["h_corr"]), dims="arch")
        du = log_lr - centres["lr"][cell_idx]
        dv = log_batch - centres["batch"][cell_idx]
        # Each side of the optimum has its own curvature: h exp(+-skew / 2), switched smoothly
        # (tanh over a 5% step in ln x) so the bowl keeps a continuous gradient.
        h_lr = curvature["lr"][cell_idx] * pt.exp(
            0.5 * arch["skew_lr"][cell_arch][cell_idx] * pt.tanh(du / 0.05)
        )
        h_b = curvature["batch"][cell_idx] * pt.exp(
            0.5 * arch["skew_batch"][cell_arch][cell_idx] * pt.tanh(dv / 0.05)
        )
        bowl = 0.5 * (
            h_lr * du**2
            + 2.0 * rho[cell_arch][cell_idx] * pt.sqrt(h_lr * h_b) * du * dv
            + h_b * dv**2
        )
        sigma = pm.HalfNormal("sigma", priors["sigma"].sigma)
        nu = pm.Gamma("nu", priors["nu"].mu, priors["nu"].sigma)
        observed = pm.Data("observed_log_loss", np.log(runs["loss"].to_numpy(float)), dims="run")
        pm.StudentT(
            "log_loss",
            nu=nu,
            mu=cell_log_loss[cell_idx] + bowl,
            sigma=sigma,
            observed=observed,
            dims="run",
        )
    return model
