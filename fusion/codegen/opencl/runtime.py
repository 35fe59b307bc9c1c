"""Runs a Program through pyopencl: one build, device buffers for weights,
arena, inputs and outputs, kernels enqueued in plan order on one in-order
queue (no host round trips between kernels; host steps read back only the
tensors they need), outputs read at the end.
"""
from __future__ import annotations

import numpy as np

from fusion.errors import FusionError, InputError
from fusion.ir.interpreter import as_value, reference_outputs
from fusion.codegen.opencl.program import HostStep, KernelStep, Program


def _cl():
    try:
        import pyopencl as cl
    except ImportError:
        raise FusionError("the opencl target needs pyopencl (pip install pyopencl)") from None
    return cl


def find_device(prefer: str | None = None):
    """The first OpenCL device (GPU first), or a FusionError saying none is present."""
    cl = _cl()
    try:
        platforms = cl.get_platforms()
    except cl.Error:
        platforms = []
    devices = [d for p in platforms for d in p.get_devices()]
    if not devices:
        raise FusionError("no OpenCL platform is present; install a driver (on Debian: pocl-opencl-icd)")
    if prefer:
        devices = [d for d in devices if prefer.lower() in d.name.lower()] or devices
    devices.sort(key=lambda d: 0 if d.type & cl.device_type.GPU else 1)
    return devices[0]


def device_info(dev) -> dict:
    import pyopencl as cl
    kind = "gpu" if dev.type & cl.device_type.GPU else "cpu" if dev.type & cl.device_type.CPU else "accelerator"
    return {"type": kind, "name": dev.name.strip(), "platform": dev.platform.name.strip(), "version": dev.version.strip(),
            "max_work_group": int(dev.max_work_group_size), "local_mem_bytes": int(dev.local_mem_size),
            "compute_units": int(dev.max_compute_units), "fp16": "cl_khr_fp16" in dev.extensions,
            "fp64": "cl_khr_fp64" in dev.extensions}


def _is_symbol(formula) -> bool:
    import sympy
    return isinstance(formula, sympy.Symbol)


def _eval_dim(formula, values: dict) -> int:
    """A shape formula (a sympy expression; symbol names like
    '/NonMaxSuppression_selected' do not parse back from text) at the given
    symbol values (keyed by name)."""
    import sympy
    e = formula if isinstance(formula, sympy.Basic) else sympy.sympify(formula)
    return int(e.subs({x: values[str(x)] for x in e.free_symbols}))


def pick_local(total: int, limit: int) -> int:
    """Largest power of two <= limit, but not much larger than the work."""
    wg = 1
    while wg * 2 <= limit and wg < total:
        wg *= 2
    return wg


