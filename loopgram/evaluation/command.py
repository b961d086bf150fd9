"""The `loopgram eval --assistant A [--json] [--limit N] [--max-tokens N]` command.

Evaluates the base model and the assistant's active adapter (from the adapter registry)
on the assistant's shipped set, through the model server at LLM_BASE_URL, and prints a
table (metric | base | adapter | Δ) or one JSON document:
`{"assistant", "adapter", "metrics", "base_metrics", "items", ...}` where `metrics` are the
adapter's when there is one, else the base model's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from loopgram import adapters
from loopgram.db import Database, normalise_url
from loopgram.embeddings import get_embedder
from loopgram.errors import LoopgramError, ModelUnavailableError
from loopgram.evaluation.compare import Comparison, compare
from loopgram.evaluation.metrics import MAX_REWRITE_LENGTH, check_rewrite_length
from loopgram.evaluation.runner import check_evaluated
from loopgram.evaluation.sets import EvalSet, load_set
from loopgram.llm import LLMClient
from loopgram.settings import Settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=10.0, connect=5.0)


@dataclass(frozen=True)
class ActiveAdapter:
    name: str
    path: str


def active_adapter(settings: Settings, assistant: str) -> ActiveAdapter | None:
    """The assistant's active adapter in the registry; None when it serves the base model.

    A SQLite database that does not exist yet has no adapters (and is not created here)."""
    url = make_url(normalise_url(settings.db.database_url))
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:" or not Path(database).exists():
            return None
    db = Database.from_settings(settings.db)
    try:
        active, _canary = db.call(adapters.serving, assistant=assistant)
    except SQLAlchemyError as exc:
        reason = str(exc).splitlines()[0][:200]
        raise LoopgramError(
            f"cannot read the adapter registry ({reason}); is the database migrated"
            " (`loopgram db upgrade`)?"
        ) from exc
    finally:
        db.dispose()
    return ActiveAdapter(active.name, active.path) if active is not None else None


async def served_models(settings: Settings) -> set[str]:
    """The model ids the server at LLM_BASE_URL serves (GET /models)."""
    url = settings.llm.base_url.rstrip("/")
    key = settings.llm.llm_api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as http,
            http.get(f"{url}/models", headers=headers) as response,
        ):
            status = response.status
            body: Any = await response.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LoopgramError(
            f"no model server answers at {url} ({type(exc).__name__}): start one with"
            " `loopgram serve-model`, or point LLM_BASE_URL at a running one"
        ) from exc
    except ValueError as exc:  # not JSON
        raise LoopgramError(f"{url}/models did not answer with a list of models") from exc
    if status != 200:
        raise LoopgramError(f"the model server at {url} answered HTTP {status} to GET /models")
    try:
        return {str(model["id"]) for model in body["data"]}
    except (KeyError, TypeError) as exc:
        raise LoopgramError(f"{url}/models did not answer with a list of models") from exc


async def check_served(
    settings: Settings, *, assistant: str, adapter: ActiveAdapter | None, console: Console
) -> None:
    """The base model must be served; an active adapter the server lost (a restart) is
    loaded on it again, as the registry says it should be serving."""
    url = settings.llm.base_url.rstrip("/")
    served = await served_models(settings)
    model = settings.llm.llm_model
    if model not in served:
        raise LoopgramError(
            f"the model server at {url} does not serve {model!r}"
            f" (it serves: {', '.join(sorted(served)) or 'nothing'}): set LLM_MODEL"
        )
    if adapter is None or adapter.name in served:
        return
    from loopgram.adapter_server import HttpAdapterServer

    key = settings.llm.llm_api_key
    server = HttpAdapterServer([url], api_key=key.get_secret_value() if key else None)
    try:
        await asyncio.to_thread(server.load, adapter.name, adapter.path)
    except LoopgramError as exc:
        raise LoopgramError(
            f"{adapter.name} is the active adapter of {assistant} but {url} does not serve it,"
            f" and loading it failed: {exc}"
        ) from exc
    console.print(f"loaded {adapter.name} on {url} (active in the registry, was not served)")


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Per-request INFO lines (HTTP client, structured retries) would bury the progress."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


async def run_comparison(
    assistant: str,
    *,
    settings: Settings,
    eval_set: EvalSet,
    adapter: ActiveAdapter | None,
    max_tokens: int | None,
    console: Console,
    show_progress: bool,
    max_rewrite_length: float = MAX_REWRITE_LENGTH,
) -> Comparison:
    await check_served(settings, assistant=assistant, adapter=adapter, console=console)
    llm = LLMClient(settings.llm)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, disable=not show_progress) as bar:
            task = bar.add_task(f"eval {assistant}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return await compare(
                assistant,
                llm=llm,
                base_model=settings.llm.llm_model,
                adapter=adapter.name if adapter else None,
                eval_set=eval_set,
                max_tokens=max_tokens,
                progress=progress,
                embedder=get_embedder(settings.embedding.embedding_model),
                low_confidence=settings.bot.low_confidence,
                max_rewrite_length=max_rewrite_length,
            )
    except ModelUnavailableError as exc:
        reason = str(exc).splitlines()[0][:200]
        raise LoopgramError(
            f"the model server at {settings.llm.base_url} failed during the evaluation: {reason}"
        ) from exc
    finally:
        await llm.close()


def deployment_rewrite_bound(settings: Settings) -> float:
    """The paraphrase length bound the gate's task check uses here: TRAIN_CONFIG's
    `task_max_rewrite_length` when it sets one, else the default. `loopgram eval` judges by the
    same bound, so its ok rate is the one the gate compares."""
    if settings.learning.train_config is None:
        return MAX_REWRITE_LENGTH
    from training.config import train_config

    try:
        return train_config(settings, assistant="paraphrase").task_max_rewrite_length
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise LoopgramError(f"TRAIN_CONFIG {settings.learning.train_config}: {exc}") from exc


def eval_command(
    assistant: str,
    *,
    as_json: bool,
    limit: int | None,
    max_tokens: int | None,
    settings: Settings,
    max_rewrite_length: float | None = None,
) -> int:
    """Run the evaluation and print its table (or, with `as_json`, one JSON document on
    stdout and nothing else there). Returns the exit code; bad input and an unreachable
    model server raise LoopgramError with a one-line message."""
    check_evaluated(assistant)
    if limit is not None and limit < 1:
        raise LoopgramError("--limit must be at least 1")
    if max_tokens is not None and max_tokens < 1:
        raise LoopgramError("--max-tokens must be at least 1")
    if max_rewrite_length is not None and assistant != "paraphrase":
        raise LoopgramError("--max-rewrite-length applies to paraphrase only")
    bound = deployment_rewrite_bound(settings) if max_rewrite_length is None else max_rewrite_length
    try:
        check_rewrite_length(bound)
    except ValueError as exc:
        raise LoopgramError(f"--max-rewrite-length: {exc}") from exc
    eval_set = load_set(assistant, limit=limit)
    adapter = active_adapter(settings, assistant)
    console = Console(stderr=True, highlight=False)
    # With --json, stdout carries the one document: anything a library prints goes to stderr.
    redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with _quiet_logs(), redirect:
            comparison = asyncio.run(
                run_comparison(
                    assistant,
                    settings=settings,
                    eval_set=eval_set,
                    adapter=adapter,
                    max_tokens=max_tokens,
                    console=console,
                    show_progress=not as_json,
                    max_rewrite_length=bound,
                )
            )
    except KeyboardInterrupt:
        console.print("error: interrupted")
        return 130
    if as_json:
        sys.stdout.write(json.dumps(comparison.as_dict(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        Console().print(comparison.table())
    return 0
