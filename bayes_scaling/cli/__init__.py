"""The ``bayes-scaling`` command: one typer app, its commands in one module per concern."""

from __future__ import annotations

from bayes_scaling.cli import (  # noqa: F401  (register)
    accuracy,
    compare,
    data,
    decide,
    design,
    fitting,
    report,
    train,
)
from bayes_scaling.cli._common import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point for ``python -m bayes_scaling``."""
    app()
