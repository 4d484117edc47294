"""M3CoT (HF data set ``LightChen2333/M3CoT``) with its official answer-extraction scoring.

Reads the data from whatever a machine without hub access can be given: a ``datasets``
``save_to_disk`` folder (a DatasetDict or one Dataset), a parquet or jsonl file, or a folder of
them. Rows are read by position on demand (memory-mapped arrow, one parquet row group at a time,
jsonl lines by byte offset), so memory stays flat over a run; images stay undecoded. The answer rule,
the metric and the published prediction-file format are :mod:`harness.scoring.m3cot`'s (stdlib only).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from harness.api import Benchmark, DataError, Grade, Sample, register_benchmark
from harness.api.benchmark import Judge
from harness.api.scores import ScoreResult
from harness.api.types import IMAGE_SUFFIXES
from harness.scoring.m3cot import extract_choice, read_prediction_file, score_records

DATA_HELP = (
    "pass --data DIR (a `datasets` save_to_disk folder of LightChen2333/M3CoT, or its parquet/jsonl "
    "files); get it with `datasets.load_dataset('LightChen2333/M3CoT').save_to_disk(DIR)` on a "
    "machine with hub access"
)
REQUIRED_COLUMNS = ("id", "question", "choices", "answer", "image", "domain", "topic")
KNOWN_SPLITS = ("train", "validation", "dev", "test")
# IVT-LR's evaluation code (FYYDCC/IVT-LR): correct when the gold letter is among *any* "the answer is X".
_IVT_LR_ANSWER = re.compile(r"the answer is\s*:?\s*\(?([A-Z])\b", re.IGNORECASE)


def ivt_lr_reference_correct(text: str, gold: str) -> bool:
    """IVT-LR's published M3CoT rule: lenient, every "the answer is X" in the text counts."""
    return gold.upper() in {m.upper() for m in _IVT_LR_ANSWER.findall(text or "")}


def _check_columns(columns, where: Path | str) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise DataError(
            f"M3CoT data {where} lacks required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (expected the fields of LightChen2333/M3CoT: {', '.join(REQUIRED_COLUMNS)}, ...)"
        )


def _image_ref(value: Any, folder: Path) -> Any:
    """An undecoded image reference that ``decode_image`` understands, or None for no image."""
    if value is None:
        return None
    if isinstance(value, dict):  # a datasets Image struct; bytes embedded, or only a path
        if value.get("bytes"):
            return value
        value = value.get("path")
        if not value:
            return None
    if isinstance(value, str):
        if not value:
            return None
        # Short strings are paths (relative to the data file's folder first); long ones base64.
        if len(value) < 4096:
            for candidate in (folder / value, Path(value)):
                if candidate.is_file():
                    return str(candidate.resolve())
            if value.lower().endswith(IMAGE_SUFFIXES):
                return str(folder / value)  # missing file: decode_image reports it per sample
    return value


# -- row sources: len() and row(i) -> (row, the folder relative image paths start from) ----------
class _ArrowRows:
    """A ``datasets`` Dataset loaded from disk: arrow files are memory-mapped."""

    def __init__(self, folder: Path):
        import datasets

        self.folder = folder
        dataset = datasets.load_from_disk(str(folder))
        _check_columns(dataset.column_names, folder)
        if isinstance(dataset.features.get("image"), datasets.Image):
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def row(self, index: int) -> tuple[dict, Path]:
        return self.dataset[index], self.folder

    def ids(self) -> list[tuple[str, str]]:
        return [(str(x), f"row {i}") for i, x in enumerate(self.dataset["id"])]

    def files(self) -> list[Path]:
        return sorted(
            p for p in self.folder.iterdir()
            if p.suffix == ".arrow" or p.name in ("dataset_info.json", "state.json")
        )


class _ParquetRows:
    """Parquet files read one row group at a time (the last one stays cached for sequential runs)."""

    def __init__(self, paths: list[Path]):
        import pyarrow.parquet as pq

        self.paths = paths
        self.groups: list[tuple[int, int]] = []  # (file index, row group)
        self.starts: list[int] = []  # first row of each group
        self.total = 0
        for file_index, path in enumerate(paths):
            try:
                parquet = pq.ParquetFile(path)
            except Exception as exc:  # pyarrow raises several types for a non-parquet file
                raise DataError(f"M3CoT data {path} is not a readable parquet file: {exc}") from None
            _check_columns(parquet.schema_arrow.names, path)
            for group in range(parquet.num_row_groups):
                self.groups.append((file_index, group))
                self.starts.append(self.total)
                self.total += parquet.metadata.row_group(group).num_rows
        self._cached: tuple[int, list[dict]] | None = None

    def __len__(self) -> int:
        return self.total

    def row(self, index: int) -> tuple[dict, Path]:
        import pyarrow.parquet as pq

        if not 0 <= index < self.total:
            raise IndexError(f"row {index} out of range (0..{self.total - 1})")
        at = bisect.bisect_right(self.starts, index) - 1
        file_index, group = self.groups[at]
        if self._cached is None or self._cached[0] != at:
            rows = pq.ParquetFile(self.paths[file_index]).read_row_group(group).to_pylist()
            self._cached = (at, rows)
        return self._cached[1][index - self.starts[at]], self.paths[file_index].parent

    def files(self) -> list[Path]:
        return list(self.paths)

    def ids(self) -> list[tuple[str, str]]:
        import pyarrow.parquet as pq

        out = []
        for path in self.paths:
            column = pq.read_table(path, columns=["id"]).column("id").to_pylist()
            out += [(str(x), f"{path.name} row {i}") for i, x in enumerate(column)]
        return out


