"""MMStar, loaded and scored through VLMEvalKit's own ``ImageMCQDataset``.

The data is VLMEvalKit's ``MMStar.tsv`` (base64 images; a short ``image`` cell names another row's
index). A subclass of ``ImageMCQDataset`` reads that file directly, so VLMEvalKit never downloads
or md5-checks anything, while the dataset name stays ``MMStar``: ``evaluate`` then takes exactly the
path VLMEvalKit takes for MMStar (plain, non-circular MCQ; answers matched by ``can_infer`` under
``exact_matching``; accuracy overall and per ``category``).

``import vlmeval`` is slow (~10 s) and has process-wide side effects, so it happens lazily, once,
through :func:`import_vlmeval`, which undoes the ones the harness must not inherit.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import logging
import os
import string
import tempfile
from pathlib import Path
from typing import Any

from harness.api import Benchmark, DataError, Judgement, Sample, register_benchmark

VLMEVAL_NAME = "MMStar"  # VLMEvalKit's name: evaluate() picks its scoring logic from it
REQUIRED_COLUMNS = ("index", "question", "answer", "A", "B", "C", "D", "category", "image")
OFFICIAL_COLUMNS = ("index", "question", "answer", "A", "B", "C", "D", "category", "l2_category", "image")
BUILD_COMMAND = "python -c \"from vlmeval.dataset import build_dataset; build_dataset('MMStar')\""

log = logging.getLogger(__name__)


# -- VLMEvalKit, imported lazily -------------------------------------------------------------------
def import_vlmeval():
    """Import VLMEvalKit once and return the module, undoing its unwanted process-wide side effects.

    Importing it switches off autograd, reseeds torch's global RNG (``vlmeval.vlm``) and disables SSL
    certificate checks for every HTTPS connection of the process (``vlmeval/__init__``). The first two
    would silently change training and sampling elsewhere in the process; the last one only serves
    VLMEvalKit's downloads, which the harness never lets happen. (It also configures root logging and
    logs an error when no ``.env`` sits beside the package; both are harmless and left alone.)
    """
    import sys

    if "vlmeval" in sys.modules and "vlmeval.dataset" in sys.modules:
        return sys.modules["vlmeval"]
    import ssl

    import torch

    grad_enabled = torch.is_grad_enabled()
    cpu_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    https_context = ssl._create_default_https_context
    try:
        import vlmeval
        import vlmeval.dataset  # noqa: F401  (imports vlmeval.vlm and friends: the side effects)
    except ImportError as exc:
        raise ImportError(
            f"MMStar needs VLMEvalKit (`pip install 'latent-cot-harness[vlmeval]'`): {exc}"
        ) from exc
    finally:
        torch.set_grad_enabled(grad_enabled)
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        ssl._create_default_https_context = https_context
    return vlmeval


def lmu_data_root() -> Path:
    """The folder VLMEvalKit keeps its TSVs in, resolved as ``vlmeval.smp.LMUDataRoot`` does.

    Mirrored rather than called: that helper needs the slow import and creates ``~/LMUData``.
    """
    env = os.environ.get("LMUData")
    if env and os.path.exists(env):
        return Path(env)
    return Path(os.path.expanduser("~")) / "LMUData"


def default_data_path() -> Path:
    return lmu_data_root() / f"{VLMEVAL_NAME}.tsv"


_DATASET_CLASS = None


def _dataset_class():
    """``ImageMCQDataset`` for MMStar, reading a given, already-read table instead of downloading."""
    global _DATASET_CLASS
    if _DATASET_CLASS is None:
        import_vlmeval()
        from vlmeval.dataset import ImageMCQDataset

        class LocalMMStar(ImageMCQDataset):
            # The name maps to no URL and no md5, so nothing can trigger prepare_tsv's re-download;
            # load_data below does not look at them anyway.
            DATASET_URL = {VLMEVAL_NAME: ""}
            DATASET_MD5 = {VLMEVAL_NAME: None}

            def __init__(self, table):
                self._table = table
                super().__init__(VLMEVAL_NAME)  # resolves index-referenced images, as for the real file

            def load_data(self, dataset):
                return self._table

            def dump_image(self, line):
                # The harness decodes images itself; VLMEvalKit would write each one under $LMUData/images.
                return [f"<image of row {line['index']}>"]

        _DATASET_CLASS = LocalMMStar
    return _DATASET_CLASS


# -- reading the TSV -------------------------------------------------------------------------------
def _missing_file_message(path: Path) -> str:
    return (
        f"MMStar data not found at {path}: expected VLMEvalKit's MMStar.tsv (TSV with base64 images); "
        f"on a machine with internet run `{BUILD_COMMAND}`, then copy ~/LMUData/MMStar.tsv to "
        f"{lmu_data_root()} ($LMUData) or pass --data PATH"
    )


def _check_header(path: Path) -> None:
    """Fail fast, before pandas and VLMEvalKit, on a file that is not an MMStar TSV."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter="\t"), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"MMStar data {path} is not a readable UTF-8 TSV: {exc}") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DataError(
            f"MMStar data {path} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(VLMEvalKit's MMStar.tsv has {', '.join(OFFICIAL_COLUMNS)})"
        )


