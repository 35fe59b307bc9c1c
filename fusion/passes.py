"""`fusion passes`: the whole pipeline as one straight list of passes.

    import -> each rewrite pass (as fusion.rewrite runs them) -> plan -> codegen

After every pass it can write the graph (text + ONNX; the plan as JSON; the C
source) and, with `check`, compare against onnxruntime on the same seeded
inputs and name the first pass that breaks the outputs. Inside the rewriter
the culprit rule application comes from fusion.rewrite.check (reused, not
redone); inside codegen the culprit is the first block whose compiled outputs
differ from the interpreter's values for that block given correct inputs.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from fusion.errors import FusionError
from fusion.ir.graph import Graph


@dataclass
class PassResult:
    name: str
    nodes: int
    blocks: int | None = None
    changes: int | None = None
    seconds: float = 0.0
    checked: bool = False            # the oracle ran after this pass
    ok: bool = True
    max_abs_err: float | None = None
    detail: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PipelineResult:
    passes: list = field(default_factory=list)
    first_bad: str | None = None     # name of the first pass whose outputs differ
    culprit: str | None = None       # the rule application / block inside it
    dump_dir: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad is None

    def to_json(self) -> dict:
        return {"ok": self.ok, "first_bad_pass": self.first_bad, "culprit": self.culprit,
                "dump": self.dump_dir, "passes": [p.to_json() for p in self.passes]}


# ---------------------------------------------------------------------------
# Dumps

class _Dumper:
    def __init__(self, dirname: str | None):
        self.dir, self.k = dirname, 0
        if dirname:
            os.makedirs(dirname, exist_ok=True)

    def _base(self, label: str) -> str:
        base = os.path.join(self.dir, f"{self.k:02d}_{label.replace(':', '_')}")
        self.k += 1
        return base

    def graph(self, label: str, g: Graph) -> None:
        if not self.dir:
            return
        import fusion
        from fusion.ir.graph import format_graph
        base = self._base(label)
        with open(base + ".txt", "w") as f:
            f.write(format_graph(g) + "\n")
        fusion.save(g, base + ".onnx")

    def text(self, label: str, ext: str, content: str) -> None:
        if self.dir:
            with open(self._base(label) + ext, "w") as f:
                f.write(content)


# ---------------------------------------------------------------------------
# Block sub-graphs

def block_subgraph(graph: Graph, block) -> tuple[Graph, dict]:
    """A standalone graph of one block: its outside inputs become graph inputs
    (constants stay constants), its outputs the graph outputs. Returns the
    graph and {id(original node): new node}."""
    from fusion.plan.types import nodes_subgraph
    return nodes_subgraph(graph, block.nodes, block.inputs, block.outputs, f"block_{block.id}")


def block_plan(graph: Graph, block):
    """(sub-graph, a one-block Plan for it) with the block's anchor and class kept."""
    from fusion.plan.types import Block, Plan, block_io
    sub, nmap = block_subgraph(graph, block)
    nodes = [nmap[id(n)] for n in block.nodes]
    ins, outs = block_io(sub, nodes)
    anchor = nmap[id(block.anchor)] if block.anchor is not None else None
    b = Block(0, nodes, anchor, block.mapping, ins, outs, 0, opaque=block.opaque)
    return sub, Plan(sub, [b], [], "host")


def run_blocks_reference(plan, feeds: dict) -> dict:
    """Run the plan block by block, in plan order, with the reference
    interpreter: {value name: array} for every value a block produces or reads.
    Fails (FusionError) when a block reads a value no earlier block made."""
    from fusion.ir.interpreter import run
    env = dict(feeds)
    for b in plan.blocks:
        sub, _ = block_subgraph(plan.graph, b)
        missing = [v.name for v in sub.inputs if v.name not in env]
        if missing:
            raise FusionError(f"plan order: block {b.name} reads {', '.join(missing)} before any block computes it")
        env.update(run(sub, {v.name: env[v.name] for v in sub.inputs}))
    return env


# ---------------------------------------------------------------------------
# The pipeline

def _expected(model, graph: Graph, feeds: dict):
    """onnxruntime on the model as given (the ONNX file or ModelProto itself,
    so that a wrong import shows), or on the Graph when given one."""
    import onnx
    from fusion.oracle import run_onnxruntime
    from fusion.rewrite.check import _ort
    if isinstance(model, str) and model.startswith("zoo:"):
        from fusion import zoo
        model = zoo.resolve(model)
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(model):
        return run_onnxruntime(model, feeds), "the original ONNX file"
    if isinstance(model, onnx.ModelProto):
        return run_onnxruntime(model, feeds), "the original ONNX model"
    return _ort(graph, feeds), "the graph as given"


