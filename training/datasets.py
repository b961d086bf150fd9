"""Training data from the reward buffer: DPO pairs and KTO examples in TRL's formats.

Data building is kept apart from training and imports neither torch nor trl, so the scheduler
and the CLI can size, split and export a dataset on a machine without them.

Every text is passed through `loopgram.pii.scrub` while an example is built: nothing personal
reaches a returned example, a JSONL file or a model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from loopgram.models import (
    Interaction,
    InteractionStatus,
    PairSource,
    PreferencePair,
    Rating,
    RunStatus,
    TrainingRun,
)
from loopgram.pii import scrub

Message = dict[str, str]

# The same system prompt and history turns recur in many prompts: scrub each text once.
_scrub = functools.lru_cache(maxsize=4096)(scrub)

RATING_PAIR_WEIGHT = 0.5
NEAR_IDENTICAL_JACCARD = 0.9
# A popular question ("привет") can have hundreds of rated answers: each 👎 answer is paired
# with at most this many 👍 answers, the most similar prompts first.
RATING_PAIRS_PER_ANSWER = 3
# Which of two identical pairs is kept: the stronger evidence (a moderator's correction).
_SOURCE_RANK = {PairSource.correction.value: 2, PairSource.regenerate.value: 1}
_ID_CHUNK = 500  # below SQLite's bound-parameter limit


@dataclass(frozen=True)
class PreferenceExample:
    """One DPO example: `prompt` as sent to the model, one assistant message per side."""

    prompt: list[Message]
    chosen: Message
    rejected: Message
    weight: float
    source: str
    pair_ids: tuple[int, ...] = ()  # preference_pair rows to mark consumed after training
    interaction_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class KTOExample:
    """One KTO example: a single completion labelled desirable (True) or not."""

    prompt: list[Message]
    completion: Message
    label: bool
    source: str
    pair_ids: tuple[int, ...] = ()
    interaction_ids: tuple[int, ...] = ()


Example = TypeVar("Example", PreferenceExample, KTOExample)


# --- texts ---------------------------------------------------------------------------------


def _messages(raw: Iterable[dict[str, Any]]) -> list[Message]:
    # Only role/content: TRL's conversational format, and no stray field carries data along.
    return [
        {"role": str(m.get("role") or "user"), "content": _scrub(str(m.get("content") or ""))}
        for m in raw
    ]


def _prompt_of(interaction: Interaction | None, fallback: str) -> list[Message]:
    if interaction is not None and interaction.prompt_messages:
        return _messages(interaction.prompt_messages)
    text = interaction.prompt if interaction is not None else fallback
    return [{"role": "user", "content": _scrub(text)}]


def _answer(text: str) -> Message:
    return {"role": "assistant", "content": _scrub(text)}


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold().replace("ё", "е"))


def _question(prompt: Sequence[Message]) -> str:
    """The last user message, normalised: what "the same prompt" means for splitting."""
    for message in reversed(prompt):
        if message["role"] == "user":
            text = message["content"]
            return " ".join(_tokens(text)) or text.strip().casefold()
    return _canonical(prompt)


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _utc(moment: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- reading the buffer --------------------------------------------------------------------


def last_trained_at(*, session: Session, assistant: str) -> datetime | None:
    """When the latest successful policy run of `assistant` took its data (its start), or None.

    Reward-model runs do not count: they leave the policy's buffer new."""
    run = session.exec(
        select(TrainingRun)
        .where(TrainingRun.assistant == assistant, TrainingRun.status == RunStatus.succeeded)
        .where(TrainingRun.method != "reward")
        .order_by(
            func.coalesce(col(TrainingRun.started_at), col(TrainingRun.created_at)).desc(),
            col(TrainingRun.id).desc(),
        )
        .limit(1)
    ).first()
    if run is None:
        return None
    # The start, not the end: feedback that arrives while a run trains is new to the next one.
    return _utc(run.started_at or run.created_at)


