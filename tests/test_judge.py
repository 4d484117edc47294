"""The LLM judge: a real OpenAI-compatible server on 127.0.0.1 (tests/judge_server.py), `JudgeConfig.check`,
VLMEvalKit's judge pointed at it, and `harness run --judge-url` / `harness rescore` storing judge scores
beside (never instead of) the rule-based ones, without touching the stored predictions."""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from judge_server import extract_final_answer, perfect_judgement, serve_judge  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.run.judge import JudgeConfig, JudgeError, VLMEVAL_JUDGE_NAME, vlmeval_judge_env  # noqa: E402
from harness.run.store import Store  # noqa: E402

JUDGE_MODEL = "test-org/judge-7b"  # a hub-style name: must reach the server verbatim


def _post(url: str, body: dict, headers: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def vlmeval():
    from harness.benchmarks.vlmeval_common import import_vlmeval

    return import_vlmeval()


# -- the server --------------------------------------------------------------------------------------
def test_server_speaks_the_chat_completions_api():
    with serve_judge(reply={"colour": "blue"}, models=(JUDGE_MODEL,)) as server:
        assert server.startswith("http://127.0.0.1:") and server.endswith("/v1")
        body = {"model": JUDGE_MODEL, "temperature": 0,
                "messages": [{"role": "user", "content": "What colour? Model respone: blue\nExtracted answer:"}]}
        reply = _post(server + "/chat/completions", body)
        assert reply["object"] == "chat.completion"
        assert reply["choices"][0]["message"] == {"role": "assistant", "content": "blue"}
        with urllib.request.urlopen(server + "/models", timeout=10) as response:
            assert [m["id"] for m in json.loads(response.read())["data"]] == [JUDGE_MODEL]
        (posted,) = server.chat_requests()
        assert posted["body"] == body and posted["method"] == "POST"
        assert server.prompts() == [body["messages"][0]["content"]]


def test_perfect_judgement_reads_the_answer_out_of_the_response():
    assert extract_final_answer("so the answer is (C) 5") == "C"
    assert extract_final_answer("It has 4 corners, maybe 5 if you count twice; final: 6") == "6"
    assert extract_final_answer("Half is 1.5") == "1.5"
    assert extract_final_answer("circle") == "circle"
    assert perfect_judgement("hello") and perfect_judgement("Reply with the word OK.") == "OK"


# -- check() -----------------------------------------------------------------------------------------
def test_check_passes_and_sends_a_deterministic_request(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "s3cret")
    with serve_judge(models=(JUDGE_MODEL,), api_key="s3cret") as server:
        JudgeConfig(server, JUDGE_MODEL, api_key_env="MY_JUDGE_KEY").check()
        (request,) = server.chat_requests()
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == JUDGE_MODEL and request["body"]["temperature"] == 0
    assert request["headers"]["Authorization"] == "Bearer s3cret"


@pytest.mark.parametrize("case, expected", [
    ("down", "did not answer"),
    ("key", "rejected the API key"),
    ("model", "does not exist"),
    ("broken", "answered HTTP 500"),
    ("empty", "empty reply"),
])
def test_check_fails_in_one_line_naming_the_url_and_the_fix(case, expected, monkeypatch):
    monkeypatch.setenv("HARNESS_JUDGE_API_KEY", "wrong" if case == "key" else "right")
    options = {"key": {"api_key": "right"}, "model": {"models": ("other-model",)}, "broken": {"status": 500},
               "empty": {"reply": lambda prompt, body: ""}}.get(case, {})
    with serve_judge(**options) as server:
        judge = JudgeConfig(server, JUDGE_MODEL)
        if case != "down":
            with pytest.raises(JudgeError) as info:
                judge.check()
    if case == "down":  # the server has stopped: nothing listens on its port any more
        with pytest.raises(JudgeError) as info:
            judge.check()
    message = str(info.value)
    assert expected in message and judge.chat_url() in message and "\n" not in message


def test_config_validates_and_names_itself():
    judge = JudgeConfig("http://127.0.0.1:8000/v1/", "m")
    assert judge.chat_url() == "http://127.0.0.1:8000/v1/chat/completions"
    assert JudgeConfig("http://h:1/v1/chat/completions", "m").chat_url() == "http://h:1/v1/chat/completions"
    assert judge.scorer_name() == "judge:m@http://127.0.0.1:8000/v1"
    with pytest.raises(ValueError, match="http"):
        JudgeConfig("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="judge-model"):
        JudgeConfig("http://127.0.0.1:8000/v1", " ")


# -- VLMEvalKit's judge, pointed at the server ----------------------------------------------------
def test_vlmeval_judge_env_points_vlmevalkit_at_the_server_and_restores(vlmeval, monkeypatch, caplog):
    import logging

    from vlmeval.dataset.utils.judge_util import build_judge
    from vlmeval.dataset.utils.mathvista import MathVista_auxeval

    caplog.set_level(logging.INFO)
    key = "sk-test-do-not-log"
    monkeypatch.setenv("HARNESS_JUDGE_API_KEY", key)
    monkeypatch.setenv("OPENAI_API_BASE", "https://example.invalid/v1/chat/completions")  # must be restored
    monkeypatch.delenv("LOCAL_LLM", raising=False)  # must be unset again afterwards
    before = dict(os.environ)
    with serve_judge(models=(JUDGE_MODEL,), api_key=key) as server:
        judge = JudgeConfig(server, JUDGE_MODEL)
        with vlmeval_judge_env(judge) as kwargs:
            assert os.environ["OPENAI_API_BASE"] == judge.chat_url() and os.environ["LOCAL_LLM"] == JUDGE_MODEL
            assert kwargs["model"] == VLMEVAL_JUDGE_NAME
            # What MathVista.evaluate does: build_judge(max_tokens=128, **judge_kwargs), then one item.
            wrapper = build_judge(max_tokens=128, **dict(kwargs))
            assert wrapper.working()
            line = {"question": "How many corners?", "prediction": "I count them: it has 4 corners.",
                    "question_type": "free_form", "answer_type": "integer", "answer": "4", "choices": None}
            assert MathVista_auxeval(wrapper, line) == {"log": "Succeed", "res": "4"}
        sent = server.chat_requests()
    assert dict(os.environ) == before
    assert {r["body"]["model"] for r in sent} == {JUDGE_MODEL}, "the model name is sent as given, not remapped"
    assert all(r["headers"]["Authorization"] == f"Bearer {key}" for r in sent)
    assert "Using API Base" not in caplog.text and key not in caplog.text, "VLMEvalKit logs the key at INFO"
    judged = sent[-1]["body"]
    assert judged["temperature"] == 0 and "Model respone: I count them: it has 4 corners." in judged["messages"][0][
        "content"]


def test_vlmeval_judge_env_restores_after_an_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = dict(os.environ)
    with pytest.raises(RuntimeError):
        with vlmeval_judge_env(JudgeConfig("http://127.0.0.1:9/v1", "m")):
            assert "OPENAI_API_KEY" in os.environ
            raise RuntimeError("judge blew up")
    assert dict(os.environ) == before


# -- runs and rescoring: MathVista fixture -----------------------------------------------------------
@pytest.fixture(scope="module")
def mathvista_data(tmp_path_factory):
    from harness.testing.fixtures import write_mathvista_fixture

    return str(write_mathvista_fixture(tmp_path_factory.mktemp("mathvista") / "MathVista_MINI.tsv", n=8, seed=0))


def _crafted_answers(benchmark) -> tuple[list[str], list[bool], list[bool]]:
    """Answers per fixture row, with what the rule alone and a perfect judge make of them.

    Rows cycle multiple choice, integer, float, text. The rule reads only a bare letter/number; the judge
    also reads a number inside a sentence. VLMEvalKit's post_check never accepts a text answer
    (it compares str(None) with the gold), with or without a judge.
    """
    answers, rule, judged = [], [], []
    for position in range(len(benchmark)):
        sample = benchmark.sample(position)
        kind, second = position % 4, position >= 4
        if kind == 0:  # letter in a sentence: read by both; the second one is a wrong letter
            letter = sample.gold if not second else next(c for c in "ABCD" if c != sample.gold)
            answers.append(f"The answer is ({letter})")
            rule.append(not second), judged.append(not second)
        elif kind == 1:  # a number in prose: only the judge reads it; the second one is off by one
            value = int(sample.gold) + (1 if second else 0)
            answers.append(f"It has {value} corners.")
            rule.append(False), judged.append(not second)
        elif kind == 2:  # the first in prose (judge only), the second bare (the rule reads it)
            answers.append(f"Half of them is {sample.gold}." if not second else sample.gold)
            rule.append(second), judged.append(True)
        else:
            answers.append(sample.gold)
            rule.append(False), judged.append(False)
    return answers, rule, judged


def _store_run(db: str, benchmark, data: str, answers: list[str]) -> int:
    """A finished run of stored answers, as `harness run` leaves it (fields the rescore reads)."""
    store = Store(db)
    fields = {"method": "crafted", "method_config": {"method": "crafted"}, "model": "none", "benchmark": "mathvista",
              "split": benchmark.split, "subset": {"n": len(answers), "data": data},
              "data_fingerprint": benchmark.fingerprint(), "n_planned": len(answers)}
    run_id, _, _ = store.start_run("crafted-run", fields)
    rows = []
    for position, answer in enumerate(answers):
        sample = benchmark.sample(position)
        rows.append({"uid": sample.uid, "position": position, "category": sample.category, "prediction": answer,
                     "answer": answer, "gold": sample.gold, "correct": benchmark.grade(sample, answer).correct})
    store.add_samples(run_id, rows)
    store.finish_run(run_id, status="finished", metrics={}, official=None)
    return run_id


def test_rescore_adds_rule_and_judge_scores_that_differ_and_leaves_samples_alone(mathvista_data, tmp_path,
                                                                                 capsys, vlmeval):
    from harness.api import BENCHMARKS

    benchmark = BENCHMARKS.get("mathvista")(mathvista_data)
    answers, rule, judged = _crafted_answers(benchmark)
    assert rule != judged, "the crafted answers separate the two metrics"
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = _store_run(db, benchmark, mathvista_data, answers)
    samples_before = Store(db).samples(run_id)

    assert main(["rescore", str(run_id), "--db", db]) == 0  # no judge: the benchmark's rule-based score
    with serve_judge(models=(JUDGE_MODEL,)) as server:
        assert main(["rescore", str(run_id), "--db", db, "--judge-url", server, "--judge-model", JUDGE_MODEL]) == 0
        prompts = server.prompts()
    out = capsys.readouterr().out
    assert f"rule-based score {100 * sum(rule) / len(rule):.2f} %" in out
    assert f"judge score {100 * sum(judged) / len(judged):.2f} %" in out

    store = Store(db, read_only=True)
    assert store.samples(run_id) == samples_before, "rescoring never changes stored predictions"
    scores = {s["kind"]: s for s in store.scores(run_id)}
    assert set(scores) == {"rule-based", "judge"}
    assert scores["rule-based"]["accuracy"] == pytest.approx(100 * sum(rule) / len(rule))
    assert scores["judge"]["accuracy"] == pytest.approx(100 * sum(judged) / len(judged))
    assert scores["judge"]["scorer"] == JudgeConfig(server, JUDGE_MODEL).scorer_name()
    assert scores["rule-based"]["details"]["scoring"] == "rule-based"
    # The judge saw exactly the answers the rule could not settle (VLMEvalKit prefetches the rest).
    judged_responses = sorted(p.rsplit("Model respone: ", 1)[1].rsplit("Extracted answer:", 1)[0]
                              for p in prompts if "Model respone: " in p)
    prefetched = [a for a, r in zip(answers, rule) if r]
    assert judged_responses == sorted(a for a in answers if a not in prefetched)

    # Rescoring again replaces the same scorer's row instead of piling up copies.
    assert main(["rescore", str(run_id), "--db", db]) == 0
    assert sorted(s["kind"] for s in Store(db, read_only=True).scores(run_id)) == ["judge", "rule-based"]


def test_run_without_then_with_a_judge(mathvista_data, tiny_model_dirs, tmp_path, capsys, vlmeval):
    """`harness run` stores a rule-based score; the same command with --judge-url resumes the same run
    (the judge is not part of its identity), computes nothing new and adds a judge score."""
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    command = ["run", "--no-progress", "--method", "direct", "--bench", "mathvista", "--model",
               str(tiny_model_dirs["qwen2-vl"]), "--data", mathvista_data, "--limit", "4", "--max-new-tokens", "6",
               "--db", db]
    assert main(command) == 0
    capsys.readouterr()
    store = Store(db, read_only=True)
    (run,) = store.runs()
    assert [s["kind"] for s in store.scores(run["id"])] == ["rule-based"]
    assert run["official"]["scoring"] == "rule-based" and run["subset"]["data"] == str(Path(mathvista_data).resolve())
    samples = store.samples(run["id"])

    with serve_judge(models=(JUDGE_MODEL,)) as server:
        assert main([*command, "--judge-url", server, "--judge-model", JUDGE_MODEL, "--json"]) == 0
        n_judged = sum("Model respone: " in p for p in server.prompts())
    report = json.loads(capsys.readouterr().out)
    assert report["run_id"] == run["id"] and report["resumed"] and report["new_samples"] == 0
    assert report["official"]["scoring"] == "rule-based" and report["judged"]["scoring"] == "judge"
    store = Store(db, read_only=True)
    assert store.samples(run["id"]) == samples
    assert store.run(run["id"])["official"] == run["official"], "the run's own column keeps the rule-based score"
    kinds = {s["kind"]: s for s in store.scores(run["id"])}
    assert set(kinds) == {"rule-based", "judge"}
    assert kinds["judge"]["details"]["overall"]["total"] == 4
    # Every answer the rule could not settle went to the judge (random tiny-model text: usually all of them).
    undecided_or_wrong = 4 - kinds["rule-based"]["details"]["decided"]["correct"]
    assert n_judged == undecided_or_wrong


def test_judge_flags_need_both_and_a_live_endpoint(mathvista_data, tiny_model_dirs, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    base = ["run", "--no-progress", "--method", "direct", "--bench", "mathvista", "--model",
            str(tiny_model_dirs["qwen2-vl"]), "--data", mathvista_data, "--limit", "2", "--db", db]
    assert main([*base, "--judge-url", "http://127.0.0.1:9/v1"]) == 2
    assert "--judge-model" in capsys.readouterr().err
    with serve_judge() as server:
        url = str(server)
    assert main([*base, "--judge-url", url, "--judge-model", JUDGE_MODEL]) == 2  # checked before the model loads
    err = capsys.readouterr().err
    assert err.startswith("harness: error: LLM judge at ") and "did not answer" in err
    assert not Path(tmp_path / "runs.db").exists() or not Store(db, read_only=True).runs()


def test_rescore_errors(mathvista_data, tmp_path, capsys, vlmeval):
    from harness.api import BENCHMARKS

    benchmark = BENCHMARKS.get("mathvista")(mathvista_data)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["rescore", "1", "--db", db]) == 2  # no database: an error, and none is created
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "runs.db").exists()
    run_id = _store_run(db, benchmark, mathvista_data, ["1"] * len(benchmark))
    assert main(["rescore", str(run_id + 1), "--db", db]) == 2
    assert f"no run {run_id + 1}" in capsys.readouterr().err
    from harness.testing.fixtures import write_mathvista_fixture

    other = write_mathvista_fixture(tmp_path / "other" / "MathVista_MINI.tsv", n=8, seed=1)
    assert main(["rescore", str(run_id), "--db", db, "--data", str(other)]) == 2
    assert "pass --data with the original file" in capsys.readouterr().err
    assert Store(db, read_only=True).scores(run_id) == []


def test_a_judge_on_a_benchmark_without_one_is_refused(tmp_path, capsys, vlmeval):
    """MMStar is scored by its official exact-matching rule: rescore refuses a judge instead of
    storing an official score under a judge label."""
    from harness.api import BENCHMARKS
    from harness.testing.fixtures import write_mmstar_fixture

    data = str(write_mmstar_fixture(tmp_path / "MMStar.tsv", n=4))
    benchmark = BENCHMARKS.get("mmstar")(data)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    store = Store(db)
    run_id, _, _ = store.start_run("k", {"method": "crafted", "model": "none", "benchmark": "mmstar",
                                         "split": "test", "subset": {"data": data},
                                         "data_fingerprint": benchmark.fingerprint()})
    store.add_samples(run_id, [{"uid": benchmark.sample(i).uid, "position": i, "answer": "A"} for i in range(4)])
    with serve_judge() as server:
        assert main(["rescore", str(run_id), "--db", db, "--judge-url", server, "--judge-model", "m"]) == 2
    assert "takes no LLM judge" in capsys.readouterr().err
    assert main(["rescore", str(run_id), "--db", db]) == 0
    assert [s["kind"] for s in store.scores(run_id)] == ["official"]
