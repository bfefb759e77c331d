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
# conversion. Every run is scored on the same validation tokens (the fixed evaluation), and its
# row keeps the evaluation's standard error and 32 block means, so two runs compare with a
# paired standard error. This notebook
#
# 1. compares dense with three routers (token choice, expert choice, Mixture of Tokens) at
#    equal active parameters, over seeds, and says which differences exceed their uncertainty;
# 2. fits the experts loss law (pooled over the routers), with bands to 10x;
# 3. fits the latent-optimum learning-rate / batch model on the lr x batch grid and checks that
#    the optimum lies inside the grid.
#
# With `BAYES_SCALING_SMALL=1` (the fast test tier) it runs `models/sweeps/tiny.toml` (28 runs,
# about a minute) and short chains. Otherwise it fits the bundled `trainer-cpu` data set, the
# 161-run CPU sweep of `models/sweeps/cpu.toml`, and asserts every fit converged.

# %%
import os
from pathlib import Path

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bayes_scaling.datasets.loaders import trainer_grid_runs
from bayes_scaling.fit import fit
from bayes_scaling.hyper_model import assign_cells
from bayes_scaling.hyper_predict import fitted_bowls
from bayes_scaling.notebook import assert_converged, is_small, sampling
from bayes_scaling.plots import plot_loss_vs_compute
from bayes_scaling.predict import predict_loss
from bayes_scaling.runs import read_runs
from bayes_scaling.spec import read_spec
from bayes_scaling.train.config import run_id_of
from bayes_scaling.train.evaluate import paired_se
from bayes_scaling.train.sweep import expand_sweep, run_sweep

SMALL = is_small()
SAMPLING = sampling(random_seed=0)

ROOT = Path.cwd() if (Path.cwd() / "models").is_dir() else Path.cwd().parent
os.chdir(ROOT)  # the sweep file names its corpus relative to the repository

# %% [markdown]
# ## 1. A tiny sweep: dense and three routers at two sizes and budgets, and an lr x batch grid
#
# Rows are appended as runs finish; rerunning the cell skips finished runs.

# %%
out = Path("out/notebook-05/tiny.jsonl")
run_sweep("models/sweeps/tiny.toml", out, log=lambda line: None)
ids = {run_id_of(config) for config in expand_sweep("models/sweeps/tiny.toml")[1]}
tiny = read_runs(out)
tiny = tiny[tiny["run_id"].isin(ids)].reset_index(drop=True)  # not rows of older sweep files
print(tiny[["run_id", "arch", "n_active", "n_total", "tokens", "lr", "batch_tokens", "loss",
            "eval_se", "status"]])  # fmt: skip
assert len(tiny) == 28

# %% [markdown]
# The run table to analyse: the tiny sweep in SMALL mode, the bundled CPU sweep otherwise.

# %%
if SMALL:
    runs = tiny
    BASE = {"d_model": 32, "tokens": 40_960, "lr": 0.01, "batch_tokens": 256.0, "experts": 4}
else:
    from bayes_scaling.datasets import load_dataset

    runs = load_dataset("trainer-cpu")
    BASE = {"d_model": 32, "tokens": 307_200, "lr": 0.01, "batch_tokens": 512.0, "experts": 8}
print(f"{(runs['status'] != 'finished').sum()} run(s) diverged in training")
runs = runs[runs["status"] == "finished"].reset_index(drop=True)
print(runs.groupby("arch").agg(runs=("loss", "size"), n_min=("n_active", "min"),
                               n_max=("n_active", "max")))  # fmt: skip

# %% [markdown]
# ## 2. Dense vs the routers at equal active parameters
#
# One size and budget, the base learning rate and batch, scored on the sweep's largest
# evaluation set; each router at every (E, G) the sweep has, each seed paired with the dense run
# of the same seed (same batches). The effect is the mean loss difference over seeds. Two
# sources of uncertainty: training noise (the standard error over seeds; with one seed, none
# is known) and the evaluation's (the paired standard error of the difference over the 32
# blocks of validation text, the largest over seeds: how far another draw of validation text
# could move it). A difference "exceeds its uncertainty" beyond 2 x their root sum of squares.

