#!/usr/bin/env python
"""Benchmarks of the runner itself: per-sample overhead over a bare ``model.generate``, and memory
over run length. It measures and prints; it never asserts timings.

1. Overhead. A random ~50 M-parameter Qwen2-VL checkpoint (``harness.backbones.tiny``) and an M3CoT fixture
   of N samples. The harness path is ``harness.run.runner.execute`` (method ``direct``, batch size 1,
   progress off, a fresh SQLite file per repeat); its per-sample time is
   ``(wall of execute - model load) / N``, where the model load is timed inside that very call (by
   wrapping ``load_backbone``). It therefore includes, per sample: reading the row, decoding the
   image, building the prompt, the chat template, the processor, ``model.generate``, decoding the
   output, judging and the DB write, plus the run's one-time costs (method and benchmark
   resolution, data fingerprint, the git/version lookup, DB setup, final scoring) spread over N.
   A second row counts only the sample loop (batches + DB writes), without the one-time costs.
   The bare path loads the same checkpoint with transformers, builds the same processor inputs
   (same prompt text, same image) for every sample outside the timer, and times only
   ``model.generate(**inputs, max_new_tokens=M, do_sample=False)``. Both paths are greedy on the
   same inputs, so they generate the same tokens: the script checks the texts and token counts.
   Each path runs ``--repeats`` times (interleaved) and the fastest repeat is reported.

2. Memory. Peak RSS of ``python -m harness.cli run --method direct --bench m3cot`` on a tiny
   (64-hidden) Qwen2-VL over one fixture of F samples, for ``--limit`` L1 and L2: each run is its
   own child process and its peak is read from ``os.wait4`` on that child alone.

    .venv/bin/python scripts/bench_runner.py [--quick] [--json] [--profile]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OVERHEAD_GOAL_PCT = 5.0
MEMORY_GOAL_PCT = 10.0

FULL = dict(samples=16, max_new_tokens=32, hidden_size=512, layers=21, heads=8, kv_heads=4,
            memory_fixture=2000, limits=(100, 2000), repeats=3)
QUICK = dict(samples=4, max_new_tokens=8, hidden_size=128, layers=2, heads=4, kv_heads=2,
             memory_fixture=100, limits=(20, 100), repeats=2)
VOCAB_SIZE = 32000  # asked of the BPE trainer; the tiny corpus caps the real vocabulary far below


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- phase timers (installed by patching, only around the harness path) --------------------------
@dataclass
class Timers:
    seconds: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)
    in_loop: bool = False

    def add(self, key: str, dt: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + dt
        self.calls[key] = self.calls.get(key, 0) + 1

    def wrap(self, fn, key: str, loop_only: bool = False):
        def timed(*args, **kwargs):
            if loop_only and not self.in_loop:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(key, time.perf_counter() - start)
        timed.__wrapped__ = fn
        return timed


@contextlib.contextmanager
def patched(obj, name: str, value):
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


@contextlib.contextmanager
def instrument(timers: Timers):
    """Time model load, the sample loop and its phases inside ``execute`` (no behaviour change)."""
    import harness.backbones as backbones
    import harness.run.runner as runner
    from harness.api.types import Sample
    from harness.benchmarks.m3cot import M3CoT
    from harness.run.store import Store

    load = backbones.load_backbone

    def load_and_wrap(*args, **kwargs):
        start = time.perf_counter()
        backbone = load(*args, **kwargs)
        timers.add("model_load", time.perf_counter() - start)
        # Instance attributes shadow the methods; Backbone.generate calls self.build_inputs and
        # self.model.generate, so these see exactly the harness's calls.
        backbone.generate = timers.wrap(backbone.generate, "backbone_generate")
        backbone.build_inputs = timers.wrap(backbone.build_inputs, "build_inputs")
        backbone.model.generate = timers.wrap(backbone.model.generate, "model_generate")
        return backbone

    run_batch = runner._run_batch

    def run_batch_in_loop(*args, **kwargs):
        timers.in_loop = True
        try:
            return run_batch(*args, **kwargs)
        finally:
            timers.in_loop = False

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(backbones, "load_backbone", load_and_wrap))
        stack.enter_context(patched(runner, "_run_batch", timers.wrap(run_batch_in_loop, "run_batch")))
        stack.enter_context(patched(Store, "add_samples", timers.wrap(Store.add_samples, "db_write")))
        stack.enter_context(patched(M3CoT, "sample", timers.wrap(M3CoT.sample, "row_read", loop_only=True)))
        stack.enter_context(patched(M3CoT, "judge", timers.wrap(M3CoT.judge, "judge", loop_only=True)))
        stack.enter_context(patched(Sample, "images", timers.wrap(Sample.images, "image_decode", loop_only=True)))
        yield


# -- 1. overhead ---------------------------------------------------------------------------------
def count_generated(ids: list[int], eos: set[int]) -> int:
    """Tokens up to and including the first EOS: the harness's ``generated_tokens`` rule."""
    for i, token in enumerate(ids):
        if token in eos:
            return i + 1
    return len(ids)


