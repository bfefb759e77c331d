"""``sweep`` and ``train``: the torch trainer, whose rows the models fit directly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bayes_scaling.cli._common import app, fail


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
        raise fail(message) from error
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
    try:
        config = TrainConfig.from_flat(tomllib.loads(config_file.read_text()))
    except (ValueError, TypeError, tomllib.TOMLDecodeError) as error:
        raise fail(f"{config_file}: {error}") from error
    folder = workdir or out.with_name(out.name + ".runs") / run_id_of(config)
    row = train(config, folder)
    if int(os.environ.get("RANK", "0")) == 0:
        append_row(out, row)
        typer.echo(f"{row['run_id']}: {row['status']}, loss {row['loss']:.4f} -> {out}")
