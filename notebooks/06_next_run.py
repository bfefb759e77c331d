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
# # Which run to train next
#
# A scaling study is run to answer a question: here, the loss of a model larger than any
# trained so far. `bayes_scaling.design.plan_runs` ranks candidate runs by how much of the
# question's posterior variance each is expected to remove, per FLOP, and picks a batch for
# parallel hardware, each run scored given the ones before it. This notebook
#
# 1. closes the loop on the CPU trainer: a few small runs are trained, fitted, a plan is made
#    from a grid of candidate configurations, the planned runs are trained (`sweep --plan`
#    does the same from the command line) and the posterior refitted, twice;
# 2. shows the replay benchmark (`benchmarks/bench_design.py`): on public pools of runs,
#    how fast each strategy of choosing runs reaches the whole pool's accuracy on the larger
#    runs it is for.
#
# With `BAYES_SCALING_SMALL=1` (the fast test tier) the runs are tiny and the chains short.
# Nothing here needs data beyond the repository.

# %%
import os
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from bayes_scaling.design import Question, plan_runs
from bayes_scaling.fit import fit
from bayes_scaling.notebook import assert_converged, is_small, sampling
from bayes_scaling.plots import plot_loss_vs_compute
from bayes_scaling.predict import predict_loss
from bayes_scaling.runs import read_runs
from bayes_scaling.spec import read_spec
from bayes_scaling.train.plans import candidate_runs
from bayes_scaling.train.sweep import expand_sweep, run_configs

SMALL = is_small()
SAMPLING = sampling(random_seed=0)
ROOT = Path.cwd() if (Path.cwd() / "models").is_dir() else Path.cwd().parent
os.chdir(ROOT)  # the sweep files name the corpus relative to the repository
OUT = Path("out/notebook-06")
shutil.rmtree(OUT, ignore_errors=True)  # the loop starts from nothing each time
OUT.mkdir(parents=True)

# %% [markdown]
# ## 1. The loop on the CPU trainer
#
# The first sweep trains small dense models; the candidates are a grid of larger ones. The
# question is the loss of a target with twice the parameters and twice the tokens of the
# largest candidate: a model the study means to train once the law is pinned down.

