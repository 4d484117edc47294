"""The papers' *trained* baselines as ``harness train`` recipes: ``cot`` and ``mm-cot`` (see
``methods/baselines_README.md`` for the mapping to the papers).

- ``cot`` (L2V-CoT's "Finetuned CoT", LaRe's "Standard CoT" row): supervised fine-tuning, LoRA on the
  language model, on ``prompt → "{rationale}\\nThe answer is (X)."`` (open questions: ``The answer is X.``).
- ``mm-cot`` (Zhang et al. 2023, LaRe's "MM-CoT" row): two generators, as the paper's two models: LoRA
  adapter ``rationale`` (stage-1 prompt → the gold rationale) and LoRA adapter ``answer`` (stage-2 prompt
  holding ``Rationale: {gold rationale}`` → ``The answer is (X).``), in one checkpoint folder, trained
  one after the other (``--stages rationale,answer``, ``--epochs-per-stage`` each).

The prompts are not written here: they are recorded by running the registered method's own ``run`` on
a recording stand-in for the backbone (``harness.backbones.base.PromptRecorder``), so training sees exactly what
``harness run --method cot|mm-cot`` sends. Labels cover the target and the EOS only. The loss is the
next-token cross-entropy over the prompt's prefill and the appended target (the path decoding takes).
``harness run --method cot|mm-cot --checkpoint DIR`` loads them (:func:`load_cot`, :func:`load_mm_cot`).
"""
from __future__ import annotations

import dataclasses
import re
from abc import abstractmethod

import torch
from torch import nn

from harness.api import Recipe, register_trainer
from harness.api.recipe import Schedule
from harness.latent.train import right_padded

BENCHES = ("m3cot", "scienceqa", "easyvqa")  # the readers whose examples carry a rationale
ADAPTERS = ("rationale", "answer")  # mm-cot's two generators, in training (and inference) order
# The method options that shape the prompts: a checkpoint records them, `harness run` must use the same.
PROMPT_OPTIONS = {"cot": ("instruction", "open_instruction"),
                  "mm-cot": ("rationale_instruction", "answer_instruction", "open_answer_instruction")}
_LETTER = re.compile(r"[A-Z]")


# -- targets and prompts ---------------------------------------------------------------------------
def multiple_choice(example) -> bool:
    """Whether ``example`` is asked as multiple choice at evaluation (the method's prompt and the
    answer's form depend on it): it has options (the readers copy the benchmark's)."""
    return bool(example.choices)


def answer_line(answer: str, mc: bool) -> str:
    """What the method's instruction asks the model to finish with, and what the scorers read after
    "answer is" (``final_answer_segment``): the letter in parentheses, or the open answer itself."""
    if mc and not _LETTER.fullmatch(answer.strip()):
        raise ValueError(f"multiple-choice training example with answer {answer!r}, not an option letter; "
                         "check the --bench reader and --split")
    return f"The answer is ({answer.strip()})." if mc else f"The answer is {answer.strip()}."


def recorded_prompts(method_name: str, examples: list) -> list[list[str]]:
    """The prompts the registered method (default options) sends for ``examples``, one list per
    generation stage; a stage-1 generation "returns" the example's gold rationale (mm-cot's stage 2
    prompt holds it)."""
    from harness.api import METHODS, Query
    from harness.backbones.base import PromptRecorder

    # As the runner builds them from the benchmark's sample.
    queries = [Query(images=[], question=ex.question, choices=list(ex.choices), stem=ex.stem) for ex in examples]
    recorder = PromptRecorder([ex.rationale.strip() for ex in examples])
    METHODS.get(method_name)().run(recorder, queries)
    return recorder.prompts


def prompt_options(method_name: str) -> dict:
    from harness.api import METHODS

    defaults = METHODS.get(method_name).Options()
    return {k: getattr(defaults, k) for k in PROMPT_OPTIONS[method_name]}


@dataclasses.dataclass
class SFTItem:
    uid: str
    prompt: str
    image_refs: list
    target: str
    adapter: str | None = None  # mm-cot: which generator this item trains


