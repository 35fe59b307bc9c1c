"""Reorganize and Shuffle ops, and data-movement ops that are pure index arithmetic."""
from __future__ import annotations

import numpy as np

from fusion.errors import ShapeError
from fusion.ir import expr as E
from fusion.ops.table import (AttrSpec, Mapping, OpDef, norm_axis, prod, register,
                              require_const, same_shape_or)


# ---------------------------------------------------------------------------
# Reshape

def symbolic_value(v, depth: int = 0):
    """The value of a small 1-D integer tensor as a list of dims (ints or
    symbols), following shape arithmetic back to Shape nodes; None if unknown.
    Lets Reshape(x, Shape(y)) work when y's size is only known at run time."""
    if v is None or depth > 12:
        return None
    if v.value is not None:
        a = np.asarray(v.value)
        return [int(d) for d in a.reshape(-1)] if a.dtype.kind in "iu" and a.ndim <= 1 else None
    n = v.producer
    if n is None:
        return None
    ins = n.inputs
    if n.op == "Shape":
        x = ins[0]
        r = x.rank
        st = int(n.attrs.get("start") or 0)
        en = n.attrs.get("end")
        en = r if en is None else int(en)
        return list(x.shape)[slice(st + r if st < 0 else st, en + r if en < 0 else en)]
    if n.op in ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten"):
        return symbolic_value(ins[0], depth + 1) if v.rank <= 1 else None
    if n.op == "Concat":
        parts = [symbolic_value(u, depth + 1) for u in ins if u is not None]
        return None if any(p is None for p in parts) else [d for p in parts for d in p]
    if n.op == "Gather" and ins[1].value is not None and ins[0].rank == 1:
        src = symbolic_value(ins[0], depth + 1)
        if src is None:
            return None
        return [src[int(i)] for i in np.asarray(ins[1].value).reshape(-1)]
    return None


def shape_spec(node, i: int, what: str) -> list:
    """Input i as a list of dims: a constant, or symbolic shape arithmetic."""
    spec = symbolic_value(node.input(i))
    if spec is None:
        require_const(node, i, what)  # raises the usual message
    return spec


def reshape_target(in_shape, spec, allowzero: int, node=None) -> tuple:
    spec = [int(s) if isinstance(s, (int, np.integer)) else s for s in
            (spec if isinstance(spec, list) else np.asarray(spec).reshape(-1).tolist())]
    out = []
    for i, s in enumerate(spec):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise ShapeError(f"{node.label() + ': ' if node else ''}Reshape copies dim {i} (0) but the input has rank {len(in_shape)}")
            out.append(in_shape[i])
        else:
            out.append(s)
    if out.count(-1) > 1:
        raise ShapeError(f"{node.label() + ': ' if node else ''}Reshape target {spec} has more than one -1")
    total = prod(in_shape)
    if -1 in out:
        known = prod([d for d in out if d != -1])
        if isinstance(total, int) and isinstance(known, int):
            if known == 0 or total % known:
                raise ShapeError(f"{node.label() + ': ' if node else ''}cannot reshape {list(in_shape)} to {spec}")
            out[out.index(-1)] = total // known
        else:
            out[out.index(-1)] = total / known
    elif isinstance(total, int) and all(isinstance(d, int) for d in out) and prod(out) != total:
        raise ShapeError(f"{node.label() + ': ' if node else ''}cannot reshape {list(in_shape)} ({total} elements) to {spec}")
    return tuple(out)


def _reshape_infer(node):
    x = node.inputs[0]
    spec = symbolic_value(node.input(1))
    if spec is None:
        return [(x.dtype, open_dims(node, node.inputs[1].shape[0]))]
    return [(x.dtype, reshape_target(x.shape, spec, node.attrs.get("allowzero", 0), node))]


def _reshape_normalize(node, graph, opset):
    if opset < 5:  # shape was an attribute
        spec = node.attrs.pop("shape")
        node.inputs.append(None)
        graph.set_input(node, 1, graph.const(np.array(spec, dtype=np.int64), "shape"))


