"""Realistic seeded inputs for zoo models: token ids inside the vocabulary,
an attention mask of ones with some padding at the end, images ~N(0,1)
(or pixels in [0,1] for models that normalize inside, like torchvision's R-CNNs)."""
from __future__ import annotations

import numpy as np
import onnx

from fusion.zoo.registry import ENTRIES


def _shape(vi: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = vi.type.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.HasField("dim_value") else 1 for d in dims)


def make_inputs(name: str, model: onnx.ModelProto, facts: dict, seed: int = 0) -> dict[str, np.ndarray]:
    entry = ENTRIES[name]
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    vocab = int(facts.get("vocab") or entry.vocab or 2)
    type_vocab = int(facts.get("type_vocab") or entry.type_vocab or 1)
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = _shape(vi)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        lname = vi.name.lower()
        if dtype.kind == "f":
            if entry.inputs == "image01":
                out[vi.name] = rng.random(shape).astype(dtype)
            else:
                out[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in lname:
            m = np.ones(shape, dtype=dtype)
            seq = shape[-1]
            pad = max(1, seq // 8)  # the last eighth is padding
            m[..., seq - pad:] = 0
            out[vi.name] = m
        elif "type" in lname or "segment" in lname:
            t = np.zeros(shape, dtype=dtype)
            if type_vocab > 1:
                t[..., shape[-1] // 2:] = 1  # a sentence pair: second half is segment 1
            out[vi.name] = t
        elif "position" in lname:
            out[vi.name] = np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        else:
            # Token ids: skip the lowest ids, which are special tokens in these vocabularies.
            lo = min(1000, vocab // 4)
            out[vi.name] = rng.integers(lo, vocab, shape).astype(dtype)
    return out
