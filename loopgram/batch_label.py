"""Batch labeling of a table: every row of a CSV/XLSX file labeled by the labeling assistant.

One engine for `loopgram label FILE` and for a file sent to the labeling assistant in the bot.

Reading: CSV (delimiter `,` `;` or tab, guessed from a sample; UTF-8 with or without a BOM,
UTF-16 with a BOM, else cp1251) or XLSX (the first sheet). The first non-empty row is the
header; fully empty rows are not data and are dropped. The text column is the one asked for,
else the first named text/item/message/comment/текст/сообщение, else the only one, else the
one with the longest average content.

Writing: the input columns plus `label`, `confidence`, `needs_review` and `error` (empty when
the row is fine; `empty`, `too-long`, `invalid-output: ...`, `model-refused: ...` otherwise).
An input column already named like one of those keeps its values under `<name>_input`.
CSV output is UTF-8 with a BOM (Excel then reads Cyrillic right; Python's `utf-8-sig` and
pandas skip the BOM) with the input's delimiter (`;` stays `;`, which Excel in a Russian
locale expects), `,` for XLSX input. Rows are appended as they finish, in input order, each
flushed, with a sidecar `OUT.progress.json` (input sha256, rows done, bytes committed):
a stopped run continues where it stopped. XLSX output is written once at the end from the
working CSV `OUT.progress.csv` (openpyxl cannot append cheaply).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
import io
import json
import logging
import os
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as day_time
from pathlib import Path
from typing import Any, BinaryIO
from xml.etree.ElementTree import ParseError

import openai

from loopgram.assistants import Example, PromptContext, get_assistant
from loopgram.assistants.label import (
    LabelResult,
    LabelSetSpec,
    check_label_in,
    default_label_set,
)
from loopgram.assistants.structured import StructuredOutputError, complete_structured
from loopgram.errors import (
    FileTooBigError,
    FileUnsupportedError,
    LoopgramError,
    ModelUnavailableError,
)
from loopgram.llm import ChatMessage, LLMClient

log = logging.getLogger(__name__)

MAX_ROWS = 5000
MAX_XLSX_UNPACKED_BYTES = 200_000_000
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
XLSX_SUFFIXES = (".xlsx", ".xlsm")
TEXT_COLUMN_NAMES = ("text", "item", "message", "comment", "текст", "сообщение")
OUTPUT_COLUMNS = ("label", "confidence", "needs_review", "error")
SKIP_ERRORS = ("empty", "too-long")
STATE_VERSION = 1

_DELIMITERS = ",;\t"
_MAX_FIELD_CHARS = 2**31 - 1  # a C long everywhere csv runs
_SNIFF_CHARS = 16_384
_NO_DELIMITER = "\x1f"  # parses a one-column CSV: a character that never occurs in text
_XLSX_ERRORS = (
    zipfile.BadZipFile,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
    EOFError,
    OSError,
    ParseError,
    SyntaxError,
    NotImplementedError,  # a compression method zipfile lacks
    zlib.error,
)

# Python's csv refuses a field over 131072 characters by default, which would call a whole
# table broken for one long cell (and break resuming an output holding it). The file's size
# is already bounded by who reads it (MAX_FILE_BYTES in the bot); a long cell is a `too-long`
# row. The limit is process-wide, so raise it, never lower it.
csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD_CHARS))


class LabelFileError(LoopgramError):
    """A table that cannot be labeled: broken, no data rows, no such column, too many rows."""

    key = "label-file-broken"


class LabelOutputError(LoopgramError):
    """The output path belongs to another run, was changed, or already holds a result."""

    key = "label-resume-mismatch"


class BatchStoppedError(ModelUnavailableError):
    """The model stopped answering: the rows done so far are saved; a re-run continues."""

    key = "label-batch-stopped"


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # every row as wide as `columns`
    sha256: str  # of the file's bytes: a resumed run must read the same input
    delimiter: str = ","  # the CSV's own; output CSV files use it too


def table_kind(file_name: str) -> str:
    suffix = Path(file_name).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in XLSX_SUFFIXES:
        return "xlsx"
    raise FileUnsupportedError(f"{file_name}: a table must be .csv or .xlsx")


def load_table(path: Path, *, max_rows: int = MAX_ROWS) -> Table:
    return read_table(path.read_bytes(), file_name=path.name, max_rows=max_rows)


def read_table(data: bytes, *, file_name: str, max_rows: int = MAX_ROWS) -> Table:
    """The header and data rows of a CSV or XLSX file (LabelFileError when unusable)."""
    kind = table_kind(file_name)
    if kind == "csv":
        delimiter, raw = _csv_rows(data, max_rows)
    else:
        delimiter, raw = ",", _xlsx_rows(data, max_rows)
    columns, rows = _shape(raw, max_rows)
    log.info(
        "label.table_read kind=%s bytes=%d rows=%d columns=%d",
        kind,
        len(data),
        len(rows),
        len(columns),
    )
    return Table(columns, rows, hashlib.sha256(data).hexdigest(), delimiter)


def _decode(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise LabelFileError("not readable UTF-16 text") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.info("label.csv_decoded encoding=cp1251 bytes=%d", len(data))
        return data.decode("cp1251", errors="replace")


def sniff_delimiter(text: str) -> str | None:
    """`,` `;` or tab, guessed from a sample of whole lines; None for a one-column file.

    The delimiter must occur in the header line: a one-column file of sentences with
    commas is not a comma-separated table.
    """
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    header = sample.split("\n", 1)[0]
    try:
        found: str | None = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        found = None
    if found and found in header:
        return found
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def _csv_rows(data: bytes, max_rows: int) -> tuple[str, list[list[str]]]:
    text = _decode(data)
    if "\x00" in text:
        raise LabelFileError("the file holds binary data, not CSV text")
    delimiter = sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter or _NO_DELIMITER)
    try:
        return delimiter or ",", _take(reader, max_rows)
    except csv.Error as exc:
        raise LabelFileError(f"the CSV cannot be read: {exc}") from exc


def _take(rows: Iterable[Sequence[str]], max_rows: int) -> list[list[str]]:
    """Non-empty rows, at most the header, `max_rows` rows and one more (to know it is over)."""
    taken: list[list[str]] = []
    for row in rows:
        if any(cell.strip() for cell in row):
            taken.append(list(row))
            if len(taken) > max_rows + 1:
                break
    return taken


def _xlsx_rows(data: bytes, max_rows: int) -> list[list[str]]:
    _check_zip(data)
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        with warnings.catch_warnings():  # styles and extensions openpyxl does not read
            warnings.simplefilter("ignore")
            workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            try:
                sheet = workbook.worksheets[0]
                values = sheet.iter_rows(values_only=True)
                return _take(([_cell_text(v) for v in row] for row in values), max_rows)
            finally:
                workbook.close()
    except (InvalidFileException, *_XLSX_ERRORS) as exc:
        log.info("label.xlsx_broken bytes=%d error=%r", len(data), exc)
        raise LabelFileError("the XLSX file cannot be opened") from exc


def _check_zip(data: bytes) -> None:
    """An XLSX is a zip: refuse a broken one, or one that unpacks to too much."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise LabelFileError("the XLSX file is not a valid zip archive") from exc
    if unpacked > MAX_XLSX_UNPACKED_BYTES:
        raise FileTooBigError(
            "the XLSX file unpacks to too much data", limit_kb=MAX_XLSX_UNPACKED_BYTES // 1000
        )


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | day_time):
        return value.isoformat()
    return str(value)


