"""``fit`` and ``predict``: sample a hypothesis, then extrapolate with intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bayes_scaling.cli._common import (
    PathOption,
    app,
    check_output,
    check_prob,
    check_seed,
    fail,
    load_posterior,
    load_runs_dataset,
    named,
    save_figure,
)
from bayes_scaling.runs import RunTableError, read_runs


def _check_settings(spec: Any, settings: dict[str, Any]) -> None:
    """The hypothesis' sampler settings with the options applied, or exit 1 naming the option."""
    from bayes_scaling.spec import SpecError

    try:
        spec.sampler.with_overrides(**settings)
    except SpecError as error:
        message = str(error)
        for key, value in settings.items():
            if value is not None and f"sampler.{key} " in message:
                message = message.replace(f"sampler.{key}", f"--{key.replace('_', '-')}")
        raise fail(message) from error


@app.command("fit")
def fit_command(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Hypothesis: a shipped name (`bayes-scaling models list`) or a TOML file.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output netCDF file for the posterior.")],
    runs: Annotated[Path | None, typer.Option("--runs", help="Run table file.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Registered data set.")] = None,
    path: PathOption = None,
    draws: Annotated[int | None, typer.Option(help="Draws per chain (hypothesis file).")] = None,
    tune: Annotated[int | None, typer.Option(help="Warm-up draws (hypothesis file).")] = None,
    chains: Annotated[int | None, typer.Option(help="Chains (hypothesis file).")] = None,
    seed: int = 0,
    sampler: Annotated[str | None, typer.Option(help="nutpie or pymc (hypothesis file).")] = None,
    target_accept: Annotated[
        float | None, typer.Option("--target-accept", help="NUTS target acceptance.")
    ] = None,
    extend: Annotated[
        int | None,
        typer.Option(help="Times to resample with doubled warm-up when the check fails."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 2 when the convergence check fails.")] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Learn the extrapolation discrepancy's rate from a backtest inside these runs "
            "(one more fit), on top of the population prior."
        ),
    ] = False,
    calibrate_cut: Annotated[
        str,
        typer.Option(
            help="Direction of the calibration backtest: compute, n_active or tokens (the "
            "direction you will extrapolate)."
        ),
    ] = "compute",
) -> None:
    """Fit a hypothesis to runs; print the convergence check and save the posterior.

    Sampler settings come from the hypothesis file's [sampler] section; options override them.
    """
    from bayes_scaling._io import OutputPathError, check_writable
    from bayes_scaling.fit import fit
    from bayes_scaling.loss_model import MissingColumnError
    from bayes_scaling.spec import ModelSpec, SpecError, read_spec

    if (runs is None) == (dataset is None):
        raise fail("give exactly one of --runs FILE or --dataset NAME")
    settings: dict[str, Any] = {"draws": draws, "tune": tune, "chains": chains, "sampler": sampler,
                "target_accept": target_accept, "extend": extend}  # fmt: skip
    check_seed(seed)
    try:
        spec = read_spec(model)
        _check_settings(spec, settings)  # refuse bad settings before anything else
        check_writable(out, "--out")  # before sampling, not after
        table = read_runs(runs) if runs is not None else load_runs_dataset(str(dataset), path)
        origin = runs if runs is not None else f"data set {dataset}"
        try:
            posterior = fit(table, spec, random_seed=seed, log=typer.echo, **settings)
        except RunTableError as error:
            raise named(error, origin) from error
        except MissingColumnError as error:
            raise fail(f"{origin}: {error}") from error
        if calibrate:
            _calibrate(posterior, seed, calibrate_cut)
        posterior.save(out)
    except (SpecError, RunTableError, MissingColumnError, OutputPathError) as error:
        raise fail(str(error)) from error
    except (FileNotFoundError, PermissionError) as error:
        raise fail(str(error)) from error
    report = posterior.convergence()
    typer.echo(str(report))
    attempts = posterior.sampler["attempts"]
    if len(attempts) > 1:
        last = attempts[-1]
        typer.echo(
            f"extended {len(attempts) - 1} time(s): the saved fit used tune={last['tune']}, "
            f"draws={last['draws']}, target_accept={last['target_accept']}"
        )
    flagged = posterior.off_bowl_runs
    if len(flagged):
        typer.echo(
            f"{len(flagged)} grid run(s) off the bowl (loss > {1 + spec.off_bowl_above:g} x "  # type: ignore[union-attr]
            "their cell's best), kept in the saved run table, left out of the fit:"
        )
        for _, run in flagged.iterrows():
            typer.echo(
                f"  {run['run_id']}: loss {run['loss']:.4g}, lr {run['lr']:.3g}, "
                f"batch {run['batch_tokens']:.4g}"
            )
    what = f"law {spec.law}" if isinstance(spec, ModelSpec) else f"form {spec.form}"
    fitted = len(posterior.runs)
    typer.echo(f"saved {out} ({fitted} runs, {what}, pooling {spec.pooling})")
    if strict and not report.ok:
        raise typer.Exit(code=2)


