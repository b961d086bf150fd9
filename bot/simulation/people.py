"""How a simulated person reacts to an answer: rate it, ask for another one, comment.

Behaviour is drawn from a seeded RNG per person, so a run is reproducible for a seed. The
hidden preference decides; `noise` is the chance that a press goes the other way (people
misclick, change their mind, rate in a hurry).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from bot.simulation.preferences import Judgement


class Action(StrEnum):
    up = "up"
    down = "down"
    regenerate = "regenerate"
    ignore = "ignore"


@dataclass(frozen=True)
class Behaviour:
    noise: float = 0.1
    """Chance that a rating contradicts the person's taste."""
    rate_share: float = 0.9
    """Share of answers a person rates at all."""
    regenerate_when_disliked: float = 0.5
    regenerate_when_liked: float = 0.1
    """Chance of pressing 🔄 instead of rating; the two versions are then compared."""
    reason_share: float = 0.4
    """After 👎: chance of picking a reason button."""
    comment_share: float = 0.5
    """After a reason: chance of writing a comment instead of /skip."""

    def __post_init__(self) -> None:
        for name in (
            "noise",
            "rate_share",
            "regenerate_when_disliked",
            "regenerate_when_liked",
            "reason_share",
            "comment_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")


_COMMENTS = {
    "en": {
        "longer than the original": "Too long, keep it short.",
        "chatter": "Just the text please, no explanations.",
        "ignores the source": "This is not what I sent.",
        "not a bullet list": "Please use bullet points.",
        "too long": "Shorter, please.",
    },
    "ru": {
        "longer than the original": "Слишком длинно, короче.",
        "chatter": "Только текст, без пояснений.",
        "ignores the source": "Это не про мой текст.",
        "not a bullet list": "Лучше списком.",
        "too long": "Покороче, пожалуйста.",
    },
}


class Person:
    def __init__(self, user_id: int, lang: str, behaviour: Behaviour, seed: int) -> None:
        self.user_id = user_id
        self.lang = lang
        self.behaviour = behaviour
        self.rng = random.Random(f"{seed}:{user_id}")

    def react(self, judgement: Judgement) -> Action:
        b = self.behaviour
        regenerate = b.regenerate_when_liked if judgement.liked else b.regenerate_when_disliked
        if self.rng.random() < regenerate:
            return Action.regenerate
        if self.rng.random() >= b.rate_share:
            return Action.ignore
        return self.rate(judgement.liked)

    def rate(self, liked: bool) -> Action:
        if self.rng.random() < self.behaviour.noise:
            liked = not liked
        return Action.up if liked else Action.down

    def prefers_first(self, first: Judgement, second: Judgement) -> bool:
        """Of two versions, the better one by the hidden score (a coin on a tie), unless noise."""
        better = first.score > second.score or (
            first.score == second.score and self.rng.random() < 0.5
        )
        if self.rng.random() < self.behaviour.noise:
            better = not better
        return better

    def picks_reason(self) -> bool:
        return self.rng.random() < self.behaviour.reason_share

    def comment(self, judgement: Judgement) -> str | None:
        if self.rng.random() >= self.behaviour.comment_share:
            return None
        by_lang = _COMMENTS.get(self.lang, _COMMENTS["en"])
        return by_lang.get(judgement.why, by_lang["too long"])
