"""The 15 reference models (DNNFusion's evaluation set): what each one is.

Static facts live here; what the export measured (params, FLOPs, nodes,
inputs, exporter, versions) lives in data/manifest.json, written by
models/export/export.py.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
MANIFEST = os.path.join(DATA_DIR, "manifest.json")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    task: str
    source: str           # the definition it was exported from
    inputs: str           # kind of inputs: "image", "image01" (pixels in [0,1]), "tokens"
    vocab: int = 0        # token models: vocabulary size (input_ids < vocab)
    type_vocab: int = 0   # token_type_ids < type_vocab


NAMES = ["efficientnet-b0", "vgg-16", "mobilenetv1-ssd", "yolo-v4", "c3d", "s3d", "u-net",
         "faster-rcnn", "mask-rcnn", "tinybert", "distilbert", "albert", "bert-base",
         "mobilebert", "gpt-2"]

ENTRIES = {e.name: e for e in [
    ZooEntry("efficientnet-b0", "image classification", "torchvision.models.efficientnet_b0", "image"),
    ZooEntry("vgg-16", "image classification", "torchvision.models.vgg16", "image"),
    ZooEntry("mobilenetv1-ssd", "object detection", "plain torch after Liu et al. / Howard et al.", "image"),
    ZooEntry("yolo-v4", "object detection", "plain torch after Bochkovskiy et al. (CSPDarknet53)", "image"),
    ZooEntry("c3d", "action recognition", "plain torch after Tran et al.", "image"),
    ZooEntry("s3d", "action recognition", "torchvision.models.video.s3d", "image"),
    ZooEntry("u-net", "image segmentation", "plain torch after Ronneberger et al.", "image"),
    ZooEntry("faster-rcnn", "object detection", "torchvision fasterrcnn_resnet50_fpn", "image01"),
    ZooEntry("mask-rcnn", "instance segmentation", "torchvision maskrcnn_resnet50_fpn", "image01"),
    ZooEntry("tinybert", "language model (encoder)", "transformers BertModel (TinyBERT-4 config)", "tokens",
             30522, 2),
    ZooEntry("distilbert", "language model (encoder)", "transformers DistilBertModel", "tokens", 30522),
    ZooEntry("albert", "language model (encoder)", "transformers AlbertModel (base)", "tokens", 30000, 2),
    ZooEntry("bert-base", "language model (encoder)", "transformers BertModel (base)", "tokens", 30522, 2),
    ZooEntry("mobilebert", "language model (encoder)", "transformers MobileBertModel", "tokens", 30522, 2),
    ZooEntry("gpt-2", "language model (decoder)", "transformers GPT2Model (small)", "tokens", 50257),
]}


def manifest() -> dict:
    """What the export recorded per model: {name: {"exporter", "full": {...}, "small": {...}}}."""
    try:
        with open(MANIFEST) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def model_path(name: str, small: bool) -> str:
    return os.path.join(DATA_DIR, f"{name}{'-small' if small else ''}.onnx.gz")
