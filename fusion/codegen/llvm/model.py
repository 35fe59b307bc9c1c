"""A planned graph -> one LLVM module plus the data to run it (a `Program`).

The blocks are lowered by the C path's ModelEmitter (same loop nests, same
constant folding, same data-dependent dims), with two differences made in a
subclass, without touching the C path:

* a block whose fast kernel would be C text (anchors.fast_block) is lowered
  to its plain loop nest instead;
* an opaque block (TopK, NonMaxSuppression, RoiAlign...) becomes a *host
  step*: the op table's numpy `reference` runs between JIT-compiled segments
  (the C path calls hand-written C kernels there, which need a C compiler).

Consecutive compiled blocks form one exported segment function
`fz_seg_K(inputs, outputs, weights, arena, dyn)`; a model without host steps
is one segment, also exported as `fz_model_run`. Intermediates live in one
arena planned by liveness (fusion/codegen/memory.py), weights in one blob.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir

from fusion.errors import UnsupportedOpError
from fusion.ir.graph import Value
from fusion.plan.types import Block
from fusion.codegen import lower as L
from fusion.codegen.emit import IOSpec, ModelEmitter
from fusion.codegen.loops import Function
from fusion.codegen.memory import ALIGN, Interval, align, plan_memory
from fusion.codegen.llvm.printer import DTYPES, I64, VOID, FunctionLowering
from fusion.codegen.llvm.runtime import add_runtime

I8P = ir.IntType(8).as_pointer()
SEG_TYPE = ir.FunctionType(VOID, [I8P.as_pointer(), I8P.as_pointer(), I8P, I8P, I64.as_pointer()])


@dataclass
class HostStep:
    """An opaque op run by numpy between compiled segments."""
    block: Block
    fn: Function       # its buffers (names, capacity shapes, roles)


@dataclass
class Segment:
    name: str
    functions: list[Function]


@dataclass
class Program:
    ir_text: str
    steps: list                     # Segment | HostStep, in run order
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    storage: dict[str, tuple]       # buffer name -> ("in", i) | ("out", j) | ("weight", off) | ("arena", off)
    weights: bytes                  # the blob the "weight" offsets point into
    arena_bytes: int
    dyn_names: list[str]            # dyn[k] holds this run-time dim (fz_dyn_*)
    dyn_bounds: list[int]
    tail: list[tuple]               # graph outputs nobody writes: (j, "out"|"in"|"weight", src)
    out_dims: list[list]            # per output: ints or sympy exprs over dyn symbols
    blocks: list[dict] = field(default_factory=list)
    graph_name: str = "model"
    names: dict = field(default_factory=dict)   # id(Value) -> buffer name (host steps find their arrays)


class LLVMEmitter(ModelEmitter):
    """ModelEmitter that yields plain loop nests and host steps (see module doc)."""

    def lower_block(self, b: Block):
        outs = [v for v in b.outputs if self.constval(v) is None]
        if not outs or self.fold(b):
            return None
        if b.opaque:
            return self.host_step(b, outs)
        touched = {id(v): v for n in b.nodes for v in n.all_inputs() + n.outputs}
        dynamic = [v for v in touched.values() if v.shape is not None and not v.is_static]
        if dynamic:
            return self._lower_dynamic(b, outs, dynamic)
        # One loop nest per output size, as the C path does (LayerNormalization's
        # Mean and InvStdDev give one block outputs of different sizes).
        groups: dict[int, list[Value]] = {}
        for v in outs:
            groups.setdefault(int(np.prod(self.shape_of(v))), []).append(v)
        fns = [L.lower_block(b.name if k == 0 else f"{b.name}_{k + 1}", b.nodes, grp, cname=self.cname,
                             literal=self.literal, shape_of=self.shape_of, buffers_for=self.buffers_for)
               for k, grp in enumerate(groups.values())]
        return fns[0] if len(fns) == 1 else fns

    def host_step(self, b: Block, outs: list[Value]) -> HostStep:
        node = b.nodes[0]
        od = node.opdef
        if od is None or od.reference is None or od.needs_env:
            raise UnsupportedOpError(f"{node.label()}: op '{node.op}' has no loop form and no reference "
                                     f"implementation the LLVM backend can call; it cannot be compiled yet")
        self._define_dims(node)
        loads = {self.cname(v): v for v in node.inputs if v is not None}
        fn = Function(b.name, self.buffers_for(loads, outs), [], [], [], schedule=f"host step: numpy {node.op}")
        return HostStep(b, fn)

    def _define_dims(self, node) -> None:
        """Bounds of the run-time dims an opaque op decides (its capacity)."""
        import sympy
        dyn_out = [v for v in node.outputs if v is not None and v.shape is not None and not v.is_static]
        if not dyn_out:
            return
        from fusion.codegen.opaque_calls import opaque_module
        mod = opaque_module()
        if mod is None or not mod.supported(node):
            raise UnsupportedOpError(f"{node.label()}: {node.op}'s output size is decided at run time and no "
                                     f"capacity rule for it is available; it cannot be compiled yet")
        from fusion.codegen.opaque_calls import capacity_output_shapes
        caps = capacity_output_shapes(mod, node, self.shape_of)
        for k, v in enumerate(node.outputs):
            if v is None or v.shape is None or k >= len(caps):
                continue
            for d, cap in zip(v.shape, caps[k]):
                if isinstance(d, sympy.Symbol):
                    self.define_dim(d, int(cap))

    # ---------------------------------------------------------------- program
    def program(self, progress=None, split: bool = False) -> Program:
        """split: one segment per block (the JIT then times each block: profiling)."""
        g = self.graph
        for v in g.inputs:
            if not v.is_static:
                raise UnsupportedOpError(f"input '{v.name}' has open dimensions {list(v.shape)}; bind them with "
                                         f"--shape {v.name}=" + "x".join(str(d) if isinstance(d, int) else "N"
                                                                         for d in v.shape))
        for v in g.inputs + g.outputs:
            if v.dtype.name not in DTYPES:
                raise UnsupportedOpError(f"{'input' if v in g.inputs else 'output'} '{v.name}' has element type "
                                         f"{v.dtype.name}, which the LLVM backend does not support")
        if progress is not None and hasattr(progress, "start"):
            progress.start(len(self.plan.blocks))
        items: list[tuple[Block, Function | HostStep]] = []
        for b in self.plan.blocks:
            x = self.lower_block(b)
            if progress is not None:
                progress.step(b.name)
            for f in (x if isinstance(x, list) else [x] if x is not None else []):
                items.append((b, f))
        return self._assemble_program(items, split)

    def _assemble_program(self, items, split: bool = False) -> Program:
        g = self.graph
        fns = [x.fn if isinstance(x, HostStep) else x for _, x in items]
        in_index = {id(v): i for i, v in enumerate(g.inputs)}
        out_index: dict[int, int] = {}
        for j, v in enumerate(g.outputs):
            out_index.setdefault(id(v), j)
        values_by_name = {self.names[id(v)]: v for v in g.values.values() if id(v) in self.names}
        for n in g.nodes:
            for v in n.outputs:
                if id(v) in self.names:
                    values_by_name[self.names[id(v)]] = v
        written: dict[str, int] = {}
        last_read: dict[str, int] = {}
        for k, fn in enumerate(fns):
            for buf in fn.buffers:
                if buf.role == "out":
                    written.setdefault(buf.name, k)
                elif buf.role == "in":
                    last_read[buf.name] = k
        intervals = [Interval(name, self.nbytes(values_by_name[name]), k, last_read.get(name, k))
                     for name, k in written.items() if id(values_by_name[name]) not in out_index]
        arena = plan_memory(intervals)
        storage: dict[str, tuple] = {iv.key: ("arena", iv.offset) for iv in intervals}
        for fn in fns:
            for buf in fn.buffers:
                v = values_by_name.get(buf.name)
                if buf.role == "weight":
                    storage[buf.name] = ("weight", self.weights[buf.name][0])
                elif v is not None and id(v) in in_index:
                    storage[buf.name] = ("in", in_index[id(v)])
                elif v is not None and id(v) in out_index:
                    storage[buf.name] = ("out", out_index[id(v)])
                elif buf.name not in storage:
                    raise AssertionError(f"no storage for {buf.name}")
        tail = []
        written_outs = {id(values_by_name[n]) for n in written if id(values_by_name[n]) in out_index}
        for j, v in enumerate(g.outputs):
            if id(v) in written_outs and out_index[id(v)] == j:
                continue
            if id(v) in written_outs:
                tail.append((j, "out", out_index[id(v)]))
            elif self.constval(v) is not None:
                off = self.add_weight(self.cname(v), np.asarray(self.constval(v), dtype=v.dtype))
                tail.append((j, "weight", off))
            elif id(v) in in_index:
                tail.append((j, "in", in_index[id(v)]))
            else:
                raise AssertionError(f"graph output {v.name} is never computed")
        blob = bytearray(align(self.weight_end, ALIGN))
        for name, (off, arr) in self.weights.items():
            blob[off:off + arr.nbytes] = arr.tobytes()

        dyn_names = [self.dim_var(s) for s in self.dyn]
        dyn_bounds = list(self.dyn.values())
        module = ir.Module(name=g.name or "model")
        pfor = add_runtime(module)
        steps: list = []
        current: list[Function] = []
        lowerings: dict[str, FunctionLowering] = {}
        tasks: dict[str, ir.Function] = {}

        def close_segment():
            if current:
                steps.append(Segment(f"fz_seg_{sum(isinstance(s, Segment) for s in steps)}", list(current)))
                current.clear()

        for (b, x), fn in zip(items, fns):
            if isinstance(x, HostStep):
                close_segment()
                steps.append(x)
                continue
            fl = FunctionLowering(module, fn, vector_bits=self.target.vector_bits)
            tasks[fn.name] = fl.lower()
            fn.schedule = fl.fn.schedule   # the printer may have unrolled-and-jammed it
            if fl.lanes > 1:
                fn.schedule += f", {fl.lanes} SIMD lanes over {fl.lane_var.name}"
            lowerings[fn.name] = fl
            current.append(fn)
            if split:
                close_segment()
        close_segment()
        segs = [s for s in steps if isinstance(s, Segment)]
        for s in segs:
            self._segment(module, s, lowerings, tasks, storage, dyn_names, pfor)
        if not any(isinstance(s, HostStep) for s in steps):
            run = ir.Function(module, SEG_TYPE, "fz_model_run")
            b = ir.IRBuilder(run.append_basic_block("entry"))
            for s in segs:
                b.call(module.globals[s.name], run.args)
            b.ret_void()
        outs = [IOSpec(v.name, v.dtype.name, self.shape_of(v), not v.is_static) for v in g.outputs]
        ins = [IOSpec(v.name, v.dtype.name, self.shape_of(v)) for v in g.inputs]
        out_dims = [[int(d) if isinstance(d, (int, np.integer)) else d for d in v.shape] for v in g.outputs]
        info = []
        for b, x in items:
            fn = x.fn if isinstance(x, HostStep) else x
            info.append({"name": fn.name, "ops": [n.op for n in b.nodes], "class": b.mapping.short,
                         "schedule": fn.schedule, "parallel": fn.parallel, "host_step": isinstance(x, HostStep)})
        return Program(str(module), steps, ins, outs, storage, bytes(blob), max(arena, 64), dyn_names, dyn_bounds,
                       tail, out_dims, info, g.name or "model", dict(self.names))

    def _segment(self, module, seg: Segment, lowerings, tasks, storage, dyn_names, pfor) -> None:
        f = ir.Function(module, SEG_TYPE, seg.name)
        ins, outs, W, M, dyn = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))

        def sym_value(name):
            return b.load(b.gep(dyn, [ir.Constant(I64, dyn_names.index(name))]))

        def address(buf_name):
            kind, where = storage[buf_name]
            if kind == "in":
                return b.ptrtoint(b.load(b.gep(ins, [ir.Constant(I64, where)])), I64)
            if kind == "out":
                return b.ptrtoint(b.load(b.gep(outs, [ir.Constant(I64, where)])), I64)
            base = W if kind == "weight" else M
            return b.ptrtoint(b.gep(base, [ir.Constant(I64, where)]), I64)

        for fn in seg.functions:
            fl = lowerings[fn.name]
            layout = fl.slot_layout()
            slots = b.alloca(I64, ir.Constant(I64, max(len(layout), 1)), name=f"{fn.name}_slots")
            for k, (kind, name) in enumerate(layout):
                v = address(name) if kind == "buf" else sym_value(name)
                b.store(v, b.gep(slots, [ir.Constant(I64, k)]))
            total = fl.total(b, sym_value)
            if fn.parallel:
                b.call(pfor, [total, tasks[fn.name], slots])
            else:
                b.call(tasks[fn.name], [slots, ir.Constant(I64, 0), total])
        b.ret_void()


def build_program(model, target="host", *, plan=None, rewrite: bool = True, profile_db=None, shapes=None,
                  progress=None, profile: bool = False) -> tuple[Program, object]:
    """Load, rewrite, plan and lower a model into a Program (and the plan)."""
    from fusion.targets import Target, get_target
    from fusion.codegen.driver import planned_graph
    t = target if isinstance(target, Target) else get_target(target)
    graph, plan = planned_graph(model, t, plan, rewrite=rewrite, profile_db=profile_db, shapes=shapes)
    em = LLVMEmitter(graph, plan, t)
    return em.program(progress=progress, split=profile), plan
