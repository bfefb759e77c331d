"""Sampling, convergence checks, and a fitted model that saves to one netCDF file."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from bayes_scaling import __version__
from bayes_scaling.loss_model import create_loss_model
from bayes_scaling.runs import validate_runs
from bayes_scaling.spec import HyperSpec, ModelSpec, spec_from_json

__all__ = ["ConvergenceReport", "Posterior", "check_convergence", "fit", "sample"]

# Thresholds of Vehtari et al. 2021 ("Rank-normalization, folding, and localization").
MAX_RHAT = 1.01
MIN_ESS = 400


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
    if sampler not in ("nutpie", "pymc"):
        raise ValueError(f"unknown sampler {sampler!r}; expected 'nutpie' or 'pymc'")
    if sampler == "nutpie" and not _nutpie_available():
        warnings.warn("nutpie is not installed; sampling with PyMC's NUTS", stacklevel=2)
        sampler = "pymc"
    options: dict[str, object] = {"target_accept": target_accept}
    if sampler == "nutpie":
        options["adaptation"] = adaptation
    return pm.sample(
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        nuts_sampler=sampler,
        nuts=options,
        progressbar=progressbar,
        model=model,
        **({"cores": min(chains, os.cpu_count() or 1)} if sampler == "pymc" else {}),
    )


@dataclass(frozen=True)
class ConvergenceReport:
    """R-hat, bulk ESS and divergences of a fit, with what to try when it failed."""

    max_rhat: float
    min_ess: float
    divergences: int
    bad_rhat: tuple[str, ...]
    bad_ess: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when R-hat <= 1.01 and bulk ESS >= 400 everywhere and nothing diverged."""
        return not (self.bad_rhat or self.bad_ess or self.divergences)

    def __str__(self) -> str:
        head = (
            f"max R-hat {self.max_rhat:.3f}, min bulk ESS {self.min_ess:.0f}, "
            f"{self.divergences} divergences"
        )
        if self.ok:
            return f"converged: {head}"
        lines = [f"NOT converged: {head}"]
        if self.bad_rhat:
            lines.append(f"  R-hat > {MAX_RHAT}: {', '.join(self.bad_rhat)}")
        if self.bad_ess:
            lines.append(f"  bulk ESS < {MIN_ESS}: {', '.join(self.bad_ess)}")
        lines.append(
            "  try: more --tune and --draws; "
            + (
                "a higher target_accept or tighter priors (divergences); "
                if self.divergences
                else ""
            )
            + "pooling 'hierarchical' instead of 'separate' for archs with few runs"
        )
        return "\n".join(lines)


def _parameter_names(posterior: xr.Dataset) -> list[str]:
    """Posterior variables that are parameters (not per-run quantities)."""
    return [str(name) for name in posterior.data_vars if "run" not in posterior[name].dims]


def _flat_labels(dataset: xr.Dataset) -> dict[str, float]:
    """``name[coord]`` -> value for every element of a dataset of scalars per variable."""
    out = {}
    for name, array in dataset.data_vars.items():
        if array.ndim == 0:
            out[str(name)] = float(array)
            continue
        stacked = array.stack(element=array.dims)
        for index, value in enumerate(stacked.values):
            label = ",".join(str(stacked[d].values[index]) for d in array.dims)
            out[f"{name}[{label}]"] = float(value)
    return out


def check_convergence(idata: xr.DataTree) -> ConvergenceReport:
    """Check R-hat <= 1.01, bulk ESS >= 400 for every parameter and no divergences."""
    posterior = idata["posterior"].to_dataset()[_parameter_names(idata["posterior"].to_dataset())]
    # A constant variable (a pooled parameter repeated over one arch is not; a degenerate one
    # is) has undefined R-hat; treat NaN as converged only when the draws do not vary at all.
    rhat = _flat_labels(az.rhat(posterior))
    ess = _flat_labels(az.ess(posterior, method="bulk"))
    finite_rhat = [v for v in rhat.values() if np.isfinite(v)]
    finite_ess = [v for v in ess.values() if np.isfinite(v)]
    divergences = int(idata["sample_stats"]["diverging"].sum()) if "sample_stats" in idata else 0
    return ConvergenceReport(
        max_rhat=max(finite_rhat, default=float("nan")),
        min_ess=min(finite_ess, default=float("nan")),
        divergences=divergences,
        bad_rhat=tuple(k for k, v in rhat.items() if not v <= MAX_RHAT),
        bad_ess=tuple(k for k, v in ess.items() if not v >= MIN_ESS),
    )