def reorganize_lower(node, out, read, k=0):
    """Same elements in the same row-major order, new shape."""
    x = node.inputs[0]
    flat = E.linearize(out, node.outputs[0].shape)
    return read(0, E.delinearize(flat, x.shape))


register(OpDef(
    "Reshape", inputs=("data", "shape"), outputs=("reshaped",),
    attrs={"allowzero": AttrSpec("int", 0)},
    mapping=lambda node: same_shape_or(Mapping.REORG)(node), infer=_reshape_infer,
    reference=lambda node, a: [np.reshape(a[0], reshape_target(a[0].shape, a[1], node.attrs.get("allowzero", 0), node))],
    lower=reorganize_lower, normalize=_reshape_normalize, category="shape",
))


# ---------------------------------------------------------------------------
# Transpose

def _perm(node):
    p = node.attrs.get("perm")
    r = node.inputs[0].rank
    if not p:
        return list(range(r))[::-1]
    p = [int(x) for x in p]
    if sorted(p) != list(range(r)):
        raise ShapeError(f"{node.label()}: perm {p} is not a permutation of {r} axes")
    return p


def _transpose_mapping(node):
    # Moving only unit dims keeps the element order: a reshape. (The identity
    # permutation stays a Shuffle by declaration; the planner sees it as a copy.)
    p = _perm(node)
    x = node.inputs[0]
    moved = [a for a in p if x.shape[a] != 1]
    if p != sorted(p) and moved == sorted(moved):
        return Mapping.REORG
    return Mapping.SHUFFLE


def _transpose_lower(node, out, read, k=0):
    p = _perm(node)
    idx = [None] * len(p)
    for j, a in enumerate(p):
        idx[a] = out[j]
    return read(0, idx)


register(OpDef(
    "Transpose", inputs=("data",), outputs=("transposed",),
    attrs={"perm": AttrSpec("ints", [])},
    mapping=lambda node: _transpose_mapping(node),
    infer=lambda node: [(node.inputs[0].dtype, tuple(node.inputs[0].shape[a] for a in _perm(node)))],
    reference=lambda node, a: [np.array(np.transpose(a[0], _perm(node)), order="C")],
    lower=_transpose_lower, category="shape",
))


# ---------------------------------------------------------------------------
# Concat

def _concat_infer(node):
    ins = [v for v in node.inputs if v is not None]
    r = ins[0].rank
    ax = norm_axis(node.attrs["axis"], r, node)
    shape = list(ins[0].shape)
    total = 0
    for v in ins:
        if v.rank != r:
            raise ShapeError(f"{node.label()}: inputs have different ranks ({r} and {v.rank})")
        total = total + v.shape[ax]
    shape[ax] = total
    return [(ins[0].dtype, tuple(shape))]


def _concat_lower(node, out, read, k=0):
    ax = norm_axis(node.attrs["axis"], node.outputs[0].rank, node)
    pieces = [(i, v) for i, v in enumerate(node.inputs) if v is not None and v.shape[ax] != 0]
    # Select chain from the last piece backwards; offsets are compile-time ints.
    offs, o = [], 0
    for i, v in pieces:
        offs.append(o)
        o += int(v.shape[ax])
    res = None
    for (i, v), off in reversed(list(zip(pieces, offs))):
        idx = list(out)
        idx[ax] = out[ax] - off
        val = read(i, idx)
        res = val if res is None else E.select(E.binary("lt", out[ax], off + int(v.shape[ax])), val, res)
    return res


register(OpDef(
    "Concat", inputs=("inputs*",), outputs=("concat_result",),
    attrs={"axis": AttrSpec("int", 0)},
    mapping=Mapping.O2O, infer=_concat_infer,
    reference=lambda node, a: [np.concatenate([x for x in a if x is not None], axis=node.attrs["axis"])],
    lower=_concat_lower, category="shape",
))


