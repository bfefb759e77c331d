"""Scaling laws as pure functions of log inputs, for numpy arrays and PyTensor tensors alike.

Every law returns the **log** of the loss, written as a log-sum-exp of its power-law terms so it
stays finite far outside the data. Inputs are natural logs of run-table columns (``log_n`` of
``n_active``, ``log_d`` of ``tokens``, ``log_experts``, ``log_granularity``); coefficients are
the published ones (``log_a`` = ln A with N and D in raw counts), so paper numbers plug in as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from bayes_scaling.priors import (
    LOG_D_REF,
    LOG_N_REF,
    AnyPrior,
    Gamma,
    HalfNormal,
    LogNormal,
    Normal,
    PriorError,
)

__all__ = [
    "LAWS",
    "Law",
    "backend",
    "chinchilla_optimal",
    "clark_log_loss",
    "default_priors",
    "experts_log_loss",
    "granularity_log_loss",
    "joint_log_loss",
    "saturating_experts",
]


def backend(*values: Any) -> Any:
    """PyTensor's tensor module when any input is symbolic, else numpy."""
    return pt if any(isinstance(v, Variable) for v in values) else np


def _logsumexp(*terms: Any) -> Any:
    """log(sum(exp(terms))) of equally shaped terms, stable for large magnitudes."""
    xp = backend(*terms)
    top = terms[0]
    for term in terms[1:]:
        top = xp.maximum(top, term)
    return top + xp.log(sum(xp.exp(term - top) for term in terms))


def experts_log_loss(log_n, log_d, log_experts, log_a, alpha, gamma, log_b, beta, log_e):
    """Wang et al. 2024 (arXiv:2410.05661), Chinchilla for E = 1 (Hoffmann et al. 2022).

    L(N, D, E) = A / (N^alpha * E^gamma) + B / D^beta + E_irr, returned as
    ln L = LSE(ln A - alpha ln N - gamma ln E, ln B - beta ln D, ln E_irr).
    """
    return _logsumexp(
        log_a - alpha * log_n - gamma * log_experts, log_b - beta * log_d, log_e + 0.0 * log_n
    )


def chinchilla_log_loss(log_n, log_d, log_a, alpha, log_b, beta, log_e):
    """Hoffmann et al. 2022 approach 3: L = E + A / N^alpha + B / D^beta (log-sum-exp form)."""
    return experts_log_loss(log_n, log_d, 0.0 * log_n, log_a, alpha, 0.0, log_b, beta, log_e)


def granularity_log_loss(
    log_n, log_d, log_granularity, log_a, alpha, log_b, beta, log_g, gamma, log_e
):
    """Krajewski et al. 2024 (arXiv:2402.07871): L = c + (g / G^gamma + a) / N^alpha + b / D^beta.

    ``log_e`` is ln c, ``log_g`` ln g; G = 1 gives a term g + a, so G = 1 is not the dense law.
    """
    return _logsumexp(
        log_g - gamma * log_granularity - alpha * log_n,
        log_a - alpha * log_n,
        log_b - beta * log_d,
        log_e + 0.0 * log_n,
    )


def saturating_experts(experts, e_start, e_max):
    """Saturating expert count of Clark et al. 2022 / Ludziejewski et al. 2025.

    1 / Eh = 1 / (E - 1 + (1 / E_start - 1 / E_max)^-1) + 1 / E_max.
    """
    return 1.0 / (1.0 / (experts - 1.0 + 1.0 / (1.0 / e_start - 1.0 / e_max)) + 1.0 / e_max)


def joint_log_loss(
    log_n,
    log_d,
    log_experts,
    log_a,
    alpha,
    delta,
    gamma,
    log_b,
    beta,
    omega,
    zeta,
    log_e,
    e_start=2.0732,
    e_max=290.45,
):
    """Ludziejewski et al. 2025 (arXiv:2502.05172), joint MoE law with memory constraints.

    L = a Eh^delta N^(alpha + gamma ln Eh) + b Eh^omega D^(beta + zeta ln Eh) + c, with Eh the
    saturating expert count; exponents alpha and beta are negative in the paper's convention.
    The defaults of ``e_start`` and ``e_max`` are the paper's fitted values.
    """
    xp = backend(log_n, log_experts, alpha)
    log_eh = xp.log(saturating_experts(xp.exp(log_experts), e_start, e_max))
    return _logsumexp(
        log_a + delta * log_eh + (alpha + gamma * log_eh) * log_n,
        log_b + omega * log_eh + (beta + zeta * log_eh) * log_d,
        log_e + 0.0 * log_n,
    )


