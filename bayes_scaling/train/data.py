"""Training data with no network: byte-level tokens of a real text corpus, memory-mapped.

The default corpus is the Python standard library's own ``.py`` sources of the running
interpreter (about 30 MB of real, varied text under the PSF licence, present on every machine
that runs this package). Files are read in sorted path order and split by file, never inside
one: a file goes to validation when the first byte of the SHA-1 of its relative path is below
``256 * val_fraction``, so the split is deterministic and the same on every machine with the
same Python version. Tokens are bytes (vocabulary 256) stored as ``uint8`` in ``train.bin`` and
``val.bin`` and read through ``numpy.memmap``, as nanoGPT does.

Batches are drawn at random offsets from a generator seeded by (seed, step, rank), so a resumed
run sees exactly the batches it would have seen, and data parallel ranks see different ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["Corpus", "prepare_corpus", "stdlib_files"]


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The ``.py`` files of the interpreter's standard library (tests and site-packages
    excluded), sorted."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    files = [
        p
        for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts
    ]
    return sorted(files)


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
    os.replace(temporary, path)


def prepare_corpus(
    out_dir: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.05,
) -> Path:
    """Write ``train.bin``, ``val.bin`` and ``meta.json`` under ``out_dir`` (once; reused).

    ``source`` is a folder of ``.py`` files (default: the standard library) or one text file,
    which is then split at the byte ``(1 - val_fraction) * size``.
    """
    out = Path(out_dir)
    if (out / "meta.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    source_path = Path(source) if source is not None else None
    train, val = bytearray(), bytearray()
    if source_path is not None and source_path.is_file():
        text = source_path.read_bytes()
        cut = int(len(text) * (1.0 - val_fraction))
        train += text[:cut]
        val += text[cut:]
        files = 1
    else:
        root = source_path or Path(sysconfig.get_paths()["stdlib"])
        paths = stdlib_files(root)
        if not paths:
            raise FileNotFoundError(f"no .py files under {root}")
        for path in paths:
            relative = str(path.relative_to(root)).encode()
            to_val = hashlib.sha1(relative).digest()[0] < 256 * val_fraction
            (val if to_val else train).extend(path.read_bytes() + b"\n")
        files = len(paths)
    if not val or not train:
        raise ValueError(f"{source}: too little text for a train / validation split")
    _atomic_write(out / "train.bin", bytes(train))
    _atomic_write(out / "val.bin", bytes(val))
    meta = {
        "source": str(source_path or "python-stdlib"),
        "files": files,
        "train_tokens": len(train),
        "val_tokens": len(val),
        "vocab": 256,
    }
    _atomic_write(out / "meta.json", json.dumps(meta, indent=1).encode())
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
