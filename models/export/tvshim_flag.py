"""torchvision's "compiled ops loaded" flag, as a function TorchScript can compile (see tvshim.py)."""


def _has_ops() -> bool:
    return True
