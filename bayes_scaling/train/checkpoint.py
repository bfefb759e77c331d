"""Checkpoints of one training run: written atomically, loaded with ``weights_only=True``.

A checkpoint holds the model and optimizer state dicts, the step (which is also the data
position: batches are drawn from a generator seeded by (seed, step, rank)), the last evaluation
loss and torch's RNG state, all as tensors and plain containers, so the weights-only unpickler
accepts it. Anything else (a crafted pickle, a truncated file, another model's checkpoint) is
refused with :class:`CheckpointError` before any of it is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bayes_scaling._io import atomic_write

__all__ = ["CHECKPOINT_KEYS", "CheckpointError", "load_checkpoint", "rng_state", "save_checkpoint",
           "truncate_metrics"]  # fmt: skip

# What a checkpoint holds, and the type of each entry (checked before anything is loaded).
CHECKPOINT_KEYS = {
    "model": dict, "optimizer": dict, "step": int, "last_eval": float, "last_se": float,
    "rng": dict,
}  # fmt: skip


class CheckpointError(ValueError):
    """A ``checkpoint.pt`` that is not a loadable checkpoint of this run (crafted, corrupt, or
    from another model); its message names the file and says how to restart."""


def rng_state() -> dict[str, Any]:
    """The RNG state a resume needs: torch's (and CUDA's), as tensors ``weights_only`` accepts.

    The global numpy and ``random`` states are not saved: nothing in the trainer draws from
    them (weights are initialised by torch, batches come from ``np.random.default_rng`` seeded
    by (seed, step, rank)), and numpy's state tuple is not loadable with ``weights_only``.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int
) -> tuple[int, float, float]:
    """Restore model, optimizer and RNG from ``path``; returns (step, last evaluation loss and
    its standard error)."""
    refused = f"{path} is not a loadable checkpoint of this run (it was not loaded; delete it to "
    refused += "restart the run from step 0): {}"
    try:
        # On the CPU: RNG states must be CPU tensors; load_state_dict moves the rest to device.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as error:  # refused by the weights-only unpickler, not a zip, truncated
        raise CheckpointError(refused.format(_first_line(error))) from error
    if not isinstance(state, dict):
        raise CheckpointError(refused.format(f"a {type(state).__name__}, not a dict"))
    wrong = [key for key, kind in CHECKPOINT_KEYS.items() if not isinstance(state.get(key), kind)]
    if wrong:
        raise CheckpointError(refused.format(f"missing or mistyped {wrong}"))
    if not 0 <= state["step"] <= steps:
        raise CheckpointError(refused.format(f"step {state['step']} outside 0..{steps}"))
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as error:
        message = f"does not match this run's model or optimizer ({_first_line(error)})"
        raise CheckpointError(refused.format(message)) from error
    return state["step"], state["last_eval"], state["last_se"]


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda temporary: torch.save(state, temporary))


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past ``step`` (written after the checkpoint a resume starts from).

    A crash mid-write can leave the last line incomplete; it is past the checkpoint (metrics
    are flushed before each checkpoint) and dropped. An unreadable line before it is refused.
    """
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise CheckpointError(
                f"{path}, line {number}: not valid JSON ({error.msg}); delete the run folder "
                f"{path.parent} to restart this run"
            ) from error
        if record["step"] <= step:
            kept.append(line)
    atomic_write(path, "".join(f"{line}\n" for line in kept))
