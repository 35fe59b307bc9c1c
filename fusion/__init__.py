"""fusion: an operator-fusion compiler for deep-learning inference.

    import fusion
    g = fusion.load("model.onnx", shapes={"input_ids": (1, 128)})
    g = fusion.rewrite(g)                   # math-property simplification
    plan = fusion.plan(g)                   # fused blocks + reasons
    mod = fusion.compile(g, target="host")  # native code
    outputs = mod.run({"input_ids": ids})
"""
from __future__ import annotations

from fusion.errors import FusionError  # noqa: F401
from fusion.ir.graph import Graph, Node, Value  # noqa: F401
from fusion.ir.builder import GraphBuilder  # noqa: F401
import fusion.ops  # noqa: F401  (registers the op table)

__version__ = "0.1.0"


def load(model, shapes=None, check: bool = True) -> Graph:
    """Import an ONNX model: a path, bytes, an onnx.ModelProto, or 'zoo:NAME[:small]'.

    `shapes` binds open dimensions: {input_name: (d0, d1, ...)} or {dim_param: n}."""
    from fusion.ir.onnx_import import load as _load
    return _load(model, shapes=shapes, check=check)


def save(graph: Graph, path: str) -> None:
    """Write a Graph as an ONNX file."""
    from fusion.ir.onnx_export import save as _save
    _save(graph, path)


def to_onnx(graph: Graph):
    from fusion.ir.onnx_export import to_onnx as _to_onnx
    return _to_onnx(graph)


def run_reference(graph: Graph, feeds: dict) -> dict:
    """Run a Graph with the numpy reference interpreter."""
    from fusion.ir.interpreter import run
    return run(graph, feeds)


def __getattr__(name):
    # Later stages are imported lazily so `import fusion` stays fast.
    if name == "rewrite":
        from fusion.rewrite import rewrite
        return rewrite
    if name == "plan":
        from fusion.plan import plan
        return plan
    if name == "compile":
        from fusion.codegen import compile
        return compile
    raise AttributeError(f"module 'fusion' has no attribute '{name}'")
