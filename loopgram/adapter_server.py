"""Talking to model servers about LoRA adapters, in vLLM's runtime-LoRA dialect.

`POST /v1/load_lora_adapter {lora_name, lora_path}` and `POST /v1/unload_lora_adapter
{lora_name}`; the built-in server speaks the same. An adapter is loaded on every replica
before any traffic is routed to it.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Protocol

from loopgram.errors import LoopgramError
from loopgram.settings import Settings

log = logging.getLogger(__name__)


class AdapterServerError(LoopgramError):
    key = "error-adapter-server"


class AdapterServer(Protocol):
    def load(self, name: str, path: str) -> None: ...

    def unload(self, name: str) -> None: ...


class HttpAdapterServer:
    def __init__(
        self, base_urls: Sequence[str], *, api_key: str | None = None, timeout: float = 300
    ):
        if not base_urls:
            raise ValueError("at least one model server URL is needed")
        self.base_urls = [url.rstrip("/") for url in base_urls]
        self.api_key = api_key
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpAdapterServer:
        """Every replica in LLM_REPLICAS (default: the one at LLM_BASE_URL), with LLM_API_KEY."""
        key = settings.llm.llm_api_key
        return cls(
            settings.learning.llm_replicas or [settings.llm.base_url],
            api_key=key.get_secret_value() if key else None,
        )

    def load(self, name: str, path: str) -> None:
        loaded: list[str] = []
        for base in self.base_urls:
            try:
                self._post(base, "load_lora_adapter", {"lora_name": name, "lora_path": path})
            except AdapterServerError:
                # All replicas or none: a half-loaded adapter must not receive traffic.
                for done in loaded:
                    self._post_quietly(done, "unload_lora_adapter", {"lora_name": name})
                raise
            loaded.append(base)

    def unload(self, name: str) -> None:
        for base in self.base_urls:
            self._post_quietly(base, "unload_lora_adapter", {"lora_name": name})

    def _post_quietly(self, base: str, endpoint: str, body: dict[str, str]) -> None:
        try:
            self._post(base, endpoint, body)
        except AdapterServerError as exc:
            log.warning("adapter_server.%s_failed base=%s error=%s", endpoint, base, exc)

    def _post(self, base: str, endpoint: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(  # noqa: S310 (URLs come from the operator's settings)
            f"{base}/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if endpoint == "load_lora_adapter" and exc.code == 400 and "already" in detail:
                return  # vLLM: "...has already been loaded" — the state we want
            raise AdapterServerError(f"{endpoint} on {base}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise AdapterServerError(f"{endpoint} on {base}: {exc}") from exc
        log.info("adapter_server.%s base=%s name=%s", endpoint, base, body["lora_name"])