def _interactions(session: Session, ids: Iterable[int | None]) -> dict[int, Interaction]:
    wanted = sorted({i for i in ids if i is not None})
    found: dict[int, Interaction] = {}
    for start in range(0, len(wanted), _ID_CHUNK):
        chunk = wanted[start : start + _ID_CHUNK]
        for row in session.exec(select(Interaction).where(col(Interaction.id).in_(chunk))):
            if row.id is not None:
                found[row.id] = row
    return found


def _pairs(session: Session, assistant: str, *, reward_pairs: bool = False) -> list[PreferencePair]:
    """The stored pairs of `assistant`; best-of-n pairs (labelled by a reward model, not a
    person) only with `reward_pairs`."""
    query = select(PreferencePair).where(PreferencePair.assistant == assistant)
    if not reward_pairs:
        query = query.where(col(PreferencePair.source) != PairSource.best_of_n)
    return list(session.exec(query.order_by(col(PreferencePair.id))).all())


def _latest_ratings(session: Session, assistant: str) -> list[tuple[Interaction, Rating]]:
    """The latest rating per (interaction, user) on answered interactions of `assistant`."""
    query = (
        select(Interaction, Rating)
        .join(Rating, col(Rating.interaction_id) == col(Interaction.id))
        .where(Interaction.assistant == assistant, Interaction.status == InteractionStatus.ok)
        .order_by(col(Rating.id))
    )
    latest: dict[tuple[int, int], tuple[Interaction, Rating]] = {}
    for interaction, rating in session.exec(query):
        if not interaction.answer.strip():
            continue
        key = (rating.interaction_id, rating.user_id)
        kept = latest.get(key)
        if kept is None or (_utc(rating.updated_at), rating.id or 0) >= (
            _utc(kept[1].updated_at),
            kept[1].id or 0,
        ):
            latest[key] = (interaction, rating)
    return list(latest.values())


# --- preference pairs ----------------------------------------------------------------------


def build_preference_dataset(
    *,
    session: Session,
    assistant: str,
    include_consumed: bool = False,
    reward_pairs: bool = False,
) -> list[PreferenceExample]:
    """DPO examples: the stored pairs of `assistant`, plus pairs derived from ratings.

    Without `include_consumed`, only what no run has used: unconsumed pairs, and rating pairs
    with a rating given or changed since the last successful run. Best-of-n pairs (the reward
    model's favourite candidate over its least favourite, with the weight they were stored
    with) only with `reward_pairs` (TrainConfig.reward_pairs); never for a reward model, which
    would learn its own labels back.
    """
    pairs = _pairs(session, assistant, reward_pairs=reward_pairs)
    interactions = _interactions(
        session, [i for p in pairs for i in (p.chosen_interaction_id, p.rejected_interaction_id)]
    )
    examples: list[PreferenceExample] = []
    for pair in pairs:
        if pair.consumed_by_run is not None and not include_consumed:
            continue
        context = interactions.get(pair.chosen_interaction_id or pair.rejected_interaction_id or 0)
        examples.append(
            PreferenceExample(
                prompt=_prompt_of(context, pair.prompt),
                chosen=_answer(pair.chosen),
                rejected=_answer(pair.rejected),
                weight=pair.weight,
                source=str(pair.source),
                pair_ids=(pair.id,) if pair.id is not None else (),
                interaction_ids=_ids(pair.chosen_interaction_id, pair.rejected_interaction_id),
            )
        )
    # Two answers already compared by a stored pair (consumed or not) are not paired again.
    paired = {
        frozenset((p.chosen_interaction_id, p.rejected_interaction_id))
        for p in pairs
        if p.chosen_interaction_id is not None and p.rejected_interaction_id is not None
    }
    since = None if include_consumed else last_trained_at(session=session, assistant=assistant)
    examples.extend(_rating_pairs(session, assistant, paired=paired, since=since))
    return _dedup_pairs(examples)


def _ids(*ids: int | None) -> tuple[int, ...]:
    return tuple(sorted({i for i in ids if i is not None}))


@dataclass(frozen=True)
class _Rated:
    interaction_id: int
    prompt: list[Message]
    answer: Message
    norm: str
    tokens: frozenset[str]
    updated_at: datetime


