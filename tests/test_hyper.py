"""The latent-optimum hyperparameter model: one bowl, runs off the bowl, refusals, and
recommendations chosen by the lowest expected penalty."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr
from matplotlib.contour import ContourSet

from bayes_scaling.datasets import load_dataset
from bayes_scaling.fit import Posterior
from bayes_scaling.hyper_model import (
    CELL_COLUMNS,
    assign_cells,
    bowl,
    create_hyper_model,
    flag_off_bowl,
)
from bayes_scaling.hyper_predict import (
    BowlDraws,
    choose_hyperparameters,
    fitted_bowls,
    recommend,
    recommend_hyperparameters,
)
from bayes_scaling.points import PredictionError
from bayes_scaling.priors import Gamma, Normal, PriorError, hyper_priors, scale_parameter
from bayes_scaling.runs import RunTableError
from bayes_scaling.spec import HyperSpec, SpecError, read_spec
from tests.simulate import HYPER_TRUTH, simulate_grid

MODELS = Path(__file__).resolve().parents[1] / "models" / "hyper"
SAMPLING = {"draws": 400, "tune": 400, "random_seed": 5}
# Varies with ln lr / ln batch only through the bowl; the bowl's own inputs are set per test.
SURFACE_INPUTS = ("log_lr_opt", "log_batch_opt", "log_h_lr_cell", "log_h_batch_cell")


def blow_up(runs: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """``count`` runs at one of the two highest learning rates of their cell with 3x the loss,
    as past the stability limit, marked ``blown_up``."""
    rng = np.random.default_rng(seed)
    rank = runs.groupby(list(CELL_COLUMNS))["lr"].rank(method="dense", ascending=False)
    picked = rng.choice(np.flatnonzero(rank <= 2), count, replace=False)
    runs = runs.assign(blown_up=False)
    runs.loc[picked, "loss"] *= 3.0
    runs.loc[picked, "blown_up"] = True
    return runs


def with_skew(posterior: Posterior, skew_lr: float, skew_batch: float) -> Posterior:
    """The posterior with every draw of the bowl's skews replaced (an asymmetric bowl)."""
    idata = posterior.idata.copy(deep=True)
    for name, value in (("skew_lr", skew_lr), ("skew_batch", skew_batch)):
        idata[f"posterior/{name}"] = xr.full_like(idata["posterior"][name], value)
    return Posterior(posterior.spec, posterior.runs, idata, posterior.sampler)


def model_surface(
    posterior: Posterior, values: dict[str, np.ndarray], log_lr: np.ndarray, log_batch: np.ndarray
) -> np.ndarray:
    """The bowl the model's likelihood mean uses (mean minus the cell's minimum) in cell 0 at
    (ln lr, ln batch), compiled from the PyMC model at the given parameter values."""
    model = create_hyper_model(posterior.fitted_runs, posterior.spec)  # type: ignore[arg-type]
    size = len(log_lr)
    with model:
        pm.set_data(
            {
                "log_lr": log_lr,
                "log_batch": log_batch,
                "cell_idx": np.zeros(size, dtype=int),
                "observed_log_loss": np.zeros(size),
            },
            coords={"run": [str(i) for i in range(size)]},
        )
    node = model["log_loss"].owner
    _, mean, _ = node.op.dist_params(node)
    [surface] = model.replace_rvs_by_values([mean - model["cell_log_loss"][model["cell_idx"]]])
    function = model.compile_fn(surface, inputs=model.value_vars, on_unused_input="ignore")
    return np.asarray(function({**model.initial_point(), **values}))


@pytest.fixture(scope="module")
def grid_posterior(small_fit) -> Posterior:  # type: ignore[no-untyped-def]
    runs = blow_up(simulate_grid(seed=1), count=4, seed=1)
    return small_fit(runs, HyperSpec(form="steplaw"), **SAMPLING)


