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
# # Budget decisions with uncertainty
#
# 1. **Chinchilla** (Epoch AI's transcription of Hoffmann et al.'s runs): how uncertain is the
#    compute-optimal model size at the Gopher budget, 5.76e23 FLOPs? Published analyses of the
#    same runs range from 32B parameters (Hoffmann et al.'s approach 3 coefficients) to 72B
#    (Epoch AI's refit); a point estimate gives one of them and no sense of the spread.
# 2. **DeepMind's routed models**: when does MoE pay off, and how sure are we? P(MoE beats
#    dense) at equal compute, the tokens it saves at equal loss, and its Efficiency Leverage.
#
# `BAYES_SCALING_SMALL=1` runs short chains (the fast test tier); the convergence check is then
# reported, not asserted.
#
# **Data**: `chinchilla` (Epoch AI's transcription, no licence given)
# is not bundled with the package. The first cell checks every data set this notebook reads
# and, if one is missing, says where to download it and where to put it
# (`$BAYES_SCALING_DATA/<folder>/` or a `shared/data/` folder beside the project).

# %%

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bayes_scaling.datasets import load_dataset
from bayes_scaling.decide import recommend
from bayes_scaling.fit import fit
from bayes_scaling.frontier import frontier
from bayes_scaling.laws import chinchilla_optimal
from bayes_scaling.moe import moe_vs_dense
from bayes_scaling.notebook import assert_converged, require_datasets, sampling
from bayes_scaling.plots import plot_frontier, plot_isoflop, plot_p_moe_better
from bayes_scaling.spec import read_spec

SAMPLING = sampling(random_seed=0)
GOPHER = 5.76e23
require_datasets("chinchilla", "deepmind-routing")


# %% [markdown]
# ## 1. Chinchilla: the optimal size at the Gopher budget

# %%
chinchilla = fit(load_dataset("chinchilla"), read_spec("loss/chinchilla"), **SAMPLING)
assert_converged(chinchilla)
gopher = frontier(chinchilla, [GOPHER])
n_draws = gopher.n_opt[:, 0]
published = {
    "Hoffmann et al. approach 3": chinchilla_optimal(
        GOPHER, np.log(406.4), 0.34, np.log(410.7), 0.28
    )[0],
    "Epoch AI refit": chinchilla_optimal(GOPHER, np.log(482.01), 0.3478, np.log(2085.43), 0.3658)[
        0
    ],
}
low, median, high = np.quantile(n_draws, [0.05, 0.5, 0.95])
print(
    f"N_opt at 5.76e23 FLOPs: median {median / 1e9:.1f}B, 90% [{low / 1e9:.1f}B, {high / 1e9:.1f}B]"
)
print(f"tokens per parameter: {np.median(gopher.d_opt[:, 0] / n_draws):.1f}")
for name, value in published.items():
    print(
        f"  {name}: {float(value) / 1e9:.1f}B (posterior quantile {np.mean(n_draws < value):.2f})"
    )
assert low < published["Epoch AI refit"] < high

fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.hist(n_draws / 1e9, bins=60, density=True, color="C0", alpha=0.7)
for (name, value), color in zip(published.items(), ("C3", "C2"), strict=True):
    ax.axvline(float(value) / 1e9, color=color, label=name)
ax.set(xlabel="compute-optimal N at 5.76e23 FLOPs (billions)", yticks=[], title="posterior")
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# The allocation exponents (N_opt ~ C^a, D_opt ~ C^b) with intervals; then the frontier and
# isoFLOP curves with bands. Under parameter uncertainty the isoFLOP minimum is broad: the
# loss at half or double the median size differs by little, which is why the optimal size is
# uncertain while the optimal loss is not.

# %%
budgets = np.geomspace(1e19, 1e25, 30)
print(frontier(chinchilla, budgets).exponents().round(3).to_string(index=False))
plot_frontier(chinchilla, budgets=(1e19, 1e25), mark=GOPHER)
plt.show()
plot_isoflop(chinchilla, [1e21, 1e22, GOPHER])
plt.show()

# %% [markdown]
# Three ways to choose at the Gopher budget: lowest expected loss, lowest 90th percentile
# (risk-averse), and the highest chance that a new run (the fitted run-to-run noise included)
# reaches a target loss; then the same with at most
# 500B training tokens (data-limited) and with 1e13 tokens to serve after training
# (inference-aware: each served token costs 2N FLOPs out of the same budget).

