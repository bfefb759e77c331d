"""The notebooks' one switch between a quick look and the real fit.

``BAYES_SCALING_SMALL=1`` (what the fast test tier sets) runs short chains with no automatic
extension: the analysis still runs end to end and the convergence check is printed, not
asserted. Otherwise every fit uses its hypothesis file's own sampler settings, and the notebook
asserts that it converged.
"""

from __future__ import annotations

import os
from typing import Any

from bayes_scaling.posterior import ConvergenceReport, Posterior

__all__ = ["SMALL_ENV", "assert_converged", "is_small", "require_datasets", "sampling"]

SMALL_ENV = "BAYES_SCALING_SMALL"


def is_small() -> bool:
    """Whether the notebook runs in its quick mode."""
    return os.environ.get(SMALL_ENV, "0") == "1"


def sampling(random_seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for :func:`bayes_scaling.fit.fit` in the current mode."""
    quick = {"draws": 300, "tune": 300, "chains": 2, "extend": 0} if is_small() else {}
    return {**quick, "random_seed": random_seed, "progressbar": False}


def assert_converged(posterior: Posterior) -> ConvergenceReport:
    """Print the convergence check; assert it on full runs (short chains rarely pass)."""
    report = posterior.convergence()
    print(report)
    assert is_small() or report.ok, str(report)
    return report


def require_datasets(*names: str) -> None:
    """Check up front that every data set a notebook reads can be loaded, so a fresh clone
    stops at the first cell with every missing download named, not mid-way after a fit.

    Raises
    ------
    bayes_scaling.datasets.DataFileMissingError
        Listing each missing data set with where to download it and where to put it.
    """
    from bayes_scaling.datasets import DataFileMissingError, load_dataset

    missing = []
    for name in names:
        try:
            load_dataset(name)
        except DataFileMissingError as error:
            missing.append(f"- {name}: {error}")
    if missing:
        raise DataFileMissingError(
            "this notebook needs data that is not bundled:\n" + "\n".join(missing)
        )
