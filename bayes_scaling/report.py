"""``bayes-scaling report``: one page to decide from: what to train at my budget, how sure, why.

:func:`build_report` fits the hypotheses to a run table and writes ``index.html`` (one
self-contained file, figures embedded as PNG) and ``summary.json`` (every number the summary
states, with its interval). Sections, in order: summary, data, fits, laws, extrapolation,
decisions, hypotheses, hyperparameters. A section the table cannot support (one arch: no MoE
comparison; no lr x batch grid: no hyperparameters) is left out, and the page says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling._io import atomic_write
from bayes_scaling.decide import recommend
from bayes_scaling.fit import fit
from bayes_scaling.plots import (
    model_flops,
)
from bayes_scaling.posterior import Posterior
from bayes_scaling.predict import law_draws
from bayes_scaling.report_html import Section, render
from bayes_scaling.report_sections import (
    PROB,
    accuracy_section,
    data_section,
    decision_eval_set,
    decisions_section,
    extrapolation_section,
    fits_section,
    hyper_section,
    hypotheses_section,
    laws_section,
)
from bayes_scaling.runs import split_diverged, validate_runs
from bayes_scaling.spec import read_spec

__all__ = [
    "DEFAULT_DATASET",
    "Report",
    "build_report",
    "default_model",
    "default_target_loss",
    "default_targets",
    "reach_data",
]

DEFAULT_DATASET = "deepmind-routing"


@dataclass
class Report:
    """What :func:`build_report` wrote: the page, the summary and its numbers."""

    html: Path
    summary_json: Path
    summary: dict[str, Any] = field(repr=False)


def default_model(runs: pd.DataFrame) -> str:
    """The experts law (hierarchical over arch) for tables with routed runs, else Chinchilla."""
    return "loss/wang2024" if (runs["experts"] > 1).any() else "loss/chinchilla"


def default_targets(runs: pd.DataFrame) -> list[float]:
    """10x and 100x the largest run's compute (6 N D), to one significant figure."""
    top = float(model_flops(runs).max())
    return [float(f"{10 * top:.0e}"), float(f"{100 * top:.0e}")]


