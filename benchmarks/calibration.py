"""Calibrated extrapolation: leave-largest-out backtests on every public family, scored pooled.

For every task of ``calibration_tasks.py`` (fit a shipped hypothesis with its default settings
on a study's smaller runs, score its larger ones) this script compares, on the same held-out
runs:

- ``discrepancy`` (the package's predictive): the law's draws, the fitted run noise and the
  extrapolation discrepancy, whose rate is the population prior learned on the *other*
  families (leave one family out) updated by a backtest inside the task's own fitted runs,
  cut along the task's own direction (compute, N; compute for the experts task), as
  :func:`bayes_scaling.calibration.calibrate` does;
- ``population only``: the same without the within-data update;
- ``no discrepancy``: the predictive before issue 13 (law draws and run noise only), new-run
  and expected-loss intervals;
- ``stacked over laws``: the task's law and its rivals (``calibration_tasks.RIVALS``), each
  with its own calibrated discrepancy, mixed by stacking weights learned on the same
  within-data backtest (each law's held-out log predictive densities under the population
  rate, as :func:`bayes_scaling.stacking.extrapolation_weights` does);
- ``bootstrap``: Huber + L-BFGS-B from the best 32 of Epoch AI's 4,500 starts, 200 run
  resamples (``bayes_scaling.baseline``), percentile intervals.

Scores, pooled over held-out runs (and per family): coverage of the central 50/80/90%
intervals, the 90% interval score relative to the observed loss (Gneiting & Raftery: width
plus 20x the miss distance), the median width and the median absolute relative error of the
median prediction.

Stage 1 (slow: fits) caches every task's draws under ``out/calibration/``; stage 2 learns and
scores. ``--write-prior`` also learns the population prior from every family and writes
``bayes_scaling/models/discrepancy/population.json`` with its provenance.

    .venv/bin/python benchmarks/calibration.py [--only deepmind] [--refresh | --refresh-inner]
        [--write-prior]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import RESULTS, save_table
from calibration_tasks import RIVALS, TASKS, Task

from bayes_scaling import __version__
from bayes_scaling._io import atomic_write
from bayes_scaling.baseline import bootstrap_huber
from bayes_scaling.calibration import Evidence, evidence, inner_splits, within_data
from bayes_scaling.discrepancy import (
    KAPPA_GRID,
    PRIOR_FILE,
    DiscrepancyRate,
    extrapolation,
    law_axes,
    pointwise_log_density,
    population_rate,
)
from bayes_scaling.fit import fit
from bayes_scaling.intervals import central_interval
from bayes_scaling.laws import LAWS
from bayes_scaling.runs import split_diverged, validate_runs
from bayes_scaling.spec import read_spec
from bayes_scaling.stacking import elpd_data, stacking_weights

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "out" / "calibration"
TASK_MODEL = {task.key: task.model for task in TASKS}
PROBS = (0.5, 0.8, 0.9)


def split(task: Task) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fitted, held out) runs of a task; held-out runs of an arch never fitted are dropped."""
    runs = task.runs()
    below = runs[task.column].to_numpy(float) <= task.threshold
    fitted, held = runs[below].reset_index(drop=True), runs[~below]
    held = held[held["arch"].isin(set(fitted["arch"]))].reset_index(drop=True)
    return fitted, held


def inner_cut(task: Task) -> str:
    """The within-data backtests cut along the task's own direction (what a user calibrating
    for an extrapolation in N would do); compute where the package has no such cut."""
    return {"flops": "compute", "n_active": "n_active", "tokens": "tokens"}.get(
        task.column, "compute"
    )


def cache_path(task: Task, model: str | None = None) -> Path:
    """The task's cache (its own law's), or a rival law's beside it."""
    stem = task.key.replace("/", "_").replace("<=", "le")
    return CACHE / (f"{stem}.npz" if model is None else f"{stem}__{model.replace('/', '_')}.npz")


def refresh_inner(task: Task, seed: int) -> Path:
    """Redo a cached task's within-data backtests only (the outer fit and bootstrap kept)."""
    path = cache_path(task)
    data = dict(np.load(path, allow_pickle=False))
    fitted = split_diverged(validate_runs(split(task)[0]))[0]
    started = time.perf_counter()
    inner = within_data(fitted, read_spec(task.model), inner_cut(task), random_seed=seed)
    data = {k: v for k, v in data.items() if not k.startswith("inner")}
    data.update(
        {k: v for i, item in enumerate(inner) for k, v in item.to_arrays(f"inner{i}_").items()}
    )
    data["inner_count"] = np.array(len(inner))
    data["seconds"][1] = time.perf_counter() - started
    _save(path, data)
    print(f"{task.key}: inner backtest by {inner_cut(task)} redone", flush=True)
    return path


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".tmp.npz"), "wb") as handle:
        np.savez_compressed(handle, **arrays)
    path.with_suffix(".tmp.npz").rename(path)


