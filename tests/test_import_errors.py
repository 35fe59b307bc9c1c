"""User mistakes in model files get one clear line and exit code 2 from the
CLI (no traceback): missing file, not ONNX, truncated file, unsupported op,
unbound symbolic dimension, external data outside the model's folder."""
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from fusion.cli import main


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _conv_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 3, 3, 3)).astype(np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [x], [y], [w])


def _cli(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line_error(rc, err, *words):
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("fusion: error: ")
    for w in words:
        assert w in err, (w, err)


def test_missing_file(capsys, tmp_path):
    rc, err = _cli(capsys, "inspect", str(tmp_path / "nope.onnx"))
    _one_line_error(rc, err, "nope.onnx", "no such file")


def test_not_onnx(capsys, tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is a text file, not a model\n" * 20)
    rc, err = _cli(capsys, "inspect", str(p))
    _one_line_error(rc, err, "notes.onnx", "not an ONNX model")


def test_truncated(capsys, tmp_path):
    data = _conv_model().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    rc, err = _cli(capsys, "inspect", str(p))
    _one_line_error(rc, err, "cut.onnx", "truncated")


def test_unsupported_op(capsys, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    m = _model([helper.make_node("Relu", ["x"], ["r"], name="ok"),
                helper.make_node("FrobnicateTensor", ["r"], ["y"], name="weird")], [x], [y])
    p = tmp_path / "odd.onnx"
    p.write_bytes(m.SerializeToString())
    rc, err = _cli(capsys, "inspect", str(p))
    _one_line_error(rc, err, "node 'weird'", "FrobnicateTensor", "opset 17", "not supported")


def test_unbound_symbolic_dimension(capsys, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    p = tmp_path / "sym.onnx"
    p.write_bytes(m.SerializeToString())
    import fusion
    from fusion.errors import FusionError
    g = fusion.load(str(p))
    assert str(g.inputs[0].shape[0]) == "batch"          # left open at import
    assert fusion.load(str(p), shapes={"batch": 2}).inputs[0].shape == (2, 4)
    with pytest.raises(FusionError, match="neither an input"):
        fusion.load(str(p), shapes={"batsh": 2})
    # An op whose shape rule needs a dimension the model leaves open: the error names the input and the flag.
    xi = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "H", "W"])
    m = _model([helper.make_node("MaxPool", ["image"], ["y"], kernel_shape=[2, 2])], [xi], [y])
    q = tmp_path / "pool.onnx"
    q.write_bytes(m.SerializeToString())
    rc, err = _cli(capsys, "inspect", str(q))
    _one_line_error(rc, err, "MaxPool", "input 'image'", "--shape image=")
    rc, err = _cli(capsys, "inspect", str(q), "--shape", "image=1x3x8x8")
    assert rc == 0, err
    # Compiling needs every dimension: the error names the input and the flag.
    from fusion.cli import build_parser
    if "compile" not in build_parser().format_help():
        pytest.skip("fusion compile is not available in this tree")
    rc, err = _cli(capsys, "compile", str(p), "-o", str(tmp_path / "out"))
    _one_line_error(rc, err, "'x'", "--shape x=")


def test_external_data_outside_folder(capsys, tmp_path):
    m = _conv_model()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(16 * 3 * 3 * 3, np.float32).tobytes())
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "../secret.bin"
    d = tmp_path / "model"
    d.mkdir()
    p = d / "m.onnx"
    p.write_bytes(m.SerializeToString())
    rc, err = _cli(capsys, "inspect", str(p))
    _one_line_error(rc, err, "'w'", "outside the model's folder")
    # The same file inside the folder loads.
    os.replace(secret, d / "w.bin")
    e.value = "w.bin"
    p.write_bytes(m.SerializeToString())
    rc, err = _cli(capsys, "inspect", str(p))
    assert rc == 0, err


def test_exit_code_and_debug_traceback(tmp_path):
    exe = [sys.executable, "-m", "fusion"]
    r = subprocess.run(exe + ["inspect", str(tmp_path / "missing.onnx")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(exe + ["--debug", "inspect", str(tmp_path / "missing.onnx")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


def _one_node(op, opset, inputs=("x",), **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return _model([helper.make_node(op, list(inputs), ["y"], name="n", **attrs)], [x], [y], opset=opset)


@pytest.mark.parametrize("op, opset, attrs, inputs", [
    ("Relu", 17, {"alpha": 0.5}, ("x",)),
    ("ReduceSum", 13, {"axes": [1]}, ("x",)),       # an input since opset 13: kept, it would reduce every axis
    ("Add", 17, {"broadcast": 1}, ("x", "x")),      # opset < 7 only
    ("Softmax", 17, {"axes": [1]}, ("x",)),         # a typo of axis
], ids=["relu-alpha", "reducesum13-axes", "add17-broadcast", "softmax-typo"])
def test_attribute_the_op_does_not_define(capsys, tmp_path, op, opset, attrs, inputs):
    """onnx.checker and onnxruntime refuse them; fusion too, naming file, node, op and attribute."""
    p = tmp_path / "attr.onnx"
    p.write_bytes(_one_node(op, opset, inputs, **attrs).SerializeToString())
    rc, err = _cli(capsys, "inspect", str(p))
    _one_line_error(rc, err, "attr.onnx", "node 'n'", op, f"'{next(iter(attrs))}'", f"opset {opset}")


def test_attribute_given_twice(capsys, tmp_path):
    m = _one_node("Softmax", 17, axis=1)
    a = m.graph.node[0].attribute.add()
    a.CopyFrom(m.graph.node[0].attribute[0])
    p = tmp_path / "twice.onnx"
    p.write_bytes(m.SerializeToString())
    rc, err = _cli(capsys, "inspect", str(p))
    _one_line_error(rc, err, "node 'n'", "'axis'", "twice")


@pytest.mark.parametrize("op, opset, attrs, inputs", [
    ("ReduceSum", 11, {"axes": [1], "keepdims": 0}, ("x",)),   # the attribute form of the old opset
    ("Squeeze", 11, {"axes": [0]}, ("x",)),
    ("Clip", 6, {"min": -0.5, "max": 0.5}, ("x",)),
    ("Split", 11, {"axis": 2, "split": [1, 3]}, ("x",)),
])
def test_old_opset_attributes_are_accepted(op, opset, attrs, inputs):
    """Attributes an op defined at an older opset load at that opset and give
    onnxruntime's answer (the op's normalize turns them into inputs)."""
    import fusion
    from fusion.oracle import compare, run_onnxruntime
    m = _one_node(op, opset, inputs, **attrs)
    if op == "Split":
        m.graph.node[0].output[:] = ["y", "z"]
        m.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    if op == "Squeeze":
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m.ir_version = 8
    g = fusion.load(m)
    shape = tuple(int(d.dim_value) for d in m.graph.input[0].type.tensor_type.shape.dim)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    rep = compare(fusion.run_reference(g, {"x": x}), run_onnxruntime(m, {"x": x}))
    assert rep.ok, str(rep)
