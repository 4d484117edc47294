"""`harness speed`: IVT-LR's latent loop timed (KV-cached vs reference recomputation vs explicit CoT).

Declared in pyproject.toml's ``harness.commands`` group; heavy imports stay inside the handler.
"""
from __future__ import annotations

import json

from harness.commands._common import quiet_libraries


def cmd_speed(args) -> int:
    quiet_libraries()
    from methods.ivt_lr.speed import format_table, speed_table

    from harness.backbones import load_backbone

    backbone = load_backbone(args.model, device=args.device, dtype=args.dtype, rope=args.rope)
    rows = speed_table(backbone, prompt_tokens=[int(x) for x in args.prompt_tokens.split(",")],
                       latent_steps=[int(x) for x in args.latent_steps.split(",")], top_k=args.top_k_patches,
                       image_size=args.image_size, repeats=args.repeats)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, backbone.describe()))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("speed", help="time a latent loop: KV-cached vs reference recomputation vs explicit CoT")
    # `harness speed --method ivt-lr` (README): the one latent loop timed so far; the flag keeps the
    # command line that names it working, and room for other methods' loops.
    p.add_argument("--method", default="ivt-lr", choices=["ivt-lr"])
    p.add_argument("--model", required=True)
    p.add_argument("--prompt-tokens", default="128,256,512,1024", help="target prompt lengths (text is repeated)")
    p.add_argument("--latent-steps", default="1,2,3,4", help="K values")
    p.add_argument("--top-k-patches", type=int, default=32)
    p.add_argument("--image-size", type=int, default=280, help="square image side in pixels (the paper: 280)")
    p.add_argument("--rope", default="1d", choices=["1d", "mrope"], help="rotary positions: 1d (the published "
                   "code's) or mrope (Qwen2-VL's own M-RoPE)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per cell (median), after one warm-up")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", action="store_true", help="a list of rows: prompt_tokens, k, cached_s, reference_s, "
                                                       "ratio, cot_s, ...")
    p.set_defaults(handler=cmd_speed)