# %%
at_base = np.ones(len(runs), bool)
for column in ("d_model", "tokens", "lr", "batch_tokens"):
    at_base &= np.isclose(runs[column], BASE[column])
compare = runs[at_base & (runs["eval_tokens"] == runs.loc[at_base, "eval_tokens"].max())]
dense = compare[compare["arch"] == "dense"].set_index("seed")
lines = []
for (arch, experts, granularity), group in compare[compare["arch"] != "dense"].groupby(
    ["arch", "experts", "granularity"]
):
    group = group[group["seed"].isin(dense.index)]
    diffs = group["loss"].to_numpy() - dense.loc[group["seed"], "loss"].to_numpy()
    eval_se = max(
        paired_se(r.eval_blocks, dense.loc[r.seed, "eval_blocks"]) for r in group.itertuples()
    )
    seed_se = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    se = float(np.hypot(seed_se, eval_se))
    lines.append({"arch": arch, "experts": experts, "G": granularity, "seeds": len(diffs),
                  "loss": group["loss"].mean(), "vs_dense": diffs.mean(), "seed_se": seed_se,
                  "eval_se": eval_se, "exceeds": abs(diffs.mean()) > 2 * se})  # fmt: skip
table = pd.DataFrame(lines)
print(f"dense: {dense['loss'].mean():.4f} over {len(dense)} seed(s), "
      f"{int(compare['eval_tokens'].iloc[0])} evaluation tokens")  # fmt: skip
print(table.round(4).to_string(index=False))
for line in table.itertuples():
    verdict = "exceeds" if line.exceeds else "is within"
    side = "below" if line.vs_dense < 0 else "above"
    total = np.hypot(line.seed_se, line.eval_se)
    print(f"{line.arch} E={line.experts} G={line.G:g}: {abs(line.vs_dense):.4f} nats {side} "
          f"dense, {verdict} 2 x its uncertainty {total:.4f}")  # fmt: skip

# %% [markdown]
# The evaluation's resolution: each reported difference against the evaluation's paired
# standard error. The old random-batch evaluation moved one model's score by 0.1-0.16 nats,
# more than most of these differences; the fixed one resolves every reported difference at
# least 5 times over, and most at least 10 times. More validation text does not buy more: the
# paired standard error measures how the difference varies across the standard library's
# files, and the whole split (737k tokens) gives about the same as its first 262k.

# %%
reported = table[table["exceeds"]].assign(ratio=lambda t: t["vs_dense"].abs() / t["eval_se"])
print(reported[["arch", "experts", "G", "vs_dense", "eval_se", "ratio"]].round(4).to_string())
coarse = reported[reported["ratio"] <= 10]
print(
    f"{len(reported)} difference(s) reported; {len(reported) - len(coarse)} at least 10x the "
    f"evaluation's standard error; below 10x: {coarse[['arch', 'experts', 'G']].values.tolist()}"
)
if not SMALL:
    assert len(reported) > 0
    assert (reported["ratio"] > 5).all(), reported

# %% [markdown]
# ## 3. The loss law, dense and the routers
#
# The scaling runs (one seed, G = 1, the base learning rate and batch, the 262,144-token
# evaluation) with the experts law, pooled over arch: the routers share one law and differ
# through the expert count E. The hierarchical version (`loss/wang2024`, one arch per router)
# does not converge on these 36 runs (24 divergent transitions at its defaults, 4 at
# target_accept 0.99): four archs of 8-10 runs at two or three budgets leave their deviations
# to a funnel. The router differences are measured directly in section 2. 50% and 90% bands to
# 10x the largest model.

