"""An OpenAI-compatible HTTP server (Chat Completions + Models) over a GenerationBackend.

The wire format follows the OpenAI API as served by vLLM, so the bot's
``openai.AsyncOpenAI(base_url=...)`` client works unchanged against this server and
against vLLM in production:

* ``GET  /v1/models``            -> ``{"object": "list", "data": [{"id", "object": "model", ...}]}``
* ``POST /v1/chat/completions``  -> ``chat.completion`` or an SSE stream of
  ``chat.completion.chunk`` objects ending with ``data: [DONE]``; ``n`` (up to
  :data:`MAX_N`) candidates without streaming, generated together (the transformers backend
  batches them into one ``generate``), as ``choices`` with ``index`` 0..n-1
* ``GET  /health``               -> ``{"status": "ok"}``
* ``GET  /ready``                -> ``{"status": "ready", "models": [...]}`` once the base model
  is loaded, else 503 (vLLM has only ``/health``, which it answers once the model is loaded)

With a backend that hot-loads LoRA adapters (:class:`~.protocol.AdapterBackend`) it also
offers vLLM's runtime LoRA endpoints (vLLM enables them with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), with vLLM's bodies, status codes and messages:

* ``POST /v1/load_lora_adapter``   ``{"lora_name", "lora_path", "load_inplace"?}`` -> 200 and
  ``Success: LoRA adapter '<name>' added successfully.`` (plain text); 400 if the name is
  taken, 404 if the folder holds no adapter
* ``POST /v1/unload_lora_adapter`` ``{"lora_name"}`` -> 200 and ``Success: LoRA adapter
  '<name>' removed successfully.``; 404 if no such adapter is loaded

and ``/v1/models`` lists the adapters after the base model, with ``parent`` = the base id.

Reward models (loopgram's own endpoints, see ``rewards.py``), used by best-of-n:

* ``POST /v1/load_reward_model`` ``{"name", "path", "base_model"?}`` -> ``{"name", "loaded":
  true}``; 404 if the folder holds no adapter
* ``POST /v1/rewards`` ``{"model", "messages", "answers": [str, ...]}`` -> ``{"model",
  "scores": [float, ...]}``; 404 (``model_not_found``) for a reward model not loaded here

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` (the LoRA
endpoints, like vLLM's, put the HTTP status in ``code`` and vLLM's error names in ``type``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from loopgram.http_site import start_site

from .protocol import (
    DEFAULT_MAX_LORAS,
    AdapterBackend,
    AdapterError,
    GenerationBackend,
    GenerationRequest,
    TokenCounter,
    UnknownModelError,
)
from .rewards import (
    RewardModelError,
    RewardModels,
    RewardsUnavailableError,
    ScorerRewardModels,
    UnknownRewardModelError,
)
from .sampling_seeds import ContentSeeds

__all__ = [
    "BACKEND_KEY",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL_CACHE",
    "MAX_N",
    "NGRAM_BASE_MODEL",
    "REWARDS_KEY",
    "create_app",
    "make_backend",
    "serve",
    "start_server",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512
"""``max_tokens`` when the request sets neither ``max_tokens`` nor ``max_completion_tokens``."""

MAX_BODY_BYTES = 32 * 1024 * 1024

MAX_N = 8
"""Most candidates one request may ask for (``n``): best-of-n needs a handful, not more."""

MAX_REWARD_ANSWERS = 64
"""Most answers one ``/v1/rewards`` request may score."""

DEFAULT_MODEL_CACHE = Path.home() / ".cache" / "loopgram" / "models"
"""Where the built-in base model is converted to when no ``cache_dir`` is given: one place
per user, so every working directory (and test) shares the one-off conversion.  The CLI
should pass ``DATA_DIR/models`` so that a deployment keeps it on its data volume."""

NGRAM_BASE_MODEL = "ngram"
"""``base_model`` value that asks for the placeholder n-gram model explicitly."""

BACKEND_KEY: web.AppKey[GenerationBackend] = web.AppKey("loopgram_model_backend")
REWARDS_KEY: web.AppKey[RewardModels] = web.AppKey("loopgram_reward_models")
_CREATED_KEY = web.AppKey("loopgram_model_created", int)
_SEEDS_KEY: web.AppKey[ContentSeeds | None] = web.AppKey("loopgram_sampling_seeds")

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_WORD_RE = re.compile(r"\w+|[^\w\s]")


# --------------------------------------------------------------------------- errors


class APIError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> web.Response:
        # ASCII-escaped: a message quoting the client's text may hold a lone surrogate, which
        # has no UTF-8 encoding (the error response itself would fail with a 500).
        return web.json_response(self.body(), status=self.status, dumps=_ascii_dumps)


def _bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


def _model_not_found(model: str) -> APIError:
    return APIError(
        404, f"The model `{model}` does not exist.", param="model", code="model_not_found"
    )


def _backend_failed(exc: BaseException) -> APIError:
    detail = str(exc) or type(exc).__name__
    return APIError(500, f"The model backend failed: {detail}", type="server_error")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _ascii_dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


#: What ``request.json()`` raises for a body JSON cannot read: not JSON, not UTF-8 or an
#: integer beyond Python's digit limit (ValueError), nested too deep (RecursionError), a
#: charset Python does not know (LookupError). The client's mistake: a 400, not a 500.
_UNREADABLE_BODY = (ValueError, RecursionError, LookupError)


@web.middleware
async def _error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        response = APIError(exc.status, exc.reason, type=kind).response()
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        logger.exception("Unhandled error in %s %s", request.method, request.path)
        return APIError(500, "Internal server error.", type="server_error").response()


# ----------------------------------------------------------------------- validation


class _ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    def __init__(
        self,
        generation: GenerationRequest,
        *,
        stream: bool,
        include_usage: bool,
        n: int = 1,
        user: str | None = None,
    ) -> None:
        self.generation = generation
        self.stream = stream
        self.include_usage = include_usage
        self.n = n
        self.user = user  # OpenAI's end-user field: only the sampling seeds read it

    def candidates(self) -> list[GenerationRequest]:
        """The ``n`` generations to run: a seeded request gives candidate ``i`` the seed
        ``seed + i`` (the same seed would give ``n`` copies of one answer)."""
        requests = [self.generation]
        for i in range(1, self.n):
            seed = self.generation.seed
            requests.append(replace(self.generation, seed=None if seed is None else seed + i))
        return requests


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional_int(
    body: dict[str, Any], name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise _bad_request(f"'{name}' must be an integer, got {_dumps(value)}.", name)
    if minimum is not None and value < minimum:
        raise _bad_request(f"'{name}' must be at least {minimum}, got {value}.", name)
    if maximum is not None and value > maximum:
        raise _bad_request(f"'{name}' must be at most {maximum}, got {value}.", name)
    return int(value)


def _optional_number(
    body: dict[str, Any], name: str, default: float, low: float, high: float
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise _bad_request(f"'{name}' must be a number, got {_dumps(value)}.", name)
    if not low <= value <= high:
        raise _bad_request(f"'{name}' must be between {low:g} and {high:g}, got {value}.", name)
    return float(value)


def _optional_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad_request(f"'{name}' must be a boolean, got {_dumps(value)}.", name)
    return value


def _unicode_text(text: str, param: str) -> str:
    """``text`` if it is valid Unicode: JSON's escapes can smuggle in a lone surrogate, which
    a tokenizer refuses on the model thread (failing every request batched with this one)."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise _bad_request(
                f"The text is not valid Unicode (a lone surrogate at {exc.start}).", param
            ) from exc
    return text


