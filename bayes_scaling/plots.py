"""Figures with uncertainty bands: compute first (xarray / pandas), draw second.

Every ``plot_*`` function takes ``ax=None`` and returns the matplotlib figure. Importing this
module never chooses a backend: in Jupyter the figures appear inline, and headless (the CLI,
CI) matplotlib falls back to a non-interactive one by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from bayes_scaling.fit import Posterior
from bayes_scaling.predict import predict_loss

__all__ = [
    "arch_colors",
    "loss_curve",
    "model_flops",
    "plot_bowl",
    "plot_exponents",
    "plot_frontier",
    "plot_isoflop",
    "plot_loss_vs_compute",
    "plot_optimum_vs_scale",
    "plot_p_moe_better",
]


def _typical_experts(runs: pd.DataFrame, table: pd.DataFrame | None = None) -> int:
    """The expert count shown for an arch: of the counts above 1 it has, the one with the most
    runs across the whole ``table`` (so routed archs are drawn at one E where they share it),
    ties to the larger; 1 for a dense arch."""
    routed = runs.loc[runs["experts"] > 1, "experts"]
    if routed.empty:
        return 1
    pool = table if table is not None else runs
    counts = pool.loc[pool["experts"].isin(set(routed)), "experts"].value_counts()
    return int(max(counts.index, key=lambda e: (counts[e], e)))


def loss_curve(
    posterior: Posterior,
    arch: str,
    extend: float = 10.0,
    points: int = 40,
    probs: Sequence[float] = (0.5, 0.9),
    experts: int | None = None,
) -> pd.DataFrame:
    """Predicted loss along an arch's scaling path, from its smallest model to ``extend`` times
    its largest. Tokens follow the arch's runs: a log-linear fit of ln D on ln N (constant D
    when every run has the same tokens)."""
    runs = posterior.runs[posterior.runs["arch"] == arch]
    if runs.empty:
        raise ValueError(
            f"no runs of arch {arch!r}; the posterior has {sorted(posterior.runs['arch'].unique())}"
        )
    log_n, log_d = np.log(runs["n_active"]), np.log(runs["tokens"])
    grid = np.linspace(log_n.min(), log_n.max() + np.log(extend), points)
    if np.ptp(log_n) > 0 and np.ptp(log_d) > 0:
        slope, intercept = np.polyfit(log_n, log_d, 1)
    else:
        slope, intercept = 0.0, float(log_d.median())
    request = pd.DataFrame(
        {
            "n_active": np.exp(grid),
            "tokens": np.exp(intercept + slope * grid),
            "arch": arch,
            "experts": experts if experts is not None else _typical_experts(runs),
        }
    )
    if posterior.runs["eval_set"].nunique() > 1:
        request["eval_set"] = runs["eval_set"].mode().iloc[0]
    return predict_loss(posterior, request, probs=probs)


ARCH_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def arch_colors(archs: Sequence[str]) -> dict[str, str]:
    """One colour per arch, the same in every figure: dense first, then the others sorted."""
    ordered = sorted(set(archs), key=lambda a: (a != "dense", a))
    return {arch: ARCH_COLORS[i % len(ARCH_COLORS)] for i, arch in enumerate(ordered)}


def model_flops(table: pd.DataFrame) -> np.ndarray:
    """The x every loss-vs-compute figure uses, for runs and curves alike: 6 N D (a data set's
    own FLOPs count attention and routing too: 1.2-2.6x of 6 N D on DeepMind's runs)."""
    return 6.0 * table["n_active"].to_numpy(float) * table["tokens"].to_numpy(float)


def plot_loss_vs_compute(
    posterior: Posterior,
    ax: Any = None,
    extend: float = 10.0,
    probs: Sequence[float] = (0.5, 0.9),
    targets: pd.DataFrame | None = None,
) -> Any:
    """Loss against training compute per arch: the median law with the 90% expected-loss band
    (the law's uncertainty and the extrapolation discrepancy) and the wider 90% new-run band
    (plus run noise), out to ``extend`` times the largest model; the runs drawn at the x the
    curves use (6 N D); the region beyond the data shaded; and ``targets`` (rows with ``arch``,
    ``flops``, ``loss_median``, ``new_run_low_90``, ``new_run_high_90``, e.g. recommended
    configurations) marked with their 90% new-run intervals."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.8))
    archs = sorted(posterior.runs["arch"].unique())
    colors = arch_colors(archs)
    widest = max(probs)
    for arch in archs:
        color = colors[arch]
        runs = posterior.runs[posterior.runs["arch"] == arch]
        experts = _typical_experts(runs, posterior.runs)
        curve = loss_curve(posterior, arch, extend=extend, probs=probs, experts=experts)
        x = curve["flops"]
        label = f"{100 * widest:g}"
        ax.fill_between(x, curve[f"new_run_low_{label}"], curve[f"new_run_high_{label}"],
                        color=color, alpha=0.12, linewidth=0)  # fmt: skip
        ax.fill_between(x, curve[f"loss_low_{label}"], curve[f"loss_high_{label}"],
                        color=color, alpha=0.3, linewidth=0)  # fmt: skip
        name = arch if experts == 1 else f"{arch} (E = {experts})"
        ax.plot(x, curve["loss_median"], color=color, label=name)
        shown = runs[runs["experts"] == experts]
        ax.scatter(model_flops(shown), shown["loss"], s=14, color=color, edgecolor="k",
                   linewidth=0.3, zorder=4)  # fmt: skip
    reach = float(model_flops(posterior.runs).max())
    right = ax.get_xlim()[1]
    if targets is not None and len(targets):
        right = max(right, float(targets["flops"].max()) * 1.5)
        for _, row in targets.iterrows():
            middle = row["loss_median"]
            error = [[middle - row["new_run_low_90"]], [row["new_run_high_90"] - middle]]
            color = colors.get(row["arch"], "k")
            ax.errorbar(row["flops"], middle, yerr=error, fmt="D", ms=6, capsize=4,
                        color=color, markeredgecolor="k", zorder=6)  # fmt: skip
    ax.axvspan(reach, right, color="0.5", alpha=0.08, linewidth=0)
    ax.axvline(reach, color="0.4", linestyle=":", linewidth=1)
    ax.text(reach, 0.98, " beyond the data", transform=ax.get_xaxis_transform(), va="top",
            fontsize="small", color="0.3")  # fmt: skip
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training compute 6 N D (FLOPs)",
        ylabel="loss (nats/token)",
        title=f"{posterior.spec.name or 'loss law'}: median, 90% expected-loss band (dark), "
        "90% new-run band (light)",
    )
    ax.title.set_fontsize("medium")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))  # 2.5, not 2.5 x 10^0
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.legend(fontsize="small")
    return ax.figure


def plot_exponents(
    posterior: Posterior, names: Sequence[str] = ("alpha", "beta", "gamma"), ax: Any = None
) -> Any:
    """Posterior densities (histograms) of the law's exponents, one colour per arch."""
    names = [n for n in names if n in posterior.idata["posterior"]]
    if ax is None:
        _, grid = plt.subplots(1, len(names), figsize=(3.5 * len(names), 3.2), squeeze=False)
        axes = list(grid[0])
    else:
        axes = list(np.atleast_1d(ax))
    colors = arch_colors([str(a) for a in posterior.idata["posterior"]["arch"].to_numpy()])
    for axis, name in zip(axes, names, strict=False):
        values = posterior.idata["posterior"][name]
        routed = set(posterior.runs.loc[posterior.runs["experts"] > 1, "arch"])
        for arch in values["arch"].to_numpy():
            if name == "gamma" and arch not in routed:
                continue  # no expert count varies: gamma is its prior, not a result
            axis.hist(
                values.sel(arch=arch).to_numpy().ravel(),
                bins=40,
                density=True,
                histtype="step",
                label=str(arch),
                color=colors[str(arch)],
            )
        axis.set(xlabel=name, yticks=[])
        axis.legend(fontsize="small")  # each panel its own: gamma leaves dense out
    return axes[0].figure


def _cell_table(posterior: Posterior) -> pd.DataFrame:
    """One row per fitted cell with the posterior median optimum (hyper posteriors)."""
    from bayes_scaling.hyper_model import assign_cells
    from bayes_scaling.hyper_predict import fitted_bowls

    _, cells = assign_cells(posterior.fitted_runs)
    typical = fitted_bowls(posterior).median()
    cells["lr_opt"] = np.exp(typical.log_lr_opt[0])
    cells["batch_opt"] = np.exp(typical.log_batch_opt[0])
    cells["flops"] = 6.0 * cells["n_active"] * cells["tokens"]
    return cells


def plot_optimum_vs_scale(
    posterior: Posterior,
    extend: float = 10.0,
    prob: float = 0.9,
    points: int = 30,
    axes: Any = None,
) -> Any:
    """Optimal learning rate and batch size against training FLOPs, per arch: the posterior
    median and ``prob`` band for a new cell along the arch's tokens-per-parameter path (the
    median of its runs), out to ``extend`` times its largest model; each fitted cell's own
    optimum overlaid."""
    from bayes_scaling.hyper_predict import recommend_hyperparameters

    cells = _cell_table(posterior)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    figure = axes[0].figure
    label = f"{100 * prob:g}"
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (arch, group) in enumerate(cells.groupby("arch")):
        color = colors[index % len(colors)]
        sizes = np.geomspace(group["n_active"].min(), extend * group["n_active"].max(), points)
        ratio = float(np.median(group["tokens"] / group["n_active"]))
        sparsity = float(np.median(group["n_total"] / group["n_active"]))
        request = {
            "n_active": sizes,
            "tokens": ratio * sizes,
            "n_total": sparsity * sizes,
            "arch": [arch] * points,
        }
        curve = recommend_hyperparameters(posterior, request, probs=(prob,))
        for axis, name in zip(axes, ("lr", "batch"), strict=True):
            axis.fill_between(
                curve["flops"],
                curve[f"{name}_low_{label}"],
                curve[f"{name}_high_{label}"],
                color=color,
                alpha=0.2,
                linewidth=0,
            )
            axis.plot(curve["flops"], curve[f"{name}_median"], color=color, label=str(arch))
            axis.scatter(group["flops"], group[f"{name}_opt"], color=color, s=14, edgecolor="k")
    axes[0].set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="optimal lr")
    axes[1].set(
        xscale="log", yscale="log", xlabel="training FLOPs", ylabel="optimal batch (tokens)"
    )
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{posterior.spec.name or 'hyper'}: medians and {label}% bands (new cells)")
    return figure


