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
``index / count`` of it (for a SLURM array). Each finished run appends one row, ``status``
``"finished"`` or ``"diverged"``: the whole file is rewritten to a temporary name and renamed
under an exclusive lock, so a crash never leaves a partial row and concurrent shards writing one
file do not lose rows.

Several sweeps may share one output table, sharded or not. Before training a run, a sweep takes
an exclusive, non-blocking ``flock`` on the claim file ``<workdir>/<run_id>/.claim`` and then
re-reads the table; a run claimed by another live sweep, or finished meanwhile, is skipped. The
kernel drops a ``flock`` when its process dies, so a killed sweep leaves no stale claim.

Lock files are removed by whoever holds them, so none is left behind. That makes one subtle
case: a process can lock a file just unlinked (or, for the table, just renamed over) by the
holder. :func:`_lock` therefore checks, once locked, that the path still names the file it
locked, and retries otherwise. The table's lock is taken on the table file itself: its
holder's rename is the last thing it does, so the next writer always reads the latest rows.
``flock`` on regular files (not folders) also works on NFS, where clusters keep sweep outputs.

A table whose last line is incomplete (copied mid-write, edited by hand) is refused with the
line named; :func:`repair_rows` (``run_sweep(..., repair=True)``) moves such trailing lines to
``<out>.corrupt`` and keeps every complete row. A bad line followed by good ones is not a crash
symptom and is refused, never dropped.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bayes_scaling._io import OutputPathError, atomic_write, check_writable
from bayes_scaling.run_checks import STATUSES
from bayes_scaling.train.config import TrainConfig, run_id_of
from bayes_scaling.train.loop import train

__all__ = [
    "SweepError",
    "append_row",
    "expand_sweep",
    "read_rows",
    "repair_rows",
    "run_configs",
    "run_sweep",
]

# The values of a row's ``status``; fits leave out the diverged ones.


class SweepError(ValueError):
    """A sweep file with unknown keys, an empty grid, a bad shard, or an unreadable run table
    (the message names the file and line)."""


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
    base = spec.get("base", {})
    blocks = spec.get("grid", [{}])
    if not isinstance(base, dict):
        raise SweepError(f"{path}: base must be a table ([base]), not {base!r}")
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise SweepError(f"{path}: grid must be a list of tables ([[grid]] blocks), not {blocks!r}")
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


