"""The LLVM IR printer: loop-nest Functions (fusion/codegen/loops.py) as llvmlite IR.

Spelling only, like the C printer (cprint.py): the same statements, the same
expression semantics. Where C relies on fz_runtime.h helpers (floor division,
NaN-propagating max, NaN-safe float->int), the IR spells them inline:

* integer `div`/`floordiv`/`mod`/`fmod` divide by a guarded divisor (x/0 is 0,
  as the C helpers do; LLVM's sdiv by zero would be undefined behaviour);
* float->int casts use llvm.fptosi.sat (NaN -> 0, out of range saturates);
* max/min keep NaN ((a > b || a != a) ? a : b);
* math calls go to LLVM intrinsics where the intrinsics table names one, to
  libm (expf, erff, tanhf...) otherwise.

Vectorization is left to LLVM's loop and SLP vectorizers (O3): buffer
parameters are `noalias` (C's restrict), and float sum/prod accumulators carry
the `reassoc` flag, which is what `#pragma omp simd reduction` grants the C
compiler; nothing else is reassociated.

Each Function becomes two symbols: `NAME_range(buffers..., syms..., begin, end)`
(internal, always inlined) and `NAME_task(i64 *slots, begin, end)`, which takes
its buffer addresses and run-time extents from one array of 64-bit slots, so a
caller (the model's run function, the thread runtime) needs one signature.
"""
from __future__ import annotations

from llvmlite import ir

from fusion.errors import UnsupportedOpError
from fusion.ir import expr as E
from fusion.ir.intrinsics import INTRINSICS
from fusion.codegen.loops import Decl, Function, Let, Loop, Raw, Store, Sym, Temp, Update
from fusion.codegen.llvm.lanes import (load_stride as _load_stride, stride as _stride, unclamp as _unclamp,
                                       unroll_jam as _unroll_jam, varying_temps as _varying_temps,
                                       walk_stmts as _walk_stmts)

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
VOID = ir.VoidType()
SLOTS = I64.as_pointer()
TASK_TYPE = ir.FunctionType(VOID, [SLOTS, I64, I64])

_FLOAT = {"float32": ir.FloatType(), "float64": ir.DoubleType(), "float16": ir.HalfType()}
_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "uint16": 16, "uint32": 32,
             "uint64": 64}
DTYPES = tuple(_FLOAT) + tuple(_INT_BITS) + ("bool",)

# C's comparison operators on floats: ordered, except != (true when unordered).
_FCMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
REASSOC = ("reassoc", "nsz", "contract")   # what `omp simd reduction` allows the C compiler
CONTRACT = ("contract",)   # a*b+c may become one FMA, as gcc's default -ffp-contract=fast does for C


def is_float(dt: str) -> bool:
    return dt in _FLOAT


def is_unsigned(dt: str) -> bool:
    return dt.startswith("uint") or dt == "bool"


def value_type(dt: str) -> ir.Type:
    """The SSA type of a value (bool is i1)."""
    if dt in _FLOAT:
        return _FLOAT[dt]
    if dt in _INT_BITS:
        return ir.IntType(_INT_BITS[dt])
    if dt == "bool":
        return I1
    raise UnsupportedOpError(f"element type {dt} is not supported by the LLVM backend")


def memory_type(dt: str) -> ir.Type:
    """The in-memory type of an element (bool is a byte, as in C and numpy)."""
    return I8 if dt == "bool" else value_type(dt)


def _const(value, dt: str) -> ir.Constant:
    t = value_type(dt)
    if dt == "bool":
        return ir.Constant(I1, int(bool(value)))
    if is_float(dt):
        return ir.Constant(t, float(value))
    v = int(value)
    bits = _INT_BITS[dt]
    return ir.Constant(t, v & ((1 << bits) - 1) if v < 0 else v)


