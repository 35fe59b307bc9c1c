"""Reductions and normalizations (Many-to-Many)."""
from __future__ import annotations

import numpy as np

from fusion.ir import expr as E
from fusion.ops.table import (Algebra, AttrSpec, Mapping, OpDef, const_input, norm_axis, prod,
                              register)


# ---------------------------------------------------------------------------
# Reduce* family. Canonical form (opset 18): axes is an optional input.

def runtime_axes(node) -> bool:
    """Axes given as a (non-empty) tensor computed at run time."""
    v = node.input(1)
    return v is not None and const_input(node, 1) is None and v.size > 0


def reduce_axes(node, args=None) -> list[int]:
    x = node.inputs[0]
    axes = const_input(node, 1) if args is None or len(args) < 2 else args[1]
    if axes is None and runtime_axes(node):
        from fusion.errors import ShapeError
        raise ShapeError(f"{node.label()}: axes must be a constant")
    if axes is None or np.asarray(axes).size == 0:
        if node.attrs.get("noop_with_empty_axes", 0):
            return []
        return list(range(x.rank))
    return sorted({norm_axis(int(a), x.rank, node) for a in np.asarray(axes).reshape(-1)})


def _reduce_normalize(node, graph, opset, since_input: int):
    if opset < since_input and "axes" in node.attrs:
        axes = node.attrs.pop("axes")
        while len(node.inputs) < 2:
            node.inputs.append(None)
        if axes is not None and len(axes):
            graph.set_input(node, 1, graph.const(np.array(axes, dtype=np.int64), "axes"))
    node.attrs.pop("axes", None)


def _reduce_shape(node):
    x = node.inputs[0]
    if runtime_axes(node):
        from fusion.ops.table import open_dims
        return open_dims(node, x.rank if node.attrs["keepdims"] else x.rank - node.inputs[1].size)
    axes = reduce_axes(node)
    keep = node.attrs["keepdims"]
    out = []
    for i, d in enumerate(x.shape):
        if i in axes:
            if keep:
                out.append(1)
        else:
            out.append(d)
    return tuple(out)


# name -> (combine op over expr, numpy reducer, pre-map, post-map, flops/elem)
_REDUCE = {
    "ReduceSum": ("sum", lambda a, ax, k: np.sum(a, axis=ax, keepdims=k), None, None, 1),
    "ReduceMean": ("sum", lambda a, ax, k: np.mean(a, axis=ax, keepdims=k), None, "mean", 1),
    "ReduceMax": ("max", None, None, None, 1),
    "ReduceMin": ("min", None, None, None, 1),
    "ReduceProd": ("prod", lambda a, ax, k: np.prod(a, axis=ax, keepdims=k), None, None, 1),
    "ReduceSumSquare": ("sum", lambda a, ax, k: np.sum(a * a, axis=ax, keepdims=k), "square", None, 2),
    "ReduceL1": ("sum", lambda a, ax, k: np.sum(np.abs(a), axis=ax, keepdims=k), "abs", None, 2),
    "ReduceL2": ("sum", lambda a, ax, k: np.sqrt(np.sum(a * a, axis=ax, keepdims=k)), "square", "sqrt", 2),
    "ReduceLogSum": ("sum", lambda a, ax, k: np.log(np.sum(a, axis=ax, keepdims=k)), None, "log", 1),
    "ReduceLogSumExp": ("sum", None, "exp-shifted", "log-shifted", 3),
}


def _np_reduce(name, a, axes, keep):
    ax = tuple(axes)
    if name in ("ReduceMax", "ReduceMin"):
        if a.size:
            return (np.max if name == "ReduceMax" else np.min)(a, axis=ax, keepdims=keep)
        return np.full(_shape_after(a.shape, ax, keep), _extreme(a.dtype, name == "ReduceMax"), a.dtype)
    if name == "ReduceLogSumExp":
        m = np.max(a, axis=ax, keepdims=True) if a.size else np.zeros(_shape_after(a.shape, ax, True), a.dtype)
        m = np.where(np.isfinite(m), m, 0)
        r = np.log(np.sum(np.exp(a - m), axis=ax, keepdims=True)) + m
        return r if keep else np.squeeze(r, axis=ax)
    return _REDUCE[name][1](a, ax, keep)


