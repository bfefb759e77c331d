"""Optimal learning rate and batch size: a latent-optimum model fitted on whole grids.

A *cell* is the set of runs that share (arch, n_active, n_total, tokens) and differ only in
learning rate and batch size. Within a cell the log loss is a bowl in u = ln lr and
v = ln batch_tokens (tokens per optimizer step), written once in :func:`bowl`::

    ln L = m_c + (h_u du^2 + 2 rho sqrt(h_u h_v) du dv + h_v dv^2) / 2,
    du = u - u*_c,   dv = v - v*_c,   h_u = h_lr exp(skew_lr tanh(du / 0.05) / 2)

(and h_v the same with h_batch, skew_batch, dv), with the cell's minimum log loss ``m_c``, its
curvature (population values per arch with cell-level deviations; each side of the optimum has
its own, ``skew`` being the ln of their ratio) and its centre (u*_c, v*_c), the optimal
learning rate and batch size. The likelihood, the recommendations' loss penalty
(:mod:`bayes_scaling.hyper_predict`) and the drawn contours all use :func:`bowl`. The centre
follows a power law, linear in the spec's terms::

    u*_c ~ Normal(lr_0 + sum_t lr_<t> x_t,c, tau_lr)        (and the same for v*_c)

where x_t are centred logs (``log_n`` = ln(N / 1e9), ``log_d`` = ln(D / 1e10), ``log_c`` =
ln(C / 6e19), ``log_l`` = m_c - ln 2.5, ``log_sparsity`` = ln(n_active / n_total),
``log_total`` = ln(n_total / 1e9)) and ``tau`` lets cells deviate from the law. The power-law
coefficients are per arch, drawn around population values like the loss model's
(:func:`bayes_scaling.loss_model.create_loss_model`). The cells' minimum losses follow
``m_c ~ Normal(loss_0 + loss_n log_n + loss_d log_d, tau_loss)`` per arch, which gives the
``log_l`` form a loss at cells that were never run.

Every run informs the posterior through a Student-t likelihood, except runs *off the bowl*
(:func:`flag_off_bowl`): runs that blew up, on the high-learning-rate side of their cell's best
and more than ``above`` (a fraction) above its loss, or with a non-finite loss. They are marked
in the ``off_bowl`` column of the stored run table and listed by the fit. Slow runs at a low
learning rate are not off the bowl: they are the bowl's low side and stay in the likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayes_scaling.laws import backend
from bayes_scaling.priors import (
    HYPER_SCALARS,
    LOG_D_REF,
    LOG_L_REF,
    LOG_N_REF,
    arch_parameter,
    hyper_priors,
    scale_parameter,
)
from bayes_scaling.runs import RunProblem, RunTableError
from bayes_scaling.spec import HyperSpec

__all__ = [
    "CELL_COLUMNS",
    "LOG_C_REF",
    "LOG_L_REF",
    "assign_cells",
    "bowl",
    "create_hyper_model",
    "flag_off_bowl",
    "hyper_priors",
    "term_values",
]

CELL_COLUMNS = ("arch", "n_active", "n_total", "tokens")
LOG_C_REF = math.log(6e19)  # 6 N D at the reference N and D
# Width (in ln lr / ln batch) of the tanh that switches between the two sides' curvatures: a
# smooth switch keeps the likelihood's gradient continuous at the optimum.
SKEW_WIDTH = 0.05


def bowl(du: Any, dv: Any, h_lr: Any, h_batch: Any, rho: Any, skew_lr: Any, skew_batch: Any) -> Any:
    """ln L above the cell's minimum at offsets ``du`` = ln lr - ln lr*, ``dv`` = ln batch -
    ln batch* from the optimum, for numpy arrays and PyTensor tensors alike (broadcasting).

    ``h_lr`` / ``h_batch`` are the geometric means of the curvatures on the two sides of the
    optimum, ``skew_*`` the ln of their ratio (above / below), ``rho`` their correlation::

        h_u = h_lr exp(skew_lr tanh(du / 0.05) / 2)
        h_v = h_batch exp(skew_batch tanh(dv / 0.05) / 2)
        bowl = (h_u du^2 + 2 rho sqrt(h_u h_v) du dv + h_v dv^2) / 2
    """
    xp = backend(du, dv, h_lr, h_batch, rho, skew_lr, skew_batch)
    h_u = h_lr * xp.exp(0.5 * skew_lr * xp.tanh(du / SKEW_WIDTH))
    h_v = h_batch * xp.exp(0.5 * skew_batch * xp.tanh(dv / SKEW_WIDTH))
    return 0.5 * (h_u * du**2 + 2.0 * rho * xp.sqrt(h_u * h_v) * du * dv + h_v * dv**2)


def flag_off_bowl(runs: pd.DataFrame, above: float) -> pd.Series:
    """True for runs that blew up: a non-finite loss, or a loss more than ``above`` (a fraction)
    over the cell's best at a learning rate above the best one.

    "The best one" is the lr of the lowest-loss run at the same batch size in the cell (of the
    whole cell when no other run shares that batch size): divergence is a cliff on the high-lr
    side, while runs at a lower lr are slow, not broken, and stay on the bowl.
    """
    loss = pd.to_numeric(runs["loss"], errors="coerce").to_numpy(float)
    finite = np.isfinite(loss)
    # Sorted by loss (a blown-up inf / NaN last, never a cell's best), so "first" is the best.
    frame = runs.reset_index(drop=True).assign(_loss=np.where(finite, loss, np.nan))
    ordered = frame.sort_values("_loss", kind="stable", na_position="last")
    cell, row = list(CELL_COLUMNS), [*CELL_COLUMNS, "batch_tokens"]

    def per_group(keys: list[str], column: str, how: str) -> np.ndarray:
        return ordered.groupby(keys)[column].transform(how).reindex(frame.index).to_numpy(float)

    reference = np.where(
        per_group(row, "_loss", "count") > 1,
        per_group(row, "lr", "first"),
        per_group(cell, "lr", "first"),
    )
    best_loss = per_group(cell, "_loss", "min")
    blown_up = (frame["lr"].to_numpy(float) > reference) & (loss > (1.0 + above) * best_loss)
    return pd.Series(~finite | blown_up, index=runs.index)


def _row(runs: pd.DataFrame, position: int) -> int:
    """The file row (from 1) of a run: its index label when the table is a validated one with
    some runs left out (diverged), else its position."""
    label = runs.index[position]
    return int(label) + 1 if isinstance(label, int | np.integer) else position + 1


def assign_cells(runs: pd.DataFrame, origin: str = "run table") -> tuple[np.ndarray, pd.DataFrame]:
    """Cell index of every run and one row per cell; refuses what the bowl cannot use.

    Every run needs a positive ``lr`` and ``batch_tokens``, and every cell at least two runs;
    the error names each offending row (counted from 1) or cell.
    """
    problems = []
    for column in ("lr", "batch_tokens"):
        values = pd.to_numeric(runs[column], errors="coerce") if column in runs else None
        if values is None or values.isna().all():  # absent (validation fills it with NaN)
            problems.append(
                RunProblem("the hyperparameter model needs this column on every run", None, column)
            )
            continue
        for row in np.flatnonzero(~(values > 0).to_numpy()):
            problems.append(
                RunProblem(
                    f"must be a positive number, not {values.iloc[row]}",
                    _row(runs, int(row)),
                    column,
                )
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
            _row(runs, int(np.flatnonzero(codes == index)[0])),
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


def cell_value(name: str, law: Any, scale: Any, noncentred: Sequence[str]) -> Any:
    """A cell-level value ``Normal(law, scale)`` with dims ``cell``: sampled directly, or as
    ``law + scale * z`` (the same model in other coordinates) when ``name`` is in
    ``noncentred``."""
    if name in noncentred:
        z = pm.Normal(f"{name}_z", 0.0, 1.0, dims="cell")
        return pm.Deterministic(name, law + scale * z, dims="cell")
    return pm.Normal(name, law, scale, dims="cell")


def create_hyper_model(runs: pd.DataFrame, spec: HyperSpec | None = None) -> pm.Model:
    """Build the latent-optimum model for the runs on the bowl.

    Parameters
    ----------
    runs
        A validated run table with ``lr`` and ``batch_tokens``; runs off the bowl must already
        be removed (see :func:`flag_off_bowl`). One arch is always fitted pooled.
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
            key: arch_parameter(key, prior, pooling)
            for key, prior in priors.items()
            if key not in HYPER_SCALARS
        }
        tau = {
            key: scale_parameter(key, priors[key])
            for key in ("tau_lr", "tau_batch", "tau_loss", "tau_h")
        }

        def per_cell(name: str) -> Any:
            return arch[name][cell_arch]

        # Cell-level values are centred: a cell of ~100 runs pins its own minimum, centre and
        # curvature down, which is the regime where the centred form samples well. A spec's
        # ``noncentred`` values are not: cells of ~40 runs whose optimum sits at the grid's edge
        # (Step Law's MoE grid), or ~20-run cells whose values are pinned only to about tau
        # (the trainer's grid), leave a funnel between tau and the centred values.
        cell_log_loss = cell_value(
            "cell_log_loss", min_loss_law(per_cell, covariates), tau["tau_loss"], spec.noncentred
        )
        covariates["log_l"] = cell_log_loss - LOG_L_REF
        centres = {}
        for prefix, terms in (("lr", spec.lr_terms), ("batch", spec.batch_terms)):
            law = centre_law(per_cell, terms, covariates, prefix)
            name, scale = f"log_{prefix}_opt", tau[f"tau_{prefix}"]
            centres[prefix] = cell_value(name, law, scale, spec.noncentred)
        curvature = {}
        for name in ("lr", "batch"):
            log_h = cell_value(
                f"log_h_{name}_cell", per_cell(f"log_h_{name}"), tau["tau_h"], spec.noncentred
            )
            curvature[name] = pt.exp(log_h)
        rho = pm.Deterministic("rho", pt.tanh(arch["h_corr"]), dims="arch")
        run_arch = pt.as_tensor(cell_arch)[cell_idx]
        surface = bowl(
            log_lr - centres["lr"][cell_idx],
            log_batch - centres["batch"][cell_idx],
            curvature["lr"][cell_idx],
            curvature["batch"][cell_idx],
            rho[run_arch],
            arch["skew_lr"][run_arch],
            arch["skew_batch"][run_arch],
        )
        sigma = scale_parameter("sigma", priors["sigma"])
        nu = scale_parameter("nu", priors["nu"])
        observed = pm.Data("observed_log_loss", np.log(runs["loss"].to_numpy(float)), dims="run")
        pm.StudentT(
            "log_loss",
            nu=nu,
            mu=cell_log_loss[cell_idx] + surface,
            sigma=sigma,
            observed=observed,
            dims="run",
        )
    return model
