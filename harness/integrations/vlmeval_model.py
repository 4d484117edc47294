"""Every registered method as a VLMEvalKit model: run the harness's methods inside VLMEvalKit's own machinery.

``make_model(method="cot", model="Qwen/Qwen2-VL-2B-Instruct", max_new_tokens=256)`` returns a
``vlmeval.vlm.base.BaseModel`` that answers VLMEvalKit's messages with the method;
``register(models=[...])`` adds ``harness-<method>-<model name>`` entries to
``vlmeval.config.supported_VLM`` so ``infer_data_job`` and VLMEvalKit's ``run.py`` find them by name;
``python -m harness.integrations.vlmeval_model --models PATH -- --data MMStar --model harness-cot-NAME`` registers them and
hands the rest of the command line to VLMEvalKit's own entry point (``vlmeval.run.main``).

How a VLMEvalKit message becomes a :class:`harness.api.Query` (what a method answers):

- Prompts are VLMEvalKit's: ``use_custom_prompt`` is False, so VLMEvalKit builds each message with the
  dataset's own ``build_prompt``. The text parts, joined with newlines, are the query's question and
  the image paths (``dataset.dump_image``) are loaded with PIL. For MMStar this is exactly the text
  ``harness run --bench mmstar`` gives a method, so both produce the same predictions.
- Choices: methods pick their instruction by whether the query has options. VLMEvalKit's MCQ prompt
  lists them as ``Options:\\nA. ...\\nB. ...``; those lines are read back as the query's choices.
  Other prompts have none (open questions).
- The prediction is the method's final answer (``MethodOutput.answer``: what the harness scores);
  the full generated text is kept in ``extra_records["text"]`` (``prediction="text"`` swaps them).

``generate_inner`` returns ``{"prediction": ..., "extra_records": {...}}`` (token counts, latent steps,
seconds, method). VLMEvalKit 0.0.20's ``infer_data_job`` keeps it: when every record of a data set is
such a dict it writes the ``prediction`` column from them and adds an ``extra_records`` column to the
prediction file (``vlmeval/inference.py``, "Add for agent evaluation"); ``dataset.evaluate`` reads only
``prediction``. Runs made this way are VLMEvalKit's files, not rows in the harness's store.

The module is named ``harness.integrations.vlmeval_model``; it imports the real ``vlmeval`` absolutely, through
``harness.benchmarks.vlmeval_common.import_vlmeval`` (the one guard: it undoes VLMEvalKit's process-wide side effects).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("harness")

_MODELS_ENV = "HARNESS_VLMEVAL_MODELS"
_OPTION_LINE = re.compile(r"^([A-Z])\. (.*)$")


def _vlmeval():
    from harness.benchmarks.vlmeval_common import import_vlmeval

    return import_vlmeval()


def choices_from_prompt(text: str) -> list[str]:
    """The option texts of a VLMEvalKit MCQ prompt (``Options:`` then ``A. ...``, ``B. ...`` lines, in order)."""
    if "Options:\n" not in text:
        return []
    block = text.rsplit("Options:\n", 1)[1]
    choices = []
    for line in block.split("\n"):
        match = _OPTION_LINE.match(line)
        if not match or match.group(1) != chr(ord("A") + len(choices)):
            break
        choices.append(match.group(2))
    return choices


def message_to_query(message: list[dict]):
    """A VLMEvalKit message (``[{"type": "image"|"text", "value": path_or_text}, ...]``) as a Query."""
    from harness.api import Query, decode_image

    images, texts = [], []
    for part in message:
        kind, value = part.get("type"), part.get("value")
        if kind == "image":
            images.append(decode_image(value))  # a path VLMEvalKit's dump_image wrote
        elif kind == "text":
            texts.append(str(value))
        else:
            raise ValueError(f"harness methods read images and text only, not {kind!r} message parts")
    question = "\n".join(texts)
    return Query(images=images, question=question, choices=choices_from_prompt(question))


_MODEL_CLASS = None


def _model_class():
    """``HarnessModel(BaseModel)``, defined on first use (subclassing needs the slow ``import vlmeval``)."""
    global _MODEL_CLASS
    if _MODEL_CLASS is None:
        _vlmeval()
        from vlmeval.vlm.base import BaseModel

        class HarnessModel(BaseModel):
            """A harness method on a harness backbone, speaking VLMEvalKit's model interface."""

            INTERLEAVE = True  # takes any number of images with the text
            allowed_types = ["text", "image"]
            is_api = False

            def __init__(self, method, backbone, *, prediction: str = "answer"):
                super().__init__()
                if prediction not in ("answer", "text"):
                    raise ValueError(f"prediction must be 'answer' or 'text', not {prediction!r}")
                self.method, self.backbone, self.prediction = method, backbone, prediction

            def use_custom_prompt(self, dataset):
                return False  # VLMEvalKit's dataset.build_prompt builds every message

            def generate_inner(self, message, dataset=None):
                output = self.method(self.backbone, [message_to_query(message)])[0]
                records = {
                    "method": self.method.name, "model": self.backbone.model_id, "text": output.text,
                    "answer": output.answer, "input_tokens": output.input_tokens,
                    "generated_tokens": output.generated_tokens, "latent_steps": output.latent_steps,
                    "seconds": round(output.seconds, 6),
                }
                return {"prediction": output.answer if self.prediction == "answer" else output.text,
                        "extra_records": records}

        _MODEL_CLASS = HarnessModel
    return _MODEL_CLASS


