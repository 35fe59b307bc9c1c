"""`fusion rewrite --check`: onnxruntime on the original graph and after every
pass, on the same inputs; the first pass whose outputs differ beyond the
oracle's tolerance is named, and inside the rule engine the first rule
application (found by bisection over the number of applications)."""
from __future__ import annotations

from dataclasses import dataclass, field

from fusion.errors import FusionError


@dataclass
class Step:
    name: str
    changes: int
    ok: bool
    max_abs_err: float
    detail: str = ""


@dataclass
class CheckResult:
    ok: bool
    steps: list = field(default_factory=list)
    first_bad: str | None = None
    culprit: str | None = None      # "rule R at node N" inside an algebra pass
    noise: str | None = None        # set on failure: how much onnxruntime's own optimizations move the outputs

    def to_json(self) -> dict:
        return {"ok": self.ok, "first_bad_pass": self.first_bad, "culprit": self.culprit, "noise": self.noise,
                "steps": [s.__dict__ for s in self.steps]}


def _sanitized(graph):
    """The graph as ONNX, without attributes its opset does not define (the
    exporter writes Cast.saturate/round_mode even at opset 18; onnxruntime
    rejects them). Those attributes are at their defaults."""
    import onnx
    from fusion.ir.onnx_export import to_onnx
    m = to_onnx(graph)
    opset = {o.domain: o.version for o in m.opset_import}
    for n in m.graph.node:
        try:
            schema = onnx.defs.get_schema(n.op_type, opset.get(n.domain, 1), n.domain)
        except Exception:
            continue
        keep = [a for a in n.attribute if a.name in schema.attributes]
        if len(keep) != len(n.attribute):
            del n.attribute[:]
            n.attribute.extend(keep)
    return m


def _ort(graph, feeds):
    from fusion.oracle import run_onnxruntime
    try:
        return run_onnxruntime(_sanitized(graph), feeds)
    except FusionError:
        raise
    except Exception as e:  # onnxruntime refusing a graph is a finding, not a crash
        raise FusionError(f"onnxruntime cannot run the graph: {str(e).splitlines()[0]}") from None


def check_rewrite(graph, strict_fp: bool = False, feeds=None, seed: int = 0, progress=None, rules=None) -> CheckResult:
    """`rules`: the rule set (default: all rules; tests pass a deliberately wrong one)."""
    from fusion.oracle import compare, random_inputs
    from fusion.rewrite import run_passes
    feeds = feeds if feeds is not None else random_inputs(graph, seed=seed)
    expected = _ort(graph, feeds)
    g = graph.copy()
    res = CheckResult(True)
    snap = {}

    def before(name, gg):
        if res.first_bad is None:
            snap["g"] = gg.copy()

    def after(run, gg):
        if res.first_bad is not None or not run.changes:
            return
        try:
            rep = compare(_ort(gg, feeds), expected)
            ok, err, detail = rep.ok, rep.max_abs_err, "" if rep.ok else str(rep)
        except FusionError as e:
            ok, err, detail = False, float("inf"), str(e)
        res.steps.append(Step(run.name, run.changes, ok, err, detail))
        if progress is not None:
            progress(res.steps[-1])
        if not ok:
            res.ok = False
            res.first_bad = run.name
            if run.log:
                res.culprit = _bisect(snap["g"], run, feeds, expected, strict_fp, rules)
            res.noise = _noise(graph, feeds, expected)
    run_passes(g, strict_fp=strict_fp, on_pass=after, before_pass=before, rules=rules)
    return res


def _noise(graph, feeds, expected) -> str:
    """A model whose outputs move when float operations are merely reordered
    (huge activations, saturated softmax) fails any reordering rewrite: say
    so by measuring onnxruntime's own optimizations against its plain run."""
    from fusion.oracle import compare, run_onnxruntime
    try:
        rep = compare(run_onnxruntime(_sanitized(graph), feeds, optimize=True), expected)
    except Exception:  # noqa: BLE001 - only a hint
        return ""
    if rep.ok:
        return "onnxruntime's own graph optimizations keep this model's outputs within tolerance"
    return (f"onnxruntime's own graph optimizations also change this model's outputs (max abs err "
            f"{rep.max_abs_err:.3g}): it is ill-conditioned on these inputs; try --strict-fp")


def _bisect(before, run, feeds, expected, strict_fp, rules):
    """Smallest number of rule applications that breaks the outputs."""
    from fusion.oracle import compare
    from fusion.rewrite import passes
    algebra = dict(passes(strict_fp, rules))["algebra"]

    def bad(k):
        g = before.copy()
        algebra(g, limit=k)
        try:
            return not compare(_ort(g, feeds), expected).ok
        except FusionError:
            return True
    lo, hi = 1, len(run.log)
    while lo < hi:
        mid = (lo + hi) // 2
        if bad(mid):
            hi = mid
        else:
            lo = mid + 1
    rule, node = run.log[lo - 1]
    return f"rule '{rule}' applied at node '{node}' (application {lo} of {len(run.log)})"
