"""The trainer is safe by default: checkpoints cannot run code, concurrent sweeps train each run
once, a cut-off run table is named and repairable, a corpus folder is used only for its own
source, and files respect the umask."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from bayes_scaling.train import (  # noqa: E402
    CheckpointError,
    CorpusError,
    SweepError,
    TrainConfig,
    repair_rows,
    run_id_of,
    run_sweep,
    train,
)
from bayes_scaling.train.data import Corpus, prepare_corpus  # noqa: E402
from bayes_scaling.train.loop import _default_data_dir  # noqa: E402
from bayes_scaling.train.sweep import append_row, read_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "stdlib_sample.txt"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("corpus") / "sample"
    prepare_corpus(folder, SAMPLE)  # built once, before any sweep process reads it
    return str(folder)


def tiny(corpus_dir: str, **changes: object) -> TrainConfig:
    values = {"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16, "tokens": 2048,
              "batch_size": 4, "eval_tokens": 4096, "data_dir": corpus_dir,
              "data_source": str(SAMPLE)}  # fmt: skip
    return TrainConfig.from_flat({**values, **changes})


def write_sweep(folder: Path, corpus_dir: str, grid: str = "d_model = [16, 32]\n") -> Path:
    sweep = folder / "sweep.toml"
    sweep.write_text(
        "name = 't'\n[base]\nseq_len = 16\nn_heads = 2\nn_layers = 1\nbatch_size = 4\n"
        f"tokens = 2048\neval_tokens = 4096\ndata_source = '{SAMPLE}'\ndata_dir = '{corpus_dir}'\n"
        f"[[grid]]\n{grid}"
    )
    return sweep


def recording_runner(calls: list[str]) -> Callable[[TrainConfig, Path], dict[str, Any]]:
    """A runner that trains nothing: it records the run and returns a minimal row."""

    def run(config: TrainConfig, folder: Path) -> dict[str, Any]:
        calls.append(run_id_of(config))
        return {"run_id": run_id_of(config), "status": "finished", "loss": 1.0, "wall_s": 0.0}

    return run


def hidden_files(folder: Path) -> list[Path]:
    """Lock, claim and temporary files (all start with a dot) anywhere under ``folder``."""
    return [p for p in folder.rglob(".*")]


# -- checkpoints ----------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _write_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"model": _Payload(marker)}, protocol=2))


def _write_torch(path: Path, marker: Path) -> None:
    torch.save({"model": _Payload(marker), "step": 3}, path)


def _write_garbage(path: Path, marker: Path) -> None:
    path.write_bytes(b"PK\x03\x04 not really a zip")


def _write_wrong_layout(path: Path, marker: Path) -> None:
    torch.save({"model": {}, "step": "3"}, path)


@pytest.mark.parametrize(
    "write", [_write_pickle, _write_torch, _write_garbage, _write_wrong_layout]
)
def test_a_crafted_checkpoint_is_refused_without_running_code(
    corpus_dir: str, tmp_path: Path, write: Callable[[Path, Path], None]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "marker"
    checkpoint = run / "checkpoint.pt"
    write(checkpoint, marker)
    config = tiny(corpus_dir, checkpoint_every=8)
    with pytest.raises(CheckpointError) as caught:
        train(config, run)
    assert not marker.exists()  # the payload never ran
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert str(checkpoint) in message and "not a loadable checkpoint" in message
    assert "delete it to restart" in message
    checkpoint.unlink()  # what the message says to do
    assert train(config, run)["status"] == "finished"


def test_resume_is_exact_and_drops_a_cut_off_metrics_line(
    corpus_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny(corpus_dir, checkpoint_every=10)
    straight = train(config, tmp_path / "straight")
    original = Corpus.batch

    def crash_at_25(self, split, batch_size, seq_len, seed, step, rank=0):  # type: ignore[no-untyped-def]
        if split == "train" and step == 25:
            raise RuntimeError("simulated crash")
        return original(self, split, batch_size, seq_len, seed, step, rank)

    monkeypatch.setattr(Corpus, "batch", crash_at_25)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, tmp_path / "resumed")
    checkpoint = tmp_path / "resumed" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)  # tensors and plain values only
    assert state["step"] == 20 and set(state["rng"]) <= {"torch", "cuda"}
    with (tmp_path / "resumed" / "metrics.jsonl").open("a") as stream:
        stream.write('{"step": 26, "tok')  # a line cut off by the crash
    monkeypatch.setattr(Corpus, "batch", original)
    resumed = train(config, tmp_path / "resumed")
    assert resumed["loss"] == straight["loss"] and resumed["step"] == straight["step"] == 32
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").open()]
    reference = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").open()]
    assert [x["loss"] for x in lines] == [x["loss"] for x in reference]
    assert not checkpoint.exists()


# -- concurrent sweeps ----------------------------------------------------------------------

SWEEP_PROCESS = """
import os, sys, time
from pathlib import Path
from bayes_scaling.train import run_sweep, train
sweep, out, calls, ready, name = sys.argv[1:]
Path(ready, name).touch()
deadline = time.monotonic() + 60
while len(os.listdir(ready)) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)  # start both sweeps together, so they meet on the same runs
def runner(config, folder):
    with open(calls, "a") as stream:
        stream.write(folder.name + "\\n")
    time.sleep(0.3)  # hold the claim while the other sweep reaches this run
    return train(config, folder)
