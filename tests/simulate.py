"""Simulated run tables from known dense and MoE law parameters."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bayes_scaling.laws import LAWS
from bayes_scaling.runs import validate_runs

# Per-arch truths in raw units (Chinchilla-like dense, MoE with a larger N-exponent, Wang et
# al.'s qualitative finding), one shared irreducible loss.
TRUTH = {
    "dense": {"log_a": math.log(480.0), "alpha": 0.34, "gamma": 0.0, "log_b": math.log(2000.0),
              "beta": 0.36},
    "moe": {"log_a": math.log(700.0), "alpha": 0.36, "gamma": 0.12, "log_b": math.log(1800.0),
            "beta": 0.35},
    "log_e": math.log(1.8),
    "sigma": 0.01,
}  # fmt: skip


def simulate_runs(seed: int, runs_per_arch: int = 40) -> pd.DataFrame:
    """Runs on a log grid of N and D, MoE at E in {8, 16, 32, 64}; Normal noise on log loss."""
    rng = np.random.default_rng(seed)
    frames = []
    for arch in ("dense", "moe"):
        n = np.exp(rng.uniform(math.log(5e7), math.log(5e9), runs_per_arch))
        d = n * np.exp(rng.uniform(math.log(5), math.log(100), runs_per_arch))
        experts = (
            np.ones(runs_per_arch)
            if arch == "dense"
            else rng.choice([8, 16, 32, 64], runs_per_arch)
        )
        inputs = {"log_n": np.log(n), "log_d": np.log(d), "log_experts": np.log(experts)}
        params = {**TRUTH[arch], "log_e": TRUTH["log_e"]}
        log_loss = LAWS["experts"].log_loss(inputs, params)
        loss = np.exp(log_loss + rng.normal(0.0, TRUTH["sigma"], runs_per_arch))
        frames.append(pd.DataFrame({
            "run_id": [f"{arch}-{i}" for i in range(runs_per_arch)], "arch": arch,
            "n_active": n, "n_total": n * experts, "tokens": d, "experts": experts.astype(int),
            "loss": loss, "source": "simulated",
        }))  # fmt: skip
    return validate_runs(pd.concat(frames, ignore_index=True))


# A latent-optimum truth in the hyper model's terms (Step Law form; ln lr and ln batch at the
# reference N = 1e9, D = 1e10; exponents; bowl curvatures in ln loss per (ln x)^2).
HYPER_TRUTH = {
    "lr_0": -7.2, "lr_log_n": -0.7, "lr_log_d": 0.3, "batch_0": 12.6, "batch_log_d": 0.57,
    "loss_0": math.log(2.4), "loss_n": -0.04, "loss_d": -0.05,
    "h_lr": 0.02, "h_batch": 0.015, "rho": -0.3, "sigma": 0.002,
}  # fmt: skip


def simulate_grid(
    seed: int,
    sizes: tuple[float, ...] = (2e8, 4e8, 8e8),
    tokens_per_param: tuple[float, ...] = (20.0, 60.0),
    diverged: int = 0,
) -> pd.DataFrame:
    """Learning-rate x batch grids (6 x 5 runs per cell) around the HYPER_TRUTH optimum, with
    ``diverged`` runs whose loss is replaced by 3x (flagged ``truly_diverged``)."""
    rng = np.random.default_rng(seed)
    truth = HYPER_TRUTH
    frames = []
    for n in sizes:
        for ratio in tokens_per_param:
            d = n * ratio
            x_n, x_d = math.log(n / 1e9), math.log(d / 1e10)
            u_opt = truth["lr_0"] + truth["lr_log_n"] * x_n + truth["lr_log_d"] * x_d
            v_opt = truth["batch_0"] + truth["batch_log_d"] * x_d
            m = truth["loss_0"] + truth["loss_n"] * x_n + truth["loss_d"] * x_d
            u, v = np.meshgrid(u_opt + np.linspace(-2.0, 2.0, 6), v_opt + np.linspace(-2, 2, 5))
            du, dv = u.ravel() - u_opt, v.ravel() - v_opt
            h_u, h_v = truth["h_lr"], truth["h_batch"]
            bowl = 0.5 * (
                h_u * du**2 + 2 * truth["rho"] * math.sqrt(h_u * h_v) * du * dv + h_v * dv**2
            )
            loss = np.exp(m + bowl + rng.normal(0.0, truth["sigma"], du.size))
            frames.append(pd.DataFrame({
                "run_id": [f"n{n:.0e}-d{d:.0e}-{i}" for i in range(du.size)], "arch": "dense",
                "n_active": n, "tokens": d, "lr": np.exp(u.ravel()),
                "batch_tokens": np.exp(v.ravel()), "loss": loss, "source": "simulated",
            }))  # fmt: skip
    runs = pd.concat(frames, ignore_index=True)
    runs["truly_diverged"] = False
    if diverged:
        picked = rng.choice(len(runs), diverged, replace=False)
        runs.loc[picked, "loss"] *= 3.0
        runs.loc[picked, "truly_diverged"] = True
    return validate_runs(runs)
