"""The questions a scaling study is run to answer, as a quantity per posterior draw.

A :class:`Question` names what the study is for; :func:`question_draws` gives its value under
each posterior draw, which is what :mod:`bayes_scaling.design` plans runs for. The loss at a
target and the compute optimum come from the loss law's draws; whether MoE beats dense is the
gap between the two archs' optimal ln losses (below zero: MoE wins); the optimal learning rate and
batch size come from a hyperparameter posterior's bowls (:class:`HyperOutcomes` also gives the
bowl's loss at candidate runs, so a plan can simulate their outcomes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import HyperSpec

__all__ = ["QUESTIONS", "DesignError", "HyperOutcomes", "Question", "loss_frame", "question_draws"]

QUESTIONS = ("loss", "optimal-n", "moe-better", "lr-batch")


class DesignError(ValueError):
    """A question or candidate set the posterior cannot answer (the message says which)."""


@dataclass(frozen=True, eq=False)
class Question:
    """What the study is for.

    ``kind`` is one of :data:`QUESTIONS`:

    - ``"loss"``: ln of the expected loss at the ``targets`` (a frame of ``n_active``,
      ``tokens`` and optionally ``arch``, ``experts``, ``eval_set``; with several rows the
      uncertainty is the mean of their variances);
    - ``"optimal-n"``: ln of the compute-optimal ``n_active`` of ``arch`` at ``budget`` FLOPs;
    - ``"moe-better"``: whether compute-optimal ``moe_arch`` has a lower loss than
      ``dense_arch`` at ``budget`` FLOPs, as the gap of their ln losses (MoE minus dense; its
      sign decides, and P(MoE better) is the share of draws below zero);
    - ``"lr-batch"``: ln of the optimal learning rate and batch size (a hyperparameter
      posterior) at the ``targets`` cell (``n_active``, ``tokens``, ``arch``, ``n_total``).
    """

    kind: str
    targets: pd.DataFrame | None = None
    budget: float | None = None
    arch: str | None = None
    moe_arch: str | None = None
    dense_arch: str = "dense"
    eval_set: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in QUESTIONS:
            raise DesignError(f"question {self.kind!r} is not one of {', '.join(QUESTIONS)}")
        if self.kind in ("loss", "lr-batch"):
            if self.targets is None or len(self.targets) == 0:
                raise DesignError(f"question {self.kind!r} needs a target (n_active, tokens)")
            missing = [c for c in ("n_active", "tokens") if c not in self.targets]
            if missing:
                raise DesignError(f"question {self.kind!r}: the target lacks {missing}")
            values = self.targets[["n_active", "tokens"]].to_numpy(float)
            if not (np.isfinite(values).all() and (values > 0).all()):
                raise DesignError("the target's n_active and tokens must be finite and > 0")
        else:
            budget = self.budget
            if budget is None or not math.isfinite(budget) or budget <= 0:
                raise DesignError(f"question {self.kind!r} needs a budget in FLOPs > 0")
        if self.kind == "moe-better" and not self.moe_arch:
            raise DesignError("question 'moe-better' needs the MoE arch (moe_arch)")
        if self.kind == "moe-better" and self.moe_arch == self.dense_arch:
            raise DesignError(f"question 'moe-better' compares {self.moe_arch!r} with itself")

    def describe(self) -> str:
        """One line saying what the question is."""
        if self.kind in ("loss", "lr-batch"):
            assert self.targets is not None
            row = self.targets.iloc[0]
            where = f"N = {row['n_active']:.3g}, D = {row['tokens']:.3g}"
            if "arch" in self.targets:
                where += f", {row['arch']}"
            more = f" (and {len(self.targets) - 1} more)" if len(self.targets) > 1 else ""
            what = "ln expected loss" if self.kind == "loss" else "ln optimal lr and batch"
            return f"{what} at {where}{more}"
        if self.kind == "optimal-n":
            return f"ln compute-optimal N of {self.arch or 'the arch'} at {self.budget:.3g} FLOPs"
        return (
            f"ln loss gap {self.moe_arch} - {self.dense_arch} (compute-optimal; below 0: MoE "
            f"beats dense) at {self.budget:.3g} FLOPs"
        )


def candidate_name(candidates: pd.DataFrame, position: int) -> str:
    """A candidate named for a message: its row counted from 1, and its run id if it has one."""
    name = f" ({candidates['run_id'].iloc[position]})" if "run_id" in candidates else ""
    return f"candidates: row {position + 1}{name}"


def check_positive(candidates: pd.DataFrame, columns: Sequence[str]) -> None:
    """Refuse candidates whose ``columns`` are missing or not finite numbers > 0, naming the
    row (and run id) and the column."""
    for column in columns:
        if column not in candidates:
            raise DesignError(f"candidates: no {column!r} column")
        values = pd.to_numeric(candidates[column], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
        if bad.size:
            value = candidates[column].iloc[int(bad[0])]
            value = value.item() if isinstance(value, np.generic) else value
            raise DesignError(
                f"{candidate_name(candidates, int(bad[0]))}, column {column!r}: {value!r} is not "
                "a finite number > 0"
            )


def loss_frame(posterior: Posterior, frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """``frame`` completed as a prediction request (default arch, eval set, experts), or a
    :class:`DesignError` that says whether the ``what`` ("target", "candidates") is wrong."""
    from bayes_scaling.predict import _points_frame

    try:
        return _points_frame(frame, posterior)
    except ValueError as error:
        raise DesignError(f"{what}: {error}") from error


def hyper_cells(posterior: Posterior, frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """``frame`` completed as cells of a hyperparameter posterior (arch, n_total filled in)."""
    from bayes_scaling.hyper_predict import _planned_cells

    try:
        return _planned_cells(posterior, frame)
    except ValueError as error:
        raise DesignError(f"{what}: {error}") from error


def question_draws(posterior: Posterior, question: Question) -> np.ndarray:
    """The question's quantity per draw, shape (sample, quantity)."""
    hyper = isinstance(posterior.spec, HyperSpec)
    if (question.kind == "lr-batch") != hyper:
        kind = "a hyperparameter" if question.kind == "lr-batch" else "a loss-law"
        raise DesignError(f"question {question.kind!r} needs {kind} posterior")
    if question.kind == "loss":
        from bayes_scaling.predict import law_draws

        assert question.targets is not None
        return law_draws(posterior, loss_frame(posterior, question.targets, "target"))
    if question.kind == "lr-batch":
        bowls = HyperOutcomes(posterior, pd.DataFrame(question.targets), seed=0)
        return np.concatenate([bowls.target_lr, bowls.target_batch], axis=1)
    from bayes_scaling.frontier import arch_expert_counts, arch_law

    log_c = np.log([float(question.budget or 0.0)])[np.newaxis, :]

    def optimum(arch: str | None) -> tuple[np.ndarray, np.ndarray]:
        try:
            law = arch_law(posterior, arch, question.eval_set)
        except ValueError as error:
            raise DesignError(str(error)) from error
        log_n, _, log_loss = law.optimum(log_c, arch_expert_counts(posterior, law.arch)[-1])
        return log_n, log_loss

    if question.kind == "optimal-n":
        return optimum(question.arch)[0]
    return optimum(question.moe_arch)[1] - optimum(question.dense_arch)[1]


