"""The leaderboard: queries, reported numbers, exports, statistics and the app's handlers, against a
database filled by real tiny runs (and small hand-made databases where exact numbers are needed)."""
from __future__ import annotations

import csv
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.run.store import Store

SHARED_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "paper_results.csv"
HEADER = "source,method,backbone,benchmark,metric,value,note\n"


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory, tiny_model_dirs):
    """Three real tiny runs on the M3CoT fixture (two methods on Qwen2-VL, one on LLaVA), a judge
    scoring of one of them (what `harness rescore` adds), and a small paper CSV imported."""
    from harness.testing.fixtures import write_all
    from harness.run.runner import RunSpec, execute

    root = tmp_path_factory.mktemp("leaderboard")
    data = write_all(root / "data", n=8, seed=0)
    url = f"sqlite:///{root / 'h.db'}"
    ids = {}
    for method, family in (("direct", "qwen2-vl"), ("cot", "qwen2-vl"), ("direct", "llava")):
        report = execute(RunSpec(method=method, bench="m3cot", model=str(tiny_model_dirs[family]),
                                 data=str(data["m3cot"]), limit=4, batch_size=2, db=url, progress=False,
                                 method_options={"max_new_tokens": 8}))
        ids[(method, family)] = report.run_id
    store = Store(url)
    store.add_score(ids[("cot", "qwen2-vl")], kind="judge", scorer="judge:test", accuracy=75.0,
                    details={"overall": {"accuracy": 75.0, "total": 4}})
    store.close()
    paper = root / "paper.csv"
    paper.write_text(HEADER +
                     "Paper A,Standard CoT,qwen2-vl,M3CoT,accuracy,40.0,matches run cot/qwen2-vl\n"
                     "Paper A,Standard CoT,qwen2-vl,M3CoT,tokens_on_correct,120.5,\n"
                     "Paper A,Non-CoT,Other-7B,M3CoT,accuracy,33.0,no such backbone here\n"
                     "Paper A,CCoT,qwen2-vl,M3CoT,accuracy,44.0,no such method here\n")
    assert main(["import-paper-results", str(paper), "--db", url]) == 0
    return {"url": url, "root": root, "ids": ids, "data": data, "paper": paper}


@pytest.fixture(scope="module")
def db(tiny_db):
    from leaderboard.queries import LeaderboardDB

    d = LeaderboardDB(tiny_db["url"])
    yield d
    d.close()


# -- main table ---------------------------------------------------------------------------------------
def test_table_rows_are_runs_times_scorings_with_their_stored_numbers(tiny_db, db):
    from leaderboard.queries import Filters

    table = db.table(Filters(include_reported=False))
    store = Store(tiny_db["url"], read_only=True)
    runs = {r["id"]: r for r in store.runs()}
    scores = store.scores()
    assert len(table) == len(scores) == 4  # 3 official + 1 judge: kinds never share a row
    for rec in table.to_dict("records"):
        run = runs[rec["run_id"]]
        score = next(s for s in scores if s["run_id"] == rec["run_id"] and s["kind"] == rec["kind"])
        assert rec["accuracy"] == pytest.approx(score["accuracy"])
        assert rec["method"] == run["method"] and rec["benchmark"] == "m3cot"
        assert rec["backbone"] == Path(run["model"]).name
        m = run["metrics"]
        assert rec["n"] == 4 == m["n"]
        assert rec["tokens"] == pytest.approx(m["mean_generated_tokens"])
        assert rec["samples_per_s"] == pytest.approx(m["samples_per_second"])
        assert rec["latent_steps"] == pytest.approx(m["mean_latent_steps"])
        p = score["accuracy"] / 100
        assert rec["se"] == pytest.approx(100 * np.sqrt(p * (1 - p) / 4), abs=0.01)
    judge = table[table["kind"] == "judge"]
    assert list(judge["run_id"]) == [tiny_db["ids"][("cot", "qwen2-vl")]] and judge["accuracy"].iloc[0] == 75.0
    store.close()


