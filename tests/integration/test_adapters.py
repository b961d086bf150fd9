"""The adapter registry on both databases: names, canary, promotion, rollback, routing."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sqlmodel import Session, select

from loopgram import adapters
from loopgram.canary import Verdict
from loopgram.canary_outcomes import arm_outcomes, nth_cutoff, tally
from loopgram.db import Database
from loopgram.errors import LoopgramError
from loopgram.feedback import Feedback, apply_feedback
from loopgram.models import AdapterStatus, AuditLog, PreferencePair
from loopgram.routing import AdapterRouter
from loopgram.settings import LearningSettings
from tests.factories import add_interaction


@dataclass
class RecordingServer:
    """Stands in for a model server's LoRA endpoints: what is loaded, in call order."""

    loaded: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_load: bool = False

    def load(self, name: str, path: str) -> None:
        self.calls.append(("load", name))
        if self.fail_load:
            raise LoopgramError("server down")
        self.loaded.add(name)

    def unload(self, name: str) -> None:
        self.calls.append(("unload", name))
        self.loaded.discard(name)


def _register(db: Database, assistant: str = "chat") -> str:
    adapter = db.call(
        adapters.register,
        assistant=assistant,
        path=f"/adapters/{assistant}",
        base_model="base",
        method="dpo",
    )
    return adapter.name


def _status(db: Database, name: str) -> AdapterStatus:
    return db.call(adapters.get_by_name, name=name).status


def test_versions_are_unique_names_per_assistant(db: Database) -> None:
    assert [_register(db) for _ in range(3)] == ["chat-v1", "chat-v2", "chat-v3"]
    assert _register(db, "paraphrase") == "paraphrase-v1"


def test_canary_promote_and_rollback_chain(db: Database) -> None:
    server = RecordingServer()
    v1, v2, v3 = _register(db), _register(db), _register(db)
    db.call(adapters.deploy, name=v1, server=server, canary=False)
    assert _status(db, v1) == AdapterStatus.active
    db.call(adapters.deploy, name=v2, server=server)
    assert (_status(db, v1), _status(db, v2)) == (AdapterStatus.active, AdapterStatus.canary)
    db.call(adapters.promote, assistant="chat", server=server)
    assert (_status(db, v1), _status(db, v2)) == (AdapterStatus.retired, AdapterStatus.active)
    assert server.loaded == {v2}  # the retired one leaves the server
    # A new canary replaced before it is judged is rejected and unloaded.
    db.call(adapters.deploy, name=v3, server=server)
    db.call(adapters.rollback, assistant="chat", server=server)
    assert _status(db, v3) == AdapterStatus.rejected and v3 not in server.loaded
    # Rolling back the active adapter restores the previous one (loaded again first).
    now = db.call(adapters.rollback, assistant="chat", server=server)
    assert now is not None and now.name == v1
    assert (_status(db, v1), _status(db, v2)) == (AdapterStatus.active, AdapterStatus.rejected)
    assert server.calls[-2:] == [("load", v1), ("unload", v2)]
    assert server.loaded == {v1}
    audit = db.call(lambda *, session: session.exec(select(AuditLog)).all())
    assert any(entry.action == "adapter.rejected" for entry in audit)


@dataclass
class CappedServer(RecordingServer):
    """Refuses a LoRA beyond `max_loras` like the built-in server (`--max-loras`)."""

    max_loras: int = 2

    def load(self, name: str, path: str) -> None:
        if name not in self.loaded and len(self.loaded) >= self.max_loras:
            raise LoopgramError(f"{self.max_loras} adapters are loaded (max_loras)")
        super().load(name, path)


def test_promotions_free_the_server_for_the_next_canary(db: Database) -> None:
    server = CappedServer()
    names = [_register(db) for _ in range(5)]
    db.call(adapters.deploy, name=names[0], server=server, canary=False)
    for name in names[1:]:
        db.call(adapters.deploy, name=name, server=server)  # the active one and this canary
        db.call(adapters.promote, assistant="chat", server=server)
        assert server.loaded == {name}
    # Activating directly (no canary) retires and unloads the active one as well.
    direct = _register(db)
    db.call(adapters.deploy, name=direct, server=server, canary=False)
    assert server.loaded == {direct} and _status(db, names[-1]) == AdapterStatus.retired