def _law_evidence(task: Task, model: str, seed: int) -> tuple[dict, bool, list[float]]:
    """Fit ``model`` on the task's smaller runs: the held-out and within-data evidence as
    arrays, whether the fit converged, and the seconds of the fit and the inner backtest."""
    fitted, held = split(task)
    spec = read_spec(model)
    started = time.perf_counter()
    posterior = fit(fitted, spec, random_seed=seed, progressbar=False)
    fit_seconds = time.perf_counter() - started
    outer = evidence(posterior, held)
    started = time.perf_counter()
    inner = within_data(posterior.fitted_runs, spec, inner_cut(task), random_seed=seed)
    arrays = {
        **outer.to_arrays("outer_"),
        **{k: v for i, item in enumerate(inner) for k, v in item.to_arrays(f"inner{i}_").items()},
        "inner_count": np.array(len(inner)),
        "converged": np.array(posterior.convergence().ok),
    }
    return arrays, bool(posterior.convergence().ok), [fit_seconds, time.perf_counter() - started]


def stage_one(task: Task, seed: int, refresh: bool) -> Path:
    """Fit, collect the held-out evidence, the within-data evidence and the bootstrap."""
    path = cache_path(task)
    if path.exists() and not refresh:
        return path
    fitted, held = split(task)
    arrays, converged, (fit_seconds, inner_seconds) = _law_evidence(task, task.model, seed)
    experts = "experts" in LAWS[read_spec(task.model).law].columns
    started = time.perf_counter()
    full, resamples = bootstrap_huber(fitted, random_seed=seed, experts=experts)
    boot_seconds = time.perf_counter() - started
    arrays.update({
        "boot": np.stack([fit_.log_loss(held) for fit_ in resamples]),
        "boot_point": full.log_loss(held),
        "run_id": held["run_id"].to_numpy(dtype=str),
        "fitted_runs": np.array(len(fitted)),
        "seconds": np.array([fit_seconds, inner_seconds, boot_seconds]),
    })  # fmt: skip
    _save(path, arrays)
    print(
        f"{task.key}: {len(fitted)} fitted, {len(held)} held out, converged {converged}, "
        f"{fit_seconds:.0f} s fit, {inner_seconds:.0f} s inner, {boot_seconds:.0f} s bootstrap",
        flush=True,
    )
    return path


def stage_one_rival(task: Task, model: str, seed: int, refresh: bool) -> Path:
    """A rival law's fit and its within-data backtest (its evidence only; no bootstrap)."""
    path = cache_path(task, model)
    if path.exists() and not refresh:
        return path
    arrays, converged, seconds = _law_evidence(task, model, seed)
    _save(path, {**arrays, "seconds": np.array(seconds)})
    print(f"{task.key} / {model}: converged {converged}, {seconds[0]:.0f} s fit", flush=True)
    return path


def _evidence(task: Task, model: str, data: dict) -> dict:
    """Check a cache's runs against the task's split and recompute the distances (the law's
    own axes); adds ``outer`` and ``inner`` :class:`Evidence`."""
    fitted, held = split(task)
    fitted = split_diverged(validate_runs(fitted))[0]  # what fit keeps
    axes = law_axes(read_spec(model).law)
    pairs = [(fitted, held)] + [
        (below, above) for _, below, above in inner_splits(fitted, inner_cut(task), (1 / 3,))
    ]
    prefixes = ["outer_"] + [f"inner{i}_" for i in range(int(data["inner_count"]))]
    if len(pairs) != len(prefixes):
        raise RuntimeError(f"{task.key}: the cache holds another number of inner backtests")
    for prefix, (below, above) in zip(prefixes, pairs, strict=True):
        observed = np.log(above["loss"].to_numpy(float))
        if not np.array_equal(observed, data[f"{prefix}observed"]):
            raise RuntimeError(f"{task.key}: cached {prefix} runs differ from the split; --refresh")
        data[f"{prefix}distance"] = extrapolation(below, above, axes)["distance"].to_numpy()
    data["outer"] = Evidence.from_arrays(data, "outer_")
    data["inner"] = [Evidence.from_arrays(data, prefix) for prefix in prefixes[1:]]
    return data