def test_filters_change_the_table(tiny_db, db):
    from leaderboard.queries import Filters

    def ids(**kw):
        return sorted(db.table(Filters.make(include_reported=False, **kw))["run_id"].tolist())

    every = ids()
    q_direct, q_cot, l_direct = (tiny_db["ids"][k] for k in (("direct", "qwen2-vl"), ("cot", "qwen2-vl"),
                                                             ("direct", "llava")))
    assert ids(methods=["direct"]) == sorted([q_direct, l_direct])
    assert ids(backbones=["QWEN2-VL"]) == sorted([q_direct, q_cot, q_cot])  # case-insensitive; cot has 2 kinds
    assert ids(backbones=["qwen2-vl"], kinds=["official"]) == sorted([q_direct, q_cot])
    assert ids(kinds=["judge"]) == [q_cot]
    assert ids(benchmarks=["mmstar"]) == []
    assert ids(since="2000-01-01") == every and ids(until="2000-01-01") == []
    assert ids(methods=["direct' OR '1'='1"]) == []  # a value, never SQL
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        Filters.make(since="last tuesday")
    with pytest.raises(ValueError, match="scoring kind"):
        Filters.make(kinds=["made-up"])


def test_reported_numbers_beside_measured_only_on_a_full_match(tiny_db, db):
    from leaderboard.queries import Filters

    table = db.table(Filters())
    cot = table[(table["method"] == "cot") & (table["kind"] == "official")].iloc[0]
    assert cot["reported"] == 40.0 and cot["reported_tokens_correct"] == 120.5
    assert cot["delta"] == pytest.approx(cot["accuracy"] - 40.0)
    assert "Paper A" in cot["source"]
    direct = table[(table["method"] == "direct") & (table["kind"] == "official")]
    assert direct["reported"].isna().all()  # Non-CoT is reported on another backbone only
    own = table[table["kind"] == "reported"]
    assert sorted(zip(own["method"], own["backbone"], own["reported"])) == [
        ("CCoT", "qwen2-vl", 44.0), ("direct", "Other-7B", 33.0)]  # our name where the mapping knows it
    assert own["run_id"].isna().all() and own["accuracy"].isna().all()  # never presented as measured
    only_reported = db.table(Filters.make(kinds=["reported"]))
    assert set(only_reported["kind"]) == {"reported"}
    assert db.table(Filters.make(kinds=["official"]))["kind"].eq("official").all()


def test_best_value_per_column_within_benchmark_and_kind():
    from leaderboard.queries import best_mask

    t = pd.DataFrame({"benchmark": ["a", "a", "a", "b", "a"], "kind": ["official"] * 3 + ["official", "judge"],
                      "accuracy": [50.0, 60.0, 60.0, 10.0, 99.0], "tokens": [100.0, 50.0, None, 500.0, 1.0],
                      "tokens_correct": [None] * 5, "samples_per_s": [1.0, 2.0, 3.0, 0.1, 9.0]})
    mask = best_mask(t)
    assert mask["accuracy"].tolist() == [False, True, True, True, True]  # ties all marked; groups apart
    assert mask["tokens"].tolist() == [False, True, False, True, True]  # fewer is better
    assert mask["samples_per_s"].tolist() == [False, False, True, True, True]
    assert not mask["tokens_correct"].any()


def test_matrix_layout(db):
    from leaderboard.queries import Filters, matrix

    mx = matrix(db.table(Filters()))
    assert {"method", "backbone", "kind", "m3cot"} <= set(mx.columns)
    cot = mx[(mx["method"] == "cot") & (mx["kind"] == "judge")]
    assert cot["m3cot"].iloc[0].startswith("75.0 ± ")
    assert mx["kind"].str.startswith("reported").any()