def test_recovers_the_exponents_of_the_optimum(grid_posterior: Posterior) -> None:
    draws = grid_posterior.idata["posterior"]
    for name in ("lr_0", "lr_log_n", "lr_log_d", "batch_0", "batch_log_d"):
        values = draws[name].sel(arch="dense").to_numpy().ravel()
        low, high = np.quantile(values, [0.03, 0.97])
        assert low <= HYPER_TRUTH[name] <= high, (name, low, high)
        # Informative, not the prior (94% width 3.8-7.5 there). The simulated cells sit on the
        # law exactly (tau = 0), which the Gamma(2, .) deviation priors call unlikely: lr_0 is
        # ~0.5 wide.
        assert high - low < 0.6, (name, low, high)


def test_blown_up_runs_are_listed_off_the_bowl_and_left_out(grid_posterior: Posterior) -> None:
    runs = grid_posterior.runs
    assert set(grid_posterior.off_bowl_runs["run_id"]) == set(runs.loc[runs["blown_up"], "run_id"])
    n_fitted = len(grid_posterior.idata["observed_data"]["log_loss"])
    assert n_fitted == len(runs) - 4


def test_bowl_is_one_formula_for_numpy_and_pytensor() -> None:
    du, dv = np.array([-0.8, -0.2, 0.0, 0.3, 1.1]), np.array([0.5, -0.4, 0.0, 0.9, -1.0])
    args = (0.02, 0.015, -0.3, 1.2, -0.7)
    values = bowl(du, dv, *args)
    symbolic = bowl(pt.as_tensor(du), pt.as_tensor(dv), *args).eval()
    assert np.allclose(values, symbolic)
    # Away from the optimum each side has its own curvature: h exp(+-skew / 2).
    assert np.isclose(bowl(1.0, 0.0, *args), 0.5 * 0.02 * math.exp(0.6), rtol=1e-6)
    assert np.isclose(bowl(-1.0, 0.0, *args), 0.5 * 0.02 * math.exp(-0.6), rtol=1e-6)
    assert values[2] == 0.0


def test_penalty_is_zero_at_the_optimum_and_the_fitted_surface_elsewhere(
    grid_posterior: Posterior,
) -> None:
    skewed = with_skew(grid_posterior, skew_lr=1.5, skew_batch=-1.0)
    bowls = fitted_bowls(skewed)
    draw = 7
    values = {name: skewed.draws(name)[draw] for name in (*SURFACE_INPUTS, "cell_log_loss")}
    values |= {
        "h_corr_mu": np.arctanh(skewed.draws("rho")[draw, 0]),
        "skew_lr_mu": np.array(1.5),
        "skew_batch_mu": np.array(-1.0),
    }
    u0, v0 = values["log_lr_opt"][0], values["log_batch_opt"][0]
    offsets = np.array([-1.5, -0.6, -0.1, 0.0, 0.1, 0.6, 1.5])
    log_lr, log_batch = (u0 + offsets).repeat(7), np.tile(v0 + offsets, 7)
    expected = np.expm1(model_surface(skewed, values, log_lr, log_batch))
    one = BowlDraws(**{k: v[draw, 0] for k, v in vars(bowls).items()})
    assert np.allclose(one.penalty(log_lr, log_batch), expected, rtol=1e-6, atol=1e-12)
    assert one.penalty(u0, v0) == 0.0
    # The skew matters: the same step costs more above the optimum than below it.
    assert one.penalty(u0 + 1.0, v0) > 2.0 * one.penalty(u0 - 1.0, v0)


def test_bowl_contours_follow_the_fitted_skewed_surface(grid_posterior: Posterior) -> None:
    from bayes_scaling.plots import plot_bowl

    skewed = with_skew(grid_posterior, skew_lr=1.5, skew_batch=-1.0)
    figure = plot_bowl(skewed, cell=0)
    contours = next(c for c in figure.axes[0].collections if isinstance(c, ContourSet))
    draws = skewed.idata["posterior"]

    def median(name: str) -> np.ndarray:
        return draws[name].median(("chain", "draw")).to_numpy()

    values = {name: median(name) for name in SURFACE_INPUTS}
    values |= {"h_corr_mu": np.arctanh(median("rho")[0])}
    values |= {"skew_lr_mu": np.array(1.5), "skew_batch_mu": np.array(-1.0)}
    checked = 0
    for level, segments in zip(contours.levels, contours.allsegs, strict=True):
        points = np.concatenate(segments)[::5]
        surface = model_surface(skewed, values, np.log(points[:, 0]), np.log(points[:, 1]))
        assert np.allclose(np.expm1(surface), level, rtol=0.03), level
        checked += len(points)
    assert checked > 50


