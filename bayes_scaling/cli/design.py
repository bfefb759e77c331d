"""``plan``: which runs to train next, ranked by what they would teach about a question."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from bayes_scaling.cli._common import app, check_output, check_seed, fail, load_posterior


def _candidates(source: str, posterior: Any, question: Any) -> pd.DataFrame:
    """Candidates from a sweep file (.toml), a table of runs (CSV, JSONL, Parquet), or auto."""
    from bayes_scaling.design import auto_candidates

    if source == "auto":
        return auto_candidates(posterior, question)
    path = Path(source)
    if not path.exists():
        raise fail(f"--candidates {source}: no such file (give a sweep TOML, a table or auto)")
    if path.suffix == ".toml":
        try:
            from bayes_scaling.train.plans import candidate_runs
        except ImportError as error:  # torch is the optional extra `train`
            extra = "pip install 'bayes_scaling[train]'"
            raise fail(f"sweep-file candidates need the trainer: {extra} ({error})") from error
        try:
            return candidate_runs(path)
        except (ValueError, OSError) as error:
            raise fail(str(error)) from error
    from bayes_scaling.runs import read_table

    try:
        return read_table(path)
    except (ValueError, OSError) as error:  # RunTableError is a ValueError
        raise fail(str(error)) from error


@app.command("plan")
def plan_command(
    posterior_file: Annotated[Path, typer.Argument(help="A posterior written by `fit`.")],
    question: Annotated[
        str,
        typer.Option(
            "--question",
            help="loss (at --n-active/--tokens) | optimal-n (at --at-flops) | moe-better "
            "(at --at-flops, with --moe-arch) | lr-batch (a hyper posterior, at --n-active/"
            "--tokens).",
        ),
    ],
    n_active: Annotated[
        float | None, typer.Option("--n-active", help="Target N (loss, lr-batch).")
    ] = None,
    tokens: Annotated[float | None, typer.Option("--tokens", help="Target D.")] = None,
    n_total: Annotated[
        float | None, typer.Option("--n-total", help="Target total parameters (lr-batch).")
    ] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="Target arch.")] = None,
    experts: Annotated[
        float | None,
        typer.Option("--experts", help="Target expert count (default: the arch's most common)."),
    ] = None,
    at_flops: Annotated[
        float | None, typer.Option("--at-flops", help="The question's budget (FLOPs).")
    ] = None,
    moe_arch: Annotated[str | None, typer.Option("--moe-arch", help="MoE arch.")] = None,
    dense_arch: Annotated[str, typer.Option("--dense-arch", help="Dense arch.")] = "dense",
    eval_set: Annotated[str | None, typer.Option("--eval-set", help="Eval set.")] = None,
    candidates: Annotated[
        str,
        typer.Option(
            "--candidates",
            help="A sweep TOML (its grid; the plan can then be trained with sweep --plan), a "
            "table of runs without losses (CSV, JSONL, Parquet), or auto.",
        ),
    ] = "auto",
    budget_flops: Annotated[
        float | None,
        typer.Option("--budget-flops", help="Cap on the planned runs' FLOPs together."),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Runs to plan (a batch for parallel runs).")] = 4,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="linear (condition the draws' covariance; default) | importance (reweight the "
            "draws on simulated outcomes; best for one or two runs).",
        ),
    ] = "linear",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the draws used (and simulated outcomes).")
    ] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Write the plan (JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rank candidate runs by the expected reduction of a question's posterior variance per
    FLOP, and choose a batch of --k, each run scored given the ones before it."""
    from bayes_scaling.design import DesignError, Question, plan_runs

    check_seed(seed)
    check_output(out, "--out")
    posterior = load_posterior(posterior_file)
    target: pd.DataFrame | None = None
    if n_active is not None or tokens is not None:
        given = {"n_active": n_active, "tokens": tokens, "n_total": n_total, "arch": arch}
        point = {k: v for k, v in given.items() if v is not None}
        if experts is None and arch is not None and "arch" in posterior.runs:
            from bayes_scaling.frontier import arch_expert_counts

            experts = arch_expert_counts(posterior, arch)[-1]
        if experts is not None:
            point["experts"] = experts
        if eval_set is not None:
            point["eval_set"] = eval_set
        target = pd.DataFrame([point])
    try:
        asked = Question(
            question, target, at_flops, arch, moe_arch, dense_arch, eval_set
        )  # fmt: skip
        pool = _candidates(candidates, posterior, asked)
        plan = plan_runs(
            posterior, asked, pool, k=k, budget_flops=budget_flops, random_seed=seed, method=method
        )
    except DesignError as error:
        raise fail(str(error)) from error
    if out is not None:
        plan.write(out)
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), allow_nan=False))
    else:
        _print(plan)
    if out is not None and not as_json:
        typer.echo(f"wrote {out}")


def _print(plan: Any) -> None:
    typer.echo(
        f"{plan.question.describe()}: sd {plan.sd_now:.4g} now, {plan.sd_after:.4g} expected "
        f"after the {len(plan.runs)} planned run(s) ({plan.flops:.3g} FLOPs; "
        f"{plan.candidates} candidates)"
    )
    if "p_moe_better" in plan.settings:
        typer.echo(f"  P({plan.question.moe_arch} beats {plan.question.dense_arch}) now: "
                   f"{plan.settings['p_moe_better']:.3f}")  # fmt: skip
    for number, row in enumerate(plan.runs.itertuples(index=False), start=1):
        name = getattr(row, "run_id", None) or f"{row.arch} N={row.n_active:.3g}"
        typer.echo(
            f"  {number}. {name}: N={row.n_active:.3g}, D={row.tokens:.3g}, "
            f"{row.flops:.3g} FLOPs; removes {row.gain:.3g} of variance "
            f"({row.gain_per_flop:.3g} per FLOP), sd then {row.sd_after:.4g}"
        )
