"""Neural-network ops that are plain copies at inference: Dropout."""
from __future__ import annotations

import numpy as np

from fusion.errors import FusionError
from fusion.ir import expr as E
from fusion.ops.table import Algebra, AttrSpec, Mapping, OpDef, const_input, register


def _dropout_normalize(node, graph, opset):
    for k in ("is_test", "ratio", "consumed_inputs"):
        node.attrs.pop(k, None)   # opset < 12 attributes; meaningless at inference
    tm = node.input(2)
    if tm is not None:
        c = const_input(node, 2)
        if c is None or bool(np.asarray(c).reshape(-1)[0]):
            raise FusionError(f"{node.label()}: Dropout in training mode (random masks) is not supported; "
                              f"export the model for inference")


def _dropout_infer(node):
    x = node.inputs[0]
    return [(x.dtype, x.shape), (np.dtype(np.bool_), x.shape)][:len(node.outputs)]


register(OpDef(
    "Dropout", inputs=("data", "ratio?", "training_mode?"), outputs=("output", "mask?"),
    attrs={"seed": AttrSpec("int", None)},
    mapping=Mapping.O2O, infer=_dropout_infer,
    reference=lambda node, a: [a[0].copy(), np.ones(a[0].shape, np.bool_)][:len(node.outputs)],
    lower=lambda node, out, read, k=0: read(0, list(out)) if k == 0 else E.Const(True),
    normalize=_dropout_normalize, export_opset=12, category="nn", algebra=Algebra(idempotent=True),
    doc="Inference: the identity; the mask is all true.",
))