def _unresolvable(cell: str, index: str) -> str:
    # Longer than 64 characters so VLMEvalKit takes it for image data rather than asserting on it;
    # not base64, so decode_image raises BadImage for this sample only.
    return (
        f"unresolvable image cell {cell[:40]!r} in row {index}: "
        "neither base64 image data nor the index of a row that holds an image"
    )


def _read_table(path: Path):
    """The TSV as VLMEvalKit reads it (``pd.read_csv(sep='\\t')``), made safe for its constructor.

    ``ImageBaseDataset.__init__`` asserts on an image cell that does not resolve (one bad row would
    fail the whole load) and ``eval``s index cells and ``[...]`` image cells. So: the index must be
    unique integers; ``[...]`` cells must be list literals; unresolvable cells become placeholders.
    """
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t")
    except Exception as exc:  # pandas raises several types for a malformed file
        raise DataError(f"MMStar data {path} is not a readable TSV: {exc}") from None
    if not pd.api.types.is_integer_dtype(table["index"]):
        raise DataError(f"MMStar data {path}: column index must hold integers (VLMEvalKit's MMStar.tsv format)")
    duplicated = table["index"][table["index"].duplicated()].tolist()
    if duplicated:
        raise DataError(f"MMStar data {path}: index values repeat: {', '.join(map(str, duplicated[:5]))}")

    keys = [str(x) for x in table["index"]]
    cells = ["" if pd.isna(x) else str(x) for x in table["image"]]
    for i, cell in enumerate(cells):
        if cell.startswith("[") and cell.endswith("]"):  # several images; VLMEvalKit eval()s the cell
            try:
                ok = all(isinstance(x, str) and len(x) > 64 for x in ast.literal_eval(cell))
            except (ValueError, SyntaxError, TypeError):
                ok = False
            if not ok:
                cells[i] = _unresolvable(cell, keys[i])
    # Resolve short cells (row references) exactly in VLMEvalKit's order, marking what it would reject.
    image_map = dict(zip(keys, cells))
    bad = []
    for key, cell in image_map.items():
        if len(cell) <= 64:
            if cell in image_map and len(image_map[cell]) > 64:
                image_map[key] = image_map[cell]
            else:
                bad.append(key)
    if bad:
        bad_set = set(bad)
        table["image"] = [_unresolvable(c, k) if k in bad_set else c for k, c in zip(keys, cells)]
        log.warning("MMStar data %s: %d row(s) with an unresolvable image cell (index %s); they score as errors",
                    path, len(bad), ", ".join(bad[:10]))
    else:
        table["image"] = cells
    return table


def _text(value: Any) -> str:
    import pandas as pd

    return "" if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)) else str(value)