def run_harness(model_dir: Path, data: Path, db_path: Path, n: int, max_new_tokens: int, profile: bool = False,
                limit: int | None = None):
    from harness.run.runner import RunSpec, execute
    from harness.run.store import Store

    spec = RunSpec(method="direct", bench="m3cot", model=str(model_dir), data=str(data), batch_size=1,
                   method_options={"max_new_tokens": max_new_tokens}, db=f"sqlite:///{db_path}",
                   limit=limit, device="cpu", dtype="float32", progress=False)
    timers = Timers()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    with instrument(timers):
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        report = execute(spec)
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - start
    store = Store(spec.db, read_only=True)
    try:
        rows = store.samples(report.run_id)
    finally:
        store.close()
    if len(rows) != n or any(r.get("error") for r in rows):
        raise RuntimeError(f"harness run stored {len(rows)} rows (expected {n}) or error rows: "
                           f"{[r.get('error') for r in rows if r.get('error')]}")
    return {"wall": wall, "timers": timers, "rows": rows, "profiler": profiler}


def prepare_bare(model_dir: Path, data: Path, max_new_tokens: int):
    """The same checkpoint via transformers, and each sample's processor inputs, built untimed."""
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    from harness.api import Query
    from harness.benchmarks.m3cot import M3CoT
    from methods.baselines import DirectAnswer

    model = Qwen2VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32).to("cpu").eval()
    processor = AutoProcessor.from_pretrained(str(model_dir))
    method = DirectAnswer(max_new_tokens=max_new_tokens)
    benchmark = M3CoT(str(data))
    inputs = []
    for position in range(len(benchmark)):
        sample = benchmark.sample(position)
        images = sample.images()
        # The harness's prompt: the benchmark's question text + the method's instruction ...
        prompt = method.prompt(Query(images=images, question=benchmark.format_question(sample),
                                     choices=sample.choices))
        # ... in the chat template with one image slot per image, as Backbone.chat_text builds it.
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)
        inputs.append(processor(text=[text], images=images or None, padding=True, return_tensors="pt"))
    return model, processor, inputs


def run_bare(model, processor, inputs, max_new_tokens: int):
    import torch

    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    seconds, tokens, raw_tokens, texts, input_tokens = 0.0, [], [], [], []
    with torch.no_grad():
        for batch in inputs:
            start = time.perf_counter()
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
            seconds += time.perf_counter() - start
            new = output[0, batch["input_ids"].shape[1]:].tolist()
            kept = new[:count_generated(new, eos)]
            raw_tokens.append(len(new))
            tokens.append(len(kept))
            texts.append(processor.tokenizer.decode([t for t in kept if t not in eos], skip_special_tokens=True))
            input_tokens.append(int(batch["attention_mask"].sum()))
    return {"seconds": seconds, "tokens": tokens, "raw_tokens": raw_tokens, "texts": texts,
            "input_tokens": input_tokens}