def _graph_outputs(graph: Graph, values: dict) -> dict:
    return {v.name: values[v.name] for v in graph.outputs if v.name in values}


def run_pipeline(model, *, target: str = "host", check: bool = False, seed: int = 0, dump: str | None = None,
                 strict_fp: bool = False, rules=None, shapes=None, profile_db=None, cflags=None,
                 on_pass=None) -> PipelineResult:
    """Run import, every rewrite pass, plan and codegen; see the module doc.

    model: ONNX path, 'zoo:NAME[:small]', ModelProto or a fusion Graph.
    rules: the rewrite rule set (tests pass a deliberately wrong one).
    on_pass(PassResult) is called as each pass finishes (progress lines)."""
    import fusion
    from fusion.oracle import compare
    from fusion.targets import get_target
    if get_target(target).name != "host" and check:  # get_target also rejects unknown names up front
        raise FusionError(f"--check runs the compiled model on this machine: use --target host, not '{target}'")
    res = PipelineResult(dump_dir=dump)
    dumper = _Dumper(dump)

    def record(p: PassResult) -> PassResult:
        res.passes.append(p)
        if check and p.checked and not p.ok and res.first_bad is None:
            res.first_bad = p.name
        if on_pass is not None:
            on_pass(p)
        return p

    # -- import
    t = time.perf_counter()
    g = model.copy() if isinstance(model, Graph) else fusion.load(model, shapes=shapes)
    p = PassResult("import", len(g.nodes), seconds=time.perf_counter() - t)
    dumper.graph("import", g)
    feeds = expected = None
    if check:
        from fusion.oracle import random_inputs
        feeds = random_inputs(g, seed=seed)
        expected, source = _expected(model, g, feeds)
        from fusion.rewrite.check import _ort
        rep = compare(_ort(g, feeds), expected)
        p.checked, p.ok, p.max_abs_err = True, rep.ok, rep.max_abs_err
        p.detail = "" if rep.ok else f"exported graph vs {source}: {rep}"
    record(p)

    # -- rewrite: the rewriter's own pass list, one row per pass run
    from fusion.rewrite import run_passes
    rw_check, rw_culprit = {}, None
    if check and res.ok:
        # fusion.rewrite.check runs the same passes with the oracle after each and
        # bisects a bad algebra pass to its rule application: reuse it.
        from fusion.rewrite.check import check_rewrite
        cr = check_rewrite(g, strict_fp=strict_fp, feeds=feeds, rules=rules)
        rw_check = {s.name: s for s in cr.steps}
        rw_culprit = cr.culprit
        if cr.noise:
            rw_culprit = f"{cr.culprit or 'the pass as a whole'} (note: {cr.noise})"
    g = g.copy()

    def after(run, gg):
        p = PassResult(run.name, len(gg.nodes), changes=run.changes, seconds=run.seconds)
        s = rw_check.get(run.name)
        if s is not None:
            p.checked, p.ok, p.max_abs_err, p.detail = True, s.ok, s.max_abs_err, s.detail
            if not s.ok and res.first_bad is None:
                res.culprit = rw_culprit
        if run.changes:
            dumper.graph(run.name, gg)
        record(p)
    run_passes(g, strict_fp=strict_fp, rules=rules, on_pass=after)

    # -- plan
    t = time.perf_counter()
    plan = fusion.plan(g, target, profile_db=profile_db)
    p = PassResult("plan", len(g.nodes), blocks=len(plan.blocks), seconds=time.perf_counter() - t)
    dumper.text("plan", ".json", json.dumps(plan.to_json(), indent=1, default=str) + "\n")
    block_values = None
    if check:
        # The plan does not change the graph; what it can break is order and
        # grouping: run it block by block with the interpreter.
        from fusion.plan import verify_plan
        try:
            verify_plan(plan)
            block_values = run_blocks_reference(plan, feeds)
            rep = compare(_graph_outputs(g, block_values), expected)
            p.ok, p.max_abs_err = rep.ok, rep.max_abs_err
            p.detail = "" if rep.ok else f"interpreter run block by block in plan order vs onnxruntime: {rep}"
        except FusionError as e:
            p.ok, p.max_abs_err, p.detail = False, float("inf"), str(e)
        p.checked = True
    record(p)

    # -- codegen
    t = time.perf_counter()
    try:
        mod = fusion.compile(g, target=target, plan=plan, profile_db=profile_db, cflags=cflags)
    except FusionError as e:
        if not check:
            raise
        # a broken earlier pass (a plan out of order) may make codegen refuse: report, don't crash
        record(PassResult("codegen", len(g.nodes), blocks=len(plan.blocks), seconds=time.perf_counter() - t,
                          checked=True, ok=False, max_abs_err=float("inf"), detail=f"compile failed: {e}"))
        return res
    p = PassResult("codegen", len(g.nodes), blocks=len(plan.blocks), seconds=time.perf_counter() - t)
    dumper.text("codegen", ".c", mod.c_source)
    try:
        if check:
            rep = compare(mod.run(feeds), expected)
            p.checked, p.ok, p.max_abs_err = True, rep.ok, rep.max_abs_err
            p.detail = "" if rep.ok else str(rep)
            if not rep.ok and res.first_bad is None and block_values is not None:
                res.culprit = first_bad_block(plan, block_values, cflags=cflags)
    finally:
        mod.close()
    record(p)
    return res