# %%
scaling = runs[
    np.isclose(runs["lr"], BASE["lr"]) & np.isclose(runs["batch_tokens"], BASE["batch_tokens"])
    & (runs["seed"] == 0) & (runs["granularity"] == 1)
    & runs["experts"].isin([1, BASE["experts"]])
]  # fmt: skip
scaling = scaling[scaling["eval_set"] == scaling["eval_set"].mode()[0]].reset_index(drop=True)
print(scaling.groupby("arch").size())
loss_fit = fit(scaling, read_spec("loss/wang2024-pooled"), **SAMPLING)
assert_converged(loss_fit)
print(az.summary(loss_fit.idata, var_names=["alpha", "beta", "gamma"], kind="stats").to_string())
plot_loss_vs_compute(loss_fit, extend=10.0)
plt.show()
archs = sorted(scaling["arch"].unique())
largest = scaling["n_active"].max()
far = predict_loss(
    loss_fit,
    {"n_active": [10 * largest] * len(archs), "tokens": [200 * largest] * len(archs),
     "arch": archs, "experts": [1 if a == "dense" else BASE["experts"] for a in archs]},
    probs=(0.9,),
)  # fmt: skip
print(far.round(4).to_string(index=False))
assert (far["loss_low_90"] < far["loss_median"]).all()
assert (far["loss_median"] < far["loss_high_90"]).all()

# %% [markdown]
# ## 4. Learning rate and batch from the lr x batch grid
#
# Each (arch, N, D) cell of the grid gets a latent bowl (Step Law's hypothesis). The grid has
# two token budgets per arch at one size, so the optimum's dependence on D is measured and its
# dependence on N left to the priors. At the smaller budget the best runs use one or two
# sequences per step, on the grid's small-batch edge; the larger budget moves the optimal batch
# up, and there the best runs and the fitted optimum lie inside the grid (asserted in full mode).
#
# The law is `hyper/steplaw-pooled`: one law for dense and top-k, whose cells deviate from it
# by tau. With two cells per arch the hierarchical `hyper/steplaw` cannot tell an arch's
# intercept from its slopes ten e-folds below the laws' 1B / 10B reference (~700 leapfrog
# steps per draw and divergent transitions); the pooled law converges (asserted in full mode;
# the tiny sweep of small mode has too few runs per cell to ask that of it).

# %%
grid_runs = trainer_grid_runs(runs)
print(grid_runs.groupby(["arch", "tokens"]).size())
hyper = fit(grid_runs, read_spec("hyper/steplaw-pooled"), **SAMPLING)
if not assert_converged(hyper).ok:  # asserted in full mode
    print("WARNING: the lr x batch fit did not converge; its intervals are not reliable")
print(f"{len(hyper.off_bowl_runs)} grid run(s) off the bowl (blew up at a high lr)")
bowls = fitted_bowls(hyper)
_, fitted_cells = assign_cells(hyper.fitted_runs)
optimum = []
for index, cell in enumerate(fitted_cells.itertuples()):
    lr = np.exp(bowls.log_lr_opt[:, index])
    batch = np.exp(bowls.log_batch_opt[:, index])
    mine = grid_runs[(grid_runs["arch"] == cell.arch) & (grid_runs["tokens"] == cell.tokens)]
    best = mine.loc[mine["loss"].idxmin()]
    optimum.append(
        {
            "arch": cell.arch,
            "tokens": cell.tokens,
            "lr_median": np.median(lr),
            "lr_90": np.quantile(lr, [0.05, 0.95]).round(4).tolist(),
            "batch_median": np.median(batch),
            "batch_90": np.quantile(batch, [0.05, 0.95]).round(0).tolist(),
            "best_run_lr": best["lr"],
            "best_run_batch": best["batch_tokens"],
            "lr_grid": (mine["lr"].min(), mine["lr"].max()),
            "batch_grid": (mine["batch_tokens"].min(), mine["batch_tokens"].max()),
        }
    )
optimum = pd.DataFrame(optimum)
print(optimum.to_string(index=False))
largest = optimum["tokens"] == optimum["tokens"].max()
for row in optimum.itertuples():
    inside = (row.lr_grid[0] < row.lr_median < row.lr_grid[1]
              and row.batch_grid[0] < row.batch_median < row.batch_grid[1])  # fmt: skip
    on_edge = row.best_run_lr in row.lr_grid or row.best_run_batch in row.batch_grid
    print(f"{row.arch} at {row.tokens:.0f} tokens: optimum {'inside' if inside else 'OUTSIDE'} "
          f"the grid; best run {'on the edge' if on_edge else 'inside'}")  # fmt: skip
    if not SMALL and largest[row.Index]:
        assert inside and not on_edge
