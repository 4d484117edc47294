"""What every VLMEvalKit benchmark shares: the lazy import, the TSV reader, the local dataset class,
VLMEvalKit's prediction-file format, and a :class:`VLMEvalBenchmark` base that loads and scores through
VLMEvalKit's own dataset class.

The data is VLMEvalKit's TSV for the benchmark (``$LMUData/NAME.tsv``; base64 images; a short
``image`` cell names another row's index). A subclass of VLMEvalKit's class reads that file
directly, so VLMEvalKit never downloads or md5-checks anything, while the dataset name stays the
official one: ``evaluate`` then takes exactly the path VLMEvalKit takes for that name (circular
scoring for MMBench, the pair metric for MMVP, F1 for POPE, ...). Scoring writes the prediction
table VLMEvalKit's inference writes (the TSV's columns without ``image``, plus ``prediction``) to a
temporary folder and calls ``dataset.evaluate`` on it.

``import vlmeval`` is slow (~10 s) and has process-wide side effects, so it happens lazily, once,
through :func:`import_vlmeval`, which undoes the ones the harness must not inherit. It is the one guard:
every function of ``harness.benchmarks`` that imports from ``vlmeval`` calls it (or loads the dataset,
which does) first.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import logging
import math
import os
import re
import string
import tempfile
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from harness.api import BENCHMARKS, BadImage, Benchmark, DataError, Grade, Sample
from harness.api.benchmark import Judge
from harness.api.scores import Bucket, ScoreResult
from harness.api.types import IMAGE_SUFFIXES

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
    import logging

    # Its import logs an ERROR on the root logger when no .env sits beside the package: noise to a user
    # who never needs one (the harness passes the judge's settings itself).
    quiet = _DropMessage("Did not detect the .env file")
    logging.getLogger().addFilter(quiet)  # it logs through the root logger itself: logging.error(...)
    try:
        import vlmeval
        import vlmeval.dataset  # noqa: F401  (imports vlmeval.vlm and friends: the side effects)
    except ImportError as exc:
        raise ImportError(
            f"the VLMEvalKit benchmarks need VLMEvalKit (`pip install 'latent-cot-harness[vlmeval]'`): {exc}"
        ) from exc
    finally:
        logging.getLogger().removeFilter(quiet)
        torch.set_grad_enabled(grad_enabled)
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        ssl._create_default_https_context = https_context
    return vlmeval


class _DropMessage:
    def __init__(self, prefix: str):
        self.prefix = prefix

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefix)


def lmu_data_root() -> Path:
    """The folder VLMEvalKit keeps its TSVs in, resolved as ``vlmeval.smp.LMUDataRoot`` does.

    Mirrored rather than called: that helper needs the slow import and creates ``~/LMUData``.
    """
    env = os.environ.get("LMUData")
    if env and os.path.exists(env):
        return Path(env)
    return Path(os.path.expanduser("~")) / "LMUData"


def build_command(vlmeval_name: str) -> str:
    return f"python -c \"from vlmeval.dataset import build_dataset; build_dataset('{vlmeval_name}')\""


_LOCAL_CLASSES: dict[tuple[str, bool], type] = {}


def vlmeval_dataset_over_table(class_name: str, vlmeval_name: str, table, dump_images: bool = False):
    """An instance of VLMEvalKit's ``class_name`` named ``vlmeval_name`` over an already-read (and checked:
    :meth:`VLMEvalBenchmark.load_table`) table.

    The name maps to no URL and no md5 on the instance, so nothing can trigger ``prepare_tsv``'s
    re-download; ``load_data`` returns the given table anyway. ``dump_image`` writes nothing unless
    ``dump_images`` (the harness decodes images itself; VLMEvalKit's own inference needs the files it
    writes under ``$LMUData/images``).
    """
    key = (class_name, dump_images)
    if key not in _LOCAL_CLASSES:
        import_vlmeval()
        import vlmeval.dataset as vlmeval_datasets

        base = getattr(vlmeval_datasets, class_name)

        def __init__(self, name, table):
            self._table = table
            self.DATASET_URL = {name: ""}
            self.DATASET_MD5 = {name: None}
            base.__init__(self, name)  # resolves index-referenced images, as for the real file

        def load_data(self, dataset):
            return self._table

        def dump_image(self, line):
            return [f"<image of row {line['index']}>"]

        members = {"__init__": __init__, "load_data": load_data,
                   "__doc__": f"VLMEvalKit's {class_name} over a local table (never downloads)."}
        if not dump_images:
            members["dump_image"] = dump_image
        _LOCAL_CLASSES[key] = type(f"Local{class_name}", (base,), members)
    return _LOCAL_CLASSES[key](vlmeval_name, table)


# -- reading a TSV ---------------------------------------------------------------------------------
# Columns that only one benchmark's TSV has: used to say which benchmark a wrong file belongs to.
SIGNATURES = (
    ("mathverse", ("question_for_eval", "problem_version")),
    ("mathvista", ("question_type", "answer_type", "skills")),
    ("mmstar", ("l2_category",)),
    ("mmbench", ("l2-category", "source", "comment")),
)


def guess_benchmark(columns) -> str | None:
    """The harness benchmark whose VLMEvalKit TSV has these columns, if the columns say so."""
    cols = set(columns)
    for name, needed in SIGNATURES:
        if all(c in cols for c in needed):
            return name
    if {"A", "B"} <= cols and "C" not in cols:
        return "mmvp"
    if "A" not in cols and {"index", "question", "answer", "category", "image"} <= cols:
        return "pope"
    return None


def read_header(path: Path, label: str) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh, delimiter="\t"), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{label} data {path} is not a readable UTF-8 TSV ({exc}); "
                        f"expected VLMEvalKit's {label} TSV") from None


def unresolvable(cell: str, index: str) -> str:
    # Longer than 64 characters so VLMEvalKit takes it for image data rather than asserting on it;
    # not base64, so decode_image raises BadImage for this sample only.
    return (
        f"unresolvable image cell {cell[:40]!r} in row {index}: "
        "neither base64 image data nor the index of a row that holds an image"
    )


# -- cells VLMEvalKit evaluates as Python ------------------------------------------------------------
# VLMEvalKit 0.0.20 runs ``eval()`` on some cells of the TSV (and of its own intermediate files, which
# copy them): ``toliststr`` on ``image`` / ``image_path`` cells in ``[...]`` (ImageBaseDataset.__init__),
# ``istype`` on ``index`` cells (the same place), MathVista's ``skills`` (MathVista_acc) and
# ``choices`` (post_check). Such a cell reaches VLMEvalKit only after its shape is checked here with
# ``ast.literal_eval``, which evaluates nothing: a cell that parses as a literal evaluates, under
# ``eval``, to that same literal and runs no code. Index cells must be integers (read_table); an image
# cell that is not a list literal is replaced by a placeholder (its sample fails alone, saying why);
# any other cell of a ruled column (``cell_rules``) that fails its rule is a one-line DataError naming
# file, row, column and fix.
def literal(cell: str) -> Any:
    """``ast.literal_eval(cell)``; ValueError for anything that is not a Python literal."""
    try:
        return ast.literal_eval(cell)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"not a Python literal: {cell[:40]!r}") from None


def _excerpt(value: Any) -> str:
    shown = text(value)
    return repr(shown[:40] + ("..." if len(shown) > 40 else ""))


def list_of_strings_cell(example: str, required: bool = True, numbers: bool = False) -> Callable[[Any], str | None]:
    """A cell rule: a Python list literal of strings (``numbers``: or numbers), as VLMEvalKit ``eval()``s it."""
    kinds = (str, int, float) if numbers else (str,)

    def rule(value: Any) -> str | None:
        cell = text(value)
        if cell == "" and not required:
            return None
        try:
            parsed = literal(cell)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, kinds) and not isinstance(x, bool) for x in parsed):
            return None
        what = "strings or numbers" if numbers else "strings"
        return (f"holds {_excerpt(value)}, not a Python list of {what} (VLMEvalKit eval()s this cell); write it "
                f"as a list literal like {example} or drop that row")
    return rule


def image_path_cell(value: Any) -> str | None:
    """``image_path``: a file name, or a list literal of them (VLMEvalKit's ``toliststr`` eval()s ``[...]``)."""
    cell = text(value) if isinstance(value, str) else ""
    if cell and not (cell.startswith("[") and cell.endswith("]")):
        return None
    if cell:
        try:
            parsed = literal(cell)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and parsed and all(isinstance(x, str) for x in parsed):
            return None
    return (f"holds {_excerpt(value)}, not an image file name or a Python list literal of file names (VLMEvalKit "
            "eval()s a cell in [...]); fix that row or drop the column (the harness reads the image column)")


def check_cells(table, rules: dict[str, Callable[[Any], str | None]], where: Callable[[int], str]) -> None:
    """Apply each column's rule to every cell of that column; the first failure is a one-line DataError
    ``"{where(row position)}, column C {problem and fix}"``."""
    for column, rule in rules.items():
        if column not in table:
            continue
        for i, value in enumerate(table[column].tolist()):
            problem = rule(value)
            if problem:
                raise DataError(f"{where(i)}, column {column} {problem}".replace("\n", " "))


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_FIX = "image cells of a VLMEvalKit TSV hold base64 image data or the index of another row"


def _image_problem(cell: str, where: str) -> str | None:
    """Why a single (non-list) image cell cannot become an image, or None if it may (base64, a file)."""
    if cell.startswith("[") and cell.endswith("]"):
        return None  # a list literal, checked by read_table
    if cell == "":
        return f"{where}, column image is empty; {_FIX}"
    if len(cell) <= 64 or not _BASE64.fullmatch(cell[:4096]):
        looks_like_path = "\n" not in cell and ("/" in cell or "\\" in cell or cell.lower().endswith(IMAGE_SUFFIXES))
        if len(cell) < 4096 and looks_like_path:
            if len(cell) > 64 and os.path.isfile(cell):
                return None  # a file the harness can read (decode_image); VLMEvalKit itself would not
            state = "does not exist" if not os.path.exists(cell) else "is a file path"
            return f"{where}, column image: image file {cell[:200]} {state}; {_FIX} (embed the image as base64)"
        if len(cell) <= 64:
            return f"{where}, column image holds {cell!r}, not the index of a row that holds an image; {_FIX}"
        return f"{where}, column image holds {_excerpt(cell)}, not base64 image data; {_FIX}"
    return None


def read_table(path: Path, label: str):
    """The TSV as VLMEvalKit reads it (``pd.read_csv(sep='\\t')``), made safe for its constructor.

    ``ImageBaseDataset.__init__`` asserts on an image cell that does not resolve (one bad row would
    fail the whole load) and ``eval``s index cells and ``[...]`` image cells. So: the table has rows;
    the index must be unique integers; ``[...]`` cells that are not list literals of base64 strings and
    cells that resolve to nothing become placeholders (never evaluated), and every cell that cannot be an
    image is noted: its sample becomes an error row that says why, with one warning that counts them
    (``table.attrs["image_problems"]`` maps index → reason).
    """
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t")
    except Exception as exc:  # pandas raises several types for a malformed file
        raise DataError(f"{label} data {path} is not a readable TSV: {' '.join(str(exc).split())[:300]}") from None
    if len(table) == 0:
        raise DataError(f"{label} data {path} has a header but no rows; expected VLMEvalKit's {label} TSV with one "
                        "row per question (re-download it, or pass the full file)")
    if not pd.api.types.is_integer_dtype(table["index"]):
        bad = next((i for i, x in enumerate(table["index"]) if not str(x).lstrip("-").isdigit()), 0)
        raise DataError(
            f"{label} data {path}: row {bad + 2} (line of the file) has index {_excerpt(table['index'][bad])}; "
            f"column index must hold integers as in VLMEvalKit's {label} TSV (fix or drop that row)"
        )
    duplicated = table["index"][table["index"].duplicated()].tolist()
    if duplicated:
        lines = [int(i) + 2 for i in table.index[table["index"].duplicated()][:5]]
        raise DataError(
            f"{label} data {path}: index values repeat ({', '.join(map(str, duplicated[:5]))} at lines "
            f"{', '.join(map(str, lines))}); every row needs its own index (drop the duplicate rows)"
        )
    table.attrs["image_problems"] = {}
    if "image" not in table:
        return table
    keys = [str(x) for x in table["index"]]
    cells = ["" if pd.isna(x) else str(x) for x in table["image"]]
    problems: dict[str, str] = {}
    for i, cell in enumerate(cells):
        if cell.startswith("[") and cell.endswith("]"):  # several images; VLMEvalKit eval()s the cell
            try:
                items = literal(cell)
            except ValueError:
                items = None
            if not isinstance(items, list):
                # Never handed to VLMEvalKit (whose toliststr would eval() it): this sample alone fails, saying why.
                problems[keys[i]] = (f"line {i + 2} (index {keys[i]}), column image holds {_excerpt(cell)}, not a "
                                     f"Python list literal of base64 images; {_FIX}")
                cells[i] = unresolvable(cell, keys[i])
            elif not all(isinstance(x, str) and len(x) > 64 for x in items):
                problems[keys[i]] = (f"line {i + 2} (index {keys[i]}), column image holds a list whose items are not "
                                     f"all base64 images; {_FIX}")
                cells[i] = unresolvable(cell, keys[i])
    # Resolve short cells (row references) exactly in VLMEvalKit's order, marking what it would reject.
    image_map = dict(zip(keys, cells))
    bad = []
    for key, cell in image_map.items():
        if len(cell) <= 64:
            if cell in image_map and len(image_map[cell]) > 64:
                image_map[key] = image_map[cell]
            else:
                bad.append(key)
    bad_set = set(bad)
    for i, (key, cell) in enumerate(zip(keys, cells)):
        if key in problems:
            continue
        where = f"line {i + 2} (index {key})"
        if key not in bad_set and len(cell) <= 64:  # a reference, resolved
            where += f" (its image cell refers to index {cell})"
        problem = _image_problem(image_map[key] if key not in bad_set else cell, where)
        if problem:
            problems[key] = problem
    if bad:
        table["image"] = [unresolvable(c, k) if k in bad_set else c for k, c in zip(keys, cells)]
    else:
        table["image"] = cells
    if problems:
        first = next(iter(problems.values()))
        log.warning("%s data %s: %d row(s) with an unresolvable image cell (index %s); they score as errors (%s)",
                    label, path, len(problems), ", ".join(list(problems)[:10]), first)
    table.attrs["image_problems"] = problems
    return table


def text(value: Any) -> str:
    import pandas as pd

    return "" if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)) else str(value)


