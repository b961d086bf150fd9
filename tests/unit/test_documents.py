"""Files people send, read as text: real PDF/DOCX/HTML/CSV files built here, and bad bytes that
must come out as an error the user can read, never as a parser's exception."""

from __future__ import annotations

import io
import random
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable

import docx
import openpyxl
import pypdf
import pytest
from docx.document import Document as WordDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from loopgram.documents import (
    MAX_UNPACKED_BYTES,
    SUPPORTED_SUFFIXES,
    DocumentPart,
    ExtractedDocument,
    document_kind,
    extract_text,
)
from loopgram.errors import (
    FileBrokenError,
    FileEmptyError,
    FileEncryptedError,
    FileNoTextError,
    FileNotUtf8Error,
    FileTooBigError,
    FileUnsupportedError,
    LoopgramError,
)

# --- Building real files -------------------------------------------------------------------


def minimal_pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF written by hand: Helvetica, one `Tj` per line, uncompressed streams."""
    count = len(pages)
    font = 3 + 2 * count
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [{}] /Count {} >>".format(
            " ".join(f"{3 + 2 * i} 0 R" for i in range(count)), count
        ),
    ]
    for index, lines in enumerate(pages):
        shown = " ".join(
            "({}) Tj 0 -16 Td".format(
                line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            )
            for line in lines
        )
        content = f"BT /F1 12 Tf 72 720 Td {shown} ET"
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font} 0 R >> >> /Contents {4 + 2 * index} 0 R >>"
        )
        objects.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return out


def matplotlib_pdf(*pages: list[str]) -> bytes:
    """A PDF as matplotlib writes it (embedded TrueType, compressed streams), a page per list."""
    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        for lines in pages:
            figure = Figure(figsize=(6, 3))
            for row, line in enumerate(lines):
                figure.text(0.05, 0.8 - 0.2 * row, line)
            pdf.savefig(figure)
    return buffer.getvalue()


def picture(fmt: str) -> bytes:
    """A figure with a shape and no text: a PNG, or a PDF like a scan without a text layer."""
    figure = Figure(figsize=(2, 2))
    figure.add_artist(Circle((0.5, 0.5), 0.3))
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    return buffer.getvalue()


def encrypted_pdf(user_password: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(minimal_pdf([["Secret"]]))))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def word_file(build: Callable[[WordDocument], object] | None = None) -> bytes:
    document = docx.Document()
    if build is not None:
        build(document)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def report_docx(document: WordDocument) -> None:
    document.add_heading("Отчёт за квартал", level=1)
    document.add_paragraph("Выручка выросла на 12 %.")
    document.add_heading("Details", level=2)
    document.add_paragraph("First point", style="List Bullet")
    document.add_paragraph("Second point", style="List Bullet")
    table = document.add_table(rows=3, cols=3)
    for col, title in enumerate(("Регион", "Q1", "Q2")):
        table.cell(0, col).text = title
    for col, value in enumerate(("Москва", "10", "12")):
        table.cell(1, col).text = value
    merged = table.cell(2, 0).merge(table.cell(2, 1))
    merged.text = "Итого"
    table.cell(2, 2).text = "22"
    document.add_paragraph("После таблицы.")


def rezip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The same zip with some entries' contents replaced."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, replace.get(info.filename, source.read(info)))
        for name, content in replace.items():
            if name not in source.namelist():
                target.writestr(name, content)
    return buffer.getvalue()


def with_zeros_entry(data: bytes, name: str, size: int) -> bytes:
    """A docx with one more entry of `size` zero bytes, deflated (a zip bomb in miniature)."""
    buffer = io.BytesIO(data)
    with (
        zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open(name, "w") as f,
    ):
        for _ in range(size // 1_000_000):
            f.write(bytes(1_000_000))
    return buffer.getvalue()


def patch_last_entry(data: bytes, *, size: int, crc: int | None = None) -> bytes:
    """Rewrite the declared size (and CRC) of the zip's last central directory entry."""
    patched = bytearray(data)
    entry = patched.rfind(b"PK\x01\x02")
    struct.pack_into("<I", patched, entry + 24, size)
    if crc is not None:
        struct.pack_into("<I", patched, entry + 16, crc)
    return bytes(patched)


OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


# --- Choosing the reader -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mime", "kind"),
    [
        ("notes.txt", None, "txt"),
        ("README.md", None, "md"),
        ("guide.markdown", "text/plain", "md"),
        ("Report.PDF", None, "pdf"),
        ("письмо.docx", None, "docx"),
        ("page.htm", None, "html"),
        ("index.html", None, "html"),
        ("data.csv", None, "csv"),
        ("notes.txt", "application/pdf", "txt"),  # the extension wins
        (None, "application/pdf", "pdf"),
        ("scan", "application/pdf", "pdf"),
        ("export", "text/csv; charset=utf-8", "csv"),
        ("x.weird", "TEXT/HTML", "html"),
        ("table.xlsx", None, None),
        ("old.doc", "application/msword", None),
        ("photo.jpg", "image/jpeg", None),
        (None, None, None),
        ("", "", None),
    ],
)
def test_document_kind_is_decided_by_extension_then_mime(
    name: str | None, mime: str | None, kind: str | None
) -> None:
    assert document_kind(name, mime) == kind


def test_supported_suffixes_are_the_documented_ones() -> None:
    assert set(SUPPORTED_SUFFIXES) == {
        ".txt", ".md", ".markdown", ".pdf", ".docx", ".html", ".htm", ".csv"
    }  # fmt: skip
    assert all(document_kind(f"file{suffix}", None) for suffix in SUPPORTED_SUFFIXES)


@pytest.mark.parametrize(("name", "mime"), [("table.xlsx", None), ("x", None), (None, None)])
def test_an_unknown_type_is_unsupported(name: str | None, mime: str | None) -> None:
    with pytest.raises(FileUnsupportedError) as caught:
        extract_text(b"whatever", file_name=name, mime_type=mime)
    assert caught.value.key == "file-unsupported"


# --- Plain text ----------------------------------------------------------------------------


def test_utf8_text_with_a_bom_loses_the_bom() -> None:
    document = extract_text(b"\xef\xbb\xbfHello, \xd0\xbc\xd0\xb8\xd1\x80", file_name="a.txt")
    assert document == ExtractedDocument(
        name="a.txt", kind="txt", parts=[DocumentPart("Hello, мир")]
    )
    assert document.text == "Hello, мир"


def test_cp1251_russian_text_is_recognised() -> None:
    text = "Съешь же ещё этих мягких французских булок, да выпей чаю.\nИтого — «100 руб.», №5"
    assert extract_text(text.encode("cp1251"), file_name="заметки.txt").text == text


def test_utf8_cut_inside_its_last_character_is_read() -> None:
    data = "Привет, мир".encode()[:-1]
    assert extract_text(data, file_name="a.txt").text == "Привет, ми"


def test_utf16_with_a_bom_is_read() -> None:
    data = "Привет из Блокнота\r\n".encode("utf-16")
    assert extract_text(data, file_name="note.txt").text == "Привет из Блокнота"


@pytest.mark.parametrize(
    "data",
    [
        "Müller's café in Zürich".encode("cp1252"),  # Latin-1 read as cp1251 would be "Mьller"
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01",
        bytes(range(128, 256)),
        b"\x98\x98\x98",  # undefined in cp1251
    ],
)
def test_text_in_an_unknown_encoding_is_not_utf8(data: bytes) -> None:
    with pytest.raises(FileNotUtf8Error) as caught:
        extract_text(data, file_name="a.txt")
    assert caught.value.key == "file-not-utf8"


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  ", b"\xef\xbb\xbf", b"\x00\x00\n"])
def test_an_empty_text_file_is_empty(data: bytes) -> None:
    with pytest.raises(FileEmptyError) as caught:
        extract_text(data, file_name="a.md")
    assert type(caught.value) is FileEmptyError
    assert caught.value.key == "file-empty"


def test_whitespace_and_control_characters_are_normalised() -> None:
    data = (
        b"\n\n  Title  \r\n\r\n\r\n\r\nline\x00 one\x07\t \r\n"
        b"\tindented\ttab\r\rold mac\x0cnext page\n\n\n\n\nend   \n\n"
    )
    document = extract_text(data, file_name="a.txt")
    assert document.text == "  Title\n\nline one\n\tindented\ttab\n\nold mac\nnext page\n\nend"


