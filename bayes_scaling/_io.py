"""Atomic file writes: a file is either its old self or complete, never half written.

Every writer in the package (run tables, posteriors, checkpoints, the trainer's corpus and run
rows, benchmark tables) goes through :func:`atomic_write`: it writes a temporary file beside the
target, flushes it to disk, gives it the permissions a plain ``open`` would have given under the
current umask (``tempfile.mkstemp`` creates files readable by the owner only), and renames it
over the target. On any failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputPathError", "atomic_write", "check_writable", "writing"]


class OutputPathError(ValueError):
    """An output path that cannot be written (missing parent that cannot be made, no permission,
    a folder in the way); raised before any expensive work starts."""


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse an output path that cannot be written, before the work that produces it.

    Creates the parent folder when missing (as the writers would), then proves a file can be
    created there by making and removing a temporary one.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputPathError(f"{what} {path} cannot be written: {error.strerror}") from error
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path} exists and is not writable")
    return path


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    For writers that insist on a file name (``to_netcdf``, ``torch.save``, ``to_parquet``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike[str], data: bytes | str | Callable[[Path], object]
) -> Path:
    """Write ``data`` (bytes, text, or a function that writes a given path) to ``path``
    atomically, with umask permissions; returns ``path``."""
    path = Path(path)
    with writing(path) as temporary:
        if isinstance(data, bytes):
            temporary.write_bytes(data)
        elif isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            data(temporary)
    return path