class FunctionLowering:
    """One loops.Function -> `NAME_range` and `NAME_task` in `module`."""

    def __init__(self, module: ir.Module, fn: Function, vector_bits: int = 0):
        if fn.raw_body is not None or fn.functions:
            raise UnsupportedOpError(f"block {fn.name}: its kernel is target text (C); the LLVM backend prints "
                                     f"plain loop nests only")
        self.m, self.fn = module, fn
        self.syms = sorted(_syms(fn))
        self.shapes = {b.name: tuple(b.shape) for b in fn.buffers}
        self.btypes = {b.name: b.dtype for b in fn.buffers}
        self.env: dict[str, ir.Value] = {}      # loop vars, lets, syms, buffers
        self.accs: dict[str, ir.Value] = {}     # accumulator allocas
        self.memo: list[dict] = []              # per-scope CSE of expressions
        self.lanes, self.lane_var, self.varying = 1, None, set()
        if vector_bits:
            self._plan_lanes(vector_bits)

    # ------------------------------------------------------------ functions
    def lower(self) -> ir.Function:
        fn = self.fn
        params = [memory_type(b.dtype).as_pointer() for b in fn.buffers] + [I64] * len(self.syms) + [I64, I64]
        rng = ir.Function(self.m, ir.FunctionType(VOID, params), f"{fn.name}_range")
        rng.linkage = "internal"
        rng.attributes.add("alwaysinline")
        rng.attributes.add("nounwind")
        for k, b in enumerate(fn.buffers):
            rng.args[k].add_attribute("noalias")
            self.env["buf:" + b.name] = rng.args[k]
        for k, s in enumerate(self.syms):
            self.env["sym:" + s] = rng.args[len(fn.buffers) + k]
        begin, end = rng.args[-2], rng.args[-1]
        self.func = rng
        self.entry = rng.append_basic_block("entry")
        body = rng.append_basic_block("body")
        self.b = ir.IRBuilder(body)
        self.memo = [{}]
        for s in fn.prelude:
            self.stmt(s)
        lane = self.lanes > 1
        keep = [k for k in range(len(fn.outer)) if not (lane and k == self.lane_idx)]
        scalar_outer = [fn.outer[k] for k in keep]
        scalar_exts = [fn.outer_extents[k] for k in keep]
        strides = self._strides(scalar_exts)
        outer = list(zip(scalar_outer, scalar_exts, strides))

        def point(p):
            b = self.b
            if lane:
                # p = (point of the other outer vars) * chunks + chunk; the last
                # chunk is shifted back to end at the extent (it overlaps the one
                # before it and stores the same values again), so every lane is valid.
                vl, ext = self.lanes, self.fn.outer_extents[self.lane_idx]
                chunks = ir.Constant(I64, -(-ext // vl))
                c = b.srem(p, chunks)
                p = b.sdiv(p, chunks)
                j0 = b.mul(c, ir.Constant(I64, vl))
                last = ir.Constant(I64, ext - vl)
                j0 = b.select(b.icmp_signed(">", j0, last), last, j0)
                self.env["var:" + self.lane_base.name] = j0
                self.env["var:" + self.lane_var.name] = b.add(
                    self.splat(j0), ir.Constant(ir.VectorType(I64, vl), [ir.Constant(I64, k) for k in range(vl)]))
            for k, (v, ext, st) in enumerate(outer):
                q = p if st is None else b.sdiv(p, st)
                if k > 0:
                    q = b.srem(q, self.ext(ext))
                self.env["var:" + v.name] = q
            for s in fn.body:
                self.stmt(s)

        self._loop_from(begin, end, point)
        self.b.ret_void()
        ir.IRBuilder(self.entry).branch(body)

        task = ir.Function(self.m, TASK_TYPE, f"{fn.name}_task")
        task.attributes.add("nounwind")
        # Kept out of line: inlined into a segment its range becomes constant
        # and O3 unrolls whole tensors (big code, slow codegen, no gain).
        task.attributes.add("noinline")
        tb = ir.IRBuilder(task.append_basic_block("entry"))
        slots, tbeg, tend = task.args
        args = []
        for k, b in enumerate(fn.buffers):
            raw = tb.load(tb.gep(slots, [ir.Constant(I64, k)]))
            args.append(tb.inttoptr(raw, params[k]))
        for k in range(len(self.syms)):
            args.append(tb.load(tb.gep(slots, [ir.Constant(I64, len(fn.buffers) + k)])))
        tb.call(rng, args + [tbeg, tend])
        tb.ret_void()
        return task

    def slot_layout(self) -> list[tuple[str, str]]:
        """What each slot of NAME_task's array holds: ("buf", name) or ("sym", name)."""
        return [("buf", b.name) for b in self.fn.buffers] + [("sym", s) for s in self.syms]

    def total(self, b: ir.IRBuilder, sym_value) -> ir.Value:
        """prod(outer extents) at run time; sym_value(name) gives a Sym's i64."""
        n = ir.Constant(I64, 1)
        exts = list(self.fn.outer_extents)
        if self.lanes > 1:   # the lane var runs in chunks of `lanes`
            exts[self.lane_idx] = -(-exts[self.lane_idx] // self.lanes)
        for ext in exts:
            n = b.mul(n, ir.Constant(I64, ext) if isinstance(ext, int) else _sym_expr(b, ext, sym_value))
        return n

    def _strides(self, exts) -> list:
        """Stride of each outer var in the flattened range (None for 1)."""
        out, acc = [], None
        for ext in reversed(exts):
            out.append(acc)
            e = self.ext(ext)
            acc = e if acc is None else self.b.mul(acc, e)
        out.reverse()
        return out

    def ext(self, ext) -> ir.Value:
        if isinstance(ext, int):
            return ir.Constant(I64, ext)
        return self.cast_to(self.ev(E.wrap(ext)), E.wrap(ext).dtype, "int64")

    def _loop_from(self, start, stop, body_fn, name: str = "p") -> None:
        """for (i = start; i < stop; ++i) body_fn(i)."""
        b = self.b
        pre = b.block
        head = self.func.append_basic_block(f"{name}.head")
        loop = self.func.append_basic_block(f"{name}.body")
        done = self.func.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name)
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, stop), loop, done)
        b.position_at_end(loop)
        self.memo.append({})
        body_fn(i)
        self.memo.pop()
        nxt = b.add(i, ir.Constant(I64, 1), flags=["nsw"])
        i.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(done)

    # ---------------------------------------------------------------- lanes
    # Blocks whose inner loops are reductions (MatMul, reductions over a
    # middle axis) leave LLVM's loop vectorizer nothing useful: it vectorizes
    # innermost loops only, and there the reduction walks a column. Such a
    # block is printed with its last outer variable as `lanes` SIMD lanes
    # (LLVM vector types): every value depending on it is a vector, loads and
    # stores contiguous in it are vector loads and stores, accumulators are
    # vectors. Taken only when every store and every varying load is
    # contiguous in that variable (no gathers).
    def _plan_lanes(self, vector_bits: int) -> None:
        fn = self.fn
        if not fn.outer or not any(isinstance(x, Loop) for x in _walk_stmts(fn.body)):
            return
        dts = {b.dtype for b in fn.buffers}
        width = 64 if dts & {"float64", "int64", "uint64"} else 32
        best = None
        for idx in reversed(range(len(fn.outer))):
            ext = fn.outer_extents[idx]
            if not isinstance(ext, int):
                continue
            vl = max(vector_bits // width, 1) * 2   # two registers: two independent FMA chains
            while vl > 1 and ext < vl:
                vl //= 2
            if vl < 4:
                continue
            verdict = self._lane_verdict(fn, fn.outer[idx])
            if verdict is None:
                continue
            if best is None or verdict > best[0]:
                best = (verdict, idx, vl)
        if best is None:
            return
        _, idx, vl = best
        # Unroll-and-jam another outer var: R rows share each vector load of
        # the lane-contiguous operand (MatMul's B row), R accumulators in flight.
        decls = sum(isinstance(x, Decl) for x in _walk_stmts(fn.body))
        regs = max(vl * width // vector_bits, 1)
        for r in (4, 2):
            if decls and r * decls * regs <= 8:
                u = _unroll_jam(fn, idx, r)
                if u is not None:
                    fn = self.fn = u
                    break
        self.lane_idx, self.lanes = idx, vl
        j = self.lane_var = fn.outer[idx]
        self.lane_base = E.Var(j.name + "_0", int(fn.outer_extents[idx]) - vl + 1)
        self.varying = _varying_temps(fn, j)

    def _lane_verdict(self, fn: Function, j: E.Var):
        """None when some load inside a loop would be a gather in j; else
        (stores contiguous in j, loads contiguous in j) to rank candidates."""
        shifted = E.Var(j.name + "_n", j.extent - 1 if j.extent else 1)   # j+1 stays in range
        contiguous, stores_ok = 0, 1

        def scan(stmts, hot):
            nonlocal contiguous, stores_ok
            for st in stmts:
                if isinstance(st, Loop):
                    if not scan(st.body, True):
                        return False
                    continue
                if isinstance(st, Store) and _stride(st.index, j, shifted) != 1:
                    stores_ok = 0
                for e in [getattr(st, "value", None), getattr(st, "pos", None)]:
                    if e is None:
                        continue
                    for x in E.walk(e):
                        if isinstance(x, E.Load):
                            d = _load_stride(x, self.shapes[x.slot], j, shifted)[0]
                            if d == 1 and hot:
                                contiguous += 1
                            elif d != 0 and hot:
                                return False
            return True
        if not scan(fn.body, False) or contiguous == 0:
            return None
        return (stores_ok, contiguous)

    def splat(self, v: ir.Value) -> ir.Value:
        if self.lanes == 1 or _isvec(v):
            return v
        vt = ir.VectorType(v.type, self.lanes)
        if isinstance(v, ir.Constant):
            return ir.Constant(vt, v.constant)
        u = self.b.insert_element(ir.Constant(vt, ir.Undefined), v, ir.Constant(I32, 0))
        return self.b.shuffle_vector(u, ir.Constant(vt, ir.Undefined),
                                     ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))

    def match(self, *vs):
        if any(_isvec(v) for v in vs):
            return [self.splat(v) for v in vs]
        return list(vs)

    def per_lane(self, f, args: list) -> ir.Value:
        """f(scalar args) applied to each lane (libm calls, integer power)."""
        b = self.b
        out = None
        for k in range(self.lanes):
            idx = ir.Constant(I32, k)
            r = f([b.extract_element(a, idx) if _isvec(a) else a for a in args])
            if out is None:
                out = ir.Constant(ir.VectorType(r.type, self.lanes), ir.Undefined)
            out = b.insert_element(out, r, idx)
        return out

    def gather(self, slot: str, flat: E.Expr) -> ir.Value:
        b = self.b
        base = self.env["buf:" + slot]
        return self.per_lane(lambda a: b.load(b.gep(base, [a[0]], inbounds=True)), [self.splat(self.index(flat))])

    def clamped_load(self, e: E.Load, clamps: list, vt: ir.Type) -> ir.Value:
        """A load whose index is clamped into the tensor (padding, Concat): one
        masked vector load at the unclamped addresses, lanes whose clamped
        components are out of range masked off (never touched; they read 0, and
        the Select around such a load discards them anyway)."""
        b = self.b
        mask = None
        for inner, d in clamps:
            x = self.index(inner)
            m = b.and_(b.icmp_signed(">=", x, ir.Constant(x.type, 0)), b.icmp_signed("<=", x, ir.Constant(x.type, d - 1)))
            m = self.splat(m)
            mask = m if mask is None else b.and_(mask, m)
        uflat = E.linearize([_unclamp(i)[0] for i in e.index], self.shapes[e.slot])
        ptr = b.bitcast(self.lane_address(e.slot, uflat, inbounds=False), vt.as_pointer())
        name = f"llvm.masked.load.{_tname(vt)}.p0"
        fn = self.m.globals.get(name)
        if fn is None:
            fn = ir.Function(self.m, ir.FunctionType(vt, [vt.as_pointer(), I32, mask.type, vt]), name)
        return b.call(fn, [ptr, ir.Constant(I32, _esize(vt.element)), mask, ir.Constant(vt, 0)])

    def lane_address(self, buf: str, flat: E.Expr, inbounds: bool = True):
        """Address of lane 0 of a contiguous access (flat at j = j0)."""
        f0 = E.substitute(flat, {self.lane_var: self.lane_base})
        return self.b.gep(self.env["buf:" + buf], [self.index(f0)], inbounds=inbounds)

    # ----------------------------------------------------------- statements
    def stmt(self, s) -> None:
        b = self.b
        if isinstance(s, Let):
            v = self.ev(s.value)
            self.env["tmp:" + s.temp.name] = self.cast_to(v, s.value.dtype, s.temp.dtype)
        elif isinstance(s, Decl):
            ptr = self.accs.get(s.temp.name)
            vary = s.temp.name in self.varying
            if ptr is None:
                t = value_type(s.temp.dtype)
                ptr = ir.IRBuilder(self.entry).alloca(ir.VectorType(t, self.lanes) if vary else t, name=s.temp.name)
                self.accs[s.temp.name] = ptr
            v = self.cast_to(self.ev(s.init), s.init.dtype, s.temp.dtype)
            b.store(self.splat(v) if vary else v, ptr)
        elif isinstance(s, Update):
            self.update(s)
        elif isinstance(s, Store):
            v = self.cast_to(self.ev(s.value), s.value.dtype, s.dtype)
            if s.dtype == "bool":
                v = b.zext(v, ir.VectorType(I8, self.lanes) if _isvec(v) else I8)
            shifted = E.Var("__jn", self.lane_var.extent - 1) if self.lanes > 1 else None
            if self.lanes > 1 and _stride(s.index, self.lane_var, shifted) == 1:
                v = self.splat(v)
                ptr = b.bitcast(self.lane_address(s.buffer, s.index), v.type.as_pointer())
                b.store(v, ptr, align=_esize(v.type.element))
            elif self.lanes > 1:   # a scatter, lane by lane (once per point, outside the reductions)
                v, idx = self.match(v, self.index(s.index))
                base = self.env["buf:" + s.buffer]
                for k in range(self.lanes):
                    kk = ir.Constant(I32, k)
                    b.store(b.extract_element(v, kk), b.gep(base, [b.extract_element(idx, kk)], inbounds=True))
            else:
                ptr = b.gep(self.env["buf:" + s.buffer], [self.index(s.index)], inbounds=True)
                b.store(v, ptr)
        elif isinstance(s, Loop):
            def body(i, s=s):
                self.env["var:" + s.var.name] = i
                for x in s.body:
                    self.stmt(x)
            self._loop_from(ir.Constant(I64, 0), self.ext(s.extent), body, name=s.var.name)
        elif isinstance(s, Raw):
            raise UnsupportedOpError(f"block {self.fn.name}: raw C text cannot be printed as LLVM IR")
        else:
            raise TypeError(f"cannot print statement {type(s).__name__}")

    def update(self, s: Update) -> None:
        b = self.b
        dt = s.temp.dtype
        ptr = self.accs[s.temp.name]
        acc = b.load(ptr)
        v = self.cast_to(self.ev(s.value), s.value.dtype, dt)
        if _isvec(acc):
            v = self.splat(v)
        f = is_float(dt)
        if s.op == "sum":
            r = b.fadd(acc, v, flags=REASSOC) if f else b.add(acc, v)
        elif s.op == "prod":
            r = b.fmul(acc, v, flags=REASSOC) if f else b.mul(acc, v)
        elif s.op in ("max", "min"):
            r = self.maxmin(s.op, acc, v, dt)
        elif s.op == "any":
            r = b.or_(acc, v)
        elif s.op == "all":
            r = b.and_(acc, v)
        elif s.op in ("argmax", "argmin"):
            cmp = ">" if s.op == "argmax" else "<"
            better = b.fcmp_ordered(cmp, v, acc) if f else self._icmp(cmp, v, acc, dt)
            r = b.select(better, v, acc)
            pptr = self.accs[s.pos_temp.name]
            pos = self.cast_to(self.ev(s.pos), s.pos.dtype, s.pos_temp.dtype)
            pos, old = self.match(pos, b.load(pptr))
            b.store(b.select(better, pos, old), pptr)
        else:
            raise TypeError(f"unknown accumulator op {s.op}")
        b.store(r, ptr)

    # ---------------------------------------------------------- expressions
    def index(self, e: E.Expr) -> ir.Value:
        return self.cast_to(self.ev(e), e.dtype, "int64")

    def ev(self, e: E.Expr) -> ir.Value:
        if isinstance(e, E.Const):
            return _const(e.value, e.dtype)
        if isinstance(e, Temp) and e.name in self.accs:
            return self.b.load(self.accs[e.name])   # accumulators change: never reuse a load
        for scope in reversed(self.memo):
            hit = scope.get(e)
            if hit is not None:
                return hit
        v = self._ev(e)
        self.memo[-1][e] = v
        return v

    def _ev(self, e: E.Expr) -> ir.Value:
        b = self.b
        if isinstance(e, E.Var):
            return self.env["var:" + e.name]
        if isinstance(e, Temp):
            if e.name in self.accs:
                return b.load(self.accs[e.name])
            return self.env["tmp:" + e.name]
        if isinstance(e, Sym):
            return self.env["sym:" + e.name]
        if isinstance(e, E.Load):
            flat = E.linearize(list(e.index), self.shapes[e.slot])
            mt = memory_type(self.btypes[e.slot])
            if self.lanes > 1 and self.lane_var in E.free_vars(flat):
                vt = ir.VectorType(mt, self.lanes)
                stride, clamps = _load_stride(e, self.shapes[e.slot], self.lane_var,
                                              E.Var("__jn", self.lane_var.extent - 1))
                if stride == 1 and not clamps:
                    ptr = b.bitcast(self.lane_address(e.slot, flat), vt.as_pointer())
                    v = b.load(ptr, align=_esize(mt))
                elif stride == 1:
                    v = self.clamped_load(e, clamps, vt)
                else:   # a gather, lane by lane (only outside the reduction loops)
                    v = self.gather(e.slot, flat)
                zero = ir.Constant(vt, 0)
            else:
                v = b.load(b.gep(self.env["buf:" + e.slot], [self.index(flat)], inbounds=True))
                zero = ir.Constant(I8, 0)
            if self.btypes[e.slot] == "bool":
                v = b.icmp_unsigned("!=", v, zero)
            return self.cast_to(v, self.btypes[e.slot], e.dtype)
        if isinstance(e, E.Bin):
            return self.binary(e)
        if isinstance(e, E.Un):
            a = self.ev(e.a)
            if e.op == "neg":
                return b.fneg(a) if is_float(e.a.dtype) else b.sub(ir.Constant(a.type, 0), a)
            if e.op == "not":
                return b.xor(self.truth(a, e.a.dtype), ir.Constant(I1, 1))
            if e.op == "bitnot":
                return b.xor(a, ir.Constant(a.type, -1 if _elem(a.type).width > 1 else 1))
            raise TypeError(e.op)
        if isinstance(e, E.Call):
            return self.call(e)
        if isinstance(e, E.Select):
            c = self.truth(self.ev(e.cond), e.cond.dtype)
            x = self.ev(e.a)
            y = self.cast_to(self.ev(e.b), e.b.dtype, e.a.dtype)
            c, x, y = self.match(c, x, y)
            return b.select(c, x, y)
        if isinstance(e, E.Cast):
            return self.cast_to(self.ev(e.a), e.a.dtype, e.dtype)
        if isinstance(e, E.Reduce):
            raise AssertionError("reductions are scheduled into loops before printing")
        raise TypeError(f"cannot print {type(e).__name__}")

    def truth(self, v: ir.Value, dt: str) -> ir.Value:
        return self.cast_to(v, dt, "bool")

    def _icmp(self, op: str, a, b_, dt: str):
        return (self.b.icmp_unsigned if is_unsigned(dt) else self.b.icmp_signed)(op, a, b_)

    def maxmin(self, op: str, a, c, dt: str):
        b = self.b
        cmp = ">" if op == "max" else "<"
        a, c = self.match(a, c)
        if is_float(dt):
            # NaN in either operand gives NaN (as fz_max_f32 and numpy).
            keep = b.or_(b.fcmp_ordered(cmp, a, c), b.fcmp_unordered("!=", a, a))
        else:
            keep = self._icmp(cmp, a, c, dt)
        return b.select(keep, a, c)

    def binary(self, e: E.Bin) -> ir.Value:
        b = self.b
        op, dt = e.op, e.a.dtype
        x = self.ev(e.a)
        y = self.cast_to(self.ev(e.b), e.b.dtype, dt) if op not in ("shl", "shr") else self.ev(e.b)
        if op in ("shl", "shr") and _elem(y.type) != _elem(x.type):
            y = self.cast_to(y, e.b.dtype, dt)
        f = is_float(dt)
        if op in ("and", "or", "xor"):
            x, y = self.match(self.truth(x, dt), self.truth(y, dt))
            return {"and": b.and_, "or": b.or_, "xor": b.xor}[op](x, y)
        x, y = self.match(x, y)
        if op in _FCMP:
            if f:
                return (b.fcmp_unordered if op == "ne" else b.fcmp_ordered)(_FCMP[op], x, y)
            return self._icmp(_FCMP[op], x, y, dt)
        if op in ("add", "sub", "mul"):
            if f:
                return {"add": b.fadd, "sub": b.fsub, "mul": b.fmul}[op](x, y, flags=CONTRACT)
            return {"add": b.add, "sub": b.sub, "mul": b.mul}[op](x, y)
        if op in ("max", "min"):
            return self.maxmin(op, x, y, dt)
        if op == "bitand":
            return b.and_(x, y)
        if op == "bitor":
            return b.or_(x, y)
        if op == "bitxor":
            return b.xor(x, y)
        if op in ("shl", "shr"):
            # Shifting by the width or more is poison in LLVM: give 0 (sign fill for ashr).
            w = ir.Constant(x.type, _elem(x.type).width)
            big = b.icmp_unsigned(">=", y, w)
            if op == "shr" and not is_unsigned(dt):
                return b.ashr(x, b.select(big, b.sub(w, ir.Constant(x.type, 1)), y))
            r = b.shl(x, y) if op == "shl" else b.lshr(x, y)
            return b.select(big, ir.Constant(x.type, 0), r)
        if f:
            if op == "div":
                return b.fdiv(x, y)
            if op == "floordiv":
                return self.intrinsic("llvm.floor", [b.fdiv(x, y)])
            if op == "fmod":
                return b.frem(x, y)
            if op == "mod":
                r = b.frem(x, y)
                zero = ir.Constant(x.type, 0.0)
                fix = b.and_(b.fcmp_unordered("!=", r, zero),
                             b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", y, zero)))
                return b.select(fix, b.fadd(r, y), r)
            if op == "pow":
                return self.intrinsic("llvm.pow", [x, y])
        else:
            return self.int_div(op, x, y, dt, e)
        raise UnsupportedOpError(f"binary op {op} on {dt} is not supported by the LLVM backend")

    def int_div(self, op: str, x, y, dt: str, e: E.Bin):
        b = self.b
        t = x.type
        zero, one = ir.Constant(t, 0), ir.Constant(t, 1)
        uns = is_unsigned(dt)
        if op == "pow":
            fn = self.ipow(_elem(t), uns)
            if _isvec(x):
                return self.per_lane(lambda a: b.call(fn, a), [x, y])
            return b.call(fn, [x, y])
        nonneg = E.bounds(e.a)[0] >= 0 and isinstance(e.b, E.Const) and e.b.value > 0
        if nonneg or (uns and isinstance(e.b, E.Const) and e.b.value > 0):
            if op in ("div", "floordiv"):
                return b.udiv(x, y) if uns or nonneg else b.sdiv(x, y)
            if op in ("mod", "fmod"):
                return b.urem(x, y) if uns or nonneg else b.srem(x, y)
        # x / 0 is 0 (the C helpers' convention), never undefined behaviour.
        isz = b.icmp_unsigned("==", y, zero)
        sy = b.select(isz, one, y)
        if uns:
            q = b.udiv(x, sy) if op in ("div", "floordiv") else b.urem(x, sy)
            return b.select(isz, zero, q)
        q, r = b.sdiv(x, sy), b.srem(x, sy)
        if op == "div":
            res = q
        elif op == "fmod":
            res = r
        elif op == "floordiv":
            fix = b.and_(b.icmp_signed("!=", r, zero),
                         b.xor(b.icmp_signed("<", x, zero), b.icmp_signed("<", y, zero)))
            res = b.select(fix, b.sub(q, one), q)
        elif op == "mod":
            fix = b.and_(b.icmp_signed("!=", r, zero),
                         b.xor(b.icmp_signed("<", r, zero), b.icmp_signed("<", y, zero)))
            res = b.select(fix, b.add(r, y), r)
        else:
            raise UnsupportedOpError(f"binary op {op} on {dt} is not supported by the LLVM backend")
        return b.select(isz, zero, res)

    def ipow(self, t: ir.IntType, uns: bool) -> ir.Function:
        """Integer power by squaring (negative exponents: 1 for base 1, else 0, like fz_pow_*)."""
        name = f"fz_pow_{'u' if uns else 'i'}{t.width}"
        if name in self.m.globals:
            return self.m.globals[name]
        f = ir.Function(self.m, ir.FunctionType(t, [t, t]), name)
        f.linkage = "internal"
        a, n = f.args
        entry, loop, done, neg = (f.append_basic_block(x) for x in ("entry", "loop", "done", "neg"))
        b = ir.IRBuilder(entry)
        zero, one = ir.Constant(t, 0), ir.Constant(t, 1)
        isneg = b.icmp_signed("<", n, zero) if not uns else ir.Constant(I1, 0)
        b.cbranch(isneg, neg, loop)
        b.position_at_end(neg)
        b.ret(b.select(b.icmp_signed("==", a, one), one, zero))
        b.position_at_end(loop)
        r = b.phi(t)
        base = b.phi(t)
        k = b.phi(t)
        r.add_incoming(one, entry)
        base.add_incoming(a, entry)
        k.add_incoming(n, entry)
        odd = b.icmp_unsigned("!=", b.and_(k, one), zero)
        r2 = b.select(odd, b.mul(r, base), r)
        base2 = b.mul(base, base)
        k2 = b.lshr(k, one)
        r.add_incoming(r2, loop)
        base.add_incoming(base2, loop)
        k.add_incoming(k2, loop)
        b.cbranch(b.icmp_unsigned("!=", k2, zero), loop, done)
        b.position_at_end(done)
        b.ret(r2)
        return f

    def intrinsic(self, base: str, args: list) -> ir.Value:
        t = args[0].type
        name = f"{base}.{_tname(t)}"
        fn = self.m.globals.get(name)
        if fn is None:
            fn = ir.Function(self.m, ir.FunctionType(t, [t] * len(args)), name)
        return self.b.call(fn, args)

    def libm(self, name: str, t: ir.Type, args: list) -> ir.Value:
        if any(_isvec(a) for a in args):   # no vector math library: one call per lane
            return self.per_lane(lambda a: self.libm(name, t, a), args)
        fn = self.m.globals.get(name)
        if fn is None:
            fn = ir.Function(self.m, ir.FunctionType(t, [t] * len(args)), name)
            fn.attributes.add("nounwind")
        return self.b.call(fn, args)

    def call(self, e: E.Call) -> ir.Value:
        b = self.b
        dt = e.args[0].dtype
        args = [self.cast_to(self.ev(a), a.dtype, dt) for a in e.args]
        if e.fn == "isnan":
            if not is_float(dt):
                return ir.Constant(I1, 0)
            return b.fcmp_unordered("!=", args[0], args[0])
        if e.fn == "isinf":
            if not is_float(dt):
                return ir.Constant(I1, 0)
            a = self.intrinsic("llvm.fabs", args)
            return b.fcmp_ordered("==", a, ir.Constant(a.type, float("inf")))
        intr = INTRINSICS.get(e.fn)
        if intr is None:
            raise UnsupportedOpError(f"math function '{e.fn}' is not supported by the LLVM backend")
        if not is_float(dt):
            if e.fn == "abs":
                x = args[0]
                if is_unsigned(dt):
                    return x
                return b.select(b.icmp_signed("<", x, ir.Constant(x.type, 0)), b.sub(ir.Constant(x.type, 0), x), x)
            # As C: ((T)f((double)x)).
            d = [self.cast_to(a, dt, "float64") for a in args]
            r = self.libm(intr.c_double, ir.DoubleType(), d)
            return self.cast_to(r, "float64", e.dtype)
        work = "float32" if dt == "float16" else dt   # half computes in float, as C's _Float16 promotion
        wargs = [self.cast_to(a, dt, work) for a in args]
        if intr.llvm:
            r = self.intrinsic(intr.llvm, wargs)
        else:
            r = self.libm(intr.c_double if work == "float64" else intr.c_float, value_type(work), wargs)
        return self.cast_to(r, work, e.dtype)

    # ---------------------------------------------------------------- casts
    def cast_to(self, v: ir.Value, src: str, dst: str) -> ir.Value:
        if src == dst:
            return v
        b = self.b
        t = value_type(dst)
        if _isvec(v):
            t = ir.VectorType(t, v.type.count)
        if dst == "bool":
            if is_float(src):
                return b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
            return b.icmp_unsigned("!=", v, ir.Constant(v.type, 0))
        if src == "bool":
            return b.uitofp(v, t) if is_float(dst) else b.zext(v, t)
        if is_float(src) and is_float(dst):
            wa, wb = _fbits(src), _fbits(dst)
            return b.fpext(v, t) if wb > wa else b.fptrunc(v, t)
        if is_float(src):
            # NaN -> 0, out of range saturates (C's fz_f2* give 0 for NaN).
            base = "llvm.fptoui.sat" if is_unsigned(dst) else "llvm.fptosi.sat"
            name = f"{base}.{_tname(t)}.{_tname(v.type)}"
            fn = self.m.globals.get(name)
            if fn is None:
                fn = ir.Function(self.m, ir.FunctionType(t, [v.type]), name)
            return b.call(fn, [v])
        if is_float(dst):
            return b.uitofp(v, t) if is_unsigned(src) else b.sitofp(v, t)
        ws, wd = _elem(v.type).width, _elem(t).width
        if wd == ws:
            return v
        if wd < ws:
            return b.trunc(v, t)
        return b.zext(v, t) if is_unsigned(src) else b.sext(v, t)


def _elem(t: ir.Type) -> ir.Type:
    return t.element if isinstance(t, ir.VectorType) else t


def _tname(t: ir.Type) -> str:
    """LLVM's overloaded-intrinsic suffix of a type: f32, v8f32, i64..."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{_tname(t.element)}"
    return {"float": "f32", "double": "f64", "half": "f16"}.get(str(t)) or f"i{t.width}"


def _isvec(v) -> bool:
    return isinstance(v.type, ir.VectorType)


def _esize(t: ir.Type) -> int:
    return {"float": 4, "double": 8, "half": 2}.get(str(t)) or max(t.width // 8, 1)


def _fbits(dt: str) -> int:
    return {"float16": 16, "float32": 32, "float64": 64}[dt]


def _syms(fn: Function) -> set[str]:
    found = set()

    def expr(e):
        for x in E.walk(E.wrap(e)):
            if isinstance(x, Sym):
                found.add(x.name)

    for ext in fn.outer_extents:
        if not isinstance(ext, int):
            expr(ext)

    def visit(stmts):
        for s in stmts:
            if isinstance(s, Loop):
                if not isinstance(s.extent, int):
                    expr(s.extent)
                visit(s.body)
            elif isinstance(s, (Let, Store, Update, Decl)):
                for part in (getattr(s, "value", None), getattr(s, "init", None), getattr(s, "index", None),
                             getattr(s, "pos", None)):
                    if part is not None:
                        expr(part)
    visit(fn.prelude)
    visit(fn.body)
    return found


def _sym_expr(b: ir.IRBuilder, e, sym_value) -> ir.Value:
    """A run-time extent expression (Syms, constants, + and *) at the call site."""
    e = E.wrap(e)
    if isinstance(e, Sym):
        return sym_value(e.name)
    if isinstance(e, E.Const):
        return ir.Constant(I64, int(e.value))
    if isinstance(e, E.Bin) and e.op in ("add", "sub", "mul", "max", "min"):
        x, y = _sym_expr(b, e.a, sym_value), _sym_expr(b, e.b, sym_value)
        if e.op in ("max", "min"):
            return b.select(b.icmp_signed(">" if e.op == "max" else "<", x, y), x, y)
        return {"add": b.add, "sub": b.sub, "mul": b.mul}[e.op](x, y)
    raise UnsupportedOpError(f"run-time extent {E.to_str(e)} is not supported by the LLVM backend")
