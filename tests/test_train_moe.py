"""The MoE block: dispatch paths agree with a naive reference, routers agree where they should,
gates follow one rule, init scales match the dense FFN, balancing works, and compile + MoE
trains with no graph break."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from bayes_scaling.train import ModelConfig, TrainConfig, Transformer, train  # noqa: E402
from bayes_scaling.train.moe import (  # noqa: E402
    MoE,
    grouped_matmul_available,
    update_expert_bias,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "stdlib_sample.txt"
needs_grouped = pytest.mark.skipif(not grouped_matmul_available(), reason="no grouped matmul")


def naive_token_choice(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by the gate (zero for experts not chosen)."""
    config = moe.config
    tokens = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(tokens @ moe.router.weight.T, dim=-1)
    chosen = (probs + moe.expert_bias).topk(config.active, dim=-1).indices
    gates = torch.zeros_like(probs).scatter(1, chosen, probs.gather(1, chosen))
    gates = gates / gates.sum(-1, keepdim=True).detach()
    out = torch.zeros_like(tokens)
    for e in range(config.routed):
        y = (torch.nn.functional.silu(tokens @ moe.w1[e]) * (tokens @ moe.w3[e])) @ moe.w2[e]
        out = out + gates[:, e : e + 1] * y
    if moe.shared is not None:
        out = out + moe.shared(tokens)
    return out.view(x.shape)


def moe_block(seed: int = 0, **changes: object) -> MoE:
    torch.manual_seed(seed)
    values = {"d_model": 32, "n_heads": 2, "seq_len": 16, "experts": 4, "top_k": 2,
              "granularity": 2, "shared_experts": 1}  # fmt: skip
    return MoE(ModelConfig(**{**values, **changes}))


def output_and_grads(moe: MoE, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    moe.zero_grad()
    out = moe(x).out
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    return out.detach(), [p.grad.clone() for p in moe.parameters()]


@needs_grouped
def test_grouped_loop_and_naive_every_expert_reference_agree() -> None:
    x = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(1))
    results = []
    for dispatch in ("grouped", "loop"):
        results.append(output_and_grads(moe_block(dispatch=dispatch), x))
    reference = moe_block()
    reference.zero_grad()
    out = naive_token_choice(reference, x)
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    naive = (out.detach(), [p.grad.clone() for p in reference.parameters()])
    for got in results:
        assert torch.allclose(got[0], naive[0], atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got[1], naive[1], strict=True))


def test_bf16_autocast_takes_the_grouped_path_and_matches_fp32() -> None:
    if not grouped_matmul_available():
        pytest.skip("no grouped matmul")
    moe = moe_block(d_model=64, shared_experts=0)  # d_ff 176, expert hidden 88: aligned
    x = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(2))
    assert moe._use_grouped(torch.bfloat16) and not moe._use_grouped(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = moe(x).out
    assert low.dtype == torch.float32  # cast back to the block's input dtype
    assert torch.allclose(low, moe(x).out, atol=0.05, rtol=0.05)


def test_expert_choice_with_every_expert_is_token_choice_with_every_expert() -> None:
    x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(3))
    token = moe_block(top_k=4, shared_experts=0, dispatch="loop")
    expert = moe_block(top_k=4, shared_experts=0, router="expert_choice")
    expert.load_state_dict(token.state_dict())
    assert torch.allclose(token(x).out, expert(x).out, atol=1e-5)


def test_mixture_of_tokens_with_groups_of_one_averages_every_expert() -> None:
    x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(4))
    moe = moe_block(top_k=4, granularity=1, shared_experts=0, router="mot")
    assert moe.config.token_group == 1
    tokens = x.reshape(-1, 32)
    outputs = [
        (torch.nn.functional.silu(tokens @ moe.w1[e]) * (tokens @ moe.w3[e])) @ moe.w2[e]
        for e in range(4)
    ]
    assert torch.allclose(moe(x).out.reshape(-1, 32), torch.stack(outputs).mean(0), atol=1e-5)


def test_mixture_of_tokens_mixes_within_groups_only_and_is_causal() -> None:
    moe = moe_block(top_k=1, granularity=1, shared_experts=0, router="mot")  # groups of 4
    x = torch.randn(8, 16, 32, generator=torch.Generator().manual_seed(5))
    base = moe(x).out
    changed = x.clone()
    changed[5, 10] += 1.0  # sequence 5 (second group), position 10
    after = moe(changed).out
    moved = (after - base).abs().sum(-1) > 1e-6  # (8, 16)
    assert moved[4:, 10].all() and not moved[:4].any()  # its group, not the other group
    assert not moved[:, :10].any() and not moved[:, 11:].any()  # no other position


