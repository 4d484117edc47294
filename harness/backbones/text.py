"""The text side: a plain causal LM (the source LLM of L2V-CoT's direction, a text-only baseline).

The VLM backbone interface (:class:`harness.backbones.Backbone`) covers vision-language models; this
module is its counterpart for a ``*ForCausalLM``: loading (``from_pretrained``, never
``trust_remote_code``), the decoder stack and its layers, the chat frame.
"""
from __future__ import annotations

from typing import Callable


def load_causal_lm(model_id: str, *, device: str = "auto", dtype: str = "auto", revision: str | None = None):
    """A plain causal LM and its tokenizer (``from_pretrained``, never ``trust_remote_code``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.backbones import ModelLoadError, resolve_device_dtype

    device, torch_dtype = resolve_device_dtype(device, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_id, revision=revision, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load LLM {model_id!r}: {str(exc).splitlines()[0]} (pass a local "
                             "causal-LM folder or a hub id; `harness tiny-model --family qwen2` writes a tiny one)"
                             ) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def causal_lm_decoder(model):
    """(the decoder stack, its layers) of a plain HF causal LM.

    Llama/Qwen2/Mistral-style ``*ForCausalLM`` keep the decoder in ``model.model`` and its layers
    in ``model.model.layers``; the backbone interface covers VLMs only, so this is the LLM's
    counterpart of ``Backbone.language_model`` / ``Backbone.decoder_layers()``.
    """
    decoder = getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no model.model.layers; only Llama/Qwen2-style causal LMs "
                         "are supported as the source LLM")
    return decoder, layers


def causal_lm_chat(tokenizer) -> Callable[[str], str]:
    """The tokenizer's chat template (user turn + generation prompt), or a plain Q/A frame without one."""
    if getattr(tokenizer, "chat_template", None):
        return lambda text: tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                          add_generation_prompt=True, tokenize=False)
    return lambda text: f"Question: {text}\nAnswer: "


def causal_lm_turn(tokenizer) -> Callable[[str, str], str]:
    """A whole exchange, ``(user, assistant) → text``: the chat template over both turns, no generation
    prompt, so the text ends with the template's end-of-turn tokens (what L2V-CoT's reference reads)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template, so no end-of-turn token: use --extract-at answer-end")
    return lambda user, assistant: tokenizer.apply_chat_template(
        [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
        add_generation_prompt=False, tokenize=False)
