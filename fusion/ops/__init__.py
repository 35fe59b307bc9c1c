"""The one op table. Importing this package registers every op.

Modules by kind of op; each op is described exactly once (see table.OpDef).
"""
from fusion.ops.table import (OPS, Algebra, AttrSpec, Mapping, OpDef, all_ops, get_op,  # noqa: F401
                              register)
from fusion.ops import (elementwise, shape, linear, reduce, nn, pool, norm, gather,  # noqa: F401,E402
                        movement, opaque, control, extra)