def _text_content(content: object, param: str, role: str) -> str:
    if isinstance(content, str):
        return _unicode_text(content, param)
    if content is None and role in ("assistant", "tool", "function"):
        return ""
    if isinstance(content, list):
        texts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad_request("Each content part must be an object with a 'type'.", param)
            if part["type"] not in ("text", "input_text"):
                raise _bad_request(
                    f"Content part type '{part['type']}' is not supported; only text is.",
                    f"{param}.[{j}].type",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad_request("A text content part needs a string 'text'.", param)
            texts.append(_unicode_text(text, param))
        return "\n".join(texts)
    raise _bad_request(
        f"'content' must be a string or a list of text parts, got {_dumps(content)}.", param
    )


def _parse_messages(value: object) -> list[dict[str, str]]:
    if value is None:
        raise _bad_request("'messages' is a required property.", "messages")
    if not isinstance(value, list):
        raise _bad_request("'messages' must be an array of message objects.", "messages")
    if not value:
        raise _bad_request("'messages' must contain at least one message.", "messages")
    messages: list[dict[str, str]] = []
    for i, message in enumerate(value):
        param = f"messages.[{i}]"
        if not isinstance(message, dict):
            raise _bad_request("Each message must be an object.", param)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise _bad_request(
                f"'role' must be one of {sorted(_ROLES)}, got {_dumps(role)}.", f"{param}.role"
            )
        content = _text_content(message.get("content"), f"{param}.content", role)
        messages.append({"role": role, "content": content})
    return messages


def _parse_stop(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item for item in value if item]
    raise _bad_request("'stop' must be a string or an array of strings.", "stop")


def parse_chat_request(body: object, model_ids: list[str]) -> _ChatRequest:
    """Validate a Chat Completions body; raise :class:`APIError` (400/404) if invalid."""
    if not isinstance(body, dict):
        raise _bad_request("The request body must be a JSON object.")

    model = body.get("model")
    if model is None:
        if not model_ids:
            raise APIError(503, "No model is loaded.", type="server_error")
        model = model_ids[0]  # vLLM's behaviour; the openai client always sends one
    if not isinstance(model, str):
        raise _bad_request(f"'model' must be a string, got {_dumps(model)}.", "model")

    messages = _parse_messages(body.get("messages"))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad_request(f"'user' must be a string, got {_dumps(user)}.", "user")
    if user is not None:  # the sampling seeds hash it as UTF-8
        _unicode_text(user, "user")

    max_tokens = _optional_int(body, "max_completion_tokens", minimum=1)
    legacy_max_tokens = _optional_int(body, "max_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = legacy_max_tokens if legacy_max_tokens is not None else DEFAULT_MAX_TOKENS

    n = _optional_int(body, "n", minimum=1) or 1
    if n > MAX_N:
        raise _bad_request(f"'n' must be at most {MAX_N}, got {n}.", "n")

    stream = _optional_bool(body, "stream")
    if stream and n > 1:
        raise _bad_request("Streaming supports only n=1; ask for n > 1 without 'stream'.", "n")
    include_usage = False
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise _bad_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        if not isinstance(stream_options, dict):
            raise _bad_request("'stream_options' must be an object.", "stream_options")
        include_usage = _optional_bool(stream_options, "include_usage")

    generation = GenerationRequest(
        messages=messages,
        model=model,
        max_tokens=max_tokens,
        temperature=_optional_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_optional_number(body, "top_p", 1.0, 0.0, 1.0),
        # OpenAI's range (int64); torch seeds a generator with at most 64 bits and would fail
        # on the model thread, taking the requests batched with this one down with it.
        seed=_optional_int(body, "seed", minimum=-(2**63), maximum=2**63 - 1),
        stop=_parse_stop(body.get("stop")),
    )
    if model not in model_ids:
        raise _model_not_found(model)
    return _ChatRequest(generation, stream=stream, include_usage=include_usage, n=n, user=user)


# ----------------------------------------------------------------------- generation


class _StopMatcher:
    """Cuts streamed text at the first stop string, holding back possible prefixes."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._held = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was found)."""
        if not self._stops:
            return delta, False
        text = self._held + delta
        found = [index for stop in self._stops if (index := text.find(stop)) != -1]
        if found:
            self._held = ""
            return text[: min(found)], True
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:size]):
                    hold = size
                    break
        self._held = text[len(text) - hold :]
        return text[: len(text) - hold], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def _count_tokens(backend: GenerationBackend, text: str) -> int:
    if isinstance(backend, TokenCounter):
        return backend.count_tokens(text)
    return len(_WORD_RE.findall(text))