def plain(value: Any) -> Any:
    """A JSON-serialisable copy of one cell of VLMEvalKit's result tables."""
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def frame_dict(frame) -> dict:
    """A DataFrame (or dict) of VLMEvalKit results as ``{column: [values]}`` of plain values."""
    if isinstance(frame, dict):
        return {str(k): plain(v) if not isinstance(v, (list, tuple)) else [plain(x) for x in v]
                for k, v in frame.items()}
    return {str(k): [plain(v) for v in values] for k, values in frame.to_dict(orient="list").items()}


def bucket(correct: int, total: int) -> Bucket:
    return {"correct": int(correct), "total": int(total),
            "accuracy": round(100.0 * correct / total, 2) if total else 0.0}


EMPTY = {"correct": 0, "total": 0, "accuracy": 0.0}


def read_hits(pred_file: str) -> dict[int, int]:
    """index → hit from the record ``ImageMCQDataset.evaluate`` writes beside the prediction file
    (``*_exact_matching_result.xlsx``: one row per scored question, or per rotation group's first row)."""
    import_vlmeval()
    from vlmeval.smp import get_intermediate_file_path, load

    record = load(get_intermediate_file_path(pred_file, "_exact_matching_result"))
    return {int(i): int(h) for i, h in zip(record["index"], record["hit"])}


