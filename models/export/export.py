"""Export zoo models: `python models/export/export.py NAME [NAME...] [--only full|small]`.

Writes fusion/zoo/data/NAME.onnx.gz and NAME-small.onnx.gz (weight-less, see
fusion/zoo/store.py) and the model's entry in fusion/zoo/data/manifest.json.
Needs the packages in models/export/requirements.txt (torch is never a
run-time dependency of fusion). After exporting, refresh the measured numbers
with `.venv/bin/python -m fusion.zoo.stats NAME`.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

NLP = ["tinybert", "distilbert", "albert", "bert-base", "mobilebert", "gpt-2"]


def export(name: str, only: str | None) -> None:
    variants = [v for v in (False, True) if only is None or (only == "small") == v]
    results = {}
    if name in NLP:
        import nlp
        exporter = "dynamo (torch.onnx.export dynamo=True)"
        for small in variants:
            model, args, in_names, out_names, extra = nlp.build(name, small)
            results[small] = common.save_variant(name, small, model, args, dynamo=True,
                                                 input_names=in_names, output_names=out_names, extra=extra)
    else:
        import vision
        for small in variants:
            model, args, in_names, out_names, extra, dynamo = vision.build(name, small)
            exporter = "dynamo (torch.onnx.export dynamo=True)" if dynamo else \
                "legacy TorchScript (torch.onnx.export dynamo=False)"
            results[small] = common.save_variant(name, small, model, args, dynamo=dynamo,
                                                 input_names=in_names, output_names=out_names, extra=extra)
    common.record(name, exporter, results.get(False), results.get(True))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+")
    p.add_argument("--only", choices=["full", "small"])
    a = p.parse_args()
    for n in a.names:
        export(n, a.only)


if __name__ == "__main__":
    main()
