"""Control flow (If, Loop, Scan): subgraphs run by the interpreter, == onnxruntime."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP, helper, numpy_helper

import fusion
from fusion.oracle import compare, run_onnxruntime

vi = helper.make_tensor_value_info
X = np.arange(6, dtype=np.float32).reshape(2, 3)


def _model(nodes, inputs, outputs):
    m = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _check(model, feeds):
    g = fusion.load(model)
    ours, theirs = fusion.run_reference(g, feeds), run_onnxruntime(model, feeds)
    assert all(ours[k].shape == v.shape for k, v in theirs.items())
    rep = compare(ours, theirs)
    assert rep.ok, str(rep)
    return g, ours


def _if_model():
    then = helper.make_graph([helper.make_node("Add", ["x", "one"], ["t"])], "then", [], [vi("t", TP.FLOAT, [2, 3])],
                             initializer=[numpy_helper.from_array(np.array([1], np.float32), "one")])
    els = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["e"])], "else", [], [vi("e", TP.FLOAT, [2, 3])])
    return _model([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els)],
                  [vi("c", TP.BOOL, []), vi("x", TP.FLOAT, [2, 3])], [vi("y", TP.FLOAT, [2, 3])])


@pytest.mark.parametrize("cond", [True, False])
def test_if_runs_the_chosen_branch_with_captured_values(cond):
    _, out = _check(_if_model(), {"c": np.array(cond), "x": X})
    assert np.array_equal(out["y"], X + 1 if cond else X * X)


def _loop_model():
    # carried s += x * i, scanned s, M trips
    body = helper.make_graph([
        helper.make_node("Cast", ["i"], ["fi"], to=TP.FLOAT),
        helper.make_node("Mul", ["x", "fi"], ["xi"]),
        helper.make_node("Add", ["s_in", "xi"], ["s_out"]),
        helper.make_node("Identity", ["s_out"], ["scan"]),
        helper.make_node("Identity", ["cin"], ["cout"]),
    ], "body", [vi("i", TP.INT64, []), vi("cin", TP.BOOL, []), vi("s_in", TP.FLOAT, [2, 3])],
        [vi("cout", TP.BOOL, []), vi("s_out", TP.FLOAT, [2, 3]), vi("scan", TP.FLOAT, [2, 3])])
    return _model([helper.make_node("Loop", ["M", "", "s0"], ["s", "ss"], body=body)],
                  [vi("M", TP.INT64, []), vi("x", TP.FLOAT, [2, 3]), vi("s0", TP.FLOAT, [2, 3])],
                  [vi("s", TP.FLOAT, [2, 3]), vi("ss", TP.FLOAT, ["N", 2, 3])])


@pytest.mark.parametrize("trips", [4, 0])
def test_loop_with_trip_count_and_scan_outputs(trips):
    _, out = _check(_loop_model(), {"M": np.array(trips, np.int64), "x": X, "s0": np.ones((2, 3), np.float32)})
    assert out["ss"].shape == (trips, 2, 3)


def test_loop_stops_on_condition():
    body = helper.make_graph([
        helper.make_node("Add", ["s_in", "x"], ["s_out"]),
        helper.make_node("Less", ["i", "two"], ["cout"]),
    ], "body", [vi("i", TP.INT64, []), vi("cin", TP.BOOL, []), vi("s_in", TP.FLOAT, [2, 3])],
        [vi("cout", TP.BOOL, []), vi("s_out", TP.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.array(2, np.int64), "two")])
    m = _model([helper.make_node("Loop", ["", "c", "s0"], ["s"], body=body)],
               [vi("c", TP.BOOL, []), vi("x", TP.FLOAT, [2, 3]), vi("s0", TP.FLOAT, [2, 3])], [vi("s", TP.FLOAT, [2, 3])])
    _, out = _check(m, {"c": np.array(True), "x": X, "s0": np.ones((2, 3), np.float32)})
    assert np.array_equal(out["s"], 1 + 3 * X)


@pytest.mark.parametrize("dirs,out_axes", [([0], [0]), ([1], [1])])
def test_scan_running_sum(dirs, out_axes):
    body = helper.make_graph([helper.make_node("Add", ["st", "xt"], ["st2"]), helper.make_node("Identity", ["st2"], ["o"])],
                             "sb", [vi("st", TP.FLOAT, [3]), vi("xt", TP.FLOAT, [3])],
                             [vi("st2", TP.FLOAT, [3]), vi("o", TP.FLOAT, [3])])
    m = _model([helper.make_node("Scan", ["s0", "xs"], ["sf", "os"], body=body, num_scan_inputs=1,
                                 scan_input_directions=dirs, scan_output_axes=out_axes)],
               [vi("s0", TP.FLOAT, [3]), vi("xs", TP.FLOAT, [4, 3])], [vi("sf", TP.FLOAT, [3]), vi("os", TP.FLOAT, ["A", "B"])])
    g, _ = _check(m, {"s0": np.zeros(3, np.float32), "xs": np.arange(12, dtype=np.float32).reshape(4, 3)})
    assert g.nodes[0].outputs[1].shape == ((4, 3) if out_axes == [0] else (3, 4))