# -- model -----------------------------------------------------------------------------------------
class SFTModel(nn.Module):
    """``forward(**batch) -> {"ce": loss}``: prefill the prompt (images included), append the target's
    embeddings through the KV cache, next-token cross-entropy on the labelled target positions only."""

    def __init__(self, backbone, peft_model=None):
        super().__init__()
        self.model = backbone.model  # registered: its (LoRA) parameters are what the optimizer trains
        self.backbone = backbone  # plain attribute: the interface the forward speaks to
        # mm-cot: switches the active adapter per batch. Kept out of the registered submodules: it wraps
        # the same model, whose parameters must be named once (``model.``) for frozen() and the optimizer.
        object.__setattr__(self, "peft_model", peft_model)

    def forward(self, inputs, target_ids: torch.Tensor, target_mask: torch.Tensor, labels: torch.Tensor,
                adapter: str | None = None):
        backbone = self.backbone
        if adapter is not None:
            use_adapter(self.peft_model, adapter)
        state, _ = backbone.prefill(inputs, grad=True)
        first_logits = state.logits  # at the last prompt position: predicts the first target token
        result = backbone.append(state, backbone.embed_tokens(target_ids), mask=target_mask, grad=True)
        logits = torch.cat([first_logits[:, None], result.logits[:, :-1]], dim=1).float()
        return {"ce": nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                  ignore_index=-100)}


def use_adapter(peft_model, name: str | None) -> None:
    """Make adapter ``name`` the active one; None: no adapter (the base model's weights)."""
    if name is None:
        peft_model.base_model.disable_adapter_layers()
        return
    peft_model.base_model.enable_adapter_layers()
    if peft_model.active_adapter != name:
        peft_model.set_adapter(name)


def attach_adapters(backbone, settings, names: tuple[str, ...]):
    """LoRA adapters ``names`` (same settings) on the language model, in place; the first is active.
    Everything else is frozen (the vision tower included: the targets are the language model's)."""
    from peft import LoraConfig, get_peft_model

    from harness.latent.adapters import lora_target_names

    targets = lora_target_names(backbone, settings.targets)  # before injection turns them into LoRA layers

    def config():
        return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                          target_modules=targets)

    peft_model = get_peft_model(backbone.model, config(), adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config())
    return peft_model


def adapter_tensors(model, name: str | None = None) -> dict[str, torch.Tensor]:
    """The LoRA tensors (of adapter ``name``; None: all) under the model's own parameter names."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()
            if "lora_" in k and (name is None or f".{name}." in k)}


def _load_adapter(model, state: dict, name: str | None, folder) -> None:
    expected = set(adapter_tensors(model, name))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"checkpoint {folder}: the {name or 'LoRA'} adapter does not fit this model "
                         f"({len(missing)} tensors missing, e.g. {missing[:1]}; {len(unexpected)} unexpected, "
                         f"e.g. {unexpected[:1]}); pass the base model it was trained from")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes of another width
        raise ValueError(f"checkpoint {folder}: the {name or 'LoRA'} adapter does not fit this model: "
                         f"{str(exc).splitlines()[0]}; pass the base model it was trained from") from None


# -- recipes ---------------------------------------------------------------------------------------
class _SFTRecipe(Recipe):
    benches = BENCHES
    # IVT-LR's published optimisation (none of the baselines' papers gives its own): global batch 64
    # (4 per device x 16 accumulation steps), lr 4e-5, weight decay 0.01, clip 0.7; LoRA r 64, alpha 16.
    train_defaults = {"batch_size": 4, "grad_accum": 16, "lr": 4e-5, "weight_decay": 0.01, "max_grad_norm": 0.7}
    method_name = ""

    def __init__(self, config):
        super().__init__(config)
        if self.options.epochs_per_stage < 1:
            raise ValueError(f"--epochs-per-stage must be at least 1, got {self.options.epochs_per_stage}")
        self.backbone = None

    def lora_settings(self):
        from harness.latent.adapters import LoraSettings

        return LoraSettings.from_config(self.config)

    def _mcs(self, examples) -> list[bool]:
        return [multiple_choice(ex) for ex in examples]

    def target_ids(self, text: str) -> list[int]:
        """The target's tokens, then EOS (generation stops there at evaluation)."""
        backbone = self.backbone
        tokenizer = backbone.tokenizer
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id in backbone.eos_token_ids else backbone.eos_token_ids[0]
        return tokenizer.encode(text, add_special_tokens=False) + [eos]

    def collate(self, items: list[SFTItem]) -> dict:
        from harness.api.types import decode_image

        backbone = self.backbone
        adapters = {item.adapter for item in items}
        if len(adapters) != 1:  # one stage per epoch: cannot happen unless epoch_items mixes them
            raise ValueError(f"a batch mixes adapters {sorted(map(str, adapters))}")
        # Images as evaluation feeds them (decoded, not resized), through the same build_inputs.
        inputs = backbone.build_inputs([[decode_image(r) for r in item.image_refs] for item in items],
                                       [item.prompt for item in items])
        target_ids, target_mask = right_padded([self.target_ids(item.target) for item in items],
                                               backbone.pad_token_id)
        labels = target_ids.masked_fill(target_mask == 0, -100)
        device = backbone.device
        batch = {"inputs": inputs, "target_ids": target_ids.to(device), "target_mask": target_mask.to(device),
                 "labels": labels.to(device)}
        adapter = adapters.pop()
        if adapter is not None:
            batch["adapter"] = adapter
        return batch

    def checkpoint_config(self) -> dict:
        return {"recipe": self.name, "lora": self.lora_settings().to_dict(),
                "prompt_options": prompt_options(self.method_name)}

    def restore(self, module, folder) -> None:
        from harness.latent.checkpoint import load_tensors

        for stem, name in self._files().items():
            _load_adapter(module.model, load_tensors(folder, stem), name, folder)

    def checkpoint_tensors(self, module) -> dict[str, dict]:
        return {stem: adapter_tensors(module.model, name) for stem, name in self._files().items()}

    @abstractmethod
    def _files(self) -> dict[str, str | None]:
        """{checkpoint file stem: adapter name (None: the only one)}."""


