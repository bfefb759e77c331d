"""``decide``: what to train with a FLOP budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bayes_scaling.cli._common import app, fail


@app.command("decide")
def decide_command(
    posterior_file: Annotated[Path, typer.Argument(help="A loss-law posterior written by `fit`.")],
    flops: Annotated[float, typer.Option("--flops", help="Training budget in FLOPs.")],
    objective: Annotated[
        str, typer.Option("--objective", help="mean | q90 | p-target (needs --target).")
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
    prob: Annotated[float, typer.Option("--prob", help="Interval probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw the frontier.")] = None,
) -> None:
    """Recommend what to train with a FLOP budget: size, tokens, experts (and lr, batch)."""
    import json

    from bayes_scaling.decide import DecisionError, frontier, recommend
    from bayes_scaling.fit import Posterior

    posterior = Posterior.load(posterior_file)
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
            hyper=Posterior.load(hyper) if hyper is not None else None,
        )
        optimum = frontier(posterior, [flops], choice.arch, experts=choice.experts)
    except DecisionError as error:
        raise fail(str(error)) from error
    summary = optimum.summary(probs=(prob,)).iloc[0]
    label = f"{100 * prob:g}"
    result = choice.to_dict(prob)
    result["unconstrained_n_opt_interval"] = [
        float(summary[f"n_opt_low_{label}"]),
        float(summary[f"n_opt_high_{label}"]),
    ]
    result["unconstrained_n_opt_median"] = float(summary["n_opt_median"])
    if as_json:
        typer.echo(json.dumps(result))
    else:
        low, high = result["loss_interval"]
        typer.echo(
            f"C={flops:.3g} FLOPs, objective {objective}: {choice.arch} "
            f"N={choice.n_active:.3g} active ({choice.n_total:.3g} total, E={choice.experts:g}), "
            f"D={choice.tokens:.3g} tokens ({choice.tokens / choice.n_active:.1f} per parameter)"
        )
        typer.echo(
            f"  expected loss {result['loss_median']:.4f} [{low:.4f}, {high:.4f}] ({label}%)"
        )
        typer.echo(
            f"  compute-optimal N for {choice.arch}: {summary['n_opt_median']:.3g} "
            f"[{summary[f'n_opt_low_{label}']:.3g}, {summary[f'n_opt_high_{label}']:.3g}] "
            f"({label}%)"
        )
        if choice.lr:
            typer.echo(
                f"  lr {choice.lr['median']:.3g} [{choice.lr['low_90']:.3g}, "
                f"{choice.lr['high_90']:.3g}], batch {choice.batch_tokens['median']:.4g} tokens "
                f"[{choice.batch_tokens['low_90']:.4g}, {choice.batch_tokens['high_90']:.4g}]"
            )
        for _, row in choice.runners_up.head(5).iterrows():
            typer.echo(
                f"  runner-up: {row['arch']} E={row['experts']:g} N={row['n_active']:.3g} "
                f"D={row['tokens']:.3g}, median loss {row['loss_median']:.4f}"
            )
    if plot is not None:
        from bayes_scaling.plots import plot_frontier

        figure = plot_frontier(posterior, budgets=(flops / 1e3, flops * 1e2), mark=flops)
        figure.savefig(plot, dpi=120, bbox_inches="tight")
        typer.echo(f"wrote {plot}")
