"""The IR: a Graph of Nodes over Values.

* A Value is one tensor: a name, a numpy dtype and a shape. Shape entries are
  ints, or sympy symbols for dimensions the model leaves open until the user
  binds them. A Value is produced by at most one Node (SSA); graph inputs and
  constants have no producer. Constants hold their data (`const`).
* A Node applies one op from the op table (`fusion.ops`) to input Values
  (None for an omitted optional input) and produces output Values. Its
  attributes are normalized at import: every attribute the op table declares
  is present, defaults filled in, and opset-specific spellings rewritten to
  the one form the table describes.
* `graph.nodes` is kept in topological order.

Edits go through the Graph's methods so use-lists stay right.
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Iterable, Iterator, Sequence

import numpy as np
import sympy

from fusion.errors import FusionError, ShapeError

Dim = "int | sympy.Expr"


def is_static(shape: Sequence) -> bool:
    return all(isinstance(d, (int, np.integer)) for d in shape)


def shape_str(shape: Sequence) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def dtype_str(dtype) -> str:
    return np.dtype(dtype).name if dtype is not None else "?"


class Value:
    __slots__ = ("name", "dtype", "shape", "const", "producer", "uses", "known", "graph")

    def __init__(self, name: str, dtype, shape: Sequence, const: np.ndarray | None = None):
        self.name = name
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.shape = tuple(int(d) if isinstance(d, (int, np.integer)) else d for d in shape) if shape is not None else None
        self.const = const
        self.producer: Node | None = None
        self.uses: list[tuple[Node, int]] = []
        # Data known at compile time for a computed value (shape arithmetic),
        # found by shape inference; the graph still computes it.
        self.known: np.ndarray | None = None
        self.graph: Graph | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and is_static(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def value(self) -> np.ndarray | None:
        """Constant data, or data known from shape inference, else None."""
        return self.const if self.const is not None else self.known

    def type_str(self) -> str:
        return dtype_str(self.dtype) + (shape_str(self.shape) if self.shape is not None else "[?]")

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type_str()}"


class Node:
    __slots__ = ("op", "domain", "name", "inputs", "outputs", "attrs", "graph")

    def __init__(self, op: str, inputs: Sequence[Value | None], outputs: Sequence[Value],
                 attrs: dict | None = None, name: str = "", domain: str = ""):
        self.op = op
        self.domain = domain
        self.name = name
        self.inputs: list[Value | None] = list(inputs)
        self.outputs: list[Value] = list(outputs)
        self.attrs: dict = dict(attrs or {})
        self.graph: Graph | None = None

    @property
    def opdef(self):
        from fusion.ops import get_op
        return get_op(self.op, self.domain)

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    @property
    def output(self) -> Value:
        return self.outputs[0]

    def subgraphs(self) -> list["Graph"]:
        out = []
        for v in self.attrs.values():
            if isinstance(v, Graph):
                out.append(v)
            elif isinstance(v, list) and v and isinstance(v[0], Graph):
                out.extend(v)
        return out

    def captured(self) -> list[Value]:
        """Outer-scope values read by this node's subgraphs (If/Loop/Scan bodies)."""
        out: dict[int, Value] = {}
        for g in self.subgraphs():
            for v in g.outer_reads():
                out[id(v)] = v
        return list(out.values())

    def all_inputs(self) -> list[Value]:
        return [v for v in self.inputs if v is not None] + self.captured()

    def label(self) -> str:
        return f"node '{self.name}' ({self.op})"

    def __repr__(self) -> str:
        return f"<{self.op} {self.name}>"


