"""The run table: one row per training run, the one currency every model consumes.

Units are fixed here, once: parameters, tokens and FLOPs are counts, batch sizes are in
tokens (not sequences), learning rates are peak values, losses are in nats per token.
Rows are numbered from 1, not counting a file's header line, in every message.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling._io import atomic_write
from bayes_scaling.run_checks import (
    BY_NAME,
    COLUMNS,
    NULLABLE,
    REQUIRED_COLUMNS,
    STATUSES,
    RunProblem,
    RunTableError,
    as_numbers,
    check_derived,
    check_nul,
    check_numbers,
    check_relations,
    check_status,
    check_strings,
)

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "RunProblem",
    "RunTableError",
    "read_runs",
    "split_diverged",
    "validate_runs",
    "write_runs",
]


def split_diverged(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs that are measurements, trainer runs with ``status = "diverged"``).

    Every entry point that fits or summarises runs calls this and reports how many it left out.
    """
    if "status" not in runs.columns:
        return runs, runs.iloc[:0]
    diverged = (runs["status"].astype(object) == "diverged").to_numpy()
    # The index is kept, so a later error about a measured run still names its row in the file.
    return runs[~diverged], runs[diverged]


def _fill_defaults(table: pd.DataFrame, problems: list[RunProblem], source: str) -> pd.DataFrame:
    """Add absent optional columns: defaults, n_total = n_active for dense tables, derived flops."""
    out = table.copy()
    for column in COLUMNS:
        if column.name in out.columns or column.name in ("n_total", "flops"):
            continue
        out[column.name] = source if column.name == "source" else column.default
    if "n_total" not in out.columns:
        experts = pd.to_numeric(out["experts"], errors="coerce")
        if (experts > 1).any():
            problems.append(
                RunProblem(
                    "required when any run has experts > 1 (all parameters incl. experts)",
                    column="n_total",
                )
            )
        out["n_total"] = out["n_active"]
    if "flops" not in out.columns:
        n_active = pd.to_numeric(out["n_active"], errors="coerce")
        out["flops"] = 6.0 * n_active * pd.to_numeric(out["tokens"], errors="coerce")
        out["flops_derived"] = True
    elif "flops_derived" not in out.columns:
        out["flops_derived"] = False
    return out


def validate_runs(
    table: pd.DataFrame, origin: str = "run table", source: str = "unknown"
) -> pd.DataFrame:
    """Validate a run table and return it in canonical form.

    Parameters
    ----------
    table
        One row per run. Required columns: ``run_id``, ``arch``, ``n_active``, ``tokens``,
        ``loss``; the others of :data:`COLUMNS` get documented defaults when absent
        (``flops`` = 6 * n_active * tokens, marked in ``flops_derived``). Extra columns are kept.
    origin
        What the table is (a file name), used in error messages.
    source
        Value of ``source`` when the table has no such column.

    Returns
    -------
    pandas.DataFrame
        A copy with canonical dtypes and column order (schema columns first, extras after).
        Supplied values are never changed, only converted to their canonical type.

    Raises
    ------
    RunTableError
        With every problem found, each naming its row and column.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{origin}: expected a pandas DataFrame, got {type(table).__name__}")
    if len(table) == 0:
        raise RunTableError([RunProblem("the table has no rows")], origin)
    problems: list[RunProblem] = []
    missing = [name for name in REQUIRED_COLUMNS if name not in table.columns]
    for name in missing:
        problems.append(RunProblem(f"missing required column ({BY_NAME[name].doc})", column=name))
    # Placeholders let every other column be checked, so one pass reports every problem.
    out = table.reset_index(drop=True).assign(**{name: np.nan for name in missing})
    out = _fill_defaults(out, problems, source)
    # Columns filled from others (n_total from n_active, flops from 6 N D) are valid whenever
    # their inputs are, which are checked themselves.
    derived = {name for name in ("n_total", "flops") if name not in table.columns}
    for column in COLUMNS:
        if column.kind == "str":
            if column.name not in missing:
                out[column.name] = check_strings(out[column.name], column, problems)
            continue
        before = len(problems)
        numbers = as_numbers(out[column.name], column, problems)
        whole_column = any(p.row is None for p in problems[before:])  # e.g. a column of dates
        if column.name not in missing and column.name not in derived and not whole_column:
            check_numbers(numbers, column, problems)
        out[column.name] = numbers
    if "run_id" not in missing:
        check_relations(out, problems)
    check_derived(out, derived, problems)
    check_status(out, problems)
    check_nul(out, problems)
    if problems:
        problems.sort(key=lambda p: (p.row or 0, p.column or ""))
        raise RunTableError(problems, origin)
    for column in COLUMNS:
        if column.kind == "int":
            out[column.name] = out[column.name].astype(
                "Int64" if column.name in NULLABLE else "int64"
            )
    out["flops_derived"] = out["flops_derived"].astype(bool)  # a given column is kept as given
    schema = [c.name for c in COLUMNS] + ["flops_derived"]
    return out[schema + [c for c in out.columns if c not in schema]]


_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def _format_of(path: Path) -> str:
    """The file format, from the extension (``.csv``, ``.jsonl``, ``.parquet``)."""
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise RunTableError(
            [RunProblem(f"unknown extension {suffix!r}; expected one of {sorted(_FORMATS)}")],
            str(path),
        )
    return _FORMATS[suffix]


_LABELS = {c.name: str for c in COLUMNS if c.kind == "str"}


def _no_duplicates(names: list[str], path: Path) -> None:
    """Refuse a header that names a column twice (pandas would keep one as ``loss.1``)."""
    seen: set[str] = set()
    twice = sorted({name for name in names if name in seen or seen.add(name)})  # type: ignore[func-returns-value]
    if twice:
        raise RunTableError(
            [
                RunProblem("the header names this column more than once", column=name)
                for name in twice
            ],
            str(path),
        )


def _read_csv(path: Path) -> pd.DataFrame:
    """Read UTF-8 CSV with labels kept as text (run id ``001`` stays ``001``)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RunTableError(
            [RunProblem(f"not UTF-8 text (byte {error.start}); save the CSV as UTF-8")], str(path)
        ) from error
    if "\x00" in text:
        raise RunTableError(
            [RunProblem("binary content (NUL bytes); expected CSV text")], str(path)
        )
    try:
        header = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as error:  # e.g. a quoted field longer than csv's field limit
        raise RunTableError(
            [RunProblem(f"not a readable CSV table ({error})")], str(path)
        ) from error
    _no_duplicates(header, path)
    try:
        return pd.read_csv(io.StringIO(text), dtype=_LABELS, keep_default_na=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, ValueError) as error:
        message = str(error).strip().splitlines()[-1]
        raise RunTableError(
            [RunProblem(f"not a readable CSV table ({message})")], str(path)
        ) from error


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, refusing a key given twice (json keeps the last silently)."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"key(s) {twice} given more than once")
    return dict(pairs)


