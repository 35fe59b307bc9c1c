"""User-facing errors.

A `FusionError` is a mistake in the user's input (a file, a flag, a model):
the CLI prints its message on one line and exits with code 2, no traceback.
Anything else escaping is a bug in fusion and keeps its traceback.
"""


class FusionError(Exception):
    """An error the user can fix; the message says what and how."""


class UnsupportedOpError(FusionError):
    pass


class ShapeError(FusionError):
    pass


class ModelFileError(FusionError):
    pass


class InputError(FusionError):
    """Run-time inputs that do not match the model (names, shapes, dtypes)."""


class ToolchainError(FusionError):
    """A compiler, linker or emulator fusion needs is missing or failed."""
