"""Shared by the benchmark scripts: where results go, and saving a table without half a file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bayes_scaling._io import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"


def save_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write ``table`` as CSV atomically (the package's one atomic writer)."""
    atomic_write(path, table.to_csv(index=False))
    print(f"saved {path}")
