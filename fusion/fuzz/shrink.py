"""Shrink a failing GraphSpec to a minimal one that still fails the same way.

Moves, tried until none helps (each is one compile + run):
  * keep a single output;
  * cut a node: its output becomes a fresh graph input of the same shape
    (the node and whatever only fed it disappear);
  * bypass a node: its consumers read its first input instead (same shape);
  * turn a constant into a graph input.
"""
from __future__ import annotations

from typing import Callable

import onnx

from fusion.fuzz.spec import GraphSpec

FLOAT = onnx.TensorProto.FLOAT


def _rename_uses(s: GraphSpec, old: str, new: str) -> None:
    for n in s.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
    s.outputs = [new if o == old else o for o in s.outputs]


def candidates(s: GraphSpec):
    for o in s.outputs if len(s.outputs) > 1 else []:
        c = s.copy()
        c.outputs = [o]
        yield c.prune()
    for k in reversed(range(len(s.nodes))):
        n = s.nodes[k]
        if len(n.outputs) != 1:
            continue
        out = n.outputs[0]
        src = n.inputs[0] if n.inputs else ""
        if out in s.outputs and src and s.dtype(src) == FLOAT and src not in s.outputs and src not in s.inputs:
            c = s.copy()   # drop a last node: its input becomes the graph output
            c.outputs = [src if o == out else o for o in c.outputs]
            yield c.prune()
        if s.dtype(out) == FLOAT and out not in s.outputs:
            c = s.copy()
            del c.nodes[k]
            c.inputs.append(out)   # the value now comes from outside
            yield c.prune()
        src = n.inputs[0] if n.inputs else ""
        if src and s.shapes.get(src) == s.shapes[out] and s.dtype(src) == s.dtype(out) and out not in s.inputs:
            c = s.copy()
            del c.nodes[k]
            if out in c.outputs and src in c.outputs:
                continue
            _rename_uses(c, out, src)
            if src in c.inputs or src in c.consts or any(src in m.outputs for m in c.nodes):
                yield c.prune()
    for name, arr in s.consts.items():
        if arr.dtype.kind == "f" and arr.ndim > 0:
            c = s.copy()
            del c.consts[name]
            c.inputs.append(name)
            yield c.prune()


def size(s: GraphSpec) -> tuple:
    return (len(s.nodes), len(s.outputs), len(s.inputs) + len(s.consts))


def shrink(spec: GraphSpec, still_fails: Callable[[GraphSpec], bool], budget: int = 60) -> GraphSpec:
    """Greedy: take the first smaller candidate that still fails; repeat."""
    best = spec
    tried = 0
    progress = True
    while progress and tried < budget:
        progress = False
        for c in candidates(best):
            if not c.outputs or not c.nodes or size(c) >= size(best):
                continue
            tried += 1
            if still_fails(c):
                best, progress = c, True
                break
            if tried >= budget:
                break
    return best
