"""``ivt-lr``: K interleaved vision-text latent steps, then greedy decoding of the answer."""
from __future__ import annotations

import dataclasses
import logging

from harness.api.types import MethodOutput, Query

from harness.api import Method, register_method
from ..baselines import final_answer_segment

MODES = ("cached", "reference")


@register_method("ivt-lr")
class IVTLR(Method):
    description = ("IVT-LR: K latent steps (last hidden state + top-k attended image patches), "
                   "then the answer; --checkpoint DIR (harness train) or a published model.pth")

    @dataclasses.dataclass
    class Options:
        max_new_tokens: int = 512  # the published inference decodes up to 512 tokens
        latent_steps: int = 3  # K
        top_k_patches: int = 32  # patches per step (32 for Qwen2-VL, 64 for Chameleon in the paper)
        mode: str = "cached"  # "cached" (KV cache) | "reference" (recompute the prefix each step)
        # "1d": what the published code feeds Qwen2-VL, and what its checkpoints were trained with;
        # "native": the model's own M-RoPE (2-D image positions) continued as text positions.
        positions: str = "1d"
        checkpoint: str = ""  # "" = the backbone as loaded; a `harness train` folder; or a published .pth
        instruction: str = "Answer:"  # follows the benchmark's question; must match the training prompt
        published_lora_alpha: float = 16.0  # LoRA alpha of a published .pth (r is read from its shapes)
        # Load a `harness train` checkpoint onto a base model other than the one it was trained from.
        allow_base_mismatch: bool = False

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if o.mode not in MODES:
            raise ValueError(f"ivt-lr: unknown mode {o.mode!r}; choose one of: {', '.join(MODES)}")
        if o.latent_steps < 0 or o.top_k_patches < 0:
            raise ValueError("ivt-lr: --latent-steps and --top-k-patches must be >= 0")
        self._checkpoint_hash = ""
        if o.checkpoint:
            from .checkpoints import check_checkpoint

            check_checkpoint(o.checkpoint)  # a wrong path or folder fails before the model loads

    def config(self) -> dict:
        from .checkpoints import checkpoint_fingerprint

        config = super().config()
        if not config["allow_base_mismatch"]:
            del config["allow_base_mismatch"]  # runs stored before the flag existed keep their key
        if self.options.checkpoint:
            if not self._checkpoint_hash:
                self._checkpoint_hash = checkpoint_fingerprint(self.options.checkpoint)
            config["checkpoint_sha256"] = self._checkpoint_hash
        return config

    def backbone_options(self) -> dict:
        return {"positions": self.options.positions}

    def prepare(self, backbone) -> None:
        if not self.options.checkpoint:
            # Allowed (an ablation, and the tests' path), but the base model never saw latent inputs:
            # say so, since the run's numbers are then not IVT-LR's.
            logging.getLogger("harness").warning(
                "ivt-lr without --checkpoint: the latent loop runs on the untrained base model "
                "(train one with `harness train --method ivt-lr`, or pass a published model.pth)")
            return
        from .checkpoints import load_into_backbone

        load_into_backbone(backbone, self.options.checkpoint, positions=self.options.positions,
                           instruction=self.options.instruction,
                           published_lora_alpha=self.options.published_lora_alpha,
                           allow_base_mismatch=self.options.allow_base_mismatch)

    def prompt(self, query: Query) -> str:
        return f"{query.question}\n{self.options.instruction}" if self.options.instruction else query.question

    def run(self, backbone, queries: list[Query]) -> list[MethodOutput]:
        from .model import latent_loop_cached, latent_loop_reference

        o = self.options
        inputs = backbone.build_inputs([q.images for q in queries], [self.prompt(q) for q in queries])
        if o.mode == "cached":
            state, trace = latent_loop_cached(backbone, inputs, o.latent_steps, o.top_k_patches)
        else:
            state, trace, _ = latent_loop_reference(backbone, inputs, o.latent_steps, o.top_k_patches)
        decoded = backbone.greedy_decode(state, o.max_new_tokens)
        input_tokens = inputs["attention_mask"].sum(-1).tolist()
        outputs = []
        for i, (ids, n_in) in enumerate(zip(decoded, input_tokens)):
            generation = backbone.finish(ids, n_in)
            patches = [int((step[i] >= 0).sum()) for step in trace.selected]
            outputs.append(MethodOutput(
                text=generation.text, answer=final_answer_segment(generation.text),
                input_tokens=generation.input_tokens, generated_tokens=generation.generated_tokens,
                latent_steps=o.latent_steps, extra={"patches_per_step": patches, "mode": o.mode},
            ))
        return outputs
