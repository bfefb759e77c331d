"""``fit`` and ``predict``: sample a hypothesis, then extrapolate with intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bayes_scaling.cli._common import PathOption, app, fail, load_runs_dataset
from bayes_scaling.runs import RunTableError, read_runs


@app.command("fit")
def fit_command(
    model: Annotated[
        Path, typer.Option("--model", help="Hypothesis file, e.g. models/loss/wang2024.toml.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output netCDF file for the posterior.")],
    runs: Annotated[Path | None, typer.Option("--runs", help="Run table file.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Registered data set.")] = None,
    path: PathOption = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    sampler: str = "nutpie",
    target_accept: Annotated[
        float, typer.Option("--target-accept", help="NUTS target acceptance (0.9).")
    ] = 0.9,
    strict: Annotated[bool, typer.Option(help="Exit 2 when the convergence check fails.")] = False,
) -> None:
    """Fit a hypothesis to runs; print the convergence check and save the posterior."""
    from bayes_scaling.fit import fit
    from bayes_scaling.loss_model import MissingColumnError
    from bayes_scaling.spec import ModelSpec, SpecError, read_spec

    if (runs is None) == (dataset is None):
        raise fail("give exactly one of --runs FILE or --dataset NAME")
    try:
        spec = read_spec(model)
        table = read_runs(runs) if runs is not None else load_runs_dataset(str(dataset), path)
        posterior = fit(
            table,
            spec,
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=seed,
            sampler=sampler,
            target_accept=target_accept,
        )
    except (SpecError, RunTableError, MissingColumnError, FileNotFoundError) as error:
        raise fail(str(error)) from error
    posterior.save(out)
    report = posterior.convergence()
    typer.echo(str(report))
    flagged = posterior.off_bowl_runs
    if len(flagged):
        typer.echo(
            f"{len(flagged)} run(s) flagged as diverged (loss > {1 + spec.diverged_above:g} x "  # type: ignore[union-attr]
            "their cell's best), kept in the saved run table, left out of the fit:"
        )
        for _, run in flagged.iterrows():
            typer.echo(
                f"  {run['run_id']}: loss {run['loss']:.4g}, lr {run['lr']:.3g}, "
                f"batch {run['batch_tokens']:.4g}"
            )
    what = f"law {spec.law}" if isinstance(spec, ModelSpec) else f"form {spec.form}"
    typer.echo(f"saved {out} ({len(table)} runs, {what}, pooling {spec.pooling})")
    if strict and not report.ok:
        raise typer.Exit(code=2)


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
    prob: Annotated[float, typer.Option("--prob", help="Interval probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw loss vs compute.")] = None,
) -> None:
    """Predicted loss of a planned run (loss posterior) or its optimal learning rate and batch
    size (hyperparameter posterior), with intervals."""
    import json

    from bayes_scaling.fit import Posterior
    from bayes_scaling.predict import PredictionError, predict_loss
    from bayes_scaling.spec import HyperSpec

    posterior = Posterior.load(posterior_file)
    if isinstance(posterior.spec, HyperSpec):
        _predict_hyper(posterior, n_active, tokens, n_total, arch, prob, as_json)
        return
    point: dict[str, object] = {"n_active": [n_active], "tokens": [tokens], "experts": [experts]}
    if arch is not None:
        point["arch"] = [arch]
    if eval_set is not None:
        point["eval_set"] = [eval_set]
    try:
        row = predict_loss(posterior, point, probs=(prob,)).iloc[0]
    except PredictionError as error:
        raise fail(str(error)) from error
    label = f"{100 * prob:g}"
    result = {
        "arch": row["arch"],
        "eval_set": row["eval_set"],
        "n_active": n_active,
        "tokens": tokens,
        "experts": experts,
        "flops": float(row["flops"]),
        "prob": prob,
        "loss_median": float(row["loss_median"]),
        "loss_interval": [float(row[f"loss_low_{label}"]), float(row[f"loss_high_{label}"])],
        "new_run_interval": [
            float(row[f"new_run_low_{label}"]),
            float(row[f"new_run_high_{label}"]),
        ],
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        low, high = result["loss_interval"]
        new_low, new_high = result["new_run_interval"]
        typer.echo(
            f"{result['arch']} N={n_active:.3g} D={tokens:.3g} E={experts:g} "
            f"C={result['flops']:.3g}: expected loss {result['loss_median']:.4f} "
            f"[{low:.4f}, {high:.4f}] ({label}%); a new run [{new_low:.4f}, {new_high:.4f}]"
        )
    if plot is not None:
        from bayes_scaling.plots import plot_loss_vs_compute

        figure = plot_loss_vs_compute(posterior)
        figure.axes[0].axvline(result["flops"], color="k", linestyle=":", linewidth=1)
        figure.savefig(plot, dpi=120, bbox_inches="tight")
        typer.echo(f"wrote {plot}")


def _predict_hyper(
    posterior: object,
    n_active: float,
    tokens: float,
    n_total: float | None,
    arch: str | None,
    prob: float,
    as_json: bool,
) -> None:
    """The ``predict`` output for a hyperparameter posterior: lr and batch with intervals."""
    import json

    from bayes_scaling.predict import PredictionError, recommend_hyperparameters

    point: dict[str, object] = {"n_active": [n_active], "tokens": [tokens]}
    if n_total is not None:
        point["n_total"] = [n_total]
    if arch is not None:
        point["arch"] = [arch]
    try:
        row = recommend_hyperparameters(posterior, point, probs=(prob,)).iloc[0]  # type: ignore[arg-type]
    except PredictionError as error:
        raise fail(str(error)) from error
    label = f"{100 * prob:g}"
    result = {
        "arch": row["arch"],
        "n_active": n_active,
        "n_total": float(row["n_total"]),
        "tokens": tokens,
        "prob": prob,
        "lr": float(row["lr_median"]),
        "lr_interval": [float(row[f"lr_low_{label}"]), float(row[f"lr_high_{label}"])],
        "batch_tokens": float(row["batch_median"]),
        "batch_interval": [float(row[f"batch_low_{label}"]), float(row[f"batch_high_{label}"])],
        "expected_loss_penalty": float(row["penalty_mean"]),
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"{result['arch']} N={n_active:.3g} D={tokens:.3g}: "
        f"lr {result['lr']:.3g} [{result['lr_interval'][0]:.3g}, {result['lr_interval'][1]:.3g}], "
        f"batch {result['batch_tokens']:.4g} tokens [{result['batch_interval'][0]:.4g}, "
        f"{result['batch_interval'][1]:.4g}] ({label}%); expected loss penalty vs the true "
        f"optimum {100 * result['expected_loss_penalty']:.3f}%"
    )
