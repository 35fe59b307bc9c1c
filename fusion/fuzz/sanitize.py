"""Build a model's generated C with AddressSanitizer + UndefinedBehaviorSanitizer
and run it on random inputs; any sanitizer report is a finding.

The library is loaded by fz_driver (fusion/device/driver.c, the generic runner
over the model's C ABI) built with the same sanitizers, in its own process:
no LD_PRELOAD games with Python, and a report or crash cannot take the caller
down. Outputs are also compared with onnxruntime, since an instrumented build
that reads out of bounds quietly may still produce wrong numbers.

Leak checking is off: fz_driver keeps its buffers until exit by design.
The opaque kernels (fusion/codegen/opaque/*.c) are linked from the compile
cache uninstrumented; the fused kernels in model.c are all instrumented.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from fusion.errors import FusionError, ToolchainError

SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all", "-g", "-O1"]
ENV = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86:allocator_may_return_null=1",
       "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=86"}
DRIVER_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "device", "driver.c")


@dataclass
class SanitizerRun:
    model: str
    ok: bool
    seconds: float = 0.0
    report: str = ""          # the sanitizer's first lines, when it spoke
    mismatch: str = ""
    blocks: int = 0
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return self.__dict__


def _san_cc() -> str:
    from fusion.toolchain import host_cc
    return host_cc()


def driver(work: str) -> str:
    """fz_driver built with the sanitizers, cached by source digest."""
    from fusion.toolchain import source_digest
    with open(DRIVER_SRC) as f:
        src = f.read()
    d = os.path.join(os.environ.get("FUSION_CACHE") or os.path.join(os.getcwd(), ".fusion-cache"), "sanitize")
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, "fz_driver-asan-" + source_digest(src, " ".join(SAN_FLAGS), _san_cc()))
    if not os.path.exists(out):
        tmp = out + f".{os.getpid()}.tmp"
        proc = subprocess.run([_san_cc(), *SAN_FLAGS, DRIVER_SRC, "-o", tmp, "-ldl"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError(f"cannot build the sanitizer driver: {proc.stderr.strip().splitlines()[:1]}")
        os.replace(tmp, out)
    return out


def build_sanitized(graph, out_dir: str):
    """rewrite -> plan -> C -> libmodel.so with sanitizers (no cache: the
    instrumented library must never be served to an ordinary compile)."""
    from fusion.codegen.build import build
    from fusion.codegen.driver import planned_graph
    from fusion.codegen.emit import ModelEmitter
    from fusion.targets import get_target
    t = get_target("host")
    graph, p = planned_graph(graph, t, profile_db=False)
    art = ModelEmitter(graph, p, t).emit()
    lib, _, _ = build(art, out_dir, t, use_cache=False, cflags=SAN_FLAGS)
    return lib, os.path.join(out_dir, "weights.bin"), art, p


def sanitize(model, shapes=None, seed: int = 0, timeout: float = 900, feeds=None, label: str | None = None) -> SanitizerRun:
    """One model (path, zoo:NAME[:small], Graph or ModelProto) through the instrumented build."""
    import fusion
    from fusion.oracle import compare, random_inputs, run_onnxruntime
    t0 = time.perf_counter()
    g = fusion.load(model, shapes=shapes) if not isinstance(model, fusion.Graph) else model
    name = label or (model if isinstance(model, str) else g.name)
    feeds = feeds if feeds is not None else random_inputs(g, seed=seed)
    with tempfile.TemporaryDirectory(prefix="fz-asan-") as work:
        lib, weights, art, p = build_sanitized(g, os.path.join(work, "lib"))
        files = []
        for k, s in enumerate(art.inputs):
            path = os.path.join(work, f"in{k}.bin")
            np.ascontiguousarray(feeds[s.name], dtype=np.dtype(s.dtype)).tofile(path)
            files.append(path)
        cmd = [driver(work), lib, weights, work, *files]
        env = dict(os.environ, **ENV)
        env.pop("LD_PRELOAD", None)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return SanitizerRun(name, False, time.perf_counter() - t0, f"timed out after {timeout:.0f}s")
        err = proc.stderr
        run = SanitizerRun(name, True, blocks=len(p.blocks))
        if proc.returncode != 0 or "runtime error:" in err or "ERROR: AddressSanitizer" in err:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            key = [ln for ln in lines if "ERROR:" in ln or "runtime error:" in ln or "SUMMARY" in ln] or lines[-5:]
            run.ok, run.report = False, f"exit code {proc.returncode}: " + " | ".join(key[:4])
            run.details["stderr"] = err[-4000:]
        else:
            rep = json.loads(proc.stdout.strip().splitlines()[-1])
            actual = {}
            for k, o in enumerate(rep["outputs"]):
                dt = np.dtype(art.outputs[k].dtype)
                actual[o["name"]] = np.fromfile(os.path.join(work, f"out{k}.bin"), dtype=dt).reshape(o["shape"])
            try:
                expected = run_onnxruntime(fusion.to_onnx(g), feeds)
                cmp = compare(actual, expected)
                if not cmp.ok:
                    run.ok, run.mismatch = False, str(cmp)
            except FusionError as e:
                run.details["oracle"] = str(e)
    run.seconds = round(time.perf_counter() - t0, 1)
    return run
