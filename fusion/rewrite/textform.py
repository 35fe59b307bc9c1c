"""Graphs as nested expressions, readable at a glance (golden tests, docs):

    y = Mul(x, Add(b, c))

Inputs print by name, scalar constants by value, small constants as lists,
larger ones as `const[shape]`; attributes only when they differ from the op
table's defaults. A value read twice prints twice: compare op histograms too
when sharing matters."""
from __future__ import annotations

import numpy as np


def _const(v) -> str:
    c = v.const
    if c.size == 1:
        x = c.reshape(-1)[0]
        return f"{float(x):.6g}" if c.dtype.kind == "f" else str(x.item() if hasattr(x, "item") else x)
    if c.size <= 8:
        return "[" + ",".join(f"{float(x):.6g}" if c.dtype.kind == "f" else str(x) for x in c.reshape(-1)) + "]"
    return "const[" + "x".join(str(d) for d in c.shape) + "]"


def _attrs(n) -> str:
    od = n.opdef
    out = []
    for k, a in n.attrs.items():
        d = od.attrs.get(k) if od is not None else None
        if d is not None:
            try:
                if a == d.default or (isinstance(a, list) and list(d.default or []) == a):
                    continue
                if isinstance(a, float) and isinstance(d.default, float) and np.isclose(a, d.default, rtol=1e-6):
                    continue   # a float32 attribute equal to the default
            except Exception:
                pass
        if isinstance(a, float):
            a = f"{a:.6g}"
        out.append(f"{k}={a}")
    return ", ".join(out)


def value_text(v) -> str:
    if v is None:
        return "_"
    if v.const is not None:
        return _const(v)
    n = v.producer
    if n is None:
        return v.name
    args = [value_text(x) for x in n.inputs]
    at = _attrs(n)
    s = f"{n.op}({', '.join(args)}{'; ' + at if at else ''})"
    if len(n.outputs) > 1:
        s += f"[{n.outputs.index(v)}]"
    return s


def graph_text(g) -> str:
    return "\n".join(f"{v.name} = {value_text(v)}" for v in g.outputs)
