"""A compact torch trainer for dense and MoE transformers (install the ``train`` extra).

Needs only torch, numpy and pandas (no PyMC stack), so it runs on a bare GPU machine.

- :mod:`~bayes_scaling.train.config`: the model and run configs, the schedule, run ids;
- :mod:`~bayes_scaling.train.model`: the transformer;
- :mod:`~bayes_scaling.train.moe`: the MoE block: token choice, expert choice, Mixture of Tokens;
- :mod:`~bayes_scaling.train.accounting`: parameter and FLOP counts, MFU;
- :mod:`~bayes_scaling.train.data`: byte-level tokens of the Python standard library, memmapped;
- :mod:`~bayes_scaling.train.evaluate`: the fixed evaluation and its standard error;
- :mod:`~bayes_scaling.train.runtime`: device, precision, optimizer, cross-rank decisions;
- :mod:`~bayes_scaling.train.loop`: one run with exact resume, returning a run-table row;
- :mod:`~bayes_scaling.train.sweep`: TOML grids run in one process, resumable and shardable;
  several sweeps may share one output table (each run is claimed by one of them).
"""

from bayes_scaling.train.accounting import parameter_counts
from bayes_scaling.train.config import ModelConfig, TrainConfig, run_id_of
from bayes_scaling.train.data import CorpusError
from bayes_scaling.train.loop import CheckpointError, train
from bayes_scaling.train.model import Transformer
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