def clark_log_loss(log_n, log_experts, a, b, c, d, e_start=1.85, e_max=314.0):
    """Clark et al. 2022 (arXiv:2202.01169): ln L = a ln N + b ln Eh + c ln N ln Eh + d.

    N is in raw counts (natural logs throughout). The defaults of ``e_start`` and ``e_max`` are
    those the paper reports for S-Base routing; its benefit shrinks with N when c > 0.
    """
    xp = backend(log_n, log_experts, a)
    log_eh = xp.log(saturating_experts(xp.exp(log_experts), e_start, e_max))
    return a * log_n + b * log_eh + c * log_n * log_eh + d


def kaplan_log_loss(log_n, log_d, log_a_ref, rho, log_r_ref, beta, log_e):
    """Kaplan et al. 2020 (arXiv:2001.08361, eq. 1.5) plus a floor, E + A (N^-rho + R/D)^beta, at
    the reference scales (A and R then barely correlate with rho, beta): N / N_REF, D / D_REF."""
    xp = backend(log_n, rho)
    inner = xp.logaddexp(-rho * (log_n - LOG_N_REF), log_r_ref - log_d + LOG_D_REF)
    return _logsumexp(log_a_ref + beta * inner, log_e + 0.0 * log_n)


def shifted_log_loss(log_n, log_d, log_a, alpha, log_n0, log_b, beta, log_e):
    """Shifted power law in N, flat below N0 (cf. Caballero et al. 2022, arXiv:2210.14891):
    L = E + A / (N + N0)^alpha + B / D^beta; N0 = 0 is Chinchilla."""
    shifted = log_a - alpha * backend(log_n, log_n0).logaddexp(log_n, log_n0)
    return _logsumexp(shifted, log_b - beta * log_d, log_e + 0.0 * log_n)


@dataclass(frozen=True)
class Law:
    """Everything the package knows about one law, so that adding a law is one entry here.

    - ``function``, ``columns``, ``inputs``: the log-loss function, the run-table columns it
      needs and the log-input keywords it takes;
    - ``arch_params``: raw-unit parameters that vary by arch (``log_e``, the irreducible loss,
      is shared per eval set when ``has_irreducible``);
    - ``priors`` / ``literature``: weak default priors of the *sampled* parameters and the
      literature-centred replacements (:meth:`default_priors`);
    - ``reference``: raw coefficient -> (sampled reference-scale coefficient, exponent, ln of the
      reference scale): raw = ref + |exponent| ln(reference), so ref is the term's ln value at
      the reference scale (see :mod:`bayes_scaling.priors`);
    - ``signs``: exponents sampled as positive magnitudes (LogNormal priors) that the law uses
      negated (Ludziejewski et al. write a N^alpha with alpha < 0).
    """

    name: str
    function: Callable[..., Any]
    columns: tuple[str, ...]
    inputs: tuple[str, ...]  # log-input keywords the function takes, in order
    arch_params: tuple[str, ...]
    priors: dict[str, AnyPrior] = field(default_factory=dict)
    literature: dict[str, AnyPrior] = field(default_factory=dict)
    reference: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    signs: dict[str, float] = field(default_factory=dict)
    has_irreducible: bool = True
    citation: str = ""
    # ln N_opt(params, ln(C / 6), ln E) in closed form, where the law has one.
    closed_form: Callable[..., Any] | None = None

    def log_loss(self, inputs: dict[str, Any], params: dict[str, Any]) -> Any:
        """ln L for inputs keyed like :attr:`inputs` and parameters keyed by name."""
        kwargs = {name: inputs[name] for name in self.inputs}
        kwargs.update({name: params[name] for name in self.arch_params})
        if self.has_irreducible:
            kwargs["log_e"] = params["log_e"]
        return self.function(**kwargs)

    def default_priors(self, literature: bool = False) -> dict[str, AnyPrior]:
        """A fresh dict of the sampled parameters' priors (noise ``sigma`` and ``nu`` last)."""
        priors = dict(self.priors)
        if literature:
            priors.update({k: v for k, v in self.literature.items() if k in priors})
        return {**priors, "sigma": HalfNormal(0.05), "nu": Gamma(2.0, 0.1)}

    def optimal_log_n(
        self, params: dict[str, Any], log_c6: Any, experts: Any = 1.0, granularity: Any = 1.0
    ) -> Any:
        """ln of the compute-optimal N under C = 6 N D, elementwise over broadcast shapes:
        the law's closed form when it has one, else :func:`optimal_allocation`."""
        if self.closed_form is not None:
            return self.closed_form(params, log_c6, np.log(np.asarray(experts, dtype=float)))
        flops = 6.0 * np.exp(np.asarray(log_c6, dtype=float))
        n, _, _ = optimal_allocation(self, params, flops, experts, granularity)
        return np.log(n)

    def raw_from_ref(self, params: dict[str, Any]) -> dict[str, Any]:
        """Add raw-unit coefficients (``log_a``...) to reference-scale ones (``log_a_ref``...)."""
        out = dict(params)
        for raw, (ref, exponent, log_ref) in self.reference.items():
            magnitude = params[exponent] * self.signs.get(exponent, 1.0)
            out[raw] = params[ref] + magnitude * log_ref
        return out


