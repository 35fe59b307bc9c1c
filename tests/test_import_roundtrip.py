"""Import -> export round trip on the ONNX backend suite's node models.

Every node model fusion imports (and does not skip for a representation
reason) is exported again with `fusion.to_onnx`; onnx.checker must accept it
and onnxruntime, run on the exported model, must give the suite's expected
outputs. Where onnxruntime cannot run the suite's *own* model either (no
kernel for that type, training ops), only the checker part applies.

CI exports two models per distinct op combination; `pytest -m slow` runs the rest.
"""
import warnings

import numpy as np
import onnx
import pytest

import fusion
from fusion.backend import FusionRep, _as_array, skip_reason, suite_cases
from fusion.errors import FusionError
from fusion.oracle import run_onnxruntime

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    CASES = {case.name: case for _, case in suite_cases(["node"])}


def _ci_sample() -> list[str]:
    """Two cases per distinct set of op types: every op and attribute-free variant is
    exported in CI; the full sweep is the slow test below."""
    seen: dict = {}
    out = []
    for name in sorted(CASES):
        sig = tuple(sorted({n.op_type for n in CASES[name].model.graph.node}))
        if seen.get(sig, 0) < 2:
            seen[sig] = seen.get(sig, 0) + 1
            out.append(name)
    return out


CI_CASES = _ci_sample()


def _ort(model, feeds):
    return run_onnxruntime(model, feeds)


@pytest.mark.parametrize("name", CI_CASES)
def test_roundtrip(name):
    _roundtrip(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(CASES) - set(CI_CASES)))
def test_roundtrip_all(name):
    """The rest of the node suite: `pytest -m slow tests/test_import_roundtrip.py -n 2`."""
    _roundtrip(name)


def _roundtrip(name):
    from onnx.backend.test.runner import Runner
    case = CASES[name]
    if skip_reason(case.model):
        pytest.skip(skip_reason(case.model))
    inputs, refs = case.data_sets[0]
    inputs = [np.asarray(_as_array(x)) for x in inputs]
    refs = [_as_array(x) for x in refs]
    try:
        rep = FusionRep(case.model)
        feeds = dict(zip(rep.input_names, inputs))
        g = rep._graph_for(feeds)
    except FusionError as e:
        pytest.skip(f"fusion does not import it yet: {str(e)[:120]}")
    m = fusion.to_onnx(g)
    onnx.checker.check_model(m)
    names = {v.name for v in g.inputs}
    feeds = {k: v for k, v in feeds.items() if k in names}
    try:
        outs = _ort(m, feeds)
    except Exception as e:
        try:
            _ort(case.model, dict(zip(rep.input_names, inputs)))
        except Exception:
            pytest.skip(f"onnxruntime cannot run the suite's own model either: {str(e)[:120]}")
        raise
    outs = [outs[v.name] for v in g.outputs]
    try:
        Runner.assert_similar_outputs(refs, outs, rtol=case.rtol, atol=case.atol)
    except AssertionError:
        own = _ort(case.model, dict(zip(rep.input_names, inputs)))
        try:
            Runner.assert_similar_outputs(refs, [own[o.name] for o in case.model.graph.output],
                                          rtol=case.rtol, atol=case.atol)
        except AssertionError:
            pytest.skip("onnxruntime disagrees with the suite's expected outputs on the suite's own model")
        raise


# ---------------------------------------------------------------------------
# Exporter corner cases: nodes the backend suite does not produce in this form.

def _model(nodes, inputs, outputs, opset, inits=()):
    from onnx import helper
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _export_and_run(g, feeds):
    """Export g, require the full checker (with shape inference) and onnxruntime to
    accept it, and return onnxruntime's outputs next to fusion's interpreter's."""
    from fusion.ir.interpreter import run
    m = fusion.to_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    got = _ort(m, feeds)
    want = run(g, feeds)
    return m, [got[v.name] for v in g.outputs], [want[v.name] for v in g.outputs]


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp",
                                "Squeeze", "Unsqueeze"])
def test_export_axes_attribute_becomes_input(op):
    """A node that still carries `axes` as an attribute (a graph built in Python or by a
    pass, not normalized by the importer) is written with axes as the input the export
    opset wants; as an attribute, onnx.checker and onnxruntime reject the model."""
    from fusion.ir.graph import Graph
    g = Graph("g", {"": 21})
    x = g.add_input("x", np.dtype(np.float32), (2, 1, 4) if op == "Squeeze" else (2, 3, 4))
    out_shape = {"Squeeze": (2, 4), "Unsqueeze": (2, 3, 1, 4)}.get(op, (2, 1, 4))
    y = g.new_value(np.dtype(np.float32), out_shape, name="y")
    extra = {} if op in ("Squeeze", "Unsqueeze") else {"keepdims": 1}
    g.add_node(op, [x], {"axes": [1 if op != "Unsqueeze" else 2], **extra}, outputs=[y], infer=False)
    g.outputs.append(y)
    m = fusion.to_onnx(g)
    node = m.graph.node[0]
    assert [a.name for a in node.attribute if a.name == "axes"] == []
    assert len(node.input) == 2 and node.input[1] in {t.name for t in m.graph.initializer}
    onnx.checker.check_model(m, full_check=True)
    xv = np.random.default_rng(0).random(x.shape).astype(np.float32)
    out = _ort(m, {"x": xv})["y"]
    ref = {"ReduceSum": lambda a: a.sum(1, keepdims=True), "ReduceMean": lambda a: a.mean(1, keepdims=True),
           "ReduceMax": lambda a: a.max(1, keepdims=True),
           "ReduceL2": lambda a: np.sqrt((a * a).sum(1, keepdims=True)),
           "ReduceLogSumExp": lambda a: np.log(np.exp(a).sum(1, keepdims=True)),
           "Squeeze": lambda a: a[:, 0], "Unsqueeze": lambda a: a[:, :, None]}[op](xv)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_export_attribute_names_do_not_collide():
    """Two nodes with a moved attribute get distinct initializer names, also when a
    value already uses the obvious one."""
    from fusion.ir.graph import Graph
    g = Graph("g", {"": 21})
    x = g.add_input("r_axes", np.dtype(np.float32), (2, 3))
    y1 = g.new_value(np.dtype(np.float32), (2, 1), name="y1")
    y2 = g.new_value(np.dtype(np.float32), (1, 1), name="y2")
    g.add_node("ReduceSum", [x], {"axes": [1], "keepdims": 1}, outputs=[y1], name="r", infer=False)
    g.add_node("ReduceMax", [y1], {"axes": [0], "keepdims": 1}, outputs=[y2], name="r2", infer=False)
    g.outputs.append(y2)
    m = fusion.to_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    names = [t.name for t in m.graph.initializer]
    assert len(names) == len(set(names)) == 2 and "r_axes" not in names
    xv = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(_ort(m, {"r_axes": xv})["y2"], [[12.0]])


