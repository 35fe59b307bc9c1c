"""Fast anchor kernels: ask fusion/codegen/kernels (api.py there) for
MatMul/Gemm/Conv/pooling anchors; None means "emit the plain loop nest".

The core's side of the contract: each anchor input becomes an Operand whose
`c_expr` is the composed prologue (producers inlined, loads through `A->`),
and the epilogue callback prints, for one anchor output element, every block
output that reads the anchor at exactly that element (elementwise consumers,
bias, residual adds, reshapes). A block whose outputs read the anchor
elsewhere (a transposed epilogue) keeps the plain loop nest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion.ir import expr as E
from fusion.codegen import lower as L
from fusion.codegen.cprint import ExprPrinter, FunctionPrinter
from fusion.codegen.loops import Buffer, Function, Loop, Store, Temp

POOLS = {"MaxPool": "max", "AveragePool": "avg", "GlobalMaxPool": "max", "GlobalAveragePool": "avg"}


def kernels_module():
    try:
        from fusion.codegen import kernels
    except ImportError:
        return None
    return kernels


class _Refuse(Exception):
    pass


class AnchorContext:
    def __init__(self, em, block, outs, partial_ok: bool = False):
        self.em, self.block, self.outs = em, block, outs
        # partial_ok: the caller appends self.rest (C loop nests) after the kernel; other users of
        # the epilogue (the OpenCL tiled GEMM) keep refusing outputs the anchor fills only partly
        self.partial_ok = partial_ok
        self.anchor = block.anchor
        self.comp = L.Composer(block.nodes, em.cname, em.literal, em.shape_of)
        self.shapes: dict[str, tuple] = {}
        # outputs the anchor fills only part of (a Concat of the anchor with other values): the
        # kernel's epilogue writes the anchor's box, a loop nest after it the rest
        self.rest: list[tuple] = []
        # scratch: when an output reads the anchor at other elements than its own (SSD's box decode
        # reads a box's four values), the kernel stores the anchor in this buffer (C name) and loop
        # nests compute every output from it; otherwise the block lost the kernel and recomputed
        # the convolution per read in its loop nest (half of MobileNetV1-SSD's time)
        self.scratch: str | None = None

    def _printer(self, names: dict[str, str], temps: dict[str, str] | None = None) -> ExprPrinter:
        shapes = self.shapes
        local = {self.em.cname(self.anchor.outputs[0]): self.scratch} if self.scratch else {}

        class P(ExprPrinter):
            def p(self, e):
                if temps and isinstance(e, Temp) and e.name in temps:
                    return temps[e.name]
                return super().p(e)
        return P(shapes, load=lambda n, i: f"{local[n]}[{i}]" if n in local else f"A->{n}[{i}]",
                 var=lambda n: names.get(n, n))

    def operand(self, v, shape, index_of=None):
        """Operand for anchor input `v`, indexed by the kernel with `shape`
        (index_of maps the kernel's index vars to the value's own index)."""
        from fusion.codegen.kernels import Operand
        vars_ = [E.Var(f"__k{d}", int(n)) for d, n in enumerate(shape)]
        idx = index_of(vars_) if index_of else vars_
        e = self.comp.value(v, idx)
        if any(isinstance(x, E.Reduce) for x in E.walk(e)):
            raise _Refuse()
        for name, val in self.comp.loads.items():
            self.shapes[name] = self.em.shape_of(val)
        const = None
        if v.producer is None or id(v.producer) not in self.comp.inside:
            a = self.em.constval(v)
            if a is not None and index_of is None:
                const = np.asarray(a, np.float32).reshape(shape)

        def c_expr(strs, e=e, vars_=vars_):
            pr = self._printer({x.name: f"({s})" for x, s in zip(vars_, strs)})
            return pr.p(e)
        return Operand(tuple(int(d) for d in shape), c_expr, const, "float32")

    def epilogue(self):
        """The epilogue callback, or _Refuse when an output reads the anchor elsewhere."""
        a_out = self.anchor.outputs[0]
        s_a = tuple(int(d) for d in a_out.shape)
        avars = [E.Var(f"__e{d}", n) for d, n in enumerate(s_a)]
        flat = E.linearize(avars, s_a)
        self.comp.stop.add(id(a_out))
        acc = Temp("__acc", "float32")
        aname = self.em.cname(a_out)

        def norm(ix):   # a dim of extent 1 is index 0, however it is spelled
            return [E.Const(0) if isinstance(x, E.Var) and x.extent == 1 else x for x in ix]
        if self.scratch:
            return self._scratch_epilogue(avars, s_a, aname)
        want = norm(avars)
        roots = []
        plain: list[bool] = []      # stored at the anchor's own element
        partial: list[tuple] = []
        fwd = self.forward_indices(avars)
        stores = []
        for v in self.outs:
            s = tuple(int(d) for d in v.shape)
            guard = E.Const(True)
            if id(v) in fwd:
                idx, guard = fwd[id(v)]
                # Either every element of v comes from some anchor element (the map is one-to-one),
                # or the anchor fills a box of v that spans v in all dims but one (a Concat output
                # also holds other inputs' pieces): then the rest is computed after the kernel.
                cov = _coverage(idx, guard, avars, s)
                if cov is None or (cov != "full" and not self.partial_ok):
                    raise _Refuse()
                if cov != "full":
                    partial.append((v,) + cov)
            elif s == s_a:
                idx = list(avars)
            elif int(np.prod(s)) == int(np.prod(s_a)):
                idx = E.delinearize(flat, s)
            else:
                raise _Refuse()
            stores.append((E.linearize(idx, s), guard))
            plain.append(s == s_a and isinstance(guard, E.Const) and bool(guard.value)
                         and norm(list(idx)) == want)
            e = self.comp.value(v, idx)
            bad = []

            def swap(ld, index, bad=bad, guard=guard):
                if ld.slot == aname:
                    if norm(index) == want or _same_index(index, avars, guard):
                        return acc
                    bad.append(ld)
                return E.Load(ld.slot, index, ld.dtype)
            e = E.map_loads(e, swap)
            if bad or any(isinstance(x, E.Reduce) for x in E.walk(e)):
                raise _Refuse()
            roots.append((v, e))
        self.rest = [self._rest(v, d, lo, hi, aname, k) for k, (v, d, lo, hi) in enumerate(partial)]
        self.comp.loads.pop(aname, None)
        for name, val in self.comp.loads.items():
            self.shapes[name] = self.em.shape_of(val)
        sch = L.Scheduler(prefix="fz_t")
        sch.count_uses([e for _, e in roots])
        scope = L.Scope(avars)
        for (v, e), (at, guard) in zip(roots, stores):
            val = sch.emit(e, [scope])
            scope.stmts.append(Store("A->" + self.em.cname(v), at, val, L.dtype_name(v), cond=guard))
        stmts = scope.stmts

        def epilogue(index: list[str], acc_c: str) -> str:
            names = {x.name: f"({s})" for x, s in zip(avars, index)}
            fp = FunctionPrinter(Function("epi", [], [], [], []))
            fp.ep = self._printer(names, {"__acc": f"({acc_c})"})
            fp.lines = []
            for st in stmts:
                fp.emit(st, "")
            return "{ " + " ".join(fp.lines) + " }"
        # The flat call passes the offset j as the innermost spatial index, whose row-major stride
        # must be 1: an innermost dim of extent 1 is printed as index 0 (norm above), so j would
        # vanish from every store and load (a [.., H, 1] conv output wrote all of a row's values
        # to its first element).
        epilogue.flat_spatial = (len(avars) >= 4 and s_a[-1] > 1 and all(plain) and not partial
                                 and self._spatially_flat([e for _, e in roots], avars, want, s_a))
        return epilogue

    def _scratch_epilogue(self, avars, s_a, aname):
        """The kernel stores the anchor into the scratch buffer; a loop nest per output (self.rest)
        computes it from there afterwards, threaded over its leading dims."""
        self.rest = []
        self.shapes[aname] = s_a
        for k, v in enumerate(self.outs):
            s = tuple(int(x) for x in v.shape)
            d = 0
            while d < len(s) - 1 and int(np.prod(s[:d + 1])) < 64:
                d += 1
            self.rest.append(self._rest(v, d, 0, 0, aname, k))
        strides = [int(np.prod(s_a[d + 1:])) for d in range(len(s_a))]
        scratch = self.scratch

        def epilogue(index: list[str], acc_c: str) -> str:
            at = " + ".join(f"({i}) * {st}" for i, st in zip(index, strides))
            return f"{{ {scratch}[{at}] = ({acc_c}); }}"
        # the spatial index (0, ..., 0, j) lands at the same offset as the position's own index
        epilogue.flat_spatial = len(s_a) >= 4 and s_a[-1] > 1
        return epilogue

    def _spatially_flat(self, exprs, avars, want, s_a) -> bool:
        """May a kernel call the epilogue with the spatial index (0, ..., 0, j), j the position's
        row-major offset in the spatial dims? True when the spatial variables reach the epilogue
        only through reads of same-shaped values at the anchor's own element (whose flat offset
        is the same either way): an elementwise chain with per-channel or same-shaped operands."""
        sp = set(avars[2:])
        ok = [True]

        def sw(ld, index):
            fv = set()
            for x in index:
                fv |= E.free_vars(x)
            if fv & sp:
                val = self.comp.loads.get(ld.slot)
                shape = tuple(int(d) for d in self.em.shape_of(val)) if val is not None else None
                if shape != s_a or [E.Const(0) if isinstance(x, E.Var) and x.extent == 1 else x
                                    for x in index] != want:
                    ok[0] = False
            return E.const(0.0, ld.dtype)
        for e in exprs:
            r = E.map_loads(e, sw)
            if not ok[0] or E.free_vars(r) & sp:
                return False
        return True

    def _rest(self, v, d: int, lo: int, hi: int, aname: str, k: int) -> tuple[str, str, int]:
        """(C functions, C body, elements) computing v outside the anchor's box [lo, hi) of dim d:
        a loop nest threaded over the dims up to d, the rest of v's dims as inner loops (the
        innermost vectorizable). There v does not read the anchor (the Concat selects another
        input), so its loads are replaced by a dead 0."""
        s = tuple(int(x) for x in v.shape)
        rv = [E.Var(f"fz_r{q}", n) for q, n in enumerate(s)]
        e = self.comp.value(v, rv)
        # The anchor exists only inside the kernel (its epilogue): the rest may not read it. A Concat
        # of the anchor with a function of the anchor (MaxPool -> Pow(v, v) -> Concat(pow, v)) does
        # (the rest task once wrote pow(0, 0) there), and then the block takes the scratch form
        # (fast_block), where the rest reads the anchor from the scratch buffer.
        if not self.scratch:
            outside = np.array([q for q in range(s[d]) if not lo <= q < hi], np.int64)
            if _reads_slot(e, aname, rv[d], outside):
                raise _Refuse()

            def swap(ld, index):
                return E.const(0.0, ld.dtype) if ld.slot == aname else E.Load(ld.slot, index, ld.dtype)
            e = E.map_loads(e, swap)
        if any(isinstance(x, E.Reduce) for x in E.walk(e)):
            raise _Refuse()
        self.comp.loads.pop(aname, None)
        for name, val in self.comp.loads.items():
            self.shapes[name] = self.em.shape_of(val)
        inner = rv[d + 1:]
        sch = L.Scheduler(prefix=f"fz_rt{k}_")
        sch.count_uses([e])
        stack = [L.Scope(rv[:d + 1])] + [L.Scope([x]) for x in inner]
        val = sch.emit(e, stack)
        stack[-1].stmts.append(Store("A->" + self.em.cname(v), E.linearize(rv, s), val, L.dtype_name(v)))
        loop = None
        for j in range(len(stack) - 1, 0, -1):
            loop = Loop(inner[j - 1], inner[j - 1].extent, stack[j].stmts + ([loop] if loop is not None else []))
        stmts = stack[0].stmts + ([loop] if loop is not None else [])
        fp = FunctionPrinter(Function("rest", [], [], [], []))
        fp.ep = self._printer({})
        fp.ep.fast = True   # C including fz_runtime.h: its vectorizable math functions
        fp.lines = []
        for st in stmts:
            fp.emit(st, "        ")
        name = self.block.name
        R = lo + s[d] - hi
        lead = int(np.prod(s[:d])) if d else 1
        dec = "".join(f"        int64_t fz_r{q} = fz_l % {s[q]}; fz_l /= {s[q]};\n" for q in reversed(range(d)))
        fns = f"""struct {name}_rtask{k} {{ const struct {name}_args *A; }};
