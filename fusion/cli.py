"""The `fusion` command. Each stage contributes its subcommands through a
module with `register(subparsers)`; this file only assembles them and turns
user errors into one clear line (exit code 2; traceback with --debug)."""
from __future__ import annotations

import argparse
import importlib
import sys

from fusion.errors import FusionError

# Stage command modules, in pipeline order. Each defines register(subparsers).
COMMAND_MODULES = [
    "fusion.ir.cli",        # inspect, ops, conformance
    "fusion.zoo.cli",       # zoo
    "fusion.rewrite.cli",   # rewrite, rules
    "fusion.plan.cli",      # plan, profile
    "fusion.passes",        # passes
    "fusion.codegen.cli",   # compile, run, bench, eval, targets
    "fusion.codegen.llvm.cli",  # llvm (JIT, IR/asm/object output)
    "fusion.fuzz.cli",      # fuzz
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fusion",
        description="Operator-fusion compiler for deep-learning inference: ONNX -> fused C / LLVM / OpenCL.")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    from fusion import __version__
    p.add_argument("--version", action="version", version=f"fusion {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue  # stage not built yet
            raise
        m.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
        return int(rc or 0)
    except FusionError as e:
        if debug:
            raise
        print(f"fusion: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fusion: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
