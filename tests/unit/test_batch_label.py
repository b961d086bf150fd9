"""Batch labeling of CSV/XLSX tables against a fake labeling model behind the real server."""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import openpyxl
import pytest

from loopgram.assistants import Example
from loopgram.assistants.label import parse_label_list
from loopgram.batch_label import (
    BatchLabeler,
    BatchStoppedError,
    LabelFileError,
    LabelOutputError,
    OutputPaths,
    RowResult,
    load_table,
    pick_text_column,
    read_table,
    sniff_delimiter,
)
from loopgram.errors import FileUnsupportedError, LoopgramError
from loopgram.llm import LLMClient
from loopgram.settings import LLMSettings
from tests.label_model import LabelingBackend
from training.model_server.app import create_app, start_server

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def backend() -> LabelingBackend:
    return LabelingBackend()


@pytest.fixture
async def model_url(backend: LabelingBackend) -> AsyncIterator[str]:
    runner, url = await start_server(create_app(backend), "127.0.0.1", 0)
    yield url
    await runner.cleanup()


def make_llm(url: str) -> LLMClient:
    return LLMClient(LLMSettings(llm_base_url=url, llm_timeout=10, llm_first_token_timeout=5))


@pytest.fixture
async def llm(model_url: str) -> AsyncIterator[LLMClient]:
    client = make_llm(model_url)
    yield client
    await client.close()


def write_csv(
    path: Path, rows: list[list[str]], *, delimiter: str = ",", bom: bool = False
) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    data = buffer.getvalue().encode()
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + data)
    return path


def read_csv(path: Path) -> tuple[bytes, list[dict[str, str]]]:
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig")
    delimiter = sniff_delimiter(text) or ","
    return raw, list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


async def label_file(
    llm: LLMClient, source: Path, out: Path, *, column: str | None = None, **options: object
) -> tuple[object, list[dict[str, str]]]:
    table = load_table(source)
    labeler = BatchLabeler(llm, **options)  # type: ignore[arg-type]
    summary = await labeler.run(table, column=pick_text_column(table, column), out=out)
    return summary, read_csv(out)[1]


ITEMS = [
    "How do I reset my password? (question)",
    "The app crashes, a complaint",
    "Great work, praise to the team",
    "Please add dark mode — a request",
    "Hello there",
]

# --------------------------------------------------------------------------- reading


def test_semicolon_csv_with_bom_is_read_and_the_bom_is_not_in_the_header(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "in.csv",
        [["id", "Text"], ["1", "first; with a semicolon"], ["2", "second, with a comma"]],
        delimiter=";",
        bom=True,
    )
    table = load_table(path)
    assert table.columns == ("id", "Text")
    assert table.delimiter == ";"
    assert table.rows == (("1", "first; with a semicolon"), ("2", "second, with a comma"))
    assert pick_text_column(table) == 1


def test_tab_separated_and_cp1251_csv(tmp_path: Path) -> None:
    data = "номер\tтекст\n1\tПриложение вылетает\n2\tКак поменять пароль?\n".encode("cp1251")
    table = read_table(data, file_name="выгрузка.csv")
    assert table.delimiter == "\t"
    assert table.columns == ("номер", "текст")
    assert table.rows[1] == ("2", "Как поменять пароль?")
    assert pick_text_column(table) == 1


def test_one_column_of_sentences_with_commas_stays_one_column() -> None:
    data = b'message\nHello, world, again\n"Quoted, with ""quotes"""\n'
    table = read_table(data, file_name="m.csv")
    assert table.columns == ("message",)
    assert table.rows == (("Hello, world, again",), ('Quoted, with "quotes"',))


def test_ragged_rows_blank_lines_and_missing_header_names() -> None:
    data = b"a,,\n\n1,x\n,,\n2,y,extra\n"
    table = read_table(data, file_name="t.csv")
    assert table.columns == ("a", "column_2", "column_3")
    assert table.rows == (("1", "x", ""), ("2", "y", "extra"))


@pytest.mark.parametrize(
    ("rows", "wanted", "expected"),
    [
        ([["id", "note", "Message"], ["1", "long long long note", "hi"]], None, 2),
        ([["id", "comment", "text"], ["1", "c", "t"]], None, 2),  # text before comment
        ([["whatever"], ["1"]], None, 0),
        ([["id", "body", "tag"], ["1", "a much longer body", "x"]], None, 1),
        ([["id", "body", "tag"], ["1", "a much longer body", "x"]], "TAG", 2),
    ],
)
def test_text_column_choice(rows: list[list[str]], wanted: str | None, expected: int) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    table = read_table(buffer.getvalue().encode(), file_name="t.csv")
    assert pick_text_column(table, wanted) == expected


