"""The report's figure helpers: a matplotlib figure as an embedded PNG, and the calibration
(LOO-PIT) and reach (P(target loss) against budget) figures with the sentences that read them."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from bayes_scaling.plots import arch_colors, model_flops
from bayes_scaling.posterior import Posterior
from bayes_scaling.report_html import Figure

__all__ = ["pit_figure", "png", "reach_figure"]


def png(figure: Any, name: str, caption: str) -> Figure:
    figure.set_dpi(100)
    out = Figure.from_matplotlib(figure, name, caption)
    plt.close(figure)
    return out


KS_90 = 1.224  # Kolmogorov's 90% critical value times sqrt(n): the band of a uniform ECDF


def pit_figure(name: str, pit: np.ndarray) -> tuple[Figure, dict[str, float]]:
    """The LOO-PIT values' ECDF minus the uniform one, with the 90% band a uniform sample of
    that size stays inside (Kolmogorov-Smirnov)."""
    values = np.sort(pit)
    n = len(values)
    grid = np.linspace(0, 1, 201)
    ecdf = np.searchsorted(values, grid, side="right") / n
    band = KS_90 / np.sqrt(n)
    figure, axis = plt.subplots(figsize=(6.2, 3.4))
    axis.fill_between(grid, -band, band, color="0.5", alpha=0.2, linewidth=0,
                      label="90% band of a uniform sample")  # fmt: skip
    axis.plot(grid, ecdf - grid, color="C0", label="LOO-PIT ECDF - uniform")
    axis.axhline(0, color="k", linewidth=0.8)
    axis.set(xlabel="LOO-PIT value", ylabel="ECDF difference", xlim=(0, 1))
    axis.legend(fontsize="small")
    facts = {"loo_pit_ks": float(np.max(np.abs(ecdf - grid))), "loo_pit_band": float(band),
             "loo_pit_tails": float(np.mean((pit < 0.05) | (pit > 0.95)))}  # fmt: skip
    caption = (
        f"LOO-PIT of {name}: for each run, the probability (leave that run out, PSIS-LOO) that "
        "a new run at its N and D scores below it; drawn as the difference between their ECDF "
        "and a uniform one. Inside the grey band: calibrated. A dip then rise (an S) means "
        "intervals too narrow, the reverse too wide; a one-sided bulge means a biased law."
    )
    return png(figure, "loo_pit", caption), facts


def _from(budget: float | None, budgets: np.ndarray) -> str | None:
    """'from C FLOPs', or 'already at the smallest budget drawn (C)' on the grid's first point."""
    if budget is None:
        return None
    if budget <= budgets[0]:
        return f"already at the smallest budget drawn ({budgets[0]:.3g} FLOPs)"
    return f"from {budget:.3g} FLOPs"


def reach_figure(posterior: Posterior, reach: dict) -> tuple[Figure, list[str]]:
    """P(a new run reaches the target loss) against budget per arch, and sentences saying
    which budget makes it likely (0.5) and near sure (0.9)."""
    budgets = np.asarray(reach["flops"])
    target = reach["target_loss"]
    figure, axis = plt.subplots(figsize=(6.2, 3.6))
    colors = arch_colors(list(posterior.runs["arch"].unique()))
    text = []
    for arch, result in reach["per_arch"].items():
        if "unreachable" in result:
            text.append(f"{arch}: loss {target:.4g} is unreachable at any budget "
                        f"({result['unreachable']}).")  # fmt: skip
            continue
        axis.plot(budgets, result["p_reach"], marker="o", markersize=3, color=colors[arch],
                  label=arch)  # fmt: skip
        at = {level: _from(result[f"flops_p{level}"], budgets) for level in (50, 90)}
        if at[90] is not None:
            text.append(f"{arch}: a new run sized to maximise the chance reaches loss "
                        f"{target:.4g} with probability 0.5 {at[50]} and 0.9 "
                        f"{at[90]}.")  # fmt: skip
        elif at[50] is not None:
            text.append(f"{arch}: probability 0.5 of loss <= {target:.4g} {at[50]}; 0.9 is "
                        f"not reached by {budgets[-1]:.3g} FLOPs.")  # fmt: skip
        else:
            text.append(f"{arch}: loss {target:.4g} stays unlikely (P < 0.5) up to "
                        f"{budgets[-1]:.3g} FLOPs.")  # fmt: skip
    low, high = float(model_flops(posterior.runs).min()), float(model_flops(posterior.runs).max())
    axis.axvspan(low, high, color="0.85", zorder=0, label="compute of the runs")
    for level in (0.5, 0.9):
        axis.axhline(level, color="0.4", linewidth=0.7, linestyle=":")
    axis.set(xscale="log", xlabel="training FLOPs C (6 N D)", ylim=(-0.02, 1.02),
             ylabel=f"P(new run's loss <= {target:.4g})")  # fmt: skip
    axis.legend(fontsize="small")
    caption = (f"The probability that one new run, sized to maximise it at each budget, ends at "
               f"loss <= {target:.4g} (the law's uncertainty and run noise; dotted: 0.5 and 0.9; "
               f"grey: the runs' compute). Read off the budget that makes the target likely "
               f"enough for you.")  # fmt: skip
    return png(figure, "reach", caption), text