def load_task(task: Task) -> dict:
    """A task's cached draws, with every run's extrapolation distance recomputed from the task's
    split (distances are cheap; the draws are not, so a change of the distance's definition
    needs no refit), and its rivals' under ``rivals`` (those cached). The recomputed splits
    must hold the cached runs, in order."""
    data = _evidence(task, task.model, dict(np.load(cache_path(task), allow_pickle=False)))
    data["ratio"] = np.exp(data["outer_distance"])
    data["rivals"] = {
        model: _evidence(task, model, dict(np.load(cache_path(task, model), allow_pickle=False)))
        for model in RIVALS.get(task.model, ())
        if cache_path(task, model).exists()
    }
    return data


def predictive_draws(item: Evidence, rate: DiscrepancyRate | None, seed: int) -> np.ndarray:
    """ln loss of a new run at each held-out point: law + discrepancy + run noise, per draw."""
    rng = np.random.default_rng(seed)
    draws = item.log_mean.shape[0]
    noise = item.sigma[:, None] * rng.standard_t(item.nu[:, None], size=item.log_mean.shape)
    out = item.log_mean + noise
    if rate is not None:
        out = out + rate.slopes(draws, rng)[:, None] * item.distance[None, :]
    return out


def score(log_draws: np.ndarray, observed: np.ndarray) -> pd.DataFrame:
    """Per held-out run: coverage per probability, 90% interval score and width, rel. error."""
    loss = np.exp(observed)
    out = pd.DataFrame({"rel_error": np.abs(np.exp(np.median(log_draws, axis=0)) / loss - 1)})
    for prob in PROBS:
        low, high = np.exp(central_interval(log_draws, prob))
        out[f"covered_{prob:g}"] = (low <= loss) & (loss <= high)
        if prob == 0.9:
            penalty = 2.0 / (1.0 - prob)
            miss = np.clip(low - loss, 0, None) + np.clip(loss - high, 0, None)
            out["interval_score_90"] = (high - low + penalty * miss) / loss
            out["width_90"] = (high - low) / loss
    return out


def family_likelihoods(tasks: dict[str, dict]) -> dict[str, np.ndarray]:
    """Per family: the summed ln p(outer held-out runs | kappa) of its tasks."""
    out: dict[str, np.ndarray] = {}
    for key, data in tasks.items():
        family = key.split("--")[0]
        out[family] = out.get(family, 0.0) + data["outer"].log_likelihood(KAPPA_GRID)
    return out


def stacked_draws(
    laws: dict[str, dict], prior: DiscrepancyRate, seed: int
) -> tuple[np.ndarray, dict[str, float]]:
    """The stacked predictive over laws (name -> a task's cached data for that law): each law's
    predictive with its own calibrated rate, mixed in proportion to stacking weights of the
    within-data held-out runs' log predictive densities under the population rate."""
    densities, draws = {}, {}
    for name, data in laws.items():
        inner = data["inner"]
        densities[name] = np.concatenate([
            pointwise_log_density(i.log_mean, i.sigma, i.nu, i.observed, i.distance, prior)
            for i in inner
        ])  # fmt: skip
        update = sum(item.log_likelihood(prior.kappa) for item in inner)
        draws[name] = predictive_draws(data["outer"], prior.updated(update, name), seed)
    samples = min(d.shape[0] for d in draws.values())
    weights = stacking_weights({n: elpd_data(v, samples) for n, v in densities.items()})
    rng = np.random.default_rng(seed)
    share = np.array([weights[name] for name in draws]) * samples
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share)[: samples - counts.sum()]] += 1
    parts = [
        d[rng.choice(d.shape[0], count, replace=False)]
        for d, count in zip(draws.values(), counts, strict=True)
    ]
    return np.concatenate(parts)[rng.permutation(samples)], weights


