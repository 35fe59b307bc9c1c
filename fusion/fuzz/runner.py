"""Run GraphSpecs through the whole pipeline (import, rewrite, plan, C codegen,
host build, run) and compare with onnxruntime (optimizations off).

A batch merges many specs into one model, so one C build checks them all
(the build dominates the time). When the batch as a whole fails to import
or build, each spec is checked alone to find the culprits."""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field

import numpy as np

from fusion.fuzz.spec import GraphSpec, merge

# -O1: tiny graphs build several times faster, and the same code is checked.
CFLAGS = ["-O1"]


@dataclass
class Outcome:
    spec: GraphSpec
    ok: bool
    kind: str = ""        # "" | "mismatch" | "crash" | "oracle"
    message: str = ""
    detail: dict = field(default_factory=dict)

    def signature(self) -> str:
        """What the shrinker must keep failing the same way."""
        first = self.message.splitlines()[0] if self.message else ""
        return self.kind + ":" + (first.split(":")[0] if self.kind == "crash" else "")


def _compile_and_run(model, feeds, cflags=None):
    import fusion
    g = fusion.load(model)
    mod = fusion.compile(g, target="host", threads=1, profile_db=False, cflags=cflags or CFLAGS)
    try:
        return mod.run(feeds)
    finally:
        close = getattr(mod, "close", None)
        if close:
            close()


def _crash_message(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = next((f"{f.filename.split('fusion/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(tb)
                  if "/fusion/" in f.filename), "?")
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (at {where})"


def check_spec(spec: GraphSpec, cflags=None) -> Outcome:
    """One graph alone: the pipeline's outputs against onnxruntime."""
    return run_batch([spec], cflags=cflags, split=False)[0]


def run_batch(specs: list[GraphSpec], cflags=None, split: bool = True) -> list[Outcome]:
    from fusion.oracle import compare, run_onnxruntime
    if not specs:
        return []
    prefixes = [f"g{k}_" for k in range(len(specs))] if len(specs) > 1 else [""]
    model = merge(specs, prefixes)
    feeds = {}
    for s, p in zip(specs, prefixes):
        feeds.update(s.random_feeds(p))
    try:
        expected = run_onnxruntime(model, feeds)
    except Exception as e:
        if split and len(specs) > 1:
            return [o for s in specs for o in run_batch([s], cflags, split=False)]
        return [Outcome(s, False, "oracle", f"onnxruntime rejects the graph: {e}") for s in specs]
    try:
        actual = _compile_and_run(model, feeds, cflags)
    except Exception as e:   # noqa: BLE001  (any escape, FusionError included, is a finding here: the graph is valid)
        if split and len(specs) > 1:
            return [o for s in specs for o in run_batch([s], cflags, split=False)]
        return [Outcome(s, False, "crash", _crash_message(e)) for s in specs]
    out = []
    for s, p in zip(specs, prefixes):
        exp = {p + o: expected[p + o] for o in s.outputs}
        rep = compare(actual, exp)
        if rep.ok:
            out.append(Outcome(s, True))
        else:
            bad = [d for d in rep.outputs if not d.ok]
            msg = "; ".join(f"{d.name[len(p):]}: {d.message}" for d in bad)
            out.append(Outcome(s, False, "mismatch", msg, {"max_abs_err": rep.max_abs_err}))
    return out


def is_finite_spec(spec: GraphSpec) -> bool:
    """Oracle outputs all finite (NaN/Inf from random data says nothing)."""
    from fusion.oracle import run_onnxruntime
    try:
        res = run_onnxruntime(spec.to_model(), spec.random_feeds())
    except Exception:
        return False
    return all(np.all(np.isfinite(v)) for v in res.values() if v.dtype.kind == "f")
