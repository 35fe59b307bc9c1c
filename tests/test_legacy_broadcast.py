"""Binary ops before opset 7: `broadcast=1` with `axis` places B inside A's dims."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fusion
from fusion.ir.interpreter import run


def _model(b_const: bool):
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 4, 5])]
    inits = [onnx.numpy_helper.from_array(b, "b")] if b_const else []
    if not b_const:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 4]))
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"], broadcast=1, axis=1)], "t", inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 6)]), b


def test_axis_places_b_at_that_axis():
    m, b = _model(True)
    a = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = run(fusion.load(m), {"a": a})["y"]
    np.testing.assert_array_equal(y, a + b.reshape(1, 3, 4, 1))


def test_computed_b_at_an_inner_axis_is_a_clear_error():
    m, _ = _model(False)
    with pytest.raises(fusion.FusionError, match="re-export the model at opset 7"):
        fusion.load(m)
