"""Fitting: Chinchilla against Epoch AI, convergence reports, seeds, the one-file posterior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_scaling.fit import Posterior, check_convergence, fit
from bayes_scaling.spec import ModelSpec
from tests.simulate import simulate_runs

MODELS = Path(__file__).resolve().parents[1] / "models" / "loss"
TINY = {"draws": 150, "tune": 150, "chains": 2, "extend": 0, "progressbar": False}


@pytest.fixture(scope="module")
def tiny_posterior(small_fit) -> Posterior:  # type: ignore[no-untyped-def]
    return small_fit(
        simulate_runs(seed=2, runs_per_arch=15), ModelSpec(pooling="hierarchical"), random_seed=11
    )


def test_chinchilla_matches_epoch_ai_within_two_standard_errors(
    chinchilla_posterior: Posterior,
) -> None:
    posterior = chinchilla_posterior
    report = posterior.convergence()
    assert report.ok, str(report)
    draws = posterior.idata["posterior"]
    # Epoch AI (arXiv:2404.10102), estimate (SE):
    # E = 1.8172 (0.0257), alpha = 0.3478 (0.0154), beta = 0.3658 (0.0206)
    for value, estimate, error in (
        (float(draws["irreducible"].mean()), 1.8172, 0.0257),
        (float(draws["alpha"].mean()), 0.3478, 0.0154),
        (float(draws["beta"].mean()), 0.3658, 0.0206),
    ):
        assert abs(value - estimate) < 2 * error, (value, estimate)


def test_same_seed_same_posterior_and_other_seed_differs(tiny_posterior: Posterior) -> None:
    again = fit(tiny_posterior.runs, tiny_posterior.spec, random_seed=11, **TINY)
    other = fit(tiny_posterior.runs, tiny_posterior.spec, random_seed=12, **TINY)
    alpha = tiny_posterior.idata["posterior"]["alpha"].to_numpy()
    assert np.array_equal(alpha, again.idata["posterior"]["alpha"].to_numpy())
    assert not np.array_equal(alpha, other.idata["posterior"]["alpha"].to_numpy())


def test_short_chains_fail_the_check_and_name_parameters(tiny_posterior: Posterior) -> None:
    report = check_convergence(tiny_posterior.idata)
    assert not report.ok  # 2 x 150 draws cannot reach a bulk ESS of 400
    assert "log_alpha_mu" in report.bad_ess and "more --tune and --draws" in str(report)


def test_save_load_round_trip_keeps_draws_spec_version_and_runs(
    tiny_posterior: Posterior, tmp_path: Path
) -> None:
    path = tiny_posterior.save(tmp_path / "post.nc")
    back = Posterior.load(path)
    assert back.spec == tiny_posterior.spec
    assert back.version == tiny_posterior.version
    assert back.runs["run_id"].tolist() == tiny_posterior.runs["run_id"].tolist()
    np.testing.assert_array_equal(back.runs["loss"], tiny_posterior.runs["loss"])
    for name in ("alpha", "log_e", "sigma"):
        np.testing.assert_array_equal(
            back.idata["posterior"][name].to_numpy(),
            tiny_posterior.idata["posterior"][name].to_numpy(),
        )
    assert [p.name for p in tmp_path.iterdir()] == ["post.nc"]  # no temporary left behind
    assert back.sampler == tiny_posterior.sampler
    assert back.sampler["draws"] == 150 and back.sampler["random_seed"] == 11
    assert list(back.runs.dtypes) == list(tiny_posterior.runs.dtypes)


def test_loading_a_foreign_netcdf_is_refused(tiny_posterior: Posterior, tmp_path: Path) -> None:
    path = tmp_path / "plain.nc"
    tiny_posterior.idata.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(ValueError, match="not a bayes_scaling posterior"):
        Posterior.load(path)


def test_unknown_sampler_is_refused(tiny_posterior: Posterior) -> None:
    with pytest.raises(ValueError, match="sampler 'gibbs' is unknown"):
        fit(tiny_posterior.runs, tiny_posterior.spec, sampler="gibbs", **TINY)


def test_a_failed_check_extends_warm_up_and_draws_and_says_so(tiny_posterior: Posterior) -> None:
    lines: list[str] = []
    settings = {**TINY, "extend": 1, "draws": 60, "tune": 60}
    posterior = fit(tiny_posterior.runs, tiny_posterior.spec, random_seed=3, log=lines.append,
                    **settings)  # fmt: skip
    first, second = posterior.sampler["attempts"]
    assert not first["converged"] and (first["tune"], first["draws"]) == (60, 60)
    assert (second["tune"], second["draws"]) == (1000, 120)  # warm-up at least doubled to 1000
    assert posterior.idata["posterior"].sizes["draw"] == 120  # the saved fit is the last one
    assert posterior.sampler["draws"] == 120 and posterior.sampler["requested"]["draws"] == 60
    assert any("sampling again" in line for line in lines)


def test_diverged_trainer_runs_are_never_observations(tiny_posterior: Posterior) -> None:
    runs = tiny_posterior.runs.assign(status="finished")
    runs.loc[[0, 3], "status"] = "diverged"
    runs.loc[[0, 3], "loss"] = np.log(256.0)  # what the trainer records for a blow-up
    lines: list[str] = []
    posterior = fit(runs, tiny_posterior.spec, random_seed=1, log=lines.append, **TINY)
    assert len(posterior.runs) == len(runs) - 2
    assert posterior.sampler["left_out_diverged"] == runs["run_id"].iloc[[0, 3]].tolist()
    assert posterior.idata["observed_data"]["log_loss"].sizes["run"] == len(runs) - 2
    assert lines == ["left out 2 diverged trainer run(s) (status = 'diverged')"]


def test_awkward_run_table_columns_round_trip_exactly(
    tiny_posterior: Posterior, tmp_path: Path
) -> None:
    runs = tiny_posterior.runs.copy()
    size = len(runs)
    runs["status"] = ["finished"] * (size - 1) + [None]  # text with a gap (pandas 3 "str")
    runs["note/with slash"] = "x"
    runs["steps32"] = np.arange(size, dtype="int32")
    runs["ratio32"] = np.linspace(0, 1, size).astype("float32")
    posterior = Posterior(tiny_posterior.spec, runs, tiny_posterior.idata, tiny_posterior.sampler)
    back = Posterior.load(posterior.save(tmp_path / "post.nc"))
    assert back.runs["status"].tolist()[:-1] == ["finished"] * (size - 1)
    assert pd.isna(back.runs["status"].iloc[-1])
    assert back.runs["note/with slash"].tolist() == ["x"] * size
    assert back.runs["steps32"].dtype == np.int32 and back.runs["ratio32"].dtype == np.float32
    np.testing.assert_array_equal(back.runs["ratio32"], runs["ratio32"])


def test_text_with_a_nul_character_is_refused_before_fitting(tiny_posterior: Posterior) -> None:
    from bayes_scaling.runs import RunTableError, validate_runs

    runs = tiny_posterior.runs.assign(note="ok")
    runs.loc[2, "note"] = "bad\x00text"
    with pytest.raises(RunTableError, match=r"row 3, column 'note': contains a NUL"):
        validate_runs(runs)
