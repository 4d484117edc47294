"""Hostile cells: VLMEvalKit ``eval()``s some cells of a benchmark's TSV (``toliststr`` on ``[...]`` image and
``image_path`` cells and ``istype`` on index cells in ``ImageBaseDataset.__init__``, MathVista's ``skills`` in
``MathVista_acc`` and ``choices`` in ``post_check``). For every VLMEvalKit benchmark and every column of its
fixture TSV (plus ``image_path``, a column VLMEvalKit reads when a TSV has it, and the model's answer), one
row's cell gets a Python payload that would create a file if it ran; the benchmark is then loaded and scored
as ``harness run`` does (load, sample, images, prompt, judge, score) and a prediction file with the payload is
scored as ``harness score`` does. Each case expects one of two outcomes, from the table below:

- ``reject``: a one-line DataError naming the file, the row and the column, before VLMEvalKit sees the cell;
- ``inert``: the payload is plain text (scored, shown in the prompt, or ignored), never evaluated.

In both, the payload's file must not exist afterwards. ``import vlmeval`` (~10 s) happens once.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness.api import BENCHMARKS, BadImage, DataError  # noqa: E402
from harness.testing.fixtures import write_all  # noqa: E402

BENCHES = ("mmstar", "mmbench", "mmvp", "pope", "scienceqa", "mathvista", "mathverse")
N_ROWS = 10  # MMBench: two whole rotation groups; MMVP: five pairs; MathVerse: two problems in five versions


def payload(kind: str, target: Path) -> str:
    """Python that creates ``target`` when evaluated (three shapes: a call, a list, a list built by ``+``)."""
    touch = f"__import__('pathlib').Path({str(target)!r}).touch()"
    return {
        "call": touch,
        "list": f"[__import__('os').system('touch {target}')]",
        "concat": f"['a'] + [{touch}]",
    }[kind]


KINDS = ("call", "list", "concat")
EXTRA_COLUMNS = ("image_path", "prediction")  # not fixture columns, but VLMEvalKit / the scorer read them


def fixture_columns(bench: str) -> list[str]:
    from harness.testing.fixtures import (MATHVERSE_COLUMNS, MATHVISTA_COLUMNS, MMBENCH_COLUMNS, MMSTAR_COLUMNS,
                                  MMVP_COLUMNS, POPE_COLUMNS, SCIENCEQA_COLUMNS)

    return list({"mmstar": MMSTAR_COLUMNS, "mmbench": MMBENCH_COLUMNS, "mmvp": MMVP_COLUMNS, "pope": POPE_COLUMNS,
                 "scienceqa": SCIENCEQA_COLUMNS, "mathvista": MATHVISTA_COLUMNS,
                 "mathverse": MATHVERSE_COLUMNS}[bench])


# -- the expected outcome of each case ------------------------------------------------------------------
# (bench or "*", column) → the payload kinds that are rejected; every other case is inert.
RUN_REJECTS = {
    ("*", "index"): KINDS,  # VLMEvalKit istype()s it: integers only
    # ("*", "image"): inert. toliststr() would eval() a [...] cell, so one that is not a list literal of base64
    # strings never reaches VLMEvalKit (a placeholder does): that sample alone fails, saying why.
    ("*", "image_path"): ("list", "concat"),  # toliststr() as well
    ("mathvista", "skills"): KINDS,  # MathVista_acc eval()s it
    ("mathvista", "choices"): KINDS,  # post_check eval()s it
    ("mathverse", "metadata"): KINDS,  # MathVerse_acc parses it (json), the harness with literal_eval
    ("pope", "answer"): KINDS,  # not Yes / No
}
# harness score: the file's index and question must match the data; the cells VLMEvalKit would eval() are
# checked as in the data; every other cell of the file is ignored (the data's own row is scored).
SCORE_REJECTS = {
    ("*", "index"): KINDS,
    ("*", "question"): KINDS,
    ("*", "image_path"): ("list", "concat"),
    ("mathvista", "skills"): KINDS,
    ("mathvista", "choices"): KINDS,
    ("mathverse", "metadata"): KINDS,
}


def expected(table: dict, bench: str, column: str, kind: str) -> str:
    for key in ((bench, column), ("*", column)):
        if kind in table.get(key, ()):
            return "reject"
    return "inert"


def run_cases():
    return [pytest.param(b, c, k, expected(RUN_REJECTS, b, c, k), id=f"{b}-{c}-{k}")
            for b in BENCHES for c in [*fixture_columns(b), *EXTRA_COLUMNS] for k in KINDS]


def score_cases():
    return [pytest.param(b, c, k, expected(SCORE_REJECTS, b, c, k), id=f"{b}-{c}-{k}")
            for b in BENCHES for c in [*(x for x in fixture_columns(b) if x != "image"), *EXTRA_COLUMNS]
            for k in KINDS]


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from harness.benchmarks.vlmeval_common import import_vlmeval

    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMUData", str(root / "LMUData"))
        (root / "LMUData").mkdir()
        files = write_all(root / "fixtures", n=N_ROWS, seed=0, benches=BENCHES)
        import_vlmeval()
        yield {"root": root, "files": files, "tables": {b: pd.read_csv(files[b], sep="\t") for b in BENCHES}}


@pytest.fixture
def pwned(env, request):
    """The file a payload would create; it must not exist after the test (checked here, whatever the test did)."""
    target = env["root"] / "pwned" / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    target.parent.mkdir(exist_ok=True)
    yield target
    assert not target.exists(), f"the payload ran: {target} exists"


def hostile_rows(bench: str, column: str) -> list[int]:
    # MMVP's pairs must ask the same question: the payload goes into both rows of pair 0 (else: rejected).
    return [0, 1] if (bench, column) == ("mmvp", "question") else [0]


def with_payload(table: pd.DataFrame, bench: str, column: str, text: str) -> pd.DataFrame:
    table = table.copy()
    if column == "image_path" and column not in table:
        table[column] = [f"{i}.png" for i in table["index"]]
    table[column] = table[column].astype(object)
    for row in hostile_rows(bench, column):
        table.loc[row, column] = text
    return table


def gold_answers(bench, samples) -> list[str]:
    return [s.gold for s in samples]


def assert_one_line_rejection(err, path: Path, column: str) -> None:
    message = str(err.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert f"column {column}" in message, message
    assert "line 2" in message or "row 2" in message or "index 0" in message, message


def run_flow(bench, payload_text: str | None = None):
    """What ``harness run`` does with a benchmark, the model replaced by gold answers (``payload_text``: the
    answer of row 0 instead)."""
    samples = list(bench.samples())
    answers = gold_answers(bench, samples)
    if payload_text is not None:
        answers[0] = payload_text
    prompts = []
    for sample, answer in zip(samples, answers):
        try:
            sample.images()
        except BadImage:
            pass  # stored as an error row by the runner
        prompts.append(bench.format_question(sample))
        bench.grade(sample, answer)
    result = bench.score(samples, answers)
    return samples, prompts, result


# -- harness run: a hostile cell in the data ------------------------------------------------------------
@pytest.mark.parametrize("bench_name, column, kind, outcome", run_cases())
def test_hostile_data_cell_is_rejected_or_inert(env, pwned, bench_name, column, kind, outcome):
    text = payload(kind, pwned)
    cls = BENCHMARKS.get(bench_name)
    if column == "prediction":  # the model's answer: never evaluated
        _, _, result = run_flow(cls(str(env["files"][bench_name])), payload_text=text)
        assert result["overall"]["total"] > 0
        return
    path = env["root"] / "data" / f"{bench_name}-{column}-{kind}.tsv"
    path.parent.mkdir(exist_ok=True)
    with_payload(env["tables"][bench_name], bench_name, column, text).to_csv(path, sep="\t", index=False)
    if outcome == "reject":
        with pytest.raises(DataError) as err:
            run_flow(cls(str(path)))
        assert_one_line_rejection(err, path, column)
        return
    samples, prompts, result = run_flow(cls(str(path)))
    assert result["overall"]["total"] > 0
    if column == "question":  # plain text: VLMEvalKit's prompt shows it as it is
        assert text in prompts[0]
    if column == "image":  # not an image: that sample fails alone, saying why
        with pytest.raises(BadImage, match="column image") as err:
            samples[0].images()
        assert "\n" not in str(err.value) and str(path) in str(err.value) and "line 2 (index 0)" in str(err.value)


# -- harness score: a hostile cell in the prediction file -----------------------------------------------
@pytest.mark.parametrize("bench_name, column, kind, outcome", score_cases())
def test_hostile_prediction_cell_is_rejected_or_inert(env, pwned, bench_name, column, kind, outcome):
    from harness.scoring.predictions import score_predictions

    data = env["files"][bench_name]
    bench = BENCHMARKS.get(bench_name)(str(data))
    table = env["tables"][bench_name].drop(columns=["image"])
    table["prediction"] = gold_answers(bench, list(bench.samples()))
    path = env["root"] / "predictions" / f"{bench_name}-{column}-{kind}.tsv"
    path.parent.mkdir(exist_ok=True)
    with_payload(table, bench_name, column, payload(kind, pwned)).to_csv(path, sep="\t", index=False)
    if outcome == "reject":
        with pytest.raises(DataError) as err:
            score_predictions(bench_name, path, data=str(data))
        assert_one_line_rejection(err, path, column)
    else:
        assert score_predictions(bench_name, path, data=str(data))["overall"]["total"] > 0


@pytest.mark.parametrize("suffix", [".xlsx", ".json", ".jsonl"])
def test_hostile_prediction_files_in_other_formats(env, pwned, suffix):
    """VLMEvalKit's other prediction formats are read as tables and checked the same way."""
    from vlmeval.smp import dump

    from harness.scoring.predictions import score_predictions

    data = env["files"]["mathvista"]
    bench = BENCHMARKS.get("mathvista")(str(data))
    table = env["tables"]["mathvista"].drop(columns=["image"])
    table["prediction"] = gold_answers(bench, list(bench.samples()))
    table.loc[1, "prediction"] = payload("call", pwned)
    path = env["root"] / f"predictions{suffix}"
    if suffix == ".jsonl":
        dump(table.to_dict("records"), str(path))
    else:
        dump(table, str(path))
    assert score_predictions("mathvista", path, data=str(data))["overall"]["total"] == len(table)
    table.loc[2, "skills"] = payload("concat", pwned)
    dump(table.to_dict("records") if suffix == ".jsonl" else table, str(path))
    with pytest.raises(DataError) as err:
        score_predictions("mathvista", path, data=str(data))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "row 4 (index '2'), column skills" in message


