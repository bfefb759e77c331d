"""``compare`` and ``backtest``: which hypothesis to believe, scored on held-out larger runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bayes_scaling.cli._common import (
    PathOption,
    app,
    check_output,
    check_seed,
    fail,
    load_posterior,
    load_runs_dataset,
    named,
    save_figure,
)
from bayes_scaling.runs import RunTableError, read_runs

Models = Annotated[
    list[str] | None,
    typer.Option("--model", help="A hypothesis (shipped name or TOML file); repeat for more."),
]
Runs = Annotated[Path | None, typer.Option("--runs", help="Run table file.")]
Dataset = Annotated[str | None, typer.Option("--dataset", help="Registered data set.")]
Cut = Annotated[str, typer.Option("--cut", help="compute, n_active or tokens.")]
Cuts = Annotated[int, typer.Option("--n-cuts", help="Cuts: fit below the top 1/3 ... 2/3.")]
Below = Annotated[
    list[float] | None,
    typer.Option("--below", help="Explicit cut: fit runs with the cut value <= this; repeat."),
]
Draws = Annotated[int | None, typer.Option(help="Draws per chain (hypothesis file).")]
Tune = Annotated[int | None, typer.Option(help="Warm-up draws (hypothesis file).")]
Chains = Annotated[int | None, typer.Option(help="Chains (hypothesis file).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Calibrate = Annotated[
    bool,
    typer.Option(
        "--calibrate",
        help="Learn each fit's discrepancy rate from a backtest inside its own runs along "
        "--cut (as fit --calibrate; one more fit each).",
    ),
]


def _table(runs: Path | None, dataset: str | None, path: Path | None) -> tuple[Any, str]:
    """The run table of --runs or --dataset (exactly one), and where it came from."""
    if (runs is None) == (dataset is None):
        raise fail("give exactly one of --runs FILE or --dataset NAME")
    try:
        if runs is not None:
            return read_runs(runs), str(runs)
    except RunTableError as error:
        raise fail(str(error)) from error
    except FileNotFoundError as error:
        raise fail(str(error)) from error
    return load_runs_dataset(str(dataset), path), f"data set {dataset}"


def _specs(models: list[str]) -> dict[str, Any]:
    """Loss hypotheses by name, or exit 1 naming the one that is unknown or not a loss law."""
    from bayes_scaling.spec import ModelSpec, SpecError, read_spec

    specs = {}
    for model in models:
        try:
            spec = read_spec(model)
        except (SpecError, FileNotFoundError) as error:
            raise fail(str(error)) from error
        if not isinstance(spec, ModelSpec):
            raise fail(f"--model {model}: a hyperparameter hypothesis; compare scores loss laws")
        specs[spec.name or model] = spec
    return specs


def _guard(origin: str, work: Any) -> Any:
    """Run ``work()``, turning the package's input errors into exit 1 with the message."""
    from bayes_scaling.backtest import BacktestError
    from bayes_scaling.calibration import CalibrationError
    from bayes_scaling.compare import CompareError
    from bayes_scaling.loss_model import MissingColumnError
    from bayes_scaling.spec import SpecError

    try:
        return work()
    except RunTableError as error:
        raise fail(str(named(error, origin))) from error
    except (BacktestError, CalibrationError, CompareError, MissingColumnError, SpecError) as error:
        raise fail(f"{origin}: {error}") from error


def _settings(draws: int | None, tune: int | None, chains: int | None) -> dict[str, Any]:
    return {k: v for k, v in {"draws": draws, "tune": tune, "chains": chains}.items() if v}


