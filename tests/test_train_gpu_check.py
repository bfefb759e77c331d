"""The GPU check is ready to spend device time: the trainer and the check import with only
torch, numpy and pandas (the GPU machine has no PyMC stack), and ``--tiny`` rehearses every
run of the check on the CPU, compiled, writing the files the GPU run returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("pymc", "arviz", "pytensor", "scipy", "nutpie", "xarray")

# Runs the check in a fresh interpreter where the PyMC stack cannot be imported.
REHEARSAL = """
import runpy, sys
BLOCKED = {blocked!r}
for name in BLOCKED:  # None in sys.modules: import fails, find_spec says "not installed"
    sys.modules[name] = None
import bayes_scaling.train, bayes_scaling.train.loop, bayes_scaling.train.sweep
sys.argv = ["gpu_check.py", *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
assert all(sys.modules[name] is None for name in BLOCKED)
"""


def test_gpu_check_rehearses_every_run_compiled_without_the_pymc_stack(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = REHEARSAL.format(blocked=set(BLOCKED), script=str(ROOT / "benchmarks" / "gpu_check.py"))
    env = {**os.environ, "OUT": str(out), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, "--tiny", "--backend", "aot_eager",
         "--scratch", str(tmp_path / "scratch")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "gpu_summary.json").read_text())
    assert [line["variant"] for line in summary] == [
        "dense", "topk", "expert_choice", "mot", "topk-g2"
    ]  # fmt: skip
    assert all(line["status"] == "finished" for line in summary), summary
    assert all(line["graph_breaks"] == 0 for line in summary)
    assert all(line["tokens_per_s"] > 0 and line["speed_vs_dense"] > 0 for line in summary)
    moe = [line for line in summary if line["variant"] != "dense"]
    dense = summary[0]
    # Equal active parameters (up to the router), 8x the expert parameters in total.
    assert all(abs(line["n_active"] / dense["n_active"] - 1) < 0.05 for line in moe)
    assert all(line["n_total"] > 4 * dense["n_total"] for line in moe)
    rows = [json.loads(line) for line in (out / "gpu_runs.jsonl").open()]
    assert len(rows) == 5 and {row["arch"] for row in rows} == {"dense", "topk", "expert_choice",
                                                                "mot"}  # fmt: skip
    # What comes back from the device: a few flat files, no folders.
    files = sorted(p.name for p in out.iterdir())
    assert files == ["environment.json", "gpu_metrics.jsonl", "gpu_runs.jsonl",
                     "gpu_summary.csv", "gpu_summary.json"]  # fmt: skip
    assert "done in" in result.stdout