def test_markdown_is_kept_as_written() -> None:
    data = "# Заголовок\n\n- пункт\n- *второй*\n\n```\ncode  here\n```\n".encode()
    document = extract_text(data, file_name="notes.md")
    assert document.kind == "md"
    assert document.text == "# Заголовок\n\n- пункт\n- *второй*\n\n```\ncode  here\n```"


def test_max_chars_cuts_text_to_fill_the_limit_exactly() -> None:
    """A caller asking for one character over its limit sees a longer file by its length."""
    data = ("слово " * 1000).encode()
    document = extract_text(data, file_name="a.txt", max_chars=100)
    assert document.truncated
    assert document.text == ("слово " * 1000)[:100]
    assert len(document.text) == 100
    assert not extract_text(b"short", file_name="a.txt", max_chars=100).truncated
    assert not extract_text(b"x" * 100, file_name="a.txt", max_chars=100).truncated


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        extract_text(b"text", file_name="a.txt", max_chars=0)


# --- CSV -----------------------------------------------------------------------------------


def test_csv_rows_become_tab_separated_lines() -> None:
    data = b'name,city,note\r\nAnna,Moscow,"says ""hi"", then\r\nleaves"\r\nBob,Kazan,\r\n'
    document = extract_text(data, file_name="people.csv")
    assert document.kind == "csv"
    assert document.text == 'name\tcity\tnote\nAnna\tMoscow\tsays "hi", then leaves\nBob\tKazan'


def test_csv_from_russian_excel_uses_semicolons_and_cp1251() -> None:
    data = "Товар;Цена;Кол-во\nЧай;120,50;3\nКофе;300;1\n".encode("cp1251")
    document = extract_text(data, file_name="заказ.csv")
    assert document.text == "Товар\tЦена\tКол-во\nЧай\t120,50\t3\nКофе\t300\t1"


def test_csv_max_chars_stops_reading_rows() -> None:
    data = "".join(f"{i},value {i}\n" for i in range(10_000)).encode()
    document = extract_text(data, file_name="big.csv", max_chars=56)
    assert document.truncated
    assert len(document.text) == 56
    assert document.text.startswith("0\tvalue 0\n1\tvalue 1")


# --- HTML ----------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><title>Ignored title</title>
<style>body { color: red }</style>
<script>var secret = "do not show"; if (a < b) { alert("x") }</script>
</head>
<body>
<nav><a href="/">Home</a></nav>
<h1>Главная   новость</h1>
<p>First <b>bold</b>
   paragraph &amp; more &laquo;цитата&raquo;.</p>
<script type="module">import x from "y"</script>
<h2>Details</h2>
<ul><li>one</li><li>two</li></ul>
<table><tr><th>Город</th><th>Люди</th></tr><tr><td>Москва</td><td>13&nbsp;млн</td></tr></table>
<pre>  keep
    indent</pre>
