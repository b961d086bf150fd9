"""Review figures (queue, moderators' agreement, users' 👍 share), the chart and the
`loopgram review` commands, on SQLite and on Postgres. Every expected figure is worked out
by hand in the comments next to it."""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopgram.cli import app
from loopgram.db import Database
from loopgram.evaluation.metrics import cohen_kappa
from loopgram.models import Rating, ReviewDecision, ReviewItem, ReviewStatus
from loopgram.review_chart import render_thumbs_up_chart
from loopgram.review_stats import (
    SeriesPoint,
    agreement,
    list_items,
    percentile,
    queue_stats,
    thumbs_up_series,
)
from loopgram.settings import DatabaseSettings
from tests.factories import add_interaction

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
H, D = timedelta(hours=1), timedelta(days=1)


def _item(
    db: Database,
    *,
    status: ReviewStatus = ReviewStatus.pending,
    reason: str = "thumbs_down",
    assistant: str = "chat",
    item_assistant: str | None = None,
    created: datetime = NOW - H,
    decided: datetime | None = None,
    claimed_by: int | None = None,
    claim_expires: datetime | None = None,
    reviewer: int | None = None,
    prompt: str = "question",
    answer: str = "an answer",
) -> int:
    """A review item on a fresh answer of `assistant` (`item_assistant` overrides the
    item's own assistant column, "" for an item flagged without one)."""
    interaction_id = add_interaction(db, assistant=assistant, prompt=prompt, answer=answer)
    item = ReviewItem(
        interaction_id=interaction_id,
        reason=reason,
        status=status,
        assistant=assistant if item_assistant is None else item_assistant,
        created_at=created,
        decided_at=decided,
        claimed_by=claimed_by,
        claim_expires_at=claim_expires,
        reviewer_id=reviewer,
    )
    with db.session() as session:
        session.add(item)
        session.flush()
        assert item.id is not None
        return item.id


def _decide(db: Database, item_id: int, moderator_id: int, decision: str) -> None:
    with db.session() as session:
        session.add(
            ReviewDecision(review_item_id=item_id, moderator_id=moderator_id, decision=decision)
        )


def _rate(
    db: Database,
    interaction_id: int,
    user_id: int,
    value: int,
    updated: datetime,
    *,
    source: str = "button",
    created: datetime | None = None,
) -> None:
    with db.session() as session:
        session.add(
            Rating(
                interaction_id=interaction_id,
                user_id=user_id,
                value=value,
                source=source,
                created_at=created or updated,
                updated_at=updated,
            )
        )


# --------------------------------------------------------------------------- queue_stats


def _queue(db: Database) -> dict[str, int]:
    """Four pending items, five decided ones, one withdrawn; decisions by three moderators."""
    ids = {
        # pending: created 3 h, 1 h, 10 min and 2 h ago
        "p1": _item(db, created=NOW - 3 * H, claimed_by=100, claim_expires=NOW + 5 * H / 60),
        "p2": _item(
            db,
            reason="report",
            created=NOW - H,
            claimed_by=101,
            claim_expires=NOW - H / 60,  # lapsed a minute ago: not claimed
        ),
        "p3": _item(db, assistant="paraphrase", created=NOW - H / 6),
        # flagged without an assistant: counted under its answer's assistant
        "p4": _item(
            db, reason="report", assistant="paraphrase", item_assistant="", created=NOW - 2 * H
        ),
        # decided: review times 1 h, 2 h, 4 h, 10 h (last 30 days) and 1 day (40 days ago)
        "d1": _item(
            db,
            status=ReviewStatus.approved,
            created=NOW - 2 * D,
            decided=NOW - 2 * D + H,
            claimed_by=5,  # a stale claim on a decided item is not "claimed right now"
            claim_expires=NOW + H,
        ),
        "d2": _item(
            db, status=ReviewStatus.rejected, created=NOW - 5 * D, decided=NOW - 5 * D + 2 * H
        ),
        "d3": _item(
            db, status=ReviewStatus.corrected, created=NOW - 20 * D, decided=NOW - 20 * D + 4 * H
        ),
        "d4": _item(
            db, status=ReviewStatus.approved, created=NOW - 25 * D, decided=NOW - 25 * D + 10 * H
        ),
        "d5": _item(db, status=ReviewStatus.rejected, created=NOW - 40 * D, decided=NOW - 39 * D),
        "w1": _item(db, status=ReviewStatus.withdrawn, created=NOW - 3 * D),
    }
    _decide(db, ids["d1"], 100, "approve")
    _decide(db, ids["d2"], 100, "reject")
    _decide(db, ids["d4"], 100, "approve")
    _decide(db, ids["d3"], 200, "correct")
    _decide(db, ids["d5"], 200, "reject")
    _decide(db, ids["d1"], 300, "approve")
    return ids


