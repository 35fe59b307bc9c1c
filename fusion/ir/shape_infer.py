"""Shape inference from the op table, and compile-time known values.

`infer_node` fills a node's output dtypes/shapes from its op's shape rule
(where the importer did not already get them from onnx's inference) and, when
every input is known at compile time and the result is small, computes the
output's value with the reference semantics (shape arithmetic such as
Shape -> Gather -> Concat -> Reshape then resolves statically).
"""
from __future__ import annotations

import numpy as np

from fusion.errors import FusionError, ShapeError

# Results up to this many elements are computed at compile time when all
# inputs are known (keeps shape arithmetic static without folding big tensors).
KNOWN_LIMIT = 4096


def _same_shape(a, b) -> bool:
    if a is None or b is None or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        try:
            if not bool(x == y):
                return False
        except TypeError:
            return False
    return True


def _complete(shape) -> bool:
    return shape is not None and all(isinstance(d, (int, np.integer)) for d in shape)


def infer_node(node, prefer_existing: bool = True) -> None:
    """Set output types of `node` from the op table (keeping complete
    types already present when prefer_existing), then its known values."""
    od = node.opdef
    if od is None:
        raise FusionError(f"{node.label()}: op '{node.op}' (domain '{node.domain or 'ai.onnx'}') is not in the op table")
    need = [v for v in node.outputs if v.dtype is None or not _complete(v.shape)]
    if need or not prefer_existing:
        if od.infer is None:
            raise ShapeError(f"{node.label()}: op {node.op} has no shape rule")
        try:
            types = od.infer(node)
        except FusionError:
            raise
        except Exception as e:  # a shape rule tripping over odd input is a user-facing shape error
            raise ShapeError(f"{node.label()}: cannot infer output shapes: {type(e).__name__}: {e}") from e
        for v, (dt, sh) in zip(node.outputs, types):
            if v.dtype is None or not prefer_existing:
                v.dtype = np.dtype(dt) if dt is not None else None
            if not _complete(v.shape) or not prefer_existing:
                v.shape = tuple(int(d) if isinstance(d, (int, np.integer)) else d for d in sh) if sh is not None else None
    compute_known(node)


def compute_known(node) -> None:
    od = node.opdef
    if od is None or od.reference is None:
        return
    if getattr(od, "fold", None) is not None:
        try:
            vals = od.fold(node)
        except Exception:
            vals = None
        if vals is not None:
            for v, a in zip(node.outputs, vals):
                if a is not None:
                    v.known = np.asarray(a)
            return
    if node.subgraphs() or od.category in ("random",):
        return
    args = []
    for v in node.inputs:
        if v is None:
            args.append(None)
            continue
        a = v.value
        if a is None or a.size > KNOWN_LIMIT:
            return
        args.append(a)
    if not any(a is not None for a in args) and node.inputs:
        return
    for v in node.outputs:
        if not _complete(v.shape) or int(np.prod(v.shape)) > KNOWN_LIMIT:
            return
    try:
        with np.errstate(all="ignore"):
            outs = od.reference(node, args)
    except Exception:
        return
    for v, a in zip(node.outputs, outs):
        if a is not None:
            v.known = np.asarray(a)


def check_node(node) -> None:
    """The op's shape rule must agree with the recorded output types."""
    od = node.opdef
    if od is None:
        raise FusionError(f"{node.label()}: op '{node.op}' is not in the op table")
    n_in = len(node.inputs)
    if n_in < od.min_inputs() or n_in > od.max_inputs():
        raise FusionError(f"{node.label()}: {n_in} inputs, op {node.op} takes "
                          f"{od.min_inputs()}..{od.max_inputs() if not od.variadic_input else 'n'}")
    for i in range(od.min_inputs()):
        if node.inputs[i] is None:
            raise FusionError(f"{node.label()}: required input {i} ('{od.inputs[i]}') is missing")
    if od.infer is None:
        return
    try:
        types = od.infer(node)
    except FusionError as e:
        raise ShapeError(str(e)) from e
    except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as e:
        # a shape rule tripping over attributes no valid model has: the user's file, not fusion
        raise ShapeError(f"{node.label()}: cannot infer its output shapes ({type(e).__name__}: {e}); "
                         f"check the node's attributes and input shapes") from None
    for v, (dt, sh) in zip(node.outputs, types):
        if v.dtype is not None and dt is not None and np.dtype(dt) != v.dtype:
            raise ShapeError(f"{node.label()}: output '{v.name}' is {v.dtype} but the op gives {np.dtype(dt)}")
        if sh is not None and v.shape is not None and _complete(sh) and _complete(v.shape) and not _same_shape(sh, v.shape):
            raise ShapeError(f"{node.label()}: output '{v.name}' has shape {list(v.shape)} but the op gives {list(sh)}")


