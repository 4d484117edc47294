"""The served leaderboard in headless Chromium: the runs appear in the table, a filter changes it,
and a screenshot is saved under the test's output folder.

Needs Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it) and Playwright's Python package. Without
the browser the test is skipped, unless ``HARNESS_REQUIRE_BROWSER=1`` (CI), where it fails.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("HARNESS_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling home on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need_browser():
    missing = None
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        missing = f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright Python package is missing (pip install playwright)"
    if missing:
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HARNESS_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dirs):
    """Real tiny runs (two methods on Qwen2-VL, one on LLaVA), served on 127.0.0.1 at a free port."""
    _need_browser()
    from harness.testing.fixtures import write_all
    from harness.run.runner import RunSpec, execute
    from leaderboard.app import build_app, launch
    from leaderboard.queries import LeaderboardDB

    root = tmp_path_factory.mktemp("served")
    data = write_all(root / "data", n=6, seed=0)
    url = f"sqlite:///{root / 'h.db'}"
    for method, family in (("direct", "qwen2-vl"), ("cot", "qwen2-vl"), ("direct", "llava")):
        execute(RunSpec(method=method, bench="m3cot", model=str(tiny_model_dirs[family]), data=str(data["m3cot"]),
                        limit=4, batch_size=2, db=url, progress=False, method_options={"max_new_tokens": 8}))
    db = LeaderboardDB(url)
    app = build_app(db, {"m3cot": str(data["m3cot"])})
    port = _free_port()
    _, local_url, _ = launch(app, host="127.0.0.1", port=port, block=False)  # returns once it answers
    assert local_url.startswith(f"http://127.0.0.1:{port}")
    yield local_url
    app.close()
    db.close()


def test_runs_appear_and_a_filter_changes_the_table(served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(served)
            table = page.locator("#main-table")
            expect(table).to_contain_text("llava", timeout=60_000)
            rows = table.locator("tbody tr")
            before = table.inner_text()
            assert before.count("m3cot:official") == 3 and "qwen2-vl" in before and "cot" in before

            page.locator("#filter-method").get_by_label("cot", exact=True).check()
            expect(table).not_to_contain_text("llava", timeout=30_000)
            after = table.inner_text()
            assert after.count("m3cot:official") == 1 and "direct" not in after
            assert rows.count() >= 1

            shot = tmp_path / "leaderboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")

            page.get_by_role("tab", name="Run").click()
            samples = page.locator("#sample-table")
            expect(samples).to_contain_text("-test-", timeout=30_000)  # the fixture's sample uids
            samples.locator("[role=gridcell]").filter(has_text="-test-").first.click()  # a row: its image, its record
            expect(page.locator("#sample-images img").first).to_be_visible(timeout=30_000)
            expect(page.locator("#sample-detail")).to_contain_text("prediction", timeout=30_000)
            run_shot = tmp_path / "run-page.png"
            page.screenshot(path=str(run_shot), full_page=True)
            print(f"screenshot: {run_shot}")
        finally:
            browser.close()


def test_the_demo_database_in_the_browser(tmp_path):
    """The leaderboard over a demo database: `$HARNESS_DEMO_DB` (the README's screenshot is taken on the
    full `harness demo` database this way, into `$HARNESS_SCREENSHOT_DIR`), else a reduced demo run
    here. The easy-VQA rows are the zoo model's, so the table shows real differences between methods."""
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    from harness.cli import main
    from leaderboard.app import build_app, launch
    from leaderboard.queries import LeaderboardDB

    url = os.environ.get("HARNESS_DEMO_DB")
    if not url:
        out = tmp_path / "demo"
        assert main(["demo", "--out", str(out), "--methods", "direct,cot", "--benches", "easyvqa,m3cot",
                     "--easyvqa-n", "40", "--n", "6"]) == 0
        url = f"sqlite:///{out / 'harness.db'}"
    db = LeaderboardDB(url)
    app = build_app(db, {})
    port = _free_port()
    _, local_url, _ = launch(app, host="127.0.0.1", port=port, block=False)
    shots = Path(os.environ.get("HARNESS_SCREENSHOT_DIR") or tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1100})
                page.goto(local_url)
                table = page.locator("#main-table")
                expect(table).to_contain_text("easyvqa", timeout=60_000)
                text = table.inner_text()
                assert "zoo:easyvqa-qwen2vl" in text and "direct" in text and "cot" in text
                shot = shots / "leaderboard-demo.png"
                page.screenshot(path=str(shot), full_page=False)
                assert shot.stat().st_size > 10_000
                print(f"screenshot: {shot}")
            finally:
                browser.close()
    finally:
        app.close()
        db.close()
