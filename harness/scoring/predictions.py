"""Score a prediction file through the same code path as a run (``harness score``).

VLMEvalKit benchmarks: VLMEvalKit's prediction format (what its inference writes: the benchmark's TSV
columns without ``image``, plus ``prediction``; .xlsx, .tsv, .csv, .json or .jsonl (never .pkl), read with
VLMEvalKit's own ``load``). Each row's ``index`` names the sample in the benchmark's data, the answer
is ``str(prediction)`` as VLMEvalKit reads it, and the benchmark's ``score`` does the rest, exactly as
at the end of a run. M3CoT: its published jsonl format (``harness.scoring.m3cot``).
"""
from __future__ import annotations

from pathlib import Path

from harness.api import BENCHMARKS, DataError


def read_vlmeval_predictions(path: Path):
    """The prediction table; DataError naming the file and the fix if it is not one."""
    if not path.is_file():
        raise DataError(f"{path}: prediction file not found")
    if path.suffix.lower() in (".pkl", ".pickle"):  # unpickling a file can run code: never for user input
        raise DataError(f"{path}: pickle files are not read (loading one can run code); "
                        "save the predictions as .xlsx, .tsv, .csv or .json")
    from harness.benchmarks.vlmeval_common import import_vlmeval

    import_vlmeval()
    from vlmeval.smp import load

    try:
        table = load(str(path))
    except Exception as exc:  # VLMEvalKit's load raises whatever the format's reader raises
        raise DataError(f"{path}: not a readable prediction file ({type(exc).__name__}: {exc}); expected "
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
        from .m3cot import score_file

        result = score_file(path)
        return {"scoring": "official", "overall": result["overall"], "by_category": result["by_domain"],
                "by_domain": result["by_domain"], "by_topic": result["by_topic"]}
    benchmark = BENCHMARKS.get(bench)(data, split)
    table = read_vlmeval_predictions(path)
    benchmark.dataset  # loads the data (and VLMEvalKit)
    from harness.benchmarks.vlmeval_common import text

    samples, answers, seen = [], [], {}
    for row_number, (index, prediction) in enumerate(zip(table["index"], table["prediction"]), start=2):
        uid = str(index)
        if uid in seen:
            raise DataError(f"{path}: row {row_number} repeats index {uid} (first at row {seen[uid]}); "
                            "keep one prediction per index")
        seen[uid] = row_number
        row = benchmark.row(uid)
        if row is None:
            raise DataError(f"{path}: row {row_number} has index {uid}, which is not in {benchmark.path}; "
                            "pass --data with the TSV the predictions were made on")
        if "question" in table.columns and text(table["question"].iloc[row_number - 2]) != text(row["question"]):
            raise DataError(f"{path}: row {row_number} (index {uid}) asks a different question than {benchmark.path}; "
                            f"the predictions belong to another data file or benchmark (pass --data / the right BENCH)")
        samples.append(benchmark.sample(benchmark._positions[uid]))
        answers.append(str(prediction))  # as VLMEvalKit's evaluate reads it: NaN → 'nan'
    if not samples:
        raise DataError(f"{path}: no predictions")
    return benchmark.score(samples, answers, judge=judge)
