"""Control flow: If, Loop, Scan. Opaque (never fused); the reference runs the
subgraphs with the interpreter (`needs_env`: captured outer values come from
the caller's environment)."""
from __future__ import annotations

import numpy as np
import sympy

from fusion.errors import FusionError, UnsupportedOpError
from fusion.ops.table import AttrSpec, Mapping, OpDef, REQUIRED, const_input, register


def _run(g, args, env):
    from fusion.ir.interpreter import run_subgraph
    return run_subgraph(g, [np.asarray(a) for a in args], env)


def _sym(node, what):
    return sympy.Symbol(f"{node.name}_{what}", integer=True, nonnegative=True)


def _merge_shape(node, k, a, b):
    """Shape of an output that may come from either of two values."""
    if a is None or b is None:
        return a if b is None else b
    if len(a) != len(b):
        return a
    return tuple(x if _eq(x, y) else _sym(node, f"{k}_{i}") for i, (x, y) in enumerate(zip(a, b)))


def _eq(x, y):
    try:
        return bool(x == y)
    except TypeError:
        return False


# ---------------------------------------------------------------------------
# If

def _if_infer(node):
    t, e = node.attrs["then_branch"], node.attrs["else_branch"]
    if len(t.outputs) != len(e.outputs):
        raise FusionError(f"{node.label()}: then_branch has {len(t.outputs)} outputs, else_branch {len(e.outputs)}")
    c = const_input(node, 0)
    if c is not None:  # the branch is known: its exact types
        g = t if bool(np.asarray(c).reshape(-1)[0]) else e
        return [(v.dtype, v.shape) for v in g.outputs]
    return [(a.dtype if a.dtype is not None else b.dtype, _merge_shape(node, k, a.shape, b.shape))
            for k, (a, b) in enumerate(zip(t.outputs, e.outputs))]


def _if_reference(node, a, env=None):
    branch = node.attrs["then_branch"] if bool(np.asarray(a[0]).reshape(-1)[0]) else node.attrs["else_branch"]
    return _run(branch, [], env or {})


register(OpDef(
    "If", inputs=("cond",), outputs=("outputs*",),
    attrs={"then_branch": AttrSpec("graph", REQUIRED), "else_branch": AttrSpec("graph", REQUIRED)},
    mapping=Mapping.OPAQUE, infer=_if_infer, reference=_if_reference, lower=None, needs_env=True,
    category="control",
))


# ---------------------------------------------------------------------------
# Loop: body(iter, cond, carried...) -> (cond, carried..., scan outputs...)

def _loop_counts(node):
    body = node.attrs["body"]
    n_carried = len(node.inputs) - 2
    n_scan = len(body.outputs) - 1 - n_carried
    if n_scan < 0:
        raise FusionError(f"{node.label()}: Loop body has {len(body.outputs)} outputs for {n_carried} loop-carried values")
    return n_carried, n_scan


def _loop_infer(node):
    body = node.attrs["body"]
    n_c, n_s = _loop_counts(node)
    out = []
    for k in range(n_c):
        v0, vb = node.inputs[2 + k], body.outputs[1 + k]
        out.append((v0.dtype, _merge_shape(node, k, v0.shape, vb.shape)))
    trips = const_input(node, 0)
    steps = int(np.asarray(trips).reshape(-1)[0]) if trips is not None and node.input(1) is None else _sym(node, "trips")
    for k in range(n_s):
        vb = body.outputs[1 + n_c + k]
        out.append((vb.dtype, (steps,) + tuple(vb.shape or ())))
    return out


def _loop_reference(node, a, env=None):
    body = node.attrs["body"]
    n_c, n_s = _loop_counts(node)
    trips = None if a[0] is None else int(np.asarray(a[0]).reshape(-1)[0])
    cond = True if a[1] is None else bool(np.asarray(a[1]).reshape(-1)[0])
    carried = list(a[2:])
    scans = [[] for _ in range(n_s)]
    i = 0
    while (trips is None or i < trips) and cond:
        outs = _run(body, [np.array(i, np.int64), np.array(cond)] + carried, env or {})
        cond = bool(np.asarray(outs[0]).reshape(-1)[0])
        carried = list(outs[1:1 + n_c])
        for k in range(n_s):
            scans[k].append(np.asarray(outs[1 + n_c + k]))
        i += 1
        if trips is None and a[1] is None:
            raise FusionError(f"{node.label()}: Loop has neither a trip count nor a condition: it never ends")
    res = carried
    for k in range(n_s):
        if scans[k]:
            res.append(np.stack(scans[k]))
        else:
            vb = body.outputs[1 + n_c + k]
            shape = tuple(int(d) if isinstance(d, int) else 0 for d in (vb.shape or ()))
            res.append(np.zeros((0,) + shape, dtype=vb.dtype))
    return res