<p>Line<br>break</p>
<noscript>Enable JavaScript</noscript>
</body></html>"""


def test_html_keeps_headings_and_paragraphs_and_drops_scripts() -> None:
    document = extract_text(PAGE.encode(), file_name="page.html")
    assert document.kind == "html"
    assert document.text == (
        "Home\n\n"
        "# Главная новость\n\n"
        "First bold paragraph & more «цитата».\n\n"
        "## Details\n\n"
        "- one\n- two\n\n"
        "Город\tЛюди\nМосква\t13\u00a0млн\n\n"
        "  keep\n    indent\n\n"
        "Line\nbreak"
    )
    assert "secret" not in document.text
    assert "color" not in document.text
    assert "JavaScript" not in document.text


def test_html_declared_charset_is_honoured_and_the_title_used_without_headings() -> None:
    page = (
        '<html><head><meta charset="windows-1251"><title>Заметка</title></head>'
        "<body><div>Текст заметки</div></body></html>"
    )
    document = extract_text(page.encode("cp1251"), file_name="x.htm")
    assert document.text == "# Заметка\n\nТекст заметки"


def test_html_with_only_scripts_has_no_text() -> None:
    with pytest.raises(FileNoTextError) as caught:
        extract_text(b"<script>alert(1)</script><style>p{}</style>", file_name="x.html")
    assert caught.value.key == "file-no-text"


def test_html_by_mime_type_without_a_name() -> None:
    document = extract_text(b"<p>hi</p>", file_name=None, mime_type="text/html")
    assert (document.kind, document.text, document.name) == ("html", "hi", "")


# --- PDF -----------------------------------------------------------------------------------


def test_matplotlib_pdf_in_russian_and_english_is_read() -> None:
    data = matplotlib_pdf(["Quarterly report", "Квартальный отчёт: выручка растёт"])
    document = extract_text(data, file_name="report.pdf")
    assert document.kind == "pdf"
    assert document.parts == [
        DocumentPart("Quarterly report\nКвартальный отчёт: выручка растёт", page=1)
    ]


def test_pdf_pages_keep_their_numbers_and_blank_pages_are_skipped() -> None:
    data = matplotlib_pdf(["Первая страница"], [], ["Third page"])
    document = extract_text(data, file_name="a.pdf")
    assert document.parts == [
        DocumentPart("Первая страница", page=1),
        DocumentPart("Third page", page=3),
    ]
    assert document.text == "Первая страница\n\nThird page"


def test_hand_written_helvetica_pdf_is_read() -> None:
    data = minimal_pdf([["Hello (world)", "Second line"], ["Page two"]])
    document = extract_text(data, file_name="a.pdf")
    assert [(part.page, part.text) for part in document.parts] == [
        (1, "Hello (world)\nSecond line"),
        (2, "Page two"),
    ]


def test_pdf_max_chars_stops_before_the_last_page(monkeypatch: pytest.MonkeyPatch) -> None:
    data = minimal_pdf([[f"Page {n} " + "word " * 40] for n in range(1, 201)])
    calls = []
    extract = pypdf.PageObject.extract_text

    def counting(page: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        calls.append(1)
        return extract(page, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pypdf.PageObject, "extract_text", counting)
    document = extract_text(data, file_name="long.pdf", max_chars=1000)
    assert document.truncated
    assert len(document.text) == 1000
    assert document.parts[0].page == 1
    assert len(calls) < 10


def test_a_pdf_without_a_text_layer_has_no_text() -> None:
    with pytest.raises(FileNoTextError) as caught:
        extract_text(picture("pdf"), file_name="scan.pdf")
    assert caught.value.key == "file-no-text"
    assert isinstance(caught.value, FileEmptyError)


def test_an_encrypted_pdf_says_so() -> None:
    with pytest.raises(FileEncryptedError) as caught:
        extract_text(encrypted_pdf("secret"), file_name="locked.pdf")
    assert caught.value.key == "file-encrypted"
    assert isinstance(caught.value, FileBrokenError)


def test_a_pdf_needing_a_missing_crypto_library_says_encrypted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AES streams behind an empty user password need `cryptography`, which may be absent."""

    def needs_aes(page: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        raise pypdf.errors.DependencyError("cryptography is required for AES algorithm")

    monkeypatch.setattr(pypdf.PageObject, "extract_text", needs_aes)
    with pytest.raises(FileEncryptedError):
        extract_text(minimal_pdf([["text"]]), file_name="aes.pdf")


def test_a_page_that_fails_is_skipped_and_the_rest_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    extract = pypdf.PageObject.extract_text

    def second_fails(page: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        text = extract(page)
        if "two" in text:
            raise KeyError("/Font")
        return text

    monkeypatch.setattr(pypdf.PageObject, "extract_text", second_fails)
    document = extract_text(minimal_pdf([["one"], ["two"], ["three"]]), file_name="a.pdf")
    assert [(part.page, part.text) for part in document.parts] == [(1, "one"), (3, "three")]


def test_a_pdf_with_only_an_owner_password_is_read() -> None:
    assert extract_text(encrypted_pdf(""), file_name="restricted.pdf").text == "Secret"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(matplotlib_pdf(["Some text"])[:2000], id="truncated"),
        pytest.param(minimal_pdf([["Some text"]])[:-60], id="truncated-xref"),
        pytest.param(picture("png"), id="png-named-pdf"),
        pytest.param(random.Random(1).randbytes(5000), id="random"),
        pytest.param(b"%PDF-1.7\n" + random.Random(2).randbytes(3000), id="header-and-noise"),
        pytest.param(b"%PDF-1.4\n%%EOF\n", id="header-only"),
    ],
)
def test_a_broken_pdf_is_broken(data: bytes) -> None:
    with pytest.raises(FileBrokenError) as caught:
        extract_text(data, file_name="x.pdf")
    assert caught.value.key == "file-broken"


