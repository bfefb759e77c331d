"""Test helpers shared across modules."""

from __future__ import annotations

import numpy as np
import pymc as pm


def assert_finite_gradient(model: pm.Model) -> None:
    """The log-probability and its gradient are finite at the initial point (as bambi checks)."""
    point = model.initial_point()
    logp = model.compile_logp()(point)
    gradient = model.compile_dlogp()(point)
    assert np.isfinite(logp), f"log-probability {logp} at the initial point"
    assert np.all(np.isfinite(gradient)), "non-finite gradient at the initial point"
