"""Accuracy posterior files: one netCDF file per accuracy posterior (draws, fitted rows, spec,
the two-stage path's loss posterior and a checksum), read back without unpickling anything and
refused, naming the file, when foreign or damaged."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import xarray as xr

from bayes_scaling._io import writing
from bayes_scaling.posterior import (
    Posterior,
    PosteriorFileError,
    _checksum,
    _open,
    _runs_from_dataset,
    _runs_to_dataset,
    _storable,
)

__all__ = [
    "ACCURACY_FORMAT",
    "AccuracyFileError",
    "is_accuracy_file",
    "read_accuracy",
    "save_accuracy",
]

ACCURACY_FORMAT = "bayes_scaling.accuracy"


class AccuracyFileError(ValueError):
    """A file that is not an accuracy posterior, or one whose contents are damaged."""


def save_accuracy(posterior: Any, path: str | os.PathLike[str]) -> Path:
    """Write an :class:`~bayes_scaling.downstream.AccuracyPosterior` to ``path`` (a temporary
    name, then renamed: nothing half-written)."""
    groups = {"posterior": _storable(posterior.idata["posterior"].to_dataset()),
              "table": _runs_to_dataset(posterior.table)}  # fmt: skip
    attrs = {"format": ACCURACY_FORMAT, "format_version": "1",
             "spec": json.dumps(asdict(posterior.spec), sort_keys=True),
             "tasks": json.dumps(posterior.tasks)}  # fmt: skip
    if posterior.loss is not None:
        groups["loss_posterior"] = _storable(posterior.loss.idata["posterior"].to_dataset())
        groups["loss_runs"] = _runs_to_dataset(posterior.loss.runs)
        attrs["loss_spec"] = posterior.loss.spec.to_json()
    tree = xr.DataTree.from_dict(groups)
    tree.attrs = {**attrs, "checksum": _checksum(tree, attrs)}
    path = Path(path)
    with writing(path) as temporary:
        tree.to_netcdf(temporary, engine="h5netcdf")
    return path


def read_accuracy(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parts of a file written by :func:`save_accuracy`: ``spec`` (the spec's fields),
    ``tasks``, ``table``, ``idata`` and ``loss`` (a loss posterior or None). Anything else, or
    contents that no longer match their checksum, raises :class:`AccuracyFileError`."""
    from bayes_scaling.spec import ModelSpec

    path = Path(path)
    try:
        tree = _open(path)
    except PosteriorFileError as error:
        raise AccuracyFileError(str(error)) from error
    attrs = {str(key): str(value) for key, value in tree.attrs.items()}
    if attrs.get("format") != ACCURACY_FORMAT:
        raise AccuracyFileError(f"{path}: not an accuracy posterior (format {ACCURACY_FORMAT!r})")
    stored = attrs.pop("checksum", "")
    if stored != _checksum(tree, attrs):
        raise AccuracyFileError(f"{path}: contents do not match their checksum (damaged)")
    try:
        fields: dict[str, Any] = json.loads(attrs["spec"])
        fields["tasks"] = tuple(fields.get("tasks", ()))
        loss = None
        if "loss_spec" in attrs:
            loss = Posterior(
                ModelSpec.from_json(attrs["loss_spec"]),
                _runs_from_dataset(tree["loss_runs"].to_dataset()),
                xr.DataTree.from_dict({"posterior": tree["loss_posterior"].to_dataset()}),
            )
        return {
            "spec": fields,
            "tasks": list(json.loads(attrs["tasks"])),
            "table": _runs_from_dataset(tree["table"].to_dataset()),
            "idata": xr.DataTree.from_dict({"posterior": tree["posterior"].to_dataset()}),
            "loss": loss,
        }
    except (KeyError, TypeError, ValueError) as error:
        raise AccuracyFileError(f"{path}: incomplete accuracy posterior ({error})") from error


def is_accuracy_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a netCDF file written by :func:`save_accuracy` (False for anything
    unreadable: the loss-posterior reader then says what is wrong)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("format", b"")
    except (OSError, ValueError):
        return False
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text == ACCURACY_FORMAT