def test_pickle_and_unknown_prediction_files_are_never_read(env, tmp_path):
    import pickle

    from harness.scoring.predictions import score_predictions

    class Boom:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").touch, ())

    for name in ("p.pkl", "p.PICKLE", "p.dat", "p"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Boom()))
        with pytest.raises(DataError) as err:
            score_predictions("mmstar", path, data=str(env["files"]["mmstar"]))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


# -- the CLI: one line, exit 2 ----------------------------------------------------------------------------
def test_cli_score_refuses_hostile_data_and_predictions_in_one_line(env, pwned, capsys):
    from harness.cli import main

    path = env["root"] / "cli-skills.tsv"
    with_payload(env["tables"]["mathvista"], "mathvista", "skills", payload("call", pwned)).to_csv(
        path, sep="\t", index=False)
    predictions = env["root"] / "cli-predictions.tsv"
    table = env["tables"]["mathvista"].drop(columns=["image"])
    table["prediction"] = table["answer"]
    table.to_csv(predictions, sep="\t", index=False)
    assert main(["score", "mathvista", "--predictions", str(predictions), "--data", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("harness: error: MathVista data ") and "line 2 (index 0), column skills" in err
    with_payload(table, "mathvista", "choices", payload("list", pwned)).to_csv(predictions, sep="\t", index=False)
    assert main(["score", "mathvista", "--predictions", str(predictions),
                 "--data", str(env["files"]["mathvista"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"harness: error: {predictions}: row 2 (index '0'), column choices")


def test_header_only_tsv_is_one_line_data_error(env, capsys):
    from harness.cli import main

    for bench in BENCHES:
        path = env["root"] / f"{bench}-header-only.tsv"
        path.write_text("\t".join(env["tables"][bench].columns) + "\n")
        with pytest.raises(DataError, match="has a header but no rows") as err:
            len(BENCHMARKS.get(bench)(str(path)))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert main(["data", "prepare", "--bench", "pope", "--from", str(env["root"] / "pope-header-only.tsv")]) == 2
    assert "has a header but no rows" in capsys.readouterr().err


# -- the judge path (MathVista / MathVerse with an LLM judge) -------------------------------------------
@pytest.mark.parametrize("bench_name", ["mathvista", "mathverse"])
def test_judge_path_never_evaluates_cells_predictions_or_judge_replies(env, tmp_path, bench_name):
    """Every inert column hostile at once, hostile answers, a judge that replies with a payload: the judged
    score runs through VLMEvalKit's evaluate (auxeval, post_check, *_acc) and nothing runs."""
    from judge_server import perfect_judgement, serve_judge

    from harness.run.judge import JudgeConfig

    targets = []

    def target() -> Path:
        targets.append(tmp_path / f"pwned-{len(targets)}")
        return targets[-1]

    table = env["tables"][bench_name].copy()
    for column in fixture_columns(bench_name):
        if expected(RUN_REJECTS, bench_name, column, "call") == "inert" and column not in ("image", "question_type"):
            table[column] = table[column].astype(object)
            table.loc[3, column] = payload("call", target())
    path = tmp_path / "hostile.tsv"
    table.to_csv(path, sep="\t", index=False)
    bench = BENCHMARKS.get(bench_name)(str(path))
    samples = list(bench.samples())
    answers = [f"The answer is {payload('call', target())}" if i % 2 else s.gold for i, s in enumerate(samples)]
    reply_payload = payload("call", target())

    def reply(prompt, body):
        return reply_payload if "Extracted" in prompt else perfect_judgement(prompt, body)

    with serve_judge(reply=reply) as url:
        result = bench.score(samples, answers, judge=JudgeConfig(url=url, model="test-judge"))
        assert len(url.chat_requests()) > 1
    assert result["scoring"] == "judge"
    # A cell VLMEvalKit would eval() is refused before the judge is asked anything.
    column = "skills" if bench_name == "mathvista" else "metadata"
    bad = tmp_path / "bad.tsv"
    with_payload(env["tables"][bench_name], bench_name, column, payload("list", target())).to_csv(
        bad, sep="\t", index=False)
    with serve_judge() as url:
        with pytest.raises(DataError, match=f"column {column}"):
            hostile = BENCHMARKS.get(bench_name)(str(bad))
            hostile.score(list(hostile.samples()), answers, judge=JudgeConfig(url=url, model="test-judge"))
        assert url.chat_requests() == []
    assert not [t for t in targets if t.exists()], "a payload ran"


# -- harness run end to end (a tiny model) ---------------------------------------------------------------
def test_a_run_on_hostile_data_stores_text_and_refuses_code(env, tiny_model_dirs, tmp_path):
    from harness.run.runner import RunSpec, execute

    inert, evaluated = tmp_path / "pwned-inert", tmp_path / "pwned-evaluated"
    table = env["tables"]["mmstar"].copy()
    table["question"] = payload("call", inert)  # every row: whichever --limit picks
    table["A"] = payload("concat", inert)
    path = tmp_path / "mmstar.tsv"
    table.to_csv(path, sep="\t", index=False)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = dict(method="direct", model=str(tiny_model_dirs["qwen2-vl"]), limit=4, batch_size=4, db=db,
                progress=False, method_options={"max_new_tokens": 2})
    report = execute(RunSpec(bench="mmstar", data=str(path), **spec))
    assert report.official["overall"]["total"] == 4
    bad = tmp_path / "mathvista.tsv"
    with_payload(env["tables"]["mathvista"], "mathvista", "skills", payload("list", evaluated)).to_csv(
        bad, sep="\t", index=False)
    with pytest.raises(DataError, match="column skills"):
        execute(RunSpec(bench="mathvista", data=str(bad), **spec))
    assert not inert.exists() and not evaluated.exists()
