"""The run table: every validation rule, the defaults, and lossless atomic read/write."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayes_scaling.runs import COLUMNS, RunTableError, read_runs, validate_runs, write_runs


def make_runs(rows: int = 5) -> pd.DataFrame:
    """A small valid table with dense and MoE rows."""
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(rows)],
            "arch": ["dense", "moe"] * (rows // 2) + ["dense"] * (rows % 2),
            "n_active": np.linspace(1e6, 5e6, rows),
            "n_total": np.linspace(1e6, 5e6, rows) * 4,
            "tokens": np.linspace(1e8, 5e8, rows),
            "experts": [1, 8] * (rows // 2) + [1] * (rows % 2),
            "top_k": [1, 2] * (rows // 2) + [1] * (rows % 2),
            "loss": np.linspace(3.5, 2.5, rows),
            "lr": 1e-3,
            "batch_tokens": 2.0**19,
        }
    )


def problems_of(table: pd.DataFrame) -> list[tuple[int | None, str | None]]:
    """(row, column) of every problem validation reports."""
    with pytest.raises(RunTableError) as caught:
        validate_runs(table)
    return [(p.row, p.column) for p in caught.value.problems]


def test_valid_table_gets_defaults_and_derived_flops() -> None:
    runs = validate_runs(make_runs().drop(columns=["n_total"]).assign(experts=1, top_k=1))
    assert (runs["n_total"] == runs["n_active"]).all()
    assert np.allclose(runs["flops"], 6 * runs["n_active"] * runs["tokens"])
    assert runs["flops_derived"].all()
    assert (runs["granularity"] == 1.0).all() and (runs["shared_experts"] == 0).all()
    assert list(runs.columns[: len(COLUMNS)]) == [c.name for c in COLUMNS]


def test_given_flops_are_kept_and_not_marked_derived() -> None:
    runs = validate_runs(make_runs().assign(flops=1e15))
    assert (runs["flops"] == 1e15).all() and not runs["flops_derived"].any()


@pytest.mark.parametrize("column", ["run_id", "arch", "n_active", "tokens", "loss"])
def test_missing_required_column_is_named(column: str) -> None:
    assert (None, column) in problems_of(make_runs().drop(columns=[column]))


@pytest.mark.parametrize(
    ("column", "value"),
    [("loss", math.nan), ("loss", math.inf), ("tokens", -math.inf), ("n_active", math.nan)],
)
def test_nan_and_infinite_values_name_row_and_column(column: str, value: float) -> None:
    table = make_runs()
    table.loc[2, column] = value
    assert problems_of(table) == [(3, column)]


@pytest.mark.parametrize("column", ["n_active", "n_total", "tokens", "loss", "lr", "batch_tokens"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_non_positive_values_are_refused(column: str, value: float) -> None:
    table = make_runs()
    table[column] = table[column].astype(float)
    table.loc[3, column] = value
    found = problems_of(table)
    assert (4, column) in found


def test_duplicate_run_ids_name_both_rows() -> None:
    table = make_runs()
    table.loc[4, "run_id"] = "r1"
    with pytest.raises(RunTableError) as caught:
        validate_runs(table)
    (problem,) = caught.value.problems
    assert (problem.row, problem.column) == (5, "run_id") and "row 2" in problem.message


def test_total_below_active_is_refused() -> None:
    table = make_runs()
    table.loc[1, "n_total"] = table.loc[1, "n_active"] / 2
    assert problems_of(table) == [(2, "n_total")]


def test_top_k_above_experts_is_refused() -> None:
    table = make_runs()
    table.loc[0, "top_k"] = 2  # row 0 is dense, experts = 1
    assert problems_of(table) == [(1, "top_k")]


def test_moe_table_without_n_total_is_refused() -> None:
    assert (None, "n_total") in problems_of(make_runs().drop(columns=["n_total"]))


def test_text_in_numeric_column_and_fractional_experts() -> None:
    table = make_runs().astype({"lr": object, "experts": float})
    table.loc[1, "lr"] = "fast"
    table.loc[3, "experts"] = 2.5
    assert problems_of(table) == [(2, "lr"), (4, "experts")]


def test_every_problem_is_reported_at_once() -> None:
    table = make_runs().drop(columns=["tokens"])
    table.loc[2, "loss"] = math.nan
    table.loc[4, "n_active"] = -5.0
    with pytest.raises(RunTableError) as caught:
        validate_runs(table, origin="bad.csv")
    assert [(p.row, p.column) for p in caught.value.problems] == [
        (None, "tokens"),
        (3, "loss"),
        (5, "n_active"),
    ]
    assert str(caught.value).startswith("bad.csv: 3 problem(s)")
    assert isinstance(caught.value, ValueError)


def test_optional_columns_may_be_missing_per_row() -> None:
    table = make_runs()
    table.loc[0, "lr"] = math.nan
    runs = validate_runs(table)
    assert math.isnan(runs.loc[0, "lr"]) and runs.loc[1, "lr"] == 1e-3


def test_empty_table_is_refused() -> None:
    with pytest.raises(RunTableError, match="no rows"):
        validate_runs(make_runs().iloc[:0])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_round_trip_keeps_values_and_extra_columns(tmp_path: Path, suffix: str) -> None:
    table = make_runs().assign(my_note=["a", "b", "c", "d", "e"], seed=[1, 2, 3, 4, 5])
    path = write_runs(table, tmp_path / f"runs{suffix}")
    back = read_runs(path)
    expected = validate_runs(table)
    pd.testing.assert_frame_equal(
        back.drop(columns=["source"]), expected.drop(columns=["source"]), check_dtype=False
    )
    assert list(back["my_note"]) == ["a", "b", "c", "d", "e"]


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = write_runs(make_runs(), tmp_path / "runs.csv")
    before = path.read_bytes()
    bad = make_runs().assign(loss=-1.0)
    with pytest.raises(RunTableError):
        write_runs(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text('{"run_id": "a"}\nnot json\n[1, 2]\n')
    with pytest.raises(RunTableError) as caught:
        read_runs(path)
    assert [p.row for p in caught.value.problems] == [2, 3]


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunTableError, match=r"\.xlsx"):
        read_runs(tmp_path / "runs.xlsx")


# Property: validation accepts a valid table unchanged or raises RunTableError, nothing else.
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-3, max_value=10**12),
    st.sampled_from(["", "x", None]),
)
# Characters a run table can hold: no NUL, and no lone surrogates (not text that any file
# decodes to; pandas' Arrow-backed strings cannot even build a column of them).
TEXT = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
cells = {
    "run_id": st.one_of(st.sampled_from(["a", "b", "c", "", None]), st.text(TEXT, max_size=3)),
    "arch": st.sampled_from(["dense", "moe", "", None]),
    "n_active": numbers,
    "n_total": numbers,
    "tokens": numbers,
    "loss": numbers,
    "experts": numbers,
    "top_k": numbers,
    "lr": numbers,
    "batch_tokens": numbers,
}


valid_cells = {
    # Any text but NUL, which netCDF cannot store and validation refuses (test_bad_inputs.py).
    "run_id": st.text(TEXT, min_size=1, max_size=3),
    "arch": st.sampled_from(["dense", "moe"]),
    "n_active": st.floats(1.0, 1e12),
    "n_total": st.floats(1e12, 1e13),
    "tokens": st.floats(1.0, 1e13),
    "loss": st.floats(0.1, 10.0),
    "experts": st.integers(8, 64),
    "top_k": st.integers(1, 8),
    "lr": st.floats(1e-6, 1.0),
    "batch_tokens": st.integers(1, 2**24),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[pd.DataFrame, bool]:
    """Random tables and whether they were drawn valid; invalid ones mix bad cells and columns."""
    rows = draw(st.integers(min_value=1, max_value=4))
    if draw(st.booleans()):
        columns = {name: [draw(valid_cells[name]) for _ in range(rows)] for name in valid_cells}
        columns["run_id"] = [f"{value}-{i}" for i, value in enumerate(columns["run_id"])]
        return pd.DataFrame(columns), True
    present = draw(st.sets(st.sampled_from(sorted(cells)), min_size=3))
    table = pd.DataFrame(
        {name: [draw(cells[name]) for _ in range(rows)] for name in sorted(present)}
    )
    return table, False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_validation_accepts_unchanged_or_raises_the_specific_error(
    drawn: tuple[pd.DataFrame, bool],
) -> None:
    table, valid = drawn
    original = table.copy()
    try:
        runs = validate_runs(table)
    except RunTableError as error:
        assert not valid, f"a valid table was refused: {error}"
        assert error.problems and all(p.row or p.column for p in error.problems)
        return
    pd.testing.assert_frame_equal(table, original)  # the input is never modified
    for name in original.columns:
        given_values = (
            pd.to_numeric(original[name], errors="coerce")
            if name not in ("run_id", "arch")
            else original[name].astype(str)
        )
        kept = runs[name] if name in ("run_id", "arch") else runs[name].astype(float)
        assert list(kept.astype(str) if name in ("run_id", "arch") else kept) == list(given_values)
    assert (runs["n_active"] > 0).all() and (runs["n_total"] >= runs["n_active"]).all()
    assert np.isfinite(runs[["n_active", "tokens", "loss", "flops"]].to_numpy(float)).all()
    assert (runs["top_k"] <= runs["experts"]).all()