def _lower_runtime_axes(name, node, out, read):
    """Axes read at run time: reduce over the whole input, keeping the elements
    whose non-reduced coordinates match this output position."""
    op, _, pre, post, _ = _REDUCE[name]
    x = node.inputs[0]
    r = x.rank
    n_axes = int(node.inputs[1].size)
    keep = node.attrs["keepdims"]
    axv = []
    for j in range(n_axes):
        a = E.cast(read(1, [E.Const(j)]), "int64")
        axv.append(E.select(E.binary("lt", a, 0), a + r, a))
    red = []
    for d in range(r):
        c = E.Const(False)
        for a in axv:
            c = E.binary("or", c, E.binary("eq", a, d))
        red.append(c)
    # output coordinate of input dim d
    where = []
    for d in range(r):
        if keep:
            where.append(out[d])
            continue
        before = E.Const(0)
        for e in range(d):
            before = before + E.select(red[e], E.Const(1), E.Const(0))
        pos = d - before
        v = out[min(d, len(out) - 1)] if out else E.Const(0)
        for p_ in range(min(d, len(out) - 1) - 1, -1, -1):
            v = E.select(E.binary("eq", pos, p_), out[p_], v)
        where.append(v)
    ext = [int(s) for s in x.shape]

    def match(rv):
        c = E.Const(True)
        for d in range(r):
            c = E.binary("and", c, E.binary("or", red[d], E.binary("eq", rv[d], where[d])))
        return c

    dt = "bool" if x.dtype == np.bool_ else x.dtype.name
    isf = dt.startswith("float")

    def val(rv):
        v = read(0, list(rv))
        if pre == "square":
            return v * v
        if pre == "abs":
            return E.call("abs", v) if isf else E.select(E.binary("lt", v, 0), -v, v)
        return v

    def neutral(kind):
        if kind in ("sum",):
            return E.Const(0, dt)
        if kind == "prod":
            return E.Const(1, dt)
        return E.Const(_extreme(dt, kind == "max"), dt)

    if name == "ReduceLogSumExp":
        mx = E.reduce("max", ext, lambda rv: E.select(match(rv), val(rv), neutral("max")))
        mx = E.select(E.call("isinf", mx, dtype="bool"), E.Const(0.0, dt), mx)
        s_ = E.reduce("sum", ext, lambda rv: E.select(match(rv), E.call("exp", val(rv) - mx), neutral("sum")))
        return E.call("log", s_) + mx
    acc = E.reduce(op, ext, lambda rv: E.select(match(rv), val(rv), neutral(op)))
    if post == "mean":
        cnt = E.Const(1)
        for d in range(r):
            cnt = cnt * E.select(red[d], E.Const(ext[d]), E.Const(1))
        acc = acc / E.cast(cnt, dt) if isf else acc // cnt
    elif post == "sqrt":
        acc = E.call("sqrt", acc)
    elif post == "log":
        acc = E.call("log", acc)
    return acc


