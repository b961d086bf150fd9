"""Scoring answers with a reward model over HTTP, so the bot never loads torch.

The model server (or REWARD_BASE_URL) answers `POST /v1/rewards {model, messages, answers}`
with `{model, scores}`. A reward model it does not hold (a restarted server, a new active
one) is a 404: the client then sends `POST /v1/load_reward_model {name, path, base_model}`
and asks once more. Every failure — the server down or slow, an error, an answer that is not
one finite number per candidate — is a `RewardUnavailableError`: the caller sends an unscored
answer rather than none.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from loopgram.settings import Settings

log = logging.getLogger(__name__)


class RewardUnavailableError(Exception):
    """The reward server could not score (the reason is the message; logged, not shown)."""


@dataclass(frozen=True)
class RewardModelRef:
    """An active reward model as the registry knows it: what to load it from."""

    name: str
    path: str
    base_model: str | None = None


class RewardClient:
    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RewardClient:
        """REWARD_BASE_URL, else the model server the bot talks to (LLM_BASE_URL or the
        built-in one), with LLM_API_KEY, and REWARD_TIMEOUT for each scoring."""
        key = settings.llm.llm_api_key
        return cls(
            settings.reward.reward_base_url or settings.llm.base_url,
            api_key=key.get_secret_value() if key else None,
            timeout=settings.reward.reward_timeout,
        )

    async def score(
        self, model: RewardModelRef, messages: Sequence[dict[str, str]], answers: Sequence[str]
    ) -> list[float]:
        """One score per answer, in order, within `timeout` seconds (a load included)."""
        if not answers:
            return []
        body = {"model": model.name, "messages": list(messages), "answers": list(answers)}
        try:
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(headers=self._headers, timeout=self.timeout) as http,
            ):
                response = await self._post(http, "rewards", body)
                if response.status_code == 404:
                    log.info("reward.loading name=%s base_url=%s", model.name, self.base_url)
                    await self._load(http, model)
                    response = await self._post(http, "rewards", body)
                return _scores(response, len(answers))
        except TimeoutError as exc:
            raise RewardUnavailableError(f"no scores within {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise RewardUnavailableError(f"{type(exc).__name__}: {exc}") from exc

    async def load(self, model: RewardModelRef) -> None:
        """Load `model` on the server ahead of use (scoring also loads it when missing)."""
        try:
            async with httpx.AsyncClient(headers=self._headers, timeout=self.timeout) as http:
                await self._load(http, model)
        except httpx.HTTPError as exc:
            raise RewardUnavailableError(f"{type(exc).__name__}: {exc}") from exc

    async def _load(self, http: httpx.AsyncClient, model: RewardModelRef) -> None:
        body: dict[str, Any] = {"name": model.name, "path": model.path}
        if model.base_model:
            body["base_model"] = model.base_model
        response = await self._post(http, "load_reward_model", body)
        if response.status_code != 200:
            raise RewardUnavailableError(
                f"loading {model.name}: HTTP {response.status_code} {_detail(response)}"
            )

    async def _post(self, http: httpx.AsyncClient, endpoint: str, body: Any) -> httpx.Response:
        return await http.post(f"{self.base_url}/{endpoint}", json=body)


def _detail(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message") or response.text)[:300]
    except (ValueError, AttributeError):
        return response.text[:300]


def _scores(response: httpx.Response, expected: int) -> list[float]:
    if response.status_code != 200:
        raise RewardUnavailableError(f"HTTP {response.status_code} {_detail(response)}")
    try:
        scores = response.json()["scores"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RewardUnavailableError(f"not a scores document: {response.text[:200]!r}") from exc
    if (
        not isinstance(scores, list)
        or len(scores) != expected
        or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores)
        or not all(math.isfinite(s) for s in scores)
    ):
        raise RewardUnavailableError(f"expected {expected} finite scores, got {scores!r:.200}")
    return [float(s) for s in scores]
