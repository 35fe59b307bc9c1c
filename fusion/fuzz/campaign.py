"""A fuzzing campaign: generate N graphs from a seed, check them in batches,
shrink each failure and save it as a small .onnx file for tests/regressions."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from fusion.fuzz.generator import generate
from fusion.fuzz.runner import Outcome, check_spec, is_finite_spec, run_batch
from fusion.fuzz.shrink import shrink
from fusion.fuzz.spec import GraphSpec


@dataclass
class CampaignResult:
    graphs: int = 0
    passed: int = 0
    skipped: int = 0          # oracle outputs not finite: no verdict
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    ops: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return self.__dict__


def save_failure(spec: GraphSpec, outcome: Outcome, out_dir: str) -> str:
    """Write the graph as fuzz_<seed>_<ops>.onnx; the seed and the failure go in
    metadata_props so the regression test rebuilds the exact same inputs."""
    os.makedirs(out_dir, exist_ok=True)
    m = spec.to_model()
    onnx.helper.set_model_props(m, {"fusion.fuzz.seed": str(spec.seed), "fusion.fuzz.kind": outcome.kind,
                                    "fusion.fuzz.message": outcome.message[:500]})
    tag = "_".join(dict.fromkeys(n.op for n in spec.nodes))[:60]
    path = os.path.join(out_dir, f"fuzz_{spec.seed}_{tag}.onnx")
    onnx.save(m, path)
    return path


def feeds_for(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The inputs a saved failure was found with (GraphSpec.random_feeds)."""
    props = {p.key: p.value for p in model.metadata_props}
    rng = np.random.default_rng(int(props.get("fusion.fuzz.seed", "0")) + 7919)
    init = {i.name for i in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def run(graphs: int, seed: int = 0, batch: int = 25, max_nodes: int = 8, save_dir: str | None = None,
        do_shrink: bool = True, log=None) -> CampaignResult:
    t0 = time.perf_counter()
    res = CampaignResult()
    seeds = list(range(seed, seed + graphs))
    for start in range(0, len(seeds), batch):
        specs = []
        for s in seeds[start:start + batch]:
            spec = generate(s, max_nodes=max_nodes)
            res.graphs += 1
            for op in spec.ops():
                res.ops[op] = res.ops.get(op, 0) + 1
            if is_finite_spec(spec):
                specs.append(spec)
            else:
                res.skipped += 1
        for o in run_batch(specs):
            if o.ok:
                res.passed += 1
                continue
            entry = {"seed": o.spec.seed, "kind": o.kind, "message": o.message, "ops": o.spec.ops()}
            if do_shrink and o.kind != "oracle":
                sig = o.signature()
                small = shrink(o.spec, lambda c: (lambda r: not r.ok and r.signature() == sig)(check_spec(c)))
                final = check_spec(small)
                entry.update(shrunk_ops=small.ops(), shrunk_message=final.message)
                if save_dir:
                    entry["file"] = save_failure(small, final if not final.ok else o, save_dir)
            res.failures.append(entry)
            if log:
                log(f"seed {o.spec.seed}: {o.kind}: {o.message[:160]}"
                    + (f"\n  shrunk to {entry.get('shrunk_ops')}" if "shrunk_ops" in entry else ""))
        if log:
            log(f"{res.graphs} graphs: {res.passed} pass, {len(res.failures)} fail, {res.skipped} skipped "
                f"({time.perf_counter() - t0:.0f}s)")
    res.seconds = round(time.perf_counter() - t0, 1)
    return res


def dump(res: CampaignResult, path: str) -> None:
    with open(path, "w") as f:
        json.dump(res.to_json(), f, indent=2)