# -- reported numbers import ------------------------------------------------------------------------------
def test_import_is_idempotent_and_updates_changed_values(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    f = tmp_path / "p.csv"
    f.write_text(HEADER + "S,LaRe,Qwen2.5-0.5B-Instruct,MMStar,accuracy,32.2,\n")
    assert main(["import-paper-results", str(f), "--db", url]) == 0
    assert "1 added" in capsys.readouterr().out
    assert main(["import-paper-results", str(f), "--db", url]) == 0
    assert "0 added, 0 updated, 1 unchanged" in capsys.readouterr().out
    f.write_text(HEADER + "S,LaRe,Qwen2.5-0.5B-Instruct,MMStar,accuracy,33.0,erratum\n")
    assert main(["import-paper-results", str(f), "--db", url]) == 0
    assert "0 added, 1 updated" in capsys.readouterr().out
    rows = sqlite3.connect(tmp_path / "r.db").execute("SELECT value, note FROM reported_results").fetchall()
    assert rows == [(33.0, "erratum")]


@pytest.mark.parametrize("body, message", [
    ("S,LaRe,Q,MMStar,accuracy,high,\n", "not a number"),
    ("S,,Q,MMStar,accuracy,1,\n", "empty method"),
    ("S,LaRe,Q,MMStar,accuracy,1,\nS,LaRe,Q,MMStar,accuracy,2,\n", "same source"),
])
def test_import_rejects_bad_rows_and_writes_nothing(tmp_path, capsys, body, message):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    f = tmp_path / "p.csv"
    f.write_text(HEADER + "S,LaRe,Q,POPE,accuracy,50,\n" + body)
    assert main(["import-paper-results", str(f), "--db", url]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()  # validated before the database is touched
    f.write_text("a,b\n1,2\n")
    assert main(["import-paper-results", str(f), "--db", url]) == 2
    assert "missing column" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason=f"{SHARED_CSV} not present")
def test_import_the_papers_csv(tmp_path):
    from leaderboard.paper_results import import_csv
    from leaderboard.queries import LeaderboardDB

    url = f"sqlite:///{tmp_path / 'r.db'}"
    n = sum(1 for _ in csv.DictReader(SHARED_CSV.open()))
    assert import_csv(SHARED_CSV, url) == {"added": n, "updated": 0, "unchanged": 0}
    assert import_csv(SHARED_CSV, url) == {"added": 0, "updated": 0, "unchanged": n}
    rep = LeaderboardDB(url).reported()
    std = rep[(rep["method"] == "Standard CoT")]
    assert set(std["our_method"]) == {"cot"} and set(std["our_benchmark"]) >= {"mmstar", "mmbench"}
    assert rep[rep["method"] == "CCoT"]["our_method"].isna().all()


# -- old databases, read-only, indexes -----------------------------------------------------------------
def test_a_database_from_before_scores_and_reported_tables(tiny_db, tmp_path):
    from leaderboard.queries import Filters, LeaderboardDB

    old = tmp_path / "old.db"
    src = Path(tiny_db["url"].removeprefix("sqlite:///"))
    con = sqlite3.connect(src)
    con.execute(f"VACUUM INTO '{old}'")
    con.close()
    con = sqlite3.connect(old)
    con.executescript("DROP TABLE scores; DROP TABLE reported_results; DROP INDEX ix_samples_run_position;")
    con.close()
    before = old.read_bytes()
    db = LeaderboardDB(str(old))
    assert not db.has_scores and not db.has_reported
    table = db.table(Filters())
    assert len(table) == 3 and set(table["kind"]) == {"official"}  # from each run's official block
    assert db.reported().empty
    db.close()
    assert old.read_bytes() == before  # read-only: not even the missing index was added
    Store(str(old)).close()  # a writer brings the schema up to date: tables and the new index
    names = {r[0] for r in sqlite3.connect(old).execute("SELECT name FROM sqlite_master")}
    assert {"scores", "reported_results", "ix_samples_run_position"} <= names


def test_the_leaderboard_cannot_write(tiny_db, db):
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    with pytest.raises(OperationalError, match="readonly|read-only|query_only"):
        with db.engine.begin() as conn:
            conn.execute(text("DELETE FROM runs"))
    with pytest.raises(PermissionError):
        db.store.add_score(1, kind="judge", scorer="x", accuracy=1.0, details={})
    with pytest.raises(FileNotFoundError):
        from leaderboard.queries import LeaderboardDB

        LeaderboardDB(str(tiny_db["root"] / "missing.db"))
    assert not (tiny_db["root"] / "missing.db").exists()


def test_help_does_not_import_gradio():
    code = "import sys; from harness.cli import build_parser; build_parser(); print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- exports -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, suffix", [("csv", "csv"), ("md", "md"), ("latex", "tex"), ("html", "html")])
def test_export_formats_from_the_cli(tiny_db, tmp_path, capsys, fmt, suffix):
    out = tmp_path / f"board.{suffix}"
    args = ["export", "--db", tiny_db["url"], "--out", str(out), "--method", "cot"]
    assert main(args + (["--what", "leaderboard", "--format", "csv"] if fmt == "csv" else [])) == 0
    assert "leaderboard table" in capsys.readouterr().out
    text = out.read_text()
    if fmt == "csv":
        rows = list(csv.DictReader(text.splitlines()))
        measured = [r for r in rows if r["kind"] != "reported"]
        assert sorted(r["kind"] for r in measured) == ["judge", "official"]
        assert all(r["method"] == "cot" for r in rows) and "accuracy" in rows[0] and "best" in rows[0]
    elif fmt == "md":
        assert "| run | method |" in text and "**75.00**" in text  # the judge row is best of its kind
    elif fmt == "latex":
        assert r"\begin{tabular}" in text and r"\textbf{75.00}" in text and r"acc \%" in text
    else:
        assert text.startswith("<!DOCTYPE html>") and '<td class="best">75.00</td>' in text
        assert "<link" not in text and "<script" not in text  # self-contained