def test_a_column_that_is_not_there_names_the_columns() -> None:
    table = read_table(b"id,text\n1,a\n", file_name="t.csv")
    with pytest.raises(LabelFileError) as caught:
        pick_text_column(table, "body")
    assert caught.value.key == "label-file-no-column"
    assert caught.value.params["columns"] == "id, text"


@pytest.mark.parametrize("data", [b"", b"text\n", b"text\r\n\r\n", b"\n\n", b" , \n"])
def test_no_data_rows(data: bytes) -> None:
    with pytest.raises(LabelFileError) as caught:
        read_table(data, file_name="t.csv")
    assert caught.value.key == "label-file-no-rows"


def test_too_many_rows() -> None:
    data = "text\n" + "".join(f"row {i}\n" for i in range(4))
    assert len(read_table(data.encode(), file_name="t.csv", max_rows=4).rows) == 4
    with pytest.raises(LabelFileError) as caught:
        read_table(data.encode(), file_name="t.csv", max_rows=3)
    assert caught.value.key == "label-file-too-many-rows"
    assert caught.value.params == {"limit": 3}


def test_binary_bytes_as_csv_are_broken() -> None:
    with pytest.raises(LabelFileError) as caught:
        read_table(b"text\n\x00\x01\x02garbage\n", file_name="t.csv")
    assert caught.value.key == "label-file-broken"


@pytest.mark.parametrize(
    "data",
    [b"not a zip at all", b"PK\x03\x04broken", b"", None],
    ids=["text", "truncated-zip", "empty", "zip-without-workbook"],
)
def test_broken_xlsx(data: bytes | None) -> None:
    if data is None:
        buffer = io.BytesIO()
        import zipfile

        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("hello.txt", "not a workbook")
        data = buffer.getvalue()
    with pytest.raises(LabelFileError) as caught:
        read_table(data, file_name="t.xlsx")
    assert caught.value.key == "label-file-broken"


def test_unsupported_file_type() -> None:
    with pytest.raises(FileUnsupportedError) as caught:
        read_table(b"text\nx\n", file_name="t.xls")
    assert caught.value.key == "file-unsupported"


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    for cells in sheet.iter_rows():
        for cell in cells:
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # text that looks like a formula, as Excel allows
    workbook.create_sheet("second").append(["ignored"])
    workbook.save(path)
    return path


def test_xlsx_first_sheet_with_typed_cells(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "in.xlsx",
        [["id", "when", "score", "Comment"], [1, date(2024, 5, 1), 2.5, "nice"], [2, None, 3.0]],
    )
    table = load_table(path)
    assert table.columns == ("id", "when", "score", "Comment")
    assert table.rows == (("1", "2024-05-01T00:00:00", "2.5", "nice"), ("2", "", "3", ""))
    assert pick_text_column(table) == 3


# --------------------------------------------------------------------------- labeling


async def test_labels_a_semicolon_csv_into_a_csv_excel_reads(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [["id", "text"], *[[str(i), item] for i, item in enumerate(ITEMS)]],
        delimiter=";",
        bom=True,
    )
    out = tmp_path / "out.csv"
    summary, rows = await label_file(llm, source, out)
    raw = out.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8 + b"id;text;label;confidence;needs_review;error\r\n")
    assert [r["label"] for r in rows] == ["question", "complaint", "praise", "request", "other"]
    assert [r["text"] for r in rows] == ITEMS
    assert {r["confidence"] for r in rows} == {"0.9"}
    assert {r["needs_review"] for r in rows} == {"false"}
    assert {r["error"] for r in rows} == {""}
    assert summary.as_dict() == {  # type: ignore[attr-defined]
        "rows": 5,
        "labeled": 5,
        "needs_review": 0,
        "invalid": 0,
        "skipped": 0,
        "labels": {"complaint": 1, "other": 1, "praise": 1, "question": 1, "request": 1},
        "out": str(out),
        "seconds": pytest.approx(summary.seconds, abs=0.001),  # type: ignore[attr-defined]
        "resumed": 0,
    }
    assert len(backend.asked) == 5
    assert not OutputPaths(out).state.exists()
    # The prompt is the labeling assistant's, with the default label set.
    system = backend.requests[0].messages[0]["content"]
    assert "- complaint: reports a problem" in system


