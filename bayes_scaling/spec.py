"""Hypothesis files: which law, which pooling, which priors (TOML in ``models/``).

Example ``models/loss/wang2024.toml``::

    name = "wang2024"
    law = "experts"
    pooling = "hierarchical"
    shared = ["log_b_ref", "beta"]   # one value for every arch, whatever the pooling
    centred = ["log_a_ref"]          # sampled centred (the same model, other coordinates)
    [priors]
    gamma = { mu = 0.1, sigma = 0.1 }
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from bayes_scaling.laws import LAWS
from bayes_scaling.priors import POOLINGS, AnyPrior, PriorError, hyper_priors, override_priors

__all__ = [
    "HYPER_FORMS",
    "HYPER_TERMS",
    "POOLINGS",
    "SAMPLERS",
    "HyperSpec",
    "ModelSpec",
    "SamplerSettings",
    "SpecError",
    "find_spec",
    "list_specs",
    "read_spec",
    "spec_from_json",
]

_KEYS = {"name", "description", "kind", "law", "pooling", "shared", "centred",
         "literature_priors", "priors", "sampler"}  # fmt: skip


class SpecError(ValueError):
    """A hypothesis file or spec with an unknown key, law or pooling, or a value of the wrong
    type; the message names the file and the key."""


SAMPLERS = ("nutpie", "pymc")
ADAPTATIONS = ("diag", "low_rank")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SamplerSettings:
    """How a hypothesis is sampled: ``[sampler]`` in its file, overridable per fit.

    ``extend`` is how many times :func:`bayes_scaling.fit.fit` may resample with twice the
    warm-up and draws (and a higher target acceptance after divergences) when the convergence
    check fails; each attempt is recorded with the posterior.
    """

    sampler: str = "nutpie"
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    target_accept: float = 0.9
    adaptation: str = "diag"
    extend: int = 1

    def __post_init__(self) -> None:
        # extend doubles warm-up and draws each time: 3 extensions are already 8x the work.
        for name, low, high in (("draws", 1, None), ("tune", 0, None), ("chains", 1, None),
                                ("extend", 0, 3)):  # fmt: skip
            value = getattr(self, name)
            wrong = isinstance(value, bool) or not isinstance(value, int) or value < low
            if wrong or (high is not None and value > high):
                bound = f">= {low}" if high is None else f"from {low} to {high}"
                raise SpecError(f"sampler.{name} must be a whole number {bound}, not {value!r}")
        if not _number(self.target_accept) or not 0.5 <= self.target_accept < 1.0:
            raise SpecError(
                f"sampler.target_accept must be a number in [0.5, 1), not {self.target_accept!r}"
            )
        for name, known in (("sampler", SAMPLERS), ("adaptation", ADAPTATIONS)):
            if getattr(self, name) not in known:
                raise SpecError(f"sampler.{name} {getattr(self, name)!r} is unknown; "
                                f"expected one of {list(known)}")  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> SamplerSettings:
        """From a ``[sampler]`` table, refusing unknown keys."""
        if not isinstance(data, dict):
            raise SpecError(f"sampler must be a table, not {data!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(f"sampler: unknown key(s) {unknown}; expected some of {known}")
        return cls(**data)

    def with_overrides(self, **values: Any) -> SamplerSettings:
        """A copy with the given settings replaced (``None`` keeps the current value)."""
        return SamplerSettings(
            **{**asdict(self), **{k: v for k, v in values.items() if v is not None}}
        )


# The type of every scalar key of a hypothesis file, checked before anything else reads it.
_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "description": (str,),
    "kind": (str,),
    "law": (str,),
    "pooling": (str,),
    "form": (str,),
    "literature_priors": (bool,),
    "off_bowl_above": (int, float),
}
_TEXT_LISTS = ("shared", "centred", "noncentred", "lr_terms", "batch_terms")


def _check_types(data: dict[str, Any]) -> None:
    """Refuse values of the wrong type: ``law = [..]``, ``literature_priors = "no"``, ..."""
    for key, value in data.items():
        if key in _TYPES:
            types = _TYPES[key]
            wrong = not isinstance(value, types) or (bool not in types and isinstance(value, bool))
            if wrong:
                expected = " or ".join(t.__name__ for t in types).replace("bool", "true/false")
                raise SpecError(f"{key} must be {expected}, not {value!r}")
        elif key in _TEXT_LISTS:
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise SpecError(f"{key} must be a list of names, not {value!r}")
        elif key == "priors" and not isinstance(value, dict):
            raise SpecError(f"priors must be a table of priors, not {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A loss-law hypothesis: the law, how archs share parameters, and prior overrides.

    ``shared`` lists law parameters that take one value for every arch whatever ``pooling``
    says: for data that cannot tell the archs apart on that parameter (the data term when every
    run has the same token budget) a per-arch value is identified by its prior alone.
    ``centred``: hierarchical parameters sampled centred (same model; see ``loss_model``).
    """

    law: str = "experts"
    pooling: str = "hierarchical"
    name: str = ""
    description: str = ""
    literature_priors: bool = False
    priors: dict[str, dict[str, float]] = field(default_factory=dict)
    kind: str = "loss"
    shared: tuple[str, ...] = ()
    centred: tuple[str, ...] = ()
    sampler: SamplerSettings = field(default_factory=SamplerSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.sampler, SamplerSettings):  # a [sampler] table, or refused
            object.__setattr__(self, "sampler", SamplerSettings.from_dict(self.sampler))
        if self.kind != "loss":
            raise SpecError(f"unknown kind {self.kind!r}; expected one of {list(_KINDS)}")
        if self.law not in LAWS:
            raise SpecError(f"unknown law {self.law!r}; expected one of {sorted(LAWS)}")
        if self.pooling not in POOLINGS:
            raise SpecError(f"unknown pooling {self.pooling!r}; expected one of {list(POOLINGS)}")
        try:
            priors = self.resolved_priors()
        except PriorError as error:
            raise SpecError(str(error)) from error
        object.__setattr__(self, "shared", tuple(self.shared))
        per_arch = sorted(set(priors) - {"log_e", "sigma", "nu"})
        unknown = sorted(set(self.shared) - set(per_arch))
        if unknown:
            raise SpecError(
                f"shared: unknown parameter(s) {unknown} for the {self.law} law; "
                f"expected some of {per_arch}"
            )
        object.__setattr__(self, "centred", tuple(self.centred))
        hierarchical = sorted(set(per_arch) - set(self.shared)) * (self.pooling == "hierarchical")
        wrong = sorted(set(self.centred) - set(hierarchical))
        if wrong:
            raise SpecError(
                f"centred: {wrong} are not hierarchical parameters of this hypothesis; "
                f"expected some of {hierarchical}"
            )

    def resolved_priors(self) -> dict[str, AnyPrior]:
        """The law's default priors with this spec's overrides applied."""
        return override_priors(
            LAWS[self.law].default_priors(self.literature_priors), self.priors, "priors"
        )

    def to_json(self) -> str:
        """The spec as JSON, for saving with a posterior."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "spec") -> ModelSpec:
        """Build a spec from a mapping, refusing unknown keys with the list of valid ones."""
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise SpecError(f"{origin}: unknown key(s) {unknown}; expected some of {sorted(_KEYS)}")
        try:
            _check_types(data)
            return cls(**data)
        except SpecError as error:
            raise SpecError(f"{origin}: {error}") from error


# Where the optimum's centre can depend on: ln of active parameters, tokens, training FLOPs,
# the cell's minimum loss, the active fraction n_active / n_total, and total parameters.
HYPER_TERMS = ("log_n", "log_d", "log_c", "log_l", "log_sparsity", "log_total")
# The three forms of the literature (REFERENCE.md), as (lr terms, batch terms):
HYPER_FORMS = {
    "loss": (("log_l",), ("log_l",)),  # Wang et al.: B, eta ~ L^-alpha
    "compute": (("log_c",), ("log_c",)),  # DeepSeek, Tian et al.: B, eta ~ C^a
    "steplaw": (("log_n", "log_d"), ("log_d",)),  # Step Law: eta ~ N^a D^b, B ~ D^c
}
_HYPER_KEYS = {
    "name",
    "description",
    "kind",
    "form",
    "pooling",
    "lr_terms",
    "batch_terms",
    "off_bowl_above",
    "noncentred",
    "priors",
    "sampler",
}
# Cell-level values of the hyperparameter model that a spec may sample non-centred.
CELL_VALUES = ("log_lr_opt", "log_batch_opt", "log_h_lr_cell", "log_h_batch_cell", "cell_log_loss")


@dataclass(frozen=True)
class HyperSpec:
    """An optimal batch size / learning rate hypothesis (``kind = "hyper"``).

    ``form`` picks the terms the bowl's centre follows (:data:`HYPER_FORMS`); ``lr_terms`` and
    ``batch_terms`` override them with any of :data:`HYPER_TERMS`. ``off_bowl_above`` flags a
    grid run whose loss exceeds its cell's best by more than that fraction as off the bowl (see
    :func:`bayes_scaling.hyper_model.flag_off_bowl`): it is listed and left out of the fit.
    ``priors`` override
    :func:`bayes_scaling.priors.hyper_priors`. ``noncentred`` lists cell-level values
    (:data:`CELL_VALUES`: optima, curvatures, minimum losses) sampled as law + tau * z instead
    of directly (the same model): for cells whose runs pin them down weakly (optima at a
    grid's edge, cells of a few dozen runs).
    """

    form: str = "steplaw"
    pooling: str = "hierarchical"
    name: str = ""
    description: str = ""
    lr_terms: tuple[str, ...] = ()
    batch_terms: tuple[str, ...] = ()
    off_bowl_above: float = 0.2
    noncentred: tuple[str, ...] = ()
    priors: dict[str, dict[str, float]] = field(default_factory=dict)
    kind: str = "hyper"
    sampler: SamplerSettings = field(default_factory=SamplerSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.sampler, SamplerSettings):  # a [sampler] table, or refused
            object.__setattr__(self, "sampler", SamplerSettings.from_dict(self.sampler))
        if self.kind != "hyper":
            raise SpecError(f"unknown kind {self.kind!r}; expected 'hyper'")
        if self.form not in HYPER_FORMS:
            raise SpecError(f"unknown form {self.form!r}; expected one of {list(HYPER_FORMS)}")
        if self.pooling not in POOLINGS:
            raise SpecError(f"unknown pooling {self.pooling!r}; expected one of {list(POOLINGS)}")
        lr_default, batch_default = HYPER_FORMS[self.form]
        object.__setattr__(self, "lr_terms", tuple(self.lr_terms or lr_default))
        object.__setattr__(self, "batch_terms", tuple(self.batch_terms or batch_default))
        for key in ("lr_terms", "batch_terms"):
            unknown = sorted(set(getattr(self, key)) - set(HYPER_TERMS))
            if unknown:
                raise SpecError(f"{key}: unknown term(s) {unknown}; expected some of {HYPER_TERMS}")
        object.__setattr__(self, "noncentred", tuple(self.noncentred))
        wrong = sorted(set(self.noncentred) - set(CELL_VALUES))
        if wrong:
            raise SpecError(
                f"noncentred: unknown cell value(s) {wrong}; expected some of {CELL_VALUES}"
            )
        if not _number(self.off_bowl_above) or not self.off_bowl_above > 0:
            raise SpecError(
                f"off_bowl_above must be a positive number, not {self.off_bowl_above!r}"
            )
        try:
            self.resolved_priors()
        except PriorError as error:
            raise SpecError(str(error)) from error

    def resolved_priors(self) -> dict[str, AnyPrior]:
        """The default priors of this spec's terms with its overrides applied."""
        return override_priors(hyper_priors(self.lr_terms, self.batch_terms), self.priors, "priors")

    def to_json(self) -> str:
        """The spec as JSON, for saving with a posterior."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "spec") -> HyperSpec:
        """Build a spec from a mapping, refusing unknown keys with the list of valid ones."""
        unknown = sorted(set(data) - _HYPER_KEYS)
        if unknown:
            raise SpecError(
                f"{origin}: unknown key(s) {unknown}; expected some of {sorted(_HYPER_KEYS)}"
            )
        try:
            _check_types(data)
            return cls(**data)
        except SpecError as error:
            raise SpecError(f"{origin}: {error}") from error


_KINDS: dict[str, type[ModelSpec] | type[HyperSpec]] = {"loss": ModelSpec, "hyper": HyperSpec}


def _from_dict(data: dict[str, Any], origin: str) -> ModelSpec | HyperSpec:
    """Dispatch on ``kind`` (default ``"loss"``)."""
    kind = data.get("kind", "loss")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise SpecError(f"{origin}: unknown kind {kind!r}; expected one of {list(_KINDS)}")
    return _KINDS[kind].from_dict(data, origin=origin)


def spec_from_json(text: str) -> ModelSpec | HyperSpec:
    """Inverse of ``to_json`` for either kind of spec."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"stored spec: not JSON ({error.msg})") from error
    if not isinstance(data, dict):
        raise SpecError("stored spec: expected a JSON object")
    return _from_dict(data, origin="stored spec")


_PACKAGED = ("loss", "hyper")


def list_specs() -> dict[str, Path]:
    """The hypothesis files shipped with the package: ``"loss/wang2024"`` -> its path."""
    root = resources.files("bayes_scaling") / "models"
    out = {}
    for kind in _PACKAGED:
        folder = Path(str(root / kind))
        for path in sorted(folder.glob("*.toml")):
            out[f"{kind}/{path.stem}"] = path
    return out


def find_spec(name: str | os.PathLike[str]) -> Path:
    """The file a ``--model`` value names: an existing path, or a shipped hypothesis by name:
    ``kind/name`` (``hyper/steplaw``), or a bare name, which is the loss hypothesis of that name
    when there is one (``wang2024`` is ``loss/wang2024``; ``hyper/wang2024`` names the other)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = list_specs()
    key = str(name).removesuffix(".toml")
    if key in shipped:
        return shipped[key]
    # A bare name is a loss hypothesis first (``wang2024``); ``hyper/wang2024`` names the other.
    matches = [full for full in shipped if full.split("/", 1)[1] == key]
    if matches:
        return shipped[matches[0]]
    raise SpecError(
        f"model {str(name)!r} is neither a file nor a shipped hypothesis; shipped: "
        f"{', '.join(shipped)} (see `bayes-scaling models list`)"
    )


def read_spec(path: str | os.PathLike[str]) -> ModelSpec | HyperSpec:
    """Read a hypothesis TOML file (a path, or a shipped hypothesis by name: see
    :func:`find_spec`); its ``name`` defaults to the file's stem."""
    path = find_spec(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text") from error
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML ({error})") from error
    data.setdefault("name", path.stem)
    return _from_dict(data, origin=str(path))
