"""Files people send, turned into plain text: the one reader for assistants and the knowledge base.

`extract_text(data, file_name=..., mime_type=...)` decides the type (extension first, then the
MIME type), reads the bytes and returns an `ExtractedDocument`: PDF pages as separate parts with
their page numbers, every other format as one part. Whatever goes wrong with the bytes comes out
as a `LoopgramError` with a message key the user can read, never as a parser's own exception:

- `FileUnsupportedError` (`file-unsupported`): a type we do not read (an old .doc too);
- `FileBrokenError` (`file-broken`): a corrupt, truncated or mislabelled PDF/DOCX/HTML;
  `FileEncryptedError` (`file-encrypted`) for a PDF or Word file behind a password;
- `FileTooBigError` (`file-too-big`, with `limit_kb`): a DOCX whose text parts unpack to more
  than `MAX_UNPACKED_BYTES` (a zip bomb), checked before and while unpacking;
- `FileEmptyError` (`file-empty`): nothing in the file; `FileNoTextError` (`file-no-text`):
  a file that opens but has no text in it, such as a scan without a text layer;
- `FileNotUtf8Error` (`file-not-utf8`): text in an encoding we cannot recognise.

The text is normalised (line ends, control characters, trailing spaces, runs of blank lines),
and `max_chars` stops reading once enough text is collected instead of reading the whole file.
pypdf and python-docx are imported on first use.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, ClassVar, NoReturn

from loopgram.errors import (
    FileBrokenError,
    FileEmptyError,
    FileEncryptedError,
    FileNoTextError,
    FileNotUtf8Error,
    FileTooBigError,
    FileUnsupportedError,
)

if TYPE_CHECKING:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

log = logging.getLogger(__name__)

_KIND_BY_SUFFIX = {
    ".txt": "txt",
    ".md": "md",
    ".markdown": "md",
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".csv": "csv",
}
_KIND_BY_MIME = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/csv": "csv",
    "application/csv": "csv",
    "text/comma-separated-values": "csv",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_KIND_BY_SUFFIX)

# A DOCX is a zip: what its entries unpack to is checked before anything is unpacked.
MAX_UNPACKED_BYTES = 50_000_000
MAX_ZIP_ENTRIES = 10_000
# The part of a CSV the dialect (delimiter, quotes) is guessed from.
_CSV_SNIFF_CHARS = 4096

# What the parsers raise on malformed bytes besides their own error classes: pypdf and
# python-docx parse in plain Python and let lookups, conversions, struct/zlib decoding and deep
# nesting fail where the bytes are wrong. Caught only around the library calls, never our code.
_MALFORMED = (
    ValueError,  # includes UnicodeDecodeError
    LookupError,  # KeyError, IndexError
    TypeError,
    AttributeError,
    ArithmeticError,
    AssertionError,
    NotImplementedError,
    RecursionError,
    EOFError,
    SyntaxError,  # lxml.etree.XMLSyntaxError derives from it
    struct.error,
    zlib.error,
)


@dataclass(frozen=True)
class DocumentPart:
    """A page of a PDF (with its 1-based number), or the whole text for other formats."""

    text: str
    page: int | None = None


@dataclass(frozen=True)
class ExtractedDocument:
    name: str
    kind: str  # "txt" | "md" | "pdf" | "docx" | "html" | "csv"
    parts: list[DocumentPart]
    # True when `max_chars` cut the text: the file holds more than `text` shows.
    truncated: bool = False

    @property
    def text(self) -> str:
        """All parts, separated by a blank line."""
        return _PART_SEPARATOR.join(part.text for part in self.parts)


_PART_SEPARATOR = "\n\n"


def document_kind(file_name: str | None, mime_type: str | None) -> str | None:
    """The kind of a file by its extension, else by its MIME type; None when we cannot read it."""
    name = (file_name or "").strip().lower()
    if "." in name:
        kind = _KIND_BY_SUFFIX.get("." + name.rsplit(".", 1)[1])
        if kind is not None:
            return kind
    mime = (mime_type or "").split(";", 1)[0].strip().lower()
    return _KIND_BY_MIME.get(mime)


def extract_text(
    data: bytes,
    *,
    file_name: str | None,
    mime_type: str | None = None,
    max_chars: int | None = None,
) -> ExtractedDocument:
    """The text of a file people sent; raises a `LoopgramError` subclass the user can read.

    `max_chars` bounds `ExtractedDocument.text`; reading stops as soon as that much is collected.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    kind = document_kind(file_name, mime_type)
    if kind is None:
        log.info("document.unsupported mime_type=%s bytes=%d", mime_type, len(data))
        raise FileUnsupportedError()
    if not data.strip():
        raise FileEmptyError()
    parts, more = _READERS[kind](data, max_chars)
    parts = [DocumentPart(text, part.page) for part in parts if (text := _clean(part.text))]
    if not parts:
        if kind in ("txt", "md", "csv"):
            raise FileEmptyError()
        raise FileNoTextError()
    if max_chars is not None:
        parts, cut = _truncate(parts, max_chars)
        more = more or cut
    document = ExtractedDocument(name=file_name or "", kind=kind, parts=parts, truncated=more)
    log.info(
        "document.extracted kind=%s bytes=%d parts=%d chars=%d truncated=%s",
        kind,
        len(data),
        len(parts),
        len(document.text),
        more,
    )
    return document


