"""`harness ci`: golden per-sample baselines, the exact and statistical checks, exit codes, reports.

The end-to-end tests run a two-case suite on a copy of a zoo model (24 easy-VQA questions, 6 M3CoT
fixture questions); the checks' arithmetic is tested on constructed rows against hand computations.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.backbones import zoo_root
from harness.ci import checks
from harness.ci.suite import load_suite
from harness.ci.verify import exit_code
from harness.cli import main

SUITE = """
[defaults]
model = "./model"
batch_size = 8
speed_reference = "direct"

[[case]]
name = "direct"
method = "direct"
bench = "easyvqa"
split = "test"
limit = 24

[[case]]
name = "fixture"
method = "direct"
bench = "m3cot"
fixture = 6
"""


@pytest.fixture()
def suite(tmp_path):
    shutil.copytree(zoo_root() / "easyvqa-qwen2vl", tmp_path / "model")
    path = tmp_path / "suite.toml"
    path.write_text(SUITE)
    return path


def ci(suite, *args, capsys=None):
    code = main(["ci", "--suite", str(suite), *args])
    out = capsys.readouterr() if capsys else None
    return code, out


def report(suite, capsys, *args):
    code, out = ci(suite, "--json", *args, capsys=capsys)
    return code, json.loads(out.out), out.err


def test_update_then_an_unchanged_tree_passes_and_reuses_its_runs(suite, tmp_path, capsys, monkeypatch):
    from junitparser import Failure, JUnitXml

    code, rep, _ = report(suite, capsys, "--update")
    assert code == 0 and rep["counts"]["error"] == 0
    for name in ("direct", "fixture"):
        rows = (tmp_path / "baselines" / f"{name}.jsonl").read_text().splitlines()
        assert len(rows) == (24 if name == "direct" else 6)
        assert set(json.loads(rows[0])) == {"uid", "prediction", "extracted", "correct", "error",
                                            "generated_tokens", "latent_steps"}
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, rep, err = report(suite, capsys, "--junit", str(tmp_path / "ci.xml"), "--markdown", str(tmp_path / "ci.md"))
    assert code == 0, rep
    verdicts = {(c["case"], c["check"]): c["verdict"] for c in rep["checks"]}
    assert verdicts[("direct", "exact")] == verdicts[("fixture", "exact")] == "pass"  # same platform: exact
    assert all(case["run"]["reused"] for case in rep["cases"].values())  # a second invocation is fast
    assert verdicts[("fixture", "speed")] == "skip"  # reused answers: no timing to compare
    xml = JUnitXml.fromfile(str(tmp_path / "ci.xml"))
    cases = [case for suite_ in xml for case in suite_]
    assert len(cases) == len(rep["checks"]) and not any(isinstance(r, Failure) for c in cases for r in c.result)
    assert summary.read_text().startswith("## harness ci:") and (tmp_path / "ci.md").read_text() == summary.read_text()
    assert "exit 0" in err


def test_perturbed_weights_fail_with_exit_1_and_name_the_flipped_samples(suite, tmp_path, capsys):
    """Weights perturbed in the temporary copy: a new run (its identity covers the weights' hash),
    exit 1, and the flips listed are exactly the samples whose stored prediction changed."""
    import torch
    from safetensors.torch import load_file, save_file

    assert ci(suite, "--update", capsys=capsys)[0] == 0
    weights = tmp_path / "model" / "model.safetensors"
    state = load_file(str(weights))
    gen = torch.Generator().manual_seed(0)
    name = next(k for k in state if "lm_head" in k or "embed_tokens" in k)
    state[name] = state[name] + 0.5 * torch.randn(state[name].shape, generator=gen)
    save_file(state, str(weights), metadata={"format": "pt"})

    code, rep, _ = report(suite, capsys, "direct")
    assert code == 1
    exact = next(c for c in rep["checks"] if c["check"] == "exact")
    assert exact["verdict"] == "fail" and exact["flips"]
    golden = {json.loads(line)["uid"]: json.loads(line)
              for line in (tmp_path / "baselines" / "direct.jsonl").read_text().splitlines()}
    from harness.run.store import Store

    with Store(f"sqlite:///{tmp_path / 'ci.db'}", read_only=True) as store:
        now = {r["uid"]: r for r in store.samples(rep["cases"]["direct"]["run"]["run_id"])}
    changed = {uid for uid, g in golden.items()
               if (g["prediction"], g["extracted"], g["correct"]) != (now[uid]["prediction"], now[uid]["extracted"],
                                                                      now[uid]["correct"])}
    assert {f["uid"] for f in exact["flips"]} == changed
    code, out = ci(suite, "direct", capsys=capsys)
    assert code == 1 and min(changed) in out.out and "FAIL" in out.out  # the first 20 flips are listed, by uid


def test_a_changed_fingerprint_recomputes_instead_of_reusing(suite, tmp_path, capsys):
    """The ledger: stored answers are reused only while the code, versions and threads are the same."""
    assert ci(suite, "--update", "fixture", capsys=capsys)[0] == 0
    ledger = tmp_path / "ledger.json"
    data = json.loads(ledger.read_text())
    (db,) = data
    data[db]["fixture"] = "0" * 16  # as if the harness's code had changed since
    ledger.write_text(json.dumps(data))
    code, rep, _ = report(suite, capsys, "fixture")
    assert code == 0
    run = rep["cases"]["fixture"]["run"]
    assert not run["reused"] and run["computed"] == 6 and run["fresh"]


def test_fingerprint_covers_files_that_options_point_at(tmp_path):
    from harness.ci.run import fingerprint

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "a.json").write_text("{}")
    suite_path = tmp_path / "s.toml"
    suite_path.write_text('[[case]]\nname = "x"\nmethod = "direct"\nbench = "easyvqa"\nmodel = "m"\n'
                          'options = { instruction = "./ckpt" }\n')
    case = load_suite(suite_path).cases[0]
    before = fingerprint(case, {"torch": "1"})
    (tmp_path / "ckpt" / "a.json").write_text('{"changed": 1}')
    assert fingerprint(case, {"torch": "1"}) != before
    assert fingerprint(case, {"torch": "2"}) != fingerprint(case, {"torch": "1"})


def test_missing_malformed_or_stale_baselines_exit_2_until_updated(suite, tmp_path, capsys):
    code, rep, _ = report(suite, capsys)
    assert code == 2 and {c["check"] for c in rep["checks"]} == {"baseline"}
    assert "harness ci --update direct" in rep["checks"][0]["detail"]
    assert ci(suite, "--update", capsys=capsys)[0] == 0
    rows = tmp_path / "baselines" / "direct.jsonl"
    good = rows.read_text()
    rows.write_text(good + "{not json\n")
    assert report(suite, capsys)[0] == 2
    rows.write_text(good.replace('"uid"', '"id"', 1))
    code, rep, _ = report(suite, capsys, "direct")
    assert code == 2 and "malformed" in rep["checks"][0]["detail"]
    rows.write_text(good)
    suite.write_text(SUITE.replace("limit = 24", "limit = 20"))  # the case changed: its baseline is stale
    code, rep, _ = report(suite, capsys, "direct")
    assert code == 2 and "definition" in rep["checks"][0]["detail"]
    assert ci(suite, "--update", "direct", capsys=capsys)[0] == 0
    assert ci(suite, capsys=capsys)[0] == 0


def test_another_platform_gets_the_statistical_check(suite, tmp_path, capsys):
    assert ci(suite, "--update", "direct", capsys=capsys)[0] == 0
    path = tmp_path / "baselines" / "direct.json"
    summary = json.loads(path.read_text())
    summary["platform"]["device"] = "cuda:0"
    path.write_text(json.dumps(summary))
    code, rep, _ = report(suite, capsys, "direct")
    assert code == 0
    stat = next(c for c in rep["checks"] if c["case"] == "direct" and c["check"] in ("exact", "statistical"))
    assert stat["check"] == "statistical" and "platform differs" in stat["detail"]


@pytest.mark.parametrize("text, needle", [
    (None, "does not exist"),
    ("[[case]\n", "not valid TOML"),
    ('[[case]]\nname = "a"\nmethod = "direct"\nbench = "easyvqa"\nmodel = "m"\ncolour = 1\n', "unknown key"),
    ('[[case]]\nname = "a"\nmethod = "direct"\nbench = "easyvqa"\n', "missing 'model'"),
    ('[[case]]\nname = "a"\nmethod = "direct"\nbench = "easyvqa"\nmodel = "m"\nlimit = "5"\n', "should be int"),
    ('[[case]]\nname = "a b"\nmethod = "direct"\nbench = "easyvqa"\nmodel = "m"\n', "case name"),
    ('[defaults]\nmethod = "direct"\nbench = "easyvqa"\nmodel = "m"\n[[case]]\nname = "a"\n[[case]]\nname = "a"\n',
     "used twice"),
    ('[[case]]\nname = "a"\nmethod = "direct"\nbench = "easyvqa"\nmodel = "m"\ncheck = "fuzzy"\n', "check ="),
    ('[[case]]\nname = "a"\nmethod = "direct"\nbench = "easyvqa"\nmodel = "m"\nspeed_reference = "b"\n', "not a case"),
])
def test_a_bad_suite_is_one_line_and_exit_2(tmp_path, capsys, text, needle):
    path = tmp_path / "suite.toml"
    if text is not None:
        path.write_text(text)
    code, out = ci(path, capsys=capsys)
    assert code == 2 and needle in out.err and "Traceback" not in out.err and len(out.err.strip().splitlines()) == 1


def test_an_unknown_case_name_or_a_case_that_errors_exits_2(suite, tmp_path, capsys):
    code, out = ci(suite, "nope", capsys=capsys)
    assert code == 2 and "no case named 'nope'" in out.err
    assert ci(suite, "--update", "direct", capsys=capsys)[0] == 0
    shutil.rmtree(tmp_path / "model")  # the model is gone: the case cannot run, which is not a pass
    code, rep, _ = report(suite, capsys, "direct")
    assert code == 2 and any(c["check"] == "run" and c["verdict"] == "error" for c in rep["checks"])


def test_the_committed_suite_has_a_valid_baseline_for_every_case():
    from harness.ci import baseline

    suite = load_suite(Path(__file__).resolve().parents[1] / "results" / "ci" / "suite.toml")
    assert len(suite.cases) >= 10
    for case in suite.cases:
        rows, summary = baseline.load(suite.baselines, case)  # raises on a missing or stale one
        assert len(rows) == summary["metrics"]["n"]


# -- the checks' arithmetic, on constructed rows -------------------------------------------------------

def rows(right: list[bool], tokens: int = 2, prefix: str = "s") -> list[dict]:
    return [{"uid": f"{prefix}{i:03d}", "prediction": "yes" if r else "no", "extracted": "yes" if r else "no",
             "correct": r, "error": None, "generated_tokens": tokens, "latent_steps": 0} for i, r in enumerate(right)]


def test_mcnemar_p_equals_a_hand_computation_and_scipy():
    from scipy.stats import binomtest

    from harness.analysis.paired import mcnemar_exact

    # b = 1, c = 7: 2 · (C(8,0) + C(8,1)) / 2^8 = 18 / 256
    assert mcnemar_exact(1, 7) == pytest.approx(18 / 256, abs=1e-12)
    assert mcnemar_exact(9, 2) == pytest.approx(binomtest(2, 11, 0.5).pvalue, abs=1e-12)


def paired(b: int, c: int, n: int = 100, right: int = 80) -> tuple[list[dict], list[dict]]:
    """Golden: ``right`` of ``n`` right; now: ``b`` of those wrong and ``c`` of the wrong ones right."""
    golden = [i < right for i in range(n)]
    now = [(g and i >= b) or (not g and i - right < c) for i, g in enumerate(golden)]
    return rows(golden), rows(now)


@pytest.mark.parametrize("b, c, verdict", [
    (2, 0, "pass"),    # a 2-point drop: inside the band
    (4, 1, "pass"),    # 3 points, beyond the band, but p = 2 · (1 + 5) / 32 = 0.375: not significant
    (10, 0, "fail"),   # 10 points, p = 2 / 1024
    (0, 10, "pass"),   # better is never a regression
])
def test_the_statistical_check_needs_a_drop_beyond_the_band_and_significance(b, c, verdict):
    golden, now = paired(b, c)
    check = checks.statistical("x", golden, now, band=2.0, alpha=0.05)
    assert check.verdict == verdict, check.detail
    assert len(check.flips) == b + c
    if (b, c) == (4, 1):
        assert "p = 0.375" in check.detail


def test_the_exact_check_lists_every_changed_sample():
    golden = rows([True] * 5)
    now = [dict(r) for r in golden]
    now[3]["prediction"] = "yes."  # same grading, other text: still a change
    assert checks.exact("x", golden, golden).verdict == "pass"
    check = checks.exact("x", golden, now)
    assert check.verdict == "fail" and [f["uid"] for f in check.flips] == ["s003"]


def test_token_growth_and_speed_bands():
    assert checks.growth("x", "tokens", "generated_tokens", rows([True] * 4, 10), rows([True] * 4, 11), band=0.1).verdict == "pass"
    assert checks.growth("x", "tokens", "generated_tokens", rows([True] * 4, 10), rows([True] * 4, 12), band=0.1).verdict == "fail"
    assert checks.speed("x", 1.0, 0.8, band=0.3, mode="warn", reference="r").verdict == "pass"
    assert checks.speed("x", 1.0, 0.6, band=0.3, mode="warn", reference="r").verdict == "warn"
    assert checks.speed("x", 1.0, 0.6, band=0.3, mode="fail", reference="r").verdict == "fail"
    assert checks.speed("x", None, 0.6, band=0.3, mode="fail", reference="r").verdict == "skip"


def test_exit_codes_never_pass_what_was_not_checked():
    make = lambda *vs: [checks.Check("c", "k", v) for v in vs]  # noqa: E731
    assert exit_code(make("pass", "warn", "skip")) == 0
    assert exit_code(make("pass", "fail")) == 1
    assert exit_code(make("fail", "error")) == 2
    assert exit_code(make("error")) == 2
