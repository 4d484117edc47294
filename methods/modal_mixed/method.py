"""``modal-mixed``: text decoding with latent sketches written by the head when the model opens one."""
from __future__ import annotations

import dataclasses

from harness.api import Method, register_method
from harness.api.types import MethodOutput, Query

from ..baselines import final_answer_segment
from .options import ARCHITECTURE, SharedOptions, check_shared, head_kind, prompt_text


@register_method("modal-mixed")
class ModalMixed(Method):
    description = ("Modal-mixed CoT: text interleaved with latent visual sketches from a diffusion head; "
                   "--checkpoint DIR (harness train --method modal-mixed)")

    @dataclasses.dataclass
    class Options(SharedOptions):
        checkpoint: str = ""  # a `harness train --method modal-mixed` folder (required: an untrained head draws noise)
        max_new_tokens: int = 256
        sampler_steps: int = 50  # DDIM steps per sketch token
        cfg: float = 1.0  # classifier-free guidance scale (1: none)
        seed: int = 0  # the sketches' noise
        allow_base_mismatch: bool = False

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if not o.checkpoint:
            raise ValueError("modal-mixed needs --checkpoint DIR (train one with `harness train --method modal-mixed "
                             "--bench easyvqa-traces ...`): an untrained head has nothing to sketch")
        if o.sampler_steps < 1:
            raise ValueError(f"modal-mixed: --sampler-steps must be at least 1, got {o.sampler_steps}")
        if o.max_new_tokens < 1:
            raise ValueError(f"modal-mixed: --max-new-tokens must be at least 1, got {o.max_new_tokens}")
        from .checkpoints import check_checkpoint

        saved = check_checkpoint(o.checkpoint)
        defaults = SharedOptions()
        for key in ARCHITECTURE:
            mine, default = getattr(o, key), getattr(defaults, key)
            if mine != default and mine != saved[key]:
                raise ValueError(f"modal-mixed: --{key.replace('_', '-')} {mine!r} contradicts the checkpoint's "
                                 f"{saved[key]!r}; drop it (the checkpoint fixes it)")
            setattr(o, key, saved[key])
        check_shared(o)
        self._checkpoint_hash = ""
        self.head = self.standardizer = None
        self.token_ids: list[int] = []

    def config(self) -> dict:
        from .checkpoints import checkpoint_fingerprint

        config = super().config()
        del config["allow_base_mismatch"]
        if not self._checkpoint_hash:
            self._checkpoint_hash = checkpoint_fingerprint(self.options.checkpoint)
        config["checkpoint_sha256"] = self._checkpoint_hash
        return config

    def prepare(self, backbone) -> None:
        from .checkpoints import load_trained
        from .head import make_head
        from .sketch import Standardizer

        o = self.options
        width = backbone.hidden_size
        if not o.no_sketch:
            self.head = make_head(head_kind(o), width, width, width=o.head_width, depth=o.head_depth,
                                  train_steps=o.train_steps, schedule=o.schedule)
            self.standardizer = Standardizer(width)
        self.token_ids = load_trained(backbone, o.checkpoint, self.head, self.standardizer,
                                      allow_base_mismatch=o.allow_base_mismatch)
        if self.head is not None:
            self.head.to(backbone.device).eval()
            self.standardizer.to(backbone.device)

    def prompt(self, query: Query) -> str:
        return prompt_text(query.question, self.options.instruction)

    def run(self, backbone, queries: list[Query]) -> list[MethodOutput]:
        import torch

        from harness.latent.decode import decode

        from .policy import SketchWriter

        o = self.options
        prompts = [self.prompt(q) for q in queries]
        inputs = backbone.build_inputs([q.images for q in queries], prompts)
        with torch.no_grad():
            state, _ = backbone.prefill(inputs)
        writer = None
        if self.head is not None:
            writer = SketchWriter(backbone, self.head, self.standardizer, o.sketch_tokens, self.token_ids[1], prompts,
                                  sampler_steps=o.sampler_steps, cfg=o.cfg, seed=o.seed)
            decoded = decode(backbone, state, o.max_new_tokens, switch_token=self.token_ids[0], on_switch=writer)
        else:
            decoded = decode(backbone, state, o.max_new_tokens)
        outputs = []
        for i, (ids, n_in) in enumerate(zip(decoded, inputs["attention_mask"].sum(-1).tolist())):
            generation = backbone.finish(ids, n_in)
            segments = writer.segments[i] if writer else 0
            outputs.append(MethodOutput(
                text=generation.text, answer=final_answer_segment(generation.text), input_tokens=generation.input_tokens,
                generated_tokens=generation.generated_tokens, latent_steps=segments * o.sketch_tokens,
                extra={"sketch_segments": segments, "sketch_tokens": segments * o.sketch_tokens,
                       "text_tokens": generation.generated_tokens}))
        return outputs