@register_trainer("cot")
class CoTRecipe(_SFTRecipe):
    """SFT on rationale + answer: one LoRA adapter, merged into the weights at ``harness run``."""

    method_name = "cot"

    @dataclasses.dataclass
    class Options:
        epochs_per_stage: int = 4  # IVT-LR's epochs per stage (one stage here); --epochs also sets it

    def schedule(self) -> Schedule:
        return Schedule((self.options.epochs_per_stage,))

    def setup(self, backbone):
        from harness.latent.adapters import attach_lora

        self.backbone = backbone
        attach_lora(backbone, self.lora_settings())  # freezes everything but LoRA (vision tower included)
        return SFTModel(backbone)

    def _files(self):
        return {"adapter": None}

    def epoch_items(self, examples, stage: int) -> list[SFTItem]:
        mcs = self._mcs(examples)
        (prompts,) = recorded_prompts("cot", examples)
        return [SFTItem(uid=ex.uid, prompt=p, image_refs=ex.image_refs,
                        target=f"{ex.rationale.strip()}\n{answer_line(ex.answer, mc)}")
                for ex, p, mc in zip(examples, prompts, mcs)]


@register_trainer("mm-cot")
class MMCoTRecipe(_SFTRecipe):
    """MM-CoT's two generators as two LoRA adapters of one backbone, trained one after the other; at
    ``harness run`` the method makes ``rationale`` active for stage 1 and ``answer`` for stage 2."""

    method_name = "mm-cot"

    @dataclasses.dataclass
    class Options:
        stages: str = "rationale,answer"  # the generators to train, in order (one of them: an ablation)
        epochs_per_stage: int = 4  # epochs of each generator

    def __init__(self, config):
        super().__init__(config)
        stages = tuple(s.strip() for s in self.options.stages.split(",") if s.strip())
        if not stages or list(stages) != sorted(set(stages) & set(ADAPTERS), key=ADAPTERS.index):
            raise ValueError(f"mm-cot: --stages takes rationale, answer or rationale,answer (in this order); "
                             f"got {self.options.stages!r}")
        self.stages = stages
        total = self.options.epochs_per_stage * len(stages)
        if config.epochs is not None and config.epochs != total:
            # --epochs would cut or stretch the stages silently (2 epochs of 4+4 train only the rationale)
            raise ValueError(f"mm-cot trains its generators one after the other: pass --epochs-per-stage N "
                             f"(epochs of each), not --epochs {config.epochs}")
        self.peft_model = None

    def schedule(self) -> Schedule:
        return Schedule((self.options.epochs_per_stage,) * len(self.stages))

    def adapter_of(self, stage: int) -> str:
        return self.stages[min(stage, len(self.stages) - 1)]

    def setup(self, backbone):
        self.backbone = backbone
        self.peft_model = attach_adapters(backbone, self.lora_settings(), self.stages)
        return SFTModel(backbone, self.peft_model)

    def param_groups(self, module) -> list[dict]:
        # Every adapter's tensors (peft leaves only the active one trainable); frozen() picks per stage.
        params = [p for n, p in module.named_parameters() if "lora_" in n]
        for p in params:
            p.requires_grad_(True)
        return [{"params": params}]

    def frozen(self, stage: int) -> tuple[str, ...]:
        active = self.adapter_of(stage)
        return tuple(n for n, _p in self._named_lora() if f".{active}." not in n)

    def _named_lora(self):
        return [(f"model.{n}", p) for n, p in self.backbone.model.named_parameters() if "lora_" in n]

    def _files(self):
        return {f"adapter-{name}": name for name in self.stages}

    def checkpoint_config(self) -> dict:
        return {**super().checkpoint_config(), "adapters": list(self.stages)}

    def epoch_items(self, examples, stage: int) -> list[SFTItem]:
        mcs = self._mcs(examples)
        stage1, stage2 = recorded_prompts("mm-cot", examples)
        adapter = self.adapter_of(stage)
        if adapter == "rationale":
            return [SFTItem(uid=ex.uid, prompt=p, image_refs=ex.image_refs, target=ex.rationale.strip(),
                            adapter=adapter) for ex, p in zip(examples, stage1)]
        return [SFTItem(uid=ex.uid, prompt=p, image_refs=ex.image_refs, target=answer_line(ex.answer, mc),
                        adapter=adapter) for ex, p, mc in zip(examples, stage2, mcs)]