def test_choice_minimises_the_expected_penalty_not_the_median() -> None:
    rng = np.random.default_rng(0)
    size = 4000

    def column(value: object) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=float), (size,)).reshape(size, 1)

    draws = BowlDraws(
        log_lr_opt=column(rng.normal(0.0, 0.4, size)),
        log_batch_opt=column(rng.normal(0.0, 0.4, size)),
        log_min_loss=column(0.9),
        h_lr=column(0.2),
        h_batch=column(0.2),
        rho=column(0.0),
        skew_lr=column(2.0),  # steeper above the optimum: aim low
        skew_batch=column(0.0),
    )
    log_lr, log_batch = choose_hyperparameters(draws)
    grid = np.linspace(-1.2, 1.2, 121)
    expected = draws.select(0).penalty(grid[:, None], grid[None, :]).mean(axis=0)
    best = np.unravel_index(np.argmin(expected), expected.shape)
    chosen = draws.penalty(log_lr, log_batch).mean()
    assert chosen <= expected.min() * (1 + 1e-3)
    assert abs(log_lr[0] - grid[best[0]]) < 0.03 and abs(log_batch[0]) < 0.05
    assert log_lr[0] < -0.2  # the median (0) would cost a third more
    median = draws.penalty(np.median(draws.log_lr_opt), np.median(draws.log_batch_opt)).mean()
    assert chosen < 0.8 * median


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
    assert table["lr_low_90"] < table["lr_recommended"] < table["lr_high_90"]
    # The penalty of the recommendation is small but positive, its q90 exceeds it, and it is
    # never worse than training at the median optimum.
    assert 0 < table["penalty_mean"] < table["penalty_q90"] < 0.01
    assert table["penalty_mean"] <= table["penalty_mean_at_median"]


def test_a_skewed_bowl_moves_the_recommendation_off_the_steep_side(
    grid_posterior: Posterior,
) -> None:
    skewed = with_skew(grid_posterior, skew_lr=3.0, skew_batch=0.0)
    point = {"n_active": 6e8, "tokens": 3e10}
    result = recommend(skewed, point, prob=0.9)
    assert result.lr < 0.97 * result.lr_median  # steep above the optimum: aim lower
    assert result.expected_loss_penalty < 0.97 * result.expected_loss_penalty_at_median
    flat = recommend(with_skew(grid_posterior, 0.0, 0.0), point, prob=0.9)
    assert flat.lr_median == pytest.approx(result.lr_median)
    as_dict = result.to_dict()
    assert as_dict["lr"] == result.lr and as_dict["lr_interval"] == list(result.lr_interval)
    assert as_dict["arch"] == "dense" and as_dict["prob"] == 0.9


def test_save_and_load_keep_the_off_bowl_flags(grid_posterior: Posterior, tmp_path: Path) -> None:
    loaded = Posterior.load(grid_posterior.save(tmp_path / "hyper.nc"))
    assert isinstance(loaded.spec, HyperSpec)
    assert list(loaded.off_bowl_runs["run_id"]) == list(grid_posterior.off_bowl_runs["run_id"])
    again = recommend_hyperparameters(loaded, {"n_active": [5e8], "tokens": [1e10]})
    first = recommend_hyperparameters(grid_posterior, {"n_active": [5e8], "tokens": [1e10]})
    assert np.allclose(again["lr_recommended"], first["lr_recommended"])


