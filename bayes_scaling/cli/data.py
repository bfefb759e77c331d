"""``datasets list|show|export`` and ``validate``: run tables in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from bayes_scaling.cli._common import (
    PathOption,
    app,
    check_output,
    datasets_app,
    fail,
    load_runs_dataset,
    models_app,
    named,
)
from bayes_scaling.datasets import DATASETS
from bayes_scaling.runs import RunTableError, read_runs, write_runs


def summarize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per arch and the ranges of n_active, tokens, flops and loss."""
    grouped = runs.groupby("arch", sort=True)
    summary = grouped.size().rename("runs").to_frame()
    for column in ("n_active", "tokens", "flops", "loss"):
        summary[f"{column} min"] = grouped[column].min()
        summary[f"{column} max"] = grouped[column].max()
    summary["eval sets"] = grouped["eval_set"].nunique()
    return summary


def _format_summary(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width table with numbers in scientific notation."""
    return summary.to_string(float_format=lambda value: f"{value:.3g}")


@datasets_app.command("list")
def datasets_list() -> None:
    """List the registered data sets."""
    width = max(len(name) for name in DATASETS)
    for dataset in DATASETS.values():
        where = "bundled" if dataset.bundled else "path"
        typer.echo(
            f"{dataset.name:<{width}}  {dataset.expected_runs:>5} runs  {where:<7}  "
            f"{dataset.licence:<30}  {dataset.description}"
        )


@datasets_app.command("show")
def datasets_show(name: str, path: PathOption = None) -> None:
    """Runs per arch and the ranges of n_active, tokens, flops and loss of one data set."""
    runs = load_runs_dataset(name, path)
    typer.echo(f"{name}: {len(runs)} runs, {runs['arch'].nunique()} arch(s)")
    typer.echo(_format_summary(summarize_runs(runs)))
    derived = int(runs["flops_derived"].sum())
    if derived:
        typer.echo(f"flops derived as 6 * n_active * tokens for {derived} runs")


@datasets_app.command("export")
def datasets_export(
    name: str,
    out: Annotated[Path, typer.Option("--out", help="Output file: .csv, .jsonl or .parquet.")],
    path: PathOption = None,
) -> None:
    """Write a data set's run table to a file."""
    check_output(out, "--out")
    runs = load_runs_dataset(name, path)
    try:
        written = write_runs(runs, out)
    except (RunTableError, OSError) as error:
        raise fail(str(error)) from error
    typer.echo(f"wrote {len(runs)} runs to {written}")


@app.command("validate")
def validate(
    file: Path,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Also check what this hypothesis needs (as `fit` does)."),
    ] = None,
) -> None:
    """Check a run table file; exit 1 listing every problem, or 0 with a one-line summary.

    With --model, also check what fitting that hypothesis needs (its law's columns, or the lr x
    batch cells), exactly as `fit` does before sampling.
    """
    from bayes_scaling.fit import build_model
    from bayes_scaling.loss_model import MissingColumnError
    from bayes_scaling.runs import split_diverged
    from bayes_scaling.spec import SpecError, read_spec

    try:
        spec = read_spec(model) if model is not None else None
        runs = read_runs(file)
        measured, diverged = split_diverged(runs)
        if measured.empty:
            raise fail(f"{file}: every run has status 'diverged'; nothing to fit")
        if spec is not None:
            try:
                build_model(measured, spec)
            except RunTableError as error:
                raise named(error, file) from error
    except (RunTableError, FileNotFoundError, SpecError) as error:
        raise fail(str(error)) from error
    except MissingColumnError as error:
        raise fail(f"{file}: {error}") from error
    archs = ", ".join(
        f"{arch} {count}" for arch, count in runs["arch"].value_counts().sort_index().items()
    )
    against = f", fits {spec.name}" if spec is not None else ""
    typer.echo(f"{file}: valid, {len(runs)} runs ({archs}){against}")
    if len(diverged):
        typer.echo(
            f"{len(diverged)} run(s) have status 'diverged' and are left out of every fit: "
            + ", ".join(diverged["run_id"].head(10))
            + (" ..." if len(diverged) > 10 else "")
        )


@models_app.command("list")
def models_list() -> None:
    """The hypothesis files shipped with the package, with their descriptions."""
    from bayes_scaling.spec import list_specs, read_spec

    shipped = list_specs()
    width = max(len(name) for name in shipped)
    for name, path in shipped.items():
        spec = read_spec(path)
        typer.echo(f"{name:<{width}}  {spec.description}")
    typer.echo("--model takes a name (a bare one is the loss hypothesis), kind/name, or a path")
