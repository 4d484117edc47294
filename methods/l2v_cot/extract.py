"""Direction extraction: contrast pairs → last-token hidden states at decoder-layer outputs → u_i.

Two contrast forms (``contrast=``):

* ``"still2"`` — the paper's extraction data (STILL-2, ``RUC-AIBOX/long_form_thought_data_5k``):
  the problem as the user turn, then the assistant's *long* answer (thought + solution) vs its
  *short* answer (the solution alone); ``u = h(long) - h(short)``, both at the last token of the
  answer. A record is ``{"question", "combined_text"}`` with STILL-2's markers
  (``<|begin_of_thought|> ... <|end_of_thought|> <|begin_of_solution|> ... <|end_of_solution|>``;
  the short answer is the solution between its markers), or ``{"question", "long_answer",
  "short_answer"}``.
* ``"prompt"`` — the LAT analysis' form: the same question with "Let's think step by step." vs
  "Answer directly." appended to the user turn, at the last token of the prompt (the generation
  prompt included). Only ``question`` is read.

The hidden state is the *output of decoder layer L* (a forward hook on that layer; not
``hidden_states[-1]``, which is after the final norm), at the last real token (inputs are left
padded and positions are counted from the first real token, so a batch gives what one-by-one does).

The source LLM is a plain ``AutoModelForCausalLM`` (no ``trust_remote_code``); the VLM side (for
the LAT analysis, and as the source itself with ``vlm=True``: ``harness l2v extract --vlm``) goes
through the backbone interface, text only.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.backbones.text import causal_lm_chat, causal_lm_decoder, causal_lm_turn, load_causal_lm

log = logging.getLogger("harness")

CONTRASTS = ("still2", "prompt")
COT_SUFFIX = "Let's think step by step."
DIRECT_SUFFIX = "Answer directly."
DEFAULT_PAIRS = Path(__file__).parent / "data" / "contrast_pairs.jsonl"

_SOLUTION = re.compile(r"<\|begin_of_solution\|>(.*?)(?:<\|end_of_solution\|>|$)", re.DOTALL)
_MARKERS = re.compile(r"<\|(?:begin|end)_of_(?:thought|solution)\|>")


@dataclass
class ContrastPair:
    question: str
    long_answer: str = ""
    short_answer: str = ""


def _still2_answers(record: dict) -> tuple[str, str] | None:
    if record.get("long_answer") and record.get("short_answer"):
        return str(record["long_answer"]).strip(), str(record["short_answer"]).strip()
    combined = record.get("combined_text")
    if not combined:
        return None
    solution = _SOLUTION.search(combined)
    if solution is None:
        return None
    # Long form: thought then solution, markers dropped (they are not special tokens of the model).
    long_answer = re.sub(r"\n{3,}", "\n\n", _MARKERS.sub("", combined)).strip()
    return long_answer, solution.group(1).strip()


def load_pairs(path: str | Path, contrast: str, n: int | None = None) -> list[ContrastPair]:
    """Read a jsonl contrast set; the first ``n`` usable records (all when ``n`` is None)."""
    from harness.api import DataError

    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of: {', '.join(CONTRASTS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"contrast pairs {str(path)!r} do not exist; the repository's set is {DEFAULT_PAIRS}")
    pairs: list[ContrastPair] = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not JSON ({exc.msg}); expected one object per line") from None
            question = str(record.get("question") or "").strip()
            if not question:
                raise DataError(f"{path}:{line_no}: no 'question' field")
            if contrast == "prompt":
                pairs.append(ContrastPair(question))
            else:
                answers = _still2_answers(record)
                if answers is None:
                    raise DataError(f"{path}:{line_no}: a STILL-2 pair needs 'combined_text' with "
                                    "<|begin_of_solution|>...<|end_of_solution|>, or 'long_answer' and "
                                    "'short_answer' (use --contrast prompt for question-only files)")
                pairs.append(ContrastPair(question, *answers))
    if not pairs:
        raise DataError(f"{path} holds no contrast pairs")
    if n is not None:
        if n < 2:
            raise ValueError(f"--n must be at least 2 (a mean and a dispersion need two samples), got {n}")
        if len(pairs) < n:
            log.warning("%s holds %d pairs, fewer than --n %d: using all %d", path, len(pairs), n, len(pairs))
        pairs = pairs[:n]
    return pairs


EXTRACT_AT = ("turn-end", "answer-end")


def contrast_texts(pairs: list[ContrastPair], contrast: str, chat: Callable[[str], str],
                   turn: Callable[[str, str], str] | None = None) -> tuple[list[str], list[str]]:
    """(CoT texts, direct texts); ``chat(user_text)`` gives the chat-templated prompt up to the
    assistant's turn. With ``turn(user, assistant)`` (still2 pairs) each text is the whole exchange,
    ending with the end-of-turn tokens (the reference's extraction point) instead of the last answer token."""
    if contrast != "prompt" and turn is not None:
        return ([turn(p.question, p.long_answer) for p in pairs], [turn(p.question, p.short_answer) for p in pairs])
    if contrast == "prompt":
        return ([chat(f"{p.question}\n{COT_SUFFIX}") for p in pairs],
                [chat(f"{p.question}\n{DIRECT_SUFFIX}") for p in pairs])
    return ([chat(p.question) + p.long_answer for p in pairs],
            [chat(p.question) + p.short_answer for p in pairs])


def _check_layers(indices: list[int], depth: int, what: str) -> list[int]:
    out = []
    for index in indices:
        resolved = index + depth if index < 0 else index
        if not 0 <= resolved < depth:
            raise ValueError(f"layer {index} is out of range for the {what} ({depth} decoder layers: 0..{depth - 1})")
        out.append(resolved)
    return sorted(set(out))


def llm_states(model, tokenizer, texts: list[str], layers: list[int], batch_size: int = 4) -> dict:
    """{layer: [len(texts), n]} last-token outputs of the LLM's decoder layers."""
    import torch

    from harness.backbones.base import capture_layers  # imports torch: kept off `harness list`

    decoder, stack = causal_lm_decoder(model)
    layers = _check_layers(layers, len(stack), "source LLM")
    device = next(model.parameters()).device
    chunks: dict[int, list] = {index: [] for index in layers}
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, add_special_tokens=False,
                          return_tensors="pt").to(device)
        mask = batch["attention_mask"]
        # Positions from the first real token: left padding then changes nothing.
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)

        # Each layer's output at the last position (the hook is the backbone's own: one capture routine).
        with torch.no_grad(), capture_layers(stack, layers, lambda h: h[:, -1].detach().float().cpu()) as captured:
            decoder(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=False)
        for index, states in captured.items():
            chunks[index].append(states)
    return {index: torch.cat(parts) for index, parts in chunks.items()}


