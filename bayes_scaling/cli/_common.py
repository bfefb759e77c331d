"""Shared pieces of the ``bayes-scaling`` command: the apps, errors, common options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from bayes_scaling.datasets import DataFileMissingError, UnknownDatasetError, load_dataset
from bayes_scaling.runs import RunTableError

app = typer.Typer(
    help="Bayesian scaling laws for dense and MoE language models.", no_args_is_help=True
)
datasets_app = typer.Typer(help="Public data sets as run tables.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

PathOption = Annotated[
    Path | None, typer.Option("--path", help="File or folder of an unbundled data set.")
]


def fail(message: str) -> typer.Exit:
    """Print an error to stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def load_runs_dataset(name: str, path: Path | None) -> pd.DataFrame:
    """Load a data set, turning the package's errors into a clean exit."""
    try:
        return load_dataset(name, path=path)
    except (UnknownDatasetError, DataFileMissingError, RunTableError) as error:
        raise fail(str(error)) from error
