"""LaRe's four training stages (paper App. B) as a ``harness train`` recipe.

=========  ==========================================  ==========================================
stage      trains                                      losses
=========  ==========================================  ==========================================
I          the projector (vision encoder, LLM frozen)  L_LM on prompt → answer (no latents)
II         Extractor + U-Net + pooling head (LLM,      L_LM + λ1 L_align + λ2 L_img + λ3 L_text,
           projector, vision encoder frozen)           with T latent iterations
III        everything but the vision encoder           the same (instruction data)
IV         everything but the vision encoder           the same (reasoning data)
=========  ==========================================  ==========================================

``--stages 1,2,3,4`` (default) runs them in sequence in one ``--out`` (``--stage-epochs`` each);
``--stages 3 --init DIR`` runs one stage starting from a previous stage's checkpoint, so each stage can
read its own data (``--bench llava --data llava_v1_5_mix665k.json`` for III, a rationale set for IV).
Stages III and IV fine-tune the whole LLM (as the paper), not LoRA: the checkpoint holds the VLM's
trained weights (projector + LLM, safetensors) and LaRe's modules (extractor, pool, reconstructor).
"""
from __future__ import annotations

import dataclasses
import logging

import torch

from harness.api import Recipe, register_trainer
from harness.api.recipe import Schedule

from .options import LATENT_TOKENS, SharedOptions, check_shared, prompt_text
from .model import LaReModel, modules_of

log = logging.getLogger("harness")
STAGES = (1, 2, 3, 4)


def parse_ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"lare: --{name} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"lare: --{name} is empty")
    return values


@dataclasses.dataclass
class StageItem:
    uid: str
    prompt: str
    image_refs: list
    n_latent: int
    rationale: str
    answer_text: str