class _Generation:
    """Runs one backend generation: max_tokens cap, stop strings, accounting."""

    def __init__(self, backend: GenerationBackend, request: GenerationRequest) -> None:
        self.backend = backend
        self.request = request
        self.finish_reason = "stop"
        self.deltas_received = 0
        self.text_parts: list[str] = []

    async def deltas(self) -> AsyncGenerator[str, None]:
        source = self.backend.generate(self.request)
        matcher = _StopMatcher(self.request.stop)
        try:
            async for delta in source:
                if not delta:
                    continue
                self.deltas_received += 1
                text, stopped = matcher.feed(delta)
                if text:
                    self.text_parts.append(text)
                    yield text
                if stopped:
                    self.finish_reason = "stop"
                    return
                if self.deltas_received >= self.request.max_tokens:
                    self.finish_reason = "length"
                    break
            tail = matcher.flush()
            if tail:
                self.text_parts.append(tail)
                yield tail
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def usage(self) -> dict[str, int]:
        prompt = "\n".join(message["content"] for message in self.request.messages)
        prompt_tokens = _count_tokens(self.backend, prompt)
        if isinstance(self.backend, TokenCounter):
            completion_tokens = self.backend.count_tokens(self.text)
        else:
            completion_tokens = self.deltas_received
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }


def _as_api_error(exc: Exception) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, UnknownModelError):
        return _model_not_found(exc.model)
    logger.error("Model backend failed: %r", exc, exc_info=exc)
    return _backend_failed(exc)


# ------------------------------------------------------------------------- handlers


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    """200 once the backend serves a model (the base model is loaded), else 503."""
    backend = request.app.get(BACKEND_KEY)
    try:
        models = backend.model_ids() if backend is not None else []
    except Exception as exc:  # a backend that failed or was closed is not ready
        logger.warning("Readiness: the backend failed to list its models: %s", exc)
        models = []
    if not models:
        return web.json_response({"status": "not ready", "models": []}, status=503)
    return web.json_response({"status": "ready", "models": models}, dumps=_dumps)


async def _list_models(request: web.Request) -> web.Response:
    created = request.app[_CREATED_KEY]
    backend = request.app[BACKEND_KEY]
    model_ids = backend.model_ids()
    adapters = set(backend.adapter_names()) if isinstance(backend, AdapterBackend) else set()
    base = model_ids[0] if model_ids else None
    data = [
        {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "loopgram",
            "root": model_id,
            "parent": base if model_id in adapters else None,  # vLLM's LoRA cards
        }
        for model_id in model_ids
    ]
    return web.json_response({"object": "list", "data": data}, dumps=_dumps)


def _lora_error(status: int, message: str, error_type: str) -> APIError:
    # vLLM's LoRA errors: its own type names and the HTTP status as the code.
    return APIError(status, message, type=error_type, code=status)


async def _lora_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except _UNREADABLE_BODY as exc:
        raise _lora_error(400, f"Invalid JSON body: {exc}.", "BadRequestError") from exc
    if not isinstance(body, dict):
        raise _lora_error(400, "The request body must be a JSON object.", "BadRequestError")
    return body


def _adapter_backend(request: web.Request) -> AdapterBackend:
    backend = request.app[BACKEND_KEY]
    assert isinstance(backend, AdapterBackend)  # the routes exist only for such backends
    return backend


