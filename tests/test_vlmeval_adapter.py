"""Harness methods as VLMEvalKit models (harness/integrations/vlmeval_model.py), run through VLMEvalKit's own
`infer_data_job` and `dataset.evaluate` on a tiny MMStar-format TSV, and compared with `harness run`."""
from __future__ import annotations

import functools
import os

import pytest

from harness.run.store import Store

N_ROWS = 6
MAX_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """$LMUData in a temporary folder (VLMEvalKit writes images under it); the TSV prediction format,
    because the default .xlsx escapes control characters a random tiny model does generate."""
    root = tmp_path_factory.mktemp("lmudata")
    patch = pytest.MonkeyPatch()
    patch.setenv("LMUData", str(root))
    patch.setenv("PRED_FORMAT", "tsv")
    from harness.benchmarks.vlmeval_common import import_vlmeval

    import_vlmeval()  # once per module: slow
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def mmstar_tsv(env):
    from harness.testing.fixtures import write_mmstar_fixture

    return write_mmstar_fixture(env / "fixture" / "MMStar.tsv", n=N_ROWS, seed=0)


@pytest.fixture(scope="module")
def vlmeval_run(env, mmstar_tsv, tiny_model_dirs):
    """`cot` on the tiny Qwen2-VL through VLMEvalKit: registered entry → infer_data_job → prediction file."""
    import harness.integrations.vlmeval_model as hv
    from vlmeval.inference import infer_data_job

    model_dir = str(tiny_model_dirs["qwen2-vl"])
    (name,) = hv.register(models=[model_dir], methods=["cot"], device="cpu", dtype="float32",
                          max_new_tokens=MAX_NEW_TOKENS)
    dataset = hv.local_dataset(mmstar_tsv, "MMStar")
    work_dir = env / "work"
    work_dir.mkdir()
    infer_data_job(name, work_dir=str(work_dir), model_name=name, dataset=dataset)  # builds the model by name
    return {"name": name, "dataset": dataset, "pred_file": work_dir / f"{name}_MMStar.tsv", "model": model_dir}


@pytest.fixture(scope="module")
def harness_run(env, mmstar_tsv, tiny_model_dirs):
    """The same method, model and data through `harness run`'s runner."""
    from harness.run.runner import RunSpec, execute

    db = f"sqlite:///{env / 'runs.db'}"
    report = execute(RunSpec(method="cot", bench="mmstar", model=str(tiny_model_dirs["qwen2-vl"]),
                             data=str(mmstar_tsv), method_options={"max_new_tokens": MAX_NEW_TOKENS},
                             device="cpu", dtype="float32", db=db, progress=False))
    return {"report": report, "samples": {s["uid"]: s for s in Store(db, read_only=True).samples(report.run_id)}}


def _predictions(path):
    import pandas as pd

    # Read every cell as the exact string written ('' and 'NA' stay themselves).
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_make_model_is_a_vlmeval_base_model(env, tiny_model_dirs, images):
    import harness.integrations.vlmeval_model as hv
    from vlmeval.vlm.base import BaseModel

    model = hv.make_model(method="direct", model=str(tiny_model_dirs["llava"]), device="cpu", dtype="float32",
                          max_new_tokens="4")  # a string option, as from a command line, is coerced
    assert isinstance(model, BaseModel) and model.method.options.max_new_tokens == 4
    path = env / "red.png"
    images[0][0].save(path)
    out = model.generate([{"type": "image", "value": str(path)}, {"type": "text", "value": "What colour?"}])
    assert set(out) == {"prediction", "extra_records"}
    records = out["extra_records"]
    assert records["method"] == "direct" and 0 < records["generated_tokens"] <= 4 and records["input_tokens"] > 4
    assert records["latent_steps"] == 0 and records["seconds"] > 0 and out["prediction"] == records["answer"]
    # Same query through the method directly: the adapter adds nothing of its own.
    from harness.api import Query

    (direct,) = model.method(model.backbone, [Query(images=images[0], question="What colour?")])
    assert direct.answer == out["prediction"] and direct.generated_tokens == records["generated_tokens"]


