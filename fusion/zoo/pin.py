"""Near-tie decisions: when the reference interpreter and onnxruntime legally disagree.

A detector turns floats into discrete decisions: a box corner truncated to an
integer pixel (Mask R-CNN's mask paste: `Cast(float -> int64)`), a TopK order,
an NMS keep, a score threshold. Two correct float32 executors differ in the
last bits (different summation orders), so a value that lands within that
noise of a decision boundary (295.99976 in onnxruntime, 296.00018 in the
interpreter: pixel 295 or 296) flips, and everything downstream of it
differs by far more than any float tolerance. No weight fill avoids this in
general: integer pixel boundaries are dense, so with hundreds of box corners
some seeds always put one within float noise of an integer.

`pinned_reference` reruns the interpreter and lets such a decision follow
onnxruntime, under three conditions checked per decision node:

1. its inputs agree with onnxruntime's within fusion.oracle's tolerances
   (the same test the outputs must pass; integer inputs exactly);
2. the op's reference semantics, run on onnxruntime's own inputs, reproduce
   onnxruntime's outputs exactly, so the op itself is right and only the
   float noise of its inputs decided;
3. the op is a pure decision: its outputs are integers/booleans (Cast,
   comparisons, ArgMax, NonMaxSuppression, TopK indices) or rounded floats
   (Floor/Ceil/Round); TopK's values are re-gathered from the interpreter's
   own input at onnxruntime's indices.

Everything else keeps the interpreter's values, and the final outputs must
still pass the unchanged tolerances. Decisions inside control-flow bodies are
not pinned (their inputs are not visible to onnxruntime as outputs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from fusion.ir.graph import Graph, Node

# Structural ops read a float tensor's shape, not its values.
_STRUCTURAL = {"Shape", "Size"}
# Float outputs that are decisions (a rounding) rather than continuous values.
_ROUNDING = {"Floor", "Ceil", "Round"}


@dataclass
class Pin:
    node: str
    op: str
    differ: int      # output elements that differ (or -1 for a shape change)
    total: int
    detail: str

    def __str__(self) -> str:
        what = "a different shape" if self.differ < 0 else f"{self.differ} of {self.total} elements"
        return f"{self.op} '{self.node}': {what} follow onnxruntime ({self.detail})"


def _is_float(a) -> bool:
    return np.asarray(a).dtype.kind == "f"


def is_decision(n: Node) -> bool:
    if n.op in _STRUCTURAL or n.subgraphs():
        return False
    if not any(v is not None and v.dtype is not None and v.dtype.kind == "f" for v in n.inputs):
        return False
    return n.op in _ROUNDING or any(v.dtype is not None and v.dtype.kind != "f" for v in n.outputs)


def decision_nodes(g: Graph) -> list[Node]:
    return [n for n in g.nodes if is_decision(n)]


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _fmt(x) -> str:
    # shortest repr that round-trips in the value's own precision (295.99976, not 295.999755859375)
    return np.format_float_positional(x) if isinstance(x, np.floating) else str(x)


def _decided(n: Node) -> list[int]:
    """Positions of the outputs that are decisions (TopK: the indices, not the values)."""
    return [i for i, v in enumerate(n.outputs)
            if n.op in _ROUNDING or v.dtype is None or v.dtype.kind != "f"]


def _first_difference(n: Node, ours: list, theirs: list, our_in: list, their_in: list,
                      which: list[int] | None = None) -> str:
    """One differing element, with the float input that decided it when it is elementwise."""
    for i in (range(len(n.outputs)) if which is None else which):
        v, a, b = n.outputs[i], np.asarray(ours[i]), np.asarray(theirs[i])
        if a.shape != b.shape:
            return f"'{v.name}' shape {list(a.shape)} vs onnxruntime {list(b.shape)}"
        if np.array_equal(a, b):
            continue
        k = int(np.argmax(a != b))
        idx = [int(j) for j in np.unravel_index(k, a.shape)]
        x, y = (np.asarray(our_in[0]), np.asarray(their_in[0])) if our_in else (None, None)
        if (n.op in _ROUNDING or n.op == "Cast") and x is not None and x.shape == a.shape == y.shape:
            return (f"'{v.name}'{idx}: reference {_fmt(x.flat[k])} -> {_fmt(a.flat[k])}, "
                    f"onnxruntime {_fmt(y.flat[k])} -> {_fmt(b.flat[k])}")
        values = ""
        if n.op == "TopK" and i == 1:  # the values ranked there: a near-tie shows as nearly equal
            values = f" (values {_fmt(np.asarray(ours[0]).flat[k])}, {_fmt(np.asarray(theirs[0]).flat[k])})"
        return f"'{v.name}'{idx}: reference {_fmt(a.flat[k])}, onnxruntime {_fmt(b.flat[k])}{values}"
    return ""


def _pinned_outputs(n: Node, our_in: list, theirs: list) -> list | None:
    """The node's outputs following onnxruntime's decision; None if it is not a pure decision."""
    if n.op == "TopK":
        # values follow the chosen indices, read from the interpreter's own input
        axis = int(n.attrs.get("axis", -1))
        idx = np.asarray(theirs[1])
        return [np.take_along_axis(np.asarray(our_in[0]), idx, axis=axis), idx]
    for v in n.outputs:
        if v.dtype is not None and v.dtype.kind == "f" and n.op not in _ROUNDING:
            return None
    return [np.asarray(t) for t in theirs]


def expose(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """A copy of `model` with the named top-level values added as outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    produced = {o for nd in m.graph.node for o in nd.output}
    for name in names:
        if name in produced and name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            have.add(name)
    return m


