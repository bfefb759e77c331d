"""Parameter and FLOP accounting of :class:`~bayes_scaling.train.model.Transformer`, and MFU.

The conventions, in one place:

- ``n_active`` / ``n_total`` **exclude the embedding** (the tied input / output table, V d), as
  the run table defines them (shared/docs/DESIGN.md) and as Kaplan et al. (2020) count N. They
  include every other parameter: attention, router, experts (``n_active``: the k G a token pays
  for; ``n_total``: all E G), shared experts and the RMSNorm gains. So the model holds
  ``embedding + n_total`` parameters.
- ``flops_per_token`` (the run table's ``flops`` is this times the tokens) is consistent with
  ``n_active``: ``6 (n_active - norms) + 12 L T d (+ 12 E G d for Mixture of Tokens)``, i.e.
  forward plus backward (3 x 2 FLOPs per multiply-add) over the non-embedding matmul weights,
  attention's score and value products counted as nanoGPT and nanochat count them (12 L T d
  with T the full context, causal masking not discounted; PaLM, Chowdhery et al. 2022, app. B),
  and Mixture of Tokens' mixing and unmixing products. The output head (6 V d) is left out, as
  the embedding is left out of N; so ``flops / (6 n_active tokens)`` is 1 + the attention share.
- ``model_flops_per_token`` adds the output head, 6 V d: the "model FLOPs" of nanoGPT's
  ``estimate_mfu`` and nanochat's ``estimate_flops`` (both count the head's matmul), used for
  MFU so that ours compares with theirs.

A test checks both counts against ``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

from bayes_scaling.train.config import ModelConfig

__all__ = ["PEAK_FLOPS", "mfu", "parameter_counts"]

# Dense bf16 tensor-core peak (no sparsity) of one H100 / H200 SXM: 989.4 TFLOP/s (NVIDIA's
# H100 and H200 datasheets); nanochat divides by the same figure.
PEAK_FLOPS = {"cuda": 989e12}


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Parameter breakdown and per-token training FLOPs (see the module notes)."""
    d, layers = config.d_model, config.n_layers
    attention = 4 * d * d
    norms = 2 * d * layers + d
    shared = config.shared_experts * 3 * d * config.d_ff
    mixing = 0
    if config.is_moe:
        per_expert = 3 * d * config.expert_hidden
        router = d * config.routed
        experts_total = config.routed * per_expert
        experts_active = config.active * per_expert
        if config.router == "mot":
            mixing = 2 * config.routed * d  # mix and unmix: E G d multiply-adds each per token
    else:
        router, shared = 0, 0
        experts_total = experts_active = 3 * d * config.d_ff
    matmul_active = layers * (attention + router + experts_active + shared)
    matmul_total = layers * (attention + router + experts_total + shared)
    attention_flops = 12 * layers * config.seq_len * d
    flops = 6 * matmul_active + attention_flops + 6 * layers * mixing
    return {
        "embedding": config.vocab * d,
        "attention": layers * attention,
        "router": layers * router,
        "experts_total": layers * experts_total,
        "experts_active": layers * experts_active,
        "shared": layers * shared,
        "norms": norms,
        "n_active": matmul_active + norms,
        "n_total": matmul_total + norms,
        "flops_per_token": flops,
        "model_flops_per_token": flops + 6 * config.vocab * d,
    }


def mfu(model_flops_per_token: float, tokens_per_s: float, devices: int, peak: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over ``devices`` x ``peak``."""
    return model_flops_per_token * tokens_per_s / (devices * peak)
