"""The ``bayes-scaling`` command: data sets and validation, through typer's runner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bayes_scaling.cli import app
from bayes_scaling.runs import read_runs

runner = CliRunner()


def test_validate_bad_file_names_all_three_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "run_id,arch,n_active,loss\n"
        "a,dense,1e6,3.0\nb,dense,2e6,2.9\nc,dense,3e6,\nd,dense,4e6,2.7\ne,dense,-5e6,2.6\n"
    )
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "column 'tokens': missing required column" in result.output
    assert "row 3, column 'loss'" in result.output
    assert "row 5, column 'n_active'" in result.output


def test_validate_good_file_prints_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("run_id,arch,n_active,tokens,loss\na,dense,1e6,1e8,3.0\nb,moe,1e6,1e8,2.8\n")
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0
    assert result.output.strip() == f"{good}: valid, 2 runs (dense 1, moe 1)"


def test_datasets_show_prints_runs_per_arch_and_ranges() -> None:
    result = runner.invoke(app, ["datasets", "show", "deepmind-routing"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line}
    assert lines["dense"][1] == "13" and lines["moe-sbase"][1] == "87"
    assert "n_active min" in result.output and "loss max" in result.output


def test_datasets_list_names_every_dataset() -> None:
    result = runner.invoke(app, ["datasets", "list"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert names == [
        "chinchilla",
        "deepmind-routing",
        "steplaw-dense",
        "steplaw-moe",
        "porian",
        "critical-batch",
        "pythia",
        "trainer-cpu",
    ]


def test_datasets_export_writes_a_valid_table(tmp_path: Path) -> None:
    out = tmp_path / "cbs.jsonl"
    result = runner.invoke(app, ["datasets", "export", "critical-batch", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_runs(out)) == 45


def test_unknown_dataset_exits_1_with_the_valid_names() -> None:
    result = runner.invoke(app, ["datasets", "show", "nope"])
    assert result.exit_code == 1 and "porian" in result.output


def test_fit_strict_exits_2_when_unconverged_then_predict_json(tmp_path: Path) -> None:
    import json

    runs_file = tmp_path / "cbs.csv"
    assert (
        runner.invoke(
            app, ["datasets", "export", "critical-batch", "--out", str(runs_file)]
        ).exit_code
        == 0
    )
    out = tmp_path / "post.nc"
    args = [
        "fit",
        "--runs",
        str(runs_file),
        "--model",
        "chinchilla",
        "--out",
        str(out),
        "--extend",
        "0",
        "--draws",
        "100",
        "--tune",
        "100",
        "--chains",
        "2",
        "--seed",
        "1",
    ]
    result = runner.invoke(app, [*args, "--strict"])
    assert result.exit_code == 2 and "NOT converged" in result.output
    assert out.exists()  # the posterior is kept even when the check fails
    result = runner.invoke(
        app,
        [
            "predict",
            str(out),
            "--n-active",
            "1e9",
            "--tokens",
            "2e10",
            "--json",
            "--prob",
            "0.8",
            "--plot",
            str(tmp_path / "p.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.splitlines()[0])
    low, high = answer["loss_interval"]
    assert low < answer["loss_median"] < high and answer["prob"] == 0.8
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_fit_hyper_lists_off_bowl_runs_then_predict_gives_lr_and_batch(tmp_path: Path) -> None:
    import json

    from bayes_scaling.runs import write_runs
    from tests.simulate import simulate_grid

    runs = simulate_grid(seed=6)
    # Two runs blown up at their cell's highest learning rate (3x the loss): off the bowl.
    highest = runs.groupby(["n_active", "tokens"])["lr"].transform("max") == runs["lr"]
    blown_up = runs.index[highest][[0, 7]]
    runs.loc[blown_up, "loss"] *= 3.0
    runs_file = write_runs(runs, tmp_path / "grid.csv")
    out = tmp_path / "hyper.nc"
    result = runner.invoke(
        app,
        ["fit", "--runs", str(runs_file), "--model", "models/hyper/steplaw.toml", "--out", str(out),
         "--draws", "200", "--tune", "200", "--chains", "2", "--extend", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 grid run(s) off the bowl" in result.output
    for run_id in runs.loc[blown_up, "run_id"]:
        assert run_id in result.output
    result = runner.invoke(
        app, ["predict", str(out), "--n-active", "5e8", "--tokens", "2e10", "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["lr_interval"][0] < answer["lr"] < answer["lr_interval"][1]
    assert answer["batch_interval"][0] < answer["batch_tokens"] < answer["batch_interval"][1]
    assert 1e-5 < answer["lr"] < 1e-1 and 1e4 < answer["batch_tokens"] < 1e8
    assert answer["lr_interval"][0] < answer["lr_median"] < answer["lr_interval"][1]
    assert 0 < answer["expected_loss_penalty"] <= answer["expected_loss_penalty_at_median"]
    result = runner.invoke(app, ["predict", str(out), "--n-active", "5e8", "--tokens", "2e10"])
    assert result.exit_code == 0, result.output
    assert f"lr {answer['lr']:.3g}" in result.output and "expected loss penalty" in result.output
