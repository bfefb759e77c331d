"""The hierarchical loss-law model: dense and MoE parameters drawn around shared values.

``create_loss_model(runs, spec)`` compiles a :class:`~bayes_scaling.spec.ModelSpec` and a run
table into a ``pm.Model``. The log loss of each run follows the spec's law; each law parameter
has an ``arch`` dim whose values are

- ``pooled``: one shared value (``<p>_mu``), the same for every arch;
- ``hierarchical``: ``<p>_mu + <p>_spread * <p>_z`` (non-centred, learned spread);
- ``separate``: independent draws from the prior, nothing shared.

Exponents with a LogNormal prior (alpha, beta) are built on the log scale, so they are positive
by construction (the builder is :func:`bayes_scaling.priors.arch_parameter`); a law that uses
them negated says so in its ``signs``.

The irreducible loss ``log_e`` is shared per ``eval_set``; the likelihood is Student-t on the
log loss, so a few bad runs do not dominate. Every input is ``pm.Data``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayes_scaling.laws import LAWS, Law, log_inputs
from bayes_scaling.priors import arch_parameter
from bayes_scaling.spec import ModelSpec

__all__ = ["MissingColumnError", "create_loss_model"]


class MissingColumnError(ValueError):
    """The run table lacks a column, or values, that the chosen law needs."""


def _check_columns(runs: pd.DataFrame, law: Law) -> None:
    """Refuse a table that lacks a column the law needs (or has a MoE column with gaps)."""
    missing = [column for column in (*law.columns, "loss", "arch") if column not in runs.columns]
    if missing:
        raise MissingColumnError(
            f"the {law.name} law needs column(s) {missing}; the run table has {list(runs.columns)}"
        )
    for column in law.columns:
        values = pd.to_numeric(runs[column], errors="coerce")
        if values.isna().any() or (values <= 0).any():
            position = int(np.flatnonzero((values.isna() | (values <= 0)).to_numpy())[0])
            row = int(runs.index[position]) + 1  # the file's row: kept through split_diverged
            raise MissingColumnError(
                f"row {row}, column {column!r}: the {law.name} law needs a "
                "positive value on every run"
            )


def model_coords(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Coordinates of the model: runs, architectures and eval sets (sorted labels)."""
    return {
        "run": runs["run_id"].astype(str).tolist(),
        "arch": sorted(runs["arch"].astype(str).unique()),
        "eval_set": sorted(runs["eval_set"].astype(str).unique()),
    }


def create_loss_model(runs: pd.DataFrame, spec: ModelSpec | None = None) -> pm.Model:
    """Build the loss-law model for a validated run table.

    Parameters
    ----------
    runs
        A run table (:func:`bayes_scaling.runs.validate_runs`) with the columns the law needs.
    spec
        Law, pooling and prior overrides; default: the experts law, hierarchical over arch.

    Returns
    -------
    pymc.Model
        Dims ``run``, ``arch``, ``eval_set``; observed ``log_loss`` (Student-t).
    """
    spec = spec or ModelSpec()
    law = LAWS[spec.law]
    _check_columns(runs, law)
    priors = spec.resolved_priors()
    coords = model_coords(runs)
    inputs = log_inputs(
        runs.assign(**{c: 1.0 for c in ("experts", "granularity") if c not in runs.columns})
    )
    with pm.Model(coords=coords) as model:
        data = {name: pm.Data(name, inputs[name], dims="run") for name in law.inputs}
        arch_idx = pm.Data(
            "arch_idx", pd.Categorical(runs["arch"], coords["arch"]).codes, dims="run"
        )
        eval_idx = pm.Data(
            "eval_set_idx", pd.Categorical(runs["eval_set"], coords["eval_set"]).codes, dims="run"
        )
        sampled = {
            key: arch_parameter(
                key,
                prior,
                "pooled" if key in spec.shared else spec.pooling,
                sign=law.signs.get(key, 1.0),
            )
            for key, prior in priors.items()
            if key not in ("log_e", "sigma", "nu")
        }
        params = law.raw_from_ref(sampled)
        for raw in law.reference:
            params[raw] = pm.Deterministic(raw, params[raw], dims="arch")
        per_run = {name: params[name][arch_idx] for name in law.arch_params}
        if law.has_irreducible:
            log_e = pm.Normal("log_e", priors["log_e"].mu, priors["log_e"].sigma, dims="eval_set")  # type: ignore[union-attr]
            pm.Deterministic("irreducible", pt.exp(log_e), dims="eval_set")
            per_run["log_e"] = log_e[eval_idx]
        mean = law.log_loss(data, per_run)
        sigma = pm.HalfNormal("sigma", priors["sigma"].sigma)  # type: ignore[union-attr]
        nu = pm.Gamma("nu", priors["nu"].alpha, priors["nu"].beta)  # type: ignore[union-attr]
        observed = pm.Data("observed_log_loss", np.log(runs["loss"].to_numpy(float)), dims="run")
        pm.StudentT("log_loss", nu=nu, mu=mean, sigma=sigma, observed=observed, dims="run")
    return model
