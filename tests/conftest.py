"""Shared fixtures: the public data sets beside the project (``../shared/data``)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of public data sets; CI lays it beside the clone, so its absence is an error."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared/data beside the project")
    return SHARED_DATA


@pytest.fixture(scope="session")
def chinchilla_posterior():  # type: ignore[no-untyped-def]
    """The dense law fitted on Epoch AI's Chinchilla transcription (full chains, ~25 s)."""
    from bayes_scaling.datasets import load_dataset
    from bayes_scaling.fit import fit
    from bayes_scaling.spec import read_spec

    models = Path(__file__).resolve().parents[1] / "models" / "loss"
    return fit(
        load_dataset("chinchilla"),
        read_spec(models / "chinchilla.toml"),
        random_seed=0,
        progressbar=False,
    )


SMALL_SAMPLING = {"draws": 150, "tune": 150, "chains": 2}


@pytest.fixture(scope="session")
def small_fit():  # type: ignore[no-untyped-def]
    """The one way tests fit a model cheaply: short chains, no automatic extension (a short fit
    is expected to fail the convergence check; extending it would only cost time), no progress
    bar. Keywords override the sampling settings."""
    from bayes_scaling.fit import fit

    def make(runs, spec=None, random_seed=0, **settings):  # type: ignore[no-untyped-def]
        options = {**SMALL_SAMPLING, "extend": 0, **settings}
        return fit(runs, spec, random_seed=random_seed, progressbar=False, **options)

    return make
