"""Helpers shared by every subcommand: model arguments, shape flags, output."""
from __future__ import annotations

import argparse
import json
import sys

from fusion.errors import FusionError, ShapeError


def parse_shape_flags(items: list[str] | None) -> dict:
    """['input_ids=1x128', 'batch=1'] -> {'input_ids': (1, 128), 'batch': 1}"""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ShapeError(f"--shape expects NAME=DIMS like input_ids=1x128, got '{item}'")
        name, dims = item.split("=", 1)
        try:
            vals = tuple(int(d) for d in dims.lower().replace(",", "x").split("x") if d != "")
        except ValueError:
            raise ShapeError(f"--shape {item}: dimensions must be integers separated by 'x'") from None
        if not vals:
            raise ShapeError(f"--shape {item}: no dimensions given")
        out[name.strip()] = vals if len(vals) > 1 or "x" in dims else vals[0]
    return out


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="ONNX file, or zoo:NAME / zoo:NAME:small for a bundled reference model")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS",
                   help="bind an input's shape (input_ids=1x128) or a named dimension (batch=1); repeatable")


def load_model(args, check: bool = True):
    import fusion
    shapes = parse_shape_flags(getattr(args, "shape", None))
    return fusion.load(args.model, shapes=shapes or None, check=check)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(o):
    import numpy as np
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class Progress:
    """A one-line progress indicator on stderr (silent when not a terminal
    unless forced), for long work: compiling, profiling, evaluating."""

    def __init__(self, total: int, label: str, enabled: bool | None = None):
        self.total, self.label, self.n = max(total, 1), label, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def step(self, what: str = "", k: int = 1) -> None:
        self.n += k
        if self.enabled:
            pct = 100 * self.n // self.total
            sys.stderr.write(f"\r{self.label}: {self.n}/{self.total} ({pct}%) {what[:50]:<50}")
            sys.stderr.flush()

    def done(self, msg: str = "") -> None:
        if self.enabled:
            sys.stderr.write(f"\r{self.label}: done{(' - ' + msg) if msg else ''}{' ' * 60}\n")
            sys.stderr.flush()