class _JsonlRows:
    """jsonl files indexed by line offsets once; a row is parsed when it is read."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.lines: list[tuple[int, int, int]] = []  # (file index, byte offset, line number)
        self._ids: list[tuple[str, str]] = []
        for file_index, path in enumerate(paths):
            with path.open("rb") as fh:
                offset = 0
                for number, line in enumerate(fh, 1):
                    if line.strip():
                        obj = self._parse(line, path, number)
                        if not self.lines or self.lines[-1][0] != file_index:
                            _check_columns(obj, path)
                        self._ids.append((str(obj.get("id")), f"{path.name} line {number}"))
                        self.lines.append((file_index, offset, number))
                    offset += len(line)

    def ids(self) -> list[tuple[str, str]]:
        return self._ids

    @staticmethod
    def _parse(line: bytes, path: Path, number: int) -> dict:
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"M3CoT data {path}: line {number} is not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise DataError(f"M3CoT data {path}: line {number} is not a JSON object")
        return obj

    def __len__(self) -> int:
        return len(self.lines)

    def row(self, index: int) -> tuple[dict, Path]:
        file_index, offset, number = self.lines[index]
        path = self.paths[file_index]
        with path.open("rb") as fh:
            fh.seek(offset)
            obj = self._parse(fh.readline(), path, number)
        missing = [name for name in REQUIRED_COLUMNS if name not in obj]
        if missing:
            raise DataError(f"M3CoT data {path}: line {number} lacks field(s) {', '.join(missing)}")
        return obj, path.parent

    def files(self) -> list[Path]:
        return list(self.paths)


def _check_unique_ids(rows, where) -> None:
    """A repeated id would make two samples one (runs key samples by id): refuse, naming them."""
    seen: dict[str, str] = {}
    repeats = []
    for uid, place in rows.ids():
        if uid in seen:
            repeats.append(f"{uid!r} at {seen[uid]} and {place}")
        else:
            seen[uid] = place
    if repeats:
        more = f" (and {len(repeats) - 3} more)" if len(repeats) > 3 else ""
        raise DataError(f"M3CoT data {where}: ids repeat: {'; '.join(repeats[:3])}{more}; every sample needs its "
                        "own id (drop or renumber the duplicate rows)")


def _split_tokens(path: Path, root: Path) -> set[str]:
    """Lower-case words of a file's path below ``root``: ``data/test-00000-of-00001.parquet`` → {..., "test"}."""
    return set(re.split(r"[^a-z0-9]+", str(path.relative_to(root)).lower()))