def _rated(interaction: Interaction, rating: Rating) -> _Rated:
    prompt = _prompt_of(interaction, interaction.prompt)
    # Compared after scrubbing: two questions differing only in a phone number are the same.
    words = _tokens(_scrub(interaction.prompt))
    return _Rated(
        interaction_id=interaction.id or 0,
        prompt=prompt,
        answer=_answer(interaction.answer),
        norm=" ".join(words) or interaction.prompt.strip().casefold(),
        tokens=frozenset(words),
        updated_at=_utc(rating.updated_at),
    )


def _rating_pairs(
    session: Session,
    assistant: str,
    *,
    paired: set[frozenset[int]],
    since: datetime | None,
) -> list[PreferenceExample]:
    """👍 and 👎 answers to near-identical prompts of one assistant, as weaker pairs."""
    good: list[_Rated] = []
    bad: list[_Rated] = []
    for interaction, rating in _latest_ratings(session, assistant):
        if rating.user_id != interaction.user_id:
            continue  # the asker's verdict only: one label per answer
        (good if rating.value > 0 else bad).append(_rated(interaction, rating))
    if not good or not bad:
        return []
    # Sorted by content, not id: the same buffer gives the same pairs in any insertion order.
    good.sort(key=lambda r: (r.norm, r.answer["content"], _canonical(r.prompt)))
    bad.sort(key=lambda r: (r.norm, r.answer["content"], _canonical(r.prompt)))
    examples: list[PreferenceExample] = []
    for rejected, matches in zip(bad, _near_identical(bad, good), strict=True):
        candidates = [
            (similarity, good[j])
            for similarity, j in matches
            if frozenset((good[j].interaction_id, rejected.interaction_id)) not in paired
            and (since is None or max(good[j].updated_at, rejected.updated_at) > since)
        ]
        candidates.sort(key=lambda c: (-c[0], c[1].answer["content"], _canonical(c[1].prompt)))
        for _, chosen in candidates[:RATING_PAIRS_PER_ANSWER]:
            examples.append(
                PreferenceExample(
                    prompt=chosen.prompt,  # the context the better answer was given in
                    chosen=chosen.answer,
                    rejected=rejected.answer,
                    weight=RATING_PAIR_WEIGHT,
                    source=PairSource.rating.value,
                    interaction_ids=_ids(chosen.interaction_id, rejected.interaction_id),
                )
            )
    return examples


def _near_identical(queries: list[_Rated], corpus: list[_Rated]) -> list[list[tuple[float, int]]]:
    """For each query, `(similarity, index)` of corpus items with a near-identical prompt.

    Equal normalised text, or token-set Jaccard >= NEAR_IDENTICAL_JACCARD. Candidates come from
    prefix filtering (two sets that similar share a token among their rarest few), so this
    stays near-linear on a large buffer instead of comparing every 👍 with every 👎.
    """
    frequency = Counter(t for item in (*queries, *corpus) for t in item.tokens)

    def prefix(tokens: frozenset[str]) -> list[str]:
        ordered = sorted(tokens, key=lambda t: (frequency[t], t))
        overlap = math.ceil(NEAR_IDENTICAL_JACCARD * len(ordered) - 1e-9)
        return ordered[: len(ordered) - overlap + 1]

    exact: dict[str, list[int]] = defaultdict(list)
    index: dict[str, list[int]] = defaultdict(list)
    for j, item in enumerate(corpus):
        exact[item.norm].append(j)
        for token in prefix(item.tokens):
            index[token].append(j)
    result: list[list[tuple[float, int]]] = []
    for query in queries:
        found = dict.fromkeys(exact.get(query.norm, ()), 1.0)
        if query.tokens:
            for j in {j for t in prefix(query.tokens) for j in index.get(t, ())} - found.keys():
                other = corpus[j].tokens
                similarity = len(query.tokens & other) / len(query.tokens | other)
                if similarity >= NEAR_IDENTICAL_JACCARD:
                    found[j] = similarity
        result.append(sorted((s, j) for j, s in found.items()))
    return result


