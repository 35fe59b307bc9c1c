"""fusion/plan: which operators fuse into one kernel, and why others don't.

    plan = fusion.plan(graph, target="host")     # -> Plan: blocks + decisions
    for d in plan.refused: print(d.reason)

Pieces: mapping types (mapping.py), the fusion table (table.py), the
seed-and-grow planner (planner.py), the cost model (cost.py) and the profile
database with its measurers (profile.py). The Plan/Block contract with code
generation is in types.py.
"""
from fusion.plan.planner import Planner, plan  # noqa: F401
from fusion.plan.profile import CompileAndTime, CostModel, Measurer, ProfileDB  # noqa: F401
from fusion.plan.table import FUSION_TABLE, lookup  # noqa: F401
from fusion.plan.types import Block, Decision, Plan, block_io, unfused_plan  # noqa: F401
from fusion.plan.verify import verify_plan  # noqa: F401


# `fusion.plan` is both this package and the function `fusion.plan(graph)`:
# once any fusion.plan.* module is imported, the attribute `fusion.plan` is the
# package, so the package itself is made callable.
import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, graph, target="host", **kwargs):
        return plan(graph, target, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