# -- VLMEvalKit's prediction files ------------------------------------------------------------------
# suffix → vlmeval.smp.load's format; an allow-list, so nothing else (.pkl above all) is ever read
PREDICTION_FORMATS = {".xlsx": "xlsx", ".tsv": "tsv", ".csv": "csv", ".json": "json", ".jsonl": "jsonl"}


def read_prediction_table(path: Path):
    """A prediction file in VLMEvalKit's format as a table; DataError naming the file and the fix if it is not one."""
    if not path.is_file():
        raise DataError(f"{path}: prediction file not found")
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):  # unpickling a file can run code: never for user input
        raise DataError(f"{path}: pickle files are not read (loading one can run code); "
                        "save the predictions as .xlsx, .tsv, .csv or .json")
    if suffix not in PREDICTION_FORMATS:
        raise DataError(f"{path}: unknown prediction file type {suffix or '(no suffix)'!r}; save the predictions as "
                        ".xlsx, .tsv, .csv, .json or .jsonl (VLMEvalKit's prediction format)")
    import_vlmeval()
    import pandas as pd
    from vlmeval.smp import load

    try:
        # An absolute path with an explicit format: load() never takes it for a URL (it downloads those)
        # and never picks its reader from anything but the allow-list above.
        table = load(str(path.resolve()), fmt=PREDICTION_FORMATS[suffix])
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


