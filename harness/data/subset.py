"""A deterministic, category-stratified subset of a VLMEvalKit benchmark's TSV, written under a private name.

The subset draws whole units (``Benchmark.units``: MMBench rotation groups, MMVP pairs, else single
questions), in proportion to each category's size, seeded; it is written as
``$LMUData/NAME_harness_nN_sS.tsv``, a name VLMEvalKit never downloads, and the harness reads it with
the official name's scoring. Rows whose image referred to a dropped row get the image inline.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from harness.api import BENCHMARKS, DataError
from harness.benchmarks.vlmeval_common import VLMEvalBenchmark, lmu_data_root, text, vlmeval_benchmark_names


def stratified(units: dict[str, list], n: int, seed: int) -> list:
    """``n`` units drawn per category in proportion to its size (largest remainders), seeded; every
    category gets one when ``n`` allows. Returns the chosen units."""
    total = sum(len(v) for v in units.values())
    if n >= total:
        return [u for v in units.values() for u in v]
    cats = sorted(units)
    quota = {c: n * len(units[c]) / total for c in cats}
    take = {c: int(quota[c]) for c in cats}
    if n >= len(cats):
        for c in cats:
            take[c] = max(take[c], 1)
    while sum(take.values()) > n:  # the minimum of one pushed it over: trim the largest
        c = max(cats, key=lambda c: (take[c], c))
        take[c] -= 1
    for c in sorted(cats, key=lambda c: (-(quota[c] - int(quota[c])), c)):
        if sum(take.values()) >= n:
            break
        if take[c] < len(units[c]):
            take[c] += 1
    rng = random.Random(seed)
    chosen = []
    for c in cats:
        chosen.extend(rng.sample(units[c], min(take[c], len(units[c]))))
    return chosen


def subset_table(bench: VLMEvalBenchmark, table, n: int, seed: int):
    """The rows of a stratified subset of ``table`` (the benchmark's file as read, rows in its positions'
    order), whole units kept (``bench.units()``); ``attrs["units"]`` says how many were drawn."""
    units = bench.units()
    category = [text(table[bench.category_column][i]) if bench.category_column in table else "" for i in range(len(table))]
    by_category: dict[str, list[int]] = {}
    for number, positions in enumerate(units):  # a unit's category is its first row's
        by_category.setdefault(category[positions[0]], []).append(number)
    chosen = set(stratified(by_category, n, seed))
    rows = sorted(position for number in chosen for position in units[number])
    part = table.iloc[rows].copy()
    part.attrs["units"] = len(chosen)
    return part


@dataclass
class Subset:
    path: Path  # the written TSV
    units: int  # units drawn (``units_label`` of the benchmark)
    rows: int
    total_rows: int  # rows of the full file
    scored_as: str  # the VLMEvalKit name whose scoring reads it
    summary: str  # the one line ``harness data subset`` prints


def write_subset(bench: str, n: int, seed: int = 0, data: str | None = None, split: str | None = None,
                 out: str | None = None) -> Subset:
    """Write a stratified subset of ``n`` units of a VLMEvalKit benchmark's TSV (DataError for bad input)."""
    import pandas as pd

    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    names = vlmeval_benchmark_names()
    if bench not in names:
        raise DataError(f"harness data subset writes VLMEvalKit TSVs ({', '.join(names)}); for m3cot use "
                        "`harness run --limit N` (a seeded subset)")
    benchmark = BENCHMARKS.get(bench)(data, split)
    benchmark.units()  # every check the loader makes (cells VLMEvalKit would eval() included), before any use
    table = pd.read_csv(benchmark.path, sep="\t")  # the cells as they are in the file: what the subset copies
    part = subset_table(benchmark, table, n, seed)
    # Inline images whose reference row was dropped (VLMEvalKit resolves references within the file).
    full = dict(zip(table["index"].astype(str), table["image"].astype(str)))
    kept = set(part["index"].astype(str))
    part["image"] = [full[c] if len(c) <= 64 and c not in kept and c in full else c
                     for c in part["image"].astype(str)]
    path = Path(out).expanduser() if out else (
        lmu_data_root() / f"{benchmark.vlmeval_name}_harness_n{n}_s{seed}.tsv")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    part.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)
    check = BENCHMARKS.get(bench)(str(path), split)
    len(check)  # the subset loads as the benchmark (references resolve, pairs and groups whole)
    summary = (f"{benchmark.label} subset: {part.attrs['units']} {benchmark.units_label} ({len(part)} rows) of "
               f"{len(table)} rows, stratified by {benchmark.category_column}, seed {seed}: {path} (scored as "
               f"{check.vlmeval_name}; pass --data {path})")
    return Subset(path=path, units=part.attrs["units"], rows=len(part), total_rows=len(table),
                  scored_as=check.vlmeval_name, summary=summary)
