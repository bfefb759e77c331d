"""Downstream accuracy laws (Krajewski et al. 2025, arXiv:2512.08894), hierarchical over tasks.

Q is the chance-normalised accuracy (acc - chance) / (1 - chance). Three hypotheses, each a file
in ``bayes_scaling/models/downstream/`` (``kind = "downstream"``):

- ``direct-nd``: -ln Q = A / N^alpha + B / D^beta across tokens-per-parameter ratios;
- ``direct-c``: -ln Q = A / C^alpha at one tokens-per-parameter ratio (each model's checkpoint
  nearest the ratio, within a factor ``ratio_tolerance``);
- ``two-stage``: compute -> loss -> accuracy: the Chinchilla loss law on the table's loss (for
  Pythia, LAMBADA's), then ln(-ln Q) = c + k ln L per task.

Each task has its own coefficients and exponents, drawn around population values (tasks share
how accuracy scales, not its level), and its own Student-t noise on ln(-ln Q). Rows with
Q <= 0 (at or below chance: -ln Q undefined) are not fitted; :func:`accuracy_table` returns them
as ``left_out`` with the reason, never silently.
"""

from __future__ import annotations

import os
import tomllib
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CHANCE",
    "AccuracyPosterior",
    "DownstreamError",
    "DownstreamSpec",
    "accuracy_table",
    "backtest_accuracy",
    "fit_accuracy",
    "read_downstream_spec",
]

CHANCE = {"lambada_openai": 0.0, "arc_easy": 0.25, "arc_challenge": 0.25, "piqa": 0.5,
          "sciq": 0.25, "logiqa": 0.25, "winogrande": 0.5, "wsc": 0.5,
          "mmlu_avg57": 0.25}  # fmt: skip
"""Accuracy of guessing per task: 1 / choices (LAMBADA is open-ended: 0)."""

LAWS = ("direct-nd", "direct-c", "two-stage")
# Reference points the coefficients are centred on (uncorrelated with the slopes near the data).
LOG_N_REF, LOG_D_REF, LOG_C_REF, LOG_L_REF = np.log(1e9), np.log(1e11), np.log(1e21), np.log(2.0)


class DownstreamError(ValueError):
    """A downstream hypothesis file or accuracy table that cannot be used, saying where."""


@dataclass(frozen=True)
class DownstreamSpec:
    """A downstream hypothesis: which law, on which tasks and checkpoints, sampled how."""

    law: str
    tasks: tuple[str, ...] = ("lambada_openai", "arc_easy", "piqa", "sciq")
    name: str = ""
    min_tokens: float = 5e9  # earlier checkpoints sit near chance, where Q is noise
    ratio: float = 20.0  # direct-c: the tokens-per-parameter ratio
    ratio_tolerance: float = 1.5
    draws: int = 1000
    tune: int = 1000
    chains: int = 2
    target_accept: float = 0.9

    def __post_init__(self) -> None:
        if self.law not in LAWS:
            raise DownstreamError(f"unknown downstream law {self.law!r}; expected one of {LAWS}")
        unknown = [t for t in self.tasks if t not in CHANCE]
        if unknown or not self.tasks:
            raise DownstreamError(f"unknown task(s) {unknown or '[]'}; known: {sorted(CHANCE)}")
        for key in ("min_tokens", "ratio", "draws", "tune", "chains"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and value > 0 and np.isfinite(value)):
                raise DownstreamError(f"{key} must be a positive number, not {value!r}")
        for key in ("draws", "tune", "chains"):
            if not isinstance(getattr(self, key), int):
                raise DownstreamError(f"{key} must be a whole number, not {getattr(self, key)!r}")
        if not 0 < self.target_accept < 1:
            raise DownstreamError(f"target_accept must lie in (0, 1), not {self.target_accept}")
        if not self.ratio_tolerance > 1:
            raise DownstreamError(f"ratio_tolerance must exceed 1, not {self.ratio_tolerance}")


