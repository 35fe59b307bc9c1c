"""The oracle: onnxruntime on the same inputs, and the one place tolerances live.

Every correctness check in fusion (tests, `fusion run --check`, the per-pass
check, the evaluation) compares through `compare` with `TOLERANCES`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from fusion.errors import FusionError

# Per-dtype tolerances: an element passes when
#     |actual - expected| <= atol + rtol * |expected| + stol * max|expected|
# `stol` scales with the output's own magnitude (so a 1e-6 error in a tensor of
# logits around 1e3 passes, as it should), `rtol` covers per-element scale,
# `atol` tiny values. float32 budgets for different summation orders and
# vectorized libm (exp/tanh/erf) across models of dozens of layers.
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"atol": 1e-9, "rtol": 1e-7, "stol": 1e-9},
    "float32": {"atol": 1e-4, "rtol": 1e-3, "stol": 1e-4},
    "float16": {"atol": 1e-2, "rtol": 1e-2, "stol": 5e-3},
}
EXACT = {"atol": 0.0, "rtol": 0.0, "stol": 0.0}


def tolerance(dtype) -> dict[str, float]:
    return TOLERANCES.get(np.dtype(dtype).name, EXACT)


@dataclass
class OutputDiff:
    name: str
    ok: bool
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple | None = None
    message: str = ""


@dataclass
class Report:
    ok: bool
    max_abs_err: float
    max_rel_err: float
    outputs: list[OutputDiff] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"ok": self.ok, "max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err,
                "outputs": [o.__dict__ | {"worst_index": list(o.worst_index) if o.worst_index else None}
                            for o in self.outputs]}

    def __str__(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'}: max abs err {self.max_abs_err:.3g}, max rel err {self.max_rel_err:.3g}"
        bad = [o for o in self.outputs if not o.ok]
        return head + "".join(f"\n  {o.name}: {o.message}" for o in bad)


def compare_arrays(name: str, a, e) -> OutputDiff:
    a, e = np.asarray(a), np.asarray(e)
    if a.shape != e.shape:
        return OutputDiff(name, False, float("inf"), float("inf"), None,
                          f"shape {list(a.shape)} != expected {list(e.shape)}")
    if e.dtype == object or a.dtype == object:
        ok = bool(np.array_equal(a, e))
        return OutputDiff(name, ok, 0.0 if ok else float("inf"), 0.0 if ok else float("inf"), None,
                          "" if ok else "string values differ")
    if e.size == 0:
        return OutputDiff(name, True, 0.0, 0.0)
    tol = tolerance(e.dtype)
    if e.dtype.kind in "iub":
        diff = a.astype(np.int64) != e.astype(np.int64) if e.dtype.kind != "b" else a != e
        n = int(np.count_nonzero(diff))
        ae = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if n else 0.0
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), e.shape)) if n else None
        return OutputDiff(name, n == 0, ae, ae, idx, f"{n} of {e.size} elements differ" if n else "")
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    same_nan = np.isnan(a64) & np.isnan(e64)
    same_inf = np.isinf(e64) & (a64 == e64)
    err = np.where(same_nan | same_inf, 0.0, np.abs(a64 - e64))
    err = np.where(np.isnan(err), np.inf, err)
    finite = np.isfinite(e64)
    scale = float(np.max(np.abs(e64[finite]))) if finite.any() else 0.0
    limit = tol["atol"] + tol["rtol"] * np.abs(np.where(finite, e64, 0)) + tol["stol"] * scale
    bad = err > limit
    rel = err / np.maximum(np.abs(np.where(finite, e64, 0)), max(scale, 1e-30) * 1e-3)
    k = int(np.argmax(err))
    idx = tuple(int(i) for i in np.unravel_index(k, e.shape))
    n_bad = int(np.count_nonzero(bad))
    msg = ""
    if n_bad:
        kb = int(np.argmax(np.where(bad, err, -1)))
        ib = tuple(int(i) for i in np.unravel_index(kb, e.shape))
        msg = (f"{n_bad} of {e.size} elements beyond tolerance; worst at {list(ib)}: "
               f"got {a64.flat[kb]:.6g}, expected {e64.flat[kb]:.6g}")
    return OutputDiff(name, n_bad == 0, float(err.max()), float(np.max(rel)), idx, msg)


def compare(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> Report:
    diffs = []
    for name, e in expected.items():
        if name not in actual:
            diffs.append(OutputDiff(name, False, float("inf"), float("inf"), None, "missing output"))
            continue
        diffs.append(compare_arrays(name, actual[name], e))
    ok = all(d.ok for d in diffs)
    return Report(ok, max((d.max_abs_err for d in diffs), default=0.0),
                  max((d.max_rel_err for d in diffs), default=0.0), diffs)


# ---------------------------------------------------------------------------
# onnxruntime

def ort_session(model, *, optimize: bool = False, threads: int | None = 1, profile: bool = False):
    """An onnxruntime CPU session; optimize=False is the oracle setting."""
    import onnxruntime as ort
    import onnx
    from fusion.ir.graph import Graph
    from fusion.ir.onnx_export import to_onnx
    if isinstance(model, Graph):
        model = to_onnx(model)
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise FusionError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from None


def run_onnxruntime(model, feeds: Mapping[str, np.ndarray], *, optimize: bool = False,
                    threads: int | None = 1) -> dict[str, np.ndarray]:
    sess = ort_session(model, optimize=optimize, threads=threads)
    names = [o.name for o in sess.get_outputs()]
    want = {i.name for i in sess.get_inputs()}
    outs = sess.run(names, {k: v for k, v in feeds.items() if k in want})
    return dict(zip(names, outs))


# ---------------------------------------------------------------------------
# Inputs

def random_inputs(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for a Graph: floats ~N(0,1); integers in [0, 2) (safe as
    token ids, masks and indices of any size); booleans at random. Zoo models
    have their own realistic generator (fusion.zoo.random_inputs)."""
    from fusion.ir.graph import is_static
    zoo_name = getattr(graph, "metadata", {}).get("fusion.zoo")
    if zoo_name:
        from fusion import zoo
        name, _, small = zoo_name.partition(":")
        return zoo.random_inputs(name, small=small == "small", seed=seed)
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        if not is_static(v.shape):
            from fusion.errors import ShapeError
            raise ShapeError(f"input '{v.name}' has open dimensions {list(v.shape)}; bind them with "
                             f"--shape {v.name}=" + "x".join(str(d) if isinstance(d, int) else "N" for d in v.shape))
        if v.dtype.kind == "f":
            out[v.name] = rng.standard_normal(v.shape).astype(v.dtype)
        elif v.dtype.kind in "iu":
            out[v.name] = rng.integers(0, 2, v.shape).astype(v.dtype)
        elif v.dtype.kind == "b":
            out[v.name] = rng.random(v.shape) < 0.5
        else:
            raise FusionError(f"input '{v.name}': cannot make random data of type {v.dtype}")
    return out


def ort_optimized_node_count(model) -> int | None:
    """Nodes in onnxruntime's optimized model (ORT_ENABLE_ALL): the peer's own
    fusion count. `model`: a Graph, a ModelProto or a path; None if ORT refuses it."""
    import tempfile
    import onnx
    import onnxruntime as ort
    from fusion.ir.graph import Graph
    if isinstance(model, Graph):
        from fusion.ir.onnx_export import to_onnx
        model = to_onnx(model)
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "opt.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = out
        so.log_severity_level = 3
        try:
            ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            return len(onnx.load(out, load_external_data=False).graph.node)
        except Exception:
            return None
