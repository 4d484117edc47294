"""``lare``: T latent refocusing iterations (:mod:`.policy`), then <end> and the decoded answer."""
from __future__ import annotations

import dataclasses
import logging

from harness.api import Method, register_method
from harness.api.types import MethodOutput, Query

from ..baselines import final_answer_segment
from .options import ADAPTIVE, LATENT_TOKENS, SharedOptions, check_shared, prompt_text

MODES = ("cached", "reference")


@register_method("lare")
class LaRe(Method):
    description = ("LaRe: T latent iterations refocusing on the most attended window through an Extractor, "
                   "then the answer; --checkpoint DIR (harness train --method lare)")

    @dataclasses.dataclass
    class Options(SharedOptions):
        checkpoint: str = ""  # a `harness train --method lare` folder; "" = an untrained Extractor
        max_new_tokens: int = 512
        mode: str = "cached"  # "cached" (KV cache) | "reference" (recompute the sequence each iteration)
        adaptive: str = "none"  # none | cos | l1 | l2: stop when successive latents are closer than threshold
        threshold: float = 0.0
        max_iterations: int = 0  # with --adaptive: the most iterations (0: 2 x --iterations)
        allow_base_mismatch: bool = False
        seed: int = 0  # the untrained Extractor's initialisation (no --checkpoint)

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        check_shared(o)
        if o.mode not in MODES:
            raise ValueError(f"lare: unknown mode {o.mode!r}; choose one of: {', '.join(MODES)}")
        if o.adaptive not in ADAPTIVE:
            raise ValueError(f"lare: --adaptive must be one of: {', '.join(ADAPTIVE)}; got {o.adaptive!r}")
        if o.adaptive != "none" and not o.threshold > 0:
            raise ValueError("lare: --adaptive needs a positive --threshold")
        if o.max_iterations < 0:
            raise ValueError("lare: --max-iterations must be >= 0")
        self._checkpoint_hash = ""
        self.checkpoint_config = None
        if o.checkpoint:
            from .checkpoints import ARCHITECTURE, check_checkpoint

            self.checkpoint_config = check_checkpoint(o.checkpoint)
            defaults = SharedOptions()
            saved = self.checkpoint_config["loop"]
            for key in ARCHITECTURE + ("iterations",):
                mine, default = getattr(o, key), getattr(defaults, key)
                if key in ARCHITECTURE and mine != default and mine != saved[key]:
                    raise ValueError(f"lare: --{key.replace('_', '-')} {mine!r} contradicts the checkpoint's "
                                     f"{saved[key]!r}; drop it (the checkpoint fixes it)")
                if mine == default:
                    setattr(o, key, saved[key])  # T may differ from training's (the paper's Fig. 5)
            for key, value in (self.checkpoint_config.get("extractor") or {}).items():
                if key != "width":
                    setattr(o, f"extractor_{key}", value)
        self.extractor = None
        self.token_ids: list[int] = []

    def config(self) -> dict:
        from .checkpoints import checkpoint_fingerprint

        config = super().config()
        del config["allow_base_mismatch"]
        if self.options.checkpoint:
            if not self._checkpoint_hash:
                self._checkpoint_hash = checkpoint_fingerprint(self.options.checkpoint)
            config["checkpoint_sha256"] = self._checkpoint_hash
            del config["seed"]
        return config

    @property
    def steps(self) -> int:
        o = self.options
        return (o.max_iterations or 2 * o.iterations) if o.adaptive != "none" else o.iterations

    def prepare(self, backbone) -> None:
        import torch

        from harness.latent.adapters import add_tokens

        from .extractor import Extractor

        o = self.options
        width = backbone.hidden_size
        if not o.no_extractor:
            torch.manual_seed(o.seed)
            self.extractor = Extractor(width, o.extractor_hidden, o.extractor_layers, o.extractor_heads)
        if o.checkpoint:
            from .checkpoints import load_trained

            self.token_ids = load_trained(backbone, o.checkpoint, extractor=self.extractor,
                                          allow_base_mismatch=o.allow_base_mismatch)
        else:
            logging.getLogger("harness").warning(
                "lare without --checkpoint: an untrained Extractor on the base model (its latents are the hidden "
                "states, Coconut-style); train one with `harness train --method lare`")
            self.token_ids = add_tokens(backbone, LATENT_TOKENS, init_from="<<")
        if self.extractor is not None:
            self.extractor.to(device=backbone.device, dtype=backbone.dtype).eval()

    def prompt(self, query: Query) -> str:
        return prompt_text(query.question, self.options.instruction)

    def run(self, backbone, queries: list[Query]) -> list[MethodOutput]:
        import torch

        from harness.latent.decode import decode
        from harness.latent.loop import run_latent_loop

        from .policy import LaRePolicy

        o = self.options
        inputs = backbone.build_inputs([q.images for q in queries], [self.prompt(q) for q in queries])
        embeddings = backbone.model.get_input_embeddings().weight
        with torch.no_grad():
            policy = LaRePolicy(self.extractor, backbone.image_grid(inputs), embeddings[self.token_ids[0]],
                                latents=o.latents_per_step, window=o.window, no_window=o.no_window,
                                adaptive=o.adaptive, threshold=o.threshold)
            loop = run_latent_loop(backbone, inputs, policy, self.steps, mode=o.mode)
            end = embeddings[self.token_ids[1]][None, None].expand(len(queries), 1, -1)
            backbone.append(loop.state, end)
        decoded = decode(backbone, loop.state, o.max_new_tokens)
        outputs = []
        for i, (ids, n_in) in enumerate(zip(decoded, inputs["attention_mask"].sum(-1).tolist())):
            generation = backbone.finish(ids, n_in)
            info = policy.sample_info(loop.trace, i)
            outputs.append(MethodOutput(
                text=generation.text, answer=final_answer_segment(generation.text),
                input_tokens=generation.input_tokens, generated_tokens=generation.generated_tokens,
                latent_steps=info["iterations"], extra={**info, "mode": o.mode}))
        return outputs
