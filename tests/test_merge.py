"""`harness merge`: shards of one run (per-node SQLite files) unioned into one database, checked before
anything is written, scored once complete; runs of other keys copied beside them; idempotent."""
from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from harness.benchmarks.easyvqa import EasyVQA
from harness.cli import main
from harness.run.merge import MergeError, merge
from harness.run.metrics import summarize
from harness.run.store import Store

N = 10
BENCH = EasyVQA(None, "test")  # the installed easy-vqa package's data: offline


def _sha(positions: list[int]) -> str:
    return hashlib.sha256(json.dumps(positions).encode()).hexdigest()[:16]


def fields(n: int = N, data: str | None = None, **kw) -> dict:
    return {"method": "cot", "model": "zoo:easyvqa-qwen2vl", "benchmark": "easyvqa", "split": "test",
            "subset": {"limit": n, "seed": 0, "n": n, "of": len(BENCH), "positions_sha": _sha(list(range(n))),
                       "data": data},
            "data_fingerprint": BENCH.fingerprint(), "n_planned": n, "device": "cpu", "seed": 0, **kw}


def rows(positions, wrong=(), latency: float = 0.5, changed: dict | None = None) -> list[dict]:
    """easyvqa rows answered with the gold word, except at ``wrong`` (graded as the runner grades them)."""
    out = []
    for p in positions:
        sample = BENCH.sample(p)
        answer = sample.gold if p not in wrong else ("yes" if sample.gold == "no" else "no")
        row = {"uid": sample.uid, "position": p, "category": sample.category, "prompt": f"Question: {sample.question}",
               "prediction": f"The answer is {answer}.", "answer": answer, "extracted": answer, "gold": sample.gold,
               "correct": BENCH.grade(sample, answer).correct, "input_tokens": 40 + p, "generated_tokens": 5,
               "latency_s": latency, "extra": {"mode": "text"}}
        out.append({**row, **(changed or {}).get(p, {})})
    return out


def make_db(path, runs: list[tuple]) -> str:
    """A database with runs (key, fields, rows, status[, peak, scores]) as `harness run` leaves them."""
    store = Store(f"sqlite:///{path}", heartbeat_s=0)
    for key, f, rs, status, *more in runs:
        peak = more[0] if more else None
        rid, _, _ = store.start_run(key, f)
        store.add_samples(rid, rs)
        metrics = summarize(rs) if status == "finished" else None
        store.finish_run(rid, status=status, metrics=metrics, official=None, peak_memory_mb=peak)
        for score in (more[1] if len(more) > 1 else []):
            store.add_score(rid, **score)
    store.close()
    return str(path)


def dump(path) -> dict:
    """Everything stored in a database file, for before/after comparisons."""
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("runs", "samples", "scores")}
    finally:
        con.close()


def read(path):
    store = Store(str(path), read_only=True)
    try:
        runs = store.runs()
        return runs, {r["id"]: store.samples(r["id"]) for r in runs}, {r["id"]: store.scores(r["id"]) for r in runs}
    finally:
        store.close()


EVENS, ODDS = list(range(0, N, 2)), list(range(1, N, 2))


@pytest.fixture
def shards(tmp_path):
    """Two shares of one run (key K), as two nodes' `--shard I/2` databases leave them: partial."""
    a = make_db(tmp_path / "a.db", [("K" * 64, fields(), rows(EVENS, wrong={2}, latency=0.1), "partial", 900.0)])
    b = make_db(tmp_path / "b.db", [("K" * 64, fields(), rows(ODDS, wrong={3, 7}, latency=0.2), "partial", 1200.0)])
    return a, b


def test_two_partial_shards_merge_into_one_finished_scored_run(shards, tmp_path):
    into = str(tmp_path / "c.db")
    report = merge(list(shards), into)
    runs, samples, scores = read(into)
    assert len(runs) == 1
    run = runs[0]
    got = samples[run["id"]]
    assert [r["position"] for r in got] == list(range(N)) and run["n_samples"] == N
    assert run["status"] == "finished" and run["finished_at"] and run["error"] is None
    # Metrics: summarize over the union, computed here from the rows written; and a hand count.
    union = rows(EVENS, wrong={2}, latency=0.1) + rows(ODDS, wrong={3, 7}, latency=0.2)
    expected = summarize(union)
    assert {k: v for k, v in run["metrics"].items() if k != "peak_memory_mb"} == expected
    assert run["metrics"]["correct"] == N - 3 and run["metrics"]["accuracy"] == 70.0
    assert run["peak_memory_mb"] == 1200.0 == run["metrics"]["peak_memory_mb"]  # the larger of the two
    # The official score: easyvqa's own rule over the stored answers (7 of 10 are the gold word).
    assert run["official"]["overall"] == {"correct": 7, "total": 10, "accuracy": 70.0}
    (score,) = scores[run["id"]]
    assert (score["kind"], score["scorer"], score["accuracy"]) == ("official", "easyvqa:official", 70.0)
    (merged,) = report.runs
    assert (merged.action, merged.rows_added, merged.rows, merged.status) == ("merged", N, N, "finished")
    assert merged.official_accuracy == 70.0 and merged.not_scored is None