def test_export_keeps_runs_and_samples_exports(tiny_db, tmp_path, capsys):
    assert main(["export", "--db", tiny_db["url"], "--out", str(tmp_path / "runs.csv")]) == 0
    assert "3 runs rows" in capsys.readouterr().out
    assert main(["export", "--db", tiny_db["url"], "--what", "samples", "--out", str(tmp_path / "s.jsonl")]) == 0
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 12
    assert main(["export", "--db", tiny_db["url"], "--what", "samples", "--format", "html",
                 "--out", str(tmp_path / "s.html")]) == 2
    assert "leaderboard table" in capsys.readouterr().err
    assert main(["export", "--db", tiny_db["url"], "--out", str(tmp_path / "x.md"), "--since", "yesterday"]) == 2


def test_exports_escape_what_they_print():
    from leaderboard.exports import render
    from leaderboard.queries import COLUMNS

    row = dict.fromkeys(COLUMNS)
    row.update(run_id=1, method="<script>alert(1)</script>", backbone="a_b & c%", benchmark="m|x", kind="official",
               scorer="s", accuracy=50.0)
    table = pd.DataFrame([row], columns=COLUMNS)
    html = render(table, "html")
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tex = render(table, "latex")
    assert r"a\_b \& c\%" in tex
    md = render(table, "md")
    assert r"m\|x" in md and r"\<script\>" in md


# -- statistics and comparing runs -----------------------------------------------------------------------
@pytest.mark.parametrize("b, c", [(0, 0), (3, 0), (5, 9), (12, 30), (200, 260), (1, 1)])
def test_mcnemar_exact_equals_the_binomial_test(b, c):
    from scipy.stats import binomtest

    from harness.analysis.paired import mcnemar_exact

    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_paired_bootstrap_equals_its_definition():
    from harness.analysis.paired import paired_bootstrap

    rng = np.random.default_rng(1)
    a = (rng.random(60) < 0.4).astype(float)
    b = np.where(rng.random(60) < 0.3, 1 - a, a)
    got = paired_bootstrap(a, b, n_resamples=2500, seed=7)
    # the definition, written plainly: the same index draws applied to both runs at once
    ref_rng = np.random.default_rng(7)
    diffs = []
    for start in range(0, 2500, 1000):
        idx = ref_rng.integers(0, 60, size=(min(1000, 2500 - start), 60))
        diffs += [100 * (b[i].mean() - a[i].mean()) for i in idx]
    diffs = np.array(diffs)
    assert got.diff == pytest.approx(100 * (b.mean() - a.mean()))
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])))
    assert got.p_value == pytest.approx(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))
    same = paired_bootstrap(a, a, n_resamples=200)
    assert same.diff == 0 and same.p_value == 1.0


def test_compare_runs_counts_flips_on_shared_samples(tmp_path):
    from leaderboard.compare import compare_runs, describe
    from leaderboard.queries import LeaderboardDB

    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    fields = {"method": "m", "model": "x/Model", "benchmark": "b"}
    a = store.start_run("ka", fields)[0]
    b = store.start_run("kb", fields)[0]
    # A right on u0..u5, B right on u3..u9; u9 only in B, u8 an error row in A
    store.add_samples(a, [{"uid": f"u{i}", "position": i, "correct": i < 6, "extracted": "A", "gold": "A"}
                          for i in range(8)] + [{"uid": "u8", "position": 8, "correct": True, "error": "BadImage"}])
    store.add_samples(b, [{"uid": f"u{i}", "position": i, "correct": i >= 3, "extracted": "B", "gold": "A"}
                          for i in range(10)])
    store.close()
    db = LeaderboardDB(url)
    result = compare_runs(db, a, b, n_resamples=500)
    s = result["summary"]
    assert (s["shared"], s["right_to_wrong"], s["wrong_to_right"], s["both_right"], s["both_wrong"]) == (9, 3, 3, 3, 0)
    assert sorted(result["flips"]["uid"]) == ["u0", "u1", "u2", "u6", "u7", "u8"]
    assert s["mcnemar_p"] == pytest.approx(1.0) and s["diff"] == pytest.approx(0.0)
    assert "McNemar exact p" in describe(s)