@dataclass
class Posterior:
    """A fitted model (loss law or hyperparameter law): its spec, the run table it saw, and the
    inference DataTree. For a hyperparameter fit the run table has a ``diverged`` column: the
    runs flagged as diverged, kept in the table but left out of the likelihood."""

    spec: ModelSpec | HyperSpec
    runs: pd.DataFrame
    idata: xr.DataTree

    def convergence(self) -> ConvergenceReport:
        """The convergence report of this fit."""
        return check_convergence(self.idata)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one netCDF file holding the draws, spec, package version and run table.

        The file is written to a temporary name and renamed, so a failure leaves nothing.
        """
        path = Path(path)
        tree = self.idata.copy()
        tree.attrs = {
            **tree.attrs,
            "bayes_scaling_version": __version__,
            "spec": self.spec.to_json(),
            # CSV with 17 significant digits round-trips every float64 exactly.
            "runs": self.runs.to_csv(index=False, float_format="%.17g"),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        os.close(handle)
        try:
            tree.to_netcdf(temporary, engine="h5netcdf")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Posterior:
        """Read a file written by :meth:`save`; refuses files that lack the spec or runs."""
        with xr.open_datatree(path, engine="h5netcdf") as tree:
            idata = tree.load()
        missing = [key for key in ("spec", "runs") if key not in idata.attrs]
        if missing:
            raise ValueError(f"{path}: not a bayes_scaling posterior (no {missing} attribute)")
        labels = {"run_id": str, "source": str, "arch": str, "eval_set": str}
        runs = pd.read_csv(io.StringIO(idata.attrs["runs"]), dtype=labels)
        runs = validate_runs(runs, origin=f"{path} (stored run table)")
        if "diverged" in runs:
            runs["diverged"] = runs["diverged"].astype(str).str.lower() == "true"
        return cls(spec_from_json(idata.attrs["spec"]), runs, idata)

    @property
    def fitted_runs(self) -> pd.DataFrame:
        """The runs in the likelihood: all of them, less any flagged as diverged."""
        if "diverged" not in self.runs:
            return self.runs
        return self.runs[~self.runs["diverged"].astype(bool)].reset_index(drop=True)

    @property
    def diverged_runs(self) -> pd.DataFrame:
        """Runs flagged as diverged and left out of the fit (empty for loss-law fits)."""
        if "diverged" not in self.runs:
            return self.runs.iloc[:0]
        return self.runs[self.runs["diverged"].astype(bool)].reset_index(drop=True)

    @property
    def version(self) -> str:
        """Package version that wrote the posterior (this one's, if not saved yet)."""
        return str(self.idata.attrs.get("bayes_scaling_version", __version__))


def fit(
    runs: pd.DataFrame, spec: ModelSpec | HyperSpec | None = None, **sampling: object
) -> Posterior:
    """Build the model ``spec`` describes for ``runs`` and sample it (keywords go to
    :func:`sample`). A hyperparameter spec flags diverged runs first (see
    :func:`bayes_scaling.hyper_model.flag_diverged`): they stay in the posterior's run table
    with ``diverged = True`` and are left out of the likelihood."""
    spec = spec or ModelSpec()
    runs = validate_runs(runs)
    if isinstance(spec, HyperSpec):
        from bayes_scaling.hyper_model import assign_cells, create_hyper_model, flag_diverged

        assign_cells(runs)  # refuse missing lr / batch and lonely cells before flagging
        runs = runs.assign(diverged=flag_diverged(runs, spec.diverged_above).to_numpy())
        model = create_hyper_model(runs[~runs["diverged"]].reset_index(drop=True), spec)
    else:
        model = create_loss_model(runs, spec)
    idata = sample(model, **sampling)  # type: ignore[arg-type]
    return Posterior(spec, runs, idata)