def _power_law_optimum(params: dict[str, Any], log_c6: Any, log_experts: Any) -> Any:
    """ln N_opt of A / (N^alpha E^gamma) + B / D^beta + E under C = 6 N D (Hoffmann et al. 2022,
    eq. 4): N_opt = G (C / 6)^(beta / (alpha + beta)), G = (alpha A' / (beta B))^(1 / (alpha +
    beta)), with A' = A E^-gamma (the expert term only rescales A; Chinchilla has gamma = 0)."""
    alpha, beta = params["alpha"], params["beta"]
    log_a = params["log_a"] - params.get("gamma", 0.0) * log_experts
    total = alpha + beta
    log_g = (np.log(alpha) + log_a - np.log(beta) - params["log_b"]) / total
    return log_g + beta / total * log_c6


def _ref(log_coef: float, exponent: float, log_ref: float) -> float:
    """Reference-scale value of a published ln-coefficient with a positive exponent."""
    return log_coef - exponent * log_ref


# Weakly informative priors: loss terms of order 0.1-1 nat at the reference scale, exponents of
# 0.1-0.7 (LogNormal: median 0.3, 90% in [0.13, 0.68]), irreducible loss 1-3 nats.
_A: dict[str, AnyPrior] = {"log_a_ref": Normal(-1.0, 1.0, 0.5), "alpha": LogNormal(0.3, 0.5, 0.33)}
_B: dict[str, AnyPrior] = {"log_b_ref": Normal(-0.5, 1.0, 0.5), "beta": LogNormal(0.3, 0.5, 0.33)}
_E: dict[str, AnyPrior] = {"log_e": Normal(0.5, 0.5)}
_GAMMA: dict[str, AnyPrior] = {"gamma": Normal(0.1, 0.1, 0.1)}
# Literature centres (shared/docs/REFERENCE.md): Epoch AI's refit of Chinchilla
# (arXiv:2404.10102) for the dense terms, Krajewski et al. 2024 (E = 64 fit) for granularity,
# Ludziejewski et al. 2025 for the joint law; widths are a few published standard errors.
_EPOCH: dict[str, AnyPrior] = {
    "log_a_ref": Normal(_ref(math.log(482.01), 0.3478, LOG_N_REF), 0.3, 0.3),
    "alpha": LogNormal(0.3478, 0.15, 0.15),
    "log_b_ref": Normal(_ref(math.log(2085.43), 0.3658, LOG_D_REF), 0.3, 0.3),
    "beta": LogNormal(0.3658, 0.14, 0.14),
    "log_e": Normal(math.log(1.8172), 0.1),
}
# Krajewski et al. 2024, their E = 64 fit (a = 18.1, alpha = 0.115, b = 30.8, beta = 0.147,
# g = 2.1, gamma = 0.58, c = 0.47): one consistent set, so g's reference value uses their alpha.
# The irreducible loss is given a wide prior: it belongs to their data pipeline, not the user's.
_KRAJEWSKI: dict[str, AnyPrior] = {
    "log_a_ref": Normal(_ref(math.log(18.1), 0.115, LOG_N_REF), 0.3, 0.3),
    "alpha": LogNormal(0.115, 0.15, 0.15),
    "log_b_ref": Normal(_ref(math.log(30.8), 0.147, LOG_D_REF), 0.3, 0.3),
    "beta": LogNormal(0.147, 0.15, 0.15),
    "log_g_ref": Normal(_ref(math.log(2.1), 0.115, LOG_N_REF), 0.5, 0.3),
    "gamma": Normal(0.58, 0.1, 0.1),
    "log_e": Normal(math.log(0.47), 0.3),
}
# Ludziejewski et al. 2025 (a = 35.91, alpha = -0.1889, delta = -0.2285, gamma = 0.0098,
# b = 35.98, beta = -0.1775, omega = 0.5529, zeta = -0.0259, c = 1.3637); alpha and beta are
# sampled as magnitudes (the law's ``signs`` negate them).
_LUDZIEJEWSKI: dict[str, AnyPrior] = {
    "log_a_ref": Normal(math.log(35.91) - 0.1889 * LOG_N_REF, 0.3, 0.3),
    "alpha": LogNormal(0.1889, 0.15, 0.15),
    "delta": Normal(-0.2285, 0.1, 0.1),
    "gamma": Normal(0.0098, 0.01, 0.01),
    "log_b_ref": Normal(math.log(35.98) - 0.1775 * LOG_D_REF, 0.3, 0.3),
    "beta": LogNormal(0.1775, 0.15, 0.15),
    "omega": Normal(0.5529, 0.1, 0.1),
    "zeta": Normal(-0.0259, 0.01, 0.01),
    "log_e": Normal(math.log(1.3637), 0.3),
}
_DENSE_REFERENCE = {
    "log_a": ("log_a_ref", "alpha", LOG_N_REF),
    "log_b": ("log_b_ref", "beta", LOG_D_REF),
}


