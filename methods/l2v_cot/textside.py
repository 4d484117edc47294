"""The text side, scored with lm-evaluation-harness: does the source LLM reason better, and does the
injection harm the VLM's language ability?

:class:`HarnessLM` is an ``lm_eval.api.model.LM`` over a :class:`TextGenerator`: a VLM's language side
through the backbone (text-only chat, ``backbone.generate``) or a plain causal LM, either one with the
L2V-CoT injection active (the same :func:`inject.steering` hooks the ``l2v-cot`` method uses) or not.
Only ``generate_until`` tasks are supported (greedy, stop strings applied to the decoded text); the
context lm-eval builds is sent as the user turn of the model's chat template.

Tasks: the YAMLs under ``tasks/`` (``l2v_arith``, ``l2v_arith_cot``: tiny local word problems) are
indexed with ``TaskManager(include_path=tasks/)`` and handed to ``simple_evaluate`` as their full
config with ``data_files`` (relative to that folder in the YAML) made absolute, so nothing depends on
the working directory and nothing is downloaded. Any other name is looked up in lm-eval's own task
index (e.g. ``gsm8k``, which needs its data in the local datasets cache when offline).
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger("harness")

TASKS_DIR = Path(__file__).parent / "tasks"
DEFAULT_TASKS = ("l2v_arith",)


@dataclass
class Steer:
    """An injection to apply while generating: unit ``direction`` at ``layer`` with strength ``alpha``."""

    direction: object  # torch.Tensor [D]
    layer: int
    alpha: float
    steer: str = "first"  # which positions (inject.STEER)


class TextGenerator(ABC):
    """Greedy text generation from user-turn texts, optionally steered."""

    name: str = ""

    def __init__(self, steer: Steer | None = None):
        self.steer = steer

    def _steering(self):
        import contextlib

        from .inject import steering

        if self.steer is None:
            return contextlib.nullcontext()
        decoder, layers = self.decoder()
        return steering(decoder, layers, {self.steer.layer: self.steer.direction}, self.steer.alpha,
                        self.steer.steer)

    def decoder(self):
        """(decoder module, its layers) for the injection hooks; only steered generators need it."""
        raise TypeError(f"{type(self).__name__} cannot be steered: it exposes no decoder layers")

    def generate(self, contexts: list[str], max_new_tokens: int) -> list[str]:
        with self._steering():
            return self._generate(contexts, max_new_tokens)

    @abstractmethod
    def _generate(self, contexts: list[str], max_new_tokens: int) -> list[str]: ...


class BackboneText(TextGenerator):
    """A VLM's language side: text-only chat through ``backbone.generate``."""

    def __init__(self, backbone, steer: Steer | None = None):
        super().__init__(steer)
        self.backbone = backbone
        self.name = backbone.model_id

    def decoder(self):
        return self.backbone.language_model, self.backbone.decoder_layers()

    @property
    def hidden_size(self) -> int:
        return self.backbone.hidden_size

    @property
    def depth(self) -> int:
        return len(self.backbone.decoder_layers())

    def _generate(self, contexts, max_new_tokens):
        results = self.backbone.generate([[] for _ in contexts], list(contexts), max_new_tokens)
        return [r.text for r in results]


class CausalLMText(TextGenerator):
    """A plain causal LM (the source LLM): its chat template, ``model.generate``."""

    def __init__(self, model, tokenizer, model_id: str, steer: Steer | None = None):
        from harness.backbones.text import causal_lm_chat

        super().__init__(steer)
        self.model, self.tokenizer, self.name = model, tokenizer, model_id
        self.chat = causal_lm_chat(tokenizer)

    def decoder(self):
        from harness.backbones.text import causal_lm_decoder

        return causal_lm_decoder(self.model)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def depth(self) -> int:
        return len(self.decoder()[1])

    def _generate(self, contexts, max_new_tokens):
        import torch

        batch = self.tokenizer([self.chat(c) for c in contexts], padding=True, add_special_tokens=False,
                               return_tensors="pt").to(self.model.device)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def cut_at_stops(text: str, until: list[str]) -> str:
    """The text before the earliest stop string (lm-eval's ``until``)."""
    cut = len(text)
    for stop in until:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def harness_lm_class():
    """The ``LM`` subclass, built on first use: importing lm_eval takes seconds."""
    from lm_eval.api.model import LM

    class HarnessLM(LM):
        def __init__(self, generator: TextGenerator, batch_size: int = 8, max_gen_toks: int = 256):
            super().__init__()
            self.generator, self.batch_size, self.max_gen_toks = generator, batch_size, max_gen_toks

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            outputs: list[str | None] = [None] * len(requests)
            groups: dict[tuple, list[int]] = {}
            for i, request in enumerate(requests):
                context, gen_kwargs = request.args
                gen_kwargs = dict(gen_kwargs or {})
                if gen_kwargs.get("do_sample") or gen_kwargs.get("temperature", 0) not in (0, 0.0, None):
                    raise ValueError("the L2V-CoT text side decodes greedily; this task asks for sampling")
                until = gen_kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                key = (int(gen_kwargs.get("max_gen_toks", self.max_gen_toks)), tuple(until))
                groups.setdefault(key, []).append(i)
            for (max_toks, until), indices in groups.items():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start:start + self.batch_size]
                    texts = self.generator.generate([requests[i].args[0] for i in chunk], max_toks)
                    for i, text in zip(chunk, texts):
                        outputs[i] = cut_at_stops(text, list(until))
            return outputs  # type: ignore[return-value]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("the L2V-CoT text side scores generate_until tasks only "
                                      "(greedy generation with and without the injection)")

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("the L2V-CoT text side scores generate_until tasks only")

    return HarnessLM