# --- Plain text, Markdown, CSV -------------------------------------------------------------

# Bytes that never occur in a text file (tab, line feed, form feed and carriage return do).
_BINARY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# What a Russian (or Ukrainian, Belarusian) Windows text decodes to beyond ASCII in cp1251.
_CP1251_TEXT_CHARS = frozenset(
    "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдеёжзийклмнопрстуфхцчшщъыьэюя"
    "ІіЇїЄєҐґЎў"
    "«»—–№…“”„‘’•\u00a0§©®°±·€™"
)
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# A Cyrillic letter glued to a Latin one: "Mьller" is cp1252 read as cp1251, not Russian.
_MIXED_SCRIPT = re.compile(r"[A-Za-z][\u0400-\u04ff]|[\u0400-\u04ff][A-Za-z]")


def _decode_text(data: bytes) -> str:
    """UTF-8 (with or without a BOM), UTF-16 with a BOM, or cp1251 if that reads as Russian."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise FileNotUtf8Error() from exc
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end == len(data) and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8")  # cut off inside its last character
    try:
        text = data.decode("cp1251")
    except UnicodeDecodeError as exc:
        raise FileNotUtf8Error() from exc
    if not _looks_like_cp1251_text(text):
        raise FileNotUtf8Error()
    log.info("document.decoded encoding=cp1251 bytes=%d", len(data))
    return text


def _looks_like_cp1251_text(text: str) -> bool:
    if _BINARY_CONTROLS.search(text):
        return False
    non_ascii = [char for char in text if ord(char) > 0x7F]
    if not non_ascii:
        return True
    known = sum(char in _CP1251_TEXT_CHARS for char in non_ascii)
    if known < 0.9 * len(non_ascii):
        return False
    cyrillic = len(_CYRILLIC.findall(text))
    return len(_MIXED_SCRIPT.findall(text)) <= 0.1 * cyrillic


def _read_text(data: bytes, max_chars: int | None) -> tuple[list[DocumentPart], bool]:
    return [DocumentPart(_decode_text(data))], False


def _read_csv(data: bytes, max_chars: int | None) -> tuple[list[DocumentPart], bool]:
    """Rows as tab-separated lines (the delimiter may be `,` `;` tab or `|`)."""
    text = _decode_text(data)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:_CSV_SNIFF_CHARS], delimiters=",;\t|"
        )
    except csv.Error:
        dialect = csv.excel
    lines: list[str] = []
    size = -1  # the length of the lines joined, as `_clean` leaves it: counted exactly
    try:
        for row in csv.reader(io.StringIO(text, newline=""), dialect):
            line = _clean("\t".join(" ".join(cell.split()) for cell in row))
            if not line:
                continue
            lines.append(line)
            size += len(line) + 1
            if max_chars is not None and size > max_chars:
                return [DocumentPart("\n".join(lines))], True
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit(): keep the text as it is
        log.info("document.csv_unparsed error=%s", exc)
        return [DocumentPart(text)], False
    return [DocumentPart("\n".join(lines))], False


# --- PDF -----------------------------------------------------------------------------------


def _read_pdf(data: bytes, max_chars: int | None) -> tuple[list[DocumentPart], bool]:
    """The text layer of each page; pages that fail to extract are skipped and logged."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, DeprecationError, FileNotDecryptedError, PyPdfError

    # DeprecationError (outside PyPdfError) is what pypdf 7 raises for filter names it dropped.
    malformed = (PyPdfError, DeprecationError, *_MALFORMED)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # an owner password alone is fine
            raise FileEncryptedError()
        pages = reader.pages
        count = len(pages)
    except FileEncryptedError:
        log.info("document.encrypted kind=pdf bytes=%d", len(data))
        raise
    except (DependencyError, FileNotDecryptedError) as exc:  # AES without a crypto library
        log.info("document.encrypted kind=pdf bytes=%d error=%r", len(data), exc)
        raise FileEncryptedError() from exc
    except malformed as exc:
        log.info("document.broken kind=pdf bytes=%d error=%r", len(data), exc)
        raise FileBrokenError() from exc

    parts: list[DocumentPart] = []
    size = 0
    failure: Exception | None = None
    for index in range(count):
        try:
            text = _clean(pages[index].extract_text())
        except (DependencyError, FileNotDecryptedError) as exc:  # AES streams, no crypto library
            log.info("document.encrypted kind=pdf page=%d error=%r", index + 1, exc)
            raise FileEncryptedError() from exc
        except malformed as exc:
            failure = exc
            log.info("document.page_failed kind=pdf page=%d error=%r", index + 1, exc)
            continue
        if not text:
            continue
        size += len(text) + (len(_PART_SEPARATOR) if parts else 0)
        parts.append(DocumentPart(text, page=index + 1))
        if max_chars is not None and size > max_chars:
            return parts, index + 1 < count
    if not parts and failure is not None:
        raise FileBrokenError() from failure
    return parts, False