_KEYS = {"kind", "description", "law", "tasks", "min_tokens", "ratio", "ratio_tolerance",
         "sampler"}  # fmt: skip
_SAMPLER_KEYS = {"draws", "tune", "chains", "target_accept"}


def read_downstream_spec(name_or_path: str | Path) -> DownstreamSpec:
    """A downstream hypothesis by shipped name (``direct-nd``, ``downstream/direct-nd``) or
    file path; every key checked, errors naming the file and key."""
    text_name = str(name_or_path).removeprefix("downstream/")
    shipped = resources.files("bayes_scaling") / "models" / "downstream" / f"{text_name}.toml"
    path = Path(str(shipped)) if shipped.is_file() else Path(name_or_path)
    if not path.is_file():
        raise DownstreamError(f"{name_or_path}: neither a file nor a shipped downstream hypothesis")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise DownstreamError(f"{path}: not valid TOML ({error})") from error
    unknown = set(data) - _KEYS
    if unknown:
        raise DownstreamError(f"{path}: unknown key(s) {sorted(unknown)}")
    if data.get("kind") != "downstream":
        raise DownstreamError(f"{path}: key 'kind' must be \"downstream\"")
    sampler = data.get("sampler", {})
    if not isinstance(sampler, dict) or set(sampler) - _SAMPLER_KEYS:
        raise DownstreamError(f"{path}: [sampler] takes only {sorted(_SAMPLER_KEYS)}")
    values: dict[str, Any] = {k: v for k, v in data.items() if k not in ("kind", "description",
                                                                          "sampler")}  # fmt: skip
    if "tasks" in values:
        if not isinstance(values["tasks"], list) or not all(
            isinstance(t, str) for t in values["tasks"]
        ):
            raise DownstreamError(f"{path}: key 'tasks' must be a list of task names")
        values["tasks"] = tuple(values["tasks"])
    for key, value in {**values, **sampler}.items():
        if key not in ("law", "tasks") and (isinstance(value, bool) or
                                            not isinstance(value, int | float)):  # fmt: skip
            raise DownstreamError(f"{path}: key {key!r} must be a number, not {value!r}")
    try:
        return DownstreamSpec(**values, **sampler, name=path.stem)
    except DownstreamError as error:
        raise DownstreamError(f"{path}: {error}") from error


def accuracy_table(runs: pd.DataFrame, tasks: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fitted, left_out): one row per (run, task) with ``acc``, ``chance``, ``q`` and the run's
    ``n_active``, ``tokens``, ``flops`` (6 N D) and ``loss``; rows with Q <= 0 or a missing
    accuracy go to ``left_out`` with a ``reason``."""
    frames = []
    for task in tasks:
        column = f"{task}_acc"
        if column not in runs:
            raise DownstreamError(f"the run table has no column {column!r} for task {task!r}")
        part = runs[["run_id", "n_active", "tokens", "loss"]].copy()
        part["flops"] = 6 * part["n_active"] * part["tokens"]
        part["task"], part["acc"], part["chance"] = task, runs[column].to_numpy(float), CHANCE[task]
        outside = part["acc"].notna() & ~part["acc"].between(0.0, 1.0)
        if outside.any():
            row = int(np.flatnonzero(outside.to_numpy())[0])
            raise DownstreamError(
                f"column {column!r}, run {part['run_id'].iloc[row]}: accuracy "
                f"{part['acc'].iloc[row]!r} is not a fraction in [0, 1]"
            )
        part["q"] = (part["acc"] - part["chance"]) / (1 - part["chance"])
        for extra in ("model", "step"):
            if extra in runs:
                part[extra] = runs[extra].to_numpy()
        frames.append(part)
    table = pd.concat(frames, ignore_index=True)
    bad = ~(table["q"] > 0) | ~(table["q"] < 1)
    left = table[bad].assign(
        reason=np.where(
            table.loc[bad, "acc"].isna(),
            "accuracy missing",
            "accuracy at or below chance (Q <= 0) or perfect (Q >= 1)",
        )
    )
    return table[~bad].reset_index(drop=True), left.reset_index(drop=True)


def select_runs(runs: pd.DataFrame, spec: DownstreamSpec) -> pd.DataFrame:
    """The checkpoints a hypothesis fits: tokens >= ``min_tokens``; for ``direct-c`` each
    model's checkpoint nearest ``ratio`` tokens per parameter, if within the tolerance."""
    kept = runs[runs["tokens"] >= spec.min_tokens]
    if spec.law != "direct-c":
        return kept.reset_index(drop=True)
    chosen = []
    group_key = "model" if "model" in runs else "n_active"
    for _, group in kept.groupby(group_key):
        distance = np.abs(np.log(group["tokens"] / group["n_active"] / spec.ratio))
        best = group.iloc[int(np.argmin(distance.to_numpy()))]
        if distance.min() <= np.log(spec.ratio_tolerance):
            chosen.append(best)
    return pd.DataFrame(chosen).reset_index(drop=True)