def bench_overhead(cfg: dict, root: Path, repeats: int, profile: bool) -> dict:
    from harness.testing.fixtures import write_m3cot_fixture
    from harness.backbones.tiny import write_tiny_model

    n, m = cfg["samples"], cfg["max_new_tokens"]
    say(f"[overhead] writing a random Qwen2-VL (hidden {cfg['hidden_size']}, {cfg['layers']} layers) "
        f"and an M3CoT fixture of {n} samples ...")
    model_dir = write_tiny_model("qwen2-vl", root / "model-overhead", hidden_size=cfg["hidden_size"],
                                 layers=cfg["layers"], heads=cfg["heads"], kv_heads=cfg["kv_heads"],
                                 vocab_size=VOCAB_SIZE)
    data = write_m3cot_fixture(root / "m3cot-overhead", n=n, seed=0)

    say("[overhead] loading the bare model and building its inputs (untimed) ...")
    model, processor, inputs = prepare_bare(model_dir, data, m)
    parameters = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.visual.parameters())

    # Untimed warm-up of both paths (first-call costs: lazy imports, kernel and generate set-up).
    say("[overhead] warm-up (untimed): harness execute on 1 sample, bare generate on 1 sample ...")
    run_harness(model_dir, data, root / "overhead-warmup.db", 1, m, limit=1)
    run_bare(model, processor, inputs[:1], m)

    harness_runs, bare_runs = [], []
    for repeat in range(repeats):
        say(f"[overhead] repeat {repeat + 1}/{repeats}: harness execute ...")
        harness_runs.append(run_harness(model_dir, data, root / f"overhead-{repeat}.db", n, m))
        say(f"[overhead] repeat {repeat + 1}/{repeats}: bare model.generate ...")
        bare_runs.append(run_bare(model, processor, inputs, m))

    def per_sample_execute(run):
        return (run["wall"] - run["timers"].seconds["model_load"]) / n

    def per_sample_loop(run):
        t = run["timers"].seconds
        return (t["run_batch"] + t["db_write"]) / n

    best_h = min(harness_runs, key=per_sample_execute)
    best_b = min(bare_runs, key=lambda r: r["seconds"])
    bare_s = best_b["seconds"] / n

    rows_h = best_h["rows"]  # ordered by position, as the bare inputs are
    h_tokens = [r["generated_tokens"] for r in rows_h]
    h_texts = [r["prediction"] for r in rows_h]
    h_input_tokens = [r["input_tokens"] for r in rows_h]
    same_tokens = h_tokens == best_b["tokens"]
    same_texts = h_texts == best_b["texts"]
    same_inputs = h_input_tokens == best_b["input_tokens"]
    hit_eos = sum(t < m for t in best_b["tokens"])

    def pct(x):
        return round(100.0 * (x / bare_s - 1.0), 2)

    exec_s, loop_s = per_sample_execute(best_h), per_sample_loop(best_h)
    own_gen_s = best_h["timers"].seconds["model_generate"] / n
    rows = [
        {"path": "bare model.generate", "samples": n, "tokens_per_sample": sum(best_b["tokens"]) / n,
         "seconds_per_sample": round(bare_s, 5), "overhead_pct": None},
        {"path": "harness execute - model load", "samples": n, "tokens_per_sample": sum(h_tokens) / n,
         "seconds_per_sample": round(exec_s, 5), "overhead_pct": pct(exec_s)},
        {"path": "harness sample loop only", "samples": n, "tokens_per_sample": sum(h_tokens) / n,
         "seconds_per_sample": round(loop_s, 5), "overhead_pct": pct(loop_s)},
        {"path": "harness's own model.generate", "samples": n, "tokens_per_sample": sum(h_tokens) / n,
         "seconds_per_sample": round(own_gen_s, 5), "overhead_pct": pct(own_gen_s)},
    ]

    t = best_h["timers"].seconds
    outside = t["backbone_generate"] - t["build_inputs"] - t["model_generate"]
    in_batch = t["run_batch"] - t["row_read"] - t["image_decode"] - t["backbone_generate"] - t["judge"]
    fixed = best_h["wall"] - t["model_load"] - t["run_batch"] - t["db_write"]
    phases = [
        ("model.generate (inside the harness)", t["model_generate"]),
        ("row read (benchmark.sample)", t["row_read"]),
        ("image decode (Sample.images)", t["image_decode"]),
        ("chat template + processor (build_inputs)", t["build_inputs"]),
        ("output decode (Backbone.generate rest)", outside),
        ("judge (official answer extraction)", t["judge"]),
        ("other per-batch work (_run_batch rest)", in_batch),
        ("DB write (Store.add_samples)", t["db_write"]),
        ("one-time run costs, spread over N", fixed),
    ]
    breakdown = [{"phase": name, "ms_per_sample": round(1000 * s / n, 3),
                  "pct_of_harness": round(100 * s / (exec_s * n), 2)} for name, s in phases]

    result = {
        "rows": rows, "breakdown": breakdown, "parameters": parameters, "vision_parameters": vision,
        "vocab_size": model.config.text_config.vocab_size, "model": {k: cfg[k] for k in
                                                                     ("hidden_size", "layers", "heads", "kv_heads")},
        "samples": n, "max_new_tokens": m, "repeats": repeats,
        "model_load_s": round(t["model_load"], 3), "one_time_s": round(fixed, 3),
        "harness_generate_s_per_sample": round(t["model_generate"] / n, 5),
        "checks": {"same_generated_token_counts": same_tokens, "same_output_texts": same_texts,
                   "same_input_token_counts": same_inputs, "samples_stopped_at_eos": hit_eos,
                   "bare_tokens": best_b["tokens"], "harness_tokens": h_tokens},
        "all_repeats": {
            "harness_execute_s_per_sample": [round(per_sample_execute(r), 5) for r in harness_runs],
            "harness_loop_s_per_sample": [round(per_sample_loop(r), 5) for r in harness_runs],
            "bare_s_per_sample": [round(r["seconds"] / n, 5) for r in bare_runs],
        },
        # The same ratio inside one harness run: robust to drift between separately timed runs.
        "in_run_overhead_pct": {"execute": round(100 * (exec_s / own_gen_s - 1), 2),
                                "loop": round(100 * (loop_s / own_gen_s - 1), 2)},
        "goal_pct": OVERHEAD_GOAL_PCT,
    }
    if profile:
        say("[overhead] profiling one more harness execute with cProfile ...")
        import io
        import pstats

        run = run_harness(model_dir, data, root / "overhead-profile.db", n, m, profile=True)
        buffer = io.StringIO()
        pstats.Stats(run["profiler"], stream=buffer).sort_stats("cumulative").print_stats(40)
        result["profile"] = buffer.getvalue()
    return result