# ---------------------------------------------------------------------------
# Flatten, Squeeze, Unsqueeze: Reorganize (same elements, same order, new shape)

from fusion.ops.table import attr_to_input, const_input, empty_outputs, open_dims, vec  # noqa: E402


def _flatten_reference(node, x):
    ax = int(node.attrs["axis"])
    ax = ax + x.ndim if ax < 0 else ax
    return np.reshape(x, (int(np.prod(x.shape[:ax], dtype=np.int64)), int(np.prod(x.shape[ax:], dtype=np.int64))))


def _flatten_infer(node):
    x = node.inputs[0]
    ax = int(node.attrs["axis"])
    ax = ax + x.rank if ax < 0 else ax
    if not 0 <= ax <= x.rank:
        raise ShapeError(f"{node.label()}: axis {node.attrs['axis']} is out of range for rank {x.rank}")
    return [(x.dtype, (prod(x.shape[:ax]), prod(x.shape[ax:])))]


register(OpDef(
    "Flatten", inputs=("input",), outputs=("output",), attrs={"axis": AttrSpec("int", 1)},
    mapping=same_shape_or(Mapping.REORG), infer=_flatten_infer,
    reference=lambda node, a: [_flatten_reference(node, a[0])],
    lower=reorganize_lower, category="shape",
))


def _axes_input(node, i, rank):
    a = const_input(node, i)
    if a is None:
        if node.input(i) is not None:
            raise ShapeError(f"{node.label()}: axes (input {i}) must be a constant")
        return None
    return sorted({norm_axis(int(v), rank, node) for v in np.asarray(a).reshape(-1)})


def _squeeze_axes(node):
    x = node.inputs[0]
    axes = _axes_input(node, 1, x.rank)
    if axes is None:
        if not all(isinstance(d, int) for d in x.shape):
            raise ShapeError(f"{node.label()}: Squeeze without axes needs a static input shape; bind the open "
                             f"dimensions with --shape")
        return [i for i, d in enumerate(x.shape) if d == 1]
    for a in axes:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise ShapeError(f"{node.label()}: cannot squeeze axis {a} of size {x.shape[a]} (shape {list(x.shape)})")
    return axes


def _squeeze_infer(node):
    x = node.inputs[0]
    if node.input(1) is not None and const_input(node, 1) is None:
        return [(x.dtype, open_dims(node, x.rank - int(node.inputs[1].size)))]
    axes = _squeeze_axes(node)
    return [(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]


def _unsqueeze_infer(node):
    x = node.inputs[0]
    a = const_input(node, 1)
    if a is None:
        return [(x.dtype, open_dims(node, x.rank + int(node.inputs[1].size)))]
    r = x.rank + int(np.asarray(a).size)
    axes = sorted({norm_axis(int(v), r, node) for v in np.asarray(a).reshape(-1)})
    if len(axes) != np.asarray(a).size:
        raise ShapeError(f"{node.label()}: Unsqueeze axes {np.asarray(a).tolist()} repeat an axis")
    dims = iter(x.shape)
    return [(x.dtype, tuple(1 if i in axes else next(dims) for i in range(r)))]


def _axes_attr_to_input(since):
    def normalize(node, graph, opset):
        if opset < since:
            attr_to_input(node, graph, "axes", 1)
        node.attrs.pop("axes", None)
    return normalize


def _squeeze_reference(node, a):
    x = a[0]
    if len(a) < 2 or a[1] is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(norm_axis(v, x.ndim, node) for v in vec(a[1])))]


def _unsqueeze_reference(node, a):
    x = a[0]
    axes = vec(a[1])
    r = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(norm_axis(v, r, node) for v in axes))]


