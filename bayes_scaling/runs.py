"""The run table: one row per training run, the one currency every model consumes.

Units are fixed here, once: parameters, tokens and FLOPs are counts, batch sizes are in
tokens (not sequences), learning rates are peak values, losses are in nats per token.
Rows are numbered from 1, not counting a file's header line, in every message.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "RunProblem",
    "RunTableError",
    "read_runs",
    "validate_runs",
    "write_runs",
]


@dataclass(frozen=True)
class Column:
    """One run-table column: its kind, whether a file must supply it, and its lower bound."""

    name: str
    kind: str  # "str", "count" (float64 count), "int" or "float"
    required: bool = False
    default: object = None  # filled when the column is absent; None = missing allowed (NaN)
    minimum: float | None = None  # strict lower bound unless inclusive
    inclusive: bool = False
    doc: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", required=True, doc="unique identity of the run"),
    Column("source", "str", default="unknown", doc="data set name, file or trainer sweep"),
    Column("arch", "str", required=True, doc="dense, moe, or a finer label"),
    Column("n_active", "count", required=True, minimum=0, doc="non-embedding params per token"),
    Column("n_total", "count", minimum=0, doc="all non-embedding params (default n_active)"),
    Column("tokens", "count", required=True, minimum=0, doc="training tokens D"),
    Column("flops", "count", minimum=0, doc="training FLOPs C (default 6 * n_active * tokens)"),
    Column("experts", "int", default=1, minimum=1, inclusive=True, doc="experts E (1: dense)"),
    Column("top_k", "int", default=1, minimum=1, inclusive=True, doc="experts per token k"),
    Column("granularity", "float", default=1.0, minimum=0, doc="G = d_ff / d_expert"),
    Column("shared_experts", "int", default=0, minimum=0, inclusive=True, doc="always-on experts"),
    Column("batch_tokens", "count", minimum=0, doc="batch size in tokens (missing: unknown)"),
    Column("lr", "float", minimum=0, doc="peak learning rate (missing: unknown)"),
    Column("loss", "float", required=True, minimum=0, doc="measured loss, nats per token"),
    Column("eval_set", "str", default="default", doc="what the loss was measured on"),
    Column("seed", "int", doc="random seed (missing: unknown)"),
    Column("step", "int", minimum=0, inclusive=True, doc="optimizer step of the evaluation"),
)
REQUIRED_COLUMNS = tuple(c.name for c in COLUMNS if c.required)
_BY_NAME = {c.name: c for c in COLUMNS}
# Columns that may be missing on some rows (NaN means "not recorded").
_NULLABLE = {"batch_tokens", "lr", "seed", "step"}


@dataclass(frozen=True)
class RunProblem:
    """One thing wrong with a run table; ``row`` counts data rows from 1."""

    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return (", ".join(where) + ": " if where else "") + self.message


class RunTableError(ValueError):
    """A run table failed validation; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[RunProblem], origin: str = "run table") -> None:
        self.problems = problems
        self.origin = origin
        lines = [f"{origin}: {len(problems)} problem(s)"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def _as_numbers(values: pd.Series, column: Column, problems: list[RunProblem]) -> pd.Series:
    """Convert a column to float64, reporting entries that are not numbers."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & values.notna()
    for position in np.flatnonzero(bad.to_numpy()).tolist():
        problems.append(
            RunProblem(
                f"expected a number, got {values.iloc[position]!r}", position + 1, column.name
            )
        )
    return numbers


def _check_numbers(numbers: pd.Series, column: Column, problems: list[RunProblem]) -> None:
    """Report NaN, infinite, out-of-range and non-integer entries of one numeric column."""
    array = numbers.to_numpy(dtype="float64")
    for position, value in enumerate(array):
        row = position + 1
        if math.isnan(value):
            if column.name not in _NULLABLE:
                problems.append(RunProblem("missing or NaN; expected a number", row, column.name))
            continue
        if math.isinf(value):
            problems.append(RunProblem(f"{value} is not finite", row, column.name))
            continue
        if column.kind == "int" and value != round(value):
            problems.append(RunProblem(f"{value} is not a whole number", row, column.name))
        if column.minimum is not None:
            low = column.minimum
            if value < low or (value == low and not column.inclusive):
                relation = ">=" if column.inclusive else ">"
                problems.append(
                    RunProblem(
                        f"{value:g} is out of range; expected {relation} {low:g}", row, column.name
                    )
                )


def _check_strings(values: pd.Series, column: Column, problems: list[RunProblem]) -> pd.Series:
    """Report empty or missing labels; return the column as strings."""
    for position, value in enumerate(values.tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
            problems.append(
                RunProblem("missing or empty; expected a label", position + 1, column.name)
            )
    return values.astype("string").astype(object)


def _check_relations(table: pd.DataFrame, problems: list[RunProblem]) -> None:
    """Report rules that involve several columns: duplicates, n_total >= n_active, top_k <= E."""
    seen: dict[object, int] = {}
    for position, run_id in enumerate(table["run_id"].tolist()):
        if run_id in seen:
            problems.append(
                RunProblem(
                    f"duplicate run id {run_id!r} (first seen in row {seen[run_id]})",
                    position + 1,
                    "run_id",
                )
            )
        else:
            seen[run_id] = position + 1
    too_small = (table["n_total"] < table["n_active"]).to_numpy()
    for position in np.flatnonzero(too_small).tolist():
        row = table.iloc[position]
        problems.append(
            RunProblem(
                f"n_total {row['n_total']:g} < n_active {row['n_active']:g}; "
                "expected n_total >= n_active",
                position + 1,
                "n_total",
            )
        )
    for position in np.flatnonzero((table["top_k"] > table["experts"]).to_numpy()).tolist():
        row = table.iloc[position]
        problems.append(
            RunProblem(
                f"top_k {row['top_k']:g} > experts {row['experts']:g}; expected top_k <= experts",
                position + 1,
                "top_k",
            )
        )


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
        problems.append(RunProblem(f"missing required column ({_BY_NAME[name].doc})", column=name))
    # Placeholders let every other column be checked, so one pass reports every problem.
    out = table.reset_index(drop=True).assign(**{name: np.nan for name in missing})
    out = _fill_defaults(out, problems, source)
    # Columns filled from others (n_total from n_active, flops from 6 N D) are valid whenever
    # their inputs are, which are checked themselves.
    derived = {name for name in ("n_total", "flops") if name not in table.columns}
    for column in COLUMNS:
        if column.kind == "str":
            if column.name not in missing:
                out[column.name] = _check_strings(out[column.name], column, problems)
            continue
        numbers = _as_numbers(out[column.name], column, problems)
        if column.name not in missing and column.name not in derived:
            _check_numbers(numbers, column, problems)
        out[column.name] = numbers
    if "run_id" not in missing:
        _check_relations(out, problems)
    if problems:
        problems.sort(key=lambda p: (p.row or 0, p.column or ""))
        raise RunTableError(problems, origin)
    for column in COLUMNS:
        if column.kind == "int":
            out[column.name] = out[column.name].astype(
                "Int64" if column.name in _NULLABLE else "int64"
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


def _read_jsonl(path: Path) -> pd.DataFrame:
    """Read JSON Lines, naming the line of any malformed record."""
    records = []
    problems = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(RunProblem(f"not valid JSON ({error.msg})", row=number))
                continue
            if not isinstance(record, dict):
                problems.append(RunProblem("expected a JSON object", row=number))
                continue
            records.append(record)
    if problems:
        raise RunTableError(problems, str(path))
    return pd.DataFrame.from_records(records)


def read_runs(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a run table from CSV, JSONL or Parquet.

    Raises ``FileNotFoundError`` when the file is missing and :class:`RunTableError` when its
    content is invalid. The ``source`` column defaults to the file name.
    """
    path = Path(path)
    kind = _format_of(path)
    if not path.exists():
        raise FileNotFoundError(f"run table {path} does not exist")
    if kind == "csv":
        try:
            raw = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raw = pd.DataFrame()
    elif kind == "jsonl":
        raw = _read_jsonl(path)
    else:
        raw = pd.read_parquet(path)
    return validate_runs(raw, origin=str(path), source=path.name)


def write_runs(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validate ``table`` and write it atomically (no half-written file on failure).

    The format follows the extension: ``.csv``, ``.jsonl`` or ``.parquet``.
    """
    path = Path(path)
    kind = _format_of(path)
    valid = validate_runs(table, origin=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        if kind == "csv":
            valid.to_csv(temporary, index=False)
        elif kind == "jsonl":
            valid.to_json(temporary, orient="records", lines=True, double_precision=15)
        else:
            valid.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