class HyperOutcomes:
    """Bowls of a hyperparameter posterior at candidate cells and a target cell: fitted cells
    from their own draws, new cells from the laws plus one deviation draw per cell (a
    candidate in the target's cell shares the target's deviation)."""

    def __init__(self, posterior: Posterior, target: pd.DataFrame, seed: int) -> None:
        self.posterior = posterior
        self.rng = np.random.default_rng(seed)
        self.cells: dict[tuple[Any, ...], tuple[int, int]] = {}
        self._bowls: list[Any] = [None]  # [fitted cells' bowls (computed when needed), new...]
        frame = hyper_cells(posterior, target, "target")
        indices = [self._cell(row) for row in frame.itertuples(index=False)]
        self.target_lr = np.stack([self._field(i, "log_lr_opt") for i in indices], axis=1)
        self.target_batch = np.stack([self._field(i, "log_batch_opt") for i in indices], axis=1)

    def _cell(self, row: Any) -> tuple[int, int]:
        """(source, column) of a cell's bowl: source 0 the fitted cells, others new cells."""
        from bayes_scaling.hyper_model import assign_cells
        from bayes_scaling.hyper_predict import fitted_bowls, new_cell_bowls

        # Cells match to 9 significant digits: a sweep's exact accounting meets a typed target.
        n, total, d = (float(f"{v:.9g}") for v in (row.n_active, row.n_total, row.tokens))
        key = (str(row.arch), n, total, d)
        if key in self.cells:
            return self.cells[key]
        _, fitted = assign_cells(self.posterior.fitted_runs)
        match = np.flatnonzero(
            (fitted["arch"].astype(str) == key[0]).to_numpy()
            & np.isclose(fitted["n_active"].to_numpy(float), key[1])
            & np.isclose(fitted["n_total"].to_numpy(float), key[2])
            & np.isclose(fitted["tokens"].to_numpy(float), key[3])
        )
        if match.size:
            if self._bowls[0] is None:
                self._bowls[0] = fitted_bowls(self.posterior)
            self.cells[key] = (0, int(match[0]))
        else:
            cell = pd.DataFrame(
                [dict(zip(("arch", "n_active", "n_total", "tokens"), key, strict=True))]
            )
            self._bowls.append(new_cell_bowls(self.posterior, cell, self.rng))
            self.cells[key] = (len(self._bowls) - 1, 0)
        return self.cells[key]

    def _field(self, index: tuple[int, int], name: str) -> np.ndarray:
        source, column = index
        return np.asarray(getattr(self._bowls[source], name))[:, column]

    def log_mean(self, candidates: pd.DataFrame) -> np.ndarray:
        """ln expected loss of each candidate (``lr`` and ``batch_tokens`` given), (sample, c)."""
        from bayes_scaling.hyper_model import bowl

        frame = hyper_cells(self.posterior, candidates, "candidates")
        check_positive(frame, ("lr", "batch_tokens"))
        out = []
        for row in frame.itertuples(index=False):
            index = self._cell(row)

            def get(name: str, index: tuple[int, int] = index) -> np.ndarray:
                return self._field(index, name)

            surface = bowl(
                math.log(row.lr) - get("log_lr_opt"),
                math.log(row.batch_tokens) - get("log_batch_opt"),
                get("h_lr"),
                get("h_batch"),
                get("rho"),
                get("skew_lr"),
                get("skew_batch"),
            )
            out.append(get("log_min_loss") + surface)
        return np.stack(out, axis=1)
