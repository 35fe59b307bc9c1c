"""Differential testing: random graphs against onnxruntime, a shrinker for
failures, a byte-level fuzzer of the importer, sanitizer runs of generated C.

    from fusion.fuzz import generate, run_batch
    specs = [generate(seed) for seed in range(20)]
    result = run_batch(specs)          # one compiled library for all of them
"""
from __future__ import annotations

from fusion.fuzz.spec import GraphSpec  # noqa: F401
from fusion.fuzz.generator import generate  # noqa: F401
from fusion.fuzz.runner import check_spec, run_batch  # noqa: F401
