"""Byte-level fuzzing of the importer.

Small valid models (random fuzz graphs, plus each zoo model's :small variant
when asked) are mutated: bit flips, byte overwrites, truncation, chunks
deleted, duplicated or inserted, and a few protobuf-aware mutations (a dim
made huge, an op renamed, the opset changed). Each mutant is loaded by
`fusion.load` in a worker process, so a segfault inside onnx's C++ kills
only the worker: the parent counts it as a finding and starts a new worker
on the next input. Memory is capped in the worker (RLIMIT_AS) so a dim of
2**40 is a MemoryError finding, not a swapping machine.

Verdicts per execution: ok (loaded), clean (a FusionError), and the findings:
bug (any other exception: a traceback for the user), crash (signal), hang.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

HANG_SECONDS = 20.0
MEMORY_LIMIT = 3 << 30


@dataclass
class ImporterResult:
    execs: int = 0
    ok: int = 0
    clean: int = 0
    findings: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)   # first words of clean errors -> count

    def to_json(self) -> dict:
        return self.__dict__


def seed_models(n: int = 6, seed: int = 0) -> list[bytes]:
    from fusion.fuzz.generator import generate
    return [generate(seed + k, max_nodes=5).to_model().SerializeToString() for k in range(n)]


def _proto_mutation(data: bytes, rng) -> bytes:
    import onnx
    m = onnx.ModelProto()
    m.ParseFromString(data)
    r = rng.integers(6)
    g = m.graph
    if r == 0 and g.input:
        vi = g.input[int(rng.integers(len(g.input)))]
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[int(rng.integers(len(dims)))].dim_value = int(rng.choice([0, 2 ** 31, 2 ** 40, 2 ** 62]))
    elif r == 1 and g.node:
        g.node[int(rng.integers(len(g.node)))].op_type = str(rng.choice(["NoSuchOp", "", "Conv", "Loop", "add"]))
    elif r == 2:
        m.opset_import[0].version = int(rng.choice([0, 1, 5, 99, -3]))
    elif r == 3 and g.node:
        n = g.node[int(rng.integers(len(g.node)))]
        if n.input:
            n.input[int(rng.integers(len(n.input)))] = str(rng.choice(["missing", "", n.output[0] if n.output else "x"]))
    elif r == 4 and g.node:
        g.node[int(rng.integers(len(g.node)))].domain = str(rng.choice(["com.unknown", "ai.onnx.ml", "com.microsoft"]))
    elif r == 5 and g.initializer:
        t = g.initializer[int(rng.integers(len(g.initializer)))]
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", str(rng.choice(["../../etc/passwd", "/dev/zero", "nope.bin"]))),
                     ("length", "1000000000")):
            e = t.external_data.add()
            e.key, e.value = k, v
        t.ClearField("raw_data")
    return m.SerializeToString()


def mutate(data: bytes, rng) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.integers(8)
        if not b:
            break
        i = int(rng.integers(len(b)))
        if r == 0:
            b[i] ^= 1 << int(rng.integers(8))
        elif r == 1:
            b[i] = int(rng.choice([0, 0xFF, 0x7F, 0x80]))
        elif r == 2:
            del b[i:]
        elif r == 3:
            del b[i:i + int(rng.integers(1, 16))]
        elif r == 4:
            j = int(rng.integers(len(b)))
            b[i:i] = b[j:j + int(rng.integers(1, 32))]
        elif r == 5:
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8))
        else:
            try:
                return _proto_mutation(bytes(b), rng)
            except Exception:
                b[i] ^= 0x40
    return bytes(b)


STARTUP_SECONDS = 600.0


def _spawn_worker():
    w = subprocess.Popen([sys.executable, "-m", "fusion.fuzz.importer", "--worker"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    # the hang clock starts once the worker has imported fusion (slow on a busy machine)
    ready, _, _ = select.select([w.stdout], [], [], STARTUP_SECONDS)
    if not ready or w.stdout.readline().strip() != "ready":
        w.kill()
        w.wait()
        raise RuntimeError("the importer fuzz worker did not start")
    return w


def fuzz(execs: int, seed: int = 0, keep_dir: str | None = None, log=None) -> ImporterResult:
    """Mutate and load `execs` models; returns counts and findings (mutants
    that crashed, hung or raised a non-FusionError are written to keep_dir)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    seeds = seed_models(seed=seed)
    res = ImporterResult()
    tmp = tempfile.mkdtemp(prefix="fz-importer-")
    worker = None
    try:
        for k in range(execs):
            data = mutate(seeds[k % len(seeds)], rng)
            path = os.path.join(tmp, "m.onnx")
            with open(path, "wb") as f:
                f.write(data)
            if worker is None or worker.poll() is not None:
                worker = _spawn_worker()
            worker.stdin.write(path + "\n")
            worker.stdin.flush()
            ready, _, _ = select.select([worker.stdout], [], [], HANG_SECONDS)
            line = worker.stdout.readline() if ready else ""
            res.execs += 1
            if not ready:
                worker.kill()
                worker.wait()
                verdict = {"verdict": "hang", "message": f"no answer in {HANG_SECONDS:.0f}s"}
            elif not line:
                rc = worker.wait()
                verdict = {"verdict": "crash", "message": f"worker died (exit code {rc})"}
            else:
                verdict = json.loads(line)
            v = verdict["verdict"]
            if v == "ok":
                res.ok += 1
            elif v == "clean":
                res.clean += 1
                key = " ".join(verdict["message"].replace(path + ": ", "").split()[:3])
                res.errors[key] = res.errors.get(key, 0) + 1
            else:
                entry = {"exec": k, **verdict}
                if keep_dir:
                    os.makedirs(keep_dir, exist_ok=True)
                    entry["file"] = os.path.join(keep_dir, f"importer_{seed}_{k}_{v}.onnx")
                    with open(entry["file"], "wb") as f:
                        f.write(data)
                res.findings.append(entry)
                if log:
                    log(f"exec {k}: {v}: {verdict['message'][:200]}")
            if log and (k + 1) % 200 == 0:
                log(f"{k + 1} execs: {res.ok} ok, {res.clean} clean errors, {len(res.findings)} findings")
    finally:
        if worker is not None and worker.poll() is None:
            worker.stdin.close()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    res.seconds = round(time.perf_counter() - t0, 1)
    return res


def load_verdict(path: str) -> dict:
    """Load one file the way a user would; classify the outcome."""
    import traceback
    import fusion
    from fusion.errors import FusionError
    try:
        g = fusion.load(path)
        # a model that loads must also get through the passes that need no compiler
        fusion.plan(fusion.rewrite(g))
        return {"verdict": "ok", "message": ""}
    except FusionError as e:
        msg = str(e)
        if "\n" in msg.strip():
            return {"verdict": "bug", "message": "FusionError message spans lines: " + msg[:300]}
        return {"verdict": "clean", "message": msg}
    except BaseException as e:   # noqa: BLE001  (anything else is what we are looking for)
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{f.filename.split('site-packages/')[-1].split('/work/main/')[-1]}:{f.lineno}"
                      for f in reversed(tb) if "fusion" in f.filename), "?")
        return {"verdict": "bug", "message": f"{type(e).__name__}: {str(e)[:200]} (at {where})"}


def _worker() -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import fusion  # noqa: F401  (import once, before the first input)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        sys.stdout.write(json.dumps(load_verdict(line.strip())) + "\n")
        sys.stdout.flush()


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker()
