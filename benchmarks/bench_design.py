"""Replay of run selection on public pools: which strategy reaches the full pool's accuracy first.

Each public study is split into a *pool* of runs a study could have trained and *targets*, the
larger runs the study is for (their configurations are the question; their losses are only
used to score). Every strategy starts from the same few small runs (chosen per seed among the
smallest quarter of the pool's compute), then buys runs from the pool until its cumulative
FLOPs reach each of the budget levels in turn (shares of the whole pool's FLOPs); after each
level the hypothesis is refitted (compiled-model reuse) on what was bought and the targets are
scored: the new-run 90% interval score (Gneiting & Raftery; lower is better), its coverage and
the median's relative error. The reference is the same hypothesis fitted on the whole pool.

Strategies:

- ``plan``: :func:`bayes_scaling.design.plan_runs` on the current posterior, question "the loss
  at the targets", the level's remaining FLOPs as its budget (up to ``--k`` runs per batch;
  the greedy batch is repeated on the refitted posterior until the level is spent or no run
  fits it);
- ``random``: runs in a random order (seeded), each bought while it fits the level;
- ``smallest``: smallest compute first;
- ``isoflop``: an isoFLOP grid as practitioners lay one out: the pool's compute in 6 log-spaced
  bins, lowest first, and within a bin runs spread over model size (alternating ends inwards);
- ``simple-scaling-laws``: its ``suggest_runs`` (the ``bench`` extra; skipped when missing) on
  its own default fit over N and D, asked for N* at the targets' median compute, each suggested
  point mapped to the nearest pool run (:func:`ssl_batch`).

    .venv/bin/python benchmarks/bench_design.py [--data chinchilla|deepmind-routing|both]
        [--seeds 3] [--levels 0.02,0.05,0.1,0.2] [--k 6] [--method linear|importance]

Writes benchmarks/results/bench_design_<data>.csv (one row per strategy, seed and level) and
bench_design_summary_<data>.csv (medians over seeds, and the level at which the plan reached
the full pool's interval score and at how many levels it beat every other strategy).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from _results import RESULTS, save_table

from bayes_scaling.backtest import score_held_out, summarize
from bayes_scaling.datasets import load_dataset
from bayes_scaling.design import DesignError, Question, plan_runs
from bayes_scaling.fit import fit
from bayes_scaling.spec import read_spec

# (hypothesis, pool rule, start runs, sampler overrides); targets are the runs not in the pool.
SETUPS = {
    "chinchilla": ("chinchilla", lambda r: r["flops"] <= 1e21, 8, {}),
    # Up to 370M, the 1.3B models held out (issue 12's split); 2 runs of each arch to start.
    "deepmind-routing": (
        "wang2024",
        lambda r: r["n_active"] <= 1e9,
        2,
        {"chains": 2, "draws": 600, "tune": 800, "extend": 0},
    ),
}
STRATEGIES = ("plan", "random", "smallest", "isoflop", "simple-scaling-laws")
QUESTION_COLUMNS = ["arch", "eval_set", "n_active", "tokens", "experts", "granularity"]


def start_runs(pool: pd.DataFrame, per_arch: int, rng: np.random.Generator) -> pd.Index:
    """``per_arch`` runs of each arch (all runs for Chinchilla's one arch: ``per_arch`` in all),
    at random among the arch's smallest quarter of compute in the pool."""
    chosen = []
    for _, runs in pool.groupby("arch"):
        small = runs[runs["flops"] <= runs["flops"].quantile(0.25)]
        chosen.extend(rng.choice(small.index, size=min(per_arch, len(small)), replace=False))
    return pd.Index(chosen)


def isoflop_order(pool: pd.DataFrame) -> list:
    """The pool's runs in isoFLOP-grid order (see the module notes)."""
    log_c = np.log(pool["flops"].to_numpy(float))
    edges = np.linspace(log_c.min(), log_c.max() + 1e-9, 7)
    order = []
    for low, high in itertools.pairwise(edges):
        inside = pool[(log_c >= low) & (log_c < high)].sort_values("n_active")
        index = list(inside.index)
        while index:  # the ends of the size range first, then inwards
            order.append(index.pop(0))
            if index:
                order.append(index.pop())
    return order


def buy_in_order(
    order: list, owned: set, spent: float, level: float, flops: pd.Series
) -> tuple[set, float]:
    """Buy runs in ``order`` (skipping owned ones) while each fits under ``level``."""
    for run in order:
        if run not in owned and spent + flops[run] <= level:
            owned = owned | {run}
            spent += flops[run]
    return owned, spent


def ssl_batch(
    pool: pd.DataFrame, owned: set, remaining: float, targets: pd.DataFrame, k: int, seed: int
) -> list:
    """simple-scaling-laws' ``suggest_runs`` (its default fit on N and D, pooled over archs;
    question: N* at the targets' median compute), each suggestion mapped to the nearest pool
    run in (ln N, ln D) not yet bought that fits the remaining FLOPs."""
    import simple_scaling_laws as ssl
    from simple_scaling_laws.cost import cost_model

    runs = pool.loc[sorted(owned)]
    frame = pd.DataFrame({
        "training_run_id": runs["run_id"].astype(str),
        "model_size__params": runs["n_active"].astype(float),
        "dataset_size__tokens": runs["tokens"].astype(float),
        "test_loss__cross_entropy": runs["loss"].astype(float),
    })  # fmt: skip
    open_ = pool.drop(index=sorted(owned))
    open_ = open_[open_["flops"] <= remaining]
    if open_.empty:
        return []
    low, high = float(open_["flops"].min()), float(open_["flops"].max())
    budgets = list(np.geomspace(low, max(high, low * 1.01), 6))
    try:
        model = ssl.fit(frame, seed=seed)
        suggested = ssl.suggest_runs(
            model, [float(targets["flops"].median())], cost_model("power", k=6.0, a=1.0, b=1.0),
            n=k, candidate_budgets=budgets,
        ).to_pandas()  # fmt: skip
    except Exception as error:  # a peer failing to suggest is a result, not a crash
        print(f"simple-scaling-laws could not suggest runs: {error}", flush=True)
        return []
    bought, spent = [], 0.0
    log_n, log_d = np.log(open_["n_active"].to_numpy()), np.log(open_["tokens"].to_numpy())
    for row in suggested.itertuples(index=False):
        distance = np.hypot(log_n - math.log(row.model_size__params),
                            log_d - math.log(row.dataset_size__tokens))  # fmt: skip
        for position in np.argsort(distance):
            run = open_.index[position]
            if run not in bought and spent + open_.loc[run, "flops"] <= remaining:
                bought.append(run)
                spent += float(open_.loc[run, "flops"])
                break
    return bought


def replay(data: str, seed: int, levels: list[float], k: int, method: str) -> list[dict]:
    model, in_pool, per_arch, overrides = SETUPS[data]
    spec = read_spec(model)
    runs = load_dataset(data)
    pool, targets = runs[in_pool(runs)], runs[~in_pool(runs)]
    total = float(pool["flops"].sum())
    question = Question("loss", targets=targets[QUESTION_COLUMNS])
    rng = np.random.default_rng(seed)
    start = set(start_runs(pool, per_arch, rng))
    flops = pool["flops"]
    rows = []

    def fitted(owned: set) -> object:
        return fit(pool.loc[sorted(owned)], spec, random_seed=seed, progressbar=False, **overrides)

    def score(strategy: str, level: float, owned: set, spent: float, posterior: object) -> None:
        summary = summarize(score_held_out(posterior, targets, random_seed=seed))
        rows.append({
            "data": data, "strategy": strategy, "seed": seed, "level": level,
            "flops_share": spent / total, "runs": len(owned),
            "interval_score_90": summary["interval_score_90"],
            "coverage_new_run_90": summary["coverage_new_run_90"],
            "rel_error": summary["mean_abs_rel_error"],
            "converged": bool(posterior.convergence().ok),  # type: ignore[attr-defined]
        })  # fmt: skip
        print(rows[-1], flush=True)

    random_order = list(rng.permutation(pool.index))
    orders: dict[str, Callable[[], list]] = {
        "random": lambda: random_order,
        "smallest": lambda: list(pool.sort_values("flops").index),
        "isoflop": lambda: isoflop_order(pool),
    }
    for strategy in STRATEGIES:
        if (
            strategy == "simple-scaling-laws"
            and importlib.util.find_spec("simple_scaling_laws") is None
        ):
            print("simple-scaling-laws is not installed (the bench extra): skipped", flush=True)
            continue
        owned, spent = set(start), float(flops[list(start)].sum())
        posterior = fitted(owned)
        for share in levels:
            level = share * total
            if strategy == "plan":
                while True:
                    candidates = pool.drop(index=sorted(owned))
                    candidates = candidates[candidates["flops"] <= level - spent]
                    if candidates.empty:
                        break
                    try:
                        plan = plan_runs(
                            posterior, question,
                            candidates[["run_id", *QUESTION_COLUMNS, "flops"]],
                            k=k, budget_flops=level - spent, random_seed=seed, method=method,
                        )  # fmt: skip
                    except DesignError as error:  # nothing left that teaches anything
                        print(f"plan stops at this level: {error}", flush=True)
                        break
                    bought = candidates.index[candidates["run_id"].isin(plan.runs["run_id"])]
                    if bought.empty:
                        break
                    owned, spent = owned | set(bought), spent + float(flops[bought].sum())
                    posterior = fitted(owned)
            elif strategy == "simple-scaling-laws":
                while bought := ssl_batch(pool, owned, level - spent, targets, k, seed):
                    owned, spent = owned | set(bought), spent + float(flops[bought].sum())
                posterior = fitted(owned)
            else:
                owned, spent = buy_in_order(orders[strategy](), owned, spent, level, flops)
                posterior = fitted(owned)
            score(strategy, share, owned, spent, posterior)
    return rows


def full_pool(data: str, seed: int) -> dict:
    model, in_pool, _, overrides = SETUPS[data]
    runs = load_dataset(data)
    pool, targets = runs[in_pool(runs)], runs[~in_pool(runs)]
    posterior = fit(pool, read_spec(model), random_seed=seed, progressbar=False, **overrides)
    summary = summarize(score_held_out(posterior, targets, random_seed=seed))
    return {
        "data": data, "strategy": "full pool", "seed": seed, "level": 1.0, "flops_share": 1.0,
        "runs": len(pool), "interval_score_90": summary["interval_score_90"],
        "coverage_new_run_90": summary["coverage_new_run_90"],
        "rel_error": summary["mean_abs_rel_error"], "converged": bool(posterior.convergence().ok),
    }  # fmt: skip


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Medians over seeds per data set, strategy and level, with the verdicts."""
    medians = table.groupby(["data", "strategy", "level"], as_index=False).agg(
        interval_score_90=("interval_score_90", "median"),
        coverage_new_run_90=("coverage_new_run_90", "median"),
        rel_error=("rel_error", "median"),
        flops_share=("flops_share", "median"),
        seeds=("seed", "nunique"),
    )
    verdicts = []
    for data, group in medians.groupby("data"):
        full = group.loc[group["strategy"] == "full pool", "interval_score_90"].iloc[0]
        plan = group[group["strategy"] == "plan"].set_index("level")["interval_score_90"]
        others = group[~group["strategy"].isin(["plan", "full pool"])]
        best_other = others.groupby("level")["interval_score_90"].min()
        reached = plan[plan <= full]
        verdicts.append({
            "data": data, "strategy": "verdict", "full_pool_interval_score": full,
            "plan_reaches_full_at": float(reached.index.min()) if len(reached) else np.nan,
            "plan_beats_all_levels": int((plan < best_other.reindex(plan.index)).sum()),
            "levels": len(plan),
        })  # fmt: skip
    return pd.concat([medians, pd.DataFrame(verdicts)], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="both", choices=[*SETUPS, "both"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--levels", default="0.02,0.05,0.1,0.2")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--method", default="linear", choices=["linear", "importance"])
    args = parser.parse_args()
    levels = [float(v) for v in args.levels.split(",")]
    started = time.perf_counter()
    for data in SETUPS if args.data == "both" else [args.data]:
        rows = [full_pool(data, 0)]
        print(rows[-1], flush=True)
        for seed in range(args.seeds):
            rows.extend(replay(data, seed, levels, args.k, args.method))
        table = pd.DataFrame(rows).assign(method=args.method, k=args.k)
        name = data if args.method == "linear" else f"{data}_{args.method}"
        save_table(table, RESULTS / f"bench_design_{name}.csv")
        summary = summarise(table)
        print(summary.to_string(index=False))
        save_table(summary, RESULTS / f"bench_design_summary_{name}.csv")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
