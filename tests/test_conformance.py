"""Conformance: the harness's scoring of a VLMEvalKit prediction file equals VLMEvalKit's own evaluate.

For each benchmark one prediction file, in the format VLMEvalKit's inference writes (.xlsx), holds
every kind of tricky answer (verbose chain of thought, several letters, option text instead of the
letter, empty, "NA", yes/no variants, numbers with prose). ``harness.testing.conformance.compare``
scores it through ``harness score``'s code path and through the *stock* VLMEvalKit dataset class's
``evaluate``, and the two result tables must be identical. MathVista without a judge is compared
with stock evaluate under a judge that never answers (its rule stage alone); MathVista and MathVerse
with a judge talk to the same deterministic judge server. (M3CoT's reference is its official rule:
tests/test_m3cot.py.) ``python scripts/conformance_table.py`` prints the case-by-case table.
"""
from __future__ import annotations

import pytest

from harness.testing.fixtures import FIXTURE_FILES, write_all
from harness.testing.conformance import compare, kinds_for

OFFICIAL = ("mmstar", "mmbench", "mmvp", "pope", "scienceqa", "mathvista")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("fixtures"), n=24, seed=0, benches=[*OFFICIAL, "mathverse"])


@pytest.mark.parametrize("bench", OFFICIAL)
def test_tricky_prediction_file_scores_identically(bench, files, tmp_path):
    result = compare(bench, None, files[bench], tmp_path)
    assert result["vlmeval_table"] == result["harness_table"]
    assert result["harness"] == result["vlmeval"]
    # the file really mixes right and wrong answers (an MMBench group mixes kinds, so all its groups fail:
    # the kind-by-kind test below covers groups that pass)
    headline = list(result["harness"].values())[0]
    assert (headline == 0) if bench == "mmbench" else 0 < headline < (100 if bench in ("pope", "mathvista") else 1)


def test_each_tricky_kind_alone_scores_identically_on_mmbench(files, tmp_path):
    passed = set()
    for kind in kinds_for("mmbench"):
        result = compare("mmbench", kind, files["mmbench"], tmp_path / kind)
        assert result["same"], kind
        if result["harness"]["acc"] == 1.0:
            passed.add(kind)
    assert passed == {"letter", "paren-letter", "option-text", "verbose-cot"}


def _judge_reply(prompt, body):
    from tests.judge_server import perfect_judgement

    # An empty reply makes VLMEvalKit retry with back-off; a judge says "null" for an empty response.
    return perfect_judgement(prompt, body) or "null"


@pytest.mark.parametrize("bench", ["mathvista", "mathverse"])
def test_judge_scoring_is_identical_to_vlmevalkit_with_the_same_judge(bench, files, tmp_path):
    from harness.run.judge import JudgeConfig
    from tests.judge_server import serve_judge

    with serve_judge(_judge_reply) as url:
        result = compare(bench, None, files[bench], tmp_path, judge=JudgeConfig(url=url, model="test-judge"))
    assert result["scoring"] == "judge"
    assert result["vlmeval_table"] == result["harness_table"]
