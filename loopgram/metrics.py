"""Prometheus metrics: every metric loopgram exposes is defined here, once.

Three kinds:

- **Process counters and histograms**, updated where things happen: updates handled (the
  aiogram middleware in `bot/metrics_middleware.py`), answers and their latency
  (`loopgram.answering`), model calls (`loopgram.llm`), rating presses (the feedback handler).
  Each process reports its own; Prometheus sums the replicas.
- **Celery tasks and queues** (`loopgram.task_stats`): runs by task and outcome, their
  duration, and the messages waiting per queue, recorded by every worker and read at scrape
  time (with Redis the same on every replica: aggregate with `max`).
- **Figures read from the database on scrape** (`DatabaseCollector`): the review queue,
  training runs by status, the adapter serving each assistant, ratings and the 👍 rate of the
  last `RATE_WINDOW` per assistant. They are the same for every replica (aggregate them with
  `max`, not `sum`), cost a few `GROUP BY` queries on indexed columns, and are cached for
  `cache_seconds` so frequent scrapes stay cheap. When the database cannot be read the scrape
  still answers, with `loopgram_db_stats_up 0`.
- **The satisfaction estimate** (`loopgram.satisfaction`): the predicted 👍 rate per assistant
  and adapter and the calibration error, recomputed on scrape at most every
  `SATISFACTION_SECONDS` (it reads every scored answer) and whenever it is computed anyway
  (`/stats` calls `publish_satisfaction`).

`render()` gives the text exposition format for `/metrics`. This module imports neither
aiogram nor celery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Table

from loopgram.task_stats import TaskCollector, TaskStats

if TYPE_CHECKING:
    from collections.abc import Mapping

    from loopgram.db import Database
    from loopgram.satisfaction import Estimate

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
RATE_WINDOW = timedelta(days=7)
"""Ratings younger than this count for `loopgram_thumbs_up_rate` and `loopgram_recent_ratings`."""

SATISFACTION_SECONDS = 300.0
"""How long a satisfaction estimate computed on scrape is reused."""

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)

UPDATES = Counter(
    "loopgram_updates",
    "Telegram updates handled by this bot process.",
    ["type", "outcome"],  # outcome: handled | unhandled | error
)
UPDATE_SECONDS = Histogram(
    "loopgram_update_seconds",
    "Time to handle one update, middlewares included.",
    ["type"],
    buckets=_LATENCY_BUCKETS,
)
ANSWERS = Counter(
    "loopgram_answers",
    "Answers stored (one interaction each).",
    ["assistant", "status"],  # status: ok | failed
)
ANSWER_SECONDS = Histogram(
    "loopgram_answer_seconds",
    "From the question to the stored answer.",
    ["assistant"],
    buckets=_LATENCY_BUCKETS,
)
ANSWER_REROUTES = Counter(
    "loopgram_answer_reroutes",
    "Answers sent to another model because their adapter was no longer served (a canary "
    "rolled back or an adapter unloaded while the routing cache still named it).",
    ["assistant"],
)
MODEL_REQUESTS = Counter(
    "loopgram_model_requests",
    "Chat Completions calls to the model server.",
    ["outcome"],  # ok | timeout | error | cancelled
)
MODEL_SECONDS = Histogram(
    "loopgram_model_seconds",
    "Duration of one Chat Completions call (whole stream).",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_FIRST_TOKEN_SECONDS = Histogram(
    "loopgram_model_first_token_seconds",
    "Time to the first streamed chunk of a Chat Completions call.",
    buckets=_LATENCY_BUCKETS,
)
BEST_OF_N = Counter(
    "loopgram_best_of_n",
    "Best-of-n answers (loopgram.best_of_n): scored, or sent unscored (reward server failed).",
    ["assistant", "outcome"],  # scored | unscored
)
BEST_OF_N_SECONDS = Histogram(
    "loopgram_best_of_n_seconds",
    "Best-of-n stages: generating the n candidates, scoring them with the reward model.",
    ["stage"],  # generate | score
    buckets=_LATENCY_BUCKETS,
)
RATING_PRESSES = Counter(
    "loopgram_rating_presses",
    "Ratings received by this bot process (buttons and reactions).",
    ["value", "source"],  # value: up | down
)


def rating_label(value: int) -> str:
    return "up" if value > 0 else "down"


class DatabaseCollector(Collector):
    """Figures computed from the database at scrape time (see the module doc)."""

    def __init__(self, cache_seconds: float = 15.0) -> None:
        self.cache_seconds = cache_seconds
        self._db: Database | None = None
        self._lock = threading.Lock()
        self._cached: list[Metric] | None = None
        self._cached_at = 0.0
        self._satisfaction: list[Metric] | None = None
        self._satisfaction_at = 0.0

    def use_database(self, db: Database | None) -> None:
        with self._lock:
            self._db, self._cached, self._satisfaction = db, None, None

    def publish_satisfaction(self, estimates: Mapping[str, Estimate]) -> None:
        """Expose an estimate computed elsewhere (fresher than the scrape-time one)."""
        families = satisfaction_families(estimates)
        with self._lock:
            self._satisfaction, self._satisfaction_at = families, time.monotonic()
            self._cached = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the data; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            db = self._db
            if db is None:
                return iter(())
            now = time.monotonic()
            if self._cached is None or now - self._cached_at >= self.cache_seconds:
                self._cached, self._cached_at = self._read(db), now
            return iter(self._cached)

    def _read(self, db: Database) -> list[Metric]:
        up = GaugeMetricFamily(
            "loopgram_db_stats_up", "1 when the database figures below could be read."
        )
        try:
            figures = db.call(read_figures)
        except Exception as exc:
            log.warning("metrics.db_stats_failed error=%s", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *figures, *self._read_satisfaction(db)]

    def _read_satisfaction(self, db: Database) -> list[Metric]:
        now = time.monotonic()
        if self._satisfaction is None or now - self._satisfaction_at >= SATISFACTION_SECONDS:
            from loopgram.satisfaction import estimate_all

            try:
                self._satisfaction = satisfaction_families(db.call(estimate_all))
            except Exception as exc:  # the other figures are still worth a scrape
                log.warning("metrics.satisfaction_failed error=%s", type(exc).__name__)
                self._satisfaction = self._satisfaction or []
            self._satisfaction_at = now
        return self._satisfaction


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


def read_figures(*, session: Any) -> list[Metric]:
    """The database figures as metric families (one session, a handful of small queries)."""
    from sqlalchemy import case, func, select

    from loopgram.assistants import ASSISTANTS
    from loopgram.models import (
        Adapter,
        AdapterKind,
        AdapterStatus,
        Interaction,
        Rating,
        ReviewItem,
        ReviewStatus,
        RunStatus,
        TrainingRun,
        utcnow,
    )

    review, runs_t, adapter_t = _table(ReviewItem).c, _table(TrainingRun).c, _table(Adapter).c
    rating, interaction = _table(Rating).c, _table(Interaction).c

    queue = GaugeMetricFamily(
        "loopgram_review_queue", "Review items waiting for a moderator.", labels=["assistant"]
    )
    pending = session.execute(
        select(review.assistant, func.count())
        .where(review.status == ReviewStatus.pending.value)
        .group_by(review.assistant)
    ).all()
    by_assistant = {str(name or ""): int(n) for name, n in pending}
    for name in ASSISTANTS:
        by_assistant.setdefault(name, 0)
    for name, n in sorted(by_assistant.items()):
        queue.add_metric([name], n)

    runs = GaugeMetricFamily(
        "loopgram_training_runs", "Training runs by status (all time).", labels=["status"]
    )
    counted = {
        str(status): int(n)
        for status, n in session.execute(
            select(runs_t.status, func.count()).group_by(runs_t.status)
        ).all()
    }
    for status in RunStatus:
        runs.add_metric([status.value], counted.get(status.value, 0))

    adapters = GaugeMetricFamily(
        "loopgram_adapter_in_use",
        "1 for the adapter serving an assistant (status active or canary); "
        'adapter="base" when no adapter is active.',
        labels=["assistant", "adapter", "version", "status"],
    )
    serving = session.execute(
        select(adapter_t.assistant, adapter_t.name, adapter_t.version, adapter_t.status).where(
            adapter_t.status.in_([AdapterStatus.active.value, AdapterStatus.canary.value]),
            adapter_t.kind == AdapterKind.policy.value,  # reward models are never served
        )
    ).all()
    active: set[str] = set()
    for assistant, name, version, status in serving:
        adapters.add_metric([assistant, name, str(version), str(status)], 1)
        if str(status) == AdapterStatus.active.value:
            active.add(assistant)
    for name in ASSISTANTS:
        if name not in active:
            adapters.add_metric([name, "base", "0", AdapterStatus.active.value], 1)

    since = utcnow() - RATE_WINDOW
    rows = session.execute(
        select(
            interaction.assistant,
            func.count(),
            func.sum(case((rating.value > 0, 1), else_=0)),
        )
        .select_from(
            _table(Rating).join(_table(Interaction), interaction.id == rating.interaction_id)
        )
        .where(rating.created_at >= since)
        .group_by(interaction.assistant)
    ).all()
    recent = GaugeMetricFamily(
        "loopgram_recent_ratings",
        f"Ratings of the last {RATE_WINDOW.days} days by assistant and value.",
        labels=["assistant", "value"],
    )
    rate = GaugeMetricFamily(
        "loopgram_thumbs_up_rate",
        f"Share of 👍 among the ratings of the last {RATE_WINDOW.days} days, per assistant "
        "(absent for an assistant without ratings).",
        labels=["assistant"],
    )
    for assistant, total, ups in rows:
        total, ups = int(total), int(ups or 0)
        recent.add_metric([assistant, "up"], ups)
        recent.add_metric([assistant, "down"], total - ups)
        if total:
            rate.add_metric([assistant], ups / total)
    return [queue, runs, adapters, recent, rate]


def satisfaction_families(estimates: Mapping[str, Estimate]) -> list[Metric]:
    """The satisfaction estimate as metric families (calibrated assistants only, except the
    count of scored answers)."""
    predicted = GaugeMetricFamily(
        "loopgram_predicted_thumbs_up_rate",
        "👍 rate predicted by the calibrated reward model over all scored answers (rated or "
        "not), per assistant and adapter.",
        labels=["assistant", "adapter"],
    )
    answers = GaugeMetricFamily(
        "loopgram_satisfaction_scored_answers",
        "Answers scored by the assistant's active reward model, per adapter.",
        labels=["assistant", "adapter"],
    )
    error = GaugeMetricFamily(
        "loopgram_satisfaction_calibration_error",
        "Expected calibration error of the predicted 👍 probability (out of sample).",
        labels=["assistant"],
    )
    brier = GaugeMetricFamily(
        "loopgram_satisfaction_brier_score",
        "Brier score of the predicted 👍 probability on rated answers (out of sample).",
        labels=["assistant"],
    )
    for assistant, estimate in sorted(estimates.items()):
        for adapter, figures in sorted(estimate.adapters.items()):
            answers.add_metric([assistant, adapter], figures.answers)
            if figures.predicted is not None:
                predicted.add_metric([assistant, adapter], figures.predicted)
        if estimate.ece is not None:
            error.add_metric([assistant], estimate.ece)
        if estimate.brier is not None:
            brier.add_metric([assistant], estimate.brier)
    return [predicted, answers, error, brier]


DATABASE_COLLECTOR = DatabaseCollector()
REGISTRY.register(DATABASE_COLLECTOR)
TASK_COLLECTOR = TaskCollector()
REGISTRY.register(TASK_COLLECTOR)


def use_database(db: Database | None) -> None:
    """Read the scrape-time figures from `db` (None: leave them out)."""
    DATABASE_COLLECTOR.use_database(db)


def use_task_stats(stats: TaskStats | None) -> None:
    """Expose the Celery task and queue figures of `stats` (None: leave them out)."""
    TASK_COLLECTOR.use(stats)


def publish_satisfaction(estimates: Mapping[str, Estimate]) -> None:
    """Expose a freshly computed satisfaction estimate on `/metrics`."""
    DATABASE_COLLECTOR.publish_satisfaction(estimates)


def render(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The text exposition of every metric (blocking when database figures are due: call it
    from a thread in async code)."""
    return generate_latest(registry)
