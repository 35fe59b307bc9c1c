"""A planned graph -> an OpenCL program: kernel source, weights blob, and the
step list the host runs (kernels and host steps, in plan order).

Lowering is the C backend's (ModelEmitter + fusion/codegen/lower.py): the
same loop-nest Functions, printed by clprint. What differs from the CPU
library: GEMM anchors get the local-memory tiled kernel (gemm.py) instead of
the CPU kernels (which are C text), and opaque blocks (TopK, RoiAlign...)
become host steps that run the op table's numpy reference between kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusion.errors import FusionError, UnsupportedOpError
from fusion.ir.graph import Value
from fusion.plan.types import Block
from fusion.codegen import lower as L
from fusion.codegen.emit import ModelEmitter
from fusion.codegen.loops import Function, Let, Loop
from fusion.codegen.memory import ALIGN, Interval, align, naive_bytes, plan_memory
from fusion.codegen.opencl.clprint import PRELUDE, KernelPrinter, Place, intrinsic_defines

DIMS = "fz_dims"   # the lowering's array of run-time sizes (int64), device storage "D"


@dataclass
class KernelStep:
    name: str                 # kernel name in the program
    block: str
    storages: list[str]       # argument order
    total: int                # work-items needed (flattened outer range)
    fn: Function
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    local: int = 0            # fixed work-group size (tiled kernels), 0: chosen at load
    global_size: int = 0      # fixed global size (tiled kernels), 0: total rounded up
    ops: list[str] = field(default_factory=list)
    anchor: str | None = None
    schedule: str = ""
    syms: list[str] = field(default_factory=list)   # run-time sizes passed after the storages


@dataclass
class HostStep:
    """An opaque block run on the host: read back its inputs, run the op
    table's reference, write its outputs back."""
    block: Block
    reads: list[str]          # buffer names of block inputs that live on the device
    writes: list[str]
    consts: dict              # value name -> array for constant inputs
    names: dict               # id(value) -> buffer name
    reason: str = ""          # why a non-opaque block runs here (the lowering refused it)


@dataclass
class Program:
    source: str
    weights: bytes
    arena_bytes: int
    naive_arena_bytes: int
    steps: list
    places: dict[str, Place]
    sizes: dict[str, tuple[str, tuple]]     # buffer name -> (dtype, shape)
    inputs: list
    outputs: list
    tail: list                              # (output index, kind, source) for outputs no step writes
    fp16: bool = False
    kernel_args_max: int = 0
    dyn: dict = field(default_factory=dict)      # kernel argument (fz_dyn_*) -> (sympy formula, bound)
    shapes: dict = field(default_factory=dict)   # buffer name -> symbolic shape (run-time dims)
    values: dict = field(default_factory=dict)   # buffer name -> graph Value (block-by-block checks)
    names_of_outputs: list = field(default_factory=list)   # buffer name of each graph output (or None)
    dim_slots: list = field(default_factory=list)   # formula (sympy) of each element of the fz_dims buffer (D)


def widen_ndrange(fn: Function) -> Function:
    """Move loops with independent iterations into the NDRange: the CPU
    schedule keeps the innermost dim as a loop to vectorize, a GPU wants one
    work-item per element. A loop qualifies when it is all that follows the
    (recomputable) Lets of the outer body; a reduction's accumulator stops it."""
    while True:
        lets = [s for s in fn.body[:-1] if isinstance(s, Let)]
        last = fn.body[-1] if fn.body else None
        if not isinstance(last, Loop) or len(lets) != len(fn.body) - 1 or not isinstance(last.extent, int):
            return fn
        fn.outer = list(fn.outer) + [last.var]
        fn.outer_extents = list(fn.outer_extents) + [last.extent]
        fn.body = lets + list(last.body)
        fn.schedule += f"; {last.var.name} in the NDRange"


