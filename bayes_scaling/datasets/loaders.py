"""Loaders that turn public data sets into validated run tables.

Each docstring states the conventions: which parameter count becomes ``n_active``, what the
loss was measured on, and how batch sizes were converted to tokens.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from bayes_scaling.datasets._files import bundled, external
from bayes_scaling.runs import validate_runs

PathLike = str | os.PathLike[str] | None

EPOCH_URL = "https://github.com/epoch-research/analyzing-chinchilla (data/svg_extracted_data.csv)"
STEPLAW_URL = "https://github.com/step-law/steplaw (data/dense_lr_bs_loss.csv, moe_lr_bs_loss.csv)"
# Step Law trains on sequences of 2,048 tokens (SOURCE.md; the MoE file's seq_len column).
STEPLAW_SEQ_LEN = 2048
# Clark et al. 2022 train every model with 256 sequences of 2,048 tokens per step (130B tokens
# over 250k steps); ``flops_per_step`` / (2 N) in their file approaches this for large N.
ROUTING_TOKENS_PER_STEP = 256 * 2048
ROUTER_ARCH = {"Dense": "dense", "Hash": "moe-hash", "S-Base": "moe-sbase", "RL-R": "moe-rlr"}
ROUTING_EVAL_SETS = ("validation", "c4", "curation_corpus", "lambada", "pile", "wikitext103")


def load_chinchilla(path: PathLike = None) -> pd.DataFrame:
    """Epoch AI's read-back of the 245 Chinchilla runs (Hoffmann et al. 2022, Fig. 4).

    ``n_active`` is the paper's "Model Size" (Hoffmann et al. count embeddings in it);
    ``flops`` is the file's "Training FLOP" (not derived) and ``tokens`` = C / (6 N), as in
    Besiroglu et al. 2024. The loss is the final training loss on MassiveText.
    """
    file = external("epoch_chinchilla", "svg_extracted_data.csv", path, EPOCH_URL)
    raw = pd.read_csv(file)
    n_params = raw["Model Size"].to_numpy(float)
    flops = raw["Training FLOP"].to_numpy(float)
    table = pd.DataFrame(
        {
            "run_id": [f"chinchilla-{i:03d}" for i in range(len(raw))],
            "source": "epoch_chinchilla",
            "arch": "dense",
            "n_active": n_params,
            "n_total": n_params,
            "tokens": flops / (6.0 * n_params),
            "flops": flops,
            "loss": raw["loss"].to_numpy(float),
            "eval_set": "massivetext-train",
        }
    )
    return validate_runs(table, origin=str(file))


def load_deepmind_routing(eval_set: str = "validation", curves: bool = False) -> pd.DataFrame:
    """Clark et al. 2022 routed language models: dense plus Hash, S-Base and RL-R routers.

    One row per run at its final evaluation (223 runs) by default; ``curves=True`` gives every
    evaluated checkpoint after step 0 (``run_id`` = ``<hyper_id>@<step>``, ``hyper_id`` kept).
    Parameter counts include embeddings, as the paper's do; ``n_total`` is the file's
    ``total_parameter_count``.
    ``n_active`` is what one token uses: for routed runs ``dense_parameter_count`` plus
    (k - 1) experts; for dense runs every parameter, so the paper's wider "k-matched" dense
    baselines (``flop_increase`` 2 or 4, labelled k = 2 or 4 in the file) get ``n_active`` =
    ``n_total`` and ``top_k`` = 1. ``tokens`` =
    step * 256 * 2048; ``flops`` = 3 * ``flops_per_step`` (forward) * step. ``arch`` is
    ``dense``, ``moe-hash``, ``moe-sbase`` or ``moe-rlr``. ``eval_set`` chooses the loss column
    (validation = held-out MassiveText, c4, curation_corpus, lambada, pile, wikitext103).
    """
    if eval_set not in ROUTING_EVAL_SETS:
        raise ValueError(f"unknown eval_set {eval_set!r}; expected one of {ROUTING_EVAL_SETS}")
    file = bundled("deepmind_routing_curves.csv.gz")
    raw = pd.read_csv(file)
    # Step 0 is the untrained model; a few checkpoints have no evaluation on some eval sets, so
    # a run's final evaluation is its last checkpoint evaluated on the chosen set.
    raw = raw[(raw["step"] > 0) & raw[f"loss_{eval_set}"].notna()].reset_index(drop=True)
    if not curves:
        raw = raw.loc[raw.groupby("hyper_id")["step"].idxmax()].reset_index(drop=True)
    step = raw["step"].to_numpy(np.int64)
    n_active, n_total, top_k = _routing_parameter_counts(raw)
    run_ids = raw["hyper_id"].astype(str)
    if curves:
        run_ids = run_ids + "@" + raw["step"].astype(str)
    table = pd.DataFrame(
        {
            "run_id": "deepmind-" + run_ids,
            "source": "deepmind_routing",
            "arch": raw["router_type"].map(ROUTER_ARCH),
            "n_active": n_active,
            "n_total": n_total,
            "tokens": step * float(ROUTING_TOKENS_PER_STEP),
            "flops": 3.0 * raw["flops_per_step"].to_numpy(float) * step,
            "experts": raw["num_experts"].astype(np.int64),
            "top_k": top_k,
            "batch_tokens": float(ROUTING_TOKENS_PER_STEP),
            "loss": raw[f"loss_{eval_set}"].to_numpy(float),
            "eval_set": f"deepmind-{eval_set}",
            "seed": raw["seed"].astype(np.int64),
            "step": step,
            "hyper_id": raw["hyper_id"].astype(np.int64),
            "model_size_label": raw["model_size_label"],
            "routing_frequency": raw["routing_frequency"].to_numpy(float),
            "d_model": raw["d_model"].astype(np.int64),
            "num_blocks": raw["num_blocks"].astype(np.int64),
            "flop_increase": raw["flop_increase"].to_numpy(float),
            "dense_parameter_count": raw["dense_parameter_count"].to_numpy(float),
        }
    )
    return validate_runs(table, origin=str(file))


def _routing_parameter_counts(raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Active and total parameters and top_k of Clark et al.'s runs (see the loader's docstring)."""
    dense = raw["dense_parameter_count"].to_numpy(float)
    total = raw["total_parameter_count"].to_numpy(float)
    experts = raw["num_experts"].to_numpy(float)
    k = raw["k"].to_numpy(float)
    routed = experts > 1
    per_expert = np.where(routed, (total - dense) / np.maximum(experts - 1, 1), 0.0)
    n_active = np.where(routed, dense + (k - 1) * per_expert, total)
    top_k = np.where(routed, k, 1).astype(np.int64)
    return n_active, total, top_k


