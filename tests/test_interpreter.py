"""The reference interpreter: feeds are checked, intermediates are dropped
after their last use, control values stay exact."""
import numpy as np
import pytest

import fusion
from fusion.errors import InputError
from fusion.ir.builder import GraphBuilder
from fusion.ir.interpreter import run


def _graph():
    b = GraphBuilder()
    x = b.input("x", "float32", [2, 3])
    y = b.relu(b.sub(x, 1.0))
    z = b.mul(y, y)
    s = b.reduce_sum(z, keepdims=0)                  # 0-d result
    b.output(z, s, names=["z", "s"])
    return b.build()


def test_runs_and_matches_numpy():
    g = _graph()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = run(g, {"x": x})
    want = np.maximum(x - 1, 0) ** 2
    np.testing.assert_allclose(out["z"], want)
    assert out["s"].shape == () and out["s"] == want.sum()


def test_feed_errors():
    g = _graph()
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(InputError, match="missing input 'x'"):
        run(g, {})
    with pytest.raises(InputError, match="unknown input 'y'"):
        run(g, {"x": x, "y": x})
    with pytest.raises(InputError, match="dtype float64"):
        run(g, {"x": x.astype(np.float64)})
    with pytest.raises(InputError, match=r"shape \[3, 2\]"):
        run(g, {"x": x.reshape(3, 2)})


def test_intermediates_are_dropped_unless_kept():
    g = _graph()
    x = np.ones((2, 3), np.float32)
    env = {}
    run(g, {"x": x}, env=env)
    inner = [n.outputs[0] for n in g.nodes if n.outputs[0] not in g.outputs]
    assert inner and all(id(v) not in env for v in inner)
    env = {}
    run(g, {"x": x}, env=env, keep=True)
    assert all(id(v) in env for v in inner)


def test_backend_runs_models_with_open_and_value_dependent_shapes():
    from onnx import TensorProto, helper
    from fusion.backend import FusionBackend
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m"])
    m = helper.make_model(helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
                                            "g", [x, axes], [y]), opset_imports=[helper.make_opsetid("", 18)])
    rep = FusionBackend.prepare(m)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(rep.run([a, np.array([0])])[0], a.sum(0))
    np.testing.assert_allclose(rep.run([a, np.array([1])])[0], a.sum(1))      # other axes: specialized again
    b = np.ones((5, 4), np.float32)
    np.testing.assert_allclose(rep.run({"x": b, "axes": np.array([1])})[0], b.sum(1))
    assert FusionBackend.supports_device("CPU") and not FusionBackend.supports_device("CUDA")


def test_run_node():
    from onnx import helper
    from fusion.backend import FusionBackend
    node = helper.make_node("LpNormalization", ["x"], ["y"], axis=-1, p=2)
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    (y,) = FusionBackend.run_node(node, [x])
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0]])


def test_compiled_executor_hook():
    from fusion.backend import EXECUTORS, FusionBackend, register_executor
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    m = helper.make_model(helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 18)])
    seen = []

    def fake(graph, feeds):
        seen.append(graph.name)
        return fusion.run_reference(graph, feeds)
    old = EXECUTORS.get("test-exec")
    register_executor("test-exec", fake)
    try:
        out = FusionBackend.prepare(m, executor="test-exec").run([np.ones(2, np.float32)])
        assert seen == ["g"] and list(out[0]) == [-1, -1]
    finally:
        EXECUTORS.pop("test-exec", None) if old is None else EXECUTORS.update({"test-exec": old})
