"""The loss model: dims, pooling variants, finite gradients, priors, prior predictive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import pytest

from bayes_scaling.laws import LAWS, default_priors
from bayes_scaling.loss_model import MissingColumnError, create_loss_model
from bayes_scaling.priors import LOG_D_REF, Gamma, LogNormal, PriorError
from bayes_scaling.spec import POOLINGS, ModelSpec, SpecError
from tests.helpers import assert_finite_gradient
from tests.simulate import simulate_runs


@pytest.fixture(scope="module")
def runs():
    return simulate_runs(seed=1, runs_per_arch=20)


# Every law with hierarchical pooling, and every pooling with the experts law (compiling a
# gradient takes seconds, so not the full cross product).
@pytest.mark.parametrize(
    ("law", "pooling"),
    [(law, "hierarchical") for law in sorted(LAWS)]
    + [("experts", pooling) for pooling in POOLINGS if pooling != "hierarchical"],
)
def test_every_law_and_pooling_builds_with_dims_and_finite_gradient(runs, law, pooling) -> None:
    model = create_loss_model(runs, ModelSpec(law=law, pooling=pooling))
    assert model.coords["arch"] == ("dense", "moe")
    assert len(model.coords["run"]) == 40
    for variable in model.free_RVs + model.deterministics:
        assert model.named_vars_to_dims.get(variable.name) is not None or variable.ndim == 0
    for name in LAWS[law].arch_params:
        assert model.named_vars_to_dims[name] == ("arch",)
    assert model.named_vars_to_dims["log_loss"] == ("run",)
    assert_finite_gradient(model)


def test_pooling_variants_share_as_they_claim(runs) -> None:
    free = {
        p: {v.name for v in create_loss_model(runs, ModelSpec(pooling=p)).free_RVs}
        for p in POOLINGS
    }
    # alpha (LogNormal) is built on the log scale; gamma (Normal) directly.
    assert "log_alpha_mu" in free["pooled"] and "log_alpha_spread" not in free["pooled"]
    assert {"log_alpha_mu", "log_alpha_spread", "log_alpha_z"} <= free["hierarchical"]
    assert {"gamma_mu", "gamma_spread", "gamma_z"} <= free["hierarchical"]
    assert "log_alpha_arch" in free["separate"] and "log_alpha_mu" not in free["separate"]
    assert "gamma_arch" in free["separate"] and "gamma_mu" not in free["separate"]


def test_centred_parameters_sample_per_arch_values_and_others_stay_non_centred(runs) -> None:
    model = create_loss_model(runs, ModelSpec(centred=["log_a_ref"]))
    free = {v.name for v in model.free_RVs}
    assert {"log_a_ref_arch", "log_a_ref_mu", "log_a_ref_spread"} <= free
    assert "log_a_ref_z" not in free and "log_alpha_z" in free
    with pytest.raises(SpecError, match="centred"):
        ModelSpec(pooling="pooled", centred=["log_a_ref"])
    with pytest.raises(SpecError, match=r"centred.*beta"):
        ModelSpec(shared=["beta"], centred=["beta"])


def test_inputs_are_data_so_extrapolation_is_set_data(runs) -> None:
    model = create_loss_model(runs, ModelSpec())
    assert {"log_n", "log_d", "log_experts", "arch_idx", "eval_set_idx"} <= set(model.named_vars)
    with model:
        pm.set_data({"log_n": np.full(40, np.log(1e12))})
    assert np.allclose(model["log_n"].get_value(), np.log(1e12))


def test_prior_predictive_losses_are_plausible(runs) -> None:
    spec = ModelSpec(law="chinchilla", pooling="pooled")
    model = create_loss_model(runs, spec, floor_coordinates=False)
    prior = pm.sample_prior_predictive(draws=200, model=model, random_seed=3)
    loss = np.exp(prior["prior_predictive"]["log_loss"].to_numpy())
    median = np.median(loss)
    assert 1.0 < median < 10.0, median


def test_floor_coordinates_give_the_same_posterior_density(runs) -> None:
    """Sampled as (log of floor + data term at the data's centre, share of the floor), the
    model has the same density as with ln B_ref and ln E sampled directly: the difference of
    the two log densities at corresponding points is one constant (the dropped normalisers)."""
    spec = ModelSpec(shared=["log_b_ref", "beta"])  # wang2024's pooling: the case it is for
    assert "floor_share" not in {v.name for v in create_loss_model(runs, spec).free_RVs}
    runs = runs.assign(tokens=1.3e11 * np.exp(np.linspace(-0.3, 0.3, len(runs))))  # one budget
    floor = create_loss_model(runs, spec)
    direct = create_loss_model(runs, spec, floor_coordinates=False)
    assert {"floor_log_total", "floor_share"} <= {v.name for v in floor.free_RVs}
    assert "log_e" in {v.name for v in direct.free_RVs}
    logp_floor, logp_direct = floor.compile_logp(), direct.compile_logp()
    rng = np.random.default_rng(0)
    base = direct.initial_point(random_seed=1)
    centre = float(np.mean(np.log(runs["tokens"].to_numpy(float))))
    differences = []
    for _ in range(6):
        point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in base.items()}
        beta = float(np.exp(point["log_beta_mu_log__"] if "log_beta_mu_log__" in point
                             else point["log_beta_mu"]))  # fmt: skip
        log_e = float(point["log_e"][0])
        log_b_term = float(point["log_b_ref_mu"]) - beta * (centre - LOG_D_REF)
        total = np.logaddexp(log_e, log_b_term)
        at_floor = {k: v for k, v in point.items() if k not in ("log_e", "log_b_ref_mu")}
        at_floor["floor_log_total"] = np.array(total)
        at_floor["floor_share"] = np.array(log_e - log_b_term)  # logit of E / total
        differences.append(logp_floor(at_floor) - logp_direct(point))
    assert np.ptp(differences) < 1e-8, differences
    # and a wrong map (the share's sign flipped) is caught
    at_floor["floor_share"] = -at_floor["floor_share"]
    assert abs(logp_floor(at_floor) - logp_direct(point) - differences[0]) > 1e-3


def test_law_missing_a_column_is_refused_with_its_name(runs) -> None:
    with pytest.raises(MissingColumnError, match="experts"):
        create_loss_model(runs.drop(columns=["experts"]), ModelSpec(law="experts"))


def test_priors_override_and_unknown_keys_list_valid_ones(runs) -> None:
    spec = ModelSpec(priors={"alpha": {"median": 0.5, "sigma": 0.01}})
    assert spec.resolved_priors()["alpha"] == LogNormal(0.5, 0.01, 0.33)
    assert default_priors("experts")["alpha"].median == 0.3  # defaults are fresh, not mutated
    with pytest.raises(ValueError, match="log_a_ref"):
        ModelSpec(priors={"alpah": {"mu": 0.5}})
    # Each prior has its distribution's own fields: alpha's LogNormal has no mu, nu's Gamma no
    # sigma, so a file cannot set one thing while meaning another.
    with pytest.raises(SpecError, match=r"LogNormal\(median, sigma, spread\).*\['mu'\]"):
        ModelSpec(priors={"alpha": {"mu": 1.0}})
    with pytest.raises(SpecError, match=r"Gamma\(alpha, beta\)"):
        ModelSpec(priors={"nu": {"mu": 3.0}})
    assert ModelSpec(priors={"nu": {"alpha": 3.0}}).resolved_priors()["nu"] == Gamma(3.0, 0.1)
    with pytest.raises(PriorError, match="unknown law"):
        default_priors("kaplan1999")


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"sigma": 0.0}, "sigma must be > 0"),
        ({"sigma": -1.0}, "sigma must be > 0"),
        ({"mu": float("nan")}, "mu must be finite"),
        ({"mu": [1.0]}, "mu must be a number"),
        ({"mu": True}, "mu must be a number"),
    ],
)
def test_prior_values_outside_the_support_name_the_prior(fields, fragment) -> None:
    with pytest.raises(SpecError, match=f"priors.log_a_ref.*{fragment}"):
        ModelSpec(law="chinchilla", priors={"log_a_ref": fields})


def test_exponents_are_positive_by_construction() -> None:
    # Under the default priors a closed-form optimum (log alpha, log beta) always exists: the
    # old Normal(0.3, 0.15) prior put 2-3% of its mass below zero.
    runs_stub = pd.DataFrame({"run_id": ["a", "b"], "arch": ["dense", "moe"], "n_active": 1e8,
                              "tokens": 1e9, "experts": [1, 8], "loss": 3.0, "eval_set": "x",
                              "granularity": 1.0})  # fmt: skip
    for law, sign in (("experts", 1.0), ("joint", -1.0)):
        model = create_loss_model(runs_stub, ModelSpec(law=law, pooling="separate"))
        prior = pm.sample_prior_predictive(draws=2000, model=model, random_seed=1)["prior"]
        for name in ("alpha", "beta"):
            assert (sign * prior[name].to_numpy() > 0).all(), (law, name)


def test_literature_priors_centre_on_published_values() -> None:
    weak, literature = default_priors("chinchilla"), default_priors("chinchilla", literature=True)
    assert literature["alpha"].median == pytest.approx(0.3478)
    assert literature["log_e"].mu == pytest.approx(np.log(1.8172))
    assert literature["alpha"].sigma < weak["alpha"].sigma