static void {name}_rest{k}(void *fz_arg, int64_t fz_it0, int64_t fz_it1) {{
    const struct {name}_args *A = ((const struct {name}_rtask{k} *)fz_arg)->A;
    for (int64_t fz_it = fz_it0; fz_it < fz_it1; fz_it++) {{
        int64_t fz_q = fz_it % {R}, fz_l = fz_it / {R};
        int64_t fz_r{d} = fz_q < {lo} ? fz_q : fz_q + {hi - lo};
{dec}        (void)fz_l;
{chr(10).join(fp.lines)}
    }}
}}
"""
        body = (f"{{ struct {name}_rtask{k} fz_rt = {{ A }}; "
                f"fz_parallel_for({lead * R}, {name}_rest{k}, &fz_rt); }}\n")
        return fns, body, int(np.prod(s)) // s[d] * R

    def forward_indices(self, avars) -> dict:
        """Where each epilogue value holds the anchor's element `avars`, and
        under which condition (a Split part or a Slice holds only some of them),
        following the block's nodes forward. Reorganize ops keep the row-major
        position; every other op is inverted from its own index function: each
        component of its read index must be one output variable plus a
        constant (elementwise ops, Transpose, Split, Slice, Concat pieces). The
        caller verifies the result by composing backwards, so a wrong guess
        only costs the fast kernel."""
        from fusion.ops.table import Mapping
        from fusion.plan.mapping import node_class
        pos = {id(self.anchor.outputs[0]): (list(avars), E.Const(True))}
        roles = self.block.roles()
        for n in self.block.nodes:
            if n is self.anchor or roles.get(id(n)) != "epilogue":
                continue
            srcs = [(i, v) for i, v in enumerate(n.inputs) if v is not None and id(v) in pos]
            if len(srcs) != 1:
                continue
            i_src, src = srcs[0]
            idx_in, guard = pos[id(src)]
            try:
                cls = node_class(n)[0]
            except Exception:
                continue
            if cls == Mapping.REORG and len(n.outputs) == 1:
                out = n.outputs[0]
                pos[id(out)] = (E.delinearize(E.linearize(idx_in, src.shape), out.shape), guard)
                continue
            for k, out in enumerate(n.outputs):
                got = _invert_read(n, k, i_src, idx_in, out)
                if got is not None:
                    pos[id(out)] = (got[0], E.binary("and", guard, got[1]))
        return pos

    def function(self, kc) -> Function:
        if self.scratch:
            # a file-scope pointer: the kernel's epilogue runs in its worker functions, which see
            # only their task; set before fz_parallel_for hands the work out
            numel = int(np.prod(self.anchor.outputs[0].shape))
            kc = type(kc)(f"static float *{self.scratch};\n" + kc.functions + "".join(r[0] for r in self.rest),
                          f"{self.scratch} = fzk_alloc({numel});\n" + kc.body + "".join(r[1] for r in self.rest)
                          + f"free({self.scratch}); {self.scratch} = 0;\n",
                          kc.weights, kc.schedule + "; the anchor kept in a scratch buffer, every output computed "
                          "from it by a loop nest (an output reads it at other elements)")
        elif self.rest:
            n = sum(r[2] for r in self.rest)
            kc = type(kc)(kc.functions + "".join(r[0] for r in self.rest), kc.body + "".join(r[1] for r in self.rest),
                          kc.weights, kc.schedule + f"; the other {n} output elements (Concat inputs) by a loop nest")
        # A constant the kernel pre-packed is not read through c_expr: leave it out of weights.bin.
        text = kc.functions + kc.body
        used = {n: v for n, v in self.comp.loads.items() if f"A->{n}[" in text}
        bufs = self.em.buffers_for(used, self.outs)
        for name, arr in kc.weights.items():
            arr = np.ascontiguousarray(arr, np.float32)
            self.em.add_weight(name, arr)
            bufs.append(Buffer(name, "float32", arr.shape, "weight", f"packed by {self.anchor.op} kernel"))
        fn = Function(self.block.name, bufs, [], [], [], functions=kc.functions, raw_body=kc.body,
                      schedule=kc.schedule)
        fn.parallel = "thread" in kc.schedule or "fz_parallel_for" in kc.functions + kc.body
        return fn


def _invert_read(n, k, i_src, idx_in, out):
    """Output k's index holding input i_src's element idx_in, and the condition
    for it to exist; None unless every read component is `out var + constant`."""
    ov = [E.Var(f"__s{d}", int(x)) for d, x in enumerate(out.shape)]
    reads = []
    try:
        n.opdef.lower(n, ov, lambda i, ix: reads.append((i, list(ix))) or
                      E.Const(0.0, n.inputs[i].dtype.name if n.inputs[i].dtype.kind == "f" else "float32"), k)
    except Exception:
        return None
    cand = [ix for i, ix in reads if i == i_src]
    if len(cand) != 1 or len(cand[0]) != len(idx_in):
        return None
    idx_out: list = [None] * len(ov)
    cond: E.Expr = E.Const(True)
    for j, x in enumerate(cand[0]):
        aff = E._affine(x)
        if aff is None:
            return None
        terms, c = aff
        if not terms:                                   # a fixed position (broadcast dim, Gather by constant)
            if int(n.inputs[i_src].shape[j]) != 1:
                cond = E.binary("and", cond, E.binary("eq", idx_in[j], c))
            continue
        if len(terms) != 1:
            return None
        (t, coef), = terms.items()
        if coef != 1 or t not in ov or idx_out[ov.index(t)] is not None:
            return None
        q = ov.index(t)
        val = E.binary("sub", idx_in[j], c)
        idx_out[q] = val
        cond = E.binary("and", cond, E.binary("and", E.binary("ge", val, 0), E.binary("lt", val, int(out.shape[q]))))
    for q, x in enumerate(idx_out):
        if x is None:
            if int(out.shape[q]) != 1:
                return None                             # an output dim the input does not determine (broadcast)
            idx_out[q] = E.Const(0)
    return idx_out, cond


def _reads_slot(e, slot, var, values) -> bool:
    """Can `e` load `slot` for some value of `var` in `values` (any values of the other variables)?
    A Select whose condition reads only `var` narrows `values` to those taking each branch (a
    Concat is a chain of them), so a branch no value in the rest region takes does not count."""
    from fusion.ir.expr_eval import evaluate
    no_loads = lambda *a: (_ for _ in ()).throw(ValueError())  # noqa: E731
    memo: dict[tuple, bool] = {}

    def go(x, vals) -> bool:
        if vals.size == 0:
            return False
        k = (id(x), vals.tobytes())
        if k in memo:
            return memo[k]
        r = False
        if isinstance(x, E.Load) and x.slot == slot:
            r = True
        elif isinstance(x, E.Select) and E.free_vars(x.cond) == {var}:
            try:
                c = np.broadcast_to(evaluate(x.cond, {var: vals}, no_loads), vals.shape).astype(bool)
            except (ValueError, KeyError, TypeError):
                c = None
            if c is None:
                r = go(x.cond, vals) or go(x.a, vals) or go(x.b, vals)
            else:
                r = go(x.a, vals[c]) or go(x.b, vals[~c])
        else:
            r = any(go(c, vals) for c in x.children())
        memo[k] = r
        return r
    return go(e, np.asarray(values, np.int64))


def _conjuncts(e) -> list:
    if isinstance(e, E.Bin) and e.op == "and":
        return _conjuncts(e.a) + _conjuncts(e.b)
    return [e]


def _coverage(idx, guard, avars, shape):
    """Which part of an output of `shape` the anchor fills, its element `avars` going to `idx` where
    `guard` holds: "full" (every element, one-to-one), (d, lo, hi) when the filled part is the
    box [lo, hi) of dim d and all of the other dims, or None (anything else)."""
    from fusion.ir.expr_eval import evaluate
    no_loads = lambda *a: (_ for _ in ()).throw(ValueError())  # noqa: E731
    n_out = int(np.prod(shape)) if len(shape) else 1
    # Separable case (elementwise chains, Concat, Slice, Split): each index component is one anchor
    # variable plus a constant, or a constant, and each condition reads one variable, so the
    # filled part is found per dim without enumerating the anchor (too large for YOLO's convs).
    masks = {v: np.ones(v.extent, bool) for v in avars}
    separable = True
    try:
        for t in _conjuncts(guard):
            fv = E.free_vars(t)
            if not fv:
                if not bool(evaluate(t, {}, no_loads)):
                    return None
                continue
            if len(fv) != 1 or next(iter(fv)) not in masks:
                separable = False
                break
            v = next(iter(fv))
            masks[v] &= np.broadcast_to(evaluate(t, {v: np.arange(v.extent)}, no_loads), (v.extent,)).astype(bool)
    except (ValueError, KeyError, TypeError):
        separable = False
    box, used = [], set()
    for x in idx if separable else []:
        aff = E._affine(x)
        terms = aff[0] if aff is not None else {None: 0}
        if aff is not None and not terms:
            box.append((aff[1], aff[1] + 1))
            continue
        if len(terms) != 1:
            separable = False
            break
        (t, coef), = terms.items()
        if coef != 1 or t not in masks or t in used:
            separable = False
            break
        used.add(t)
        on = np.nonzero(masks[t])[0]
        if on.size == 0 or on[-1] - on[0] + 1 != on.size:
            return None
        box.append((int(on[0]) + aff[1], int(on[-1]) + 1 + aff[1]))
    if separable and len(box) == len(shape):
        if any(int(np.count_nonzero(masks[v])) != 1 for v in avars if v not in used):
            return None   # several anchor elements would land on one output element
        if any(lo < 0 or hi > n for (lo, hi), n in zip(box, shape)):
            return None
        diff = [q for q, ((lo, hi), n) in enumerate(zip(box, shape)) if (lo, hi) != (0, n)]
        if not diff:
            return "full"
        if len(diff) == 1:
            return (diff[0],) + box[diff[0]]
        return None
    return "full" if _count_true(guard, avars) == n_out else None


def _count_true(guard, avars, limit: int = 1 << 22) -> int:
    """At how many anchor positions the guard holds (-1: too many to count)."""
    from fusion.ir.expr_eval import evaluate
    n = int(np.prod([v.extent for v in avars])) if avars else 1
    if isinstance(guard, E.Const):
        return n if guard.value else 0
    if n > limit:
        return -1
    grids = np.indices([v.extent for v in avars], dtype=np.int64) if avars else []
    env = {v: grids[i] for i, v in enumerate(avars)}
    try:
        g = evaluate(guard, env, lambda *a: (_ for _ in ()).throw(ValueError()))
    except (ValueError, KeyError, TypeError):
        return -1
    return int(np.count_nonzero(np.broadcast_to(g, grids[0].shape if avars else ())))


def _same_index(index, avars, guard=None, limit: int = 1 << 22) -> bool:
    """Does `index` equal `avars` at every anchor position (where `guard`
    holds)? Index arithmetic of reshapes and transposes does not always
    simplify back to the plain variables ((e // 64) * 64 + e % 64), so check
    every point (small spaces only)."""
    from fusion.ir.expr_eval import evaluate
    n = int(np.prod([v.extent for v in avars])) if avars else 1
    if n > limit or len(index) != len(avars):
        return False
    grids = np.indices([v.extent for v in avars], dtype=np.int64) if avars else []
    env = {v: grids[i] for i, v in enumerate(avars)}
    no_loads = lambda *a: (_ for _ in ()).throw(ValueError())  # noqa: E731
    try:
        shape = grids[0].shape if avars else ()
        where = np.ones(shape, bool) if guard is None else np.broadcast_to(evaluate(guard, env, no_loads), shape)
        for x, v in zip(index, avars):
            got = np.broadcast_to(evaluate(x, env, no_loads), shape)
            if not np.array_equal(got[where], env[v][where]):
                return False
    except (ValueError, KeyError, TypeError):
        return False
    return True


def fast_block(em, block, outs):
    """A Function whose body is the kernel's code, or None."""
    kmod = kernels_module()
    a = block.anchor
    if a is None or kmod is None or a.op not in ("MatMul", "Gemm", "Conv", "ConvTranspose") + tuple(POOLS):
        return None
    if any(v is not None and v.dtype != np.float32 for v in list(a.inputs) + a.outputs):
        return None
    ctx = AnchorContext(em, block, outs, partial_ok=True)
    try:
        ctx.epilogue()   # refuses early when an output reads the anchor elsewhere
    except _Refuse:
        # the anchor materialized in a scratch buffer, the outputs computed from it
        ctx = AnchorContext(em, block, outs, partial_ok=True)
        ctx.scratch = f"{block.name}_anc"
        try:
            ctx.epilogue()
        except _Refuse:
            return None
    try:
        kc = _ask(kmod, ctx, em.target)
    except _Refuse:
        return None
    if kc is None:
        return None
    return ctx.function(kc)


def _ask(kmod, ctx: AnchorContext, target):
    a = ctx.anchor
    name = ctx.block.name
    if a.op == "MatMul":
        x, w = a.inputs
        if x.rank < 2 or w.rank < 2:
            return None
        out = tuple(int(d) for d in a.outputs[0].shape)
        M, N, K = int(x.shape[-2]), int(w.shape[-1]), int(x.shape[-1])
        A = ctx.operand(x, x.shape)
        B = ctx.operand(w, w.shape)
        epi = ctx.epilogue()
        return kmod.matmul(name, batch=list(out[:-2]), M=M, N=N, K=K, A=A, B=B, epilogue=epi, target=target)
    if a.op == "Gemm":
        return _gemm(kmod, ctx, target)
    if a.op == "Conv":
        from fusion.ops.linear import conv_geometry
        x, w = a.inputs[0], a.inputs[1]
        b = a.input(2)
        kernel, strides, dil, pb, pe, out_sp = conv_geometry(a)
        geo = _geometry(x, kernel, strides, dil, pb, pe, out_sp)
        geo.update(M=int(w.shape[0]), group=int(a.attrs.get("group", 1)))
        X = ctx.operand(x, x.shape)
        Wt = ctx.operand(w, w.shape)
        if Wt.const is None:
            return None
        bias = ctx.operand(b, b.shape) if b is not None else None
        return kmod.conv(name, node_geometry=geo, X=X, W=Wt, bias=bias, epilogue=ctx.epilogue(), target=target)
    if a.op == "ConvTranspose" and hasattr(kmod, "conv_transpose"):
        from fusion.ops.linear import convtranspose_geometry
        x, w = a.inputs[0], a.inputs[1]
        b = a.input(2)
        kernel, strides, dil, pb, out_sp = convtranspose_geometry(a)
        # pads_end as the kernel's own formula needs them: full size minus begin pad minus output
        nsp = len(kernel)
        in_sp = [int(d) for d in x.shape[2:]]
        full = [strides[d] * (in_sp[d] - 1) + (kernel[d] - 1) * dil[d] + 1 for d in range(nsp)]
        pe = [full[d] - pb[d] - out_sp[d] for d in range(nsp)]
        geo = _geometry(x, kernel, strides, dil, pb, pe, out_sp)
        geo.update(M=int(w.shape[1]) * int(a.attrs.get("group", 1)), group=int(a.attrs.get("group", 1)))
        X = ctx.operand(x, x.shape)
        Wt = ctx.operand(w, w.shape)
        if Wt.const is None:
            return None
        bias = ctx.operand(b, b.shape) if b is not None else None
        return kmod.conv_transpose(name, node_geometry=geo, X=X, W=Wt, bias=bias, epilogue=ctx.epilogue(),
                                   target=target)
    if a.op in POOLS:
        x = a.inputs[0]
        if len(a.outputs) > 1 and any(v in ctx.outs for v in a.outputs[1:]):
            return None   # MaxPool's Indices output: plain loop nest
        sp = [int(d) for d in x.shape[2:]]
        if a.op.startswith("Global"):
            geo = _geometry(x, sp, [1] * len(sp), [1] * len(sp), [0] * len(sp), [0] * len(sp), [1] * len(sp))
            cip = False
        else:
            geo = _pool_geometry(a)
            if geo is None:
                return None
            cip = bool(a.attrs.get("count_include_pad", 0))
        X = ctx.operand(x, x.shape)
        return kmod.pool(name, kind=POOLS[a.op], node_geometry=geo, X=X, count_include_pad=cip,
                         epilogue=ctx.epilogue(), target=target)
    return None


def _geometry(x, kernel, strides, dil, pb, pe, out_sp) -> dict:
    sp = [int(d) for d in x.shape[2:]]
    geo = {"spatial": len(sp), "N": int(x.shape[0]), "C": int(x.shape[1]), "kernel": list(kernel),
           "strides": list(strides), "pads": list(pb) + list(pe), "dilations": list(dil), "out": list(out_sp),
           "in": sp}
    for key, d in zip(["D", "H", "W"][3 - len(sp):], sp):
        geo[key] = d
    return geo


def _pool_geometry(node):
    x = node.inputs[0]
    y = node.outputs[0]
    s = x.rank - 2
    kernel = [int(k) for k in node.attrs.get("kernel_shape") or []]
    # ceil_mode needs nothing more: the output's shape (from the op's shape rule) is passed as `out`,
    # and the kernel pads its buffers to reach every window
    if len(kernel) != s:
        return None
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto not in ("NOTSET", "VALID"):
        return None
    strides = [int(v) for v in (node.attrs.get("strides") or [1] * s)]
    dil = [int(v) for v in (node.attrs.get("dilations") or [1] * s)]
    pads = [int(v) for v in (node.attrs.get("pads") or [0] * (2 * s))] if auto == "NOTSET" else [0] * (2 * s)
    out = [int(d) for d in y.shape[2:]]
    return _geometry(x, kernel, strides, dil, pads[:s], pads[s:], out)


@dataclass
class GemmOperands:
    """A Gemm anchor with its transposes folded into the operand index (shared by
    the C kernels and the OpenCL tiled GEMM)."""
    x: object
    w: object
    ta: int
    tb: int
    M: int
    N: int
    K: int
    A: object
    B: object
    alpha: float
    beta: float
    bias: object   # None, or bias(index) -> C text of input C at output [index] (scaled by nothing)


def gemm_operands(ctx: AnchorContext) -> GemmOperands:
    a = ctx.anchor
    x, w = a.inputs[0], a.inputs[1]
    c = a.input(2)
    ta, tb = int(a.attrs.get("transA", 0)), int(a.attrs.get("transB", 0))
    M = int(x.shape[1] if ta else x.shape[0])
    K = int(x.shape[0] if ta else x.shape[1])
    N = int(w.shape[0] if tb else w.shape[1])
    A = ctx.operand(x, (M, K), (lambda v: [v[1], v[0]]) if ta else None)
    B = ctx.operand(w, (K, N), (lambda v: [v[1], v[0]]) if tb else None)
    bias = None
    if c is not None:
        cvars = [E.Var("__c0", M), E.Var("__c1", N)]
        ce = ctx.comp.value(c, E.broadcast_index(cvars, c.shape))
        for name, val in ctx.comp.loads.items():
            ctx.shapes[name] = ctx.em.shape_of(val)

        def bias(index):
            return ctx._printer({"__c0": f"({index[0]})", "__c1": f"({index[1]})"}).p(ce)
    return GemmOperands(x, w, ta, tb, M, N, K, A, B, float(a.attrs.get("alpha", 1.0)),
                        float(a.attrs.get("beta", 1.0)), bias)


def _gemm(kmod, ctx: AnchorContext, target):
    g = gemm_operands(ctx)
    A, B = g.A, g.B
    if g.tb and B.const is None:
        wa = ctx.em.constval(g.w)
        if wa is not None and (g.w.producer is None or id(g.w.producer) not in ctx.comp.inside):
            B.const = np.ascontiguousarray(np.asarray(wa, np.float32).T)
    if g.ta and A.const is None:
        xa = ctx.em.constval(g.x)
        if xa is not None and (g.x.producer is None or id(g.x.producer) not in ctx.comp.inside):
            A.const = np.ascontiguousarray(np.asarray(xa, np.float32).T)
    inner = ctx.epilogue()
    if g.bias is not None:
        # Gemm's C is added before any consumer: fold it into the epilogue's acc.
        def epi(index, acc):
            return inner(index, f"{_scaled(g.alpha, acc)} + {_scaled(g.beta, g.bias(index))}")
    else:
        def epi(index, acc):
            return inner(index, _scaled(g.alpha, acc))
    return kmod.matmul(ctx.block.name, batch=[], M=g.M, N=g.N, K=g.K, A=A, B=B, epilogue=epi, target=target)


def _scaled(k: float, c: str) -> str:
    from fusion.codegen.cprint import c_const
    return f"({c})" if k == 1.0 else f"({c_const(k, 'float32')} * ({c}))"
