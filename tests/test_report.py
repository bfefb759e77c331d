"""``bayes-scaling report``: the page and summary.json agree, sections a table cannot support are
left out saying why, the CLI refuses bad input, and the page loads in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bayes_scaling.cli import app
from bayes_scaling.report import build_report, cell_best, default_targets, grid_runs
from tests.simulate import simulate_runs

SMALL = {"draws": 150, "tune": 150, "chains": 2}
RUNS = simulate_runs(seed=3, runs_per_arch=20)  # MoE truly better (tests/simulate.py)


@pytest.fixture(scope="module")
def report(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("report")
    return build_report(RUNS, out=out, source="simulated", **SMALL)


def _summary_text(page: str) -> str:
    section = page.split('<section id="summary">')[1].split("</section>")[0]
    return re.sub(r"<[^>]+>", " ", section)


def test_summary_json_holds_every_number_the_summary_states(report) -> None:  # type: ignore[no-untyped-def]
    page = report.html.read_text(encoding="utf-8")
    summary = json.loads(report.summary_json.read_text(encoding="utf-8"))
    text = _summary_text(page)
    assert [t["flops"] for t in summary["targets"]] == default_targets(RUNS)
    for target in summary["targets"]:
        best = target["recommended"]
        low, high = best["loss_interval"]
        assert low < best["loss_median"] < high
        assert best["new_run_interval"][0] <= low and high <= best["new_run_interval"][1]
        for value in (best["loss_median"], low, high, *best["new_run_interval"]):
            assert f"{value:.4f}" in text
        for value in (best["n_active"], best["tokens"], target["flops"]):
            assert f"{value:.3g}" in text
        # 6 N D of the chosen run spends the budget
        assert 6 * best["n_active"] * best["tokens"] == pytest.approx(target["flops"], rel=0.02)
        moe = target["moe_vs_dense"]["moe"]
        assert f"{moe['p_moe_better']:.2f}" in text
        assert moe["p_moe_better"] > 0.9 and moe["leverage_median"] > 1.0  # as simulated
        lev_low, lev_high = moe["leverage_interval"]
        assert lev_low < moe["leverage_median"] < lev_high
        assert f"{moe['leverage_median']:.3g}" in text
    assert summary["runs"] == len(RUNS) and summary["left_out"] == []


def test_reach_and_loo_pit_facts_are_consistent(report) -> None:  # type: ignore[no-untyped-def]
    summary = report.summary
    reach = summary["reach"]
    first = summary["targets"][0]
    # Default target: the recommended run's median loss at the smallest budget (3 s.f.), so a
    # compute-optimal new run reaches it with probability ~1/2 near that budget.
    assert reach["target_loss"] == float(f"{first['recommended']['loss_median']:.3g}")
    budgets = np.asarray(reach["flops"])
    assert budgets[-1] == pytest.approx(3 * summary["targets"][-1]["flops"])
    for arch, result in reach["per_arch"].items():
        p = np.asarray(result["p_reach"], float)
        assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
        assert (np.diff(p) >= -0.02).all(), arch  # more compute never makes it less likely
        assert p[0] < 0.5 < p[-1]
        assert result["flops_p50"] <= result["flops_p90"]
        i = int(np.searchsorted(budgets, result["flops_p50"]))
        assert p[i - 1] < 0.5 <= p[i]
    best = first["recommended"]["arch"]
    assert 1 / 3 < reach["per_arch"][best]["flops_p50"] / first["flops"] < 3
    assert 0 <= summary["loo_pit_tails"] <= 0.3  # simulated from the law: near 0.1
    assert summary["loo_pit_ks"] <= 2 * summary["loo_pit_band"]
    page = report.html.read_text(encoding="utf-8")
    assert f"{summary['loo_pit_ks']:.3f}" in page and f"{reach['target_loss']:.4g}" in page


def test_page_has_every_section_with_captioned_figures(report) -> None:  # type: ignore[no-untyped-def]
    page = report.html.read_text(encoding="utf-8")
    for key in ("summary", "data", "fits", "laws", "extrapolation", "decisions", "hypotheses",
                "hyperparameters"):  # fmt: skip
        assert f'<section id="{key}">' in page
    figures = re.findall(r'<figure id="figure-([a-z_]+)"><img alt="[^"]+" src="data:image/png;'
                         r'base64,[A-Za-z0-9+/=]{1000,}"><figcaption>[^<]{40,}', page)  # fmt: skip
    assert figures == ["residuals", "loo_pit", "exponents", "loss", "frontier", "reach", "moe"]
    assert "http://" not in page and "https://" not in page  # self-contained
    summary = report.summary
    assert set(summary["sections_left_out"]) == {"hypotheses", "hyperparameters"}
    assert "Left out: No lr x batch grid" in page


def test_one_arch_and_grid_tables_leave_out_or_add_their_sections(tmp_path: Path) -> None:
    dense = RUNS[RUNS["arch"] == "dense"].reset_index(drop=True)
    result = build_report(dense, out=tmp_path, **SMALL)
    page = result.html.read_text(encoding="utf-8")
    assert "No MoE comparison: the table needs a dense arch and a routed one." in page
    assert "moe_vs_dense" not in result.summary["targets"][0]
    assert result.summary["models"] == ["chinchilla"]  # the dense default
    # A grid: two runs per cell; the loss law sees each cell's best run only.
    grid = dense.assign(lr=1e-3, batch_tokens=2**20)
    worse = grid.assign(loss=grid["loss"] * 1.05, lr=3e-3, run_id=grid["run_id"] + "-hi")
    both = pd.concat([grid, worse], ignore_index=True)
    best, found = cell_best(both)
    assert found and len(best) == len(dense)
    assert np.allclose(np.sort(best["loss"]), np.sort(dense["loss"]))
    assert not cell_best(dense)[1]
    mixed = pd.concat([both, dense.assign(lr=1e-3, batch_tokens=2**20, n_active=7.0e9)])
    assert len(grid_runs(mixed)) == len(both)  # single-run scaling cells are not the grid
    # Repeats of one setting (seeds) or a missing lr are not a grid: every run is kept.
    repeats = pd.concat([grid, grid.assign(run_id=grid["run_id"] + "-seed2")], ignore_index=True)
    assert not cell_best(repeats)[1] and len(cell_best(repeats)[0]) == 2 * len(dense)
    assert not cell_best(both.assign(lr=np.nan))[1]


def test_cli_report_writes_both_files_and_refuses_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    csv = tmp_path / "runs.csv"
    RUNS[RUNS["arch"] == "dense"].to_csv(csv, index=False)
    out = tmp_path / "page"
    args = ["report", "--runs", str(csv), "--target-flops", "1e22", "--out", str(out),
            "--draws", "100", "--tune", "100", "--chains", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'index.html'}" in result.output and "[fit 1/1]" in result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [t["flops"] for t in summary["targets"]] == [1e22]
    bad = {
        "a budget must be a positive": ["report", "--runs", str(csv), "--target-flops", "-1"],
        "neither a file nor a shipped": ["report", "--runs", str(csv), "--model", "nope"],
        "no-such.csv": ["report", "--runs", str(tmp_path / "no-such.csv")],
        "exactly one of --runs": ["report", "--runs", str(csv), "--dataset", "chinchilla"],
        "a loss must be a positive": ["report", "--runs", str(csv), "--target-loss", "0"],
    }
    for fragment, command in bad.items():
        result = runner.invoke(app, command)
        assert result.exit_code == 1, (fragment, result.output)
        assert fragment in result.output and "Traceback" not in result.output


def _browser() -> str | None:
    return next((p for p in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(p)), None)  # fmt: skip


def test_report_loads_in_a_real_browser(report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    browser, driver_path = _browser(), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        message = "no chromium and chromedriver (Debian: apt install chromium chromium-driver)"
        if os.environ.get("BAYES_SCALING_REQUIRE_BROWSER") == "1":
            pytest.fail(message + ": CI requires the browser test")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(browser) or browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,4000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(report.html.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);"
        )
        assert len(images) == 7 and all(done and width > 300 for done, width in images)
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        assert driver.title == "Scaling report: simulated"
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
    finally:
        driver.quit()
