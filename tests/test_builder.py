"""GraphBuilder: methods generated from the op table, fusion.save, graph.summary()."""
import numpy as np
import onnx
import pytest

import fusion
from fusion.errors import FusionError
from fusion.ir.builder import GraphBuilder, snake
from fusion.ops import all_ops
from fusion.oracle import compare, run_onnxruntime


def _small_cnn():
    rng = np.random.default_rng(0)
    b = GraphBuilder("cnn")
    x = b.input("x", "float32", [1, 3, 8, 8])
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = b.conv(x, w, rng.standard_normal(4).astype(np.float32), pads=[1, 1, 1, 1], strides=[2, 2])
    y = b.relu(y)
    y = b.add(y, 0.5)                       # a Python scalar takes the operand's dtype
    y = b.reshape(y, [1, -1])               # a list becomes an int64 constant
    y = b.softmax(y, axis=-1)
    b.output(y, names=["probs"])
    return b.build()


def test_every_op_has_a_method():
    b = GraphBuilder()
    names = dir(b)
    for od in all_ops():
        assert snake(od.name) in names or od.name.lower() in names, od.name
    assert snake("BatchNormalization") == "batch_normalization"
    assert snake("ReduceSum") == "reduce_sum" and snake("LRN") == "lrn" and snake("QLinearConv") == "q_linear_conv"


def test_build_run_and_check_against_onnxruntime(tmp_path):
    g = _small_cnn()
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "Add", "Reshape", "Softmax"]
    assert g.outputs[0].name == "probs" and g.outputs[0].shape == (1, 64)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ours = fusion.run_reference(g, {"x": x})
    p = tmp_path / "cnn.onnx"
    fusion.save(g, str(p))
    m = onnx.load(str(p))
    onnx.checker.check_model(m, full_check=True)
    theirs = run_onnxruntime(m, {"x": x})
    assert compare(ours, theirs).ok
    # ... and the saved file imports back to the same graph.
    h = fusion.load(str(p))
    assert [n.op for n in h.nodes] == [n.op for n in g.nodes]
    assert compare(fusion.run_reference(h, {"x": x}), ours).ok


def test_multiple_outputs_and_optional_inputs():
    b = GraphBuilder()
    x = b.input("x", "float32", [6, 4])
    parts = b.split(x, np.array([2, 4], np.int64), axis=0, outputs=2)
    assert isinstance(parts, tuple) and [p.shape for p in parts] == [(2, 4), (4, 4)]
    c = b.clip(x, None, np.float32(1.0))     # None: an omitted optional input
    b.output(*parts, c)
    g = b.build()
    out = fusion.run_reference(g, {"x": np.arange(24, dtype=np.float32).reshape(6, 4)})
    assert out[g.outputs[2].name].max() == 1.0


def test_builder_errors():
    b = GraphBuilder()
    x = b.input("x", "float32", [2, 3])
    with pytest.raises(AttributeError, match="no op 'frobnicate'"):
        b.frobnicate(x)
    with pytest.raises(FusionError):
        b.matmul(x, b.input("y", "float32", [4, 5]))   # inner dims differ
    with pytest.raises(FusionError, match="required attribute"):
        b.cast(x)                                      # Cast needs `to`


def test_summary():
    g = _small_cnn()
    s = g.summary()
    assert s["nodes"] == 5
    assert s["ops"] == {"Add": 1, "Conv": 1, "Relu": 1, "Reshape": 1, "Softmax": 1}
    assert s["params"] == 4 * 3 * 3 * 3 + 4          # weights + bias (the scalar 0.5 is a literal)
    conv_flops = 2 * 4 * 4 * 4 * 3 * 3 * 3            # 2 * outputs * (C/g * kh * kw)
    assert s["flops"] >= conv_flops
    # Intermediate results: conv, relu, add, reshape outputs (4*4*4 float32 each).
    assert s["intermediate_bytes"] == 4 * 64 * 4
    assert s["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8]}]
    text = str(g)
    assert "Conv(%x" in text and "# float32[1,4,4,4]" in text


def test_attributes_that_became_inputs(tmp_path):
    """Old attribute forms (ReduceSum/Squeeze/Unsqueeze axes, Split split, Pad
    pads, Clip min/max, Resize scales, TopK k) become the inputs the op table
    describes; kept as attributes they were ignored (ReduceSum reduced every axis)."""
    b = GraphBuilder()
    x = b.input("x", "float32", [2, 3, 4, 5])
    s = b.reduce_sum(x, axes=[1])
    assert s.shape == (2, 1, 4, 5)
    outs = [s, b.squeeze(s, axes=[1]), b.unsqueeze(x, axes=[0]), *b.split(x, split=[1, 2], axis=1, outputs=2),
            b.pad(x, pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="constant"), b.clip(x, min=0, max=0.5),
            b.resize(x, scales=[1, 1, 2, 2], mode="nearest"), b.top_k(x, k=[2], outputs=2)[0],
            b.reduce_mean(x, axes=[1, 3], keepdims=0)]
    b.output(*outs)
    g = b.build()
    xv = np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype(np.float32)
    ours = fusion.run_reference(g, {"x": xv})
    got = [ours[v.name] for v in outs]
    np.testing.assert_allclose(got[0], xv.sum(axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(got[6], np.clip(xv, 0, 0.5))
    assert [a.shape for a in got] == [(2, 1, 4, 5), (2, 4, 5), (1, 2, 3, 4, 5), (2, 1, 4, 5), (2, 2, 4, 5),
                                      (2, 3, 6, 7), (2, 3, 4, 5), (2, 3, 8, 10), (2, 3, 4, 2), (2, 4)]
    p = tmp_path / "moved.onnx"
    fusion.save(g, str(p))
    assert compare(ours, run_onnxruntime(onnx.load(str(p)), {"x": xv})).ok


def test_attributes_the_op_does_not_define():
    b = GraphBuilder()
    x = b.input("x", "float32", [2, 3])
    with pytest.raises(FusionError, match=r"Softmax has no attribute 'axes'.*attributes: axis"):
        b.softmax(x, axes=[1])                         # a typo of axis
    with pytest.raises(FusionError, match="Pad has no attribute 'value'.*constant_value"):
        b.pad(x, pads=[0, 1, 0, 1], value=1.0)         # renamed when it became an input
    with pytest.raises(FusionError, match="'axes' both as input 1 and as an attribute"):
        b.reduce_sum(x, [1], axes=[0])
    with pytest.raises(FusionError, match="no attribute 'inputs'"):
        b.concat(x, x, axis=0, inputs=[x])             # the variadic input is not an attribute


@pytest.mark.parametrize("attrs, words", [
    ({"strides": [1, 0]}, "strides"), ({"dilations": [0, 1]}, "dilations"), ({"pads": [0, -1, 0, 0]}, "pads"),
    ({"kernel_shape": [2, 2]}, "kernel_shape"), ({"strides": [1]}, "strides"),
])
def test_window_attributes_refused(attrs, words):
    """Checked before the shape rule (a zero stride divides by zero there)."""
    b = GraphBuilder()
    x = b.input("x", "float32", [1, 3, 8, 8])
    with pytest.raises(FusionError, match=f"Conv.*{words}"):
        b.conv(x, np.ones((4, 3, 3, 3), np.float32), **attrs)
    with pytest.raises(FusionError, match=f"MaxPool.*{'kernel_shape' if 'kernel_shape' in attrs else words}"):
        pool = {"kernel_shape": [3, 3]} | attrs | ({"kernel_shape": [0, 3]} if "kernel_shape" in attrs else {})
        b.max_pool(x, **pool)