@pytest.mark.parametrize("router", ["topk", "expert_choice", "mot"])
def test_every_router_learns_from_the_language_model_loss(router: str) -> None:
    """With no balance or z-loss the router still gets a gradient, at top-1 too."""
    torch.manual_seed(0)
    config = ModelConfig(d_model=32, n_heads=2, seq_len=16, experts=4, top_k=1, router=router,
                         aux_loss_coef=0.0, z_loss_coef=0.0)  # fmt: skip
    model = Transformer(config)
    x = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    output = model(x, x)
    assert float(output.aux.detach()) == 0.0
    output.loss.backward()
    for moe in model.moe_layers():
        grad = moe.router.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    "changes",
    [{"experts": 8}, {"experts": 8, "top_k": 2}, {"experts": 4, "granularity": 4},
     {"experts": 8, "router": "expert_choice"}, {"experts": 8, "router": "mot"},
     {"experts": 8, "top_k": 2, "granularity": 2, "router": "mot"}],
)  # fmt: skip
def test_moe_blocks_start_at_the_dense_ffn_output_scale(changes: dict[str, object]) -> None:
    def ffn_std(**extra: object) -> float:
        stds = []
        for seed in range(3):
            torch.manual_seed(seed)
            block = Transformer(ModelConfig(d_model=64, n_heads=4, seq_len=64, **extra)).blocks[0]
            x = torch.randn(8, 64, 64, generator=torch.Generator().manual_seed(seed))
            out = block.ffn(x)
            stds.append(float((out.out if hasattr(out, "out") else out).detach().std()))
        return sum(stds) / len(stds)

    ratio = ffn_std(**changes) / ffn_std()
    # Before matching, a top-1 block started 1.5x and a top-2 block 4x the dense scale, and
    # Mixture of Tokens at 0.04x. Expert choice gives each expert the tokens that rate it
    # highest, so their gates are above average: ~1.25x.
    assert 0.85 < ratio < (1.35 if changes.get("router") == "expert_choice" else 1.15)


def test_aux_loss_free_bias_moves_load_to_the_idle_experts() -> None:
    moe = moe_block(top_k=1, granularity=1, shared_experts=0, bias_update_rate=0.01)
    torch.manual_seed(0)
    with torch.no_grad():
        moe.router.weight[0] += 0.5  # expert 0 is everyone's favourite
    x = torch.randn(4, 16, 32, generator=torch.Generator().manual_seed(6)).abs()
    first = moe(x).load
    for _ in range(200):
        update_expert_bias(moe, moe(x).load)
    last = moe(x).load
    assert first.max() / first.mean() > 2.0
    assert last.max() / last.mean() < first.max() / first.mean()
    assert moe.expert_bias[0] < 0 and abs(float(moe.expert_bias.sum())) < 1e-5


def test_balance_loss_is_averaged_over_layers() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 16))
    one = Transformer(ModelConfig(d_model=32, n_heads=2, seq_len=16, experts=4, n_layers=1))
    four = Transformer(ModelConfig(d_model=32, n_heads=2, seq_len=16, experts=4, n_layers=4))
    aux_one, aux_four = float(one(x, x).aux.detach()), float(four(x, x).aux.detach())
    assert aux_four < 2 * aux_one  # a sum over 4 layers would be ~4x
    assert four(x, x).load.shape == (4, 4)


@pytest.mark.parametrize("router", ["topk", "expert_choice", "mot"])
def test_compiled_bf16_moe_trains_with_no_graph_break(router: str, tmp_path: Path) -> None:
    """The GPU path (bf16 autocast, grouped dispatch, compile) on the CPU; aot_eager traces
    the same graphs as inductor without generating code (inductor: the slow test below)."""
    from torch._dynamo.utils import counters

    counters.clear()
    config = TrainConfig.from_flat(
        {"d_model": 64, "n_layers": 1, "n_heads": 2, "seq_len": 32, "experts": 4,
         "router": router, "batch_size": 8, "tokens": 8 * 32 * 12, "eval_tokens": 2048,
         "precision": "bf16", "compile": True, "compile_backend": "aot_eager",
         "sync_every": 4, "data_source": str(SAMPLE), "data_dir": str(tmp_path / "corpus")}
    )  # fmt: skip
    row = train(config, tmp_path / "run")
    assert row["status"] == "finished" and row["step"] == 12
    assert math.log(256) - 1.0 > row["loss"]
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 1  # one graph: no break, no recompile


@pytest.mark.slow
def test_inductor_compiled_moe_trains(tmp_path: Path) -> None:
    config = TrainConfig.from_flat(
        {"d_model": 64, "n_layers": 1, "n_heads": 2, "seq_len": 32, "experts": 4,
         "granularity": 2, "batch_size": 8, "tokens": 8 * 32 * 8, "eval_tokens": 2048,
         "precision": "bf16", "compile": True, "data_source": str(SAMPLE),
         "data_dir": str(tmp_path / "corpus")}
    )  # fmt: skip
    assert train(config, tmp_path / "run")["status"] == "finished"
