"""Compile once, sample many times: nutpie models cached on the structure of the PyMC model.

Compiling a model for nutpie (PyTensor rewrites, then numba) takes seconds, several times what
sampling a small scaling-law posterior takes. Backtests, comparisons and run planning refit one
hypothesis on many subsets of runs; those models differ only in their data. Every input of the
package's models is ``pm.Data``, so a refit swaps the data of an already compiled model
(nutpie's ``with_data``) and pays no compilation.

The cache key is the model's *structure*: a hash of its log-density and deterministic graphs in
which each data variable stands for its name and rank, not its values, together with the model's
coordinates other than ``run`` (the arch and eval-set labels, the hyperparameter grid's cells).
Anything a graph bakes in as a constant (a prior's parameters, a centring value) is hashed with
its value, so two models share a compiled function exactly when only their data differ.

Compiled without numba's ``fastmath``: with it, a function PyTensor compiles afresh and one
it loads from its on-disk cache were optimised differently inside nutpie's callback (bitwise
different log densities), so the same seed gave one posterior on a machine's first run and
another on every later one. Without it the draws are bitwise the same either way, at ~30%
more gradient cost on the Step Law grid and none measurable on the loss laws.

The cache lives in the process (numba's compiled C callbacks hold pointers into it and cannot be
written to disk); :data:`MODELS` is the package's one instance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pymc as pm
import pytensor
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant
from pytensor.graph.traversal import graph_inputs, io_toposort

__all__ = ["MODELS", "CompiledModels", "structure_key"]

# Dims whose length comes from the number of runs: they may change between refits.
DATA_DIMS = ("run",)


def _describe_input(variable: Any) -> str:
    """A root of the graph: constants by value, data and value variables by name and type."""
    if isinstance(variable, Constant):
        data = np.asarray(variable.data)
        digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:16]
        return f"const:{variable.type}:{data.shape}:{digest}"
    kind = "data" if isinstance(variable, SharedVariable) else "input"
    return f"{kind}:{variable.name}:{variable.type}"


def _describe_op(op: Any) -> str:
    props = op._props_dict() if hasattr(op, "__props__") else {}
    return f"{type(op).__module__}.{type(op).__qualname__}:{op}:{sorted(props.items(), key=str)}"


def structure_key(model: pm.Model) -> str:
    """A hash of ``model``'s structure that ignores the values of its data (see module doc)."""
    outputs = [model.logp(), *model.deterministics]
    digest = hashlib.sha256()
    ids: dict[Any, int] = {}
    for variable in graph_inputs(outputs):
        ids[variable] = len(ids)
        digest.update(f"{ids[variable]}={_describe_input(variable)};".encode())
    for node in io_toposort(list(ids), outputs):
        for variable in node.inputs:
            if variable not in ids:  # an input reached only inside this node (rare)
                ids[variable] = len(ids)
                digest.update(f"{ids[variable]}={_describe_input(variable)};".encode())
        arguments = ",".join(str(ids[variable]) for variable in node.inputs)
        for variable in node.outputs:
            ids[variable] = len(ids)
        outputs_ids = ",".join(str(ids[variable]) for variable in node.outputs)
        digest.update(f"{outputs_ids}={_describe_op(node.op)}({arguments});".encode())
    digest.update(",".join(str(ids[variable]) for variable in outputs).encode())
    digest.update(",".join(f"{d.name}" for d in model.free_RVs).encode())
    for name, labels in sorted(model.coords.items()):
        if name not in DATA_DIMS:
            digest.update(f"|{name}:{list(labels or [])!r}".encode())
    return digest.hexdigest()


def _data_values(model: pm.Model) -> dict[str, np.ndarray]:
    return {variable.name: variable.get_value() for variable in model.data_vars}


class CompiledModels:
    """Compiled nutpie models by structure, most recently used kept (at most ``size``).

    ``hits`` and ``misses`` count what :meth:`get` did, for benchmarks and tests.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def get(self, model: pm.Model) -> Any:
        """A nutpie compiled model for ``model``: reused (with this model's data) or compiled."""
        import nutpie

        key = structure_key(model)
        with self._lock:
            compiled = self._entries.get(key)
            if compiled is not None:
                self._entries.move_to_end(key)
                self.hits += 1
        if compiled is None:
            with pytensor.config.change_flags(numba__fastmath=False):  # see the module notes
                compiled = nutpie.compile_pymc_model(model)
            with self._lock:
                self.misses += 1
                self._entries[key] = compiled
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            return compiled
        coords = {**(compiled.coords or {}), **{k: list(v) for k, v in model.coords.items()}}
        # Data the compiled functions never read (rewritten away, e.g. an index into a dim of
        # length one) are not among nutpie's shared variables; the structure key covers them.
        used = {variable.name for variable in compiled.shared_var_keys}
        values = {k: v for k, v in _data_values(model).items() if k in used}
        updated = compiled.with_data(**values)
        return dataclasses.replace(updated, _coords=coords)


MODELS = CompiledModels()
