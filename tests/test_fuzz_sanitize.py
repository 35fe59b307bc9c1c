"""Generated C under AddressSanitizer + UndefinedBehaviorSanitizer, run by the
instrumented fz_driver on random inputs, outputs checked with onnxruntime."""
from __future__ import annotations

import pytest

from fusion.fuzz.generator import generate
from fusion.fuzz.sanitize import sanitize
from fusion.fuzz.spec import merge


def test_sanitizers_catch_an_out_of_bounds_write(tmp_path):
    """The harness itself: a library that writes past a buffer must be reported."""
    import os
    import subprocess
    from fusion.fuzz.sanitize import ENV, SAN_FLAGS
    from fusion.toolchain import host_cc
    src = tmp_path / "oob.c"
    src.write_text("#include <stdlib.h>\nint main(void){ int *a = malloc(4*sizeof(int)); a[4] = 1; "
                   "int r = a[0]; free(a); return r & 0; }\n")
    exe = tmp_path / "oob"
    subprocess.run([host_cc(), *SAN_FLAGS, str(src), "-o", str(exe)], check=True)
    p = subprocess.run([str(exe)], capture_output=True, text=True, env=dict(os.environ, **ENV))
    assert p.returncode == 86 and ("heap-buffer-overflow" in p.stderr or "runtime error: store" in p.stderr), p.stderr


def test_fuzz_batch_is_clean():
    specs = [generate(900 + k, max_nodes=8) for k in range(12)]
    feeds = {}
    for k, s in enumerate(specs):
        feeds.update(s.random_feeds(f"g{k}_"))
    r = sanitize(merge(specs), feeds=feeds, label="fuzz:12")
    assert r.ok, (r.report, r.mismatch, r.details.get("stderr", "")[-3000:])


def test_tinybert_small_is_clean():
    r = sanitize("zoo:tinybert:small")
    assert r.ok, (r.report, r.mismatch, r.details.get("stderr", "")[-3000:])


def _zoo_names():
    from fusion.zoo import NAMES
    return list(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", _zoo_names())
def test_zoo_small_is_clean(name):
    """fusion fuzz sanitize zoo:NAME:small for each reference model"""
    r = sanitize(f"zoo:{name}:small", timeout=3600)
    assert r.ok, (r.report, r.mismatch, r.details.get("stderr", "")[-3000:])


def test_cli_bad_fuzz_spec_is_a_clean_error():
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "fusion", "fuzz", "sanitize", "fuzz:many"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "fuzz:N" in p.stderr, p.stderr
