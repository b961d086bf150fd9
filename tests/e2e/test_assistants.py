"""The domain assistants through the real bot: options, long documents, structured verdicts,
labels, per-chat settings and group moderation."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlmodel import select

from bot.emulated import EmulatedBot, emulated_bot
from loopgram import labeling
from loopgram.models import (
    Chat,
    Interaction,
    InteractionStatus,
    LabeledExample,
    ReviewItem,
)
from tests.e2e.conftest import has_rating_buttons, rows, wait_db
from training.model_server.app import create_app, start_server
from training.model_server.protocol import GenerationRequest
from training.model_server.scripted import ScriptedBackend

PARAPHRASE = "The meeting is now on Thursday, since the director is away on Monday."


class Script:
    """Answers like a model that follows each assistant's prompt; counts repair turns."""

    def __init__(self) -> None:
        self.garbage_once: set[str] = set()

    def __call__(self, request: GenerationRequest) -> str:
        system = request.messages[0]["content"]
        text = request.messages[-1]["content"]
        if "content moderator" in system or "модератор контента" in system:
            return self.verdict(request, text)
        if "You label items" in system or "размечаешь элементы" in system:
            return self.label(request, text)
        if "of a long text" in system or "длинного текста" in system:
            return f"- key point of part with {len(text)} characters"
        if "notes on the parts" in system or "заметки о частях" in system:
            return "- The document has several parts.\n- Each part was read."
        return PARAPHRASE

    def verdict(self, request: GenerationRequest, text: str) -> str:
        if "always garbage" in str(request.messages):
            return "I think it is fine."
        if "garbage once" in text and text not in self.garbage_once:
            self.garbage_once.add(text)
            return "Verdict: ok!"
        if "Earn" in text:
            return '{"label": "spam", "confidence": 0.95, "reason": "Money scheme.", "action": "delete"}'
        if "maybe rude" in text:
            return '{"label": "ok", "confidence": 0.4, "reason": "Unclear.", "action": "review"}'
        return '{"label": "ok", "confidence": 0.97, "reason": "Ordinary text.", "action": "none"}'

    @staticmethod
    def label(request: GenerationRequest, text: str) -> str:
        if "unsure" in text:
            return '{"label": "other", "confidence": 0.3, "reason": "Hard to tell."}'
        if "broken" in text.lower() or "crash" in text.lower():
            return '{"label": "complaint", "confidence": 0.9, "reason": "A problem."}'
        if "alien" in text or "alien" in str(request.messages):
            return '{"label": "weather", "confidence": 0.9, "reason": "Not in the set."}'
        return '{"label": "question", "confidence": 0.92, "reason": "Asks something."}'


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend(Script())


@pytest.fixture
async def model_url(scripted: ScriptedBackend) -> AsyncIterator[str]:
    runner, url = await start_server(create_app(scripted), "127.0.0.1", 0)
    yield url
    await runner.cleanup()


@pytest.fixture
async def running(bot_settings) -> AsyncIterator[EmulatedBot]:  # type: ignore[no-untyped-def]
    settings = bot_settings(EMBEDDING_MODEL="hashing", SUMMARY_PART_CHARS="300", ADMIN_IDS="7000")
    async with emulated_bot(settings, with_model=False) as env:
        yield env


def buttons(message: dict[str, Any]) -> list[str]:
    markup = message.get("reply_markup") or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


async def switch(emu: Any, user: Any, command: str, word: str = "Assistant:") -> None:
    """Send an assistant switch and wait for its confirmation (updates run concurrently)."""
    before = len(emu.bot_messages(user.id))
    await user.send_text(command)
    await emu.wait_for(
        lambda: any(word in m.get("text", "") for m in emu.bot_messages(user.id)[before:])
    )


def system_of(scripted: ScriptedBackend) -> str:
    return scripted.requests[-1].messages[0]["content"]


