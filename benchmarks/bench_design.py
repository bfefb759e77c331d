"""Replay of run selection on public pools: which strategy reaches the full pool's accuracy first.

Each public study is split into a *pool* of runs a study could have trained and *targets*, the
larger runs the study is for (their configurations are the question; their losses are only
used to score). Every strategy starts from the same few small runs (chosen per seed among the
smallest quarter of the pool's compute; on the Step Law grid, 8 runs in each of its 3 cheapest
cells), then buys runs from the pool until its cumulative FLOPs reach each of the budget
levels in turn (shares of the whole pool's FLOPs); after each level the hypothesis is refitted
(compiled-model reuse) on what was bought and the question is scored. The reference is the same
hypothesis fitted on the whole pool.

Questions and scores (the columns are named for the loss question):

- Chinchilla and DeepMind: the loss at the targets; the new-run 90% interval score
  (Gneiting & Raftery; lower is better), its coverage and the median's relative error.
- The Step Law dense grid (cells up to 537M in the pool, the two 1.07B cells the targets): the
  optimal learning rate and batch size at the target cells. Each target cell's optimum is the
  geometric mean of lr and of batch over its runs within 0.25% of its best loss; scored are the
  90% intervals of ln lr* and ln B* (mean interval score in ln units over cells and the two
  quantities), their coverage, and the medians' mean |ratio - 1|. A bowl needs two runs in a
  cell, so a lone run bought into a new cell waits, paid for, until a second joins it.

Strategies:

- ``plan``: :func:`bayes_scaling.design.plan_runs` on the current posterior and the data set's
  question, the level's remaining FLOPs as its budget (up to ``--k`` runs per batch; the greedy
  batch is repeated on the refitted posterior until the level is spent or no run fits it);
- ``random``: runs in a random order (seeded), each bought while it fits the level;
- ``smallest``: smallest compute first;
- ``isoflop`` (loss questions): an isoFLOP grid as practitioners lay one out: the pool's
  compute in 6 log-spaced bins, lowest first, and within a bin runs spread over model size
  (alternating ends inwards);
- ``grid`` (lr-batch): a coarse lr x batch sweep in every cell, cheapest cell first
  (:func:`grid_order`);
- ``simple-scaling-laws`` (loss questions): its ``suggest_runs`` (the ``bench`` extra; skipped
  when missing) on its own default fit over N and D, asked for N* at the targets' median
  compute, each suggested point mapped to the nearest pool run (:func:`ssl_batch`). It has no
  learning-rate or batch axis, so it is not a strategy on the Step Law grid.

    .venv/bin/python benchmarks/bench_design.py
        [--data chinchilla|deepmind-routing|steplaw-dense|all] [--seeds 3]
        [--levels 0.02,0.05,0.1,0.2] [--k K] [--method linear|importance]

``--k`` defaults to 6 on the loss questions and 16 on the Step Law grid, whose sweeps are
trained many runs at a time. Writes benchmarks/results/bench_design_<data>.csv (one row per
strategy, seed and level) and bench_design_summary_<data>.csv (medians over seeds, and the
level at which the plan reached the full pool's interval score and at how many levels it beat
every other strategy).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from _results import RESULTS, save_table

from bayes_scaling.backtest import interval_score, score_held_out, summarize
from bayes_scaling.datasets import load_dataset
from bayes_scaling.design import DesignError, Question, plan_runs
from bayes_scaling.fit import fit
from bayes_scaling.hyper_model import flag_off_bowl
from bayes_scaling.spec import read_spec

LOSS_COLUMNS = ["arch", "eval_set", "n_active", "tokens", "experts", "granularity"]
HYPER_COLUMNS = ["arch", "eval_set", "n_active", "n_total", "tokens", "lr", "batch_tokens"]
CELL = ["arch", "n_active", "n_total", "tokens"]  # a Step Law grid cell
WITHIN = 0.0025  # a Step Law grid run within 0.25% of its cell's best is a good one


@dataclass(frozen=True)
class Setup:
    """One replay: the hypothesis, which runs form the pool (the rest are the targets), the
    start runs, the sampler overrides, the question's kind and the strategies that apply."""

    model: str
    in_pool: Callable[[pd.DataFrame], pd.Series]
    start: Callable[[pd.DataFrame, np.random.Generator], pd.Index]
    overrides: dict
    kind: str = "loss"
    k: int = 6
    strategies: tuple[str, ...] = ("plan", "random", "smallest", "isoflop", "simple-scaling-laws")

    @property
    def columns(self) -> list[str]:
        return HYPER_COLUMNS if self.kind == "lr-batch" else LOSS_COLUMNS


