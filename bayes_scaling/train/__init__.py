"""A compact torch trainer for dense and MoE transformers (install the ``train`` extra).

- :mod:`~bayes_scaling.train.model`: the transformer, MoE block and parameter / FLOP accounting;
- :mod:`~bayes_scaling.train.data`: byte-level tokens of the Python standard library, memmapped;
- :mod:`~bayes_scaling.train.loop`: one run with exact resume, returning a run-table row;
- :mod:`~bayes_scaling.train.sweep`: TOML grids run in one process, resumable and shardable;
  several sweeps may share one output table (each run is claimed by one of them).
"""

from bayes_scaling.train.data import CorpusError
from bayes_scaling.train.loop import CheckpointError, TrainConfig, run_id_of, train
from bayes_scaling.train.model import ModelConfig, Transformer, parameter_counts
from bayes_scaling.train.sweep import SweepError, expand_sweep, repair_rows, run_sweep

__all__ = [
    "CheckpointError",
    "CorpusError",
    "ModelConfig",
    "SweepError",
    "TrainConfig",
    "Transformer",
    "expand_sweep",
    "parameter_counts",
    "repair_rows",
    "run_id_of",
    "run_sweep",
    "train",
]
