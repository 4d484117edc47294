"""The supported families. Each answers only what differs: positions (the rope mode) and the model class to load."""
from __future__ import annotations

import inspect

import torch

from harness.backbones.base import Backbone


class LlavaBackbone(Backbone):
    """LLaVA-1.5, LLaVA-NeXT and LLaVA-style CLIP + Qwen2 models (LaRe's): 1-D positions."""

    family = "llava"
    model_types = ("llava", "llava_next")

    @staticmethod
    def model_class(model_type: str):
        from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration if model_type == "llava_next" else LlavaForConditionalGeneration


class QwenVLBackbone(Backbone):
    """Qwen2-VL and Qwen2.5-VL: 3-D M-RoPE positions (temporal, height, width).

    ``rope="mrope"`` (default) gives image tokens their 2-D grid positions from the model's own
    ``get_rope_index`` and continues appended embeddings as text positions after the largest one, as
    the model was trained. ``rope="1d"`` feeds plain 1-D positions 0..T-1 to all three sections,
    which is what IVT-LR's published code does.
    """

    family = "qwen2-vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")

    @staticmethod
    def model_class(model_type: str):
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration if model_type == "qwen2_5_vl" else Qwen2VLForConditionalGeneration

    def describe(self) -> dict:
        # Key kept as "positions": describe() is part of every stored run's identity, so renaming it
        # would give every Qwen2-VL run of every method a new run key.
        return {**super().describe(), "positions": self.rope}

    def prefill_positions(self, inputs):
        has_vision = inputs.get("image_grid_thw") is not None or inputs.get("video_grid_thw") is not None
        if not (self.rope == "mrope" and has_vision):
            positions, next_position = super().prefill_positions(inputs)
            return positions[None].expand(3, -1, -1), next_position
        get_rope_index = self.model.model.get_rope_index
        accepted = inspect.signature(get_rope_index).parameters
        kwargs = {k: v for k, v in inputs.items() if k in accepted and k != "input_ids"}
        positions, _ = get_rope_index(inputs["input_ids"], **kwargs)
        # Padding positions are filled with 1 by get_rope_index; the max is over real tokens.
        next_position = positions.amax(dim=(0, 2)) + 1
        return positions, next_position

    def text_positions(self, start: torch.Tensor, n: int) -> torch.Tensor:
        return super().text_positions(start, n)[None].expand(3, -1, -1)

    def projector_parameters(self):
        return list(self.model.model.visual.merger.parameters())  # Qwen2-VL's projector lives in the tower

    def vision_encoder_parameters(self):
        projector = {id(p) for p in self.projector_parameters()}
        return [p for p in self.model.model.visual.parameters() if id(p) not in projector]

    def image_grid(self, inputs) -> list[tuple[int, int]]:
        """From the processor's ``image_grid_thw``, after the spatial merge (one image per sample)."""
        thw = inputs.get("image_grid_thw")
        batch = inputs["input_ids"].shape[0]
        if thw is None or thw.shape[0] != batch:
            raise ValueError(f"{0 if thw is None else thw.shape[0]} images for {batch} questions; this method "
                             "needs exactly one image per question")
        merge = self.model.config.vision_config.spatial_merge_size
        return [(int(h) // merge, int(w) // merge) for _t, h, w in thw.tolist()]


FAMILY_CLASSES: tuple[type[Backbone], ...] = (QwenVLBackbone, LlavaBackbone)