# --- DOCX ----------------------------------------------------------------------------------


def test_docx_headings_lists_and_tables_in_order() -> None:
    document = extract_text(word_file(report_docx), file_name="report.docx")
    assert document.kind == "docx"
    assert document.parts == [
        DocumentPart(
            "# Отчёт за квартал\n"
            "Выручка выросла на 12 %.\n\n"
            "## Details\n"
            "- First point\n"
            "- Second point\n\n"
            "Регион\tQ1\tQ2\n"
            "Москва\t10\t12\n"
            "Итого\t22\n\n"
            "После таблицы."
        )
    ]


def test_docx_max_chars_stops_reading_paragraphs() -> None:
    def many(document: WordDocument) -> None:
        for n in range(5000):
            document.add_paragraph(f"Paragraph {n} with some words in it.")

    document = extract_text(word_file(many), file_name="long.docx", max_chars=200)
    assert document.truncated
    assert len(document.text) == 200
    assert document.text.startswith("Paragraph 0 with some words in it.\nParagraph 1")


def test_docx_pictures_are_never_unpacked() -> None:
    def illustrated(document: WordDocument) -> None:
        document.add_paragraph("Before the picture.")
        document.add_picture(io.BytesIO(picture("png")))
        document.add_paragraph("After the picture.")

    data = word_file(illustrated)
    assert extract_text(data, file_name="a.docx").text == "Before the picture.\nAfter the picture."
    # A picture declaring 4 GB does not count: it is stored empty, not inflated.
    huge = patch_last_entry(
        with_zeros_entry(data, "word/media/huge.png", 1_000_000), size=0xFFFF_FFF0
    )
    assert extract_text(huge, file_name="a.docx").text.startswith("Before the picture.")


def test_a_docx_without_text_has_no_text() -> None:
    with pytest.raises(FileNoTextError):
        extract_text(word_file(lambda d: d.add_paragraph("   ")), file_name="blank.docx")


def test_a_docx_with_a_huge_declared_entry_is_refused_before_unpacking() -> None:
    data = patch_last_entry(
        with_zeros_entry(word_file(), "word/huge.xml", 1_000_000), size=0xFFFF_FFF0
    )
    with pytest.raises(FileTooBigError) as caught:
        extract_text(data, file_name="bomb.docx")
    assert caught.value.key == "file-too-big"
    assert caught.value.params == {"limit_kb": MAX_UNPACKED_BYTES // 1000}


def test_a_real_zip_bomb_docx_is_refused() -> None:
    data = with_zeros_entry(word_file(), "customXml/zeros.xml", MAX_UNPACKED_BYTES + 2_000_000)
    assert len(data) < 200_000
    with pytest.raises(FileTooBigError):
        extract_text(data, file_name="bomb.docx")


def test_a_zip_bomb_docx_lying_about_its_size_never_inflates() -> None:
    """A small declared size over 100 MB of zeros: read in chunks, never inflated in one go."""
    bomb = with_zeros_entry(word_file(report_docx), "customXml/zeros.xml", 100_000_000)
    lying = patch_last_entry(bomb, size=1000)
    # The same, with the CRC of the first 1000 bytes, so that reading only those passes.
    forged = patch_last_entry(bomb, size=1000, crc=zlib.crc32(bytes(1000)))
    tracemalloc.start()
    try:
        with pytest.raises(FileBrokenError):
            extract_text(lying, file_name="bomb.docx")
        document = extract_text(forged, file_name="bomb.docx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert document.text.startswith("# Отчёт за квартал")
    assert peak < 30_000_000


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(random.Random(3).randbytes(4000), id="random"),
        pytest.param(word_file(report_docx)[:3000], id="truncated"),
        pytest.param(rezip(word_file(), {"word/document.xml": b"<w:document"}), id="bad-xml"),
        pytest.param(
            rezip(word_file(), {"[Content_Types].xml": b"<Types/>"}), id="no-content-types"
        ),
        pytest.param(b"PK\x05\x06" + bytes(18), id="empty-zip"),
        pytest.param(picture("png"), id="png-named-docx"),
    ],
)
def test_a_broken_docx_is_broken(data: bytes) -> None:
    with pytest.raises(FileBrokenError) as caught:
        extract_text(data, file_name="x.docx")
    assert caught.value.key == "file-broken"


