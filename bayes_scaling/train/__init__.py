"""A compact torch trainer for dense and MoE transformers (install the ``train`` extra).

- :mod:`~bayes_scaling.train.model`: the transformer, MoE block and parameter / FLOP accounting;
- :mod:`~bayes_scaling.train.data`: byte-level tokens of the Python standard library, memmapped;
- :mod:`~bayes_scaling.train.loop`: one run with exact resume, returning a run-table row;
- :mod:`~bayes_scaling.train.sweep`: TOML grids run in one process, resumable and shardable.
"""

from bayes_scaling.train.loop import TrainConfig, run_id_of, train
from bayes_scaling.train.model import ModelConfig, Transformer, parameter_counts
from bayes_scaling.train.sweep import SweepError, expand_sweep, run_sweep

__all__ = [
    "ModelConfig",
    "SweepError",
    "TrainConfig",
    "Transformer",
    "expand_sweep",
    "parameter_counts",
    "run_id_of",
    "run_sweep",
    "train",
]
