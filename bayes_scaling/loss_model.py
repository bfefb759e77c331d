"""The hierarchical loss-law model: dense and MoE parameters drawn around shared values.

``create_loss_model(runs, spec)`` compiles a :class:`~bayes_scaling.spec.ModelSpec` and a run
table into a ``pm.Model``. The log loss of each run follows the spec's law; each law parameter
has an ``arch`` dim whose values are

- ``pooled``: one shared value (``<p>_mu``), the same for every arch;
- ``hierarchical``: ``<p>_mu + <p>_spread * <p>_z`` (non-centred, learned spread; or centred,
  ``<p>_arch ~ Normal(<p>_mu, <p>_spread)``, for the parameters the spec's ``centred`` lists);
- ``separate``: independent draws from the prior, nothing shared.

The non-centred form suits parameters the data pin down weakly per arch; a parameter every
arch's runs pin down tightly (the coefficient ``log_a_ref`` on DeepMind's routed runs) mixes
faster centred, where the non-centred form ties each ``z`` to ``mu`` and ``spread``: on
DeepMind's routed runs, centring ``log_a_ref`` took ~110 leapfrog steps per draw instead of
~270, but it is not a default: on the trainer's 8-22 noisy runs per router it left divergent
transitions that the non-centred form does not. A spec opts in with ``centred``.

Exponents with a LogNormal prior (alpha, beta) are built on the log scale, so they are positive
by construction (the builder is :func:`bayes_scaling.priors.arch_parameter`); a law that uses
them negated says so in its ``signs``.

The irreducible loss ``log_e`` is shared per ``eval_set``; the likelihood is Student-t on the
log loss, so a few bad runs do not dominate. Every input is ``pm.Data``.

**The floor and the data term.** Runs at one token budget (DeepMind's routed models are all at
130B tokens) measure only the sum of the data term and the irreducible loss, B / D^beta + E;
how it splits, and beta, rest on the priors. Sampled as (ln B_ref, beta, ln E) that sum is a
curved ridge, and NUTS needs ~4x the leapfrog steps to crawl along it. When the runs' token
counts span less than a factor of 2 (:data:`FLOOR_SPAN`; data spanning more identify the split
and mix better in the direct coordinates: Chinchilla's bulk ESS fell from ~870 to ~550 in
these), the data term is pooled and there is one eval set, the model samples the log of the
sum at the data's centre (the mean ln D of the runs, ``pm.Data``), ``floor_log_total``, and the
logit of the irreducible share, ``floor_share``; ln B_ref and ln E are functions of them and
beta. The map has unit Jacobian at fixed beta, and the priors of ln B_ref and ln E enter as
potentials, so the posterior is the same model's, in coordinates the data identify.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayes_scaling.laws import LAWS, Law, log_inputs
from bayes_scaling.priors import LOG_D_REF, AnyPrior, Normal, arch_parameter, scale_parameter
from bayes_scaling.spec import ModelSpec

__all__ = ["FLOOR_SPAN", "MissingColumnError", "create_loss_model"]

# Largest spread of ln tokens (a factor of 2) for which the floor coordinates are used.
FLOOR_SPAN = math.log(2.0)


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


def _pooled(key: str, spec: ModelSpec) -> bool:
    return spec.pooling == "pooled" or key in spec.shared


def _floor_coordinates(law: Law, spec: ModelSpec, n_eval_sets: int) -> bool:
    """Whether the data term and the floor are sampled as (sum at the centre, share)."""
    return (
        law.has_irreducible
        and law.reference.get("log_b") == ("log_b_ref", "beta", LOG_D_REF)
        and _pooled("log_b_ref", spec)
        and _pooled("beta", spec)
        and n_eval_sets == 1
    )


def _floor_and_data_term(
    priors: dict[str, AnyPrior], beta: Any, law: Law, log_d: np.ndarray
) -> tuple[Any, Any]:
    """ln B_ref (dims arch) and ln E (dims eval_set) from the floor's coordinates (module doc)."""
    prior_b, prior_e = priors["log_b_ref"], priors["log_e"]
    if not isinstance(prior_b, Normal) or not isinstance(prior_e, Normal):
        raise TypeError("log_b_ref and log_e need Normal priors")
    centre = pm.Data("log_d_centre", float(np.mean(log_d)))
    total = pm.Flat("floor_log_total", initval=prior_e.mu + math.log(2.0))
    share = pm.Flat("floor_share", initval=0.0)
    log_e = total + pt.log(pt.sigmoid(share))
    term_at_centre = total + pt.log(pt.sigmoid(-share))
    magnitude = beta[0] * law.signs.get("beta", 1.0)
    log_b_ref = term_at_centre + magnitude * (centre - LOG_D_REF)
    # The Normal priors' log densities (constants dropped: they do not move the posterior).
    pm.Potential("log_b_ref_prior", -0.5 * ((log_b_ref - prior_b.mu) / prior_b.sigma) ** 2)
    pm.Potential("log_e_prior", -0.5 * ((log_e - prior_e.mu) / prior_e.sigma) ** 2)
    n_arch = len(pm.modelcontext(None).coords["arch"])
    return (
        pm.Deterministic("log_b_ref", pt.repeat(log_b_ref, n_arch), dims="arch"),
        pm.Deterministic("log_e", log_e[None], dims="eval_set"),
    )


