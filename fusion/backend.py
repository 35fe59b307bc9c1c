"""fusion as an ONNX backend (`onnx.backend.base.Backend`), and the
conformance run of the official backend test suite through it.

    from fusion.backend import FusionBackend
    rep = FusionBackend.prepare(model)            # executor="interpreter" (default)
    outputs = rep.run([x])                        # or {"x": x}

Execution is pluggable: an executor is a function `(graph, feeds) -> {output
name: array}`. "interpreter" runs the numpy reference interpreter;
"compiled" (C) and "llvm" (llvmlite JIT) are the code generators, loaded on
first use; `register_executor` adds others.
"""
from __future__ import annotations

import collections
import glob
import os
import time
import unittest
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from fusion.errors import FusionError

Executor = Callable[["object", dict], dict]
EXECUTORS: dict[str, Executor] = {}


def register_executor(name: str, fn: Executor) -> None:
    """Make `fn(graph, feeds) -> {name: array}` available as executor `name`."""
    EXECUTORS[name] = fn


def _interpreter(graph, feeds: dict) -> dict:
    from fusion.ir.interpreter import run
    return run(graph, feeds)


register_executor("interpreter", _interpreter)

# The code generators' executors, loaded on first use (importing a backend costs
# seconds; `fusion conformance` with the interpreter should not pay it).
BUILTIN_EXECUTORS = {"compiled": ("fusion.codegen", "run_compiled"),
                     "llvm": ("fusion.codegen.llvm", "run_jit")}


def get_executor(name: str) -> Executor:
    if name not in EXECUTORS and name in BUILTIN_EXECUTORS:
        import importlib
        module, fn = BUILTIN_EXECUTORS[name]
        register_executor(name, getattr(importlib.import_module(module), fn))
    if name not in EXECUTORS:
        raise FusionError(f"unknown executor '{name}'; choose one of: "
                          f"{', '.join(sorted(set(EXECUTORS) | set(BUILTIN_EXECUTORS)))}")
    return EXECUTORS[name]


class FusionRep(BackendRep):
    """A prepared model. fusion compiles for static shapes, so a model with
    open dimensions is imported again per distinct input shape, and a model
    whose shapes depend on the values of small inputs fed at run time (axes,
    pads, shape tensors, Resize scales: integer inputs up to 4096 elements,
    any input up to 16) is imported again per distinct value of those inputs,
    with them bound as constants. Graphs are cached per shape/value key."""

    def __init__(self, model: onnx.ModelProto, executor: str = "interpreter"):
        import fusion
        self.model = model
        self.executor = get_executor(executor)
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.output_names = [o.name for o in model.graph.output]
        self._graphs: dict = {}
        self._force_bind = False
        self.graph = None
        try:
            self.graph = fusion.load(model, check=False)
        except FusionError as e:
            if not _value_dependent(e):
                raise
        if self.graph is not None and all(v.is_static for v in self.graph.inputs):
            self._graphs[None] = self.graph

    def _graph_for(self, feeds: dict):
        if None in self._graphs and not self._force_bind:
            return self._graphs[None]
        import fusion
        shapes = {k: tuple(np.shape(feeds[k])) for k in self.input_names if k in feeds and np.ndim(feeds[k]) > 0}
        key = tuple(sorted((k, v) for k, v in shapes.items()))
        g = self._graphs.get(key)
        if g is not None:
            return g
        if not self._force_bind:
            try:
                g = fusion.load(self.model, shapes=shapes or None, check=False)
                self._graphs[key] = g
                return g
            except FusionError as e:
                if not _value_dependent(e):
                    raise
        # Bind small inputs as constants (their values decide shapes).
        bound = {k: feeds[k] for k in self.input_names
                 if k in feeds and (feeds[k].dtype.kind in "iub" and feeds[k].size <= 4096 or feeds[k].size <= 16)}
        vkey = key + tuple((k, v.dtype.str, v.shape, v.tobytes()) for k, v in sorted(bound.items()))
        g = self._graphs.get(vkey)
        if g is None:
            m = _with_constants(self.model, bound)
            rest = {k: v for k, v in shapes.items() if k not in bound}
            g = fusion.load(m, shapes=rest or None, check=False)
            self._graphs[vkey] = g
        return g

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            if len(inputs) > len(self.input_names):
                raise FusionError(f"{len(inputs)} inputs given, the model takes {len(self.input_names)}")
            feeds = dict(zip(self.input_names, inputs))
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        g = self._graph_for(feeds)
        try:
            out = self._execute(g, feeds)
        except FusionError as e:
            if not _value_dependent(e):
                raise
            # A rule needed an input's value only at run time: specialize on it.
            self._force_bind = True
            g = self._graph_for(feeds)
            out = self._execute(g, feeds)
        return namedtupledict("Outputs", self.output_names)(*[out[v.name] for v in g.outputs])

    def _execute(self, g, feeds):
        names = {v.name for v in g.inputs}
        return self.executor(g, {k: v for k, v in feeds.items() if k in names})


