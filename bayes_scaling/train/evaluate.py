"""The fixed evaluation: the same validation tokens for every run, with a standard error.

The validation split is cut into consecutive, non-overlapping windows of ``seq_len + 1``
tokens from its start (all of them, or the first ``eval_tokens`` worth), rounded down to a
multiple of 64 windows so that every router sees the same tokens (Mixture of Tokens needs whole
groups; groups of up to 64 sequences divide it). The loss is the mean over every predicted
token; it does not depend on the training batch size, the evaluation batch size or the seed,
only on the model (a test evaluates one model at several batch sizes).

Its standard error is the batch-means estimate over 32 contiguous blocks of windows: the
validation text is whole files, so neighbouring windows are correlated and a per-window
standard error would be too small. It measures how far the mean could move on another draw of
validation text of this size. Two runs are scored on the same tokens, so the noise of a
difference between them is far smaller than either standard error: the row keeps the 32 block
means (``eval_blocks``), and the standard error of a difference between two runs is that of
their 32 paired block differences (:func:`paired_se`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the torch convention)

from bayes_scaling.train.data import Corpus

__all__ = ["BLOCKS", "WINDOW_MULTIPLE", "eval_windows", "evaluate", "paired_se"]

WINDOW_MULTIPLE = 64  # windows are a multiple of this (whole Mixture-of-Tokens groups)
BLOCKS = 32  # contiguous blocks for the batch-means standard error


def eval_windows(corpus: Corpus, seq_len: int, eval_tokens: int = 0) -> torch.Tensor:
    """The evaluation windows (W, seq_len + 1), int64, from the start of the validation split."""
    data = corpus.splits["val"]
    available = (len(data) - 1) // seq_len
    wanted = available if not eval_tokens else min(available, max(1, eval_tokens // seq_len))
    count = wanted // WINDOW_MULTIPLE * WINDOW_MULTIPLE
    if count == 0:
        raise ValueError(
            f"the validation split ({len(data)} tokens) holds fewer than {WINDOW_MULTIPLE} "
            f"windows of {seq_len} tokens"
        )
    starts = np.arange(count) * seq_len
    windows = np.stack([data[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(windows)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    windows: torch.Tensor,
    batch: int,
    device: torch.device,
    autocast: torch.autocast,
) -> tuple[float, float, list[float]]:
    """Mean loss (nats per token) over ``windows``, its batch-means standard error, and the
    mean loss of each of the 32 blocks (for paired comparisons between runs).

    ``batch`` windows go through the model at a time (rounded down to whole token groups of
    the model; the result does not depend on it).
    """
    group = getattr(getattr(model, "config", None), "token_group", 1)
    batch = max(group, batch // group * group)
    was_training = model.training
    model.eval()
    per_window = []
    for start in range(0, len(windows), batch):
        chunk = windows[start : start + batch].to(device)
        with autocast:
            logits = model(chunk[:, :-1]).logits
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), chunk[:, 1:].reshape(-1), reduction="none"
        )
        per_window.append(losses.view(chunk.shape[0], -1).mean(dim=1).double().cpu())
    model.train(was_training)
    values = torch.cat(per_window).numpy()
    blocks = np.array([b.mean() for b in np.array_split(values, min(BLOCKS, len(values)))])
    se = float(blocks.std(ddof=1) / math.sqrt(len(blocks))) if len(blocks) > 1 else math.nan
    return float(values.mean()), se, blocks.tolist()


def paired_se(blocks_a: str | list[float], blocks_b: str | list[float]) -> float:
    """The evaluation's standard error of the loss difference between two runs scored on the
    same windows, from their block means (lists, or the rows' space-separated ``eval_blocks``)."""
    a, b = (np.array(x.split() if isinstance(x, str) else x, float) for x in (blocks_a, blocks_b))
    return float((a - b).std(ddof=1) / math.sqrt(len(a)))
