"""The method interface, its registry (decorator and entry points) and the three baselines' mechanisms."""
from __future__ import annotations

import sys
import textwrap

import pytest

from harness.api import Query, Registry
from harness.api import METHODS, Method, coerce_options
from methods.baselines import final_answer_segment


class RecordingBackbone:
    """Wraps a real tiny backbone and records every prompt it is asked to generate from."""

    def __init__(self, backbone):
        self.inner = backbone
        self.prompts: list[list[str]] = []

    def generate(self, images, prompts, max_new_tokens):
        self.prompts.append(list(prompts))
        return self.inner.generate(images, prompts, max_new_tokens)


@pytest.fixture()
def queries(images):
    return [Query(images=images[0], question="Question: What colour?\n(A) red\n(B) blue", choices=["red", "blue"]),
            Query(images=images[1], question="Question: How many sides?", choices=[])]


def test_registry_lists_the_baselines():
    assert {"direct", "cot", "mm-cot"} <= set(METHODS.names())
    assert METHODS.get("mm-cot").name == "mm-cot"


def test_options_are_validated_and_typed():
    cot = METHODS.get("cot")
    assert coerce_options(cot, {"max_new_tokens": "64"}) == {"max_new_tokens": 64}
    with pytest.raises(ValueError, match="has no option 'beam'"):
        coerce_options(cot, {"beam": "2"})
    with pytest.raises(ValueError, match="expected a int"):
        coerce_options(cot, {"max_new_tokens": "many"})
    method = cot(max_new_tokens=7)
    assert method.config()["max_new_tokens"] == 7 and method.config()["method"] == "cot"
    assert "step by step" in method.config()["instruction"], "prompts are part of the stored configuration"


def test_final_answer_segment():
    assert final_answer_segment("(A) is wrong since... so the answer is (B).") == "(B)."
    assert final_answer_segment("The Answer Is: C") == "C"
    assert final_answer_segment("first answer is A, but the answer is D") == "D"
    assert final_answer_segment("  B  ") == "B"


def test_direct_and_cot_prompts_and_token_counts(backbone, queries):
    for name, marker in (("direct", "directly"), ("cot", "step by step")):
        recorder = RecordingBackbone(backbone)
        outputs = METHODS.get(name)(max_new_tokens=6)(recorder, queries)
        (prompts,) = recorder.prompts
        assert marker in prompts[0] and prompts[0].startswith(queries[0].question)
        assert "single word" in prompts[1] or "The answer is ..." in prompts[1], "open questions get the open form"
        for output in outputs:
            assert 0 < output.generated_tokens <= 6 and output.input_tokens > 0 and output.latent_steps == 0
            assert output.seconds > 0


def test_mm_cot_answers_conditioned_on_its_own_rationale(backbone, queries):
    recorder = RecordingBackbone(backbone)
    method = METHODS.get("mm-cot")(max_new_tokens=10, answer_max_new_tokens=4)
    outputs = method(recorder, queries)
    stage1, stage2 = recorder.prompts
    for query, output, p1, p2 in zip(queries, outputs, stage1, stage2):
        rationale = output.extra["rationale"]
        assert "Explain step by step" in p1 and "Rationale:" not in p1
        assert p2.startswith(query.question) and f"Rationale: {rationale}" in p2
        assert output.text.startswith(rationale)
        # Both stages' decoded tokens count; the input is the stage-1 prompt.
        stage1_only = backbone.generate([query.images], [p1], 10)[0]
        stage2_only = backbone.generate([query.images], [p2], 4)[0]
        assert output.generated_tokens == stage1_only.generated_tokens + stage2_only.generated_tokens
        assert output.input_tokens == stage1_only.input_tokens < output.extra["stage2_input_tokens"]


def test_third_party_methods_plug_in_through_entry_points(tmp_path, monkeypatch):
    package = tmp_path / "thirdparty_methods"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        from harness.api import MethodOutput
        from harness.api import Method

        class Echo(Method):
            description = "echoes the question"

            def run(self, backbone, queries):
                return [MethodOutput(text=q.question, answer=q.question, input_tokens=0, generated_tokens=0)
                        for q in queries]
    """))
    dist = tmp_path / "thirdparty_methods-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-methods\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.methods]\necho = thirdparty_methods:Echo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # The real registry, re-read as in a fresh process: built-ins and the third-party entry point.
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(METHODS, "_loaded", False)
    assert {"echo", "cot", "mm-cot"} <= set(METHODS.names())
    echo = METHODS.get("echo")()
    (output,) = echo(None, [Query(images=[], question="hi")])
    assert output.answer == "hi" and echo.config() == {"method": "echo", "max_new_tokens": 512}
    sys.modules.pop("thirdparty_methods", None)


def test_registering_two_classes_under_one_name_is_refused():
    registry: Registry = Registry("method", "harness.no-such-group")

    @registry.register("x")
    class A(Method):
        def run(self, backbone, queries):
            return []

    with pytest.raises(ValueError, match="registered twice"):
        @registry.register("x")
        class B(A):
            pass
