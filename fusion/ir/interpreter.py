"""Reference interpreter: runs any Graph with the op table's numpy semantics.

The second oracle (beside onnxruntime) and the engine behind constant folding.
Intermediate arrays are dropped after their last use, so full-size models run
in bounded memory.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from fusion.errors import FusionError, InputError
from fusion.ir.graph import Graph, Value


def check_feeds(g: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate run-time inputs against the graph: names, dtypes, shapes."""
    out = {}
    names = [v.name for v in g.inputs]
    for k in feeds:
        if k not in names:
            raise InputError(f"unknown input '{k}'; the model's inputs are: {', '.join(names)}")
    for v in g.inputs:
        if v.name not in feeds:
            raise InputError(f"missing input '{v.name}' ({v.type_str()})")
        a = np.asarray(feeds[v.name])
        if v.dtype is not None and a.dtype != v.dtype:
            raise InputError(f"input '{v.name}' has dtype {a.dtype}, the model expects {v.dtype}")
        if v.shape is not None:
            if a.ndim != len(v.shape):
                raise InputError(f"input '{v.name}' has shape {list(a.shape)}, the model expects {list(v.shape)}")
            for d, want in zip(a.shape, v.shape):
                if isinstance(want, (int, np.integer)) and d != want:
                    raise InputError(f"input '{v.name}' has shape {list(a.shape)}, the model expects {list(v.shape)}")
        out[v.name] = a
    return out


def run(g: Graph, feeds: Mapping[str, np.ndarray], *, env: dict | None = None,
        keep: bool = False, hook: Callable | None = None) -> dict[str, np.ndarray]:
    """Run `g` on `feeds` -> {output name: array}. `keep` retains every value
    (env maps id(Value) -> array) for debugging and pass-by-pass checks.

    `hook(node, inputs, outputs)` is called after every node of `g` (not of its
    control-flow bodies) and may return replacement outputs (a list) or None.
    It lets a caller watch chosen values without keeping all of them, and pin
    a decision (an index, an integer cast) to another executor's value."""
    feeds = check_feeds(g, feeds) if g.parent is None else dict(feeds)
    return _run(g, [feeds[v.name] for v in g.inputs], env if env is not None else {}, keep, hook)


def run_subgraph(g: Graph, args: list, outer_env: dict) -> list[np.ndarray]:
    """Run a control-flow body with positional inputs; captured values come from outer_env."""
    res = _run(g, args, dict(outer_env), keep=True)
    return [res[v.name] for v in g.outputs]


def reference_outputs(n, args: list, env: dict) -> list:
    """One node through its op's numpy reference (If/Loop bodies read captured
    values through env: id(value) -> array)."""
    od = n.opdef
    try:
        with np.errstate(all="ignore"):
            return od.reference(n, args, env=env) if od.needs_env else od.reference(n, args)
    except FusionError:
        raise
    except Exception as e:
        raise FusionError(f"{n.label()}: reference semantics failed: {type(e).__name__}: {e}") from e


def as_value(v: Value, a) -> np.ndarray:
    """A reference result as value v holds it: v's dtype, and 0-d where v is."""
    a = np.asarray(a)
    if v.dtype is not None and a.dtype != v.dtype and a.dtype != object:
        a = a.astype(v.dtype)
    if a.shape == (1,) and v.shape == ():
        a = a.reshape(())  # np.ascontiguousarray turns a 0-d result into shape (1,)
    return a


def _run(g: Graph, args: list, env: dict, keep: bool,
         hook: Callable | None = None) -> dict[str, np.ndarray]:
    for v, a in zip(g.inputs, args):
        env[id(v)] = np.asarray(a)
    last_use: dict[int, int] = {}
    if not keep:
        for k, n in enumerate(g.nodes):
            for v in n.all_inputs():
                last_use[id(v)] = k
        for v in g.outputs:
            last_use[id(v)] = len(g.nodes)

    def get(v: Value | None):
        if v is None:
            return None
        if v.const is not None:
            return v.const
        try:
            return env[id(v)]
        except KeyError:
            raise FusionError(f"value '{v.name}' is read before it is computed") from None

    for k, n in enumerate(g.nodes):
        args_n = [get(v) for v in n.inputs]
        outs = reference_outputs(n, args_n, env)
        if hook is not None:
            repl = hook(n, args_n, list(outs))
            if repl is not None:
                outs = repl
        for v, a in zip(n.outputs, outs):
            if a is not None:
                env[id(v)] = as_value(v, a)
        if not keep:
            for v in n.all_inputs():
                if last_use.get(id(v)) == k and v.const is None and v not in g.inputs:
                    env.pop(id(v), None)
    return {v.name: get(v) for v in g.outputs}
