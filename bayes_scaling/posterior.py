"""A fitted model as one labelled object, one self-describing netCDF file, and its convergence.

A posterior file is an ``xarray.DataTree`` written with h5netcdf. Its groups are ArviZ's
(``posterior``, ``sample_stats``, ``observed_data``, ``log_likelihood`` when present) plus
``runs``, the run table the model saw (dim ``row``, one variable per column). Its attributes say
what it is: ``format`` (always :data:`FILE_FORMAT`), ``format_version``, the package version,
the hypothesis (``spec``, JSON), the sampler settings (``sampler``, JSON) and ``checksum``, a
SHA-256 over every stored value, verified when the file is loaded, so a file damaged after it
was written (a zeroed block inside an array shifts an interval silently otherwise) is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from bayes_scaling import __version__
from bayes_scaling._io import writing
from bayes_scaling.discrepancy import DiscrepancyRate
from bayes_scaling.runs import validate_runs
from bayes_scaling.spec import HyperSpec, ModelSpec, SpecError, spec_from_json

__all__ = [
    "FILE_FORMAT",
    "ConvergenceReport",
    "Posterior",
    "PosteriorFileError",
    "check_convergence",
]

FILE_FORMAT = "bayes_scaling.posterior"
FORMAT_VERSION = 2  # 1: run table as a CSV string attribute (before checksums)
# Thresholds of Vehtari et al. 2021 ("Rank-normalization, folding, and localization").
MAX_RHAT = 1.01
MIN_ESS = 400
# The file attributes the checksum covers (the checksum itself is stored beside them).
ATTRIBUTES = ("format", "format_version", "bayes_scaling_version", "spec", "sampler")
# Covered too when present: the discrepancy rate a calibrated fit learned (JSON).
OPTIONAL_ATTRIBUTES = ("discrepancy",)
# The run table's flag of grid runs left out of the hyperparameter fit (far above their cell's
# best); not a trainer divergence, which the run table marks as ``status = "diverged"``.
OFF_BOWL = "off_bowl"


class PosteriorFileError(ValueError):
    """A file that is not a readable, intact posterior written by this package."""


@dataclass(frozen=True)
class ConvergenceReport:
    """R-hat, bulk ESS and sampler divergences of a fit, with what to try when it failed."""

    max_rhat: float
    min_ess: float
    divergences: int
    bad_rhat: tuple[str, ...]
    bad_ess: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when R-hat <= 1.01 and bulk ESS >= 400 everywhere and no transition diverged."""
        return not (self.bad_rhat or self.bad_ess or self.divergences)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "ok": self.ok,
            "max_rhat": self.max_rhat,
            "min_ess": self.min_ess,
            "divergences": self.divergences,
            "bad_rhat": list(self.bad_rhat),
            "bad_ess": list(self.bad_ess),
        }

    def __str__(self) -> str:
        head = (
            f"max R-hat {self.max_rhat:.3f}, min bulk ESS {self.min_ess:.0f}, "
            f"{self.divergences} divergent transitions"
        )
        if self.ok:
            return f"converged: {head}"
        lines = [f"NOT converged: {head}"]
        if self.bad_rhat:
            lines.append(f"  R-hat > {MAX_RHAT}: {', '.join(self.bad_rhat[:12])}")
        if self.bad_ess:
            lines.append(f"  bulk ESS < {MIN_ESS}: {', '.join(self.bad_ess[:12])}")
        advice = "more --tune and --draws; "
        if self.divergences:
            advice += "a higher --target-accept or tighter priors (divergences); "
        advice += "and, only if the pooling is 'separate', 'hierarchical' for archs with few runs"
        lines.append(f"  try: {advice}")
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
    posterior = idata["posterior"].to_dataset()
    posterior = posterior[_parameter_names(posterior)]
    # Deterministic copies of one sampled value (a pooled parameter over its archs) have the
    # same diagnostics; a constant has none (NaN), and NaN is not counted as converged.
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


def _canonical_bytes(values: np.ndarray) -> bytes:
    """A dtype-independent byte image of an array (floats as float64, ints as int64, text)."""
    if values.dtype.kind in "fc":
        return np.ascontiguousarray(values, dtype="float64").tobytes()
    if values.dtype.kind in "iub":
        return np.ascontiguousarray(values, dtype="int64").tobytes()
    if values.dtype.kind == "M":
        return np.ascontiguousarray(values.astype("datetime64[ns]").view("int64")).tobytes()
    return "\x1f".join(str(v) for v in values.ravel().tolist()).encode("utf-8")


def _checksum(tree: xr.DataTree, attrs: dict[str, str]) -> str:
    """SHA-256 over the identifying attributes and every variable and coordinate of every
    group, in a fixed order, independent of how netCDF stores the dtypes."""
    digest = hashlib.sha256()
    for key in sorted(attrs):
        digest.update(f"{key}={attrs[key]}\n".encode())
    for group in sorted(tree.groups):
        dataset = tree[group].to_dataset()
        for name in sorted(map(str, dataset.variables)):
            array = dataset[name]
            digest.update(f"{group}/{name}{array.dims}{array.shape}\n".encode())
            digest.update(_canonical_bytes(np.asarray(array.values)))
    return digest.hexdigest()