# -- the app, built and queried -----------------------------------------------------------------------
def test_app_builds_and_its_handlers_answer(tiny_db, db):
    from leaderboard import app as lb

    built = lb.build_app(db, {"m3cot": str(tiny_db["data"]["m3cot"])})
    assert built.title == "latent-cot-harness leaderboard" and not built.analytics_enabled
    filters = lb.filters_from(lb.ALL, ["cot"], [], ["official"], "", "", False, True)
    table = db.table(filters)
    styled = lb.styled_table(table)
    html = styled.to_html()
    assert "font-weight: 700" in html  # the best cells are marked
    assert len(table[table["kind"] != "reported"]) == 1
    tok, lat = lb.plot_points(db.table(lb.filters_from(lb.ALL, [], [], [], "", "", False, True)),
                              "official", "all", False)
    assert len(tok) == len(lat) == 3 and set(tok["method"]) == {"direct", "cot"}  # one point per run

    run_id = tiny_db["ids"][("cot", "qwen2-vl")]
    config, env, scores, cats, cat_choices, head = lb.run_page(db, run_id)
    assert config["method"] == "cot" and "library_versions" in env and set(scores["kind"]) == {"official", "judge"}
    assert cats["n"].sum() == 4 and cat_choices
    page, info = lb.sample_page(db, run_id, False, False, lb.ALL, 1)
    assert len(page) == 4 and "4 samples match" in info
    assert {"prompt", "prediction", "extracted", "gold", "correct", "generated_tokens", "latency_s"} <= set(page)
    wrong, _ = lb.sample_page(db, run_id, True, False, lb.ALL, 1)
    assert (wrong["correct"] != True).all()  # noqa: E712
    one_cat, _ = lb.sample_page(db, run_id, False, False, cat_choices[0], 1)
    assert set(one_cat["category"]) <= {cat_choices[0], ""}
    errors, info = lb.sample_page(db, run_id, False, True, lb.ALL, 1)
    assert len(errors) == 0 and "0 samples" in info

    run = db.run(run_id)
    images, note = lb.ImageSource({"m3cot": str(tiny_db["data"]["m3cot"])}).images(run, int(page["position"].iloc[0]))
    assert note == "" and images and images[0].size[0] > 0
    images, note = lb.ImageSource({"m3cot": str(tiny_db["data"]["m3cot"])}).images(
        {**run, "data_fingerprint": "0000"}, 0)
    assert images == [] and "not the data this run scored" in note
    assert "--data m3cot=PATH" in lb.ImageSource({}).images(run, 0)[1]
    with pytest.raises(ValueError, match="BENCH=PATH"):
        lb.parse_data_args(["m3cot"])


def test_app_export_files_are_not_beside_the_database(tiny_db, db):
    from leaderboard import app as lb

    built = lb.build_app(db)
    assert Path(built.export_dir).resolve() != Path(tiny_db["root"]).resolve()
    assert not str(Path(built.export_dir).resolve()).startswith(str(Path(tiny_db["root"]).resolve()))


# -- the command: ports, standard output, run pickers that follow the database -------------------------
def _small_db(path: Path, n_runs: int = 2) -> str:
    store = Store(str(path), heartbeat_s=0)
    for k in range(n_runs):
        add_finished_run(store, f"k{k}")
    store.close()
    return str(path)


def add_finished_run(store: Store, key: str) -> int:
    run_id, _, _ = store.start_run(key, {"method": "direct", "model": "org/Tiny-VL", "benchmark": "m3cot"})
    store.add_samples(run_id, [{"uid": "u1", "position": 0, "category": "sci", "prediction": "A",
                                "extracted": "A", "gold": "A", "correct": True, "generated_tokens": 3}])
    store.finish_run(run_id, status="finished", metrics={"n": 1, "accuracy": 100.0, "by_category": {
        "sci": {"n": 1, "correct": 1, "accuracy": 100.0}}}, official=None)
    store.add_score(run_id, kind="official", scorer="m3cot:official", accuracy=100.0,
                    details={"overall": {"accuracy": 100.0, "total": 1}})
    return run_id


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_leaderboard_on_a_port_in_use_is_one_line(tmp_path, capsys):
    import socket

    db = _small_db(tmp_path / "h.db")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["leaderboard", "--db", db, "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: "), err
    assert f"port {port}" in err[0] and "already in use" in err[0] and "--port" in err[0]
    assert main(["leaderboard", "--db", db, "--port", "0"]) == 2
    assert "not a port number" in capsys.readouterr().err