def decision_values(model: onnx.ModelProto, g: Graph, feeds) -> dict:
    """onnxruntime's values of every decision node's inputs and outputs (plus the graph inputs)."""
    from fusion.oracle import run_onnxruntime
    names = []
    for n in decision_nodes(g):
        names += [v.name for v in n.inputs if v is not None and v.const is None]
        names += [v.name for v in n.outputs]
    out = run_onnxruntime(expose(model, names), feeds)
    out.update({k: np.asarray(v) for k, v in feeds.items()})
    return out


def pinned_reference(g: Graph, feeds, theirs: dict) -> tuple[dict, list[Pin], list[str]]:
    """Run the interpreter, letting near-tie decisions follow `theirs` (onnxruntime's values
    by name). Returns (outputs, the pins made, why other differing decisions were not pinned)."""
    from fusion.ir.interpreter import run
    from fusion.oracle import compare_arrays
    decisions = {id(n) for n in decision_nodes(g)}
    pins: list[Pin] = []
    refused: list[str] = []

    def hook(n: Node, our_in: list, ours: list):
        if id(n) not in decisions:
            return None
        if any(v.name not in theirs for v in n.outputs):
            return None
        their_out = [theirs[v.name] for v in n.outputs]
        decided = _decided(n)
        if all(_same(ours[i], their_out[i]) for i in decided):
            return None  # same decisions; continuous outputs (TopK values) are the tolerances' business
        their_in = []
        for v, a in zip(n.inputs, our_in):
            if v is None:
                their_in.append(None)
                continue
            b = v.const if v.const is not None else theirs.get(v.name)
            if b is None:
                refused.append(f"{n.label()}: onnxruntime's value of input '{v.name}' is not available")
                return None
            if _is_float(b):
                d = compare_arrays(v.name, a, b)
                if not d.ok:
                    refused.append(f"{n.label()}: outputs differ and input '{v.name}' differs beyond "
                                   f"tolerance ({d.message or f'max abs err {d.max_abs_err:.3g}'})")
                    return None
            elif not _same(a, b):
                refused.append(f"{n.label()}: outputs differ and integer input '{v.name}' differs")
                return None
            their_in.append(b)
        od = n.opdef
        try:
            with np.errstate(all="ignore"):
                again = od.reference(n, their_in, env={}) if od.needs_env else od.reference(n, their_in)
        except Exception as e:  # the op failed on onnxruntime's inputs: report, do not pin
            refused.append(f"{n.label()}: reference fails on onnxruntime's inputs: {type(e).__name__}: {e}")
            return None
        again = [np.asarray(a).astype(v.dtype) if v.dtype is not None else np.asarray(a)
                 for v, a in zip(n.outputs, again)]
        if not all(_same(a, b) for a, b in zip(again, their_out)):
            where = _first_difference(n, again, their_out, their_in, their_in)
            refused.append(f"{n.label()}: on onnxruntime's own inputs the reference semantics give "
                           f"different outputs than onnxruntime ({where})")
            return None
        new = _pinned_outputs(n, our_in, their_out)
        if new is None:
            refused.append(f"{n.label()}: outputs differ, but it has continuous float outputs")
            return None
        pairs = [(np.asarray(ours[i]), np.asarray(their_out[i])) for i in decided]
        differ, total = -1, int(sum(b.size for _, b in pairs))
        if all(a.shape == b.shape for a, b in pairs):
            differ = int(sum(np.count_nonzero(a != b) for a, b in pairs))
        where = _first_difference(n, ours, their_out, our_in, their_in, decided)
        pins.append(Pin(n.name, n.op, differ, total, where))
        return new

    outs = run(g, feeds, hook=hook)
    return outs, pins, refused


@dataclass
class NearTie:
    """Why compiled outputs that differ from onnxruntime are still right: they
    match the reference interpreter (`vs_reference`), and the interpreter
    matches onnxruntime once near-tie decisions follow it (`pins`)."""
    ok: bool
    vs_reference: object      # CompareResult: compiled vs interpreter
    vs_onnxruntime: object    # CompareResult: pinned interpreter vs onnxruntime
    pins: list
    refused: list

    def lines(self) -> list[str]:
        if not self.ok:
            out = [f"not explained by near-tie decisions: compiled vs interpreter: {self.vs_reference}"
                   .splitlines()[0]]
            if self.vs_onnxruntime is not None:
                out.append(f"pinned interpreter vs onnxruntime: {self.vs_onnxruntime}".splitlines()[0])
            return out + [f"not pinned: {r}" for r in self.refused[:5]]
        return ([f"near-tie: the compiled outputs match the reference interpreter ({self.vs_reference})"
                 .splitlines()[0],
                 f"near-tie: the interpreter matches onnxruntime when {len(self.pins)} decision(s) follow it "
                 f"({self.vs_onnxruntime})".splitlines()[0]]
                + [f"pinned: {p}" for p in self.pins])


def explain_near_ties(model, feeds, got: dict) -> NearTie:
    """Compiled outputs `got` differ from onnxruntime: are they the reference
    semantics, differing only through near-tie decisions (a box corner 2 ulps
    from an integer pixel)? Both steps use fusion.oracle's unchanged tolerances."""
    import fusion
    from fusion.oracle import compare, run_onnxruntime
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(model) if isinstance(model, str) else None
    if model is None:
        return NearTie(False, "no ONNX model to expose decisions from", None, [], [])
    g = fusion.load(model)
    ref = fusion.run_reference(g, feeds)
    r1 = compare(got, ref)
    if not r1.ok:
        return NearTie(False, r1, None, [], [])
    theirs = decision_values(model, g, feeds)
    pinned, pins, refused = pinned_reference(g, feeds, theirs)
    r2 = compare(pinned, run_onnxruntime(model, feeds))
    return NearTie(r2.ok and bool(pins), r1, r2, [str(p) for p in pins], refused)