def plot_bowl(posterior: Posterior, cell: int = 0, ax: Any = None) -> Any:
    """One cell's runs over (lr, batch) coloured by loss, the bowl of the posterior median
    parameters as contours (relative loss above the cell's minimum, the fitted skewed bowl of
    :func:`bayes_scaling.hyper_model.bowl`), its optimum, and runs off the bowl as x."""
    from bayes_scaling.hyper_model import CELL_COLUMNS, assign_cells
    from bayes_scaling.hyper_predict import fitted_bowls

    codes, cells = assign_cells(posterior.fitted_runs)
    if not 0 <= cell < len(cells):
        raise ValueError(f"cell {cell} out of range: the posterior has {len(cells)} cells")
    typical = fitted_bowls(posterior).median().select(cell)  # fields (1, 1, 1)
    u0, v0 = float(typical.log_lr_opt.squeeze()), float(typical.log_batch_opt.squeeze())
    runs = posterior.fitted_runs[codes == cell]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    u = np.linspace(np.log(runs["lr"].min()) - 0.3, np.log(runs["lr"].max()) + 0.3, 80)
    v = np.linspace(
        np.log(runs["batch_tokens"].min()) - 0.3, np.log(runs["batch_tokens"].max()) + 0.3, 80
    )
    grid_u, grid_v = np.meshgrid(u, v)
    penalty = typical.penalty(grid_u, grid_v)[0]  # (80, 80)
    levels = [0.0025, 0.005, 0.01, 0.02, 0.05]
    contours = ax.contour(np.exp(grid_u), np.exp(grid_v), penalty, levels=levels, colors="grey")
    ax.clabel(contours, fmt=lambda x: f"+{100 * x:g}%", fontsize="x-small")
    shown = ax.scatter(runs["lr"], runs["batch_tokens"], c=runs["loss"], cmap="viridis", s=25)
    ax.figure.colorbar(shown, ax=ax, label="loss")
    ax.scatter([np.exp(u0)], [np.exp(v0)], marker="*", s=200, color="red", label="optimum")
    key = cells.iloc[cell]
    off_bowl = posterior.off_bowl_runs
    if len(off_bowl):
        same = np.ones(len(off_bowl), dtype=bool)
        for column in CELL_COLUMNS:
            same &= (off_bowl[column] == key[column]).to_numpy()
        ax.scatter(
            off_bowl.loc[same, "lr"], off_bowl.loc[same, "batch_tokens"], marker="x",
            color="k", label="off the bowl (not fitted)",
        )  # fmt: skip
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="learning rate",
        ylabel="batch (tokens)",
        title=f"{key['arch']} N={key['n_active']:.3g} D={key['tokens']:.3g}",
    )
    ax.legend(fontsize="small", loc="upper left")
    return ax.figure


