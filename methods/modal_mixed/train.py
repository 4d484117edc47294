"""Modal-mixed CoT's SFT as a ``harness train`` recipe (``--stage sft``; RL: see ``--stage rl`` below).

Data: a reader whose examples carry an interleaved ``trace`` (``easyvqa-traces``: the proving
ground's; ``zebra-cot``: Zebra-CoT's layout); examples without one are trained on their rationale as
text only. Trains: LoRA on the LLM, the two control tokens' input and output rows (gradient masked to
those rows, no weight decay), and the sketch head in full. The vision tower and projector stay frozen,
so the sketch targets (their output) do not move while the LLM learns to produce them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import re

import torch

from harness.api import Recipe, register_trainer
from harness.latent.train import right_padded

from .model import ModalMixedModel
from .options import CONTROL_TOKENS, SharedOptions, check_shared, head_kind, prompt_text
from .sketch import Standardizer, sketch_targets

log = logging.getLogger("harness")
STAGES = ("sft", "rl")


@dataclasses.dataclass
class Item:
    uid: str
    prompt: str
    image_refs: list
    pieces: list  # ("text", str) / ("image", ref)
    answer_text: str


def _image_key(ref) -> str:
    if isinstance(ref, dict):
        ref = ref.get("bytes") or ref.get("path")
    if isinstance(ref, (bytes, bytearray)):
        return hashlib.sha1(bytes(ref)).hexdigest()
    if hasattr(ref, "tobytes"):  # a PIL image
        buffer = io.BytesIO()
        ref.save(buffer, format="PNG")
        return hashlib.sha1(buffer.getvalue()).hexdigest()
    return str(ref)


@register_trainer("modal-mixed")
class ModalMixedRecipe(Recipe):
    benches = ("easyvqa-traces", "zebra-cot")
    train_defaults = {"batch_size": 8, "lr": 2e-4, "weight_decay": 0.0, "max_grad_norm": 1.0}

    @dataclasses.dataclass
    class Options(SharedOptions):
        stage: str = "sft"  # sft | rl
        lambda_sketch: float = 1.0  # λ of the head loss
        head_lr: float = 1e-3  # the head and the control-token rows; 0: --lr
        init_token: str = "image"  # the control tokens' rows start from this word's
        answer_template: str = "The answer is {answer}."
        cfg_drop: float = 0.1  # the head's condition dropped (null vector) with this probability: for --cfg
        stats_examples: int = 256  # sketch targets the standardisation statistics are computed on
        # --stage rl (GRPO, see rl.py)
        checkpoint: str = ""  # the SFT checkpoint RL starts from (and whose model is the KL reference)
        group_size: int = 4  # G rollouts per question
        rl_temperature: float = 1.0
        rl_max_new_tokens: int = 48
        rl_sampler_steps: int = 10  # DDIM steps per sketch token in rollouts
        clip_eps: float = 0.2
        beta: float = 0.04  # KL weight (DeepSeekMath)
        format_reward: float = 0.1  # added when the text says "The answer is"

    def __init__(self, config):
        super().__init__(config)
        o = self.options
        check_shared(o)
        if o.stage not in STAGES:
            raise ValueError(f"modal-mixed: --stage must be one of: {', '.join(STAGES)}; got {o.stage!r}")
        self.sft = None  # --stage rl: the SFT checkpoint's config
        if o.stage == "rl":
            self._check_rl()
        if "{answer}" not in o.answer_template:
            raise ValueError("modal-mixed: --answer-template must contain {answer}")
        if not 0 <= o.cfg_drop < 1:
            raise ValueError(f"modal-mixed: --cfg-drop must be in [0, 1), got {o.cfg_drop}")
        self.backbone = None
        self.module = None
        self.token_ids: list[int] = []
        self._targets: dict[str, torch.Tensor] = {}  # intermediate image → its sketch vectors [N_s, D]
        self._fitted = False

    def _check_rl(self) -> None:
        from .checkpoints import check_checkpoint
        from .options import ARCHITECTURE

        o = self.options
        if not o.checkpoint:
            raise ValueError("modal-mixed: --stage rl needs --checkpoint SFT_DIR (a `--stage sft` checkpoint)")
        self.sft = check_checkpoint(o.checkpoint)
        if self.sft.get("stage") != "sft":
            raise ValueError(f"modal-mixed: --checkpoint {o.checkpoint} is a {self.sft.get('stage')} checkpoint; "
                             "RL starts from a --stage sft one")
        if self.sft.get("no_sketch"):
            raise ValueError("modal-mixed: the SFT checkpoint was trained with --no-sketch; RL here teaches when to "
                             "sketch, so start from one with sketches")
        defaults = SharedOptions()
        for key in ARCHITECTURE:
            mine = getattr(o, key)
            if mine != getattr(defaults, key) and mine != self.sft[key]:
                raise ValueError(f"modal-mixed: --{key.replace('_', '-')} {mine!r} contradicts the SFT checkpoint's "
                                 f"{self.sft[key]!r}; drop it")
            setattr(o, key, self.sft[key])
        if o.group_size < 2:
            raise ValueError(f"modal-mixed: --group-size must be at least 2 (GRPO compares rollouts), got {o.group_size}")
        if not o.rl_temperature > 0 or o.rl_max_new_tokens < 1 or o.rl_sampler_steps < 1:
            raise ValueError("modal-mixed: --rl-temperature must be positive, --rl-max-new-tokens and "
                             "--rl-sampler-steps at least 1")

    def lora_settings(self):
        from harness.latent.adapters import LoraSettings

        return LoraSettings.from_config(self.config)

    # -- model -------------------------------------------------------------------------------
    def setup(self, backbone):
        from harness.latent.adapters import add_tokens, attach_lora

        from .head import make_head

        o = self.options
        self.backbone = backbone
        if o.stage == "rl":
            return self._setup_rl(backbone)
        self.token_ids = add_tokens(backbone, CONTROL_TOKENS, init_from=o.init_token)
        attach_lora(backbone, self.lora_settings())  # freezes everything but LoRA
        self._train_rows()
        width = backbone.hidden_size
        head = None if o.no_sketch else make_head(head_kind(o), width, width, width=o.head_width,
                                                  depth=o.head_depth, train_steps=o.train_steps,
                                                  schedule=o.schedule, cfg_drop=o.cfg_drop)
        self.module = ModalMixedModel(backbone, head, Standardizer(width), o.lambda_sketch)
        self.module.to(backbone.device)
        return self.module

    def _train_rows(self) -> None:
        new = torch.tensor(self.token_ids)
        for weight in self._token_matrices():
            weight.requires_grad_(True)
            mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
            mask[new] = 1
            weight.register_hook(lambda grad, mask=mask: grad * mask)  # only the control tokens' rows learn

    def _setup_rl(self, backbone):
        from harness.latent.adapters import attach_lora

        from .checkpoints import load_trained
        from .head import make_head
        from .rl import GRPOModel

        o = self.options
        width = backbone.hidden_size
        head = make_head(head_kind(o), width, width, width=o.head_width, depth=o.head_depth,
                         train_steps=o.train_steps, schedule=o.schedule)
        standardizer = Standardizer(width)
        # The SFT adapter merged into the weights: with this stage's LoRA off, the model is the reference.
        self.token_ids = load_trained(backbone, o.checkpoint, head, standardizer)
        peft = attach_lora(backbone, self.lora_settings())
        self._train_rows()
        head.to(backbone.device).eval().requires_grad_(False)
        standardizer.to(backbone.device)
        self.module = GRPOModel(backbone, peft, head, standardizer, self.token_ids, group_size=o.group_size,
                                temperature=o.rl_temperature, max_new_tokens=o.rl_max_new_tokens,
                                sampler_steps=o.rl_sampler_steps, sketch_tokens=o.sketch_tokens, clip_eps=o.clip_eps,
                                beta=o.beta, format_reward=o.format_reward, grade=self._grader())
        return self.module

    def _grader(self):
        """The benchmark's own rule on a final answer: easy-VQA's answer word; otherwise normalised equality."""
        from harness.api import BENCHMARKS, Sample

        if self.config.bench == "easyvqa-traces":
            benchmark = BENCHMARKS.get("easyvqa")(self.config.data, "train")
            return lambda answer, gold: benchmark.grade(Sample(uid="", question="", gold=gold), answer).correct

        def norm(text: str) -> str:
            return " ".join(re.sub(r"[^\w\s.]", " ", text.lower()).split()).rstrip(".")

        return lambda answer, gold: norm(answer) == norm(gold)

    def _token_matrices(self) -> list:
        backbone = self.backbone
        weights = [backbone.model.get_input_embeddings().weight, backbone.lm_head.weight]
        return [w for i, w in enumerate(weights) if all(w is not v for v in weights[:i])]  # tied: once

    def param_groups(self, module) -> list[dict]:
        o = self.options
        lora = [p for n, p in module.model.named_parameters() if "lora_" in n]
        groups = [{"params": lora},
                  {"params": self._token_matrices(), "lr": o.head_lr or self.config.lr, "weight_decay": 0.0}]
        if module.head is not None and o.stage == "sft":  # RL: the head is the environment's, frozen
            groups.append({"params": list(module.head.parameters()), "lr": o.head_lr or self.config.lr})
        return groups

    def checkpoint_tensors(self, module) -> dict[str, dict]:
        from harness.latent.adapters import adapter_state, token_rows

        rows = token_rows(self.backbone, self.token_ids)
        tensors = {"adapter": adapter_state(module.model),
                   "new_embeddings": {"input": rows["input"], "output": rows["output"]}}
        if self.options.stage == "rl":  # inference merges the SFT adapter, then this one
            from harness.latent.checkpoint import load_tensors

            tensors["sft_adapter"] = load_tensors(self.options.checkpoint, "adapter")
        if module.head is not None:
            from .checkpoints import head_tensors

            tensors["head"] = head_tensors(module.head, module.standardizer)
        return tensors

    def restore(self, module, folder) -> None:
        from harness.latent.checkpoint import load_tensors

        module.model.load_state_dict(load_tensors(folder, "adapter"), strict=False)
        rows = load_tensors(folder, "new_embeddings")
        with torch.no_grad():
            self.backbone.model.get_input_embeddings().weight[self.token_ids] = rows["input"].to(self.backbone.dtype)
            self.backbone.lm_head.weight[self.token_ids] = rows["output"].to(self.backbone.dtype)
        if module.head is not None:
            from .checkpoints import load_head

            load_head(folder, module.head, module.standardizer)
            self._fitted = True

    def checkpoint_config(self) -> dict:
        o = self.options
        from .options import ARCHITECTURE

        return {"recipe": "modal-mixed", "new_tokens": list(CONTROL_TOKENS), "lora": self.lora_settings().to_dict(),
                **{k: getattr(o, k) for k in ARCHITECTURE}, "answer_template": o.answer_template,
                "stage": o.stage, "cfg_drop": o.cfg_drop,
                **({"sft_lora": self.sft["lora"], "sft_checkpoint": o.checkpoint,
                    "sft_answer_template": self.sft["answer_template"]} if o.stage == "rl" else {}),
                "vocab_size": int(self.backbone.lm_head.weight.shape[0]) if self.backbone else None}

    # -- data --------------------------------------------------------------------------------
    def epoch_items(self, examples, stage: int) -> list[Item]:
        o = self.options
        if o.stage == "rl":
            return [Item(uid=ex.uid, prompt=prompt_text(ex.question, o.instruction), image_refs=ex.image_refs,
                         pieces=[], answer_text=ex.answer) for ex in examples]
        items = []
        for ex in examples:
            pieces = list(ex.trace) or [("text", ex.rationale)]
            if o.no_sketch:
                pieces = [p for p in pieces if p[0] == "text"]
            items.append(Item(uid=ex.uid, prompt=prompt_text(ex.question, o.instruction), image_refs=ex.image_refs,
                              pieces=pieces, answer_text=o.answer_template.format(answer=ex.answer)))
        if not o.no_sketch and not self._fitted:
            self._fit_standardizer(items)
        return items

    def _fit_standardizer(self, items: list[Item]) -> None:
        refs = [ref for item in items for kind, ref in item.pieces if kind == "image"][:self.options.stats_examples]
        if not refs:
            raise ValueError("modal-mixed: no example has an intermediate image in its trace; train on traces "
                             "(--bench easyvqa-traces or zebra-cot) or pass --no-sketch true")
        self.module.standardizer.fit(self._sketches(refs))
        self._fitted = True

    def _sketches(self, refs: list) -> torch.Tensor:
        """[len(refs), N_s, D] sketch targets, computed once per distinct image."""
        from harness.api.types import decode_image

        keys = [_image_key(ref) for ref in refs]
        todo = {k: r for k, r in zip(keys, refs) if k not in self._targets}
        if todo:
            was = self.backbone.model.training
            self.backbone.model.eval()
            values = sketch_targets(self.backbone, [decode_image(r) for r in todo.values()],
                                    self.options.sketch_tokens)
            self.backbone.model.train(was)
            for k, v in zip(todo, values):
                self._targets[k] = v.cpu()
        return torch.stack([self._targets[k] for k in keys])

    def collate(self, items: list[Item]) -> dict:
        from harness.api.types import decode_image

        backbone, o = self.backbone, self.options
        if o.stage == "rl":  # each question G times in a row: one group
            group = [item for item in items for _ in range(o.group_size)]
            images = [[decode_image(r) for r in item.image_refs] for item in group]
            prompts = [item.prompt for item in group]
            return {"inputs": backbone.build_inputs(images, prompts), "prompts": prompts,
                    "golds": [item.answer_text for item in group]}
        tokenizer = backbone.tokenizer
        open_id, close_id = self.token_ids
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id in backbone.eos_token_ids else backbone.eos_token_ids[0]
        rows, slots, refs = [], [], []
        for item in items:
            ids, slot = [], []
            for kind, value in item.pieces:
                if kind == "text":
                    piece = tokenizer.encode((" " if ids else "") + value.strip(), add_special_tokens=False)
                    ids += piece
                    slot += [False] * len(piece)
                else:
                    ids += [open_id] + [backbone.pad_token_id] * o.sketch_tokens + [close_id]
                    slot += [False] + [True] * o.sketch_tokens + [False]
                    refs.append(value)
            answer = tokenizer.encode((" " if ids else "") + item.answer_text, add_special_tokens=False) + [eos]
            rows.append(ids + answer)
            slots.append(slot + [False] * len(answer))
        target_ids, target_mask = right_padded(rows, backbone.pad_token_id)
        width = target_ids.shape[1]
        sketch_slots = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, s in enumerate(slots):
            sketch_slots[i, :len(s)] = torch.tensor(s, dtype=torch.bool)
        labels = target_ids.masked_fill((target_mask == 0) | sketch_slots, -100)
        sketch_values = torch.zeros(len(rows), width, backbone.hidden_size)
        if refs:
            sketch_values[sketch_slots] = self._sketches(refs).reshape(-1, backbone.hidden_size)
        images = [[decode_image(r) for r in item.image_refs] for item in items]
        device = backbone.device
        return {"inputs": backbone.build_inputs(images, [item.prompt for item in items]),
                "target_ids": target_ids.to(device), "target_mask": target_mask.to(device), "labels": labels.to(device),
                "sketch_slots": sketch_slots.to(device), "sketch_values": sketch_values.to(device)}