def start_runs(pool: pd.DataFrame, per_arch: int, rng: np.random.Generator) -> pd.Index:
    """``per_arch`` runs of each arch (all runs for Chinchilla's one arch: ``per_arch`` in all),
    at random among the arch's smallest quarter of compute in the pool."""
    chosen = []
    for _, runs in pool.groupby("arch"):
        small = runs[runs["flops"] <= runs["flops"].quantile(0.25)]
        chosen.extend(rng.choice(small.index, size=min(per_arch, len(small)), replace=False))
    return pd.Index(chosen)


def start_cells(
    pool: pd.DataFrame, rng: np.random.Generator, cells: int = 3, per_cell: int = 8
) -> pd.Index:
    """``per_cell`` runs at random in each of the ``cells`` cheapest (N, D) cells of a grid."""
    cell_flops = pool.groupby(CELL)["flops"].transform("sum")
    chosen = []
    for value in np.sort(cell_flops.unique())[:cells]:
        inside = pool.index[cell_flops == value]
        chosen.extend(rng.choice(inside, size=min(per_cell, len(inside)), replace=False))
    return pd.Index(chosen)


SETUPS = {
    "chinchilla": Setup("chinchilla", lambda r: r["flops"] <= 1e21,
                        lambda pool, rng: start_runs(pool, 8, rng), {}),
    # Up to 370M, the 1.3B models held out (issue 12's split); 2 runs of each arch to start.
    "deepmind-routing": Setup(
        "wang2024", lambda r: r["n_active"] <= 1e9, lambda pool, rng: start_runs(pool, 2, rng),
        {"chains": 2, "draws": 600, "tune": 800, "extend": 0},
    ),
    # The cells up to 537M; the question is the optimal lr and batch of the two 1.07B cells
    # (heldout_steplaw.py's split). suggest_runs knows only N and D: not a strategy here.
    "steplaw-dense": Setup(
        "steplaw", lambda r: r["n_active"] <= 6e8, start_cells, {"extend": 0}, kind="lr-batch",
        k=16, strategies=("plan", "random", "smallest", "grid"),
    ),
}  # fmt: skip


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


def grid_order(pool: pd.DataFrame) -> list:
    """A coarse lr x batch sweep in every cell as practitioners lay one out: cells cheapest
    first, in each the runs at every other learning rate and every other batch size of the
    cell's grid (ends included); then the rest of each cell, cheapest cell first."""
    coarse, rest = [], []
    cell_flops = pool.groupby(CELL)["flops"].transform("sum")
    for value in np.sort(cell_flops.unique()):
        cell = pool[cell_flops == value]
        lr_rank = cell["lr"].rank(method="dense").astype(int) - 1
        batch_rank = cell["batch_tokens"].rank(method="dense").astype(int) - 1
        on_grid = (lr_rank % 2 == 0) & (batch_rank % 2 == 0)
        coarse.extend(cell.index[on_grid])
        rest.extend(cell.index[~on_grid])
    return coarse + rest


def fittable(runs: pd.DataFrame, kind: str, off_bowl_above: float = math.inf) -> pd.DataFrame:
    """The runs a fit can use: for a bowl per cell, only cells with two or more runs on the
    bowl (not blown up, :func:`~bayes_scaling.hyper_model.flag_off_bowl`). A lone run bought
    into a new cell waits, paid for, until a second one joins it."""
    if kind != "lr-batch":
        return runs
    on_bowl = ~flag_off_bowl(runs, off_bowl_above).to_numpy()
    counts = pd.Series(on_bowl, index=runs.index).groupby([runs[c] for c in CELL]).transform("sum")
    return runs[counts.to_numpy() >= 2]


def grid_optimum(cell: pd.DataFrame) -> tuple[float, float]:
    """ln lr and ln batch of a cell's empirical optimum: the geometric means over its good runs
    (loss within 0.25% of the best), steadier than the single best run of a noisy grid."""
    good = cell[cell["loss"] <= (1.0 + WITHIN) * cell["loss"].min()]
    return float(np.log(good["lr"]).mean()), float(np.log(good["batch_tokens"]).mean())


def score_optimum(posterior: object, targets: pd.DataFrame, seed: int) -> dict:
    """The 90% intervals of ln lr* and ln B* at each target cell against the cell's grid
    optimum: mean interval score (ln units) and coverage over cells and the two quantities,
    and the mean |median / optimum - 1|."""
    from bayes_scaling.hyper_predict import recommend_hyperparameters

    cells = targets.groupby(CELL, as_index=False).size()
    recs = recommend_hyperparameters(posterior, cells[CELL], probs=(0.9,), random_seed=seed)  # type: ignore[arg-type]
    scores, covered, errors = [], [], []
    for rec, (_, cell) in zip(recs.itertuples(index=False), targets.groupby(CELL), strict=True):
        for name, truth in zip(("lr", "batch"), grid_optimum(cell), strict=True):
            low = math.log(getattr(rec, f"{name}_low_90"))
            high = math.log(getattr(rec, f"{name}_high_90"))
            scores.append(float(interval_score(low, high, truth, 0.9)))
            covered.append(low <= truth <= high)
            errors.append(abs(getattr(rec, f"{name}_median") / math.exp(truth) - 1.0))
    return {
        "interval_score_90": float(np.mean(scores)),
        "coverage_new_run_90": float(np.mean(covered)),
        "rel_error": float(np.mean(errors)),
    }