def _extreme(dtype, lowest: bool):
    """The identity of max (lowest value) or min (highest value) for a dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return not lowest
    if dtype.kind == "f":
        return -np.inf if lowest else np.inf
    info = np.iinfo(dtype)
    return int(info.min if lowest else info.max)


def _shape_after(shape, ax, keep):
    return tuple(1 if i in ax else d for i, d in enumerate(shape) if keep or i not in ax)


def _reduce_mapping(node) -> Mapping:
    # Many-to-Many, unless nothing is reduced: no axes (noop), or an empty input.
    # (Reducing axes of size 1 stays Many-to-Many by declaration: an anchor.)
    x = node.inputs[0]
    try:
        if int(prod(x.shape)) == 0:
            return Mapping.O2O
        if runtime_axes(node):
            return Mapping.M2M
        return Mapping.M2M if reduce_axes(node) else Mapping.O2O
    except TypeError:  # symbolic dims
        return Mapping.M2M


def _make_reduce(name):
    op, _, pre, post, fpe = _REDUCE[name]

    def reference(node, a):
        axes = reduce_axes(node, a)
        x = a[0]
        if not axes:
            y = x.copy()
            if pre == "square": y = x * x
            elif pre == "abs": y = np.abs(x)
            elif post == "sqrt": y = np.abs(x)
            if post == "log": y = np.log(x)
            return [y.astype(x.dtype)]
        with np.errstate(all="ignore"):
            y = _np_reduce(name, x, axes, bool(node.attrs["keepdims"]))
        return [np.asarray(y).astype(x.dtype)]

    def lower(node, out, read, k=0):
        x = node.inputs[0]
        if runtime_axes(node):
            return _lower_runtime_axes(name, node, out, read)
        axes = reduce_axes(node)
        keep = node.attrs["keepdims"]
        # Map output index to the kept input axes.
        kept, j = {}, 0
        for i in range(x.rank):
            if i in axes:
                if keep:
                    j += 1
            else:
                kept[i] = out[j]
                j += 1
        ext = [int(x.shape[a]) for a in axes]

        def at(r):
            idx = []
            for i in range(x.rank):
                idx.append(r[axes.index(i)] if i in axes else kept[i])
            return read(0, idx)

        if not axes:
            v = read(0, list(out))
            if pre == "square": return v * v
            if pre == "abs": return E.call("abs", v) if v.dtype.startswith("float") else E.select(E.binary("lt", v, 0), -v, v)
            if post == "sqrt": return E.call("abs", v)
            if post == "log": return E.call("log", v)
            return v
        if name == "ReduceLogSumExp":
            mx = E.reduce("max", ext, at)
            s = E.reduce("sum", ext, lambda r: E.call("exp", at(r) - mx))
            return E.call("log", s) + mx

        def body(r):
            v = at(r)
            if pre == "square":
                return v * v
            if pre == "abs":
                return E.call("abs", v) if v.dtype.startswith("float") else E.select(E.binary("lt", v, 0), -v, v)
            return v

        acc = E.reduce(op, ext, body)
        if post == "mean":
            acc = acc / E.Const(float(prod(ext)), acc.dtype) if acc.dtype.startswith("float") else acc // int(prod(ext))
        elif post == "sqrt":
            acc = E.call("sqrt", acc)
        elif post == "log":
            acc = E.call("log", acc)
        return acc

    def normalize(node, graph, opset):
        _reduce_normalize(node, graph, opset, 13 if name == "ReduceSum" else 18)

    register(OpDef(
        name, inputs=("data", "axes?"), outputs=("reduced",),
        attrs={"keepdims": AttrSpec("int", 1), "noop_with_empty_axes": AttrSpec("int", 0)},
        mapping=_reduce_mapping, infer=lambda node: [(node.inputs[0].dtype, _reduce_shape(node))],
        reference=reference, lower=lower, normalize=normalize, export_opset=18,
        flops=lambda node, f=fpe: f * int(prod(node.inputs[0].shape)),
        category="reduce",
        algebra=Algebra(),
    ))


for _name in _REDUCE:
    _make_reduce(_name)


# ---------------------------------------------------------------------------
# Softmax family (opset 13 semantics: one axis)

def _softmax_normalize(node, graph, opset):
    # Before opset 13 Softmax flattened the input to 2-D at `axis` (default 1).
    # Where axis is the last dim both meanings agree; otherwise rewrite as
    # Reshape -> Softmax(axis=-1) -> Reshape.
    if opset >= 13:
        return
    x = node.inputs[0]
    axis = norm_axis(node.attrs.get("axis", 1), x.rank, node)
    node.attrs["axis"] = axis
    if axis == x.rank - 1:
        return
    from fusion.ir.graph import Value
    rows = prod(x.shape[:axis])
    cols = prod(x.shape[axis:])
    r1 = graph.add_node("Reshape", [x, graph.const(np.array([rows, cols], np.int64), "shape")], before=node)
    graph.set_input(node, 0, r1.outputs[0])
    node.attrs["axis"] = -1
    # Node's output keeps its name and shape; a fresh 2-D value sits between.
    y = node.outputs[0]
    mid = graph.new_value(y.dtype, (rows, cols), name=y.name + "_2d")
    mid.producer = node
    node.outputs[0] = mid
    y.producer = None
    idx = graph.nodes.index(node)
    after = graph.nodes[idx + 1] if idx + 1 < len(graph.nodes) else None
    graph.add_node("Reshape", [mid, graph.const(np.array(x.shape, np.int64), "shape")],
                   outputs=[y], before=after)


def _softmax_ref(kind):
    def ref(node, a):
        x = a[0]
        ax = node.attrs["axis"]
        m = np.max(x, axis=ax, keepdims=True)
        e = np.exp(x - m)
        s = np.sum(e, axis=ax, keepdims=True)
        if kind == "Softmax":
            y = e / s
        elif kind == "LogSoftmax":
            y = (x - m) - np.log(s)
        return [y.astype(x.dtype)]
    return ref


def _softmax_lower(kind):
    def lower(node, out, read, k=0):
        x = node.inputs[0]
        ax = norm_axis(node.attrs["axis"], x.rank, node)
        n = int(x.shape[ax])

        def at(j):
            idx = list(out)
            idx[ax] = j
            return read(0, idx)

        mx = E.reduce("max", [n], lambda r: at(r[0]))
        s = E.reduce("sum", [n], lambda r: E.call("exp", at(r[0]) - mx))
        xi = read(0, list(out))
        if kind == "Softmax":
            return E.call("exp", xi - mx) / s
        return (xi - mx) - E.call("log", s)
    return lower


for _kind in ("Softmax", "LogSoftmax"):
    register(OpDef(
        _kind, inputs=("input",), outputs=("output",), attrs={"axis": AttrSpec("int", -1)},
        mapping=Mapping.M2M, infer=lambda node: [(node.inputs[0].dtype, node.inputs[0].shape)],
        reference=_softmax_ref(_kind), lower=_softmax_lower(_kind), normalize=_softmax_normalize,
        export_opset=13, flops=lambda node: 5 * int(prod(node.inputs[0].shape)), category="reduce",
    ))


# ---------------------------------------------------------------------------
# CumSum (axis is a scalar input), ArgMax / ArgMin

def _cumsum_axis(node):
    from fusion.ops.table import require_const
    return norm_axis(int(np.asarray(require_const(node, 1, "axis")).reshape(-1)[0]), node.inputs[0].rank, node)


def _cumsum_lower(node, out, read, k=0):
    x = node.inputs[0]
    rev, exc = node.attrs["reverse"], node.attrs["exclusive"]

    def along(ax):
        p = out[ax]

        def body(r):
            idx = list(out)
            idx[ax] = r[0]
            v = read(0, idx)
            take = E.binary(("gt" if exc else "ge") if rev else ("lt" if exc else "le"), r[0], p)
            return E.select(take, v, E.Const(0, v.dtype))

        return E.reduce("sum", [int(x.shape[ax])], body)

    if const_input(node, 1) is not None:
        return along(_cumsum_axis(node))
    # The axis is computed at run time: choose among all axes by its value.
    a = E.cast(read(1, [E.Const(0)] * node.inputs[1].rank), "int64")
    a = E.select(E.binary("lt", a, 0), a + x.rank, a)
    res = along(x.rank - 1)
    for ax in range(x.rank - 2, -1, -1):
        res = E.select(E.binary("eq", a, ax), along(ax), res)
    return res


def _cumsum_reference_any(node, a):
    x = a[0]
    ax = int(np.asarray(a[1]).reshape(-1)[0])
    ax = norm_axis(ax, x.ndim, node)
    rev, exc = node.attrs["reverse"], node.attrs["exclusive"]
    y = np.flip(x, ax) if rev else x
    c = np.cumsum(y, axis=ax, dtype=x.dtype)
    if exc:
        c = c - y
    return [np.ascontiguousarray(np.flip(c, ax) if rev else c).astype(x.dtype)]


register(OpDef(
    "CumSum", inputs=("x", "axis"), outputs=("y",), since=11,
    attrs={"exclusive": AttrSpec("int", 0), "reverse": AttrSpec("int", 0)},
    mapping=Mapping.M2M, infer=lambda node: [(node.inputs[0].dtype, node.inputs[0].shape)],
    reference=_cumsum_reference_any, lower=_cumsum_lower, category="reduce",
    flops=lambda node: int(prod(node.inputs[0].shape)),
))


def _arg_shape(node):
    x = node.inputs[0]
    ax = norm_axis(node.attrs["axis"], x.rank, node)
    s = list(x.shape)
    if node.attrs["keepdims"]:
        s[ax] = 1
    else:
        del s[ax]
    return tuple(s)


def _arg(kind):
    def reference(node, a):
        x = a[0]
        ax = norm_axis(node.attrs["axis"], x.ndim, node)
        f = np.argmax if kind == "max" else np.argmin
        if node.attrs["select_last_index"]:
            r = x.shape[ax] - 1 - f(np.flip(x, ax), axis=ax)
        else:
            r = f(x, axis=ax)
        if node.attrs["keepdims"]:
            r = np.expand_dims(r, ax)
        return [r.astype(np.int64)]

    def lower(node, out, read, k=0):
        x = node.inputs[0]
        ax = norm_axis(node.attrs["axis"], x.rank, node)
        n = int(x.shape[ax])
        last = node.attrs["select_last_index"]
        base = list(out)
        if not node.attrs["keepdims"]:
            base.insert(ax, E.Const(0))

        def at(r):
            idx = list(base)
            idx[ax] = (n - 1 - r[0]) if last else r[0]
            return read(0, idx)

        pos = E.reduce("arg" + kind, [n], at)
        return (n - 1 - pos) if last else pos

    return reference, lower


for _kind in ("max", "min"):
    _ref, _low = _arg(_kind)
    register(OpDef(
        "Arg" + _kind.capitalize(), inputs=("data",), outputs=("reduced",),
        attrs={"axis": AttrSpec("int", 0), "keepdims": AttrSpec("int", 1), "select_last_index": AttrSpec("int", 0)},
        mapping=Mapping.M2M, infer=lambda node: [(np.dtype(np.int64), _arg_shape(node))],
        reference=_ref, lower=_low, category="reduce", flops=lambda node: int(prod(node.inputs[0].shape)),
    ))