LAWS: dict[str, Law] = {
    law.name: law
    for law in (
        Law("chinchilla", chinchilla_log_loss, ("n_active", "tokens"), ("log_n", "log_d"),
            ("log_a", "alpha", "log_b", "beta"), {**_A, **_B, **_E}, _EPOCH, _DENSE_REFERENCE,
            citation="Hoffmann et al. 2022", closed_form=_power_law_optimum),
        Law("experts", experts_log_loss, ("n_active", "tokens", "experts"),
            ("log_n", "log_d", "log_experts"), ("log_a", "alpha", "gamma", "log_b", "beta"),
            {**_A, **_GAMMA, **_B, **_E}, _EPOCH, _DENSE_REFERENCE, citation="Wang et al. 2024",
            closed_form=_power_law_optimum),
        Law("granularity", granularity_log_loss, ("n_active", "tokens", "granularity"),
            ("log_n", "log_d", "log_granularity"),
            ("log_a", "alpha", "log_b", "beta", "log_g", "gamma"),
            {**_A, **_B, "log_g_ref": Normal(-2.0, 1.5, 0.5), **_GAMMA, **_E},
            _KRAJEWSKI,
            {**_DENSE_REFERENCE, "log_g": ("log_g_ref", "alpha", LOG_N_REF)},
            citation="Krajewski et al. 2024"),
        Law("joint", joint_log_loss, ("n_active", "tokens", "experts"),
            ("log_n", "log_d", "log_experts"),
            ("log_a", "alpha", "delta", "gamma", "log_b", "beta", "omega", "zeta"),
            {"log_a_ref": Normal(math.log(35.91) - 0.1889 * LOG_N_REF, 1.0, 0.5),
             "alpha": LogNormal(0.3, 0.5, 0.33), "delta": Normal(0.0, 0.5, 0.2), **_GAMMA,
             "log_b_ref": Normal(math.log(35.98) - 0.1775 * LOG_D_REF, 1.0, 0.5),
             "beta": LogNormal(0.3, 0.5, 0.33), "omega": Normal(0.0, 0.5, 0.2),
             "zeta": Normal(0.0, 0.05, 0.02), **_E},
            _LUDZIEJEWSKI,
            _DENSE_REFERENCE, signs={"alpha": -1.0, "beta": -1.0},
            citation="Ludziejewski et al. 2025"),
        Law("clark", clark_log_loss, ("n_active", "experts"), ("log_n", "log_experts"),
            ("a", "b", "c", "d"),
            {"a": LogNormal(0.05, 0.7, 0.3), "b": Normal(-0.05, 0.1, 0.05),
             "c": Normal(0.0, 0.01, 0.005), "d_ref": Normal(1.0, 0.5, 0.2)},
            reference={"d": ("d_ref", "a", LOG_N_REF)}, signs={"a": -1.0},
            has_irreducible=False, citation="Clark et al. 2022"),
        Law("kaplan", kaplan_log_loss, ("n_active", "tokens"), ("log_n", "log_d"),
            ("log_a_ref", "rho", "log_r_ref", "beta"), {"log_a_ref": Normal(-1.0, 1.0, 0.5),
             "rho": LogNormal(1.0, 0.5, 0.33), "log_r_ref": Normal(0.0, 1.5, 0.5),
             "beta": LogNormal(0.3, 0.5, 0.33), **_E}, citation="Kaplan et al. 2020"),
        Law("shifted", shifted_log_loss, ("n_active", "tokens"), ("log_n", "log_d"),
            ("log_a", "alpha", "log_n0", "log_b", "beta"), {**_A, "log_n0": Normal(15.0, 3.0, 0.5),
             **_B, **_E}, reference=_DENSE_REFERENCE, citation="shifted power law"),
    )
}  # fmt: skip


