"""Injection: ``h ← h + α·v̂``, then ``h`` rescaled to its original norm, per position.

:func:`steering` is a context manager that adds forward hooks to decoder layers (a VLM's
``backbone.decoder_layers()``, or a plain LLM's ``model.model.layers``) and removes them on exit.

Steering policy (``steer=``, which positions are steered):

* ``"first"`` — the reference's behaviour: the first position of every forward call. With a KV
  cache that is one token of the prompt during the prefill and then every generated token (each
  decode step is a forward call of one position). With left padding in a batch, position 0 of a
  short row is a pad; we steer the first *real* token of each row instead, which is what the
  reference does for a batch of one, so a batch gives the same tokens as one-by-one. The padding
  is read from the 2-D ``attention_mask`` the decoder stack is called with (a pre-hook on it):
  the last ``n`` columns are the ``n`` positions of the current call.
* ``"all"`` — every position of every call (prompt and generated tokens alike; pads too, which
  nothing attends to).

The norm is restored per position: ``h' = (h + α v̂) · ‖h‖ / ‖h + α v̂‖``, computed in float32
and cast back. Positions not steered are returned bit-for-bit.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

STEER = ("first", "all")


def map_layer(source_layer: int, source_depth: int, target_depth: int) -> int:
    """The target layer at the same relative depth: ``round(l · (L_t − 1) / (L_s − 1))``.

    First maps to first and last to last; the paper publishes no mapping (its LLM has 64 layers,
    the VLMs 28–32), so this is our documented choice; pass an explicit layer to override.
    """
    if not 0 <= source_layer < source_depth:
        raise ValueError(f"source layer {source_layer} is outside the source model's {source_depth} layers")
    if source_depth == 1:
        return 0
    return int(round(source_layer * (target_depth - 1) / (source_depth - 1)))


def steer_hidden(hidden, vector, alpha: float, select, eps: float = 1e-12):
    """``hidden`` [B, n, D] with ``hidden + α·vector`` rescaled to ``‖hidden‖`` where ``select`` [B, n]."""
    import torch

    h = hidden.float()
    moved = h + alpha * vector.to(h.device, torch.float32)
    moved = moved * (h.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True).clamp_min(eps))
    return torch.where(select[..., None], moved, h).to(hidden.dtype)


def _first_real(mask, n: int, batch: int, device):
    """[B, n] True at the first real (mask 1) position among the last ``n`` columns of ``mask``."""
    import torch

    select = torch.zeros(batch, n, dtype=torch.bool, device=device)
    if mask is None:  # no padding anywhere: the call's first position
        select[:, 0] = True
        return select
    if mask.dim() != 2 or mask.shape[1] < n:
        raise RuntimeError(f"steering 'first' needs the 2-D padding mask of the call, got shape "
                           f"{tuple(mask.shape)} for {n} positions")
    recent = mask[:, -n:].to(device) != 0
    first = recent.int().argmax(dim=-1)  # index of the first True (0 for an all-pad row)
    select[torch.arange(batch, device=device), first] = recent.any(dim=-1)
    return select


@contextlib.contextmanager
def steering(decoder, layers, vectors: dict, alpha: float, steer: str = "first") -> Iterator[dict]:
    """Steer ``layers[i]`` with ``vectors[i]`` (unit vectors of the layers' width) while active.

    ``decoder`` is the module that runs the layers and receives the ``attention_mask`` (the
    backbone's ``language_model``, or an LLM's ``model.model``). Yields a dict counting steered
    positions per layer (``{"steered": {layer: count}}``) — used by tests and the overhead script.
    """
    import torch

    if steer not in STEER:
        raise ValueError(f"unknown steering policy {steer!r}; choose one of: {', '.join(STEER)}")
    for index in vectors:
        if not 0 <= index < len(layers):
            raise ValueError(f"layer {index} is out of range ({len(layers)} decoder layers: 0..{len(layers) - 1})")
    call: dict = {"mask": None}
    stats = {"steered": {index: 0 for index in vectors}}

    def grab_mask(_module, args, kwargs):
        call["mask"] = kwargs["attention_mask"] if "attention_mask" in kwargs else (args[1] if len(args) > 1 else None)

    def make_hook(index, vector):
        def hook(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            batch, n = hidden.shape[:2]
            if steer == "all":
                select = torch.ones(batch, n, dtype=torch.bool, device=hidden.device)
            else:
                select = _first_real(call["mask"], n, batch, hidden.device)
            stats["steered"][index] += int(select.sum())
            steered = steer_hidden(hidden, vector, alpha, select)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered
        return hook

    handles = [decoder.register_forward_pre_hook(grab_mask, with_kwargs=True)]
    try:
        for index, vector in vectors.items():
            # Moved once to the layer's device, in float32 (steer_hidden computes in float32).
            device = next(layers[index].parameters()).device
            vector = vector.detach().to(device, torch.float32)
            handles.append(layers[index].register_forward_hook(make_hook(index, vector)))
        yield stats
    finally:
        for handle in handles:
            handle.remove()
