"""Each loader: documented row counts and unit conversions, checked against the raw files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_scaling.datasets import (
    DATASETS,
    DataFileMissingError,
    UnknownDatasetError,
    load_dataset,
)
from bayes_scaling.runs import validate_runs


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_loader_returns_its_documented_count_of_valid_runs(name: str) -> None:
    runs = load_dataset(name)
    assert len(runs) == DATASETS[name].expected_runs
    assert runs["run_id"].is_unique
    pd.testing.assert_frame_equal(validate_runs(runs), runs)  # already canonical


def test_chinchilla_tokens_are_flops_over_six_n(shared_data: Path) -> None:
    raw = pd.read_csv(shared_data / "epoch_chinchilla" / "svg_extracted_data.csv")
    runs = load_dataset("chinchilla")
    assert np.allclose(runs["tokens"], raw["Training FLOP"] / (6 * raw["Model Size"]))
    assert np.allclose(runs["flops"], raw["Training FLOP"]) and not runs["flops_derived"].any()
    assert runs["loss"].between(1.9, 5.1).all()


@pytest.mark.parametrize(("name", "file"), [("steplaw-dense", "dense"), ("steplaw-moe", "moe")])
def test_steplaw_batch_is_sequences_times_2048_tokens(
    shared_data: Path, name: str, file: str
) -> None:
    raw = pd.read_csv(shared_data / "steplaw" / f"{file}_lr_bs_loss.csv")
    runs = load_dataset(name)
    assert np.array_equal(runs["batch_tokens"].to_numpy(), raw["bs"].to_numpy() * 2048.0)
    assert np.array_equal(runs["lr"].to_numpy(), raw["lr"].to_numpy())
    assert np.array_equal(runs["loss"].to_numpy(), raw["smooth loss"].to_numpy())
    assert np.array_equal(runs["tokens"].to_numpy(), raw["D"].to_numpy(float))


def test_steplaw_dense_has_17_cells_and_derived_flops() -> None:
    runs = load_dataset("steplaw-dense")
    assert runs.groupby(["n_active", "tokens"]).ngroups == 17
    assert runs["flops_derived"].all()
    assert np.allclose(runs["flops"], 6 * runs["n_active"] * runs["tokens"])


def test_steplaw_moe_separates_active_and_total(shared_data: Path) -> None:
    raw = pd.read_csv(shared_data / "steplaw" / "moe_lr_bs_loss.csv")
    runs = load_dataset("steplaw-moe")
    assert np.array_equal(runs["n_active"].to_numpy(), raw["Na"].to_numpy(float))
    assert np.array_equal(runs["n_total"].to_numpy(), raw["N"].to_numpy(float))
    assert (runs["n_total"] / runs["n_active"]).min() > 1.7
    shapes = runs.drop_duplicates("moe_name").set_index("moe_name")
    assert shapes.loc["1in89", ["experts", "top_k", "shared_experts"]].tolist() == [89, 1, 1]
    assert shapes.loc["2in88", ["experts", "top_k", "shared_experts"]].tolist() == [88, 2, 2]


def test_deepmind_routing_archs_units_and_active_counts() -> None:
    runs = load_dataset("deepmind-routing")
    assert runs["arch"].value_counts().to_dict() == {
        "moe-sbase": 87,
        "moe-hash": 69,
        "moe-rlr": 54,
        "dense": 13,
    }
    final_steps = runs["step"].to_numpy()
    assert np.array_equal(runs["tokens"].to_numpy(), final_steps * 256 * 2048.0)
    dense = runs[runs["arch"] == "dense"]
    assert (dense["experts"] == 1).all() and (dense["top_k"] == 1).all()
    assert (dense["n_active"] == dense["n_total"]).all()
    # A routed model with k = 2 uses as many parameters per token as the paper's 2x-wide
    # ("k-matched") dense baseline of the same base size.
    moe_k2 = runs[(runs["arch"] != "dense") & (runs["top_k"] == 2) & (runs["d_model"] == 1536)]
    wide_dense = dense[(dense["flop_increase"] == 2) & (dense["d_model"] == 1536)]
    assert np.allclose(moe_k2["n_active"], wide_dense["n_active"].iloc[0], rtol=1e-4)
    assert runs["experts"].max() == 512


def test_deepmind_curves_and_eval_sets() -> None:
    curves = load_dataset("deepmind-routing", curves=True)
    assert curves["hyper_id"].nunique() == 223 and (curves["step"] > 0).all()
    assert len(curves) > 20 * 223
    c4 = load_dataset("deepmind-routing", eval_set="c4")
    assert (c4["eval_set"] == "deepmind-c4").all()
    with pytest.raises(ValueError, match="unknown eval_set"):
        load_dataset("deepmind-routing", eval_set="imagenet")


def test_critical_batch_and_pythia_units() -> None:
    cbs = load_dataset("critical-batch")
    assert np.allclose(cbs["batch_tokens"], 512 * cbs["batch_tokens"] / 512)
    assert np.allclose(cbs["tokens"], cbs["step"] * cbs["batch_tokens"])
    pythia = load_dataset("pythia")
    standard = pythia[pythia["variant"] == "standard"]
    assert (standard["batch_tokens"] == 2_097_152).all()
    assert {"arc_easy_acc", "lambada_openai_acc"} <= set(pythia.columns)


def test_porian_keeps_configuration_and_given_flops() -> None:
    runs = load_dataset("porian")
    assert runs["config"].nunique() == 15 and not runs["flops_derived"].any()
    assert set(runs["eval_set"]) <= {"rw-train", "rw-val", "owt2-train", "owt2-val"}


def test_missing_unbundled_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataFileMissingError, match=r"github\.com/step-law/steplaw"):
        load_dataset("steplaw-dense", path=tmp_path / "nowhere.csv")


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(UnknownDatasetError, match="chinchilla"):
        load_dataset("gpt5")


def test_bundled_dataset_takes_no_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bundled"):
        load_dataset("porian", path=tmp_path)


def test_trainer_cpu_is_exactly_its_sweep_file() -> None:
    """The bundled trainer-cpu runs are the runs of models/sweeps/cpu.toml, one each."""
    pytest.importorskip("torch")
    from bayes_scaling.train.loop import run_id_of
    from bayes_scaling.train.sweep import expand_sweep

    sweep = Path(__file__).resolve().parents[1] / "models" / "sweeps" / "cpu.toml"
    _, configs = expand_sweep(sweep)
    runs = load_dataset("trainer-cpu")
    assert sorted(runs["run_id"]) == sorted(run_id_of(c) for c in configs)
    assert set(runs["arch"]) == {"dense", "topk", "expert_choice", "mot"}
    assert runs["n_active"].nunique() >= 8