def plot_frontier(
    posterior: Posterior,
    budgets: Sequence[float] = (1e18, 1e25),
    prob: float = 0.9,
    mark: float | None = None,
    axes: Any = None,
    eval_set: str | None = None,
    chosen: pd.DataFrame | None = None,
) -> Any:
    """N_opt(C) and D_opt(C) per arch, medians with ``prob`` bands (compute-optimal frontier
    of :func:`bayes_scaling.frontier.frontier`), the compute the runs reach shaded; ``mark``
    draws a vertical line at a budget, ``chosen`` (rows with ``arch``, ``flops``,
    ``n_active``, ``tokens``: recommended configurations) diamonds."""
    from bayes_scaling.frontier import frontier

    grid = np.geomspace(budgets[0], budgets[-1], 40)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    label = f"{100 * prob:g}"
    archs = [str(a) for a in posterior.idata["posterior"]["arch"].to_numpy()]
    colors = arch_colors(archs)
    for arch in archs:
        optimum = frontier(posterior, grid, arch, eval_set=eval_set)
        for axis, name in zip(axes, ("n_opt", "d_opt"), strict=True):
            median, low, high = optimum.interval(name, prob)
            axis.plot(grid, median, label=arch, color=colors[arch])
            axis.fill_between(grid, low, high, color=colors[arch], alpha=0.2, linewidth=0)
    runs = posterior.runs
    has_runs = len(runs) > 0 and {"n_active", "tokens"} <= set(runs)  # not a published law
    for axis, column in zip(axes, ("n_active", "tokens"), strict=True):
        if has_runs:
            reach = model_flops(runs)
            axis.axvspan(reach.min(), reach.max(), color="0.5", alpha=0.1, linewidth=0,
                         label="compute of the runs" if column == "n_active" else None)  # fmt: skip
        if chosen is not None:
            for _, row in chosen.iterrows():
                axis.scatter(row["flops"], row[column], marker="D", s=40, zorder=5,
                             color=colors.get(row["arch"], "k"), edgecolor="k")  # fmt: skip
    for axis, name in zip(axes, ("optimal active parameters N", "optimal tokens D"), strict=True):
        axis.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel=name)
        if mark is not None:
            axis.axvline(mark, color="k", linestyle=":", linewidth=1)
    axes[0].legend(fontsize="small")
    axes[0].figure.suptitle(f"compute-optimal frontier, medians and {label}% bands")
    return axes[0].figure


