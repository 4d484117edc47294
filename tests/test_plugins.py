"""Third-party packages plug in through entry points, exactly as the built-ins do.

A throwaway distribution (a module plus its ``.dist-info`` with ``entry_points.txt``, which is what
``pip install`` leaves in site-packages) is put on ``PYTHONPATH`` of a fresh interpreter: its method
and its command must appear in ``harness list`` / ``harness --help`` and run end to end, with nothing
under ``harness/`` or ``methods/`` touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
from harness.api import Method, MethodOutput, register_method


@register_method("first-choice")
class FirstChoice(Method):
    """Answers the first option: a method written outside the harness."""

    description = "plugin: always the first option"

    def run(self, backbone, queries):
        return [MethodOutput(text="(A)", answer="A" if q.choices else "", input_tokens=0, generated_tokens=0)
                for q in queries]


def add_commands(sub):
    p = sub.add_parser("hello-plugin", help="a command from a plugin")
    p.set_defaults(handler=lambda args: print("hello from the plugin") or 0)
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    (root / "harness_plugin_demo.py").write_text(PLUGIN)
    info = root / "harness_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.methods]\nfirst-choice = harness_plugin_demo\n\n"
                                           "[harness.commands]\nhello-plugin = harness_plugin_demo\n")
    return root


def _harness(plugin_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_a_plugin_method_and_command_are_listed(plugin_path):
    listed = _harness(plugin_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert "first-choice" in listed.stdout and "plugin: always the first option" in listed.stdout
    assert "cot" in listed.stdout  # the built-ins are still there
    hello = _harness(plugin_path, "hello-plugin")
    assert hello.returncode == 0 and hello.stdout.strip() == "hello from the plugin", hello.stderr


def test_a_plugin_method_runs_end_to_end(plugin_path, tiny_model_dirs, tmp_path):
    from harness.testing.fixtures import write_all

    data = write_all(tmp_path / "data", n=6, seed=0)
    db = f"sqlite:///{tmp_path / 'h.db'}"
    out = _harness(plugin_path, "run", "--method", "first-choice", "--bench", "m3cot", "--model",
                   str(tiny_model_dirs["qwen2-vl"]), "--data", str(data["m3cot"]), "--db", db, "--json",
                   "--no-progress")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    from harness.run.store import Store

    rows = Store(db, read_only=True).samples(report["run_id"])
    assert len(rows) == 6 and {r["answer"] for r in rows} == {"A"}
    # Graded by the benchmark's own rule: exactly the samples whose gold is A are correct.
    assert sum(r["correct"] for r in rows) == sum(r["gold"] == "A" for r in rows)


def test_a_broken_plugin_is_one_line_naming_it(tmp_path):
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.methods]\nbroken = no_such_module_anywhere\n")
    out = _harness(tmp_path, "list")
    assert out.returncode == 2
    assert out.stderr.startswith("harness: error: method plugin 'broken'") and "Traceback" not in out.stderr
