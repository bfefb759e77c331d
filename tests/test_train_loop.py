"""The training loop's numbers: a fixed evaluation, the schedules' ends, gradient accumulation,
kept weights, and one divergence decision across data-parallel ranks."""

from __future__ import annotations

import math
import os
from itertools import pairwise
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from bayes_scaling.train import ModelConfig, TrainConfig, Transformer, train  # noqa: E402
from bayes_scaling.train.data import Corpus, prepare_corpus  # noqa: E402
from bayes_scaling.train.evaluate import eval_windows, evaluate, paired_se  # noqa: E402
from bayes_scaling.train.runtime import reduce_window  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "stdlib_sample.txt"
CPU = torch.device("cpu")
NO_AUTOCAST = torch.autocast("cpu", enabled=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(prepare_corpus(tmp_path_factory.mktemp("corpus") / "sample", SAMPLE))


@pytest.mark.parametrize(
    "changes", [{}, {"experts": 4}, {"experts": 4, "router": "expert_choice"},
                {"experts": 4, "router": "mot"}]
)  # fmt: skip
def test_one_model_scores_the_same_at_any_eval_batch(
    corpus: Corpus, changes: dict[str, object]
) -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_heads=2, seq_len=32, **changes))
    windows = eval_windows(corpus, 32)
    assert len(windows) % 64 == 0 and len(windows) * 32 > 0.9 * len(corpus.splits["val"])
    scores = {b: evaluate(model, windows, b, CPU, NO_AUTOCAST) for b in (4, 8, 16, 64, 1000)}
    losses = [loss for loss, _, _ in scores.values()]
    assert max(losses) - min(losses) < 1e-6, scores  # the old eval moved by 0.1-0.17 nats
    loss, se, blocks = scores[64]
    assert 0 < se < 0.05  # batch-means standard error over 32 blocks
    assert len(blocks) == 32 and sum(blocks) / 32 == pytest.approx(loss)
    assert len(eval_windows(corpus, 32, eval_tokens=4096)) == 128  # 4096 / 32, whole groups


def test_a_paired_difference_is_far_less_noisy_than_either_loss(tmp_path: Path) -> None:
    rows = [
        train(run_config(tmp_path, experts=1, eval_tokens=0, seed=seed), tmp_path / str(seed))
        for seed in (0, 1)
    ]
    blocks = [[float(b) for b in row["eval_blocks"].split()] for row in rows]
    assert all(len(b) == 32 and sum(b) / 32 == pytest.approx(r["loss"], abs=1e-5)
               for b, r in zip(blocks, rows, strict=True))  # fmt: skip
    paired = paired_se(rows[0]["eval_blocks"], rows[1]["eval_blocks"])
    assert paired == pytest.approx(paired_se(*blocks), rel=1e-3)
    assert 0 < paired < 0.5 * min(row["eval_se"] for row in rows)


def test_cosine_and_wsd_end_at_their_floor_without_jumps() -> None:
    model = ModelConfig(d_model=16, n_heads=2, seq_len=16)
    cosine = TrainConfig(model=model, tokens=100 * 64, batch_size=4, lr=1.0)
    wsd = TrainConfig(model=model, tokens=100 * 64, batch_size=4, lr=1.0, schedule="wsd")
    assert cosine.steps == wsd.steps == 100
    assert cosine.lr_at(99) == pytest.approx(0.1) and wsd.lr_at(99) == 0.0
    assert wsd.lr_at(79) == 1.0 and wsd.lr_at(80) < 1.0  # decay over the last 20 steps
    steep = TrainConfig(model=model, tokens=100 * 64, batch_size=4, lr=1.0, schedule="wsd",
                        decay_fraction=0.99, warmup_fraction=0.1)  # fmt: skip
    rates = [steep.lr_at(step) for step in range(100)]
    assert rates[9] == 1.0 and rates[-1] == 0.0  # warm-up to the peak, then decay to 0
    assert all(b <= a for a, b in pairwise(rates[9:]))  # no jump after warm-up
    assert TrainConfig(model=model, schedule="wsd", min_lr_ratio=0.1).floor_ratio == 0.1


def run_config(tmp_path: Path, **changes: object) -> TrainConfig:
    values = {"d_model": 32, "n_layers": 1, "n_heads": 2, "seq_len": 32, "tokens": 8 * 32 * 16,
              "batch_size": 8, "eval_tokens": 4096, "experts": 4, "data_source": str(SAMPLE),
              "data_dir": str(tmp_path / "corpus")}  # fmt: skip
    return TrainConfig.from_flat({**values, **changes})


def test_gradient_accumulation_trains_the_same_run(tmp_path: Path) -> None:
    whole = train(run_config(tmp_path, experts=1), tmp_path / "whole")
    split = train(run_config(tmp_path, experts=1, micro_batch=2, keep_weights=True),
                  tmp_path / "split")  # fmt: skip
    assert whole["run_id"] == split["run_id"]  # an execution setting, not another run
    assert split["loss"] == pytest.approx(whole["loss"], abs=1e-4)
    weights = torch.load(tmp_path / "split" / "model.pt", weights_only=True)
    assert "blocks.0.ffn.w1.weight" in weights and not (tmp_path / "whole" / "model.pt").exists()
    with pytest.raises(ValueError, match="micro-batches"):
        train(run_config(tmp_path, micro_batch=3), tmp_path / "bad")
    with pytest.raises(ValueError, match="group of 4"):  # Mixture of Tokens mixes 4 rows
        train(run_config(tmp_path, router="mot", micro_batch=2), tmp_path / "bad")


def _rank_decides(rank: int, port: str, losses: list[list[float]], result: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    rows, bad = reduce_window(torch.tensor(losses[rank]).view(-1, 1), 2, 8.0, 0, 100)
    result[rank] = (rows, bad)
    dist.destroy_process_group()


def test_two_ranks_take_one_divergence_decision_on_the_mean_loss() -> None:
    """Rank 1 spikes at its third step (and is NaN at its fourth); rank 0 is fine. Both ranks
    must stop at the same step, and log the mean over ranks."""
    losses = [[3.0, 3.0, 3.0, 3.0], [3.0, 4.0, 20.0, math.nan]]
    manager = mp.Manager()
    result = manager.dict()
    port = str(29500 + os.getpid() % 1000)
    mp.spawn(_rank_decides, args=(port, losses, result), nprocs=2, join=True)
    (rows0, bad0), (rows1, bad1) = result[0], result[1]
    assert bad0 == bad1 == 2  # the spike, seen by both ranks: (3 + 20) / 2 = 11.5 > 8
    assert rows0[:2] == rows1[:2] == [[3.0], [3.5]]
    _, bad = reduce_window(torch.tensor([[3.0], [9.0]]), 1, 8.0, 102, 100)
    assert bad is None  # above the limit, but before the checked steps


def test_deterministic_kernels_are_switched_on_for_the_run_only(tmp_path: Path) -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    plain = train(run_config(tmp_path, experts=1), tmp_path / "plain")
    exact = train(run_config(tmp_path, experts=1, deterministic=True), tmp_path / "exact")
    assert exact["run_id"] == plain["run_id"] and exact["loss"] == plain["loss"]  # CPU: same
    assert not torch.are_deterministic_algorithms_enabled()  # not left on for the next run
