"""Published IVT-LR checkpoints whose vocabulary is smaller than the base model's embedding matrix.

The reference resizes the embeddings to ``len(tokenizer)`` after adding its three tokens; on a model
whose matrix is padded beyond the tokenizer (Qwen2-VL-7B: 152,064 rows for 151,657 tokens) that
*shrinks* it. Growth is tested in tests/test_train.py; this is the other direction.
"""
from __future__ import annotations

import torch

from methods.ivt_lr.model import LATENT_TOKENS

PAD_ROWS = 64


def _logits(backbone):
    from PIL import Image

    inputs = backbone.build_inputs([[Image.new("RGB", (64, 64), (30, 160, 40))]], ["Which shape is shown?"])
    with torch.no_grad():
        return backbone.model(**inputs).logits


def test_a_published_checkpoint_that_shrinks_a_padded_vocabulary(tiny_model_dirs, tmp_path, publish):
    from harness.api import METHODS
    from harness.backbones import load_backbone
    from harness.latent.adapters import add_tokens

    # A base model whose embedding matrix is padded past its tokenizer, as real checkpoints are.
    base = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32")
    tokens = len(base.tokenizer)
    base.model.resize_token_embeddings(tokens + PAD_ROWS, mean_resizing=False)
    padded = tmp_path / "padded"
    base.model.save_pretrained(padded)
    base.processor.save_pretrained(padded)

    source = load_backbone(str(padded), device="cpu", dtype="float32")
    assert source.model.get_input_embeddings().weight.shape[0] == tokens + PAD_ROWS
    add_tokens(source, LATENT_TOKENS, init_from="the", vocab_size=tokens + len(LATENT_TOKENS))  # the reference's
    assert source.model.get_input_embeddings().weight.shape[0] == tokens + 3 < tokens + PAD_ROWS
    published = publish(source, seed=1)
    torch.save(published, tmp_path / "model.pth")

    target = load_backbone(str(padded), device="cpu", dtype="float32")
    METHODS.get("ivt-lr")(checkpoint=str(tmp_path / "model.pth")).prepare(target)
    assert target.model.get_input_embeddings().weight.shape[0] == tokens + 3
    assert target.lm_head.weight.shape[0] == tokens + 3
    expected = _logits(source)
    torch.testing.assert_close(_logits(target), expected, atol=1e-4, rtol=0)
    assert expected.shape[-1] == tokens + 3