def score_targets(setup: Setup, posterior: object, targets: pd.DataFrame, seed: int) -> dict:
    """The question's scores: new-run interval score of the targets' losses, or of the optimal
    lr and batch at the target cells."""
    if setup.kind == "lr-batch":
        return score_optimum(posterior, targets, seed)
    summary = summarize(score_held_out(posterior, targets, random_seed=seed))
    return {
        "interval_score_90": summary["interval_score_90"],
        "coverage_new_run_90": summary["coverage_new_run_90"],
        "rel_error": summary["mean_abs_rel_error"],
    }


def split(data: str) -> tuple[Setup, pd.DataFrame, pd.DataFrame]:
    setup = SETUPS[data]
    runs = load_dataset(data)
    inside = setup.in_pool(runs)
    return setup, runs[inside], runs[~inside]


def question_for(setup: Setup, targets: pd.DataFrame) -> Question:
    if setup.kind == "lr-batch":
        return Question("lr-batch", targets=targets[CELL].drop_duplicates())
    return Question("loss", targets=targets[LOSS_COLUMNS])


def replay(data: str, seed: int, levels: list[float], k: int, method: str) -> list[dict]:
    setup, pool, targets = split(data)
    spec = read_spec(setup.model)
    total = float(pool["flops"].sum())
    question = question_for(setup, targets)
    rng = np.random.default_rng(seed)
    start = set(setup.start(pool, rng))
    flops = pool["flops"]
    rows = []

    def fitted(owned: set) -> object:
        runs = fittable(
            pool.loc[sorted(owned)], setup.kind, getattr(spec, "off_bowl_above", math.inf)
        )
        return fit(runs, spec, random_seed=seed, progressbar=False, **setup.overrides)

    def score(strategy: str, level: float, owned: set, spent: float, posterior: object) -> None:
        rows.append({
            "data": data, "strategy": strategy, "seed": seed, "level": level,
            "flops_share": spent / total, "runs": len(owned),
            **score_targets(setup, posterior, targets, seed),
            "converged": bool(posterior.convergence().ok),  # type: ignore[attr-defined]
        })  # fmt: skip
        print(rows[-1], flush=True)

    random_order = list(rng.permutation(pool.index))
    orders: dict[str, Callable[[], list]] = {
        "random": lambda: random_order,
        "smallest": lambda: list(pool.sort_values("flops").index),
        "isoflop": lambda: isoflop_order(pool),
        "grid": lambda: grid_order(pool),
    }
    for strategy in setup.strategies:
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
                            candidates[["run_id", *setup.columns, "flops"]],
                            k=k or setup.k, budget_flops=level - spent, random_seed=seed,
                            method=method,
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
                while bought := ssl_batch(pool, owned, level - spent, targets, k or setup.k, seed):
                    owned, spent = owned | set(bought), spent + float(flops[bought].sum())
                posterior = fitted(owned)
            else:
                owned, spent = buy_in_order(orders[strategy](), owned, spent, level, flops)
                posterior = fitted(owned)
            score(strategy, share, owned, spent, posterior)
    return rows


def full_pool(data: str, seed: int) -> dict:
    setup, pool, targets = split(data)
    posterior = fit(pool, read_spec(setup.model), random_seed=seed, progressbar=False,
                    **setup.overrides)  # fmt: skip
    return {
        "data": data, "strategy": "full pool", "seed": seed, "level": 1.0, "flops_share": 1.0,
        "runs": len(pool), **score_targets(setup, posterior, targets, seed),
        "converged": bool(posterior.convergence().ok),
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
    parser.add_argument("--data", default="all", choices=[*SETUPS, "all"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--levels", default="0.02,0.05,0.1,0.2")
    parser.add_argument(
        "--k", type=int, default=None, help="runs per batch (default: per data set)"
    )
    parser.add_argument("--method", default="linear", choices=["linear", "importance"])
    args = parser.parse_args()
    levels = [float(v) for v in args.levels.split(",")]
    started = time.perf_counter()
    for data in SETUPS if args.data == "all" else [args.data]:
        rows = [full_pool(data, 0)]
        print(rows[-1], flush=True)
        for seed in range(args.seeds):
            rows.extend(replay(data, seed, levels, args.k, args.method))
        table = pd.DataFrame(rows).assign(method=args.method, k=args.k or SETUPS[data].k)
        name = data if args.method == "linear" else f"{data}_{args.method}"
        save_table(table, RESULTS / f"bench_design_{name}.csv")
        summary = summarise(table)
        print(summary.to_string(index=False))
        save_table(summary, RESULTS / f"bench_design_summary_{name}.csv")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
