"""Score a prediction file through the same code path as a run (``harness score``).

VLMEvalKit benchmarks: VLMEvalKit's prediction format (what its inference writes: the benchmark's TSV
columns without ``image``, plus ``prediction``; .xlsx, .tsv, .csv, .json or .jsonl, never .pkl: unpickling
a file can run code). Each row's ``index`` names the sample in the benchmark's data, the answer is
``str(prediction)`` as VLMEvalKit reads it, and the benchmark's ``score`` does the rest, exactly as at the
end of a run: the prediction table VLMEvalKit's ``evaluate`` sees is built from the benchmark's own
(checked) data plus these answers, so no other cell of the file reaches VLMEvalKit. The file's cells that
VLMEvalKit would evaluate as Python (MathVista's ``skills`` / ``choices``, MathVerse's ``metadata``,
``image_path``) are checked all the same, with the data's rules, so a file that would run code under
stock VLMEvalKit is refused rather than silently ignored. M3CoT: its published jsonl format
(``harness.scoring.m3cot``).
"""
from __future__ import annotations

from pathlib import Path

from harness.api import BENCHMARKS, DataError

# suffix → vlmeval.smp.load's format; an allow-list, so nothing else (.pkl above all) is ever read
FORMATS = {".xlsx": "xlsx", ".tsv": "tsv", ".csv": "csv", ".json": "json", ".jsonl": "jsonl"}


def read_vlmeval_predictions(path: Path):
    """The prediction table; DataError naming the file and the fix if it is not one."""
    if not path.is_file():
        raise DataError(f"{path}: prediction file not found")
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):  # unpickling a file can run code: never for user input
        raise DataError(f"{path}: pickle files are not read (loading one can run code); "
                        "save the predictions as .xlsx, .tsv, .csv or .json")
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown prediction file type {suffix or '(no suffix)'!r}; save the predictions as "
                        ".xlsx, .tsv, .csv, .json or .jsonl (VLMEvalKit's prediction format)")
    from harness.benchmarks.vlmeval_common import import_vlmeval

    import_vlmeval()
    import pandas as pd
    from vlmeval.smp import load

    try:
        # An absolute path with an explicit format: load() never takes it for a URL (it downloads those)
        # and never picks its reader from anything but the allow-list above.
        table = load(str(path.resolve()), fmt=FORMATS[suffix])
        if isinstance(table, list) and all(isinstance(r, dict) for r in table):
            table = pd.DataFrame(table)  # .json / .jsonl: the records VLMEvalKit's dump writes
        elif isinstance(table, dict) and table and all(isinstance(v, list) for v in table.values()):
            table = pd.DataFrame(table)
    except Exception as exc:  # VLMEvalKit's load raises whatever the format's reader raises
        reason = " ".join(str(exc).split())[:300]
        raise DataError(f"{path}: not a readable prediction file ({type(exc).__name__}: {reason}); expected "
                        "VLMEvalKit's format (.xlsx/.tsv/.csv/.json with columns index and prediction)") from None
    if not hasattr(table, "columns"):
        raise DataError(f"{path}: expected a table with columns index and prediction (VLMEvalKit's prediction format)")
    missing = [c for c in ("index", "prediction") if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; a VLMEvalKit "
                        "prediction file holds the benchmark's TSV columns plus prediction")
    return table


def score_predictions(bench: str, predictions: str | Path, data: str | None = None, split: str | None = None,
                      judge=None) -> dict:
    """The benchmark's official metrics for a prediction file (the dict a run stores)."""
    path = Path(predictions).expanduser()
    if bench == "m3cot":
        from harness.scoring.m3cot import score_file

        result = score_file(path)
        return {"scoring": "official", "overall": result["overall"], "by_category": result["by_domain"],
                "by_domain": result["by_domain"], "by_topic": result["by_topic"]}
    benchmark = BENCHMARKS.get(bench)(data, split)
    table = read_vlmeval_predictions(path)
    benchmark.dataset  # loads the data (and VLMEvalKit)
    from harness.benchmarks.vlmeval_common import check_cells, text

    index = table["index"].tolist()
    check_cells(table, benchmark.cell_rules, lambda i: f"{path}: row {i + 2} (index {text(index[i])[:40]!r})")
    samples, answers, seen = [], [], {}
    for row_number, (index, prediction) in enumerate(zip(table["index"], table["prediction"]), start=2):
        uid = str(index)
        if uid in seen:
            raise DataError(f"{path}: row {row_number} repeats index {uid[:40]!r} (first at row {seen[uid]}); "
                            "keep one prediction per index")
        seen[uid] = row_number
        row = benchmark.row(uid)
        if row is None:
            raise DataError(f"{path}: row {row_number}, column index holds {uid[:40]!r}, which is not an index of "
                            f"{benchmark.path}; pass --data with the TSV the predictions were made on")
        if "question" in table.columns and text(table["question"].iloc[row_number - 2]) != text(row["question"]):
            raise DataError(f"{path}: row {row_number} (index {uid}), column question differs from {benchmark.path}'s; "
                            f"the predictions belong to another data file or benchmark (pass --data / the right BENCH)")
        samples.append(benchmark.sample(benchmark._positions[uid]))
        answers.append(str(prediction))  # as VLMEvalKit's evaluate reads it: NaN → 'nan'
    if not samples:
        raise DataError(f"{path}: no predictions")
    return benchmark.score(samples, answers, judge=judge)
