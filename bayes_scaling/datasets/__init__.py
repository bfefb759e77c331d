"""Public data sets of language-model training runs, each loaded as a validated run table.

Example
-------
>>> from bayes_scaling.datasets import load_dataset
>>> runs = load_dataset("deepmind-routing")
>>> sorted(runs["arch"].unique())
['dense', 'moe-hash', 'moe-rlr', 'moe-sbase']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from bayes_scaling.datasets import loaders
from bayes_scaling.datasets._files import DataFileMissingError
from bayes_scaling.runs import RunTableError

__all__ = [
    "DATASETS",
    "DataFileError",
    "DataFileMissingError",
    "Dataset",
    "UnknownDatasetError",
    "load_dataset",
]


class DataFileError(ValueError):
    """A file given for a data set that is not that data set's file (or a bundled data set
    given a path)."""


class UnknownDatasetError(ValueError):
    """A data set name that is not registered."""


@dataclass(frozen=True)
class Dataset:
    """A registered data set: its loader, a one-line description and its licence."""

    name: str
    loader: Callable[..., pd.DataFrame]
    description: str
    licence: str
    bundled: bool
    expected_runs: int  # row count of the default load; the tests hold loaders to it


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "chinchilla",
            loaders.load_chinchilla,
            "Chinchilla runs, Epoch AI read-back of Hoffmann et al. Fig. 4 (dense)",
            "none given (read from a path)",
            False,
            245,
        ),
        Dataset(
            "deepmind-routing",
            loaders.load_deepmind_routing,
            "Clark et al. routed LMs: dense + Hash, S-Base, RL-R routers, E = 1..512",
            "CC-BY-4.0",
            True,
            223,
        ),
        Dataset(
            "steplaw-dense",
            loaders.load_steplaw_dense,
            "Step Law learning-rate x batch grid, dense, 17 (N, D) cells",
            "none given (read from a path)",
            False,
            1911,
        ),
        Dataset(
            "steplaw-moe",
            loaders.load_steplaw_moe,
            "Step Law learning-rate x batch grid, MoE, 4 sparsities",
            "none given (read from a path)",
            False,
            708,
        ),
        Dataset(
            "porian",
            loaders.load_porian,
            "Porian et al. isoFLOP points, 15 configurations (dense)",
            "MIT",
            True,
            1745,
        ),
        Dataset(
            "critical-batch",
            loaders.load_critical_batch,
            "Zhang et al. steps to a target loss vs batch size (dense)",
            "MIT",
            True,
            45,
        ),
        Dataset(
            "pythia",
            loaders.load_pythia,
            "Pythia checkpoints: downstream accuracy and LAMBADA loss vs compute",
            "Apache-2.0",
            True,
            730,
        ),
        Dataset(
            "trainer-cpu",
            loaders.load_trainer_cpu,
            "This package's CPU sweep: dense vs three routers, scaling, lr x batch grids",
            "Apache-2.0 (produced by bayes_scaling)",
            True,
            161,
        ),
    )
}


def load_dataset(
    name: str, path: str | os.PathLike[str] | None = None, **options: object
) -> pd.DataFrame:
    """Load a registered data set as a validated run table.

    Parameters
    ----------
    name
        One of :data:`DATASETS` (``bayes-scaling datasets list``).
    path
        For data sets that are not bundled, the file or its folder (default: found in
        ``$BAYES_SCALING_DATA`` or a ``shared/data`` folder beside the project).
    **options
        Passed to the loader (e.g. ``curves=True`` for ``deepmind-routing``).
    """
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    dataset = DATASETS[name]
    if path is None:
        return dataset.loader(**options)
    if dataset.bundled:
        raise DataFileError(f"data set {name!r} is bundled with the package; it takes no --path")
    try:
        return dataset.loader(path=path, **options)
    except (DataFileMissingError, RunTableError):
        raise
    except (KeyError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        # A file of the wrong shape fails inside the loader (a missing column, unparsable
        # text); say which file and which data set it was supposed to be.
        what = f"missing column {error}" if isinstance(error, KeyError) else str(error)
        raise DataFileError(
            f"{path}: not the {name!r} data set's file ({what.strip().splitlines()[-1]}); "
            f"see `bayes-scaling datasets list` and the loader's documentation"
        ) from error