class OpenCLEmitter(ModelEmitter):
    """ModelEmitter without the CPU fast kernels and C calls for opaque ops."""

    # Kernels may read run-time sizes (fz_dims, storage D) and take formulas of
    # them as loop extents: the runtime keeps both current (runtime.py).
    dims_in_kernels = True

    def __init__(self, graph, plan, target, fp16: bool = False, tiled_gemm: bool = True):
        super().__init__(graph, plan, target)
        self.fp16, self.tiled_gemm = fp16, tiled_gemm
        self.tiles: dict[str, object] = {}     # function name -> tiled GEMM description

    def lower_block(self, b: Block):
        outs = [v for v in b.outputs if self.constval(v) is None]
        if not outs or self.fold(b):
            return None
        if b.opaque:
            return self.host_block(b, outs)
        touched = {id(v): v for n in b.nodes for v in n.all_inputs() + n.outputs}
        dynamic = [v for v in touched.values() if v.shape is not None and not v.is_static]
        if dynamic:
            # Capacity layout, run-time extents as kernel arguments (ModelEmitter's rule).
            try:
                self._no_data_sizes(b, dynamic)
                return self._lower_dynamic(b, outs, dynamic)
            except UnsupportedOpError as e:
                # The shared lowering cannot index this block over run-time sizes (a
                # Transpose of NonZero's output, an extent like Min(200, k)): it is
                # small post-processing between opaque ops, so the host runs it.
                step = self.host_fallback(b, outs)
                if step is None:
                    raise
                step.reason = str(e)
                return step
        groups: dict[int, list[Value]] = {}
        for v in outs:
            groups.setdefault(int(np.prod(self.shape_of(v))), []).append(v)
        if self.tiled_gemm and len(groups) == 1:
            from fusion.codegen.opencl import gemm
            fn = gemm.tiled_block(self, b, outs)
            if fn is not None:
                return fn
        fns = [widen_ndrange(L.lower_block(b.name if k == 0 else f"{b.name}_{k + 1}", b.nodes, grp,
                                           cname=self.cname, literal=self.literal, shape_of=self.shape_of,
                                           buffers_for=self.buffers_for))
               for k, grp in enumerate(groups.values())]
        return fns[0] if len(fns) == 1 else fns

    def _no_data_sizes(self, b: Block, dynamic: list[Value]) -> None:
        """Sizes read from tensor data (shape_infer's value symbols) are read by
        the C model_run between kernels; here the host runs such blocks (numpy
        gives them their actual shapes)."""
        import sympy
        for n in b.nodes:
            if n.op == "ScatterElements":
                # the C backend's direct scatter has no kernel form here; the loop nest's
                # search over run-time indices gave wrong rows on PoCL (mask-rcnn's RoI pooler)
                raise UnsupportedOpError(f"block {b.name}: ScatterElements over sizes decided at run time runs on "
                                         f"the host")
        srcs = getattr(self.graph, "value_sources", None) or {}
        for v in dynamic:
            for d in v.shape:
                if any(str(x) in srcs for x in sympy.sympify(d).free_symbols):
                    raise UnsupportedOpError(f"block {b.name}: '{v.name}' has a size read from data ({d}), decided at "
                                             f"run time on the host")

    def host_fallback(self, b: Block, outs: list[Value]) -> HostStep | None:
        """A HostStep for a block the kernel lowering refused, or None when the
        host cannot run it either (no reference, or a size with no bound)."""
        try:
            return self.host_block(b, outs)
        except UnsupportedOpError:
            return None

    def host_block(self, b: Block, outs: list[Value]) -> HostStep:
        for n in b.nodes:
            if n.opdef is None or n.opdef.reference is None:
                raise UnsupportedOpError(f"{n.label()}: op '{n.op}' has no reference to run as a host step")
        if any(v.shape is None or not v.is_static for v in outs):
            # Bounds where a capacity rule knows them; a size without one is fine as
            # long as only host steps read the value (program() keeps it on the host)
            # and fails there, naming the value, when a kernel needs it.
            try:
                self._define_dims(b)
            except FusionError:   # no capacity rule (UnsupportedOpError) or none that applies (ShapeError)
                pass
        names = {}
        consts = {}
        reads = []
        for v in b.inputs:
            a = self.constval(v)
            if a is not None:
                consts[v.name] = np.asarray(a, dtype=v.dtype)
            else:
                names[id(v)] = self.cname(v)
                reads.append(self.cname(v))
        writes = []
        for v in outs:
            names[id(v)] = self.cname(v)
            writes.append(self.cname(v))
        return HostStep(b, reads, writes, consts, names)

    def _define_dims(self, b: Block) -> None:
        """Bounds of the run-time dims the block's ops decide (NMS: boxes kept),
        from the same capacity rule as their C kernels. Dims that are
        expressions of known sizes (Min(200, k)) need no rule."""
        import sympy
        for node in b.nodes:
            new = [d for v in node.outputs if v is not None and v.shape is not None for d in v.shape
                   if not isinstance(d, (int, np.integer)) and isinstance(sympy.sympify(d), sympy.Symbol)
                   and str(sympy.sympify(d)) not in self.dyn]
            if new:
                self._define_node_dims(node)

    def _define_node_dims(self, node) -> None:
        import sympy
        if node.op == "If" and hasattr(self, "shape_of_deferred"):
            # the larger branch capacity (the C emitter's rule for If outputs)
            branches = [node.attrs["then_branch"], node.attrs["else_branch"]]
            for j, v in enumerate(node.outputs):
                for d, dim in enumerate(v.shape or ()):
                    if not isinstance(dim, (int, np.integer)) and isinstance(sympy.sympify(dim), sympy.Symbol):
                        self.define_dim(dim, max(self.shape_of_deferred(sg.outputs[j], d, sg) for sg in branches))
            return
        dyn_ins = [v for v in node.inputs if v is not None and v.shape is not None and not v.is_static]
        saved = [v.shape for v in dyn_ins]
        try:
            from fusion.codegen import opaque
            for v in dyn_ins:   # the capacity rule sees inputs at their bound
                v.shape = self.shape_of(v)
            caps = opaque.max_output_shapes(node) if opaque.supported(node) else None
        except ImportError:
            caps = None
        finally:
            for v, sh in zip(dyn_ins, saved):
                v.shape = sh
        if caps is None:
            raise UnsupportedOpError(f"{node.label()}: {node.op} gives a tensor whose size depends on the data and "
                                     f"no capacity rule is known for it")
        for v, cap in zip(node.outputs, caps):
            if v.shape is None:
                continue
            for d, c in zip(v.shape, cap):
                if not isinstance(d, (int, np.integer)) and isinstance(sympy.sympify(d), sympy.Symbol):
                    self.define_dim(d, int(c))

    # ----------------------------------------------------------------- program
    def program(self, max_kernel_args: int = 0, fp16_arith: bool = False) -> Program:
        g = self.graph
        for v in g.inputs:
            if not v.is_static:
                raise UnsupportedOpError(f"input '{v.name}' has open dimensions {list(v.shape)}; bind them with "
                                         f"--shape {v.name}=...")
        items = []
        for b in self.plan.blocks:
            r = self.lower_block(b)
            for x in (r if isinstance(r, list) else [r] if r is not None else []):
                items.append((b, x))
        in_index = {id(v): i for i, v in enumerate(g.inputs)}
        out_index: dict[int, int] = {}
        for j, v in enumerate(g.outputs):
            out_index.setdefault(id(v), j)
        by_name: dict[str, Value] = {}
        for v in list(g.values.values()) + [o for n in g.nodes for o in n.outputs]:
            if id(v) in self.names:
                by_name[self.names[id(v)]] = v
        # Liveness over the step sequence (host steps included), then one arena.
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        sizes: dict[str, tuple[str, tuple]] = {}
        for k, (_, x) in enumerate(items):
            if isinstance(x, HostStep):
                ws, rs = x.writes, x.reads
            else:
                ws = [bf.name for bf in x.buffers if bf.role == "out"]
                rs = [bf.name for bf in x.buffers if bf.role == "in"]
            for n in ws:
                first.setdefault(n, k)
            for n in rs:
                if n != DIMS:
                    last[n] = k
        # Values only host steps touch stay on the host (numpy, actual shape): no
        # device buffer, so no capacity is needed for the sizes only they decide.
        kernel_reads = {n for _, x in items if not isinstance(x, HostStep)
                        for n in (bf.name for bf in x.buffers if bf.role == "in")}
        host_only = {n for _, x in items if isinstance(x, HostStep) for n in x.writes} - kernel_reads
        places: dict[str, Place] = {DIMS: Place("D", 0)}
        intervals = []
        for name in sorted(set(first) | set(last)):
            v = by_name[name]
            if name in host_only:
                sizes[name] = (v.dtype.name, None)
                places[name] = Place("host", 0)
                continue
            sizes[name] = (v.dtype.name, self.shape_of(v))
            if id(v) in in_index:
                places[name] = Place(f"in{in_index[id(v)]}", 0)
            elif id(v) in out_index:
                places[name] = Place(f"out{out_index[id(v)]}", 0)
            elif name in first:
                nb = self.nbytes(v) // (2 if self.fp16 and v.dtype == np.float32 else 1)
                intervals.append(Interval(name, nb, first[name], last.get(name, first[name])))
            else:
                raise AssertionError(f"{name} is read but never written")
        arena = plan_memory(intervals)
        for iv in intervals:
            places[iv.key] = Place("M", iv.offset)
        self._relayout_weights()
        for name, (off, arr) in self.weights.items():
            places[name] = Place("W", off)
        kernels, steps = [], []
        args_max = 0
        for k, (b, x) in enumerate(items):
            if isinstance(x, HostStep):
                steps.append(x)
                continue
            kname = f"fz_{x.name}"
            tile = self.tiles.get(x.name)
            if tile is not None:
                text, storages = tile.kernel(kname, places, self.fp16)
                step = KernelStep(kname, b.name, storages, tile.total, x, local=tile.local,
                                  global_size=tile.global_size)
            else:
                kp = KernelPrinter(x, places, kname, fp16=self.fp16, fp16_arith=fp16_arith)
                text = kp.kernel()
                step = KernelStep(kname, b.name, kp.storages(), kp.total(), x)
                step.syms = kp.sym_args()
            step.ops = [n.op for n in b.nodes]
            step.anchor = b.anchor.op if b.anchor is not None else None
            step.schedule = x.schedule
            step.reads = [bf.name for bf in x.buffers if bf.role != "out"]
            step.writes = [bf.name for bf in x.buffers if bf.role == "out"]
            nargs = len(step.storages) + len(step.syms)
            if max_kernel_args and nargs > max_kernel_args:
                raise FusionError(f"block {b.name}: kernel {kname} needs {nargs} arguments, the "
                                  f"target allows {max_kernel_args}; plan with this target so the planner splits it")
            args_max = max(args_max, nargs)
            kernels.append(text)
            steps.append(step)
        tail = []
        written = set(first)
        for j, v in enumerate(g.outputs):
            name = self.names.get(id(v))
            if name in written and out_index[id(v)] == j:
                continue
            if name in written:
                tail.append((j, "output", out_index[id(v)]))
            elif self.constval(v) is not None:
                tail.append((j, "const", np.asarray(self.constval(v), dtype=v.dtype)))
            elif id(v) in in_index:
                tail.append((j, "input", in_index[id(v)]))
            else:
                raise AssertionError(f"graph output {v.name} is never computed")
        source = "\n".join([f"/* {g.name}: generated by fusion for target {self.target.name}; one kernel per "
                            f"fused block */", PRELUDE, intrinsic_defines()] + kernels) + "\n"
        shapes = {name: None if by_name[name].shape is None else tuple(by_name[name].shape) for name in sizes}
        return Program(source, self._blob(), max(arena, ALIGN), naive_bytes(intervals), steps, places, sizes,
                       list(g.inputs), list(g.outputs), tail, self.fp16, args_max,
                       self._dyn_args(), shapes, {name: by_name[name] for name in sizes},
                       [self.names.get(id(v)) for v in g.outputs],
                       [e for _, e in sorted(getattr(self, "dim_slots", {}).values(), key=lambda x: x[0])])

    def _dyn_args(self) -> dict:
        """Kernel argument name -> (formula of run-time symbols, bound): the
        sizes ops decide (fz_dyn_<symbol>) and formulas of them (fz_dyn_e<k>),
        evaluated by the host whenever a host step decides a size."""
        import sympy
        out = {self.dim_var(k): (sympy.Symbol(k), b_) for k, b_ in self.dyn.items()}
        for var, e, bound in getattr(self, "dyn_exprs", {}).values():
            out[var] = (e, int(bound))
        return out

    def _relayout_weights(self) -> None:
        """fp16: float32 weights take half the bytes, so offsets move."""
        if not self.fp16:
            return
        end = 0
        for name, (_, arr) in list(self.weights.items()):
            if arr.dtype == np.float32:
                arr = arr.astype(np.float16)
            off = align(end, ALIGN)
            self.weights[name] = (off, arr)
            end = off + arr.nbytes
        self.weight_end = end

    def _blob(self) -> bytes:
        body = bytearray(align(max(self.weight_end, 1), ALIGN))
        for name, (off, arr) in self.weights.items():
            a = np.ascontiguousarray(arr)
            if self.fp16 and a.dtype == np.float32:
                a = a.astype(np.float16)
            body[off:off + a.nbytes] = a.tobytes()
        return bytes(body)