def test_queue_stats_counts_every_figure(db: Database) -> None:
    _queue(db)
    stats = db.call(queue_stats, now=NOW)
    assert stats.pending == 4
    assert stats.pending_by_reason == {"report": 2, "thumbs_down": 2}
    assert stats.pending_by_assistant == {"chat": 2, "paraphrase": 2}
    assert stats.claimed == 1  # p1 only: p2's claim lapsed, d1 is not pending
    assert stats.oldest_pending_seconds == pytest.approx(3 * 3600)
    assert stats.decided_last_7_days == 2  # d1 (2 days ago), d2 (5 days ago)
    # review times in the last 30 days: 3600, 7200, 14400, 36000 seconds
    assert stats.reviewed_last_30_days == 4
    assert stats.review_seconds_median == pytest.approx((7200 + 14400) / 2)
    # p90 at rank (4 - 1) * 0.9 = 2.7: 14400 + 0.7 * (36000 - 14400) = 29520
    assert stats.review_seconds_p90 == pytest.approx(29520)
    assert stats.decisions_by_moderator == {
        100: {"approve": 2, "reject": 1, "correct": 0},
        200: {"approve": 0, "reject": 1, "correct": 1},
        300: {"approve": 1, "reject": 0, "correct": 0},
    }
    # a non-UTC `now` is the same moment
    assert db.call(queue_stats, now=NOW.astimezone(timezone(timedelta(hours=3)))) == stats
    assert json.loads(json.dumps(stats.as_dict()))["decisions_by_moderator"]["100"] == {
        "approve": 2,
        "reject": 1,
        "correct": 0,
    }


def test_queue_stats_of_an_empty_queue(db: Database) -> None:
    stats = db.call(queue_stats, now=NOW)
    assert (stats.pending, stats.claimed, stats.decided_last_7_days) == (0, 0, 0)
    assert stats.pending_by_reason == {} and stats.pending_by_assistant == {}
    assert stats.oldest_pending_seconds is None
    assert stats.reviewed_last_30_days == 0
    assert stats.review_seconds_median is None and stats.review_seconds_p90 is None
    assert stats.decisions_by_moderator == {}


def test_percentile_interpolates_linearly() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 90) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 90) == pytest.approx(
        9.1  # rank 9 * 0.9 = 8.1: 9 + 0.1 * (10 - 9)
    )


# ------------------------------------------------------------------------------ agreement

# (moderator 1, moderator 2) on ten overlap items: 7 agree, 3 disagree.
PAIRS = [
    ("approve", "approve"),
    ("approve", "approve"),
    ("approve", "approve"),
    ("approve", "reject"),
    ("reject", "reject"),
    ("reject", "reject"),
    ("reject", "approve"),
    ("correct", "correct"),
    ("correct", "reject"),
    ("approve", "approve"),
]
# p_o = 7/10. Moderator 1: approve 5, reject 3, correct 2; moderator 2: approve 5, reject 4,
# correct 1. p_e = (5*5 + 3*4 + 2*1) / 100 = 0.39. kappa = (0.7 - 0.39) / (1 - 0.39) = 31/61.
KAPPA = 31 / 61


