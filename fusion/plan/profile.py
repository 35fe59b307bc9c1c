"""The profile database: settles the fusion table's "(profile)" pairs.

For a candidate fusion (the block grown so far + one more op) the planner asks
for two times: the candidate as one fused kernel, and as two kernels. A
`Measurer` provides them:

* `CostModel`: the analytical model of fusion.plan.cost (always available;
  recorded with source "cost model");
* `CompileAndTime`: compiles both variants of the candidate's subgraph with
  `fusion.compile(graph, target="host", plan=...)` and times them on this
  machine (source "measured, host"). For a cross target (android-arm64,
  opencl) with no device at hand the host's times stand in, and the source
  says so: "measured, host (for android-arm64)".

Values are stored on disk (JSON) keyed by op types and attributes, classes,
shapes, dtype and target, and reused across models and runs. Default file:
$FUSION_CACHE/profile.json, else ~/.cache/fusion/profile.json; `--profile-db
PATH` picks another. A measured value always wins over a cost-model value; a
cost-model value is replaced when a measurer runs for the same key.
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from fusion.errors import FusionError
from fusion.ir.graph import Graph, Node, Value
from fusion.ops.table import Mapping
from fusion.plan.types import Block, Plan, block_io, nodes_subgraph
from fusion.targets import Target

DB_VERSION = 1
COST_MODEL = "cost model"


def default_path() -> str:
    base = os.environ.get("FUSION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fusion")
    return os.path.join(base, "profile.json")


# ---------------------------------------------------------------------------
# Candidates and keys

def _attr_text(v) -> str:
    if isinstance(v, np.ndarray):
        return f"tensor{list(v.shape)}:" + hashlib.sha1(v.tobytes()).hexdigest()[:8]
    if isinstance(v, Graph):
        return f"<graph {v.name}>"
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _type_text(v: Value | None) -> str:
    if v is None:
        return "_"
    s = v.type_str()
    if v.const is not None:
        s += "=" + hashlib.sha1(v.const.tobytes()).hexdigest()[:8] if v.const.size <= 16 else "c"
    return s


def node_signature(n: Node) -> str:
    """Op, attributes and operand types: what determines a kernel's speed."""
    attrs = ",".join(f"{k}={_attr_text(v)}" for k, v in sorted(n.attrs.items()))
    ins = ",".join(_type_text(v) for v in n.inputs)
    outs = ",".join(v.type_str() for v in n.outputs)
    return f"{n.op}{{{attrs}}}({ins})->{outs}"


@dataclass
class Candidate:
    """Run `first` and `second` (node lists of `graph`) as one kernel or two."""
    graph: Graph
    first: list[Node]
    second: list[Node]
    classes: tuple[Mapping, Mapping]
    target: Target
    node_classes: dict[int, Mapping] | None = None

    def key(self) -> dict:
        dt = self.second[-1].outputs[0].dtype
        return {"first": [node_signature(n) for n in self.first],
                "second": [node_signature(n) for n in self.second],
                "classes": [self.classes[0].short, self.classes[1].short],
                "dtype": str(dt), "target": self.target.name}

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()

    def describe(self) -> str:
        a = "+".join(n.op for n in self.first)
        b = "+".join(n.op for n in self.second)
        return f"{a} -> {b}"

    def subgraph(self) -> tuple[Graph, list[Node], list[Node]]:
        """A standalone graph of the candidate's nodes: outside values become
        graph inputs (constants stay constants)."""
        pos = {id(n): k for k, n in enumerate(self.graph.nodes)}
        nodes = sorted(self.first + self.second, key=lambda n: pos[id(n)])
        ins, outs = block_io(self.graph, nodes)
        h, nmap = nodes_subgraph(self.graph, nodes, ins, outs, f"candidate_{self.digest()[:8]}")
        return h, [nmap[id(n)] for n in self.first], [nmap[id(n)] for n in self.second]


@dataclass
class Measurement:
    fused_s: float
    separate_s: float
    source: str                      # "cost model" | "measured, host" | "measured, host (for T)"
    when: float = field(default_factory=time.time)

    @property
    def ratio(self) -> float:
        """fused / separate: > 1 means the fused kernel is slower."""
        return self.fused_s / self.separate_s if self.separate_s > 0 else 1.0

    @property
    def measured(self) -> bool:
        return self.source.startswith("measured")

    def to_json(self) -> dict:
        return {"fused_s": self.fused_s, "separate_s": self.separate_s, "source": self.source, "when": self.when}

    @staticmethod
    def from_json(d: dict) -> "Measurement":
        return Measurement(float(d["fused_s"]), float(d["separate_s"]), str(d["source"]), float(d.get("when", 0)))


# ---------------------------------------------------------------------------
# Measurers

class Measurer(abc.ABC):
    """Gives fused and separate times for a candidate. Implementations:
    CostModel (analytical), CompileAndTime (fusion.compile + timing)."""

    source: str = "?"

    @abc.abstractmethod
    def measure(self, cand: Candidate) -> Measurement:
        ...


class CostModel(Measurer):
    source = COST_MODEL

    def measure(self, cand: Candidate) -> Measurement:
        from fusion.plan.cost import compare
        fused, sep = compare(cand.graph, cand.first, cand.second, cand.target, cand.node_classes)
        return Measurement(fused, sep, COST_MODEL)