def _runs_to_dataset(runs: pd.DataFrame) -> xr.Dataset:
    """The run table as a Dataset over ``row``: one variable per column, named by position
    (a column name may hold characters netCDF refuses, such as '/'), with the column's name,
    pandas dtype and, for text, the rows that were missing in its attributes."""
    data = {}
    for position, column in enumerate(runs.columns):
        series = runs[column]
        attrs: dict[str, Any] = {"name": str(column), "pandas_dtype": str(series.dtype)}
        if str(series.dtype) in ("Int64", "boolean"):
            values = series.astype("float64").to_numpy()
        elif series.dtype.kind in "fiub":
            values = series.to_numpy()
        else:
            missing = series.isna().to_numpy()
            attrs["missing_rows"] = np.flatnonzero(missing).astype("int64")
            text = ["" if gap else str(v) for v, gap in zip(series, missing, strict=True)]
            values = np.array(text, dtype=object)
        data[f"column_{position:04d}"] = xr.Variable(("row",), values, attrs=attrs)
    return xr.Dataset(data)


def _is_numeric(dtype: str) -> bool:
    """Whether a stored pandas dtype name is a number or boolean type (restored as such)."""
    if dtype in ("Int64", "boolean"):
        return True
    try:
        return np.dtype(dtype).kind in "fiub"
    except TypeError:  # pandas' own names: "str", "string", "category", ...
        return False


def _runs_from_dataset(dataset: xr.Dataset) -> pd.DataFrame:
    """Inverse of :func:`_runs_to_dataset`: names, dtypes and missing text cells restored."""
    columns = {}
    for key in sorted(map(str, dataset.data_vars)):
        array = dataset[key]
        dtype = str(array.attrs.get("pandas_dtype", "object"))
        values = array.to_numpy()
        if _is_numeric(dtype):
            series = pd.Series(values).astype(dtype)
        else:
            series = pd.Series([str(v) for v in values], dtype=object)
            series.iloc[np.atleast_1d(array.attrs.get("missing_rows", [])).astype(int)] = None
        columns[str(array.attrs.get("name", key))] = series
    return pd.DataFrame(columns)


def _storable(dataset: xr.Dataset) -> xr.Dataset:
    """Text-valued variables as fixed strings (``None`` as ""), so what is read back is what
    was hashed: netCDF stores an object array of ``None`` (nutpie's divergence messages) as NaN."""
    out = dataset.copy()
    for name in list(out.variables):
        if out[name].dtype == object:
            text = np.vectorize(lambda v: "" if v is None else str(v), otypes=[str])
            out[name] = out[name].copy(data=text(out[name].to_numpy()))
    return out


def _open(path: Path) -> xr.DataTree:
    """Read a whole netCDF tree, turning every way a foreign or damaged file fails into one
    :class:`PosteriorFileError`."""
    if not path.exists():
        raise FileNotFoundError(f"posterior file {path} does not exist")
    if path.is_dir():
        raise PosteriorFileError(f"{path} is a folder, not a posterior file")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as tree:
            return tree.load()
    except Exception as error:  # h5py / h5netcdf raise OSError, ValueError, KeyError, ...
        raise PosteriorFileError(
            f"{path}: not a readable netCDF posterior file ({type(error).__name__}: {error}); "
            "it may be truncated or not written by `bayes-scaling fit`"
        ) from error