# ---------------------------------------------------------------------------
# Sizes that depend on run-time *values* (Expand/Reshape/ConstantOfShape/Range/
# Tile reading a shape computed from Shape ops of run-time-sized tensors)

SYM_VALUE_LIMIT = 16   # small int tensors only: shape arithmetic, not data


def _is_fresh(d, node) -> bool:
    """A symbol shape inference invented for this node's output (no formula)."""
    import sympy
    return isinstance(d, sympy.Symbol) and str(d).startswith(f"{node.name}_")


def _sym_values(node, vals, sub):
    """Symbolic (sympy) values of the node's first output from those of its inputs, or None."""
    import sympy
    op = node.op
    x = node.inputs[0] if node.inputs else None
    a = [vals.get(id(v)) if v is not None else None for v in node.inputs]
    out = node.outputs[0]
    if out.shape is None or not _complete(out.shape) or int(np.prod(out.shape)) > SYM_VALUE_LIMIT:
        return None
    if op == "Shape":
        from fusion.ops.shape import _shape_range
        s, e = _shape_range(node)
        return np.array([sympy.sympify(d).xreplace(sub) for d in x.shape[s:e]], dtype=object)
    if op == "Size":
        return np.array(sympy.Mul(*[sympy.sympify(d).xreplace(sub) for d in x.shape]), dtype=object)
    if any(v is None for v, i in zip(a, node.inputs) if i is not None) and op not in ("Where",):
        return None
    try:
        if op in ("Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten"):
            if op == "Cast" and not np.issubdtype(out.dtype, np.integer):
                return None
            return np.asarray(a[0], dtype=object).reshape(out.shape)
        if op == "Gather":
            ax = int(node.attrs.get("axis", 0))
            return np.asarray(np.take(a[0], np.asarray(a[1], dtype=np.int64), axis=ax), dtype=object).reshape(out.shape)
        if op == "Concat":
            return np.concatenate([np.asarray(t).reshape(i.shape) for t, i in zip(a, node.inputs)],
                                  axis=int(node.attrs.get("axis", 0))).reshape(out.shape)
        if op == "Slice" and x.rank == 1:
            st, en = [int(np.asarray(t).reshape(-1)[0]) for t in a[1:3]]
            step = int(np.asarray(a[4]).reshape(-1)[0]) if len(a) > 4 and a[4] is not None else 1
            return np.asarray(a[0][st:en:step], dtype=object).reshape(out.shape)
        if op in ("Neg", "Abs") and a[0] is not None:
            f = (lambda u: -u) if op == "Neg" else sympy.Abs
            return np.array([sympy.sympify(f(u)) for u in np.asarray(a[0], dtype=object).reshape(-1)],
                            dtype=object).reshape(out.shape)
        if op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
            p, q = np.broadcast_arrays(np.asarray(a[0], dtype=object), np.asarray(a[1], dtype=object))
            f = {"Add": lambda u, w: u + w, "Sub": lambda u, w: u - w, "Mul": lambda u, w: u * w,
                 "Div": _int_div, "Max": sympy.Max, "Min": sympy.Min}[op]
            return np.array([sympy.sympify(f(u, w)) for u, w in zip(p.reshape(-1), q.reshape(-1))],
                            dtype=object).reshape(out.shape)
        if op in ("ReduceMax", "ReduceMin", "ReduceSum") and int(np.prod(out.shape)) == 1:
            ax = node.attrs.get("axes")
            if ax is None and len(node.inputs) > 1 and node.inputs[1] is not None:
                if a[1] is None or np.asarray(a[1]).size:
                    return None   # reducing along given axes: only the full reduction here
            f = {"ReduceMax": lambda *t: sympy.Max(*t), "ReduceMin": lambda *t: sympy.Min(*t),
                 "ReduceSum": lambda *t: sympy.Add(*t)}[op]
            flat = [sympy.sympify(u) for u in np.asarray(a[0], dtype=object).reshape(-1)]
            if not flat:
                return None
            return np.array(f(*flat), dtype=object).reshape(out.shape)
        if op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
            p, q = np.broadcast_arrays(np.asarray(a[0], dtype=object), np.asarray(a[1], dtype=object))
            res = []
            for u, w in zip(p.reshape(-1), q.reshape(-1)):
                rel = {"Equal": sympy.Eq, "Less": sympy.Lt, "Greater": sympy.Gt, "LessOrEqual": sympy.Le,
                       "GreaterOrEqual": sympy.Ge}[op](sympy.sympify(u), sympy.sympify(w))
                if rel not in (sympy.true, sympy.false):
                    return None
                res.append(sympy.true if rel == sympy.true else sympy.false)
            return np.array(res, dtype=object).reshape(out.shape)
        if op == "Where":
            if a[0] is None:
                return None
            c, p, q = np.broadcast_arrays(*[np.asarray(t, dtype=object) for t in a])
            if p.dtype == object and any(t is None for t in (a[1], a[2])):
                return None
            return np.array([u if bool(cc) else w for cc, u, w in zip(c.reshape(-1), p.reshape(-1), q.reshape(-1))],
                            dtype=object).reshape(out.shape)
    except Exception:
        return None
    return None