def _steplaw_common(raw: pd.DataFrame, name: str) -> dict[str, object]:
    """Columns shared by the dense and MoE Step Law grids."""
    return {
        "run_id": raw["exp_name"].astype(str),
        "source": name,
        "tokens": raw["D"].to_numpy(float),
        "batch_tokens": raw["bs"].to_numpy(float) * STEPLAW_SEQ_LEN,
        "lr": raw["lr"].to_numpy(float),
        "loss": raw["smooth loss"].to_numpy(float),
        "eval_set": "steplaw-train-smoothed",
        "loss_raw": raw["loss"].to_numpy(float),
        "batch_seqs": raw["bs"].astype(np.int64),
        "iterations": raw["ti"].astype(np.int64),
    }


def load_steplaw_dense(path: PathLike = None) -> pd.DataFrame:
    """Step Law dense learning-rate x batch-size grid: 1,911 runs in 17 (N, D) cells.

    ``n_active`` = ``n_total`` = the file's non-embedding ``N``; ``batch_tokens`` = ``bs`` (in
    sequences) * 2048; ``loss`` is the Gaussian-smoothed final training loss that the paper fits
    (the raw final loss is kept in ``loss_raw``); ``flops`` derived as 6 N D.
    """
    file = external("steplaw", "dense_lr_bs_loss.csv", path, STEPLAW_URL)
    raw = pd.read_csv(file)
    table = pd.DataFrame(
        {
            **_steplaw_common(raw, "steplaw_dense"),
            "arch": "dense",
            "n_active": raw["N"].to_numpy(float),
            "n_total": raw["N"].to_numpy(float),
            "hidden": raw["h"].astype(np.int64),
            "layers": raw["numl"].astype(np.int64),
        }
    )
    return validate_runs(table, origin=str(file))