# -- 2. memory -----------------------------------------------------------------------------------
# Runs in a small interpreter of its own. A child's ru_maxrss also counts the memory it had between
# fork and exec, i.e. its parent's: spawned straight from this (large) process, every child would
# report at least this process's peak. From this launcher that floor is the launcher's few MB.
LAUNCHER = r"""
import json, os, subprocess, sys, time
cmd, out_path, err_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(out_path, "wb") as out, open(err_path, "wb") as err:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss, "wall_s": wall}))
"""


def run_child(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run one child; its peak RSS is ru_maxrss from wait4 on that pid alone (not RUSAGE_CHILDREN's max
    over all children so far), waited for by a small launcher process (see LAUNCHER)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    err = log.with_suffix(".err")
    launched = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, json.dumps(cmd), str(log), str(err)],
                              cwd=cwd, env=env, capture_output=True, text=True, check=True)
    info = json.loads(launched.stdout)
    if info["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {info['returncode']}:\n{err.read_text()[-3000:]}")
    return {"peak_rss_mb": info["maxrss_kib"] / 1024, "wall_s": info["wall_s"], "stdout": log.read_text()}


def bench_memory(cfg: dict, root: Path) -> dict:
    from harness.testing.fixtures import write_m3cot_fixture
    from harness.backbones.tiny import write_tiny_model

    total = cfg["memory_fixture"]
    say(f"[memory] writing a tiny (64-hidden) Qwen2-VL and an M3CoT fixture of {total} samples ...")
    model_dir = write_tiny_model("qwen2-vl", root / "model-memory")
    data = write_m3cot_fixture(root / "m3cot-memory", n=total, seed=0)
    rows = []
    for limit in cfg["limits"]:
        cmd = [sys.executable, "-m", "harness.cli", "run", "--method", "direct", "--bench", "m3cot",
               "--model", str(model_dir), "--data", str(data), "--limit", str(limit), "--max-new-tokens", "4",
               "--batch-size", "8", "--db", f"sqlite:///{root / f'memory-{limit}.db'}", "--no-progress", "--json"]
        say(f"[memory] harness run --limit {limit} (child process) ...")
        child = run_child(cmd, root, root / f"memory-{limit}.out")
        report = json.loads(child["stdout"])
        rows.append({"samples": report["metrics"]["n"], "limit": limit,
                     "peak_rss_mb": round(child["peak_rss_mb"], 1), "wall_s": round(child["wall_s"], 2),
                     "child_reported_peak_mb": report["metrics"].get("peak_memory_mb")})
    base = rows[0]["peak_rss_mb"]
    for row in rows:
        row["ratio"] = round(row["peak_rss_mb"] / base, 4)
    return {"rows": rows, "fixture_samples": total, "ratio": rows[-1]["ratio"], "goal_pct": MEMORY_GOAL_PCT,
            "command": "python -m harness.cli run --method direct --bench m3cot --model <tiny 64-hidden qwen2-vl> "
                       f"--data <fixture of {total}> --limit L --max-new-tokens 4 --batch-size 8 --db <temp> "
                       "--no-progress --json"}


