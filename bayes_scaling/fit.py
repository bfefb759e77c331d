"""Sampling with the hypothesis' settings, checked for convergence and extended when it fails."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from bayes_scaling.compiled import MODELS
from bayes_scaling.loss_model import create_loss_model
from bayes_scaling.posterior import ConvergenceReport, Posterior, check_convergence
from bayes_scaling.runs import RunProblem, RunTableError, split_diverged, validate_runs
from bayes_scaling.spec import HyperSpec, ModelSpec, SamplerSettings, SpecError

__all__ = [
    "ConvergenceReport",
    "Posterior",
    "add_log_likelihood",
    "check_convergence",
    "fit",
    "sample",
]


def _nutpie_available() -> bool:
    """Whether nutpie imports; PyMC's own NUTS is the fallback."""
    try:
        import nutpie  # noqa: F401
    except ImportError:
        return False
    return True


def sample(
    model: pm.Model,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    random_seed: int = 0,
    sampler: str = "nutpie",
    target_accept: float = 0.9,
    progressbar: bool = True,
    adaptation: str = "diag",
) -> xr.DataTree:
    """Draw from the posterior of ``model``; the same ``random_seed`` gives the same draws.

    ``sampler`` is ``"nutpie"`` (default; falls back to ``"pymc"`` with a warning when nutpie
    is not installed) or ``"pymc"``. ``adaptation`` is nutpie's mass-matrix adaptation,
    ``"diag"`` (default) or ``"low_rank"``. On the hierarchical DeepMind fit ``"low_rank"`` was
    about 30% faster but left the arch spread at R-hat 1.01-1.02 on both seeds tried, where
    ``"diag"`` with 2000 warmup draws converged on both. PyMC's sampler ignores it.
    """
    SamplerSettings(
        sampler=sampler,
        draws=draws,
        tune=tune,
        chains=chains,
        target_accept=target_accept,
        adaptation=adaptation,
    )  # fmt: skip  (validates)
    if sampler == "nutpie" and not _nutpie_available():
        warnings.warn("nutpie is not installed; sampling with PyMC's NUTS", stacklevel=2)
        sampler = "pymc"
    if sampler == "nutpie":
        return _sample_nutpie(
            model, draws, tune, chains, random_seed, target_accept, progressbar, adaptation
        )
    return pm.sample(
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        nuts_sampler="pymc",
        nuts={"target_accept": target_accept},
        progressbar=progressbar,
        model=model,
        cores=min(chains, os.cpu_count() or 1),
    )


def _sample_nutpie(
    model: pm.Model,
    draws: int,
    tune: int,
    chains: int,
    random_seed: int,
    target_accept: float,
    progressbar: bool,
    adaptation: str,
) -> xr.DataTree:
    """nutpie on the compiled model cached for ``model``'s structure (compiled on first use),
    chains spread over every core; the result has the groups ``pm.sample`` would give."""
    import nutpie
    from pymc.backends.arviz import patch_nutpie_idata

    compiled = MODELS.get(model)
    started = time.perf_counter()
    idata = nutpie.sample(
        compiled,
        draws=draws,
        tune=max(tune, 1),  # nutpie needs at least one warm-up draw
        chains=chains,
        cores=min(chains, os.cpu_count() or 1),
        seed=random_seed,
        save_warmup=False,
        progress_bar=progressbar,
        adaptation=adaptation,
        target_accept=target_accept,
    )
    patch_nutpie_idata(idata, model, sampling_time=time.perf_counter() - started)
    return idata


def _attempt_record(settings: SamplerSettings, report: ConvergenceReport) -> dict[str, Any]:
    return {
        **asdict(settings),
        "converged": report.ok,
        "max_rhat": report.max_rhat,
        "min_ess": report.min_ess,
        "divergences": report.divergences,
    }


def _extended(settings: SamplerSettings, report: ConvergenceReport) -> SamplerSettings:
    """The next attempt after a failed check: twice the warm-up and draws, and after
    divergent transitions a higher target acceptance (smaller steps)."""
    raised = min(0.99, max(0.95, settings.target_accept + 0.04))
    accept = max(settings.target_accept, raised) if report.divergences else None
    return settings.with_overrides(
        tune=2 * max(settings.tune, 500), draws=2 * settings.draws, target_accept=accept
    )


def build_model(runs: pd.DataFrame, spec: ModelSpec | HyperSpec) -> tuple[pm.Model, pd.DataFrame]:
    """The PyMC model of ``spec`` for validated measurement runs, and the run table to store
    (a hyperparameter fit adds the ``off_bowl`` flag of grid runs it leaves out)."""
    if isinstance(spec, HyperSpec):
        from bayes_scaling.hyper_model import assign_cells, create_hyper_model, flag_off_bowl

        assign_cells(runs)  # refuse missing lr / batch and lonely cells before flagging
        runs = runs.assign(off_bowl=flag_off_bowl(runs, spec.off_bowl_above).to_numpy())
        kept = runs[~runs["off_bowl"]]
        try:
            assign_cells(kept)
        except RunTableError as error:  # a cell left with one run once blown-up runs are out
            note = "; the cell's other runs blew up (off the bowl) and are left out"
            problems = [RunProblem(p.message + note, p.row, p.column) for p in error.problems]
            raise RunTableError(problems, error.origin) from error
        return create_hyper_model(kept, spec), runs
    return create_loss_model(runs, spec), runs


