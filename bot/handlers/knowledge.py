"""The knowledge base in the bot: 📚 sources under answers, and /kb for admins.

/kb lists the documents, `/kb search <question>` shows what retrieval finds, `/kb delete <id>`
removes one; a file sent with the caption `/kb` is added (in a group: for that group only;
in a private chat: for every chat). Ingest runs on a worker thread; the bot stays responsive.
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message
from sqlmodel import Session, col, select

from bot.callbacks import SourcesCb
from bot.filters import AddressedToBot
from bot.permissions import is_admin
from bot.streaming import message_gone
from loopgram import crud
from loopgram.db import Database, parse_id
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.models import Chunk, Document, User
from loopgram.rag import service
from loopgram.rag.prompt import cite
from loopgram.rag.types import Hit
from loopgram.settings import Settings

log = logging.getLogger(__name__)
router = Router(name=__name__)

QUOTE_CHARS = 220
OUTCOME_KEYS = {"added": "kb-added", "replaced": "kb-replaced", "skipped": "kb-skipped"}


def _sources(*, session: Session, chunk_ids: list[str]) -> list[Hit]:
    rows = session.exec(
        select(Chunk, Document)
        .join(Document, col(Document.id) == col(Chunk.document_id))
        .where(col(Chunk.id).in_(chunk_ids))
    ).all()
    by_id = {chunk.id: (chunk, document) for chunk, document in rows}
    hits = []
    for chunk_id in chunk_ids:  # in the order they were numbered in the prompt
        if chunk_id in by_id:
            chunk, document = by_id[chunk_id]
            hits.append(
                Hit(
                    chunk_id=chunk.id,
                    document_id=document.id or 0,
                    document=document.name,
                    text=chunk.text,
                    score=0.0,
                    lang=chunk.lang,
                    section=chunk.section,
                    page=chunk.page,
                )
            )
    return hits


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS].rsplit(" ", 1)[0] + "…"


@router.callback_query(SourcesCb.filter())
async def on_sources(
    query: CallbackQuery, callback_data: SourcesCb, bot: Bot, lang: str, db: Database
) -> None:
    interaction = await db.run(crud.get_interaction, interaction_id=callback_data.iid)
    if (
        interaction is None
        or query.message is None
        or query.message.chat.id != interaction.chat_id
        or not interaction.retrieved_chunk_ids
    ):
        await query.answer(t(lang, "callback-invalid"), show_alert=True)
        return
    hits = await db.run(_sources, chunk_ids=list(interaction.retrieved_chunk_ids))
    await query.answer()
    if not hits:
        await bot.send_message(query.message.chat.id, t(lang, "kb-sources-gone"))
        return
    lines = [t(lang, "kb-sources-title")]
    for number, hit in enumerate(hits, start=1):
        lines.append(f"[{number}] {cite(hit)}\n«{_quote(hit.text)}»")
    await bot.send_message(
        query.message.chat.id,
        "\n\n".join(lines)[:4096],
        reply_to_message_id=query.message.message_id,
    )


def _documents(*, session: Session, chat_id: int) -> list[Document]:
    query = select(Document).where(
        (col(Document.chat_id).is_(None)) | (col(Document.chat_id) == chat_id)
    )
    return list(session.exec(query.order_by(col(Document.id))).all())


@router.message(Command("kb"), AddressedToBot(), ~F.document)
async def on_kb(
    message: Message,
    command: CommandObject,
    lang: str,
    db: Database,
    settings: Settings,
    user_record: User | None,
) -> None:
    if not is_admin(user_record):
        await message.reply(t(lang, "admin-only"))
        return
    verb, _, rest = (command.args or "").strip().partition(" ")
    verb = verb.lower()
    try:
        if verb == "search" and rest.strip():
            retriever = await asyncio.to_thread(service.retriever, settings)
            hits = await asyncio.to_thread(
                retriever.search, rest.strip(), chat_id=message.chat.id, limit=5
            )
            lines = [f"{h.score:.2f} · {cite(h)}\n«{_quote(h.text)}»" for h in hits]
            await message.reply("\n\n".join(lines)[:4096] if lines else t(lang, "kb-nothing"))
        elif verb == "delete" and rest.strip().isdecimal():
            document_id = parse_id(rest)
            deleted = False
            if document_id is not None:  # beyond 64 bits: no document has it
                kb = await asyncio.to_thread(service.knowledge_base, settings, db)
                deleted = await asyncio.to_thread(kb.delete, document_id)
            await message.reply(
                t(lang, "kb-deleted" if deleted else "kb-no-document", id=rest.strip())
            )
        elif not verb:
            documents = await db.run(_documents, chat_id=message.chat.id)
            lines = [
                t(
                    lang,
                    "kb-line",
                    id=d.id or 0,
                    name=d.name,
                    chunks=d.chunks,
                    status=d.status,
                    scope=t(lang, "kb-scope-chat") if d.chat_id else t(lang, "kb-scope-all"),
                )
                + (" ⚠️" if d.findings else "")
                for d in documents
            ]
            await message.reply("\n".join(lines)[:4096] if lines else t(lang, "kb-empty"))
        else:
            await message.reply(t(lang, "kb-usage"))
    except LoopgramError as exc:
        await message.reply(t(lang, exc.key, **exc.params))


@router.message(F.document, F.caption.startswith("/kb"), AddressedToBot())
async def on_kb_file(
    message: Message,
    bot: Bot,
    lang: str,
    db: Database,
    settings: Settings,
    user_record: User | None,
) -> None:
    if not is_admin(user_record) or message.from_user is None:
        await message.reply(t(lang, "admin-only"))
        return
    document = message.document
    assert document is not None
    if document.file_size is not None and document.file_size > settings.bot.max_file_bytes:
        await message.reply(t(lang, "file-too-big", limit_kb=settings.bot.max_file_bytes // 1000))
        return
    status = await message.reply(t(lang, "kb-indexing", name=document.file_name or "file"))
    buffer = await bot.download(document)
    data = buffer.read() if buffer is not None else b""
    in_group = message.chat.type != ChatType.PRIVATE
    try:
        kb = await asyncio.to_thread(service.knowledge_base, settings, db)
        outcome = await asyncio.to_thread(
            kb.ingest_bytes,
            data,
            name=document.file_name or "document",
            source=f"telegram:{message.chat.id}:{document.file_name or document.file_unique_id}",
            mime_type=document.mime_type,
            chat_id=message.chat.id if in_group else None,
            added_by=message.from_user.id,
        )
    except LoopgramError as exc:
        await _show(message, status, t(lang, exc.key, **exc.params))
        return
    text = t(lang, OUTCOME_KEYS[outcome.status], name=outcome.name, chunks=outcome.chunks)
    if outcome.findings:
        text += "\n" + t(lang, "kb-injection-warning", count=len(outcome.findings))
    await _show(message, status, text)


async def _show(message: Message, status: Message, text: str) -> None:
    """The outcome in the "indexing…" message, or in a new reply if it was deleted meanwhile."""
    try:
        await status.edit_text(text)
    except TelegramBadRequest as exc:
        if not message_gone(exc):
            raise
        await message.reply(text)
