"""Formatting parsers: texts, UTF-16 offsets and the server's error texts."""

from __future__ import annotations

import pytest

from loopgram.emulator.errors import ParseError
from loopgram.emulator.formatting import format_text
from loopgram.emulator.html_entities import parse_html, parse_text
from loopgram.emulator.links import detect_entities
from loopgram.emulator.utf16 import utf16_len, utf16_slice


def test_cyrillic_offsets_count_one_unit_per_letter() -> None:
    text, entities = parse_html("Привет, <b>мир</b>!")
    assert text == "Привет, мир!"
    assert entities == [{"type": "bold", "offset": 8, "length": 3}]


def test_emoji_outside_the_bmp_counts_two_utf16_units() -> None:
    text, entities = parse_html("😀 <i>ок 👍</i> <u>x</u>")
    assert text == "😀 ок 👍 x"
    assert entities == [
        {"type": "italic", "offset": 3, "length": 5},
        {"type": "underline", "offset": 9, "length": 1},
    ]
    assert utf16_slice(text, 3, 5) == "ок 👍"
    assert utf16_len(text) == 10


def test_all_documented_tags() -> None:
    source = (
        "<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins><s>s</s>"
        '<strike>k</strike><del>d</del><span class="tg-spoiler">p</span>'
        '<tg-spoiler>q</tg-spoiler><a href="https://example.com/?a=1&amp;b=2">l</a>'
        '<code>c</code><pre>p</pre><pre><code class="language-python">x = 1</code></pre>'
        "<blockquote>q</blockquote><blockquote expandable>e</blockquote>"
        '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>'
    )
    text, entities = parse_html(source)
    assert text == "bsieunskdpqlcpx = 1qe👍"
    kinds = [e["type"] for e in entities]
    assert kinds == [
        "bold",
        "bold",
        "italic",
        "italic",
        "underline",
        "underline",
        "strikethrough",
        "strikethrough",
        "strikethrough",
        "spoiler",
        "spoiler",
        "text_link",
        "code",
        "pre",
        "pre",
        "blockquote",
        "expandable_blockquote",
        "custom_emoji",
    ]
    assert entities[11]["url"] == "https://example.com/?a=1&b=2"
    assert entities[14] == {"type": "pre", "offset": 14, "length": 5, "language": "python"}
    assert entities[17]["custom_emoji_id"] == "5368324170671202286"


def test_references_and_a_lone_ampersand() -> None:
    text, entities = parse_html("&lt;b&gt; &amp; &quot;q&quot; &#1055; &#x1F600; AT&T &nbsp;")
    assert text == '<b> & "q" П 😀 AT&T &nbsp;'  # unknown references stay literal, as on the server
    assert entities == []


def test_nested_tags_and_bare_attribute_values() -> None:
    text, entities = parse_html("<b>bold <i>both</i></b> <span class=tg-spoiler>s</span>")
    assert text == "bold both s"
    assert {"type": "italic", "offset": 5, "length": 4} in entities
    assert {"type": "bold", "offset": 0, "length": 9} in entities
    assert {"type": "spoiler", "offset": 10, "length": 1} in entities


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("<x>a</x>", 'Unsupported start tag "x" at byte offset 0'),
        ("Ж <br>", 'Unsupported start tag "br" at byte offset 3'),
        ("<b>a", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>a</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("a</b>", "Unexpected end tag at byte offset 1"),
        ("<b", "Unclosed start tag at byte offset 0"),
        ("<b>a</b", "Unclosed end tag at byte offset 4"),
        ("<span>a</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ('<tg-emoji emoji-id="x">a</tg-emoji>', "Invalid custom emoji identifier specified"),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
    ],
)
def test_bad_html_is_refused_with_the_servers_reason(source: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_html(source)
    assert caught.value.reason == reason


def test_bad_html_becomes_a_bad_request() -> None:
    with pytest.raises(Exception) as caught:
        format_text("<foo>", "HTML")
    assert str(caught.value) == (
        'Bad Request: can\'t parse entities: Unsupported start tag "foo" at byte offset 0'
    )


def test_markdown_v2_entities() -> None:
    text, entities = parse_text(
        "*жирный* _курсив_ __u__ ~s~ ||sp|| `код` [ссылка](https://t.me/x) \\. 😀 *b*",
        "MarkdownV2",
    )
    assert text == "жирный курсив u s sp код ссылка . 😀 b"
    assert entities == [
        {"type": "bold", "offset": 0, "length": 6},
        {"type": "italic", "offset": 7, "length": 6},
        {"type": "underline", "offset": 14, "length": 1},
        {"type": "strikethrough", "offset": 16, "length": 1},
        {"type": "spoiler", "offset": 18, "length": 2},
        {"type": "code", "offset": 21, "length": 3},
        {"type": "text_link", "offset": 25, "length": 6, "url": "https://t.me/x"},
        {"type": "bold", "offset": 37, "length": 1},
    ]


def test_markdown_v2_pre_with_language() -> None:
    text, entities = parse_text("```python\nprint('a_b')\n```", "MarkdownV2")
    assert text == "print('a_b')\n"
    assert entities == [{"type": "pre", "offset": 0, "length": 13, "language": "python"}]


@pytest.mark.parametrize("char", list("_*[]()~`>#+-=|{}.!"))
def test_markdown_v2_reserved_characters_must_be_escaped(char: str) -> None:
    source = f"a {char}" if char not in "_*[~`|" else f"a \\{char} {char}"
    with pytest.raises(ParseError) as caught:
        parse_text(source, "MarkdownV2")
    if char in "_*[~`":
        assert caught.value.reason.startswith("Can't find end of")
    else:
        assert caught.value.reason == (
            f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
        )
    escaped, _ = parse_text(f"a \\{char}", "MarkdownV2")
    assert escaped == f"a {char}"


def test_markdown_v2_unclosed_entity_reports_its_byte_offset() -> None:
    with pytest.raises(ParseError) as caught:
        parse_text("Ж *bold", "MarkdownV2")
    assert caught.value.reason == "Can't find end of Bold entity at byte offset 3"


def test_legacy_markdown() -> None:
    text, entities = parse_text("*b* _i_ `c` [l](http://x.org)", "Markdown")
    assert text == "b i c l"
    assert [e["type"] for e in entities] == ["bold", "italic", "code", "text_link"]


def test_text_is_trimmed_and_entities_follow() -> None:
    text, entities = format_text("  \n<b> hi </b> there \n", "HTML")
    assert text == "hi  there"
    assert entities == [{"type": "bold", "offset": 0, "length": 3}]


def test_server_side_autodetected_entities() -> None:
    text = "/start@loopgram_bot hi @anna_k https://ex.com/a). mail a.b@ex.org #tag #123 $USD"
    kinds = {
        (e["type"], utf16_slice(text, e["offset"], e["length"])) for e in detect_entities(text)
    }
    assert kinds == {
        ("bot_command", "/start@loopgram_bot"),
        ("mention", "@anna_k"),
        ("url", "https://ex.com/a"),
        ("email", "a.b@ex.org"),
        ("hashtag", "#tag"),
        ("cashtag", "$USD"),
    }


def test_autodetection_skips_code() -> None:
    _, entities = format_text("<code>@anna_k</code> @anna_k", "HTML")
    assert entities == [
        {"type": "code", "offset": 0, "length": 7},
        {"type": "mention", "offset": 8, "length": 7},
    ]
