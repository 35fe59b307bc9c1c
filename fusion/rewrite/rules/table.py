"""Rules derived from the op table's algebra (identity, absorbing element,
idempotence, involution): one rule per op that declares the property, so a
new op with `Algebra(...)` gets its rules without touching this file."""
from __future__ import annotations

from fusion.ops import all_ops
from fusion.rewrite.rule import Rule


_BOOL = {o for o in ("And", "Or", "Xor", "Not")}


def _binary(od) -> bool:
    return od.category == "elementwise" and (len(od.inputs) == 2 or od.variadic_input)


def _unary(od) -> bool:
    return od.category == "elementwise" and len(od.inputs) == 1 and not od.variadic_input


def _lit(x):
    if isinstance(x, bool):
        return 1.0 if x else 0.0
    return float(x)


def rules():
    out = []
    for od in all_ops():
        alg = od.algebra
        kinds = "b" if od.name in _BOOL else "iu" if od.name.startswith("Bitwise") else "f"
        if _binary(od) and alg.identity is not None and od.name not in ("Sum",):
            e = _lit(alg.identity)
            out.append(Rule(f"{od.name.lower()}-identity", "identity", (od.name, "A", e), "A", dtypes=kinds,
                            note="x+0: the sign of a zero may differ" if od.name in ("Add", "Sub") else "",
                            doc=f"x {od.name} {e:g} = x (op table: identity element)"))
        if _binary(od) and alg.absorbing is not None:
            z = _lit(alg.absorbing)
            exact = kinds != "f"
            out.append(_absorbing(od, z, kinds, exact))
        if _binary(od) and alg.idempotent:
            out.append(Rule(f"{od.name.lower()}-idempotent", "identity", (od.name, "A", "A"), "A", dtypes=kinds,
                            doc=f"{od.name}(x, x) = x (op table: idempotent)", **_bits(kinds)))
        if _unary(od) and alg.idempotent and od.name != "Identity":
            out.append(Rule(f"{od.name.lower()}-idempotent", "identity", (od.name, (od.name, "A")), (od.name, "A"),
                            dtypes=kinds, proof="numeric" if od.name == "Round" else "sympy",
                            note="sympy has no round-half-even" if od.name == "Round" else "",
                            doc=f"{od.name}({od.name}(x)) = {od.name}(x) (op table: idempotent)"))
        if _unary(od) and alg.involution:
            exact = od.name != "Reciprocal"
            out.append(Rule(f"{od.name.lower()}-involution", "identity", (od.name, (od.name, "A")), "A", dtypes=kinds,
                            exact=exact, **_bits(kinds, "" if exact else "1/(1/x) rounds twice; 0 and Inf swap"),
                            example={"range": {"A": (0.5, 2.0)}} if not exact else {},
                            doc=f"{od.name}({od.name}(x)) = x (op table: involution)"))
    return out


def _bits(kinds, note=""):
    # The sympy namespace has no bitwise operations: those rules are checked numerically.
    if kinds == "iu":
        return {"proof": "numeric", "note": "bitwise: sympy has no bit operations (checked numerically)"}
    return {"note": note} if note else {}


def _all_eq(a, z):
    import numpy as np
    return a is not None and a.size > 0 and bool(np.all(a.astype(np.float64) == z))


def _absorbing(od, z, kinds, exact):
    # The absorbing constant itself is the result when it already has the output's shape.
    def rhs(b, m):
        for v in m.root.inputs:
            if v is not m["A"] and v is not None and v.value is not None and _all_eq(v.value, z):
                return v
        return None
    return Rule(f"{od.name.lower()}-absorbing", "identity", (od.name, "A", z), rhs, exact=exact, dtypes=kinds,
                note="" if exact else "NaN/Inf * 0 is NaN, not 0", example={"lit_shape": (2, 3)},
                doc=f"x {od.name} {z:g} = {z:g} when the constant has the output's shape (op table: absorbing)")
