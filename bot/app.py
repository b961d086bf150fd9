"""Building the Bot and the Dispatcher with everything handlers need in workflow_data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import BotCommand
from celery import Celery

from bot.feedback_sink import FeedbackSink
from bot.group_moderation import GroupModerationMiddleware, on_edited_message
from bot.handlers import get_routers
from bot.metrics_middleware import UpdateMetricsMiddleware
from bot.middlewares import DedupMiddleware, ReceivedAtMiddleware, UserContextMiddleware
from bot.ordering import ChatOrder
from bot.rate_limit import Limiter, MemoryLimiter, OutgoingRateLimit, create_limiter
from bot.responding import Responder
from bot.response_types import hold_response_types
from bot.review_poster import ReviewPoster
from bot.throttling import ModelQueue, UserThrottle
from loopgram import privacy
from loopgram.answering import AnswerService
from loopgram.best_of_n import BestOfN
from loopgram.db import Database
from loopgram.embeddings import get_embedder
from loopgram.errors import LoopgramError
from loopgram.few_shot import NeighbourExamples
from loopgram.group_moderation import GroupModerator
from loopgram.i18n import t
from loopgram.llm import LLMClient
from loopgram.logging_setup import install_secret_masking
from loopgram.rag import service as rag_service
from loopgram.rag.retrieve import AsyncRetriever
from loopgram.reward_client import RewardClient
from loopgram.routing import AdapterRouter
from loopgram.settings import Settings, TelegramSettings
from loopgram.spool import Spool


def create_bot(settings: TelegramSettings, *, rate_limit: OutgoingRateLimit | None = None) -> Bot:
    """The Bot; with `rate_limit`, every message it sends or edits waits for Telegram's limits."""
    if settings.telegram_bot_token is None:
        raise LoopgramError("TELEGRAM_BOT_TOKEN is not set", key="error-no-token")
    # Whoever builds a bot (CLI, demo, tests), its token never reaches a log line.
    install_secret_masking(
        s.get_secret_value() for s in (settings.telegram_bot_token, settings.webhook_secret) if s
    )
    session = (
        AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
        if settings.telegram_api_url
        else AiohttpSession()
    )
    if rate_limit is not None:
        session.middleware(rate_limit)
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        session=session,
        # A reply to a message its sender already deleted is refused unless this is set:
        # the answer then arrives without the quote instead of not at all.
        default=DefaultBotProperties(
            link_preview_is_disabled=True, allow_sending_without_reply=True
        ),
    )


def create_storage(settings: Settings) -> BaseStorage:
    """Dialogue state lives in Redis whenever Redis is configured (stateless replicas)."""
    if settings.redis.redis_url:
        from aiogram.fsm.storage.redis import RedisStorage

        from bot.storage import FallbackStorage

        redis_storage = RedisStorage.from_url(
            settings.redis.redis_url,
            connection_kwargs={"socket_connect_timeout": 2, "socket_timeout": 5},
        )
        return FallbackStorage(redis_storage)
    return MemoryStorage()


@dataclass
class BotRuntime:
    """Everything one bot process holds, so that tests and the demo can reach into it."""

    settings: Settings
    db: Database
    llm: LLMClient
    answers: AnswerService
    responder: Responder
    feedback_sink: FeedbackSink
    dispatcher: Dispatcher
    moderation: GroupModerationMiddleware
    review_poster: ReviewPoster
    # Telegram's limits and the per-user limit share one store (Redis when configured).
    limiter: Limiter = field(default_factory=MemoryLimiter)
    rate_limit: OutgoingRateLimit | None = None


def create_runtime(
    settings: Settings,
    *,
    db: Database,
    celery_app: Celery,
    llm: LLMClient | None = None,
    storage: BaseStorage | None = None,
) -> BotRuntime:
    hold_response_types()
    llm = llm or LLMClient(settings.llm)
    router = AdapterRouter(
        base_model=llm.default_model,
        canary_share=settings.learning.canary_share,
        cache_seconds=settings.learning.routing_cache_seconds,
    )
    answers = AnswerService(
        db=db,
        llm=llm,
        settings=settings.bot,
        router=router,
        examples=NeighbourExamples(
            db, embedder=lambda: get_embedder(settings.embedding.embedding_model)
        ),
        knowledge=AsyncRetriever(lambda: rag_service.retriever(settings), db),
        best_of_n=BestOfN(
            settings=settings.reward,
            llm=llm,
            rewards=RewardClient.from_settings(settings),
            cache_seconds=settings.learning.routing_cache_seconds,
        ),
        end_user_key=privacy.end_user_key(settings.telegram.key_secret),
    )
    limiter = create_limiter(settings.redis.redis_url)
    responder = Responder(
        answers=answers,
        stream_interval=settings.bot.stream_edit_interval,
        throttle=UserThrottle(limiter, settings.limits),
        queue=ModelQueue(
            settings.limits.model_concurrency, settings.limits.model_queue_notice_after
        ),
        order=ChatOrder(),
    )
    sink = FeedbackSink(
        celery_app=celery_app,
        db=db,
        spool=Spool(Path(settings.app.data_dir) / "spool" / "feedback.jsonl"),
    )
    dp = Dispatcher(
        storage=storage or create_storage(settings),
        settings=settings,
        db=db,
        answers=answers,
        responder=responder,
        feedback_sink=sink,
        celery_app=celery_app,
    )
    assert responder.order is not None
    dp.update.outer_middleware(ReceivedAtMiddleware())  # first: stamps the arrival (presses)
    dp.update.outer_middleware(UpdateMetricsMiddleware())  # counts, times, logs update_id
    dp.update.outer_middleware(responder.order)  # then: notes messages in arrival order
    dp.update.outer_middleware(DedupMiddleware(db))
    dp.update.outer_middleware(UserContextMiddleware(db, settings))
    moderation = GroupModerationMiddleware(GroupModerator(answers))
    dp.message.outer_middleware(moderation)
    dp.edited_message.outer_middleware(moderation)
    dp.edited_message.register(on_edited_message)
    dp.include_routers(*get_routers())
    poster = ReviewPoster(db, settings)
    return BotRuntime(
        settings,
        db,
        llm,
        answers,
        responder,
        sink,
        dp,
        moderation,
        poster,
        limiter=limiter,
        rate_limit=OutgoingRateLimit(limiter, settings.limits),
    )


async def set_commands(bot: Bot) -> None:
    for lang in ("en", "ru"):
        commands = [
            BotCommand(command=name, description=t(lang, f"command-{name}"))
            for name in (
                "start",
                "help",
                "assistant",
                "paraphrase",
                "summarize",
                "moderate",
                "label",
                "labels",
                "report",
                "reset",
                "export_me",
                "forget",
            )
        ]
        await bot.set_my_commands(commands, language_code=None if lang == "en" else lang)
