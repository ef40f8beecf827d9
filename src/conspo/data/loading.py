"""``load_problems``: local files (JSON Lines, JSON, CSV, Parquet), registry names, testbed tasks, hub ids.

Every row is validated, and every problem found is reported with its file and line (``file.jsonl:12``; rows
for Parquet): an undecodable line, a row that is not an object, a missing or empty problem or answer, a
non-string problem or answer, a duplicate id. By default loading stops with the whole list
(``DataValidationError``); ``on_error="skip"`` drops the bad rows and warns with their count.

Files are read row by row (JSON Lines and CSV are streamed), and ``limit=N`` stops reading once N valid
problems are found: the rest of the file is not read or validated.

Why one file of about 470 lines: every reader (JSON Lines, JSON, CSV, Parquet, the hub) feeds rows to the one
validator that reports issues as ``file:line``; the readers are small and share it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from conspo.data.problem import Problem
from conspo.data.registry import (
    ANSWER_TRANSFORMS,
    DATA_DIR_ENV,
    SOURCE_PROVIDERS,
    DatasetSpec,
    get_dataset_spec,
    get_source,
    list_datasets,
    list_sources,
)

__all__ = [
    "DataError",
    "DataValidationError",
    "LoadReport",
    "NotLocalError",
    "RowIssue",
    "load_problems",
    "read_problems",
]

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Column names tried, in order, when no mapping is given for a field.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "problem": ("problem", "question", "prompt"),
    "answer": ("answer", "final_answer", "ground_truth", "target"),
    "id": ("id", "unique_id", "idx", "problem_idx"),
}
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name
MAX_LISTED = 20  # issues spelled out in an error message; the rest are counted


class DataError(ValueError):
    """A problem set cannot be found or read (unknown name, missing file, hub unreachable)."""


class NotLocalError(DataError):
    """``allow_hub=False`` and the problem set is only on the Hugging Face Hub (no local copy to read)."""


@dataclass(frozen=True)
class RowIssue:
    """One bad row: where it is and what is wrong with it."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class DataValidationError(DataError):
    """Rows failed validation; ``issues`` lists each with its file and line."""

    def __init__(self, source: str, issues: list[RowIssue]):
        self.source = source
        self.issues = issues
        listed = "\n  ".join(str(i) for i in issues[:MAX_LISTED])
        more = f"\n  ... and {len(issues) - MAX_LISTED} more" if len(issues) > MAX_LISTED else ""
        super().__init__(
            f"{len(issues)} invalid row(s) in {source}:\n  {listed}{more}\n"
            "(fix the rows, or drop them: load_problems(..., on_error='skip'), data.on_error=skip in a training "
            "config)"
        )


@dataclass
class LoadReport:
    """What loading found: rows read, problems kept, and the issues of the rows skipped."""

    source: str
    rows: int = 0
    kept: int = 0
    issues: list[RowIssue] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.issues)


# -- raw rows, each with its location --------------------------------------------------------------------
Row = tuple[str, Any]  # (location, decoded row or an exception)


def _rows_jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not text.strip():
                continue  # blank lines (a trailing newline) are not rows
            try:
                yield where, json.loads(text)
            except json.JSONDecodeError as exc:
                yield where, ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})")


def _rows_json(path: Path, split: str | None) -> Iterator[Row]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    try:
        top, _ = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(top, dict):
        lists = [k for k, v in top.items() if isinstance(v, list)]
        if split in lists:
            key = split
        elif len(lists) == 1:
            key = lists[0]
        elif not lists:
            raise DataError(f"{path}: expected a list of rows or an object holding one (e.g. by split name)")
        else:
            raise DataError(f"{path}: holds several lists ({', '.join(lists)}); choose one with split=")
        for index, row in enumerate(top[key]):
            yield f"{path} [{key}][{index}]", row
        return
    if not isinstance(top, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(top).__name__}")
    # Walk the top-level list with raw_decode so that each row gets the line it starts on.
    pos = text.index("[", pos) + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        row, end = decoder.raw_decode(text, pos)
        yield f"{path}:{text.count(chr(10), 0, pos) + 1}", row
        pos = end


def _rows_csv(path: Path) -> Iterator[Row]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            _ = reader.fieldnames  # reads the header line
            start = reader.line_num + 1
            for row in reader:
                # line_num is the line where the row ended (quoted fields may span lines): report where it began.
                yield f"{path}:{start}", dict(row)
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _rows_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    for index, row in enumerate(table.to_pylist(), start=1):
        yield f"{path} row {index}", row


def _file_rows(path: Path, split: str | None) -> Iterator[Row]:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind == "jsonl":
        return _rows_jsonl(path)
    if kind == "json":
        return _rows_json(path, split)
    if kind == "csv":
        return _rows_csv(path)
    if kind == "parquet":
        return _rows_parquet(path)
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")