@register_benchmark("m3cot")
class M3CoT(Benchmark):
    description = "M3CoT multi-domain multi-step multimodal CoT (science, commonsense, mathematics); official M3CoT scoring"
    split = "test"
    data_help = DATA_HELP

    def __init__(self, data: str | None = None, split: str | None = None):
        super().__init__(data, split)
        self._rows = None
        self._fingerprint: str | None = None

    # -- loading -----------------------------------------------------------------------------
    def _open(self):
        if self._rows is None:
            rows = self._load()
            _check_unique_ids(rows, self.data)
            self._rows = rows
        return self._rows

    def _load(self):
        if self.data is None:
            raise DataError(f"M3CoT data not given: {DATA_HELP}")
        path = Path(self.data).expanduser()
        if not path.exists():
            raise DataError(f"M3CoT data not found at {path}: {DATA_HELP}")
        if path.is_file():
            return self._file_rows([path])
        if (path / "dataset_dict.json").is_file():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            if self.split not in splits:
                raise DataError(
                    f"M3CoT data {path} has no split {self.split!r}; available splits: {', '.join(splits)}"
                )
            return _ArrowRows(path / self.split)
        if (path / "state.json").is_file():
            return _ArrowRows(path)  # one saved Dataset: it is the split
        return self._file_rows(self._folder_files(path))

    def _folder_files(self, folder: Path) -> list[Path]:
        found = sorted(p for p in folder.rglob("*") if p.suffix in (".parquet", ".jsonl") and p.is_file())
        if not found:
            raise DataError(
                f"M3CoT data not found at {folder}: no save_to_disk folder, parquet or jsonl files there; {DATA_HELP}"
            )
        # Prefer parquet: a folder may also hold jsonl prediction files.
        parquet = [p for p in found if p.suffix == ".parquet"]
        found = parquet or found
        named = {p: _split_tokens(p, folder) & set(KNOWN_SPLITS) for p in found}
        if not any(named.values()):
            return found  # file names name no split: the folder is the split
        chosen = [p for p in found if self.split in named[p]]
        if not chosen:
            available = sorted(set().union(*named.values()))
            raise DataError(
                f"M3CoT data {folder} has no files for split {self.split!r}; available splits: {', '.join(available)}"
            )
        return chosen

    @staticmethod
    def _file_rows(paths: list[Path]):
        suffixes = {p.suffix for p in paths}
        if suffixes == {".parquet"}:
            return _ParquetRows(paths)
        if suffixes == {".jsonl"}:
            return _JsonlRows(paths)
        raise DataError(
            f"M3CoT data {paths[0]}: expected a .parquet or .jsonl file (or a folder of them); {DATA_HELP}"
        )

    # -- data --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._open())

    def sample(self, position: int) -> Sample:
        row, folder = self._open().row(position)
        image = _image_ref(row.get("image"), folder)
        return Sample(
            uid=str(row["id"]),
            question=row["question"],
            gold=row["answer"],
            choices=list(row["choices"]),
            image_refs=[image] if image is not None else [],
            context=row.get("context") or "",
            category=row["domain"],
            meta={
                "domain": row["domain"],
                "topic": row["topic"],
                "image_id": row.get("image_id"),
                "rationale": row.get("rationale"),
            },
        )

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for path in self._open().files():
                digest.update(path.name.encode() + b"\0")
                with path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def format_question(self, sample: Sample) -> str:
        # M3CoT's own zero-shot prompt (as in its published prediction files), without the
        # method-specific instruction that follows it.
        parts = [f"[Context]\n{sample.context}"] if sample.context else []
        parts += [f"[Question]\n{sample.question}", "[Choices]"]
        parts += [f"({chr(65 + i)}) {choice}" for i, choice in enumerate(sample.choices)]
        return "\n".join(parts)

    # -- scoring -----------------------------------------------------------------------------
    def grade(self, sample: Sample, answer: str) -> Grade:
        extracted = extract_choice(answer or "", sample.choices)
        return Grade(extracted=extracted, correct=extracted == sample.gold)

    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult:
        records = [
            {
                "answer": sample.gold,
                "choices": sample.choices,
                "domain": sample.meta.get("domain", sample.category),
                "topic": sample.meta.get("topic", ""),
                "prediction": answer or "",
            }
            for sample, answer in zip(samples, answers)
        ]
        result = score_records(records)
        return {
            "scoring": "official",
            "overall": result["overall"],
            "by_category": result["by_domain"],
            "by_topic": result["by_topic"],
        }

    def reference_scores(self, samples: list[Sample], texts: list[str]) -> list[ScoreResult]:
        overall = {"correct": 0, "total": 0}
        by_category: dict[str, dict] = {}
        for sample, text in zip(samples, texts):
            correct = ivt_lr_reference_correct(text, sample.gold)
            for bucket in (overall, by_category.setdefault(sample.meta.get("domain", sample.category) or "all",
                                                           {"correct": 0, "total": 0})):
                bucket["correct"] += int(correct)
                bucket["total"] += 1
        for bucket in (overall, *by_category.values()):
            bucket["accuracy"] = round(100.0 * bucket["correct"] / bucket["total"], 2) if bucket["total"] else 0.0
        return [{"scoring": "reference", "scorer": "m3cot:ivt-lr-reference",
                 "note": "IVT-LR's evaluation code: the gold letter among any 'the answer is X' in the generated "
                         "text (lenient); for comparison with the paper, not the official M3CoT score",
                 "overall": overall, "by_category": dict(sorted(by_category.items()))}]

    # -- prediction files --------------------------------------------------------------------
    def read_predictions(self, path: Path) -> tuple[list[Sample], list[str]]:
        """M3CoT's published jsonl format (``id, answer, choices, domain, topic, messages``; the last message
        is the answer). The samples come from the file itself: it needs no ``--data``."""
        records = read_prediction_file(path)
        samples = [Sample(uid=str(r["id"]), question="", gold=r["answer"], choices=r["choices"], category=r["domain"],
                          meta={"domain": r["domain"], "topic": r["topic"]}) for r in records]
        return samples, [r["prediction"] for r in records]

    def score_predictions(self, path: Path, judge: Judge | None = None) -> ScoreResult:
        result = super().score_predictions(path, judge=judge)
        # `harness score m3cot` has always named the domains by_domain too (M3CoT's own word); kept for its readers.
        return {"scoring": result["scoring"], "overall": result["overall"], "by_category": result["by_category"],
                "by_domain": result["by_category"], "by_topic": result["by_topic"]}