async def _load_lora_adapter(request: web.Request) -> web.Response:
    body = await _lora_body(request)
    name, path = body.get("lora_name"), body.get("lora_path")
    if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
        raise _lora_error(
            400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput"
        )
    replace = body.get("load_inplace", False)
    if not isinstance(replace, bool):
        raise _lora_error(400, "'load_inplace' must be a boolean.", "InvalidUserInput")
    try:
        await _adapter_backend(request).load_adapter(name, path, replace=replace)
    except AdapterError as exc:
        raise _lora_error(exc.status, str(exc), exc.error_type) from exc
    except Exception as exc:  # vLLM answers 400 with the message for any load failure
        logger.exception("Loading LoRA adapter %r from %s failed", name, path)
        raise _lora_error(400, str(exc) or type(exc).__name__, "BadRequestError") from exc
    return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")


async def _unload_lora_adapter(request: web.Request) -> web.Response:
    body = await _lora_body(request)
    name = body.get("lora_name")
    if not isinstance(name, str) or not name:
        raise _lora_error(
            400, "'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput"
        )
    try:
        await _adapter_backend(request).unload_adapter(name)
    except AdapterError as exc:
        raise _lora_error(exc.status, str(exc), exc.error_type) from exc
    return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND_KEY]
    try:
        body = await request.json(loads=json.loads)
    except _UNREADABLE_BODY as exc:
        raise _bad_request(f"We could not parse the JSON body of your request: {exc}.") from exc
    chat = parse_chat_request(body, backend.model_ids())
    seeds = request.app[_SEEDS_KEY]
    if seeds is not None and chat.generation.seed is None:
        seed = seeds.next_seed(chat.generation.messages, user=chat.user)
        chat.generation = replace(chat.generation, seed=seed)
    generation = _Generation(backend, chat.generation)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if chat.stream:
        return await _stream_completion(request, chat, generation, completion_id, created)

    if chat.n == 1:
        generations = [generation]
        await _drain(generation)
    else:
        generations = [_Generation(backend, candidate) for candidate in chat.candidates()]
        await _drain_together(generations)
    usage = generations[0].usage()
    if len(generations) > 1:  # OpenAI: the prompt counts once, every completion counts
        completion_tokens = sum(g.usage()["completion_tokens"] for g in generations)
        usage["completion_tokens"] = completion_tokens
        usage["total_tokens"] = usage["prompt_tokens"] + completion_tokens
    return web.json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": chat.generation.model,
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": g.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": g.finish_reason,
                }
                for index, g in enumerate(generations)
            ],
            "usage": usage,
        },
        dumps=_dumps,
    )


async def _drain(generation: _Generation) -> None:
    """Run one generation to its end (its text accumulates on ``generation``)."""
    deltas = generation.deltas()
    try:
        async for _ in deltas:
            pass
    except Exception as exc:
        raise _as_api_error(exc) from exc
    finally:
        await deltas.aclose()


async def _drain_together(generations: list[_Generation]) -> None:
    """Run the candidates of one request at once, so a batching backend takes them as one
    batch (they reach its queue in the same event-loop step). The first failure fails the
    request and stops the others; so does the client going away (this handler cancelled)."""
    tasks = [asyncio.ensure_future(_drain(g)) for g in generations]
    for task in tasks:  # retrieved even if this handler is cancelled before it looks
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for the finished ones
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc


async def _stream_completion(
    request: web.Request,
    chat: _ChatRequest,
    generation: _Generation,
    completion_id: str,
    created: int,
) -> web.StreamResponse:
    model = chat.generation.model

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if chat.include_usage:
            payload["usage"] = None
        return payload

    deltas = generation.deltas()
    try:
        # Wait for the first piece of text before sending headers, so that a backend
        # failing at start is a proper HTTP error (404/500) rather than a broken stream.
        try:
            first: str | None = await anext(deltas)
        except StopAsyncIteration:
            first = None
        except Exception as exc:
            raise _as_api_error(exc) from exc

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)

        async def send(payload: object) -> None:
            await response.write(f"data: {_dumps(payload)}\n\n".encode())

        try:
            await send(chunk({"role": "assistant", "content": ""}))
            if first is not None:
                await send(chunk({"content": first}))
                try:
                    async for text in deltas:
                        await send(chunk({"content": text}))
                except ConnectionError:
                    raise
                except Exception as exc:
                    await send(_as_api_error(exc).body())
                    await response.write(b"data: [DONE]\n\n")
                    return response
            await send(chunk({}, generation.finish_reason))
            if chat.include_usage:
                await send(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": generation.usage(),
                    }
                )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            logger.info("Client disconnected from %s; generation stopped", completion_id)
        return response
    finally:
        await deltas.aclose()


