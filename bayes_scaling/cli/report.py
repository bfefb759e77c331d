"""``report``: fit, decide and write one self-contained HTML page with its summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bayes_scaling.cli._common import PathOption, app, check_output, check_seed, fail
from bayes_scaling.cli.compare import Chains, Dataset, Draws, Models, Runs, Tune, _guard, _table


@app.command("report")
def report_command(
    runs: Runs = None,
    dataset: Dataset = None,
    path: PathOption = None,
    model: Models = None,
    target_flops: Annotated[
        list[float] | None,
        typer.Option("--target-flops", help="A budget to decide for (FLOPs); repeat for more."),
    ] = None,
    target_loss: Annotated[
        float | None,
        typer.Option(
            "--target-loss",
            help="The loss whose P(reached) vs budget is drawn "
            "(default: the recommended run's median loss at the smallest budget).",
        ),
    ] = None,
    accuracy: Annotated[
        Path | None,
        typer.Option(
            "--accuracy",
            help="An accuracy posterior (`accuracy fit`): the "
            "recommended runs' downstream accuracy per task.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for index.html and summary.json.")
    ] = Path("out/report"),
    draws: Draws = None,
    tune: Tune = None,
    chains: Chains = None,
    seed: int = 0,
) -> None:
    """What to train at your budget, how sure, and why: one HTML page (default: the bundled
    DeepMind routed runs)."""
    from bayes_scaling.report import DEFAULT_DATASET, build_report

    check_seed(seed)
    for budget in target_flops or []:
        if not budget > 0 or budget == float("inf"):
            raise fail(f"--target-flops {budget}: a budget must be a positive, finite FLOP count")
    if target_loss is not None and not (0 < target_loss < float("inf")):
        raise fail(f"--target-loss {target_loss}: a loss must be a positive, finite number")
    accuracy_posterior = None
    if accuracy is not None:
        from bayes_scaling.downstream import AccuracyPosterior, DownstreamError

        try:
            accuracy_posterior = AccuracyPosterior.load(accuracy)
        except (DownstreamError, FileNotFoundError) as error:
            raise fail(f"--accuracy: {error}") from error
    check_output(out / "index.html", "--out")
    check_output(out / "summary.json", "--out")
    if runs is None and dataset is None:
        dataset = DEFAULT_DATASET
    table, origin = _table(runs, dataset, path)
    options = {k: v for k, v in {"draws": draws, "tune": tune, "chains": chains}.items() if v}
    result = _guard(
        origin,
        lambda: build_report(
            table,
            model,
            target_flops,
            out,
            origin,
            random_seed=seed,
            log=typer.echo,
            target_loss=target_loss,
            accuracy=accuracy_posterior,
            **options,
        ),
    )
    typer.echo(f"report: {result.html}")
