"""Cross builds for the ARM64 targets, from Debian packages only.

* linux-arm64: the GNU cross compiler (gcc-aarch64-linux-gnu) against its
  sysroot; the result runs under qemu-aarch64 in tests.
* android-arm64: clang --target=aarch64-linux-androidNN, linked by ld.lld
  against stub libc/libm/libdl built here from lists of functions that every
  Android (bionic, API >= 21) exports. No NDK is needed to produce the .so.
  The stubs only give the linker names and SONAMEs; `-z defs` makes any
  other imported symbol a build error instead of a crash on the phone.
  glibc's aarch64 headers stand in for bionic's: the C types fusion's code
  uses (fixed-width ints, float, FILE*, pthread_t, pthread mutex/cond sized
  at least as large) have the same ABI; fortification and stack protector
  are off so no glibc-only symbols (__memcpy_chk, __isoc99_*) are emitted.
"""
from __future__ import annotations

import os
import subprocess
import tempfile

from fusion.errors import ToolchainError
from fusion.targets import Target
from fusion.toolchain import BuildResult, find_tool, run_build

# Functions a generated model may import, by the Android system library that
# exports them. Anything else fails the link (see module doc).
ANDROID_LIBS = {
    "libc.so": """malloc calloc realloc free posix_memalign memalign memcpy memmove memset memcmp
        strlen strcmp strncmp strcpy strncpy strchr strrchr strstr strdup strerror snprintf vsnprintf sprintf
        fopen fclose fread fwrite fseek ftell fflush fprintf fputs puts printf abort exit atexit qsort bsearch
        getenv strtol strtoll strtoul strtod atoi sysconf clock_gettime nanosleep usleep sched_yield
        pthread_create pthread_join pthread_detach pthread_self pthread_mutex_init pthread_mutex_destroy
        pthread_mutex_lock pthread_mutex_unlock pthread_mutex_trylock pthread_cond_init pthread_cond_destroy
        pthread_cond_wait pthread_cond_timedwait pthread_cond_signal pthread_cond_broadcast pthread_once
        pthread_attr_init pthread_attr_destroy pthread_attr_setstacksize pthread_key_create
        pthread_getspecific pthread_setspecific open close read write lseek mmap munmap
        __stack_chk_fail __errno""",
    "libm.so": """expf exp logf log log1pf log1p expm1f expm1 sqrtf sqrt powf pow tanhf tanh erff erf erfcf erfc
        sinf sin cosf cos tanf tan asinf asin acosf acos atanf atan atan2f atan2 sinhf sinh coshf cosh
        asinhf asinh acoshf acosh atanhf atanh floorf floor ceilf ceil roundf round rintf rint nearbyintf
        nearbyint truncf trunc fmodf fmod fabsf fabs fmaxf fmax fminf fmin lrintf lrint llrintf llrint
        lroundf lround exp2f exp2 log2f log2 log10f log10 cbrtf cbrt hypotf hypot fmaf fma
        remainderf remainder copysignf copysign frexpf frexp ldexpf ldexp modff modf""",
    "libdl.so": "dlopen dlsym dlclose dlerror",
}

# Functions bionic added after API 21, by the API level that introduced them.
ANDROID_LATER = {"aligned_alloc": 28}


def android_symbols(api_level: int) -> dict[str, str]:
    libs = dict(ANDROID_LIBS)
    extra = [n for n, api in ANDROID_LATER.items() if api_level >= api]
    libs["libc.so"] = libs["libc.so"] + " " + " ".join(extra)
    return libs


COMMON_FLAGS = ["-O3", "-fPIC", "-std=gnu11", "-ffp-contract=fast", "-fno-math-errno"]


def export_script() -> str:
    """A linker version script exporting only the model's C ABI (model_*)."""
    path = os.path.join(tempfile.gettempdir(), "fusion-model-exports.map")
    text = "{ global: model_*; local: *; };\n"
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return path


def _cpu_flags(t: Target, compiler: str) -> list[str]:
    """ARMv8.0-A code tuned for the target's CPU. Android's arm64-v8a ABI (and boards like the
    Raspberry Pi 4) promise only ARMv8.0: -mcpu=cortex-a76 would let the compiler emit ARMv8.1
    LSE atomics (ldaddal, in the thread pool) and ARMv8.2 instructions, which stop the app with
    SIGILL on Cortex-A53/A72/A73 phones. NEON is part of ARMv8.0, so the vector code is unchanged."""
    if t.cpu in ("", "generic", "native"):
        return ["-march=armv8-a"]
    return ["-march=armv8-a", f"-mtune={t.cpu}"]


