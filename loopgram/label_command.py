"""`loopgram label FILE`: label every row of a CSV/XLSX table with the labeling assistant.

The model is the one at `LLM_BASE_URL` (the built-in server by default), under the labeling
assistant's active adapter when one is deployed. With the default label set, the items
people already confirmed are shown to the model as few-shot examples (the nearest ones).
A stopped run (model down, Ctrl-C) keeps what it did; the same command again continues.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from loopgram.assistants.label import LabelSetSpec, default_label_set, load_label_file
from loopgram.batch_label import (
    BatchLabeler,
    BatchStoppedError,
    BatchSummary,
    ExampleSource,
    ProgressCallback,
    load_table,
    pick_text_column,
)
from loopgram.errors import LoopgramError, ModelUnavailableError
from loopgram.i18n import LANGUAGES
from loopgram.llm import LLMClient
from loopgram.models import LabeledExample
from loopgram.settings import DatabaseSettings, Settings

log = logging.getLogger(__name__)

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class ModelServerDownError(ModelUnavailableError):
    """The model server does not answer: names its URL and how to start one."""

    key = "label-model-down"


class UsageError(Exception):
    """Bad command-line input that only the CLI meets (the bot never sends it)."""


@dataclass(frozen=True)
class _Served:
    """What the database says about labeling: the adapter to ask, examples to show."""

    adapter: str | None = None
    examples: tuple[LabeledExample, ...] = ()


def default_out(file: Path) -> Path:
    return file.with_name(f"{file.stem}.labeled.csv")


def label_command(
    file: Path,
    *,
    out: Path | None,
    column: str | None,
    labels: Path | None,
    lang: str,
    restart: bool,
    as_json: bool,
    settings: Settings,
) -> int:
    """Run the command; the exit code (errors are one line on stderr)."""
    target = out or default_out(file)
    try:
        _check_paths(file, target, lang)
        summary = asyncio.run(
            _label(
                file,
                out=target,
                column=column,
                labels=labels,
                lang=lang,
                restart=restart,
                settings=settings,
            )
        )
    except KeyboardInterrupt:
        _error(f"interrupted; the rows done are saved in {target}: run the same command to go on")
        return EXIT_INTERRUPTED
    except (LoopgramError, UsageError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    except OSError as exc:
        _error(f"cannot read or write a file: {exc}")
        return EXIT_ERROR
    _print_summary(summary, as_json=as_json)
    return 0


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _check_paths(file: Path, out: Path, lang: str) -> None:
    if lang not in LANGUAGES:
        raise UsageError(f"unknown language {lang!r}: use {' or '.join(LANGUAGES)}")
    if not file.is_file():
        raise UsageError(f"no such file: {file}")
    if out.resolve() == file.resolve():
        raise UsageError(f"the output {out} is the input file; choose another --out")


async def _label(
    file: Path,
    *,
    out: Path,
    column: str | None,
    labels: Path | None,
    lang: str,
    restart: bool,
    settings: Settings,
) -> BatchSummary:
    spec = load_label_file(labels) if labels is not None else default_label_set()
    table = load_table(file)
    index = pick_text_column(table, column)
    served = _served(settings, with_examples=labels is None)
    llm = LLMClient(settings.llm)
    labeler = BatchLabeler(
        llm,
        model=served.adapter or settings.llm.llm_model,
        labels=spec,
        lang=lang,
        low_confidence=settings.bot.low_confidence,
        examples=_example_source(settings, served.examples, spec),
        max_chars=settings.bot.max_input_chars,
    )
    print(
        f"labeling {len(table.rows)} rows of column {table.columns[index]!r} with"
        f" {labeler.model} at {settings.llm.base_url} into {out}",
        file=sys.stderr,
    )
    try:
        with _progress_bar() as progress:
            return await labeler.run(
                table, column=index, out=out, restart=restart, progress=progress
            )
    except BatchStoppedError as exc:
        raise _server_down(exc, settings.llm.base_url) from exc
    finally:
        await llm.close()


def _server_down(exc: BatchStoppedError, url: str) -> ModelServerDownError:
    done, total, out = exc.params["done"], exc.params["total"], exc.params["out"]
    saved = (
        f"{done} of {total} rows are saved in {out}; run the same command again to go on"
        if done
        else "nothing was labeled"
    )
    cause = exc.__cause__ or exc
    return ModelServerDownError(
        f"the model server at {url} is not answering ({cause}); start it with"
        f" `loopgram serve-model` or set LLM_BASE_URL. {saved}",
        url=url,
        done=done,
        total=total,
        out=out,
    )


@contextmanager
def _progress_bar() -> Iterator[ProgressCallback]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("label", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# ------------------------------------------------------------------------------ database


def _database_exists(settings: DatabaseSettings) -> bool:
    """False for a SQLite file that is not there (no adapters, no examples; not created)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return True
    return Path(url.database).exists()


def _served(settings: Settings, *, with_examples: bool) -> _Served:
    """The active labeling adapter and the confirmed examples of the default label set;
    nothing when there is no database yet or it cannot be read (logged)."""
    if not _database_exists(settings.db):
        return _Served()
    from loopgram import adapters, labeling
    from loopgram.db import Database

    db = Database.from_settings(settings.db)
    try:
        with db.session() as session:
            active, _canary = adapters.serving(session=session, assistant="label")
            examples = (
                labeling.confirmed_examples(session=session, label_set_id=None)
                if with_examples
                else []
            )
            return _Served(active.name if active else None, tuple(examples))
    except SQLAlchemyError as exc:
        log.warning("label.database_unreadable error=%s", exc)
        return _Served()
    finally:
        db.dispose()


def _example_source(
    settings: Settings, examples: tuple[LabeledExample, ...], spec: LabelSetSpec
) -> ExampleSource | None:
    if not examples:
        return None
    from loopgram.embeddings import get_embedder
    from loopgram.labeling import nearest_examples

    embedder = get_embedder(settings.embedding.embedding_model)
    return lambda text: nearest_examples(embedder, text, examples, labels=spec.names)


# ------------------------------------------------------------------------------ output


def _print_summary(summary: BatchSummary, *, as_json: bool) -> None:
    data = summary.as_dict()
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    resumed = f" ({summary.resumed} from the earlier run)" if summary.resumed else ""
    print(f"labeled {summary.rows} rows{resumed} into {summary.out} in {summary.seconds:.1f} s")
    print(
        f"  labeled {summary.labeled}, needs review {summary.needs_review},"
        f" invalid {summary.invalid}, skipped {summary.skipped}"
    )
    if data["labels"]:
        print("  " + ", ".join(f"{label} {n}" for label, n in data["labels"].items()))