class OpenCLModel:
    def __init__(self, prog: Program, target, device=None, report: dict | None = None, profile: bool = False):
        cl = _cl()
        self.prog, self.target = prog, target
        self.device = device or find_device()
        self.info = device_info(self.device)
        self.ctx = cl.Context([self.device])
        self.profile = profile
        props = cl.command_queue_properties.PROFILING_ENABLE if profile else 0
        self.queue = cl.CommandQueue(self.ctx, properties=props)
        self.seconds: dict[str, float] = {}
        opts = ["-cl-std=CL1.2"] + (["-DFZ_FP64"] if self.info["fp64"] else [])
        try:
            # pyopencl caches the binary by source + options (and PoCL keeps its own cache).
            self.program = cl.Program(self.ctx, prog.source).build(options=opts)
        except cl.RuntimeError as e:
            raise FusionError(f"the OpenCL compiler rejected the generated kernels: {str(e).splitlines()[0]}")
        mf = cl.mem_flags
        self.W = cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=np.frombuffer(prog.weights, np.uint8))
        self.M = cl.Buffer(self.ctx, mf.READ_WRITE, size=prog.arena_bytes)
        self.ins = [cl.Buffer(self.ctx, mf.READ_ONLY, size=max(self._nbytes(v), 4)) for v in prog.inputs]
        # outputs a host step leaves on the host (index -> buffer name) need no device buffer
        self.host_outs = {}
        for j, v in enumerate(prog.outputs):
            pl = prog.places.get(prog.names_of_outputs[j]) if prog.names_of_outputs[j] else None
            if pl is not None and pl.storage == "host":
                self.host_outs[j] = prog.names_of_outputs[j]
        self.outs = [cl.Buffer(self.ctx, mf.READ_WRITE, size=4 if j in self.host_outs else max(self._nbytes(v), 4))
                     for j, v in enumerate(prog.outputs)]
        self.hostvals: dict[str, np.ndarray] = {}
        # run-time sizes: symbol -> value (at the bound until a host step decides it)
        self.dynv = {str(sym): bound for sym, bound in prog.dyn.values() if _is_symbol(sym)}
        self.D = cl.Buffer(self.ctx, mf.READ_ONLY, size=8 * max(len(prog.dim_slots), 1))
        self._upload_dims()
        limit = min(target.max_work_group or 1 << 30, self.info["max_work_group"])
        self.launch = []
        for st in prog.steps:
            if isinstance(st, HostStep):
                self.launch.append(st)
                continue
            k = getattr(self.program, st.name)
            k.set_args(*[self._storage(s) for s in st.storages], *[np.int64(self._dim(s)) for s in st.syms])
            if st.local:
                local, glob = st.local, st.global_size
            else:
                kmax = k.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, self.device)
                local = pick_local(st.total, min(limit, kmax))
                glob = (st.total + local - 1) // local * local
            self.launch.append((st, k, glob, local))
        self.kernel_count = sum(1 for s in prog.steps if isinstance(s, KernelStep))
        self.host_steps = sum(1 for s in prog.steps if isinstance(s, HostStep))
        self.launches = 0
        self.report = report or {}

    def _capacity(self, v) -> tuple:
        """Allocated shape: run-time dims at their bound (the program's sizes)."""
        name = self.prog.names_of_outputs[self.prog.outputs.index(v)] if v in self.prog.outputs else None
        if name in self.prog.sizes and self.prog.sizes[name][1] is not None:
            return tuple(self.prog.sizes[name][1])
        return tuple(int(d) for d in v.shape)

    def _dim(self, arg: str) -> int:
        """Current value of a run-time size kernel argument (a symbol or a
        formula of symbols, clamped to its bound like the C backend does)."""
        formula, bound = self.prog.dyn[arg]
        return min(max(_eval_dim(formula, self.dynv), 0), int(bound))

    def _upload_dims(self) -> None:
        if self.prog.dim_slots:
            cl = _cl()
            vals = np.array([_eval_dim(f, self.dynv) for f in self.prog.dim_slots], np.int64)
            cl.enqueue_copy(self.queue, self.D, vals)

    def _nbytes(self, v) -> int:
        return int(np.prod(self._capacity(v))) * v.dtype.itemsize

    def _storage(self, s: str):
        if s == "W":
            return self.W
        if s == "M":
            return self.M
        if s == "D":
            return self.D
        if s.startswith("in"):
            return self.ins[int(s[2:])]
        return self.outs[int(s[3:])]

    # ------------------------------------------------------------- host steps
    def _actual(self, shape) -> tuple:
        """A symbolic shape at the run-time sizes decided so far."""
        return tuple(int(d) if isinstance(d, (int, np.integer)) else max(_eval_dim(d, self.dynv), 0) for d in shape)

    def _read(self, name: str) -> np.ndarray:
        cl = _cl()
        dt, shape = self.prog.sizes[name]
        pl = self.prog.places[name]
        if pl.storage == "host":
            return self.hostvals[name]
        half = self.prog.fp16 and dt == "float32" and pl.storage == "M"
        a = np.empty(shape, np.float16 if half else dt)
        cl.enqueue_copy(self.queue, a, self._storage(pl.storage), src_offset=pl.offset)
        a = a.astype(np.float32) if half else a
        actual = self._actual(self.prog.shapes[name]) if self.prog.shapes.get(name) is not None else tuple(shape)
        if actual != tuple(shape):   # capacity layout: the tensor is the leading corner
            a = np.ascontiguousarray(a[tuple(slice(0, n) for n in actual)])
        return a

    def _write(self, name: str, a: np.ndarray) -> None:
        cl = _cl()
        dt, shape = self.prog.sizes[name]
        pl = self.prog.places[name]
        if pl.storage == "host":
            a = np.asarray(a)
            self.hostvals[name] = a if a.dtype == object else a.astype(dt, copy=False)
            return
        if tuple(np.shape(a)) != tuple(shape) and any(n > c for n, c in zip(np.shape(a), shape)):
            raise FusionError(f"value {self.prog.values[name].name}: a host step made it {list(np.shape(a))}, "
                              f"beyond the capacity {list(shape)} its device buffer was sized for")
        half = self.prog.fp16 and dt == "float32" and pl.storage == "M"
        a = np.asarray(a).astype(np.float16 if half else dt)
        if a.shape != tuple(shape):   # a run-time size: pad to the capacity layout
            full = np.zeros(shape, a.dtype)
            full[tuple(slice(0, n) for n in a.shape)] = a
            a = full
        a = np.ascontiguousarray(a)
        cl.enqueue_copy(self.queue, self._storage(pl.storage), a, dst_offset=pl.offset)

    def _host(self, st: HostStep) -> None:
        vals = {}
        for v in st.block.inputs:
            vals[id(v)] = st.consts[v.name] if v.name in st.consts else self._read(st.names[id(v)])
        for n in st.block.nodes:
            args = [None if v is None else vals.get(id(v)) for v in n.inputs]
            for v, a in zip(n.outputs, reference_outputs(n, args, dict(vals))):
                if a is None:
                    continue
                a = as_value(v, a)
                vals[id(v)] = a
                self._learn_dims(v, a.shape)
        for v in st.block.outputs:
            if id(v) in st.names:
                self._write(st.names[id(v)], vals[id(v)])

    def _learn_dims(self, v, actual) -> None:
        """Run-time sizes decided by a host step: remembered, and handed to later kernels."""
        import sympy
        changed = False
        for d, n in zip(v.shape or (), actual):
            if not isinstance(d, (int, np.integer)):
                e = sympy.sympify(d)
                if isinstance(e, sympy.Symbol) and self.dynv.get(str(e)) != int(n):
                    self.dynv[str(e)] = int(n)
                    changed = True
        if changed:
            for item in self.launch:
                if not isinstance(item, HostStep) and item[0].syms:
                    st, k = item[0], item[1]
                    for j, s in enumerate(st.syms):
                        k.set_arg(len(st.storages) + j, np.int64(self._dim(s)))
            self._upload_dims()

    # ------------------------------------------------------------------ run
    def check_feeds(self, feeds: dict) -> list[np.ndarray]:
        if not isinstance(feeds, dict):
            raise InputError(f"run() takes a dict of input name -> array; got {type(feeds).__name__}")
        names = [v.name for v in self.prog.inputs]
        unknown = [k for k in feeds if k not in names]
        if unknown:
            raise InputError(f"unknown input '{unknown[0]}'; the model's inputs are: {', '.join(names)}")
        arrays = []
        for v in self.prog.inputs:
            shape = tuple(int(d) for d in v.shape)
            if v.name not in feeds:
                raise InputError(f"input '{v.name}' is missing (expected {v.dtype.name} {list(shape)})")
            a = np.asarray(feeds[v.name])
            if a.dtype != v.dtype:
                raise InputError(f"input '{v.name}' has dtype {a.dtype}, the model expects {v.dtype.name} "
                                 f"(convert with .astype(np.{v.dtype.name}))")
            if tuple(a.shape) != shape:
                raise InputError(f"input '{v.name}' has shape {list(a.shape)}, the model was compiled for "
                                 f"{list(shape)}")
            arrays.append(np.ascontiguousarray(a))
        return arrays

    def run(self, feeds: dict, *, before=None, after=None) -> dict[str, np.ndarray]:
        """before(step) / after(step): called around every step (KernelStep or
        HostStep) for block-by-block checks (tools.check_blocks); with `after`
        the queue is drained after each step, so its buffers can be read."""
        cl = _cl()
        arrays = self.check_feeds(feeds)
        q = self.queue
        events = []
        for buf, a in zip(self.ins, arrays):
            if a.nbytes:
                cl.enqueue_copy(q, buf, a, is_blocking=False)
        for item in self.launch:
            step = item if isinstance(item, HostStep) else item[0]
            if before is not None:
                before(step)
            if isinstance(item, HostStep):
                self._host(item)
            elif item[0].total:
                st, k, glob, local = item
                ev = cl.enqueue_nd_range_kernel(q, k, (glob,), (local,))
                self.launches += 1
                if self.profile:
                    events.append((st.name, ev))
            if after is not None:
                q.finish()
                after(step)
        result = {}
        outs: list = [None] * len(self.prog.outputs)
        tail = {t[0] for t in self.prog.tail}
        for j, v in enumerate(self.prog.outputs):
            if j in self.host_outs or j in tail:
                continue
            outs[j] = np.empty(self._capacity(v), v.dtype)
            if outs[j].nbytes:
                cl.enqueue_copy(q, outs[j], self.outs[j], is_blocking=False)
        q.finish()
        for name, ev in events:
            self.seconds[name] = self.seconds.get(name, 0.0) + (ev.profile.end - ev.profile.start) * 1e-9
        for j, v in enumerate(self.prog.outputs):
            if j in self.host_outs:
                outs[j] = self.hostvals[self.host_outs[j]]
            elif outs[j] is not None:
                actual = self._actual(v.shape)
                if actual != outs[j].shape:
                    outs[j] = np.ascontiguousarray(outs[j][tuple(slice(0, n) for n in actual)])
        for j, kind, src in self.prog.tail:
            outs[j] = np.array(outs[src]) if kind == "output" else np.array(src) if kind == "const" \
                else np.array(arrays[src])
        for v, a in zip(self.prog.outputs, outs):
            result.setdefault(v.name, a)
        self.hostvals = {}
        return result

    def kernel_seconds(self) -> dict[str, float]:
        """Device seconds per kernel over all runs so far (compile with profile=True)."""
        return dict(self.seconds)

    def close(self) -> None:
        for b in [getattr(self, "W", None), getattr(self, "M", None), getattr(self, "D", None)] + \
                getattr(self, "ins", []) + getattr(self, "outs", []):
            if b is not None:
                b.release()
        self.ins, self.outs, self.W, self.M, self.D = [], [], None, None, None