def backbone_states(backbone, texts: list[str], layers: list[int], batch_size: int = 4) -> dict:
    """{layer: [len(texts), m]} last-token outputs of the VLM's decoder layers, text only.

    Goes through ``Backbone.prefill`` (the family's own positions) with ``capture_layers``.
    """
    import torch

    layers = _check_layers(layers, len(backbone.decoder_layers()), "VLM")
    chunks: dict[int, list] = {index: [] for index in layers}
    for start in range(0, len(texts), batch_size):
        inputs = backbone.processor(text=texts[start:start + batch_size], padding=True,
                                    return_tensors="pt").to(backbone.device)
        _, result = backbone.prefill(inputs, capture_layers=layers)
        for index in layers:
            chunks[index].append(result.layer_outputs[index][:, -1].float().cpu())
    return {index: torch.cat(parts) for index, parts in chunks.items()}


def backbone_chat(backbone) -> Callable[[str], str]:
    return lambda text: backbone.chat_text(0, text)


def directions_from(model_states: Callable[[list[str]], dict], pairs: list[ContrastPair], contrast: str,
                    chat: Callable[[str], str], turn: Callable[[str, str], str] | None = None) -> dict:
    """{layer: [N, d]} per-sample directions ``u_i = h(CoT_i) - h(direct_i)``."""
    cot_texts, direct_texts = contrast_texts(pairs, contrast, chat, turn)
    cot, direct = model_states(cot_texts), model_states(direct_texts)
    return {index: cot[index] - direct[index] for index in cot}


def extract(llm: str, pairs_path: str | Path, layers: list[int], out: str | Path, *, n: int = 100,
            contrast: str = "still2", batch_size: int = 4, device: str = "auto", dtype: str = "auto",
            revision: str | None = None, extract_at: str = "turn-end", vlm: bool = False) -> tuple[Path, dict]:
    """The whole extraction: load, run the pairs, write the direction file. Returns (path, metadata).

    ``extract_at``: where a still2 text is read, ``turn-end`` (the reference: the last token of the
    chat template over the user and assistant turns, an end-of-turn token) or ``answer-end`` (the last
    token of the answer). Prompt contrasts end at the generation prompt either way.
    """
    if extract_at not in EXTRACT_AT:
        raise ValueError(f"--extract-at must be one of: {', '.join(EXTRACT_AT)}; got {extract_at!r}")
    from datetime import datetime, timezone

    from harness.backbones import model_fingerprint

    from harness.api.hashing import file_sha256

    from .vectors import save_directions

    if vlm and contrast == "still2" and extract_at == "turn-end":
        raise ValueError("--vlm reads a still2 text at the answer's last token (a VLM's turn is its backbone's "
                         "chat text): pass --extract-at answer-end, or --contrast prompt")
    pairs = load_pairs(pairs_path, contrast, n)  # bad data fails before the model loads
    if vlm:
        # The VLM's own text side as the source (no LLM needed): text-only prefills through the backbone.
        from harness.backbones import load_backbone

        backbone = load_backbone(llm, device=device, dtype=dtype, revision=revision)
        depth = len(backbone.decoder_layers())
        layers = _check_layers(layers, depth, "VLM")
        directions = directions_from(lambda texts: backbone_states(backbone, texts, layers, batch_size),
                                     pairs, contrast, backbone_chat(backbone), None)
    else:
        model, tokenizer = load_causal_lm(llm, device=device, dtype=dtype, revision=revision)
        _, stack = causal_lm_decoder(model)
        depth = len(stack)
        layers = _check_layers(layers, depth, "source LLM")
        turn = causal_lm_turn(tokenizer) if extract_at == "turn-end" and contrast == "still2" else None
        directions = directions_from(lambda texts: llm_states(model, tokenizer, texts, layers, batch_size),
                                     pairs, contrast, causal_lm_chat(tokenizer), turn)
    metadata = {
        "model": llm, "model_revision": model_fingerprint(llm, revision), "num_layers": depth,
        "source": "vlm-text-side" if vlm else "llm",
        "hidden_size": int(next(iter(directions.values())).shape[-1]), "n": len(pairs), "contrast": contrast,
        "data": str(pairs_path), "data_sha256": file_sha256(pairs_path),
        "hook": "decoder layer output, last token",
        "extract_at": extract_at if contrast == "still2" else "generation-prompt", "created_at": datetime.now(timezone.utc).isoformat(),
    }
    path = save_directions(out, directions, metadata)
    return path, {**metadata, "layers": layers}
