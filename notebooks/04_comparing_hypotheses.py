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
# # Comparing hypotheses: which law, and how should dense and MoE share it?
#
# In-sample fit (R^2, chi^2, AIC) rewards flexibility; what a scaling law is for is predicting
# runs larger than any it saw. So every hypothesis here is scored two ways:
#
# - **PSIS-LOO** (ArviZ 1.x): how well it predicts each run from the others;
# - **leave-largest-out backtests**: refit below a cut, score the larger runs by log predictive
#   density, coverage of the 50/80/90% intervals and the interval score (Gneiting & Raftery).
#
# The hypotheses are then **stacked** (Yao et al. 2018): a mixture of their predictive draws.
# Three data sets: DeepMind's routed models (laws x pooling x sharing), Chinchilla (Chinchilla vs
# Kaplan's joint form and a shifted power law), and the package's own CPU trainer runs.
# `BAYES_SCALING_SMALL=1` runs fewer hypotheses with short chains (the fast test tier).
#
# **Data**: `chinchilla` (Epoch AI's transcription, no licence given)
# is not bundled with the package. The first cell checks every data set this notebook reads
# and, if one is missing, says where to download it and where to put it
# (`$BAYES_SCALING_DATA/<folder>/` or a `shared/data/` folder beside the project).

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bayes_scaling.backtest import backtest
from bayes_scaling.compare import StackedPosterior, compare, loo, stacking_weights
from bayes_scaling.datasets import load_dataset
from bayes_scaling.datasets.loaders import trainer_scaling_runs
from bayes_scaling.fit import fit
from bayes_scaling.notebook import assert_converged, is_small, require_datasets, sampling
from bayes_scaling.predict import predict_loss
from bayes_scaling.spec import read_spec

SAMPLING = sampling(random_seed=0)
SETTINGS = {k: v for k, v in SAMPLING.items() if k != "progressbar"}
pd.set_option("display.width", 160)
COLUMNS = ["law", "pooling", "shared", "elpd_loo", "se", "high_pareto_k", "weight_loo",
           "backtest_elpd", "backtest_coverage_new_run_90", "backtest_interval_score_90",
           "backtest_median_abs_rel_error", "weight_backtest"]  # fmt: skip


def compare_on(runs, names, **cut):
    """Fit each hypothesis on every run and backtest it at ``cut``; return the comparison."""
    posteriors, backtests = {}, {}
    for name in names:
        spec = read_spec(name)
        posteriors[name] = fit(runs, spec, **SAMPLING)
        assert_converged(posteriors[name])
        backtests[name] = backtest(runs, spec, **cut, **SETTINGS)
    return compare(posteriors, backtests)


def verdict(comparison, what: str) -> None:  # type: ignore[no-untyped-def]
    """One sentence: which hypothesis LOO and the backtest prefer, and whether stacking helps."""
    table = comparison.table
    by_loo = table["elpd_loo"].idxmax()
    by_backtest = table["backtest_interval_score_90"].idxmin()
    best = table.loc[by_backtest, "backtest_interval_score_90"]
    line = (
        f"{what}: LOO prefers {by_loo} (stacking weight {table.loc[by_loo, 'weight_loo']:.2f}); "
        f"the backtest prefers {by_backtest} (90% interval score {best:.4f}, new-run coverage "
        f"{table.loc[by_backtest, 'backtest_coverage_new_run_90']:.2f})"
    )
    if comparison.stacked_scores:
        stacked = comparison.stacked_scores["interval_score_90"]
        line += (
            f"; the stacked predictive scores {stacked:.4f}, "
            + ("no worse than the best single hypothesis" if stacked <= best * 1.001 else
               f"{100 * (stacked / best - 1):.0f}% WORSE than the best single hypothesis: "
               "stacking by LOO weighs how well each law fits inside the data, not how it "
               "extrapolates")
        )  # fmt: skip
    print(line + ".")


require_datasets("deepmind-routing", "chinchilla", "trainer-cpu")


# %% [markdown]
# ## 1. DeepMind routed models: fit up to 370M, score the 1.3B runs
#
# "MoE changes only the coefficient" (`wang2024-pooled`: one parameter set) vs "A, alpha and
# gamma per arch" (`wang2024`, hierarchical, data term shared) vs "nothing shared"
# (`wang2024-separate`) vs Clark et al.'s saturating expert count (`clark2022`) vs the dense law
# that ignores the experts (`chinchilla`).

