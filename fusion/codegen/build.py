"""Build a model's C sources into libmodel.so, with a compile cache.

The cache ($FUSION_CACHE, else .fusion-cache/ in the working directory) is
keyed by the digest of every source, the flags and the compiler, so an
unchanged model never recompiles (tests compile the same graphs often)."""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time

from fusion.toolchain import compile_shared, host_cc, source_digest
from fusion.targets import Target

RUNTIME_DIR = os.path.join(os.path.dirname(__file__), "runtime")
EXTRA_FLAGS = ["-fopenmp-simd", "-Wno-unused-variable", "-Wno-unused-function"]


def cache_dir() -> str:
    d = os.environ.get("FUSION_CACHE") or os.path.join(os.getcwd(), ".fusion-cache")
    d = os.path.join(d, "lib")
    os.makedirs(d, exist_ok=True)
    return d


def write_sources(art, out_dir: str) -> list[str]:
    """model.c, model.h, fz_runtime.h, weights.bin into out_dir; returns the C files to compile."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "model.c"), "w") as f:
        f.write(art.c_source)
    with open(os.path.join(out_dir, "model.h"), "w") as f:
        f.write(art.header)
    shutil.copy(os.path.join(RUNTIME_DIR, "fz_runtime.h"), os.path.join(out_dir, "fz_runtime.h"))
    with open(os.path.join(out_dir, "weights.bin"), "wb") as f:
        f.write(art.weights)
    return [os.path.join(out_dir, "model.c")] + list(art.extra_sources)


def cached_objects(sources: list[str], include_dirs: list[str], target: Target) -> list[str]:
    """Runtime C files (the opaque kernels) compiled once to objects, cached by content."""
    from fusion.toolchain import host_flags, run_build
    objs = []
    headers = b""
    for d in include_dirs:
        for f in sorted(os.listdir(d)):
            if f.endswith(".h"):
                with open(os.path.join(d, f), "rb") as fh:
                    headers += fh.read()
    flags = host_flags(target) + [f"-I{d}" for d in include_dirs]
    for src in sources:
        with open(src, "rb") as fh:
            text = fh.read()
        key = source_digest(text, headers, " ".join(flags[:-len(include_dirs) or None]), host_cc())
        obj = os.path.join(cache_dir(), f"{os.path.basename(src)[:-2]}-{key}.o")
        if not os.path.exists(obj):
            tmp = obj + f".{os.getpid()}.tmp.o"
            run_build([host_cc(), *flags, "-c", src, "-o", tmp], tmp)
            os.replace(tmp, obj)
        objs.append(obj)
    return objs


@functools.lru_cache(maxsize=1)
def _build_rules() -> str:
    """The cross builds' flags live in fusion/device/cross.py: its text is part
    of the cache key, so changing a flag there (e.g. the ARM CPU baseline)
    never hands back a library built with the old flags."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "device", "cross.py")
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def build(art, out_dir: str, target: Target, use_cache: bool = True, profile: bool = False,
          cflags: list[str] | None = None) -> tuple[str, float, bool]:
    """Write the sources and build libmodel.so in out_dir. Returns (library path,
    compile seconds, cache hit)."""
    sources = write_sources(art, out_dir)
    if art.extra_sources and target.name == "host":
        sources = sources[:1] + cached_objects(art.extra_sources, art.include_dirs, target)
    lib = os.path.join(out_dir, "libmodel.so")
    flags = (EXTRA_FLAGS + list(cflags or []) + (["-DFZ_PROFILE"] if profile else []) + [f"-I{out_dir}"]
             + [f"-I{d}" for d in art.include_dirs])
    extra_text = []
    for s in art.extra_sources:
        with open(s, "rb") as f:
            extra_text.append(f.read())
    key = source_digest(art.c_source, art.header, open(os.path.join(RUNTIME_DIR, "fz_runtime.h")).read(),
                        *extra_text, " ".join(f for f in flags if not f.startswith("-I")), target.name, target.cpu,
                        str(getattr(target, "triple", "")), str(getattr(target, "api_level", "")), _build_rules(),
                        host_cc())
    cached = os.path.join(cache_dir(), key + ".so") if use_cache else None
    if cached and os.path.exists(cached):
        shutil.copy(cached, lib)
        return lib, 0.0, True
    t0 = time.perf_counter()
    # Build next to the cache, then move: concurrent builds never see half a file.
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_lib = os.path.join(tmp, "libmodel.so")
        compile_shared(sources, tmp_lib, target, extra_flags=flags, libs=["-lm"])
        shutil.move(tmp_lib, lib)
    if cached:
        tmp = cached + f".{os.getpid()}.tmp"
        shutil.copy(lib, tmp)
        os.replace(tmp, cached)
    return lib, time.perf_counter() - t0, False
