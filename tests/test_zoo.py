"""The model zoo: the committed models answer real easy-VQA test questions well, through the same path
as ``harness run``; a build trains on prompts equal to the evaluation prompts; a rebuild (slow)
reproduces the committed model."""
from __future__ import annotations

import json

import pytest

from harness.backbones import zoo_root
from harness.cli import main

NAMES = ("easyvqa-qwen2vl", "easyvqa-llava")
# What the committed models reach on the full test split (85.5 % and 84.7 %), less a margin: the issue's
# 90 % target is not met yet (yes/no stays at the 82.5 % of a shortcut, README); a better recipe raises this bar.
FLOOR = 0.83


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_model_is_small_and_records_how_it_was_built(name):
    folder = zoo_root() / name
    record = json.loads((folder / "zoo.json").read_text())
    assert record["name"] == name and record["command"].startswith(f"harness zoo build {name}")
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert 0 < weights <= 10 * 2**20, f"{name}: {weights / 2**20:.1f} MB of weights"
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt")), "safetensors only"
    direct = record["test"]["direct"]
    assert direct["n"] == 9673 and direct["accuracy"] >= FLOOR, "the recorded full-test accuracy"


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_model_answers_test_questions_it_never_saw(name, tmp_path, capsys):
    """A seeded subset of the test split, run by `harness run` and graded by the benchmark: above the
    67.0 % a model that reads only the question reaches (scripts/easyvqa_blind_baseline.py)."""
    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["run", "--method", "direct", "--bench", "easyvqa", "--split", "test", "--model", f"zoo:{name}",
                 "--limit", "200", "--batch-size", "50", "--db", db, "--json", "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["n"] == 200 and metrics["accuracy"] >= 75.0, metrics


def test_ivt_lr_trained_on_the_zoo_model_keeps_direct_accuracy_with_fewer_tokens_than_cot(tmp_path, capsys):
    """The committed IVT-LR checkpoint (the full curriculum on the zoo model, README) on 200 test
    questions: within 5 points of direct, and fewer generated tokens than explicit CoT."""
    db, zoo = f"sqlite:///{tmp_path / 'h.db'}", zoo_root()
    config = json.loads((zoo / "easyvqa-qwen2vl-ivt-lr" / "config.json").read_text())
    metrics = {}
    for method, extra in (("direct", []), ("cot", []),
                          ("ivt-lr", ["--checkpoint", str(zoo / "easyvqa-qwen2vl-ivt-lr"), "--image-size",
                                      str(config["image_size"]), "--top-k-patches", str(config["top_k_patches"])])):
        assert main(["run", "--method", method, "--bench", "easyvqa", "--split", "test", "--model",
                     "zoo:easyvqa-qwen2vl", "--limit", "200", "--batch-size", "50", "--db", db, "--json",
                     "--no-progress", "--max-new-tokens", "64", *extra]) == 0
        metrics[method] = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["ivt-lr"]["accuracy"] >= metrics["direct"]["accuracy"] - 5.0, metrics
    assert metrics["ivt-lr"]["mean_generated_tokens"] < metrics["cot"]["mean_generated_tokens"], metrics
    assert metrics["direct"]["accuracy"] >= 70.0


def test_lare_trained_on_the_zoo_model_is_far_above_chance_with_fewer_tokens_than_cot(tmp_path, capsys):
    """The committed LaRe checkpoint (all four stages on the LLaVA zoo model, methods/lare/README.md) on
    200 test questions: above the 67.0 % a question-only model reaches, within 6 points of direct, and
    fewer generated tokens than explicit CoT on the same model (the paper's two claims, on our ground)."""
    db, zoo = f"sqlite:///{tmp_path / 'h.db'}", zoo_root()
    metrics = {}
    for method, extra in (("direct", []), ("cot", []),
                          ("lare", ["--checkpoint", str(zoo / "easyvqa-llava-lare")])):
        assert main(["run", "--method", method, "--bench", "easyvqa", "--split", "test", "--model",
                     "zoo:easyvqa-llava", "--limit", "200", "--batch-size", "50", "--db", db, "--json",
                     "--no-progress", "--max-new-tokens", "64", *extra]) == 0
        metrics[method] = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["lare"]["accuracy"] >= 70.0, metrics
    assert metrics["lare"]["accuracy"] >= metrics["direct"]["accuracy"] - 6.0, metrics
    assert metrics["lare"]["mean_generated_tokens"] < metrics["cot"]["mean_generated_tokens"], metrics


def test_zoo_list_shows_what_is_built(capsys):
    assert main(["zoo", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(NAMES) <= set(rows)
    for name in NAMES:
        assert rows[name]["built"] and rows[name]["direct_accuracy"] >= FLOOR


def test_a_build_trains_on_the_evaluation_prompts_and_saves_a_loadable_model(tmp_path, capsys):
    """Two steps only: the mechanics (data, tokenizer, prompts equal to ``Backbone.build_inputs`` — the
    build checks that itself —, save, load through ``load_backbone``, evaluate, zoo.json)."""
    out = tmp_path / "m"
    assert main(["zoo", "build", "easyvqa-qwen2vl", "--out", str(out), "--steps", "2", "--eval-limit", "8"]) == 0
    record = json.loads((out / "zoo.json").read_text())
    assert record["steps"] == 2 and record["test"]["direct"]["n"] == 8
    assert record["command"] == "harness zoo build easyvqa-qwen2vl --seed 0 --threads 2 --steps 2"
    assert "direct" in capsys.readouterr().out
    assert main(["zoo", "build", "easyvqa-qwen2vl", "--out", str(out), "--steps", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_training_pools_split_yes_no_questions_by_the_attribute_they_name():
    """The pools a recipe's ``type_weights`` may name: the question type, and yes/no by attribute."""
    from harness.api import Sample
    from harness.zoo.build import auxiliary_targets, pools_of

    words = {"shape": {"circle", "triangle", "rectangle"}, "colour": {"red", "teal"}}

    def sample(question, category):
        return Sample(uid="0", question=question, gold="yes", category=category,
                      meta={"shape": "circle", "colour": "red"})

    assert pools_of(sample("is there not a teal shape?", "yes/no"), words) == {"yes/no", "yes/no about colour"}
    assert pools_of(sample("does the image contain a triangle?", "yes/no"), words) == {"yes/no", "yes/no about shape"}
    assert pools_of(sample("what color is the shape?", "colour"), words) == {"colour"}
    # the two auxiliary formats' targets (off in the committed recipes): the word named, the image's value
    assert auxiliary_targets(sample("is there not a teal shape?", "yes/no"), words) == ("teal", "red")
    assert auxiliary_targets(sample("is a triangle present?", "yes/no"), words) == ("triangle", "circle")


def test_image_word_matching_draws_shown_words_half_the_time():
    """``draw_matches``: a row is (question, word); half of the words are ones the question's image shows,
    the rest spread over the words it does not show (counted by hand from the decoded rows)."""
    import numpy as np

    from harness.api import Sample
    from harness.zoo.build import draw_matches

    vocabulary = ["circle", "rectangle", "triangle", "blue", "red", "teal"]
    samples = [Sample(uid=str(i), question="q", gold="yes", category="yes/no",
                      meta={"shape": ("circle", "triangle")[i % 2], "colour": ("red", "teal", "blue")[i % 3]})
               for i in range(7)]
    questions = [1, 2, 3, 4, 5, 6]  # position 0 is never drawn
    rows = draw_matches(np.random.default_rng(0), samples, questions, vocabulary, 6000)
    shown, others, drawn = 0, {}, set()
    for row in rows:
        rank, word = divmod(row, len(vocabulary))
        meta = samples[questions[rank]].meta
        drawn.add(questions[rank])
        if vocabulary[word] in (meta["shape"], meta["colour"]):
            shown += 1
        else:
            others[vocabulary[word]] = others.get(vocabulary[word], 0) + 1
    assert abs(shown / 6000 - 0.5) < 0.03 and drawn == set(questions)
    assert set(others) == set(vocabulary) and min(others.values()) > 300


def test_a_match_prompt_is_the_question_cut_after_the_word_it_names():
    from harness.zoo.build import match_prompt

    prompt = "Question: Is there not a red shape in the image?\nAnswer the question using a single word or phrase."
    assert match_prompt(prompt, "red", "circle") == "Question: Is there not a circle"
    assert match_prompt("Question: Does the image contain a Triangle?", "triangle", "teal") == \
        "Question: Does the image contain a teal"
    assert match_prompt("Question: is the shape reddish? is it red?", "red", "blue") == "Question: is the shape reddish? is it blue"
    with pytest.raises(ValueError, match="does not contain"):
        match_prompt("Question: what shape is it?", "red", "blue")


def test_an_image_word_matching_example_ends_at_the_word_and_answers_whether_the_image_shows_it():
    """The "match" format's tensors: the chat layout up to the user's text, a yes/no question's direct
    prompt cut after the word it names, now another word, then the target ("yes" if the image shows that
    word, else "no", and the end token) as the only labels."""
    from harness.api import BENCHMARKS
    from harness.zoo import build
    from harness.zoo.recipes import RECIPES

    bench = BENCHMARKS.get("easyvqa")(split="train")
    formats, samples = build.examples(bench, build.mc_options())
    vocabulary, questions = build.match_words(samples), build.match_questions(samples)
    assert len(formats["match"]) == len(questions) * len(vocabulary) == 28407 * 11  # every yes/no question names one
    rows = formats["match"][:3 * len(vocabulary)]
    for recipe in RECIPES:
        texts = [text for _, prompt, target in rows + formats["direct"][:50] for text in (prompt, target)]
        tokenizer, template = build.make_tokenizer(recipe.family, texts, 500)
        model, processor = build.make_model(recipe, tokenizer, template)
        backbone = build.wrap(model, build.reloaded(processor), recipe.family)
        tensors = build.Tensors(backbone, samples, {"match": rows})
        position = questions[2]
        meta, question = samples[position].meta, samples[position].question.lower()
        named = next(w for w in vocabulary if f" {w}" in f" {question}")
        for word in (meta["colour"], meta["shape"], next(w for w in vocabulary if w not in meta.values())):
            inputs, labels = tensors.batch("match", [2 * len(vocabulary) + vocabulary.index(word)])
            ids, on = inputs["input_ids"][0].tolist(), (labels[0] != -100).tolist()
            start = on.index(True)
            answer = "yes" if word in (meta["colour"], meta["shape"]) else "no"
            assert ids[start:] == tokenizer(answer)["input_ids"] + [tokenizer.eos_token_id]
            assert all(on[start:]) and not any(on[:start])
            head = backbone.chat_text(1, "\x00").split("\x00")[0]  # the chat layout up to the user's text
            cut = question[:question.index(named)].strip()
            prompt = tokenizer.decode(ids[:start])
            assert prompt.endswith(f"{head[-6:]}Question: {cut} {word}")


def test_init_std_redraws_the_language_model_alone_and_leaves_the_random_stream_as_it_was():
    """``text["init_std"]`` (off in the recipes): every Linear and Embedding weight of the language model is
    drawn anew with that standard deviation and its biases zeroed; the vision side keeps the library's
    draw, and the global generator is where it would have been without the option."""
    import dataclasses

    import torch

    from harness.zoo import build
    from harness.zoo.recipes import RECIPES

    texts = ["Question: is there a red shape?", "yes", "Question: what color is the shape?", "blue"]
    for recipe in RECIPES:
        tokenizer, template = build.make_tokenizer(recipe.family, texts, 300)
        made = {}
        for std in (None, 0.1):
            changed = dataclasses.replace(recipe, text={**recipe.text, "init_std": std})
            torch.manual_seed(0)
            model, _ = build.make_model(changed, tokenizer, template)
            made[std] = (dict(model.named_parameters()), torch.rand(3))
        (plain, after_plain), (redrawn, after_redrawn) = made[None], made[0.1]
        assert torch.equal(after_plain, after_redrawn)
        vision = [n for n in plain if any(key in n for key in build.VISION_KEYS)]
        assert vision and all(torch.equal(plain[n], redrawn[n]) for n in vision)
        q = next(n for n in redrawn if n.endswith("layers.0.self_attn.q_proj.weight") and n not in vision)
        for name in (q, q.replace("q_proj", "k_proj"), q.replace("self_attn.q_proj", "mlp.gate_proj"),
                     next(n for n in redrawn if n.endswith("embed_tokens.weight")), "lm_head.weight"):
            assert abs(redrawn[name].std().item() - 0.1) < 0.01 and abs(plain[name].std().item() - 0.02) < 0.005, name
        assert not redrawn[q.replace("weight", "bias")].any()
        norm = q.replace("self_attn.q_proj", "input_layernorm")
        assert torch.equal(plain[norm], redrawn[norm])  # norms are not redrawn


def test_the_route_heads_read_the_named_word_the_images_colour_and_shape_and_the_negation():
    """``route_targets``: per training question, the word a yes/no question names and whether it is negated
    (read with the benchmark's own parser, which the zoo does not use), and the image's colour and shape, as
    indices of the eleven words; -100 (no target) for the open questions' named word and negation."""
    import re

    from harness.api import BENCHMARKS
    from harness.benchmarks.easyvqa import COLOURS, SHAPES, yes_no_parts
    from harness.zoo import build

    bench = BENCHMARKS.get("easyvqa")(split="train")
    samples = [bench.sample(i) for i in range(600)]
    vocabulary = build.match_words(samples)
    read = build.route_targets(samples, vocabulary, build.attribute_words(samples))
    assert set(read) == build.ROUTED
    table = read["direct"]
    assert table.shape == (600, 4) and all(bool((read[name] == table).all()) for name in read)
    kinds = set()
    for sample, (named, colour, shape, negated) in zip(samples, table.tolist()):
        assert (vocabulary[colour], vocabulary[shape]) == (sample.meta["colour"], sample.meta["shape"])
        if sample.category == "yes/no":
            words = re.findall(r"[a-z]+", sample.question.lower())
            assert vocabulary[named] == next(w for w in words if w in SHAPES or w in COLOURS)
            assert negated == int(yes_no_parts(sample.question, sample.meta["shape"], sample.meta["colour"])[1])
            kinds.add((vocabulary[named] in SHAPES, negated))
        else:
            assert named == negated == -100
    assert kinds == {(True, 0), (True, 1), (False, 0), (False, 1)}


def test_bad_zoo_input_is_one_line(capsys):
    assert main(["zoo", "build", "nope"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["zoo", "build", "easyvqa-llava", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_rebuild_reproduces_the_committed_model(name, tmp_path):
    """`harness zoo build NAME` with the recorded seed and threads: the same accuracy on the full test
    split, and the same weights bit for bit when the library versions are the recorded ones."""
    import hashlib
    import platform

    import torch
    import transformers

    committed = zoo_root() / name
    record = json.loads((committed / "zoo.json").read_text())
    args = record["command"].split()[1:] + ["--out", str(tmp_path / name)]
    assert main(args) == 0
    rebuilt = json.loads((tmp_path / name / "zoo.json").read_text())
    assert rebuilt["test"]["direct"]["accuracy"] >= FLOOR
    same = (record["versions"] == {"torch": torch.__version__, "transformers": transformers.__version__,
                                   "python": platform.python_version()} and record["machine"] == platform.machine())
    if same:
        digest = lambda folder: hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
        assert digest(tmp_path / name) == digest(committed)
        assert rebuilt["test"] == record["test"]


def test_the_probe_script_reads_the_negation_off_the_committed_models_answer_position(capsys):
    """``scripts/zoo_probe.py`` on 300 questions: a table row per layer; the committed model's answer
    position holds the negation (every yes/no answer of the direct format depends on it) after layer 1,
    and at the embeddings (the prompt's last token, the same for every question) nothing beyond chance."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "zoo_probe.py"
    spec = importlib.util.spec_from_file_location("zoo_probe", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.main([str(zoo_root() / "easyvqa-qwen2vl"), "--questions", "300", "--threads", "1"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header, table = [c.strip() for c in rows[0]], {r[0].strip(): [float(c) for c in r[1:]] for r in rows[1:]}
    assert list(table) == ["embeddings", "1", "2", "3"]
    negated = header.index("negated") - 1
    assert table["1"][negated] > 95 and table["embeddings"][negated] < 65
