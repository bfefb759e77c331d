"""The latent-optimum hyperparameter model: recovery, diverged runs, refusals, recommendations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bayes_scaling.fit import Posterior, fit
from bayes_scaling.hyper_model import assign_cells, create_hyper_model, flag_diverged
from bayes_scaling.predict import PredictionError, recommend_hyperparameters
from bayes_scaling.runs import RunTableError
from bayes_scaling.spec import HyperSpec, SpecError, read_spec
from tests.simulate import HYPER_TRUTH, simulate_grid

MODELS = Path(__file__).resolve().parents[1] / "models" / "hyper"
SAMPLING = {"draws": 400, "tune": 400, "chains": 2, "random_seed": 5, "progressbar": False}


@pytest.fixture(scope="module")
def grid_posterior() -> Posterior:
    return fit(simulate_grid(seed=1, diverged=4), HyperSpec(form="steplaw"), **SAMPLING)


def test_recovers_the_exponents_of_the_optimum(grid_posterior: Posterior) -> None:
    draws = grid_posterior.idata["posterior"]
    for name in ("lr_0", "lr_log_n", "lr_log_d", "batch_0", "batch_log_d"):
        values = draws[name].sel(arch="dense").to_numpy().ravel()
        low, high = np.quantile(values, [0.03, 0.97])
        assert low <= HYPER_TRUTH[name] <= high, (name, low, high)
        assert high - low < 0.5, (name, low, high)  # informative, not the prior


def test_diverged_runs_are_listed_and_left_out(grid_posterior: Posterior) -> None:
    runs = grid_posterior.runs
    assert set(grid_posterior.diverged_runs["run_id"]) == set(
        runs.loc[runs["truly_diverged"], "run_id"]
    )
    n_fitted = grid_posterior.idata["posterior"].sizes.get("run") or len(
        grid_posterior.idata["observed_data"]["log_loss"]
    )
    assert n_fitted == len(runs) - 4


def test_recommendation_intervals_cover_the_true_optimum(grid_posterior: Posterior) -> None:
    n, d = 6e8, 3e10
    table = recommend_hyperparameters(
        grid_posterior, {"n_active": [n], "tokens": [d]}, probs=(0.9,)
    ).iloc[0]
    x_n, x_d = math.log(n / 1e9), math.log(d / 1e10)
    t = HYPER_TRUTH
    lr = math.exp(t["lr_0"] + t["lr_log_n"] * x_n + t["lr_log_d"] * x_d)
    batch = math.exp(t["batch_0"] + t["batch_log_d"] * x_d)
    assert table["lr_low_90"] <= lr <= table["lr_high_90"]
    assert table["batch_low_90"] <= batch <= table["batch_high_90"]
    # The penalty of the median recommendation is small but positive, and its q90 exceeds it.
    assert 0 < table["penalty_mean"] < table["penalty_q90"] < 0.01


def test_save_and_load_keep_the_diverged_flags(grid_posterior: Posterior, tmp_path: Path) -> None:
    loaded = Posterior.load(grid_posterior.save(tmp_path / "hyper.nc"))
    assert isinstance(loaded.spec, HyperSpec)
    assert list(loaded.diverged_runs["run_id"]) == list(grid_posterior.diverged_runs["run_id"])
    again = recommend_hyperparameters(loaded, {"n_active": [5e8], "tokens": [1e10]})
    first = recommend_hyperparameters(grid_posterior, {"n_active": [5e8], "tokens": [1e10]})
    assert np.allclose(again["lr_median"], first["lr_median"])


def test_flag_diverged_is_relative_to_the_cell_best() -> None:
    runs = simulate_grid(seed=2)
    cell = runs["tokens"] == runs["tokens"].iloc[0]
    best = runs.loc[cell, "loss"].min()
    runs.loc[runs.index[cell][0], "loss"] = best * 1.19
    runs.loc[runs.index[cell][1], "loss"] = best * 1.21
    flags = flag_diverged(runs, 0.2)
    assert not flags.iloc[runs.index[cell][0]] and flags.iloc[runs.index[cell][1]]
    assert flags.sum() == 1


def test_a_cell_with_one_run_is_refused_by_name() -> None:
    runs = simulate_grid(seed=3)
    lonely = runs.iloc[[0]].assign(run_id="alone", tokens=1.234e10)
    table = __import__("pandas").concat([runs, lonely], ignore_index=True)
    with pytest.raises(RunTableError) as error:
        fit(table, HyperSpec(), **SAMPLING)
    message = str(error.value)
    assert "single run" in message and "tokens=1.234e+10" in message
    assert f"row {len(table)}" in message


def test_missing_or_non_positive_lr_is_refused_naming_rows() -> None:
    runs = simulate_grid(seed=3)
    runs.loc[4, "lr"] = float("nan")
    with pytest.raises(RunTableError, match=r"row 5, column 'lr'"):
        assign_cells(runs)
    runs.loc[4, "lr"] = -1e-3
    with pytest.raises(RunTableError, match=r"row 5, column 'lr'"):
        fit(runs, HyperSpec(), **SAMPLING)


def test_spec_refuses_unknown_forms_and_terms() -> None:
    with pytest.raises(SpecError, match="steplaw"):
        HyperSpec(form="chinchilla")
    with pytest.raises(SpecError, match="log_sparsity"):
        HyperSpec(lr_terms=("log_width",))
    assert HyperSpec(form="compute").lr_terms == ("log_c",)


def test_hypothesis_files_read_as_hyper_specs() -> None:
    forms = {path.stem: read_spec(path) for path in MODELS.glob("*.toml")}
    assert {"steplaw", "compute", "wang2024"} <= set(forms)
    assert all(isinstance(spec, HyperSpec) for spec in forms.values())
    assert forms["wang2024"].lr_terms == ("log_l",)
    assert forms["steplaw"].batch_terms == ("log_n", "log_d")


def test_model_has_dims_and_one_arch_is_pooled() -> None:
    runs = simulate_grid(seed=4)
    model = create_hyper_model(runs, HyperSpec(pooling="hierarchical"))
    names = {v.name for v in model.free_RVs}
    assert "lr_log_n_mu" in names and "lr_log_n_spread" not in names
    assert model.named_vars_to_dims["log_lr_opt"] == ("cell",)
    assert len(model.coords["cell"]) == 6


def test_recommendation_refuses_a_loss_posterior_and_unknown_arch(
    grid_posterior: Posterior,
) -> None:
    with pytest.raises(PredictionError, match="unknown arch"):
        recommend_hyperparameters(
            grid_posterior, {"n_active": [1e9], "tokens": [1e10], "arch": ["moe"]}
        )
    with pytest.raises(PredictionError, match="positive"):
        recommend_hyperparameters(grid_posterior, {"n_active": [0.0], "tokens": [1e10]})


def test_plots_show_bands_cells_and_the_bowl(grid_posterior: Posterior) -> None:
    from bayes_scaling.plots import plot_bowl, plot_optimum_vs_scale

    figure = plot_optimum_vs_scale(grid_posterior, extend=10.0)
    lr_axis, batch_axis = figure.axes[:2]
    flops = lr_axis.lines[0].get_xdata()
    largest = 6 * 8e8 * 60 * 8e8  # largest simulated cell
    assert flops.max() > 50 * largest  # 10x in N, tokens scale with N
    assert len(lr_axis.collections) == 2 and len(batch_axis.collections) == 2  # band + cells
    figure = plot_bowl(grid_posterior, cell=0)
    star = next(c for c in figure.axes[0].collections if c.get_label() == "optimum")
    expected = np.exp(
        grid_posterior.idata["posterior"]["log_lr_opt"].median(("chain", "draw")).to_numpy()[0]
    )
    assert np.isclose(star.get_offsets()[0][0], expected)
    with pytest.raises(ValueError, match="out of range"):
        plot_bowl(grid_posterior, cell=99)