@dataclass
class UnreadableImageSample(Sample):
    """A sample whose image cell is neither base64 image data nor a row reference: ``images()`` raises
    :class:`BadImage` with the reason (the runner stores it as an error row), instead of a decoding error
    about the placeholder the cell was replaced with."""

    image_problem: str = ""

    def images(self, max_pixels: int | None = None) -> list:
        raise BadImage(self.image_problem)


# -- the base benchmark ----------------------------------------------------------------------------
class VLMEvalBenchmark(Benchmark):
    """A benchmark whose data is a VLMEvalKit TSV and whose scoring is VLMEvalKit's ``evaluate``."""

    label: ClassVar[str] = ""  # how messages name it: "MMBench"
    vlmeval_class: ClassVar[str] = "ImageMCQDataset"
    variants: ClassVar[dict[str, str]] = {}  # split → VLMEvalKit dataset name; the first is the default
    required_columns: ClassVar[tuple[str, ...]] = ("index", "question", "answer", "image")
    official_columns: ClassVar[tuple[str, ...]] = ()
    meta_columns: ClassVar[tuple[str, ...]] = ()  # row fields kept in Sample.meta
    category_column: ClassVar[str] = "category"

    def __init__(self, data: str | None = None, split: str | None = None):
        super().__init__(data, split or next(iter(self.variants)))
        if self.split not in self.variants:
            raise DataError(f"{self.label} has no split {self.split!r}; choose one of "
                            f"{', '.join(self.variants)} (--split)")
        self.vlmeval_name = self.variants[self.split]
        path = Path(data).expanduser() if data else self.default_data_path()
        if path.is_dir():
            path = path / f"{self.vlmeval_name}.tsv"
        if not path.is_file():
            raise DataError(self.missing_file_message(path))
        self.check_header(path)
        self.path = path
        self._vlmeval_dataset = None
        self._positions: dict[str, int] = {}
        self._image_problems: dict[str, str] = {}  # index → why its image cell cannot be an image

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.variants and "data_help" not in cls.__dict__:
            cls.data_help = cls.data_help_text()

    @classmethod
    def data_help_text(cls) -> str:
        names = ", ".join(f"{n}.tsv" for n in cls.variants.values())
        return (f"VLMEvalKit's {names} in $LMUData (default ~/LMUData), or --data PATH; get it on a machine "
                f"with internet with `{build_command(next(iter(cls.variants.values())))}` and place it with "
                f"`harness data prepare --bench {cls.label.lower()} --from PATH`")

    def default_data_path(self) -> Path:
        return lmu_data_root() / f"{self.vlmeval_name}.tsv"

    def missing_file_message(self, path: Path) -> str:
        return (
            f"{self.label} data not found at {path}: expected VLMEvalKit's {self.vlmeval_name}.tsv (TSV with "
            f"base64 images); on a machine with internet run `{build_command(self.vlmeval_name)}`, then copy "
            f"~/LMUData/{self.vlmeval_name}.tsv to {lmu_data_root()} ($LMUData; `harness data prepare --bench "
            f"{self.name} --from FILE` checks and places it) or pass --data PATH"
        )

    def check_header(self, path: Path) -> None:
        """Fail fast, before pandas and VLMEvalKit, on a file that is not this benchmark's TSV."""
        header = read_header(path, self.label)
        missing = [name for name in self.required_columns if name not in header]
        guess = guess_benchmark(header)
        if missing:
            hint = (f"; it looks like VLMEvalKit's {guess} TSV (use --bench {guess})"
                    if guess and guess != self.name else "")
            raise DataError(
                f"{self.label} data {path} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                f"{hint} (VLMEvalKit's {self.vlmeval_name}.tsv has "
                f"{', '.join(self.official_columns or self.required_columns)})"
            )
        if guess and guess != self.name and guess in self.confusable:
            raise DataError(f"{self.label} data {path} looks like VLMEvalKit's {guess} TSV (it has columns "
                            f"{', '.join(dict(SIGNATURES).get(guess, ()))}); use --bench {guess} or pass the "
                            f"{self.vlmeval_name}.tsv file")

    # benchmarks whose TSV would pass this one's column check but must not be read as this one
    confusable: ClassVar[tuple[str, ...]] = ()

    # -- data ----------------------------------------------------------------------------------------
    @property
    def dataset(self):
        """The VLMEvalKit dataset object (built on first use: this is where ``import vlmeval`` happens)."""
        if self._vlmeval_dataset is None:
            table = self.load_table()
            self._image_problems = dict(table.attrs.get("image_problems", {}))
            self._vlmeval_dataset = vlmeval_dataset_over_table(self.vlmeval_class, self.vlmeval_name, table)
            self._positions = {str(x): i for i, x in enumerate(self._vlmeval_dataset.data["index"])}
        return self._vlmeval_dataset

    def load_table(self):
        """The data file read and checked (:func:`read_table`, then :meth:`check_table`): what VLMEvalKit may see."""
        table = read_table(self.path, self.label)
        self.check_table(table)
        return table

    # Columns whose cells VLMEvalKit evaluates as Python, each with its shape rule (None: fine, else the
    # problem and its fix); checked on every row before VLMEvalKit sees the table, and on prediction files.
    cell_rules: ClassVar[dict[str, Callable[[Any], str | None]]] = {"image_path": image_path_cell}

    def check_table(self, table, where: Callable[[int], str] | None = None) -> None:
        """Every check of a read table: the cells VLMEvalKit evaluates, then the benchmark's own structure."""
        index = table["index"].tolist() if "index" in table else [None] * len(table)
        check_cells(table, self.cell_rules,
                    where or (lambda i: f"{self.label} data {self.path}: line {i + 2} (index {index[i]})"))
        self.validate_table(table)

    def validate_table(self, table) -> None:
        """Benchmark-specific checks of the whole table (raise DataError naming file, row and fix)."""

    def __len__(self) -> int:
        return len(self.dataset.data)

    def row(self, uid: str):
        self.dataset  # loads the data (and imports vlmeval) on first use
        position = self._positions.get(uid)
        return None if position is None else self.dataset.data.iloc[position]

    def options(self, row) -> dict[str, str]:
        # As VLMEvalKit's build_prompt and build_choices see them: every A-Z column with a value.
        return {c: row[c] for c in string.ascii_uppercase if c in row and text(row[c]) != ""}

    def sample(self, position: int) -> Sample:
        row = self.dataset.data.iloc[position]
        image = row["image"]
        return self.make_sample(
            uid=str(row["index"]),
            question=text(row["question"]),
            gold=text(row["answer"]),
            choices=[str(v) for v in self.options(row).values()],
            image_refs=list(image) if isinstance(image, list) else [image],
            context=text(row["hint"]) if "hint" in row else "",
            category=text(row[self.category_column]) if self.category_column in row else "",
            meta={c: plain(row[c]) for c in self.meta_columns if c in row},
        )

    def make_sample(self, **fields) -> Sample:
        """A :class:`Sample`; one whose image cell cannot be an image says why when its images are decoded."""
        problem = self._image_problems.get(fields["uid"])
        if problem:
            return UnreadableImageSample(**fields, image_problem=f"{self.label} data {self.path}: {problem}")
        return Sample(**fields)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]

    def sample_options(self, sample: Sample) -> dict[str, Any]:
        """The option letters and texts of ``sample``: from its row (letters kept exactly), else in order."""
        row = self.row(sample.uid)
        if row is not None:
            options = self.options(row)
            if [str(v) for v in options.values()] == list(sample.choices):
                return options
        return dict(zip(string.ascii_uppercase, sample.choices))

    def prompt_line(self, sample: Sample) -> dict[str, Any]:
        """The row VLMEvalKit's ``build_prompt`` reads for ``sample`` (its own row when it is unchanged)."""
        row = self.row(sample.uid)
        if row is not None and text(row["question"]) == sample.question:
            return dict(row)
        line: dict[str, Any] = {"index": sample.uid, "question": sample.question, **self.sample_options(sample)}
        if sample.context:
            line["hint"] = sample.context
        return line

    def format_question(self, sample: Sample) -> str:
        """VLMEvalKit's own prompt text for this dataset (``build_prompt``), images left out."""
        messages = self.dataset.build_prompt(self.prompt_line(sample))
        return "".join(m["value"] for m in messages if m["type"] == "text")

    # -- scoring -------------------------------------------------------------------------------------
    def grade(self, sample: Sample, answer: str) -> Grade:
        """VLMEvalKit's exact-matching extraction: ``can_infer`` on the answer and the option texts."""
        options = self.sample_options(sample)  # a fresh dict: can_infer_text lower-cases it in place
        self.dataset  # imports vlmeval
        from vlmeval.utils.matching_util import can_infer

        found = can_infer(str(answer), options)
        extracted = found if found else ""
        return Grade(extracted=extracted, correct=bool(extracted) and extracted == sample.gold)

    def check_samples(self, samples: list[Sample], answers: list[str]) -> list[str]:
        if len(samples) != len(answers):
            raise ValueError(f"{len(samples)} samples but {len(answers)} answers")
        self.dataset  # loads the data (and imports vlmeval) on first use
        unknown = [s.uid for s in samples if s.uid not in self._positions]
        if unknown:
            raise ValueError(f"samples not in {self.path}: {', '.join(unknown[:5])}")
        uids = [s.uid for s in samples]
        if len(set(uids)) != len(uids):
            raise ValueError("score() got the same sample more than once")
        return uids

    def run_evaluate(self, uids: list[str], answers: list[str], read: Callable[[str], Any] | None = None,
                     **judge_kwargs):
        """VLMEvalKit's ``evaluate`` on the prediction table of these rows; ``read(pred_file)`` may load
        its intermediate files before the temporary folder goes. Returns ``(result, read's result)``."""
        from vlmeval.smp import dump

        table = self.prediction_table(uids, answers)
        with tempfile.TemporaryDirectory(prefix=f"harness-{self.name}-") as tmp:
            # A pickled DataFrame (VLMEvalKit's load() reads .pkl) so evaluate() sees every answer byte
            # for byte; an .xlsx/.tsv round trip turns '', 'NA' and 'None' into 'nan', and .xlsx also
            # escapes '\r' and truncates at 32,767 characters, which would make it disagree with judge().
            pred_file = os.path.join(tmp, f"harness_{self.vlmeval_name}.pkl")
            dump(table, pred_file)
            result = self.dataset.evaluate(pred_file, nproc=1, **judge_kwargs)
            extra = read(pred_file) if read else None
        return result, extra

    def prediction_table(self, uids: list[str], answers: list[str]):
        """VLMEvalKit's prediction format for these rows: the TSV's columns (images left out) + ``prediction``."""
        table = self.dataset.data.iloc[[self._positions[u] for u in uids]].drop(columns=["image"]).copy()
        table["prediction"] = [str(a) for a in answers]
        return table

    def read_predictions(self, path: Path) -> tuple[list[Sample], list[str]]:
        """VLMEvalKit's prediction format (what its inference writes: the benchmark's TSV columns without
        ``image``, plus ``prediction``; .xlsx, .tsv, .csv, .json or .jsonl, never .pkl: unpickling a file can
        run code). Each row's ``index`` names the sample in this benchmark's data and the answer is
        ``str(prediction)`` as VLMEvalKit reads it; so the prediction table ``evaluate`` sees is built from
        the benchmark's own (checked) data plus these answers, and no other cell of the file reaches
        VLMEvalKit. The file's cells VLMEvalKit would evaluate as Python (``cell_rules``) are checked all
        the same, with the data's rules, so a file that would run code under stock VLMEvalKit is refused
        rather than silently ignored."""
        table = read_prediction_table(path)
        self.dataset  # loads the data (and VLMEvalKit)
        index = table["index"].tolist()
        check_cells(table, self.cell_rules, lambda i: f"{path}: row {i + 2} (index {text(index[i])[:40]!r})")
        samples, answers, seen = [], [], {}
        for row_number, (index, prediction) in enumerate(zip(table["index"], table["prediction"]), start=2):
            uid = str(index)
            if uid in seen:
                raise DataError(f"{path}: row {row_number} repeats index {uid[:40]!r} (first at row {seen[uid]}); "
                                "keep one prediction per index")
            seen[uid] = row_number
            row = self.row(uid)
            if row is None:
                raise DataError(f"{path}: row {row_number}, column index holds {uid[:40]!r}, which is not an index "
                                f"of {self.path}; pass --data with the TSV the predictions were made on")
            if "question" in table.columns and text(table["question"].iloc[row_number - 2]) != text(row["question"]):
                raise DataError(f"{path}: row {row_number} (index {uid}), column question differs from {self.path}'s; "
                                "the predictions belong to another data file or benchmark (pass --data / the right "
                                "BENCH)")
            samples.append(self.sample(self._positions[uid]))
            answers.append(str(prediction))  # as VLMEvalKit's evaluate reads it: NaN → 'nan'
        if not samples:
            raise DataError(f"{path}: no predictions")
        return samples, answers

    def run_judged(self, uids: list[str], answers: list[str], judge: Judge,
                   read: Callable[[str, str], Any] | None = None):
        """:meth:`run_evaluate` with VLMEvalKit's judge pointed at ``judge`` (``judge.vlmeval_env()``);
        ``read(pred_file, judge_name)`` may load the judge's intermediate files."""
        with judge.vlmeval_env() as kwargs:
            kwargs.pop("nproc", None)  # run_evaluate passes its own
            name = kwargs["model"]
            return self.run_evaluate(uids, answers, read=(lambda f: read(f, name)) if read else None, **kwargs)

    @abstractmethod
    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult: ...