@dataclass
class AccuracyPosterior:
    """A fitted downstream hypothesis: the spec, its tasks, the fitted (run, task) rows and the
    sampler's results (``idata``; for two-stage, ``loss`` holds the stage-one loss posterior)."""

    spec: DownstreamSpec
    tasks: list[str]
    table: pd.DataFrame
    idata: Any
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)
    loss: Any = None

    def _draws(self, name: str) -> np.ndarray:
        values = self.idata["posterior"][name].stack(sample=("chain", "draw"))
        return values.transpose("sample", ...).to_numpy()

    def log_neg_log_q(
        self, points: pd.DataFrame, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Draws of the law's ln(-ln Q) at ``points`` (columns task, n_active, tokens), shape
        (draw, point); noise not included, except that with ``rng`` the two-stage path feeds
        a new run's loss (the stage-one run noise) into stage two, as it was fitted on
        measured losses."""
        from bayes_scaling.predict import law_draws

        index = np.array([self.tasks.index(t) for t in points["task"]])
        log_n = np.log(points["n_active"].to_numpy(float))
        log_d = np.log(points["tokens"].to_numpy(float))
        if self.spec.law == "direct-nd":
            model = self._draws("log_a")[:, index] - self._draws("alpha")[:, index] * (
                log_n - LOG_N_REF
            )
            data = self._draws("log_b")[:, index] - self._draws("beta")[:, index] * (
                log_d - LOG_D_REF
            )
            return np.logaddexp(model, data)
        if self.spec.law == "direct-c":
            log_c = np.log(6.0) + log_n + log_d
            return self._draws("log_a")[:, index] - self._draws("alpha")[:, index] * (
                log_c - LOG_C_REF
            )
        frame = points.assign(arch="dense")[["arch", "n_active", "tokens"]]
        log_loss = law_draws(self.loss, frame)  # (loss draw, point)
        if rng is not None:
            sigma = self.loss.draws("sigma").reshape(-1, 1)
            nu = self.loss.draws("nu").reshape(-1, 1)
            log_loss = log_loss + sigma * rng.standard_t(np.broadcast_to(nu, log_loss.shape))
        c, k = self._draws("c")[:, index], self._draws("k")[:, index]
        size = min(len(c), len(log_loss))
        return c[:size] + k[:size] * (log_loss[:size] - LOG_L_REF)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One netCDF file (:func:`bayes_scaling.accuracy_file.save_accuracy`)."""
        from bayes_scaling.accuracy_file import save_accuracy

        return save_accuracy(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AccuracyPosterior:
        """Read a file :meth:`save` wrote; a foreign or damaged one raises
        :class:`DownstreamError` naming it."""
        from bayes_scaling.accuracy_file import AccuracyFileError, read_accuracy

        try:
            parts = read_accuracy(path)
            spec = DownstreamSpec(**parts.pop("spec"))
        except (AccuracyFileError, TypeError, DownstreamError) as error:
            raise DownstreamError(
                f"{error}" if str(path) in str(error) else f"{path}: {error}"
            ) from error
        return cls(spec, parts["tasks"], parts["table"], parts["idata"], loss=parts["loss"])

    def _warn_off_ratio(self, points: pd.DataFrame) -> None:
        """direct-c holds at its tokens-per-parameter ratio only: warn for points off it."""
        if self.spec.law != "direct-c":
            return
        ratio = points["tokens"].to_numpy(float) / points["n_active"].to_numpy(float)
        off = np.abs(np.log(ratio / self.spec.ratio)) > np.log(self.spec.ratio_tolerance)
        if off.any():
            warnings.warn(
                f"direct-c holds at {self.spec.ratio:g} tokens per parameter; "
                f"{int(off.sum())} point(s) lie at {ratio[off][0]:.3g}: its accuracy there is "
                "an extrapolation in the ratio the law does not model",
                stacklevel=3,
            )

    def predict(
        self, points: pd.DataFrame, prob: float = 0.9, random_seed: int = 0
    ) -> pd.DataFrame:
        """Accuracy at ``points``: median and central ``prob`` interval of the law (``acc_*``)
        and of a new measurement with the task's noise (``new_*``)."""
        rng = np.random.default_rng(random_seed)
        self._warn_off_ratio(points)
        law = self.log_neg_log_q(points)
        index = np.array([self.tasks.index(t) for t in points["task"]])
        sigma = self._draws("sigma")[: len(law)][:, index]
        nu = self._draws("nu")[: len(law)][:, np.newaxis]
        base = self.log_neg_log_q(points, rng) if self.spec.law == "two-stage" else law
        noisy = base + sigma * rng.standard_t(np.broadcast_to(nu, base.shape))
        chance = points["task"].map(CHANCE).to_numpy(float)
        from bayes_scaling.intervals import central_interval

        out = points.copy()
        for prefix, values in (("acc", law), ("new", noisy)):
            acc = chance + (1 - chance) * np.exp(-np.exp(values))
            low, high = central_interval(acc, prob)
            median = np.median(acc, axis=0)
            out[f"{prefix}_median"], out[f"{prefix}_low"], out[f"{prefix}_high"] = median, low, high
        return out


def fit_accuracy(
    runs: pd.DataFrame, spec: DownstreamSpec | str, random_seed: int = 0, **sampler: Any
) -> AccuracyPosterior:
    """Fit a downstream hypothesis to a run table with ``<task>_acc`` columns (for two-stage,
    also ``loss``); ``sampler`` overrides the file's draws, tune, chains, target_accept."""
    import pymc as pm

    from bayes_scaling.fit import fit, sample
    from bayes_scaling.spec import read_spec

    if isinstance(spec, str):
        spec = read_downstream_spec(spec)
    settings = {"draws": spec.draws, "tune": spec.tune, "chains": spec.chains,
                "target_accept": spec.target_accept, **sampler}  # fmt: skip
    chosen = select_runs(runs, spec)
    if chosen.empty:
        raise DownstreamError(f"{spec.name or spec.law}: no checkpoints left to fit")
    if "num_fewshot" in chosen and chosen["num_fewshot"].nunique() > 1:
        shots = sorted(chosen["num_fewshot"].unique())
        raise DownstreamError(
            f"the table mixes evaluation protocols (num_fewshot {shots}); fit one at a time "
            "(the CLI's --shots)"
        )
    table, left_out = accuracy_table(chosen, spec.tasks)
    if table.empty:
        raise DownstreamError(
            f"{spec.name or spec.law}: every (run, task) row is at chance or missing"
        )
    tasks = [t for t in spec.tasks if (table["task"] == t).any()]
    index = np.array([tasks.index(t) for t in table["task"]])
    y = np.log(-np.log(table["q"].to_numpy(float)))
    log_n = np.log(table["n_active"].to_numpy(float))
    log_d = np.log(table["tokens"].to_numpy(float))
    loss_posterior = None
    if spec.law == "two-stage":  # stage one, in its own model: the loss law on the checkpoints
        checkpoints = chosen.drop_duplicates("run_id").assign(arch="dense")
        stage_one = {k: v for k, v in settings.items() if k in ("draws", "tune", "chains")}
        loss_posterior = fit(checkpoints, read_spec("loss/chinchilla"), random_seed,
                             progressbar=False, **stage_one)  # fmt: skip
    with pm.Model(coords={"task": tasks}):

        def per_task(
            name: str, mu: float, sd: float, spread: float, positive: bool = False,
            centred: bool = False,
        ) -> Any:  # fmt: skip
            centre = pm.Normal(f"{name}_mu", mu, sd)
            scale = pm.HalfNormal(f"{name}_spread", spread)
            if centred:  # each task's value pinned by its own data: no funnel to unwind
                raw = pm.Normal(f"{name}_raw", centre, scale, dims="task")
            else:
                raw = centre + scale * pm.Normal(f"{name}_z", 0, 1, dims="task")
            return pm.Deterministic(name, pm.math.exp(raw) if positive else raw, dims="task")

        if spec.law == "direct-nd":
            log_a = per_task("log_a", -1.0, 2.0, 1.0)
            alpha = per_task("alpha", np.log(0.3), 0.7, 0.5, positive=True)
            log_b = per_task("log_b", -1.0, 2.0, 1.0)
            beta = per_task("beta", np.log(0.3), 0.7, 0.5, positive=True)
            mean = pm.math.logaddexp(log_a[index] - alpha[index] * (log_n - LOG_N_REF),
                                     log_b[index] - beta[index] * (log_d - LOG_D_REF))  # fmt: skip
        elif spec.law == "direct-c":
            log_a = per_task("log_a", -1.0, 2.0, 1.0)
            alpha = per_task("alpha", np.log(0.1), 0.7, 0.5, positive=True)
            mean = log_a[index] - alpha[index] * (np.log(6.0) + log_n + log_d - LOG_C_REF)
        else:
            c = per_task("c", -1.0, 2.0, 1.0, centred=True)
            k = per_task("k", 1.0, 2.0, 1.0, centred=True)
            mean = c[index] + k[index] * (np.log(table["loss"].to_numpy(float)) - LOG_L_REF)
        sigma = pm.HalfNormal("sigma", 0.5, dims="task")
        nu = pm.Gamma("nu", 2.0, 0.1)
        pm.StudentT("log_neg_log_q", nu=nu, mu=mean, sigma=sigma[index], observed=y)
        idata = sample(pm.modelcontext(None), random_seed=random_seed, progressbar=False,
                       **settings)  # fmt: skip
    return AccuracyPosterior(spec, tasks, table, idata, left_out, loss_posterior)


def backtest_accuracy(
    runs: pd.DataFrame, spec: DownstreamSpec | str, held_out: pd.Series, prob: float = 0.9,
    random_seed: int = 0, **sampler: Any,
) -> tuple[AccuracyPosterior, pd.DataFrame]:  # fmt: skip
    """Fit on the runs where ``held_out`` is False, predict the others' accuracies (every
    task with Q > 0): the fit and one row per (held-out run, task) with the prediction, its
    interval, the relative error of the median and whether the new-measurement interval
    covers the observed accuracy."""
    if isinstance(spec, str):
        spec = read_downstream_spec(spec)
    mask = held_out.to_numpy(bool)
    posterior = fit_accuracy(runs[~mask], spec, random_seed, **sampler)
    test = select_runs(runs[mask], spec)  # the same checkpoints the law would fit
    points, _ = accuracy_table(test.reset_index(drop=True), tuple(posterior.tasks))
    predicted = posterior.predict(points, prob, random_seed)
    predicted["rel_error"] = (predicted["acc_median"] - predicted["acc"]).abs() / predicted["acc"]
    predicted["covered"] = (predicted["new_low"] <= predicted["acc"]) & (
        predicted["acc"] <= predicted["new_high"]
    )
    return posterior, predicted