def stage_two(tasks: dict[str, dict], seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Leave one family out: learn, predict, score. Returns per-run scores, the summary and
    the rates used."""
    families = family_likelihoods(tasks)
    rows, rates = [], {}
    for key, data in tasks.items():
        family = key.split("--")[0]
        others = {name: value for name, value in families.items() if name != family}
        prior = population_rate(others, source=f"population without {family}")
        inner = sum(item.log_likelihood(prior.kappa) for item in data["inner"])
        calibrated = prior.updated(inner, "population + within-data")
        rates[key] = {"prior": prior.describe(), "calibrated": calibrated.describe()}
        outer = data["outer"]
        methods = {
            "discrepancy (population + within-data)": predictive_draws(outer, calibrated, seed),
            "discrepancy (population only)": predictive_draws(outer, prior, seed),
            "no discrepancy, new-run": predictive_draws(outer, None, seed),
            "no discrepancy, expected loss": outer.log_mean,
            "bootstrap (Huber, top-32, 200 resamples)": data["boot"],
        }
        if data["rivals"]:
            laws = {TASK_MODEL[key]: data, **data["rivals"]}
            mixed, weights = stacked_draws(laws, prior, seed)
            methods["stacked over laws (population + within-data)"] = mixed
            rates[key]["stacking weights"] = {n: round(w, 3) for n, w in weights.items()}
        for method, draws in methods.items():
            table = score(draws, outer.observed)
            table["method"], table["family"], table["task"] = method, family, key
            table["ratio"] = data["ratio"]
            rows.append(table)
    scores = pd.concat(rows, ignore_index=True)
    return scores, summarise(scores), rates


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Pooled over held-out runs, and the mean over families of each family's mean."""
    metrics = {
        "coverage_50": ("covered_0.5", "mean"),
        "coverage_80": ("covered_0.8", "mean"),
        "coverage_90": ("covered_0.9", "mean"),
        "interval_score_90": ("interval_score_90", "mean"),
        "median_width_90": ("width_90", "median"),
        "median_rel_error": ("rel_error", "median"),
    }
    pooled = scores.groupby("method", sort=False).agg(runs=("rel_error", "size"), **metrics)
    per_family = scores.groupby(["method", "family"], sort=False).agg(**metrics)
    balanced = per_family.groupby("method", sort=False).mean()
    pooled.insert(0, "scope", "pooled over runs")
    balanced.insert(0, "scope", "mean over families")
    balanced.insert(1, "runs", pooled["runs"])
    fam = per_family.reset_index().rename(columns={"family": "scope"})
    fam.insert(2, "runs", scores.groupby(["method", "family"], sort=False).size().to_numpy())
    table = pd.concat([pooled.reset_index(), balanced.reset_index(), fam], ignore_index=True)
    return table


def write_prior(tasks: dict[str, dict]) -> Path:
    """Learn the population prior on every family and ship it with its provenance."""
    rate = population_rate(family_likelihoods(tasks), source="population (calibration.py)")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    payload = {
        "what": "Population prior of the extrapolation discrepancy's rate kappa (nats of ln "
        "loss per e-fold beyond the data), learned from leave-largest-out backtests of "
        "public scaling studies by benchmarks/calibration.py --write-prior",
        "tasks": sorted(tasks),
        "bayes_scaling_version": __version__,
        "git_commit": commit,
        "summary": rate.describe(),
        "rate": rate.to_dict(),
    }
    path = ROOT / "bayes_scaling" / Path(*PRIOR_FILE)
    atomic_write(path, json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}: {rate.describe()}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="substrings of task keys (stage 1 only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refresh", action="store_true", help="refit cached tasks")
    parser.add_argument(
        "--refresh-inner", action="store_true", help="redo cached tasks' within-data backtests"
    )
    parser.add_argument("--write-prior", action="store_true")
    parser.add_argument("--fit-only", action="store_true", help="stage 1 only")
    args = parser.parse_args()
    chosen = [t for t in TASKS if not args.only or any(k in t.key for k in args.only)]
    for task in chosen:
        if args.refresh_inner and cache_path(task).exists():
            refresh_inner(task, args.seed)
        else:
            stage_one(task, args.seed, args.refresh)
        for model in RIVALS.get(task.model, ()):
            stage_one_rival(task, model, args.seed, args.refresh)
    if args.fit_only:
        return
    tasks = {t.key: load_task(t) for t in TASKS if cache_path(t).exists()}
    scores, summary, rates = stage_two(tasks, args.seed)
    for key, rate in rates.items():
        print(f"{key}: prior {rate['prior']}\n    calibrated {rate['calibrated']}")
        if "stacking weights" in rate:
            print(f"    stacking weights {rate['stacking weights']}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    save_table(summary, RESULTS / "calibration.csv")
    save_table(scores, RESULTS / "calibration_runs.csv")
    if args.write_prior:
        write_prior(tasks)


if __name__ == "__main__":
    main()