for _name, _infer, _ref in (("Squeeze", _squeeze_infer, _squeeze_reference),
                            ("Unsqueeze", _unsqueeze_infer, _unsqueeze_reference)):
    register(OpDef(
        _name, inputs=("data", "axes?" if _name == "Squeeze" else "axes"), outputs=("squeezed" if _name == "Squeeze" else "expanded",),
        mapping=same_shape_or(Mapping.REORG), infer=_infer,
        reference=_ref,
        lower=reorganize_lower, normalize=_axes_attr_to_input(13), export_opset=13, category="shape",
    ))


# ---------------------------------------------------------------------------
# Shape, Size: values known from shapes alone (folded at compile time)

def _shape_range(node):
    x = node.inputs[0]
    r = x.rank
    s = int(node.attrs.get("start") or 0)
    e = node.attrs.get("end")
    e = r if e is None else int(e)
    s = min(max(s + r if s < 0 else s, 0), r)
    e = min(max(e + r if e < 0 else e, 0), r)
    return s, max(e, s)


def _shape_fold(node):
    x = node.inputs[0]
    s, e = _shape_range(node)
    dims = x.shape[s:e]
    if not all(isinstance(d, int) for d in dims):
        return None
    return [np.array(dims, dtype=np.int64)]


def _const_select(out0, values, dtype):
    """Element out0 of a small constant vector, as a chain of selects."""
    res = E.Const(values[-1], dtype) if values else E.Const(0, dtype)
    for j in range(len(values) - 2, -1, -1):
        res = E.select(E.binary("eq", out0, j), E.Const(values[j], dtype), res)
    return res


def _shape_lower(node, out, read, k=0):
    s, e = _shape_range(node)
    if not all(isinstance(d, (int, np.integer)) for d in node.inputs[0].shape[s:e]):
        raise ShapeError(f"{node.label()}: the shape of '{node.inputs[0].name}' is known only at run time "
                         f"({list(node.inputs[0].shape)}); it has no compile-time index function")
    return _const_select(out[0], [int(d) for d in node.inputs[0].shape[s:e]], "int64")


register(OpDef(
    "Shape", inputs=("data",), outputs=("shape",),
    attrs={"start": AttrSpec("int", 0), "end": AttrSpec("int", None)},
    mapping=Mapping.O2O,
    infer=lambda node: [(np.dtype(np.int64), (_shape_range(node)[1] - _shape_range(node)[0],))],
    reference=lambda node, a: [np.array(a[0].shape[slice(*_shape_range(node))], dtype=np.int64)],
    lower=_shape_lower, fold=_shape_fold, flops=lambda node: 0, category="shape",
    doc="Reads no element of its input: only its (static) shape.",
))

register(OpDef(
    "Size", inputs=("data",), outputs=("size",), mapping=Mapping.O2O,
    infer=lambda node: [(np.dtype(np.int64), ())],
    reference=lambda node, a: [np.array(a[0].size, dtype=np.int64)],
    lower=lambda node, out, read, k=0: E.Const(int(prod(node.inputs[0].shape)), "int64"),
    fold=lambda node: [np.array(prod(node.inputs[0].shape), np.int64)] if node.inputs[0].is_static else None,
    category="shape",
))


# ---------------------------------------------------------------------------
# Slice (opset 10+ form: starts/ends/axes/steps are inputs)

def _slice_normalize(node, graph, opset):
    if opset < 10:
        attr_to_input(node, graph, "starts", 1)
        attr_to_input(node, graph, "ends", 2)
        attr_to_input(node, graph, "axes", 3)


def _slice_runtime(node) -> bool:
    return any(node.input(i) is not None and const_input(node, i) is None for i in range(1, 5))