def test_one_shard_stays_partial_and_the_next_completes_it(shards, tmp_path, capsys):
    a, b = shards
    into = str(tmp_path / "c.db")
    assert main(["merge", a, "--into", into]) == 0
    out = capsys.readouterr().out
    assert "copied" in out and "5 of 10 rows, partial (5 planned rows missing)" in out
    (run,), _, _ = read(into)
    assert run["status"] == "partial" and run["n_samples"] == 5 and run["metrics"] is None
    assert main(["merge", b, "--into", into]) == 0
    out = capsys.readouterr().out
    assert f"run {run['id']}: merged" in out and "5 rows added" in out and "official 70.00 %" in out
    (after,), _, scores = read(into)
    assert after["id"] == run["id"] and after["status"] == "finished" and after["n_samples"] == N
    assert after["official"]["overall"]["accuracy"] == 70.0 and len(scores[after["id"]]) == 1


def test_identical_duplicates_are_skipped(tmp_path):
    # Positions 4 and 5 stored by both nodes, with other latencies (they differ between machines).
    a = make_db(tmp_path / "a.db", [("K" * 64, fields(), rows(range(0, 6), latency=0.1), "partial")])
    b = make_db(tmp_path / "b.db", [("K" * 64, fields(), rows(range(4, N), latency=0.9), "partial")])
    report = merge([a, b], str(tmp_path / "c.db"))
    (run,), samples, _ = read(tmp_path / "c.db")
    assert run["n_samples"] == N and run["status"] == "finished" and report.runs[0].rows_added == N
    assert {r["position"]: r["latency_s"] for r in samples[run["id"]]}[4] == 0.1  # the first source's


