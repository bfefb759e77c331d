"""``plan`` and ``sweep --plan``: the loop sweep -> fit -> plan -> sweep on the CPU trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bayes_scaling.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "stdlib_sample.txt"
SMALL = ["--draws", "200", "--tune", "300", "--chains", "2", "--extend", "0"]


def _sweep(path: Path, corpus: Path, grid: str) -> Path:
    path.write_text(
        "name = 'loop'\n[base]\nseq_len = 16\nn_heads = 2\nn_layers = 1\nbatch_size = 4\n"
        f"lr = 0.01\neval_tokens = 4096\ndata_source = '{SAMPLE}'\ndata_dir = '{corpus}'\n"
        f"[[grid]]\n{grid}"
    )
    return path


@pytest.fixture(scope="module")
def loop_start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Four tiny dense runs trained and fitted: (folder, run table, posterior)."""
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("loop")
    first = _sweep(
        folder / "first.toml", folder / "corpus", "d_model = [16, 32]\ntokens = [4096, 8192]\n"
    )
    table = folder / "runs.jsonl"
    result = runner.invoke(app, ["sweep", str(first), "--out", str(table)])
    assert result.exit_code == 0, result.output
    posterior = folder / "post.nc"
    fitted = runner.invoke(
        app, ["fit", "--runs", str(table), "--model", "chinchilla", "--out", str(posterior), *SMALL]
    )
    assert fitted.exit_code == 0, fitted.output
    return folder, table, posterior


def test_the_loop_plans_from_a_sweep_grid_and_trains_the_plan(loop_start) -> None:  # type: ignore[no-untyped-def]
    folder, table, posterior = loop_start
    grid = _sweep(
        folder / "next.toml", folder / "corpus", "d_model = [24, 48]\ntokens = [8192, 16384]\n"
    )
    plan_file = folder / "plan.json"
    result = runner.invoke(
        app,
        [
            "plan", str(posterior), "--question", "loss", "--n-active", "2e5", "--tokens",
            "65536", "--candidates", str(grid), "--k", "2", "--out", str(plan_file), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    written = json.loads(plan_file.read_text())
    assert printed == written
    assert len(written["runs"]) == 2 and written["sd_after"] < written["sd_now"]
    planned = [run["run_id"] for run in written["runs"]]
    assert all("config" in run for run in written["runs"])
    trained = runner.invoke(app, ["sweep", "--plan", str(plan_file), "--out", str(table)])
    assert trained.exit_code == 0, trained.output
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert len(rows) == 6 and [r["run_id"] for r in rows[4:]] == planned
    assert {r["sweep"] for r in rows[4:]} == {"plan-plan"}
    # The plan's predicted columns are the trained runs' own accounting.
    for run, row in zip(written["runs"], rows[4:], strict=True):
        assert run["n_active"] == row["n_active"] and run["tokens"] == row["tokens"]
    again = runner.invoke(app, ["sweep", "--plan", str(plan_file), "--out", str(table)])
    assert again.exit_code == 0 and "0 new run(s)" in again.output  # resumable
    refit = folder / "post2.nc"
    result = runner.invoke(
        app, ["fit", "--runs", str(table), "--model", "chinchilla", "--out", str(refit), *SMALL]
    )
    assert result.exit_code == 0, result.output
    from bayes_scaling.posterior import Posterior

    assert len(Posterior.load(refit).runs) == 6


def test_plan_text_output_ranks_auto_candidates(loop_start) -> None:  # type: ignore[no-untyped-def]
    _, _, posterior = loop_start
    result = runner.invoke(
        app, ["plan", str(posterior), "--question", "optimal-n", "--at-flops", "1e13", "--k", "3"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ln compute-optimal N of the arch at 1e+13 FLOPs: sd")
    assert [line.lstrip()[:2] for line in lines[1:4]] == ["1.", "2.", "3."]


def test_plan_reads_candidates_without_losses(loop_start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, posterior = loop_start
    table = tmp_path / "candidates.csv"
    table.write_text("run_id,n_active,tokens\nsmall,2e4,1e4\nlarge,8e4,4e4\nbad,-1,4e4\n")
    arguments = ["plan", str(posterior), "--question", "loss", "--n-active", "2e5",
                 "--tokens", "1e5", "--candidates", str(table), "--k", "1", "--json"]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1
    assert "candidates: row 3 (bad), column 'n_active': -1.0" in result.output
    table.write_text("run_id,n_active,tokens\nsmall,2e4,1e4\nlarge,8e4,4e4\n")
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["runs"][0]["run_id"] in {"small", "large"}


def test_plan_and_sweep_refuse_bad_requests_saying_why(loop_start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, table, posterior = loop_start
    target = ["plan", str(posterior), "--question", "loss", "--n-active", "1e5"]
    cases = [
        (["plan", str(posterior), "--question", "optimal-n"], "needs a budget"),
        (target, "lacks"),
        (["plan", str(posterior), "--question", "speed"], "not one of"),
        (
            [*target, "--tokens", "1e6", "--candidates", str(tmp_path / "none.csv")],
            "no such file",
        ),
        (["sweep", "--out", str(table)], "one of them"),
    ]
    for arguments, message in cases:
        result = runner.invoke(app, arguments)
        assert result.exit_code == 1, (arguments, result.output)
        assert message in result.output, (arguments, result.output)
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"runs": [')
    result = runner.invoke(app, ["sweep", "--plan", str(not_json), "--out", str(table)])
    assert result.exit_code == 1 and "not a plan (JSON) file" in result.output
    no_configs = tmp_path / "plan.json"
    no_configs.write_text(json.dumps({"runs": [{"n_active": 1e5, "tokens": 1e6}]}))
    result = runner.invoke(app, ["sweep", "--plan", str(no_configs), "--out", str(table)])
    assert result.exit_code == 1 and "run 1: no trainer 'config'" in result.output
