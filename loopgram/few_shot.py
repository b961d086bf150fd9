"""Few-shot examples picked per request: the nearest items people already labeled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from loopgram import labeling
from loopgram.answering import PreparedAnswer
from loopgram.db import Database

if TYPE_CHECKING:
    from loopgram.embeddings import Embedder


@dataclass
class NeighbourExamples:
    """An `ExampleSource` for the labeling assistant (embeddings on a worker thread)."""

    db: Database
    embedder: Callable[[], Embedder]
    k: int = 4

    async def attach(self, prepared: PreparedAnswer) -> PreparedAnswer:
        examples = await self.db.run(
            labeling.confirmed_examples, label_set_id=prepared.label_set_id
        )
        if not examples:
            return prepared
        labels = [name for name, _ in prepared.context.labels]
        picked = await asyncio.to_thread(
            labeling.nearest_examples,
            self.embedder(),
            prepared.question.text.strip(),
            examples,
            labels=labels,
            k=self.k,
        )
        if not picked:
            return prepared
        prepared.context = replace(prepared.context, examples=tuple(picked))
        prepared.messages = prepared.assistant.build_messages(
            lang=prepared.question.lang,
            history=[],
            text=prepared.question.text.strip(),
            options=prepared.options,
            context=prepared.context,
        )
        return prepared
