"""Sweeps: a TOML grid of training runs whose output is a run table the models fit directly.

A sweep file (``models/sweeps/*.toml``) has a ``[base]`` table of keys shared by every run
and one or more ``[[grid]]`` blocks; in each block, keys with list values are crossed (a
Cartesian product) and override ``base``. Keys are those of
:class:`~bayes_scaling.train.loop.TrainConfig` and
:class:`~bayes_scaling.train.model.ModelConfig`::

    name = "tiny"
    [base]
    seq_len = 64
    tokens = 100000
    [[grid]]
    d_model = [32, 64]
    experts = [1, 8]

:func:`run_sweep` runs the grid in one process in a fixed order, skipping runs whose id is
already in the output table (so an interrupted sweep resumes), optionally only the shard
``index / count`` of it (for a SLURM array). Each finished run appends one row: the whole file
is rewritten to a temporary name and renamed under an exclusive lock, so a crash never leaves a
partial row and concurrent shards writing one file do not lose rows.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import tempfile
import tomllib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bayes_scaling.train.loop import TrainConfig, run_id_of, train

__all__ = ["SweepError", "append_row", "expand_sweep", "read_rows", "run_sweep"]


class SweepError(ValueError):
    """A sweep file with unknown keys, an empty grid, or a bad shard."""


def expand_sweep(path: str | os.PathLike[str]) -> tuple[str, list[TrainConfig]]:
    """The sweep's name and its run configs in a fixed order (duplicates removed)."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SweepError(f"{path}: not valid TOML ({error})") from error
    unknown = sorted(set(spec) - {"name", "description", "base", "grid"})
    if unknown:
        raise SweepError(
            f"{path}: unknown key(s) {unknown}; expected name, description, base, grid"
        )
    base = dict(spec.get("base", {}))
    blocks = spec.get("grid", [{}])
    configs: dict[str, TrainConfig] = {}
    for number, block in enumerate(blocks, start=1):
        keys = sorted(block)
        values = [v if isinstance(v, list) else [v] for v in (block[k] for k in keys)]
        for combo in itertools.product(*values):
            try:
                config = TrainConfig.from_flat({**base, **dict(zip(keys, combo, strict=True))})
            except (TypeError, ValueError) as error:
                raise SweepError(f"{path}, grid block {number}: {error}") from error
            configs.setdefault(run_id_of(config), config)
    if not configs:
        raise SweepError(f"{path}: the grid is empty")
    return str(spec.get("name", path.stem)), list(configs.values())


@contextmanager
def _locked(path: Path) -> Any:
    lock = path.with_name(f".{path.name}.lock")
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a JSONL run table (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Add one row to a JSONL run table atomically (rewrite + rename, under a lock)."""
    path = Path(path)
    line = json.dumps(row) + "\n"  # fails before anything is written if a value cannot serialise
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        text = path.read_text() if path.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write(text + line)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if shard is None:
        return 0, 1
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError as error:
        raise SweepError(f"shard {shard!r} is not I/N, e.g. 0/4") from error
    if not 0 <= index < count:
        raise SweepError(f"shard {shard!r}: need 0 <= I < N")
    return index, count


def run_sweep(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    workdir: str | os.PathLike[str] | None = None,
    shard: str | None = None,
    overrides: dict[str, Any] | None = None,
    runner: Callable[[TrainConfig, Path], dict[str, Any]] = train,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run the sweep (or one shard), appending a row per run to ``out``; returns new rows.

    ``workdir`` holds one folder per run (metrics, checkpoints); default ``<out>.runs/``.
    ``overrides`` replace keys of every config (e.g. ``data_dir``).
    """
    name, configs = expand_sweep(path)
    index, count = parse_shard(shard)
    mine = [c for i, c in enumerate(configs) if i % count == index]
    if overrides:
        mine = [TrainConfig.from_flat({**_flat(c), **overrides}) for c in mine]
    out = Path(out)
    workdir = Path(workdir) if workdir else out.with_name(out.name + ".runs")
    done = {row["run_id"] for row in read_rows(out)}
    rows = []
    for number, config in enumerate(mine, start=1):
        run_id = run_id_of(config)
        if run_id in done:
            log(f"[{number}/{len(mine)}] {run_id}: already in {out}, skipped")
            continue
        row = runner(config, workdir / run_id)
        row["sweep"] = name
        append_row(out, row)
        rows.append(row)
        log(
            f"[{number}/{len(mine)}] {run_id}: {row['status']}, loss {row['loss']:.4f}, "
            f"{row['wall_s']:.0f} s"
        )
    return rows


def _flat(config: TrainConfig) -> dict[str, Any]:
    values = config.to_dict()
    return {**values.pop("model"), **values}