def _read_jsonl(path: Path) -> pd.DataFrame:
    """Read JSON Lines, naming the line of any malformed record."""
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    problems = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise RunTableError(
            [RunProblem(f"not UTF-8 text (byte {error.start}); expected JSON Lines")], str(path)
        ) from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as error:
            problems.append(RunProblem(f"not valid JSON ({error.msg})", row=number))
            continue
        except ValueError as error:
            problems.append(RunProblem(str(error), row=number))
            continue
        except RecursionError:
            problems.append(RunProblem("JSON nested too deeply", row=number))
            continue
        if not isinstance(record, dict):
            problems.append(RunProblem("expected a JSON object", row=number))
            continue
        records.append(record)
        numbers.append(number)
    if problems:
        raise RunTableError(problems, str(path))
    frame = pd.DataFrame.from_records(records)
    frame.attrs["lines"] = numbers  # blank lines are skipped: rows are renumbered as lines
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read Parquet, refusing files that are not Parquet or repeat a column name."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for foreign files
        raise RunTableError(
            [RunProblem(f"not a readable Parquet file ({type(error).__name__}: {error})")],
            str(path),
        ) from error
    _no_duplicates(list(table.column_names), path)
    return table.to_pandas()


def read_runs(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a run table from CSV (UTF-8), JSONL or Parquet.

    Raises ``FileNotFoundError`` when the file is missing and :class:`RunTableError` when its
    content is invalid: not text / not Parquet, a column named twice, or a bad value (named by
    row and column). Labels (``run_id``, ``arch``, ...) are kept as text, never as numbers.
    The ``source`` column defaults to the file name.
    """
    path = Path(path)
    kind = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"run table {path} does not exist or is not a file")
    readers = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}
    raw = readers[kind](path)
    lines = raw.attrs.get("lines")
    try:
        return validate_runs(raw, origin=str(path), source=path.name)
    except RunTableError as error:
        if not lines or lines == list(range(1, len(lines) + 1)):
            raise
        renumbered = [  # a JSON Lines file is read as lines: name the line, not the record
            RunProblem(p.message, lines[p.row - 1] if p.row else None, p.column)
            for p in error.problems
        ]
        raise RunTableError(renumbered, str(path)) from error


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV (UTF-8), JSONL or Parquet table as :func:`read_runs` does (labels as text, a
    column named twice refused) but without validating it as measurements: for tables of runs
    not yet trained, such as the candidates of a plan."""
    path = Path(path)
    kind = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist or is not a file")
    readers = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}
    return readers[kind](path)


def write_runs(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validate ``table`` and write it atomically (no half-written file on failure).

    The format follows the extension: ``.csv``, ``.jsonl`` or ``.parquet``.
    """
    path = Path(path)
    kind = _format_of(path)
    valid = validate_runs(table, origin=str(path))
    writers = {
        "csv": lambda target: valid.to_csv(target, index=False),
        "jsonl": lambda target: valid.to_json(
            target, orient="records", lines=True, double_precision=15
        ),
        "parquet": lambda target: valid.to_parquet(target, index=False),
    }
    atomic_write(path, writers[kind])
    return path