def test_kappa_of_two_moderators_with_known_disagreements(db: Database) -> None:
    for first, second in PAIRS:
        item = _item(db, status=ReviewStatus.approved, decided=NOW)
        _decide(db, item, 1, first)
        _decide(db, item, 2, second)
    _decide(db, _item(db), 1, "reject")  # decided by one moderator only: not shared
    _decide(db, _item(db), 3, "approve")  # moderator 3 shares nothing: absent
    result = db.call(agreement)
    assert set(result) == {1, 2}
    for moderator in (1, 2):
        assert result[moderator].kappa == pytest.approx(KAPPA)
        assert (result[moderator].shared_items, result[moderator].pairs) == (10, 10)
    assert result[1].as_dict() == {
        "moderator_id": 1,
        "kappa": result[1].kappa,
        "shared_items": 10,
        "pairs": 10,
    }
    assert round(KAPPA, 4) == 0.5082


def test_identical_decisions_on_one_category_are_full_agreement(db: Database) -> None:
    # p_e = 1 here, so the formula is 0/0; cohen_kappa defines it as 1.0 (they agree).
    assert cohen_kappa(["approve", "approve"], ["approve", "approve"]) == 1.0
    for _ in range(2):
        item = _item(db)
        _decide(db, item, 4, "approve")
        _decide(db, item, 5, "approve")
    result = db.call(agreement)
    assert {m: (a.kappa, a.shared_items, a.pairs) for m, a in result.items()} == {
        4: (1.0, 2, 2),
        5: (1.0, 2, 2),
    }


def test_a_third_opinion_pairs_with_each_other_moderator(db: Database) -> None:
    item = _item(db)
    _decide(db, item, 1, "approve")
    _decide(db, item, 2, "approve")
    _decide(db, item, 3, "reject")
    result = db.call(agreement)
    # Moderator 1: [approve, approve] vs [approve (2), reject (3)]: p_o = 1/2,
    # p_e = (2 * 1) / 4 = 1/2, kappa 0. Moderator 3: [reject, reject] vs [approve, approve]:
    # p_o = 0, p_e = 0, kappa 0.
    assert {m: (a.kappa, a.shared_items, a.pairs) for m, a in result.items()} == {
        1: (0.0, 1, 2),
        2: (0.0, 1, 2),
        3: (0.0, 1, 2),
    }


def test_no_overlap_no_agreement(db: Database) -> None:
    _decide(db, _item(db), 1, "approve")
    assert db.call(agreement) == {}


# ------------------------------------------------------------------------ thumbs-up series