async def test_paraphrase_style_buttons_translation_and_meaning_check(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    anna = emu.user(7101, "Anna", language_code="en")
    await switch(emu, anna, "/paraphrase")
    await anna.send_text("The meeting moved to Thursday because the director is away on Monday.")
    first = await emu.wait_for_bot_message(7101, has_rating_buttons)
    assert {"Formal", "Friendly", "Concise", "Simpler", "→ Русский", "🔍 Meaning"} <= set(
        buttons(first)
    )
    assert "formal" not in system_of(scripted)

    await anna.press(first, "Formal")
    second = await emu.wait_for_bot_message(
        7101, lambda m: has_rating_buttons(m) and m["message_id"] != first["message_id"]
    )
    assert "formal, businesslike" in system_of(scripted)
    assert "✓ Formal" in buttons(second)
    chat = await db.run(lambda *, session: session.get(Chat, 7101))
    assert chat.assistant_options == {"paraphrase": {"style": "formal"}}
    # The choice sticks for the chat's next text.
    await anna.send_text("Please send me the report by Friday evening.")
    await emu.wait_for(lambda: len(scripted.requests) == 3)
    assert "formal, businesslike" in system_of(scripted)

    # Translation: the prompt asks for Russian, whatever the original's language.
    await anna.press(second, "→ Русский")
    await emu.wait_for(lambda: len(scripted.requests) == 4)
    assert "по-русски" in system_of(scripted)

    await anna.press(first, "🔍 Meaning")
    await emu.wait_for(
        lambda: any(
            "similarity" in a.get("text", "") or "copy" in a.get("text", "")
            for a in emu.callback_answers
        )
    )
    alert = [a for a in emu.callback_answers if "similarity" in a.get("text", "")][-1]
    assert alert["show_alert"] is True
    options = [i.options for i in await db.run(rows(Interaction))]
    assert {"style": "formal", "target": "same"} in options
    assert {"style": "formal", "target": "ru"} in options


async def test_option_buttons_refuse_other_people_and_forged_data(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu = running.emulator
    group = emu.group(-7200, "Team")
    anna = emu.user(7201, "Anna", language_code="en")
    bob = emu.user(7202, "Bob", language_code="en")
    await anna.send_text("/summarize@loopgram_bot", chat=group)
    await emu.wait_for_bot_message(-7200, lambda m: "Assistant:" in m.get("text", ""))
    await anna.send_text("@loopgram_bot Short text to summarize about the weekly plan.", chat=group)
    answer = await emu.wait_for_bot_message(-7200, has_rating_buttons)
    requests = len(scripted.requests)
    await bob.press(answer, "Bullets", chat=group)
    await emu.wait_for(lambda: len(emu.callback_answers) == 1)
    assert emu.callback_answers[-1]["show_alert"] is True
    iid = json.dumps(answer["reply_markup"]).split('"r:u:')[1].split('"')[0]
    for forged in (f"o:{iid}:style:evil", f"o:{iid}:nogroup:x", "o:999999:format:line", "mc:abc"):
        await anna.press(answer, forged, chat=group)
    await emu.wait_for(lambda: len(emu.callback_answers) == 5)
    assert all(a["show_alert"] for a in emu.callback_answers)
    await asyncio.sleep(0.3)
    assert len(scripted.requests) == requests


async def test_long_document_is_summarized_in_parts_with_progress(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    ben = emu.user(7301, "Ben", language_code="en")
    await switch(emu, ben, "/summarize")
    paragraphs = [
        f"Section {i}. The committee discussed item {i} at length and agreed on a budget of "
        f"{i * 100} units, to be reviewed again next quarter by the finance team."
        for i in range(1, 9)
    ]
    text = "\n\n".join(paragraphs)
    assert len(text) > 1000
    await ben.send_document(text.encode(), "minutes.txt", "text/plain")
    answer = await emu.wait_for_bot_message(
        7301, lambda m: has_rating_buttons(m) and "Each part was read" in m.get("text", "")
    )
    systems = [r.messages[0]["content"] for r in scripted.requests]
    parts = [s for s in systems if "of a long text" in s]
    assert len(parts) >= 4
    assert "notes on the parts" in systems[-1]
    progress = [c for c in emu.calls if "Reading a long text" in str(c.params.get("text", ""))]
    assert progress, "a progress message was shown"
    # The answer replaced the progress message, and the whole document is the stored prompt.
    assert "Reading a long text" in answer["edits"][0]["text"]
    stored = (await db.run(rows(Interaction)))[-1]
    assert stored.prompt == text
    assert stored.prompt_messages[-1]["content"].startswith("- key point")


async def test_moderation_verdicts_are_structured_repaired_or_refused(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    anna = emu.user(7401, "Anna", language_code="ru")
    await switch(emu, anna, "/moderate", word="Ассистент")
    await anna.send_text("Earn $500 a day from home, write to @rich")
    verdict = await emu.wait_for_bot_message(7401, has_rating_buttons)
    assert "Спам" in verdict["text"] and "95%" in verdict["text"]
    stored = (await db.run(rows(Interaction)))[-1]
    assert json.loads(stored.answer) == {
        "label": "spam",
        "confidence": 0.95,
        "reason": "Money scheme.",
        "action": "delete",
    }
    # Invalid once: one repair turn, then a valid verdict.
    before = len(scripted.requests)
    await anna.send_text("garbage once, please check")
    await emu.wait_for_bot_message(
        7401, lambda m: has_rating_buttons(m) and "Нормально" in m["text"]
    )
    assert len(scripted.requests) - before == 2
    assert "Ответ неверен" in scripted.requests[-1].messages[-1]["content"]
    # Invalid twice: a clear failure with a retry button; nothing guessed.
    await anna.send_text("always garbage")
    failed = await emu.wait_for_bot_message(
        7401, lambda m: "second try" in m.get("text", "") or "второй попытки" in m.get("text", "")
    )
    assert any("Повторить" in b for b in buttons(failed))
    last = (await db.run(rows(Interaction)))[-1]
    assert last.status == InteractionStatus.failed
    assert last.answer == "I think it is fine."


async def test_labels_low_confidence_review_and_thumbs_up_examples(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    ben = emu.user(7501, "Ben", language_code="en")
    await switch(emu, ben, "/label")
    await ben.send_text("How do I change my password?")
    answer = await emu.wait_for_bot_message(7501, has_rating_buttons)
    assert "question" in answer["text"] and "92%" in answer["text"]
    await ben.press(answer, "👍")
    example = await wait_db(db, rows(LabeledExample))
    assert [(e.label, e.source, e.text) for e in example] == [
        ("question", "user", "How do I change my password?")
    ]
    # The confirmed item becomes a few-shot example for a similar one.
    await ben.send_text("How do I change my email?")
    await emu.wait_for(lambda: len(scripted.requests) == 2)
    shown = [m["content"] for m in scripted.requests[-1].messages]
    assert "How do I change my password?" in shown
    # Unsure: the item goes to human review.
    await ben.send_text("something unsure")
    await wait_db(db, rows(ReviewItem))
    items = await db.run(rows(ReviewItem))
    assert [i.reason for i in items] == ["low_confidence"]
    # A label outside the set is repaired, never stored silently.
    await ben.send_text("an alien item")
    failed = await emu.wait_for_bot_message(7501, lambda m: "second try" in m.get("text", ""))
    assert failed


async def test_label_sets_need_an_admin_and_tables_are_labeled(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu = running.emulator
    carl = emu.user(7601, "Carl", language_code="en")
    admin = emu.user(7000, "Admin", language_code="en")
    await carl.send_text("/labels bug, idea")
    refusal = await emu.wait_for_bot_message(7601, lambda m: "administrators" in m.get("text", ""))
    assert refusal
    await carl.send_text("/labels")
    current = await emu.wait_for_bot_message(7601, lambda m: "feedback" in m.get("text", ""))
    assert "complaint" in current["text"]
    await admin.send_text("/labels only-one")
    bad = await emu.wait_for_bot_message(7000, lambda m: "not valid" in m.get("text", ""))
    assert "2" in bad["text"]
    await admin.send_text("/labels question: asks something, complaint, praise")
    await emu.wait_for_bot_message(7000, lambda m: "Saved" in m.get("text", ""))

    await switch(emu, carl, "/label")
    table = b"id;message\n1;The app crashes on start\n2;How do I export data?\n3;\n"
    await carl.send_document(table, "tickets.csv", "text/csv")
    result = await emu.wait_for_bot_message(7601, lambda m: "document" in m)
    data = emu.file_bytes(result["document"]["file_id"])
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0].split(";")[:5] == ["id", "message", "label", "confidence", "needs_review"]
    assert lines[1].split(";")[2] == "complaint"
    assert lines[2].split(";")[2] == "question"
    summary = [m for m in emu.bot_messages(7601) if "Labeled 3 rows" in m.get("text", "")]
    assert summary


async def test_invalid_label_sets_are_explained_in_the_admins_language(
    running: EmulatedBot,
) -> None:
    """The detail of `labels-invalid` is localized too, not English inside a Russian frame."""
    emu = running.emulator
    admin = emu.user(7000, "Админ", language_code="ru")
    sent = [
        ("/labels одна", "нужно хотя бы 2 метки"),
        ("/labels спам, вопрос, Спам", "названия меток должны быть разными"),
        ("/labels спам, во$прос", "метка 2 «во$прос»: метка — это"),
        (
            "/labels спам: " + "о" * 301 + ", вопрос",
            "метка 1: поле «description» слишком длинное (не больше 300 символов)",
        ),
    ]
    replies = []
    for text, fragment in sent:
        await admin.send_text(text)
        reply = await emu.wait_for_bot_message(7000, lambda m: "Набор меток" in m.get("text", ""))
        assert fragment in reply["text"], reply["text"]
        replies.append(reply["text"])
    for text in replies:
        # Only the command and the field's own name may be Latin in a Russian reply.
        assert not re.search("[A-Za-z]", re.sub("/labels|description", "", text)), text


def _reply_to(message: dict[str, Any]) -> Any:
    return lambda m: (m.get("reply_to_message") or {}).get("message_id") == message["message_id"]


async def test_a_yaml_file_captioned_labels_sets_the_chats_label_set(
    running: EmulatedBot,
) -> None:
    """`/labels` as a file's caption is the file's command, not a bare `/labels` asking what
    the current set is."""
    emu, db = running.emulator, running.stack.db
    admin = emu.user(7000, "Админ", language_code="ru")  # ADMIN_IDS
    broken = await admin.send_document(b"labels: [unclosed", "set.yaml", caption="/labels")
    reply = await emu.wait_for_bot_message(7000, _reply_to(broken))
    assert "Этот YAML-файл — не набор меток" in reply["text"]
    spec = b"name: support\nlabels:\n  - complaint\n  - name: praise\n    description: thanks\n"
    good = await admin.send_document(spec, "support.yaml", caption="/labels")
    reply = await emu.wait_for_bot_message(7000, _reply_to(good))
    assert reply["text"].startswith("✅ Сохранено")
    stored = await db.run(labeling.current_spec, chat_id=7000, chat_type="private")
    assert (stored.name, stored.names) == ("support", ["complaint", "praise"])


async def test_table_rows_to_check_go_to_the_review_queue_once(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    """Unsure rows and rows without a valid label become review items of the sender (empty
    ones do not); a moderator's correction confirms the label; the same table again queues
    nothing twice."""
    from loopgram import review

    emu, db = running.emulator, running.stack.db
    dana = emu.user(7611, "Dana", language_code="en")
    await switch(emu, dana, "/label")
    table = (
        b"id;message\n1;The app crashes on start\n2;something unsure here\n3;an alien item\n"
        b"4;\n5;How do I export data?\n"
    )
    await dana.send_document(table, "inbox.csv", "text/csv")
    await emu.wait_for_bot_message(7611, lambda m: "document" in m)
    [done] = [m for m in emu.bot_messages(7611) if "Labeled 5 rows" in m.get("text", "")]
    assert "2 of them went to the moderators' review queue" in done["text"]

    items = await db.run(rows(ReviewItem))
    assert [(i.reason, i.assistant) for i in items] == [("low_confidence", "label")] * 2
    notes = sorted(i.note or "" for i in items)
    assert notes == ["no valid label · inbox.csv, row 4", "other 0.30 · inbox.csv, row 3"]
    stored = {i.id: i for i in await db.run(rows(Interaction)) if i.options.get("table")}
    unsure = next(i for i in stored.values() if i.options["row"] == "3")
    alien = next(i for i in stored.values() if i.options["row"] == "4")
    assert unsure.user_id == 7611 and unsure.prompt == "something unsure here"
    assert json.loads(unsure.answer)["label"] == "other" and unsure.status == InteractionStatus.ok
    assert unsure.prompt_messages[-1]["content"] == "something unsure here"
    assert "You label items" in unsure.prompt_messages[0]["content"]
    assert alien.answer == "" and alien.status == InteractionStatus.failed
    assert alien.error and alien.error.startswith("invalid-output")

    # A moderator labels the unsure row: the label is confirmed for the chat's label set.
    item = next(i for i in items if i.interaction_id == unsure.id)
    outcome = await db.run(
        review.decide,
        item_id=item.id,
        moderator_id=7000,
        decision=review.Decision.correct,
        correction="question",
    )
    assert outcome.result == review.ReviewResult.decided
    examples = await db.run(rows(LabeledExample))
    assert [(e.text, e.label, e.source) for e in examples] == [
        ("something unsure here", "question", "review")
    ]

    # The same table again: labeled again, nothing queued twice.
    await dana.send_document(table, "inbox.csv", "text/csv")
    await emu.wait_for(
        lambda: sum("document" in m for m in emu.bot_messages(7611)) == 2, timeout=30
    )
    again = [m for m in emu.bot_messages(7611) if "Labeled 5 rows" in m.get("text", "")]
    assert "already in the moderators' review queue" in again[-1]["text"]
    assert len(await db.run(rows(ReviewItem))) == 2


async def test_a_review_queue_that_fails_loses_no_label(
    running: EmulatedBot, scripted: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refusing the review items must not cost the sender the labeled file."""
    from sqlalchemy.exc import OperationalError

    from loopgram import label_review

    def down(**_: Any) -> int:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(label_review, "queue_rows", down)
    emu = running.emulator
    erin = emu.user(7612, "Erin", language_code="ru")
    await switch(emu, erin, "/label", word="Ассистент")
    await erin.send_document(b"message\nsomething unsure here\n", "a.csv", "text/csv")
    result = await emu.wait_for_bot_message(7612, lambda m: "document" in m)
    lines = emu.file_bytes(result["document"]["file_id"]).decode("utf-8-sig").splitlines()
    assert lines[1].split(",")[1:4] == ["other", "0.3", "true"]
    [done] = [m for m in emu.bot_messages(7612) if "Размечено 1" in m.get("text", "")]
    assert "не получилось отправить строки на проверку" in done["text"]


async def test_the_same_table_sent_twice_at_once_comes_back_whole_twice(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    """Both copies share one working file (keyed by chat and content): the second must not
    append to, resume or delete the file the first is still writing."""
    emu = running.emulator
    fay = emu.user(7613, "Fay", language_code="en")
    await switch(emu, fay, "/label")
    items = [f"How do I export data number {i}?" for i in range(12)]
    table = ("message\n" + "\n".join(items) + "\n").encode()
    await asyncio.gather(
        fay.send_document(table, "twice.csv", "text/csv"),
        fay.send_document(table, "twice.csv", "text/csv"),
    )
    await emu.wait_for(
        lambda: sum("document" in m for m in emu.bot_messages(7613)) == 2, timeout=30
    )
    for result in [m for m in emu.bot_messages(7613) if "document" in m]:
        lines = emu.file_bytes(result["document"]["file_id"]).decode("utf-8-sig").splitlines()
        assert [line.split(",")[0] for line in lines[1:]] == items
        assert all(line.split(",")[1] == "question" for line in lines[1:])
    done = [m for m in emu.bot_messages(7613) if "Labeled 12 rows" in m.get("text", "")]
    assert len(done) == 2


async def test_a_stopped_table_is_labeled_anew_after_the_label_set_changed(
    running: EmulatedBot, scripted: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows a stopped run saved were labeled with the old label set: the same table sent
    after /labels changed starts over, not refused for good with the CLI's --restart hint."""
    emu = running.emulator
    admin = emu.user(7000, "Admin", language_code="en")
    await switch(emu, admin, "/label")
    generate = scripted.generate

    async def down_at_row_three(request: GenerationRequest) -> AsyncIterator[str]:
        if request.messages[-1]["content"] in ("Great work", "It crashes"):
            raise RuntimeError("down")
        async for chunk in generate(request):
            yield chunk

    monkeypatch.setattr(scripted, "generate", down_at_row_three)
    table = b"message\nThe app crashes on start\nHow do I export data?\nGreat work\nIt crashes\n"
    await admin.send_document(table, "stopped.csv", "text/csv")
    stopped = await emu.wait_for_bot_message(
        7000, lambda m: "stopped answering" in m.get("text", "")
    )
    assert "after 2 of 4 rows" in stopped["text"]
    monkeypatch.setattr(scripted, "generate", generate)
    await admin.send_text("/labels question: asks something, complaint, praise")
    await emu.wait_for_bot_message(7000, lambda m: "Saved" in m.get("text", ""))
    await admin.send_document(table, "stopped.csv", "text/csv")
    result = await emu.wait_for_bot_message(7000, lambda m: "document" in m, timeout=30)
    lines = emu.file_bytes(result["document"]["file_id"]).decode("utf-8-sig").splitlines()
    assert [line.split(",")[1] for line in lines[1:3]] == ["complaint", "question"]
    assert not any("--restart" in m.get("text", "") for m in emu.bot_messages(7000))


async def test_disabled_assistants_cannot_be_picked(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    group = emu.group(-7700, "Team", admin_ids=(7702,))
    member = emu.user(7701, "Member", language_code="en")
    owner = emu.user(7702, "Owner", language_code="en")
    await member.send_text("/disable@loopgram_bot paraphrase", chat=group)
    await emu.wait_for_bot_message(-7700, lambda m: "administrators" in m.get("text", ""))
    await owner.send_text("/disable@loopgram_bot paraphrase", chat=group)
    await emu.wait_for_bot_message(-7700, lambda m: "now off" in m.get("text", ""))
    await member.send_text("/paraphrase@loopgram_bot", chat=group)
    await emu.wait_for_bot_message(-7700, lambda m: "turned off" in m.get("text", ""))
    chat = await db.run(lambda *, session: session.get(Chat, -7700))
    assert chat.assistant == "chat" and chat.disabled_assistants == ["paraphrase"]
    await member.send_text("/assistant@loopgram_bot", chat=group)
    menu = await emu.wait_for_bot_message(
        -7700, lambda m: "reply_markup" in m and "assistant" in m.get("text", "").lower()
    )
    assert not any("Paraphrase" in b for b in buttons(menu))
    await owner.send_text("/enable@loopgram_bot paraphrase", chat=group)
    await emu.wait_for_bot_message(-7700, lambda m: "now on" in m.get("text", ""))


async def test_group_moderation_acts_above_threshold_and_queues_the_rest(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    group = emu.group(-7800, "Market", bot_is_admin=True, admin_ids=(7802,))
    member = emu.user(7801, "Member", language_code="en")
    owner = emu.user(7802, "Owner", language_code="en")
    await member.send_text("/moderation@loopgram_bot on", chat=group)
    await emu.wait_for_bot_message(-7800, lambda m: "administrators" in m.get("text", ""))
    await owner.send_text("/moderation@loopgram_bot on", chat=group)
    await emu.wait_for_bot_message(
        -7800, lambda m: "Moderation of every message: on" in m.get("text", "")
    )
    await owner.send_text("/moderation@loopgram_bot action delete", chat=group)
    await emu.wait_for_bot_message(-7800, lambda m: "Automatic action: delete" in m.get("text", ""))

    spam = await member.send_text("Earn $500 a day, write to @rich", chat=group)
    await emu.wait_for_bot_message(-7800, lambda m: "removed" in m.get("text", ""))
    assert spam["message_id"] not in [m["message_id"] for m in emu.chat_messages(-7800)]
    await member.send_text("Does anyone know when the shop opens?", chat=group)
    await member.send_text("maybe rude or not", chat=group)
    await wait_db(db, lambda *, session: len(session.exec(select(Interaction)).all()) == 3)
    await running.stack.runtime.moderation.drain()
    items = await db.run(rows(ReviewItem))
    assert sorted(i.reason for i in items) == ["moderation", "moderation"]
    notes = sorted(i.note or "" for i in items)
    assert notes[0].startswith("ok 0.40") and notes[1].startswith("spam 0.95; bot action: delete")
    # Plain members' messages were not answered: verdicts are silent unless acted on.
    assert not any(has_rating_buttons(m) for m in emu.bot_messages(-7800))


async def _moderation_deletes(emu: Any, group: Any, owner: Any) -> None:
    """The group's owner turns moderation on, with deletion as its action."""
    await owner.send_text("/moderation@loopgram_bot on", chat=group)
    await emu.wait_for_bot_message(
        group.id, lambda m: "Moderation of every message: on" in m.get("text", "")
    )
    await owner.send_text("/moderation@loopgram_bot action delete", chat=group)
    await emu.wait_for_bot_message(
        group.id, lambda m: "Automatic action: delete" in m.get("text", "")
    )


async def test_group_moderation_judges_an_edited_message_again(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    """A harmless message edited into spam must not slip past moderation."""
    emu, db = running.emulator, running.stack.db
    group = emu.group(-7810, "Bazaar", bot_is_admin=True, admin_ids=(7812,))
    member = emu.user(7811, "Member", language_code="en")
    owner = emu.user(7812, "Owner", language_code="en")
    await _moderation_deletes(emu, group, owner)

    sent = await member.send_text("Does anyone know when the shop opens?", chat=group)
    await wait_db(db, lambda *, session: len(session.exec(select(Interaction)).all()) == 1)
    await member.edit_text(sent["message_id"], "Earn $500 a day, write to @rich", chat=group)
    await emu.wait_for_bot_message(-7810, lambda m: "removed" in m.get("text", ""))
    assert sent["message_id"] not in [m["message_id"] for m in emu.chat_messages(-7810)]
    await running.stack.runtime.moderation.drain()
    stored = await db.run(rows(Interaction))
    assert [i.prompt for i in stored][-1] == "Earn $500 a day, write to @rich"


async def test_group_moderation_judges_a_message_longer_than_max_input_chars(
    bot_settings, scripted: ScriptedBackend
) -> None:
    """A group text over MAX_INPUT_CHARS is judged on its beginning, not let through."""
    async with emulated_bot(bot_settings(MAX_INPUT_CHARS="200"), with_model=False) as env:
        emu, db = env.emulator, env.stack.db
        group = emu.group(-7820, "Fair", bot_is_admin=True, admin_ids=(7822,))
        member = emu.user(7821, "Member", language_code="en")
        owner = emu.user(7822, "Owner", language_code="en")
        await _moderation_deletes(emu, group, owner)
        spam = await member.send_text("Earn $500 a day, write to @rich. " * 20, chat=group)
        await emu.wait_for_bot_message(-7820, lambda m: "removed" in m.get("text", ""))
        assert spam["message_id"] not in [m["message_id"] for m in emu.chat_messages(-7820)]
        await env.stack.runtime.moderation.drain()
        [stored] = await db.run(rows(Interaction))
        assert len(stored.prompt) <= 200


async def test_group_moderation_judges_messages_sent_on_behalf_of_a_channel(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    """Telegram names a fake bot sender (Channel_Bot) for a message a member sends as their
    channel: it must be judged like any member's, while the group's anonymous admins and the
    linked channel's own automatic forwards are not."""
    emu, db = running.emulator, running.stack.db
    group = emu.group(-7830, "Square", bot_is_admin=True, admin_ids=(7832,))
    owner = emu.user(7832, "Owner", language_code="en")
    await _moderation_deletes(emu, group, owner)
    chat = {"id": -7830, "type": "supergroup", "title": "Square"}
    channel = {"id": -1007831, "type": "channel", "title": "Deals"}
    channel_bot = {"id": 136817688, "is_bot": True, "first_name": "Channel"}
    anonymous = {"id": 1087968824, "is_bot": True, "first_name": "Group"}
    now = int(time.time())
    for message_id, sender, sender_chat, extra in (
        (9001, anonymous, chat, {}),
        (
            9002,
            {"id": 777000, "is_bot": False, "first_name": "Telegram"},
            channel,
            {"is_automatic_forward": True},
        ),
        (9003, channel_bot, channel, {}),
    ):
        emu.push_update(
            {
                "message": {
                    "message_id": message_id,
                    "date": now,
                    "chat": chat,
                    "from": sender,
                    "sender_chat": sender_chat,
                    "text": "Earn $500 a day, write to @rich",
                    **extra,
                }
            }
        )
    await emu.wait_for_bot_message(-7830, lambda m: "removed" in m.get("text", ""))
    await running.stack.runtime.moderation.drain()
    stored = await db.run(rows(Interaction))
    assert [i.request_message_id for i in stored if i.assistant == "moderate"] == [9003]
    assert 9003 not in [m["message_id"] for m in emu.chat_messages(-7830)]


async def test_too_long_input_is_refused_except_by_the_summarizer(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu = running.emulator
    dan = emu.user(7901, "Dan", language_code="en")
    await switch(emu, dan, "/paraphrase")
    long_text = ("A sentence about the weekly plan and its many tasks. " * 200).encode()
    assert len(long_text) > 8000
    await dan.send_document(long_text, "long.txt", "text/plain")
    refusal = await emu.wait_for_bot_message(7901, lambda m: "too long" in m.get("text", ""))
    assert "8,000" in refusal["text"]
    assert scripted.requests == []
    # The same file is fine for a summary: it is read in parts.
    await switch(emu, dan, "/summarize")
    await dan.send_document(long_text, "long.txt", "text/plain")
    await emu.wait_for_bot_message(7901, has_rating_buttons, timeout=20)
    assert len(scripted.requests) > 2
