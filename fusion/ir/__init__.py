"""IR: Graph/Node/Value, ONNX import/export, shape inference, interpreter, expressions."""
from fusion.ir.graph import Graph, Node, Value  # noqa: F401
