import csv
import json
import math
import subprocess
import sys
import textwrap

import pytest

from harness.run.metrics import summarize
from harness.run.reports import export, format_run, format_runs
from harness.run.store import Store

FIELDS = {"method": "cot", "model": "org/Qwen2.5-VL-3B", "benchmark": "m3cot", "split": "test",
          "subset": {"limit": 10, "seed": 0}, "n_planned": 10, "device": "cpu"}


def rows(uids, start=0):
    return [{"uid": u, "position": start + i, "category": "sci", "prediction": f"ans {u}",
             "answer": "A", "extracted": "A", "gold": "A", "correct": True,
             "generated_tokens": 10, "input_tokens": 5, "latency_s": 0.5, "extra": {"k": [1]}}
            for i, u in enumerate(uids)]


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'h.db'}")
    yield s
    s.close()


def test_resume_reuses_run_and_returns_done_uids(store):
    rid, done, resumed = store.start_run("k1", FIELDS)
    assert (done, resumed) == (set(), False)
    store.add_samples(rid, rows(["a", "b"]))
    store.finish_run(rid, status="interrupted", metrics=None, official=None, error="ctrl-c")

    rid2, done2, resumed2 = store.start_run("k1", {**FIELDS, "device": "cuda:0"})
    assert (rid2, done2, resumed2) == (rid, {"a", "b"}, True)
    run = store.run(rid)
    assert run["status"] == "running" and run["device"] == "cuda:0" and run["error"] is None
    assert len(store.runs()) == 1 and run["n_samples"] == 2


def test_fresh_supersedes(store):
    rid, _, _ = store.start_run("k1", FIELDS)
    store.add_samples(rid, rows(["a"]))
    rid2, done, resumed = store.start_run("k1", FIELDS, fresh=True)
    assert rid2 != rid and done == set() and not resumed
    assert store.run(rid)["status"] == "superseded"
    assert len(store.samples(rid)) == 1  # old data kept
    assert [r["id"] for r in store.runs()] == [rid2]
    assert [r["id"] for r in store.runs(include_superseded=True)] == [rid2, rid]
    # A later plain start resumes the new run, never the superseded one.
    assert store.start_run("k1", FIELDS)[0] == rid2


@pytest.mark.parametrize("bad", [{"extra": {"x": object()}},  # not JSON-serialisable
                                 {"position": None}])           # NOT NULL
def test_add_samples_atomic(store, bad):
    rid, _, _ = store.start_run("k1", FIELDS)
    batch = rows(["a", "b", "c"])
    batch[2].update(bad)
    with pytest.raises(Exception):
        store.add_samples(rid, batch)
    assert store.samples(rid) == []


def test_add_samples_idempotent(store):
    rid, _, _ = store.start_run("k1", FIELDS)
    store.add_samples(rid, rows(["a", "b"]))
    store.add_samples(rid, rows(["b", "c"], start=1))  # retry overlapping a stored batch
    got = store.samples(rid)
    assert [s["uid"] for s in got] == ["a", "b", "c"]
    assert got[0]["extra"] == {"k": [1]} and got[0]["correct"] is True
    json.dumps(got)  # plain JSON-serialisable
    assert [s["uid"] for s in store.iter_samples(rid, batch=2)] == ["a", "b", "c"]


def test_unknown_run_error(store):
    with pytest.raises(KeyError, match="no run 42 in .*harness runs"):
        store.run(42)