@app.command("backtest")
def backtest_command(
    model: Models = None,
    runs: Runs = None,
    dataset: Dataset = None,
    path: PathOption = None,
    cut: Cut = "compute",
    n_cuts: Cuts = 3,
    below: Below = None,
    draws: Draws = None,
    tune: Tune = None,
    chains: Chains = None,
    seed: int = 0,
    as_json: Json = False,
    calibrate: Calibrate = False,
) -> None:
    """Refit a hypothesis below each cut and score the larger runs it never saw."""
    from bayes_scaling.backtest import backtest

    check_seed(seed)
    if not model or len(model) != 1:
        raise fail("give exactly one --model")
    (name, spec), = _specs(model).items()  # fmt: skip
    table, origin = _table(runs, dataset, path)
    options = _settings(draws, tune, chains)
    result = _guard(
        origin,
        lambda: backtest(
            table, spec, cut, n_cuts, below, random_seed=seed, calibrated=calibrate, **options
        ),
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    columns = ["threshold", "fitted_runs", "converged", "held_out", "elpd",
               "coverage_expected_90", "coverage_new_run_90", "interval_score_90",
               "median_abs_rel_error", "max_extrapolation"]  # fmt: skip
    typer.echo(f"{name}: leave-largest-out by {cut} on {origin}")
    typer.echo(result.by_cut()[columns].to_string(index=False, float_format="{:.4g}".format))
    if result.unscored:
        typer.echo(f"not scored (arch or eval set absent below the cut): {result.unscored}")


@app.command("compare")
def compare_command(
    posterior_files: Annotated[
        list[Path] | None, typer.Argument(help="Posteriors fitted on one run table.")
    ] = None,
    model: Models = None,
    runs: Runs = None,
    dataset: Dataset = None,
    path: PathOption = None,
    with_backtest: Annotated[
        bool, typer.Option("--backtest", help="Also backtest every hypothesis.")
    ] = False,
    cut: Cut = "compute",
    n_cuts: Cuts = 3,
    below: Below = None,
    stack_by: Annotated[
        str,
        typer.Option(
            "--stack-by",
            help="Stacking weights: loo (interpolation) or extrapolation (a backtest inside "
            "the runs along --cut; one refit per hypothesis).",
        ),
    ] = "loo",
    draws: Draws = None,
    tune: Tune = None,
    chains: Chains = None,
    seed: int = 0,
    as_json: Json = False,
    calibrate: Calibrate = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw data and models.")] = None,
) -> None:
    """Compare hypotheses: PSIS-LOO, backtest scores and stacking weights."""
    from bayes_scaling.backtest import backtest
    from bayes_scaling.calibration import calibrate as calibrate_fit
    from bayes_scaling.compare import compare
    from bayes_scaling.fit import fit

    check_seed(seed)
    check_output(plot, "--plot")
    if stack_by not in ("loo", "extrapolation"):
        raise fail(f"--stack-by {stack_by!r}: expected loo or extrapolation")
    options = _settings(draws, tune, chains)
    if posterior_files:
        if model or runs or dataset:
            raise fail("give posterior files, or --model with --runs / --dataset, not both")
        loaded = [load_posterior(file) for file in posterior_files]
        posteriors = {
            p.spec.name or str(f): p for p, f in zip(loaded, posterior_files, strict=True)
        }
        table, origin = next(iter(posteriors.values())).runs, "posterior files"
        specs = {name: p.spec for name, p in posteriors.items()}
    else:
        if not model:
            raise fail("give --model (repeat it for each hypothesis) or posterior files")
        specs = _specs(model)
        table, origin = _table(runs, dataset, path)
        posteriors = _guard(origin, lambda: {
            name: fit(table, spec, random_seed=seed, progressbar=False, **options)
            for name, spec in specs.items()
        })  # fmt: skip
    if calibrate:
        _guard(origin, lambda: [
            calibrate_fit(p, cut=cut, random_seed=seed, **options) for p in posteriors.values()
        ])  # fmt: skip
    backtests = None
    if with_backtest:
        backtests = _guard(origin, lambda: {
            name: backtest(table, spec, cut, n_cuts, below, random_seed=seed,
                           calibrated=calibrate, **options)
            for name, spec in specs.items()
        })  # fmt: skip
    inner = cut if stack_by == "extrapolation" else None
    result = _guard(
        origin,
        lambda: compare(posteriors, backtests, inner, random_seed=seed, **options),
    )
    for note in result.warnings:
        typer.echo(f"warning: {note}", err=True)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        _print(result)
    if plot is not None:
        save_figure(plot_comparison(result), plot)


def _print(result: Any) -> None:
    """The comparison table, then the stacked predictive's backtest scores."""
    columns = ["law", "pooling", "elpd_loo", "se", "high_pareto_k", "weight_loo"]
    if "weight_extrapolation" in result.table:
        columns.append("weight_extrapolation")
    if result.backtests:
        columns += ["backtest_elpd", "backtest_coverage_new_run_90", "backtest_interval_score_90",
                    "backtest_median_abs_rel_error", "weight_backtest"]  # fmt: skip
    typer.echo(result.table[columns].to_string(float_format="{:.4g}".format))
    if result.stacked_scores:
        scores = result.stacked_scores
        typer.echo(
            f"stacked ({result.stacked_by} weights of each cut's fits): backtest elpd "
            f"{scores['elpd']:.4g}, "
            f"90% coverage {scores['coverage_new_run_90']:.3g}, interval score "
            f"{scores['interval_score_90']:.4g}, median |rel error| "
            f"{scores['median_abs_rel_error']:.3g}"
        )


def plot_comparison(result: Any) -> Any:
    """Loss vs compute: the runs (black) and each hypothesis' median and 90% new-run interval
    at them; with backtests, the held-out runs of the first cut under the refits."""
    import matplotlib.pyplot as plt
    import numpy as np

    from bayes_scaling.compare import StackedPosterior
    from bayes_scaling.predict import predict_loss

    if result.backtests:
        first = next(iter(result.backtests.values()))
        threshold = first.thresholds[0]
        runs = first.held_out[threshold]
        members = {name: b.fits[threshold] for name, b in result.backtests.items()}
        title = f"held-out runs above {first.cut} {threshold:.3g}"
    else:
        runs = next(iter(result.posteriors.values())).runs
        members = result.posteriors
        title = "all runs (in sample)"
    weights = result.weights("backtest" if result.backtests else result.stacked_by)
    models = {**members, "stacked": StackedPosterior(members, weights)}
    fig, ax = plt.subplots(figsize=(8, 5))
    flops = runs["flops"].to_numpy(float)
    ax.scatter(flops, runs["loss"], color="black", s=14, zorder=5, label="runs")
    for offset, (name, posterior) in enumerate(models.items()):
        table = predict_loss(posterior, runs, probs=(0.9,))
        shift = 1.0 + 0.015 * (offset - len(models) / 2)
        low, high = table["new_run_low_90"], table["new_run_high_90"]
        middle = table["loss_median"].to_numpy()
        ax.errorbar(flops * shift, middle, yerr=np.vstack([middle - low, high - middle]),
                    fmt="o", ms=3, alpha=0.7, label=name)  # fmt: skip
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="loss (median, 90% new-run interval)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