def _shape(
    raw: list[list[str]], max_rows: int
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """A rectangular table: header names filled in, rows padded to the header's width."""
    if len(raw) > max_rows + 1:
        raise LabelFileError(
            f"the file has more than {max_rows} rows",
            key="label-file-too-many-rows",
            limit=max_rows,
        )
    if len(raw) < 2:
        raise LabelFileError("the file has no data rows", key="label-file-no-rows")
    header, data = raw[0], raw[1:]
    width = max(len(_trimmed(row)) for row in raw)
    columns = tuple(
        name.strip() or f"column_{i + 1}" for i, name in enumerate([*header, *[""] * width][:width])
    )
    rows = tuple(tuple([*row, *[""] * width][:width]) for row in data)
    return columns, rows


def _trimmed(row: list[str]) -> list[str]:
    end = len(row)
    while end and not row[end - 1].strip():
        end -= 1
    return row[:end]


def pick_text_column(table: Table, wanted: str | None = None) -> int:
    """The index of the column to label (see the module doc for the order of choice)."""
    names = [name.strip().lower() for name in table.columns]
    if wanted is not None:
        if wanted.strip().lower() in names:
            return names.index(wanted.strip().lower())
        raise LabelFileError(
            f"no column {wanted!r}; the columns are: {', '.join(table.columns)}",
            key="label-file-no-column",
            column=wanted,
            columns=", ".join(table.columns),
        )
    for name in TEXT_COLUMN_NAMES:
        if name in names:
            return names.index(name)
    if len(names) == 1:
        return 0
    return max(range(len(names)), key=lambda i: _average_length(table, i))


def _average_length(table: Table, index: int) -> float:
    return sum(len(row[index].strip()) for row in table.rows) / len(table.rows)


def output_columns(columns: Sequence[str]) -> list[str]:
    """The output header: input columns (renamed `<name>_input` on a clash) + ours."""
    kept = [f"{c}_input" if c.strip().lower() in OUTPUT_COLUMNS else c for c in columns]
    return [*kept, *OUTPUT_COLUMNS]


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class RowResult:
    label: str = ""
    confidence: float = 0.0
    needs_review: bool = True
    error: str = ""

    @property
    def status(self) -> str:
        if not self.error:
            return "labeled"
        return "skipped" if self.error in SKIP_ERRORS else "invalid"

    def cells(self) -> list[str]:
        review = "true" if self.needs_review else "false"
        return [self.label, f"{self.confidence:.3g}", review, self.error]

    @classmethod
    def from_cells(cls, cells: Sequence[str]) -> RowResult:
        """A result as `cells()` wrote it (ValueError when it is not one)."""
        label, confidence, review, error = cells
        if review not in ("true", "false"):
            raise ValueError(f"needs_review is {review!r}")
        return cls(label, float(confidence), review == "true", error)


@dataclass
class BatchSummary:
    rows: int
    labeled: int = 0
    needs_review: int = 0
    invalid: int = 0
    skipped: int = 0
    per_label: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    resumed: int = 0  # rows a previous run had done
    out: Path | None = None
    # (row index, result) of the rows a person should look at: unsure or without a valid
    # label; rows skipped as empty or too long are not among them.
    to_review: list[tuple[int, RowResult]] = field(default_factory=list)

    def add(self, result: RowResult, index: int) -> None:
        status = result.status
        self.labeled += status == "labeled"
        self.invalid += status == "invalid"
        self.skipped += status == "skipped"
        self.needs_review += result.needs_review
        if result.needs_review and status != "skipped":
            self.to_review.append((index, result))
        if result.label:
            self.per_label[result.label] = self.per_label.get(result.label, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "labeled": self.labeled,
            "needs_review": self.needs_review,
            "invalid": self.invalid,
            "skipped": self.skipped,
            "labels": dict(sorted(self.per_label.items(), key=lambda kv: (-kv[1], kv[0]))),
            "out": str(self.out) if self.out else None,
            "seconds": round(self.seconds, 3),
            "resumed": self.resumed,
        }


# ------------------------------------------------------------------------------ output files


@dataclass(frozen=True)
class OutputPaths:
    out: Path

    @property
    def is_xlsx(self) -> bool:
        return self.out.suffix.lower() == ".xlsx"

    @property
    def state(self) -> Path:
        return self.out.with_name(self.out.name + ".progress.json")

    @property
    def work(self) -> Path:
        """Where rows are appended: OUT itself for CSV, a CSV beside it for XLSX."""
        return self.out.with_name(self.out.name + ".progress.csv") if self.is_xlsx else self.out


def _csv_line(cells: Sequence[str], delimiter: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue().encode("utf-8")


class ResultFile:
    """The working CSV the results are appended to, and its progress sidecar.

    The sidecar records how many rows and bytes are committed: a resumed run cuts the file
    back to that size (dropping a row half-written when the process died) and goes on.
    """

    def __init__(self, paths: OutputPaths, *, fingerprint: dict[str, Any], delimiter: str) -> None:
        self.paths = paths
        self.fingerprint = fingerprint
        self.delimiter = delimiter
        self.done = 0
        self._size = 0
        self._handle: BinaryIO | None = None

    @classmethod
    def open(
        cls,
        paths: OutputPaths,
        *,
        header: Sequence[str],
        fingerprint: dict[str, Any],
        delimiter: str,
        restart: bool,
    ) -> tuple[ResultFile, list[RowResult]]:
        """The file ready to append to, and the results a previous run already wrote."""
        file = cls(paths, fingerprint=fingerprint, delimiter=delimiter)
        state = None if restart else file._read_state()
        if state is None and paths.out.exists() and not restart:
            raise LabelOutputError(
                f"{paths.out} already exists; use --restart to overwrite it",
                key="label-out-exists",
                out=str(paths.out),
            )
        previous = file._resume(state, header) if state is not None else []
        if state is None:
            file._start(header)
        return file, previous

    def _read_state(self) -> dict[str, Any] | None:
        if not self.paths.state.exists():
            return None
        try:
            state = json.loads(self.paths.state.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self._broken() from exc
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise self._broken()
        if {k: state.get(k) for k in self.fingerprint} != self.fingerprint:
            raise LabelOutputError(
                f"{self.paths.out} was started for another input file or other options;"
                " use --restart to start over",
                out=str(self.paths.out),
            )
        return state

    def _broken(self) -> LabelOutputError:
        return LabelOutputError(
            f"{self.paths.out} was changed since the run stopped; use --restart to start over",
            key="label-resume-broken",
            out=str(self.paths.out),
        )

    def _start(self, header: Sequence[str]) -> None:
        self.paths.out.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.paths.work.open("wb")
        self._write(codecs.BOM_UTF8 + _csv_line(header, self.delimiter))

    def _resume(self, state: dict[str, Any], header: Sequence[str]) -> list[RowResult]:
        size, done = state.get("bytes"), state.get("done")
        work = self.paths.work
        if not isinstance(size, int) or not isinstance(done, int) or not work.exists():
            raise self._broken()
        if work.stat().st_size < size:
            raise self._broken()
        with work.open("rb") as reader:
            committed = reader.read(size)
        previous = self._parse(committed, header, done)
        handle = work.open("r+b")
        handle.truncate(size)  # a row half-written when the last run died goes
        handle.seek(size)
        self._handle = handle
        self._size, self.done = size, done
        log.info("label.resumed out=%s done=%d", self.paths.out, done)
        return previous

    def _parse(self, committed: bytes, header: Sequence[str], done: int) -> list[RowResult]:
        try:
            text = committed.decode("utf-8-sig")
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter))
            if not rows or rows[0] != list(header) or len(rows) != done + 1:
                raise ValueError("the rows do not match the progress file")
            return [RowResult.from_cells(row[-len(OUTPUT_COLUMNS) :]) for row in rows[1:]]
        except (ValueError, csv.Error) as exc:
            raise self._broken() from exc

    def append(self, cells: Sequence[str]) -> None:
        self._write(_csv_line(cells, self.delimiter), rows=1)

    def _write(self, data: bytes, *, rows: int = 0) -> None:
        """Write, flush, then commit the new size and row count in the sidecar."""
        assert self._handle is not None, "the result file is not open"
        self._handle.write(data)
        self._handle.flush()
        self._size += len(data)
        self.done += rows
        self._save_state()

    def _save_state(self) -> None:
        state = {
            "version": STATE_VERSION,
            **self.fingerprint,
            "done": self.done,
            "bytes": self._size,
        }
        temporary = self.paths.state.with_name(self.paths.state.name + ".tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, self.paths.state)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finish(self) -> None:
        """All rows are in: write the XLSX if asked for, drop the sidecar."""
        self.close()
        if self.paths.is_xlsx:
            write_xlsx(self.paths.work, self.paths.out, delimiter=self.delimiter)
            self.paths.work.unlink()
        self.paths.state.unlink(missing_ok=True)

    def discard(self) -> None:
        """Nothing was labeled: leave no files behind."""
        self.close()
        for path in {self.paths.work, self.paths.state}:
            path.unlink(missing_ok=True)


def write_xlsx(source: Path, target: Path, *, delimiter: str) -> None:
    """The working CSV as an XLSX sheet: confidence a number, needs_review a boolean,
    every other cell text (never a formula, whatever it starts with)."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("labels")
    with source.open(encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter=delimiter)
        header = next(rows)
        sheet.append([_xlsx_cell(sheet, name) for name in header])
        for row in rows:
            sheet.append(_xlsx_row(sheet, row))
    temporary = target.with_name(target.name + ".tmp")
    workbook.save(temporary)
    os.replace(temporary, target)


def _xlsx_row(sheet: Any, row: Sequence[str]) -> list[Any]:
    *cells, label, confidence, review, error = row
    return [
        *(_xlsx_cell(sheet, value) for value in cells),
        _xlsx_cell(sheet, label),
        float(confidence),
        review == "true",
        _xlsx_cell(sheet, error),
    ]


def _xlsx_cell(sheet: Any, value: str) -> Any:
    """A text cell: illegal control characters dropped, and stored as a string even when it
    starts with `=` (openpyxl would make it a formula)."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if not value:
        return None
    cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
    cell.data_type = "s"
    return cell


# ------------------------------------------------------------------------------ labeling

ExampleSource = Callable[[str], Sequence[Example]]
"""Few-shot examples for one item, e.g. `labeling.nearest_examples` over confirmed labels."""

ProgressCallback = Callable[[int, int], None]
"""Called with (rows done, rows in the table) at the start and after each row is saved."""


def _refused(exc: ModelUnavailableError) -> bool:
    """The server refused this one request (too long for its context, say): a bad row,
    not a server that is down."""
    return isinstance(exc.__cause__, openai.BadRequestError | openai.UnprocessableEntityError)


class BatchLabeler:
    """Labels items with the labeling assistant's prompt, `concurrency` at a time."""

    def __init__(
        self,
        llm: LLMClient,
        *,
        model: str | None = None,
        labels: LabelSetSpec | None = None,
        lang: str = "en",
        low_confidence: float = 0.6,
        examples: ExampleSource | None = None,
        concurrency: int = 4,
        max_chars: int = 8000,
        temperature: float | None = 0.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.llm = llm
        self.model = model
        self.spec = labels or default_label_set()
        self.assistant = get_assistant("label")
        self.lang = self.assistant.answer_language(lang=lang, text="", options={})
        self.low_confidence = low_confidence
        self.examples = examples
        self.concurrency = concurrency
        self.max_chars = max_chars
        self.temperature = temperature
        self._repair = str(self.assistant._prompts(self.lang)["repair"])
        self._validate = check_label_in(self.spec.names)
        self._examples_lock = asyncio.Lock()

    # --- one item ---
    async def label_text(self, text: str) -> RowResult:
        """The row's result; ModelUnavailableError when the model server is down."""
        item = text.strip()
        if not item:
            return RowResult(error="empty")
        if len(item) > self.max_chars:
            return RowResult(error="too-long")
        messages = await self.messages_for(item)
        try:
            answer = await complete_structured(
                self._complete,
                messages,
                LabelResult,
                repair_instruction=self._repair,
                validate=self._validate,
            )
        except StructuredOutputError as exc:
            log.info("label.row_invalid error=%s", exc)
            return RowResult(error=f"invalid-output: {exc}"[:300])
        except ModelUnavailableError as exc:
            if not _refused(exc):
                raise
            log.info("label.row_refused error=%s", exc)
            return RowResult(error=f"model-refused: {exc}"[:300])
        value = answer.value
        return RowResult(value.label, value.confidence, value.confidence < self.low_confidence)

    async def messages_for(self, text: str) -> list[ChatMessage]:
        """What the model is sent to label `text` (the few-shot examples of the moment)."""
        examples: Sequence[Example] = ()
        if self.examples is not None:
            async with self._examples_lock:  # one embedding at a time: models share state
                examples = await asyncio.to_thread(self.examples, text)
        context = PromptContext(labels=self.spec.as_context(), examples=tuple(examples))
        return self.assistant.build_messages(lang=self.lang, history=[], text=text, context=context)

    async def _complete(self, messages: Sequence[ChatMessage]) -> str:
        return await self.llm.complete(
            messages,
            model=self.model,
            max_tokens=self.assistant.max_tokens,
            temperature=self.temperature,
        )

    # --- a table ---
    def fingerprint(self, table: Table, column: int) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        return {
            "input_sha256": table.sha256,
            "rows": len(table.rows),
            "column": table.columns[column],
            "labels": self.spec.names,
        }

    async def run(
        self,
        table: Table,
        *,
        column: int,
        out: Path,
        restart: bool = False,
        progress: ProgressCallback | None = None,
    ) -> BatchSummary:
        """Label every row not labeled yet into `out`; BatchStoppedError when the model
        stops answering (the rows done so far stay saved)."""
        started = time.monotonic()
        file, previous = ResultFile.open(
            OutputPaths(out),
            header=output_columns(table.columns),
            fingerprint=self.fingerprint(table, column),
            delimiter=table.delimiter,
            restart=restart,
        )
        summary = BatchSummary(rows=len(table.rows), resumed=len(previous), out=out)
        for index, result in enumerate(previous):
            summary.add(result, index)
        writer = _InOrder(table, file, summary, progress)
        try:
            await self._label_rows(table, column, writer)
        except ModelUnavailableError as exc:
            raise self._stopped(exc, file, len(table.rows)) from exc
        finally:
            file.close()
        file.finish()
        summary.seconds = time.monotonic() - started
        log.info(
            "label.batch_done out=%s rows=%d labeled=%d needs_review=%d invalid=%d skipped=%d",
            out,
            summary.rows,
            summary.labeled,
            summary.needs_review,
            summary.invalid,
            summary.skipped,
        )
        return summary

    def _stopped(
        self, exc: ModelUnavailableError, file: ResultFile, total: int
    ) -> BatchStoppedError:
        log.warning("label.batch_stopped done=%d total=%d error=%s", file.done, total, exc)
        if file.done == 0:
            file.discard()
        return BatchStoppedError(
            f"the model stopped answering after {file.done} of {total} rows: {exc}",
            done=file.done,
            total=total,
            out=str(file.paths.out),
        )

    async def _label_rows(self, table: Table, column: int, writer: _InOrder) -> None:
        """Workers take the next row in turn; the first failure stops them taking more."""
        pending = iter(range(writer.next, len(table.rows)))
        stop = asyncio.Event()

        async def worker() -> None:
            for index in pending:
                if stop.is_set():
                    return
                try:
                    result = await self.label_text(table.rows[index][column])
                except BaseException:
                    stop.set()
                    raise
                writer.put(index, result)

        outcomes = await asyncio.gather(
            *(worker() for _ in range(self.concurrency)), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            down = [f for f in failures if isinstance(f, ModelUnavailableError)]
            raise (down or failures)[0]


class _InOrder:
    """Saves results in input order: a row that finishes early waits for those before it."""

    def __init__(
        self,
        table: Table,
        file: ResultFile,
        summary: BatchSummary,
        progress: ProgressCallback | None,
    ) -> None:
        self.table = table
        self.file = file
        self.summary = summary
        self.progress = progress
        self.next = file.done
        self._waiting: dict[int, RowResult] = {}
        self._notify()

    def put(self, index: int, result: RowResult) -> None:
        self._waiting[index] = result
        while self.next in self._waiting:
            ready = self._waiting.pop(self.next)
            self.file.append([*self.table.rows[self.next], *ready.cells()])
            self.summary.add(ready, self.next)
            self.next += 1
            self._notify()

    def _notify(self) -> None:
        if self.progress is not None:
            self.progress(self.next, len(self.table.rows))
