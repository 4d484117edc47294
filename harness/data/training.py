"""The built-in training data readers (registered in ``harness.data.readers.READERS`` through the
``harness.readers`` entry points): question (formatted as the benchmark formats it at evaluation), image
references (undecoded), rationale and gold answer letter.

- ``m3cot``: the train split of an M3CoT folder, through the ``m3cot`` benchmark's own loader
  (``save_to_disk`` folder, parquet or jsonl; ``harness fixtures`` writes a ``train`` split).
- ``easyvqa``: easy-VQA's questions with the benchmark's three-sentence rationales (answer: the word).
- ``scienceqa``: ScienceQA's original release (prompt: VLMEvalKit's MCQ text, as evaluated): ``problems.json`` (pid → question, choices, answer
  index, hint, image, lecture, solution, split) and ``images/<split>/<pid>/<image>``; the image
  subset (what VLM papers train on), rationale = ``solution``.

Rows without an image are skipped (IVT-LR selects image patches; the published code filters them too).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from harness.api import BENCHMARKS, DataError, Sample
from harness.data.readers import TrainExample, register_reader

log = logging.getLogger("harness")


def vlmeval_mcq_prompt(sample: Sample) -> str:
    """The text of VLMEvalKit's ``ImageMCQDataset.build_prompt`` (what ``harness run --bench scienceqa``
    feeds the method), rebuilt here because importing ``vlmeval`` switches autograd off globally."""
    prompt = f"Hint: {sample.context}\n" if sample.context else ""
    prompt += f"Question: {sample.question}\n"
    if sample.choices:
        prompt += "Options:\n" + "".join(f"{chr(65 + i)}. {c}\n" for i, c in enumerate(sample.choices))
        prompt += "Please select the correct answer from the options above. \n"
    return prompt


@register_reader("m3cot")
def read_m3cot(data: str, split: str) -> list[TrainExample]:
    benchmark = BENCHMARKS.get("m3cot")(data, split)
    examples, skipped = [], 0
    for position in range(len(benchmark)):
        sample = benchmark.sample(position)
        rationale = (sample.meta.get("rationale") or "").strip()
        if not sample.image_refs or not rationale:
            skipped += 1
            continue
        examples.append(TrainExample(uid=sample.uid, question=benchmark.format_question(sample), rationale=rationale,
                                     answer=sample.gold, image_refs=sample.image_refs, stem=sample.question,
                                     choices=list(sample.choices)))
    if skipped:
        log.info("m3cot %s: skipped %d rows without an image or a rationale", split, skipped)
    return examples


@register_reader("scienceqa")
def read_scienceqa(data: str, split: str) -> list[TrainExample]:
    root = Path(data).expanduser()
    problems_path = root / "problems.json" if root.is_dir() else root
    if not problems_path.is_file():
        raise DataError(f"ScienceQA data not found: expected {problems_path} (the original release's problems.json "
                        "beside an images/ folder)")
    try:
        problems = json.loads(problems_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"ScienceQA {problems_path} is not valid JSON ({exc})") from None
    folder = problems_path.parent
    examples = []
    for pid, p in problems.items():
        if p.get("split") != split or not p.get("image"):
            continue
        image = folder / "images" / split / str(pid) / p["image"]
        if not image.is_file():
            raise DataError(f"ScienceQA image missing: {image} (expected images/<split>/<pid>/<image>)")
        letters = "ABCDEFGHIJ"
        sample = Sample(uid=str(pid), question=p["question"], gold=letters[int(p["answer"])], choices=list(p["choices"]),
                        image_refs=[str(image)], context=p.get("hint") or "", category=p.get("subject", ""))
        rationale = (p.get("solution") or "").strip()
        if rationale:
            examples.append(TrainExample(uid=sample.uid, question=vlmeval_mcq_prompt(sample),
                                         rationale=rationale, answer=sample.gold, image_refs=sample.image_refs,
                                         stem=sample.question, choices=list(sample.choices)))
    return examples


@register_reader("easyvqa")
def read_easyvqa(data: str | None, split: str) -> list[TrainExample]:
    """easy-VQA's questions (open, as ``harness run --bench easyvqa`` asks them) with their three-sentence
    rationales; ``split`` ``train`` or ``test``, ``test_mc`` for the multiple-choice form (answer: letter)."""
    benchmark = BENCHMARKS.get("easyvqa")(data or None, split)
    return [TrainExample(uid=s.uid, question=benchmark.format_question(s), rationale=s.meta["rationale"],
                         answer=s.gold, image_refs=s.image_refs, stem=s.question, choices=list(s.choices))
            for s in map(benchmark.sample, range(len(benchmark)))]


@register_reader("llava")
def read_llava(data: str | None, split: str) -> list[TrainExample]:
    """LLaVA's conversation JSON (the ``blip_laion_cc_sbu_558k.json`` / ``llava_v1_5_mix665k.json``
    layout): ``[{"id", "image": relative path, "conversations": [{"from": "human", "value": "<image>\\n..."},
    {"from": "gpt", "value": ...}, ...]}]``; images resolve from the JSON's folder (or its ``images/``).
    Each human/gpt turn pair is one example (question: the human turn without ``<image>``; answer and
    rationale: the gpt turn, the explicit text the latents learn from). ``split`` is ignored (one file
    is one split); entries without an image are skipped."""
    if not data:
        raise DataError("--bench llava needs --data FILE.json (LLaVA's conversation JSON)")
    path = Path(data)
    if not path.is_file():
        raise DataError(f"--data {data}: no such file; pass LLaVA's conversation JSON")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"--data {data} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise DataError(f"--data {data}: expected a JSON list of conversations")
    examples, skipped = [], 0
    for n, row in enumerate(rows):
        image = row.get("image") if isinstance(row, dict) else None
        turns = row.get("conversations", []) if isinstance(row, dict) else []
        if not image or not isinstance(turns, list):
            skipped += 1
            continue
        candidates = [path.parent / image, path.parent / "images" / image]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DataError(f"--data {data}: entry {row.get('id', n)}'s image {image} is neither beside the JSON "
                            "nor under its images/ folder")
        pairs = [(turns[i], turns[i + 1]) for i in range(0, len(turns) - 1, 2)]
        for k, (human, gpt) in enumerate(pairs):
            if human.get("from") != "human" or gpt.get("from") != "gpt":
                raise DataError(f"--data {data}: entry {row.get('id', n)} turn {k}: expected a human then a gpt turn")
            question = str(human.get("value", "")).replace("<image>", "").strip()
            answer = str(gpt.get("value", "")).strip()
            examples.append(TrainExample(uid=f"{row.get('id', n)}-{k}", question=question, rationale=answer,
                                         answer=answer, image_refs=[str(found)], stem=question))
    if skipped:
        log.info("llava: skipped %d entries without an image", skipped)
    return examples
