"""Small helpers for writing rules: conditions on matches."""
from __future__ import annotations

import numpy as np


def val(m, name):
    v = m.get(name)
    return None if v is None else v.value


def positive(*names):
    def cond(m):
        return all(val(m, n) is not None and bool(np.all(val(m, n) > 0)) for n in names)
    return cond


def nonneg_const(*names):
    def cond(m):
        return all(val(m, n) is not None and bool(np.all(val(m, n) >= 0)) for n in names)
    return cond


def same_shape(a, b):
    def cond(m):
        return tuple(m[a].shape) == tuple(m[b].shape)
    return cond


def all_of(*conds):
    def cond(m):
        return all(c(m) for c in conds)
    return cond


def single_axis(m, name="AX"):
    a = val(m, name)
    return a is not None and a.size == 1


def reduced_count(m, x="A", axes="AX"):
    """Elements each output of a Reduce over `axes` of `x` combines."""
    from fusion.ops.reduce import reduce_axes
    node = m.root if m.root.op.startswith("Reduce") else next(n for n in m.nodes if n.op.startswith("Reduce"))
    return int(np.prod([m[x].shape[a] for a in reduce_axes(node)]))