def test_message_to_query_reads_vlmevalkit_mcq_prompts(env, mmstar_tsv):
    import harness.integrations.vlmeval_model as hv
    from harness.api import BENCHMARKS

    dataset = hv.local_dataset(mmstar_tsv, "MMStar")
    benchmark = BENCHMARKS.get("mmstar")(str(mmstar_tsv))
    for position in range(N_ROWS):
        query = hv.message_to_query(dataset.build_prompt(position))
        sample = benchmark.sample(position)
        assert query.question == benchmark.format_question(sample), "the text `harness run` gives the method"
        assert query.choices == sample.choices and len(query.images) == 1
        assert query.images[0].tobytes() == sample.images()[0].tobytes()
    assert hv.choices_from_prompt("Question: 2+2?\nAnswer briefly.") == []
    with pytest.raises(ValueError, match="video"):
        hv.message_to_query([{"type": "video", "value": "clip.mp4"}])


def test_register_adds_partial_entries(env, tiny_model_dirs):
    import harness.integrations.vlmeval_model as hv
    from vlmeval.config import supported_VLM

    names = hv.register(models=[str(tiny_model_dirs["llava"])], methods=["direct", "cot"], device="cpu")
    assert names == ["harness-direct-llava", "harness-cot-llava"]
    entry = supported_VLM["harness-cot-llava"]
    assert isinstance(entry, functools.partial) and entry.func is hv.make_model
    assert entry.keywords == {"method": "cot", "model": str(tiny_model_dirs["llava"]), "device": "cpu"}
    assert hv.register({"my-entry": {"method": "direct", "model": "x"}}) == ["my-entry"]
    with pytest.raises(KeyError, match="unknown method"):
        hv.register(models=["x"], methods=["no-such-method"])
    with pytest.raises(ValueError, match="already has a model named"):
        hv.register({"GPT4o": {"method": "direct", "model": "x"}})
    with pytest.raises(ValueError, match="vLLM"):
        hv.make_model(method="direct", model="x", use_vllm=True)
    assert hv.main(["--models", "/m/Qwen2-VL-2B", "--methods", "direct", "--list"]) == 0


def test_infer_data_job_keeps_one_prediction_per_row_with_extra_records(vlmeval_run):
    import ast

    table = _predictions(vlmeval_run["pred_file"])
    assert list(table["index"]) == [str(i) for i in range(N_ROWS)]
    assert "image" not in table and "extra_records" in table
    for cell in table["extra_records"]:
        records = ast.literal_eval(cell)
        assert records["method"] == "cot" and records["model"] == vlmeval_run["model"]
        assert 0 < records["generated_tokens"] <= MAX_NEW_TOKENS and records["input_tokens"] > 10


def test_predictions_equal_harness_run(vlmeval_run, harness_run):
    """Same method, model, prompt and image: VLMEvalKit's prediction file holds exactly the answers
    `harness run` stored, with the same token counts."""
    import ast

    table = _predictions(vlmeval_run["pred_file"])
    stored = harness_run["samples"]
    assert set(table["index"]) == set(stored)
    for index, prediction, cell in zip(table["index"], table["prediction"], table["extra_records"]):
        records = ast.literal_eval(cell)
        assert prediction == stored[index]["answer"]
        assert records["text"] == stored[index]["prediction"]
        assert records["input_tokens"] == stored[index]["input_tokens"]
        assert records["generated_tokens"] == stored[index]["generated_tokens"]


@pytest.fixture(scope="module")
def longest_option_method():
    """A test method that answers with the letter of its longest option: scores are neither 0 nor 100
    on the fixture (a random tiny model's text never names a letter), and its answers depend on the
    choices the adapter reads back from VLMEvalKit's prompt. Unregistered after this module."""
    from harness.api import MethodOutput
    from harness.api import METHODS, Method, register_method

    class LongestOption(Method):
        description = "test only: the letter of the longest option"

        def run(self, backbone, queries):
            outputs = []
            for query in queries:
                best = max(range(len(query.choices)), key=lambda i: (len(query.choices[i]), -i)) if query.choices else 0
                text = f"The answer is ({chr(65 + best)})"
                outputs.append(MethodOutput(text=text, answer=text, input_tokens=0, generated_tokens=0))
            return outputs

    METHODS.names()  # load the built-ins first, so the test entry does not stop them loading
    register_method("test-longest-option")(LongestOption)
    yield "test-longest-option"
    METHODS._entries.pop("test-longest-option", None)