def test_a_failed_load_changes_no_routing(db: Database) -> None:
    name = _register(db)
    with pytest.raises(LoopgramError):
        db.call(adapters.deploy, name=name, server=RecordingServer(fail_load=True))
    assert _status(db, name) == AdapterStatus.candidate


@dataclass
class RegistryCheckingServer(RecordingServer):
    """Records, at each unload, the status the committed registry gives that adapter."""

    db: Database | None = None
    seen_at_unload: dict[str, AdapterStatus] = field(default_factory=dict)

    def unload(self, name: str) -> None:
        assert self.db is not None
        self.seen_at_unload[name] = _status(self.db, name)  # read in a session of its own
        super().unload(name)


def test_an_adapter_leaves_the_server_only_once_the_registry_change_is_committed(
    db: Database,
) -> None:
    server = RegistryCheckingServer(db=db)
    v1, v2, v3 = _register(db), _register(db), _register(db)
    db.call(adapters.deploy, name=v1, server=server, canary=False)
    db.call(adapters.deploy, name=v2, server=server)
    db.call(adapters.promote, assistant="chat", server=server)
    db.call(adapters.deploy, name=v3, server=server)
    db.call(adapters.rollback, assistant="chat", server=server)
    assert server.seen_at_unload == {v1: AdapterStatus.retired, v3: AdapterStatus.rejected}


def test_a_registry_change_that_fails_to_commit_unloads_nothing(db: Database) -> None:
    server = RecordingServer()
    v1, v2 = _register(db), _register(db)
    db.call(adapters.deploy, name=v1, server=server, canary=False)
    db.call(adapters.deploy, name=v2, server=server)

    def promote_then_fail(*, session: Session) -> None:
        adapters.promote(session=session, assistant="chat", server=server)
        raise LoopgramError("the database went away before COMMIT")

    with pytest.raises(LoopgramError):
        db.call(promote_then_fail)
    # Nothing changed: v1 still serves and stays loaded; the next unit of work of the
    # same kind does not inherit the dropped unload either.
    assert (_status(db, v1), _status(db, v2)) == (AdapterStatus.active, AdapterStatus.canary)
    assert server.loaded == {v1, v2} and ("unload", v1) not in server.calls
    db.call(adapters.rollback, assistant="chat", server=server)
    assert server.loaded == {v1}


@dataclass
class FailingUnloadServer(RecordingServer):
    def unload(self, name: str) -> None:
        raise LoopgramError("model server unreachable")


def test_an_unload_that_fails_after_the_commit_keeps_the_change(db: Database) -> None:
    server = FailingUnloadServer()
    v1, v2 = _register(db), _register(db)
    db.call(adapters.deploy, name=v1, server=server, canary=False)
    db.call(adapters.deploy, name=v2, server=server)
    db.call(adapters.promote, assistant="chat", server=server)  # no error: it is committed
    assert (_status(db, v1), _status(db, v2)) == (AdapterStatus.retired, AdapterStatus.active)


def test_live_ratings_promote_a_good_canary(db: Database) -> None:
    server = RecordingServer()
    name = _register(db)
    db.call(adapters.deploy, name=name, server=server)
    settings = LearningSettings(canary_min_ratings=40, canary_max_ratings=400, canary_margin=0.05)
    # Base model: 50% 👍; canary: 85% 👍.
    for user in range(80):
        iid = add_interaction(db, user_id=user, prompt="q", adapter=None)
        db.call(
            apply_feedback,
            feedback=Feedback(interaction_id=iid, user_id=user, value=1 if user % 2 else -1),
        )
    verdict = db.call(adapters.evaluate_canary, assistant="chat", settings=settings, server=server)
    assert verdict is not None and verdict.decision == "wait"
    for user in range(100, 160):
        iid = add_interaction(db, user_id=user, prompt="q", adapter=name)
        db.call(
            apply_feedback,
            feedback=Feedback(interaction_id=iid, user_id=user, value=1 if user % 7 else -1),
        )
    verdict = db.call(adapters.evaluate_canary, assistant="chat", settings=settings, server=server)
    assert verdict is not None and verdict.decision == "promote"
    assert _status(db, name) == AdapterStatus.active
    assert db.call(adapters.get_by_name, name=name).metrics["canary"]["decision"] == "promote"


