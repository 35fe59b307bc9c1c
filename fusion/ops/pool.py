"""Pooling ops: MaxPool, AveragePool, global and Lp pooling."""
from __future__ import annotations
