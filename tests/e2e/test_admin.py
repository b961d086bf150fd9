"""Admin commands of the learning loop, and the training report admins receive."""

from __future__ import annotations

from sqlmodel import Session

from bot.emulated import emulated_bot
from loopgram.models import TrainingRun
from tests.factories import add_interaction
from workers.notify import send_run_report


async def test_admin_commands_check_the_role_and_answer(bot_settings) -> None:  # type: ignore[no-untyped-def]
    async with emulated_bot(bot_settings(ADMIN_IDS="9001"), with_model=False) as env:
        emu = env.emulator
        admin = emu.user(9001, "Ada", language_code="en")
        user = emu.user(9002, "Bob", language_code="ru")
        await user.send_text("/adapters")
        assert "только для администраторов" in (await emu.wait_for_bot_message(9002))["text"]
        await user.send_text("/rollback chat")
        assert "только для администраторов" in (await emu.wait_for_bot_message(9002))["text"]

        await admin.send_text("/adapters")
        assert "No adapters yet" in (await emu.wait_for_bot_message(9001))["text"]
        await admin.send_text("/deploy chat-v7")
        assert "No such adapter" in (await emu.wait_for_bot_message(9001))["text"]
        await admin.send_text("/rollback chat")
        assert "nothing to roll back" in (await emu.wait_for_bot_message(9001))["text"]
        await admin.send_text("/rollback")
        assert "Usage: /rollback" in (await emu.wait_for_bot_message(9001))["text"]
        await admin.send_text("/train chat kto")
        assert "is queued" in (await emu.wait_for_bot_message(9001))["text"]


async def test_training_report_reaches_admins_with_a_chart(bot_settings, sqlite_db) -> None:  # type: ignore[no-untyped-def]
    for user in range(6):
        add_interaction(sqlite_db, user_id=user, adapter="chat-v1" if user % 2 else None)

    def run(*, session: Session) -> int:
        row = TrainingRun(
            assistant="chat",
            method="dpo",
            status="rejected",
            train_examples=40,
            eval_examples=10,
            metrics={
                "train_seconds": 12.5,
                "history": [{"rewards/margins": m} for m in (0.0, 0.2, 0.4)],
            },
            evaluation={
                "candidate": {"accuracy": 0.4, "mean_margin": -0.1},
                "active": {"accuracy": 0.5, "mean_margin": 0.0},
                "reason": "does not beat the active adapter",
            },
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id

    run_id = sqlite_db.call(run)
    async with emulated_bot(bot_settings(ADMIN_IDS="9101,9102"), with_model=False) as env:
        emu = env.emulator
        for admin, lang in ((9101, "ru"), (9102, "en")):
            await emu.user(admin, "Admin", language_code=lang).send_text("/start")
            await emu.wait_for_bot_message(admin)
        settings = env.stack.settings
        import asyncio

        sent = await asyncio.to_thread(send_run_report, settings, env.stack.db, run_id)
        assert sent == 2
        ru = await emu.wait_for_bot_message(9101, lambda m: "photo" in m)
        assert "Обучение #" in ru["caption"] and "отклонён" in ru["caption"]
        en = await emu.wait_for_bot_message(9102, lambda m: "photo" in m)
        assert "Training run #" in en["caption"] and "does not beat" in en["caption"]
        png = emu.file_bytes(en["photo"][-1]["file_id"])
        assert png.startswith(b"\x89PNG")


async def test_ids_no_row_can_have_are_unknown_not_an_error(bot_settings) -> None:  # type: ignore[no-untyped-def]
    """An id beyond 64 bits (SQLite cannot even look it up) or in digits int() does not
    read ("²" is a digit to str.isdigit) names nobody: the admin is told so."""
    async with emulated_bot(bot_settings(ADMIN_IDS="9011"), with_model=False) as env:
        emu = env.emulator
        admin = emu.user(9011, "Ada", language_code="ru")
        huge = "99999999999999999999"
        expected = {
            f"/grant {huge} moderator": f"Я не знаю {huge}",
            f"/ban {huge}": f"Я не знаю {huge}",
            "/unban ²": "Я не знаю ²",
            f"/kb delete {huge}": f"Документа {huge} нет",
            "/kb delete ²": "Использование: /kb",
        }
        for command, reply in expected.items():
            sent = await admin.send_text(command)
            answer = await emu.wait_for_bot_message(
                9011,
                lambda m, sent=sent: (  # type: ignore[misc]
                    (m.get("reply_to_message") or {}).get("message_id") == sent["message_id"]
                ),
            )
            assert reply in answer["text"], command


async def test_adapter_errors_reach_a_russian_admin_in_russian(bot_settings) -> None:  # type: ignore[no-untyped-def]
    """The registry's refusals carry their names as parameters, not as English detail."""
    async with emulated_bot(bot_settings(ADMIN_IDS="9021"), with_model=False) as env:
        emu = env.emulator
        admin = emu.user(9021, "Ада", language_code="ru")
        expected = {
            "/deploy chat-v7": "Такого адаптера нет: chat-v7. Список — /adapters.",
            "/rollback chat": "chat отвечает базовой моделью: откатывать нечего.",
        }
        for command, reply in expected.items():
            await admin.send_text(command)
            answer = await emu.wait_for_bot_message(9021, lambda m, r=reply: r in m["text"])  # type: ignore[misc]
            assert "no adapter" not in answer["text"] and "nothing to" not in answer["text"]
