# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From the trainer to the posterior
#
# The package's own trainer (`bayes_scaling.train`) produces runs that the models fit with no
# conversion. This notebook runs a sweep, then fits
#
# 1. the hierarchical experts loss law (dense and MoE drawn around shared values), with bands
#    out to 10x the largest model, and
# 2. the latent-optimum learning-rate / batch model on the sweep's lr x batch grid.
#
# With `BAYES_SCALING_SMALL=1` (the fast test tier) it runs `models/sweeps/tiny.toml` (32 runs,
# about a minute) and short chains. Otherwise it also loads the bundled `trainer-cpu` data set,
# the 48-run CPU sweep of `models/sweeps/cpu.toml`, and fits that.

# %%
import os
from pathlib import Path

import arviz as az
import matplotlib.pyplot as plt
import numpy as np

from bayes_scaling.fit import fit
from bayes_scaling.hyper_predict import recommend_hyperparameters
from bayes_scaling.notebook import assert_converged, is_small, sampling
from bayes_scaling.plots import plot_loss_vs_compute, plot_optimum_vs_scale
from bayes_scaling.predict import predict_loss
from bayes_scaling.runs import read_runs
from bayes_scaling.spec import read_spec
from bayes_scaling.train.sweep import run_sweep

SMALL = is_small()
SAMPLING = sampling(random_seed=0)


ROOT = Path.cwd() if (Path.cwd() / "models").is_dir() else Path.cwd().parent
os.chdir(ROOT)  # the sweep file names its corpus relative to the repository

# %% [markdown]
# ## 1. A tiny sweep: 2 sizes x 2 budgets x {dense, MoE with 4 experts}, and an lr x batch grid
#
# Rows are appended as runs finish; rerunning the cell skips finished runs.

# %%
out = Path("out/notebook-05/tiny.jsonl")
run_sweep("models/sweeps/tiny.toml", out, log=lambda line: None)
tiny = read_runs(out)
print(
    tiny[
        ["run_id", "arch", "n_active", "n_total", "tokens", "lr", "batch_tokens", "loss", "status"]
    ]
)
assert len(tiny) == 32

# %% [markdown]
# The run table to fit: the tiny sweep in SMALL mode, the bundled 48-run CPU sweep otherwise.

# %%
if SMALL:
    runs = tiny
else:
    from bayes_scaling.datasets import load_dataset

    runs = load_dataset("trainer-cpu")
print(f"{(runs['status'] != 'finished').sum()} run(s) diverged in training")
runs = runs[runs["status"] == "finished"].reset_index(drop=True)
print(
    runs.groupby("arch").agg(
        runs=("loss", "size"), n_min=("n_active", "min"), n_max=("n_active", "max")
    )
)

# %% [markdown]
# ## 2. The loss law, dense vs MoE
#
# Only the runs at the default learning rate and batch enter the loss law (the lr x batch runs
# are off-optimum by design). The experts law with its hierarchy over arch; 50% and 90% bands
# to 10x the largest model.

# %%
base_lr = 0.003
base_batch = runs.loc[runs["lr"] == base_lr, "batch_tokens"].mode().iloc[0]
scaling = runs[(runs["lr"] == base_lr) & (runs["batch_tokens"] == base_batch)].reset_index(
    drop=True
)
loss_fit = fit(scaling, read_spec("loss/wang2024"), **SAMPLING)
assert_converged(loss_fit)
print(az.summary(loss_fit.idata, var_names=["alpha", "beta", "gamma"], kind="stats").to_string())
plot_loss_vs_compute(loss_fit, extend=10.0)
plt.show()
largest = scaling["n_active"].max()
far = predict_loss(
    loss_fit,
    {"n_active": [10 * largest] * 2, "tokens": [20 * 10 * largest] * 2, "arch": ["dense", "moe"],
     "experts": [1, int(scaling["experts"].max())]},
    probs=(0.9,),
)  # fmt: skip
print(far.round(4).to_string(index=False))
assert (far["loss_low_90"] < far["loss_median"]).all()
assert (far["loss_median"] < far["loss_high_90"]).all()

# %% [markdown]
# ## 3. Learning rate and batch from the lr x batch grid
#
# Each (arch, N, D) cell with several learning rates and batch sizes gets a latent bowl. The
# grids here share one token budget, so the optimum can only follow N: the Step Law form with
# its D terms dropped. Intercept and exponent are strongly correlated this far from the
# reference scale (1e9 parameters), so nutpie's low-rank mass matrix is used. Two sizes cannot
# pin an exponent down: the bands say so.

# %%
from bayes_scaling.spec import HyperSpec  # noqa: E402

cells = runs.groupby(["arch", "n_active", "n_total", "tokens"])["run_id"].transform("size")
grid_runs = runs[cells >= 4].reset_index(drop=True)
spec = HyperSpec(form="steplaw", lr_terms=("log_n",), batch_terms=("log_n",), name="lr-batch in N")
hyper = fit(grid_runs, spec, adaptation="low_rank", **SAMPLING)
print(hyper.convergence())
print(f"{len(hyper.off_bowl_runs)} grid run(s) off the bowl (blew up at a high lr)")
plot_optimum_vs_scale(hyper, extend=10.0)
plt.show()
plan = recommend_hyperparameters(
    hyper,
    {"n_active": [grid_runs["n_active"].max()] * 2, "tokens": [grid_runs["tokens"].max()] * 2,
     "arch": ["dense", "moe"],
     "n_total": [grid_runs["n_active"].max(), grid_runs["n_total"].max()]},
    probs=(0.9,),
)  # fmt: skip
print(plan[["arch", "lr_median", "lr_low_90", "lr_high_90", "batch_median", "batch_low_90",
            "batch_high_90", "penalty_mean"]].to_string(index=False))  # fmt: skip
best = grid_runs.loc[
    grid_runs.groupby("arch")["loss"].idxmin(), ["arch", "lr", "batch_tokens", "loss"]
]
print("best grid runs:\n", best.to_string(index=False))
# Small token budgets favour many small steps: when the best run sits on the grid's edge the
# optimum lies outside it, the bowl extrapolates, and the intervals above are wide for it.
for _, row in best.iterrows():
    edges = grid_runs[grid_runs["arch"] == row["arch"]]
    for column in ("lr", "batch_tokens"):
        if row[column] in (edges[column].min(), edges[column].max()):
            print(f"{row['arch']}: best {column} {row[column]:g} is on the edge of the grid")
assert np.all(plan["lr_low_90"] < plan["lr_high_90"])