def slice_geometry(node, shape=None, args=None):
    """Per input axis: (start, step, count) after ONNX's clamping rules; `shape`
    and `args`: the run-time shape and arguments (open dims, computed starts...)."""
    x = node.inputs[0]
    in_shape = tuple(shape) if shape is not None else tuple(x.shape)
    if args is not None:
        starts, ends = np.asarray(args[1]).reshape(-1), np.asarray(args[2]).reshape(-1)
        axes = args[3] if len(args) > 3 else None
        steps = args[4] if len(args) > 4 else None
    else:
        starts = require_const(node, 1, "starts").reshape(-1)
        ends = require_const(node, 2, "ends").reshape(-1)
        axes = const_input(node, 3)
        steps = const_input(node, 4)
        if node.input(3) is not None and axes is None or node.input(4) is not None and steps is None:
            raise ShapeError(f"{node.label()}: axes and steps of Slice must be constants")
    axes = list(range(len(starts))) if axes is None else [norm_axis(int(a), x.rank, node) for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        raise ShapeError(f"{node.label()}: starts, ends, axes and steps have different lengths")
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{node.label()}: Slice axes {axes} repeat an axis")
    geo = [(0, 1, d) for d in in_shape]
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise ShapeError(f"{node.label()}: Slice step 0 on axis {a}")
        d = in_shape[a]
        if not isinstance(d, (int, np.integer)):
            # an open dim: the whole axis keeps it, anything else gets a new symbol
            if int(s) == 0 and st == 1 and int(e) >= 2 ** 31 - 1:
                geo[a] = (0, 1, d)
            else:
                geo[a] = (None, st, slice_count_formula(int(s), int(e), int(st), d))
            continue
        s0, e0, _ = slice(int(s), int(e), st).indices(d)
        geo[a] = (s0, st, len(range(s0, e0, st)))
    return geo


class _Undecided(Exception):
    pass


def slice_count_formula(s: int, e: int, st: int, d):
    """ONNX's clamping rules as a sympy formula of the open dim `d` (a
    run-time size): the slice's length, with the same integer semantics as
    Python's slice(s, e, st).indices(d). s and e may be formulas of run-time
    sizes too; where their sign is unknown the formula holds both rules
    (a Piecewise on the sign)."""
    import sympy

    def norm(x, lo, hi):
        x = sympy.sympify(x)
        if x.is_Integer and (x >= 2 ** 31 - 1 or x <= -2 ** 31):   # "to the end" / "from the start"
            return hi if x > 0 else lo
        if x.is_negative:
            x = x + d
        elif not x.is_nonnegative:
            if not x.free_symbols:
                raise _Undecided
            # a start/end read from data (its sign known only at run time): both rules
            return sympy.Piecewise((sympy.Min(sympy.Max(x + d, lo), hi), x < 0),
                                   (sympy.Min(sympy.Max(x, lo), hi), True))
        return sympy.Min(sympy.Max(x, lo), hi)
    try:
        if st > 0:
            b, f = norm(s, 0, d), norm(e, 0, d)
            span = f - b
        else:
            b, f = norm(s, -1, d - 1), norm(e, -1, d - 1)
            span = b - f
    except _Undecided:   # a run-time start/end whose sign is unknown: no formula
        return None
    k = abs(st)
    n = span if k == 1 else sympy.floor((span + k - 1) / k)
    return sympy.Max(n, 0)


def slice_start_formula(s: int, st: int, d):
    """The first index a Slice reads on an open axis (same rules as above)."""
    import sympy
    x = s + d if s < 0 else sympy.Integer(s)
    return sympy.Min(sympy.Max(x, 0), d) if st > 0 else sympy.Min(sympy.Max(x, -1), d - 1)


def _slice_lower_runtime(node, out, read, dim_of=None):
    """Starts/steps (and axes) read at run time: per axis, the clamped start
    and the step as expressions (the output shape is known). dim_of(d): the
    input's size on axis d as an expression (default: its static size; the C
    backend passes the actual size of a run-time dim)."""
    x = node.inputs[0]
    n = int(node.inputs[1].shape[0])
    const_axes = const_input(node, 3)
    idx = []
    for d, o in enumerate(out):
        dim = dim_of(d) if dim_of is not None else E.Const(int(x.shape[d]))
        start, step = E.Const(0), E.Const(1)
        for j in range(n - 1, -1, -1):
            sj = E.cast(read(1, [E.Const(j)]), "int64")
            stj = E.cast(read(4, [E.Const(j)]), "int64") if node.input(4) is not None else E.Const(1)
            if node.input(3) is None:
                hit = E.Const(j == d)
            elif const_axes is not None:
                hit = E.Const(norm_axis(vec(const_axes)[j], x.rank, node) == d)
            else:
                aj = E.cast(read(3, [E.Const(j)]), "int64")
                hit = E.binary("eq", E.select(E.binary("lt", aj, 0), aj + x.rank, aj), d)
            start, step = E.select(hit, sj, start), E.select(hit, stj, step)
        s0 = E.select(E.binary("lt", start, 0), start + dim, start)
        hi = E.select(E.binary("lt", step, 0), dim - 1, dim)
        s0 = E.binary("min", E.binary("max", s0, 0), hi)
        idx.append(s0 + o * step)
    return read(0, idx)


def _slice_lower(node, out, read, k=0):
    if _slice_runtime(node):
        return _slice_lower_runtime(node, out, read)
    return read(0, [o * st + s for o, (s, st, _) in zip(out, slice_geometry(node))])


def _slice_axes(node) -> set[int] | None:
    """The axes a Slice touches, when known before run time (axes constant, or
    absent with a starts vector of known length); None when they are not."""
    x = node.inputs[0]
    if node.input(3) is not None:
        a = const_input(node, 3)
        return None if a is None else {int(v) % x.rank for v in np.asarray(a).reshape(-1)}
    st = node.inputs[1].shape
    if st is not None and len(st) == 1 and isinstance(st[0], (int, np.integer)):
        return set(range(int(st[0])))
    return None


def _slice_infer(node):
    if _slice_runtime(node):
        x = node.inputs[0]
        dims, axes = open_dims(node, x.rank), _slice_axes(node)
        if axes is None or x.shape is None:
            return [(x.dtype, dims)]
        # run-time starts/ends only change the sliced axes; the others keep their size
        return [(x.dtype, tuple(dims[i] if i in axes else x.shape[i] for i in range(x.rank)))]
    return [(node.inputs[0].dtype, tuple(c for _, _, c in slice_geometry(node)))]


def _slice_mapping(node):
    if empty_outputs(node):
        return Mapping.O2O
    if _slice_runtime(node):
        return Mapping.O2M  # positions computed from run-time starts/steps
    if not node.outputs[0].is_static:
        return Mapping.O2O
    geo = slice_geometry(node)
    x = node.inputs[0]
    full = all(c == d for (_, _, c), d in zip(geo, x.shape))
    if full and any(st < 0 and c > 1 for _, st, c in geo):
        return Mapping.SHUFFLE  # a reversal: every element once, permuted
    return Mapping.O2O


def _slice_reference(node, a):
    geo = slice_geometry(node, a[0].shape, a if _slice_runtime(node) else None)
    sl = tuple(slice(s, s + st * c if s + st * c >= 0 else None, st) if c else slice(0, 0) for s, st, c in geo)
    return [np.ascontiguousarray(a[0][sl])]


register(OpDef(
    "Slice", inputs=("data", "starts", "ends", "axes?", "steps?"), outputs=("output",),
    mapping=_slice_mapping,
    infer=_slice_infer, reference=_slice_reference, lower=_slice_lower,
    normalize=_slice_normalize, export_opset=10, category="shape",
))


# ---------------------------------------------------------------------------
# Split (opset 13+ form: split sizes are an input; 18 adds num_outputs)

def _split_normalize(node, graph, opset):
    if opset < 13:
        attr_to_input(node, graph, "split", 1)
    if node.input(1) is None and not node.attrs.get("num_outputs"):
        # equal parts: say how many, as opset 18 requires (same meaning when they divide evenly)
        x = node.inputs[0]
        ax = int(node.attrs.get("axis", 0))
        d = x.shape[ax] if x.shape is not None and -x.rank <= ax < x.rank else None
        if isinstance(d, int) and d % len(node.outputs) == 0:
            node.attrs["num_outputs"] = len(node.outputs)


def split_sizes(node, args=None) -> list[int]:
    """Sizes of the parts; `args`: the run-time arguments (split given as a tensor)."""
    x = node.inputs[0]
    ax = norm_axis(node.attrs["axis"], x.rank, node)
    d = x.shape[ax]
    n = len(node.outputs)
    sp = const_input(node, 1) if args is None else (args[1] if len(args) > 1 else None)
    if args is not None:
        d = args[0].shape[ax]
    if sp is not None:
        sizes = [int(s) for s in np.asarray(sp).reshape(-1)]
        if isinstance(d, int) and sum(sizes) != d:
            raise ShapeError(f"{node.label()}: split sizes {sizes} do not add up to dim {d} of axis {ax}")
        return sizes
    if node.input(1) is not None:
        raise ShapeError(f"{node.label()}: split sizes must be a constant")
    if not isinstance(d, int):
        raise ShapeError(f"{node.label()}: cannot split open dimension {d}; bind it with --shape")
    num = node.attrs.get("num_outputs") or n
    if node.attrs.get("num_outputs"):
        chunk = -(-d // num)
        sizes = [min(chunk, max(d - i * chunk, 0)) for i in range(num)]
    else:
        if d % num:
            raise ShapeError(f"{node.label()}: dim {d} of axis {ax} does not split evenly into {num} outputs")
        sizes = [d // num] * num
    return sizes


def _split_infer(node):
    x = node.inputs[0]
    ax = norm_axis(node.attrs["axis"], x.rank, node)
    if node.input(1) is not None and const_input(node, 1) is None:
        out = []
        for k in range(len(node.outputs)):
            sh = list(x.shape)
            sh[ax] = open_dims(node, 1, f"part{k}_")[0]
            out.append((x.dtype, tuple(sh)))
        return out
    out = []
    for s in split_sizes(node)[:len(node.outputs)]:
        sh = list(x.shape)
        sh[ax] = s
        out.append((x.dtype, tuple(sh)))
    return out


def _split_reference(node, a):
    ax = norm_axis(node.attrs["axis"], a[0].ndim, node)
    offs = np.cumsum([0] + split_sizes(node, a))
    return [np.ascontiguousarray(np.take(a[0], np.arange(offs[i], offs[i + 1]), axis=ax))
            for i in range(len(node.outputs))]


def _split_lower(node, out, read, k=0):
    ax = norm_axis(node.attrs["axis"], node.inputs[0].rank, node)
    if node.input(1) is not None and const_input(node, 1) is None:
        # sizes known only at run time: the offset is read
        off = E.Const(0)
        for j in range(k):
            off = off + E.cast(read(1, [E.Const(j)]), "int64")
    else:
        off = sum(split_sizes(node)[:k])
    idx = list(out)
    idx[ax] = idx[ax] + off
    return read(0, idx)


register(OpDef(
    "Split", inputs=("input", "split?"), outputs=("outputs*",),
    attrs={"axis": AttrSpec("int", 0), "num_outputs": AttrSpec("int", None)},
    mapping=lambda node: Mapping.O2M if node.input(1) is not None and const_input(node, 1) is None
    and any(v.size > 0 for v in node.outputs[1:]) else Mapping.O2O,   # run-time sizes: data-dependent offsets
    infer=_split_infer, reference=_split_reference, lower=_split_lower,
    normalize=_split_normalize, export_opset=18, category="shape",
))


# ---------------------------------------------------------------------------
# ConstantOfShape, Range, Constant: values made from nothing but attributes/scalars

def _cos_value(node) -> np.ndarray:
    v = node.attrs.get("value")
    return np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)[:1]


def _cos_shape(node):
    spec = symbolic_value(node.inputs[0])
    if spec is None:
        return open_dims(node, node.inputs[0].shape[0] if node.inputs[0].rank else 0)
    dims = tuple(spec)
    if any(isinstance(d, int) and d < 0 for d in dims):
        raise ShapeError(f"{node.label()}: negative dimension in shape {list(dims)}")
    return dims


register(OpDef(
    "ConstantOfShape", inputs=("input",), outputs=("output",), since=9,
    attrs={"value": AttrSpec("tensor", None)}, mapping=Mapping.O2O,
    infer=lambda node: [(_cos_value(node).dtype, _cos_shape(node))],
    reference=lambda node, a: [np.full(tuple(int(d) for d in a[0].reshape(-1)), _cos_value(node)[0], _cos_value(node).dtype)],
    lower=lambda node, out, read, k=0: E.Const(_cos_value(node)[0].item(), _expr_dtype(_cos_value(node).dtype)),
    category="shape",
))


def _expr_dtype(dt) -> str:
    return "bool" if np.dtype(dt) == np.bool_ else np.dtype(dt).name


def _range_count(start, limit, delta) -> int:
    return max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)


def _range_infer(node):
    vals = [const_input(node, i) for i in range(3)]
    vals = [None if v is None or np.asarray(v).size != 1 else np.asarray(v).reshape(-1)[0] for v in vals]
    dt = node.inputs[0].dtype
    if any(v is None for v in vals):
        import sympy
        return [(dt, (sympy.Symbol(f"{node.name}_len", integer=True, nonnegative=True),))]
    if float(vals[2]) == 0:
        raise ShapeError(f"{node.label()}: Range delta is 0")
    return [(dt, (_range_count(*vals),))]


def _range_reference(node, a):
    start, limit, delta = (np.asarray(x).reshape(()) for x in a)
    n = _range_count(start, limit, delta)
    return [(start + np.arange(n).astype(start.dtype) * delta).astype(start.dtype)]


def _range_lower(node, out, read, k=0):
    dt = _expr_dtype(node.outputs[0].dtype)
    start, delta = (E.Const(np.asarray(const_input(node, i)).reshape(-1)[0].item(), dt) if const_input(node, i) is not None
                    else E.cast(read(i, [E.Const(0)] * node.inputs[i].rank), dt)
                    for i in (0, 2))
    return start + E.cast(out[0], dt) * delta


def _range_mapping(node):
    # Start and delta are read by every output element unless they are constants.
    return Mapping.O2O if const_input(node, 0) is not None and const_input(node, 2) is not None else Mapping.O2M


register(OpDef(
    "Range", inputs=("start", "limit", "delta"), outputs=("output",), since=11,
    mapping=_range_mapping, infer=_range_infer, reference=_range_reference, lower=_range_lower,
    flops=lambda node: 2 * int(prod(node.outputs[0].shape)) if node.outputs[0].is_static else 0,
    category="shape",
))


def _constant_array(node) -> np.ndarray:
    a = node.attrs
    for k, conv in (("value", np.asarray), ("value_float", lambda v: np.array(v, np.float32)),
                    ("value_floats", lambda v: np.array(v, np.float32)), ("value_int", lambda v: np.array(v, np.int64)),
                    ("value_ints", lambda v: np.array(v, np.int64))):
        if a.get(k) is not None:
            return conv(a[k])
    raise ShapeError(f"{node.label()}: Constant has no value attribute")


# The importer turns Constant nodes into constant Values; this entry serves
# graphs built in Python and the export of such nodes.
register(OpDef(
    "Constant", inputs=(), outputs=("output",),
    attrs={k: AttrSpec(kind, None) for k, kind in (("value", "tensor"), ("value_float", "float"),
                                                   ("value_floats", "floats"), ("value_int", "int"),
                                                   ("value_ints", "ints"))},
    mapping=Mapping.OPAQUE, infer=lambda node: [(_constant_array(node).dtype, _constant_array(node).shape)],
    reference=lambda node, a: [_constant_array(node)], lower=None, category="shape",
))