# -- output --------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_report(result: dict) -> None:
    o, mem = result["overhead"], result["memory"]
    print(f"== 1. Per-sample overhead of the runner vs a bare model.generate  ({result['mode']}) ==")
    if o is None:
        print("(skipped)")
    else:
        print_overhead(result, o)
    print(f"\n== 2. Peak memory over run length  ({result['mode']}) ==")
    if mem is None:
        print("(skipped)")
    else:
        print_memory(mem)
    if o is not None and "profile" in o:
        print("\n== cProfile of one harness execute (cumulative) ==")
        print(o["profile"])


def print_overhead(result: dict, o: dict) -> None:
    print(f"model: random Qwen2-VL, {o['parameters']:,} parameters ({o['parameters'] / 1e6:.1f} M; vision "
          f"{o['vision_parameters'] / 1e6:.2f} M; vocab {o['vocab_size']}; hidden {o['model']['hidden_size']}, "
          f"{o['model']['layers']} layers, {o['model']['heads']} heads, {o['model']['kv_heads']} KV heads), "
          f"CPU fp32, {result['torch_threads']} torch threads")
    print(f"data: M3CoT fixture, {o['samples']} samples, method direct, max_new_tokens {o['max_new_tokens']}, "
          f"batch size 1, greedy; after an untimed warm-up of both paths, fastest of {o['repeats']} interleaved "
          "repeats per path")
    print("harness execute - model load: (wall of execute - load_backbone time in that call) / N; includes row read,\n"
          "  image decode, prompt building, chat template, processor, model.generate, output decode, judging, DB\n"
          "  write per sample, plus one-time run costs (method/benchmark resolve, data fingerprint, git + versions,\n"
          "  DB setup, final scoring) spread over N. harness sample loop only: the batches + DB writes, no one-time\n"
          "  costs. harness's own model.generate: the model.generate calls inside that harness run, timed in place.\n"
          "  bare model.generate: only model.generate(**inputs, max_new_tokens=M, do_sample=False), inputs\n"
          "  (same prompt text, same image, same processor) built outside the timer.")
    print(table(["path", "samples", "tokens/sample", "s/sample", "overhead"],
                [[r["path"], r["samples"], f"{r['tokens_per_sample']:.2f}", f"{r['seconds_per_sample']:.4f}",
                  "(baseline)" if r["overhead_pct"] is None else f"{r['overhead_pct']:+.2f} %"] for r in o["rows"]]))
    c = o["checks"]
    print(f"checks: same generated-token counts {c['same_generated_token_counts']}, same output texts "
          f"{c['same_output_texts']}, same input-token counts {c['same_input_token_counts']}, samples stopped "
          f"at EOS {c['samples_stopped_at_eos']}")
    execute_pct = o["rows"][1]["overhead_pct"]
    print(f"goal: harness overhead under {o['goal_pct']:.0f} %: execute - model load {execute_pct:+.2f} % "
          f"({'met' if execute_pct < o['goal_pct'] else 'NOT met'}), sample loop {o['rows'][2]['overhead_pct']:+.2f} %")
    r = o["in_run_overhead_pct"]
    print(f"in-run overhead (harness per-sample time / the harness's own model.generate time in the same run - 1): "
          f"execute {r['execute']:+.2f} %, sample loop {r['loop']:+.2f} %")
    print(f"model load (subtracted) {o['model_load_s']:.3f} s; one-time run costs {o['one_time_s']:.3f} s per run")
    print("\nwhere the harness's per-sample time goes (the reported repeat):")
    print(table(["phase", "ms/sample", "% of harness"],
                [[b["phase"], f"{b['ms_per_sample']:.3f}", f"{b['pct_of_harness']:.2f}"] for b in o["breakdown"]]))
    a = o["all_repeats"]
    print(f"all repeats, s/sample: harness execute {a['harness_execute_s_per_sample']}, harness loop "
          f"{a['harness_loop_s_per_sample']}, bare {a['bare_s_per_sample']}")


