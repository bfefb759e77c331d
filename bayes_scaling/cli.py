"""The ``bayes-scaling`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from bayes_scaling.datasets import DATASETS, DataFileMissingError, UnknownDatasetError, load_dataset
from bayes_scaling.runs import RunTableError, read_runs, write_runs

app = typer.Typer(
    help="Bayesian scaling laws for dense and MoE language models.", no_args_is_help=True
)
datasets_app = typer.Typer(help="Public data sets as run tables.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

PathOption = Annotated[
    Path | None, typer.Option("--path", help="File or folder of an unbundled data set.")
]


def _fail(message: str) -> typer.Exit:
    """Print an error to stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _load(name: str, path: Path | None) -> pd.DataFrame:
    """Load a data set, turning the package's errors into a clean exit."""
    try:
        return load_dataset(name, path=path)
    except (UnknownDatasetError, DataFileMissingError, RunTableError) as error:
        raise _fail(str(error)) from error


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
    runs = _load(name, path)
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
    runs = _load(name, path)
    try:
        written = write_runs(runs, out)
    except RunTableError as error:
        raise _fail(str(error)) from error
    typer.echo(f"wrote {len(runs)} runs to {written}")


@app.command("validate")
def validate(file: Path) -> None:
    """Check a run table file; exit 1 listing every problem, or 0 with a one-line summary."""
    try:
        runs = read_runs(file)
    except (RunTableError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    archs = ", ".join(
        f"{arch} {count}" for arch, count in runs["arch"].value_counts().sort_index().items()
    )
    typer.echo(f"{file}: valid, {len(runs)} runs ({archs})")


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
        raise _fail("give exactly one of --runs FILE or --dataset NAME")
    try:
        spec = read_spec(model)
        table = read_runs(runs) if runs is not None else _load(str(dataset), path)
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
        raise _fail(str(error)) from error
    posterior.save(out)
    report = posterior.convergence()
    typer.echo(str(report))
    flagged = posterior.diverged_runs
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
        raise _fail(str(error)) from error
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


@app.command("decide")
def decide_command(
    posterior_file: Annotated[Path, typer.Argument(help="A loss-law posterior written by `fit`.")],
    flops: Annotated[float, typer.Option("--flops", help="Training budget in FLOPs.")],
    objective: Annotated[
        str, typer.Option("--objective", help="mean | q90 | p-target (needs --target).")
    ] = "mean",
    target: Annotated[float | None, typer.Option("--target", help="Target loss.")] = None,
    max_params: Annotated[
        float | None, typer.Option("--max-params", help="Cap on total parameters.")
    ] = None,
    max_tokens: Annotated[
        float | None, typer.Option("--max-tokens", help="Cap on training tokens.")
    ] = None,
    inference_tokens: Annotated[
        float, typer.Option("--inference-tokens", help="Tokens to serve (2N FLOPs each).")
    ] = 0.0,
    arch: Annotated[
        list[str] | None, typer.Option("--arch", help="Arch(s) to consider; default all.")
    ] = None,
    hyper: Annotated[
        Path | None, typer.Option("--hyper", help="Hyperparameter posterior for lr and batch.")
    ] = None,
    prob: Annotated[float, typer.Option("--prob", help="Interval probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw the frontier.")] = None,
) -> None:
    """Recommend what to train with a FLOP budget: size, tokens, experts (and lr, batch)."""
    import json

    from bayes_scaling.decide import DecisionError, frontier, recommend
    from bayes_scaling.fit import Posterior

    posterior = Posterior.load(posterior_file)
    try:
        choice = recommend(
            posterior,
            flops,
            objective=objective,
            target=target,
            max_params=max_params,
            max_tokens=max_tokens,
            inference_tokens=inference_tokens,
            archs=arch,
            hyper=Posterior.load(hyper) if hyper is not None else None,
        )
        optimum = frontier(posterior, [flops], choice.arch, experts=choice.experts)
    except DecisionError as error:
        raise _fail(str(error)) from error
    summary = optimum.summary(probs=(prob,)).iloc[0]
    label = f"{100 * prob:g}"
    result = choice.to_dict(prob)
    result["unconstrained_n_opt_interval"] = [
        float(summary[f"n_opt_low_{label}"]),
        float(summary[f"n_opt_high_{label}"]),
    ]
    result["unconstrained_n_opt_median"] = float(summary["n_opt_median"])
    if as_json:
        typer.echo(json.dumps(result))
    else:
        low, high = result["loss_interval"]
        typer.echo(
            f"C={flops:.3g} FLOPs, objective {objective}: {choice.arch} "
            f"N={choice.n_active:.3g} active ({choice.n_total:.3g} total, E={choice.experts:g}), "
            f"D={choice.tokens:.3g} tokens ({choice.tokens / choice.n_active:.1f} per parameter)"
        )
        typer.echo(
            f"  expected loss {result['loss_median']:.4f} [{low:.4f}, {high:.4f}] ({label}%)"
        )
        typer.echo(
            f"  compute-optimal N for {choice.arch}: {summary['n_opt_median']:.3g} "
            f"[{summary[f'n_opt_low_{label}']:.3g}, {summary[f'n_opt_high_{label}']:.3g}] "
            f"({label}%)"
        )
        if choice.lr:
            typer.echo(
                f"  lr {choice.lr['median']:.3g} [{choice.lr['low_90']:.3g}, "
                f"{choice.lr['high_90']:.3g}], batch {choice.batch_tokens['median']:.4g} tokens "
                f"[{choice.batch_tokens['low_90']:.4g}, {choice.batch_tokens['high_90']:.4g}]"
            )
        for _, row in choice.runners_up.head(5).iterrows():
            typer.echo(
                f"  runner-up: {row['arch']} E={row['experts']:g} N={row['n_active']:.3g} "
                f"D={row['tokens']:.3g}, median loss {row['loss_median']:.4f}"
            )
    if plot is not None:
        from bayes_scaling.plots import plot_frontier

        figure = plot_frontier(posterior, budgets=(flops / 1e3, flops * 1e2), mark=flops)
        figure.savefig(plot, dpi=120, bbox_inches="tight")
        typer.echo(f"wrote {plot}")


@app.command("sweep")
def sweep_command(
    sweep_file: Annotated[Path, typer.Argument(help="A sweep TOML, e.g. models/sweeps/cpu.toml.")],
    out: Annotated[Path, typer.Option("--out", help="Run table (JSONL) to append rows to.")],
    shard: Annotated[
        str | None, typer.Option("--shard", help="Run only shard I/N of the grid, e.g. 0/4.")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Per-run folders (default <out>.runs).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Prepared corpus folder (overrides).")
    ] = None,
) -> None:
    """Run a sweep in this process, one run-table row per finished run; resumes."""
    try:
        from bayes_scaling.train.sweep import SweepError, run_sweep
    except ImportError as error:  # torch is the optional extra `train`
        message = f"the trainer needs torch: pip install 'bayes_scaling[train]' ({error})"
        raise _fail(message) from error
    try:
        rows = run_sweep(
            sweep_file,
            out,
            workdir=workdir,
            shard=shard,
            overrides={"data_dir": data_dir} if data_dir else None,
            log=typer.echo,
        )
    except (SweepError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    typer.echo(f"{len(rows)} new run(s) appended to {out}")


@app.command("train")
def train_command(
    config_file: Annotated[Path, typer.Argument(help="TOML of one run's keys (flat).")],
    out: Annotated[Path, typer.Option("--out", help="Run table (JSONL) to append the row to.")],
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Run folder (default <out>.runs/<id>).")
    ] = None,
) -> None:
    """Train one config (resuming from its checkpoint); under torchrun, data parallel."""
    import os
    import tomllib

    try:
        from bayes_scaling.train.loop import TrainConfig, run_id_of, train
        from bayes_scaling.train.sweep import append_row
    except ImportError as error:
        message = f"the trainer needs torch: pip install 'bayes_scaling[train]' ({error})"
        raise _fail(message) from error
    try:
        config = TrainConfig.from_flat(tomllib.loads(config_file.read_text()))
    except (ValueError, TypeError, tomllib.TOMLDecodeError) as error:
        raise _fail(f"{config_file}: {error}") from error
    folder = workdir or out.with_name(out.name + ".runs") / run_id_of(config)
    row = train(config, folder)
    if int(os.environ.get("RANK", "0")) == 0:
        append_row(out, row)
        typer.echo(f"{row['run_id']}: {row['status']}, loss {row['loss']:.4f} -> {out}")


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
        raise _fail(str(error)) from error
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


def main() -> None:
    """Entry point for ``python -m bayes_scaling``."""
    app()