def _dedup_pairs(examples: Iterable[PreferenceExample]) -> list[PreferenceExample]:
    """Drop empty or tied pairs; merge duplicates, keeping the strongest and every pair id."""
    kept: dict[str, PreferenceExample] = {}
    for example in examples:
        chosen, rejected = example.chosen["content"].strip(), example.rejected["content"].strip()
        if not chosen or not rejected or chosen == rejected:
            continue
        key = _canonical([example.prompt, chosen, rejected])
        other = kept.get(key)
        if other is None:
            kept[key] = example
            continue
        best = max(other, example, key=lambda e: (e.weight, _SOURCE_RANK.get(e.source, 0)))
        kept[key] = replace(
            best,
            pair_ids=tuple(sorted({*other.pair_ids, *example.pair_ids})),
            interaction_ids=tuple(sorted({*other.interaction_ids, *example.interaction_ids})),
        )
    return list(kept.values())


# --- KTO -----------------------------------------------------------------------------------


def build_kto_dataset(
    *, session: Session, assistant: str, reward_pairs: bool = False
) -> list[KTOExample]:
    """KTO examples: every rated answer of `assistant`, plus the sides of stored pairs whose
    answers carry no rating of their own (the other 🔄 version, a moderator's correction;
    best-of-n candidates only with `reward_pairs`).

    The whole history, consumed pairs included, like the ratings it starts from.
    """
    examples: list[KTOExample] = []
    covered: set[int] = set()
    for interaction, rating in _latest_ratings(session, assistant):
        iid = interaction.id or 0
        covered.add(iid)
        examples.append(
            KTOExample(
                prompt=_prompt_of(interaction, interaction.prompt),
                completion=_answer(interaction.answer),
                label=rating.value > 0,
                source=PairSource.rating.value,
                interaction_ids=(iid,),
            )
        )

    pairs = _pairs(session, assistant, reward_pairs=reward_pairs)
    interactions = _interactions(
        session, [i for p in pairs for i in (p.chosen_interaction_id, p.rejected_interaction_id)]
    )
    sides: dict[str, list[KTOExample]] = defaultdict(list)
    for pair in pairs:
        context = interactions.get(pair.chosen_interaction_id or pair.rejected_interaction_id or 0)
        prompt = _prompt_of(context, pair.prompt)
        for text, side_id, label in (
            (pair.chosen, pair.chosen_interaction_id, True),
            (pair.rejected, pair.rejected_interaction_id, False),
        ):
            if side_id is not None and (
                side_id in covered
                or side_id not in interactions
                or interactions[side_id].status != InteractionStatus.ok
            ):
                continue
            completion = _answer(text)
            side = f"i:{side_id}" if side_id is not None else _canonical([prompt, completion])
            sides[side].append(
                KTOExample(
                    prompt=prompt,
                    completion=completion,
                    label=label,
                    source=str(pair.source),
                    pair_ids=(pair.id,) if pair.id is not None else (),
                    interaction_ids=_ids(side_id),
                )
            )
    for found in sides.values():
        # Better than one answer and worse than another: no label to learn from.
        if len({e.label for e in found}) == 1:
            examples.extend(found)
    return _dedup_kto(examples)


def _dedup_kto(examples: Iterable[KTOExample]) -> list[KTOExample]:
    kept: dict[str, KTOExample] = {}
    for example in examples:
        if not example.completion["content"].strip():
            continue
        key = _canonical([example.prompt, example.completion["content"].strip(), example.label])
        other = kept.get(key)
        if other is None:
            kept[key] = example
            continue
        kept[key] = replace(
            other,
            pair_ids=tuple(sorted({*other.pair_ids, *example.pair_ids})),
            interaction_ids=tuple(sorted({*other.interaction_ids, *example.interaction_ids})),
        )
    return list(kept.values())


# --- split and export ----------------------------------------------------------------------