def _rate(db: Database, adapter: str | None, values: list[int], first_user: int) -> None:
    for user, value in enumerate(values, start=first_user):
        iid = add_interaction(db, user_id=user, prompt="q", adapter=adapter)
        db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=user, value=value))


def test_a_canary_is_judged_on_its_first_ratings_at_each_look(db: Database) -> None:
    """Checked between looks, the verdict stays the last look's: ratings after it, of the
    canary or of the active model, wait for the next look (20, 40, 80 here)."""
    server = RecordingServer()
    name = _register(db)
    db.call(adapters.deploy, name=name, server=server)
    settings = LearningSettings(canary_min_ratings=20, canary_max_ratings=80, canary_margin=0.05)

    def check() -> Verdict:
        verdict = db.call(
            adapters.evaluate_canary, assistant="chat", settings=settings, server=server
        )
        assert verdict is not None
        return verdict

    _rate(db, None, [1, -1] * 20, first_user=1000)  # the base model: 50% 👍
    _rate(db, name, [1, -1] * 10, first_user=2000)  # the canary's first 20: 50% 👍
    first = check()
    assert (first.decision, first.look) == ("wait", 20)
    assert first.reason == "undecided at 20 ratings; judged again at 40"
    # 19 👎 more for the canary and 40 👍 more for the base model: a judge of all ratings so
    # far would roll the canary back; the look of 20 ratings is unchanged.
    _rate(db, name, [-1] * 19, first_user=3000)
    _rate(db, None, [1] * 40, first_user=4000)
    again = check()
    assert (again.decision, again.look, again.difference) == ("wait", 20, first.difference)
    assert _status(db, name) == AdapterStatus.canary
    # The 40th rating reaches the next look, judged on everything up to it.
    _rate(db, name, [-1], first_user=5000)
    judged = check()
    assert (judged.decision, judged.look) == ("rollback", 40)
    assert judged.difference == pytest.approx(10 / 40 - 60 / 80)
    assert _status(db, name) == AdapterStatus.rejected
    stored = db.call(adapters.get_by_name, name=name).metrics["canary"]
    assert (stored["look"], stored["decision"]) == (40, "rollback")
    assert stored["confidence"] == pytest.approx(1 - 0.05 * 40 / 140, abs=1e-5)


def test_a_canary_rated_by_two_heavy_users_is_not_promoted_on_them(db: Database) -> None:
    """60 ratings at 90% 👍 from two people say little about everyone: the interval counts
    them by person (design effect 6.7, ~9 effective ratings), so the canary waits for more,
    where 60 independent ratings would have promoted it."""
    server = RecordingServer()
    name = _register(db)
    db.call(adapters.deploy, name=name, server=server)
    settings = LearningSettings(canary_min_ratings=60, canary_max_ratings=400, canary_margin=0.05)
    _rate(db, None, [1, -1] * 40, first_user=1000)  # 80 people, one rating each: 50% 👍
    for user, values in ((2000, [1] * 30), (2001, [1] * 24 + [-1] * 6)):
        for value in values:
            iid = add_interaction(db, user_id=user, prompt="q", adapter=name)
            db.call(
                apply_feedback, feedback=Feedback(interaction_id=iid, user_id=user, value=value)
            )
    tally = db.call(adapters.live_tally, assistant="chat", adapter=name, since=None)
    assert tally.by_person == ((24, 30), (30, 30))
    verdict = db.call(adapters.evaluate_canary, assistant="chat", settings=settings, server=server)
    assert verdict is not None and (verdict.decision, verdict.look) == ("wait", 60)
    assert verdict.difference == pytest.approx(0.4) and verdict.low < -0.05
    stored = db.call(adapters.get_by_name, name=name).metrics["canary"]
    assert stored["people"] == 2 and stored["design_effect"] == pytest.approx(6.667, abs=1e-3)
    assert stored["active_design_effect"] == pytest.approx(80 / 79, abs=1e-3)
    assert _status(db, name) == AdapterStatus.canary


