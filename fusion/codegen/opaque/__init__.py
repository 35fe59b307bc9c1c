"""Hand-written C kernels for the opaque ops (TopK, NonMaxSuppression,
RoiAlign, NonZero, ...), compiled into every model library.

The code generator asks `supported(node)`, allocates each output at
`max_output_shapes(node)`, fills one `fz_tensor` per input and output, and
pastes the two strings `call(node, ins, outs)` returns. docs/opaque.md
describes the C side.
"""
from __future__ import annotations

import os
import re
import zlib

import numpy as np

from fusion.codegen.opaque.kernels import HEADER, HERE, KERNELS, implemented, kernel_for, struct_fields
from fusion.errors import ShapeError

__all__ = ["supported", "c_sources", "header", "call", "max_output_shapes", "attr_fields", "KERNELS"]


def supported(node) -> bool:
    """True when a kernel exists for the op and its input dtype."""
    k = KERNELS.get(node.op)
    if k is None or node.domain not in ("", "ai.onnx") or k.c_name not in implemented():
        return False
    x = node.inputs[0] if node.inputs else None
    if k.dtypes is not None and (x is None or x.dtype is None or x.dtype.name not in k.dtypes):
        return False
    if k.accepts is not None and not k.accepts(node):
        return False
    return x is None or x.dtype is None or x.dtype.kind in "biuf"


def c_sources() -> list[str]:
    return sorted(os.path.join(HERE, f) for f in os.listdir(HERE) if f.endswith(".c"))


def header() -> str:
    return HEADER


def _opset(node) -> int:
    g = getattr(node, "graph", None)
    return int(getattr(g, "opset", {}).get("", 21)) if g is not None else 21


def attr_fields(node) -> dict:
    """The node's attributes as the kernel's struct fields."""
    return kernel_for(node.op).fields(dict(node.attrs), _opset(node))


def _c_literal(ctype: str, v) -> str:
    if "[" in ctype:  # fixed-size array field
        base = ctype.split("[")[0]
        return "{" + ", ".join(_c_literal(base, x) for x in v) + "}"
    if ctype in ("float", "double"):
        f = "f" if ctype == "float" else ""
        x = float(np.float32(v)) if f else float(v)
        if np.isnan(x):
            return f"__builtin_nan{f}(\"\")"   # gcc and clang, the compilers fusion drives
        if np.isinf(x):
            return f"{'-' if x < 0 else ''}__builtin_inf{f}()"
        return repr(x) + f
    return f"{int(v)}" + ("LL" if ctype == "int64_t" else "")


def _node_id(node) -> str:
    name = node.name or node.op
    g = getattr(node, "graph", None)
    pos = next((i for i, n in enumerate(g.nodes) if n is node), -1) if g is not None else -1
    tag = zlib.crc32(f"{name}\0{pos}".encode()) & 0xFFFFFFFF
    return f"{re.sub(r'[^0-9A-Za-z_]', '_', name)[:40]}_{tag:08x}"


def call(node, in_names: list, out_names: list, on_error: str = "return -1;",
         layout: str = "compact") -> tuple[str, str]:
    """(file-scope C, statement) running the node's kernel.

    in_names / out_names are C lvalues of type fz_tensor (None for an omitted
    optional input or an unused output: the kernel skips it); each output's
    shape holds its capacity. The statement writes the actual output shapes
    back into out_names and runs `on_error` when the kernel fails (its
    message: fz_opaque_last_error()).

    layout="compact": outputs are row-major in their actual shape.
    layout="capacity": outputs keep the strides of their capacity shape (a
    NonZero [2, nnz] output allocated as [2, 24] has row 1 at element 24), for
    callers that compile later loops with static strides."""
    if layout not in ("compact", "capacity"):
        raise ValueError(f"layout must be 'compact' or 'capacity', not {layout!r}")
    k = kernel_for(node.op)
    fields = attr_fields(node)
    decl = struct_fields()[k.attrs_struct]
    if set(fields) != {n for _, n in decl}:
        raise AssertionError(f"{k.op}: fields {sorted(fields)} do not match fz_opaque.h")
    ident = f"fz_attrs_{_node_id(node)}"
    init = ", ".join(f".{n} = {_c_literal(t, fields[n])}" for t, n in decl)
    file_scope = f"static const struct fz_attrs_{k.attrs_struct} {ident} = {{{init}}};"
    ins = list(in_names)
    while ins and ins[-1] is None:
        ins.pop()
    n_out = max(len(out_names), k.n_out)
    outs = list(out_names) + [None] * (n_out - len(out_names))
    absent = "{NULL, 0, 0, {0}}"
    lines = ["{",
             f"    fz_tensor fz_in[{max(len(ins), 1)}] = {{{', '.join(n or absent for n in ins) or absent}}};",
             f"    fz_tensor fz_out[{n_out}] = {{{', '.join(n or absent for n in outs)}}};",
             f"    if (fz_op_{k.c_name}(fz_in, {len(ins)}, fz_out, {n_out}, &{ident})) {{ {on_error} }}"]
    if layout == "capacity":  # the caller's lvalue still holds the capacity here
        lines += [f"    if (fz_opaque_pad_to_capacity(&fz_out[{i}], ({n}).shape)) {{ {on_error} }}"
                  for i, n in enumerate(outs) if n is not None]
    lines += [f"    {n} = fz_out[{i}];" for i, n in enumerate(outs) if n is not None]
    lines.append("}")
    return file_scope, "\n".join(lines)


def _shapes_values(node):
    shapes, values = [], []
    for v in node.inputs:
        if v is None:
            shapes.append(None)
            values.append(None)
            continue
        if v.shape is None or not v.is_static:
            raise ShapeError(f"{node.label()}: input '{v.name}' has open dimensions "
                             f"{list(v.shape) if v.shape is not None else '?'}; bind them with --shape so the "
                             f"output of {node.op} can be allocated")
        shapes.append(tuple(int(d) for d in v.shape))
        values.append(v.value)
    return shapes, values


def max_output_shapes(node) -> list[tuple[int, ...]]:
    """A capacity for each of the kernel's outputs (all of them, even ones the
    node does not use): the static shape, or an upper bound."""
    k = kernel_for(node.op)
    shapes, values = _shapes_values(node)
    dtypes = [None if v is None else v.dtype for v in node.inputs]
    try:
        caps = k.capacity(shapes, values, {**attr_fields(node), "_dtypes": dtypes})
    except ShapeError as e:  # name the node: the user has to find it in the model
        raise ShapeError(f"{node.label()}: {e}") from None
    return [tuple(int(d) for d in s) for s in caps]