def test_only_runs_that_blew_up_at_a_high_lr_are_off_the_bowl() -> None:
    lr = np.array([1e-4, 3e-4, 1e-3, 3e-3, 1e-2] * 2)
    batch = np.repeat([1e5, 1e6], 5)
    # Row 1e5: best at 1e-3; slow at low lr (+50%, +25%), blown up at 1e-2 (+50%), fine at
    # 3e-3 (+10%). Row 1e6: every run slow (few steps), best at 1e-2; 3e-3 is +30% above the
    # cell's best at an lr above the cell's best lr, but below its own row's best: slow, kept.
    loss = np.array([3.0, 2.5, 2.0, 2.2, 3.0, 4.0, 3.5, 3.0, 2.6, 2.3])
    runs = pd.DataFrame(
        {"arch": "dense", "n_active": 1e8, "n_total": 1e8, "tokens": 2e9, "lr": lr,
         "batch_tokens": batch, "loss": loss}
    )  # fmt: skip
    assert list(flag_off_bowl(runs, 0.2)) == [False] * 4 + [True] + [False] * 5
    runs.loc[1, "loss"] = np.inf  # a run that produced no finite loss
    assert flag_off_bowl(runs, 0.2)[1]
    # A run alone at its batch size is compared with the cell's best lr.
    alone = pd.concat([runs, runs.iloc[[4]].assign(batch_tokens=3e5)], ignore_index=True)
    assert flag_off_bowl(alone, 0.2).iloc[-1]


def test_slow_low_lr_runs_of_the_trainer_grid_stay_in_the_fit() -> None:
    runs = load_dataset("trainer-cpu")
    sizes = runs.groupby(list(CELL_COLUMNS))["loss"].transform("size")
    grid = runs[sizes > 1].reset_index(drop=True)
    best = grid.groupby(list(CELL_COLUMNS))["loss"].transform("min")
    slow = grid["loss"] > 1.1 * best
    assert slow.sum() >= 8  # the old rule dropped such runs as diverged
    assert not flag_off_bowl(grid, 0.2).any()
    model = create_hyper_model(grid[~flag_off_bowl(grid, 0.2)], HyperSpec())
    assert len(model.coords["run"]) == len(grid)


def test_a_cell_with_one_run_is_refused_by_name(small_fit) -> None:  # type: ignore[no-untyped-def]
    runs = simulate_grid(seed=3)
    lonely = runs.iloc[[0]].assign(run_id="alone", tokens=1.234e10)
    table = pd.concat([runs, lonely], ignore_index=True)
    with pytest.raises(RunTableError) as error:
        small_fit(table, HyperSpec(), **SAMPLING)
    message = str(error.value)
    assert "single run" in message and "tokens=1.234e+10" in message
    assert f"row {len(table)}" in message


def test_missing_or_non_positive_lr_is_refused_naming_rows(small_fit) -> None:  # type: ignore[no-untyped-def]
    runs = simulate_grid(seed=3)
    runs.loc[4, "lr"] = float("nan")
    with pytest.raises(RunTableError, match=r"row 5, column 'lr'"):
        assign_cells(runs)
    runs.loc[4, "lr"] = -1e-3
    with pytest.raises(RunTableError, match=r"row 5, column 'lr'"):
        small_fit(runs, HyperSpec(), **SAMPLING)


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
    with pytest.raises(PredictionError, match=r"n_active = 0 \(point 1\); expected a finite"):
        recommend(grid_posterior, {"n_active": 0.0, "tokens": 1e10})


def test_plots_show_bands_cells_and_the_bowl(grid_posterior: Posterior) -> None:
    from bayes_scaling.plots import plot_bowl, plot_optimum_vs_scale

    figure = plot_optimum_vs_scale(grid_posterior, extend=10.0)
    lr_axis, batch_axis = figure.axes[:2]
    flops = lr_axis.lines[0].get_xdata()
    largest = 6 * 8e8 * 60 * 8e8  # largest simulated cell
    assert flops.max() > 50 * largest  # 10x in N, tokens scale with N
    assert len(lr_axis.collections) == 2 and len(batch_axis.collections) == 2  # band + cells
    off_bowl = grid_posterior.off_bowl_runs.iloc[0]
    _, cells = assign_cells(grid_posterior.fitted_runs)
    cell = int(
        np.flatnonzero((cells[list(CELL_COLUMNS)] == off_bowl[list(CELL_COLUMNS)]).all(axis=1))[0]
    )
    figure = plot_bowl(grid_posterior, cell=cell)
    star = next(c for c in figure.axes[0].collections if c.get_label() == "optimum")
    expected = np.exp(
        grid_posterior.idata["posterior"]["log_lr_opt"].median(("chain", "draw")).to_numpy()[cell]
    )
    assert np.isclose(star.get_offsets()[0][0], expected)
    crosses = next(c for c in figure.axes[0].collections if "off the bowl" in str(c.get_label()))
    assert np.isclose(crosses.get_offsets()[:, 0], off_bowl["lr"]).any()
    with pytest.raises(ValueError, match="out of range"):
        plot_bowl(grid_posterior, cell=99)