def _value_dependent(e: FusionError) -> bool:
    """Does this import error come from a shape that depends on input values?"""
    msg = str(e)
    return any(k in msg for k in ("must be known", "must be a constant", "must be constant", "known at compile time",
                                  "computed at run time", "needs constant", "open dimension"))


def _with_constants(model: onnx.ModelProto, bound: dict) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [i for i in m.graph.input if i.name not in bound]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    for k, v in bound.items():
        m.graph.initializer.append(onnx.numpy_helper.from_array(v if v.flags.c_contiguous else v.copy(order="C"), k))
    return m


class FusionBackend(Backend):
    executor = "interpreter"

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return True

    @classmethod
    def prepare(cls, model, device: str = "CPU", executor: str | None = None, **kwargs) -> FusionRep:
        if isinstance(model, (str, os.PathLike)):
            from fusion.ir.onnx_import import read_model
            model = read_model(model)
        try:
            super().prepare(model, device, **kwargs)      # onnx.checker
        except onnx.checker.ValidationError as e:
            raise FusionError(f"the model is not valid ONNX: {str(e).strip().splitlines()[0]}") from None
        return FusionRep(model, executor or cls.executor)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Run one NodeProto on arrays (inputs in the node's input order)."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info)
        from onnx import helper
        arrays = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        names = [n for n in node.input if n]
        vis = [helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                                             np.shape(a)) for n, a in zip(names, arrays)]
        outs = [onnx.ValueInfoProto(name=n) for n in node.output if n]   # types come from inference
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        graph = helper.make_graph([node], "run_node", vis, outs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain or "", opset)])
        # Output types from onnx's inference, so the model passes the checker.
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for o in model.graph.output:
            if o.name in known and known[o.name].type.WhichOneof("value"):
                o.type.CopyFrom(known[o.name].type)
        return cls.prepare(model, device, **kwargs).run(dict(zip(names, arrays)))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().split(":")[0] == "CPU"


prepare = FusionBackend.prepare
run_model = FusionBackend.run_model
run_node = FusionBackend.run_node
supports_device = FusionBackend.supports_device


# ---------------------------------------------------------------------------
# Why a suite test is skipped: only for things fusion's IR does not hold.

_NO_NUMPY = {
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.FLOAT8E4M3FN: "float8", onnx.TensorProto.FLOAT8E4M3FNUZ: "float8",
    onnx.TensorProto.FLOAT8E5M2: "float8", onnx.TensorProto.FLOAT8E5M2FNUZ: "float8",
    onnx.TensorProto.INT4: "int4", onnx.TensorProto.UINT4: "int4",
    onnx.TensorProto.COMPLEX64: "complex", onnx.TensorProto.COMPLEX128: "complex",
}
for _n, _what in (("FLOAT4E2M1", "float4"), ("INT2", "int2"), ("UINT2", "int2"), ("FLOAT8E8M0", "float8")):
    if hasattr(onnx.TensorProto, _n):
        _NO_NUMPY[getattr(onnx.TensorProto, _n)] = _what

# Ops whose outputs are random draws: the expected outputs cannot be reproduced.
RANDOM_OPS = {"Bernoulli", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}


