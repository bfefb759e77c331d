"""Hypothesis files: which law, which pooling, which priors (TOML in ``models/``).

Example ``models/loss/wang2024.toml``::

    name = "wang2024"
    law = "experts"
    pooling = "hierarchical"
    literature_priors = false
    shared = ["log_b_ref", "beta"]   # one value for every arch, whatever the pooling
    [priors]
    gamma = { mu = 0.1, sigma = 0.1 }
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bayes_scaling.laws import LAWS
from bayes_scaling.priors import Prior, default_priors, override_priors

__all__ = [
    "HYPER_FORMS",
    "HYPER_TERMS",
    "POOLINGS",
    "HyperSpec",
    "ModelSpec",
    "SpecError",
    "read_spec",
    "spec_from_json",
]

POOLINGS = ("pooled", "hierarchical", "separate")
_KEYS = {"name", "description", "kind", "law", "pooling", "shared", "literature_priors", "priors"}


class SpecError(ValueError):
    """A hypothesis file or spec that names an unknown key, law or pooling."""


@dataclass(frozen=True)
class ModelSpec:
    """A loss-law hypothesis: the law, how archs share parameters, and prior overrides.

    ``shared`` lists law parameters that take one value for every arch whatever ``pooling``
    says: for data that cannot tell the archs apart on that parameter (the data term when every
    run has the same token budget) a per-arch value is identified by its prior alone.
    """

    law: str = "experts"
    pooling: str = "hierarchical"
    name: str = ""
    description: str = ""
    literature_priors: bool = False
    priors: dict[str, dict[str, float]] = field(default_factory=dict)
    kind: str = "loss"
    shared: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind != "loss":
            raise SpecError(f"unknown kind {self.kind!r}; expected one of {list(_KINDS)}")
        if self.law not in LAWS:
            raise SpecError(f"unknown law {self.law!r}; expected one of {sorted(LAWS)}")
        if self.pooling not in POOLINGS:
            raise SpecError(f"unknown pooling {self.pooling!r}; expected one of {list(POOLINGS)}")
        try:
            priors = self.resolved_priors()
        except ValueError as error:
            raise SpecError(str(error)) from error
        object.__setattr__(self, "shared", tuple(self.shared))
        per_arch = sorted(set(priors) - {"log_e", "sigma", "nu"})
        unknown = sorted(set(self.shared) - set(per_arch))
        if unknown:
            raise SpecError(
                f"shared: unknown parameter(s) {unknown} for the {self.law} law; "
                f"expected some of {per_arch}"
            )

    def resolved_priors(self) -> dict[str, Prior]:
        """The law's default priors with this spec's overrides applied."""
        return override_priors(default_priors(self.law, self.literature_priors), self.priors)

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
    "diverged_above",
    "priors",
}


@dataclass(frozen=True)
class HyperSpec:
    """An optimal batch size / learning rate hypothesis (``kind = "hyper"``).

    ``form`` picks the terms the bowl's centre follows (:data:`HYPER_FORMS`); ``lr_terms`` and
    ``batch_terms`` override them with any of :data:`HYPER_TERMS`. ``diverged_above`` flags a
    run whose loss exceeds its cell's best by more than that fraction as diverged: it is listed
    and left out of the fit. ``priors`` override :func:`bayes_scaling.hyper_model.hyper_priors`.
    """

    form: str = "steplaw"
    pooling: str = "hierarchical"
    name: str = ""
    description: str = ""
    lr_terms: tuple[str, ...] = ()
    batch_terms: tuple[str, ...] = ()
    diverged_above: float = 0.2
    priors: dict[str, dict[str, float]] = field(default_factory=dict)
    kind: str = "hyper"

    def __post_init__(self) -> None:
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
        if not self.diverged_above > 0:
            raise SpecError(f"diverged_above must be positive, not {self.diverged_above}")
        try:
            self.resolved_priors()
        except ValueError as error:
            raise SpecError(str(error)) from error

    def resolved_priors(self) -> dict[str, Prior]:
        """The default priors of this spec's terms with its overrides applied."""
        from bayes_scaling.hyper_model import hyper_priors

        return override_priors(hyper_priors(self.lr_terms, self.batch_terms), self.priors)

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
            return cls(**data)
        except SpecError as error:
            raise SpecError(f"{origin}: {error}") from error


_KINDS: dict[str, type[ModelSpec] | type[HyperSpec]] = {"loss": ModelSpec, "hyper": HyperSpec}


def _from_dict(data: dict[str, Any], origin: str) -> ModelSpec | HyperSpec:
    """Dispatch on ``kind`` (default ``"loss"``)."""
    kind = data.get("kind", "loss")
    if kind not in _KINDS:
        raise SpecError(f"{origin}: unknown kind {kind!r}; expected one of {list(_KINDS)}")
    return _KINDS[kind].from_dict(data, origin=origin)


def spec_from_json(text: str) -> ModelSpec | HyperSpec:
    """Inverse of ``to_json`` for either kind of spec."""
    return _from_dict(json.loads(text), origin="stored spec")


def read_spec(path: str | os.PathLike[str]) -> ModelSpec | HyperSpec:
    """Read a hypothesis TOML file; its ``name`` defaults to the file's stem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML ({error})") from error
    data.setdefault("name", path.stem)
    return _from_dict(data, origin=str(path))
