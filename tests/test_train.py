"""The torch trainer: MoE dispatch, accounting, training, exact resume, divergence, sweeps."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from bayes_scaling.runs import read_runs  # noqa: E402
from bayes_scaling.train import (  # noqa: E402
    ModelConfig,
    SweepError,
    TrainConfig,
    Transformer,
    expand_sweep,
    parameter_counts,
    run_sweep,
    train,
)
from bayes_scaling.train.data import Corpus  # noqa: E402
from bayes_scaling.train.model import grouped_matmul_available  # noqa: E402
from bayes_scaling.train.sweep import append_row, read_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "stdlib_sample.txt"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("corpus") / "sample")


def tiny(corpus_dir: str, **changes: object) -> TrainConfig:
    values = {"d_model": 32, "n_layers": 1, "n_heads": 2, "seq_len": 32, "tokens": 16_384,
              "batch_size": 8, "lr": 3e-3, "eval_tokens": 8192, "data_dir": corpus_dir,
              "data_source": str(SAMPLE)}  # fmt: skip
    return TrainConfig.from_flat({**values, **changes})


@pytest.mark.skipif(not grouped_matmul_available(), reason="this torch has no grouped matmul")
def test_grouped_and_loop_dispatch_agree_in_output_and_gradient() -> None:
    results = []
    for dispatch in ("grouped", "loop"):
        torch.manual_seed(0)
        config = ModelConfig(d_model=32, n_heads=2, seq_len=16, experts=4, top_k=2,
                             granularity=2, shared_experts=1, dispatch=dispatch)  # fmt: skip
        model = Transformer(config)
        x = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(1))
        output = model(x, x)
        loss, aux = output.loss, output.aux
        (loss + aux).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((loss.detach(), aux.detach(), grads))
    (loss_a, aux_a, grads_a), (loss_b, aux_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-6) and torch.allclose(aux_a, aux_b, atol=1e-7)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_a, grads_b, strict=True))


def test_parameter_counts_match_the_model_and_granularity_keeps_active_fixed() -> None:
    for config in (
        ModelConfig(d_model=48, n_layers=3, n_heads=4),
        ModelConfig(d_model=48, n_layers=3, n_heads=4, experts=8, top_k=2, shared_experts=1),
        ModelConfig(d_model=48, n_layers=3, n_heads=4, experts=8, top_k=2, granularity=4),
    ):
        counts = parameter_counts(config)
        actual = sum(p.numel() for p in Transformer(config).parameters())
        assert actual == counts["embedding"] + counts["n_total"], config
    coarse = parameter_counts(ModelConfig(d_model=48, experts=8, top_k=2))
    fine = parameter_counts(ModelConfig(d_model=48, experts=8, top_k=2, granularity=4))
    assert fine["experts_active"] == coarse["experts_active"]
    assert fine["experts_total"] == coarse["experts_total"]
    assert fine["router"] == 4 * coarse["router"]
    dense = ModelConfig(d_model=64, n_layers=2, seq_len=128)
    matmul = 2 * (4 * 64 * 64 + 3 * 64 * dense.d_ff)
    attention = 12 * 2 * 128 * 64  # 12 L T d, as nanoGPT and nanochat count it
    assert parameter_counts(dense)["flops_per_token"] == 6 * matmul + attention
    assert parameter_counts(dense)["model_flops_per_token"] == 6 * (matmul + 256 * 64) + attention


def test_a_short_run_learns_and_writes_a_valid_row(corpus_dir: str, tmp_path: Path) -> None:
    row = train(tiny(corpus_dir, experts=4, top_k=1, eval_every=16), tmp_path / "run")
    assert row["status"] == "finished" and row["arch"] == "topk"  # the router names the arch
    assert row["loss"] < math.log(256) - 1.5  # well below a uniform byte prediction
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert len(metrics) == row["step"] == 64
    assert {"lr", "loss", "aux_loss", "tokens_per_s", "imbalance", "balance", "z_loss",
            "imbalance_per_layer", "val_loss", "val_se"} <= set(metrics[-1])  # fmt: skip
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[0]["lr"] < metrics[5]["lr"]  # warmup
    table = tmp_path / "runs.jsonl"
    append_row(table, row)
    runs = read_runs(table)
    assert runs.loc[0, "n_total"] > runs.loc[0, "n_active"] and runs.loc[0, "experts"] == 4


def test_resume_after_a_crash_is_exact(
    corpus_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny(corpus_dir, checkpoint_every=20, experts=4)
    straight = train(config, tmp_path / "straight")
    original = Corpus.batch

    def crash_at_30(self, split, batch_size, seq_len, seed, step, rank=0):  # type: ignore[no-untyped-def]
        if split == "train" and step == 30:
            raise RuntimeError("simulated crash")
        return original(self, split, batch_size, seq_len, seed, step, rank)

    monkeypatch.setattr(Corpus, "batch", crash_at_30)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    monkeypatch.setattr(Corpus, "batch", original)
    resumed = train(config, tmp_path / "resumed")
    assert resumed["loss"] == straight["loss"]
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").open()]
    reference = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").open()]
    assert [x["step"] for x in lines] == list(range(1, 65))
    assert [x["loss"] for x in lines] == [x["loss"] for x in reference]


def test_an_exploding_run_is_recorded_as_diverged(corpus_dir: str, tmp_path: Path) -> None:
    row = train(tiny(corpus_dir, lr=50.0, warmup_fraction=0.0, grad_clip=1e9), tmp_path / "x")
    assert row["status"] == "diverged" and row["step"] < 64
    assert math.isfinite(row["loss"])


def test_sweep_resumes_and_shards_cover_the_grid(corpus_dir: str, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        "name = 't'\n[base]\nseq_len = 16\nn_heads = 2\nn_layers = 1\nbatch_size = 4\n"
        f"tokens = 2048\neval_tokens = 4096\ndata_source = '{SAMPLE}'\ndata_dir = '{corpus_dir}'\n"
        "[[grid]]\nd_model = [16, 32]\nexperts = [1, 4]\n"
    )
    _, configs = expand_sweep(sweep)
    assert len(configs) == 4
    out = tmp_path / "runs.jsonl"
    first = run_sweep(sweep, out, shard="0/2", log=lambda _: None)
    second = run_sweep(sweep, out, shard="1/2", log=lambda _: None)
    assert len(first) == len(second) == 2
    assert {r["run_id"] for r in first}.isdisjoint({r["run_id"] for r in second})
    again = run_sweep(sweep, out, log=lambda _: None)
    assert again == [] and len(read_rows(out)) == 4
    assert len(read_runs(out)) == 4  # a valid run table
    assert not list(tmp_path.rglob(".*"))  # no lock, claim or temporary file left behind
    with pytest.raises(SweepError, match="shard"):
        run_sweep(sweep, out, shard="2/2")
    bad = tmp_path / "bad.toml"
    bad.write_text("[base]\nwidth = 3\n")
    with pytest.raises(SweepError, match=r"unknown key.*'width'"):
        expand_sweep(bad)


def test_a_failed_append_leaves_the_table_intact(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    append_row(out, {"run_id": "a", "loss": 1.0})
    before = out.read_text()
    with pytest.raises(TypeError):
        append_row(out, {"run_id": "b", "loss": object()})
    assert out.read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or lock file


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")  # fmt: skip
def test_torchrun_data_parallel_writes_one_row(corpus_dir: str, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        "d_model = 32\nn_layers = 1\nn_heads = 2\nseq_len = 32\ntokens = 8192\nbatch_size = 8\n"
        f"eval_tokens = 4096\ndata_source = '{SAMPLE}'\ndata_dir = '{corpus_dir}'\n"
    )
    out = tmp_path / "runs.jsonl"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(bindir / "torchrun"), "--standalone", "--nproc_per_node=2",
         str(bindir / "bayes-scaling"), "train", str(config), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(out)
    assert len(rows) == 1 and rows[0]["world_size"] == 2 and rows[0]["status"] == "finished"
    assert rows[0]["batch_tokens"] == 8 * 32  # 4 sequences per rank x 2 ranks
