"""One interface over Hugging Face VLM families, so that methods never ask which family they run on.

A :class:`Backbone` wraps a ``*ForConditionalGeneration`` model and its processor. It answers the
questions latent methods need: chat-templated inputs, token embeddings, where the image tokens sit,
the decoder layers, a forward on ``inputs_embeds`` that appends to a KV cache with the right
positions, hidden states at any layer, and the attention of a query position over the image
positions. Family subclasses answer only what differs between families: the positions
(Qwen2-VL's 3-D M-RoPE vs 1-D, the ``rope`` mode), which config field names the image token, and
for an early-fusion model like Chameleon where the decoder sits (``language_model_of``), where the
merged embeddings are captured (``_capture_prompt_embeds``) and which logits the model forbids
(``logits``).

The prefill runs the model's own multimodal forward (so each family's image packing is HF's), with
a pre-hook capturing the merged ``inputs_embeds`` (on the language model; Chameleon: on decoder
layer 0); everything after the prefill runs the language model directly on embeddings.
"""
from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Iterator

import torch
from torch import nn


@dataclass
class Generation:
    text: str
    input_tokens: int
    generated_tokens: int
    token_ids: list[int] = field(default_factory=list)


class PromptRecorder:
    """Stands in for a backbone: records the prompts of each ``generate`` call and replies with given
    texts. Running a registered method on it gives the exact prompts that method sends (what the zoo
    and the trained baselines train on); a two-stage method's second prompts hold the replies."""

    def __init__(self, replies: list[str]):
        self.replies, self.prompts = replies, []

    def generate(self, images, prompts, max_new_tokens) -> list[Generation]:
        self.prompts.append(list(prompts))
        return [Generation(text=reply, input_tokens=0, generated_tokens=0) for reply in self.replies[:len(prompts)]]


@dataclass
class DecodeState:
    """A batch in flight: its KV cache, mask, next positions and the last forward's outputs."""

    cache: object  # transformers Cache
    attention_mask: torch.Tensor  # [B, T] 1 = real token, 0 = left padding
    next_position: torch.Tensor  # [B] the text position the next appended embedding gets
    logits: torch.Tensor  # [B, V] logits at the last position
    last_hidden: torch.Tensor  # [B, D] final-norm hidden state at the last position
    # Set by the prefill; appended embeddings are never image tokens.
    image_mask: torch.Tensor | None = None  # [B, T_prefill] True at image-token positions
    inputs_embeds: torch.Tensor | None = None  # [B, T_prefill, D] merged prefill embeddings
    input_ids: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.attention_mask.shape[1]


@dataclass
class ForwardResult:
    logits: torch.Tensor  # [B, n, V]
    last_hidden: torch.Tensor  # [B, n, D] after the final norm
    layer_outputs: dict[int, torch.Tensor] = field(default_factory=dict)  # layer index → [B, n, D]
    query_attention: torch.Tensor | None = None  # [B, T_keys] last query row over all keys, mean over layers+heads


