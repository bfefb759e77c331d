"""The notebooks run top to bottom; their own assertions check the analyses they report."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))


def execute(path: Path, small: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a jupytext notebook in a fresh kernel from the notebooks folder; errors propagate."""
    monkeypatch.setenv("BAYES_SCALING_SMALL", "1" if small else "0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = jupytext.read(path)
    client = NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_small(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execute(path, small=True, monkeypatch=monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_full(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execute(path, small=False, monkeypatch=monkeypatch)
