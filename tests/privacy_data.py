"""Two people's data, as the bot and the review queue leave it, for the /forget and
/export_me tests: Anna (who forgets) and Boris (whose data must survive), in private chats and
in one shared group, with ratings, a review item, preference pairs and a label example."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from loopgram.models import (
    Chat,
    Interaction,
    LabeledExample,
    PairSource,
    PreferencePair,
    Rating,
    ReviewDecision,
    ReviewItem,
    Role,
    User,
)

ANNA, BORIS, MOD = 7, 8, 9
GROUP = -100500
ANNA_PHONE = "+7 912 345-67-89"
ANNA_EMAIL = "anna.secret@example.com"
ANNA_PROMPT = f"Call me at {ANNA_PHONE} or write to {ANNA_EMAIL} about my loan"
ANNA_GROUP_PROMPT = "Anna asks the group: when is the meeting?"
ANNA_GROUP_ANSWER = "The meeting is on Friday at 10."
BORIS_PROMPT = "Boris wants a recipe for borscht"
CARD = (-500, 42)  # where the review card of Anna's answer was posted


@dataclass(frozen=True)
class Ids:
    anna_first: int
    anna_regenerated: int
    anna_group: int
    boris_private: int
    boris_group: int
    unconsumed_pair: int
    consumed_pair: int
    boris_pair: int
    anna_item: int
    boris_item: int


def _interaction(session: Session, **fields: object) -> int:
    row = Interaction(**fields)  # type: ignore[arg-type]
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def seed(*, session: Session, anna_role: Role = Role.user, anna_banned: bool = False) -> Ids:
    session.add(
        User(id=ANNA, first_name="Anna", username="anna", role=anna_role, banned=anna_banned)
    )
    session.add(User(id=BORIS, first_name="Boris", username="boris"))
    session.add(User(id=MOD, first_name="Mia", role=Role.moderator))
    session.add(Chat(id=ANNA, type="private", assistant="summarize"))
    session.add(Chat(id=BORIS, type="private"))
    session.add(Chat(id=GROUP, type="supergroup", title="Team"))
    session.flush()
    a1 = _interaction(
        session, chat_id=ANNA, user_id=ANNA, assistant="chat", prompt=ANNA_PROMPT, answer="A1"
    )
    a2 = _interaction(
        session,
        chat_id=ANNA,
        user_id=ANNA,
        assistant="chat",
        prompt=ANNA_PROMPT,
        answer="A2 better",
        parent_interaction_id=a1,
    )
    a3 = _interaction(
        session,
        chat_id=GROUP,
        user_id=ANNA,
        assistant="chat",
        prompt=ANNA_GROUP_PROMPT,
        answer=ANNA_GROUP_ANSWER,
    )
    b1 = _interaction(
        session, chat_id=BORIS, user_id=BORIS, assistant="chat", prompt=BORIS_PROMPT, answer="B1"
    )
    b2 = _interaction(
        session,
        chat_id=GROUP,
        user_id=BORIS,
        assistant="chat",
        prompt="And what should I bring?",
        answer="Bring a notebook.",
        prompt_messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": ANNA_GROUP_PROMPT},
            {"role": "assistant", "content": ANNA_GROUP_ANSWER},
            {"role": "user", "content": "And what should I bring?"},
        ],
    )
    session.add(Rating(interaction_id=a1, user_id=ANNA, value=-1, comment=f"mail {ANNA_EMAIL}"))
    session.add(Rating(interaction_id=a2, user_id=ANNA, value=1))
    session.add(Rating(interaction_id=b1, user_id=BORIS, value=1, comment="tasty, thanks"))
    session.add(Rating(interaction_id=b1, user_id=MOD, value=1, source="review"))
    anna_item = ReviewItem(
        interaction_id=a1, reason="thumbs_down", card_chat_id=CARD[0], card_message_id=CARD[1]
    )
    boris_item = ReviewItem(interaction_id=b1, reason="report")
    session.add(anna_item)
    session.add(boris_item)
    session.flush()
    assert anna_item.id is not None and boris_item.id is not None
    session.add(ReviewDecision(review_item_id=anna_item.id, moderator_id=MOD, decision="correct"))
    pairs = [
        PreferencePair(
            pair_key=f"regenerate:{a1}:{a2}",
            assistant="chat",
            prompt=ANNA_PROMPT,
            chosen="A2 better",
            rejected="A1",
            chosen_interaction_id=a2,
            rejected_interaction_id=a1,
            source=PairSource.regenerate,
            user_id=ANNA,
        ),
        PreferencePair(
            pair_key=f"correction:{anna_item.id}",
            assistant="chat",
            prompt=ANNA_PROMPT,
            chosen=f"Sure, we will call {ANNA_PHONE}.",
            rejected="A1",
            rejected_interaction_id=a1,
            source=PairSource.correction,
            user_id=MOD,
            consumed_by_run=1,
        ),
        PreferencePair(
            pair_key=f"correction:{boris_item.id}",
            assistant="chat",
            prompt=BORIS_PROMPT,
            chosen="Beetroot, cabbage, potatoes.",
            rejected="B1",
            rejected_interaction_id=b1,
            source=PairSource.correction,
            user_id=MOD,
        ),
    ]
    for pair in pairs:
        session.add(pair)
    session.add(
        LabeledExample(
            text=ANNA_PROMPT, text_hash="h1", label="request", source="user", interaction_id=a1
        )
    )
    session.flush()
    pair_ids = [p.id for p in pairs]
    assert all(i is not None for i in pair_ids)
    return Ids(
        anna_first=a1,
        anna_regenerated=a2,
        anna_group=a3,
        boris_private=b1,
        boris_group=b2,
        unconsumed_pair=pair_ids[0] or 0,
        consumed_pair=pair_ids[1] or 0,
        boris_pair=pair_ids[2] or 0,
        anna_item=anna_item.id,
        boris_item=boris_item.id,
    )