def create_loss_model(
    runs: pd.DataFrame, spec: ModelSpec | None = None, floor_coordinates: bool = True
) -> pm.Model:
    """Build the loss-law model for a validated run table.

    Parameters
    ----------
    runs
        A run table (:func:`bayes_scaling.runs.validate_runs`) with the columns the law needs.
    spec
        Law, pooling and prior overrides; default: the experts law, hierarchical over arch.
    floor_coordinates
        Sample the floor and the data term in the coordinates of the module doc where they
        apply (default). ``False`` builds the same model with ln B_ref and ln E as random
        variables, for drawing from the prior (the floor coordinates have flat base measures,
        which cannot be drawn from).

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
        floor = (
            floor_coordinates
            and _floor_coordinates(law, spec, len(coords["eval_set"]))
            and np.ptp(inputs["log_d"]) < FLOOR_SPAN
        )
        skip = ("log_e", "sigma", "nu", *(("log_b_ref",) if floor else ()))
        sampled = {
            key: arch_parameter(
                key,
                prior,
                "pooled" if key in spec.shared else spec.pooling,
                sign=law.signs.get(key, 1.0),
                centred=key in spec.centred,
            )
            for key, prior in priors.items()
            if key not in skip
        }
        if floor:
            sampled["log_b_ref"], log_e = _floor_and_data_term(
                priors, sampled["beta"], law, inputs["log_d"]
            )
        params = law.raw_from_ref(sampled)
        for raw in law.reference:
            params[raw] = pm.Deterministic(raw, params[raw], dims="arch")
        per_run = {name: params[name][arch_idx] for name in law.arch_params}
        if law.has_irreducible:
            if not floor:
                log_e = pm.Normal(
                    "log_e",
                    priors["log_e"].mu,  # type: ignore[union-attr]
                    priors["log_e"].sigma,  # type: ignore[union-attr]
                    dims="eval_set",
                )
            pm.Deterministic("irreducible", pt.exp(log_e), dims="eval_set")
            per_run["log_e"] = log_e[eval_idx]
        mean = law.log_loss(data, per_run)
        sigma = scale_parameter("sigma", priors["sigma"])
        nu = scale_parameter("nu", priors["nu"])
        observed = pm.Data("observed_log_loss", np.log(runs["loss"].to_numpy(float)), dims="run")
        pm.StudentT("log_loss", nu=nu, mu=mean, sigma=sigma, observed=observed, dims="run")
    return model
