"""The six language models, from transformers configs (never from_pretrained):
batch 1, sequence 128 (small variants: 2 layers, sequence 32, vocabulary 1000),
eager attention, inputs input_ids, attention_mask (+ token_type_ids)."""
from __future__ import annotations

import torch

SEQ, SMALL_SEQ, SMALL_VOCAB, SMALL_LAYERS = 128, 32, 1000, 2


class Wrap(torch.nn.Module):
    """Returns the model's outputs as a plain tuple (ONNX outputs with stable names)."""

    def __init__(self, model, keys):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        out = self.model(**kw)
        return tuple(getattr(out, k) for k in self.keys)


def _config(name: str, small: bool):
    import transformers as tf
    common = {"attn_implementation": "eager"}
    if name == "tinybert":
        c = tf.BertConfig(hidden_size=312, num_hidden_layers=4, num_attention_heads=12,
                          intermediate_size=1200, **common)
        cls, keys = tf.BertModel, ["last_hidden_state", "pooler_output"]
    elif name == "bert-base":
        c = tf.BertConfig(**common)
        cls, keys = tf.BertModel, ["last_hidden_state", "pooler_output"]
    elif name == "distilbert":
        c = tf.DistilBertConfig(**common)
        cls, keys = tf.DistilBertModel, ["last_hidden_state"]
    elif name == "albert":
        c = tf.AlbertConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072, **common)
        cls, keys = tf.AlbertModel, ["last_hidden_state", "pooler_output"]
    elif name == "mobilebert":
        c = tf.MobileBertConfig(**common)
        cls, keys = tf.MobileBertModel, ["last_hidden_state", "pooler_output"]
    elif name == "gpt-2":
        c = tf.GPT2Config(**common)
        cls, keys = tf.GPT2Model, ["last_hidden_state"]
    else:
        raise KeyError(name)
    if small:
        c.vocab_size = SMALL_VOCAB
        for attr in ("num_hidden_layers", "n_layers", "n_layer"):
            if hasattr(c, attr) and attr in c.to_dict():
                setattr(c, attr, SMALL_LAYERS)
    return c, cls, keys


def build(name: str, small: bool, seed: int = 0):
    torch.manual_seed(seed)
    config, cls, keys = _config(name, small)
    model = Wrap(cls(config), keys).eval()
    seq = SMALL_SEQ if small else SEQ
    ids = torch.randint(0, config.vocab_size, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.long)
    mask[:, -seq // 8:] = 0
    args = {"input_ids": ids, "attention_mask": mask}
    names = ["input_ids", "attention_mask"]
    if getattr(config, "type_vocab_size", 0):
        args["token_type_ids"] = torch.zeros(1, seq, dtype=torch.long)
        names.append("token_type_ids")
    extra = {"vocab": config.vocab_size, "type_vocab": getattr(config, "type_vocab_size", 0) or 0,
             "layers": getattr(config, "num_hidden_layers", getattr(config, "n_layers", getattr(config, "n_layer", 0))),
             "sequence": seq}
    return model, args, names, keys, extra
