"""Check a benchmark's downloaded data the way its loader will and place it where the loader looks.

- VLMEvalKit benchmarks: reads the TSV (``source``, else ``$LMUData/NAME.tsv``), checks it as the loader
  will (columns, integer unique indexes, image references, every image decodes, the cells VLMEvalKit
  evaluates, the benchmark's own structure: MMBench rotation groups, MMVP pairs, POPE Yes/No, ...),
  compares its md5 with the one VLMEvalKit registers for that name, and copies it to
  ``$LMUData/NAME.tsv`` (atomically). A file whose md5 differs is not placed under the official name
  (VLMEvalKit itself would replace it by a download) unless ``force``.
- M3CoT: checks a ``datasets`` folder or parquet/jsonl files (M3CoT has no default location).
- A benchmark with a ``prepare_data(source, out)`` static method (easyvqa) writes its own folder at ``out``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from harness.api import BENCHMARKS, BadImage, DataError, decode_image
from harness.benchmarks.m3cot import DATA_HELP, M3CoT
from harness.benchmarks.vlmeval_common import (VLMEvalBenchmark, import_vlmeval, literal, lmu_data_root,
                                               vlmeval_benchmark_names)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def official_md5(vlmeval_class: str, vlmeval_name: str) -> tuple[str | None, str | None]:
    """(md5, url) VLMEvalKit registers for the dataset name."""
    import_vlmeval()
    import vlmeval.dataset as datasets

    cls = getattr(datasets, vlmeval_class)
    return cls.DATASET_MD5.get(vlmeval_name), cls.DATASET_URL.get(vlmeval_name)


def check_vlmeval_tsv(bench: VLMEvalBenchmark, path: Path) -> dict:
    """Load ``path`` as the benchmark would and decode every image; a DataError names the first problem.

    The cells VLMEvalKit evaluates as Python are checked (``bench.load_table``) before anything else reads them.
    """
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


def prepare(bench: str, source: str | None = None, split: str | None = None, force: bool = False,
            out: str | None = None) -> str:
    """Check and place one benchmark's data; returns the one-line summary (DataError when it is not usable)."""
    cls = BENCHMARKS.get(bench)
    own = getattr(cls, "prepare_data", None)
    if own is not None:  # a benchmark that writes its own prepared layout (easyvqa)
        if not out:
            raise DataError(f"harness data prepare --bench {bench} writes a folder: pass --out DIR")
        return own(source, out)
    if out:
        raise DataError(f"--out is for benchmarks that write a prepared folder (easyvqa), not {bench}")
    if issubclass(cls, M3CoT):
        return prepare_m3cot(source, cls)
    if issubclass(cls, VLMEvalBenchmark):
        return prepare_vlmeval_tsv(cls, source, split, force)
    raise DataError(f"harness data prepare knows m3cot and {', '.join(vlmeval_benchmark_names())}; not {bench}")


def prepare_vlmeval_tsv(cls: type[VLMEvalBenchmark], source: str | None = None, split: str | None = None,
                        force: bool = False) -> str:
    """Check a VLMEvalKit TSV and place it at ``$LMUData/NAME.tsv``; returns the one-line summary."""
    split = split or next(iter(cls.variants))
    if split not in cls.variants:
        raise DataError(f"{cls.label} has no split {split!r}; choose one of {', '.join(cls.variants)}")
    name = cls.variants[split]
    target = lmu_data_root() / f"{name}.tsv"
    path = Path(source).expanduser() if source else target
    md5, url = official_md5(cls.vlmeval_class, name)
    if not path.is_file():
        where = f"--from {path}" if source else f"{target} ($LMUData)"
        raise DataError(f"{cls.label} data missing: {where} is not a file; download VLMEvalKit's {name}.tsv from "
                        f"{url or 'its VLMEvalKit source'} (or run `from vlmeval.dataset import build_dataset; "
                        f"build_dataset('{name}')` on a machine with internet, which writes ~/LMUData/{name}.tsv), "
                        f"then `harness data prepare --bench {cls.name} --from FILE`")
    bench = cls.__new__(cls)  # only its checks: the constructor would look for the file at the target
    bench.split, bench.vlmeval_name, bench.path = split, name, path
    info = check_vlmeval_tsv(bench, path)
    actual = md5_of(path)
    if md5 is None:
        verdict = "no official md5 registered"
    elif actual == md5:
        verdict = "md5 matches VLMEvalKit's"
    else:
        verdict = f"md5 {actual} differs from VLMEvalKit's {md5}"
        if not force and path.resolve() != target.resolve():
            raise DataError(f"{path}: {verdict} (a modified or partial file; VLMEvalKit would replace it by a "
                            f"download); pass it with --data, write a subset with `harness data subset`, or use "
                            f"--force to place it as {target} anyway")
    if path.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        placed = f"placed at {target}"
    else:
        placed = f"in place at {target}"
    return f"{cls.label} {name}: {info['rows']} rows, every image decodes, {verdict}; {placed}"


def prepare_m3cot(source: str | None, cls: type[M3CoT] = M3CoT) -> str:
    """Check an M3CoT folder or files (every split found, every test image); returns the one-line summary
    naming the ``--data`` to pass."""
    if not source:
        raise DataError(f"M3CoT has no default location: {DATA_HELP}, then `harness data prepare --bench m3cot "
                        "--from DIR`")
    counts = {}
    for split in ("test", "validation", "train"):
        try:
            counts[split] = len(cls(source, split))
        except DataError as exc:
            if "has no split" in str(exc) or "no files for split" in str(exc):
                continue
            raise
    if "test" not in counts:
        raise DataError(f"M3CoT data {source} has no test split; {DATA_HELP}")
    bench = cls(source, "test")
    bad = [i for i in range(len(bench)) if not _decodes(bench.sample(i))]
    if bad:
        raise DataError(f"M3CoT data {source}: {len(bad)} test row(s) whose image does not decode (positions "
                        f"{', '.join(map(str, bad[:5]))}); re-download the data set")
    return (f"M3CoT {source}: " + ", ".join(f"{s} {n} rows" for s, n in counts.items())
            + f"; every test image decodes; pass --data {source}")


def _decodes(sample) -> bool:
    try:
        sample.images()
        return True
    except BadImage:
        return False
