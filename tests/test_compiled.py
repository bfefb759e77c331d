"""Compile once, sample many times: the cache key sees structure, not data; refits are exact."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_scaling.compiled import MODELS, CompiledModels, structure_key
from bayes_scaling.fit import build_model
from bayes_scaling.runs import validate_runs
from bayes_scaling.spec import ModelSpec
from tests.simulate import simulate_runs


def _model(runs, spec=None):  # type: ignore[no-untyped-def]
    return build_model(validate_runs(runs), spec or ModelSpec())[0]


def test_key_ignores_data_values_and_run_count_but_not_structure() -> None:
    runs = simulate_runs(seed=1, runs_per_arch=30)
    key = structure_key(_model(runs))
    assert structure_key(_model(runs.iloc[::2])) == key  # other runs, fewer of them
    assert structure_key(_model(runs.assign(loss=runs["loss"] * 1.01))) == key
    # a prior's value is a constant of the graph: another value is another model
    moved = ModelSpec(priors={"log_e": {"mu": 0.7, "sigma": 0.2}})
    assert structure_key(_model(runs, moved)) != key
    assert structure_key(_model(runs, ModelSpec(pooling="separate"))) != key
    assert structure_key(_model(runs, ModelSpec(law="chinchilla"))) != key
    # the arch labels are part of the structure (one arch fewer, or renamed)
    assert structure_key(_model(runs[runs["arch"] == "dense"])) != key
    assert structure_key(_model(runs.replace({"arch": {"moe": "moe-b"}}))) != key


def test_cache_compiles_each_structure_once_and_evicts_the_oldest() -> None:
    runs = simulate_runs(seed=2, runs_per_arch=20)
    cache = CompiledModels(size=1)
    first = cache.get(_model(runs))
    again = cache.get(_model(runs.iloc[:30]))
    assert (cache.misses, cache.hits) == (1, 1)
    # the reused model carries the new data, not the first model's
    assert again.shared_data is not first.shared_data
    sizes = {np.asarray(v).shape for v in again.shared_data.values()}
    assert sizes == {(30,)}
    cache.get(_model(runs, ModelSpec(law="chinchilla")))
    assert len(cache) == 1 and cache.misses == 2
    cache.get(_model(runs))  # evicted: compiled again
    assert cache.misses == 3


def test_a_refit_on_the_cached_model_equals_a_fresh_compile(small_fit) -> None:  # type: ignore[no-untyped-def]
    runs = simulate_runs(seed=3, runs_per_arch=25)
    subset = runs.iloc[5:]
    MODELS.clear()
    small_fit(runs, random_seed=4)  # compiles the structure
    warm = small_fit(subset, random_seed=4)  # reuses it with the subset's data
    assert (MODELS.misses, MODELS.hits) == (1, 1)
    MODELS.clear()
    cold = small_fit(subset, random_seed=4)
    assert MODELS.misses == 1
    for name in ("alpha", "beta", "log_e", "sigma"):
        np.testing.assert_array_equal(
            warm.idata["posterior"][name].values, cold.idata["posterior"][name].values
        )
    assert list(warm.idata["observed_data"]["log_loss"].sizes.values()) == [len(subset)]
    observed = warm.idata["observed_data"]["log_loss"].values
    np.testing.assert_allclose(observed, np.log(subset["loss"].to_numpy()))


@pytest.mark.parametrize("sampler", ["pymc"])
def test_pymc_sampler_bypasses_the_cache(small_fit, sampler) -> None:  # type: ignore[no-untyped-def]
    runs = simulate_runs(seed=5, runs_per_arch=15)
    MODELS.clear()
    small_fit(runs, spec=ModelSpec(law="chinchilla"), sampler=sampler, draws=20, tune=20)
    assert (MODELS.misses, MODELS.hits) == (0, 0)


def test_refit_skips_data_the_compiled_functions_never_read() -> None:
    # One eval set: its index is rewritten away from the compiled graph; a refit must not
    # hand nutpie a variable it does not know.
    runs = simulate_runs(seed=6, runs_per_arch=20).assign(tokens=1e11)  # floor coordinates
    spec = ModelSpec(shared=["log_b_ref", "beta"])
    cache = CompiledModels()
    cache.get(_model(runs, spec))
    again = cache.get(_model(runs.iloc[:25], spec))
    assert cache.hits == 1
    assert {np.asarray(v).shape for v in again.shared_data.values()} <= {(25,), ()}


# A fit in a fresh interpreter; its draws' bits are printed so two processes can be compared.
_FIT_IN_A_PROCESS = """
import numpy as np
from bayes_scaling.fit import fit
from tests.simulate import simulate_runs
posterior = fit(simulate_runs(seed=3, runs_per_arch=15), random_seed=5, progressbar=False,
                chains=2, draws=60, tune=80, extend=0)
draws = posterior.idata["posterior"]
print(float(sum(float(draws[name].sum()) for name in draws.data_vars)).hex())
"""


def test_same_seed_same_posterior_whether_the_compile_cache_is_cold_or_warm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The first fit on a machine (PyTensor's cache empty) and a later one (cache warm) give
    bitwise the same draws: with numba's fastmath on they did not (compiled.py's notes)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={tmp_path / 'cache'}"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    outputs = [
        subprocess.run(
            [sys.executable, "-c", _FIT_IN_A_PROCESS],
            env=env, cwd=root, capture_output=True, text=True, check=True,
        ).stdout.split()[-1]
        for _ in range(2)
    ]  # fmt: skip
    assert any((tmp_path / "cache").iterdir())  # the second process found a warm cache
    assert outputs[0] == outputs[1]
