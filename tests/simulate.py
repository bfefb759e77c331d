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