def _unit_hash(text: str) -> float:
    # sha256, not hash(): the same on every machine and under any PYTHONHASHSEED.
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _content(example: PreferenceExample | KTOExample) -> str:
    # What an example says, without the database ids that depend on insertion order.
    if isinstance(example, PreferenceExample):
        return _canonical(
            [example.prompt, example.chosen, example.rejected, example.weight, example.source]
        )
    return _canonical([example.prompt, example.completion, example.label, example.source])


def split(
    examples: Sequence[Example], *, eval_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, eval), decided by a stable hash of each example's question.

    All examples of one question land on the same side, so eval never shows a prompt that
    was trained on. The result does not depend on input order. With five or more examples
    and at least two distinct questions, both sides get at least one question.
    """
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        groups[_question(example.prompt)].append(example)
    score = {key: _unit_hash(f"{seed}\x00{key}") for key in groups}
    order = sorted(groups, key=lambda key: (score[key], key))
    held_out = {key for key in order if score[key] < eval_fraction}
    if eval_fraction > 0 and len(examples) >= 5 and len(order) >= 2:
        if not held_out:
            held_out.add(order[0])
        if len(held_out) == len(order):
            held_out.discard(order[-1])
    train: list[Example] = []
    evaluation: list[Example] = []
    for key in order:
        (evaluation if key in held_out else train).extend(sorted(groups[key], key=_content))
    return train, evaluation


def to_trl_rows(
    examples: Iterable[PreferenceExample | KTOExample], *, include_weight: bool = False
) -> list[dict[str, Any]]:
    """TRL's conversational rows: preference (DPO) or unpaired preference (KTO).

    `include_weight` adds a "weight" column for trainers that weight examples; TRL's own
    trainers do not read it.
    """
    rows: list[dict[str, Any]] = []
    for example in examples:
        row: dict[str, Any] = {"prompt": [dict(m) for m in example.prompt]}
        if isinstance(example, PreferenceExample):
            row["chosen"] = [dict(example.chosen)]
            row["rejected"] = [dict(example.rejected)]
            if include_weight:
                row["weight"] = example.weight
        else:
            row["completion"] = [dict(example.completion)]
            row["label"] = example.label
        rows.append(row)
    return rows


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write rows as JSON lines, atomically: readers see the old file or the whole new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


# --- bookkeeping ---------------------------------------------------------------------------


def mark_consumed(*, session: Session, pair_ids: Iterable[int], run_id: int) -> int:
    """Record that run `run_id` trained on these pairs; a pair keeps its first run."""
    ids = sorted(set(pair_ids))
    marked = 0
    for start in range(0, len(ids), _ID_CHUNK):
        result = session.exec(
            update(PreferencePair)
            .where(col(PreferencePair.id).in_(ids[start : start + _ID_CHUNK]))
            .where(col(PreferencePair.consumed_by_run).is_(None))
            .values(consumed_by_run=run_id)
        )
        marked += int(result.rowcount or 0)
    session.flush()
    return marked


def buffer_counts(*, session: Session, assistant: str) -> dict[str, int]:
    """What arrived for `assistant` since its last successful run, for the scheduler to weigh
    against TRAIN_MIN_NEW_EXAMPLES: unconsumed pairs and ratings given or changed since.

    Best-of-n pairs do not count: one comes with nearly every answer while best-of-n is on,
    and a machine label is no new feedback from people."""
    pairs = session.exec(
        select(func.count())
        .select_from(PreferencePair)
        .where(PreferencePair.assistant == assistant)
        .where(col(PreferencePair.consumed_by_run).is_(None))
        .where(col(PreferencePair.source) != PairSource.best_of_n)
    ).one()
    ratings_query = (
        select(func.count())
        .select_from(Rating)
        .join(Interaction, col(Interaction.id) == col(Rating.interaction_id))
        .where(Interaction.assistant == assistant, Interaction.status == InteractionStatus.ok)
    )
    since = last_trained_at(session=session, assistant=assistant)
    if since is not None:
        ratings_query = ratings_query.where(col(Rating.updated_at) > since)
    ratings = session.exec(ratings_query).one()
    return {"new_pairs": pairs, "new_ratings": ratings, "new_examples": pairs + ratings}
