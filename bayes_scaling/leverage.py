"""Efficiency Leverage (Tian et al. 2025, arXiv:2507.17702): how many times more compute dense
needs to reach an MoE configuration's loss, as a law of the MoE's shape and the compute.

    EL(A, G, C) = Ah ** (a + d log10 C + gamma (log2 G)**2 + beta log2 G)
    1 / Ah = 1 / (A + (1 / A_start - 1 / A_max)**-1) + 1 / A_max

with A the activation ratio (active plus shared experts over all experts plus shared), G the
granularity 2 d_model / d_expert and C the training compute. The paper's constants reproduce
its claims (EL ~ 7.2 at A = 3.1%, G = 12, C = 1e22; the best G ~ 11) only with log10 C and
log2 G, which is how they are read here (``../shared/docs/REFERENCE.md``, section 4).

- :data:`TIAN2025` / :class:`LeverageLaw`: the law, its constants as scalars or one value per
  posterior draw.
- :func:`leverage_measurements`: EL of each MoE run of a table, per draw of a dense loss
  posterior: the compute at which dense, on the run's own tokens-per-parameter path, reaches
  the run's measured loss, over the run's compute.
- :func:`fit_leverage`: the law's constants fitted to such measurements (PyMC, priors centred
  on Tian et al.'s constants, one intercept per router drawn around a population value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.frontier import DecisionError, arch_law
from bayes_scaling.posterior import Posterior

__all__ = [
    "TIAN2025",
    "LeverageFit",
    "LeverageLaw",
    "activation_ratio",
    "configuration_leverage",
    "fit_leverage",
    "leverage_measurements",
    "published_claims",
    "tian_granularity",
]


@dataclass(frozen=True)
class LeverageLaw:
    """Tian et al.'s EL law; each constant a scalar or an array of draws (broadcast as (draw, 1)
    against the inputs' points)."""

    a: Any
    d: Any
    gamma: Any
    beta: Any
    a_start: Any = 0.0163
    a_max: Any = 5.28e16

    def _column(self, name: str) -> np.ndarray:
        value = np.asarray(getattr(self, name), dtype=float)
        return value[:, np.newaxis] if value.ndim == 1 else value

    def saturated_ratio(self, ratio: Any) -> np.ndarray:
        """Ah: the activation ratio saturated at both ends (A_start below, A_max above)."""
        a_start, a_max = self._column("a_start"), self._column("a_max")
        ratio = np.asarray(ratio, dtype=float)
        return 1.0 / (1.0 / (ratio + 1.0 / (1.0 / a_start - 1.0 / a_max)) + 1.0 / a_max)

    def exponent(self, granularity: Any, flops: Any) -> np.ndarray:
        """a + d log10 C + gamma (log2 G)^2 + beta log2 G."""
        log_g = np.log2(np.asarray(granularity, dtype=float))
        log_c = np.log10(np.asarray(flops, dtype=float))
        a, d, gamma, beta = (self._column(n) for n in ("a", "d", "gamma", "beta"))
        return a + d * log_c + gamma * log_g**2 + beta * log_g

    def log_leverage(self, ratio: Any, granularity: Any, flops: Any) -> np.ndarray:
        """ln EL."""
        return self.exponent(granularity, flops) * np.log(self.saturated_ratio(ratio))

    def __call__(self, ratio: Any, granularity: Any, flops: Any) -> np.ndarray:
        """EL at activation ratio A, granularity G and compute C."""
        _check_inputs(ratio, granularity, flops)
        return np.exp(self.log_leverage(ratio, granularity, flops))

    def best_granularity(self) -> np.ndarray:
        """The G of highest EL: 2^(-beta / (2 gamma)) (Ah < 1, so the exponent's minimum),
        whatever A and C; infinite where gamma <= 0 (no interior optimum)."""
        gamma = np.asarray(self.gamma, dtype=float)
        beta = np.asarray(self.beta, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gamma > 0, 2.0 ** (-beta / (2 * gamma)), np.inf)


TIAN2025 = LeverageLaw(a=1.23, d=-0.0761, gamma=0.0167, beta=-0.117)
"""The paper's fitted constants (Tian et al. 2025, section 4 of REFERENCE.md)."""


