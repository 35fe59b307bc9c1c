"""Indexing ops: Gather, GatherElements, GatherND, Scatter*, OneHot."""
from __future__ import annotations