# %%
choices = {
    "expected loss": recommend(chinchilla, GOPHER),
    "90th percentile": recommend(chinchilla, GOPHER, objective="q90"),
    "P(new run <= 1.97)": recommend(chinchilla, GOPHER, objective="p-target", target=1.97),
    "max 500B tokens": recommend(chinchilla, GOPHER, max_tokens=5e11),
    "serve 1e13 tokens": recommend(chinchilla, GOPHER, inference_tokens=1e13),
}
summary = pd.DataFrame(
    {
        name: {
            "N (B)": c.n_active / 1e9,
            "D (B)": c.tokens / 1e9,
            "loss median": np.median(c.loss_draws),
            "loss 90% low": c.interval()[0],
            "loss 90% high": c.interval()[1],
            "score": c.score,
        }
        for name, c in choices.items()
    }
).T
print(summary.round(4).to_string())
assert choices["max 500B tokens"].tokens <= 5e11
assert choices["serve 1e13 tokens"].n_active < choices["expected loss"].n_active
sizes = [choices[k].n_active for k in ("expected loss", "90th percentile", "P(new run <= 1.97)")]
spread = max(sizes) / min(sizes) - 1
base = choices["expected loss"]
print(
    f"The three objectives choose {', '.join(f'{n / 1e9:.1f}B' for n in sizes)} parameters "
    f"({100 * spread:.0f}% apart). "
    + ("They agree because the posterior's uncertainty about the loss is nearly the same at "
       "every size near the optimum (it shifts the whole isoFLOP curve up or down rather than "
       "tilting it), so the size that minimises the mean also minimises a quantile and "
       "maximises the chance of a target." if spread < 0.15 else
       "They differ: the loss is more uncertain on one side of the optimum, and the "
       "risk-averse objectives move away from it.")
)  # fmt: skip
capped, served = choices["max 500B tokens"], choices["serve 1e13 tokens"]
print(
    f"Capping data at 500B tokens moves the choice to {capped.n_active / 1e9:.1f}B parameters "
    f"(loss {np.median(capped.loss_draws):.4f} against {np.median(base.loss_draws):.4f}); "
    f"serving 1e13 tokens afterwards favours a smaller model, {served.n_active / 1e9:.1f}B."
)

# %% [markdown]
# ## 2. DeepMind routed models: when does MoE pay off?
#
# The hierarchical experts law (as in notebook 01). Every DeepMind run used 130B tokens, so the
# data say nothing about the token exponent: the frontier's split between N and D leans on the
# data-term prior (centred on Epoch's Chinchilla refit, same MassiveText pipeline). The MoE
# questions at equal compute depend mostly on the model term, which the data do pin down.

# %%
deepmind = fit(
    load_dataset("deepmind-routing"),
    read_spec("loss/wang2024"),
    **SAMPLING,
)
assert_converged(deepmind)
budgets = np.geomspace(1e18, 1e24, 7)
comparisons = [
    moe_vs_dense(deepmind, budgets, arch, experts=64.0)
    for arch in ("moe-hash", "moe-rlr", "moe-sbase")
]
tables = pd.concat([comparison.summary() for comparison in comparisons], ignore_index=True)
columns = ["moe_arch", "flops", "p_moe_better"] + [
    f"{name}_{part}"
    for name in ("data_gain", "leverage")
    for part in ("median", "low_90", "high_90")
]
shown = tables[columns].copy()
shown["flops"] = shown["flops"].map("{:.0e}".format)
print(shown.round(3).to_string(index=False))
for comparison in comparisons:
    row = comparison.summary().iloc[[0, -1]]
    lev = row["leverage_median"].to_numpy()
    print(
        f"{comparison.moe_arch} (64 experts): P(beats dense) "
        f"{row['p_moe_better'].min():.2f}-{row['p_moe_better'].max():.2f}; Efficiency Leverage "
        f"{lev[0]:.2f} [{row['leverage_low_90'].iloc[0]:.2f}, "
        f"{row['leverage_high_90'].iloc[0]:.2f}] at {budgets[0]:.0e} FLOPs, {lev[1]:.2f} "
        f"[{row['leverage_low_90'].iloc[1]:.2f}, {row['leverage_high_90'].iloc[1]:.2f}] at "
        f"{budgets[-1]:.0e}."
    )
plot_p_moe_better(comparisons)
plt.show()

# %% [markdown]
# Routing with 64 experts beats dense at every budget here with probability near 1. How the gain
# moves with compute differs by router: hash routing's leverage falls as compute grows (Clark
# et al.'s finding of a shrinking benefit), RL-R's stays flat and S-BASE's rises, each with an
# interval that widens as the extrapolation grows. The experts law has no saturation in E (the
# joint and Clark laws do), so across expert counts it prefers the largest one in the data;
# read the choice below as "as many experts as the data went", not a 512-expert prescription.
# The recommendation across archs and expert counts at 1e22 FLOPs, by expected loss:

# %%
choice = recommend(deepmind, 1e22)
print(
    f"{choice.arch} E={choice.experts:g}: N={choice.n_active:.3g} active "
    f"({choice.n_total:.3g} total, from the shape of its runs), D={choice.tokens:.3g}, "
    f"loss {np.median(choice.loss_draws):.4f} {tuple(round(v, 4) for v in choice.interval())}"
)
runners = choice.runners_up.head(8).copy()
for column in ("n_active", "n_total", "tokens"):
    runners[column] = runners[column].map("{:.3g}".format)
print(runners.round(4).to_string(index=False))
assert choice.arch != "dense"
assert (tables.groupby("moe_arch")["p_moe_better"].first() > 0.9).all()