@dataclass
class Posterior:
    """A fitted model (loss law or hyperparameter law): its spec, the run table it saw, the
    inference DataTree and the sampler settings that produced it.

    For a hyperparameter fit the run table has an ``off_bowl`` column: grid runs far above their
    cell's best, kept in the table but left out of the likelihood.
    """

    spec: ModelSpec | HyperSpec
    runs: pd.DataFrame
    idata: xr.DataTree
    sampler: dict[str, Any] = field(default_factory=dict)
    report: ConvergenceReport | None = field(default=None, repr=False, compare=False)
    # The extrapolation discrepancy's rate learned for this fit (bayes_scaling.calibration);
    # None: predictions use the population prior shipped with the package.
    discrepancy: DiscrepancyRate | None = field(default=None, repr=False, compare=False)
    # Within-data backtests already run on this fit, by (cut, fractions): their evidence
    # (bayes_scaling.calibration.Evidence), kept in memory so calibration and extrapolation
    # stacking share one set of refits. Not saved.
    within: dict[tuple[str, tuple[float, ...]], list[Any]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def convergence(self) -> ConvergenceReport:
        """The convergence report of this fit (computed once: :func:`bayes_scaling.fit.fit`
        hands over the one its check made)."""
        if self.report is None:
            self.report = check_convergence(self.idata)
        return self.report

    def _attrs(self) -> dict[str, str]:
        """The identifying attributes (:data:`ATTRIBUTES`) covered by the checksum."""
        attrs = {
            "format": FILE_FORMAT,
            "format_version": str(FORMAT_VERSION),
            "bayes_scaling_version": str(self.idata.attrs.get("bayes_scaling_version", "")),
            "spec": self.spec.to_json(),
            "sampler": json.dumps(self.sampler, sort_keys=True),
        }
        if self.discrepancy is not None:
            attrs["discrepancy"] = json.dumps(self.discrepancy.to_dict(), sort_keys=True)
        return attrs

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one netCDF file holding the draws, spec, sampler settings, package version,
        run table and checksum. Written to a temporary name and renamed: a failure leaves
        nothing behind and an existing file untouched."""
        path = Path(path)
        groups = {
            name: _storable(self.idata[name].to_dataset())
            for name in self.idata.groups
            if name not in ("/", "/runs") and self.idata[name].has_data
        }
        tree = xr.DataTree.from_dict(
            {
                **{name.lstrip("/"): ds for name, ds in groups.items()},
                "runs": _runs_to_dataset(self.runs),
            }
        )
        self.idata.attrs.setdefault("bayes_scaling_version", __version__)
        attrs = self._attrs()
        tree.attrs = {**attrs, "checksum": _checksum(tree, attrs)}
        with writing(path) as temporary:
            tree.to_netcdf(temporary, engine="h5netcdf")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Posterior:
        """Read a file written by :meth:`save`, refusing anything else with a
        :class:`PosteriorFileError` that says what is wrong: not netCDF, not a posterior, a
        newer format, missing groups, or contents that no longer match their checksum."""
        path = Path(path)
        tree = _open(path)
        attrs = {key: str(value) for key, value in tree.attrs.items()}
        if attrs.get("format") != FILE_FORMAT:
            old = "runs" in attrs and "spec" in attrs
            raise PosteriorFileError(
                f"{path}: "
                + (
                    "written by an older bayes_scaling (format 1, no checksum); refit it"
                    if old
                    else f"not a bayes_scaling posterior (no format attribute {FILE_FORMAT!r})"
                )
            )
        version_text = attrs.get("format_version", "0")
        version = int(version_text) if version_text.isdigit() else -1
        if version != FORMAT_VERSION:
            raise PosteriorFileError(
                f"{path}: posterior format {version}; this bayes_scaling "
                f"({__version__}) reads format {FORMAT_VERSION}"
            )
        missing = [
            key
            for key in ("spec", "sampler", "checksum", "bayes_scaling_version")
            if key not in attrs
        ] + [group for group in ("posterior", "runs") if group not in tree.children]
        if missing:
            raise PosteriorFileError(f"{path}: incomplete posterior file, missing {missing}")
        stored = attrs.pop("checksum")
        covered = [*ATTRIBUTES, *(k for k in OPTIONAL_ATTRIBUTES if k in attrs)]
        if _checksum(tree, {k: attrs[k] for k in covered}) != stored:
            raise PosteriorFileError(
                f"{path}: contents do not match the stored checksum; the file was damaged or "
                "modified after it was written"
            )
        try:
            spec = spec_from_json(attrs["spec"])
            sampler = json.loads(attrs["sampler"])
            rate = attrs.get("discrepancy")
            discrepancy = DiscrepancyRate.from_dict(json.loads(rate)) if rate else None
        except (SpecError, ValueError, KeyError, TypeError) as error:
            raise PosteriorFileError(f"{path}: unreadable stored hypothesis ({error})") from error
        try:
            runs = _runs_from_dataset(tree["runs"].to_dataset())
            extra = {c: runs.pop(c) for c in (OFF_BOWL,) if c in runs}
            runs = validate_runs(runs, origin=f"{path} (stored run table)").assign(**extra)
        except (ValueError, TypeError) as error:  # RunTableError is a ValueError
            raise PosteriorFileError(f"{path}: unreadable stored run table ({error})") from error
        idata = xr.DataTree.from_dict(
            {
                name.lstrip("/"): tree[name].to_dataset()
                for name in tree.groups
                if name not in ("/", "/runs")
            }
        )
        idata.attrs = {"bayes_scaling_version": attrs["bayes_scaling_version"]}
        return cls(spec, runs, idata, sampler, discrepancy=discrepancy)

    @property
    def fitted_runs(self) -> pd.DataFrame:
        """The runs in the likelihood: all of them, less grid runs flagged off the bowl."""
        if OFF_BOWL not in self.runs:
            return self.runs
        return self.runs[~self.runs[OFF_BOWL].astype(bool)].reset_index(drop=True)

    @property
    def off_bowl_runs(self) -> pd.DataFrame:
        """Grid runs left out of a hyperparameter fit (empty for loss-law fits)."""
        if OFF_BOWL not in self.runs:
            return self.runs.iloc[:0]
        return self.runs[self.runs[OFF_BOWL].astype(bool)].reset_index(drop=True)

    @property
    def version(self) -> str:
        """Package version that wrote the posterior (this one's, if not saved yet)."""
        return str(self.idata.attrs.get("bayes_scaling_version", __version__))

    def draws(self, name: str) -> np.ndarray:
        """A posterior variable with chain and draw stacked into one leading ``sample`` axis."""
        array = self.idata["posterior"][name]
        return array.stack(sample=("chain", "draw")).transpose("sample", ...).to_numpy()
