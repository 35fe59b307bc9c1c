"""The 15 reference models, bundled without weights.

    fusion.zoo.NAMES                       # the 15 names, DNNFusion's order
    m = fusion.zoo.resolve("zoo:tinybert:small")   # onnx.ModelProto, weights filled
    feeds = fusion.zoo.random_inputs("tinybert", small=True, seed=0)

Stored models live in data/ (see store.py for the format); each is filled at
load time from a seed derived from (model name, initializer name).
"""
from __future__ import annotations

import functools
import os

import numpy as np
import onnx

from fusion.errors import FusionError
from fusion.zoo.registry import ENTRIES, NAMES, manifest, model_path  # noqa: F401
from fusion.zoo import store


def parse_name(spec: str) -> tuple[str, bool]:
    """'zoo:NAME[:small]' or 'NAME[:small]' -> (NAME, small)."""
    s = spec[4:] if spec.startswith("zoo:") else spec
    name, _, variant = s.partition(":")
    name = name.strip().lower()
    if variant not in ("", "small", "full"):
        raise FusionError(f"{spec}: unknown variant '{variant}'; use zoo:{name} or zoo:{name}:small")
    if name not in ENTRIES:
        import difflib
        close = difflib.get_close_matches(name, NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise FusionError(f"{spec}: no zoo model '{name}'{hint}; `fusion zoo list` shows the 15 names")
    return name, variant == "small"


@functools.lru_cache(maxsize=4)
def _stored(name: str, small: bool) -> onnx.ModelProto:
    path = model_path(name, small)
    if not os.path.exists(path):
        raise FusionError(f"zoo:{name}{':small' if small else ''}: the model file {os.path.basename(path)} "
                          f"is not in this tree yet (export it with models/export/export.py {name})")
    return store.load(path)


def stored(name: str, small: bool = False) -> onnx.ModelProto:
    """The weight-less stored model (do not modify: it is cached)."""
    return _stored(name, small)


def load(name: str, small: bool = False) -> onnx.ModelProto:
    """The model with filled weights, tagged with metadata fusion.zoo = NAME[:small]."""
    m = store.fill(_stored(name, small), name)
    tag = f"{name}{':small' if small else ''}"
    for p in list(m.metadata_props):
        if p.key == "fusion.zoo":
            m.metadata_props.remove(p)
    p = m.metadata_props.add()
    p.key, p.value = "fusion.zoo", tag
    return m


def resolve(spec: str) -> onnx.ModelProto:
    name, small = parse_name(spec)
    return load(name, small)


def facts(name: str, small: bool = False) -> dict:
    return manifest().get(name, {}).get("small" if small else "full", {})


def random_inputs(name: str, small: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    from fusion.zoo.inputs import make_inputs
    name, _ = parse_name(name)
    return make_inputs(name, _stored(name, small), facts(name, small), seed=seed)
