"""Hypothesis files: which law, which pooling, which priors (TOML in ``models/``).

Example ``models/loss/wang2024.toml``::

    name = "wang2024"
    law = "experts"
    pooling = "hierarchical"
    literature_priors = false
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

__all__ = ["POOLINGS", "ModelSpec", "SpecError", "read_spec"]

POOLINGS = ("pooled", "hierarchical", "separate")
_KEYS = {"name", "description", "kind", "law", "pooling", "literature_priors", "priors"}


class SpecError(ValueError):
    """A hypothesis file or spec that names an unknown key, law or pooling."""


@dataclass(frozen=True)
class ModelSpec:
    """A loss-law hypothesis: the law, how archs share parameters, and prior overrides."""

    law: str = "experts"
    pooling: str = "hierarchical"
    name: str = ""
    description: str = ""
    literature_priors: bool = False
    priors: dict[str, dict[str, float]] = field(default_factory=dict)
    kind: str = "loss"

    def __post_init__(self) -> None:
        if self.kind != "loss":
            raise SpecError(f"unknown kind {self.kind!r}; expected 'loss'")
        if self.law not in LAWS:
            raise SpecError(f"unknown law {self.law!r}; expected one of {sorted(LAWS)}")
        if self.pooling not in POOLINGS:
            raise SpecError(f"unknown pooling {self.pooling!r}; expected one of {list(POOLINGS)}")
        try:
            self.resolved_priors()
        except ValueError as error:
            raise SpecError(str(error)) from error

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


def read_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """Read a hypothesis TOML file; its ``name`` defaults to the file's stem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML ({error})") from error
    data.setdefault("name", path.stem)
    return ModelSpec.from_dict(data, origin=str(path))
