"""BM25-style sparse vectors: Russian and English terms, stems, weights and stable ids."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopgram.rag.sparse import (
    AVGDL,
    K1,
    B,
    encode_document,
    encode_query,
    stem_english,
    stem_russian,
    term_id,
    tokens,
)
from loopgram.rag.types import SparseVector


def test_inflected_russian_words_share_a_stem() -> None:
    groups = [
        "политика политики политике политику политикой политиках",
        "возврат возврата возврату возвратом возврате возвраты возвратов",
        "доставка доставки доставке доставку доставкой",
        "заказ заказа заказу заказом заказе заказы заказов заказами",
        "пользователь пользователя пользователю пользователем пользователей",
        "оплата оплаты оплате оплату оплатой",
        "гарантия гарантии гарантию гарантией",
    ]
    for group in groups:
        assert len(set(tokens(group))) == 1, (group, tokens(group))


def test_inflected_english_words_share_a_stem() -> None:
    groups = [
        "refund refunds refunded refunding",
        "policy policies",
        "delivery deliveries",
        "order orders ordered ordering",
        "connect connected connecting connection connections",
    ]
    for group in groups:
        assert len(set(tokens(group))) == 1, (group, tokens(group))


def test_porter_reference_stems() -> None:
    """Examples from Porter's 1980 paper."""
    pairs = {
        "caresses": "caress", "ponies": "poni", "cats": "cat", "feed": "feed",
        "agreed": "agre", "plastered": "plaster", "motoring": "motor", "sing": "sing",
        "conflated": "conflat", "troubled": "troubl", "sized": "size", "hopping": "hop",
        "falling": "fall", "filing": "file", "happy": "happi", "relational": "relat",
        "conditional": "condit", "digitizer": "digit", "operator": "oper",
        "hopefulness": "hope", "formalize": "formal", "electrical": "electr",
        "adjustment": "adjust", "adoption": "adopt", "controll": "control", "roll": "roll",
        "generalization": "gener",
    }  # fmt: skip
    assert {word: stem_english(word) for word in pairs} == pairs


def test_snowball_russian_reference_stems() -> None:
    """Examples from the Snowball project's Russian vocabulary and output."""
    pairs = {
        "авиакатастрофа": "авиакатастроф", "абиссинию": "абиссин", "абсолютно": "абсолютн",
        "августа": "август", "автобиографию": "автобиограф", "важная": "важн",
        "вагоны": "вагон", "вашего": "ваш", "вещей": "вещ", "взглядом": "взгляд",
        "красивейший": "красив", "читая": "чит", "прочитав": "прочита",
        "распространяется": "распространя", "возможности": "возможн", "длинный": "длин",
    }  # fmt: skip
    assert {word: stem_russian(word) for word in pairs} == pairs


def test_tokens_lowercase_yo_numbers_and_stop_words() -> None:
    assert tokens("Ёлка и ЕЛКА") == ["елк", "елк"]
    assert tokens("The refund is paid within 30 days, до 14:00 по МСК.") == [
        "refund", "paid", "within", "30", "dai", "14", "00", "мск"
    ]  # fmt: skip
    assert tokens("e5-small, GPT4 и COVID19") == ["e5", "small", "gpt4", "covid19"]
    assert tokens("Ｆｕｌｌ-width ﬁle") == ["full", "width", "file"]
    assert tokens("и в на the of a") == []
    assert tokens("") == []


def test_query_and_document_overlap_on_shared_terms() -> None:
    document = encode_document(
        "Политика возврата: деньги за заказ возвращаются в течение 14 дней. "
        "Refund policy: money is returned within 14 days."
    )
    for query in ("Какая политика возврата?", "политикой возвратов", "refunds policies"):
        encoded = encode_query(query)
        shared = set(encoded.indices) & set(document.indices)
        assert len(shared) == 2, query
    assert not set(encode_query("доставка курьером").indices) & set(document.indices)


def test_document_weights_are_bm25_term_frequencies() -> None:
    # A document exactly avgdl terms long: the length factor is 1.
    words = [f"w{i}" for i in range(int(AVGDL) - 3)] + ["refund"] * 3
    vector = encode_document(" ".join(words))
    weights = dict(zip(vector.indices, vector.values, strict=True))
    assert weights[term_id("refund")] == pytest.approx(3 * (K1 + 1) / (3 + K1))
    assert weights[term_id("w0")] == pytest.approx(1.0)
    # Longer documents weigh the same term frequency less; repeats saturate below k1 + 1.
    short = dict(zip(*_pairs(encode_document("refund policy")), strict=True))
    long = dict(zip(*_pairs(encode_document("refund policy " + "word " * 500)), strict=True))
    assert short[term_id("refund")] > 1.0 > long[term_id("refund")]
    norm = K1 * (1 - B + B * 2 / AVGDL)
    assert short[term_id("refund")] == pytest.approx((K1 + 1) / (1 + norm))
    many = dict(zip(*_pairs(encode_document("refund " * 1000)), strict=True))
    assert many[term_id("refund")] < K1 + 1


def _pairs(vector: SparseVector) -> tuple[list[int], list[float]]:
    return vector.indices, vector.values


def test_query_weights_are_one_per_distinct_term() -> None:
    vector = encode_query("refund refund REFUNDS policy")
    assert vector.indices == sorted({term_id("refund"), term_id("polici")})
    assert vector.values == [1.0, 1.0]


def test_empty_text_gives_an_empty_vector() -> None:
    for text in ("", "   ", "!!! ... ---", "и в на", "the of and"):
        assert encode_document(text) == SparseVector(indices=[], values=[])
        assert encode_query(text) == SparseVector(indices=[], values=[])


def test_term_ids_are_stable() -> None:
    """Hard-coded: changing the hash would silently break every stored collection."""
    assert term_id("refund") == 1155478322
    assert term_id("политик") == 665889423
    assert term_id("30") == 5739172
    assert term_id("возврат") == 485153040


def test_term_ids_are_the_same_in_another_process() -> None:
    code = (
        "import json; from loopgram.rag.sparse import encode_document, encode_query;"
        "d = encode_document('Политика возврата, refund policy, 2024');"
        "q = encode_query('политика refund');"
        "print(json.dumps([d.indices, d.values, q.indices]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    indices, values, query = json.loads(out.stdout)
    document = encode_document("Политика возврата, refund policy, 2024")
    assert indices == document.indices
    assert values == pytest.approx(document.values)
    assert query == encode_query("политика refund").indices


@given(st.text(max_size=400))
def test_vectors_are_well_formed(text: str) -> None:
    document = encode_document(text)
    query = encode_query(text)
    for vector in (document, query):
        assert vector.indices == sorted(set(vector.indices))
        assert len(vector.indices) == len(vector.values)
        assert all(0 <= i < 2**31 for i in vector.indices)
    assert all(0 < v < K1 + 1 and math.isfinite(v) for v in document.values)
    assert document.indices == query.indices
    assert set(query.values) <= {1.0}
    assert tokens(text) == tokens(text)
