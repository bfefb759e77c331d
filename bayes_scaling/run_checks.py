"""Run-table schema and the checks of single columns and of relations between columns.

:mod:`bayes_scaling.runs` applies them (``validate_runs``); they live here so that the schema
(one :class:`Column` record per column, with its kind, default and bound) is read in one place.
Rows are numbered from 1, not counting a file's header line, in every message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "REQUIRED_COLUMNS", "STATUSES", "Column", "RunProblem", "RunTableError"]


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
BY_NAME = {c.name: c for c in COLUMNS}
# Columns that may be missing on some rows (NaN means "not recorded").
NULLABLE = {"batch_tokens", "lr", "seed", "step"}


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


def _kind_of(value: object) -> str | None:
    """What a cell holds when it is not a plain number or text: 'a boolean', 'a list', ..."""
    if isinstance(value, bool | np.bool_):
        return "a boolean"
    if isinstance(value, list | tuple | dict | set | np.ndarray):
        return f"a {type(value).__name__}"
    if isinstance(value, pd.Timestamp | np.datetime64 | pd.Timedelta | np.timedelta64):
        return "a date or time"
    return None


def as_numbers(values: pd.Series, column: Column, problems: list[RunProblem]) -> pd.Series:
    """Convert a column to float64, reporting entries that are not numbers.

    Booleans, dates and lists are refused rather than coerced (True is not 1 training token).
    """
    if values.dtype.kind in "bMm":
        what = "booleans" if values.dtype.kind == "b" else "dates or times"
        problems.append(RunProblem(f"holds {what}; expected numbers", column=column.name))
        return pd.Series(np.nan, index=values.index, dtype="float64")
    odd = values.map(_kind_of) if values.dtype == object else None
    numbers = pd.to_numeric(
        values.where(odd.isna()) if odd is not None else values, errors="coerce"
    ).astype("float64")
    bad = numbers.isna() & values.notna()
    for position in np.flatnonzero(bad.to_numpy()).tolist():
        kind = odd.iloc[position] if odd is not None else None
        got = kind if isinstance(kind, str) else repr(values.iloc[position])
        problems.append(RunProblem(f"expected a number, got {got}", position + 1, column.name))
    return numbers


def check_numbers(numbers: pd.Series, column: Column, problems: list[RunProblem]) -> None:
    """Report NaN, infinite, out-of-range and non-integer entries of one numeric column."""
    array = numbers.to_numpy(dtype="float64")
    for position, value in enumerate(array):
        row = position + 1
        if math.isnan(value):
            if column.name not in NULLABLE:
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


def check_strings(values: pd.Series, column: Column, problems: list[RunProblem]) -> pd.Series:
    """Report empty, missing or non-text labels; return the column as Python strings.

    Whole numbers are accepted as labels (a JSON run id 7 is "7"), but booleans, fractions,
    dates and lists are refused: their text form is ambiguous (is 1.0 the id "1"?).
    """
    if values.dtype.kind in "bMmf":
        what = {"b": "booleans", "M": "dates", "m": "durations", "f": "decimal numbers"}
        problems.append(
            RunProblem(f"holds {what[values.dtype.kind]}; expected text labels", column=column.name)
        )
        return values.astype(str).astype(object)
    out = []
    for position, value in enumerate(values.tolist()):
        kind = _kind_of(value)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            problems.append(
                RunProblem("missing or empty; expected a label", position + 1, column.name)
            )
        elif kind is not None or isinstance(value, float):
            got = kind or f"the number {value!r}"
            problems.append(
                RunProblem(f"expected a text label, got {got}", position + 1, column.name)
            )
        out.append(str(value))
    return pd.Series(out, index=values.index, dtype=object)


def check_relations(table: pd.DataFrame, problems: list[RunProblem]) -> None:
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


def check_derived(table: pd.DataFrame, derived: set[str], problems: list[RunProblem]) -> None:
    """Derived flops must be finite: a 6 N D that overflows names the columns it came from."""
    if "flops" not in derived:
        return
    flops = table["flops"].to_numpy(dtype="float64")
    inputs = table[["n_active", "tokens"]].to_numpy(dtype="float64")
    for position in np.flatnonzero(~np.isfinite(flops) & np.isfinite(inputs).all(axis=1)):
        n_active, tokens = inputs[position]
        problems.append(
            RunProblem(
                f"6 * n_active * tokens = 6 * {n_active:g} * {tokens:g} overflows; "
                "expected a finite FLOP count (check the units of n_active and tokens)",
                int(position) + 1,
                "tokens",
            )
        )


# Trainer statuses: a finished run is a measurement; a diverged one is not (its loss is the last
# evaluation before the blow-up, or ln 256 when there was none) and never enters a fit.
STATUSES = ("finished", "diverged")


def check_status(table: pd.DataFrame, problems: list[RunProblem]) -> None:
    """An optional ``status`` column holds only the trainer's statuses (or nothing)."""
    if "status" not in table.columns:
        return
    for position, value in enumerate(table["status"].tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if value not in STATUSES:
            problems.append(
                RunProblem(
                    f"unknown status {value!r}; expected one of {list(STATUSES)} (or empty)",
                    position + 1,
                    "status",
                )
            )


def check_nul(table: pd.DataFrame, problems: list[RunProblem]) -> None:
    """Refuse NUL characters in text cells: netCDF (the posterior file) cannot store them, and
    no label or note needs one."""
    for column in table.columns:
        if table[column].dtype.kind not in "OSU":
            continue
        for position, value in enumerate(table[column].tolist()):
            if isinstance(value, str) and "\x00" in value:
                problems.append(
                    RunProblem("contains a NUL character; expected text", position + 1, column)
                )