# ------------------------------------------------------------------------- rewards


def _reward_error(exc: Exception) -> APIError:
    if isinstance(exc, UnknownRewardModelError):
        return APIError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, RewardsUnavailableError):
        return APIError(503, str(exc), type="server_error")
    if isinstance(exc, RewardModelError):
        return APIError(exc.status, str(exc), code=exc.status)
    logger.error("Reward scoring failed: %r", exc, exc_info=exc)
    return APIError(500, f"Reward scoring failed: {exc or type(exc).__name__}", type="server_error")


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except _UNREADABLE_BODY as exc:
        raise _bad_request(f"We could not parse the JSON body of your request: {exc}.") from exc
    if not isinstance(body, dict):
        raise _bad_request("The request body must be a JSON object.")
    return body


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _bad_request(f"'{name}' must be a non-empty string.", name)
    return value


async def _load_reward_model(request: web.Request) -> web.Response:
    body = await _json_object(request)
    name, path = _required_str(body, "name"), _required_str(body, "path")
    base_model = body.get("base_model")
    if base_model is not None and not isinstance(base_model, str):
        raise _bad_request("'base_model' must be a string.", "base_model")
    try:
        await request.app[REWARDS_KEY].load(name, path, base_model or None)
    except Exception as exc:
        raise _reward_error(exc) from exc
    logger.info("Loaded reward model %r from %s", name, path)
    return web.json_response({"name": name, "loaded": True}, dumps=_dumps)


async def _rewards(request: web.Request) -> web.Response:
    body = await _json_object(request)
    name = _required_str(body, "model")
    messages = _parse_messages(body.get("messages"))
    answers = body.get("answers")
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise _bad_request("'answers' must be an array of strings.", "answers")
    if not answers:
        raise _bad_request("'answers' must contain at least one answer.", "answers")
    if len(answers) > MAX_REWARD_ANSWERS:
        raise _bad_request(
            f"'answers' may hold at most {MAX_REWARD_ANSWERS} answers, got {len(answers)}.",
            "answers",
        )
    for answer in answers:
        _unicode_text(answer, "answers")
    try:
        scores = await request.app[REWARDS_KEY].score(name, messages, answers)
    except Exception as exc:
        raise _reward_error(exc) from exc
    return web.json_response({"model": name, "scores": scores}, dumps=_dumps)


# ---------------------------------------------------------------------- app & serve


def create_app(
    backend: GenerationBackend,
    *,
    rewards: RewardModels | None = None,
    sampling_seed: int | None = None,
) -> web.Application:
    """Build the aiohttp application serving ``backend``.

    ``rewards`` hosts the reward models of ``/v1/rewards``; by default CPU scorers on the
    backend's base model (``model_path``, when it has one), created on the first load.
    ``sampling_seed`` seeds unseeded requests by their content and asker (see
    ``sampling_seeds.py``); ``None`` samples them at random.
    """
    app = web.Application(middlewares=[_error_middleware], client_max_size=MAX_BODY_BYTES)
    app[BACKEND_KEY] = backend
    if rewards is None:
        rewards = ScorerRewardModels(getattr(backend, "model_path", None))
    app[REWARDS_KEY] = rewards
    app[_CREATED_KEY] = int(time.time())
    app[_SEEDS_KEY] = None if sampling_seed is None else ContentSeeds(sampling_seed)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/load_reward_model", _load_reward_model)
    app.router.add_post("/v1/rewards", _rewards)
    if isinstance(backend, AdapterBackend):
        app.router.add_post("/v1/load_lora_adapter", _load_lora_adapter)
        app.router.add_post("/v1/unload_lora_adapter", _unload_lora_adapter)

    async def close_rewards(app: web.Application) -> None:
        app[REWARDS_KEY].close()

    app.on_cleanup.append(close_rewards)
    return app