# %%
deepmind = load_dataset("deepmind-routing")
ALL_ROUTED = ["wang2024", "wang2024-pooled", "wang2024-separate", "clark2022", "chinchilla"]
DEEPMIND = ["wang2024-pooled", "clark2022"] if is_small() else ALL_ROUTED
routed = compare_on(deepmind, DEEPMIND, cut="n_active", thresholds=[1e9])
print(routed.table[COLUMNS].round(3).to_string())
print("stacked:", {k: round(v, 4) for k, v in routed.stacked_scores.items()})

# %%
table = routed.table
assert np.isclose(table["weight_loo"].sum(), 1.0) and np.isclose(table["weight_backtest"].sum(), 1)
assert (table["backtest_held_out"] == (deepmind["n_active"] > 1e9).sum()).all()
best = table["backtest_interval_score_90"].min()
stacked_score = routed.stacked_scores["interval_score_90"]
verdict(routed, "DeepMind, fit <= 370M, scored on 1.3B")

# %% [markdown]
# The stacked predictive's bands next to the best single hypothesis', on the held-out 1.3B runs
# (refits below the cut; weights from LOO on the fitted runs only, so nothing peeks).

# %%
first = routed.backtests[table.index[0]]
held = first.held_out[1e9]
fits = {name: b.fits[1e9] for name, b in routed.backtests.items()}
weights = stacking_weights({name: loo(p) for name, p in fits.items()})
best_name = table["backtest_interval_score_90"].idxmin()
fig, ax = plt.subplots(figsize=(8, 5))
order = np.argsort(held["experts"].to_numpy())
x = np.arange(len(held))
for shift, (name, post) in ((-0.15, (best_name, fits[best_name])),
                            (0.15, ("stacked", StackedPosterior(fits, weights)))):  # fmt: skip
    pred = predict_loss(post, held, probs=(0.9,)).iloc[order]
    mid = pred["loss_median"].to_numpy()
    err = np.vstack([mid - pred["new_run_low_90"], pred["new_run_high_90"] - mid])
    ax.errorbar(x + shift, mid, yerr=err, fmt="o", ms=3, label=f"{name} (90% new run)")
ax.scatter(x, held["loss"].to_numpy()[order], color="black", zorder=5, s=12, label="1.3B runs")
ax.set(xlabel="held-out 1.3B run (by expert count)", ylabel="loss")
ax.legend(fontsize=8)
Path("../out").mkdir(exist_ok=True)  # the repository's ignored output folder
fig.savefig("../out/04_deepmind_stacked.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## 2. Chinchilla vs the rival dense laws
#
# Kaplan et al.'s joint form `E + A (N^-rho + R/D)^beta` lets the N and D terms interact; the
# shifted power law `E + A/(N + N0)^alpha + B/D^beta` lets the smallest models flatten. Backtest
# by compute: fit below the top third (and half, two thirds) of the log FLOP range.

# %%
chinchilla = load_dataset("chinchilla")
DENSE = ["chinchilla", "kaplan2020"] + ([] if is_small() else ["shifted-power"])
dense = compare_on(chinchilla, DENSE, cut="compute", n_cuts=1 if is_small() else 3)
print(dense.table[COLUMNS].round(3).to_string())
assert set(dense.table.index) == set(DENSE)
verdict(dense, "Chinchilla, backtests by compute")

# %% [markdown]
# ## 3. The package's own CPU runs: the sweep's scaling runs (dense and the three routers at
# its base lr and batch, seed 0, G = 1, E in {1, 8}, the standard eval split; the rest of the
# sweep is lr x batch grids, repeated seeds and the G / E variants of the router comparison)

# %%
trainer = load_dataset("trainer-cpu")
trainer = trainer_scaling_runs(trainer)
print(f"{len(trainer)} scaling runs:", trainer["arch"].value_counts().to_dict())
TRAINER = ["wang2024-pooled", "wang2024"] + ([] if is_small() else ["clark2022"])
own = compare_on(trainer, TRAINER, cut="n_active", n_cuts=1)
print(own.table[COLUMNS].round(3).to_string())
verdict(own, "The package's CPU runs")