class Graph:
    def __init__(self, name: str = "graph", opset: dict[str, int] | None = None):
        self.name = name
        self.opset: dict[str, int] = dict(opset or {"": 21})
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.values: dict[str, Value] = {}
        self.parent: Graph | None = None   # for subgraphs
        self.doc: str = ""
        self.metadata: dict[str, str] = {}
        self._names = itertools.count()

    # ------------------------------------------------------------------ values
    def _unique(self, base: str) -> str:
        base = base or "v"
        if base not in self.values and not self._name_in_parents(base):
            return base
        while True:
            n = f"{base}_{next(self._names)}"
            if n not in self.values and not self._name_in_parents(n):
                return n

    def _name_in_parents(self, name: str) -> bool:
        p = self.parent
        while p is not None:
            if name in p.values:
                return True
            p = p.parent
        return False

    def new_value(self, dtype, shape, name: str = "") -> Value:
        v = Value(self._unique(name), dtype, shape)
        v.graph = self
        self.values[v.name] = v
        return v

    def add_input(self, name: str, dtype, shape) -> Value:
        if name in self.values:
            raise FusionError(f"duplicate value name '{name}' in graph '{self.name}'")
        v = Value(name, dtype, shape)
        v.graph = self
        self.values[name] = v
        self.inputs.append(v)
        return v

    def const(self, array, name: str = "", dtype=None) -> Value:
        a = np.asarray(array, dtype=dtype)
        v = Value(self._unique(name or "const"), a.dtype, a.shape, const=a)
        v.graph = self
        self.values[v.name] = v
        return v

    @property
    def constants(self) -> list[Value]:
        return [v for v in self.values.values() if v.const is not None]

    def lookup(self, name: str) -> Value | None:
        g: Graph | None = self
        while g is not None:
            if name in g.values:
                return g.values[name]
            g = g.parent
        return None

    # ------------------------------------------------------------------- nodes
    def add_node(self, op: str, inputs: Sequence[Value | None], attrs: dict | None = None,
                 n_outputs: int | None = None, outputs: Sequence[Value] | None = None,
                 name: str = "", domain: str = "", before: Node | None = None,
                 infer: bool = True) -> Node:
        """Create a node; its outputs are new Values whose types come from the
        op table's shape rule unless `outputs` are given. Inserted at the end,
        or just before `before` (which keeps topological order when the new
        node feeds `before`)."""
        from fusion.ops import get_op
        opdef = get_op(op, domain)
        full = opdef.fill_attrs(attrs or {}) if opdef is not None else dict(attrs or {})
        node = Node(op, inputs, [], full, self._unique_node_name(name or op), domain)
        if outputs is None:
            k = n_outputs if n_outputs is not None else (opdef.default_outputs if opdef else 1)
            outputs = [self.new_value(None, None, name=f"{node.name}_out{i}" if k > 1 else node.name) for i in range(k)]
        node.outputs = list(outputs)
        self._attach(node, before)
        if infer and opdef is not None:
            from fusion.ir.shape_infer import infer_node
            infer_node(node)
        return node

    def _unique_node_name(self, base: str) -> str:
        names = self._node_names()
        if base not in names:
            names.add(base)
            return base
        while True:
            n = f"{base}_{next(self._names)}"
            if n not in names:
                names.add(n)
                return n

    def _node_names(self) -> set:
        s = getattr(self, "_node_name_set", None)
        if s is None or len(s) < len(self.nodes):
            s = {n.name for n in self.nodes}
            self._node_name_set = s
        return s

    def _attach(self, node: Node, before: Node | None = None) -> None:
        node.graph = self
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses.append((node, i))
        for v in node.outputs:
            if v.producer is not None and v.producer is not node:
                raise FusionError(f"value '{v.name}' already produced by {v.producer.label()}")
            v.producer = node
            v.graph = self
            self.values.setdefault(v.name, v)
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)

    def remove_node(self, node: Node) -> None:
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses = [(n, j) for (n, j) in v.uses if not (n is node and j == i)]
        for v in node.outputs:
            if v.producer is node:
                v.producer = None
            if not v.uses and v not in self.outputs:
                self.values.pop(v.name, None)
        self.nodes.remove(node)
        s = getattr(self, "_node_name_set", None)
        if s is not None:
            s.discard(node.name)

    def set_input(self, node: Node, i: int, v: Value | None) -> None:
        old = node.inputs[i]
        if old is not None:
            old.uses = [(n, j) for (n, j) in old.uses if not (n is node and j == i)]
        node.inputs[i] = v
        if v is not None:
            v.uses.append((node, i))

    def replace_uses(self, old: Value, new: Value) -> None:
        """Every reader of `old` (nodes and graph outputs) reads `new` instead."""
        if old is new:
            return
        for n, i in list(old.uses):
            self.set_input(n, i, new)
        self.outputs = [new if v is old else v for v in self.outputs]
        # Subgraphs reading `old` by capture.
        for n in self.nodes:
            for sg in n.subgraphs():
                sg._replace_captured(old, new)

    def _replace_captured(self, old: Value, new: Value) -> None:
        for n in self.nodes:
            for i, v in enumerate(n.inputs):
                if v is old:
                    self.set_input(n, i, new)
            for sg in n.subgraphs():
                sg._replace_captured(old, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    def consumers(self, v: Value) -> list[Node]:
        seen, out = set(), []
        for n, _ in v.uses:
            if id(n) not in seen:
                seen.add(id(n))
                out.append(n)
        return out

    def outer_reads(self) -> list[Value]:
        """Values this (sub)graph reads that belong to an enclosing graph."""
        mine = set(id(v) for v in self.values.values())
        out: dict[int, Value] = {}
        for n in self.nodes:
            for v in n.all_inputs():
                if id(v) not in mine:
                    out[id(v)] = v
        for v in self.outputs:
            if id(v) not in mine:
                out[id(v)] = v
        return list(out.values())

    # ----------------------------------------------------------- whole-graph
    def toposort(self) -> None:
        """Restore topological order (stable: keeps the current order where it can)."""
        order = {id(n): k for k, n in enumerate(self.nodes)}
        indeg: dict[int, int] = {}
        succ: dict[int, list[Node]] = {id(n): [] for n in self.nodes}
        for n in self.nodes:
            preds = {id(v.producer) for v in n.all_inputs() if v.producer is not None and id(v.producer) in succ}
            indeg[id(n)] = len(preds)
            for p in preds:
                succ[p].append(n)
        import heapq
        ready = [(order[id(n)], id(n), n) for n in self.nodes if indeg[id(n)] == 0]
        heapq.heapify(ready)
        out = []
        while ready:
            _, _, n = heapq.heappop(ready)
            out.append(n)
            for s in succ[id(n)]:
                indeg[id(s)] -= 1
                if indeg[id(s)] == 0:
                    heapq.heappush(ready, (order[id(s)], id(s), s))
        if len(out) != len(self.nodes):
            stuck = [n for n in self.nodes if indeg[id(n)] > 0]
            raise FusionError(f"graph '{self.name}' has a cycle through {stuck[0].label()}")
        self.nodes = out

    def remove_dead(self) -> int:
        """Drop nodes none of whose outputs reach a graph output."""
        live: set[int] = set()
        stack = list(self.outputs)
        while stack:
            v = stack.pop()
            p = v.producer
            if p is None or id(p) in live or p.graph is not self:
                continue
            live.add(id(p))
            stack.extend(p.all_inputs())
        dead = [n for n in self.nodes if id(n) not in live]
        for n in reversed(dead):
            self.remove_node(n)
        # Unused constants.
        used = {id(v) for n in self.nodes for v in n.all_inputs()} | {id(v) for v in self.outputs}
        for name in [k for k, v in self.values.items() if v.const is not None and id(v) not in used]:
            del self.values[name]
        return len(dead)

    def verify(self) -> None:
        """Check SSA, topological order, use-lists and shapes; raise naming the node."""
        from fusion.ir.shape_infer import check_node
        defined: set[int] = set(id(v) for v in self.inputs)
        defined.update(id(v) for v in self.values.values() if v.const is not None)
        outer = set()
        p = self.parent
        while p is not None:
            outer.update(id(v) for v in p.values.values())
            p = p.parent
        produced: set[int] = set()
        for n in self.nodes:
            if n.graph is not self:
                raise FusionError(f"{n.label()} is listed in graph '{self.name}' but belongs elsewhere")
            for i, v in enumerate(n.inputs):
                if v is None:
                    continue
                if id(v) not in defined and id(v) not in outer:
                    raise FusionError(f"{n.label()}: input {i} '{v.name}' is used before it is defined "
                                      f"(not topologically ordered, or undefined)")
                if not any(m is n and j == i for m, j in v.uses):
                    raise FusionError(f"{n.label()}: use-list of '{v.name}' is missing this node")
            for v in n.outputs:
                if id(v) in produced or id(v) in defined:
                    raise FusionError(f"{n.label()}: output '{v.name}' is assigned twice (not SSA)")
                if v.producer is not n:
                    raise FusionError(f"{n.label()}: output '{v.name}' names another producer")
                produced.add(id(v))
                defined.add(id(v))
            for sg in n.subgraphs():
                sg.verify()
            check_node(n)
            for v in n.outputs:
                _check_size(v, n)
        for v in self.inputs:
            _check_size(v, None)
        for v in self.outputs:
            if id(v) not in defined and id(v) not in outer:
                raise FusionError(f"graph output {v.name!r} is never computed")

    def copy(self) -> "Graph":
        """A deep copy (constants shared: they are never mutated in place)."""
        return _copy_graph(self, self.parent, {})

    # ---------------------------------------------------------------- reports
    def op_histogram(self) -> Counter:
        return Counter(n.op for n in self.nodes)

    def summary(self) -> dict:
        from fusion.ops import get_op
        flops = 0
        unknown_flops = set()
        inter = 0
        for n in self.nodes:
            od = get_op(n.op, n.domain)
            if od is not None:
                try:
                    flops += int(od.flops(n))
                except Exception:
                    unknown_flops.add(n.op)
            for v in n.outputs:
                if v.shape is not None and v.is_static and v.dtype is not None and v not in self.outputs:
                    inter += v.nbytes
        used_consts = {id(v): v for n in self.nodes for v in n.inputs if v is not None and v.const is not None}
        # Parameters: float tensors (weights, biases); 0-d scalars are literals, not parameters.
        params = sum(v.const.size for v in used_consts.values() if v.dtype.kind == "f" and v.const.ndim > 0)
        return {
            "name": self.name,
            "nodes": len(self.nodes),
            "ops": dict(sorted(self.op_histogram().items(), key=lambda kv: (-kv[1], kv[0]))),
            "params": int(params),
            "param_bytes": int(sum(v.const.nbytes for v in used_consts.values())),
            "flops": int(flops),
            "intermediate_bytes": int(inter),
            "inputs": [{"name": v.name, "dtype": dtype_str(v.dtype), "shape": [str(d) if not isinstance(d, int) else d for d in v.shape]} for v in self.inputs],
            "outputs": [{"name": v.name, "dtype": dtype_str(v.dtype), "shape": [str(d) if not isinstance(d, int) else d for d in (v.shape or [])]} for v in self.outputs],
            "opset": dict(self.opset),
        }

    def __str__(self) -> str:
        return format_graph(self)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)


