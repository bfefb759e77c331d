"""Figures with uncertainty bands: compute first (xarray / pandas), draw second.

Every ``plot_*`` function takes ``ax=None`` and returns the matplotlib figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bayes_scaling.fit import Posterior
from bayes_scaling.predict import predict_loss

__all__ = ["loss_curve", "plot_exponents", "plot_loss_vs_compute"]


def _typical_experts(runs: pd.DataFrame) -> int:
    """The expert count shown for an arch: the most common one above 1, else 1."""
    routed = runs.loc[runs["experts"] > 1, "experts"]
    return int(routed.mode().iloc[0]) if len(routed) else 1


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


def plot_loss_vs_compute(
    posterior: Posterior, ax: Any = None, extend: float = 10.0, probs: Sequence[float] = (0.5, 0.9)
) -> Any:
    """Loss against training FLOPs per arch: the median law, 50% and 90% bands of the expected
    loss out to ``extend`` times the largest model, and the runs overlaid."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, arch in enumerate(sorted(posterior.runs["arch"].unique())):
        color = colors[index % len(colors)]
        runs = posterior.runs[posterior.runs["arch"] == arch]
        experts = _typical_experts(runs)
        curve = loss_curve(posterior, arch, extend=extend, probs=probs, experts=experts)
        for prob, alpha in zip(sorted(probs, reverse=True), (0.15, 0.3), strict=False):
            label = f"{100 * prob:g}"
            ax.fill_between(
                curve["flops"],
                curve[f"loss_low_{label}"],
                curve[f"loss_high_{label}"],
                color=color,
                alpha=alpha,
                linewidth=0,
            )
        name = arch if experts == 1 else f"{arch} (E = {experts})"
        ax.plot(curve["flops"], curve["loss_median"], color=color, label=name)
        shown = runs[runs["experts"] == experts]
        ax.scatter(shown["flops"], shown["loss"], s=12, color=color, edgecolor="k", linewidth=0.3)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training FLOPs",
        ylabel="loss (nats/token)",
        title=f"{posterior.spec.name or posterior.spec.law}: bands "
        f"{', '.join(f'{100 * p:g}%' for p in probs)}",
    )
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
    for axis, name in zip(axes, names, strict=False):
        values = posterior.idata["posterior"][name]
        for arch in values["arch"].to_numpy():
            axis.hist(
                values.sel(arch=arch).to_numpy().ravel(),
                bins=40,
                density=True,
                histtype="step",
                label=str(arch),
            )
        axis.set(xlabel=name, yticks=[])
    axes[0].legend(fontsize="small")
    return axes[0].figure