@pytest.mark.parametrize(
    ("point", "fragment"),
    [
        ({"n_active": [np.inf]}, "n_active = inf (point 1)"),
        ({"n_total": [0.0]}, "n_total = 0 (point 1)"),
        ({"n_total": [1e8]}, "n_total = 1e+08 < n_active = 1e+09"),
        ({"tokens": [np.nan]}, "tokens = nan (point 1)"),
    ],
)
def test_impossible_planned_cells_are_refused_like_loss_points(
    grid_posterior: Posterior, point: dict, fragment: str
) -> None:
    request = {"n_active": [1e9], "tokens": [1e10], **point}
    with pytest.raises(PredictionError, match=re.escape(fragment)):
        recommend_hyperparameters(grid_posterior, request)


@pytest.mark.parametrize(
    ("value", "scale"),
    [
        ("log_lr_opt", "tau_lr"),
        ("log_batch_opt", "tau_batch"),
        ("log_h_lr_cell", "tau_h"),
        ("cell_log_loss", "tau_loss"),
    ],
)
def test_non_centred_cell_values_are_the_same_model_in_other_coordinates(
    value: str, scale: str
) -> None:
    runs = simulate_grid(seed=4)
    centred = create_hyper_model(runs, HyperSpec())
    shifted = create_hyper_model(runs, HyperSpec(noncentred=[value]))
    assert f"{value}_z" in {v.name for v in shifted.free_RVs}
    assert value not in {v.name for v in shifted.free_RVs}
    logp_centred = centred.compile_logp()
    logp_shifted = shifted.compile_logp()
    [cell_value] = shifted.replace_rvs_by_values([shifted[value]])
    as_value = shifted.compile_fn(cell_value, inputs=shifted.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(0)
    for _ in range(3):
        point = {
            name: value + rng.normal(0.0, 0.3, np.shape(value))
            for name, value in shifted.initial_point().items()
        }
        values = {k: v for k, v in point.items() if k != f"{value}_z"}
        values[value] = as_value(point)
        tau = np.exp(point[f"{scale}_log__"])
        # p(z) = p(x) |dx / dz| with x = law + tau z: one ln tau per cell.
        expected = logp_centred(values) + len(centred.coords["cell"]) * np.log(tau)
        assert logp_shifted(point) == pytest.approx(expected, rel=1e-9)


def test_unknown_non_centred_values_and_scale_priors_are_refused() -> None:
    with pytest.raises(SpecError, match=r"noncentred.*log_h_lr_cell"):
        HyperSpec(noncentred=["log_h_lr"])
    with pytest.raises(PriorError, match=r"tau_h.*HalfNormal or Gamma"):
        scale_parameter("tau_h", Normal(0.0, 1.0))


def test_cell_deviation_priors_vanish_at_zero_with_the_old_means() -> None:
    # Gamma(2, .) keeps the HalfNormal priors' means but puts no density at tau = 0: a grid
    # of a few cells cannot rule tau -> 0 out, and that is the funnel's neck.
    priors = hyper_priors(("log_n",), ("log_d",))
    for key, half_normal_sigma in (
        ("tau_lr", 0.3),
        ("tau_batch", 0.3),
        ("tau_loss", 0.05),
        ("tau_h", 0.5),
    ):
        prior = priors[key]
        assert isinstance(prior, Gamma) and prior.alpha > 1
        mean = half_normal_sigma * np.sqrt(2 / np.pi)
        assert prior.alpha / prior.beta == pytest.approx(mean, rel=0.06)