def first_bad_block(plan, values: dict, cflags=None) -> str | None:
    """Compile each block alone, in plan order, feed it the interpreter's values
    of its inputs and compare its outputs with the interpreter's: the first
    block that differs is where code generation went wrong."""
    import fusion
    from fusion.oracle import compare
    for b in plan.blocks:
        sub, bp = block_plan(plan.graph, b)
        feeds = {v.name: values[v.name] for v in sub.inputs}
        mod = fusion.compile(sub, target="host", plan=bp, profile_db=False, cflags=cflags)
        try:
            rep = compare(mod.run(feeds), {v.name: values[v.name] for v in sub.outputs})
        finally:
            mod.close()
        if not rep.ok:
            nodes = ", ".join(f"{n.name} ({n.op})" for n in b.nodes)
            return f"block {b.name} [{nodes}]: {rep}"
    return "no single block differs when fed correct inputs (the blocks disagree only in combination)"


# ---------------------------------------------------------------------------
# CLI

def register(sub) -> None:
    from fusion.cliutil import add_model_arguments
    p = sub.add_parser("passes", help="run the pipeline pass by pass: graph after each, oracle after each")
    add_model_arguments(p)
    p.add_argument("--dump", metavar="DIR", help="write the graph after every pass (text + ONNX), the plan "
                   "(JSON) and the C source to DIR")
    p.add_argument("--check", action="store_true", help="compare with onnxruntime after every pass on the same "
                   "seeded inputs; name the first pass (and rule application or block) that differs")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs used by --check")
    p.add_argument("--target", default="host", help="code generation target (--check needs host)")
    p.add_argument("--strict-fp", action="store_true", help="only rewrite rules exact in float arithmetic")
    p.set_defaults(func=cmd_passes)


def _line(p: PassResult) -> str:
    blocks = "-" if p.blocks is None else str(p.blocks)
    changes = "" if p.changes is None else f"{p.changes:5d} changes"
    s = f"{p.name:28s} {p.nodes:6d} nodes {blocks:>6s} blocks {changes:13s} {p.seconds:8.3f} s"
    if p.checked:
        s += f"  {'PASS' if p.ok else 'FAIL'}  max abs err {p.max_abs_err:.3g}"
    return s


def cmd_passes(args) -> int:
    from fusion.cliutil import parse_shape_flags, print_json
    shapes = parse_shape_flags(args.shape) or None
    on_pass = None if args.json else (lambda p: print(_line(p), flush=True))
    res = run_pipeline(args.model, target=args.target, check=args.check, seed=args.seed, dump=args.dump,
                       strict_fp=args.strict_fp, shapes=shapes, on_pass=on_pass)
    if args.json:
        print_json({"model": args.model, **res.to_json()})
    else:
        if args.check:
            if res.ok:
                print("check: every pass matches onnxruntime")
            else:
                print(f"check: first pass that differs: {res.first_bad}")
                bad = next(p for p in res.passes if p.checked and not p.ok)
                if bad.detail:
                    print("  " + bad.detail.replace("\n", "\n  "))
                if res.culprit:
                    print("  culprit: " + res.culprit.replace("\n", "\n  "))
        if args.dump:
            print(f"wrote {args.dump}")
    return 0 if res.ok else 1
