"""Targets as data: one description per target, read by the planner (limits)
and by code generation (vector width, caches, cores, toolchain).

`fusion targets` lists them. The host's numbers are read off this machine.
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field, replace

from fusion.errors import FusionError


@dataclass(frozen=True)
class Target:
    name: str
    kind: str                      # cpu | gpu
    triple: str                    # LLVM target triple
    arch: str                      # x86_64 | aarch64 | armv7
    cpu: str = "generic"           # LLVM cpu name ("native" resolved on the host)
    features: str = ""             # LLVM feature string
    vector_bits: int = 128         # SIMD register width
    vector_registers: int = 16
    cores: int = 4
    l1_bytes: int = 32 * 1024
    l2_bytes: int = 512 * 1024
    l3_bytes: int = 0
    # Limits the planner respects.
    max_block_ops: int = 64
    max_kernel_args: int = 0       # 0: unlimited (CPU); OpenCL drivers: 128 is a safe cap
    local_mem_bytes: int = 0       # GPU local memory
    max_work_group: int = 0        # GPU
    os: str = "linux"              # linux | android
    api_level: int = 0             # Android API level
    emulator: str = ""             # how tests run it here (qemu-aarch64), "" for native
    doc: str = ""

    @property
    def vector_lanes_f32(self) -> int:
        return max(1, self.vector_bits // 32)

    def to_json(self) -> dict:
        return asdict(self)


def _host_cache(level_name: str, default: int) -> int:
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            p = os.path.join(base, idx)
            lvl = open(os.path.join(p, "level")).read().strip()
            typ = open(os.path.join(p, "type")).read().strip()
            if f"L{lvl}" == level_name and typ in ("Data", "Unified"):
                s = open(os.path.join(p, "size")).read().strip()
                mult = {"K": 1024, "M": 1024 * 1024}.get(s[-1], 1)
                return int(s[:-1] if s[-1] in "KM" else s) * mult
    except OSError:
        pass
    return default


def _host_vector_bits() -> int:
    arch = platform.machine()
    if arch in ("aarch64", "arm64"):
        return 128
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return 128
    if " avx512f" in flags:
        return 512
    if " avx2" in flags:
        return 256
    if " avx" in flags:
        return 256
    return 128


def host() -> Target:
    arch = platform.machine()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch.lower(), arch)
    vb = _host_vector_bits()
    return Target(
        name="host", kind="cpu", triple=f"{arch}-unknown-linux-gnu", arch=arch, cpu="native",
        vector_bits=vb, vector_registers=32 if vb == 512 or arch == "aarch64" else 16,
        cores=os.cpu_count() or 1, l1_bytes=_host_cache("L1", 32 * 1024), l2_bytes=_host_cache("L2", 512 * 1024),
        l3_bytes=_host_cache("L3", 0), doc="this machine (C compiler at -O3 -march=native, or LLVM JIT)")


_TARGETS = {
    "android-arm64": Target(
        name="android-arm64", kind="cpu", triple="aarch64-linux-android24", arch="aarch64", cpu="cortex-a76",
        features="+neon,+fp-armv8", vector_bits=128, vector_registers=32, cores=8,
        l1_bytes=64 * 1024, l2_bytes=256 * 1024, l3_bytes=4 * 1024 * 1024, os="android", api_level=24,
        doc="Android phones (arm64-v8a): ARMv8.0-A code tuned for Cortex-A76 big cores; libmodel.so linked with ld.lld"),
    "linux-arm64": Target(
        name="linux-arm64", kind="cpu", triple="aarch64-linux-gnu", arch="aarch64", cpu="cortex-a76",
        features="+neon,+fp-armv8", vector_bits=128, vector_registers=32, cores=4,
        l1_bytes=64 * 1024, l2_bytes=256 * 1024, l3_bytes=2 * 1024 * 1024, emulator="qemu-aarch64",
        doc="64-bit ARM Linux (same code as android-arm64; tested here under qemu-aarch64)"),
    "opencl": Target(
        name="opencl", kind="gpu", triple="spir64", arch="opencl", vector_bits=128, cores=1,
        max_kernel_args=128, local_mem_bytes=32 * 1024, max_work_group=256,
        doc="whatever OpenCL device is present (PoCL in tests)"),
    "android-arm64-gpu": Target(
        name="android-arm64-gpu", kind="gpu", triple="aarch64-linux-android24", arch="aarch64",
        vector_bits=128, cores=1, max_kernel_args=128, local_mem_bytes=32 * 1024, max_work_group=256,
        os="android", api_level=24,
        doc="Adreno/Mali GPUs through OpenCL, host code as an ARM64 library"),
}


def get_target(name: str = "host", **overrides) -> Target:
    if name == "host":
        t = host()
    elif name in _TARGETS:
        t = _TARGETS[name]
    else:
        raise FusionError(f"unknown target '{name}'; known targets: {', '.join(names())}")
    return replace(t, **overrides) if overrides else t


def names() -> list[str]:
    return ["host"] + list(_TARGETS)