class Backbone:
    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()

    # The rotary position mode. "mrope": the positions the family was trained with (Qwen2-VL's 3-D
    # M-RoPE, a 2-D grid for image tokens; 1-D families have only 1-D positions, so for them it is "1d");
    # "1d": plain 0..T-1 for every token, which is what some reference codes feed (IVT-LR's).
    # Methods ask for a mode; they never ask for the family.
    ROPE_MODES: ClassVar[tuple[str, ...]] = ("mrope", "1d")

    def __init__(self, model, processor, *, model_id: str, revision: str = "", rope: str = "mrope"):
        if rope not in self.ROPE_MODES:
            raise ValueError(f"unknown rope mode {rope!r}; choose one of: {', '.join(self.ROPE_MODES)}")
        self.rope = rope
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.model_id = model_id
        self.revision = revision
        self.language_model: nn.Module = self.language_model_of(model)
        self.lm_head: nn.Module = model.get_output_embeddings()

    @staticmethod
    def language_model_of(model) -> nn.Module:
        """The decoder stack that takes ``inputs_embeds`` (embed_tokens, layers, norm)."""
        return model.model.language_model

    # -- facts -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.lm_head.weight.shape[1]

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return list(eos) if isinstance(eos, (list, tuple)) else [eos]

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.eos_token_ids[0]

    @property
    def image_token_id(self) -> int:
        config = self.model.config
        token = getattr(config, "image_token_id", None)
        return token if token is not None else config.image_token_index

    def decoder_layers(self) -> nn.ModuleList:
        """The language model's decoder layers, in order (for hooks)."""
        return self.language_model.layers

    def projector_parameters(self) -> list[nn.Parameter]:
        """The vision→language projector's parameters (LLaVA's ``multi_modal_projector``)."""
        return list(self.model.model.multi_modal_projector.parameters())

    def vision_encoder_parameters(self) -> list[nn.Parameter]:
        """The vision encoder's parameters, the projector excluded."""
        projector = {id(p) for p in self.projector_parameters()}
        return [p for p in self.model.model.vision_tower.parameters() if id(p) not in projector]

    def signature(self) -> dict:
        """What a trained adapter depends on: recorded in checkpoints, compared when they are loaded."""
        return {"model": self.model_id, "revision": self.revision, "family": self.family,
                "model_type": getattr(self.model.config, "model_type", ""), "hidden_size": self.hidden_size,
                "layers": len(self.decoder_layers())}

    def describe(self) -> dict:
        return {"family": self.family, "model": self.model_id, "revision": self.revision,
                "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}

    # -- inputs ------------------------------------------------------------------------------
    def chat_text(self, n_images: int, prompt: str) -> str:
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def build_inputs(self, images: list[list], prompts: list[str]):
        """Chat-templated, left-padded model inputs for a batch of (images, prompt) pairs."""
        texts = [self.chat_text(len(imgs), prompt) for imgs, prompt in zip(images, prompts)]
        flat = [image for imgs in images for image in imgs]
        batch = self.processor(text=texts, images=flat or None, padding=True, return_tensors="pt")
        return batch.to(self.device)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.embed_tokens(input_ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits from final-norm hidden states, as the model's own forward computes them."""
        return self.lm_head(hidden)

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] True where the sequence holds an image token (its embedding is an image feature)."""
        return input_ids == self.image_token_id

    def image_grid(self, inputs) -> list[tuple[int, int]]:
        """(rows, columns) of each sample's visual-token grid; the image tokens lie in it row-major.

        One image per sample. Here: a square grid (LLaVA-1.5-style models, whose CLIP patch tokens are
        all image tokens); families whose processor reports the grid override this.
        """
        grids = []
        for n in self.image_positions(inputs["input_ids"]).sum(-1).tolist():
            side = math.isqrt(int(n))
            if n == 0 or side * side != n:
                raise ValueError(f"a sample's {n} image tokens form no square grid (one image per question, "
                                 "a single-tile LLaVA-1.5-style model); this method needs the visual grid")
            grids.append((side, side))
        return grids

    # -- positions (family-specific) ---------------------------------------------------------
    def prefill_positions(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(position_ids as the language model takes them, next text position per sample [B])."""
        mask = inputs["attention_mask"]
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return positions, mask.long().sum(-1)

    def text_positions(self, start: torch.Tensor, n: int) -> torch.Tensor:
        """Positions for ``n`` appended (non-image) embeddings starting at ``start`` [B]."""
        return start[:, None] + torch.arange(n, device=start.device)

    # -- forward -----------------------------------------------------------------------------
    def _run_language_model(self, call: Callable, layer_indices, probe_attention: bool) -> ForwardResult:
        layers = self.decoder_layers()
        probe = attention_probe(layers) if probe_attention else contextlib.nullcontext(None)
        with capture_layers(layers, layer_indices or ()) as layer_outputs, probe as rows:
            hidden = call()
        query_attention = None
        if probe_attention:
            query_attention = torch.stack([rows[i] for i in range(len(layers))]).mean(0)
        return ForwardResult(logits=self.logits(hidden), last_hidden=hidden, layer_outputs=layer_outputs,
                             query_attention=query_attention)

    def prefill(self, inputs, *, capture_layers=None, probe_attention: bool = False,
                grad: bool = False) -> tuple[DecodeState, ForwardResult]:
        """Run the multimodal prompt through the model, filling a fresh KV cache.

        ``grad=True`` keeps the autograd graph (training through the cache, Coconut-style); the
        default runs under ``no_grad``.
        """
        with torch.set_grad_enabled(grad):
            return self._prefill(inputs, capture_layers, probe_attention)

    def _prefill(self, inputs, capture_layers, probe_attention) -> tuple[DecodeState, ForwardResult]:
        from transformers import DynamicCache

        positions, next_position = self.prefill_positions(inputs)
        cache = DynamicCache(config=self.language_model.config)
        captured = {}
        model_inputs = {k: v for k, v in inputs.items() if k not in ("position_ids",)}

        def call():
            handle = self._capture_prompt_embeds(captured)
            try:
                out = self.model.model(**model_inputs, position_ids=positions, past_key_values=cache, use_cache=True)
            finally:
                handle.remove()
            return out.last_hidden_state

        result = self._run_language_model(call, capture_layers, probe_attention)
        state = DecodeState(
            cache=cache,
            attention_mask=inputs["attention_mask"].clone(),
            next_position=next_position,
            logits=result.logits[:, -1],
            last_hidden=result.last_hidden[:, -1],
            image_mask=self.image_positions(inputs["input_ids"]),
            inputs_embeds=captured["embeds"],
            input_ids=inputs["input_ids"],
        )
        return state, result

    def _capture_prompt_embeds(self, captured: dict):
        """Hook the model so that its multimodal forward leaves the merged ``inputs_embeds`` (image
        features already in place) in ``captured["embeds"]``; returns the hook's handle. Here: the
        keyword argument the wrapper passes to the language model."""

        def grab_embeds(_module, _args, kwargs):
            captured["embeds"] = kwargs["inputs_embeds"]

        return self.language_model.register_forward_pre_hook(grab_embeds, with_kwargs=True)

    def append(self, state: DecodeState, embeds: torch.Tensor, *, capture_layers=None,
               probe_attention: bool = False, mask: torch.Tensor | None = None,
               grad: bool = False) -> ForwardResult:
        """Append ``embeds`` [B, n, D] to the cache at the next text positions; updates ``state``.

        ``mask`` [B, n] (1 = real, 0 = padding) lets samples of a batch append different numbers of
        real embeddings: padding slots are masked out and take no position (see
        :meth:`appended_positions`). ``grad=True`` keeps the autograd graph (training).
        """
        with torch.set_grad_enabled(grad):
            return self._append(state, embeds, capture_layers, probe_attention, mask)

    def _append(self, state, embeds, capture_layers, probe_attention, mask) -> ForwardResult:
        n = embeds.shape[1]
        if mask is None:
            mask = state.attention_mask.new_ones(embeds.shape[0], n)
        positions = self.appended_positions(state.next_position, mask)
        full_mask = torch.cat([state.attention_mask, mask.to(state.attention_mask.dtype)], dim=1)

        def call():
            out = self.language_model(inputs_embeds=embeds.to(self.dtype), attention_mask=full_mask,
                                      position_ids=positions, past_key_values=state.cache, use_cache=True)
            return out.last_hidden_state

        result = self._run_language_model(call, capture_layers, probe_attention)
        state.attention_mask = full_mask
        state.next_position = state.next_position + mask.long().sum(-1)
        state.logits = result.logits[:, -1]
        state.last_hidden = result.last_hidden[:, -1]
        return result

    def forward_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                       *, capture_layers=None, probe_attention: bool = False, grad: bool = False) -> ForwardResult:
        """One cache-free forward over a whole embedded sequence (the reference for cached loops; with
        ``grad=True`` a training forward, e.g. LaRe's text reconstruction from the latents)."""

        def call():
            out = self.language_model(inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask,
                                      position_ids=position_ids, use_cache=False)
            return out.last_hidden_state

        with torch.set_grad_enabled(grad):
            return self._run_language_model(call, capture_layers, probe_attention)

    @torch.no_grad()
    def prefill_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                       next_position: torch.Tensor) -> DecodeState:
        """A fresh KV cache from an already embedded sequence (e.g. a reference loop's final sequence),
        ready for decoding (``harness.latent.decode``); ``next_position`` [B] is the position the next
        token gets."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.language_model.config)

        def call():
            out = self.language_model(inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask,
                                      position_ids=position_ids, past_key_values=cache, use_cache=True)
            return out.last_hidden_state

        result = self._run_language_model(call, None, False)
        return DecodeState(cache=cache, attention_mask=attention_mask.clone(), next_position=next_position.clone(),
                           logits=result.logits[:, -1], last_hidden=result.last_hidden[:, -1])

    def appended_positions(self, start: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Positions for appended embeddings after ``start`` [B], where ``mask`` [B, n] marks the real
        ones: the j-th real embedding gets ``start + j`` whatever padding precedes it in the chunk, so
        a padded batch gets the positions each sample would get alone."""
        n = mask.shape[1]
        shift = (mask.long().cumsum(-1) - 1).clamp(min=0) - torch.arange(n, device=mask.device)  # [B, n], <= 0
        return self.text_positions(start, n) + shift.to(start.device)

    def concat_positions(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Join two position tensors along the sequence (last) dimension."""
        return torch.cat([first, second], dim=-1)

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images: list[list], prompts: list[str], max_new_tokens: int) -> list[Generation]:
        """Greedy generation with the model's own ``generate`` (the explicit baselines' path)."""
        inputs = self.build_inputs(images, prompts)
        output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=self.pad_token_id, eos_token_id=self.eos_token_ids)
        prompt_len = inputs["input_ids"].shape[1]
        input_tokens = inputs["attention_mask"].sum(-1).tolist()
        return [self.finish(ids.tolist(), n_in) for ids, n_in in zip(output[:, prompt_len:], input_tokens)]

    def finish(self, ids: list[int], input_tokens: int) -> Generation:
        """Cut at the first EOS (counted as generated: the model spent a step on it), drop padding."""
        eos = set(self.eos_token_ids)
        kept: list[int] = []
        for token in ids:
            kept.append(token)
            if token in eos:
                break
        while kept and kept[-1] == self.pad_token_id and self.pad_token_id not in eos:
            kept.pop()
        text = self.tokenizer.decode([t for t in kept if t not in eos], skip_special_tokens=True)
        return Generation(text=text, input_tokens=int(input_tokens), generated_tokens=len(kept), token_ids=kept)


@contextlib.contextmanager
def capture_layers(layers: nn.ModuleList, indices: Iterable[int],
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Capture the outputs (hidden states [B, n, D]) of ``layers[i]`` for each ``i`` in ``indices``.

    Yields a dict that each forward inside the block fills, ``{i: transform(hidden)}`` (``transform``
    e.g. ``lambda h: h[:, -1].detach().float().cpu()`` keeps only what is needed; default: the tensor
    itself, graph included); a later forward overwrites an earlier one's entry. The hooks are removed
    when the block exits, also on an exception.
    """
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def hook_for(index: int):
        def hook(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[index] = transform(hidden) if transform is not None else hidden
        return hook

    try:
        for index in indices:
            handles.append(layers[index].register_forward_hook(hook_for(index)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def attention_probe(layers: nn.ModuleList) -> Iterator[dict[int, torch.Tensor]]:
    """Record, for each decoder layer, the attention of the LAST query position over all keys.

    While active, the attention function the model is configured with (sdpa, flash, eager) is
    wrapped: it still computes the layer's output, and additionally the softmax row of the last
    query (after RoPE, over the cached keys, GQA expanded, padding masked), averaged over heads.
    That is one row per layer, not the full eager attention matrix.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    module_index = {id(layer.self_attn): i for i, layer in enumerate(layers)}
    impl = layers[0].self_attn.config._attn_implementation or "eager"
    if impl == "eager":
        from transformers.models.llama.modeling_llama import eager_attention_forward as llama_eager

        def original(module, *args, **kwargs):
            # "eager" is looked up by every model of the process while the probe is active (LLaVA's CLIP
            # tower too): each module gets its own file's eager function, never another family's.
            own = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", llama_eager)
            return own(module, *args, **kwargs)
    else:
        original = ALL_ATTENTION_FUNCTIONS[impl]
    had_local = impl in ALL_ATTENTION_FUNCTIONS._local_mapping
    previous = ALL_ATTENTION_FUNCTIONS._local_mapping.get(impl)
    rows: dict[int, torch.Tensor] = {}

    def probed(module, query, key, value, attention_mask, *args, **kwargs):
        output = original(module, query, key, value, attention_mask, *args, **kwargs)
        index = module_index.get(id(module))
        if index is not None:
            rows[index] = _last_query_row(module, query, key, attention_mask, kwargs.get("scaling"))
        return output

    ALL_ATTENTION_FUNCTIONS[impl] = probed
    try:
        yield rows
    finally:
        if had_local:
            ALL_ATTENTION_FUNCTIONS[impl] = previous
        else:
            del ALL_ATTENTION_FUNCTIONS[impl]


def _last_query_row(module, query, key, attention_mask, scaling) -> torch.Tensor:
    """softmax(q_last · Kᵀ · scale + mask) averaged over heads → [B, T_keys] in fp32."""
    q = query[:, :, -1:, :].float()  # [B, H, 1, d]
    k = key.float()  # [B, H_kv, T, d]
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else getattr(module, "scaling", q.shape[-1] ** -0.5)
    scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, 1, T]
    if attention_mask is not None:
        mask = attention_mask
        if mask.dim() == 4:
            mask = mask[:, :, -1:, : k.shape[2]]
        elif mask.dim() == 2:  # flash-attention style [B, T] padding mask
            mask = mask[:, None, None, : k.shape[2]]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    return scores.softmax(-1).mean(1)[:, 0]  # [B, T]
