"""Parameter and FLOP accounting: the counts are the model's, the FLOPs are what torch's
FlopCounterMode measures for a training step, and active parameters do not move with G."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bayes_scaling.train import ModelConfig, Transformer, parameter_counts  # noqa: E402

SHAPES = [
    {},
    {"experts": 8, "top_k": 2, "dispatch": "loop"},
    {"experts": 4, "granularity": 2, "shared_experts": 1, "dispatch": "loop"},
    {"experts": 4, "router": "expert_choice"},
    {"experts": 4, "router": "mot"},
    {"experts": 4, "top_k": 2, "granularity": 2, "router": "mot"},
]


@pytest.mark.parametrize("changes", SHAPES)
def test_counts_are_the_models_parameters(changes: dict[str, object]) -> None:
    config = ModelConfig(d_model=48, n_layers=3, n_heads=4, seq_len=32, **changes)
    counts = parameter_counts(config)
    actual = sum(p.numel() for p in Transformer(config).parameters())
    assert actual == counts["embedding"] + counts["n_total"]
    assert counts["embedding"] == 256 * 48  # the tied table, left out of n_active / n_total


@pytest.mark.parametrize("changes", SHAPES)
def test_training_flops_match_torch_flop_counter(changes: dict[str, object]) -> None:
    """model_flops_per_token is exactly what FlopCounterMode counts for forward + backward
    (the head included); flops_per_token is that without the head's 6 V d."""
    config = ModelConfig(d_model=48, n_layers=2, n_heads=4, seq_len=32, **changes)
    torch.manual_seed(0)
    model = Transformer(config)
    x = torch.randint(0, 256, (8, 32))
    counter = FlopCounterMode(display=False)
    # The math backend's matmuls are counted (the CPU's fused kernel is not registered).
    with counter, sdpa_kernel(SDPBackend.MATH):
        output = model(x, x)
        (output.loss + output.aux).backward()
    counts = parameter_counts(config)
    measured = counter.get_total_flops() / x.numel()
    assert measured == pytest.approx(counts["model_flops_per_token"], rel=1e-9)
    assert counts["model_flops_per_token"] - counts["flops_per_token"] == 6 * 256 * 48


def test_attention_counts_twelve_l_t_d_and_flops_per_6nd_is_one_plus_attention() -> None:
    config = ModelConfig(d_model=64, n_layers=2, seq_len=128)
    counts = parameter_counts(config)
    norms = counts["norms"]
    assert counts["flops_per_token"] == 6 * (counts["n_active"] - norms) + 12 * 2 * 128 * 64


def test_active_parameters_do_not_move_with_granularity_shared_experts_included() -> None:
    active = {
        g: parameter_counts(
            ModelConfig(d_model=48, experts=8, top_k=2, granularity=g, shared_experts=1)
        )
        for g in (1, 2, 4)
    }
    # Only the router grows with G (d E G); experts and the shared expert stay the same.
    experts = {g: c["experts_active"] + c["shared"] for g, c in active.items()}
    assert len(set(experts.values())) == 1
    routers = {g: c["router"] for g, c in active.items()}
    assert routers[4] == 4 * routers[1]
    assert all(c["experts_total"] == active[1]["experts_total"] for c in active.values())


def test_every_router_costs_the_same_per_token_at_equal_top_k() -> None:
    shape = {"d_model": 48, "seq_len": 64, "experts": 8, "top_k": 1, "granularity": 2}
    costs = {r: parameter_counts(ModelConfig(router=r, **shape)) for r in ("topk", "expert_choice")}
    assert costs["topk"]["n_active"] == costs["expert_choice"]["n_active"]
    mot = parameter_counts(ModelConfig(router="mot", **shape))
    assert mot["n_active"] == costs["topk"]["n_active"]
    # Mixing and unmixing: 2 E G d multiply-adds per token and layer, 6 FLOPs each in training.
    assert mot["flops_per_token"] - costs["topk"]["flops_per_token"] == 6 * 2 * 2 * 16 * 48