def test_a_zip_that_is_not_a_word_file_is_broken() -> None:
    workbook = openpyxl.Workbook()
    workbook.active["A1"] = "cell"
    buffer = io.BytesIO()
    workbook.save(buffer)
    with pytest.raises(FileBrokenError):
        extract_text(buffer.getvalue(), file_name="table.docx")
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(FileBrokenError):
        extract_text(plain.getvalue(), file_name="x.docx")


def test_a_password_protected_word_file_says_so_and_an_old_doc_is_unsupported() -> None:
    protected = OLE_MAGIC + bytes(500) + "EncryptedPackage".encode("utf-16-le") + bytes(500)
    with pytest.raises(FileEncryptedError):
        extract_text(protected, file_name="secret.docx")
    with pytest.raises(FileUnsupportedError):
        extract_text(OLE_MAGIC + bytes(1000), file_name="old.docx")


# --- Whatever the bytes, an answer or an error the user can read ---------------------------

SAMPLES = [
    (".pdf", minimal_pdf([["Hello world", "Second line"], ["Page two"]])),
    (".pdf", matplotlib_pdf(["Hello", "Привет"], ["Page two"])),
    (".docx", word_file(report_docx)),
    (".html", PAGE.encode()),
    (".csv", b'a,b,c\n1,"2,3",4\n'),
    (".txt", "Привет, world".encode()),
]


def _check(data: bytes, name: str) -> None:
    try:
        document = extract_text(data, file_name=name, max_chars=5000)
    except LoopgramError as error:
        assert error.key.startswith("file-")
    else:
        assert isinstance(document, ExtractedDocument)
        assert document.parts
        assert len(document.text) <= 5000
        assert "\x00" not in document.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=3000), suffix=st.sampled_from(SUPPORTED_SUFFIXES))
def test_random_bytes_give_a_document_or_a_readable_error(data: bytes, suffix: str) -> None:
    _check(data, f"file{suffix}")


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid sample with bytes flipped, inserted, deleted or cut off."""
    suffix, sample = draw(st.sampled_from(SAMPLES))
    data = bytearray(sample)
    if suffix == ".docx":  # mutate inside the zip, or the CRC check stops everything early
        archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
        name = draw(st.sampled_from(archive.namelist()))
        inner = bytearray(archive.read(name))
        _mutate(draw, inner)
        return rezip(bytes(data), {name: bytes(inner)}), suffix
    _mutate(draw, data)
    return bytes(data), suffix


def _mutate(draw: st.DrawFn, data: bytearray) -> None:
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            return
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.sampled_from([b"<", b">", b"(", b")", b"/", b"0 R", b"\n"]))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_damaged_files_give_a_document_or_a_readable_error(case: tuple[bytes, str]) -> None:
    data, suffix = case
    _check(data, f"file{suffix}")


@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1, max_size=400), max_chars=st.integers(1, 300))
def test_max_chars_is_a_bound_and_only_cuts_when_needed(text: str, max_chars: int) -> None:
    data = text.encode("utf-8", "surrogatepass")
    try:
        whole = extract_text(data, file_name="a.txt")
    except LoopgramError:
        return
    cut = extract_text(data, file_name="a.txt", max_chars=max_chars)
    assert len(cut.text) <= max_chars
    assert cut.truncated == (len(whole.text) > max_chars)
    assert whole.text.startswith(cut.text)
