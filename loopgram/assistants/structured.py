"""Strict structured answers: find the JSON object, validate it, repair once, or fail clearly.

Small models wrap JSON in prose or code fences, leave trailing commas, or invent fields.
Parsing is strict about the schema (pydantic, unknown fields refused) but tolerant about
the wrapping. On invalid output the model gets one repair turn that quotes the error; if
that fails too the caller gets `StructuredOutputError`, never a guessed value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from loopgram.errors import LoopgramError
from loopgram.llm import ChatMessage

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

_DECODER = json.JSONDecoder()


class StructuredOutputError(LoopgramError):
    key = "error-structured-output"


class InvalidOutput(ValueError):
    """The model's text is not a valid instance of the schema; the message says why."""


def _without_trailing_commas(text: str) -> str:
    """Drop commas right before a closing brace or bracket, outside JSON strings."""
    out: list[str] = []
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == ",":
            rest = text[i + 1 :].lstrip()
            if rest[:1] in ("}", "]"):
                continue
        out.append(ch)
    return "".join(out)


def parse_json_object(text: str) -> dict[str, object]:
    """The first JSON object in the text that decodes — in a code fence or in prose, with
    trailing commas forgiven. A brace that never closes does not hide a later object."""
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        for attempt in (text[start:], _without_trailing_commas(text[start:])):
            try:
                value, _ = _DECODER.raw_decode(attempt)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise InvalidOutput("no JSON object found in the answer")


def parse_structured(text: str, schema: type[T]) -> T:
    """The schema instance the text holds, or InvalidOutput naming what is wrong."""
    data = parse_json_object(text)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'object'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise InvalidOutput(problems) from exc


@dataclass(frozen=True)
class StructuredAnswer(Generic[T]):
    value: T
    raw: str  # the model's last reply, as it wrote it
    attempts: int  # 1, or 2 when the repair turn was needed


Complete = Callable[[Sequence[ChatMessage]], Awaitable[str]]


async def complete_structured(
    complete: Complete,
    messages: Sequence[ChatMessage],
    schema: type[T],
    *,
    repair_instruction: str,
    validate: Callable[[T], None] | None = None,
) -> StructuredAnswer[T]:
    """Ask, parse strictly, and on invalid output ask once more with the error quoted.

    `validate` adds checks the schema cannot express (e.g. a label from the admin's set);
    it raises InvalidOutput. `repair_instruction` is formatted with `{error}`.
    """
    conversation = list(messages)
    reply = ""
    error = ""
    for attempt in (1, 2):
        reply = await complete(conversation)
        try:
            value = parse_structured(reply, schema)
            if validate is not None:
                validate(value)
        except InvalidOutput as exc:
            error = str(exc)
            log.info("structured.invalid attempt=%s schema=%s error=%s", attempt, schema, error)
            conversation = [
                *messages,
                {"role": "assistant", "content": reply},
                {"role": "user", "content": repair_instruction.format(error=error)},
            ]
            continue
        return StructuredAnswer(value, reply, attempt)
    raise StructuredOutputError(f"invalid model output after a repair turn: {error}", raw=reply)