# --- DOCX ----------------------------------------------------------------------------------


_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_CHUNK = 1 << 16
# Pictures, fonts, embedded files: python-docx keeps them as opaque blobs and the text never
# needs them, so they are stored empty instead of unpacked.
_BLOB_ENTRY = re.compile(
    r"\.(?:png|jpe?g|gif|bmp|tiff?|emf|wmf|wdp|hdp|svg|webp|ico|bin|odttf|ttf|otf"
    r"|xlsx|xlsm|docx|pptx|mp3|mp4|wav|avi|mov)$",
    re.IGNORECASE,
)
_ZIP_ERRORS = (
    zipfile.BadZipFile,  # bad headers, a CRC that does not match
    zipfile.LargeZipFile,
    NotImplementedError,  # a compression method zipfile lacks
    RuntimeError,  # an encrypted entry
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
)


def _unpack_zip(data: bytes) -> bytes:
    """The DOCX zip stored again uncompressed, after unpacking it under `MAX_UNPACKED_BYTES`.

    The declared sizes are checked first, then each entry is inflated in 64 KB chunks counting
    what really comes out: the sizes in the zip's directory may lie, and `ZipFile.read` (which
    python-docx uses) inflates a whole entry in one call however big it turns out. python-docx
    then opens the stored copy, whose sizes are true, so nothing is ever inflated unbounded.
    """
    if data.startswith(_OLE_MAGIC):  # Word's password protection wraps the zip in an OLE file
        if "EncryptedPackage".encode("utf-16-le") in data:
            log.info("document.encrypted kind=docx bytes=%d", len(data))
            raise FileEncryptedError()
        log.info("document.unsupported kind=docx container=ole bytes=%d", len(data))
        raise FileUnsupportedError()  # an old binary .doc under a .docx name
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            # The last entry of a name wins, as in ZipFile.getinfo; directories hold nothing.
            entries = {info.filename: info for info in infos if not info.is_dir()}
            declared = sum(
                info.file_size for info in entries.values() if not _BLOB_ENTRY.search(info.filename)
            )
            if len(infos) > MAX_ZIP_ENTRIES or declared > MAX_UNPACKED_BYTES:
                _zip_too_big(data, len(infos), declared)
            out = io.BytesIO()
            unpacked = 0
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as stored:
                for name, info in entries.items():
                    if _BLOB_ENTRY.search(name):
                        stored.writestr(name, b"")
                        continue
                    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                        raise NotImplementedError(f"compression method {info.compress_type}")
                    with archive.open(info) as source, stored.open(name, "w") as target:
                        while chunk := source.read(_ZIP_CHUNK):
                            unpacked += len(chunk)
                            if unpacked > MAX_UNPACKED_BYTES:
                                _zip_too_big(data, len(infos), unpacked)
                            target.write(chunk)
    except _ZIP_ERRORS as exc:
        log.info("document.broken kind=docx bytes=%d error=%r", len(data), exc)
        raise FileBrokenError() from exc
    return out.getvalue()