def _check_inputs(ratio: Any, granularity: Any, flops: Any) -> None:
    for name, value, low, high in (("activation ratio", ratio, 0.0, 1.0),
                                   ("granularity", granularity, 0.0, np.inf),
                                   ("compute", flops, 0.0, np.inf)):  # fmt: skip
        array = np.asarray(value, dtype=float)
        bad = ~np.isfinite(array) | (array <= low) | (array > high)
        if bad.any():
            raise DecisionError(
                f"{name} must lie in ({low:g}, {high:g}]; got {array[bad].ravel()[0]!r}"
            )


def activation_ratio(runs: pd.DataFrame) -> np.ndarray:
    """A = (k + shared) / (E + shared) per run, from ``top_k``, ``experts`` and (if present)
    ``shared_experts``; the package's granularity splits experts and active experts alike, so
    it leaves A unchanged."""
    for column in ("experts", "top_k"):
        if column not in runs:
            raise DecisionError(f"the activation ratio needs a {column!r} column")
    shared = runs.get("shared_experts", 0.0)
    k = runs["top_k"].to_numpy(float) + np.asarray(shared, dtype=float)
    return k / (runs["experts"].to_numpy(float) + np.asarray(shared, dtype=float))


def tian_granularity(runs: pd.DataFrame) -> np.ndarray:
    """Tian et al.'s G = 2 d_model / d_expert per run: d_expert = d_ff / granularity, with
    d_ff the column if present, else the trainer's default (8/3 d_model up to a multiple of 8)."""
    if "d_model" not in runs:
        raise DecisionError("Tian et al.'s granularity needs a 'd_model' column")
    d_model = runs["d_model"].to_numpy(float)
    d_ff = runs["d_ff"].to_numpy(float) if "d_ff" in runs else 8 * np.ceil(d_model / 3)
    split = runs["granularity"].to_numpy(float) if "granularity" in runs else 1.0
    return 2 * d_model * split / d_ff


def leverage_measurements(
    dense: Posterior, runs: pd.DataFrame, dense_arch: str = "dense", max_draws: int = 1000
) -> pd.DataFrame:
    """EL of each MoE run in ``runs``, per draw of ``dense`` (a loss posterior with a dense arch,
    fitted on every eval set the MoE runs were scored on).

    For a run of compute C = 6 N D and measured loss L, compute-optimal dense reaches L at
    compute C_dense (solved per draw on the dense frontier); EL = C_dense / C, the definition
    :func:`configuration_leverage` and ``decide`` use. A run off its own compute optimum gets
    a lower EL than the same architecture would at its optimum. Returns one row per run with
    its ``activation_ratio``, ``tian_granularity``, ``flops``, the median and standard
    deviation of ln EL over draws (``log_el_median``, ``log_el_sd``) and the share of draws
    where dense never reaches L (``unreachable``; counted as +inf in the median). Diverged runs
    (``status`` other than finished) are refused, naming them.
    """
    from bayes_scaling.moe import _solve_decreasing

    missing = [c for c in ("run_id", "arch", "n_active", "tokens", "loss", "experts")
               if c not in runs]  # fmt: skip
    if missing:
        raise DecisionError(f"leverage measurements need column(s) {missing}")
    moe = runs[runs["experts"] > 1].reset_index(drop=True)
    if moe.empty:
        raise DecisionError("no MoE runs (experts > 1) to measure Efficiency Leverage on")
    if "status" in moe and (moe["status"] != "finished").any():
        bad = moe.loc[moe["status"] != "finished", "run_id"].astype(str).tolist()
        raise DecisionError(f"runs that did not finish cannot measure leverage: {bad[:5]}")
    flops = 6 * moe["n_active"].to_numpy(float) * moe["tokens"].to_numpy(float)
    eval_sets = moe["eval_set"].astype(str) if "eval_set" in moe else None
    groups = [None] if eval_sets is None else list(eval_sets.unique())
    log_el = np.full((0, len(moe)), np.nan)
    for eval_set in groups:  # each run against dense on its own eval set
        mine = np.ones(len(moe), bool) if eval_sets is None else (eval_sets == eval_set).to_numpy()
        law = arch_law(dense, dense_arch, eval_set=eval_set, max_draws=max_draws)
        if not len(log_el):
            log_el = np.full((law.draws, len(moe)), np.nan)
        target = np.broadcast_to(np.log(moe["loss"].to_numpy(float)[mine]), (law.draws, mine.sum()))
        start = np.broadcast_to(np.log(flops[mine]), target.shape)

        def frontier_loss(log_c: np.ndarray, law: Any = law) -> np.ndarray:
            return np.asarray(law.optimum(log_c)[2])  # ln loss of compute-optimal dense

        log_c = _solve_decreasing(frontier_loss, target, start)
        log_el[:, mine] = log_c - np.log(flops[mine])
    extended = np.where(np.isnan(log_el), np.inf, log_el)
    finite = np.where(np.isnan(log_el), np.nan, log_el)
    with np.errstate(invalid="ignore"):
        spread = (
            np.nanstd(finite, axis=0) if np.isfinite(finite).any() else np.full(len(moe), np.nan)
        )
    return pd.DataFrame({
        "run_id": moe["run_id"].astype(str), "arch": moe["arch"].astype(str),
        "experts": moe["experts"].to_numpy(float),
        "activation_ratio": activation_ratio(moe), "tian_granularity": tian_granularity(moe),
        "flops": flops, "loss": moe["loss"].to_numpy(float),
        "log_el_median": np.median(extended, axis=0), "log_el_sd": spread,
        "unreachable": np.isnan(log_el).mean(axis=0),
    })  # fmt: skip