def android_stub_dir(api_level: int) -> str:
    """Build (once) stub libc.so/libm.so/libdl.so with Android's SONAMEs."""
    from fusion.toolchain import source_digest
    libs = android_symbols(api_level)
    key = source_digest(repr(sorted(libs.items())), str(api_level))
    base = os.path.join(os.environ.get("FUSION_CACHE", os.path.join(tempfile.gettempdir(), "fusion-cache")),
                        f"android-stubs-{key}")
    if os.path.exists(os.path.join(base, "done")):
        return base
    os.makedirs(base, exist_ok=True)
    clang = find_tool("clang")
    for lib, names in libs.items():
        src = os.path.join(base, lib + ".c")
        with open(src, "w") as f:
            for n in names.split():
                f.write(f"void {n}(void) {{}}\n")
        run_build([clang, f"--target=aarch64-linux-android{api_level}", "-shared", "-nostdlib", "-fPIC",
                   "-fuse-ld=lld", f"-Wl,-soname,{lib}", "-o", os.path.join(base, lib), src],
                  os.path.join(base, lib))
    open(os.path.join(base, "done"), "w").close()
    return base


def compile_shared(sources: list[str], out_path: str, t: Target, extra_flags=None, libs=None) -> BuildResult:
    extra = list(extra_flags or [])
    if t.os == "android":
        clang = find_tool("clang")
        find_tool("ld.lld")
        stubs = android_stub_dir(t.api_level or 24)
        sysinc = "/usr/aarch64-linux-gnu/include"
        if not os.path.isdir(sysinc):
            raise ToolchainError("the aarch64 C headers were not found (/usr/aarch64-linux-gnu/include); "
                                 "install them: apt-get install libc6-dev-arm64-cross (or run ./setup.sh)")
        cmd = [clang, f"--target=aarch64-linux-android{t.api_level or 24}", *COMMON_FLAGS, *_cpu_flags(t, "clang"),
               "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=0", "-fno-stack-protector", "-mno-outline-atomics",
               "-DFZ_ANDROID=1",
               "-isystem", sysinc, "-nostdlib", "-shared", "-fuse-ld=lld",
               "-Wl,-soname,libmodel.so", "-Wl,-z,defs", "-Wl,-z,relro", "-Wl,-z,now", "-Wl,-z,noexecstack",
               "-Wl,-z,max-page-size=16384", "-Wl,--build-id=sha1", "-Wl,--hash-style=both", "-Wl,--as-needed",
               f"-Wl,--version-script={export_script()}",
               *extra, "-o", out_path, *sources, f"-L{stubs}", "-lc", "-lm", "-ldl"]
        return run_build(cmd, out_path)
    cc = find_tool("aarch64-linux-gnu-gcc", "CC_AARCH64")
    cmd = [cc, *COMMON_FLAGS, *_cpu_flags(t, "gcc"), "-pthread", "-shared", "-Wl,-z,noexecstack", "-Wl,-z,now",
           "-Wl,--as-needed", f"-Wl,--version-script={export_script()}",
           *extra, "-o", out_path, *sources, *(libs if libs is not None else ["-lm", "-ldl"])]
    return run_build(cmd, out_path)


def compile_executable(sources: list[str], out_path: str, t: Target, extra_flags=None) -> BuildResult:
    """The on-device driver (linux-arm64; android uses the same source with the NDK)."""
    cc = find_tool("aarch64-linux-gnu-gcc", "CC_AARCH64")
    cmd = [cc, "-O2", "-std=gnu11", *(extra_flags or []), "-o", out_path, *sources, "-ldl", "-lm", "-pthread"]
    return run_build(cmd, out_path)


def elf_info(path: str) -> dict:
    """What an Android reviewer checks: machine, SONAME, NEEDED, imported and exported symbols."""
    readelf = find_tool("readelf") if _which("readelf") else find_tool("aarch64-linux-gnu-readelf")
    dyn = subprocess.run([readelf, "-dW", path], capture_output=True, text=True).stdout
    hdr = subprocess.run([readelf, "-hW", path], capture_output=True, text=True).stdout
    syms = subprocess.run([readelf, "--dyn-syms", "-W", path], capture_output=True, text=True).stdout
    needed = [l.split("[")[1].split("]")[0] for l in dyn.splitlines() if "(NEEDED)" in l]
    soname = [l.split("[")[1].split("]")[0] for l in dyn.splitlines() if "(SONAME)" in l]
    imported, exported = [], []
    for l in syms.splitlines():
        parts = l.split()
        if len(parts) >= 8 and parts[0].endswith(":") and parts[7] and parts[4] in ("GLOBAL", "WEAK"):
            (imported if parts[6] == "UND" else exported).append(parts[7].split("@")[0])
    machine = next((l.split(":", 1)[1].strip() for l in hdr.splitlines() if "Machine:" in l), "")
    return {"machine": machine, "soname": soname[0] if soname else None, "needed": needed,
            "imported": sorted(set(imported)), "exported": sorted(set(exported)),
            "bind_now": "BIND_NOW" in dyn or "NOW" in dyn}


def _which(name):
    import shutil
    return shutil.which(name)