class CompileAndTime(Measurer):
    """Compile the candidate's subgraph twice (one block; two blocks) for the
    host with fusion.compile and time both. Needs the code generator."""

    def __init__(self, repeat: int = 20):
        try:
            import fusion.codegen  # noqa: F401
        except ModuleNotFoundError:
            raise FusionError("measuring fusions needs the code generator (fusion.codegen), which is not "
                              "installed in this tree; use the cost model (drop --measure)") from None
        self.repeat = repeat

    def measure(self, cand: Candidate) -> Measurement:
        import fusion
        sub, first, second = cand.subgraph()
        nodes = [n for n in sub.nodes]
        fused = _plan_of(sub, [nodes])
        separate = _plan_of(sub, [first, second])
        rng = np.random.default_rng(0)
        feeds = {v.name: _random_input(v, rng) for v in sub.inputs}
        times = []
        for p in (fused, separate):
            mod = fusion.compile(sub, target="host", plan=p)
            mod.run(feeds)  # warm up
            ts = []
            for _ in range(self.repeat):
                t0 = time.perf_counter()
                mod.run(feeds)
                ts.append(time.perf_counter() - t0)
            times.append(float(np.median(ts)))
        src = "measured, host" if cand.target.name == "host" else f"measured, host (for {cand.target.name})"
        return Measurement(times[0], times[1], src)


def _random_input(v: Value, rng) -> np.ndarray:
    shape = tuple(int(d) for d in v.shape)
    if v.known is not None:
        return np.asarray(v.known)
    if v.dtype.kind == "b":
        return rng.random(shape) < 0.5
    if v.dtype.kind in "iu":
        return rng.integers(0, 2, size=shape).astype(v.dtype)
    return rng.standard_normal(shape).astype(v.dtype)


def _plan_of(graph: Graph, groups: list[list[Node]]) -> Plan:
    from fusion.plan.mapping import node_class
    blocks = []
    for k, nodes in enumerate(groups):
        ins, outs = block_io(graph, nodes)
        anchors = [n for n in nodes if node_class(n)[0] == Mapping.M2M]
        blocks.append(Block(k, nodes, anchors[0] if anchors else None,
                            Mapping.M2M if anchors else Mapping.O2O, ins, outs))
    return Plan(graph, blocks, [], "host")


# ---------------------------------------------------------------------------
# The database

class ProfileDB:
    """JSON file of measurements: {"version", "entries": {digest: {"key", ...}}}."""

    def __init__(self, path: str | None = None, measurer: Measurer | None = None, readonly: bool = False):
        self.path = path or default_path()
        self.measurer = measurer or CostModel()
        self.readonly = readonly
        self.entries: dict[str, dict] = {}
        self.hits = self.misses = 0
        self.dirty = False
        self._load()

    def _load(self) -> None:
        if not os.path.exists(self.path):
            return
        try:
            with open(self.path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise FusionError(f"profile database {self.path} is unreadable ({e}); delete it or pass "
                              f"--profile-db with another path") from None
        if not isinstance(data, dict) or data.get("version") != DB_VERSION:
            raise FusionError(f"profile database {self.path} has an unknown format (want version {DB_VERSION}); "
                              f"delete it to start afresh")
        self.entries = dict(data.get("entries", {}))

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, cand: Candidate) -> Measurement | None:
        e = self.entries.get(cand.digest())
        return Measurement.from_json(e) if e is not None else None

    def put(self, cand: Candidate, m: Measurement) -> None:
        self.entries[cand.digest()] = {"key": cand.key(), "what": cand.describe(), **m.to_json()}
        self.dirty = True

    def lookup(self, cand: Candidate) -> Measurement:
        """The stored value, or a new one from the measurer (then stored).
        A cost-model value is re-measured when the measurer really measures."""
        m = self.get(cand)
        if m is not None and (m.measured or m.source == self.measurer.source or self.measurer.source == COST_MODEL):
            self.hits += 1
            return m
        self.misses += 1
        m = self.measurer.measure(cand)
        self.put(cand, m)
        return m

    def save(self) -> None:
        """Merge with what is on disk now (another run may have added entries)
        and write atomically."""
        if self.readonly or not self.dirty:
            return
        merged = {}
        if os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    data = json.load(f)
                if data.get("version") == DB_VERSION:
                    merged = dict(data.get("entries", {}))
            except (OSError, json.JSONDecodeError, AttributeError):
                merged = {}
        for k, e in self.entries.items():
            old = merged.get(k)
            if old is None or not str(old.get("source", "")).startswith("measured") or \
                    str(e.get("source", "")).startswith("measured"):
                merged[k] = e
        d = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(d, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".profile-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump({"version": DB_VERSION, "entries": merged}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as e:
            raise FusionError(f"cannot write the profile database {self.path}: {e}") from None
        self.entries = merged
        self.dirty = False

    def summary(self) -> dict:
        by_source: dict[str, int] = {}
        slower = 0
        for e in self.entries.values():
            by_source[e["source"]] = by_source.get(e["source"], 0) + 1
            if e["separate_s"] > 0 and e["fused_s"] > e["separate_s"]:
                slower += 1
        return {"path": self.path, "entries": len(self.entries), "by_source": by_source,
                "fused_slower": slower}
