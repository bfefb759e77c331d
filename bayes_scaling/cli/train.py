"""``sweep`` and ``train``: the torch trainer, whose rows the models fit directly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bayes_scaling.cli._common import app, fail


@app.command("sweep")
def sweep_command(
    sweep_file: Annotated[
        Path | None, typer.Argument(help="A sweep TOML, e.g. models/sweeps/cpu.toml.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run table (JSONL) to append rows to.")
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option("--plan", help="Train the runs of a plan (`plan --out`) instead of a grid."),
    ] = None,
    shard: Annotated[
        str | None, typer.Option("--shard", help="Run only shard I/N of the grid, e.g. 0/4.")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Per-run folders (default <out>.runs).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Prepared corpus folder (overrides).")
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Move unreadable lines at the end of --out to <out>.corrupt, keep every "
            "complete row, then resume.",
        ),
    ] = False,
) -> None:
    """Run a sweep (or a plan's runs) in this process, one run-table row per finished run;
    resumes.

    Concurrent sweeps on one --out claim each run, so none is trained twice.
    """
    if (sweep_file is None) == (plan is None):
        raise fail("give a sweep file or --plan PLAN.json (one of them)")
    if out is None:
        raise fail("--out (the run table to append rows to) is required")
    try:
        from bayes_scaling.train.plans import plan_configs
        from bayes_scaling.train.sweep import expand_sweep, run_configs
    except ImportError as error:  # torch is the optional extra `train`
        message = f"the trainer needs torch: pip install 'bayes_scaling[train]' ({error})"
        raise fail(message) from error
    try:
        if plan is not None:
            name, configs = plan_configs(plan)
        else:
            assert sweep_file is not None
            name, configs = expand_sweep(sweep_file)
        rows = run_configs(
            name,
            configs,
            out,
            workdir=workdir,
            shard=shard,
            overrides={"data_dir": data_dir} if data_dir else None,
            log=typer.echo,
            repair=repair,
        )
    except (ValueError, OSError) as error:  # SweepError, CheckpointError, CorpusError; files
        raise fail(str(error)) from error
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
        raise fail(message) from error
    from bayes_scaling._io import OutputPathError, check_writable

    try:
        config = TrainConfig.from_flat(tomllib.loads(config_file.read_text(encoding="utf-8")))
    except (ValueError, TypeError, OSError) as error:  # TOMLDecodeError is a ValueError
        raise fail(f"{config_file}: {error}") from error
    try:
        check_writable(out, "--out")  # before training, not after
    except OutputPathError as error:
        raise fail(str(error)) from error
    folder = workdir or out.with_name(out.name + ".runs") / run_id_of(config)
    try:
        row = train(config, folder)
    except (ValueError, OSError) as error:  # CheckpointError, CorpusError; a missing source
        raise fail(str(error)) from error
    if int(os.environ.get("RANK", "0")) == 0:
        append_row(out, row)
        typer.echo(f"{row['run_id']}: {row['status']}, loss {row['loss']:.4f} -> {out}")
