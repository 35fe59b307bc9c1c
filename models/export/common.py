"""Shared export steps: torch module -> ONNX -> weight-less stored file + manifest entry.

Run with the maintainers' torch environment (models/export/requirements.txt),
from the repository root, e.g. `/work/torchenv/bin/python models/export/export.py tinybert`.
fusion's storage format and calibration (fusion/zoo/store.py, calibrate.py)
are imported from the tree.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import warnings

import onnx
import torch

import tvshim  # noqa: F401  (before torchvision / transformers)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)
from fusion.zoo import calibrate, store  # noqa: E402  (fusion's storage format; numpy/onnx only)
DATA = os.path.join(ROOT, "fusion", "zoo", "data")
MANIFEST = os.path.join(DATA, "manifest.json")
OPSET = 18


def perturb_(module: torch.nn.Module) -> None:
    """Change every learned tensor (parameters and BatchNorm statistics), keeping variances
    positive; other buffers (prior boxes, position tables) are constants and stay."""
    with torch.no_grad():
        stats = [b for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var"))]
        for t in list(module.parameters()) + stats:
            t.mul_(1.25).add_(0.01)


def export_onnx(model, args, *, dynamo: bool, input_names, output_names, opset=OPSET) -> onnx.ModelProto:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            kwargs = {}
            if isinstance(args, dict):
                kwargs, args = args, ()
            prog = torch.onnx.export(model, args, kwargs=kwargs, dynamo=True, opset_version=opset,
                                     input_names=input_names, output_names=output_names,
                                     optimize=True, verbose=False)
            return prog.model_proto
        f = io.BytesIO()
        torch.onnx.export(model, args, f, dynamo=False, opset_version=min(opset, 17),
                          input_names=input_names, output_names=output_names,
                          do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL)
        return onnx.load_from_string(f.getvalue())


def _only_learned_buffers(module) -> bool:
    """True when every float buffer is a BatchNorm statistic (no priors, grids, anchors, tables)
    and the module is not a detection model (those build anchors in forward)."""
    if any("rcnn" in type(m).__name__.lower() for m in module.modules()):
        return False
    return all(n.endswith(("running_mean", "running_var")) for n, b in module.named_buffers()
               if b.is_floating_point())


def learned_free_constants(model, args, first: onnx.ModelProto, **kw) -> set[str]:
    """Names of float initializers that do not depend on the weights (priors, anchors,
    position tables): export again with every weight changed, keep what stayed equal."""
    perturb_(model)
    second = export_onnx(model, args, **kw)
    a = {t.name: t for t in first.graph.initializer}
    b = {t.name: t for t in second.graph.initializer}
    same = set()
    for name, t in a.items():
        u = b.get(name)
        if u is not None and onnx.numpy_helper.to_array(t).tobytes() == onnx.numpy_helper.to_array(u).tobytes():
            same.add(name)
    return same


def save_variant(name: str, small: bool, model, args, *, dynamo: bool, input_names, output_names,
                 extra: dict | None = None, opset=OPSET) -> dict:
    t0 = time.time()
    kw = dict(dynamo=dynamo, input_names=input_names, output_names=output_names, opset=opset)
    proto = export_onnx(model, args, **kw)
    if _only_learned_buffers(model):
        keep = set()  # nothing in the module is a float constant: skip the second export
    else:
        keep = learned_free_constants(model, args, proto, **kw)
    stripped = store.strip(proto, keep=keep)
    stripped.producer_name = "fusion models/export"
    path = os.path.join(DATA, f"{name}{'-small' if small else ''}.onnx.gz")
    store.save(stripped, path)  # uncalibrated first: `python -m fusion.zoo.calibrate` can redo the next step
    from fusion.zoo.inputs import make_inputs
    calibrate.calibrate(stripped, name, make_inputs(name, stripped, extra or {}, seed=0), log=print)
    size = store.save(stripped, path)
    info = {
        "file": os.path.basename(path), "bytes": size, "opset": _opset(proto),
        "inputs": [_vi(v) for v in proto.graph.input if v.name not in {t.name for t in proto.graph.initializer}],
        "outputs": [_vi(v) for v in proto.graph.output],
        "verbatim_float_constants": sorted(n for n in keep if _is_float_init(proto, n)),
        "export_seconds": round(time.time() - t0, 1),
    }
    info.update(extra or {})
    print(f"{name}{' (small)' if small else ''}: {len(proto.graph.node)} nodes, {size / 1e6:.2f} MB stored, "
          f"{info['export_seconds']} s", flush=True)
    return info


def _is_float_init(proto, name):
    for t in proto.graph.initializer:
        if t.name == name:
            return t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    return False


def _opset(proto):
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _vi(v):
    t = v.type.tensor_type
    return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]}


def record(name: str, exporter: str, full: dict | None, small: dict | None, notes: str = "") -> None:
    try:
        with open(MANIFEST) as f:
            man = json.load(f)
    except FileNotFoundError:
        man = {}
    import transformers
    import torchvision
    e = man.setdefault(name, {})
    e["exporter"] = exporter
    e["versions"] = {"torch": torch.__version__.split("+")[0], "torchvision": torchvision.__version__.split("+")[0],
                     "transformers": transformers.__version__, "onnx": onnx.__version__}
    if notes:
        e["notes"] = notes
    if full is not None:
        e["full"] = {**e.get("full", {}), **full}
    if small is not None:
        e["small"] = {**e.get("small", {}), **small}
    man = {k: man[k] for k in sorted(man)}
    with open(MANIFEST, "w") as f:
        json.dump(man, f, indent=1, sort_keys=False)
        f.write("\n")