def test_a_conflicting_duplicate_stops_the_merge_and_writes_nothing(tmp_path, capsys):
    a = make_db(tmp_path / "a.db", [("K" * 64, fields(), rows(range(0, 6)), "partial")])
    b = make_db(tmp_path / "b.db", [("K" * 64, fields(), rows(range(4, N), wrong={4}), "partial")])
    into = make_db(tmp_path / "c.db", [("O" * 64, fields(), rows(range(3)), "partial")])  # holds a run already
    before = (tmp_path / "c.db").read_bytes()
    assert main(["merge", a, b, "--into", into]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("harness: error: run KKKKKKKKKKKK… (cot on easyvqa, zoo:easyvqa-qwen2vl) has different "
                          "answers at positions 4 in ")
    assert "a.db and" in err and "b.db" in err and "answer" in err and err.endswith("nothing was written")
    assert (tmp_path / "c.db").read_bytes() == before
    # A target that did not exist is not created.
    assert main(["merge", a, b, "--into", str(tmp_path / "new.db")]) == 2
    assert not (tmp_path / "new.db").exists()


def test_a_source_differing_from_the_target_writes_nothing(tmp_path):
    changed = {3: {"prediction": "something else"}, 17: {}}
    into = make_db(tmp_path / "c.db", [("K" * 64, fields(), rows(range(0, 5)), "partial")])
    b = make_db(tmp_path / "b.db", [("K" * 64, fields(), rows(range(2, N), changed=changed), "partial"),
                                    ("Z" * 64, fields(), rows(range(N)), "partial")])
    before = dump(into)
    with pytest.raises(MergeError, match=r"different answers at positions 3 in .*c\.db \(the target\) and "
                                         r".*b\.db \(prediction differ\); nothing was written"):
        merge([b], into)
    assert dump(into) == before  # not even the run of the other key was written


def test_runs_of_other_keys_are_copied_with_their_scores(tmp_path, capsys):
    score = {"kind": "judge", "scorer": "judge:gpt@http://x", "accuracy": 55.5, "details": {"overall": {"n": 10}}}
    a = make_db(tmp_path / "a.db", [("A" * 64, fields(), rows(range(N), wrong={0}), "finished", 100.0, [score])])
    b = make_db(tmp_path / "b.db", [("B" * 64, fields(method_config={"x": 1}), rows(EVENS), "partial")])
    into = str(tmp_path / "c.db")
    assert main(["merge", a, b, "--into", into, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_key = {r["key"][0]: r for r in report["runs"]}
    assert by_key["A"]["action"] == "copied" and by_key["A"]["status"] == "finished" and by_key["A"]["rows"] == N
    assert by_key["B"]["action"] == "copied" and by_key["B"]["status"] == "partial" and by_key["B"]["rows"] == 5
    runs, samples, scores = read(into)
    finished = next(r for r in runs if r["key"][0] == "A")
    src_runs, src_samples, _ = read(a)
    assert finished["metrics"] == src_runs[0]["metrics"] and finished["peak_memory_mb"] == 100.0
    assert finished["method_config"] == src_runs[0]["method_config"] and finished["device"] == "cpu"
    assert [(s["kind"], s["scorer"], s["accuracy"], s["details"]) for s in scores[finished["id"]]] == \
        [("judge", "judge:gpt@http://x", 55.5, {"overall": {"n": 10}})]
    keep = lambda r: {k: v for k, v in r.items() if k not in ("id", "run_id")}  # noqa: E731
    assert [keep(r) for r in samples[finished["id"]]] == [keep(r) for r in src_samples[src_runs[0]["id"]]]


def test_merging_again_changes_nothing(shards, tmp_path, capsys):
    a, b = shards
    into = str(tmp_path / "c.db")
    merge([a, b], into)
    before = dump(into)
    report = merge([a, b, a], into)  # the same sources again, one of them twice
    assert [(r.action, r.rows_added, r.status) for r in report.runs] == [("unchanged", 0, "finished")]
    assert dump(into) == before
    # Two finished identical runs (the merged one, and a copy of it) merge to the same finished run.
    copy = str(tmp_path / "copy.db")
    merge([into], copy)
    assert main(["merge", copy, into, "--into", str(tmp_path / "third.db")]) == 0
    assert "1 runs copied, 0 merged, 0 unchanged" in capsys.readouterr().out
    (third,), _, third_scores = read(tmp_path / "third.db")
    (orig,), _, orig_scores = read(into)
    assert third["status"] == "finished" and third["official"] == orig["official"] == third["official"]
    assert len(third_scores[third["id"]]) == 1


def test_superseded_runs_are_skipped(tmp_path):
    path = tmp_path / "a.db"
    store = Store(f"sqlite:///{path}", heartbeat_s=0)
    old, _, _ = store.start_run("K" * 64, fields())
    store.add_samples(old, rows(range(N), wrong=set(range(N))))  # `--fresh` replaced it
    new, _, _ = store.start_run("K" * 64, fields(), fresh=True)
    store.add_samples(new, rows(EVENS))
    store.finish_run(new, status="partial", metrics=None, official=None)
    store.close()
    report = merge([str(path)], str(tmp_path / "c.db"))
    assert report.superseded_skipped == 1
    (run,), samples, _ = read(tmp_path / "c.db")
    assert run["status"] == "partial" and [r["position"] for r in samples[run["id"]]] == EVENS


def test_complete_run_whose_data_is_missing_is_finished_without_an_official_score(tmp_path, capsys):
    gone = str(tmp_path / "not-here")
    a = make_db(tmp_path / "a.db", [("K" * 64, fields(data=gone), rows(EVENS), "partial")])
    b = make_db(tmp_path / "b.db", [("K" * 64, fields(data=gone), rows(ODDS, wrong={1}), "partial")])
    into = str(tmp_path / "c.db")
    assert main(["merge", a, b, "--into", into]) == 0
    out = capsys.readouterr().out.splitlines()
    (run,), _, scores = read(into)
    assert run["status"] == "finished" and run["official"] is None and scores[run["id"]] == []
    assert run["metrics"]["correct"] == N - 1
    line = next(x for x in out if "official score not computed" in x)
    assert line.startswith(f"run {run['id']}: complete, official score not computed (data not found: ")
    assert line.endswith(f"; score it with harness rescore {run['id']} --db {into}")


def test_cli_errors_are_one_line(tmp_path, capsys):
    a = make_db(tmp_path / "a.db", [("K" * 64, fields(), rows(EVENS), "partial")])
    into = str(tmp_path / "c.db")
    assert main(["merge", a, str(tmp_path / "missing.db"), "--into", into]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"harness: error: source {tmp_path / 'missing.db'}: no such database file"
    assert not (tmp_path / "c.db").exists()
    assert main(["merge", a, "--into", a]) == 2
    assert "is the --into database itself" in capsys.readouterr().err
    # A target run still running in a live process (this one) is not merged into.
    store = Store(f"sqlite:///{into}", heartbeat_s=0)
    store.start_run("K" * 64, fields())
    before = dump(into)
    assert main(["merge", a, "--into", into]) == 2
    assert "is running in" in capsys.readouterr().err and dump(into) == before
    store.close()