def test_vlmeval_score_equals_harness_score(env, mmstar_tsv, tiny_model_dirs, longest_option_method):
    """VLMEvalKit's own evaluate() on the adapter's prediction file agrees with the harness's MMStar
    scoring of the same method on the same data, overall, per category and per sample."""
    import harness.integrations.vlmeval_model as hv
    from harness.run.runner import RunSpec, execute
    from vlmeval.inference import infer_data_job
    from vlmeval.smp import get_intermediate_file_path, load

    model_dir = str(tiny_model_dirs["qwen2-vl"])
    (name,) = hv.register(models=[model_dir], methods=[longest_option_method], device="cpu", dtype="float32")
    dataset = hv.local_dataset(mmstar_tsv, "MMStar")
    work_dir = env / "work-longest"
    work_dir.mkdir()
    infer_data_job(name, work_dir=str(work_dir), model_name=name, dataset=dataset)
    pred_file = str(work_dir / f"{name}_MMStar.tsv")
    acc = dataset.evaluate(pred_file, model="exact_matching", nproc=1)
    hits = load(get_intermediate_file_path(pred_file, "_exact_matching_result", "pkl"))

    db = f"sqlite:///{env / 'runs-longest.db'}"
    report = execute(RunSpec(method=longest_option_method, bench="mmstar", model=model_dir, data=str(mmstar_tsv),
                             device="cpu", dtype="float32", db=db, progress=False))
    official = report.official
    assert 0 < official["overall"]["correct"] < N_ROWS, "an informative score"
    assert 100 * float(acc["Overall"][0]) == pytest.approx(official["overall"]["accuracy"], abs=0.01)
    for category, bucket in official["by_category"].items():
        assert 100 * float(acc[category][0]) == pytest.approx(bucket["accuracy"], abs=0.01)
    stored = {s["uid"]: s for s in Store(db, read_only=True).samples(report.run_id)}
    assert {str(k): bool(v["hit"]) for k, v in hits.items()} == {uid: bool(s["correct"]) for uid, s in stored.items()}


@pytest.mark.slow
def test_vlmevalkit_entry_point_runs_a_registered_method(tmp_path, tiny_model_dirs):
    """`python -m harness.integrations.vlmeval_model --models M -- <run.py arguments>`: VLMEvalKit's own run.py finds the
    entry by name, infers and evaluates (a custom MCQ TSV in $LMUData, exact matching)."""
    import subprocess
    import sys

    from harness.testing.fixtures import write_mmstar_fixture

    lmu = tmp_path / "lmu"
    write_mmstar_fixture(lmu / "TinyMCQ.tsv", n=4)
    model = str(tiny_model_dirs["qwen2-vl"])
    result = subprocess.run(
        [sys.executable, "-m", "harness.integrations.vlmeval_model", "--models", model, "--methods", "direct", "--device", "cpu",
         "--opt", "max_new_tokens=4", "--", "--data", "TinyMCQ", "--model", "harness-direct-qwen2-vl",
         "--work-dir", str(tmp_path / "out"), "--judge", "exact_matching"],
        env={**os.environ, "LMUData": str(lmu)}, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out_dir = tmp_path / "out" / "harness-direct-qwen2-vl"
    predictions = _predictions_xlsx(out_dir / "harness-direct-qwen2-vl_TinyMCQ.xlsx")
    assert len(predictions) == 4 and "extra_records" in predictions
    assert (out_dir / "harness-direct-qwen2-vl_TinyMCQ_acc.csv").is_file()


def _predictions_xlsx(path):
    import pandas as pd

    return pd.read_excel(path)
