"""Opaque ops (TopK, NonMaxSuppression, RoiAlign, NonZero...): calls into the
hand-written kernels of fusion/codegen/opaque, compiled into the library.

An opaque block runs inside model_run (it can fail: its error becomes
model_last_error). Its outputs are allocated at the capacity the kernel
declares; a dimension the kernel decides at run time (NMS's number of
selected boxes) becomes a run-time variable `fz_dyn_*` that later blocks use
as a loop extent (see emit.py: data-dependent shapes).
"""
from __future__ import annotations

import os

import numpy as np
import sympy

from fusion.errors import UnsupportedOpError
from fusion.codegen.emit import onnx_elem_type
from fusion.codegen.loops import Function


def opaque_module():
    try:
        from fusion.codegen import opaque
    except ImportError:
        return None
    return opaque


def capacity_output_shapes(mod, node, shape_of) -> list:
    """The opaque kernel's output capacities, with inputs that have run-time
    dims described to its capacity rule at their bound (shape_of)."""
    dyn_ins = [v for v in node.inputs if v is not None and v.shape is not None and not v.is_static]
    saved = [v.shape for v in dyn_ins]
    try:
        for v in dyn_ins:
            v.shape = shape_of(v)
        return mod.max_output_shapes(node)
    finally:
        for v, sh in zip(dyn_ins, saved):
            v.shape = sh


def lower_opaque(em, block, outs):
    node = block.nodes[0]
    mod = opaque_module()
    if mod is None or not mod.supported(node):
        raise UnsupportedOpError(f"{node.label()}: op '{node.op}' has no loop form and no runtime kernel in this "
                                 f"build of fusion; it cannot be compiled yet")
    caps = capacity_output_shapes(mod, node, em.shape_of)
    # Bounds for the run-time dims this node decides.
    for k, v in enumerate(node.outputs):
        if v.shape is None or k >= len(caps):
            continue
        for d, cap in zip(v.shape, caps[k]):
            if not isinstance(d, int) and isinstance(d, sympy.Symbol):
                em.define_dim(d, int(cap))
    loads = {}
    in_names = []
    lines = []
    frees = []
    for i, v in enumerate(node.inputs):
        if v is None:
            in_names.append(None)
            continue
        name = em.cname(v)
        loads[name] = v
        t = f"fz_i{i}"
        dims = em.runtime_dims(v)
        lines.append(f"fz_tensor {t} = {{(void *)a.{name}, {onnx_elem_type(v.dtype.name)}, {len(dims)}, "
                     f"{{{', '.join(dims) or '0'}}}}};")
        if _inner_dynamic(v):
            # the kernel reads compact data: hand it a compact copy of the padded tensor
            cap = em.shape_of(v)
            es = v.dtype.itemsize
            lines.append(f"static const int64_t fz_cap_i{i}[] = {{{', '.join(map(str, cap))}}};")
            lines.append(f"{t}.data = malloc({int(np.prod(cap)) * es} + 1);")
            lines.append(f"fz_compact(a.{name}, {t}.data, {es}, {len(cap)}, {t}.shape, fz_cap_i{i});")
            frees.append(f"free({t}.data);")
        in_names.append(t)
    out_names = []
    for k, v in enumerate(node.outputs):
        if k >= len(caps):
            break
        if v not in outs:
            out_names.append(None)
            continue
        t = f"fz_o{k}"
        cap = caps[k]
        lines.append(f"fz_tensor {t} = {{(void *)a.{em.cname(v)}, {onnx_elem_type(v.dtype.name)}, {len(cap)}, "
                     f"{{{', '.join(str(int(c)) for c in cap) or '0'}}}}};")
        out_names.append(t)
    file_scope, stmt = mod.call(node, in_names, out_names,
                                on_error="fz_set_error(fz_opaque_last_error()); return -1;")
    if frees:   # the copies are freed on the error path too
        stmt = stmt.replace("return -1;", " ".join(frees) + " return -1;")
    lines.append(stmt)
    lines.extend(frees)
    for k, v in enumerate(node.outputs):
        if k < len(out_names) and out_names[k] is not None:
            for d, dim in enumerate(v.shape):
                if isinstance(dim, sympy.Symbol):
                    lines.append(f"{em.dim_var(dim)} = fz_o{k}.shape[{d}];")
            if _inner_dynamic(v):
                # the kernel wrote compact data: move it to the padded layout everyone else reads
                cap = caps[k]
                lines.append(f"{{ static const int64_t fz_cap[] = {{{', '.join(str(int(c)) for c in cap)}}}; "
                             f"fz_repad(fz_o{k}.data, {v.dtype.itemsize}, {len(cap)}, fz_o{k}.shape, fz_cap); }}")
    fn = Function(block.name, em.buffers_for(loads, outs), [], [], [], functions=file_scope, raw_body="",
                  schedule=f"runtime kernel fz_op_{node.op}")
    fn.run_inline = "\n".join(lines)
    em.use_opaque(mod)
    return fn


def _inner_dynamic(v) -> bool:
    """A run-time dim after the first: padded and compact layouts differ."""
    return v.shape is not None and any(not isinstance(d, (int, np.integer)) for d in list(v.shape)[1:])


def sources(mod) -> tuple[list[str], list[str]]:
    return list(mod.c_sources()), [os.path.dirname(mod.header())]
