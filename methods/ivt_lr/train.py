"""IVT-LR's progressive training as a ``harness train`` recipe.

Curriculum (the published recipe): the rationale is split into sentences (". ") and regrouped into
``latent_steps`` steps (3); the schedule gives each stage ``epochs_per_stage`` epochs; stage ``s``
replaces the first ``s`` steps by ``s`` latent steps, so a training sequence reads

    prompt [V1] h1 ... [Vs] hs  step_{s+1}\\n ... step_n\\n  Therefore, the answer is X<eos>

and only the text after the latents carries labels. Stages run 0..latent_steps; at the last stage
every step is latent, which is what inference does (K latent steps, then the answer).
"""
from __future__ import annotations

import dataclasses

import torch

from harness.api import Recipe, register_trainer
from harness.api.recipe import Schedule
from harness.latent.train import right_padded

from .model import LATENT_TOKENS, IVTLRModel
from .options import (ABLATION_DEFAULTS, SharedOptions, build_prompt, check_shared, policy_options, resize_images,
                      resolve_prompt, rope_from_legacy)

def split_rationale(rationale: str, n_steps: int) -> list[str]:
    """Sentences (". "-separated, newlines flattened), regrouped into at most ``n_steps`` steps; the
    first ``len % n_steps`` groups take one sentence more (as the published code does)."""
    sentences = [s for s in rationale.replace("\n", " ").strip().split(". ")]
    if sentences and sentences[-1] == "":
        sentences.pop()
    if len(sentences) <= n_steps:
        return sentences
    size, extra = divmod(len(sentences), n_steps)
    steps, start = [], 0
    for i in range(n_steps):
        end = start + size + (1 if i < extra else 0)
        steps.append(". ".join(sentences[start:end]))
        start = end
    return steps


def stage_layout(steps: list[str], stage: int, max_stage: int) -> tuple[int, list[str]]:
    """(number of latent steps, the steps still written as text) for a curriculum stage."""
    if stage > max_stage:  # past the last stage: every step latent (the published pad-free rule)
        return min(len(steps), max_stage), []
    return stage, steps[stage:]


@dataclasses.dataclass
class StageItem:
    """One training sequence of one stage: its prompt, image refs, latent count and target text pieces."""

    uid: str
    prompt: str
    image_refs: list
    n_latent: int
    text_steps: list[str]
    answer_text: str