def test_leaderboard_export_to_standard_output(tmp_path, capsys):
    db = _small_db(tmp_path / "h.db")
    assert main(["export", "--db", db, "--what", "leaderboard", "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert out.lstrip().startswith("#") and "| direct |" in out.replace("\\|", "|") and "wrote" not in out
    assert main(["export", "--db", db, "--what", "leaderboard", "--out", "-"]) == 0  # csv by default
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {r["kind"] for r in rows} == {"official"} and len(rows) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.db"]


def test_leaderboard_export_out_a_folder_writes_nothing(tmp_path, capsys):
    db = _small_db(tmp_path / "h.db")
    folder = tmp_path / "site"
    folder.mkdir()
    assert main(["export", "--db", db, "--format", "html", "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"harness: error: --out {folder} is a directory; give a file name (e.g. {folder / 'export.csv'})"]
    assert list(folder.iterdir()) == []


def test_run_pickers_follow_the_database_and_take_any_run_id(tmp_path):
    from leaderboard import app as lb
    from leaderboard.queries import LeaderboardDB

    path = tmp_path / "h.db"
    db_url = _small_db(path)
    db = LeaderboardDB(db_url)
    built = lb.build_app(db)
    store = Store(db_url, heartbeat_s=0)
    late = add_finished_run(store, "late")  # finished after the app was built
    store.close()
    pick, a, b = lb.run_picker_updates(db, 2, None, "")
    assert late in [v for _, v in pick["choices"]] and pick["value"] == 2
    assert a["value"] == 2 and b["value"] == late  # empty pickers get the newest runs
    picker = next(c for c in built.blocks.values() if getattr(c, "elem_id", None) == "run-pick")
    assert picker.preprocess(late) == late  # a value that is not among the startup choices is accepted
    assert lb.run_id_of("12 · cot · x") == 12 and lb.run_id_of("#7") == 7 and lb.run_id_of(None) is None
    db.close()


SERVE_AND_ADD = """
import json, sys, time, urllib.request
port, db, late_key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for _ in range(600):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
        break
    except Exception:
        time.sleep(0.1)
sys.path.insert(0, sys.argv[4])
from test_leaderboard import add_finished_run
from harness.run.store import Store
store = Store(db, heartbeat_s=0)
late = add_finished_run(store, late_key)
store.close()
from gradio_client import Client
client = Client(f"http://127.0.0.1:{port}/", verbose=False)
head = client.predict(late, api_name="/show_run")[5]
print(json.dumps({"late": late, "head": head}))
"""


def test_the_served_leaderboard_opens_a_run_finished_after_it_started_and_cleans_up(tmp_path):
    """A real server (a subprocess): no Gradio banner or share hint, a run added after startup opens, and
    the temporary folder (Gradio's cache, exports) is gone when it stops."""
    import os
    import signal
    import json

    db = _small_db(tmp_path / "h.db")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("GRADIO_TEMP_DIR", None)
    # Started with SIGINT ignored, as a background job of a non-interactive script is (bash does that, and
    # CI ran the suite so): the server must still stop on SIGINT (it hung here before it installed its handler).
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "leaderboard", "--db", db, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        client = subprocess.run([sys.executable, "-c", SERVE_AND_ADD, str(port), db, "late",
                                 str(Path(__file__).parent)], capture_output=True, text=True, timeout=240)
        assert client.returncode == 0, client.stderr[-3000:]
        got = json.loads(client.stdout.strip().splitlines()[-1])
        assert f"Run {got['late']}:" in got["head"] and "finished" in got["head"]
        assert [p.name.startswith("harness-leaderboard-") for p in tmp.iterdir()] == [True]
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=180)  # a loaded CI machine starts gradio slowly
    assert server.returncode == 0, err[-3000:]
    assert out.splitlines()[0] == f"leaderboard: http://127.0.0.1:{port}/  (read-only; Ctrl-C stops it)"
    assert "share=True" not in out + err and "Running on local URL" not in out + err
    assert "Traceback" not in err
    assert list(tmp.iterdir()) == [], "the temporary folder is removed when the server stops"