@pytest.mark.parametrize("to", [onnx.TensorProto.INT32, onnx.TensorProto.FLOAT16, onnx.TensorProto.UINT8])
@pytest.mark.parametrize("opset", [19, 21])
def test_export_cast_saturate_other_targets(to, opset):
    """Cast(saturate=0) to a non-float8 type is valid ONNX from opset 19 on, but
    onnxruntime refuses to load it: saturate only means something for float8
    targets, so the exporter leaves it out (and round_mode, float8e8m0 only)."""
    from onnx import helper
    X = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    Y = helper.make_tensor_value_info("y", to, [2, 3])
    g = fusion.load(_model([helper.make_node("Cast", ["x"], ["y"], to=to, saturate=0)], [X], [Y], opset))
    xv = np.array([[0.5, 1.5, 2.0], [3.0, 4.25, 100.0]], np.float32)
    m, got, want = _export_and_run(g, {"x": xv})
    assert not [a for a in m.graph.node[0].attribute if a.name in ("saturate", "round_mode")]
    np.testing.assert_array_equal(got[0], want[0])


def test_export_cast_saturate_below_opset_19():
    """A Cast carrying the (default) saturate flag exports at opset 18, where Cast has no
    such attribute."""
    from fusion.ir.graph import Graph
    g = Graph("g", {"": 21})
    x = g.add_input("x", np.dtype(np.float32), (3,))
    n = g.add_node("Cast", [x], {"to": onnx.TensorProto.INT64, "saturate": 1})
    g.outputs.append(n.outputs[0])
    m, got, want = _export_and_run(g, {"x": np.array([1.5, -2.5, 7.0], np.float32)})
    assert m.opset_import[0].version == 18
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("mode", ["nearest", "linear", "bilinear"])
@pytest.mark.parametrize("opset", [7, 9])
def test_export_upsample(mode, opset):
    """Upsample (deprecated from opset 10) exports as Resize with asymmetric coordinates
    (nearest: rounding down) at the base opset; 'bilinear' (an opset-7 spelling) becomes
    'linear'. onnxruntime on the export matches fusion's interpreter."""
    from onnx import helper
    if mode == "bilinear" and opset != 7:
        pytest.skip("bilinear is an opset-7 spelling")
    X = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 3, 2])
    Y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    scales = [1.0, 1.0, 2.0, 3.0]
    if opset == 7:
        nodes, inits = [helper.make_node("Upsample", ["x"], ["y"], scales=scales, mode=mode)], []
    else:
        nodes = [helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode)]
        inits = [helper.make_tensor("s", onnx.TensorProto.FLOAT, [4], scales)]
    try:
        g = fusion.load(_model(nodes, [X], [Y], opset, inits))
    except FusionError as e:
        pytest.fail(f"import: {e}")
    xv = np.random.default_rng(1).random((1, 2, 3, 2)).astype(np.float32)
    m, got, want = _export_and_run(g, {"x": xv})
    assert m.opset_import[0].version == 18
    assert [n.op_type for n in m.graph.node] == ["Resize"]
    assert got[0].shape == (1, 2, 6, 6)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_export_clip_and_split_attributes_become_inputs():
    """Clip's min/max (input type = the data's) and Split's split (int64) held as
    attributes are written as initializers of the right element type."""
    from fusion.ir.graph import Graph
    g = Graph("g", {"": 21})
    x = g.add_input("x", np.dtype(np.float32), (2, 6))
    c = g.new_value(np.dtype(np.float32), (2, 6), name="c")
    g.add_node("Clip", [x], {"min": -0.5, "max": 0.5}, outputs=[c], infer=False)
    a, b = g.new_value(np.dtype(np.float32), (2, 2), name="a"), g.new_value(np.dtype(np.float32), (2, 4), name="b")
    g.add_node("Split", [c], {"axis": 1, "split": [2, 4]}, outputs=[a, b], infer=False)
    g.outputs.extend([a, b])
    m = fusion.to_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    clip, split = m.graph.node
    assert [inits[n].dtype for n in clip.input[1:]] == [np.float32, np.float32]
    assert inits[split.input[1]].dtype == np.int64 and list(inits[split.input[1]]) == [2, 4]
    xv = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    out = _ort(m, {"x": xv})
    np.testing.assert_array_equal(out["a"], np.clip(xv, -0.5, 0.5)[:, :2])
    np.testing.assert_array_equal(out["b"], np.clip(xv, -0.5, 0.5)[:, 2:])
