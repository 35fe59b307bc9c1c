"""Shared checks for the op tests (tests/test_ops_*.py); no tests of its own.

`check_op` builds a one-node ONNX model with onnx.helper, imports it with
fusion.load, runs the reference interpreter and onnxruntime (the oracle) on
the same inputs, and, for ops with an index function, evaluates `lower` at
every output position and compares with the reference: that is what the code
generator compiles, so it must agree exactly with the reference semantics.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import fusion
from fusion.ir.expr_eval import run_lowered
from fusion.oracle import compare, run_onnxruntime


def make_model(op: str, inputs: dict, n_outputs: int = 1, *, consts: tuple = (), opset: int = 21,
               domain: str = "", output_names=None, **attrs) -> onnx.ModelProto:
    """inputs: {name: array or None (omitted optional input)}; names in `consts`
    become initializers, the rest graph inputs."""
    names = [("" if a is None else k) for k, a in inputs.items()]
    outs = output_names or [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, domain=domain, **attrs)
    g_in, inits = [], []
    for k, a in inputs.items():
        if a is None:
            continue
        a = np.asarray(a)
        if k in consts:
            inits.append(numpy_helper.from_array(a, k))
        else:
            g_in.append(helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
    g_out = [onnx.ValueInfoProto(name=o) for o in outs if o]
    graph = helper.make_graph([node], "t", g_in, g_out, initializer=inits)
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    m = helper.make_model(graph, opset_imports=imports)
    m.ir_version = min(m.ir_version, 10)
    return m


def feeds_of(inputs: dict, consts: tuple = ()) -> dict:
    return {k: np.asarray(a) for k, a in inputs.items() if a is not None and k not in consts}


def check_lowered(g, feeds: dict, values: dict | None = None) -> int:
    """Every node with `lower`: the index function over all output positions
    equals the reference. Returns how many outputs were checked."""
    from fusion.ir.interpreter import run
    env: dict = {}
    run(g, feeds, env=env, keep=True)
    checked = 0
    for n in g.nodes:
        if n.opdef.lower is None or not all(v.is_static for v in n.outputs):
            continue  # opaque, or a size known only at run time (no loop nest to check)
        args = [None if v is None else (v.const if v.const is not None else env[id(v)]) for v in n.inputs]
        for k, v in enumerate(n.outputs):
            if v.name.endswith("_unused"):
                continue
            want = env[id(v)]
            if want.size == 0:
                continue  # no position to evaluate
            got = run_lowered(n, args, k)
            assert got.shape == want.shape, f"{n.label()} output {k}: lowered shape {got.shape} != {want.shape}"
            if want.dtype.kind == "f":
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{n.label()} output {k}")
            else:
                np.testing.assert_array_equal(got, want, err_msg=f"{n.label()} output {k}")
            checked += 1
    return checked


def check_op(op: str, inputs: dict, n_outputs: int = 1, *, consts: tuple = (), opset: int = 21,
             lowered: bool = True, ort: bool = True, exact_order: bool = True, **attrs):
    """Interpreter == onnxruntime, and lower == reference. Returns the graph."""
    m = make_model(op, inputs, n_outputs, consts=consts, opset=opset, **attrs)
    g = fusion.load(m)
    feeds = feeds_of(inputs, consts)
    ours = fusion.run_reference(g, feeds)
    if ort:
        theirs = run_onnxruntime(m, feeds)
        assert [list(np.shape(ours[k])) for k in theirs] == [list(np.shape(v)) for v in theirs.values()], \
            f"{op}: shapes {[np.shape(ours[k]) for k in theirs]} vs onnxruntime {[v.shape for v in theirs.values()]}"
        for k, v in theirs.items():
            assert np.asarray(ours[k]).dtype == v.dtype, f"{op}: output {k} dtype {ours[k].dtype} vs {v.dtype}"
        rep = compare(ours, theirs)
        assert rep.ok, f"{op} {attrs} opset {opset}: {rep}"
    if lowered and g.nodes and g.nodes[0].opdef.lower is not None and all(v.is_static for v in g.nodes[0].outputs):
        assert check_lowered(g, feeds) > 0
    return g


def rand(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(dtype)
