"""The latent loop driver: prefill, then K steps of "the policy's next chunk of embeddings".

A latent method is a :class:`LatentPolicy`: after the prefill it is told the prompt
(:meth:`LatentPolicy.start`), and at each step it gets a :class:`Query` (the final-norm hidden state
at the last position, the attention row of that position if it asked for one, captured layer
outputs) and returns a :class:`Chunk` (embeddings [B, n, D], a mask [B, n] for samples that append
fewer, and what to record in the trace). The driver appends the chunk through the backbone's KV
cache (:meth:`Backbone.append`): masked slots take no position, so a padded batch gives what each
sample gives alone.

``mode="reference"`` runs the same policy by recomputing the whole sequence from position 0 at every
step (no KV cache reuse), as published reference codes do; tests compare both modes, which checks the
cache, the positions and the masks of any policy at once.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

MODES = ("cached", "reference")


@dataclass
class Query:
    """What a policy sees before a step: the sequence so far, at its last position."""

    hidden: torch.Tensor  # [B, D] final-norm hidden state at the last position (carries the graph in training)
    attention: torch.Tensor | None  # [B, T] that position's attention over all keys (mean over layers, heads)
    layers: dict[int, torch.Tensor] = field(default_factory=dict)  # layer index → [B, D] at the last position
    # [B, n, D] final-norm hidden states of every position of the last forward (the prompt after the
    # prefill, the last chunk after a step; in reference mode the whole sequence): a policy that reads
    # more than the last position (LaRe's n_z latent queries) takes the tail it needs.
    states: torch.Tensor | None = None


@dataclass
class Chunk:
    """A policy's next step: embeddings to append, their mask, and what the trace keeps of the step."""

    embeds: torch.Tensor  # [B, n, D]
    # [B, n] 1 = real, 0 = padding (takes no position); None = all real. The last slot must be real for
    # every sample: its hidden state is the next step's query.
    mask: torch.Tensor | None = None
    record: dict[str, Any] = field(default_factory=dict)  # e.g. {"selected": [B, k], "latents": [B, D]}


class LatentPolicy(ABC):
    """One latent method's step rule. A policy object holds the state of one loop run (see ``start``)."""

    needs_attention: bool = False  # the driver probes the last query's attention row before each step
    capture_layers: tuple[int, ...] = ()  # decoder layers whose last-position outputs each Query carries

    def start(self, prompt) -> None:
        """Called after the prefill with its :class:`~harness.backbones.base.DecodeState` (the prompt's
        merged ``inputs_embeds``, ``image_mask``); reset any per-run state here."""

    @abstractmethod
    def step(self, index: int, query: Query) -> Chunk:
        """The chunk of step ``index`` (0-based)."""

    def sample_info(self, trace: "LatentTrace", i: int) -> dict:
        """What is stored with sample ``i`` of the batch (JSON-able), from the trace."""
        return {}

    def finished(self) -> bool:
        """True when no sample needs another step (adaptive stopping); the driver then stops early."""
        return False


class LatentTrace:
    """Per-step records of a loop: ``trace.field("selected")`` (or ``trace.selected``) is the list, one
    entry per step, of what the policy recorded under that name."""

    def __init__(self):
        self.records: dict[str, list] = {}
        self.appended = 0  # width of the appended tail, padding included
        self.steps = 0

    def add(self, chunk: Chunk) -> None:
        for name, value in chunk.record.items():
            self.records.setdefault(name, []).append(value)
        self.appended += chunk.embeds.shape[1]
        self.steps += 1

    def field(self, name: str) -> list:
        return self.records.get(name, [])

    def __getattr__(self, name: str):  # only reached for names that are not attributes
        records = self.__dict__.get("records")
        if records is not None and name in records:
            return records[name]
        raise AttributeError(name)


@dataclass
class LoopResult:
    state: Any  # DecodeState after the last step: its logits start decoding
    trace: LatentTrace
    embeds: torch.Tensor | None = None  # reference mode: the whole embedded sequence [B, T, D]


def _query(result, index: int = -1) -> Query:
    return Query(hidden=result.last_hidden[:, index], attention=result.query_attention,
                 layers={i: h[:, index] for i, h in result.layer_outputs.items()}, states=result.last_hidden)


def run_latent_loop(backbone, inputs, policy: LatentPolicy, steps: int, *, mode: str = "cached",
                    grad: bool = False) -> LoopResult:
    """``steps`` steps of ``policy`` after prefilling ``inputs`` (``backbone.build_inputs``' output).

    ``grad=True`` keeps the autograd graph (training; cached mode only). Attention rows are probed
    only where a step follows (the last chunk's row is never used), layers only if the policy asks.
    """
    if mode not in MODES:
        raise ValueError(f"unknown loop mode {mode!r}; choose one of: {', '.join(MODES)}")
    if mode == "reference":
        if grad:
            raise ValueError("the reference loop recomputes without gradients; train with mode='cached'")
        return _reference(backbone, inputs, policy, steps)
    layers = list(policy.capture_layers) or None
    state, result = backbone.prefill(inputs, probe_attention=policy.needs_attention and steps > 0,
                                     capture_layers=layers, grad=grad)
    policy.start(state)
    trace = LatentTrace()
    for index in range(steps):
        if policy.finished():
            break
        chunk = policy.step(index, _query(result))
        result = backbone.append(state, chunk.embeds, mask=chunk.mask, capture_layers=layers,
                                 probe_attention=policy.needs_attention and index < steps - 1 and not policy.finished(),
                                 grad=grad)
        trace.add(chunk)
    return LoopResult(state=state, trace=trace)


@torch.no_grad()
def _reference(backbone, inputs, policy: LatentPolicy, steps: int) -> LoopResult:
    """The same steps, the whole sequence recomputed from position 0 after each chunk; the final
    forward also fills a fresh cache, so decoding starts from the same kind of state."""
    layers = list(policy.capture_layers) or None
    state, result = backbone.prefill(inputs, probe_attention=policy.needs_attention and steps > 0,
                                     capture_layers=layers)
    policy.start(state)
    prompt_embeds, prompt_mask = state.inputs_embeds, inputs["attention_mask"]
    prompt_positions, start = backbone.prefill_positions(inputs)
    query = _query(result)
    trace, chunks, masks, embeds = LatentTrace(), [], [], prompt_embeds
    for index in range(steps):
        if policy.finished():  # the state after the last chunk is already a decoding state
            break
        chunk = policy.step(index, query)
        trace.add(chunk)
        chunks.append(chunk.embeds.to(prompt_embeds.dtype))
        masks.append(chunk.mask if chunk.mask is not None
                     else prompt_mask.new_ones(chunk.embeds.shape[0], chunk.embeds.shape[1]))
        embeds = torch.cat([prompt_embeds, *chunks], dim=1)
        tail_mask = torch.cat(masks, dim=1)
        positions = backbone.concat_positions(prompt_positions, backbone.appended_positions(start, tail_mask))
        full_mask = torch.cat([prompt_mask, tail_mask.to(prompt_mask.dtype)], dim=1)
        if index < steps - 1 and not policy.finished():
            result = backbone.forward_embeds(embeds, full_mask, positions, capture_layers=layers,
                                             probe_attention=policy.needs_attention)
            query = _query(result)
        else:
            state = backbone.prefill_embeds(embeds, full_mask, positions, start + tail_mask.long().sum(-1))
    return LoopResult(state=state, trace=trace, embeds=embeds)
