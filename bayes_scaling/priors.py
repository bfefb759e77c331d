"""Prior objects, reference scales, and the builder of per-arch parameters.

One class per distribution, with the distribution's own field names, so a hypothesis file
cannot mean one thing and say another (``nu = { mu = 3 }`` is refused: nu's prior is
``Gamma(alpha, beta)``):

- :class:`Normal` ``(mu, sigma, spread)``: a real parameter;
- :class:`LogNormal` ``(median, sigma, spread)``: a positive one (exponents), ln x ~ Normal(ln
  median, sigma), so a closed-form optimum never meets a negative exponent;
- :class:`HalfNormal` ``(sigma)``: a scale; :class:`Gamma` ``(alpha, beta)``: shape and rate.

``spread`` is the HalfNormal scale of the arch-to-arch standard deviation (hierarchical pooling,
on the log scale for a LogNormal). Coefficients are sampled at a fixed reference scale, N_REF =
1e9 parameters and D_REF = 1e10 tokens (``log_a_ref`` is ln of A / N^alpha at N_REF), which
removes the near-perfect correlation between ln A and alpha that raw counts create. The scales
are constants, never taken from the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import pymc as pm
import pytensor.tensor as pt

__all__ = [
    "D_REF",
    "N_REF",
    "POOLINGS",
    "AnyPrior",
    "Gamma",
    "HalfNormal",
    "LogNormal",
    "Normal",
    "PriorError",
    "UnknownPriorError",
    "arch_parameter",
    "hyper_priors",
    "override_priors",
    "scale_parameter",
]

N_REF = 1e9
D_REF = 1e10
LOG_N_REF = math.log(N_REF)
LOG_D_REF = math.log(D_REF)
POOLINGS = ("pooled", "hierarchical", "separate")


class PriorError(ValueError):
    """A prior with an unknown key or field, or a value outside its distribution's support."""


UnknownPriorError = PriorError  # the name earlier releases raised


