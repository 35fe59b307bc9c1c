"""Structural passes: each takes a Graph, edits it in place, returns how many
changes it made. Graph edits go through the Graph's methods (use-lists stay
right) and the model's output names never change."""
from __future__ import annotations

import hashlib

import numpy as np

from fusion.ir.graph import Graph, Value
from fusion.ops import Mapping, get_op
from fusion.rewrite.build import FOLD_LIMIT
from fusion.rewrite.engine import replace_value

# Folding never creates a constant bigger than this unless it replaces
# constant inputs at least as big (a transposed weight is fine, an Expand of a
# scalar into a huge tensor is not).
GROW_LIMIT = 4096


# Same elements in the same row-major order, only the shape changes.
RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _static(v: Value) -> bool:
    return v.shape is not None and all(isinstance(d, int) for d in v.shape)


def _foldable(n) -> bool:
    od = n.opdef
    return (od is not None and od.reference is not None and od.category != "random" and not n.subgraphs()
            and not od.needs_env)


def _bypass(g: Graph, out: Value, inp: Value) -> bool:
    """Readers of `out` read `inp`; refuse when the model's interface would
    need an Identity anyway (output computed straight from an input)."""
    if out in g.outputs and (inp.producer is None or inp in g.outputs):
        return False
    if out.dtype != inp.dtype:
        return False
    replace_value(g, out, inp)
    return True


def _to_const(g: Graph, n, arrays) -> bool:
    outs = list(n.outputs)
    if any(v in g.outputs for v in outs):
        return False   # keep the model's outputs computed (an all-constant output stays as is)
    fixed = []
    for v, a in zip(outs, arrays):
        a = np.asarray(a)
        if v.dtype is not None and a.dtype != v.dtype:
            a = a.astype(v.dtype)
        if v.shape is not None and _static(v) and tuple(a.shape) != tuple(v.shape):
            if a.size != int(np.prod(v.shape)):
                return False   # the computed value disagrees with the declared type: leave it
            a = a.reshape(v.shape)
        fixed.append(a)
    for v, a in zip(outs, fixed):
        if not v.uses:
            continue
        c = g.const(a, name=v.name + "_c")
        g.replace_uses(v, c)
    g.remove_node(n)
    return True


# ---------------------------------------------------------------------------

def fold_constants(g: Graph) -> int:
    """Nodes whose inputs are all constants become constants (through the op
    table's reference semantics, i.e. the interpreter), below a size cap."""
    count = 0
    for n in list(g.nodes):
        if n.graph is not g or not _foldable(n):
            continue
        ins = [v for v in n.inputs if v is not None]
        if any(v.const is None for v in ins):
            continue
        if not all(_static(v) for v in n.outputs):
            continue
        biggest = max([v.const.size for v in ins] + [0])
        sizes = [int(np.prod(v.shape)) for v in n.outputs]
        if any(s > FOLD_LIMIT or (s > GROW_LIMIT and s > biggest) for s in sizes):
            continue
        try:
            with np.errstate(all="ignore"):
                outs = n.opdef.reference(n, [v.const if v is not None else None for v in n.inputs])
        except Exception:
            continue
        if _to_const(g, n, outs):
            count += 1
    return count


def fold_shapes(g: Graph) -> int:
    """Shape arithmetic: values shape inference already knows (Shape -> Gather
    -> Unsqueeze -> Concat chains once shapes are bound) become constants."""
    count = 0
    for n in list(g.nodes):
        if n.graph is not g or not n.outputs or n.subgraphs():
            continue
        if all(v.known is not None or not v.uses for v in n.outputs) and any(v.known is not None for v in n.outputs):
            if _to_const(g, n, [v.known if v.known is not None else np.zeros(0) for v in n.outputs]):
                count += 1
    return count


def _is_noop(n) -> Value | None:
    """The input a no-op node passes through unchanged, else None."""
    x = n.input(0)
    if x is None or not n.outputs:
        return None
    y = n.outputs[0]
    same = x.shape is not None and y.shape is not None and _static(x) and _static(y) and tuple(x.shape) == tuple(y.shape)
    op = n.op
    if op == "Identity":
        return x
    if op == "Dropout":
        # Inference: Dropout passes its input through (unless training_mode is a true constant).
        t = n.input(2)
        if t is not None and (t.value is None or bool(np.asarray(t.value).reshape(-1)[0])):
            return None
        if len(n.outputs) > 1 and n.outputs[1].uses:
            return None
        return x
    if op in ("Cast", "CastLike"):
        return x if x.dtype == y.dtype else None
    if not same or x.dtype != y.dtype:
        return None
    if op == "Transpose":
        p = n.attrs.get("perm") or list(range(x.rank))[::-1]
        return x if list(p) == list(range(x.rank)) else None
    if op == "Slice":
        steps = n.input(4)
        if steps is not None and (steps.value is None or np.any(np.asarray(steps.value) != 1)):
            return None
        return x
    if op == "Concat":
        return x if len([v for v in n.inputs if v is not None]) == 1 else None
    # Reshaping ops (by name: the op table's mapping says One-to-One for them
    # when the shape does not change, and Reorganize for some broadcasts).
    if _reshaping(n) or op in ("Expand", "Tile", "Pad"):
        # Same shape, same row-major order (Reshape, Flatten, Squeeze, Unsqueeze),
        # or nothing to broadcast / repeat / pad.
        if op == "Pad":
            pads = n.input(1)
            if pads is None or pads.value is None or np.any(np.asarray(pads.value) != 0):
                return None
        return x
    return None


