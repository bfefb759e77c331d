"""Shared by the benchmark scripts: save a results table without leaving half a file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def save_table(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` as CSV to a temporary name beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    table.to_csv(temporary, index=False)
    temporary.replace(path)
    print(f"saved {path}")