def _check(prior: Any, positive: tuple[str, ...]) -> None:
    """Every field a finite real number; the named ones strictly positive."""
    for item in fields(prior):
        value = getattr(prior, item.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PriorError(f"{item.name} must be a number, not {value!r}")
        if not math.isfinite(value):
            raise PriorError(f"{item.name} must be finite, not {value}")
        if item.name in positive and not value > 0:
            raise PriorError(f"{item.name} must be > 0, not {value}")


@dataclass(frozen=True)
class Normal:
    """Normal(mu, sigma) for a real parameter; ``spread``: HalfNormal scale across archs."""

    mu: float = 0.0
    sigma: float = 1.0
    spread: float = 0.1

    def __post_init__(self) -> None:
        _check(self, ("sigma", "spread"))


@dataclass(frozen=True)
class LogNormal:
    """A positive parameter: ln x ~ Normal(ln median, sigma); ``spread`` across archs, on ln."""

    median: float = 1.0
    sigma: float = 0.5
    spread: float = 0.2

    def __post_init__(self) -> None:
        _check(self, ("median", "sigma", "spread"))


@dataclass(frozen=True)
class HalfNormal:
    """HalfNormal(sigma) for a scale (noise, cell-to-cell deviations)."""

    sigma: float = 1.0

    def __post_init__(self) -> None:
        _check(self, ("sigma",))


@dataclass(frozen=True)
class Gamma:
    """Gamma(alpha, beta): shape and rate (mean alpha / beta), e.g. Student-t degrees of
    freedom."""

    alpha: float = 2.0
    beta: float = 0.1

    def __post_init__(self) -> None:
        _check(self, ("alpha", "beta"))


AnyPrior = Normal | LogNormal | HalfNormal | Gamma


# The learning-rate / batch model (:mod:`bayes_scaling.hyper_model`): reference loss of its
# ``log_l`` term and its default priors.
LOG_L_REF = math.log(2.5)

# Weakly informative priors. lr_0 is ln lr at the reference scale (Step Law's law gives
# ln 8e-4 = -7.1 there); batch_0 ln tokens per step (their law: ln 3e5 = 12.6). Slopes are
# exponents; the loss form needs wide ones (ln L spans only ~0.3 across a sweep, so the
# exponent of L is large: Wang et al. report alpha of several units).
_HYPER_BASE: dict[str, AnyPrior] = {
    "lr_0": Normal(-7.0, 1.5, 0.3),
    "batch_0": Normal(13.0, 2.0, 0.5),
    "loss_0": Normal(LOG_L_REF, 0.5, 0.1),
    "loss_n": Normal(-0.05, 0.1, 0.05),
    "loss_d": Normal(-0.05, 0.1, 0.05),
    # Curvature of ln L in (ln lr)^2 and (ln batch)^2: a 10x miss costs 1-3% of loss.
    "log_h_lr": Normal(-5.0, 2.0, 0.5),
    "log_h_batch": Normal(-5.0, 2.0, 0.5),
    "h_corr": Normal(0.0, 0.5, 0.3),  # atanh of the bowl's correlation
    # ln of the ratio of curvatures above and below the optimum (0: a symmetric bowl).
    "skew_lr": Normal(0.0, 1.0, 0.3),
    "skew_batch": Normal(0.0, 1.0, 0.3),
    # Cell-to-cell deviations from the laws: Gamma(2, .) has the means of the HalfNormal(0.3,
    # 0.3, 0.05, 0.5) priors it replaced, but its density falls to zero at zero. No power law
    # fits a grid's cells exactly, and with a few cells (a trainer grid: 2 per arch) the data
    # cannot rule tau -> 0 out, where a HalfNormal let the posterior into the funnel between
    # tau and the cells' values (divergent transitions at tau_loss ~ 1e-3).
    "tau_lr": Gamma(2.0, 8.0),
    "tau_batch": Gamma(2.0, 8.0),
    "tau_loss": Gamma(2.0, 50.0),
    "tau_h": Gamma(2.0, 5.0),
    "sigma": HalfNormal(0.01),
    "nu": Gamma(2.0, 0.1),
}
_HYPER_SLOPE: dict[str, AnyPrior] = {"log_l": Normal(0.0, 10.0, 2.0)}
_HYPER_DEFAULT_SLOPE = Normal(0.0, 1.0, 0.2)
# Scalars (not per arch): deviations of cells from the law, and the noise.
HYPER_SCALARS = ("tau_lr", "tau_batch", "tau_loss", "tau_h", "sigma", "nu")


def hyper_priors(lr_terms: Sequence[str], batch_terms: Sequence[str]) -> dict[str, AnyPrior]:
    """Default priors for a spec with these terms: ``lr_<term>`` / ``batch_<term>`` slopes."""
    priors = dict(_HYPER_BASE)
    for prefix, terms in (("lr", lr_terms), ("batch", batch_terms)):
        for term in terms:
            priors[f"{prefix}_{term}"] = _HYPER_SLOPE.get(term, _HYPER_DEFAULT_SLOPE)
    return priors


def _describe(prior: AnyPrior) -> str:
    return f"{type(prior).__name__}({', '.join(f.name for f in fields(prior))})"


def override_priors(
    priors: dict[str, AnyPrior], overrides: Any, origin: str = "priors"
) -> dict[str, AnyPrior]:
    """Replace fields of named priors; an unknown key or field, a non-number or a value outside
    the distribution's support raises :class:`PriorError` naming the key and what is allowed."""
    if overrides is None:
        return dict(priors)
    if not isinstance(overrides, dict):
        raise PriorError(f"{origin}: expected a table of priors, not {overrides!r}")
    out = dict(priors)
    for key, values in overrides.items():
        if key not in out:
            raise PriorError(f"{origin}: unknown prior {key!r}; expected one of {sorted(out)}")
        where = f"{origin}.{key} ({_describe(out[key])})"
        if not isinstance(values, dict):
            raise PriorError(f"{where}: expected a table of fields, not {values!r}")
        allowed = [f.name for f in fields(out[key])]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise PriorError(f"{where}: unknown field(s) {unknown}; expected some of {allowed}")
        try:
            out[key] = replace(out[key], **values)
        except PriorError as error:
            raise PriorError(f"{where}: {error}") from error
    return out


def scale_parameter(name: str, prior: AnyPrior) -> Any:
    """A positive scalar (a noise scale or a deviation): HalfNormal or Gamma."""
    if isinstance(prior, HalfNormal):
        return pm.HalfNormal(name, prior.sigma)
    if isinstance(prior, Gamma):
        return pm.Gamma(name, prior.alpha, prior.beta)
    raise PriorError(f"{name}: a scale needs a HalfNormal or Gamma prior, not {_describe(prior)}")


def arch_parameter(
    name: str, prior: AnyPrior, pooling: str, sign: float = 1.0, centred: bool = False
) -> Any:
    """One law parameter with dims ``arch``: pooled, hierarchical or separate.

    A :class:`LogNormal` prior gives a positive parameter built on the log scale (sampled
    variables ``log_<name>_mu``, ``log_<name>_spread``, ``log_<name>_z``); ``sign = -1`` then
    makes it negative by construction (laws written a N^alpha with alpha < 0). Hierarchical
    parameters are non-centred (``mu + spread * z``) unless ``centred``, which samples the
    per-arch values ``<base>_arch ~ Normal(mu, spread)`` directly (the same model).
    """
    n_arch = len(pm.modelcontext(None).coords["arch"])
    if isinstance(prior, LogNormal):
        location, base = math.log(prior.median), f"log_{name}"
    elif isinstance(prior, Normal):
        location, base = prior.mu, name
    else:
        raise PriorError(f"{name}: a per-arch parameter needs a Normal or LogNormal prior")
    if pooling == "separate":
        value = pm.Normal(f"{base}_arch", location, prior.sigma, dims="arch")
    else:
        mu = pm.Normal(f"{base}_mu", location, prior.sigma)
        if pooling == "pooled":
            value = pt.repeat(mu, n_arch)
        else:
            spread = pm.HalfNormal(f"{base}_spread", prior.spread)
            if centred:
                value = pm.Normal(f"{base}_arch", mu, spread, dims="arch")
            else:
                z = pm.Normal(f"{base}_z", 0.0, 1.0, dims="arch")
                value = mu + spread * z
    if isinstance(prior, LogNormal):
        value = sign * pt.exp(value)
    return pm.Deterministic(name, value, dims="arch")