def _int_div(u, w):
    """ONNX integer Div truncates toward zero: floor only when the signs are known."""
    import sympy
    u, w = sympy.sympify(u), sympy.sympify(w)
    if u.is_nonnegative and w.is_positive or u.is_nonpositive and w.is_negative:
        return sympy.floor(u / w)
    if u.is_Integer and w.is_Integer and int(w) != 0:
        return sympy.Integer(int(int(u) / int(w)))
    raise ValueError("sign unknown")


def _const_sym(v):
    import sympy
    a = v.value if hasattr(v, "value") else None
    if a is None or a.size > SYM_VALUE_LIMIT:
        return None
    if a.dtype == np.bool_:
        return np.array([sympy.true if b else sympy.false for b in a.reshape(-1)], dtype=object).reshape(a.shape)
    if not np.issubdtype(a.dtype, np.integer):
        return None
    return np.array([sympy.Integer(int(t)) for t in a.reshape(-1)], dtype=object).reshape(a.shape)


def _dims_from_values(node, vals, sub):
    """Formulas for the output dims of a node whose size is a run-time value."""
    import sympy
    op = node.op
    x = node.inputs[0] if node.inputs else None

    def sv(i):
        v = node.inputs[i] if i < len(node.inputs) else None
        return None if v is None else vals.get(id(v))
    xs = [sympy.sympify(d).xreplace(sub) for d in x.shape] if x is not None and x.shape is not None else None
    if op == "Expand" and sv(1) is not None:
        s = list(sv(1).reshape(-1))
        r = max(len(s), len(xs))
        xs_ = [sympy.Integer(1)] * (r - len(xs)) + xs
        s_ = [sympy.Integer(1)] * (r - len(s)) + s
        return [a if b == 1 else b if a == 1 else a for a, b in zip(xs_, s_)]
    if op == "ConstantOfShape" and sv(0) is not None:
        return list(sv(0).reshape(-1))
    if op == "Reshape" and sv(1) is not None:
        s = list(sv(1).reshape(-1))
        allowzero = int(node.attrs.get("allowzero", 0) or 0)
        s = [xs[i] if (d == 0 and not allowzero) else d for i, d in enumerate(s)]
        if any(d == -1 for d in s):
            known = sympy.Mul(*[d for d in s if d != -1])
            s = [sympy.simplify(sympy.Mul(*xs) / known) if d == -1 else d for d in s]
        return s
    if op == "Slice" and sv(1) is not None and sv(2) is not None:
        from fusion.ops.shape import slice_count_formula
        r = len(xs)
        starts, ends = list(sv(1).reshape(-1)), list(sv(2).reshape(-1))
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            if sv(3) is None:
                return None
            axes = [int(a) % r for a in sv(3).reshape(-1)]
        else:
            axes = list(range(len(starts)))
        if len(node.inputs) > 4 and node.inputs[4] is not None:
            if sv(4) is None:
                return None
            steps = [int(t) for t in sv(4).reshape(-1)]
        else:
            steps = [1] * len(starts)
        dims = list(xs)
        for st, en, a, k in zip(starts, ends, axes, steps):
            f = slice_count_formula(st, en, k, xs[a])
            if f is None:
                return None
            dims[a] = f
        return dims
    if op in ("Resize", "Pad"):
        from fusion.ops.movement import pad_value_dims, resize_value_dims
        return (resize_value_dims if op == "Resize" else pad_value_dims)(node, xs, sv)
    if op == "Tile" and sv(1) is not None:
        return [a * b for a, b in zip(xs, list(sv(1).reshape(-1)))]
    if op == "Range" and all(sv(i) is not None for i in range(3)) and np.issubdtype(node.inputs[0].dtype, np.integer):
        st, li, de = (sympy.sympify(sv(i).reshape(-1)[0]) for i in range(3))
        return [sympy.Max(sympy.ceiling((li - st) / de), 0)]
    return None