register(OpDef(
    "Loop", inputs=("M?", "cond?", "v_initial*"), outputs=("v_final_and_scan_outputs*",),
    attrs={"body": AttrSpec("graph", REQUIRED)},
    mapping=Mapping.OPAQUE, infer=_loop_infer, reference=_loop_reference, lower=None, needs_env=True,
    category="control",
))


# ---------------------------------------------------------------------------
# Scan (opset 9+): body(states..., slices...) -> (states..., per-step outputs...)

def _scan_normalize(node, graph, opset):
    if opset < 9:
        raise UnsupportedOpError(f"{node.label()}: Scan before opset 9 (batched, with sequence_lens) is not "
                                 f"supported; convert the model to opset 9 or newer")


def _scan_parts(node):
    m = int(node.attrs["num_scan_inputs"])
    n = len(node.inputs) - m
    body = node.attrs["body"]
    k = len(body.outputs) - n
    def ints(name, count, default):
        v = node.attrs.get(name) or []
        return [int(x) for x in v] if v else [default] * count
    return (n, m, k, ints("scan_input_axes", m, 0), ints("scan_input_directions", m, 0),
            ints("scan_output_axes", k, 0), ints("scan_output_directions", k, 0))


def _scan_infer(node):
    n, m, k, in_axes, _, out_axes, _ = _scan_parts(node)
    body = node.attrs["body"]
    x0 = node.inputs[n]
    ax0 = in_axes[0] + x0.rank if in_axes[0] < 0 else in_axes[0]
    steps = x0.shape[ax0]
    out = [(node.inputs[i].dtype, node.inputs[i].shape) for i in range(n)]
    for j in range(k):
        vb = body.outputs[n + j]
        s = list(vb.shape or ())
        ax = out_axes[j] + len(s) + 1 if out_axes[j] < 0 else out_axes[j]
        s.insert(ax, steps)
        out.append((vb.dtype, tuple(s)))
    return out


def _scan_reference(node, a, env=None):
    n, m, k, in_axes, in_dirs, out_axes, out_dirs = _scan_parts(node)
    body = node.attrs["body"]
    states = list(a[:n])
    xs = [np.asarray(x) for x in a[n:]]
    axes = [ax + x.ndim if ax < 0 else ax for ax, x in zip(in_axes, xs)]
    steps = xs[0].shape[axes[0]] if xs else 0
    per = [[] for _ in range(k)]
    for t in range(steps):
        sl = [np.take(x, steps - 1 - t if d else t, axis=ax) for x, ax, d in zip(xs, axes, in_dirs)]
        outs = _run(body, states + sl, env or {})
        states = list(outs[:n])
        for j in range(k):
            per[j].append(np.asarray(outs[n + j]))
    res = states
    for j in range(k):
        seq = per[j][::-1] if out_dirs[j] else per[j]
        vb = body.outputs[n + j]
        if seq:
            r = seq[0].ndim + 1
            ax = out_axes[j] + r if out_axes[j] < 0 else out_axes[j]
            res.append(np.stack(seq, axis=ax))
        else:
            res.append(np.zeros((0,) + tuple(int(d) for d in (vb.shape or ())), dtype=vb.dtype))
    return res


register(OpDef(
    "Scan", inputs=("initial_state_and_scan_inputs*",), outputs=("final_state_and_scan_outputs*",), since=9,
    attrs={"body": AttrSpec("graph", REQUIRED), "num_scan_inputs": AttrSpec("int", REQUIRED),
           "scan_input_axes": AttrSpec("ints", []), "scan_input_directions": AttrSpec("ints", []),
           "scan_output_axes": AttrSpec("ints", []), "scan_output_directions": AttrSpec("ints", [])},
    mapping=Mapping.OPAQUE, infer=_scan_infer, reference=_scan_reference, lower=None, needs_env=True,
    normalize=_scan_normalize, category="control",
))
