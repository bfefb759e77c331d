"""Central intervals over posterior draws: the one place that turns draws into the median and
``low_<p>`` / ``high_<p>`` summaries every table and result object reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["add_intervals", "central_interval", "label"]

Method = Literal["linear", "inverted_cdf"]


def label(prob: float) -> str:
    """The column label of an interval probability: 0.9 -> "90"."""
    return f"{100 * prob:g}"


def central_interval(
    values: Any, prob: float, axis: int | None = 0, method: Method = "linear"
) -> tuple[Any, Any]:
    """(low, high) quantiles leaving (1 - prob) / 2 in each tail, over ``axis``."""
    tail = (1.0 - prob) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail], axis=axis, method=method)
    return low, high


def add_intervals(
    out: Any,
    name: str,
    values: Any,
    probs: Sequence[float],
    transform: Callable[[Any], Any] | None = None,
    method: Method = "linear",
) -> None:
    """Columns ``<name>_median`` and ``<name>_low_/high_<p>`` of ``out`` from draws on axis 0;
    ``transform`` (monotone, e.g. ``np.exp`` for log draws) is applied after the quantiles. A
    point with a NaN draw gets NaN: no draw is dropped silently."""
    apply = transform or (lambda x: x)
    out[f"{name}_median"] = apply(np.quantile(values, 0.5, axis=0, method=method))
    for prob in probs:
        low, high = central_interval(values, prob, axis=0, method=method)
        out[f"{name}_low_{label(prob)}"] = apply(low)
        out[f"{name}_high_{label(prob)}"] = apply(high)