run_sweep(sweep, out, runner=runner)
"""


def test_two_sweeps_on_one_table_train_each_run_once(corpus_dir: str, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, corpus_dir, "d_model = [16, 32]\nlr = [1e-3, 3e-3]\n")
    out, calls, ready = tmp_path / "runs.jsonl", tmp_path / "calls.txt", tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", SWEEP_PROCESS, str(sweep), str(out), str(calls), str(ready)]
    processes = [
        subprocess.Popen(
            [*command, name],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    ids = [row["run_id"] for row in read_rows(out)]
    trained = calls.read_text().split()
    assert len(ids) == 4 and sorted(ids) == sorted(set(ids))
    assert sorted(trained) == sorted(ids)  # every run trained exactly once, by one sweep
    assert all(row["status"] == "finished" for row in read_rows(out))
    assert hidden_files(tmp_path) == []  # no lock, claim or temporary file left behind


def test_a_run_claimed_by_a_live_sweep_is_skipped_and_a_dead_claim_is_not(
    corpus_dir: str, tmp_path: Path
) -> None:
    import fcntl

    from bayes_scaling.train.sweep import expand_sweep

    sweep = write_sweep(tmp_path, corpus_dir, "d_model = [16, 32, 48]\n")
    out, workdir = tmp_path / "runs.jsonl", tmp_path / "work"
    first, second, third = (run_id_of(c) for c in expand_sweep(sweep)[1])
    for run_id in (first, second):
        (workdir / run_id).mkdir(parents=True)
        (workdir / run_id / ".claim").touch()  # both left by killed sweeps
    calls: list[str] = []
    lines: list[str] = []
    with (workdir / first / ".claim").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live sweep is training `first`
        rows = run_sweep(sweep, out, workdir=workdir, runner=recording_runner(calls),
                         log=lines.append)  # fmt: skip
    assert calls == [second, third] and [r["run_id"] for r in rows] == [second, third]
    assert any(first in line and "claimed by another sweep" in line for line in lines)
    assert not (workdir / second / ".claim").exists()  # the dead claim was taken and removed
    calls.clear()
    run_sweep(sweep, out, workdir=workdir, runner=recording_runner(calls), log=lines.append)
    assert calls == [first]  # the claim is gone with its holder
    assert hidden_files(tmp_path) == []


# -- run tables -----------------------------------------------------------------------------


def test_a_cut_off_last_row_is_named_and_repaired(corpus_dir: str, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, corpus_dir)
    out = tmp_path / "runs.jsonl"
    good = [{"run_id": "a", "status": "finished"}, {"run_id": "b", "status": "diverged"}]
    out.write_text("".join(json.dumps(row) + "\n" for row in good) + '{"run_id": "c", "lo')
    with pytest.raises(SweepError, match=rf"{re.escape(str(out))}, line 3: .*incomplete.*repair"):
        read_rows(out)
    calls: list[str] = []
    with pytest.raises(SweepError, match="line 3"):
        run_sweep(sweep, out, runner=recording_runner(calls), log=lambda _: None)
    assert calls == []
    lines: list[str] = []
    rows = run_sweep(sweep, out, runner=recording_runner(calls), log=lines.append, repair=True)
    assert len(rows) == 2 and "moved 1 incomplete line(s)" in lines[0]
    assert read_rows(out)[:2] == good and len(read_rows(out)) == 4
    assert (tmp_path / "runs.jsonl.corrupt").read_text() == '{"run_id": "c", "lo\n'
    assert repair_rows(out) == 0  # nothing left to repair


def test_a_corrupt_row_before_good_ones_is_refused_not_dropped(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    text = '{"run_id": "a"}\n{"run_id": "b", "lo\n{"run_id": "c"}\n'
    out.write_text(text)
    with pytest.raises(SweepError, match=rf"{re.escape(str(out))}, line 2: .*by hand"):
        read_rows(out)
    with pytest.raises(SweepError, match=rf"{re.escape(str(out))}, line 2: .*not repaired"):
        repair_rows(out)
    assert out.read_text() == text and not (tmp_path / "runs.jsonl.corrupt").exists()


def test_every_row_has_a_status_and_diverged_runs_are_kept(corpus_dir: str, tmp_path: Path) -> None:
    grid = "lr = [3e-3, 50.0]\nwarmup_fraction = 0.0\ngrad_clip = 1e9\n"
    sweep = write_sweep(tmp_path, corpus_dir, grid)
    out = tmp_path / "runs.jsonl"
    run_sweep(sweep, out, log=lambda _: None)
    assert sorted(row["status"] for row in read_rows(out)) == ["diverged", "finished"]

    def no_status(config: TrainConfig, folder: Path) -> dict[str, Any]:
        return {"run_id": run_id_of(config), "loss": 1.0, "wall_s": 0.0}

    with pytest.raises(SweepError, match="status"):
        run_sweep(sweep, tmp_path / "other.jsonl", runner=no_status, log=lambda _: None)


# -- corpus ---------------------------------------------------------------------------------


def test_a_corpus_folder_is_reused_only_for_its_own_source(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    prepare_corpus(folder, SAMPLE)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source"] == str(SAMPLE.resolve()) and meta["val_fraction"] == 0.05
    assert meta["fingerprint"]["bytes"] == SAMPLE.stat().st_size
    built = (folder / "train.bin").stat().st_ino
    prepare_corpus(folder, SAMPLE)
    assert (folder / "train.bin").stat().st_ino == built  # reused, not rebuilt
    other = tmp_path / "other.txt"
    other.write_text("def other():\n    return 1\n" * 500)
    with pytest.raises(CorpusError) as caught:
        prepare_corpus(folder, other)
    message = str(caught.value)
    assert str(folder) in message and str(SAMPLE.resolve()) in message and str(other) in message
    assert "Delete the folder" in message and "--data-dir" in message
    with pytest.raises(CorpusError, match=r"val_fraction 0\.2"):
        prepare_corpus(folder, SAMPLE, val_fraction=0.2)
    with pytest.raises(CorpusError, match=re.escape(str(folder))):  # through the trainer too
        train(tiny(str(folder), data_source=str(other)), tmp_path / "run")
    prepare_corpus(folder, other, rebuild_stale=True)  # the package's own cache is rebuilt
    assert json.loads((folder / "meta.json").read_text())["source"] == str(other.resolve())
    assert (folder / "train.bin").stat().st_size == int(0.95 * other.stat().st_size)
    # Folders from before sources were recorded are refused too: they may hold anything.
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({"source": str(other), "vocab": 256}))
    with pytest.raises(CorpusError, match="no fingerprint recorded"):
        prepare_corpus(folder, other)
    assert _default_data_dir(str(SAMPLE)) != _default_data_dir(str(other)) != _default_data_dir()


def test_written_files_respect_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        append_row(tmp_path / "runs.jsonl", {"run_id": "a", "status": "finished"})
        prepare_corpus(tmp_path / "corpus", SAMPLE)
    finally:
        os.umask(previous)
    written = [tmp_path / "runs.jsonl", *(tmp_path / "corpus").iterdir()]
    assert len(written) == 4
    assert {path.name: path.stat().st_mode & 0o777 for path in written} == {
        path.name: 0o644 for path in written
    }