async def start_server(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start ``app`` on ``host:port`` (port 0 picks a free port).

    Returns the runner (call ``await runner.cleanup()`` to stop) and the base URL for
    an OpenAI client, e.g. ``"http://127.0.0.1:8001/v1"``.  Handlers are cancelled
    when their client disconnects, which stops the generation.
    """
    runner, _, bound_port = await start_site(app, host, port, handler_cancellation=True)
    url_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{url_host}:{bound_port}/v1"


def _missing_model_dependencies() -> list[str]:
    import importlib.util

    modules = ("torch", "transformers", "peft")
    return [name for name in modules if importlib.util.find_spec(name) is None]


def make_backend(
    base_model: str | None = None,
    model_id: str = "loopgram-base",
    *,
    cache_dir: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    max_loras: int = DEFAULT_MAX_LORAS,
) -> GenerationBackend:
    """The backend ``serve`` uses, serving ``model_id``.

    ``base_model`` (``BASE_MODEL_PATH``) is a local Hugging Face model folder, served with the
    transformers + PEFT backend.  Without it, the built-in SmolLM2-135M-Instruct is used
    (converted once into ``cache_dir``, see ``DEFAULT_MODEL_CACHE`` and ``base_model.py``), or,
    when torch/transformers/peft or the model package are not installed, the placeholder
    n-gram model.  ``"ngram"`` asks for the placeholder explicitly.

    Raises :class:`~.base_model.BaseModelUnavailableError` when an explicit ``base_model``
    cannot be served (a Hub id raises its ``NotImplementedError`` subclass: no downloads).
    """
    from .base_model import BaseModelUnavailableError, resolve_base_model

    def placeholder(reason: str) -> GenerationBackend:
        from .ngram import NGramBackend

        logger.warning("%s: serving the placeholder n-gram model instead", reason)
        return NGramBackend(model_id=model_id)

    if base_model == NGRAM_BASE_MODEL:
        from .ngram import NGramBackend

        return NGramBackend(model_id=model_id)
    cache = cache_dir if cache_dir is not None else DEFAULT_MODEL_CACHE
    missing = _missing_model_dependencies()
    if base_model:
        path = resolve_base_model(base_model, cache)  # no torch needed for a folder
        if missing:
            raise BaseModelUnavailableError(
                f"Serving {base_model!r} needs {', '.join(missing)} (the model extra)."
            )
    else:
        if missing:
            return placeholder(f"{', '.join(missing)} not installed")
        try:
            path = resolve_base_model(None, cache)
        except BaseModelUnavailableError as exc:
            return placeholder(str(exc).rstrip("."))

    from .transformers_backend import TransformersBackend

    logger.info("Loading base model %s as %r", path, model_id)
    return TransformersBackend(path, model_id, device=device, threads=threads, max_loras=max_loras)


def serve(
    host: str = "127.0.0.1",
    port: int = 8001,
    base_model: str | None = None,
    model_id: str = "loopgram-base",
    *,
    cache_dir: Path | None = None,
    threads: int | None = None,
    sampling_seed: int | None = None,
    max_loras: int = DEFAULT_MAX_LORAS,
) -> None:
    """Run the model server until SIGINT/SIGTERM (blocking; used by ``loopgram serve-model``).

    ``model_id`` is the name clients pass as ``model`` (the bot's ``LLM_MODEL``);
    ``sampling_seed`` is :func:`create_app`'s; the other arguments are those of
    :func:`make_backend`.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    backend = make_backend(
        base_model, model_id, cache_dir=cache_dir, threads=threads, max_loras=max_loras
    )
    app = create_app(backend, sampling_seed=sampling_seed)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        runner, base_url = await start_server(app, host, port)
        logger.info(
            "Model server listening on %s (models: %s)", base_url, ", ".join(backend.model_ids())
        )
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run())
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
