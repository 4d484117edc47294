"""The supported families. Each answers only what differs: positions (the rope mode), the model class to load,
and (Chameleon) where the decoder sits and how the model merges and scores image tokens."""
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


class ChameleonBackbone(Backbone):
    """Chameleon (``ChameleonForConditionalGeneration``; IVT-LR's ScienceQA backbone): early fusion, 1-D positions.

    There is no vision tower and no projector. The processor writes each image as
    ``<racm3:break>`` + ``image_seq_length`` × ``<image>`` + ``<eoss>`` (1024 placeholders at 512 px for
    Chameleon-7B); in the forward, the VQ-VAE turns the pixels into a grid of codebook indices, the
    vocabulary mapping turns each index into its ``IMGIMG…`` BPE token, and the placeholders take the
    *input embeddings of those tokens* (``get_image_features``). So a Chameleon image is a row-major grid
    of token embeddings: the image positions are the ``<image>`` placeholders (the break/end markers are
    text), and the image "features" methods gather there are rows of the shared embedding table.

    What differs from the other families, and only here:

    - the decoder is ``model.model`` itself (it also holds the VQ-VAE, which has no Linear layer that
      LoRA targets), and it merges the image tokens inside its own forward: the merged embeddings are
      taken at the input of decoder layer 0;
    - logits: the model's forward forbids the image-code tokens (their logits are ``finfo.min``); this
      backbone does the same, so that cached decoding equals ``generate`` and never emits an image code;
    - ``pixel_values`` are cast to the model's dtype (the VQ-VAE's first conv does not cast them);
    - prompts: the tokenizer's chat template when there is one, else Chameleon's own format,
      ``<image>`` × n then the prompt; the processor appends the separator token (chat mode) either way.
    """

    family = "chameleon"
    model_types = ("chameleon",)

    @staticmethod
    def model_class(model_type: str):
        from transformers import ChameleonForConditionalGeneration

        return ChameleonForConditionalGeneration

    @staticmethod
    def language_model_of(model):
        return model.model

    def chat_text(self, n_images: int, prompt: str) -> str:
        if getattr(self.processor, "chat_template", None):
            return super().chat_text(n_images, prompt)
        return self.processor.image_token * n_images + prompt

    def build_inputs(self, images, prompts):
        batch = super().build_inputs(images, prompts)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    def image_code_tokens(self) -> list[int]:
        """The vocabulary ids of the VQ codes (the ``IMGIMG…`` tokens), sorted."""
        return self.model.model.vocabulary_mapping.image_tokens

    def logits(self, hidden):
        logits = self.lm_head(hidden)
        codes = getattr(self, "_codes", None)
        if codes is None or codes.device != logits.device:
            codes = self._codes = torch.tensor(self.image_code_tokens(), dtype=torch.long, device=logits.device)
        # Out of place (index_fill, not an indexed assignment): training keeps its graph through it.
        return logits.index_fill(-1, codes, torch.finfo(logits.dtype).min)

    def _capture_prompt_embeds(self, captured):
        def grab_embeds(_module, args, kwargs):
            captured["embeds"] = args[0] if args else kwargs["hidden_states"]

        return self.decoder_layers()[0].register_forward_pre_hook(grab_embeds, with_kwargs=True)

    def projector_parameters(self):
        return []  # image codes are looked up in the text embedding table: nothing projects them

    def vision_encoder_parameters(self):
        return list(self.model.model.vqmodel.parameters())


FAMILY_CLASSES: tuple[type[Backbone], ...] = (QwenVLBackbone, LlavaBackbone, ChameleonBackbone)