@register_trainer("ivt-lr")
class IVTLRRecipe(Recipe):
    benches = ("m3cot", "scienceqa", "easyvqa")
    # The published DeepSpeed config: global batch 64 (here 4 per device x 16 accumulation steps on one
    # process; divide --grad-accum by the process count under accelerate launch), lr 4e-5, weight decay
    # 0.01, gradient clipping 0.7.
    train_defaults = {"batch_size": 4, "grad_accum": 16, "lr": 4e-5, "weight_decay": 0.01, "max_grad_norm": 0.7}

    @dataclasses.dataclass
    class Options(SharedOptions):
        epochs_per_stage: int = 4  # curriculum: epochs per stage (stages 0..latent_steps)
        grad_through_latents: bool = False  # published IVT-LR: False (latents are constants); Coconut: True
        answer_template: str = "Therefore, the answer is {answer}"
        init_token: str = "<<"  # new token rows start from this token's rows (Coconut, IVT-LR)

    def __init__(self, config):
        super().__init__(config)
        # Training starts from a base model, never a published .pth: "auto" is the harness prompt.
        self.options.prompt = resolve_prompt(self.options.prompt)
        check_shared(self.options)
        if self.options.epochs_per_stage < 1:
            raise ValueError(f"--epochs-per-stage must be at least 1, got {self.options.epochs_per_stage}")
        self.backbone = None
        self.new_token_ids: list[int] = []

    def backbone_options(self) -> dict:
        return {"rope": self.options.rope}

    def schedule(self) -> Schedule:
        return Schedule((self.options.epochs_per_stage,) * (self.options.latent_steps + 1))

    def upgrade_identity(self, saved: dict) -> dict:
        """Checkpoints written before ``--epochs-per-stage`` became a recipe option, ``positions``
        became ``rope``, or the ablation options existed (then they were at their defaults)."""
        options = dict(saved.get("options", {}))
        if options:
            for key, default in ABLATION_DEFAULTS.items():
                options.setdefault(key, default)
            options.setdefault("image_size", 0)  # images were fed as they came
        options.setdefault("prompt", "harness")  # the only prompt before --prompt (whose "auto" resolves to it)
        if "epochs_per_stage" in saved:
            options.setdefault("epochs_per_stage", saved.pop("epochs_per_stage"))
        if "positions" in options:
            options["rope"] = rope_from_legacy(options.pop("positions"))
        return {**saved, "options": options}

    # -- model -------------------------------------------------------------------------------
    def setup(self, backbone):
        from harness.latent.adapters import add_tokens, attach_lora

        self.backbone = backbone
        self.new_token_ids = add_tokens(backbone, LATENT_TOKENS, init_from=self.options.init_token)
        attach_lora(backbone, self.lora_settings())  # freezes everything but LoRA (vision tower included)
        return IVTLRModel(backbone, top_k=self.options.top_k_patches,
                          grad_through_latents=self.options.grad_through_latents, **policy_options(self.options))

    def lora_settings(self):
        from harness.latent.adapters import LoraSettings

        return LoraSettings.from_config(self.config)

    def checkpoint_tensors(self, module) -> dict[str, dict]:
        from harness.latent.adapters import adapter_state, token_rows

        rows = token_rows(self.backbone, self.new_token_ids)
        return {"adapter": adapter_state(module.model),
                "new_embeddings": {"input": rows["input"], "output": rows["output"]}}

    def restore(self, module, folder) -> None:
        from harness.latent.adapters import adapter_state
        from harness.latent.checkpoint import load_tensors

        adapter = load_tensors(folder, "adapter")
        if set(adapter) != set(adapter_state(module.model)):
            raise ValueError(f"checkpoint {folder} holds an adapter of another shape; pass a new --out")
        module.model.load_state_dict(adapter, strict=False)
        rows = load_tensors(folder, "new_embeddings")
        with torch.no_grad():
            module.model.get_input_embeddings().weight[self.new_token_ids] = rows["input"]
            self.backbone.lm_head.weight[self.new_token_ids] = rows["output"]

    def checkpoint_config(self) -> dict:
        o = self.options
        return {"recipe": "ivt-lr", "new_tokens": list(LATENT_TOKENS), "lora": self.lora_settings().to_dict(),
                "rope": o.rope, "instruction": o.instruction, "prompt": o.prompt, "latent_steps": o.latent_steps,
                "top_k_patches": o.top_k_patches, "answer_template": o.answer_template,
                "image_size": o.image_size, **{k: getattr(o, k) for k in ABLATION_DEFAULTS},
                "vocab_size": int(self.backbone.lm_head.weight.shape[0]) if self.backbone else None}

    # -- data --------------------------------------------------------------------------------
    def epoch_items(self, examples, stage: int) -> list[StageItem]:
        o = self.options
        items = []
        for ex in examples:
            n_latent, text_steps = stage_layout(split_rationale(ex.rationale, o.latent_steps), stage, o.latent_steps)
            # The published prompt in training is the reference's training text (qwenvl_run.py), not infer.py's.
            prompt = build_prompt(o, ex.question, ex.stem, ex.choices, training=True)
            items.append(StageItem(uid=ex.uid, prompt=prompt, image_refs=ex.image_refs, n_latent=n_latent,
                                   text_steps=text_steps, answer_text=o.answer_template.format(answer=ex.answer)))
        return items

    def target_ids(self, item: StageItem) -> list[int]:
        """Token ids after the latents: each remaining step + "\\n" tokenized on its own, then the answer, EOS."""
        tokenizer = self.backbone.tokenizer
        ids = [t for step in item.text_steps for t in tokenizer.encode(step + "\n", add_special_tokens=False)]
        ids += tokenizer.encode(item.answer_text, add_special_tokens=False)
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id in self.backbone.eos_token_ids else \
            self.backbone.eos_token_ids[0]
        return ids + [eos]

    def collate(self, items: list[StageItem]) -> dict:
        from harness.api.types import decode_image

        counts = {item.n_latent for item in items}
        if len(counts) != 1:  # one stage per epoch, so only the past-the-last-stage rule could differ
            raise ValueError(f"a batch mixes latent counts {sorted(counts)}")
        backbone = self.backbone
        side = self.options.image_size  # as inference resizes them
        inputs = backbone.build_inputs([resize_images([decode_image(r) for r in item.image_refs], side) for item in items],
                                       [item.prompt for item in items])
        target_ids, target_mask = right_padded([self.target_ids(item) for item in items], backbone.pad_token_id)
        labels = target_ids.masked_fill(target_mask == 0, -100)
        device = backbone.device
        return {"inputs": inputs, "n_latent": counts.pop(), "target_ids": target_ids.to(device),
                "target_mask": target_mask.to(device), "labels": labels.to(device)}


def flat_sequence(batch: dict, i: int, latent_id: int) -> tuple[list[int], list[int]]:
    """Sample ``i`` of a batch in the published layout: (input ids with ``<|latent|>`` slots, labels).
    Left padding of the prompt is dropped; image patches are inserted at run time, so they are not here."""
    mask = batch["inputs"]["attention_mask"][i].bool()
    prompt = batch["inputs"]["input_ids"][i][mask].tolist()
    target_mask = batch["target_mask"][i].bool()
    target = batch["target_ids"][i][target_mask].tolist()
    n = batch["n_latent"]
    return prompt + [latent_id] * n + target, [-100] * (len(prompt) + n) + batch["labels"][i][target_mask].tolist()