# The inputs _dims_from_values reads as sizes, per op.
_SIZE_INPUTS = {"Expand": (1,), "ConstantOfShape": (0,), "Reshape": (1,), "Slice": (1, 2, 3, 4), "Tile": (1,),
                "Range": (0, 1, 2), "Resize": (3,), "Pad": (1, 3)}


def value_symbol(v, k: int):
    """The run-time size symbol standing for element k of data value v."""
    import re
    import sympy
    return sympy.Symbol(f"val_{re.sub(r'[^A-Za-z0-9_]', '_', v.name)}_{k}", integer=True)


def _reinfer_body(body) -> None:
    """Infer a Loop body's shapes again after its inputs changed; values folded
    from the old input shapes (Shape of a carried value) are dropped first."""
    for bn in body.nodes:
        for v in bn.outputs:
            v.known = None
    for bn in body.nodes:
        infer_node(bn, prefer_existing=False)


def loop_carried_dims(graph) -> None:
    """Loop body inputs get their shapes from the values they carry: a declared
    shape that is missing, of another rank or with named dims takes the initial
    value's dims; then a carried value whose shape changes from one iteration to
    the next (a Concat appending one row per iteration) gets a symbol for each
    changing dim, and the body's shapes are inferred again from it, so the body
    output reads `K + 1` where the first inference saw 0 -> 1."""
    import sympy
    for n in graph.nodes:
        if n.op != "Loop":
            continue
        body = n.attrs["body"]
        fixed = False
        for k in range(len(n.inputs) - 2):
            v0, vin = n.inputs[2 + k], body.inputs[2 + k]
            if v0 is None or v0.shape is None:
                continue
            if vin.shape is None or len(vin.shape) != len(v0.shape):
                new = tuple(v0.shape)
            else:
                new = tuple(x if isinstance(x, (int, np.integer)) else y for x, y in zip(vin.shape, v0.shape))
            if vin.shape is None or tuple(map(str, new)) != tuple(map(str, vin.shape)):
                vin.shape, fixed = new, True
        if fixed:
            _reinfer_body(body)
        changed = False
        for k in range(len(n.inputs) - 2):
            vin, vout = body.inputs[2 + k], body.outputs[1 + k]
            if vin.shape is None or vout.shape is None or len(vin.shape) != len(vout.shape):
                continue
            new = []
            for d, (x, y) in enumerate(zip(vin.shape, vout.shape)):
                if str(x) != str(y) and not str(x).startswith(f"{n.name}_carried"):
                    changed = True
                    x = sympy.Symbol(f"{n.name}_carried{k}_{d}", integer=True, nonnegative=True)
                new.append(x)
            vin.shape = tuple(new)
        if changed:
            _reinfer_body(body)