def test_a_regenerated_first_answer_counts_as_a_thumbs_down_and_its_choice_only_trains(
    db: Database,
) -> None:
    """🔄 on an answer is a 👎 for it; the asker's pick between the versions is a preference
    pair, not two more ratings of the arm (which would pull its rate toward one half)."""
    name = _register(db)
    _rate(db, name, [1, 1, 1, 1, -1], first_user=100)  # 4 of 5 liked at once
    picks = {200: "new", 201: "new", 202: "new", 203: "first", 204: None}
    for user, pick in picks.items():
        first = add_interaction(db, user_id=user, prompt="q", answer="long", adapter=name)
        again = add_interaction(
            db, user_id=user, prompt="q", answer="short", adapter=name, parent=first
        )
        if pick is not None:
            chosen, rejected = (again, first) if pick == "new" else (first, again)
            for iid, value in ((chosen, 1), (rejected, -1)):
                db.call(
                    apply_feedback, feedback=Feedback(interaction_id=iid, user_id=user, value=value)
                )
    # Someone else's rating of an answer is not its asker's outcome.
    other = add_interaction(db, user_id=300, prompt="q", adapter=name)
    db.call(apply_feedback, feedback=Feedback(interaction_id=other, user_id=301, value=1))

    tally = db.call(adapters.live_tally, assistant="chat", adapter=name, since=None)
    assert (tally.up, tally.total, len(tally.by_person)) == (4, 10, 10)
    pairs = db.call(lambda *, session: session.exec(select(PreferencePair)).all())
    assert len(pairs) == 4 and {p.chosen for p in pairs} == {"short", "long"}


def test_an_outcome_is_valued_as_it_stood_at_the_look(db: Database) -> None:
    """A 👍 followed by a 🔄 is a 👍 at a look taken between them and a 👎 after; the
    outcomes are ordered by their first event."""
    name = _register(db)
    liked = add_interaction(db, user_id=1, prompt="q", adapter=name)
    db.call(apply_feedback, feedback=Feedback(interaction_id=liked, user_id=1, value=1))
    regenerated = add_interaction(db, user_id=2, prompt="q", adapter=name)
    add_interaction(db, user_id=2, prompt="q", adapter=name, parent=regenerated)
    add_interaction(db, user_id=1, prompt="q", adapter=name, parent=liked)  # 🔄 after the 👍

    outcomes = db.call(arm_outcomes, assistant="chat", adapter=name, since=None)
    assert [o.answer_id for o in outcomes] == [liked, regenerated]
    at_first = nth_cutoff(outcomes, 1)
    assert at_first is not None and nth_cutoff(outcomes, 3) is None
    assert (tally(outcomes, at_first).up, tally(outcomes, at_first).total) == (1, 1)
    assert (tally(outcomes).up, tally(outcomes).total) == (0, 2)


def test_router_sends_the_canary_share(db: Database) -> None:
    server = RecordingServer()
    v1, v2 = _register(db), _register(db)
    db.call(adapters.deploy, name=v1, server=server, canary=False)
    db.call(adapters.deploy, name=v2, server=server)
    router = AdapterRouter(base_model="base", canary_share=0.2, cache_seconds=60)

    def routes(*, session: Session) -> list[str | None]:
        return [
            router.route(session=session, assistant="chat", user_id=u).adapter for u in range(2000)
        ]

    chosen = db.call(routes)
    share = chosen.count(v2) / len(chosen)
    assert 0.17 < share < 0.23 and set(chosen) == {v1, v2}
    other = db.call(lambda *, session: router.route(session=session, assistant="label", user_id=1))
    assert (other.model, other.adapter) == ("base", None)