def load_steplaw_moe(path: PathLike = None) -> pd.DataFrame:
    """Step Law MoE learning-rate x batch-size grid: 708 runs, 4 sparsities at ~2.15B total.

    ``n_active`` = ``Na`` (active), ``n_total`` = ``N`` (total); ``flops`` = ``M`` (training
    FLOPs per token, non-embedding, incl. attention) * D, not derived. ``experts`` = ``nume``
    routed experts, ``top_k`` = ``topk``, ``shared_experts`` = ``sed`` / ``moeh``,
    ``granularity`` = dense FFN width / expert width (``ffnh`` / ``moeh``). ``arch`` is ``moe``;
    the configuration is kept in ``moe_name`` and the activation ratio in ``sparsity``.
    """
    file = external("steplaw", "moe_lr_bs_loss.csv", path, STEPLAW_URL)
    raw = pd.read_csv(file)
    table = pd.DataFrame(
        {
            **_steplaw_common(raw, "steplaw_moe"),
            "arch": "moe",
            "n_active": raw["Na"].to_numpy(float),
            "n_total": raw["N"].to_numpy(float),
            "flops": raw["M"].to_numpy(float) * raw["D"].to_numpy(float),
            "experts": raw["nume"].astype(np.int64),
            "top_k": raw["topk"].astype(np.int64),
            "granularity": raw["ffnh"].to_numpy(float) / raw["moeh"].to_numpy(float),
            "shared_experts": (raw["sed"] // raw["moeh"]).astype(np.int64),
            "moe_name": raw["moe_name"].astype(str),
            "sparsity": raw["Na/N"].to_numpy(float),
        }
    )
    return validate_runs(table, origin=str(file))


def load_porian() -> pd.DataFrame:
    """Porian et al. 2024 isoFLOP points: 1,745 (model, budget) pairs in 15 configurations.

    Each row is one model's loss interpolated at a FLOP budget. ``n_active`` is ``params``
    under the configuration's own counting convention (column ``param_count``: kaplan /
    standard / attention); ``flops`` is the budget, ``tokens`` = C / (6 N) as in the source.
    ``eval_set`` is ``<dataset>-<loss_split>`` (rw / owt2, train / val); the configuration
    columns ``hparams``, ``warmup``, ``decay`` are kept, and ``config`` joins them all.
    """
    file = bundled("porian_isoflop_points.csv.gz")
    raw = pd.read_csv(file)
    config = raw[["dataset", "hparams", "warmup", "decay", "param_count", "loss_split"]]
    config_label = config.astype(str).agg("/".join, axis=1)
    table = pd.DataFrame(
        {
            "run_id": "porian-"
            + config_label
            + "-"
            + raw["flops"].map("{:.3g}".format)
            + "-"
            + raw["params"].map("{:.0f}".format),
            "source": "porian_rsld",
            "arch": "dense",
            "n_active": raw["params"].to_numpy(float),
            "n_total": raw["params"].to_numpy(float),
            "tokens": raw["tokens"].to_numpy(float),
            "flops": raw["flops"].to_numpy(float),
            "loss": raw["loss"].to_numpy(float),
            "eval_set": raw["dataset"] + "-" + raw["loss_split"],
            "config": config_label,
            **{name: raw[name] for name in ("hparams", "warmup", "decay", "param_count")},
        }
    )
    return validate_runs(table, origin=str(file))


def load_critical_batch() -> pd.DataFrame:
    """Zhang et al. 2025: steps to reach a target C4 loss at 9 batch sizes for 5 models (45 runs).

    Each row is a run that reached ``loss`` = the model's target C4 validation loss after
    ``step`` = steps_to_target steps, i.e. ``tokens`` = tokens_to_target. ``n_active`` is the
    nominal model size; ``batch_tokens`` = sequences * 512; ``flops`` derived as 6 N D.
    """
    file = bundled("critical_batch_steps_to_target_loss.csv")
    raw = pd.read_csv(file)
    table = pd.DataFrame(
        {
            "run_id": "cbs-" + raw["model"] + "-bs" + raw["batch_size_seqs"].astype(str),
            "source": "critical_batch_size",
            "arch": "dense",
            "n_active": raw["params_nominal"].to_numpy(float),
            "tokens": raw["tokens_to_target"].to_numpy(float),
            "batch_tokens": raw["batch_size_seqs"].to_numpy(float) * raw["seq_len"].to_numpy(float),
            "loss": raw["target_c4_val_loss"].to_numpy(float),
            "eval_set": "c4-val",
            "step": raw["steps_to_target"].astype(np.int64),
            "model": raw["model"],
            "reference_tokens": raw["reference_tokens"].to_numpy(float),
        }
    )
    return validate_runs(table, origin=str(file))


def load_pythia() -> pd.DataFrame:
    """Pythia downstream evaluations at every checkpoint (the wide file, step 0 excluded).

    Pythia has no pretraining loss in this data, so ``loss`` is the LAMBADA last-word
    negative log-likelihood, ln(``lambada_openai_ppl``), in nats (``eval_set``
    ``lambada-0shot`` or ``lambada-5shot``). The ``*_acc`` accuracy columns are kept alongside.
    ``n_active`` = ``n_total`` = non-embedding parameters; ``batch_tokens`` = tokens / step
    (2,097,152 for the standard runs, less for the small-batch ablations); ``flops`` = 6 N D.
    """
    file = bundled("pythia_v1_evals_wide.csv.gz")
    raw = pd.read_csv(file)
    raw = raw[raw["step"] > 0].reset_index(drop=True)  # step 0: untrained, zero tokens
    accuracy = [c for c in raw.columns if c.endswith("_acc")]
    shots = raw["num_fewshot"].astype(str)
    table = pd.DataFrame(
        {
            "run_id": "pythia-"
            + raw["hf_model"]
            + "-"
            + shots
            + "shot-step"
            + raw["step"].astype(str),
            "source": "pythia_evals",
            "arch": "dense",
            "n_active": raw["params_nonembed"].to_numpy(float),
            "tokens": raw["tokens"].to_numpy(float),
            "batch_tokens": raw["tokens"].to_numpy(float) / raw["step"].to_numpy(float),
            "loss": np.log(raw["lambada_openai_ppl"].to_numpy(float)),
            "eval_set": "lambada-" + shots + "shot",
            "step": raw["step"].astype(np.int64),
            "model": raw["hf_model"],
            "size": raw["size"],
            "variant": raw["variant"],
            "num_fewshot": raw["num_fewshot"].astype(np.int64),
            "params_total_with_embeddings": raw["params_total"].to_numpy(float),
            **{name: raw[name].to_numpy(float) for name in accuracy},
        }
    )
    return validate_runs(table, origin=str(file))


def load_trainer_cpu() -> pd.DataFrame:
    """This package's own CPU sweep (``models/sweeps/cpu.toml``, 161 runs): byte-level tokens
    of the Python 3.12 standard library, sequence length 64, 2 layers, one CPU thread.

    Three blocks: (1) routers at d_model 32 and 307,200 tokens, all at the active parameters of
    the dense model: ``arch`` ``topk`` (token choice), ``expert_choice`` and ``mot`` (Mixture of
    Tokens) at E = 4 and 8 experts (activation ratios 25% and 12.5%) x G = 1, 2, with dense,
    each at seeds 0, 1, 2, scored on the whole validation split (737,280 tokens); (2)
    learning-rate x batch grids for dense and token choice at E = 8: 1 to 16 sequences of 64 x
    lr 2.5e-3 to 4e-2 at 307,200 tokens, and to 2e-2 at 921,600; (3) scaling: d_model 16 to 48 x
    153,600 and 460,800 tokens for dense and the three routers at E = 8, G = 1. Blocks 2 and 3
    are scored on the first 262,144 validation tokens (``eval_set`` says which). Base: lr 0.01,
    8 sequences per step.

    ``n_active`` / ``n_total`` exclude the tied embedding (vocabulary 256); ``flops`` is the
    trainer's count, 6 (N_active - norms) D + 12 L T d D (attention as nanoGPT / nanochat count
    it; plus Mixture of Tokens' mixing), without the output head, like N. ``loss`` (nats per
    byte) is the score on the fixed validation tokens at the end of training; ``eval_se`` its
    batch-means standard error over 32 blocks, ``eval_blocks`` the 32 block means
    (space-separated), from which two runs on the same tokens compare with a paired standard
    error (:func:`bayes_scaling.train.evaluate.paired_se`). ``router``, ``eval_tokens``,
    ``d_model``, ``flops_per_token`` and ``model_flops_per_token`` are kept. Every row is kept
    with its trainer ``status``: a fit leaves diverged runs out and says how many
    (:func:`bayes_scaling.runs.split_diverged`), as it does for any run table. Produced by::

        OMP_NUM_THREADS=1 bayes-scaling sweep models/sweeps/cpu.toml --out out/trainer-cpu.jsonl
    """
    file = bundled("trainer_cpu_runs.jsonl.gz")
    table = pd.read_json(file, lines=True, dtype={"run_id": str})
    return validate_runs(table, origin=str(file))


def trainer_scaling_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The trainer-cpu sweep's scaling runs, the ones a loss law is fitted on: finished runs at
    the sweep's base lr (1e-2) and batch (512 tokens), seed 0, G = 1, E in {1, 8}, on the
    standard eval split. The rest of the sweep is lr x batch grids (for the hyperparameter
    laws), repeated seeds and the G / E variants of the router comparison."""
    keep = (
        (runs["status"] == "finished")
        & (runs["lr"] == 1e-2)
        & (runs["batch_tokens"] == 512.0)
        & (runs["seed"] == 0)
        & (runs["granularity"] == 1.0)
        & runs["experts"].isin([1, 8])
        & (runs["eval_set"] == "python-stdlib-val-262144")
    )
    return runs[keep]


def trainer_grid_runs(runs: pd.DataFrame, min_runs: int = 6) -> pd.DataFrame:
    """The trainer-cpu sweep's lr x batch grids, the runs a hyperparameter law is fitted on:
    every (arch, N, D, eval set) cell with at least ``min_runs`` runs (dense and top-k, one
    size, two token budgets; 89 runs). Diverged runs stay in: the fit leaves them out."""
    keys = ["arch", "n_active", "n_total", "tokens", "eval_set"]
    size = runs.groupby(keys)["run_id"].transform("size")
    return runs[size >= min_runs].reset_index(drop=True)
