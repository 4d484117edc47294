"""The three explicit baselines: direct answer, standard CoT, and two-stage MM-CoT.

All three are plain prompting on the same backbone, so their accuracy and token cost are the
reference points for the latent methods. Prompts are data (class attributes), stored in the run's
config through ``Options``. Imports ``harness.api`` only; declared in pyproject.toml's
``harness.methods`` group.
"""
from __future__ import annotations

import dataclasses
import re

from harness.api.types import MethodOutput, Query

from harness.api import Method, register_method

_ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)


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
class StandardCoT(DirectAnswer):
    """Same single generation as ``direct``; only the instruction and where the answer is read differ."""

    description = "standard chain of thought: think step by step, then 'The answer is (X)'"

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

    def answer_of(self, text: str) -> str:
        return final_answer_segment(text)


@register_method("mm-cot")
class MultimodalCoT(Method):
    """MM-CoT (Zhang et al. 2023) as re-implemented on one VLM: rationale first, then the answer.

    Stage 1 generates a rationale from the image and question; stage 2 reads the same input with
    the rationale appended and generates the answer. Generated tokens count both stages; input
    tokens are the stage-1 prompt (the stage-2 prompt re-reads it plus the rationale).
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

    def run(self, backbone, queries: list[Query]) -> list[MethodOutput]:
        images = [q.images for q in queries]
        stage1 = backbone.generate(
            images, [f"{q.question}\n{self.options.rationale_instruction}" for q in queries],
            self.options.max_new_tokens,
        )
        prompts = [
            f"{q.question}\nRationale: {r.text.strip()}\n"
            f"{self.options.answer_instruction if q.choices else self.options.open_answer_instruction}"
            for q, r in zip(queries, stage1)
        ]
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