# -- the benchmark ---------------------------------------------------------------------------------
@register_benchmark("mmstar")
class MMStar(Benchmark):
    description = (
        "MMStar (1,500 vision-indispensable MCQs, 6 capabilities) via VLMEvalKit's ImageMCQDataset "
        "'MMStar'; official exact-matching scoring"
    )
    data_help = (
        "VLMEvalKit's MMStar.tsv, by default $LMUData/MMStar.tsv (LMUData defaults to ~/LMUData); "
        f"get it on a machine with internet with `{BUILD_COMMAND}`, or pass --data PATH"
    )
    split = "test"  # MMStar has a single split

    def __init__(self, data: str | None = None, split: str | None = None):
        super().__init__(data, split)
        path = Path(data).expanduser() if data else default_data_path()
        if path.is_dir():
            path = path / f"{VLMEVAL_NAME}.tsv"
        if not path.is_file():
            raise DataError(_missing_file_message(path))
        _check_header(path)
        self.path = path
        self._vlmeval_dataset = None
        self._positions: dict[str, int] = {}

    # -- data ----------------------------------------------------------------------------------------
    @property
    def dataset(self):
        """The VLMEvalKit dataset object (built on first use: this is where ``import vlmeval`` happens)."""
        if self._vlmeval_dataset is None:
            table = _read_table(self.path)
            self._vlmeval_dataset = _dataset_class()(table)
            self._positions = {str(x): i for i, x in enumerate(self._vlmeval_dataset.data["index"])}
        return self._vlmeval_dataset

    def __len__(self) -> int:
        return len(self.dataset.data)

    def _options(self, row) -> dict[str, str]:
        # As VLMEvalKit's build_prompt and build_choices see them: every A-Z column with a value.
        return {c: row[c] for c in string.ascii_uppercase if c in row and _text(row[c]) != ""}

    def sample(self, position: int) -> Sample:
        row = self.dataset.data.iloc[position]
        image = row["image"]
        meta = {"l2_category": _text(row["l2_category"])} if "l2_category" in row else {}
        return Sample(
            uid=str(row["index"]),
            question=_text(row["question"]),
            gold=_text(row["answer"]),
            choices=[str(v) for v in self._options(row).values()],
            image_refs=list(image) if isinstance(image, list) else [image],
            context=_text(row["hint"]) if "hint" in row else "",
            category=_text(row["category"]),
            meta=meta,
        )

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]

    def _sample_options(self, sample: Sample) -> dict[str, Any]:
        """The option letters and texts of ``sample``: from its row (letters kept exactly), else in order."""
        data = self.dataset.data
        position = self._positions.get(sample.uid)
        if position is not None:
            options = self._options(data.iloc[position])
            if [str(v) for v in options.values()] == list(sample.choices):
                return options
        return dict(zip(string.ascii_uppercase, sample.choices))

    def format_question(self, sample: Sample) -> str:
        """VLMEvalKit's own MCQ prompt text (``ImageMCQDataset.build_prompt``), images left out."""
        line: dict[str, Any] = {"index": sample.uid, "question": sample.question, **self._sample_options(sample)}
        if sample.context:
            line["hint"] = sample.context
        messages = self.dataset.build_prompt(line)
        return "".join(m["value"] for m in messages if m["type"] == "text")

    # -- scoring -------------------------------------------------------------------------------------
    def judge(self, sample: Sample, answer: str) -> Judgement:
        """VLMEvalKit's exact-matching extraction: ``can_infer`` on the answer and the option texts."""
        options = self._sample_options(sample)  # a fresh dict: can_infer_text lower-cases it in place
        from vlmeval.utils.matching_util import can_infer  # vlmeval is imported by now (self.dataset)

        found = can_infer(str(answer), options)
        extracted = found if found else ""
        return Judgement(extracted=extracted, correct=bool(extracted) and extracted == sample.gold)

    def score(self, samples: list[Sample], answers: list[str]) -> dict:
        """Run VLMEvalKit's ``evaluate(model='exact_matching')`` on a prediction file of these answers."""
        samples, answers = list(samples), list(answers)
        if len(samples) != len(answers):
            raise ValueError(f"{len(samples)} samples but {len(answers)} answers")
        empty = {"correct": 0, "total": 0, "accuracy": 0.0}
        if not samples:
            return {"scoring": "official", "overall": empty, "by_category": {}, "vlmeval": {}}
        dataset = self.dataset
        unknown = [s.uid for s in samples if s.uid not in self._positions]
        if unknown:
            raise ValueError(f"samples not in {self.path}: {', '.join(unknown[:5])}")
        uids = [s.uid for s in samples]
        if len(set(uids)) != len(uids):
            raise ValueError("score() got the same sample more than once")

        from vlmeval.smp import dump, get_intermediate_file_path, load

        # The rows VLMEvalKit's inference would write: the TSV columns without `image`, plus `prediction`.
        table = dataset.data.iloc[[self._positions[u] for u in uids]].drop(columns=["image"]).copy()
        table["prediction"] = [str(a) for a in answers]
        with tempfile.TemporaryDirectory(prefix="harness-mmstar-") as tmp:
            # A pickled DataFrame (VLMEvalKit's load() reads .pkl) so evaluate() sees every answer byte
            # for byte; an .xlsx/.tsv round trip turns '', 'NA' and 'None' into 'nan', and .xlsx also
            # escapes '\r' and truncates at 32,767 characters, which would make it disagree with judge().
            pred_file = os.path.join(tmp, f"harness_{VLMEVAL_NAME}.pkl")
            dump(table, pred_file)
            acc = dataset.evaluate(pred_file, model="exact_matching", nproc=1)
            hits = load(get_intermediate_file_path(pred_file, "_exact_matching_result", "pkl"))

        official = acc.to_dict(orient="list")
        raw = {str(k): [_plain(v) for v in values] for k, values in official.items()}
        single = len(acc) == 1  # one row unless the TSV has a `split` column

        counts: dict[str, dict] = {}
        overall = {"correct": 0, "total": 0}
        for sample, index in zip(samples, table["index"]):
            hit = int(hits[index]["hit"])
            for bucket in (overall, counts.setdefault(sample.category, {"correct": 0, "total": 0})):
                bucket["correct"] += hit
                bucket["total"] += 1

        def finish(bucket: dict, column: str) -> dict:
            if single and column in raw and raw[column][0] is not None:
                bucket["accuracy"] = round(100.0 * raw[column][0], 2)
            else:
                bucket["accuracy"] = round(100.0 * bucket["correct"] / bucket["total"], 2)
            return bucket

        return {
            "scoring": "official",
            "overall": finish(overall, "Overall"),
            "by_category": {cat: finish(counts[cat], cat) for cat in sorted(counts)},
            "vlmeval": {"dataset": VLMEVAL_NAME, "judge": "exact_matching", "acc": raw},
        }


def _plain(value: Any) -> Any:
    """A JSON-serialisable copy of one cell of VLMEvalKit's accuracy table."""
    import math

    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