def test_concurrent_writers(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    code = textwrap.dedent(f"""
        import sys
        from harness.run.store import Store
        s = Store({url!r})
        w = sys.argv[1]
        rid, _, _ = s.start_run("key-" + w, {{"method": "m", "model": "x", "benchmark": "b"}})
        for i in range(200):
            s.add_samples(rid, [{{"uid": f"{{w}}-{{i}}-{{j}}", "position": 2 * i + j}} for j in range(2)])
        s.finish_run(rid, status="finished", metrics={{"n": 400}}, official=None)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, w], stderr=subprocess.PIPE, text=True)
             for w in ("p", "q")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Store(url, read_only=True) as s:
        runs = s.runs()
        assert sorted(r["status"] for r in runs) == ["finished", "finished"]
        assert [r["n_samples"] for r in runs] == [400, 400]


def test_read_only(tmp_path, store):
    rid, _, _ = store.start_run("k1", FIELDS)
    ro = Store(store.url, read_only=True)
    assert ro.run(rid)["method"] == "cot"
    with pytest.raises(PermissionError):
        ro.add_samples(rid, rows(["a"]))
    ro.close()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Store(f"sqlite:///{tmp_path / 'missing.db'}", read_only=True)
    assert not (tmp_path / "missing.db").exists()


def test_summarize():
    samples = [
        {"correct": True, "generated_tokens": 10, "input_tokens": 100, "latency_s": 1.0, "category": "a"},
        {"correct": True, "generated_tokens": 20, "input_tokens": 100, "latency_s": 1.0, "category": "a"},
        {"correct": False, "generated_tokens": 60, "input_tokens": 100, "latency_s": 2.0, "category": "b"},
        {"correct": None, "error": "undecodable image", "category": "b"},
    ]
    m = summarize(samples, wall_seconds=5)
    assert (m["n"], m["n_errors"], m["correct"]) == (4, 1, 2)
    assert m["accuracy"] == 50.0
    assert m["accuracy_se"] == round(100 * math.sqrt(0.25 / 4), 4) == 25.0
    assert m["mean_generated_tokens"] == 30.0
    assert m["mean_generated_tokens_correct"] == 15.0
    assert m["mean_input_tokens"] == 100.0
    assert m["mean_latent_steps"] is None
    assert m["samples_per_second"] == 0.75  # 3 non-error samples / 4 s of method time
    assert m["by_category"]["b"] == {"n": 2, "correct": 0, "accuracy": 0.0}
    assert summarize([])["accuracy"] is None
    assert summarize([{"correct": False, "generated_tokens": 3}])["mean_generated_tokens_correct"] is None


def test_export_roundtrip_and_reports(store, tmp_path):
    rid, _, _ = store.start_run("k1", FIELDS)
    store.add_samples(rid, rows(["a", "b"]))
    store.finish_run(rid, status="finished", metrics=summarize(store.samples(rid)),
                     official={"Overall": 1.0, "sci": {"acc": 1.0}})

    assert export(store, tmp_path / "out/runs.csv", fmt="csv", what="runs") == 1
    with open(tmp_path / "out/runs.csv", newline="") as f:
        (r,) = list(csv.DictReader(f))
    assert r["id"] == str(rid) and r["metrics.accuracy"] == "100.0"
    assert r["official.sci.acc"] == "1.0" and json.loads(r["subset"]) == FIELDS["subset"]

    assert export(store, tmp_path / "s.jsonl", fmt="jsonl", what="samples", run_ids=[rid]) == 2
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert lines == [{"method": "cot", "model": FIELDS["model"], "benchmark": "m3cot", **s}
                     for s in store.samples(rid)]

    export(store, tmp_path / "s.csv", fmt="csv", what="samples")
    with open(tmp_path / "s.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [g["uid"] for g in got] == ["a", "b"] and json.loads(got[0]["extra"]) == {"k": [1]}

    with pytest.raises(KeyError):  # failure leaves neither output nor temp file behind
        export(store, tmp_path / "bad/x.csv", what="samples", run_ids=[999])
    assert list((tmp_path / "bad").iterdir()) == []

    table = format_runs(store.runs())
    assert "Qwen2.5-VL-3B" in table and "100.00 ± 0.00" in table
    detail = format_run(store.run(rid))
    assert "official:" in detail and "per category:" in detail


def test_default_url_and_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HARNESS_DB", raising=False)
    Store().close()
    assert (tmp_path / "results/harness.db").is_file()
    monkeypatch.setenv("HARNESS_DB", str(tmp_path / "other/h.db"))  # a bare path also works
    with Store() as s:
        assert s.url.endswith("other/h.db") and (tmp_path / "other/h.db").is_file()


def test_scores_are_kept_per_kind_and_replaced_per_scorer(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    run_id, _, _ = store.start_run("k", {"method": "direct", "model": "m", "benchmark": "mathvista"})
    store.add_score(run_id, kind="rule-based", scorer="mathvista:rules", accuracy=40.0, details={"a": 1})
    store.add_score(run_id, kind="judge", scorer="judge:m@u", accuracy=50.0, details={})
    store.add_score(run_id, kind="judge", scorer="judge:m@u", accuracy=55.0, details={})  # rescored
    kinds = [(s["kind"], s["accuracy"]) for s in store.scores(run_id)]
    assert kinds == [("rule-based", 40.0), ("judge", 55.0)]
    assert [s["accuracy"] for s in store.scores(kind="judge")] == [55.0]
    with pytest.raises(ValueError, match="score kind"):
        store.add_score(run_id, kind="vibes", scorer="x", accuracy=1.0, details={})
    with pytest.raises(KeyError):
        store.add_score(run_id + 7, kind="judge", scorer="x", accuracy=1.0, details={})


# -- exports to standard output, --out a folder ------------------------------------------------------------
def test_export_to_standard_output(store, capsys):
    rid, _, _ = store.start_run("k1", FIELDS)
    store.add_samples(rid, rows(["a", "b"]))
    store.finish_run(rid, status="finished", metrics=summarize(store.samples(rid)), official=None)
    capsys.readouterr()
    for out in (None, "-"):
        assert export(store, out, fmt="csv", what="runs") == 1
        (r,) = list(csv.DictReader(capsys.readouterr().out.splitlines()))
        assert r["id"] == str(rid) and r["status"] == "finished"
    assert export(store, None, fmt="jsonl", what="samples") == 2
    assert [json.loads(x)["uid"] for x in capsys.readouterr().out.splitlines()] == ["a", "b"]
    with pytest.raises(KeyError):  # a bad run id: nothing printed, not even a header
        export(store, None, what="samples", run_ids=[rid, 999])
    assert capsys.readouterr().out == ""


def test_export_out_a_folder_is_refused_and_nothing_is_written(store, tmp_path):
    store.start_run("k1", FIELDS)
    folder = tmp_path / "exports"
    folder.mkdir()
    with pytest.raises(ValueError, match=f"--out {folder} is a directory; give a file name"):
        export(store, folder, fmt="csv")
    assert list(folder.iterdir()) == []
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        export(store, tmp_path / "a-file" / "runs.csv")


def test_export_replaces_a_file_only_when_complete(store, tmp_path, monkeypatch):
    import harness.run.reports as reports

    rid, _, _ = store.start_run("k1", FIELDS)
    store.add_samples(rid, rows(["a", "b"]))
    out = tmp_path / "s.csv"
    out.write_text("the previous export\n")

    def broken(store_, runs):
        yield {"run_id": rid, "uid": "a"}
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(reports, "_sample_rows", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export(store, out, what="samples")
    assert out.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("h.db")) == ["s.csv"], "no temp file left"


def test_export_cli_without_out_writes_csv_to_stdout(store, capsys):
    from harness.cli import main

    rid, _, _ = store.start_run("k1", FIELDS)
    store.add_samples(rid, rows(["a", "b"]))
    store.finish_run(rid, status="finished", metrics=summarize(store.samples(rid)), official=None)
    assert main(["export", "--db", store.url]) == 0
    (r,) = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert r["id"] == str(rid)
    assert main(["export", "--db", store.url, "--what", "samples", "--format", "jsonl", "--out", "-"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_runs_counts_only_the_runs_it_lists(store):
    a, _, _ = store.start_run("ka", FIELDS)
    b, _, _ = store.start_run("kb", {**FIELDS, "method": "direct"})
    store.add_samples(a, rows(["x", "y", "z"]))
    store.add_samples(b, rows(["x"]))
    assert {r["id"]: r["n_samples"] for r in store.runs()} == {a: 3, b: 1}
    assert [r["n_samples"] for r in store.runs(method="direct")] == [1]
    assert store.run(a)["n_samples"] == 3