@register_trainer("lare")
class LaReRecipe(Recipe):
    benches = ("easyvqa", "m3cot", "scienceqa", "llava")
    # AdamW with weight decay 0.05 in every stage (App. B); the paper's learning rates did not survive
    # extraction: LLaVA-1.5's (projector 1e-3 when it trains alone, 2e-5 for the LLM) are ours.
    train_defaults = {"batch_size": 4, "grad_accum": 1, "lr": 2e-5, "weight_decay": 0.05, "max_grad_norm": 1.0}

    @dataclasses.dataclass
    class Options(SharedOptions):
        stages: str = "1,2,3,4"  # which of the paper's stages, in order
        stage_epochs: str = "1"  # epochs per listed stage (one number: the same for each)
        init: str = ""  # start from this `harness train --method lare` checkpoint (a previous stage's)
        no_align: bool = False  # ablations: drop L_align / L_img / L_text
        no_img_recon: bool = False
        no_text_recon: bool = False
        lambda_align: float = 1.0  # λ1..λ3 (the paper's grid-searched values did not survive extraction)
        lambda_img: float = 1.0
        lambda_text: float = 1.0
        tau: float = 0.07  # InfoNCE temperature
        prefix: int = 32  # rationale tokens the latents reconstruct (paper: 32)
        rationale_tokens: int = 128  # rationale tokens whose hidden states the latents align with
        align_dim: int = 256  # the pooling head's output width
        vae: str = "pixels"  # diffusers AutoencoderKL id or folder (paper: KL-16), or "pixels" (the crop itself)
        recon_size: int = 0  # crop side in pixels before the tokenizer; 0: 256 with a VAE, 16 with pixels
        pixel_size: int = 256  # the image as cropped from (square resize, as the vision encoder sees it)
        unet_channels: str = "96,192,384,512"  # Table 7
        unet_layers_per_block: int = 3
        unet_cross_dim: int = 768
        unet_head_dim: int = 64
        unet_norm_groups: int = 32
        projector_lr: float = 1e-3  # 0: --lr
        module_lr: float = 1e-4  # Extractor, pooling head, U-Net; 0: --lr
        answer_template: str = "The answer is {answer}."  # the text after <end> (llava data: "{answer}")
        init_token: str = "<<"  # <start>/<end> rows start from this token's rows (as IVT-LR's, Coconut's)

    def __init__(self, config):
        super().__init__(config)
        o = self.options
        check_shared(o)
        self.stages = parse_ints(o.stages, "stages")
        if any(s not in STAGES for s in self.stages) or list(self.stages) != sorted(set(self.stages)):
            raise ValueError(f"lare: --stages must be increasing stage numbers from 1,2,3,4, got {o.stages!r}")
        epochs = parse_ints(o.stage_epochs, "stage-epochs")
        if len(epochs) == 1:
            epochs = epochs * len(self.stages)
        if len(epochs) != len(self.stages):
            raise ValueError(f"lare: --stage-epochs gives {len(epochs)} numbers for {len(self.stages)} stages")
        self.stage_epochs = epochs
        if o.prefix < 1 or o.rationale_tokens < 1 or o.align_dim < 1 or o.pixel_size < 8:
            raise ValueError("lare: --prefix, --rationale-tokens, --align-dim must be >= 1 and --pixel-size >= 8")
        if not o.tau > 0:
            raise ValueError(f"lare: --tau must be positive, got {o.tau}")
        if "{answer}" not in o.answer_template:
            raise ValueError("lare: --answer-template must contain {answer}")
        if o.init:
            from .checkpoints import check_checkpoint

            check_checkpoint(o.init)
        self.backbone = None
        self._module = None  # the LaReModel setup() built (frozen() and the checkpoint config read it)
        self.token_ids: list[int] = []

    def schedule(self) -> Schedule:
        return Schedule(self.stage_epochs)

    def paper_stage(self, stage: int) -> int:
        return self.stages[min(stage, len(self.stages) - 1)]

    @property
    def recon_size(self) -> int:
        o = self.options
        return o.recon_size or (16 if o.vae == "pixels" else 256)

    # -- model -------------------------------------------------------------------------------
    def setup(self, backbone):
        from harness.latent.adapters import add_tokens

        from .checkpoints import load_trained
        from .extractor import Extractor, HybridPool

        o = self.options
        self.backbone = backbone
        latent_stages = [s for s in self.stages if s >= 2]
        width = backbone.hidden_size
        extractor = None if o.no_extractor else Extractor(width, o.extractor_hidden, o.extractor_layers,
                                                          o.extractor_heads)
        pool = HybridPool(width, o.align_dim) if latent_stages and not o.no_align else None
        reconstructor, tokenizer = None, None
        if latent_stages and not o.no_img_recon and o.lambda_img:
            from .losses import ImageTokenizer, Reconstructor

            tokenizer = ImageTokenizer(o.vae, backbone.device)
            channels, factor = tokenizer.channels_and_factor()
            if self.recon_size % factor:
                raise ValueError(f"lare: --recon-size {self.recon_size} is not a multiple of the VAE's factor {factor}")
            reconstructor = Reconstructor(
                width, channels, self.recon_size // factor, channels=parse_ints(o.unet_channels, "unet-channels"),
                layers_per_block=o.unet_layers_per_block, cross_attention_dim=o.unet_cross_dim,
                attention_head_dim=o.unet_head_dim, norm_num_groups=o.unet_norm_groups)
        if o.init:
            self.token_ids = load_trained(backbone, o.init, extractor=extractor, pool=pool,
                                          reconstructor=reconstructor)
        else:
            self.token_ids = add_tokens(backbone, LATENT_TOKENS, init_from=o.init_token)
        model = LaReModel(backbone, extractor=extractor, pool=pool, reconstructor=reconstructor,
                          image_tokenizer=tokenizer, start_id=self.token_ids[0],
                          loss={"lambda_align": 0.0 if o.no_align else o.lambda_align,
                                "lambda_img": 0.0 if o.no_img_recon else o.lambda_img,
                                "lambda_text": 0.0 if o.no_text_recon else o.lambda_text,
                                "tau": o.tau, "recon_size": self.recon_size, "prefix": o.prefix},
                          loop={"latents": o.latents_per_step, "window": o.window, "no_window": o.no_window})
        model.to(backbone.device)
        self._module = model
        for p in backbone.vision_encoder_parameters():
            p.requires_grad_(False)  # never trained (every stage)
        return model

    def _parts(self, module) -> dict[str, list]:
        """{projector, modules, llm: [(name, parameter)]} within ``module.named_parameters()``."""
        backbone = self.backbone
        projector = {id(p) for p in backbone.projector_parameters()}
        vision = {id(p) for p in backbone.vision_encoder_parameters()}
        parts = {"projector": [], "modules": [], "llm": []}
        for name, p in module.named_parameters():
            if name.startswith("model."):
                if id(p) in projector:
                    parts["projector"].append((name, p))
                elif id(p) not in vision:
                    parts["llm"].append((name, p))
            else:
                parts["modules"].append((name, p))
        return parts

    def trains(self, part: str, paper_stage: int) -> bool:
        return {"projector": paper_stage in (1, 3, 4), "modules": paper_stage in (2, 3, 4),
                "llm": paper_stage in (3, 4)}[part]

    def param_groups(self, module) -> list[dict]:
        o, lr = self.options, self.config.lr
        rates = {"projector": o.projector_lr or lr, "modules": o.module_lr or lr, "llm": lr}
        groups = []
        for part, named in self._parts(module).items():
            if any(self.trains(part, s) for s in self.stages):
                groups.append({"params": [p for _n, p in named], "lr": rates[part]})
            else:
                for _n, p in named:
                    p.requires_grad_(False)
        return groups

    def frozen(self, stage: int) -> tuple[str, ...]:
        paper = self.paper_stage(stage)
        module = self._module
        return tuple(name for part, named in self._parts(module).items() if not self.trains(part, paper)
                     for name, _p in named)

    def checkpoint_tensors(self, module) -> dict[str, dict]:
        from .checkpoints import trained_tensors

        return trained_tensors(self.backbone, module)

    def restore(self, module, folder) -> None:
        from .checkpoints import load_trained

        load_trained(self.backbone, folder, **modules_of(module), tokens_added=True)

    def checkpoint_config(self) -> dict:
        o = self.options
        extractor = getattr(self._module, "extractor", None)
        reconstructor = getattr(self._module, "reconstructor", None)
        return {"recipe": "lare", "new_tokens": list(LATENT_TOKENS), "stages": list(self.stages),
                "vocab_size": int(self.backbone.lm_head.weight.shape[0]) if self.backbone else None,
                "loop": {k: getattr(o, k) for k in ("iterations", "latents_per_step", "window", "no_extractor",
                                                   "no_window", "instruction")},
                "extractor": extractor.config if extractor is not None else None,
                "reconstructor": reconstructor.config if reconstructor is not None else None,
                "align_dim": o.align_dim, "vae": o.vae, "recon_size": self.recon_size,
                "answer_template": o.answer_template, "init": o.init}

    # -- data --------------------------------------------------------------------------------
    def epoch_items(self, examples, stage: int) -> list[StageItem]:
        o = self.options
        n_latent = 0 if self.paper_stage(stage) == 1 else o.iterations
        return [StageItem(uid=ex.uid, prompt=prompt_text(ex.question, o.instruction), image_refs=ex.image_refs,
                          n_latent=n_latent, rationale=ex.rationale or ex.answer,
                          answer_text=o.answer_template.format(answer=ex.answer)) for ex in examples]

    def collate(self, items: list[StageItem]) -> dict:
        from harness.api.types import decode_image

        backbone, o = self.backbone, self.options
        tokenizer = backbone.tokenizer
        counts = {item.n_latent for item in items}
        if len(counts) != 1:
            raise ValueError(f"a batch mixes latent counts {sorted(counts)}")
        n_latent = counts.pop()
        images = [[decode_image(r) for r in item.image_refs] for item in items]
        inputs = backbone.build_inputs(images, [item.prompt for item in items])
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id in backbone.eos_token_ids else backbone.eos_token_ids[0]
        head = [self.token_ids[1]] if n_latent else []  # <end>: given, not predicted (inference appends it)
        targets = [head + tokenizer.encode(item.answer_text, add_special_tokens=False) + [eos] for item in items]
        target_ids, target_mask = _right_pad(targets, backbone.pad_token_id)
        labels = target_ids.masked_fill(target_mask == 0, -100)
        if n_latent:
            labels[:, 0] = -100
        device = backbone.device
        batch = {"inputs": inputs, "n_latent": n_latent, "target_ids": target_ids.to(device),
                 "target_mask": target_mask.to(device), "labels": labels.to(device)}
        if n_latent:
            rationale = [tokenizer.encode(item.rationale, add_special_tokens=False)[:o.rationale_tokens] or [eos]
                         for item in items]
            ids, mask = _right_pad(rationale, backbone.pad_token_id)
            batch.update(rationale_ids=ids.to(device), rationale_mask=mask.to(device),
                         pixels=_pixels([imgs[0] for imgs in images], o.pixel_size).to(device))
        return batch


def _right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


def _pixels(images, side: int) -> torch.Tensor:
    """[B, 3, side, side] in [-1, 1]: each image resized to a square (the grid covers the whole image)."""
    import numpy as np

    arrays = [np.asarray(image.convert("RGB").resize((side, side)), dtype=np.float32) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1
