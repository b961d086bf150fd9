"""The /forget confirmation and /export_me's file, on SQLite (the embedded default)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from bot.callbacks import ForgetCb
from loopgram import privacy
from loopgram.db import Database
from loopgram.models import Interaction, Rating, User
from tests.privacy_data import ANNA, BORIS, seed

KEY = privacy.confirmation_key("123456:bot-token-of-this-deployment")


def test_a_confirmation_is_good_for_its_user_and_time_only() -> None:
    sig = privacy.confirmation_signature(KEY, ANNA, 1_700_000_000)
    assert privacy.confirmation_genuine(KEY, ANNA, 1_700_000_000, sig)
    assert not privacy.confirmation_genuine(KEY, BORIS, 1_700_000_000, sig)
    assert not privacy.confirmation_genuine(KEY, ANNA, 1_700_000_001, sig)
    assert not privacy.confirmation_genuine(KEY, ANNA, 1_700_000_000, sig[:-1] + "0")
    other_deployment = privacy.confirmation_key("654321:another-token")
    assert not privacy.confirmation_genuine(other_deployment, ANNA, 1_700_000_000, sig)
    assert privacy.confirmation_fresh(1000, 1000 + privacy.CONFIRM_TTL)
    assert not privacy.confirmation_fresh(1000, 1001 + privacy.CONFIRM_TTL)
    assert not privacy.confirmation_fresh(1000, 999)  # issued in the future: forged


def test_the_confirm_button_fits_telegrams_64_bytes() -> None:
    uid, ts = 9_999_999_999_999, 4_102_444_800
    data = ForgetCb(
        yes=True, uid=uid, ts=ts, sig=privacy.confirmation_signature(KEY, uid, ts)
    ).pack()
    assert len(data.encode()) <= 64
    assert ForgetCb.unpack(data).uid == uid


def test_forget_on_sqlite_leaves_the_other_user(sqlite_db: Database) -> None:
    sqlite_db.call(seed)
    sqlite_db.call(privacy.forget_user, user_id=ANNA)

    def left(*, session: Session) -> tuple[set[int], set[int], set[int]]:
        return (
            {i.user_id for i in session.exec(select(Interaction))},
            {r.user_id for r in session.exec(select(Rating))},
            {u.id for u in session.exec(select(User))},
        )

    interactions, raters, users = sqlite_db.call(left)
    assert ANNA not in interactions | raters | users
    assert BORIS in interactions and BORIS in raters and BORIS in users


def _many(*, session: Session, count: int) -> None:
    session.add(User(id=ANNA, first_name="Anna"))
    filler = "слово word " * 200  # ~2.4 KB a row, half of it Cyrillic
    for n in range(count):
        session.add(
            Interaction(
                chat_id=ANNA, user_id=ANNA, assistant="chat", prompt=f"{n} {filler}", answer=filler
            )
        )


def test_a_large_export_is_written_whole_and_packed_when_over_the_limit(
    sqlite_db: Database, tmp_path: Path
) -> None:
    sqlite_db.call(_many, count=3000)
    path = tmp_path / "me.json"
    result = sqlite_db.call(privacy.export_user_to_file, user_id=ANNA, path=path)
    assert result.interactions == 3000 and result.size > 10 * 1024 * 1024
    data = json.loads(path.read_text(encoding="utf-8"))
    assert [int(i["prompt"].split()[0]) for i in data["interactions"]] == list(range(3000))

    assert privacy.fit_for_telegram(path, limit=result.size) == path
    packed = privacy.fit_for_telegram(path, limit=result.size // 4)
    assert packed is not None and packed.name == "me.json.gz"
    assert packed.stat().st_size <= result.size // 4
    assert json.loads(gzip.decompress(packed.read_bytes()))["interactions"][0]["answer"]
    assert privacy.fit_for_telegram(path, limit=1000) is None


@pytest.mark.parametrize("count", [0, 1])
def test_export_is_valid_json_at_the_edges(sqlite_db: Database, tmp_path: Path, count: int) -> None:
    sqlite_db.call(_many, count=count)
    path = tmp_path / "me.json"
    sqlite_db.call(privacy.export_user_to_file, user_id=ANNA, path=path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert len(data["interactions"]) == count and data["ratings"] == data["comments"] == []