def vlmeval_benchmark_names() -> list[str]:
    """The registered benchmarks whose data is a VLMEvalKit TSV (what ``harness data`` writes and places)."""
    return [name for name, cls in BENCHMARKS.items() if issubclass(cls, VLMEvalBenchmark)]


class VLMEvalMCQBenchmark(VLMEvalBenchmark):
    """An ``ImageMCQDataset`` scored by ``evaluate(model='exact_matching')`` (plain, non-circular)."""

    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult:
        samples, answers = list(samples), list(answers)
        if not samples:
            return {"scoring": "official", "overall": dict(EMPTY), "by_category": {}, "vlmeval": {}}
        uids = self.check_samples(samples, answers)
        acc, hits = self.run_evaluate(
            uids, answers, model="exact_matching",
            read=read_hits)
        raw = frame_dict(acc)
        single = len(acc) == 1  # one row unless the TSV has a `split` column

        counts: dict[str, list[int]] = {}
        overall = [0, 0]
        for sample in samples:
            hit = hits[int(sample.uid)]
            for b in (overall, counts.setdefault(sample.category, [0, 0])):
                b[0] += hit
                b[1] += 1

        def finish(counted: list[int], column: str) -> Bucket:
            out = bucket(*counted)
            if single and column in raw and raw[column][0] is not None:
                out["accuracy"] = round(100.0 * raw[column][0], 2)
            return out

        return {
            "scoring": "official",
            "overall": finish(overall, "Overall"),
            "by_category": {cat: finish(counts[cat], cat) for cat in sorted(counts)},
            "vlmeval": {"dataset": self.vlmeval_name, "judge": "exact_matching", "acc": raw},
        }
