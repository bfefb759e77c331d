"""Where data set files live: bundled inside the package, or found beside the project."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["DataFileMissingError", "bundled", "external"]

# The environment variable that points at a folder laid out like ``shared/data``.
DATA_DIR_ENV = "BAYES_SCALING_DATA"


class DataFileMissingError(FileNotFoundError):
    """A data set whose licence forbids bundling was not found; the message says where to get it."""


def bundled(filename: str) -> Path:
    """Path of a file bundled in ``bayes_scaling/datasets/data``."""
    return Path(str(resources.files("bayes_scaling.datasets") / "data" / filename))


def _candidates(folder: str) -> list[Path]:
    """Folders that may hold ``folder``: $BAYES_SCALING_DATA, then ``../shared/data`` upwards."""
    found = []
    if os.environ.get(DATA_DIR_ENV):
        found.append(Path(os.environ[DATA_DIR_ENV]) / folder)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in [start, *start.parents]:
            found.append(parent / "shared" / "data" / folder)
            found.append(parent.parent / "shared" / "data" / folder)
    return found


def external(folder: str, filename: str, path: str | os.PathLike[str] | None, url: str) -> Path:
    """Locate an unbundled file: the given ``path``, else the first candidate folder holding it.

    Raises
    ------
    DataFileMissingError
        Naming the places searched and where to download the file.
    """
    if path is not None:
        given = Path(path)
        if given.is_dir():
            given = given / filename
        if not given.exists():
            raise DataFileMissingError(f"{given} does not exist; download {filename} from {url}")
        return given
    for candidate in _candidates(folder):
        if (candidate / filename).exists():
            return candidate / filename
    raise DataFileMissingError(
        f"{filename} not found. Its source gives no licence, so it is not bundled: download it "
        f"from {url} and pass its path (path=... or --path), or set {DATA_DIR_ENV} to a folder "
        f"holding {folder}/{filename}."
    )
