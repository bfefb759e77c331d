"""``decide``: what to train with a FLOP budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bayes_scaling.cli._common import (
    app,
    check_output,
    check_prob,
    check_seed,
    fail,
    load_posterior,
    save_figure,
)


@app.command("decide")
def decide_command(
    posterior_file: Annotated[Path, typer.Argument(help="A loss-law posterior written by `fit`.")],
    flops: Annotated[float, typer.Option("--flops", help="Training budget in FLOPs.")],
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="mean (expected loss) | q90 (its 90th percentile) | p-target (P(a new run's "
            "loss <= --target), run noise included).",
        ),
    ] = "mean",
    target: Annotated[float | None, typer.Option("--target", help="Target loss.")] = None,
    max_params: Annotated[
        float | None, typer.Option("--max-params", help="Cap on total parameters.")
    ] = None,
    max_tokens: Annotated[
        float | None, typer.Option("--max-tokens", help="Cap on training tokens.")
    ] = None,
    inference_tokens: Annotated[
        float, typer.Option("--inference-tokens", help="Tokens to serve (2N FLOPs each).")
    ] = 0.0,
    arch: Annotated[
        list[str] | None, typer.Option("--arch", help="Arch(s) to consider; default all.")
    ] = None,
    hyper: Annotated[
        Path | None, typer.Option("--hyper", help="Hyperparameter posterior for lr and batch.")
    ] = None,
    eval_set: Annotated[
        str | None, typer.Option("--eval-set", help="Eval set of the loss; default the only one.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the new-run noise draws.")] = 0,
    prob: Annotated[float, typer.Option("--prob", help="Interval probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw the frontier.")] = None,
) -> None:
    """Recommend what to train with a FLOP budget: size, tokens, experts (and lr, batch)."""
    import json

    from bayes_scaling.decide import DecisionError, recommend
    from bayes_scaling.frontier import frontier

    check_prob(prob)
    check_seed(seed)
    check_output(plot, "--plot")
    posterior = load_posterior(posterior_file)
    hyper_posterior = load_posterior(hyper, "--hyper") if hyper is not None else None
    try:
        choice = recommend(
            posterior,
            flops,
            objective=objective,
            target=target,
            max_params=max_params,
            max_tokens=max_tokens,
            inference_tokens=inference_tokens,
            archs=arch,
            hyper=hyper_posterior,
            eval_set=eval_set,
            random_seed=seed,
            hyper_prob=prob,
        )
        optimum = frontier(
            posterior, [flops], choice.arch, experts=choice.experts, eval_set=eval_set
        ).to_dict(prob)
        leverage = _leverage(posterior, choice, eval_set, prob)
    except DecisionError as error:
        raise fail(str(error)) from error
    result = choice.to_dict(prob) | {"unconstrained": optimum, "leverage": leverage}
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _print(result)
    if plot is not None:
        from bayes_scaling.plots import plot_frontier

        figure = plot_frontier(
            posterior, budgets=(flops / 1e3, flops * 1e2), mark=flops, eval_set=eval_set
        )
        save_figure(figure, plot)


def _leverage(posterior: Any, choice: Any, eval_set: str | None, prob: float) -> dict | None:
    """Efficiency Leverage of the chosen MoE configuration against compute-optimal dense, with
    its interval; None when the choice is dense or the posterior has no dense arch."""
    from bayes_scaling.intervals import central_interval
    from bayes_scaling.leverage import configuration_leverage

    if choice.experts <= 1 or "dense" not in set(posterior.runs["arch"].astype(str)):
        return None
    draws = configuration_leverage(
        posterior, choice.arch, choice.n_active, choice.tokens, choice.experts, eval_set
    )
    extended = np.where(np.isnan(draws), np.inf, draws)  # dense never gets there: unbounded
    low, high = central_interval(extended, prob, axis=None, method="inverted_cdf")
    finite = [float(v) if np.isfinite(v) else None for v in (np.median(extended), low, high)]
    return {
        "median": finite[0],
        "interval": finite[1:],
        "unreachable": float(np.isnan(draws).mean()),
    }


def _print(result: dict[str, Any]) -> None:
    """The recommendation as text, from :meth:`Recommendation.to_dict`."""
    label = f"{100 * result['prob']:g}%"
    total = f"{result['n_total']:.3g}" if result["n_total"] is not None else "unknown"
    typer.echo(
        f"C={result['flops']:.3g} FLOPs, objective {result['objective']} "
        f"({result['scored_on']}): {result['arch']} N={result['n_active']:.3g} active "
        f"({total} total, E={result['experts']:g}), D={result['tokens']:.3g} tokens "
        f"({result['tokens_per_param']:.1f} per parameter)"
    )
    if result["objective"] == "p-target":
        typer.echo(f"  {result['scored_on']} = {result['score']:.3f}")
    low, high = result["loss_interval"]
    typer.echo(f"  expected loss {result['loss_median']:.4f} [{low:.4f}, {high:.4f}] ({label})")
    if result["new_run_interval"] is not None:
        low, high = result["new_run_interval"]
        typer.echo(f"  a new run's loss [{low:.4f}, {high:.4f}] ({label}, run noise included)")
    n_opt = result["unconstrained"]["n_opt"]
    low, high = n_opt["interval"][0]
    typer.echo(
        f"  compute-optimal N for {result['arch']}: {n_opt['median'][0]:.3g} "
        f"[{low:.3g}, {high:.3g}] ({label})"
    )
    if result["lr"]:
        lr, batch = result["lr"], result["batch_tokens"]
        typer.echo(
            f"  lr {lr['value']:.3g}, batch {batch['value']:.4g} tokens (lowest expected loss "
            f"penalty, {100 * lr['expected_loss_penalty']:.3f}%, from the {lr['law_arch']} "
            f"lr/batch law); optimum lr {lr['median']:.3g} [{lr['interval'][0]:.3g}, "
            f"{lr['interval'][1]:.3g}], batch {batch['median']:.4g} "
            f"[{batch['interval'][0]:.4g}, {batch['interval'][1]:.4g}] ({label})"
        )
    if result["leverage"] is not None:
        lev = result["leverage"]
        show = ["unbounded" if v is None else f"{v:.3g}" for v in (lev["median"], *lev["interval"])]
        typer.echo(
            f"  Efficiency Leverage {show[0]} [{show[1]}, {show[2]}] ({label}): compute-optimal "
            "dense needs that many times this run's training compute (6 N D) to reach its "
            "expected loss"
        )
    for row in result["runners_up"][:5]:
        typer.echo(
            f"  runner-up: {row['arch']} E={row['experts']:g} N={row['n_active']:.3g} "
            f"D={row['tokens']:.3g}, median loss {row['loss_median']:.4f}"
        )