def _calibrate(posterior: Any, seed: int, cut: str) -> None:
    """``fit --calibrate``: the within-data update of the discrepancy's rate, or exit 1."""
    from bayes_scaling.calibration import CalibrationError, calibrate
    from bayes_scaling.discrepancy import default_rate

    typer.echo(default_rate().describe())
    try:
        rate = calibrate(posterior, cut=cut, random_seed=seed, log=typer.echo)
    except CalibrationError as error:
        raise fail(str(error)) from error
    typer.echo(rate.describe())


@app.command("predict")
def predict_command(
    posterior_file: Annotated[Path, typer.Argument(help="A posterior written by `fit`.")],
    n_active: Annotated[float, typer.Option("--n-active", help="Active parameters N.")],
    tokens: Annotated[float, typer.Option("--tokens", help="Training tokens D.")],
    experts: Annotated[float, typer.Option("--experts", help="Experts E.")] = 1.0,
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture label.")] = None,
    n_total: Annotated[
        float | None, typer.Option("--n-total", help="Total parameters (hyper posteriors).")
    ] = None,
    eval_set: Annotated[str | None, typer.Option("--eval-set")] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Task (accuracy posteriors; default all).")
    ] = None,
    prob: Annotated[float, typer.Option("--prob", help="Interval probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw loss vs compute.")] = None,
) -> None:
    """Predicted loss of a planned run (loss posterior), its optimal learning rate and batch
    size (hyperparameter posterior) or its downstream accuracy per task (accuracy posterior
    from `accuracy fit`), with intervals."""
    import json

    from bayes_scaling.predict import PredictionError, predict_point
    from bayes_scaling.spec import HyperSpec

    check_prob(prob)
    check_output(plot, "--plot")
    from bayes_scaling.accuracy_file import is_accuracy_file

    if is_accuracy_file(posterior_file):
        from bayes_scaling.cli.accuracy import predict_accuracy

        unused = {"--plot": plot is not None, "--experts": experts != 1.0, "--arch": arch,
                  "--n-total": n_total, "--eval-set": eval_set}  # fmt: skip
        given = [name for name, value in unused.items() if value]
        if given:
            raise fail(f"{', '.join(given)}: not used by an accuracy posterior (give --task)")
        for name, value in (("--n-active", n_active), ("--tokens", tokens)):
            if not (value > 0 and value < float("inf")):
                raise fail(f"{name} {value}: must be a positive, finite number")
        predict_accuracy(posterior_file, n_active, tokens, task, prob, as_json)
        return
    posterior = load_posterior(posterior_file)
    if isinstance(posterior.spec, HyperSpec):
        _predict_hyper(posterior, n_active, tokens, n_total, arch, prob, as_json)
        return
    point: dict[str, object] = {"n_active": n_active, "tokens": tokens, "experts": experts}
    if arch is not None:
        point["arch"] = arch
    if eval_set is not None:
        point["eval_set"] = eval_set
    try:
        prediction = predict_point(posterior, point, prob)
    except PredictionError as error:
        raise fail(str(error)) from error
    result = prediction.to_dict()
    label = f"{100 * prob:g}"
    if as_json:
        typer.echo(json.dumps(result))
    else:
        low, high = prediction.loss_interval
        new_low, new_high = prediction.new_run_interval
        typer.echo(
            f"{prediction.arch} N={n_active:.3g} D={tokens:.3g} E={experts:g} "
            f"C={prediction.flops:.3g}: expected loss {prediction.loss_median:.4f} "
            f"[{low:.4f}, {high:.4f}] ({label}%); a new run [{new_low:.4f}, {new_high:.4f}]"
        )
        shares = prediction.shares or {}
        typer.echo(
            f"  {prediction.extrapolation:.3g}x beyond the fitted runs; the new-run interval "
            + ", ".join(f"{100 * v:.0f}% {k}" for k, v in shares.items())
        )
    if plot is not None:
        import pandas as pd

        from bayes_scaling.plots import plot_loss_vs_compute

        largest = float(posterior.runs["n_active"].max())
        marker = predict_point(posterior, point, 0.9)  # the figure's bands are 90%
        low, high = marker.new_run_interval
        query = pd.DataFrame([{"arch": marker.arch, "flops": marker.flops,
                               "loss_median": marker.loss_median,
                               "new_run_low_90": low, "new_run_high_90": high}])  # fmt: skip
        extend = max(10.0, 1.5 * n_active / largest)  # the curves reach the query
        save_figure(plot_loss_vs_compute(posterior, extend=extend, targets=query), plot)


def _predict_hyper(
    posterior: object,
    n_active: float,
    tokens: float,
    n_total: float | None,
    arch: str | None,
    prob: float,
    as_json: bool,
) -> None:
    """The ``predict`` output for a hyperparameter posterior: the lr and batch with the lowest
    expected loss penalty, and the optimum's median and interval."""
    import json

    from bayes_scaling.hyper_predict import recommend
    from bayes_scaling.predict import PredictionError

    point: dict[str, object] = {"n_active": n_active, "tokens": tokens}
    if n_total is not None:
        point["n_total"] = n_total
    if arch is not None:
        point["arch"] = arch
    try:
        recommendation = recommend(posterior, point, prob=prob)  # type: ignore[arg-type]
    except PredictionError as error:
        raise fail(str(error)) from error
    typer.echo(json.dumps(recommendation.to_dict()) if as_json else str(recommendation))
