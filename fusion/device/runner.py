"""Run a cross-built model library through fz_driver: under qemu-user here,
the way it would run on a device. Used by `fusion run --target linux-arm64`
and by the tests that check ARM output against onnxruntime."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

import numpy as np

from fusion.errors import FusionError, ToolchainError
from fusion.targets import Target, get_target
from fusion.toolchain import find_tool, source_digest

HERE = os.path.dirname(os.path.abspath(__file__))
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"
# ONNX TensorProto element types the driver reads and writes.
ONNX_TO_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
                 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _cache_dir() -> str:
    d = os.environ.get("FUSION_CACHE", os.path.join(tempfile.gettempdir(), "fusion-cache"))
    os.makedirs(d, exist_ok=True)
    return d


def driver_path(target: Target) -> str:
    """fz_driver built for the target's architecture (cached by source)."""
    from fusion.device import cross
    src = os.path.join(HERE, "driver.c")
    key = source_digest(open(src).read(), target.arch)
    out = os.path.join(_cache_dir(), f"fz_driver-{target.arch}-{key}")
    if not os.path.exists(out):
        cross.compile_executable([src], out + ".tmp", target)
        os.replace(out + ".tmp", out)
    return out


def emulator_command(target: Target) -> list[str]:
    if not target.emulator:
        return []
    qemu = find_tool(target.emulator)
    if not os.path.isdir(AARCH64_SYSROOT):
        raise ToolchainError(f"the aarch64 runtime libraries ({AARCH64_SYSROOT}) are missing: "
                             f"apt-get install libc6-dev-arm64-cross (or run ./setup.sh)")
    return [qemu, "-L", AARCH64_SYSROOT]


def run_library(lib_path: str, weights_path: str, inputs: list[np.ndarray], target: Target | str = "linux-arm64",
                threads: int | None = None, runs: int = 1, timeout: float = 1800) -> tuple[list[np.ndarray], dict]:
    """Run the library on `inputs` (in the model's input order) ->
    (outputs in the model's output order, the driver's report)."""
    t = get_target(target) if isinstance(target, str) else target
    if t.os == "android":
        raise FusionError(f"target '{t.name}' builds a library for an Android phone; it cannot run on this "
                          f"machine. Use --target linux-arm64 to run the same code under qemu, or push "
                          f"libmodel.so and fz_driver to a device with adb")
    drv = driver_path(t)
    with tempfile.TemporaryDirectory(prefix="fz-run-") as tmp:
        files = []
        for i, a in enumerate(inputs):
            p = os.path.join(tmp, f"in{i}.bin")
            np.ascontiguousarray(a).tofile(p)
            files.append(p)
        cmd = [*emulator_command(t), drv, os.path.abspath(lib_path), os.path.abspath(weights_path), tmp,
               "--runs", str(runs), *(["--threads", str(threads)] if threads else []), *files]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FusionError(f"the model did not finish in {timeout:.0f} s under {t.emulator or 'the driver'}") from None
        if proc.returncode != 0:
            raise FusionError(f"running {os.path.basename(lib_path)} for {t.name} failed: "
                              f"{(proc.stderr or proc.stdout).strip().splitlines()[-1] if (proc.stderr or proc.stdout).strip() else 'exit code %d' % proc.returncode}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        outs = []
        for k, o in enumerate(report["outputs"]):
            dt = ONNX_TO_NUMPY[o["dtype"]]
            outs.append(np.fromfile(os.path.join(tmp, f"out{k}.bin"), dtype=dt).reshape(o["shape"]))
    return outs, report
