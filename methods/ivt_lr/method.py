"""``ivt-lr``: K interleaved vision-text latent steps (:mod:`.policy`), then decoding of the answer."""
from __future__ import annotations

import dataclasses
import logging

from harness.api import Method, register_method
from harness.api.types import MethodOutput, Query

from ..baselines import final_answer_segment
from .options import (ABLATION_DEFAULTS, SharedOptions, build_prompt, check_shared, policy_options, resize_images,
                      resolve_prompt)

MODES = ("cached", "reference")


@register_method("ivt-lr")
class IVTLR(Method):
    description = ("IVT-LR: K latent steps (last hidden state + top-k attended image patches), "
                   "then the answer; --checkpoint DIR (harness train) or a published model.pth")

    @dataclasses.dataclass
    class Options(SharedOptions):
        max_new_tokens: int = 512  # the published inference decodes up to 512 tokens
        mode: str = "cached"  # "cached" (KV cache) | "reference" (recompute the prefix each step)
        checkpoint: str = ""  # "" = the backbone as loaded; a `harness train` folder; or a published .pth
        published_lora_alpha: float = 16.0  # LoRA alpha of a published .pth (r is read from its shapes)
        # Load a `harness train` checkpoint onto a base model other than the one it was trained from.
        allow_base_mismatch: bool = False
        temperature: float = 0.0  # 0 = greedy decoding of the answer (the published inference)
        top_p: float = 1.0  # nucleus sampling when temperature > 0
        sampling_seed: int = 0  # the sampler's seed (per batch)

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if o.mode not in MODES:
            raise ValueError(f"ivt-lr: unknown mode {o.mode!r}; choose one of: {', '.join(MODES)}")
        trained = None
        if o.checkpoint:
            from .checkpoints import check_checkpoint

            trained = check_checkpoint(o.checkpoint)  # a wrong path or folder fails before the model loads
        # Stored resolved, so a run's config says which prompt it fed.
        o.prompt = resolve_prompt(o.prompt, published_checkpoint=bool(o.checkpoint) and trained is None,
                                  trained=trained)
        check_shared(o)
        from harness.latent.decode import Sampling  # checks the numbers before any model loads

        self.sampling = Sampling(temperature=o.temperature, top_p=o.top_p, seed=o.sampling_seed)
        self._checkpoint_hash = ""

    def config(self) -> dict:
        from .checkpoints import checkpoint_fingerprint

        config = super().config()
        if not config["allow_base_mismatch"]:
            del config["allow_base_mismatch"]  # runs stored before the flag existed keep their key
        for key, default in ABLATION_DEFAULTS.items():  # runs without ablations keep their key
            if config[key] == default:
                del config[key]
        if config["prompt"] == "harness":  # the only prompt before the option existed: those runs keep their key
            del config["prompt"]
        if self.sampling.greedy:  # greedy runs keep the key they had before sampling existed
            for key in ("temperature", "top_p", "sampling_seed"):
                del config[key]
        if self.options.checkpoint:
            if not self._checkpoint_hash:
                self._checkpoint_hash = checkpoint_fingerprint(self.options.checkpoint)
            config["checkpoint_sha256"] = self._checkpoint_hash
        return config

    def backbone_options(self) -> dict:
        return {"rope": self.options.rope}

    def prepare(self, backbone) -> None:
        if not self.options.checkpoint:
            # Allowed (an ablation, and the tests' path), but the base model never saw latent inputs:
            # say so, since the run's numbers are then not IVT-LR's.
            logging.getLogger("harness").warning(
                "ivt-lr without --checkpoint: the latent loop runs on the untrained base model "
                "(train one with `harness train --method ivt-lr`, or pass a published model.pth)")
            return
        from .checkpoints import load_into_backbone

        load_into_backbone(backbone, self.options.checkpoint, rope=self.options.rope,
                           instruction=self.options.instruction, prompt=self.options.prompt,
                           image_size=self.options.image_size,
                           published_lora_alpha=self.options.published_lora_alpha,
                           allow_base_mismatch=self.options.allow_base_mismatch)

    def prompt(self, query: Query) -> str:
        # The published prompt at inference is the reference's inference text (infer.py), not its training text.
        return build_prompt(self.options, query.question, query.stem, query.choices, training=False)

    def run(self, backbone, queries: list[Query]) -> list[MethodOutput]:
        from harness.latent.decode import decode
        from harness.latent.loop import run_latent_loop

        from .policy import IVTLRPolicy

        o = self.options
        inputs = backbone.build_inputs([resize_images(q.images, o.image_size) for q in queries],
                                       [self.prompt(q) for q in queries])
        policy = IVTLRPolicy(o.top_k_patches, **policy_options(o))
        loop = run_latent_loop(backbone, inputs, policy, o.latent_steps, mode=o.mode)
        decoded = decode(backbone, loop.state, o.max_new_tokens, sampling=self.sampling)
        input_tokens = inputs["attention_mask"].sum(-1).tolist()
        outputs = []
        for i, (ids, n_in) in enumerate(zip(decoded, input_tokens)):
            generation = backbone.finish(ids, n_in)
            outputs.append(MethodOutput(
                text=generation.text, answer=final_answer_segment(generation.text),
                input_tokens=generation.input_tokens, generated_tokens=generation.generated_tokens,
                latent_steps=o.latent_steps, extra={**policy.sample_info(loop.trace, i), "mode": o.mode},
            ))
        return outputs
