"""Priors of the loss-law models: weak defaults and literature-centred alternatives.

Coefficients are sampled at a fixed reference scale, N_REF = 1e9 parameters and D_REF = 1e10
tokens: ``log_a_ref`` is ln of the parameter term A / N^alpha at N = N_REF (and ``log_b_ref`` of
the data term at D = D_REF). In raw units ln A = log_a_ref + alpha ln N_REF. Sampling at a
reference scale removes the near-perfect correlation between ln A and alpha that raw counts
(ln N ~ 20) create; the scales are constants, never taken from the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["D_REF", "N_REF", "Prior", "UnknownPriorError", "default_priors", "override_priors"]

N_REF = 1e9
D_REF = 1e10
LOG_N_REF = math.log(N_REF)
LOG_D_REF = math.log(D_REF)


class UnknownPriorError(ValueError):
    """A prior key or field that the model does not have; the message lists the valid ones."""


@dataclass(frozen=True)
class Prior:
    """Normal(mu, sigma) for a population value; ``spread`` is the HalfNormal scale of the
    arch-to-arch standard deviation (hierarchical pooling only). ``sigma`` alone is used for
    the noise scale (HalfNormal), and ``mu`` / ``sigma`` as the Gamma shape / rate of ``nu``."""

    mu: float = 0.0
    sigma: float = 1.0
    spread: float = 0.1


# Weakly informative defaults for the reference-scale parametrization (see module docstring):
# loss terms of order 0.1-1 nat at the reference scale, exponents 0-0.6, irreducible loss 1-3.
_WEAK = {
    "log_a_ref": Prior(-1.0, 1.0, 0.5),
    "alpha": Prior(0.3, 0.15, 0.1),
    "log_b_ref": Prior(-0.5, 1.0, 0.5),
    "beta": Prior(0.3, 0.15, 0.1),
    "gamma": Prior(0.1, 0.1, 0.1),
    "log_g_ref": Prior(-2.0, 1.5, 0.5),
    "delta": Prior(0.0, 0.5, 0.2),
    "omega": Prior(0.0, 0.5, 0.2),
    "zeta": Prior(0.0, 0.05, 0.02),
    "a": Prior(-0.05, 0.05, 0.02),
    "b": Prior(-0.05, 0.1, 0.05),
    "c": Prior(0.0, 0.01, 0.005),
    "d_ref": Prior(1.0, 0.5, 0.2),
    "log_e": Prior(0.5, 0.5),
    "sigma": Prior(0.0, 0.05),
    "nu": Prior(2.0, 0.1),
}


def _ref(log_coef: float, exponent: float, log_ref: float) -> float:
    """Reference-scale value of a published ln-coefficient with a positive exponent."""
    return log_coef - exponent * log_ref


# Literature centres (shared/docs/REFERENCE.md): Epoch AI's refit of Chinchilla (arXiv:2404.10102)
# for the dense terms, Krajewski et al. 2024 (E = 64 fit) for granularity, Ludziejewski et al.
# 2025 for the joint law. Widths are a few published standard errors.
_LITERATURE = {
    "log_a_ref": Prior(_ref(math.log(482.01), 0.3478, LOG_N_REF), 0.3, 0.3),
    "alpha": Prior(0.3478, 0.05, 0.05),
    "log_b_ref": Prior(_ref(math.log(2085.43), 0.3658, LOG_D_REF), 0.3, 0.3),
    "beta": Prior(0.3658, 0.05, 0.05),
    "log_e": Prior(math.log(1.8172), 0.1),
    "log_g_ref": Prior(_ref(math.log(2.1), 0.115, LOG_N_REF), 0.5, 0.3),
    "delta": Prior(-0.2285, 0.1, 0.1),
    "omega": Prior(0.5529, 0.1, 0.1),
    "zeta": Prior(-0.0259, 0.01, 0.01),
}

# Which prior keys each law samples (the model adds ``sigma`` and ``nu`` to all of them).
LAW_PRIOR_KEYS = {
    "chinchilla": ("log_a_ref", "alpha", "log_b_ref", "beta", "log_e"),
    "experts": ("log_a_ref", "alpha", "gamma", "log_b_ref", "beta", "log_e"),
    "granularity": ("log_a_ref", "alpha", "log_b_ref", "beta", "log_g_ref", "gamma", "log_e"),
    "joint": ("log_a_ref", "alpha", "delta", "gamma", "log_b_ref", "beta", "omega", "zeta",
              "log_e"),
    "clark": ("a", "b", "c", "d_ref"),
}  # fmt: skip
# The joint law's exponents are negative (Ludziejewski et al.'s sign convention).
_NEGATIVE_EXPONENTS = {"joint": ("alpha", "beta")}


def default_priors(law: str, literature: bool = False) -> dict[str, Prior]:
    """A fresh dict of priors for ``law``: weak defaults, or literature-centred ones.

    Example
    -------
    >>> default_priors("chinchilla")["alpha"]
    Prior(mu=0.3, sigma=0.15, spread=0.1)
    """
    if law not in LAW_PRIOR_KEYS:
        raise UnknownPriorError(f"unknown law {law!r}; expected one of {sorted(LAW_PRIOR_KEYS)}")
    priors = {}
    for key in (*LAW_PRIOR_KEYS[law], "sigma", "nu"):
        prior = _LITERATURE.get(key, _WEAK[key]) if literature else _WEAK[key]
        if key in _NEGATIVE_EXPONENTS.get(law, ()):
            prior = replace(prior, mu=-prior.mu)
        priors[key] = prior
    if law == "joint":  # the joint law's reference terms carry their coefficients' signs too
        priors["log_a_ref"] = replace(priors["log_a_ref"], mu=math.log(35.91) - 0.1889 * LOG_N_REF)
        priors["log_b_ref"] = replace(priors["log_b_ref"], mu=math.log(35.98) - 0.1775 * LOG_D_REF)
    return priors


def override_priors(
    priors: dict[str, Prior], overrides: dict[str, dict[str, float]] | None
) -> dict[str, Prior]:
    """Replace fields of named priors; an unknown key or field lists the valid ones."""
    out = dict(priors)
    for key, fields in (overrides or {}).items():
        if key not in out:
            raise UnknownPriorError(f"unknown prior {key!r}; expected one of {sorted(out)}")
        if not isinstance(fields, dict):
            raise UnknownPriorError(f"prior {key!r} must be a table of fields, got {fields!r}")
        unknown = set(fields) - {"mu", "sigma", "spread"}
        if unknown:
            raise UnknownPriorError(
                f"prior {key!r}: unknown field(s) {sorted(unknown)}; expected mu, sigma, spread"
            )
        out[key] = replace(out[key], **{name: float(value) for name, value in fields.items()})
    return out
