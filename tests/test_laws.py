"""Laws against published numbers (shared/docs/REFERENCE.md), numpy and PyTensor alike."""

from __future__ import annotations

import math

import numpy as np
import pytensor.tensor as pt
import pytest

from bayes_scaling.laws import (
    LAWS,
    chinchilla_optimal,
    optimal_allocation,
    saturating_experts,
)

JOINT = {  # Ludziejewski et al. 2025, Table: a, alpha, delta, gamma, b, beta, omega, zeta, c
    "log_a": math.log(35.91), "alpha": -0.1889, "delta": -0.2285, "gamma": 0.0098,
    "log_b": math.log(35.98), "beta": -0.1775, "omega": 0.5529, "zeta": -0.0259,
    "log_e": math.log(1.3637),
}  # fmt: skip
HOFFMANN = {"log_a": math.log(406.4), "alpha": 0.34, "log_b": math.log(410.7), "beta": 0.28,
            "log_e": math.log(1.69)}  # fmt: skip


@pytest.mark.parametrize(
    ("flops", "experts", "n_opt", "d_opt"),
    [(1e21, 1, 5.7e9, 29.3e9), (1e21, 8, 3.8e9, 44.3e9), (1e22, 1, 18.8e9, 88.6e9),
     (1e22, 8, 14.4e9, 115.8e9), (1e22, 32, 12.2e9, 136.9e9)],
)  # fmt: skip
def test_joint_law_reproduces_ludziejewski_compute_optimal_allocation(
    flops: float, experts: int, n_opt: float, d_opt: float
) -> None:
    n, d, _ = optimal_allocation(LAWS["joint"], JOINT, flops, experts=experts)
    assert n == pytest.approx(n_opt, rel=0.02) and d == pytest.approx(d_opt, rel=0.02)


def test_chinchilla_closed_form_is_the_numerical_optimum() -> None:
    flops = np.array([1e20, 5.76e23, 1e25])
    n_closed, d_closed = chinchilla_optimal(
        flops, **{k: HOFFMANN[k] for k in ("log_a", "alpha", "log_b", "beta")}
    )
    n_numeric, _, _ = optimal_allocation(LAWS["chinchilla"], HOFFMANN, flops)
    np.testing.assert_allclose(n_closed, n_numeric, rtol=1e-5)
    np.testing.assert_allclose(6 * n_closed * d_closed, flops, rtol=1e-12)
    # Exponents a = beta / (alpha + beta) = 0.4516: N_opt grows by 10^0.4516 per decade of C.
    n_low, _ = chinchilla_optimal(1e22, HOFFMANN["log_a"], 0.34, HOFFMANN["log_b"], 0.28)
    n_high, _ = chinchilla_optimal(1e23, HOFFMANN["log_a"], 0.34, HOFFMANN["log_b"], 0.28)
    assert math.log10(n_high / n_low) == pytest.approx(0.28 / 0.62, rel=1e-9)


def test_experts_law_is_the_sum_of_its_terms_and_chinchilla_at_one_expert() -> None:
    n, d, experts = 1e9, 2e10, 8.0
    params = {"log_a": math.log(400.0), "alpha": 0.34, "gamma": 0.1, "log_b": math.log(410.0),
              "beta": 0.28, "log_e": math.log(1.7)}  # fmt: skip
    direct = 400.0 / (n**0.34 * experts**0.1) + 410.0 / d**0.28 + 1.7
    inputs = {"log_n": math.log(n), "log_d": math.log(d), "log_experts": math.log(experts)}
    assert math.exp(LAWS["experts"].log_loss(inputs, params)) == pytest.approx(direct, rel=1e-12)
    dense = {**inputs, "log_experts": 0.0}
    assert LAWS["experts"].log_loss(dense, params) == pytest.approx(
        LAWS["chinchilla"].log_loss(dense, params), rel=1e-12
    )


def test_granularity_law_matches_krajewski_formula() -> None:
    # Krajewski et al. 2024, E = 64 fit: a, alpha, b, beta, g, gamma, c.
    a, alpha, b, beta, g, gamma, c = 18.1, 0.115, 30.8, 0.147, 2.1, 0.58, 0.47
    n, d, granularity = 1e9, 2e10, 8.0
    expected = c + (g / granularity**gamma + a) / n**alpha + b / d**beta
    params = {"log_a": math.log(a), "alpha": alpha, "log_b": math.log(b), "beta": beta,
              "log_g": math.log(g), "gamma": gamma, "log_e": math.log(c)}  # fmt: skip
    inputs = {"log_n": math.log(n), "log_d": math.log(d), "log_granularity": math.log(granularity)}
    assert math.exp(LAWS["granularity"].log_loss(inputs, params)) == pytest.approx(expected)