def task_specs(names: list[str]) -> tuple[list, bool]:
    """lm-eval task specs for ``names``: ours as overrides with absolute data paths, others by name.

    Returns (specs, needs lm-eval's built-in index)."""
    import yaml

    specs, builtin = [], False
    for name in names:
        path = TASKS_DIR / f"{name}.yaml"
        if not path.is_file():
            specs.append(name)
            builtin = True
            continue
        config = yaml.safe_load(path.read_text())
        files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        absolute = {split: str((TASKS_DIR / f).resolve()) for split, f in files.items()}
        for f in absolute.values():
            if not Path(f).is_file():
                raise FileNotFoundError(f"task {name}: data file {f} does not exist")
        # lm-eval does not merge a dict with the indexed YAML: pass the whole config.
        specs.append({**config, "dataset_kwargs": {**config.get("dataset_kwargs", {}), "data_files": absolute}})
    return specs, builtin


def evaluate(generator: TextGenerator, tasks: list[str], *, limit: int | None = None, batch_size: int = 8,
             max_gen_toks: int = 256, seed: int = 0) -> dict:
    """``lm_eval.simple_evaluate`` over ``tasks``; returns {task: {"metrics": {name: value}, "n": N}}."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    specs, builtin = task_specs(tasks)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=builtin)
    lm = harness_lm_class()(generator, batch_size=batch_size, max_gen_toks=max_gen_toks)
    results = lm_eval.simple_evaluate(model=lm, tasks=specs, task_manager=manager, limit=limit,
                                      log_samples=False, random_seed=seed, numpy_random_seed=seed,
                                      torch_random_seed=seed, fewshot_random_seed=seed)
    out = {}
    for task, values in results["results"].items():
        metrics = {k: float(v) for k, v in values.items()
                   if k not in ("alias", "sample_len") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        n = (results.get("n-samples") or {}).get(task, {}).get("effective")
        out[task] = {"metrics": metrics, "n": n}
    return out


def metric_rows(scores: dict, *, model: str, steered: bool, vector_sha: str | None, vector_path: str | None,
                alpha: float | None, layer: int | None, config: dict) -> list[dict]:
    """Rows for ``Store.add_text_metrics`` (the stderr of each metric is kept in its row's config)."""
    rows = []
    for task, result in scores.items():
        for name, value in result["metrics"].items():
            if "_stderr" in name:
                continue
            stderr_name = name.replace(",", "_stderr,", 1) if "," in name else f"{name}_stderr"
            rows.append({"vector_sha": vector_sha, "vector_path": vector_path, "model": model, "steered": steered,
                         "alpha": alpha, "layer": layer, "task": task, "metric": name, "value": value,
                         "n": result["n"], "config": {**config, "stderr": result["metrics"].get(stderr_name)}})
    return rows


def is_vlm(model_id: str) -> bool:
    """Whether ``model_id`` is a VLM one of the backbone families loads (else: a plain causal LM)."""
    from transformers import AutoConfig

    from harness.backbones.families import FAMILY_CLASSES

    config = AutoConfig.from_pretrained(model_id)
    return config.model_type in {t for cls in FAMILY_CLASSES for t in cls.model_types}


def load_generator(model_id: str, *, device: str = "auto", dtype: str = "auto") -> TextGenerator:
    if is_vlm(model_id):
        from harness.backbones import load_backbone

        return BackboneText(load_backbone(model_id, device=device, dtype=dtype))
    from harness.backbones.text import load_causal_lm

    model, tokenizer = load_causal_lm(model_id, device=device, dtype=dtype)
    return CausalLMText(model, tokenizer, model_id)


def run_textside(model_id: str, tasks: list[str], *, vector: str | None = None, alpha: float = 0.5,
                 layer: str = "auto", source_layer: int = -1, cutoff: int = 200, resample: str = "lmn",
                 steer: str = "first", limit: int | None = None, batch_size: int = 8,
                 max_gen_toks: int = 256, device: str = "auto", dtype: str = "auto",
                 progress: Callable[[str], None] = print) -> list[dict]:
    """Score ``model_id`` unsteered, and steered with ``vector`` when given; the rows for
    ``Store.add_text_metrics`` (the command stores them: a method never writes to the store)."""
    from .method import resolve_layer, transferred_direction
    from harness.api.hashing import file_sha256

    from .vectors import load_directions

    vectors = sha = None
    if vector:
        vectors, sha = load_directions(vector), file_sha256(vector)
        source = vectors.pick_layer(None if source_layer < 0 else source_layer)
    generator = load_generator(model_id, device=device, dtype=dtype)
    common = {"tasks": list(tasks), "limit": limit, "cutoff": cutoff, "resample": resample, "steer": steer,
              "vector_source_model": vectors.metadata.get("model") if vectors else None}
    rows = []
    progress(f"scoring {model_id} unsteered on {', '.join(tasks)}")
    rows += metric_rows(evaluate(generator, tasks, limit=limit, batch_size=batch_size, max_gen_toks=max_gen_toks),
                        model=model_id, steered=False, vector_sha=sha, vector_path=vector, alpha=None, layer=None,
                        config=common)
    if vectors is not None:
        target = resolve_layer(layer, vectors, source, generator.depth)
        direction = transferred_direction(vectors, source, generator.hidden_size, cutoff, resample)
        generator.steer = Steer(direction, target, alpha, steer)
        progress(f"scoring {model_id} steered (alpha {alpha}, layer {target}) on {', '.join(tasks)}")
        rows += metric_rows(evaluate(generator, tasks, limit=limit, batch_size=batch_size,
                                     max_gen_toks=max_gen_toks),
                            model=model_id, steered=True, vector_sha=sha, vector_path=vector, alpha=alpha,
                            layer=target, config={**common, "source_layer": source})
    return rows
