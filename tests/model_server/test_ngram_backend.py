"""The placeholder n-gram backend, directly and through the server."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator

import openai
import pytest

from training.model_server.ngram import NGramBackend, detect_language
from training.model_server.protocol import (
    GenerationRequest,
    UnknownModelError,
    iterate_in_thread,
)

from .conftest import Server, StartServer

ClientFactory = Callable[[Server], openai.AsyncOpenAI]
CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
LATIN = re.compile(r"[a-z]", re.IGNORECASE)


@pytest.fixture(scope="module")
def backend() -> NGramBackend:
    return NGramBackend()


def _request(content: str, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": content}],
        model="loopgram-base",
        **kwargs,  # type: ignore[arg-type]
    )


def _answer(backend: NGramBackend, content: str, **kwargs: object) -> str:
    return "".join(backend.generate_sync(_request(content, **kwargs)))


def test_loads_fast() -> None:
    began = time.perf_counter()
    NGramBackend()
    assert time.perf_counter() - began < 1.0


def test_detect_language() -> None:
    assert detect_language("Привет, как дела?") == "ru"
    assert detect_language("Hello, how are you?") == "en"
    assert detect_language("Посмотри README, пожалуйста") == "ru"
    assert detect_language("12345") == "en"


@pytest.mark.parametrize("seed", range(5))
def test_answers_in_the_prompt_language(backend: NGramBackend, seed: int) -> None:
    russian = _answer(backend, "Как написать хорошее краткое изложение встречи?", seed=seed)
    assert len(CYRILLIC.findall(russian)) > 20
    assert not LATIN.search(russian.replace("Telegram", ""))

    english = _answer(backend, "How do I write a good summary of a meeting?", seed=seed)
    assert len(LATIN.findall(english)) > 20
    assert not CYRILLIC.search(english)


def test_answer_language_follows_the_last_user_message(backend: NGramBackend) -> None:
    request = GenerationRequest(
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi, how can I help?"},
            {"role": "user", "content": "Расскажи о работе в команде."},
        ],
        model="loopgram-base",
        seed=1,
    )
    assert CYRILLIC.search("".join(backend.generate_sync(request)))


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("bakery?", {"bakery"}),
        ("Пекарню!", {"пекарню"}),
        ("Tell me about the bakery", {"tell", "bakery"}),
        ("Расскажи про пекарню", {"рассказывает", "пекарню"}),  # stem match for "расскажи"
    ],
)
def test_seeds_from_prompt_words(backend: NGramBackend, prompt: str, words: set[str]) -> None:
    for seed in range(5):
        answer = _answer(backend, prompt, seed=seed).lower()
        assert any(word in answer for word in words), answer


def test_deterministic_with_seed_and_varied_without(backend: NGramBackend) -> None:
    prompt = "Any advice on teamwork and writing?"
    assert _answer(backend, prompt, seed=42) == _answer(backend, prompt, seed=42)
    assert len({_answer(backend, prompt, seed=seed) for seed in range(8)}) > 1
    assert len({_answer(backend, prompt) for _ in range(8)}) > 1


def test_two_to_four_sentences(backend: NGramBackend) -> None:
    for seed in range(10):
        answer = _answer(backend, "Tell me something about technology.", seed=seed)
        ends = len(re.findall(r"[.!?](?:\s|$)", answer))
        assert 2 <= ends <= 4, answer
        assert answer[0].isupper()


def test_respects_max_tokens(backend: NGramBackend) -> None:
    # Seeded: an unseeded answer may end (2-4 sentences) before the largest limit.
    whole = list(backend.generate_sync(_request("Write about work", seed=3)))
    assert len(whole) > 12
    for max_tokens in (1, 5, 12):
        request = _request("Write about work", max_tokens=max_tokens, seed=3)
        assert list(backend.generate_sync(request)) == whole[:max_tokens]


def test_greedy_and_top_p_are_deterministic(backend: NGramBackend) -> None:
    greedy = [_answer(backend, "team meeting", temperature=0.0, seed=s) for s in (1, 1)]
    assert greedy[0] == greedy[1]
    narrow = _answer(backend, "team meeting", top_p=0.0, seed=3)
    assert narrow == _answer(backend, "team meeting", top_p=0.0, seed=3)


async def test_unknown_model(backend: NGramBackend) -> None:
    request = GenerationRequest(messages=[{"role": "user", "content": "hi"}], model="other")
    with pytest.raises(UnknownModelError):
        async for _ in backend.generate(request):
            pass


async def test_through_the_server(
    start: StartServer, make_client: Callable[[Server], openai.AsyncOpenAI]
) -> None:
    client = make_client(await start(NGramBackend()))

    async def ask(content: str, **kwargs: object) -> openai.types.chat.ChatCompletion:
        return await client.chat.completions.create(  # type: ignore[call-overload,no-any-return]
            model="loopgram-base", messages=[{"role": "user", "content": content}], **kwargs
        )

    ru = await ask("Что такое хорошая команда?", seed=5)
    en = await ask("What makes a good team?", seed=5)
    assert CYRILLIC.search(ru.choices[0].message.content or "")
    assert not CYRILLIC.search(en.choices[0].message.content or "")
    assert (await ask("What makes a good team?", seed=5)).choices[0].message.content == (
        en.choices[0].message.content
    )

    short = await ask("What makes a good team?", max_tokens=4)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 4

    stream = await client.chat.completions.create(
        model="loopgram-base",
        messages=[{"role": "user", "content": "What makes a good team?"}],
        seed=5,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(pieces) == en.choices[0].message.content
    assert sum(1 for piece in pieces if piece) > 5  # streamed word by word


async def test_iterate_in_thread_keeps_the_loop_free_and_stops_early() -> None:
    produced: list[int] = []
    stopped = threading.Event()

    def slow(stop: threading.Event) -> Iterator[int]:
        try:
            for i in range(100):
                if stop.is_set():
                    return
                time.sleep(0.02)  # blocking work, like a model forward pass
                produced.append(i)
                yield i
        finally:
            stopped.set()

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    items = iterate_in_thread(slow)
    received = [await anext(items) for _ in range(5)]
    await items.aclose()
    tick_task.cancel()
    assert received == [0, 1, 2, 3, 4]
    assert ticks >= 5  # the event loop kept running during the blocking work
    assert await asyncio.to_thread(stopped.wait, 2.0)
    assert len(produced) < 10


async def test_iterate_in_thread_reraises() -> None:
    def broken(stop: threading.Event) -> Iterator[str]:
        yield "ok"
        raise ValueError("boom")

    items = iterate_in_thread(broken)
    assert await anext(items) == "ok"
    with pytest.raises(ValueError, match="boom"):
        await anext(items)