# %%
widths, budgets = ([16, 32], [4096, 8192]) if SMALL else ([32, 64], [65_536, 131_072])
base = (
    "[base]\nseq_len = 32\nn_heads = 2\nn_layers = 1\nbatch_size = 8\nlr = 0.01\n"
    "eval_tokens = 4096\ndata_source = 'tests/data/stdlib_sample.txt'\n"
    "data_dir = 'out/corpus-sample'\n"
)
first = OUT / "first.toml"
first.write_text(f"name = 'first'\n{base}[[grid]]\nd_model = {widths}\ntokens = {budgets}\n")
grid = OUT / "candidates.toml"
wider = [w * 3 // 2 for w in widths] + [widths[-1] * 2]
longer = [b * 2 for b in budgets] + [budgets[-1] * 4]
grid.write_text(f"name = 'candidates'\n{base}[[grid]]\nd_model = {wider}\ntokens = {longer}\n")
table = OUT / "runs.jsonl"
run_configs(*expand_sweep(first), table, log=lambda line: None)
target_config = candidate_runs(grid).sort_values("flops").iloc[-1]
target = pd.DataFrame(
    [{"n_active": target_config["n_active"] * 2, "tokens": target_config["tokens"] * 2}]
)
question = Question("loss", targets=target)
print(f"{len(read_runs(table))} runs trained; question: {question.describe()}")

# %% [markdown]
# Two rounds of fit -> plan -> train. Each plan spends at most half of what its remaining
# candidates would cost together, two runs at a time (`--k 2` on the command line).

# %%
spec = read_spec("chinchilla")
rounds = []
for number in (1, 2):
    runs = read_runs(table)
    posterior = fit(runs, spec, **SAMPLING)
    candidates = candidate_runs(grid)
    candidates = candidates[~candidates["run_id"].isin(runs["run_id"])]
    budget = candidates["flops"].sum() / 2
    plan = plan_runs(posterior, question, candidates, k=2, budget_flops=budget, random_seed=0)
    before = predict_loss(posterior, target)
    rounds.append({"round": number, "runs": len(runs), "sd_now": plan.sd_now,
                   "sd_expected_after": plan.sd_after, "planned": len(plan.runs),
                   "target_low_90": before["new_run_low_90"].iloc[0],
                   "target_high_90": before["new_run_high_90"].iloc[0]})  # fmt: skip
    print(f"round {number}: {plan.question.describe()}")
    print(plan.runs[["run_id", "n_active", "tokens", "flops", "gain_per_flop", "sd_after"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3g}"))  # fmt: skip
    plan.write(OUT / f"plan-{number}.json")
    configs = [c for c in expand_sweep(grid)[1] if c.flat() in list(plan.runs["config"])]
    run_configs(f"plan-{number}", configs, table, log=lambda line: None)
final = fit(read_runs(table), spec, **SAMPLING)
assert_converged(final)
after = predict_loss(final, target)
summary = pd.DataFrame(rounds)
print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))

# %% [markdown]
# Did the planned runs narrow the question's interval? The sentence below is computed.

# %%
width_before = summary["target_high_90"].iloc[0] - summary["target_low_90"].iloc[0]
width_after = after["new_run_high_90"].iloc[0] - after["new_run_low_90"].iloc[0]
print(f"The target's 90% new-run interval went from {width_before:.3f} nats wide with "
      f"{summary['runs'].iloc[0]} runs to {width_after:.3f} with {len(final.runs)} "
      f"({width_after / width_before:.0%} of its width); the plans expected the question's sd "
      f"to fall from {summary['sd_now'].iloc[0]:.3f} to "
      f"{summary['sd_expected_after'].iloc[-1]:.3f}.")  # fmt: skip

# %%
trained = read_runs(table)
marked = after.assign(arch="dense", flops=6 * target["n_active"] * target["tokens"])
fig, ax = plt.subplots(figsize=(7.5, 4.8))
plot_loss_vs_compute(final, ax=ax, extend=4.0, targets=marked)
for sweep, marker in (("plan-1", "s"), ("plan-2", "D")):
    rows = trained[trained["sweep"] == sweep]
    compute = 6 * rows["n_active"] * rows["tokens"]  # the x the law uses (6 N D)
    ax.scatter(compute, rows["loss"], marker=marker, s=60, facecolor="none",
               edgecolor="black", label=f"{sweep} runs (planned)", zorder=4)  # fmt: skip
x = float(marked["flops"].iloc[0]) * 0.85
middle = before["loss_median"].iloc[0]
low, high = before["new_run_low_90"].iloc[0], before["new_run_high_90"].iloc[0]
ax.errorbar(x, middle, yerr=[[middle - low], [high - middle]], fmt="none", capsize=4,
            color="grey", label="target's 90% new-run interval before the plans")  # fmt: skip
ax.set_title("The loop: the posterior after two plans, planned runs circled")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 2. The replay benchmark
#
# `benchmarks/bench_design.py` replays run selection on public pools: Epoch AI's Chinchilla
# transcription (fit C <= 1e21, the question is the larger runs) and DeepMind's routed models
# (up to 370M, the question is the 1.3B runs). Every strategy starts from the same few small
# runs and buys runs up to 2, 5, 10 and 20% of the pool's FLOPs; after each level the
# hypothesis is refitted and the target runs scored by the 90% new-run interval score (lower is
# better). The dashed line is the whole pool's score.

# %%
results = Path("benchmarks/results")
table = pd.concat(
    [
        pd.read_csv(results / f"bench_design_{data}.csv")
        for data in ("chinchilla", "deepmind-routing")
    ]
)
data_sets = sorted(table["data"].unique())
fig, axes = plt.subplots(1, len(data_sets), figsize=(5.2 * len(data_sets), 4), squeeze=False)
for ax, data in zip(axes[0], data_sets, strict=True):
    rows = table[table["data"] == data]
    full = rows.loc[rows["strategy"] == "full pool", "interval_score_90"].median()
    for strategy, group in rows[rows["strategy"] != "full pool"].groupby("strategy"):
        median = group.groupby("level")["interval_score_90"].median()
        (line,) = ax.plot(100 * median.index, median.to_numpy(), marker="o", label=strategy)
        for _, seed in group.groupby("seed"):
            ax.plot(100 * seed["level"], seed["interval_score_90"], color=line.get_color(),
                    alpha=0.25, linewidth=0.8)  # fmt: skip
    ax.axhline(full, color="black", linestyle="--", label="whole pool")
    ax.set_xscale("log")
    ax.set_xticks([2, 5, 10, 20], ["2", "5", "10", "20"])
    ax.minorticks_off()
    ax.set_xlabel("share of the pool's FLOPs spent (%)")
    ax.set_ylabel("90% interval score on the target runs")
    ax.set_title(data)
    ax.legend(fontsize=8)
plt.show()

# %%
strategies = table[table["strategy"] != "full pool"]
by_level = strategies.groupby(["data", "strategy", "level"])["interval_score_90"]
medians = by_level.median().unstack("level")
print(medians.round(3).to_string())
for data in data_sets:
    rows = medians.loc[data]
    whole = table[(table["data"] == data) & (table["strategy"] == "full pool")]
    full = whole["interval_score_90"].median()
    plan = rows.loc["plan"]
    reached = plan[plan <= full]
    others = rows.drop(index="plan").min()
    wins = int((plan < others).sum())
    when = (
        f"by {100 * reached.index.min():g}% of its FLOPs"
        if len(reached)
        else "at no level up to 20%"
    )
    print(f"{data}: the plan reaches the whole pool's interval score ({full:.3f}) {when}, and "
          f"beats every other strategy at {wins} of {len(plan)} FLOP levels (median over "
          "seeds).")  # fmt: skip