def plot_isoflop(
    posterior: Posterior,
    budgets: Sequence[float],
    arch: str | None = None,
    prob: float = 0.9,
    ax: Any = None,
    eval_set: str | None = None,
) -> Any:
    """Expected loss against N at fixed budgets (isoFLOP curves of
    :func:`bayes_scaling.frontier.isoflop`), with ``prob`` bands."""
    from bayes_scaling.frontier import isoflop, pick_label

    arch = pick_label(posterior, "arch", arch)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    tail = (1.0 - prob) / 2.0
    for budget in budgets:
        n = np.geomspace(budget**0.5 / 1e3, budget**0.5 / 2, 60)
        loss = isoflop(posterior, budget, n, arch, eval_set=eval_set)
        line = ax.plot(n, np.median(loss, axis=0), label=f"C = {budget:.0e}")[0]
        ax.fill_between(
            n,
            np.quantile(loss, tail, axis=0),
            np.quantile(loss, 1 - tail, axis=0),
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
    where = f", {eval_set}" if eval_set is not None else ""
    ax.set(
        xscale="log", xlabel="active parameters N", ylabel="loss", title=f"isoFLOP, {arch}{where}"
    )
    ax.legend(fontsize="small")
    return ax.figure


def plot_p_moe_better(comparisons: Any, ax: Any = None) -> Any:
    """P(MoE beats dense) against the budget, one line per
    :class:`bayes_scaling.moe.MoEComparison` (one or a sequence, from
    :func:`bayes_scaling.moe.moe_vs_dense`)."""
    from bayes_scaling.moe import MoEComparison

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    single = isinstance(comparisons, MoEComparison)
    for comparison in [comparisons] if single else comparisons:
        name = f"{comparison.moe_arch} (E = {comparison.experts:g})"
        ax.plot(comparison.budgets, comparison.p_moe_better, marker="o", label=name)
    ax.axhline(0.5, color="grey", linestyle=":")
    ax.set(xscale="log", ylim=(0, 1), xlabel="training FLOPs C", ylabel="P(MoE loss < dense)")
    ax.legend(fontsize="small")
    return ax.figure
