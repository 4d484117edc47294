"""Overhead of the L2V-CoT injection on generation speed: the same model and prompts, greedy, with
and without the hooks (positions "first", the reference's, and "all"), timed alternately.

    python scripts/bench_l2v_injection.py            # ~50 M-parameter random Qwen2-VL, CPU or GPU
    python scripts/bench_l2v_injection.py --quick    # tiny model, a smoke run

Prints one row per (batch size, mode): median seconds per `model.generate` call over the repeats,
tokens/s, the ratio to the unsteered median, and the time spent inside the steering hooks per call
(measured around the hook's work, so it holds even when a shared machine makes the wall-clock ratio
noisy). Timings, not assertions.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FULL = dict(hidden_size=512, layers=21, heads=8, kv_heads=4, max_new_tokens=32, repeats=5, batches=(1, 8))
QUICK = dict(hidden_size=64, layers=2, heads=4, kv_heads=2, max_new_tokens=8, repeats=3, batches=(1, 4))
PROMPTS = ["Question: What colour is the shape in the image? Options: (A) red (B) green (C) blue (D) yellow",
           "How many objects are there?", "Which shape is shown? circle square triangle rectangle.",
           "Let's think step by step.", "Explain the reasoning.", "The quick brown fox jumps over the lazy dog.",
           "Hint: Context: Rationale: Solution:", "science commonsense mathematics physics biology"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--model", help="an existing VLM checkpoint instead of a random one")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL

    import torch

    from harness.backbones import load_backbone
    from harness.backbones.tiny import write_tiny_model
    from methods.l2v_cot import inject
    from methods.l2v_cot.inject import steering

    hook_seconds = [0.0]

    def timed(fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                out = fn(*a, **k)
                if isinstance(out, torch.Tensor) and out.device.type == "cuda":
                    torch.cuda.synchronize()
                return out
            finally:
                hook_seconds[0] += time.perf_counter() - start
        return wrapper

    # The hook's work is selecting positions and steering them; time both where the hook looks them up.
    inject.steer_hidden = timed(inject.steer_hidden)
    inject._first_real = timed(inject._first_real)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(write_tiny_model("qwen2-vl", Path(tmp) / "m", hidden_size=cfg["hidden_size"],
                                                   layers=cfg["layers"], heads=cfg["heads"],
                                                   kv_heads=cfg["kv_heads"]))
        backbone = load_backbone(model, device=args.device, dtype=args.dtype)
    layers = backbone.decoder_layers()
    layer = len(layers) // 2
    v = torch.randn(backbone.hidden_size, generator=torch.Generator().manual_seed(0))
    v = (v / v.norm()).to(backbone.device)
    params = sum(p.numel() for p in backbone.model.parameters()) / 1e6
    print(f"model: {model if args.model else 'random Qwen2-VL'} ({params:.1f} M parameters, {len(layers)} layers, "
          f"width {backbone.hidden_size}) on {backbone.device} {str(backbone.dtype).removeprefix('torch.')}; "
          f"injection at layer {layer}, alpha 0.5; {cfg['max_new_tokens']} new tokens (min_new_tokens set, "
          f"so every call decodes the same count); median of {cfg['repeats']}")

    def generate(batch):
        # min_new_tokens: a steered run must not stop early and look faster.
        inputs = backbone.build_inputs([[] for _ in batch], batch)
        start = time.perf_counter()
        with torch.no_grad():
            backbone.model.generate(**inputs, max_new_tokens=cfg["max_new_tokens"],
                                    min_new_tokens=cfg["max_new_tokens"], do_sample=False,
                                    pad_token_id=backbone.pad_token_id)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    modes = ("unsteered", "first", "all")
    print(f"\n{'batch':>5} {'mode':>10} {'s / call':>10} {'tokens/s':>10} {'ratio':>7} {'hook s / call':>14} "
          f"{'hook share':>11}")
    for batch_size in cfg["batches"]:
        batch = (PROMPTS * batch_size)[:batch_size]
        generate(batch)  # warm-up
        times = {mode: [] for mode in modes}
        hooks = {mode: [] for mode in modes}
        for _ in range(cfg["repeats"]):
            for mode in modes:  # interleaved, so drift hits every mode alike
                hook_seconds[0] = 0.0
                if mode == "unsteered":
                    times[mode].append(generate(batch))
                else:
                    with steering(backbone.language_model, layers, {layer: v}, 0.5, mode):
                        times[mode].append(generate(batch))
                hooks[mode].append(hook_seconds[0])
        base = statistics.median(times["unsteered"])
        for mode in modes:
            t, h = statistics.median(times[mode]), statistics.median(hooks[mode])
            print(f"{batch_size:>5} {mode:>10} {t:>10.4f} {batch_size * cfg['max_new_tokens'] / t:>10.1f} "
                  f"{t / base:>7.3f} {h:>14.5f} {100 * h / t:>10.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