def _zip_too_big(data: bytes, entries: int, unpacked: int) -> NoReturn:
    log.warning(
        "document.zip_too_big kind=docx bytes=%d entries=%d unpacked=%d",
        len(data),
        entries,
        unpacked,
    )
    raise FileTooBigError(limit_kb=MAX_UNPACKED_BYTES // 1000)


def _read_docx(data: bytes, max_chars: int | None) -> tuple[list[DocumentPart], bool]:
    """Paragraphs in document order, headings as `#` lines, tables as tab-separated rows."""
    from docx import Document
    from docx.exceptions import PythonDocxError
    from docx.opc.exceptions import OpcError
    from docx.text.paragraph import Paragraph

    package = _unpack_zip(data)
    malformed = (OpcError, PythonDocxError, *_MALFORMED)
    # Cleaned blocks joined by a line break, or a blank line around headings and tables: the
    # joined text is already clean, so its length is counted exactly as it is collected.
    pieces: list[str] = []
    size = 0
    after_table = False
    try:
        document = Document(io.BytesIO(package))
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                text, apart = _docx_paragraph(block)
            else:
                text, apart = _docx_table(block), True
            text = _clean(text)
            if not text:
                continue
            if pieces:
                pieces.append("\n\n" if apart or after_table else "\n")
                size += len(pieces[-1])
            pieces.append(text)
            size += len(text)
            after_table = not isinstance(block, Paragraph)
            if max_chars is not None and size > max_chars:
                return [DocumentPart("".join(pieces))], True
    except malformed as exc:
        log.info("document.broken kind=docx bytes=%d error=%r", len(data), exc)
        raise FileBrokenError() from exc
    return [DocumentPart("".join(pieces))], False


def _docx_paragraph(paragraph: Paragraph) -> tuple[str, bool]:
    """The paragraph's line, and whether it is a heading (set apart by blank lines)."""
    text = paragraph.text.strip()
    if not text:
        return "", False
    style = (paragraph.style.name if paragraph.style is not None else None) or ""
    level = _heading_level(style)
    if level:
        return f"{'#' * level} {text}", True
    properties = paragraph._p.pPr
    if style.lower().startswith("list") or (
        properties is not None and properties.numPr is not None
    ):
        return f"- {text}", False
    return text, False


def _heading_level(style: str) -> int:
    """1-6 for "Title" and "Heading N" styles (built-in names are English in every locale)."""
    name = style.strip().lower()
    if name == "title":
        return 1
    if name.startswith("heading"):
        digits = name.removeprefix("heading").strip()
        return min(max(int(digits), 1), 6) if digits.isdigit() else 1
    return 0


def _docx_table(table: Table) -> str:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a merged cell repeats for each grid column it spans
                continue
            previous = cell._tc
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append("\t".join(cells))
    return "\n".join(rows)


# --- HTML ----------------------------------------------------------------------------------

_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")  # HTML's white space; &nbsp; stays
_HTML_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def _decode_html(data: bytes) -> str:
    """The BOM, else the charset a `<meta>` declares (if it decodes), else as plain text."""
    if not data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        declared = _HTML_META_CHARSET.search(data[:4096])
        if declared is not None:
            try:
                return data.decode(declared.group(1).decode("ascii"))
            except (LookupError, UnicodeError):  # unknown, not a text codec, or a wrong one
                pass
    return _decode_text(data)


def _read_html(data: bytes, max_chars: int | None) -> tuple[list[DocumentPart], bool]:
    parser = _HtmlText()
    try:
        parser.feed(_decode_html(data))
        parser.close()
    except (AssertionError, ValueError) as exc:  # html.parser is lenient; this is a safety net
        log.info("document.broken kind=html bytes=%d error=%r", len(data), exc)
        raise FileBrokenError() from exc
    return [DocumentPart(parser.text())], False


class _HtmlText(HTMLParser):
    """Visible text as lines: headings as `#` lines, list items as `- `, table cells tabbed."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe"})
    _BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "dd", "details", "dl", "dt",
            "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "main",
            "nav", "ol", "p", "pre", "section", "summary", "table", "ul",
        }
    )  # fmt: skip
    _LINES = frozenset({"br", "div", "li", "tr", "caption", "option"})
    _HEADINGS: ClassVar[dict[str, int]] = {f"h{level}": level for level in range(1, 7)}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._lines: list[str] = []
        self._line: list[str] = []
        self._skip = 0
        self._pre = 0
        self._in_title = False
        self._title: list[str] = []
        self._headings = 0

    def text(self) -> str:
        self._break()
        title = " ".join("".join(self._title).split())
        if title and not self._headings:
            self._lines.insert(0, f"# {title}\n")
        return "\n".join(self._lines)

    def _break(self, blank: bool = False) -> None:
        line = "".join(self._line).strip() if not self._pre else "".join(self._line).rstrip()
        self._line = []
        if line:
            self._lines.append(line)
        if blank and self._lines and self._lines[-1]:
            self._lines.append("")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self._HEADINGS:
            self._break(blank=True)
            self._line.append("#" * self._HEADINGS[tag] + " ")
            self._headings += 1
        elif tag == "li":
            self._break()
            self._line.append("- ")
        elif tag in ("td", "th"):
            if "".join(self._line).strip():
                self._line.append("\t")
        elif tag in self._BLOCKS:
            self._break(blank=True)
            if tag == "pre":
                self._pre += 1
        elif tag in self._LINES:
            self._break()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self._SKIP:  # a self-closed <svg/> opens nothing
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(self._skip - 1, 0)
        elif tag == "title":
            self._in_title = False
        elif tag in self._HEADINGS or tag in self._BLOCKS:
            self._break(blank=True)
            if tag == "pre":
                self._pre = max(self._pre - 1, 0)
        elif tag in self._LINES:
            self._break()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self._title.append(data)
        elif self._pre:
            first, *rest = data.split("\n")
            self._line.append(first)
            for line in rest:
                self._break()
                self._line.append(line)
        else:
            self._line.append(_HTML_SPACE.sub(" ", data))


# --- Normalising and truncating ------------------------------------------------------------

_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# C0/C1 controls (except tab and line feed), DEL, lone surrogates, BOMs and noncharacters.
_JUNK = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufeff\ufffe\uffff]")
_TRAILING_SPACE = re.compile(r"[ \t\u00a0\u3000]+$", re.M)
_BLANK_RUNS = re.compile(r"\n{3,}")


def _clean(text: str) -> str:
    """One kind of line end, no control characters, no trailing spaces, at most one blank line."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _JUNK.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def _truncate(parts: list[DocumentPart], max_chars: int) -> tuple[list[DocumentPart], bool]:
    """The parts whose joined text fits in `max_chars`, the last one cut to fit."""
    kept: list[DocumentPart] = []
    budget = max_chars
    for part in parts:
        if kept:
            budget -= len(_PART_SEPARATOR)
        if budget <= 0:
            return kept, True
        if len(part.text) <= budget:
            kept.append(part)
            budget -= len(part.text)
            continue
        # A hard cut: the text then fills `max_chars` (unless it ends in white space), which is
        # how a caller asking for one character over its limit sees that the file is longer.
        cut = part.text[:budget].rstrip()
        if cut:
            kept.append(DocumentPart(cut, part.page))
        return kept, True
    return kept, False


_Reader = Callable[[bytes, int | None], tuple[list[DocumentPart], bool]]
_READERS: dict[str, _Reader] = {
    "txt": _read_text,
    "md": _read_text,
    "csv": _read_csv,
    "pdf": _read_pdf,
    "docx": _read_docx,
    "html": _read_html,
}