def make_model(method: str, model: str, *, device: str = "auto", dtype: str = "auto", revision: str | None = None,
               prediction: str = "answer", seed: int = 0, use_vllm: bool = False, **method_options: Any):
    """A VLMEvalKit ``BaseModel`` running harness method ``method`` on backbone ``model``.

    ``method_options`` are the method's options (``harness list``), typed or as strings (as on the
    command line). ``use_vllm`` exists because VLMEvalKit passes it to models whose name contains
    "Qwen2-VL"; the harness runs models through transformers only.
    """
    if use_vllm:
        raise ValueError("harness methods run on transformers backbones, not vLLM: drop --use-vllm")
    from harness.run.plan import load, make_method

    runner = make_method(method, method_options)
    model_class = _model_class()  # import vlmeval before torch work: it reseeds torch (undone there)
    # The same load → prepare → seed as `harness run`, so both give the same predictions.
    backbone = load(runner, model, device=device, dtype=dtype, revision=revision, seed=seed)
    return model_class(runner, backbone, prediction=prediction)


def entry_name(method: str, model: str) -> str:
    """``harness-<method>-<last path component of the model>``, e.g. ``harness-cot-Qwen2-VL-2B-Instruct``."""
    return f"harness-{method}-{Path(model.rstrip('/')).name}"


def register(entries: dict[str, dict] | None = None, *, models: Iterable[str] | None = None,
             methods: Iterable[str] | None = None, **shared: Any) -> list[str]:
    """Add harness entries to ``vlmeval.config.supported_VLM``; returns their names.

    ``entries``: name → ``make_model`` keyword arguments (``{"method": ..., "model": ..., **options}``).
    ``models`` (default: ``$HARNESS_VLMEVAL_MODELS``, comma-separated): one entry per model and method
    (``methods``, default every registered method), named by :func:`entry_name`, with ``shared``
    keyword arguments (device, dtype, method options common to all). Entries are
    ``functools.partial(make_model, ...)``, as VLMEvalKit's own config is: nothing loads until used.
    """
    _vlmeval()
    from vlmeval.config import supported_VLM

    from harness.api import METHODS

    planned: dict[str, dict] = {}
    for name, kwargs in (entries or {}).items():
        if "method" not in kwargs or "model" not in kwargs:
            raise ValueError(f"entry {name!r} needs 'method' and 'model' (make_model's arguments)")
        METHODS.get(kwargs["method"])  # an unknown method fails now, with the list of valid ones
        planned[name] = dict(kwargs)
    if models is None and entries is None:
        models = [m.strip() for m in os.environ.get(_MODELS_ENV, "").split(",") if m.strip()]
    method_names = list(methods) if methods is not None else list(METHODS.names())
    for model in models or []:
        for method in method_names:
            METHODS.get(method)
            planned[entry_name(method, model)] = {"method": method, "model": model, **shared}
    if not planned:
        raise ValueError(f"nothing to register: pass entries or models (or set ${_MODELS_ENV}=PATH[,PATH...])")
    for name, kwargs in planned.items():
        existing = supported_VLM.get(name)
        if existing is not None and not (isinstance(existing, functools.partial) and existing.func is make_model):
            raise ValueError(f"VLMEvalKit already has a model named {name!r}; choose another entry name")
        supported_VLM[name] = functools.partial(make_model, **kwargs)
    return list(planned)