def _lock(path: Path, blocking: bool) -> IO[str] | None:
    """An open handle on ``path`` (created if missing) holding its exclusive ``flock``, or None
    when not ``blocking`` and another process holds it."""
    while True:
        handle = path.open("a", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        try:
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                return handle
        except FileNotFoundError:
            pass
        handle.close()  # locked a file its holder removed or replaced meanwhile: take the new one


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the run table's write lock (taken on the table file itself; see the module notes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _lock(path, blocking=True)
    assert handle is not None  # a blocking lock always returns one
    with handle:
        yield


@contextmanager
def _claimed(folder: Path) -> Iterator[bool]:
    """Yield whether this process holds the claim on the run in ``folder`` (False when another
    live sweep does); the claim file is removed, while still locked, on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".claim"
    handle = _lock(path, blocking=False)
    if handle is None:
        yield False
        return
    with handle:
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)


def _read_text(path: Path) -> str:
    """The text of a run table; bytes that are not UTF-8 are an error naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SweepError(f"{path}, line {line}: not UTF-8 text; fix or delete that line") from error


def _lines(text: str) -> list[str]:
    """The lines of a JSONL text, split at newlines only (``str.splitlines`` also splits at
    characters such as U+2028 that a row may hold unescaped)."""
    lines = text.split("\n")
    return lines[:-1] if lines and not lines[-1] else lines


def _parse_lines(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of a JSONL text and the 1-based numbers of the lines that are not rows."""
    rows, bad = [], []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad.append(number)
    return rows, bad


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a JSONL run table (empty when the file does not exist).

    Raises
    ------
    SweepError
        When a line is not a JSON object; the message names the file and the line, and, for an
        incomplete last line, how to recover (:func:`repair_rows`).
    """
    path = Path(path)
    if not path.exists():
        return []
    text = _read_text(path)
    rows, bad = _parse_lines(text)
    if not bad:
        return rows
    if _trailing(text, bad):
        hint = (
            "the end of the file is incomplete (copied or edited mid-write?); repair_rows "
            f"(sweep --repair) moves it to {path}.corrupt and keeps the {len(rows)} complete row(s)"
        )
    else:
        hint = "complete rows follow it, so fix or delete that line by hand"
    raise SweepError(f"{path}, line {bad[0]}: not a JSON object row; {hint}")


def _trailing(text: str, bad: list[int]) -> bool:
    """Whether every non-blank line from the first bad one on is bad (a damaged tail)."""
    lines = _lines(text)
    return all(n in bad for n in range(bad[0], len(lines) + 1) if lines[n - 1].strip())


def repair_rows(path: str | os.PathLike[str]) -> int:
    """Move the unreadable trailing line(s) of a run table to ``<path>.corrupt``; keep the rest.

    An incomplete last line is what a file copied or edited mid-write looks like; the rows
    before it are complete and kept. The moved lines are appended to ``<path>.corrupt`` (kept
    for inspection) before the table is rewritten, both atomically, under the table's lock.

    Parameters
    ----------
    path
        The JSONL run table.

    Returns
    -------
    int
        The number of lines moved (0 when the table is readable or missing).

    Raises
    ------
    SweepError
        When an unreadable line is followed by readable rows: that is not a cut-off tail, and
        dropping it could lose a run, so it is left for a person to fix (line named).
    """
    path = Path(path)
    if not path.exists():
        return 0
    with _locked(path):
        text = _read_text(path)
        _, bad = _parse_lines(text)
        if not bad:
            return 0
        if not _trailing(text, bad):
            raise SweepError(
                f"{path}, line {bad[0]}: not a JSON object row, and complete rows follow it; "
                "not repaired (only a cut-off end is): fix or delete that line by hand"
            )
        lines = _lines(text)
        moved = [line for line in lines[bad[0] - 1 :] if line.strip()]
        corrupt = path.with_name(path.name + ".corrupt")
        before = corrupt.read_text(encoding="utf-8") if corrupt.exists() else ""
        atomic_write(corrupt, before + "".join(f"{line}\n" for line in moved))
        atomic_write(path, "".join(f"{line}\n" for line in lines[: bad[0] - 1]))
    return len(moved)


def append_row(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Add one row to a JSONL run table atomically (rewrite + rename, under a lock)."""
    path = Path(path)
    line = json.dumps(row) + "\n"  # fails before anything is written if a value cannot serialise
    with _locked(path):
        text = _read_text(path)
        if text and not text.endswith("\n"):
            text += "\n"
        atomic_write(path, text + line)


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
    repair: bool = False,
) -> list[dict[str, Any]]:
    """Run the sweep (or one shard), appending a row per run to ``out``; returns new rows.

    Parameters
    ----------
    path
        The sweep TOML.
    out
        The JSONL run table; runs already in it are skipped, so a sweep resumes.
    workdir
        One folder per run (metrics, checkpoints, the run's claim); default ``<out>.runs/``.
    shard
        ``"I/N"``: run only every N-th config from the I-th.
    overrides
        Keys replaced in every config (e.g. ``data_dir``).
    runner
        Trains one config in a folder and returns its row (default :func:`train`).
    log
        Receives one line per run.
    repair
        First move an incomplete end of ``out`` to ``<out>.corrupt`` (:func:`repair_rows`).

    Raises
    ------
    SweepError
        For a bad sweep file or shard, an unwritable or unreadable ``out``, or a row without a
        ``status`` of ``"finished"`` or ``"diverged"``.
    """
    name, configs = expand_sweep(path)
    return run_configs(name, configs, out, workdir, shard, overrides, runner, log, repair)


def run_configs(
    name: str,
    configs: list[TrainConfig],
    out: str | os.PathLike[str],
    workdir: str | os.PathLike[str] | None = None,
    shard: str | None = None,
    overrides: dict[str, Any] | None = None,
    runner: Callable[[TrainConfig, Path], dict[str, Any]] = train,
    log: Callable[[str], None] = print,
    repair: bool = False,
) -> list[dict[str, Any]]:
    """:func:`run_sweep` on configs already expanded (a sweep's grid, or a plan's runs from
    :func:`bayes_scaling.train.plans.plan_configs`), rows tagged ``sweep = name``."""
    index, count = parse_shard(shard)
    mine = [c for i, c in enumerate(configs) if i % count == index]
    if overrides:
        mine = [TrainConfig.from_flat({**_flat(c), **overrides}) for c in mine]
    out = Path(out)
    try:
        check_writable(out, "run table")
    except OutputPathError as error:
        raise SweepError(str(error)) from error
    if repair and (moved := repair_rows(out)):
        log(f"moved {moved} incomplete line(s) at the end of {out} to {out}.corrupt")
    workdir = Path(workdir) if workdir else out.with_name(out.name + ".runs")
    done = _done(out)
    rows = []
    for number, config in enumerate(mine, start=1):
        run_id = run_id_of(config)
        prefix = f"[{number}/{len(mine)}] {run_id}"
        if run_id in done:
            log(f"{prefix}: already in {out}, skipped")
            continue
        with _claimed(workdir / run_id) as claimed:
            if not claimed:
                log(f"{prefix}: claimed by another sweep, skipped")
                continue
            done = _done(out)  # another sweep may have finished it since the first read
            if run_id in done:
                log(f"{prefix}: finished by another sweep, skipped")
                continue
            row = runner(config, workdir / run_id)
            row["sweep"] = name
            if row.get("status") not in STATUSES:
                raise SweepError(f"{prefix}: row status {row.get('status')!r}, not {STATUSES}")
            append_row(out, row)
        rows.append(row)
        log(f"{prefix}: {row['status']}, loss {row['loss']:.4f}, {row['wall_s']:.0f} s")
    return rows


def _done(out: Path) -> set[str]:
    """The run ids already in the table ``out``."""
    ids = set()
    for number, row in enumerate(read_rows(out), start=1):
        if "run_id" not in row:
            raise SweepError(f"{out}, row {number}: no 'run_id'")
        ids.add(row["run_id"])
    return ids


def _flat(config: TrainConfig) -> dict[str, Any]:
    return config.flat()
