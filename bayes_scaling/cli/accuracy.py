"""``accuracy fit`` and ``accuracy backtest``: downstream accuracy laws (``models/downstream``);
``predict`` reads the posterior files ``accuracy fit`` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bayes_scaling.cli._common import PathOption, app, check_output, check_seed, fail
from bayes_scaling.cli.compare import Chains, Dataset, Draws, Json, Runs, Tune, _settings, _table

accuracy_app = typer.Typer(help="Downstream accuracy laws (Krajewski et al. 2025).",
                           no_args_is_help=True)  # fmt: skip
app.add_typer(accuracy_app, name="accuracy")

Model = Annotated[
    str, typer.Option("--model", help="direct-nd, direct-c, two-stage, or a downstream TOML file.")
]


Shots = Annotated[
    int, typer.Option("--shots", help="Evaluation protocol: the rows with this num_fewshot.")
]


def _guarded(work: Any) -> Any:
    from bayes_scaling.downstream import DownstreamError
    from bayes_scaling.points import PredictionError
    from bayes_scaling.runs import RunTableError

    try:
        return work()
    except (DownstreamError, RunTableError, PredictionError) as error:
        raise fail(str(error)) from error


def _protocol(table: Any, shots: int) -> Any:
    """The rows of one evaluation protocol (tables with a num_fewshot column), or exit 1."""
    if "num_fewshot" not in table:
        return table
    kept = table[table["num_fewshot"] == shots].reset_index(drop=True)
    if kept.empty:
        found = sorted(table["num_fewshot"].unique())
        raise fail(f"--shots {shots}: no rows; the table has num_fewshot {found}")
    return kept


@accuracy_app.command("fit")
def fit_command(
    out: Annotated[Path, typer.Option("--out", help="Accuracy posterior file (.nc) to write.")],
    model: Model = "direct-nd",
    runs: Runs = None,
    dataset: Dataset = None,
    path: PathOption = None,
    shots: Shots = 0,
    draws: Draws = None,
    tune: Tune = None,
    chains: Chains = None,
    seed: int = 0,
) -> None:
    """Fit a downstream accuracy law to a table with <task>_acc columns (e.g. --dataset pythia)."""
    from bayes_scaling.downstream import fit_accuracy, read_downstream_spec
    from bayes_scaling.posterior import check_convergence

    check_seed(seed)
    check_output(out, "--out")
    spec = _guarded(lambda: read_downstream_spec(model))
    table, origin = _table(runs, dataset, path)
    table = _protocol(table, shots)
    posterior = _guarded(lambda: fit_accuracy(table, spec, seed, **_settings(draws, tune, chains)))
    posterior.save(out)
    typer.echo(f"{spec.name or spec.law} on {len(posterior.table)} (run, task) rows of {origin}; "
               f"{len(posterior.left_out)} left out (at chance or missing)")  # fmt: skip
    typer.echo(str(check_convergence(posterior.idata)))
    if posterior.loss is not None:
        typer.echo(f"stage one (loss law): {posterior.loss.convergence()}")
    typer.echo(f"wrote {out}")


@accuracy_app.command("backtest")
def backtest_command(
    held_out_above: Annotated[
        float, typer.Option("--held-out-above", help="Score the models with more N than this.")
    ],
    model: Model = "direct-nd",
    runs: Runs = None,
    dataset: Dataset = None,
    path: PathOption = None,
    shots: Shots = 0,
    draws: Draws = None,
    tune: Tune = None,
    chains: Chains = None,
    seed: int = 0,
    as_json: Json = False,
) -> None:
    """Fit on the smaller models, predict the larger ones' accuracies: relative error and
    coverage of the 90% interval."""
    from bayes_scaling.downstream import backtest_accuracy

    check_seed(seed)
    table, origin = _table(runs, dataset, path)
    table = _protocol(table, shots)
    held = table["n_active"] > held_out_above
    if not held.any() or held.all():
        raise fail(f"--held-out-above {held_out_above:g}: needs models on both sides")
    _, predicted = _guarded(lambda: backtest_accuracy(
        table, model, held, random_seed=seed, **_settings(draws, tune, chains)))  # fmt: skip
    summary: dict[str, Any] = {"model": model, "data": origin, "held_out": len(predicted),
               "mean_rel_error": float(predicted["rel_error"].mean()),
               "coverage_90": float(predicted["covered"].mean())}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for row in predicted.itertuples():
        typer.echo(
            f"{row.task} N={row.n_active:.3g} D={row.tokens:.3g}: observed {row.acc:.3f}, "
            f"predicted {row.acc_median:.3f} [{row.new_low:.3f}, {row.new_high:.3f}]"
        )
    typer.echo(f"mean relative error {100 * summary['mean_rel_error']:.2f}%, 90% coverage "
               f"{summary['coverage_90']:.2f} over {summary['held_out']} accuracies")  # fmt: skip


def predict_accuracy(path: Path, n_active: float, tokens: float, task: str | None, prob: float,
                     as_json: bool) -> None:  # fmt: skip
    """``predict`` for an accuracy posterior: each task's accuracy at (N, D) with intervals."""
    import pandas as pd

    from bayes_scaling.downstream import AccuracyPosterior

    posterior = _guarded(lambda: AccuracyPosterior.load(path))
    tasks = posterior.tasks if task is None else [task]
    if task is not None and task not in posterior.tasks:
        raise fail(f"--task {task}: this posterior has {posterior.tasks}")
    points = pd.DataFrame({"task": tasks, "n_active": n_active, "tokens": tokens})
    predicted = posterior.predict(points, prob)
    records = predicted.to_dict(orient="records")
    if as_json:
        typer.echo(json.dumps({"prob": prob, "predictions": records}))
        return
    label = f"{100 * prob:g}%"
    for row in records:
        typer.echo(
            f"{row['task']} N={n_active:.3g} D={tokens:.3g}: accuracy "
            f"{row['acc_median']:.3f} [{row['acc_low']:.3f}, {row['acc_high']:.3f}] ({label}); "
            f"a new evaluation [{row['new_low']:.3f}, {row['new_high']:.3f}]"
        )
