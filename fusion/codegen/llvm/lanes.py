"""Loop-nest analysis and transformation for SIMD-lane printing (target independent).

Which outer variable of a Function can become vector lanes (every load in
its reduction loops contiguous or invariant in it), which temps then vary
per lane, and unroll-and-jam of another outer variable so its copies share
the vector loads. Works on fusion/codegen/loops.py statements only.
"""
from __future__ import annotations

import dataclasses

from fusion.ir import expr as E
from fusion.codegen.loops import Decl, Function, Let, Loop, Store, Temp, Update


def unroll_jam(fn: Function, lane_idx: int, r: int) -> Function | None:
    """Unroll the last outer var (other than the lane var) whose extent r
    divides by r and jam the copies: loops of the copies are merged, so the
    copies' reductions share one loop (and its loads of operands that do not
    depend on the unrolled var). None when no var qualifies."""
    cand = [k for k in range(len(fn.outer)) if k != lane_idx and isinstance(fn.outer_extents[k], int)
            and fn.outer_extents[k] >= r and fn.outer_extents[k] % r == 0]
    if not cand:
        return None
    # The var that the most vector loads do not depend on: its copies share them.
    j = fn.outer[lane_idx]
    loads = [x for st in walk_stmts(fn.body) if isinstance(st, Update)
             for x in E.walk(st.value) if isinstance(x, E.Load) and j in E.free_vars(x)]
    k = max(reversed(cand), key=lambda c: sum(fn.outer[c] not in E.free_vars(x) for x in loads))
    i = fn.outer[k]
    iu = E.Var(i.name + "u", fn.outer_extents[k] // r)
    temps = {}
    for st in walk_stmts(fn.body):
        for t in (getattr(st, "temp", None), getattr(st, "pos_temp", None)):
            if t is not None:
                temps[t.name] = t

    def copy(stmts, m):
        out = []
        for st in stmts:
            sub = (lambda e: E.substitute(e, m) if e is not None else None)
            if isinstance(st, Loop):
                out.append(Loop(st.var, st.extent, copy(st.body, m)))
            elif isinstance(st, Let):
                out.append(Let(m[st.temp], sub(st.value)))
            elif isinstance(st, Decl):
                out.append(Decl(m[st.temp], sub(st.init)))
            elif isinstance(st, Update):
                out.append(Update(m[st.temp], st.op, sub(st.value),
                                  m[st.pos_temp] if st.pos_temp is not None else None, sub(st.pos)))
            elif isinstance(st, Store):
                out.append(Store(st.buffer, sub(st.index), sub(st.value), st.dtype))
            else:
                return None
        return out

    copies = []
    for c in range(r):
        m = {i: E.binary("add", E.binary("mul", iu, r), c)}
        m.update({t: Temp(f"{t.name}_{c}", t.dtype) for t in temps.values()})
        body = copy(fn.body, m)
        if body is None:
            return None
        copies.append(body)

    def jam(lists):
        out = []
        for group in zip(*lists):
            if all(isinstance(g, Loop) for g in group) and len({(g.var, str(g.extent)) for g in group}) == 1:
                out.append(Loop(group[0].var, group[0].extent, jam([g.body for g in group])))
            else:
                out.extend(group)
        return out

    outer = list(fn.outer)
    exts = list(fn.outer_extents)
    outer[k], exts[k] = iu, fn.outer_extents[k] // r
    return dataclasses.replace(fn, outer=outer, outer_extents=exts, body=jam(copies),
                               schedule=fn.schedule + f", {i.name} unrolled x{r} and jammed")


def unclamp(i: E.Expr):
    """min(max(e, 0), d - 1) -> (e, d); anything else -> (i, None)."""
    if (isinstance(i, E.Bin) and i.op == "min" and isinstance(i.b, E.Const) and isinstance(i.a, E.Bin)
            and i.a.op == "max" and isinstance(i.a.b, E.Const) and i.a.b.value == 0):
        return i.a.a, int(i.b.value) + 1
    return i, None


def load_stride(x: E.Load, shape, j: E.Var, shifted: E.Var):
    """(stride of the load in j, clamps): clamps lists (inner, size) of the
    clamped index components when the stride holds only without them."""
    d = stride(E.linearize(list(x.index), shape), j, shifted)
    if d in (0, 1):
        return d, []
    parts = [unclamp(i) for i in x.index]
    clamps = [(inner, n) for inner, n in parts if n is not None]
    if not clamps:
        return d, []
    d2 = stride(E.linearize([inner for inner, _ in parts], shape), j, shifted)
    return (1, clamps) if d2 == 1 else (d, [])


def walk_stmts(stmts):
    for s in stmts:
        yield s
        if isinstance(s, Loop):
            yield from walk_stmts(s.body)


def stride(flat: E.Expr, j: E.Var, shifted: E.Var):
    """flat(j+1) - flat(j) when it is a constant, else None."""
    if j not in E.free_vars(flat):
        return 0
    a = E.substitute(flat, {j: shifted})
    b = E.substitute(flat, {j: E.binary("add", shifted, 1)})
    d = E.binary("sub", b, a)
    return d.value if isinstance(d, E.Const) else None


def varying_temps(fn: Function, j: E.Var) -> set[str]:
    """Temps whose value depends on the lane variable (directly or through other temps)."""
    out: set[str] = set()

    def dep(e) -> bool:
        return any((isinstance(x, E.Var) and x == j) or (isinstance(x, Temp) and x.name in out)
                   for x in E.walk(e))
    changed = True
    while changed:
        changed = False
        for s in walk_stmts(fn.body):
            names = []
            if isinstance(s, Let) and dep(s.value):
                names = [s.temp.name]
            elif isinstance(s, Update) and (dep(s.value) or (s.pos is not None and dep(s.pos))):
                names = [s.temp.name] + ([s.pos_temp.name] if s.pos_temp is not None else [])
            for n in names:
                if n not in out:
                    out.add(n)
                    changed = True
    return out
