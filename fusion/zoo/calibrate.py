"""Layer-sequential unit-variance calibration (LSUV, Mishkin & Matas 2016), run at export.

Fan-in scaling alone does not keep every random network healthy: a
squeeze-excitation gate near 0.5 halves the signal in each EfficientNet block,
SiLU/Mish are not ReLU, unnormalized residual streams grow. So, once, at export,
each learned layer (Conv, ConvTranspose, Gemm, MatMul with a filled weight) is
visited in order of depth and its weight rescaled until its output on the zoo's
seeded inputs has the standard deviation of its role (whole-model passes first,
which settle normalized networks at once, then a depth-by-depth sweep if still
needed): 1 for a plain layer,
0.5 for the last layer of a residual branch, 0.1 for a decision head (scores
stay in the sigmoid's linear range, exp() of box sizes stays near 1).

The scales are written into the stored file (store.set_scale), so loading stays
a pure function of the file: same bytes on every machine. Only onnx,
onnxruntime and numpy are used.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from fusion.zoo import roles, store

TARGET = {"": 1.0, "residual": 0.5, "head": 0.1}
JACOBI_PASSES = 4
JACOBI_TOLERANCE = 1.5  # healthy is the goal, not exact unit variance
_LAYERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _layer_uses(model: onnx.ModelProto, names: set[str]) -> dict[str, list[onnx.NodeProto]]:
    """weight name -> the layer nodes that use it (through Transpose/Identity/Cast)."""
    uses = roles._Uses(model.graph)
    out = defaultdict(list)
    for w in names:
        for n, i, _ in roles._through_layout(uses, w, [1, 1]):
            if n.op_type in _LAYERS and i in (0, 1):
                out[w].append(n)
    return out


def _depths(model: onnx.ModelProto) -> dict[int, int]:
    """Layer depth of every main-graph node (number of layers on the longest path from the inputs)."""
    depth: dict[str, int] = {}
    nd = {}
    for n in model.graph.node:
        d = max((depth.get(x, 0) for x in n.input if x), default=0)
        if n.op_type in _LAYERS:
            d += 1
        nd[id(n)] = d
        for o in n.output:
            depth[o] = d
    return nd


def _reads(n: onnx.NodeProto) -> set[str]:
    """Every value a node reads, including outer-scope names used inside its subgraphs."""
    names = {x for x in n.input if x}
    for a in n.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for m in g.node:
                names |= _reads(m)
    return names


def _prefix(model: onnx.ModelProto, outs: list[str]) -> onnx.ModelProto:
    """The part of the model that computes `outs`: later layers, uncalibrated, may not even
    run (an R-CNN whose proposals all vanish), and need not."""
    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output}
    need, stack, keep = set(), list(outs), set()
    while stack:
        v = stack.pop()
        if v in need:
            continue
        need.add(v)
        i = producer.get(v)
        if i is not None and i not in keep:
            keep.add(i)
            stack.extend(_reads(g.node[i]))
    graph = onnx.helper.make_graph(
        [g.node[i] for i in sorted(keep)], g.name,
        [x for x in g.input if x.name in need],
        [onnx.helper.make_empty_tensor_value_info(o) for o in outs],
        [t for t in g.initializer if t.name in need])
    probe = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return probe


def _target(role: str) -> float:
    for k in ("head", "residual"):
        if f"({k})" in role:
            return TARGET[k]
    return TARGET[""]


def calibrate(stored: onnx.ModelProto, zoo_name: str, feeds: dict, *, log=None) -> dict[str, float]:
    """Scales for the stored model's layer weights; also written into `stored` in place."""
    import onnxruntime as ort
    recipes = roles.plan_recipes(stored, store.stripped_names(stored))
    uses = _layer_uses(stored, {n for n, r in recipes.items() if r.kind == "normal"})
    uses = {w: ns for w, ns in uses.items() if ns}
    nd = _depths(stored)
    groups = defaultdict(list)
    for w, ns in uses.items():
        groups[min(nd.get(id(n), 0) for n in ns)].append(w)
    scales = {w: 1.0 for w in uses}
    model = store.fill(stored, zoo_name, scales)
    inits = {t.name: t for t in model.graph.initializer}
    base = {w: numpy_helper.to_array(inits[w]).copy() for w in uses}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3

    def measure(ws):
        outs = sorted({n.output[0] for w in ws for n in uses[w]})
        probe = _prefix(model, outs)
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        want = {i.name for i in sess.get_inputs()}
        vals = dict(zip(outs, sess.run(outs, {k: v for k, v in feeds.items() if k in want})))
        worst = 0.0
        for w in ws:
            stds = [float(np.std(vals[n.output[0]].astype(np.float64))) for n in uses[w]]
            stds = [s for s in stds if math.isfinite(s) and s > 0]
            if not stds:
                continue
            std = math.exp(sum(math.log(s) for s in stds) / len(stds))
            ratio = _target(recipes[w].role) / std
            worst = max(worst, abs(math.log(ratio)))
            scales[w] *= ratio
            inits[w].CopyFrom(numpy_helper.from_array((base[w] * np.float32(scales[w])).astype(base[w].dtype), w))
        return worst

    # Whole-model passes first: where normalization separates the layers (transformers,
    # BatchNorm nets) every layer settles at once. Then, if some are still off by more
    # than JACOBI_TOLERANCE, the sequential (exact, one pass per depth) sweep.
    done, last = False, math.inf
    for k in range(JACOBI_PASSES):
        try:
            worst = measure(list(uses))
        except Exception as e:  # e.g. no boxes survive yet in an R-CNN: go layer by layer
            if log:
                log(f"  whole-model pass {k}: not measured ({str(e).splitlines()[0][:120]})")
            break
        if log:
            log(f"  whole-model pass {k}: worst layer off by x{math.exp(worst):.3g}")
        if worst < math.log(JACOBI_TOLERANCE):
            done = True
            break
        if worst > last:  # diverging (unnormalized stacks such as MobileBERT's NoNorm): sweep instead
            break
        last = worst
    if not done:  # the sweep starts from the recipes: diverged passes may have left huge scales
        for w in uses:
            scales[w] = 1.0
            inits[w].CopyFrom(numpy_helper.from_array(base[w], w))
    for d in ([] if done else sorted(groups)):
        try:
            worst = measure(groups[d])
        except Exception as e:  # no boxes survive yet: leave this depth at its current scale
            if log:
                log(f"  depth {d}: not measured ({str(e).splitlines()[0][:120]})")
            continue
        if log:
            log(f"  depth {d}: {len(groups[d])} layers, off by x{math.exp(worst):.3g}")
    for t in stored.graph.initializer:
        if t.name in scales:
            store.set_scale(t, scales[t.name])
    return scales


def calibrate_file(name: str, small: bool, log=print) -> int:
    """Calibrate a bundled model file in place (maintainers: after an export)."""
    from fusion import zoo
    path = zoo.model_path(name, small)
    stored = store.load(path)
    for t in stored.graph.initializer:   # start from the recipes, not a previous calibration
        if store.is_marked(t):
            store.set_scale(t, 1.0)
    from fusion.zoo.inputs import make_inputs
    feeds = make_inputs(name, stored, zoo.facts(name, small), seed=0)
    scales = calibrate(stored, name, feeds, log=log)
    size = store.save(stored, path)
    zoo._stored.cache_clear()
    if log:
        log(f"{name}{' (small)' if small else ''}: {len(scales)} layers calibrated, {size / 1e6:.2f} MB")
    return len(scales)


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description="calibrate bundled zoo models in place (LSUV)")
    p.add_argument("names", nargs="+")
    p.add_argument("--small", action="store_true")
    a = p.parse_args(argv)
    for n in a.names:
        calibrate_file(n, a.small)


if __name__ == "__main__":
    main()
