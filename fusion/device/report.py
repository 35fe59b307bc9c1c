"""The Android build of the reference models, as an Android reviewer reads it:

    python -m fusion.device.report [--small] [--models a,b] [--api-level 24] [--json]

For each model: `fusion compile --target android-arm64` into a temporary directory, then
readelf: machine, size of libmodel.so, SONAME, NEEDED libraries, the exported symbols (only
the model_* C ABI may be there) and whether every imported function exists in bionic at the
API level. A model that does not compile gets its one-line error in the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

# The C ABI model.h declares; anything else exported is a leak of internals.
ABI = {"model_create", "model_run", "model_destroy", "model_last_error", "model_set_threads",
       "model_num_inputs", "model_input_name", "model_input_dtype", "model_input_rank", "model_input_shape",
       "model_num_outputs", "model_output_name", "model_output_dtype", "model_output_rank", "model_output_shape",
       "model_arena_bytes", "model_output_actual_shape", "model_num_kernels", "model_kernel_name",
       "model_kernel_seconds"}


def android_build(model: str, api_level: int = 24, out_dir: str | None = None, use_cache: bool = True) -> dict:
    """Compile one model for android-arm64 and describe its libmodel.so (raises on compile errors)."""
    import fusion
    from fusion.codegen.driver import compile as fz_compile
    from fusion.device import cross
    from fusion.targets import get_target
    t = get_target("android-arm64", api_level=api_level, triple=f"aarch64-linux-android{api_level}")
    with tempfile.TemporaryDirectory(prefix="fz-android-") as tmp:
        d = out_dir or tmp
        t0 = time.perf_counter()
        mod = fz_compile(fusion.load(model), target=t, out_dir=d, use_cache=use_cache and api_level == 24)
        seconds = time.perf_counter() - t0
        lib = os.path.join(d, "libmodel.so")
        info = cross.elf_info(lib)
        allowed = set(" ".join(cross.android_symbols(api_level).values()).split())
        return {"model": model, "ok": True, "so_bytes": os.path.getsize(lib),
                "weights_bytes": os.path.getsize(os.path.join(d, "weights.bin")),
                "machine": info["machine"], "soname": info["soname"], "needed": info["needed"],
                "exported": info["exported"], "exported_count": len(info["exported"]),
                "exported_outside_abi": sorted(set(info["exported"]) - ABI),
                "imported_count": len(info["imported"]),
                "imported_outside_bionic": sorted(set(info["imported"]) - allowed),
                "bind_now": info["bind_now"], "blocks": mod.report["blocks"],
                "compile_s": round(seconds, 1)}


def table(rows: list[dict]) -> str:
    out = ["| model | libmodel.so | machine | SONAME | NEEDED | exported (model_* ABI) | imports (not in bionic) "
           "| blocks | compile s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("ok"):
            out.append(f"| {r['model']} | does not compile: {r['error']} | | | | | | | |")
            continue
        leak = f", {len(r['exported_outside_abi'])} outside the ABI" if r["exported_outside_abi"] else ""
        bad = ", ".join(r["imported_outside_bionic"]) or "none"
        out.append(f"| {r['model']} | {r['so_bytes'] / 1024:,.0f} KiB | {r['machine']} | {r['soname']} | "
                   f"{', '.join(r['needed'])} | {r['exported_count']}{leak} | {r['imported_count']} ({bad}) | "
                   f"{r['blocks']} | {r['compile_s']} |")
    return "\n".join(out)


def main(argv=None) -> int:
    from fusion import zoo
    from fusion.errors import FusionError
    ap = argparse.ArgumentParser(prog="python -m fusion.device.report", description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the zoo's small variants")
    ap.add_argument("--models", help="comma-separated zoo names (default: all 15)")
    ap.add_argument("--api-level", type=int, default=24)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    names = [m.strip() for m in a.models.split(",")] if a.models else list(zoo.NAMES)
    rows = []
    for name in names:
        spec = f"zoo:{name}" + (":small" if a.small else "")
        try:
            rows.append(android_build(spec, a.api_level))
        except FusionError as e:
            rows.append({"model": spec, "ok": False, "error": str(e).splitlines()[0][:160]})
        if not a.json:
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows))
        print(f"\n{sum(r['ok'] for r in rows)} of {len(rows)} build; every export in the model_* ABI: "
              f"{all(not r.get('exported_outside_abi') for r in rows if r['ok'])}; every import in bionic "
              f"API {a.api_level}: {all(not r.get('imported_outside_bionic') for r in rows if r['ok'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