# -- validation -----------------------------------------------------------------------------------------
def _get(row: Mapping[str, Any], column: str) -> Any:
    value: Any = row
    for part in column.split("."):  # dotted paths reach into nested structs (reward_model.ground_truth)
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _resolve_columns(
    columns: Mapping[str, str] | None, first_row: Mapping[str, Any] | None
) -> dict[str, str]:
    columns = dict(columns or {})
    unknown = set(columns) - set(DEFAULT_COLUMNS)
    if unknown:
        raise DataError(f"unknown column mapping key(s) {sorted(unknown)}; use problem, answer, id")
    for target, candidates in DEFAULT_COLUMNS.items():
        if target not in columns and first_row is not None:
            found = next((c for c in candidates if c in first_row), None)
            if found is not None:
                columns[target] = found
    columns.setdefault("problem", "problem")
    columns.setdefault("answer", "answer")
    return columns


def _validate(
    rows: Iterator[Row],
    *,
    source: str,
    columns: Mapping[str, str] | None,
    answer_transform: str | None = None,
    id_prefix: str = "",
    limit: int | None = None,
) -> tuple[list[Problem], LoadReport]:
    report = LoadReport(source=source)
    problems: list[Problem] = []
    seen_ids: dict[str, str] = {}
    mapping: dict[str, str] | None = None
    transform = ANSWER_TRANSFORMS[answer_transform] if answer_transform else None
    if limit is not None and limit <= 0:
        return problems, report
    for location, row in rows:
        report.rows += 1
        if isinstance(row, Exception):
            report.issues.append(RowIssue(location, str(row)))
            continue
        if not isinstance(row, Mapping):
            report.issues.append(RowIssue(location, f"row is a {type(row).__name__}, expected an object"))
            continue
        if mapping is None:
            mapping = _resolve_columns(columns, row)
        problem, answer = _get(row, mapping["problem"]), _get(row, mapping["answer"])
        if transform is not None:
            answer = transform(answer)
        bad = None
        if problem is None or (isinstance(problem, str) and not problem.strip()):
            bad = f"missing or empty problem (column {mapping['problem']!r})"
        elif not isinstance(problem, str):
            bad = f"problem (column {mapping['problem']!r}) is a {type(problem).__name__}, expected a string"
        elif answer is None or (isinstance(answer, str) and not answer.strip()):
            bad = f"missing or empty answer (column {mapping['answer']!r})"
        elif not isinstance(answer, str):
            bad = f"answer (column {mapping['answer']!r}) is a {type(answer).__name__} ({answer!r}), expected a string"
        if bad is None:
            raw_id = _get(row, mapping["id"]) if "id" in mapping else None
            if raw_id in (None, ""):
                pid = f"{id_prefix}{report.rows - 1}"
            else:  # the row's own string when there is no prefix (one copy fewer per problem)
                pid = raw_id if isinstance(raw_id, str) and not id_prefix else f"{id_prefix}{raw_id}"
            if pid in seen_ids:
                bad = f"duplicate id {pid!r} (first seen at {seen_ids[pid]})"
        if bad is not None:
            report.issues.append(RowIssue(location, bad))
            continue
        seen_ids[pid] = location
        used = {mapping["problem"].split(".")[0], mapping["answer"].split(".")[0], mapping.get("id", "")}
        # json.loads makes new key strings per row; interned, millions of rows share one copy of each key.
        meta = {
            (sys.intern(k) if type(k) is str else k): v
            for k, v in row.items()
            if k not in used and k != "source"
        }
        problems.append(
            Problem(
                id=pid,
                problem=problem,
                answer=answer.strip(),
                source=str(row.get("source") or source),
                meta=meta,
            )
        )
        if limit is not None and len(problems) >= limit:
            break  # the rest is not read: a 200 MB file with limit=10 reads ten lines
    report.kept = len(problems)
    return problems, report


# -- where the rows come from ---------------------------------------------------------------------------
def _data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def _hub_rows(hub_id: str, *, config: str | None, split: str, local_file: str | None = None) -> Iterator[Row]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"loading {hub_id!r} from the Hugging Face Hub needs the `datasets` package"
        ) from None
    offline = any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    how = (
        f"download it where the hub is reachable (datasets.load_dataset({hub_id!r}).to_json('file.jsonl')) and "
        "pass the local path where the dataset name goes (load_problems('file.jsonl'), `conspo eval --benchmarks "
        "file.jsonl`, `conspo train data.train=file.jsonl`); registry names read <data_dir>/<file> with "
        f"--data-dir DIR (data.data_dir=DIR in a training config) or {DATA_DIR_ENV}=DIR"
        + (f", where this set's file is {local_file}" if local_file else "")
    )
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # the hub raises many types (connection, offline mode, not found, gated)
        reason = "the hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if offline else f"{exc}"
        raise DataError(
            f"cannot load hub dataset {hub_id!r} (split {split!r}): {reason}.\nTo use it: {how}"
        ) from None
    for index, row in enumerate(ds, start=1):
        yield f"{hub_id}[{split}] row {index}", row