async def test_empty_rows_are_skipped_without_asking(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(tmp_path / "in.csv", [["id", "text"], ["1", "  "], ["2", "a question"]])
    summary, rows = await label_file(llm, source, tmp_path / "out.csv")
    assert rows[0] | {} == {
        "id": "1",
        "text": "  ",
        "label": "",
        "confidence": "0",
        "needs_review": "true",
        "error": "empty",
    }
    assert rows[1]["label"] == "question"
    assert backend.asked == ["a question"]
    assert summary.skipped == 1  # type: ignore[attr-defined]
    assert summary.needs_review == 1  # type: ignore[attr-defined]


async def test_output_that_stays_invalid_after_the_repair_needs_review(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [["text"], ["garbage in"], ["alien item"], ["bogus question"], ["unsure praise"]],
    )
    summary, rows = await label_file(llm, source, tmp_path / "out.csv")
    garbage, alien, bogus, unsure = rows
    for row in (garbage, alien):
        assert (row["label"], row["confidence"], row["needs_review"]) == ("", "0", "true")
        assert row["error"].startswith("invalid-output: ")
    assert "no JSON object" in garbage["error"]
    assert "'spaceship' is not one of" in alien["error"]
    # A label outside the set is repaired once: the right label, no review needed.
    assert (bogus["label"], bogus["needs_review"], bogus["error"]) == ("question", "false", "")
    # Low confidence goes to review.
    assert (unsure["label"], unsure["confidence"], unsure["needs_review"]) == (
        "praise",
        "0.3",
        "true",
    )
    assert backend.asked.count("garbage in") == 2
    assert backend.asked.count("alien item") == 2
    assert backend.asked.count("bogus question") == 2
    assert backend.asked.count("unsure praise") == 1
    assert (summary.invalid, summary.labeled, summary.needs_review) == (2, 2, 3)  # type: ignore[attr-defined]


async def test_a_row_the_server_refuses_does_not_stop_the_run(
    tmp_path: Path, llm: LLMClient
) -> None:
    source = write_csv(tmp_path / "in.csv", [["text"], ["a huge item"], ["a question"]])
    summary, rows = await label_file(llm, source, tmp_path / "out.csv")
    assert rows[0]["error"].startswith("model-refused: ")
    assert rows[0]["needs_review"] == "true"
    assert rows[1]["label"] == "question"
    assert summary.invalid == 1  # type: ignore[attr-defined]


async def test_too_long_items_are_not_sent(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(tmp_path / "in.csv", [["text"], ["x" * 50], ["a question"]])
    _, rows = await label_file(llm, source, tmp_path / "out.csv", max_chars=40)
    assert rows[0]["error"] == "too-long"
    assert backend.asked == ["a question"]


async def test_a_cell_longer_than_the_csv_field_limit_is_a_too_long_row_not_a_broken_file(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    """Python's csv refuses fields over 131072 characters by default; one long cell must
    cost only its row (`too-long`), also when a stopped run is resumed."""
    huge = "x" * 200_000
    source = write_csv(tmp_path / "in.csv", [["text"], [huge], ["a question"], ["praise it"]])
    out = tmp_path / "out.csv"
    table = load_table(source)
    assert table.rows[0] == (huge,)
    backend.fail_after = 1
    with pytest.raises(BatchStoppedError):
        await BatchLabeler(llm, concurrency=1).run(table, column=0, out=out)
    backend.fail_after = None
    await BatchLabeler(llm, concurrency=1).run(table, column=0, out=out)
    rows = read_csv(out)[1]
    assert [r["error"] for r in rows] == ["too-long", "", ""]
    assert [r["label"] for r in rows[1:]] == ["question", "praise"]


async def test_custom_labels_language_and_examples_reach_the_prompt(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(tmp_path / "in.csv", [["текст"], ["это question"], ["это bug"]])
    picked: list[str] = []

    def examples(text: str) -> list[Example]:
        picked.append(text)
        return [Example("a confirmed bug", '{"label": "bug", "confidence": 1.0}')]

    spec = parse_label_list("question: asks something, bug: a defect")
    _, rows = await label_file(
        llm, source, tmp_path / "out.csv", labels=spec, lang="ru", examples=examples
    )
    assert [r["label"] for r in rows] == ["question", ""]  # "other" is not in this set
    assert sorted(picked) == ["это bug", "это question"]
    messages = backend.requests[0].messages
    assert "Метки:\n- question: asks something\n- bug: a defect" in messages[0]["content"]
    assert [m["content"] for m in messages[1:3]] == [
        "a confirmed bug",
        '{"label": "bug", "confidence": 1.0}',
    ]
    assert backend.requests[0].temperature == 0.0


async def test_an_input_column_named_label_is_kept_as_label_input(
    tmp_path: Path, llm: LLMClient
) -> None:
    source = write_csv(tmp_path / "in.csv", [["text", "label"], ["a praise", "gold"]])
    _, rows = await label_file(llm, source, tmp_path / "out.csv", column="text")
    assert rows == [
        {
            "text": "a praise",
            "label_input": "gold",
            "label": "praise",
            "confidence": "0.9",
            "needs_review": "false",
            "error": "",
        }
    ]


async def test_concurrency_keeps_the_input_order(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    items = [f"item {i} slow{(12 - i) * 3} {'question' if i % 2 else 'praise'}" for i in range(12)]
    source = write_csv(tmp_path / "in.csv", [["text"], *[[item] for item in items]])
    seen: list[tuple[int, int]] = []
    table = load_table(source)
    labeler = BatchLabeler(llm, concurrency=4)
    await labeler.run(
        table, column=0, out=tmp_path / "out.csv", progress=lambda d, t: seen.append((d, t))
    )
    rows = read_csv(tmp_path / "out.csv")[1]
    assert [r["text"] for r in rows] == items
    assert [r["label"] for r in rows] == ["question" if i % 2 else "praise" for i in range(12)]
    assert backend.answered != items  # answers did finish out of order
    assert seen == [(i, 12) for i in range(13)]


async def test_xlsx_in_and_xlsx_out(tmp_path: Path, llm: LLMClient) -> None:
    source = write_xlsx(
        tmp_path / "in.xlsx",
        [["n", "message"], [1, "a complaint"], [2, "=1+1 question"], [3, ""], [4, "unsure praise"]],
    )
    out = tmp_path / "out.xlsx"
    table = load_table(source)
    summary = await BatchLabeler(llm).run(table, column=pick_text_column(table), out=out)
    paths = OutputPaths(out)
    assert not paths.work.exists() and not paths.state.exists()
    workbook = openpyxl.load_workbook(out)
    rows = [list(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]
    assert rows == [
        ["n", "message", "label", "confidence", "needs_review", "error"],
        ["1", "a complaint", "complaint", 0.9, False, None],
        ["2", "=1+1 question", "question", 0.9, False, None],  # text, not a formula
        ["3", None, None, 0, True, "empty"],
        ["4", "unsure praise", "praise", 0.3, True, None],
    ]
    assert summary.per_label == {"complaint": 1, "question": 1, "praise": 1}
    # The XLSX is readable as an input again.
    assert load_table(out).columns[-4:] == ("label", "confidence", "needs_review", "error")


# --------------------------------------------------------------------------- stop and resume


async def test_a_model_that_dies_midway_then_resume_asks_only_the_rest(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    items = [f"row {i} question" if i % 2 else f"row {i} praise" for i in range(8)]
    source = write_csv(tmp_path / "in.csv", [["text"], *[[item] for item in items]])
    out = tmp_path / "out.csv"
    table = load_table(source)
    backend.fail_after = 3
    with pytest.raises(BatchStoppedError) as caught:
        await BatchLabeler(llm, concurrency=1).run(table, column=0, out=out)
    assert caught.value.params == {"done": 3, "total": 8, "out": str(out)}
    assert caught.value.key == "label-batch-stopped"
    assert [r["text"] for r in read_csv(out)[1]] == items[:3]
    state = json.loads(OutputPaths(out).state.read_text())
    assert (state["done"], state["input_sha256"]) == (3, table.sha256)
    first_run = list(backend.asked)
    assert set(first_run) == set(items[:4])  # row 3 was asked (and failed), not saved

    backend.fail_after = None
    backend.asked.clear()
    summary = await BatchLabeler(llm, concurrency=3).run(table, column=0, out=out)
    assert sorted(backend.asked) == sorted(items[3:])  # done rows are not asked again
    rows = read_csv(out)[1]
    assert [r["text"] for r in rows] == items
    assert [r["label"] for r in rows] == ["question" if i % 2 else "praise" for i in range(8)]
    assert (summary.rows, summary.labeled, summary.resumed) == (8, 8, 3)
    assert summary.per_label == {"praise": 4, "question": 4}
    assert not OutputPaths(out).state.exists()
    raw = out.read_bytes()
    assert raw.count(codecs.BOM_UTF8) == 1 and raw.count(b"label;") + raw.count(b"label,") == 1


async def test_a_half_written_row_is_dropped_on_resume(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(tmp_path / "in.csv", [["text"], ["one praise"], ["two question"]])
    out = tmp_path / "out.csv"
    table = load_table(source)
    backend.fail_after = 1
    with pytest.raises(BatchStoppedError):
        await BatchLabeler(llm, concurrency=1).run(table, column=0, out=out)
    with out.open("ab") as handle:  # the process died while writing the next row
        handle.write(b"two question,questi")
    backend.fail_after = None
    await BatchLabeler(llm).run(table, column=0, out=out)
    assert [(r["text"], r["label"]) for r in read_csv(out)[1]] == [
        ("one praise", "praise"),
        ("two question", "question"),
    ]


async def test_a_server_that_is_down_leaves_no_files(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [["text"], ["a question"]])
    out = tmp_path / "out.csv"
    client = make_llm("http://127.0.0.1:9/v1")
    try:
        with pytest.raises(BatchStoppedError) as caught:
            await BatchLabeler(client).run(load_table(source), column=0, out=out)
    finally:
        await client.close()
    assert caught.value.params["done"] == 0
    assert list(tmp_path.iterdir()) == [source]


async def test_another_input_with_the_same_out_is_refused_unless_restart(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    first = write_csv(tmp_path / "a.csv", [["text"], ["a praise"], ["a question"]])
    second = write_csv(tmp_path / "b.csv", [["text"], ["b complaint"]])
    out = tmp_path / "out.csv"
    backend.fail_after = 1
    with pytest.raises(BatchStoppedError):
        await BatchLabeler(llm, concurrency=1).run(load_table(first), column=0, out=out)
    backend.fail_after = None
    with pytest.raises(LabelOutputError) as caught:
        await BatchLabeler(llm).run(load_table(second), column=0, out=out)
    assert caught.value.key == "label-resume-mismatch"
    assert "--restart" in str(caught.value)
    # Other labels for the same input are another run too.
    with pytest.raises(LabelOutputError):
        await BatchLabeler(llm, labels=parse_label_list("praise, question")).run(
            load_table(first), column=0, out=out
        )
    summary = await BatchLabeler(llm).run(load_table(second), column=0, out=out, restart=True)
    assert summary.rows == 1
    assert [r["text"] for r in read_csv(out)[1]] == ["b complaint"]


async def test_a_finished_output_is_not_overwritten_unless_restart(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(tmp_path / "in.csv", [["text"], ["a praise"]])
    out = tmp_path / "out.csv"
    await BatchLabeler(llm).run(load_table(source), column=0, out=out)
    with pytest.raises(LabelOutputError) as caught:
        await BatchLabeler(llm).run(load_table(source), column=0, out=out)
    assert caught.value.key == "label-out-exists"
    await BatchLabeler(llm).run(load_table(source), column=0, out=out, restart=True)
    assert len(backend.asked) == 2
    assert len(read_csv(out)[1]) == 1


async def test_a_progress_file_edited_by_hand_is_refused(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(tmp_path / "in.csv", [["text"], ["a praise"], ["a question"]])
    out = tmp_path / "out.csv"
    backend.fail_after = 1
    with pytest.raises(BatchStoppedError):
        await BatchLabeler(llm, concurrency=1).run(load_table(source), column=0, out=out)
    out.write_text("text,label\n")
    backend.fail_after = None
    with pytest.raises(LabelOutputError) as caught:
        await BatchLabeler(llm).run(load_table(source), column=0, out=out)
    assert caught.value.key == "label-resume-broken"


def test_row_results_round_trip_and_errors_are_loopgram_errors() -> None:
    result = RowResult("praise", 0.875, False)
    assert RowResult.from_cells(result.cells()) == RowResult("praise", 0.875, False)
    with pytest.raises(ValueError):
        RowResult.from_cells(["x", "0.5", "maybe", ""])
    for error in (LabelFileError, LabelOutputError, BatchStoppedError):
        assert issubclass(error, LoopgramError)


async def test_an_xlsx_output_resumes_from_its_working_csv(
    tmp_path: Path, llm: LLMClient, backend: LabelingBackend
) -> None:
    source = write_csv(tmp_path / "in.csv", [["text"], ["a praise"], ["a question"]], delimiter=";")
    out = tmp_path / "out.xlsx"
    backend.fail_after = 1
    with pytest.raises(BatchStoppedError):
        await BatchLabeler(llm, concurrency=1).run(load_table(source), column=0, out=out)
    paths = OutputPaths(out)
    assert paths.work.exists() and paths.state.exists() and not out.exists()
    backend.fail_after = None
    backend.asked.clear()
    await BatchLabeler(llm).run(load_table(source), column=0, out=out)
    assert backend.asked == ["a question"]
    assert not paths.work.exists() and not paths.state.exists()
    sheet = openpyxl.load_workbook(out).worksheets[0]
    assert [row[:2] for row in sheet.iter_rows(values_only=True)] == [
        ("text", "label"),
        ("a praise", "praise"),
        ("a question", "question"),
    ]
