"""`harness speed --method ivt-lr`: the latent loop's cost, KV-cached vs reference, vs explicit CoT.

For each prompt length (a square image plus a question padded with repeated text) and each K, with
``top_k`` patches per step:

- ``cached_s``: :func:`latent_loop_cached` (prefill + K appends of top_k + 1 embeddings);
- ``reference_s``: :func:`latent_loop_reference` (prefill + K recomputations of the whole sequence;
  attention rows through the same probe, so this *understates* the published code, which also
  switches every layer to eager attention);
- ``cot_s``: explicit decoding of the same number of positions the latent loop adds, K * (top_k + 1)
  tokens, one forward per token through the KV cache (after the same prefill), never stopping at EOS.

Medians of ``repeats`` runs after one warm-up. A benchmark command, never a timed test.
"""
from __future__ import annotations

import statistics
import time

import torch

from .policy import latent_loop_cached, latent_loop_reference

FILLER = "Consider every detail of the picture and the question before answering. "


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _set_image_pixels(backbone, side: int) -> None:
    """Let processors that resize by pixel budget (Qwen2-VL's) keep a side x side image."""
    processor = backbone.processor.image_processor
    size = getattr(processor, "size", None)
    if size is not None and "longest_edge" in size and size["longest_edge"] is not None:
        size["longest_edge"] = max(size["longest_edge"], side * side)


def _prompt_for(backbone, image, target_tokens: int) -> tuple[dict, int]:
    """Inputs whose prompt has about ``target_tokens`` tokens (at least the image and the question)."""
    question = "What does the image show? Answer with one word."
    filler = ""
    inputs = backbone.build_inputs([[image]], [question])
    while inputs["input_ids"].shape[1] < target_tokens:
        per = max(len(backbone.tokenizer.encode(FILLER, add_special_tokens=False)), 1)
        filler += FILLER * max(1, (target_tokens - inputs["input_ids"].shape[1]) // per)
        inputs = backbone.build_inputs([[image]], [filler + question])
    return inputs, int(inputs["input_ids"].shape[1])


@torch.no_grad()
def _explicit_decode(backbone, inputs, n_tokens: int) -> None:
    state, _ = backbone.prefill(inputs)
    for _ in range(n_tokens):
        backbone.append(state, backbone.embed_tokens(state.logits.argmax(-1)[:, None]))


def speed_table(backbone, *, prompt_tokens: list[int], latent_steps: list[int], top_k: int = 32,
                image_size: int = 280, repeats: int = 3) -> list[dict]:
    from PIL import Image, ImageDraw

    _set_image_pixels(backbone, image_size)
    image = Image.new("RGB", (image_size, image_size), (240, 240, 240))
    ImageDraw.Draw(image).ellipse([image_size // 8, image_size // 8, image_size * 7 // 8, image_size * 7 // 8],
                                  fill=(30, 70, 220))
    device = backbone.device
    rows = []
    for target in prompt_tokens:
        inputs, n_prompt = _prompt_for(backbone, image, target)
        n_image = int(backbone.image_positions(inputs["input_ids"]).sum())
        for k in latent_steps:
            cached = _timed(lambda: latent_loop_cached(backbone, inputs, k, top_k), device, repeats)
            reference = _timed(lambda: latent_loop_reference(backbone, inputs, k, top_k), device, repeats)
            cot_tokens = k * (min(top_k, n_image) + 1)
            cot = _timed(lambda: _explicit_decode(backbone, inputs, cot_tokens), device, repeats)
            rows.append({"prompt_tokens": n_prompt, "image_tokens": n_image, "k": k, "top_k_patches": top_k,
                         "cached_s": round(cached, 5), "reference_s": round(reference, 5),
                         "ratio": round(reference / cached, 2), "cot_s": round(cot, 5), "cot_tokens": cot_tokens})
    return rows


def format_table(rows: list[dict], described: dict) -> str:
    head = (f"ivt-lr latent loop on {described['model']} ({described['device']}, {described['dtype']}); "
            f"k = top-k patches per step, K = latent steps; medians")
    lines = [head, f"{'prompt':>7} {'image':>6} {'K':>3} {'cached s':>10} {'reference s':>12} {'ratio':>6} "
                   f"{'CoT s':>9} {'CoT tokens':>10}"]
    for r in rows:
        lines.append(f"{r['prompt_tokens']:>7} {r['image_tokens']:>6} {r['k']:>3} {r['cached_s']:>10.4f} "
                     f"{r['reference_s']:>12.4f} {r['ratio']:>6.2f} {r['cot_s']:>9.4f} {r['cot_tokens']:>10}")
    return "\n".join(lines)