def read_problems(
    name_or_path: str | os.PathLike,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    columns: Mapping[str, str] | None = None,
    hub_config: str | None = None,
    limit: int | None = None,
    allow_hub: bool = True,
) -> tuple[list[Problem], LoadReport]:
    """Every valid problem and the load report (nothing raised for bad rows; see ``load_problems``).

    ``limit``: stop reading once this many valid problems are found (the report then covers the rows read).
    ``allow_hub=False``: raise :class:`NotLocalError` instead of downloading (``conspo train --dry-run``).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return _validate(_file_rows(path, split), source=path.stem, columns=columns, limit=limit)
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass a file, or a registry name with data_dir={str(path)!r}")
    prefix, colon, _ = text.partition(":")
    source = get_source(prefix) if colon else None
    if source is not None:  # "<prefix>:..." made by another package (testbed:<task>)
        problems = source.load(text, split)
        report = LoadReport(source=text, rows=len(problems), kept=len(problems))
        return (problems, report) if limit is None else (problems[:limit], report)
    spec = get_dataset_spec(text)
    if spec is not None:
        return _registry_problems(
            spec, split=split, data_dir=data_dir, columns=columns, limit=limit, allow_hub=allow_hub
        )
    if path.suffix.lower() in SUFFIXES:
        raise DataError(f"no such file: {path}")
    if _HUB_ID.fullmatch(text):
        if not allow_hub:
            raise NotLocalError(f"{text!r} is a Hugging Face Hub dataset id (not read without the hub)")
        return _validate(
            _hub_rows(text, config=hub_config, split=split or "train"),
            source=text,
            columns=columns,
            id_prefix="",
            limit=limit,
        )
    raise DataError(
        f"unknown problem set {text!r}: not a file, not a registered name ({', '.join(list_datasets())}), "
        f"not a source ({', '.join(f'{p}:...' for p in sorted({*SOURCE_PROVIDERS, *list_sources()}))}), "
        "and not a hub id (owner/name)"
    )


def _registry_problems(
    spec: DatasetSpec,
    *,
    split: str | None,
    data_dir: str | os.PathLike | None,
    columns: Mapping[str, str] | None,
    limit: int | None = None,
    allow_hub: bool = True,
) -> tuple[list[Problem], LoadReport]:
    split = split or spec.default_split
    folder = _data_dir(data_dir)
    if folder is not None:
        if split not in spec.local_files:
            raise DataError(
                f"{spec.name} has no local {split!r} split; local splits: {sorted(spec.local_files)}"
            )
        path = folder / spec.local_files[split]
        if path.is_file():
            return _validate(_file_rows(path, split), source=spec.name, columns=columns, limit=limit)
        if spec.hub_id is None or data_dir is not None:
            raise DataError(f"{spec.name}: expected its {split} file at {path}, which does not exist")
    if spec.hub_id is None:
        raise DataError(
            f"{spec.name} is available only as a local file ({', '.join(spec.local_files.values())}); "
            f"pass data_dir= / --data-dir DIR or set {DATA_DIR_ENV}=DIR to the folder holding it"
        )
    if not allow_hub:
        raise NotLocalError(
            f"{spec.name} has no local copy (data_dir / {DATA_DIR_ENV} unset or without "
            f"{spec.local_files.get(split, 'its file')}); it would be read from the hub ({spec.hub_id})"
        )
    rows = _hub_rows(
        spec.hub_id,
        config=spec.hub_config,
        split=spec.hub_split(split),
        local_file=spec.local_files.get(split),
    )
    mapping = {**spec.columns, **(columns or {})}
    return _validate(
        rows, source=spec.name, columns=mapping, answer_transform=spec.answer_transform, limit=limit
    )


def load_problems(
    name_or_path: str | os.PathLike,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    columns: Mapping[str, str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    limit: int | None = None,
    hub_config: str | None = None,
) -> list[Problem]:
    """Load problems from a file, a registry name, ``testbed:<task>``, or a Hugging Face Hub dataset id.

    Args:
        name_or_path: a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file; a registry name (``math500``,
            ``aime24``, ... see ``list_datasets()``); ``testbed:<task>[:<difficulty>[:<count>]]``; or a hub id.
        split: which split (registry default: its first local split; hub ids: ``train``).
        data_dir: folder of local copies for registry names (default ``$CONSPO_DATA_DIR``); when given, the
            local file must exist.
        columns: ``{"problem": ..., "answer": ..., "id": ...}`` source column for each field (default: the
            first present of ``problem/question/prompt``, ``answer/final_answer/ground_truth/target``,
            ``id/unique_id/idx/problem_idx``; rows without an id get their row index).
        on_error: ``"raise"`` stops with every bad row listed; ``"skip"`` drops them and warns with the count.
        limit: keep only the first ``limit`` valid problems; reading stops there (later rows are neither read
            nor validated).
        hub_config: configuration name for a hub id.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    problems, report = read_problems(
        name_or_path, split=split, data_dir=data_dir, columns=columns, hub_config=hub_config, limit=limit
    )
    if report.issues:
        if on_error == "raise":
            raise DataValidationError(report.source, report.issues)
        warnings.warn(
            f"skipped {report.skipped} invalid row(s) of {report.rows} in {report.source} "
            f"(first: {report.issues[0]})",
            stacklevel=2,
        )
    return problems if limit is None else problems[:limit]
