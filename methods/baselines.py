"""The three explicit baselines: direct answer, standard CoT, and two-stage MM-CoT.

All three are plain prompting on the same backbone, so their accuracy and token cost are the
reference points for the latent methods. Prompts are data (class attributes), stored in the run's
config through ``Options``. ``cot`` and ``mm-cot`` also run the papers' *trained* baselines:
``--checkpoint DIR`` from ``harness train --method cot|mm-cot`` (:mod:`methods.baselines_train`,
imported only then). Imports ``harness.api`` only; declared in pyproject.toml's ``harness.methods`` group.
"""
from __future__ import annotations

import dataclasses
import re

from harness.api.types import MethodOutput, Query

from harness.api import Method, register_method

_ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)
# Trained-checkpoint options, left out of a run's stored config at these values, so runs stored
# before --checkpoint existed (every prompted cot / mm-cot run) keep their identity.
CHECKPOINT_DEFAULTS = {"checkpoint": "", "allow_base_mismatch": False}


class _Trained:
    """``--checkpoint DIR`` (a `harness train --method NAME` folder) for a prompted baseline: checked
    before the model loads, fingerprinted into the run's config, loaded in :meth:`prepare`."""

    _checkpoint_hash = ""

    def _check_checkpoint(self) -> None:
        if self.options.checkpoint:
            from .baselines_train import check_checkpoint

            check_checkpoint(self.options.checkpoint, self.name)  # one line, before any model loads

    def config(self) -> dict:
        config = super().config()
        for key, default in CHECKPOINT_DEFAULTS.items():
            if config[key] == default:
                del config[key]
        if self.options.checkpoint:
            from harness.latent.checkpoint import folder_fingerprint

            if not self._checkpoint_hash:
                self._checkpoint_hash = folder_fingerprint(self.options.checkpoint)
            config["checkpoint_sha256"] = self._checkpoint_hash
        return config


def final_answer_segment(text: str) -> str:
    """The text after the last "answer is", or the whole text when the model never says it.

    The benchmark's official rule then reads the option from this segment; cutting here keeps an
    option letter quoted in the reasoning ("(B) is wrong because...") from being taken as the answer.
    """
    matches = list(_ANSWER_IS.finditer(text))
    return text[matches[-1].end():].strip() if matches else text.strip()


@register_method("direct")
class DirectAnswer(Method):
    description = "non-CoT baseline: answer with the option letter directly"

    @dataclasses.dataclass
    class Options:
        max_new_tokens: int = 32
        instruction: str = "Answer with the option's letter from the given choices directly."
        open_instruction: str = "Answer the question using a single word or phrase."

    def prompt(self, query: Query) -> str:
        return f"{query.question}\n{self.options.instruction if query.choices else self.options.open_instruction}"

    def answer_of(self, text: str) -> str:
        return text.strip()

    def run(self, backbone, queries: list[Query]) -> list[MethodOutput]:
        results = backbone.generate(
            [q.images for q in queries], [self.prompt(q) for q in queries], self.options.max_new_tokens
        )
        return [
            MethodOutput(text=r.text, answer=self.answer_of(r.text), input_tokens=r.input_tokens,
                         generated_tokens=r.generated_tokens)
            for r in results
        ]


@register_method("cot")
class StandardCoT(_Trained, DirectAnswer):
    """Same single generation as ``direct``; only the instruction and where the answer is read differ.
    With ``--checkpoint``: the SFT'd model (L2V-CoT's "Finetuned CoT"), its LoRA adapter merged."""

    description = ("standard chain of thought: think step by step, then 'The answer is (X)'; "
                   "--checkpoint DIR: trained by `harness train --method cot`")

    @dataclasses.dataclass
    class Options:
        max_new_tokens: int = 512
        instruction: str = (
            "Let's think step by step. Finish with one line of the form \"The answer is (X)\", "
            "where X is the option's letter."
        )
        open_instruction: str = (
            "Let's think step by step. Finish with one line of the form \"The answer is ...\"."
        )
        checkpoint: str = ""  # "" = prompting only; a `harness train --method cot` folder
        allow_base_mismatch: bool = False  # load it onto a base model other than the one it was trained on

    def __init__(self, **options):
        super().__init__(**options)
        self._check_checkpoint()

    def prepare(self, backbone) -> None:
        if self.options.checkpoint:
            from .baselines_train import load_cot

            load_cot(backbone, self.options)

    def answer_of(self, text: str) -> str:
        return final_answer_segment(text)


@register_method("mm-cot")
class MultimodalCoT(_Trained, Method):
    """MM-CoT (Zhang et al. 2023) as re-implemented on one VLM: rationale first, then the answer.

    Stage 1 generates a rationale from the image and question; stage 2 reads the same input with
    the rationale appended and generates the answer. Generated tokens count both stages; input
    tokens are the stage-1 prompt (the stage-2 prompt re-reads it plus the rationale). With
    ``--checkpoint`` (``harness train --method mm-cot``) the paper's two trained generators: the
    ``rationale`` LoRA adapter is active in stage 1, the ``answer`` adapter in stage 2.
    """

    description = "two-stage multimodal CoT: generate a rationale, then answer conditioned on it"

    @dataclasses.dataclass
    class Options:
        max_new_tokens: int = 512  # rationale budget
        answer_max_new_tokens: int = 32
        rationale_instruction: str = (
            "Explain step by step the reasoning that leads to the answer. Do not state the final answer."
        )
        answer_instruction: str = (
            "Given the rationale, answer with one line of the form \"The answer is (X)\", "
            "where X is the option's letter."
        )
        open_answer_instruction: str = "Given the rationale, answer in the form \"The answer is ...\"."
        checkpoint: str = ""  # "" = prompting only; a `harness train --method mm-cot` folder
        allow_base_mismatch: bool = False  # load it onto a base model other than the one it was trained on

    def __init__(self, **options):
        super().__init__(**options)
        self._check_checkpoint()
        self._adapters = None  # (peft model, trained adapter names) once a checkpoint is attached

    def prepare(self, backbone) -> None:
        if self.options.checkpoint:
            from .baselines_train import load_mm_cot

            self._adapters = load_mm_cot(backbone, self.options)

    def _stage(self, name: str) -> None:
        """Make generator ``name`` (``rationale`` | ``answer``) active; one the checkpoint lacks: the base model."""
        if self._adapters is not None:
            from .baselines_train import use_adapter

            peft_model, trained = self._adapters
            use_adapter(peft_model, name if name in trained else None)

    def run(self, backbone, queries: list[Query]) -> list[MethodOutput]:
        images = [q.images for q in queries]
        self._stage("rationale")
        stage1 = backbone.generate(
            images, [f"{q.question}\n{self.options.rationale_instruction}" for q in queries],
            self.options.max_new_tokens,
        )
        prompts = [
            f"{q.question}\nRationale: {r.text.strip()}\n"
            f"{self.options.answer_instruction if q.choices else self.options.open_answer_instruction}"
            for q, r in zip(queries, stage1)
        ]
        self._stage("answer")
        stage2 = backbone.generate(images, prompts, self.options.answer_max_new_tokens)
        return [
            MethodOutput(
                text=f"{r1.text.strip()}\n{r2.text.strip()}",
                answer=final_answer_segment(r2.text),
                input_tokens=r1.input_tokens,
                generated_tokens=r1.generated_tokens + r2.generated_tokens,
                extra={"rationale": r1.text.strip(), "stage2_input_tokens": r2.input_tokens},
            )
            for r1, r2 in zip(stage1, stage2)
        ]
