"""``harness data prepare`` and ``harness data subset``: put benchmark data where the loaders look, checked.

- ``prepare --bench NAME [--from PATH] [--split S]``: VLMEvalKit benchmarks: reads the TSV (``--from``, else
  ``$LMUData/NAME.tsv``), checks it the way the loader will (columns, integer unique indexes, image
  references, every image decodes, the benchmark's own structure: MMBench rotation groups, MMVP pairs,
  POPE Yes/No, ...), compares its md5 with the one VLMEvalKit registers for that name, and copies it to
  ``$LMUData/NAME.tsv`` (atomically). A file whose md5 differs is not placed under the official name
  (VLMEvalKit itself would replace it by a download) unless ``--force``. M3CoT: checks a ``datasets``
  folder or parquet/jsonl files and prints the ``--data`` to pass (M3CoT has no default location).
- ``subset --bench NAME --n N [--seed S]``: a deterministic subset of N units stratified by category
  (MMBench: whole rotation groups; MMVP: whole pairs; others: rows), written as
  ``$LMUData/NAME_harness_nN_sS.tsv``: a name VLMEvalKit never downloads, read by the harness with the
  official name's scoring. Rows whose image referred to a dropped row get the image inline.

Heavy imports stay inside the handlers (``harness --help`` stays instant).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

VLMEVAL_BENCHES = ("mmstar", "mmbench", "mmvp", "pope", "scienceqa", "mathvista", "mathverse")


def add_commands(sub) -> None:
    p = sub.add_parser("data", help="prepare benchmark data (check, md5, place) or write stratified subsets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    q = data_sub.add_parser("prepare", help="check a benchmark's data and place it where the loader expects it")
    q.add_argument("--bench", required=True)
    q.add_argument("--from", dest="source", help="the downloaded file (VLMEvalKit TSV) or M3CoT folder/files")
    q.add_argument("--split", help="the benchmark's split / VLMEvalKit variant (default: its evaluation split)")
    q.add_argument("--force", action="store_true", help="place a TSV whose md5 differs from VLMEvalKit's anyway")
    q.set_defaults(handler=cmd_prepare)

    q = data_sub.add_parser("subset", help="write a deterministic category-stratified subset under a private name")
    q.add_argument("--bench", required=True)
    q.add_argument("--n", type=int, required=True, help="units to keep (MMBench: rotation groups; MMVP: pairs)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--data", help="the full TSV (default: $LMUData/NAME.tsv)")
    q.add_argument("--split", help="the benchmark's split / VLMEvalKit variant")
    q.add_argument("--out", help="output TSV (default: $LMUData/NAME_harness_nN_sS.tsv)")
    q.set_defaults(handler=cmd_subset)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def official_md5(vlmeval_class: str, vlmeval_name: str) -> tuple[str | None, str | None]:
    """(md5, url) VLMEvalKit registers for the dataset name."""
    from harness.benchmarks.vlmeval_common import import_vlmeval

    import_vlmeval()
    import vlmeval.dataset as datasets

    cls = getattr(datasets, vlmeval_class)
    return cls.DATASET_MD5.get(vlmeval_name), cls.DATASET_URL.get(vlmeval_name)


def check_vlmeval_tsv(bench, path: Path) -> dict:
    """Load ``path`` as the benchmark would and decode every image; a DataError names the first problem.

    The cells VLMEvalKit evaluates as Python are checked (``bench.load_table``) before anything else reads them.
    """
    from harness.api import BadImage, DataError, decode_image
    from harness.benchmarks.vlmeval_common import literal

    bench.check_header(path)
    table = bench.load_table()
    problems = table.attrs.get("image_problems", {})
    bad, reasons = [], []
    decoded: dict[str, str | None] = {}
    for i, cell in enumerate(table["image"]):
        key = str(table["index"][i])
        if key in problems:
            bad.append((i + 2, key))
            reasons.append(problems[key])
            continue
        cells = literal(cell) if cell.startswith("[") and cell.endswith("]") else [cell]  # checked by read_table
        for c in cells:
            if len(c) <= 64:
                continue  # a reference: resolved (or marked) by read_table
            if c not in decoded:
                try:
                    decode_image(c)
                    decoded[c] = None
                except BadImage as exc:
                    decoded[c] = str(exc)
            if decoded[c] is not None:
                bad.append((i + 2, key))
                reasons.append(decoded[c])
                break
    if bad:
        lines = ", ".join(f"line {line} (index {index})" for line, index in bad[:5])
        raise DataError(f"{bench.label} data {path}: {len(bad)} row(s) with an image that does not decode or "
                        f"resolve: {lines} (first: {' '.join(reasons[0].split())[:200]}); re-download the file "
                        "(or drop those rows)")
    return {"rows": len(table)}


def cmd_prepare(args) -> int:
    from harness.api import BENCHMARKS, DataError

    cls = BENCHMARKS.get(args.bench)
    if args.bench == "m3cot":
        return _prepare_m3cot(args)
    if args.bench not in VLMEVAL_BENCHES:
        raise DataError(f"harness data prepare knows m3cot and {', '.join(VLMEVAL_BENCHES)}; not {args.bench}")
    from harness.benchmarks.vlmeval_common import lmu_data_root

    split = args.split or next(iter(cls.variants))
    if split not in cls.variants:
        raise DataError(f"{cls.label} has no split {split!r}; choose one of {', '.join(cls.variants)}")
    name = cls.variants[split]
    target = lmu_data_root() / f"{name}.tsv"
    source = Path(args.source).expanduser() if args.source else target
    md5, url = official_md5(cls.vlmeval_class, name)
    if not source.is_file():
        where = f"--from {source}" if args.source else f"{target} ($LMUData)"
        raise DataError(f"{cls.label} data missing: {where} is not a file; download VLMEvalKit's {name}.tsv from "
                        f"{url or 'its VLMEvalKit source'} (or run `from vlmeval.dataset import build_dataset; "
                        f"build_dataset('{name}')` on a machine with internet, which writes ~/LMUData/{name}.tsv), "
                        f"then `harness data prepare --bench {args.bench} --from FILE`")
    bench = cls.__new__(cls)  # only its checks: the constructor would look for the file at the target
    bench.split, bench.vlmeval_name, bench.path = split, name, source
    info = check_vlmeval_tsv(bench, source)
    actual = md5_of(source)
    if md5 is None:
        verdict = "no official md5 registered"
    elif actual == md5:
        verdict = "md5 matches VLMEvalKit's"
    else:
        verdict = f"md5 {actual} differs from VLMEvalKit's {md5}"
        if not args.force and source.resolve() != target.resolve():
            raise DataError(f"{source}: {verdict} (a modified or partial file; VLMEvalKit would replace it by a "
                            f"download); pass it with --data, write a subset with `harness data subset`, or use "
                            f"--force to place it as {target} anyway")
    if source.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        placed = f"placed at {target}"
    else:
        placed = f"in place at {target}"
    print(f"{cls.label} {name}: {info['rows']} rows, every image decodes, {verdict}; {placed}")
    return 0


def _prepare_m3cot(args) -> int:
    from harness.api import DataError
    from harness.benchmarks.m3cot import DATA_HELP, M3CoT

    if not args.source:
        raise DataError(f"M3CoT has no default location: {DATA_HELP}, then `harness data prepare --bench m3cot "
                        "--from DIR`")
    counts = {}
    for split in ("test", "validation", "train"):
        try:
            bench = M3CoT(args.source, split)
            counts[split] = len(bench)
        except DataError as exc:
            if "has no split" in str(exc) or "no files for split" in str(exc):
                continue
            raise
    if "test" not in counts:
        raise DataError(f"M3CoT data {args.source} has no test split; {DATA_HELP}")
    bench = M3CoT(args.source, "test")
    bad = [i for i in range(len(bench)) if not _decodes(bench.sample(i))]
    if bad:
        raise DataError(f"M3CoT data {args.source}: {len(bad)} test row(s) whose image does not decode (positions "
                        f"{', '.join(map(str, bad[:5]))}); re-download the data set")
    print(f"M3CoT {args.source}: " + ", ".join(f"{s} {n} rows" for s, n in counts.items())
          + f"; every test image decodes; pass --data {args.source}")
    return 0


def _decodes(sample) -> bool:
    from harness.api import BadImage

    try:
        sample.images()
        return True
    except BadImage:
        return False


# -- subsets ---------------------------------------------------------------------------------------


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


def subset_table(bench, table, n: int, seed: int):
    """The rows of a stratified subset of ``table`` (MMBench groups / MMVP pairs kept whole)."""
    from harness.benchmarks.vlmeval_common import text

    keys = [int(x) for x in table["index"]]
    category = [text(table[bench.category_column][i]) if bench.category_column in table else "" for i in range(len(table))]
    if bench.name == "mmbench":
        unit_of = [k % 1_000_000 for k in keys]
    elif bench.name == "mmvp":
        order = sorted(range(len(keys)), key=lambda i: keys[i])
        unit_of = [0] * len(keys)
        for position, i in enumerate(order):
            unit_of[i] = position // 2
    else:
        unit_of = keys
    units: dict[str, list] = {}
    first_cat: dict = {}
    for i, u in enumerate(unit_of):
        if u not in first_cat:
            first_cat[u] = category[i]
            units.setdefault(category[i], []).append(u)
    chosen = set(stratified(units, n, seed))
    rows = [i for i, u in enumerate(unit_of) if u in chosen]
    part = table.iloc[rows].copy()
    part.attrs["units"] = len(chosen)
    return part


def cmd_subset(args) -> int:
    import pandas as pd

    from harness.api import BENCHMARKS, DataError

    if args.n < 1:
        raise DataError(f"--n must be at least 1, got {args.n}")
    if args.bench not in VLMEVAL_BENCHES:
        raise DataError(f"harness data subset writes VLMEvalKit TSVs ({', '.join(VLMEVAL_BENCHES)}); for m3cot use "
                        "`harness run --limit N` (a seeded subset)")
    bench = BENCHMARKS.get(args.bench)(args.data, args.split)
    bench.load_table()  # every check the loader makes (cells VLMEvalKit would eval() included), before any use
    table = pd.read_csv(bench.path, sep="\t")  # the cells as they are in the file: what the subset copies
    part = subset_table(bench, table, args.n, args.seed)
    # Inline images whose reference row was dropped (VLMEvalKit resolves references within the file).
    full = dict(zip(table["index"].astype(str), table["image"].astype(str)))
    kept = set(part["index"].astype(str))
    part["image"] = [full[c] if len(c) <= 64 and c not in kept and c in full else c
                     for c in part["image"].astype(str)]
    from harness.benchmarks.vlmeval_common import lmu_data_root

    out = Path(args.out).expanduser() if args.out else (
        lmu_data_root() / f"{bench.vlmeval_name}_harness_n{args.n}_s{args.seed}.tsv")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    part.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, out)
    check = BENCHMARKS.get(args.bench)(str(out), args.split)
    len(check)  # the subset loads as the benchmark (references resolve, pairs and groups whole)
    unit = {"mmbench": "rotation groups", "mmvp": "pairs"}.get(args.bench, "questions")
    print(f"{bench.label} subset: {part.attrs['units']} {unit} ({len(part)} rows) of {len(table)} rows, stratified "
          f"by {bench.category_column}, seed {args.seed}: {out} (scored as {check.vlmeval_name}; pass --data {out})")
    return 0