def skip_reason(model: onnx.ModelProto) -> str | None:
    """A reason to skip this model in the conformance run, or None."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    reasons = []

    def tp_reason(tp: onnx.TypeProto) -> str | None:
        kind = tp.WhichOneof("value")
        if kind in ("sequence_type", "optional_type", "map_type", "sparse_tensor_type"):
            return f"{kind.replace('_type', '')} values (fusion holds tensors only)"
        if kind == "tensor_type":
            e = tp.tensor_type.elem_type
            if e == onnx.TensorProto.STRING:
                return "string tensors (fusion holds numeric tensors only)"
            if e in _NO_NUMPY:
                return f"dtype {_NO_NUMPY[e]} (numpy has no such type)"
        return None

    def visit(g: onnx.GraphProto):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            r = tp_reason(vi.type)
            if r:
                reasons.append(r)
        for t in g.initializer:
            if t.data_type in _NO_NUMPY:
                reasons.append(f"dtype {_NO_NUMPY[t.data_type]} (numpy has no such type)")
            if t.data_type == onnx.TensorProto.STRING:
                reasons.append("string tensors (fusion holds numeric tensors only)")
        for n in g.node:
            if n.op_type in RANDOM_OPS:
                reasons.append("random outputs (the expected values come from another generator)")
            if n.op_type.startswith("Sequence") or n.op_type in ("SplitToSequence", "ConcatFromSequence") \
                    or n.op_type.startswith("Optional"):
                reasons.append("sequence values (fusion holds tensors only)")
            for a in n.attribute:
                if a.HasField("t") and a.t.data_type in _NO_NUMPY:
                    reasons.append(f"dtype {_NO_NUMPY[a.t.data_type]} (numpy has no such type)")
                if a.HasField("t") and a.t.data_type == onnx.TensorProto.STRING:
                    reasons.append("string tensors (fusion holds numeric tensors only)")
                if a.HasField("g"):
                    visit(a.g)
                for sg in a.graphs:
                    visit(sg)

    visit(inferred.graph)
    for f in model.functions:
        for n in f.node:
            if n.op_type in RANDOM_OPS:
                reasons.append("random outputs (the expected values come from another generator)")
    return reasons[0] if reasons else None


class SuiteBackend(FusionBackend):
    """The backend as the test suite sees it: models fusion cannot represent
    are skipped with their reason, everything else must pass."""

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs):
        r = skip_reason(model)
        if r:
            raise unittest.SkipTest(r)
        return super().prepare(model, device, **kwargs)


# ---------------------------------------------------------------------------
# Conformance: run the suite's model tests without pytest (fusion conformance)

CATEGORIES = ("node", "simple", "pytorch-converted", "pytorch-operator")


@dataclass
class Result:
    category: str
    name: str
    status: str                 # passed, failed, skipped
    ops: list = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0


def _load_tensor(path: str, tp: onnx.TypeProto):
    with open(path, "rb") as f:
        data = f.read()
    kind = tp.WhichOneof("value")
    if kind == "sequence_type":
        s = onnx.SequenceProto()
        s.ParseFromString(data)
        return onnx.numpy_helper.to_list(s)
    if kind == "optional_type":
        o = onnx.OptionalProto()
        o.ParseFromString(data)
        return onnx.numpy_helper.to_optional(o)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return onnx.numpy_helper.to_array(t)


def _short(e: BaseException) -> str:
    msg = str(e).strip()
    if isinstance(e, AssertionError):
        lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
        keep = [ln for ln in lines if ln.startswith(("Mismatch", "Max absolute", "Output", "Arrays are not",
                                                      "(shapes", "x and y", "Items are not"))]
        msg = "wrong values: " + "; ".join(keep[:3] or lines[:2])
    else:
        msg = msg.splitlines()[0] if msg else ""
        msg = f"{type(e).__name__}: {msg}" if not isinstance(e, FusionError) else msg
    return msg[:300]


def _data_sets(case, model):
    """(inputs, expected outputs) pairs: in memory (node tests) or from test_data_set_* folders."""
    if case.model is not None:
        for inputs, refs in case.data_sets:
            yield ([_as_array(x) for x in inputs], [_as_array(x) for x in refs])
        return
    for d in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(d, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(d, "output_*.pb")))
        yield ([_load_tensor(os.path.join(d, f"input_{i}.pb"), model.graph.input[i].type) for i in range(n_in)],
               [_load_tensor(os.path.join(d, f"output_{i}.pb"), model.graph.output[i].type) for i in range(n_out)])


def _as_array(x):
    return onnx.numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


def run_case(case, category: str, executor: str = "interpreter", backend=FusionBackend) -> Result:
    """Run one suite test case (an onnx.backend.test.loader TestCase) -> Result."""
    from onnx.backend.test.runner import Runner
    t0 = time.perf_counter()
    model = case.model if case.model is not None else onnx.load(os.path.join(case.model_dir, "model.onnx"))
    ops = sorted({n.op_type for n in model.graph.node}) or ["(none)"]
    res = Result(category, case.name, "passed", ops)
    r = skip_reason(model)
    if r:
        res.status, res.reason = "skipped", r
        return res
    try:
        rep = backend.prepare(model, "CPU", executor=executor)
        for inputs, refs in _data_sets(case, model):
            outs = list(rep.run(inputs))
            Runner.assert_similar_outputs(refs, outs, rtol=case.rtol, atol=case.atol, model_dir=case.model_dir)
    except unittest.SkipTest as e:
        res.status, res.reason = "skipped", str(e)
    except Exception as e:  # every failure is recorded with its reason, never raised
        res.status, res.reason = "failed", _short(e)
    res.seconds = time.perf_counter() - t0
    return res


_LOADED: dict = {}


def _load_kind(kind: str) -> list:
    # Generating the node cases takes seconds: load each kind once per process.
    if kind not in _LOADED:
        import warnings
        from onnx.backend.test.loader import load_model_tests
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _LOADED[kind] = load_model_tests(kind=kind)
    return _LOADED[kind]


def suite_cases(categories=CATEGORIES, pattern: str | None = None):
    """(category, onnx.backend.test TestCase) for every local suite test (none needs a download)."""
    import re
    rx = re.compile(pattern) if pattern else None
    for cat in categories:
        for case in _load_kind(cat):
            if case.model_dir is None and case.model is None:
                continue  # needs a download
            if rx and not rx.search(case.name):
                continue
            yield cat, case


def run_suite(categories=CATEGORIES, executor: str = "interpreter", pattern: str | None = None,
              progress=None) -> list[Result]:
    cases = list(suite_cases(categories, pattern))
    out = []
    for cat, case in cases:
        out.append(run_case(case, cat, executor))
        if progress is not None:
            progress(len(out), len(cases), case.name)
    return out


def failing_op(r: Result) -> str:
    """The op a failure is filed under: the node the error names, else the model's only op."""
    import re
    m = re.search(r"node '[^']*' \((\w+)\)", r.reason)
    if m:
        return m.group(1)
    ops = [o for o in r.ops if o != "Constant"]
    if len(ops) == 1:
        return ops[0]
    if r.name.endswith("_expanded") or "_expanded_" in r.name:
        return "(function body of " + r.name[5:].split("_expanded")[0] + ")"
    return "(several ops: " + "+".join(ops[:4]) + ")"


def summarize(results: list[Result]) -> dict:
    """Counts per category, failures grouped by op, skips grouped by reason."""
    per = collections.OrderedDict()
    fail_by_op: dict[str, list] = collections.defaultdict(list)
    skip_by_reason: dict[str, list] = collections.defaultdict(list)
    for r in results:
        c = per.setdefault(r.category, {"passed": 0, "failed": 0, "skipped": 0, "total": 0})
        c[r.status] += 1
        c["total"] += 1
        if r.status == "failed":
            fail_by_op[failing_op(r)].append({"test": r.name, "reason": r.reason})
        elif r.status == "skipped":
            skip_by_reason[r.reason].append(r.name)
    total = {k: sum(c[k] for c in per.values()) for k in ("passed", "failed", "skipped", "total")}
    return {"categories": per, "total": total,
            "failures_by_op": dict(sorted(fail_by_op.items(), key=lambda kv: (-len(kv[1]), kv[0]))),
            "skips_by_reason": dict(sorted(skip_by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])))}