def nov(day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def test_thumbs_up_series_per_day_assistant_and_adapter(db: Database) -> None:
    a = add_interaction(db, assistant="chat")
    b = add_interaction(db, assistant="chat", adapter="chat-v1")
    c = add_interaction(db, assistant="paraphrase")
    d = add_interaction(db, assistant="chat")
    e = add_interaction(db, assistant="chat", adapter="chat-v1")
    _rate(db, a, 7, +1, nov(20, 9))
    _rate(db, a, 8, -1, nov(20, 10))
    _rate(db, a, 9, +1, nov(20, 10), source="review")  # a moderator's: left out
    _rate(db, b, 7, +1, nov(19, 23, 59))
    _rate(db, b, 8, +1, nov(19, 1))
    _rate(db, b, 10, -1, nov(18, 0))  # the first moment of the window
    _rate(db, c, 7, -1, nov(19))
    _rate(db, c, 8, +1, nov(19), source="reaction")
    _rate(db, d, 7, +1, nov(17, 23, 59))  # before the three days
    _rate(db, d, 8, +1, nov(20, 13))  # after `now`
    # 👎 on Nov 10, changed to 👍 on Nov 20: counts once, as 👍, on Nov 20
    _rate(db, e, 7, +1, nov(20, 11), created=nov(10))
    points = db.call(thumbs_up_series, days=3, now=NOW)
    assert [(p.day, p.assistant, p.adapter, p.ratings, p.thumbs_up) for p in points] == [
        (date(2026, 11, 18), "chat", "chat-v1", 1, 0),
        (date(2026, 11, 19), "chat", "chat-v1", 2, 2),
        (date(2026, 11, 19), "paraphrase", "base", 2, 1),
        (date(2026, 11, 20), "chat", "base", 2, 1),
        (date(2026, 11, 20), "chat", "chat-v1", 1, 1),
    ]
    assert [p.share for p in points] == [0.0, 1.0, 0.5, 0.5, 1.0]
    assert points[2].as_dict() == {
        "day": "2026-11-19",
        "assistant": "paraphrase",
        "adapter": "base",
        "ratings": 2,
        "thumbs_up": 1,
        "share": 0.5,
    }
    # the default window (30 days) takes in Nov 17 too; a non-UTC `now` is the same moment
    wide = db.call(thumbs_up_series, now=NOW.astimezone(timezone(timedelta(hours=-5))))
    assert (wide[0].day, wide[0].ratings) == (date(2026, 11, 17), 1)
    assert sum(p.ratings for p in wide) == 9


def test_thumbs_up_series_empty_and_bad_window(db: Database) -> None:
    assert db.call(thumbs_up_series, now=NOW) == []
    with pytest.raises(ValueError, match="days"):
        db.call(thumbs_up_series, days=0, now=NOW)


# --------------------------------------------------------------------------------- chart


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_chart_of_a_series_is_a_small_png() -> None:
    points = [
        SeriesPoint(date(2026, 11, day), assistant, adapter, ratings=4, thumbs_up=day % 5)
        for day in range(1, 31)
        for assistant, adapter in (("chat", "base"), ("chat", "chat-v1"), ("paraphrase", "base"))
    ]
    png = render_thumbs_up_chart(points, title="thumbs-up share, last 30 days")
    assert _png_size(png) == (800, 420)
    assert 5_000 < len(png) < 200_000


def test_chart_of_one_day_and_of_nothing() -> None:
    one = render_thumbs_up_chart(
        [SeriesPoint(date(2026, 11, 20), "chat", "base", ratings=3, thumbs_up=2)], title="one day"
    )
    empty = render_thumbs_up_chart([], title="nothing")
    assert _png_size(one) == _png_size(empty) == (800, 420)
    assert len(empty) < 200_000 and empty != one


# ----------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_db(sqlite_url: str) -> Iterator[Database]:
    database = Database.from_settings(DatabaseSettings(database_url=sqlite_url))
    yield database
    database.dispose()


def _cli(url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"DATABASE_URL": url, "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_review_list_json(cli_db: Database, sqlite_url: str) -> None:
    now = datetime.now(UTC)
    old = _item(
        cli_db,
        created=now - 2 * H,
        claimed_by=100,
        claim_expires=now + H,
        prompt="what is 2+2",
        answer="5",
    )
    lapsed = _item(
        cli_db, assistant="paraphrase", created=now - H, claimed_by=101, claim_expires=now - H
    )
    done = _item(
        cli_db, status=ReviewStatus.approved, created=now - 3 * H, decided=now, reviewer=100
    )
    code, out, err = _cli(sqlite_url, "review", "list", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [old, lapsed]  # pending only, oldest first
    assert set(rows[0]) == {
        "id", "interaction_id", "assistant", "reason", "status", "note", "claimed_by",
        "reviewer_id", "correction", "created_at", "decided_at", "prompt", "answer",
    }  # fmt: skip
    assert rows[0] | {"interaction_id": 0, "created_at": ""} == {
        "id": old,
        "interaction_id": 0,
        "assistant": "chat",
        "reason": "thumbs_down",
        "status": "pending",
        "note": None,
        "claimed_by": 100,
        "reviewer_id": None,
        "correction": None,
        "created_at": "",
        "decided_at": None,
        "prompt": "what is 2+2",
        "answer": "5",
    }
    assert datetime.fromisoformat(rows[0]["created_at"]).tzinfo is not None
    assert rows[1]["claimed_by"] is None  # the claim lapsed

    code, out, _ = _cli(sqlite_url, "review", "list", "--json", "--status", "approved")
    (approved,) = json.loads(out)
    assert (approved["id"], approved["status"], approved["reviewer_id"]) == (done, "approved", 100)
    assert approved["decided_at"] is not None
    code, out, _ = _cli(sqlite_url, "review", "list", "--json", "--status", "all")
    assert [r["id"] for r in json.loads(out)] == [lapsed, old, done]  # newest first
    code, out, _ = _cli(sqlite_url, "review", "list", "--json", "--assistant", "paraphrase")
    assert [r["id"] for r in json.loads(out)] == [lapsed]
    code, out, _ = _cli(sqlite_url, "review", "list", "--json", "--limit", "1")
    assert [r["id"] for r in json.loads(out)] == [old]


def test_review_list_table(cli_db: Database, sqlite_url: str) -> None:
    _item(cli_db, prompt="a very long question " * 10, answer="an answer")
    code, out, _ = _cli(sqlite_url, "review", "list")
    assert code == 0
    assert "thumbs_down" in out and "pending" in out and "a very long question" in out
    assert "…" in out  # the prompt is shortened
    code, out, err = _cli(sqlite_url, "review", "list", "--status", "rejected")
    assert code == 0 and "no rejected review items" in err


def test_review_list_bad_status_is_one_line_and_exit_2(sqlite_url: str) -> None:
    code, out, err = _cli(sqlite_url, "review", "list", "--status", "maybe")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: unknown status 'maybe': use pending, approved, rejected, corrected, withdrawn,"
        " closed, all"
    ]


def test_review_commands_on_a_missing_or_unmigrated_database(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "loopgram.db"
    code, _, err = _cli(f"sqlite:///{missing}", "review", "list")
    assert code == 2 and err.strip().splitlines() == [
        f"error: no database at {missing}: run `loopgram db upgrade` first"
    ]
    assert not missing.exists()  # the command did not create an empty one
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    for command in ("list", "stats"):
        code, _, err = _cli(f"sqlite:///{empty}", "review", command, "--json")
        assert code == 2 and err.strip().splitlines() == [
            "error: the database has no review tables: run `loopgram db upgrade`"
        ]


def test_review_stats_json_and_table(cli_db: Database, sqlite_url: str) -> None:
    now = datetime.now(UTC)
    _item(cli_db, created=now - H)
    for first, second in PAIRS:
        item = _item(cli_db, status=ReviewStatus.approved, created=now - 2 * H, decided=now - H)
        _decide(cli_db, item, 1, first)
        _decide(cli_db, item, 2, second)
    code, out, err = _cli(sqlite_url, "review", "stats", "--json")
    assert code == 0, err
    document = json.loads(out)
    queue = document["queue"]
    assert queue["pending"] == 1 and queue["pending_by_reason"] == {"thumbs_down": 1}
    assert queue["decided_last_7_days"] == 10
    assert queue["review_seconds_median"] == pytest.approx(3600, abs=5)
    assert queue["decisions_by_moderator"]["1"] == {"approve": 5, "reject": 3, "correct": 2}
    assert document["agreement"]["2"] == {
        "moderator_id": 2,
        "kappa": pytest.approx(KAPPA),
        "shared_items": 10,
        "pairs": 10,
    }
    code, out, _ = _cli(sqlite_url, "review", "stats")
    assert code == 0
    assert "claimed now" in out and "0.51" in out


def test_list_items_rejects_an_unknown_status(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown status"):
        db.call(list_items, status="maybe")