def fit(
    runs: pd.DataFrame,
    spec: ModelSpec | HyperSpec | None = None,
    random_seed: int = 0,
    progressbar: bool = True,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> Posterior:
    """Build the model ``spec`` describes for ``runs``, sample it, and check convergence.

    Parameters
    ----------
    runs
        A run table. Trainer runs with ``status = "diverged"`` are not measurements: they are
        left out, and their ids recorded in ``Posterior.sampler["left_out_diverged"]``.
    spec
        The hypothesis (default: the experts law, hierarchical over arch). Its ``[sampler]``
        section gives the sampler settings.
    random_seed
        The same seed gives the same posterior.
    log
        Called with a line of text when a run is left out or the fit is extended.
    **settings
        Overrides of :class:`~bayes_scaling.spec.SamplerSettings` fields (``draws``, ``tune``,
        ``chains``, ``sampler``, ``target_accept``, ``adaptation``, ``extend``).

    Returns
    -------
    Posterior
        With ``sampler`` recording the settings, the seed and every attempt. When the
        convergence check fails, the fit is repeated up to ``extend`` times with twice the
        warm-up and draws (see :func:`_extended`); the last attempt is returned either way.
    """
    spec = spec or ModelSpec()
    try:
        current = spec.sampler.with_overrides(**settings)
    except TypeError as error:
        raise SpecError(f"unknown sampler setting: {error}") from error
    runs, diverged = split_diverged(validate_runs(runs))
    say = log or (lambda message: None)
    if len(diverged):
        say(f"left out {len(diverged)} diverged trainer run(s) (status = 'diverged')")
    if runs.empty:
        raise RunTableError([RunProblem("every run has status 'diverged'; nothing to fit")])
    model, stored = build_model(runs, spec)
    stored = stored.reset_index(drop=True)
    attempts: list[dict[str, Any]] = []
    for attempt in range(current.extend + 1):
        idata = sample(
            model,
            draws=current.draws,
            tune=current.tune,
            chains=current.chains,
            random_seed=random_seed,
            sampler=current.sampler,
            target_accept=current.target_accept,
            progressbar=progressbar,
            adaptation=current.adaptation,
        )
        report = check_convergence(idata)
        attempts.append(_attempt_record(current, report))
        if report.ok or attempt == current.extend:
            break
        current = _extended(current, report)
        say(
            f"convergence check failed ({str(report).splitlines()[0]}); sampling again with "
            f"tune={current.tune}, draws={current.draws}, target_accept={current.target_accept}"
        )
    # The top level describes the draws saved (the last attempt); what was asked is kept too.
    record = {
        **asdict(current),
        "requested": asdict(spec.sampler.with_overrides(**settings)),
        "random_seed": random_seed,
        "attempts": attempts,
        "left_out_diverged": diverged["run_id"].tolist(),
    }
    posterior = Posterior(spec, stored, idata, record, report)
    if isinstance(spec, ModelSpec):
        add_log_likelihood(posterior)
        _check_noise(posterior, say)
    return posterior


# Below 2 degrees of freedom the Student-t noise has no variance: the "noise" is then mostly
# runs the law does not describe (misfit), not run-to-run variation.
HEAVY_TAILS_NU = 2.0


def _check_noise(posterior: Posterior, say: Callable[[str], None]) -> None:
    """Warn when the fitted run noise is so heavy-tailed that it absorbs law misfit."""
    nu = float(np.median(posterior.draws("nu")))
    if nu < HEAVY_TAILS_NU:
        message = (
            f"the run noise's degrees of freedom are {nu:.2g} (median) < {HEAVY_TAILS_NU:g}: "
            "its tails absorb runs the law does not describe (misfit), not run-to-run noise; "
            "look at the residuals, compare laws (`bayes-scaling compare`) and trust new-run "
            "intervals inside the data less"
        )
        say(f"warning: {message}")
        warnings.warn(message, stacklevel=3)


def add_log_likelihood(posterior: Posterior) -> Posterior:
    """Store each run's pointwise log likelihood (group ``log_likelihood``, variable
    ``log_loss``, dims chain, draw, run) for PSIS-LOO: nutpie's results do not carry it, and
    a numpy evaluation of the model's density costs no compilation."""
    from bayes_scaling.predict import log_likelihood

    post = posterior.idata["posterior"]
    shape = (post.sizes["chain"], post.sizes["draw"], len(posterior.runs))
    values = log_likelihood(posterior, posterior.runs).reshape(shape)
    run = posterior.runs["run_id"].astype(str).to_numpy()
    coords = {"chain": post["chain"].to_numpy(), "draw": post["draw"].to_numpy(), "run": run}
    array = xr.DataArray(values, dims=("chain", "draw", "run"), coords=coords)
    posterior.idata["log_likelihood"] = xr.DataTree(xr.Dataset({"log_loss": array}))
    return posterior
