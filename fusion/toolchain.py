"""Native toolchains: the one place that runs a C compiler, a linker or an
emulator. Code generation hands C sources here; targets (fusion/targets.py)
say which toolchain applies.

Every missing tool becomes a ToolchainError that names the tool and the
Debian package that provides it (setup.sh installs them all).
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass

from fusion.errors import ToolchainError
from fusion.targets import Target, get_target

# tool -> Debian package that provides it (named in errors).
PACKAGES = {
    "cc": "gcc", "gcc": "gcc", "clang": "clang", "ld.lld": "lld",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu", "qemu-aarch64": "qemu-user",
}


def find_tool(name: str, env_var: str | None = None) -> str:
    """Path of a tool, or a ToolchainError saying how to install it."""
    override = os.environ.get(env_var) if env_var else None
    path = shutil.which(override or name)
    if path is None:
        pkg = PACKAGES.get(name, name)
        raise ToolchainError(f"'{override or name}' was not found on PATH; install it "
                             f"(Debian: apt-get install {pkg}, or run ./setup.sh)"
                             + (f" or point {env_var} at a compiler" if env_var else ""))
    return path


@dataclass
class BuildResult:
    path: str
    command: list[str]
    seconds: float


def host_cc() -> str:
    return find_tool("cc", "CC")


def host_flags(target: Target) -> list[str]:
    flags = ["-O3", "-std=gnu11", "-fPIC", "-ffp-contract=fast", "-fno-math-errno", "-pthread"]
    if target.cpu == "native":
        flags.append("-march=native")
    return flags


def compile_shared(sources: list[str], out_path: str, target: Target | str = "host",
                   extra_flags: list[str] | None = None, libs: list[str] | None = None) -> BuildResult:
    """Build C sources into a shared library for `target` (host, linux-arm64,
    android-arm64). Callers never pick compilers: the target decides."""
    t = get_target(target) if isinstance(target, str) else target
    if t.kind == "cpu" and t.arch == "aarch64" and platform.machine() not in ("aarch64", "arm64"):
        from fusion.device import cross
        return cross.compile_shared(sources, out_path, t, extra_flags, libs)
    cmd = [host_cc(), *host_flags(t), "-shared", *(extra_flags or []), "-o", out_path, *sources,
           *(libs if libs is not None else ["-lm"])]
    return run_build(cmd, out_path)


def run_build(cmd: list[str], out_path: str) -> BuildResult:
    """Run a compiler/linker command; a failure becomes a ToolchainError."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        head = "\n".join(msg[:20])
        # Generated code that does not compile is a bug in fusion, not the user's: say so.
        raise ToolchainError(f"the C compiler failed building {os.path.basename(out_path)} "
                             f"({' '.join(cmd[:3])} ...):\n{head}\n(this is a bug in fusion's code "
                             f"generator; please report it with the model)")
    return BuildResult(out_path, cmd, time.perf_counter() - t0)


def source_digest(*parts: str | bytes) -> str:
    """Stable key for build caches: same sources and flags -> same digest."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]
