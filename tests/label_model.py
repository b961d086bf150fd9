"""A fake labeling model behind the real OpenAI-compatible server, answering from the item.

The label is the first label name the item mentions (`other` when none); a few words change
the behaviour, so a test says what it wants in the item's text:

- `garbage`: never JSON, not even after the repair turn;
- `bogus`: a label outside the set first, a right one on the repair turn;
- `alien`: a label outside the set, every time;
- `unsure`: confidence 0.3;
- `huge`: refused with HTTP 400, as a server refuses a prompt over its context;
- `slow<N>`: waits N hundredths of a second before answering.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from loopgram.assistants import get_assistant
from training.model_server.app import APIError, create_app, start_server
from training.model_server.protocol import GenerationRequest
from training.model_server.scripted import ScriptedBackend

LABELS = ("question", "complaint", "praise", "request")
REPAIR_STARTS = tuple(
    str(get_assistant("label")._prompts(lang)["repair"]).split("{error}")[0][:15]
    for lang in ("en", "ru")
)
_SLOW = re.compile(r"slow(\d+)")


def is_repair(request: GenerationRequest) -> bool:
    return request.messages[-1]["content"].startswith(REPAIR_STARTS)


def item_of(request: GenerationRequest) -> str:
    """The item being labeled (the user message before the repair turn, if there is one)."""
    return request.messages[-3 if is_repair(request) else -1]["content"]


def answer_for(request: GenerationRequest) -> str:
    item = item_of(request).lower()
    if "garbage" in item:
        return "I think this is a complaint, probably."
    if "alien" in item or ("bogus" in item and not is_repair(request)):
        return json.dumps({"label": "spaceship", "confidence": 0.9, "reason": "made up"})
    label = next((name for name in LABELS if name in item), "other")
    confidence = 0.3 if "unsure" in item else 0.9
    return json.dumps({"label": label, "confidence": confidence, "reason": "it says so"})


class LabelingBackend(ScriptedBackend):
    """`asked`: the item of every request, in arrival order; `answered`: items in the order
    their answers were finished. `fail_after` answered requests, it fails with HTTP 500;
    so does every request for an item in `crash_on` (whatever order concurrent rows take)."""

    def __init__(self) -> None:
        super().__init__(answer_for, model_ids=("loopgram-base", "label-v1"))
        self.asked: list[str] = []
        self.answered: list[str] = []
        self.fail_after: int | None = None
        self.crash_on: set[str] = set()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str]:
        item = item_of(request)
        self.asked.append(item)
        if item in self.crash_on or (
            self.fail_after is not None and len(self.answered) >= self.fail_after
        ):
            raise RuntimeError("the model crashed")
        if "huge" in item:
            raise APIError(400, "This model's maximum context length is 2048 tokens.")
        slow = _SLOW.search(item)
        if slow:
            await asyncio.sleep(int(slow.group(1)) / 100)
        async for piece in super().generate(request):
            yield piece
        self.answered.append(item)


@contextmanager
def model_server_thread(backend: LabelingBackend) -> Iterator[str]:
    """The server on its own event loop in a thread, for code that runs `asyncio.run`."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started = asyncio.run_coroutine_threadsafe(
        start_server(create_app(backend), "127.0.0.1", 0), loop
    )
    runner, url = started.result(timeout=10)
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
