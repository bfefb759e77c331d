"""Shared pieces of the ``bayes-scaling`` command: the apps, errors, common options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from bayes_scaling.datasets import (
    DataFileError,
    DataFileMissingError,
    UnknownDatasetError,
    load_dataset,
)
from bayes_scaling.runs import RunTableError

app = typer.Typer(
    help="Bayesian scaling laws for dense and MoE language models.", no_args_is_help=True
)
datasets_app = typer.Typer(help="Public data sets as run tables.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
models_app = typer.Typer(help="Hypothesis files shipped with the package.", no_args_is_help=True)
app.add_typer(models_app, name="models")

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
    except (UnknownDatasetError, DataFileMissingError, DataFileError, RunTableError) as error:
        raise fail(str(error)) from error


def load_posterior(path: Path, what: str = "posterior") -> Any:
    """Load a posterior file, or exit 1 saying why it cannot be one."""
    from bayes_scaling.posterior import Posterior, PosteriorFileError

    try:
        return Posterior.load(path)
    except (PosteriorFileError, FileNotFoundError) as error:
        raise fail(f"{what}: {error}") from error


def check_prob(prob: float, option: str = "--prob") -> float:
    """An interval probability strictly between 0 and 1, or exit 1."""
    if not 0.0 < prob < 1.0:
        raise fail(f"{option} {prob:g}: expected a probability strictly between 0 and 1")
    return prob


def named(error: RunTableError, origin: object) -> RunTableError:
    """The same problems, attributed to the user's file or data set."""
    return RunTableError(error.problems, str(origin))


def check_output(path: Path | None, option: str) -> Path | None:
    """An output path that can be written, checked before the work that fills it, or exit 1."""
    from bayes_scaling._io import OutputPathError, check_writable

    if path is None:
        return None
    try:
        return check_writable(path, option)
    except OutputPathError as error:
        raise fail(str(error)) from error


def check_seed(seed: int) -> int:
    """A seed numpy accepts (a non-negative integer), or exit 1."""
    if seed < 0:
        raise fail(f"--seed {seed}: expected a non-negative integer")
    return seed


def save_figure(figure: Any, path: Path) -> None:
    """Save a figure atomically (format from the extension) and say where."""
    from bayes_scaling._io import writing

    with writing(path) as temporary:
        figure.savefig(
            temporary, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png"
        )
    typer.echo(f"wrote {path}")