# ---------------------------------------------------------------------------
# Text form

def _fmt_attr(v) -> str:
    if isinstance(v, Graph):
        return f"<graph {v.name}: {len(v.nodes)} nodes>"
    if isinstance(v, np.ndarray):
        return f"tensor{shape_str(v.shape)}" if v.size > 8 else np.array2string(v.ravel(), separator=",")
    if isinstance(v, (list, tuple)):
        if len(v) > 12:
            return "[" + ",".join(str(x) for x in v[:12]) + ",...]"
        return "[" + ",".join(_fmt_attr(x) if isinstance(x, (Graph, np.ndarray)) else str(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bytes):
        return repr(v.decode(errors="replace"))
    return str(v)


def _fmt_operand(v: Value | None) -> str:
    if v is None:
        return "_"
    if v.const is not None:
        c = v.const
        if c.size == 1:
            x = c.reshape(-1)[0]
            return f"{x:g}" if c.dtype.kind == "f" else str(x)
        if c.size <= 4 and c.dtype.kind in "iub":
            return "[" + ",".join(str(x) for x in c.ravel()) + "]"
        return f"@{v.name}"
    return f"%{v.name}"


def format_graph(g: Graph, indent: str = "", show_defaults: bool = False) -> str:
    from fusion.ops import get_op
    s = g.summary() if not indent else None
    lines = []
    if s is not None:
        opsets = ",".join(f"{d or 'ai.onnx'}={v}" for d, v in g.opset.items())
        lines.append(f"graph {g.name!r} opset {opsets}: "
                     f"{len(g.inputs)} inputs, {len(g.outputs)} outputs, {len(g.nodes)} nodes, "
                     f"{s['params'] / 1e6:.2f}M params, {s['flops'] / 1e9:.3f} GFLOP")
    for v in g.inputs:
        lines.append(f"{indent}input  %{v.name}: {v.type_str()}")
    width = 0
    rows = []
    for n in g.nodes:
        outs = ", ".join(f"%{v.name}" for v in n.outputs)
        od = get_op(n.op, n.domain)
        attrs = []
        for k, val in n.attrs.items():
            if not show_defaults and od is not None and k in od.attrs and _same(od.attrs[k].default, val):
                continue
            attrs.append(f"{k}={_fmt_attr(val)}")
        args = ", ".join(_fmt_operand(v) for v in n.inputs)
        text = f"{indent}  {outs} = {n.op}({args})" + (" " + " ".join(attrs) if attrs else "")
        types = " ".join(v.type_str() for v in n.outputs)
        rows.append((text, types, n))
        width = max(width, len(text))
    width = min(width, 100)
    for text, types, n in rows:
        lines.append(f"{text.ljust(width)}  # {types}")
        for sg in n.subgraphs():
            lines.append(f"{indent}    subgraph {sg.name}:")
            lines.append(format_graph(sg, indent + "      "))
    for v in g.outputs:
        lines.append(f"{indent}output %{v.name}: {v.type_str()}")
    return "\n".join(lines)


def _same(a, b) -> bool:
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return False
        return a == b
    except Exception:
        return False


# ---------------------------------------------------------------------------
# Copy

def _copy_graph(g: Graph, parent: Graph | None, outer: dict[int, Value]) -> Graph:
    h = Graph(g.name, g.opset)
    h.parent = parent
    h.doc, h.metadata = g.doc, dict(g.metadata)
    vmap: dict[int, Value] = dict(outer)

    def cp(v: Value) -> Value:
        if id(v) in vmap:
            return vmap[id(v)]
        w = Value(v.name, v.dtype, v.shape, const=v.const)
        w.known = v.known
        w.graph = h
        h.values[w.name] = w
        vmap[id(v)] = w
        return w

    for v in g.inputs:
        h.inputs.append(cp(v))
    for v in g.values.values():
        if v.const is not None:
            cp(v)
    for n in g.nodes:
        ins = [cp(v) if v is not None else None for v in n.inputs]
        attrs = {}
        for k, a in n.attrs.items():
            if isinstance(a, Graph):
                attrs[k] = _copy_graph(a, h, vmap)
            elif isinstance(a, list) and a and isinstance(a[0], Graph):
                attrs[k] = [_copy_graph(x, h, vmap) for x in a]
            else:
                attrs[k] = list(a) if isinstance(a, list) else a
        m = Node(n.op, ins, [cp(v) for v in n.outputs], attrs, n.name, n.domain)
        h._attach(m)
    h.outputs = [cp(v) for v in g.outputs]
    return h


def _check_size(v, node) -> None:
    """Element counts must fit int64 (generated index arithmetic is 64-bit)."""
    shape = v.shape
    if shape is None or not all(isinstance(d, (int,)) for d in shape):
        return
    n = 1
    for d in shape:
        n *= int(d)
    if n >= 2 ** 63:
        from fusion.errors import ShapeError
        where = f"{node.label()}: " if node is not None else ""
        raise ShapeError(f"{where}value {v.name!r} has shape {list(shape)}: {n} elements do not fit a 64-bit "
                         f"index; check the model's dimensions")