# -- loading at `harness run` ----------------------------------------------------------------------
def check_checkpoint(path: str, recipe: str) -> dict:
    """A ``harness train --method recipe`` folder's config, or a one-line error (before any model loads)."""
    from harness.latent.checkpoint import recipe_config

    return recipe_config(path, recipe, f"a {recipe} checkpoint")


def _check_prompts(config: dict, options, folder) -> None:
    for key, trained in config["prompt_options"].items():
        ours = getattr(options, key)
        if ours != trained:
            raise ValueError(f"checkpoint {folder} was trained with {key}={trained!r} but this run uses {ours!r}; "
                             f"pass --{key.replace('_', '-')} with the trained text (or train again)")


def load_cot(backbone, options) -> None:
    """Merge a ``harness train --method cot`` adapter into the backbone (inference at the base model's cost)."""
    from harness.latent.adapters import LoraSettings, merge_adapter
    from harness.latent.checkpoint import check_base, load_tensors

    folder = options.checkpoint
    config = check_checkpoint(folder, "cot")
    check_base(backbone, config, folder, options.allow_base_mismatch)
    _check_prompts(config, options, folder)
    try:
        merge_adapter(backbone, LoraSettings.from_dict(config["lora"]), load_tensors(folder, "adapter"))
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"checkpoint {folder} does not fit {backbone.model_id}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; pass the base model "
                         "it was trained from") from None


def load_mm_cot(backbone, options):
    """Attach a ``harness train --method mm-cot`` folder's adapters (unmerged: the method switches
    between them per stage). Returns ``(peft model, trained adapter names)``."""
    import logging

    from harness.latent.adapters import LoraSettings
    from harness.latent.checkpoint import check_base, load_tensors

    folder = options.checkpoint
    config = check_checkpoint(folder, "mm-cot")
    check_base(backbone, config, folder, options.allow_base_mismatch)
    _check_prompts(config, options, folder)
    names = tuple(config["adapters"])
    peft_model = attach_adapters(backbone, LoraSettings.from_dict(config["lora"]), names)
    for name in names:
        _load_adapter(backbone.model, load_tensors(folder, f"adapter-{name}"), name, folder)
    for name in set(ADAPTERS) - set(names):
        logging.getLogger("harness").warning("mm-cot checkpoint %s has no %s adapter: that stage runs on the "
                                             "base model", folder, name)
    backbone.model.eval()
    return peft_model, names
