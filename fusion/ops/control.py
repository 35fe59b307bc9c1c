"""Control flow: If, Loop, Scan. Subgraphs are kept by the importer and run by the interpreter."""
from __future__ import annotations