def resolve_value_dims(graph) -> dict:
    """Give a formula to every output dim that shape inference left as a fresh
    symbol because it is a run-time *value* (Expand to a shape built from Shape
    ops of run-time-sized tensors...), by evaluating that shape arithmetic on
    sympy symbols. Rewrites the shapes of the graph's (and subgraphs') values
    in place; returns {fresh symbol: formula}.

    A size computed from tensor *data* (box coordinates through Gather, Sub,
    Max...) is traced back to the furthest small integer tensor the arithmetic
    can start from; each of that tensor's elements becomes a symbol
    (`value_symbol`), recorded in `graph.value_sources` as {symbol name:
    (value, flat index)}: the code generator stores that tensor, reads the
    element after the kernel computing it and checks it against its range."""
    import sympy
    loop_carried_dims(graph)
    sub: dict = {}
    vals: dict[int, np.ndarray] = {}
    sources: dict = getattr(graph, "value_sources", None) or {}

    def small_int(v) -> bool:
        return (v is not None and v.dtype is not None and np.issubdtype(v.dtype, np.integer) and _complete(v.shape)
                and int(np.prod(v.shape)) <= SYM_VALUE_LIMIT)

    def lift(v, depth=0) -> bool:
        """Symbolic values for v: computed from its producer's inputs where they can
        be, else v's elements become symbols of their own (v must be computed by a
        node: graph and loop-body inputs are not stored by a kernel)."""
        if v is None or id(v) in vals:
            return v is not None
        if not small_int(v) or v.producer is None or depth > 64:
            return False
        p = v.producer
        if len(p.outputs) == 1 and not p.subgraphs() and \
                all(i is None or id(i) in vals or lift(i, depth + 1) for i in p.inputs):
            try:
                r = _sym_values(p, vals, sub)
            except Exception:
                r = None
            if r is not None:
                vals[id(v)] = r
                return True
        syms = [value_symbol(v, k) for k in range(int(np.prod(v.shape)))]
        for k, x in enumerate(syms):
            sources[str(x)] = (v, k)
        vals[id(v)] = np.array(syms, dtype=object).reshape(v.shape)
        return True

    def visit(g):
        for n in g.nodes:
            for v in n.inputs:
                if v is not None and id(v) not in vals:
                    c = _const_sym(v)
                    if c is not None:
                        vals[id(v)] = c
            for sg in n.subgraphs():
                visit(sg)
            fresh = [d for v in n.outputs if v.shape is not None for d in v.shape if _is_fresh(d, n)]
            if fresh and len(n.outputs) == 1:
                dims = _dims_from_values(n, vals, sub)
                if dims is None and n.op in _SIZE_INPUTS:
                    for i in _SIZE_INPUTS[n.op]:
                        if i < len(n.inputs) and n.inputs[i] is not None:
                            lift(n.inputs[i])
                    dims = _dims_from_values(n, vals, sub)
                out = n.outputs[0]
                if dims is not None and len(dims) == len(out.shape):
                    for d, f in zip(out.shape, dims):
                        if _is_fresh(d, n) and not (isinstance(f, sympy.Basic) and f.has(d)):
                            sub[d] = sympy.sympify(f)
            if n.outputs and id(n.outputs[0]) not in vals:
                try:
                    r = _sym_values(n, vals, sub)
                except Exception:
                    r = None
                if r is not None:
                    vals[id(n.outputs[0])] = r
    visit(graph)
    try:
        graph.value_sources = sources
    except AttributeError:
        pass
    if sub:
        def apply(g):
            for v in list(g.values.values()) if hasattr(g, "values") else []:
                if v.shape is not None and not _complete(v.shape):
                    v.shape = tuple(d if isinstance(d, (int, np.integer)) else
                                    _int_or(sympy.sympify(d).xreplace(sub)) for d in v.shape)
            for n in g.nodes:
                for v in n.all_inputs() + n.outputs:
                    if v is not None and v.shape is not None and not _complete(v.shape):
                        v.shape = tuple(d if isinstance(d, (int, np.integer)) else
                                        _int_or(sympy.sympify(d).xreplace(sub)) for d in v.shape)
                for sg in n.subgraphs():
                    apply(sg)
        apply(graph)
    return sub


def _int_or(e):
    return int(e) if getattr(e, "is_Integer", False) else e
