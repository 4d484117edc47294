"""Shared fixtures: tiny random checkpoints built once per session, written the way real ones are."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    from harness.backbones.tiny import write_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {family: write_tiny_model(family, root / family) for family in ("qwen2-vl", "llava")}


@pytest.fixture(scope="session", params=["qwen2-vl", "llava"])
def backbone(request, tiny_model_dirs):
    from harness.backbones import load_backbone

    return load_backbone(str(tiny_model_dirs[request.param]), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def images():
    from PIL import Image, ImageDraw

    def shape(colour, size):
        image = Image.new("RGB", size, (255, 255, 255))
        ImageDraw.Draw(image).ellipse([8, 8, size[0] - 8, size[1] - 8], fill=colour)
        return image

    return [[shape((220, 30, 30), (64, 64))], [shape((30, 30, 220), (96, 72))]]


@pytest.fixture()
def publish():
    """``publish(source)``: LoRA (random, seeded) on ``source`` (a backbone with IVT-LR's tokens added),
    returned as a state dict in the published IVT-LR ``model.pth`` layout: the peft model under
    ``base_causallm`` with transformers-4.51 names, and the input embeddings again as ``embedding``."""
    import re

    import torch

    from harness.latent.adapters import LoraSettings, attach_lora

    def make(source, seed: int = 0) -> dict:
        peft_model = attach_lora(source, LoraSettings(r=4, alpha=16, dropout=0.0))
        torch.manual_seed(seed)
        for name, p in source.model.named_parameters():
            if "lora_" in name:
                p.data.normal_(0, 0.05)
        published = {}
        for key, value in peft_model.state_dict().items():
            name = key.removeprefix("base_model.model.")
            name = re.sub(r"^model\.language_model\.", "model.", name)
            name = re.sub(r"^model\.visual\.", "visual.", name)
            published["base_causallm.base_model.model." + name] = value.clone()
        published["embedding.weight"] = source.model.get_input_embeddings().weight.detach().clone()
        return published

    return make