def print_memory(mem: dict) -> None:
    print(f"command: {mem['command']}")
    print("peak RSS: ru_maxrss of each child process alone (os.wait4 on its pid, from a small launcher process),\n"
          "  one fresh process per row, whole process lifetime (interpreter start-up to exit); 'run says': the\n"
          "  peak_memory_mb the run stored itself (its own maxrss when execute finished, before interpreter shutdown)")
    print(table(["samples", "peak RSS MB", "wall s", "ratio", "run says MB"],
                [[r["samples"], f"{r['peak_rss_mb']:.1f}", f"{r['wall_s']:.2f}", f"{r['ratio']:.3f}",
                  r["child_reported_peak_mb"]] for r in mem["rows"]]))
    growth = 100 * (mem["ratio"] - 1)
    verdict = "met" if abs(growth) <= mem["goal_pct"] else "NOT met"
    print(f"goal: peak RSS within {mem['goal_pct']:.0f} % from {mem['rows'][0]['samples']} to "
          f"{mem['rows'][-1]['samples']} samples: {growth:+.2f} % ({verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    parser.add_argument("--repeats", type=int,
                        help="repeats per path in the overhead bench (default 3; 2 with --quick)")
    parser.add_argument("--samples", type=int, help="overhead bench samples N")
    parser.add_argument("--max-new-tokens", type=int, help="overhead bench tokens per sample M")
    parser.add_argument("--hidden-size", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--limits", help="memory bench limits, comma-separated (the largest is the fixture size)")
    parser.add_argument("--threads", type=int, help="torch threads in this process (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one harness execute")
    parser.add_argument("--only", choices=["overhead", "memory"], help="run one of the two benchmarks")
    parser.add_argument("--keep", help="write the temporary files here and keep them")
    args = parser.parse_args(argv)

    cfg = dict(QUICK if args.quick else FULL)
    for key in ("samples", "max_new_tokens", "hidden_size", "layers"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.limits:
        cfg["limits"] = tuple(int(x) for x in args.limits.split(","))
        cfg["memory_fixture"] = max(cfg["limits"])

    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = Path(args.keep)
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_runner-")))
        result = {"mode": "quick" if args.quick else "full", "torch_threads": torch.get_num_threads()}
        result["overhead"] = (None if args.only == "memory" else
                              bench_overhead(cfg, root, max(1, args.repeats or cfg["repeats"]), args.profile))
        result["memory"] = None if args.only == "overhead" else bench_memory(cfg, root)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