def cell_best(runs: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """A loss law describes each (arch, N, D, E) cell at its best hyperparameters: with an
    lr x batch grid (a cell trained at several (lr, batch) pairs, both recorded on every run)
    keep each cell's lowest loss. Returns the runs and whether a grid was found; repeated runs
    of one setting (seeds, routing variants) are not a grid and are all kept."""
    keys = ["arch", "n_active", "tokens", "experts"]
    if not {"lr", "batch_tokens"} <= set(runs):
        return runs, False
    settings = runs[["lr", "batch_tokens"]].apply(pd.to_numeric, errors="coerce")
    if settings.isna().any().any():
        return runs, False
    pairs = runs.assign(lr=settings["lr"], batch_tokens=settings["batch_tokens"])
    if not (pairs.groupby(keys)[["lr", "batch_tokens"]].nunique().max(axis=1) > 1).any():
        return runs, False
    best = runs.loc[runs.groupby(keys)["loss"].idxmin()].sort_index()
    return best.reset_index(drop=True), True


def grid_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the cells trained at several (lr, batch) pairs: what a bowl is fitted on
    (a table may mix such a grid with single-run scaling cells)."""
    keys = ["arch", "n_active", "tokens", "experts"]
    settings = runs.groupby(keys)[["lr", "batch_tokens"]].transform("nunique").max(axis=1)
    return runs[settings > 1].reset_index(drop=True)


def _size_cost(posterior: Posterior, chosen: dict[str, Any]) -> dict[str, float]:
    """Median % loss increase, at the same budget, of a model 0.5x or 2x the chosen size."""
    base = {"arch": chosen["arch"], "experts": chosen["experts"]}
    if decision_eval_set(posterior.runs) is not None:
        base["eval_set"] = decision_eval_set(posterior.runs)
    points = pd.DataFrame([
        {**base, "n_active": chosen["n_active"] * f, "tokens": chosen["tokens"] / f}
        for f in (1.0, 0.5, 2.0)
    ])  # fmt: skip
    draws = np.exp(law_draws(posterior, points))
    return {f"{label}x": float(100 * np.median(draws[:, i] / draws[:, 0] - 1))
            for i, label in ((1, "0.5"), (2, "2"))}  # fmt: skip


def decide(posterior: Posterior, targets: Sequence[float], hyper: Posterior | None) -> dict:
    """Per target: the recommendation over every arch, per arch, and the cost of 0.5x / 2x."""
    archs = sorted(posterior.runs["arch"].unique())
    eval_set = decision_eval_set(posterior.runs)
    out = []
    for budget in targets:
        best = recommend(posterior, budget, hyper=hyper, eval_set=eval_set).to_dict(PROB)
        per_arch = {
            arch: recommend(posterior, budget, archs=[arch], eval_set=eval_set).to_dict(PROB)
            for arch in archs
        }
        out.append({"flops": budget, "best": best, "per_arch": per_arch,
                    "size_cost_pct": _size_cost(posterior, best)})  # fmt: skip
    return {"targets": out}


def moe_section_data(posterior: Posterior, targets: Sequence[float]) -> dict[str, Any] | None:
    """P(MoE beats dense) and Efficiency Leverage per routed arch at the targets and along a
    compute grid from the data to the largest target; None without both kinds of arch."""
    import warnings

    from bayes_scaling.moe import moe_vs_dense

    archs = sorted(posterior.runs["arch"].unique())
    routed = [a for a in archs if a != "dense"]
    if "dense" not in archs or not routed:
        return None
    low = float(model_flops(posterior.runs).min())
    grid = np.geomspace(low, max(targets), 12)
    eval_set = decision_eval_set(posterior.runs)
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreachable draws are counted in the summary
        for arch in routed:
            at = moe_vs_dense(posterior, list(targets), arch, eval_set=eval_set, max_draws=400)
            along = moe_vs_dense(posterior, grid, arch, eval_set=eval_set, max_draws=400)
            out[arch] = {"targets": at.to_dict(PROB), "grid": along.summary((PROB,))}
    return out


def default_target_loss(decisions: dict) -> float:
    """The loss to reach by default: the recommended run's median expected loss at the
    smallest target budget, to 3 significant figures (so the curve crosses 1/2 near there)."""
    return float(f"{decisions['targets'][0]['best']['loss_median']:.3g}")


def _crossing(budgets: np.ndarray, probs: np.ndarray, level: float) -> float | None:
    """The smallest budget where ``probs`` reaches ``level`` (log-linear between grid points);
    None when it never does on the grid."""
    above = np.flatnonzero(probs >= level)
    if not len(above):
        return None
    i = int(above[0])
    if i == 0:
        return float(budgets[0])
    x0, x1 = np.log(budgets[i - 1]), np.log(budgets[i])
    share = (level - probs[i - 1]) / (probs[i] - probs[i - 1])
    return float(np.exp(x0 + share * (x1 - x0)))


def reach_data(posterior: Posterior, targets: Sequence[float], loss: float) -> dict[str, Any]:
    """P(a new run's loss <= ``loss``) against budget per arch, each budget's run chosen to
    maximise that probability (``recommend(..., objective="p-target")``), on a log grid from the
    data's compute (at most 1000x below the smallest target) to 3x the largest target; and the
    budget where it first reaches 0.5 and 0.9. A budget where no size can be chosen (the
    optimum outside the size grid) is NaN; an arch whose irreducible loss lies above ``loss``
    gets ``unreachable`` (the reason) instead of probabilities."""
    from bayes_scaling.frontier import DecisionError, arch_law

    low = max(float(model_flops(posterior.runs).min()), min(targets) / 1e3)
    budgets = np.geomspace(low, 3 * max(targets), 25)
    eval_set = decision_eval_set(posterior.runs)
    out: dict[str, Any] = {"target_loss": loss, "flops": budgets.tolist(), "per_arch": {}}
    for arch in sorted(posterior.runs["arch"].unique()):
        try:  # a target at or below the arch's irreducible loss is reached at no budget
            arch_law(posterior, arch, eval_set).check_target(loss)
        except DecisionError as error:
            out["per_arch"][arch] = {"p_reach": [None] * len(budgets), "flops_p50": None,
                                     "flops_p90": None, "unreachable": str(error)}  # fmt: skip
            continue
        probs = []
        for budget in budgets:
            try:
                chosen = recommend(posterior, float(budget), "p-target", target=loss,
                                   archs=[arch], eval_set=eval_set)  # fmt: skip
                probs.append(chosen.score)
            except DecisionError:
                probs.append(np.nan)
        values = np.asarray(probs, float)
        known = np.isfinite(values)
        out["per_arch"][arch] = {
            "p_reach": values.tolist(),
            **{f"flops_p{int(100 * level)}": _crossing(budgets[known], values[known], level)
               for level in (0.5, 0.9)},
        }  # fmt: skip
    return out


def summary_section(decisions: dict, moe: dict | None, facts: dict) -> tuple[Section, dict]:
    text, numbers = [], []
    for target in decisions["targets"]:
        best = target["best"]
        low, high = best["loss_interval"]
        line = (
            f"With {target['flops']:.3g} FLOPs, train {best['arch']}"
            + (f" with {best['experts']:g} experts" if best["experts"] > 1 else "")
            + f": {best['n_active']:.3g} active parameters on {best['tokens']:.3g} tokens. "
            f"Expected loss {best['loss_median']:.4f} ({100 * PROB:g}% interval {low:.4f}-"
            f"{high:.4f}; a single run {best['new_run_interval'][0]:.4f}-"
            f"{best['new_run_interval'][1]:.4f})."
        )
        if best.get("lr"):
            lr, batch = best["lr"]["value"], best["batch_tokens"]["value"]
            line += f" Learning rate {lr:.3g}, batch {batch:.3g} tokens (see Hyperparameters)."
        entry = {"flops": target["flops"], "recommended": best}
        if moe:
            parts, entry["moe_vs_dense"] = [], {}
            for arch, result in moe.items():
                at = result["targets"]
                i = at["flops"].index(target["flops"])
                p, lev = at["p_moe_better"][i], at["leverage"]
                bounds = lev["interval"][i]
                parts.append(
                    f"P({arch} beats dense) {p:.2f}, Efficiency Leverage "
                    f"{_num(lev['median'][i])} [{_num(bounds[0])}, {_num(bounds[1])}]"
                )
                entry["moe_vs_dense"][arch] = {
                    "p_moe_better": p,
                    "leverage_median": lev["median"][i],
                    "leverage_interval": bounds,
                }
            line += " " + "; ".join(parts) + "."
        text.append(line)
        numbers.append(entry)
    if not all(facts["convergence_ok"].values()):
        text.append("Warning: a fit failed the convergence check (see Fits): do not trust "
                    "these numbers before refitting with longer chains.")  # fmt: skip
    return Section("summary", "Summary", text), {"prob": PROB, "targets": numbers}


def _num(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:.3g}"


def build_report(
    runs: pd.DataFrame,
    models: Sequence[str] | None = None,
    targets: Sequence[float] | None = None,
    out: str | Path = "out/report",
    source: str = "",
    random_seed: int = 0,
    log: Callable[[str], None] | None = None,
    target_loss: float | None = None,
    accuracy: Any = None,
    **settings: Any,
) -> Report:
    """Fit, decide and write ``out/index.html`` and ``out/summary.json``.

    ``models``: hypothesis names or files, the first one decides (default
    :func:`default_model`); ``targets``: budgets in FLOPs (default :func:`default_targets`);
    ``target_loss``: the loss whose P(reached) against budget the decisions section draws
    (default :func:`default_target_loss`); ``accuracy``: an accuracy posterior
    (:class:`~bayes_scaling.downstream.AccuracyPosterior`) whose per-task accuracy at each
    recommended run gets a section; ``settings`` go to every fit (``draws``, ``tune``,
    ``chains``...).
    """
    say = log or (lambda message: None)
    checked = validate_runs(runs)
    kept, left_out = split_diverged(checked)
    kept, grid = cell_best(kept)
    models = list(models or [default_model(kept)])
    targets = sorted(float(t) for t in (targets or default_targets(kept)))
    posteriors = {}
    for index, model in enumerate(models, start=1):
        say(f"[fit {index}/{len(models)}] {model} on {len(kept)} runs")
        spec = read_spec(model)
        posteriors[spec.name or model] = fit(kept, spec, random_seed, False, **settings)
    primary = next(iter(posteriors.values()))
    hyper = None
    if grid:
        name = "hyper/steplaw-sparsity" if (checked["experts"] > 1).any() else "hyper/steplaw"
        say(f"[fit] {name} on the lr x batch grid")
        hyper = fit(grid_runs(split_diverged(checked)[0]), read_spec(name), random_seed, False,
                    **settings)  # fmt: skip
    say("[decide] recommendations at " + ", ".join(f"{t:.3g}" for t in targets) + " FLOPs")
    decisions = decide(primary, targets, hyper)
    moe = moe_section_data(primary, targets)
    if target_loss is not None and not target_loss > 0:
        raise ValueError(f"target loss must be a positive number, not {target_loss}")
    reach = reach_data(primary, targets, target_loss or default_target_loss(decisions))
    say("[figures] drawing")
    fits, facts = fits_section(posteriors)
    hypotheses, loo_facts = hypotheses_section(posteriors)
    summary, numbers = summary_section(decisions, moe, facts)
    sections = [
        summary, data_section(kept, left_out, grid), fits, laws_section(primary),
        extrapolation_section(primary, decisions),
        decisions_section(primary, decisions, moe, reach),
        hypotheses, hyper_section(hyper, decisions, checked),
    ]  # fmt: skip
    accuracy_facts = None
    if accuracy is not None:
        section, accuracy_facts = accuracy_section(accuracy, decisions)
        sections.append(section)
    payload = {
        "source": source, "models": list(posteriors), "runs": len(kept),
        "left_out": left_out["run_id"].astype(str).tolist(), **numbers, **facts,
        "hypotheses": loo_facts, "reach": reach, "accuracy": accuracy_facts,
        "sections_left_out": {s.key: s.left_out for s in sections if s.left_out},
    }  # fmt: skip
    folder = Path(out)
    html = atomic_write(folder / "index.html", render(f"Scaling report: {source}", sections))
    summary_json = atomic_write(
        folder / "summary.json", json.dumps(payload, indent=1, default=_json) + "\n"
    )
    say(f"[done] wrote {html}")
    return Report(html, summary_json, payload)


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.DataFrame):
        return value.to_dict(orient="records")
    raise TypeError(f"{type(value).__name__} is not JSON")