def default_priors(law: str, literature: bool = False) -> dict[str, AnyPrior]:
    """A fresh dict of priors for ``law``: weak defaults, or literature-centred ones.

    Example
    -------
    >>> default_priors("chinchilla")["alpha"]
    LogNormal(median=0.3, sigma=0.5, spread=0.33)
    """
    if law not in LAWS:
        raise PriorError(f"unknown law {law!r}; expected one of {sorted(LAWS)}")
    return LAWS[law].default_priors(literature)


def log_inputs(runs: Any) -> dict[str, np.ndarray]:
    """Natural-log law inputs from a run table (or any mapping of its columns)."""
    return {
        "log_n": np.log(np.asarray(runs["n_active"], dtype=float)),
        "log_d": np.log(np.asarray(runs["tokens"], dtype=float)),
        "log_experts": np.log(np.asarray(runs["experts"], dtype=float)),
        "log_granularity": np.log(np.asarray(runs["granularity"], dtype=float)),
    }


def chinchilla_optimal(flops, log_a, alpha, log_b, beta):
    """Closed-form compute-optimal N and D of the Chinchilla law under C = 6 N D.

    N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = G^-1 (C/6)^(alpha/(alpha+beta)),
    G = (alpha A / (beta B))^(1/(alpha+beta)) (Hoffmann et al. 2022, eq. 4). Works elementwise
    on posterior draws.
    """
    params = {"log_a": log_a, "alpha": alpha, "log_b": log_b, "beta": beta}
    log_c6 = np.log(np.asarray(flops, dtype=float) / 6.0)
    n_opt = np.exp(_power_law_optimum(params, log_c6, 0.0))
    return n_opt, np.asarray(flops, dtype=float) / (6.0 * n_opt)


def optimal_allocation(
    law: Law,
    params: dict[str, Any],
    flops: Any,
    experts: Any = 1.0,
    granularity: Any = 1.0,
    tolerance: float = 1e-7,
) -> tuple[Any, Any, Any]:
    """Numerical compute-optimal (N, D, ln L) under C = 6 N D for any law, vectorized.

    Golden-section search over ln N in [ln C - 60, ln C / 2 + 10] (so D >= N / e^20), elementwise
    over broadcast shapes of ``params``, ``flops``, ``experts`` and ``granularity``; the loss is
    unimodal in ln N for every law here.
    """
    log_c6 = np.log(np.asarray(flops, dtype=float) / 6.0)
    extra = {
        "log_experts": np.log(np.asarray(experts, dtype=float)),
        "log_granularity": np.log(np.asarray(granularity, dtype=float)),
    }

    def loss_at(log_n: np.ndarray) -> np.ndarray:
        inputs = {"log_n": log_n, "log_d": log_c6 - log_n, **extra}
        return np.asarray(law.log_loss(inputs, params))

    shape = np.broadcast(loss_at(np.zeros_like(log_c6)), log_c6).shape
    low = np.broadcast_to(np.full_like(log_c6, 5.0), shape).copy()
    high = np.broadcast_to(log_c6 - 5.0, shape).copy()
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    while np.max(high - low) > tolerance:
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        go_left = loss_at(left) < loss_at(right)
        high = np.where(go_left, right, high)
        low = np.where(go_left, low, left)
    log_n = (low + high) / 2.0
    return np.exp(log_n), np.exp(log_c6 - log_n), loss_at(log_n)
