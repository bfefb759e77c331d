"""The notebooks run top to bottom in a Jupyter kernel, as a user runs them, and show their
figures; their own assertions check the analyses they report."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))


def execute(path: Path, small: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a jupytext notebook in a fresh kernel from the notebooks folder (errors propagate)
    with the kernel's own (inline) matplotlib backend, and check that every figure the notebook
    shows (each ``plt.show()``, at least one) is in its outputs as an image."""
    monkeypatch.setenv("BAYES_SCALING_SMALL", "1" if small else "0")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # what a user's Jupyter has
    notebook = jupytext.read(path)
    client = NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    shown = max(1, path.read_text(encoding="utf-8").count("plt.show()"))
    assert len(images) >= shown, f"{path.name}: {len(images)} figures shown, expected {shown}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_small(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execute(path, small=True, monkeypatch=monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_full(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execute(path, small=False, monkeypatch=monkeypatch)
