"""The report's sections (:mod:`bayes_scaling.report`): each builds its text, tables and
captioned figures from fitted posteriors and decisions; a section the table cannot support
says why it is left out."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from bayes_scaling.compare import loo_pit
from bayes_scaling.plots import (
    arch_colors,
    model_flops,
    plot_exponents,
    plot_frontier,
    plot_loss_vs_compute,
)
from bayes_scaling.posterior import Posterior
from bayes_scaling.predict import law_draws, predict_loss
from bayes_scaling.report_figures import pit_figure, png, reach_figure
from bayes_scaling.report_html import Section, table_html

__all__ = [
    "PROB",
    "data_section",
    "decision_eval_set",
    "decisions_section",
    "extrapolation_section",
    "fits_section",
    "hyper_section",
    "hypotheses_section",
    "laws_section",
]

PROB = 0.9


def decision_eval_set(runs: pd.DataFrame) -> str | None:
    """The eval set the report decides on: None for a table with one, else its most common."""
    sets = runs["eval_set"].astype(str)
    return None if sets.nunique() == 1 else str(sets.mode().iloc[0])


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.quantile(values, [(1 - PROB) / 2, (1 + PROB) / 2])
    return [float(low), float(high)]


def data_section(runs: pd.DataFrame, left_out: pd.DataFrame, grid: bool) -> Section:
    rows = []
    for arch, group in runs.groupby("arch"):
        rows.append({
            "arch": arch, "runs": len(group),
            "N (active)": f"{group.n_active.min():.3g} - {group.n_active.max():.3g}",
            "D (tokens)": f"{group.tokens.min():.3g} - {group.tokens.max():.3g}",
            "6 N D": f"{model_flops(group).min():.3g} - {model_flops(group).max():.3g}",
            "experts": ", ".join(f"{e:g}" for e in sorted(group.experts.unique())),
        })  # fmt: skip
    text = [f"{len(runs)} runs in {runs['arch'].nunique()} arch(s) are fitted."]
    if (chosen := decision_eval_set(runs)) is not None:
        sets = ", ".join(sorted(runs["eval_set"].astype(str).unique()))
        text.append(f"Losses on several eval sets ({sets}): decisions use {chosen}, the most "
                    "common.")  # fmt: skip
    if len(left_out):
        ids = ", ".join(left_out["run_id"].astype(str).head(12))
        text.append(f"{len(left_out)} diverged run(s) are left out of every fit: {ids}.")
    ratio = runs["flops"].to_numpy(float) / model_flops(runs)
    if not np.allclose(ratio, 1.0, rtol=0.02):
        text.append(
            f"The table's own FLOPs are {ratio.min():.2g}-{ratio.max():.2g}x of 6 N D (they "
            "count attention or routing); every figure puts runs and laws at 6 N D."
        )
    if grid:
        text.append("The table holds an lr x batch grid: the loss law is fitted to each "
                    "(arch, N, D, E) cell's best run.")  # fmt: skip
    return Section("data", "Data", text, [table_html(pd.DataFrame(rows))])


def fits_section(posteriors: dict[str, Posterior]) -> tuple[Section, dict[str, Any]]:
    name, primary = next(iter(posteriors.items()))
    runs = primary.runs
    inside = predict_loss(primary, runs, probs=(0.5, PROB))
    loss = runs["loss"].to_numpy(float)
    coverage = {
        f"{p:g}": float(((inside[f"new_run_low_{p:g}"] <= loss)
                         & (loss <= inside[f"new_run_high_{p:g}"])).mean())
        for p in (50, 90)
    }  # fmt: skip
    residual = np.log(loss) - np.median(law_draws(primary, runs), axis=0)
    sigma = float(np.median(primary.draws("sigma")))
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    colors = arch_colors(list(runs["arch"].unique()))
    for axis, (label, x) in zip(axes, (("N (active)", runs["n_active"]),
                                       ("D (tokens)", runs["tokens"]),
                                       ("6 N D", model_flops(runs))), strict=True):  # fmt: skip
        for arch in colors:
            mine = (runs["arch"] == arch).to_numpy()
            axis.scatter(np.asarray(x)[mine], 100 * residual[mine], s=10, color=colors[arch],
                         label=arch)  # fmt: skip
        axis.axhspan(-200 * sigma, 200 * sigma, color="0.5", alpha=0.15, linewidth=0)
        axis.axhline(0, color="k", linewidth=0.8)
        axis.set(xscale="log", xlabel=label)
        axis.xaxis.set_minor_formatter(NullFormatter())  # one token budget: no crowded labels
    axes[0].set_ylabel("residual, % of loss")
    axes[0].legend(fontsize="small")
    caption = (
        f"Residuals of {name}: ln observed loss minus the law's median, in percent, against "
        f"N, D and compute, per arch. The grey band is +-2 sigma of the fitted run noise "
        f"({100 * sigma:.2g}%). A trend along any axis means the law's form misses it."
    )
    text = [f"{n}: {p.convergence()}" for n, p in posteriors.items()]
    text.append(
        f"Posterior predictive check inside the data ({name}): {100 * coverage['50']:.0f}% of "
        f"runs lie in their 50% new-run interval and {100 * coverage['90']:.0f}% in their 90% "
        "one (about 50% and 90% if the noise model is right)."
    )
    nu = float(np.median(primary.draws("nu")))
    if nu < 2:
        text.append(f"The noise's degrees of freedom are {nu:.2g} < 2: its heavy tails absorb "
                    "misfit; compare laws before trusting intervals inside the data.")  # fmt: skip
    pit_png, pit = pit_figure(name, loo_pit(primary))
    verdict = "inside" if pit["loo_pit_ks"] <= pit["loo_pit_band"] else "outside"
    text.append(
        f"LOO-PIT ({name}): {100 * pit['loo_pit_tails']:.0f}% of runs fall in the outer 10% of "
        f"their leave-one-out predictive (10% if calibrated); the largest ECDF gap "
        f"{pit['loo_pit_ks']:.3f} lies {verdict} the 90% band of a uniform sample "
        f"({pit['loo_pit_band']:.3f})."
    )
    figures = [png(figure, "residuals", caption), pit_png]
    facts = {"convergence_ok": {n: bool(p.convergence().ok) for n, p in posteriors.items()},
             "in_sample_coverage": coverage, "noise_sigma": sigma, "noise_nu": nu,
             **pit}  # fmt: skip
    return Section("fits", "Fits", text, figures=figures), facts


def laws_section(posterior: Posterior) -> Section:
    post = posterior.idata["posterior"]
    rows = []
    for name, values in post.data_vars.items():
        dims = [d for d in values.dims if d not in ("chain", "draw")]
        if str(name).endswith(("_raw", "_offset", "_z")):
            continue  # the sampler's own coordinates, not the law's parameters
        if dims == ["arch"]:
            for arch in values["arch"].to_numpy():
                draws = values.sel(arch=arch).to_numpy().ravel()
                rows.append((str(name), str(arch), draws))
        elif not dims:
            rows.append((str(name), "population / shared", values.to_numpy().ravel()))
    table = pd.DataFrame([
        {"parameter": n, "arch": a, "median": f"{np.median(v):.4g}",
         f"{100 * PROB:g}% interval": "[{:.4g}, {:.4g}]".format(*_interval(v))}
        for n, a, v in rows
    ])  # fmt: skip
    figure = plot_exponents(posterior)
    caption = ("Posterior densities of the exponents per arch (alpha: parameters, beta: "
               "tokens, gamma: experts). Overlap means the data cannot tell the archs apart "
               "on that exponent.")  # fmt: skip
    return Section(
        "laws", "Laws", [f"Parameters of {posterior.spec.name or posterior.spec.law}."],  # type: ignore[union-attr]
        [table_html(table)], [png(figure, "exponents", caption)],
    )  # fmt: skip


def _targets_frame(decisions: dict) -> pd.DataFrame:
    rows = []
    for target in decisions["targets"]:
        for arch, chosen in target["per_arch"].items():
            low, high = chosen["new_run_interval"]
            rows.append({"arch": arch, "flops": target["flops"], "n_active": chosen["n_active"],
                         "tokens": chosen["tokens"], "loss_median": chosen["loss_median"],
                         "new_run_low_90": low, "new_run_high_90": high})  # fmt: skip
    return pd.DataFrame(rows)


def extrapolation_section(posterior: Posterior, decisions: dict) -> Section:
    chosen = _targets_frame(decisions)
    extend = max(10.0, 1.5 * float(chosen["n_active"].max() / posterior.runs["n_active"].max()))
    figure = plot_loss_vs_compute(posterior, extend=extend, targets=chosen)
    caption = (
        "Loss against compute (6 N D) per arch: the median law through the runs' own token "
        "budgets (a log-linear path of D on N), the 90% band of the expected loss (dark: the "
        "law's uncertainty and the extrapolation discrepancy) and of a new run (light: plus run "
        "noise). The shaded region lies beyond the data. Diamonds: each arch's compute-optimal "
        "run at each target budget, with its 90% new-run interval (off the curves when the "
        "optimum spends tokens differently from the runs)."
    )
    return Section("extrapolation", "Extrapolation", [], figures=[png(figure, "loss", caption)])


def decisions_section(
    posterior: Posterior, decisions: dict, moe: dict | None, reach: dict | None = None
) -> Section:
    rows = []
    for target in decisions["targets"]:
        for arch, c in target["per_arch"].items():
            rows.append({
                "budget (FLOPs)": f"{target['flops']:.3g}", "arch": arch,
                "experts": f"{c['experts']:g}", "N (active)": f"{c['n_active']:.3g}",
                "D (tokens)": f"{c['tokens']:.3g}", "D / N": f"{c['tokens_per_param']:.3g}",
                "expected loss": "{:.4f} [{:.4f}, {:.4f}]".format(
                    c["loss_median"], *c["loss_interval"]),
                "new run": "[{:.4f}, {:.4f}]".format(*c["new_run_interval"]),
                "chosen": "yes" if arch == target["best"]["arch"] else "",
            })  # fmt: skip
    budgets = [t["flops"] for t in decisions["targets"]]
    frontier_figure = plot_frontier(
        posterior, budgets=(float(model_flops(posterior.runs).min()), max(budgets) * 3),
        chosen=_targets_frame(decisions), eval_set=decision_eval_set(posterior.runs),
    )  # fmt: skip
    figures = [
        png(
            frontier_figure,
            "frontier",
            (
                "Compute-optimal model size and tokens per arch (medians, 90% bands); grey: the "
                "compute the runs span; diamonds: the recommended runs at the target budgets."
            ),
        )
    ]
    text = []
    for target in decisions["targets"]:
        cost = target["size_cost_pct"]
        text.append(
            f"At {target['flops']:.3g} FLOPs, a model half the chosen size costs "
            f"{cost['0.5x']:+.2f}% in loss and one twice the size {cost['2x']:+.2f}% (medians, "
            "same budget): how flat the optimum is."
        )
    if reach is not None:
        reach_png, sentences = reach_figure(posterior, reach)
        figures.append(reach_png)
        text += sentences
    if moe is None:
        text.append("No MoE comparison: the table needs a dense arch and a routed one.")
    else:
        figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        colors = arch_colors(list(posterior.runs["arch"].unique()))
        for arch, result in moe.items():
            grid = result["grid"]
            axes[0].plot(grid["flops"], grid["p_moe_better"], color=colors[arch], label=arch)
            axes[1].plot(grid["flops"], grid["leverage_median"], color=colors[arch], label=arch)
            axes[1].fill_between(grid["flops"], grid["leverage_low_90"], grid["leverage_high_90"],
                                 color=colors[arch], alpha=0.2, linewidth=0)  # fmt: skip
        axes[0].set(xscale="log", xlabel="training FLOPs C", ylabel="P(MoE loss < dense loss)",
                    ylim=(-0.02, 1.02))  # fmt: skip
        axes[1].set(xscale="log", yscale="log", xlabel="training FLOPs C",
                    ylabel="Efficiency Leverage")  # fmt: skip
        axes[1].axhline(1.0, color="k", linewidth=0.8)
        axes[1].set_ylabel("Efficiency Leverage")
        for formatter in (axes[1].yaxis.set_major_formatter, axes[1].yaxis.set_minor_formatter):
            formatter(FormatStrFormatter("%.3g"))
        axes[0].legend(fontsize="small")
        figures.append(
            png(
                figure,
                "moe",
                "Left: the posterior probability that compute-optimal MoE reaches a lower "
                "loss than compute-optimal dense at each budget. Right: Efficiency Leverage, "
                "how many times more compute dense needs to match MoE's loss (median, 90% "
                "band); above 1 MoE wins.",
            )
        )
    return Section("decisions", "Decisions", text, [table_html(pd.DataFrame(rows))], figures)


def hypotheses_section(posteriors: dict[str, Posterior]) -> tuple[Section, dict | None]:
    if len(posteriors) < 2:
        return Section(
            "hypotheses",
            "Hypotheses",
            [],
            left_out=(
                "Only one hypothesis was fitted: give --model twice or more to compare laws by "
                "PSIS-LOO and stacking weights (and `bayes-scaling compare --backtest` to score "
                "them on larger held-out runs)."
            ),
        ), None
    from bayes_scaling.compare import compare

    result = compare(posteriors)
    table = result.table[["law", "pooling", "elpd_loo", "se", "high_pareto_k", "weight_loo"]]
    text = [
        "PSIS-LOO scores how well each hypothesis predicts a run among its neighbours; "
        "scaling laws are used beyond the data, so read this with the backtest scores "
        "(`bayes-scaling compare --backtest --stack-by extrapolation`).",
        *result.warnings,
    ]
    facts = {n: {"elpd_loo": float(r["elpd_loo"]), "se": float(r["se"]),
                 "weight_loo": float(r["weight_loo"])} for n, r in table.iterrows()}  # fmt: skip
    return Section("hypotheses", "Hypotheses", text, [table_html(table.reset_index())]), facts


def hyper_section(hyper: Posterior | None, decisions: dict, runs: pd.DataFrame) -> Section:
    if hyper is None:
        return Section(
            "hyperparameters",
            "Hyperparameters",
            [],
            left_out=(
                "No lr x batch grid in this table (several runs per (arch, N, D, E) cell with "
                "columns lr and batch_tokens): no learning-rate or batch-size law is fitted."
            ),
        )
    from bayes_scaling.plots import plot_bowl

    text = []
    for target in decisions["targets"]:
        best = target["best"]
        lr, batch = best.get("lr") or {}, best.get("batch_tokens") or {}
        if not lr:
            continue
        text.append(
            f"At {target['flops']:.3g} FLOPs ({best['arch']}, N {best['n_active']:.3g}): lr "
            f"{lr['value']:.3g} (optimum {lr['median']:.3g}, [{lr['interval'][0]:.3g}, "
            f"{lr['interval'][1]:.3g}]), batch {batch['value']:.3g} tokens (optimum "
            f"{batch['median']:.3g}, [{batch['interval'][0]:.3g}, {batch['interval'][1]:.3g}]; "
            f"{100 * PROB:g}% intervals)."
        )
        for name, column, value in (("lr", "lr", lr), ("batch", "batch_tokens", batch)):
            grid = runs[column].to_numpy(float)
            if not grid.min() <= value["value"] <= grid.max():
                text.append(f"Warning: the recommended {name} lies outside the grid's range "
                            f"[{grid.min():.3g}, {grid.max():.3g}]: an extrapolation.")  # fmt: skip
    cells = hyper.runs.groupby(["n_active", "tokens"]).ngroup()
    figure = plot_bowl(hyper, cell=int(cells.iloc[hyper.runs["n_active"].idxmax()]))
    caption = (
        "The fitted loss bowl over learning rate and batch size in the largest cell "
        "(contours of the fitted, asymmetric bowl), with the runs of that cell."
    )
    return Section("hyperparameters", "Hyperparameters", text,
                   figures=[png(figure, "bowl", caption)])  # fmt: skip


def accuracy_section(accuracy: Any, decisions: dict) -> tuple[Section, list[dict]]:
    """Downstream accuracy of each target's recommended run, per task, from an accuracy
    posterior (:mod:`bayes_scaling.downstream`), with its reach beyond the law's own data."""
    rows, facts = [], []
    largest = float(accuracy.table["n_active"].max())
    for target in decisions["targets"]:
        best = target["best"]
        points = pd.DataFrame({"task": accuracy.tasks, "n_active": best["n_active"],
                               "tokens": best["tokens"]})  # fmt: skip
        predicted = accuracy.predict(points, PROB)
        for row in predicted.itertuples():
            facts.append({"flops": target["flops"], "task": row.task, "median": row.acc_median,
                          "interval": [row.acc_low, row.acc_high],
                          "new_evaluation": [row.new_low, row.new_high]})  # fmt: skip
            interval = f"{row.acc_median:.3f} [{row.acc_low:.3f}, {row.acc_high:.3f}]"
            new = f"[{row.new_low:.3f}, {row.new_high:.3f}]"
            rows.append({"budget (FLOPs)": f"{target['flops']:.3g}", "task": row.task,
                         "arch": best["arch"], "N (active)": f"{best['n_active']:.3g}",
                         "D (tokens)": f"{best['tokens']:.3g}", "accuracy": interval,
                         "a new evaluation": new})  # fmt: skip
    reach = max(t["best"]["n_active"] for t in decisions["targets"]) / largest
    tokens = max(t["best"]["tokens"] for t in decisions["targets"])
    tokens_reach = tokens / float(accuracy.table["tokens"].max())
    routed = sorted({t["best"]["arch"] for t in decisions["targets"] if t["best"]["experts"] > 1})
    text = [
        f"Accuracy law {accuracy.spec.name or accuracy.spec.law}, fitted on "
        f"{len(accuracy.table)} (checkpoint, task) rows of its own data (models up to "
        f"{largest:.3g} parameters): the recommended runs lie up to {reach:.3g}x beyond them "
        f"in N. Intervals are {100 * PROB:g}%; the law's intervals hold no extrapolation "
        "discrepancy, so read them as lower bounds on the uncertainty far from the data.",
        f"In D the recommended runs reach {tokens_reach:.3g}x the law's largest token count.",
    ]
    if routed:
        text.append(
            f"The accuracy law was fitted on dense models; for {', '.join(routed)} it is applied "
            "at the active parameter count, an assumption the data do not test."
        )
    return Section("accuracy", "Downstream accuracy", text, [table_html(pd.DataFrame(rows))]), facts