def remove_noops(g: Graph) -> int:
    count = 0
    for n in list(g.nodes):
        if n.graph is not g:
            continue
        x = _is_noop(n)
        if x is None:
            continue
        if _bypass(g, n.outputs[0], x):
            if not any(v.uses for v in n.outputs) and not any(v in g.outputs for v in n.outputs):
                g.remove_node(n)
            count += 1
    return count


def merge_reorganize(g: Graph) -> int:
    """Transpose(Transpose(x)) -> one Transpose; a chain of reshaping ops
    (Reshape/Flatten/Squeeze/Unsqueeze: Reorganize in the op table) -> one
    Reshape to the final static shape."""
    count = 0
    for n in list(g.nodes):
        if n.graph is not g:
            continue
        x = n.input(0)
        p = x.producer if x is not None else None
        if p is None or p.graph is not g:
            continue
        if n.op == "Transpose" and p.op == "Transpose":
            r = p.input(0).rank
            p1 = p.attrs.get("perm") or list(range(r))[::-1]
            p2 = n.attrs.get("perm") or list(range(r))[::-1]
            perm = [int(p1[i]) for i in p2]
            new = g.add_node("Transpose", [p.input(0)], {"perm": perm}, before=n).outputs[0]
        elif (_reorg(n) and _reorg(p) and _static(n.outputs[0]) and len(p.outputs) == 1
              and get_op("Reshape") is not None):
            shape = g.const(np.array(n.outputs[0].shape, dtype=np.int64), name="shape")
            new = g.add_node("Reshape", [p.input(0), shape], before=n).outputs[0]
        else:
            continue
        replace_value(g, n.outputs[0], new)
        for m in (n, p):
            if m.graph is g and not any(v.uses for v in m.outputs) and not any(v in g.outputs for v in m.outputs):
                g.remove_node(m)
        count += 1
    return count


def _reorg(n) -> bool:
    od = n.opdef
    return od is not None and od.lower is not None and n.input(0) is not None and _reshaping(n)


def _reshaping(n) -> bool:
    """Same elements in the same row-major order. Elementwise ops can be
    Reorganize in the op table (a [1,1] + scalar add) without being this."""
    od = n.opdef
    if n.op in RESHAPES:
        return True
    return od is not None and od.category in ("shape", "movement") and od.mapping_of(n) == Mapping.REORG \
        and len([v for v in n.inputs if v is not None and v.const is None]) == 1


def _const_key(v: Value):
    c = v.const
    if c.size > 4096 or c.dtype == object:   # weights: hashing them costs more than it finds
        return ("v", id(v))
    return ("c", c.dtype.str, c.shape, hashlib.sha1(np.ascontiguousarray(c).tobytes()).hexdigest())


def _attr_key(a):
    if isinstance(a, np.ndarray):
        return ("arr", a.dtype.str, a.shape, a.tobytes())
    if isinstance(a, (list, tuple)):
        return tuple(_attr_key(x) for x in a)
    if isinstance(a, float) and a != a:
        return "nan"
    return a


def cse(g: Graph) -> int:
    """Common subexpressions: equal constants become one, then nodes with the
    same op, attributes and inputs compute once."""
    count = 0
    seen_c: dict = {}
    for n in g.nodes:
        for i, v in enumerate(n.inputs):
            if v is not None and v.const is not None:
                k = _const_key(v)
                w = seen_c.setdefault(k, v)
                if w is not v:
                    g.set_input(n, i, w)
    seen: dict = {}
    for n in list(g.nodes):
        if n.graph is not g or n.subgraphs():
            continue
        od = n.opdef
        if od is None or od.category == "random" or n.op in ("Dropout",):
            continue
        try:
            key = (n.op, n.domain, len(n.outputs), tuple(id(v) for v in n.inputs),
                   tuple(sorted((k, _attr_key(a)) for k, a in n.attrs.items())))
            hash(key)
        except TypeError:
            continue
        m = seen.get(key)
        if m is None:
            seen[key] = n
            continue
        if any(v in g.outputs for v in n.outputs):
            continue
        for a, b in zip(n.outputs, m.outputs):
            g.replace_uses(a, b)
        g.remove_node(n)
        count += 1
    return count


def dead_code(g: Graph) -> int:
    return g.remove_dead()
