"""Render the saved benchmark tables as the Markdown quoted in the README.

.venv/bin/python benchmarks/render_tables.py convergence|fit
"""

from __future__ import annotations

import sys

import pandas as pd
from _results import RESULTS


def _number(value: float, digits: int = 3) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}g}"


def convergence() -> str:
    table = pd.read_csv(RESULTS / "bench_convergence.csv")
    lines = [
        "| hypothesis | data | runs | passed | max R-hat | min bulk ESS | divergent | extended "
        "| tune / draws / accept / mass matrix | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        data = row.data if row.subset == "all" else f"{row.data} ({row.subset})"
        adaptation = getattr(row, "adaptation", "diag")
        lines.append(
            f"| `{row.hypothesis}` | {data} | {row.runs} | {'yes' if row.passed else 'NO'} "
            f"| {row.max_rhat:.3f} | {row.min_bulk_ess:.0f} | {row.divergent_transitions} "
            f"| {row.extensions} | {row.tune} / {row.draws} / {row.target_accept} / "
            f"{adaptation} | {row.seconds:.0f} |"
        )
    return "\n".join(lines)


def fit() -> str:
    table = pd.read_csv(RESULTS / "bench_fit.csv")
    lines = [
        "| task | method | runs | wall s | vs baseline | peak RSS MiB | converged | min ESS "
        "| ESS/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        converged = "" if pd.isna(row.converged) else ("yes" if row.converged else "NO")
        lines.append(
            f"| {row.task} | {row.method} | {row.runs:.0f} | {_number(row.wall_s)} "
            f"| {_number(row.vs_baseline, 2)} | {_number(row.peak_rss_mib, 4)} | {converged} "
            f"| {_number(row.min_bulk_ess, 4)} | {_number(row.min_ess_per_s)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print({"convergence": convergence, "fit": fit}[sys.argv[1]]())