def configuration_leverage(
    posterior: Posterior,
    arch: str,
    n_active: float,
    tokens: float,
    experts: float,
    eval_set: str | None = None,
    dense_arch: str = "dense",
    max_draws: int | None = None,
) -> np.ndarray:
    """EL of one proposed MoE configuration, per draw of a loss posterior that has a dense arch:
    the compute at which compute-optimal dense reaches the configuration's expected loss, over
    the configuration's 6 N D. NaN for draws where dense never reaches it."""
    from bayes_scaling.moe import _solve_decreasing

    moe_law = arch_law(posterior, arch, eval_set, max_draws)
    dense_law = arch_law(posterior, dense_arch, eval_set, max_draws)
    flops = 6.0 * n_active * tokens
    target = moe_law.log_loss(np.log(n_active), np.log(tokens), experts)[:, 0]
    start = np.full(target.shape, np.log(flops))
    log_c = _solve_decreasing(lambda x: dense_law.optimum(x[:, np.newaxis])[2][:, 0], target, start)
    return np.exp(log_c - np.log(flops))


@dataclass
class LeverageFit:
    """The fitted EL law: ``draws`` of each constant (per router for ``a``), the data, and the
    sampler's result (``idata``) for diagnostics."""

    draws: dict[str, np.ndarray]
    routers: list[str]
    measurements: pd.DataFrame
    idata: Any

    def law(self, router: str | None = None) -> LeverageLaw:
        """The law per draw, with the router's own intercept (default: the population one)."""
        if router is not None and router not in self.routers:
            raise DecisionError(f"unknown router {router!r}; this fit has {self.routers}")
        a = self.draws["a_mu"] if router is None else self.draws["a"][:, self.routers.index(router)]
        names = {f.name for f in fields(LeverageLaw)} - {"a"}
        return LeverageLaw(a=a, **{n: self.draws[n] for n in names if n in self.draws})

    def predict(
        self, ratio: Any, granularity: Any, flops: Any, router: str | None = None,
        prob: float = 0.9,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Median and central ``prob`` interval of EL at the points (over draws)."""
        values = self.law(router)(ratio, granularity, flops)
        from bayes_scaling.intervals import central_interval

        low, high = central_interval(values, prob)
        return {"median": np.median(values, axis=0), "low": low, "high": high}


PRIOR_SD = {"a": 0.5, "d": 0.05, "gamma": 0.02, "beta": 0.1}
"""Prior standard deviations around Tian et al.'s constants (their sizes: loose enough that
data a tenth of the way across the paper's range can move each one)."""


def fit_leverage(
    measurements: pd.DataFrame,
    prior: LeverageLaw = TIAN2025,
    prior_sd: Mapping[str, float] | None = None,
    random_seed: int = 0,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
) -> LeverageFit:
    """Fit the EL law to measurements (:func:`leverage_measurements`, or any table with
    ``activation_ratio``, ``tian_granularity``, ``flops``, ``log_el_median``, ``log_el_sd`` and
    ``arch``). ln EL_obs ~ Normal(law, sqrt(sd^2 + sigma^2)), sigma the law's misfit; each
    router (``arch``) has its own intercept ``a`` drawn around ``a_mu``; the saturation ends
    A_start and A_max stay at ``prior``'s values (a table with a few activation ratios cannot
    place them). Rows with any unreachable draw, or with an invalid ratio, granularity,
    compute or standard deviation, are refused naming the row, not dropped."""
    import pymc as pm

    from bayes_scaling.fit import sample

    needed = ("activation_ratio", "tian_granularity", "flops", "log_el_median", "log_el_sd", "arch")
    missing = [c for c in needed if c not in measurements]
    if missing:
        raise DecisionError(f"leverage measurements lack column(s) {missing}")
    data = measurements.reset_index(drop=True)
    bad = ~np.isfinite(data["log_el_median"].to_numpy(float))
    bad |= ~(data["log_el_sd"].to_numpy(float) >= 0)
    if "unreachable" in data:
        bad |= data["unreachable"].to_numpy(float) > 0
    for column in ("activation_ratio", "tian_granularity", "flops"):
        values = data[column].to_numpy(float)
        bad |= ~np.isfinite(values) | (values <= 0)
    bad |= data["activation_ratio"].to_numpy(float) > 1
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        run = data["run_id"].iloc[row] if "run_id" in data else "?"
        raise DecisionError(
            f"leverage measurements row {row} (run {run}): its EL is unbounded or missing on "
            "some draws (dense never reaches its loss), or its activation ratio, granularity, "
            "compute or log_el_sd is not a valid number; leave it out explicitly"
        )
    sd = {**PRIOR_SD, **(prior_sd or {})}
    routers, index = np.unique(data["arch"].astype(str), return_inverse=True)
    log_ah = np.log(prior.saturated_ratio(data["activation_ratio"].to_numpy(float)))
    log_g = np.log2(data["tian_granularity"].to_numpy(float))
    log_c = np.log10(data["flops"].to_numpy(float))
    with pm.Model(coords={"router": list(routers)}):
        a_mu = pm.Normal("a_mu", float(prior.a), sd["a"])
        a_spread = pm.HalfNormal("a_spread", 0.25)
        a = pm.Deterministic(
            "a", a_mu + a_spread * pm.Normal("a_z", 0, 1, dims="router"), dims="router"
        )
        d = pm.Normal("d", float(prior.d), sd["d"])
        gamma = pm.Normal("gamma", float(prior.gamma), sd["gamma"])
        beta = pm.Normal("beta", float(prior.beta), sd["beta"])
        sigma = pm.HalfNormal("sigma", 0.3)
        mean = (a[index] + d * log_c + gamma * log_g**2 + beta * log_g) * log_ah
        scale = pm.math.sqrt(data["log_el_sd"].to_numpy(float) ** 2 + sigma**2)
        pm.Normal("log_el", mean, scale, observed=data["log_el_median"].to_numpy(float))
        idata = sample(pm.modelcontext(None), draws=draws, tune=tune, chains=chains,
                       random_seed=random_seed, progressbar=False)  # fmt: skip
    post = idata["posterior"]
    out = {name: post[name].stack(sample=("chain", "draw")).transpose("sample", ...).to_numpy()
           for name in ("a_mu", "a", "d", "gamma", "beta", "sigma")}  # fmt: skip
    out["a_start"], out["a_max"] = np.asarray(prior.a_start), np.asarray(prior.a_max)
    return LeverageFit(out, [str(r) for r in routers], data, idata)


def published_claims(law: LeverageLaw = TIAN2025) -> dict[str, float]:
    """The two numbers Tian et al. state: EL at A = 3.1%, G = 12, C = 1e22 and the best G."""
    return {"el": float(np.ravel(law(0.031, 12.0, 1e22))[0]),
            "best_granularity": float(np.ravel(law.best_granularity())[0])}  # fmt: skip