def local_dataset(tsv: str | os.PathLike, name: str):
    """VLMEvalKit's own dataset class for ``name`` (e.g. ``MMStar``), reading ``tsv`` instead of downloading.

    Everything else is VLMEvalKit's: ``build_prompt``, ``dump_image`` (images go under
    ``$LMUData/images/NAME``), ``evaluate``. For a subset or fixture in the official TSV format.
    """
    from harness.benchmarks.vlmeval_common import vlmeval_dataset_over_table

    path = Path(tsv)
    if not path.is_file():
        raise FileNotFoundError(f"no TSV at {path}: pass a file in VLMEvalKit's {name}.tsv format")
    cls, split = guarded_benchmark(name)
    # VLMEvalKit evaluates some cells as Python: it sees the table only after the harness's checks.
    return vlmeval_dataset_over_table(cls.vlmeval_class, name, cls(str(path), split).load_table(), dump_images=True)


def guarded_benchmark(name: str):
    """The harness benchmark class and split that own VLMEvalKit's data set ``name``, or ValueError."""
    from harness.api import BENCHMARKS

    for _, cls in BENCHMARKS.items():
        for split, vlmeval_name in (getattr(cls, "variants", None) or {}).items():
            if vlmeval_name == name:
                return cls, split
    raise ValueError(f"the harness checks the cells of {name!r} for code nowhere (VLMEvalKit evaluates some TSV "
                     "cells as Python); it runs VLMEvalKit on the data sets of its own benchmarks only: "
                     "see `harness list`")


def checked_table(path: str | os.PathLike, name: str):
    """``path`` read and checked as the harness benchmark for ``name`` reads it (nothing evaluated)."""
    cls, split = guarded_benchmark(name)
    return cls(str(path), split).load_table()


# -- `python -m harness.integrations.vlmeval_model`: VLMEvalKit's own entry point, with harness entries registered ------
def main(argv: list[str] | None = None) -> int:
    import argparse

    from harness.commands._common import key_values
    from harness.run.judge import add_judge_arguments, judge_from_args, vlmeval_judge_env

    argv = list(sys.argv[1:] if argv is None else argv)
    ours, theirs = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="python -m harness.integrations.vlmeval_model",
        description="Register harness methods as VLMEvalKit models, then run VLMEvalKit's run.py with the "
                    "arguments after `--` (e.g. -- --data MMStar --model harness-cot-Qwen2-VL-2B-Instruct).")
    parser.add_argument("--models", nargs="+", required=True, help="model paths or hub ids to register")
    parser.add_argument("--methods", help="comma-separated methods (default: all registered)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="a method option for all")
    add_judge_arguments(parser, "point VLMEvalKit's judge (--judge harness-judge) at this OpenAI-compatible API base")
    parser.add_argument("--list", action="store_true", help="print the entry names and exit")
    args = parser.parse_args(ours)
    options = key_values(args.opt)  # the same KEY=VALUE parsing as `harness run --opt`
    names = register(models=args.models, methods=args.methods.split(",") if args.methods else None,
                     device=args.device, dtype=args.dtype, **options)
    if args.list or not theirs:
        print("\n".join(names))
        return 0
    _check_data_files(theirs)
    judge = judge_from_args(args.judge_url, args.judge_model, args.judge_key_env)
    import contextlib

    from vlmeval import run as vlmeval_run

    context = vlmeval_judge_env(judge) if judge else contextlib.nullcontext({})
    with context as judge_kwargs:
        if judge is not None:
            judge.check()
            theirs = [*theirs, "--judge", judge_kwargs["model"]]
        sys.argv = ["vlmeval.run", *theirs]
        vlmeval_run.main()
    return 0


def _check_data_files(theirs: list[str]) -> None:
    """VLMEvalKit's run.py loads ``$LMUData/NAME.tsv`` with its own loader, which evaluates some cells:
    check each named data set's file as the harness would first (a missing file VLMEvalKit downloads)."""
    from harness.benchmarks.vlmeval_common import lmu_data_root

    names, taking = [], False
    for token in theirs:
        if token.startswith("--"):
            taking = token == "--data"
        elif taking:
            names.append(token)
    for name in names:
        guarded_benchmark(name)
        path = lmu_data_root() / f"{name}.tsv"
        if path.is_file():
            checked_table(path, name)


def _entry() -> int:
    from harness.api import DataError

    try:
        return main()
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"harness.integrations.vlmeval_model: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_entry())
