"""`fusion zoo check`: a zoo model against onnxruntime, plus activation health.

Health means: every output (and, with activations=True, every intermediate
float tensor) is finite, and no float output is constant; detection outputs
are not empty. The correctness part runs fusion's reference interpreter and
compares with onnxruntime (optimizations off) through fusion.oracle.compare.
When that fails, near-tie decisions (an integer cast, a TopK order whose float
inputs agree within tolerance: fusion/zoo/pin.py) are allowed to follow
onnxruntime and the comparison is repeated with the same tolerances; every
such decision is listed in the result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from fusion.errors import FusionError


@dataclass
class CheckResult:
    name: str
    ok: bool
    health: list[str] = field(default_factory=list)      # problems found
    outputs: dict = field(default_factory=dict)          # name -> summary
    compare: dict | None = None                          # oracle Report as JSON
    error: str = ""
    seconds: dict = field(default_factory=dict)
    pinned: list[str] = field(default_factory=list)      # near-tie decisions that follow onnxruntime
    unpinned: list[str] = field(default_factory=list)    # differing decisions that could not be pinned

    def to_json(self) -> dict:
        return self.__dict__


def summarize(a: np.ndarray) -> dict:
    d = {"shape": list(a.shape), "dtype": a.dtype.name}
    if a.size and a.dtype.kind in "fiub":
        f = a.astype(np.float64)
        d.update(min=float(np.nanmin(f)), max=float(np.nanmax(f)), std=float(np.nanstd(f)),
                 finite=bool(np.isfinite(f).all()))
    return d


def output_health(outs: dict[str, np.ndarray]) -> list[str]:
    problems = []
    for k, v in outs.items():
        if v.size == 0:
            problems.append(f"output '{k}' is empty")
            continue
        if v.dtype.kind == "f":
            if not np.isfinite(v).all():
                problems.append(f"output '{k}' has {int((~np.isfinite(v)).sum())} NaN/Inf values")
            elif v.size > 1 and float(np.std(v.astype(np.float64))) == 0.0:
                problems.append(f"output '{k}' is constant ({float(v.flat[0]):.6g})")
    return problems


def activation_health(model: onnx.ModelProto, feeds) -> tuple[list[str], list[dict]]:
    """Run onnxruntime with every float intermediate exposed; report NaN/Inf and constant tensors."""
    from fusion.oracle import run_onnxruntime
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m)
    have = {o.name for o in m.graph.output}
    for vi in inferred.graph.value_info:
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and vi.name not in have:
            m.graph.output.append(vi)
    outs = run_onnxruntime(m, feeds)
    problems, rows = [], []
    for k, v in outs.items():
        if v.dtype.kind != "f" or v.size == 0:
            continue
        fin = np.isfinite(v)
        std = float(np.std(v[fin].astype(np.float64))) if fin.any() else float("nan")
        rows.append({"name": k, "max_abs": float(np.abs(v[fin]).max()) if fin.any() else float("nan"), "std": std})
        if not fin.all():
            problems.append(f"'{k}' has {int((~fin).sum())} NaN/Inf values")
    return problems, rows


def _with_pins(res: CheckResult, model, g, feeds, ort: dict, rep):
    """Rerun the interpreter with near-tie decisions following onnxruntime; the
    original report stays if that does not pass too."""
    from fusion.oracle import compare
    from fusion.zoo.pin import decision_values, pinned_reference
    t = time.time()
    theirs = decision_values(model, g, feeds)
    ref, pins, refused = pinned_reference(g, feeds, theirs)
    res.seconds["pinned"] = round(time.time() - t, 2)
    again = compare(ref, ort)
    res.pinned = [str(p) for p in pins]
    if again.ok and pins:
        # differing decisions that could not be pinned did not matter (e.g. an NMS order
        # inside an If branch permuting proposals that are re-sorted later)
        return again
    res.unpinned = refused
    return rep


def check(name: str, small: bool = False, seed: int = 0, reference: bool = True,
          activations: bool = False) -> CheckResult:
    import fusion
    from fusion import zoo
    from fusion.oracle import compare, run_onnxruntime
    tag = f"{name}{':small' if small else ''}"
    res = CheckResult(tag, False)
    t = time.time()
    model = zoo.load(name, small)
    res.seconds["load"] = round(time.time() - t, 2)
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as e:
        res.error = f"onnx.checker: {str(e).splitlines()[0]}"
        return res
    feeds = zoo.random_inputs(name, small, seed=seed)
    t = time.time()
    ort = run_onnxruntime(model, feeds)
    res.seconds["onnxruntime"] = round(time.time() - t, 2)
    res.outputs = {k: summarize(v) for k, v in ort.items()}
    res.health = output_health(ort)
    if activations:
        probs, _rows = activation_health(model, feeds)
        res.health += probs
    ok = not res.health
    if reference:
        try:
            t = time.time()
            g = fusion.load(model)
            ref = fusion.run_reference(g, feeds)
            res.seconds["reference"] = round(time.time() - t, 2)
            rep = compare(ref, ort)
            if not rep.ok:
                rep = _with_pins(res, model, g, feeds, ort, rep)
            res.compare = rep.to_json()
            res.compare["text"] = str(rep)
            ok = ok and rep.ok
        except FusionError as e:
            res.error = f"reference interpreter: {e}"
            ok = False
    res.ok = ok
    return res
