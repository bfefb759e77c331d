"""Training data with no network: byte-level tokens of a real text corpus, memory-mapped.

The default corpus is the Python standard library's own ``.py`` sources of the running
interpreter (about 30 MB of real, varied text under the PSF licence, present on every machine
that runs this package). Files are read in sorted path order and split by file, never inside
one: a file goes to validation when the first byte of the SHA-1 of its relative path is below
``256 * val_fraction``, so the split is deterministic and the same on every machine with the
same Python version. Tokens are bytes (vocabulary 256) stored as ``uint8`` in ``train.bin`` and
``val.bin`` and read through ``numpy.memmap``, as nanoGPT does.

A prepared folder's ``meta.json`` records what it was built from (the source, ``val_fraction``
and a fingerprint of the source files), and :func:`prepare_corpus` reuses the folder only for
the same request, so a data folder built from one corpus never silently trains on another.

Batches are drawn at random offsets from a generator seeded by (seed, step, rank), so a resumed
run sees exactly the batches it would have seen, and data parallel ranks see different ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayes_scaling._io import atomic_write

__all__ = ["Corpus", "CorpusError", "corpus_request", "prepare_corpus", "stdlib_files"]

STDLIB = "python-stdlib"


class CorpusError(ValueError):
    """A corpus folder built from another source, an incomplete one, or too little text."""


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The ``.py`` files of the interpreter's standard library (tests and site-packages
    excluded), sorted."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    skipped = {"site-packages", "dist-packages", "test", "tests"}
    # Parts below the root only: a root that itself lies in site-packages keeps its files.
    files = [p for p in root.rglob("*.py") if not skipped & set(p.relative_to(root).parts[:-1])]
    return sorted(files)


def _source_files(source: Path | None) -> tuple[Path, list[Path]]:
    """(root, files) of a request: one text file, a folder of ``.py`` files or the stdlib."""
    if source is not None and source.is_file():
        return source.parent, [source]
    root = source or Path(sysconfig.get_paths()["stdlib"])
    paths = stdlib_files(root)
    if not paths:
        raise FileNotFoundError(f"no .py files under {root}")
    return root, paths


def corpus_request(
    source: str | os.PathLike[str] | None = None, val_fraction: float = 0.05
) -> dict[str, Any]:
    """What a corpus built from ``source`` records in ``meta.json`` to be recognised again.

    The fingerprint hashes each source file's relative path and size (a stat, not a read, as
    every run of a sweep asks for its corpus): it catches another source, added or removed
    files and changed sizes, though not an edit that keeps every size.
    """
    source_path = Path(source).resolve() if source is not None else None
    root, paths = _source_files(source_path)
    listing = hashlib.sha256()
    total = 0
    for path in paths:
        size = path.stat().st_size
        listing.update(f"{path.relative_to(root)}\t{size}\n".encode())
        total += size
    return {
        "source": str(source_path) if source_path is not None else STDLIB,
        "val_fraction": val_fraction,
        "fingerprint": {"files": len(paths), "bytes": total, "sha256": listing.hexdigest()},
    }


def _describe(meta: dict[str, Any]) -> str:
    """One readable line of what a corpus was (or is to be) built from."""
    recorded = meta.get("fingerprint") or {}
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return f"{meta.get('source')} (no fingerprint recorded: an older or foreign folder)"
    return (
        f"{meta.get('source')} (val_fraction {meta.get('val_fraction')}, {recorded.get('files')} "
        f"files, {recorded.get('bytes')} bytes, listing sha256 {str(recorded['sha256'])[:12]})"
    )


def _mismatch(out: Path, request: dict[str, Any]) -> str | None:
    """None when ``out`` holds a complete corpus built for ``request``; else what differs."""
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"its meta.json is not valid JSON ({error})"
    if not isinstance(meta, dict):
        return "its meta.json is not a JSON object"
    if any(meta.get(key) != value for key, value in request.items()):
        return f"it was built from {_describe(meta)} but {_describe(request)} was requested"
    for split in ("train", "val"):
        path = out / f"{split}.bin"
        size = path.stat().st_size if path.exists() else None
        expected = meta.get(f"{split}_tokens")
        if size != expected:
            return f"{path.name} has {size} bytes where meta.json says {expected}"
    return None


def prepare_corpus(
    out_dir: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.05,
    rebuild_stale: bool = False,
) -> Path:
    """Write ``train.bin``, ``val.bin`` and ``meta.json`` under ``out_dir``, or reuse them.

    Parameters
    ----------
    out_dir
        The corpus folder. An existing one is reused when its ``meta.json`` records the same
        source, ``val_fraction`` and source fingerprint (:func:`corpus_request`).
    source
        A folder of ``.py`` files (default: the standard library) or one text file, which is
        then split at the byte ``(1 - val_fraction) * size``.
    val_fraction
        Share of the text held out for validation.
    rebuild_stale
        Rebuild a folder built for another request instead of refusing it. Only for folders the
        package owns (the trainer's cache); a folder the user named may be shared by other
        sweeps, so it is never overwritten silently.

    Raises
    ------
    CorpusError
        When ``out_dir`` holds a corpus built from something else (and not ``rebuild_stale``).
    """
    out = Path(out_dir)
    request = corpus_request(source, val_fraction)
    if (out / "meta.json").exists():
        difference = _mismatch(out, request)
        if difference is None:
            return out
        if not rebuild_stale:
            raise CorpusError(
                f"corpus folder {out}: {difference}. Delete the folder to rebuild it, or pass "
                "another --data-dir (data_dir) for this source"
            )
    out.mkdir(parents=True, exist_ok=True)
    source_path = Path(request["source"]) if request["source"] != STDLIB else None
    root, paths = _source_files(source_path)
    train, val = bytearray(), bytearray()
    if source_path is not None and source_path.is_file():
        text = source_path.read_bytes()
        cut = int(len(text) * (1.0 - val_fraction))
        train += text[:cut]
        val += text[cut:]
    else:
        for path in paths:
            relative = str(path.relative_to(root)).encode()
            to_val = hashlib.sha1(relative).digest()[0] < 256 * val_fraction
            (val if to_val else train).extend(path.read_bytes() + b"\n")
    if not val or not train:
        raise CorpusError(f"{request['source']}: too little text for a train / validation split")
    atomic_write(out / "train.bin", bytes(train))
    atomic_write(out / "val.bin", bytes(val))
    meta = {
        **request,
        "files": len(paths),
        "train_tokens": len(train),
        "val_tokens": len(val),
        "vocab": 256,
    }
    # Written last: a folder whose meta.json exists holds complete .bin files.
    atomic_write(out / "meta.json", json.dumps(meta, indent=1))
    return out


class Corpus:
    """Memory-mapped byte tokens of a prepared corpus folder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.splits = {
            name: np.memmap(self.folder / f"{name}.bin", dtype=np.uint8, mode="r")
            for name in ("train", "val")
        }

    def batch(
        self, split: str, batch_size: int, seq_len: int, seed: int, step: int, rank: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` windows of ``seq_len + 1`` tokens at offsets drawn from a generator
        seeded by (seed, step, rank): inputs and next-token targets, int64."""
        data = self.splits[split]
        if len(data) <= seq_len + 1:
            raise ValueError(f"{split} split has {len(data)} tokens; seq_len is {seq_len}")
        rng = np.random.default_rng([seed, step, rank, 0 if split == "train" else 1])
        starts = rng.integers(0, len(data) - seq_len - 1, batch_size)
        windows = np.stack([data[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        tensor = torch.from_numpy(windows)
        return tensor[:, :-1], tensor[:, 1:]
