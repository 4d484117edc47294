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