def test_saturating_experts_starts_at_e_start_and_saturates_at_e_max() -> None:
    assert saturating_experts(1.0, 2.0732, 290.45) == pytest.approx(2.0732, rel=1e-9)
    assert saturating_experts(1e9, 2.0732, 290.45) == pytest.approx(290.45, rel=1e-3)
    # In between it grows like E + E_start - 1, bent down by E_max: 29.7 at E = 32.
    assert saturating_experts(32.0, 2.0732, 290.45) == pytest.approx(29.70, abs=0.01)


def test_log_sum_exp_stays_finite_far_outside_the_data() -> None:
    inputs = {"log_n": math.log(1e15), "log_d": math.log(1e17), "log_experts": 0.0}
    value = LAWS["experts"].log_loss(inputs, {**HOFFMANN, "gamma": 0.0})
    assert math.isfinite(value) and math.exp(value) == pytest.approx(1.69, rel=1e-2)


def test_laws_are_symbolic_with_pytensor() -> None:
    log_n = pt.dvector("log_n")
    expression = LAWS["chinchilla"].log_loss({"log_n": log_n, "log_d": log_n + 3.0}, HOFFMANN)
    values = np.log([1e8, 1e10])
    symbolic = expression.eval({log_n: values})
    numeric = LAWS["chinchilla"].log_loss({"log_n": values, "log_d": values + 3.0}, HOFFMANN)
    np.testing.assert_allclose(symbolic, numeric, rtol=1e-12)


def test_each_law_names_the_columns_it_needs() -> None:
    assert LAWS["chinchilla"].columns == ("n_active", "tokens")
    assert "experts" in LAWS["experts"].columns and "granularity" in LAWS["granularity"].columns


def test_a_law_owns_its_closed_form_optimum_and_it_matches_the_search() -> None:
    from dataclasses import replace

    law = LAWS["experts"]
    params = {"log_a": np.log(482.01), "alpha": 0.3478, "log_b": np.log(2085.43),
              "beta": 0.3658, "gamma": 0.1, "log_e": np.log(1.8172)}  # fmt: skip
    log_c6 = np.log(np.array([1e21, 1e23]) / 6.0)
    closed = law.optimal_log_n(params, log_c6, experts=8.0)
    searched = replace(law, closed_form=None).optimal_log_n(params, log_c6, experts=8.0)
    np.testing.assert_allclose(closed, searched, atol=1e-5)
    # More experts rescale A down, so the optimum moves to fewer active parameters.
    assert (law.optimal_log_n(params, log_c6, experts=64.0) < closed).all()


@pytest.mark.parametrize(
    ("law", "sampled", "raw", "expected"),
    [
        # A / N^alpha: ln A = ref + alpha ln N_REF.
        ("chinchilla", {"log_a_ref": -1.0, "alpha": 0.3, "log_b_ref": 0.0, "beta": 0.2},
         "log_a", -1.0 + 0.3 * math.log(1e9)),
        # a N^alpha with alpha < 0 (sampled negative by the builder): ln a = ref - alpha ln N_REF.
        ("joint", {"log_a_ref": -2.0, "alpha": -0.19, "log_b_ref": 0.0, "beta": -0.18},
         "log_a", -2.0 + 0.19 * math.log(1e9)),
        ("joint", {"log_a_ref": -2.0, "alpha": -0.19, "log_b_ref": 0.5, "beta": -0.18},
         "log_b", 0.5 + 0.18 * math.log(1e10)),
        # Clark: ln L = a ln N + ... + d with a < 0: d = d_ref - a ln N_REF.
        ("clark", {"a": -0.08, "d_ref": 1.0}, "d", 1.0 + 0.08 * math.log(1e9)),
    ],
)  # fmt: skip
def test_reference_scale_coefficients_map_to_raw_ones_with_the_law_sign(
    law: str, sampled: dict[str, float], raw: str, expected: float
) -> None:
    assert LAWS[law].raw_from_ref(sampled)[raw] == pytest.approx(expected, rel=1e-12)
