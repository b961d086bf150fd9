"""The `loopgram` command line.

This module is the composition root: commands import the bot, the workers and the training
code lazily, inside the command, so the core stays free of aiogram and celery.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from loopgram.errors import LoopgramError
from loopgram.settings import Settings

app = typer.Typer(
    name="loopgram",
    help="Telegram bot platform whose answers get better from the people who use it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
feedback_app = typer.Typer(help="Ratings and the reward buffer.", no_args_is_help=True)
adapters_app = typer.Typer(help="LoRA adapters: list, deploy, roll back.", no_args_is_help=True)
review_app = typer.Typer(help="The human review queue: items and figures.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(feedback_app, name="feedback")
app.add_typer(adapters_app, name="adapters")
kb_app = typer.Typer(help="The knowledge base: ingest, search, list, delete.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(review_app, name="review")

TOKEN_HELP = (
    "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather in Telegram "  # noqa: S105
    "(https://t.me/BotFather), then `export TELEGRAM_BOT_TOKEN=<token>` "
    "(or try `loopgram demo`, which needs no token)."
)


def fail(message: str, code: int = 2) -> NoReturn:
    _say_error(message)
    raise typer.Exit(code)


def _say_error(message: str) -> None:
    from loopgram.logging_setup import mask_secrets

    typer.echo(f"error: {mask_secrets(message)}", err=True)


def _config_error(exc: Exception) -> str:
    """One line naming each wrong setting and why (pydantic's own first line names only the
    settings class)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc).splitlines()[0]
    parts = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]).upper() or exc.title
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(message if message.startswith(name) else f"{name}: {message}")
    return "; ".join(parts)


def _settings() -> Settings:
    from loopgram.logging_setup import secret_values, setup_logging

    try:
        settings = Settings.load()
    except Exception as exc:
        fail(f"invalid configuration: {_config_error(exc)}")
    # Bot token, webhook secret, LLM/Qdrant API keys: masked in every log line.
    setup_logging(settings.app.log_level, settings.app.log_format, secrets=secret_values(settings))
    return settings


def _require_token(settings: Settings) -> None:
    if settings.telegram.telegram_bot_token is None:
        fail(TOKEN_HELP)


@app.command()
def run() -> None:
    """Everything in one process on embedded defaults: bot, worker, beat, model server."""
    settings = _settings()
    _require_token(settings)

    async def main() -> None:
        from bot.runner import serve
        from bot.stack import embedded_stack

        async with embedded_stack(settings, with_training=True) as stack:
            await serve(stack.runtime, stack.bot, stop=_stop_on_signals())

    _run_async(main())


@app.command()
def bot() -> None:
    """The bot alone (polling or webhook); with REDIS_URL, workers run as `loopgram worker`
    (without it, the worker is embedded as in `loopgram run`)."""
    settings = _settings()
    _require_token(settings)

    async def main() -> None:
        from bot.runner import serve
        from bot.stack import embedded_stack

        async with embedded_stack(settings, with_model=False, with_training=True) as stack:
            await serve(stack.runtime, stack.bot, stop=_stop_on_signals())

    _run_async(main())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option("-Q", "--queues")] = "feedback,rag,training",
    concurrency: Annotated[int, typer.Option("-c", "--concurrency")] = 2,
    pool: Annotated[str, typer.Option("-P", "--pool", help="prefork, solo, threads")] = "prefork",
    ping: Annotated[bool, typer.Option("--ping", help="exit 0 if a worker answers")] = False,
) -> None:
    """A Celery worker (Redis broker); extra arguments go to Celery."""
    settings = _settings()
    from workers.celery_app import celery_app
    from workers.lifetime import die_with_parent

    die_with_parent()
    if ping:
        replies = celery_app.control.ping(timeout=3.0)
        raise typer.Exit(0 if replies else 1)
    # Without REDIS_URL this consumes the file-system broker under DATA_DIR: workers on the
    # same machine as an embedded bot (that is how `loopgram run` runs training).
    celery_app.worker_main(
        [
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-P",
            pool,
            "--loglevel",
            settings.app.log_level,
            *ctx.args,
        ]
    )


@app.command()
def beat() -> None:
    """Celery beat: the schedule of periodic jobs."""
    settings = _settings()
    if not settings.redis.redis_url:
        fail("REDIS_URL is not set: a separate beat needs Redis; `loopgram run` embeds one")
    from workers.celery_app import celery_app

    schedule = Path(settings.app.data_dir) / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "--loglevel", settings.app.log_level, "-s", str(schedule)])


@app.command("serve-model")
def serve_model(
    host: str = "127.0.0.1",
    port: int = 8001,
    base_model: Annotated[str | None, typer.Option("--base-model")] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="seed answers by their content, asker and how often each was asked, so a "
            "run that sends the same conversations gets the same answers (BUILTIN_MODEL_SEED)"
        ),
    ] = None,
    max_loras: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="LoRA adapters held at once; one more is refused (BUILTIN_MAX_LORAS)",
        ),
    ] = None,
) -> None:
    """The built-in OpenAI-compatible model server."""
    settings = _settings()
    from training.model_server.app import serve

    serve(
        host=host,
        port=port,
        base_model=base_model or settings.learning.base_model_path,
        model_id=settings.llm.llm_model,
        cache_dir=Path(settings.app.data_dir) / "models",
        sampling_seed=seed if seed is not None else settings.llm.builtin_model_seed,
        max_loras=max_loras or settings.llm.builtin_max_loras,
    )


@app.command()
def healthcheck() -> None:
    """Exit 0 when the database answers: a probe for `docker run --health-cmd` (compose.yaml
    probes each service its own way: the bot's /readyz, `worker --ping`)."""
    settings = _settings()
    from sqlalchemy import text

    from loopgram.db import Database

    db = Database.from_settings(settings.db)
    try:
        with db.session() as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except Exception as exc:
        fail(f"database unreachable: {exc}", code=1)
    finally:
        db.dispose()
    typer.echo("ok")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply Alembic migrations."""
    settings = _settings()
    from loopgram import migrate

    try:
        migrate.upgrade(settings.db, revision)
    except Exception as exc:
        fail(f"migration failed: {exc}")
    typer.echo(f"database at {revision}", err=True)


@feedback_app.command("export")
def feedback_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    since: Annotated[str | None, typer.Option(help="ISO date or datetime")] = None,
    assistant: Annotated[str | None, typer.Option()] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="file (default stdout)")] = None,
) -> None:
    """Ratings with their answers (fields: see DESIGN.md)."""
    settings = _settings()
    if fmt not in ("jsonl", "csv"):
        fail(f"unknown format {fmt!r}: use jsonl or csv")
    since_dt = None
    if since:
        try:
            since_dt = datetime.fromisoformat(since)
        except ValueError:
            fail(f"--since {since!r} is not an ISO date (e.g. 2026-11-01)")
    from loopgram.db import Database
    from loopgram.export import iter_feedback, write_export

    db = Database.from_settings(settings.db)
    try:
        with db.session() as session:
            rows = iter_feedback(session=session, since=since_dt, assistant=assistant)
            if out is None:
                count = write_export(rows, sys.stdout, fmt=fmt)  # type: ignore[arg-type]
            else:
                with out.open("w", encoding="utf-8", newline="") as handle:
                    count = write_export(rows, handle, fmt=fmt)  # type: ignore[arg-type]
    except Exception as exc:
        fail(_database_problem(exc) or f"export failed: {str(exc).strip().splitlines()[0]}")
    finally:
        db.dispose()
    typer.echo(f"exported {count} ratings", err=True)


def _adapter_server(settings: Settings) -> Any:
    from loopgram.adapter_server import HttpAdapterServer

    return HttpAdapterServer.from_settings(settings)


def _with_db(settings: Settings, fn: Any, **kwargs: Any) -> Any:
    from loopgram.db import Database

    db = Database.from_settings(settings.db)
    try:
        return db.call(fn, **kwargs)
    except LoopgramError as exc:
        fail(str(exc))
    finally:
        db.dispose()


@app.command()
def train(
    assistant: Annotated[str, typer.Option(help="whose feedback to learn from")] = "chat",
    method: Annotated[
        str,
        typer.Option(
            help="dpo or orpo (pairs; orpo needs no reference model), kto (thumbs) or reward "
            "(a reward model from pairs)"
        ),
    ] = "dpo",
    config: Annotated[
        Path | None, typer.Option(help="YAML with TrainConfig fields; default TRAIN_CONFIG")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Train a LoRA adapter on the reward buffer now; deploy it as a canary if it wins.

    With --method reward: train a reward model, made the active one if it wins its gate."""
    settings = _settings()
    from loopgram.assistants import ASSISTANTS

    if assistant not in ASSISTANTS:
        fail(f"unknown assistant {assistant!r}: one of {', '.join(ASSISTANTS)}")
    try:
        from training.config import TrainConfig, train_config
        from training.pipeline import run_training
    except ImportError as exc:
        fail(f"training needs the ml extra (pip install -e '.[ml]'): {exc}")
    try:
        overrides: dict[str, Any] = {"assistant": assistant, "method": method, "progress": True}
        options = (
            TrainConfig.from_yaml(config, **overrides)
            if config
            else train_config(settings, **overrides)
        )
    except (OSError, ValueError) as exc:
        fail(f"bad training config: {exc}")
    from loopgram.db import Database

    db = Database.from_settings(settings.db)
    try:
        typer.echo(f"training {assistant} ({method})…", err=True)
        import contextlib

        # The trainers print their logs: stdout carries only the report (one JSON document).
        with contextlib.redirect_stdout(sys.stderr):
            report = run_training(
                settings=settings, config=options, db=db, server=_adapter_server(settings)
            )
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, default=str))
    else:
        typer.echo(f"run {report.run_id}: {report.status} {report.adapter or ''} {report.detail}")
    if report.status == "failed":
        raise typer.Exit(1)


def _kb(settings: Settings) -> tuple[Any, Any]:
    from loopgram.db import Database
    from loopgram.rag import service

    db = Database.from_settings(settings.db)
    try:
        return db, service.knowledge_base(settings, db)
    except LoopgramError as exc:
        db.dispose()
        fail(str(exc))


@kb_app.command("ingest")
def kb_ingest(
    paths: Annotated[list[Path], typer.Argument(help="files and folders (recursively)")],
    assistant: Annotated[str | None, typer.Option(help="only for this assistant")] = None,
    chat_id: Annotated[int | None, typer.Option(help="only for this chat")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add or update documents (txt, md, pdf, docx, html, csv); unchanged ones are skipped."""
    settings = _settings()
    db, kb = _kb(settings)
    from rich.console import Console

    console = Console(stderr=True)
    try:
        with console.status("indexing…") as status:
            report = kb.ingest_paths(
                paths,
                assistant=assistant,
                chat_id=chat_id,
                progress=lambda path: status.update(f"indexing {path}"),
            )
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        typer.echo(
            f"{report.documents} documents ({report.chunks} chunks) indexed, "
            f"{report.skipped} unchanged, {len(report.errors)} failed"
        )
        for error in report.errors:
            typer.echo(f"  {error['path']}: {error['error']}", err=True)
        for warning in report.warnings:
            typer.echo(f"  ⚠ {warning['path']}: looks like prompt injection", err=True)
    if report.errors and not report.documents and not report.skipped:
        raise typer.Exit(1)


@kb_app.command("search")
def kb_search(
    query: Annotated[str, typer.Argument()],
    top: Annotated[int, typer.Option("--top", min=1, max=50)] = 5,
    assistant: Annotated[str | None, typer.Option()] = None,
    chat_id: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What retrieval finds for a question, best first."""
    settings = _settings()
    from loopgram.rag import service

    try:
        hits = service.retriever(settings).search(
            query, assistant=assistant, chat_id=chat_id, limit=top
        )
    except LoopgramError as exc:
        fail(str(exc))
    rows = [
        {
            "document": h.document,
            "chunk_id": h.chunk_id,
            "score": round(h.score, 4),
            "text": h.text,
            "page": h.page,
            "section": h.section,
        }
        for h in hits
    ]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        snippet = " ".join(str(row["text"]).split())[:160]
        typer.echo(f"{row['score']:.3f}  {row['document']}  {snippet}")


@kb_app.command("list")
def kb_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The documents in the knowledge base."""
    settings = _settings()
    from loopgram.models import Document

    def documents(*, session: Any) -> list[dict[str, Any]]:
        from sqlmodel import col, select

        return [
            {
                "id": d.id,
                "name": d.name,
                "source": d.source,
                "chunks": d.chunks,
                "status": d.status,
                "assistant": d.assistant,
                "chat_id": d.chat_id,
                "lang": d.lang,
                "injection_warnings": len(d.findings),
                "updated_at": d.updated_at.isoformat(),
            }
            for d in session.exec(select(Document).order_by(col(Document.id))).all()
        ]

    rows = _with_db(settings, documents)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        warn = "  ⚠ injection" if row["injection_warnings"] else ""
        typer.echo(f"#{row['id']}  {row['name']}  {row['chunks']} chunks  {row['status']}{warn}")


@kb_app.command("delete")
def kb_delete(document_id: Annotated[int, typer.Argument(help="the id from `kb list`")]) -> None:
    """Remove a document and its chunks."""
    settings = _settings()
    db, kb = _kb(settings)
    try:
        deleted = kb.delete(document_id)
    except LoopgramError as exc:
        fail(str(exc))
    finally:
        db.dispose()
    if not deleted:
        fail(f"no document {document_id}")
    typer.echo(f"document {document_id} removed")


@app.command("eval")
def eval_(
    assistant: Annotated[str, typer.Option(help="paraphrase, summarize, moderate or label")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="evaluate the first N items")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="answer length cap")] = None,
    max_rewrite_length: Annotated[
        float | None,
        typer.Option(
            help="paraphrase: the longest rewrite, in times its source's length, that counts "
            "as ok (0.5-10; default 2)"
        ),
    ] = None,
) -> None:
    """The assistant's metrics on its shipped set: the active adapter beside the base model."""
    settings = _settings()
    from loopgram.evaluation.command import eval_command

    try:
        code = eval_command(
            assistant,
            as_json=as_json,
            limit=limit,
            max_tokens=max_tokens,
            settings=settings,
            max_rewrite_length=max_rewrite_length,
        )
    except LoopgramError as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


@app.command()
def label(
    file: Annotated[Path, typer.Argument(help="a .csv or .xlsx table, one item per row")],
    out: Annotated[
        Path | None, typer.Option(help="result file (.csv or .xlsx); default FILE.labeled.csv")
    ] = None,
    column: Annotated[str | None, typer.Option(help="the column holding the text")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="a YAML label set; default: the shipped set")
    ] = None,
    lang: Annotated[str, typer.Option(help="language of the model's reasons: en or ru")] = "en",
    restart: Annotated[bool, typer.Option(help="start over instead of resuming")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Label every row of a table with the labeling assistant (resumable; rows the model is
    unsure of are marked needs_review)."""
    settings = _settings()
    from loopgram.label_command import label_command

    code = label_command(
        file,
        out=out,
        column=column,
        labels=labels,
        lang=lang,
        restart=restart,
        as_json=as_json,
        settings=settings,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def bench(
    model: Annotated[
        Path | None, typer.Option(help="Hugging Face model folder; default: the base model")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="a tiny local model and small counts (seconds)")
    ] = False,
    out: Annotated[Path, typer.Option(help="where bench.json and bench.png go")] = Path(
        "./data/bench"
    ),
    requests: Annotated[int, typer.Option(min=1, help="timed requests per variant")] = 8,
    max_tokens: Annotated[int, typer.Option(min=1, help="completion tokens per request")] = 64,
    repeats: Annotated[int, typer.Option(min=1, help="samples of load/unload/step")] = 3,
    pairs: Annotated[int, typer.Option(min=2, help="synthetic DPO pairs")] = 16,
    max_seconds: Annotated[float, typer.Option(min=1, help="deadline for the whole run")] = 900.0,
    updates: Annotated[
        int | None, typer.Option(min=1, help="text updates (and presses) per dispatcher")
    ] = None,
    ratings: Annotated[
        int | None, typer.Option(min=1, help="ratings ingested through Celery")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL server for ingestion; default DATABASE_URL or local"),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis for the broker (db 14 is used and flushed)")
    ] = None,
    services: Annotated[
        bool, typer.Option("--services/--no-services", help="use Redis and PostgreSQL")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """Serving, training and bot costs, each as a ratio against a baseline from the same run."""
    settings = _settings()
    if quick and model is not None:
        fail("--quick builds its own tiny model: drop --model or --quick")
    try:
        from training import bench as benchmark
        from training.model_server.base_model import (
            BaseModelUnavailableError,
            resolve_base_model,
        )
    except ImportError as exc:
        fail(f"bench needs the ml extra and matplotlib (pip install -e '.[ml]'): {exc}")
    import contextlib
    import tempfile

    from rich.console import Console

    with contextlib.ExitStack() as stack:
        if quick:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tiny-")))
            options = benchmark.BenchOptions.quick(benchmark.build_quick_model(folder / "tiny"))
        else:
            try:
                path = resolve_base_model(
                    str(model) if model else settings.learning.base_model_path,
                    Path(settings.app.data_dir) / "models",
                )
            except BaseModelUnavailableError as exc:
                fail(str(exc))
            options = benchmark.BenchOptions(
                model_path=path,
                requests=requests,
                max_tokens=max_tokens,
                repeats=repeats,
                dpo_pairs=pairs,
                max_seconds=max_seconds,
            )
        options = _bench_service_options(
            options,
            settings,
            updates=updates,
            ratings=ratings,
            database_url=database_url,
            redis_url=redis_url,
            services=services,
        )
        console = Console(stderr=True)
        try:
            # Libraries may print to stdout; with --json it carries one document only.
            with console.status("benchmarking…"), contextlib.redirect_stdout(sys.stderr):
                results = benchmark.run_bench(options)
        except benchmark.BenchError as exc:
            fail(str(exc), code=1)
        json_path, png_path = benchmark.write_outputs(results, out)
    for name, note in getattr(results, "skipped", {}).items():
        typer.echo(f"{name}: {note}", err=True)
    if as_json:
        console.print(benchmark.render_table(results))
        typer.echo(json.dumps(benchmark.results_json(results)))
    else:
        Console().print(benchmark.render_table(results))
        typer.echo(f"wrote {json_path} and {png_path}")


def _bench_service_options(
    options: Any,
    settings: Settings,
    *,
    updates: int | None,
    ratings: int | None,
    database_url: str | None,
    redis_url: str | None,
    services: bool,
) -> Any:
    """The bot/worker part of the bench options: counts, and the servers (the configured
    ones, else the local defaults); the bench owns Redis db 14 and flushes it."""
    from dataclasses import replace

    from sqlalchemy.engine import make_url

    from workers.bench_ingest import bench_redis_url

    if database_url is None:
        configured = settings.db.database_url
        is_pg = make_url(configured).get_backend_name() == "postgresql"
        database_url = configured if is_pg else "postgresql://postgres@127.0.0.1:5432/postgres"
    redis = redis_url or settings.redis.redis_url or "redis://127.0.0.1:6379/0"
    return replace(
        options,
        updates=updates or options.updates,
        ratings=ratings or options.ratings,
        database_url=database_url,
        redis_url=bench_redis_url(redis, 14),
        services=services,
    )


@adapters_app.command("list")
def adapters_list(
    assistant: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every adapter version with its status and metrics."""
    settings = _settings()
    from loopgram import adapters

    rows = [
        {
            "assistant": a.assistant,
            "name": a.name,
            "version": a.version,
            "kind": str(a.kind),
            "status": str(a.status),
            "created_at": a.created_at.isoformat(),
            "metrics": a.metrics,
        }
        for a in _with_db(settings, adapters.list_adapters, assistant=assistant)
    ]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("assistant", "name", "kind", "status", "created")
    for row in rows:
        table.add_row(
            row["assistant"], row["name"], row["kind"], row["status"], row["created_at"][:19]
        )
    Console().print(table)


@adapters_app.command("deploy")
def adapters_deploy(
    name: str,
    now: Annotated[bool, typer.Option("--now", help="all traffic at once, no canary")] = False,
) -> None:
    """Load an adapter on every model server replica and route traffic to it."""
    settings = _settings()
    from loopgram import adapters

    adapter = _with_db(
        settings, adapters.deploy, name=name, server=_adapter_server(settings), canary=not now
    )
    typer.echo(f"{adapter.name} is {adapter.status}")


@adapters_app.command("rollback")
def adapters_rollback(assistant: Annotated[str, typer.Option()]) -> None:
    """Drop the canary, or go back to the previous active adapter (or the base model)."""
    settings = _settings()
    from loopgram import adapters

    current = _with_db(
        settings, adapters.rollback, assistant=assistant, server=_adapter_server(settings)
    )
    typer.echo(f"{assistant} now serves {current.name if current else 'the base model'}")


def _review_db(settings: Settings) -> Any:
    """The database for the review commands; one line and exit 2 when it is missing,
    unreachable or not migrated (no review tables)."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from loopgram.db import Database, normalise_url

    url = make_url(normalise_url(settings.db.database_url))
    path = url.database
    local = url.get_backend_name() == "sqlite" and path and path != ":memory:"
    if local and not Path(str(path)).exists():  # connecting would create an empty file
        fail(f"no database at {path}: run `loopgram db upgrade` first")
    db = Database.from_settings(settings.db)
    try:
        tables = set(inspect(db.engine).get_table_names())
    except SQLAlchemyError as exc:
        db.dispose()
        fail(f"database unreachable: {str(exc).splitlines()[0]}")
    if not {"review_item", "review_decision", "interaction"} <= tables:
        db.dispose()
        fail("the database has no review tables: run `loopgram db upgrade`")
    return db


def _review_call(settings: Settings, fn: Any, **kwargs: Any) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    db = _review_db(settings)
    try:
        return db.call(fn, **kwargs)
    except SQLAlchemyError as exc:
        fail(f"database error: {str(exc).splitlines()[0]}")
    finally:
        db.dispose()


def _short(text: str | None, width: int = 40) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


@review_app.command("list")
def review_list(
    status: Annotated[
        str,
        typer.Option(help="pending, approved, rejected, corrected, withdrawn, closed or all"),
    ] = "pending",
    assistant: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many items")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Review items with their answers.

    Pending items come oldest first (as moderators get them), others newest first."""
    settings = _settings()
    from loopgram import review_stats

    choices = (*review_stats.STATUSES, review_stats.ALL)
    if status not in choices:
        fail(f"unknown status {status!r}: use {', '.join(choices)}")
    rows = _review_call(
        settings, review_stats.list_items, status=status, assistant=assistant, limit=limit
    )
    if as_json:
        typer.echo(json.dumps([row.as_dict() for row in rows], ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Column, Table

    fixed = ("id", "created (UTC)", "assistant", "reason", "status", "claimed by", "reviewer")
    texts = ("prompt", "answer")
    table = Table(
        *(Column(name, no_wrap=True) for name in fixed),
        *texts,  # only these wrap when the terminal is narrow
        title=f"review items: {status}",
    )
    for row in rows:
        table.add_row(
            str(row.id),
            row.created_at.strftime("%m-%d %H:%M"),
            row.assistant,
            row.reason,
            row.status,
            str(row.claimed_by or "—"),
            str(row.reviewer_id or "—"),
            _short(row.prompt),
            _short(row.answer),
        )
    Console().print(table)
    if not rows:
        typer.echo(f"no {status} review items", err=True)


@review_app.command("stats")
def review_stats_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The queue, decisions per moderator and their agreement.

    Pending, claimed, oldest age, review times; Cohen's kappa on items two moderators
    decided."""
    settings = _settings()
    from loopgram import review_stats

    def figures(*, session: Any) -> tuple[Any, Any]:
        return (
            review_stats.queue_stats(session=session),
            review_stats.agreement(session=session),
        )

    queue, agreement = _review_call(settings, figures)
    if as_json:
        document = {
            "queue": queue.as_dict(),
            "agreement": {str(k): v.as_dict() for k, v in agreement.items()},
        }
        typer.echo(json.dumps(document, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    summary = Table("queue", "", title="review queue")
    summary.add_row("pending", str(queue.pending))
    for reason, n in queue.pending_by_reason.items():
        summary.add_row(f"  reason {reason}", str(n))
    for name, n in queue.pending_by_assistant.items():
        summary.add_row(f"  assistant {name}", str(n))
    summary.add_row("claimed now", str(queue.claimed))
    summary.add_row("oldest pending", _duration(queue.oldest_pending_seconds))
    summary.add_row("decided, last 7 days", str(queue.decided_last_7_days))
    summary.add_row(
        f"time to review, median (last 30 days, {queue.reviewed_last_30_days} items)",
        _duration(queue.review_seconds_median),
    )
    summary.add_row("time to review, p90", _duration(queue.review_seconds_p90))
    moderators = Table(
        "moderator", *review_stats.DECISIONS, "kappa", "shared items", title="moderators"
    )
    for moderator in sorted({*queue.decisions_by_moderator, *agreement}):
        counts = queue.decisions_by_moderator.get(moderator, {})
        kappa = agreement.get(moderator)
        moderators.add_row(
            str(moderator),
            *(str(counts.get(d, 0)) for d in review_stats.DECISIONS),
            f"{kappa.kappa:.2f}" if kappa else "—",
            str(kappa.shared_items) if kappa else "0",
        )
    console = Console()
    console.print(summary)
    console.print(moderators)


@app.command()
def satisfaction(
    assistant: Annotated[str | None, typer.Option(help="only this assistant")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="write the calibration chart (PNG) to this file")
    ] = None,
    score: Annotated[
        bool,
        typer.Option("--score", help="score the answers not scored yet first (needs the ml extra)"),
    ] = False,
) -> None:
    """The satisfaction estimate: the 👍 rate predicted on every scored answer, rated or not.

    Per assistant with an active reward model: its scores calibrated to P(👍) on the rated
    answers (Platt scaling), the mean over each adapter's answers, the observed 👍 rate of
    the rated ones, and the calibration's Brier score and ECE measured out of sample."""
    settings = _settings()
    from loopgram import satisfaction as estimates_of

    if score:
        from training.answer_scores import score_pending

        db = _review_db(settings)
        try:
            for result in score_pending(db, assistants=[assistant] if assistant else None):
                typer.echo(
                    f"scored {result.scored} answers of {result.assistant} with "
                    f"{result.reward_model}" + (f" ({result.error})" if result.error else ""),
                    err=True,
                )
        finally:
            db.dispose()
    estimates = _review_call(settings, estimates_of.estimate_all, assistant=assistant)
    if not estimates:
        target = f"--assistant {assistant} " if assistant else ""
        who = assistant or "any assistant"
        fail(
            f"no active reward model for {who}: train one with "
            f"`loopgram train {target}--method reward`"
        )
    if not any(e.adapters for e in estimates.values()):
        fail(
            "no answers scored yet: the training worker scores them every "
            f"{settings.reward.satisfaction_check_seconds:g} s (or run with --score)"
        )
    if plot is not None:
        from loopgram.review_chart import render_calibration_chart

        shown = [e for _, e in sorted(estimates.items()) if e.calibrated]
        try:
            plot.write_bytes(render_calibration_chart(shown, title="Satisfaction calibration"))
        except OSError as exc:
            fail(f"cannot write {plot}: {exc.strerror or exc}")
        if not shown:
            typer.echo(f"{plot}: no calibration yet (not enough ratings)", err=True)
    if as_json:
        document = {name: e.as_dict() for name, e in estimates.items()}
        typer.echo(json.dumps(document, ensure_ascii=False))
        return
    _print_satisfaction(estimates)


def _print_satisfaction(estimates: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def share(value: float | None) -> str:
        return "—" if value is None else f"{value:.1%}"

    console = Console()
    for name, estimate in sorted(estimates.items()):
        if estimate.calibrated:
            quality = (
                f"calibrated on {estimate.rated} ratings: Brier {estimate.brier:.3f}, "
                f"ECE {estimate.ece:.3f} (out of sample)"
            )
        else:
            quality = estimate.note or "not calibrated"
        table = Table(
            "adapter",
            "predicted 👍",
            "answers",
            "observed 👍",
            "rated",
            title=f"{name} — reward model {estimate.reward_model}",
            caption=quality,
        )
        for adapter, figures in sorted(estimate.adapters.items()):
            table.add_row(
                adapter,
                share(figures.predicted),
                str(figures.answers),
                share(figures.observed),
                str(figures.rated),
            )
        console.print(table)


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
    data_dir: Annotated[Path, typer.Option(help="where the demo keeps its files")] = Path(
        "./data/demo"
    ),
    tour: Annotated[
        bool, typer.Option("--tour", help="a scripted conversation instead (about a minute)")
    ] = False,
) -> None:
    """The loop learning, in minutes: simulated people rate the real bot (local Bot API
    emulator, no token), it trains and canaries adapters, and the held-out 👍 rate is
    compared with shuffled ratings. `--tour` plays a scripted conversation instead."""
    settings = _settings()
    if tour:
        from bot.demo import run_demo

        result = _run_async(run_demo(settings, data_dir=data_dir, quiet=as_json))
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False, default=str))
        return
    from bot.simulation.command import run_demo_command

    code = run_demo_command(data_dir=data_dir, out=data_dir / "report", as_json=as_json)
    if code:
        raise typer.Exit(code)


@app.command()
def playground(
    host: Annotated[str, typer.Option(help="address to serve the page on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 = any free port")] = 8080,
    lang: Annotated[
        str | None, typer.Option(help="ru or en: the people's and the page's language")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="the playground's files")] = Path(
        "./data/playground"
    ),
    reset: Annotated[bool, typer.Option("--reset", help="start from an empty database")] = False,
    max_tokens: Annotated[int, typer.Option(min=8, help="answer length cap")] = 200,
) -> None:
    """The real bot in a browser, no Telegram account needed: the whole stack on embedded
    defaults and a local page that looks and behaves like a Telegram chat."""
    from loopgram.i18n import LANGUAGES, pick_language, t

    settings = _settings()
    ui = pick_language(None, settings.bot.default_language)
    if lang is not None and lang not in LANGUAGES:
        fail(t(ui, "playground-bad-lang", code=lang))
    language: str = lang or ui

    def ready(pg: Any) -> None:
        typer.echo(t(language, "playground-ready", url=pg.url))
        from loopgram.playground.server import is_loopback

        note = "playground-local-only" if is_loopback(host) else "playground-exposed"
        typer.echo(t(language, note, host=host))
        typer.echo(t(language, "playground-stop"))

    async def main() -> None:
        from bot.playground import run_playground

        typer.echo(t(language, "playground-starting"), err=True)
        await run_playground(
            settings,
            host=host,
            port=port,
            lang=language,
            data_dir=data_dir,
            reset=reset,
            max_tokens=max_tokens,
            stop=_stop_on_signals(),
            on_ready=ready,
        )

    _run_async(main())
    typer.echo(t(language, "playground-stopped", dir=str(data_dir)), err=True)


@app.command()
def simulate(
    rounds: Annotated[int, typer.Option(min=1, help="serve → train → canary rounds")] = 3,
    people: Annotated[int, typer.Option(min=2, help="simulated people")] = 16,
    assistants: Annotated[str, typer.Option(help="comma-separated: paraphrase,summarize")] = (
        "paraphrase"
    ),
    languages: Annotated[
        str, typer.Option(help="comma-separated en,ru (the built-in model writes English only)")
    ] = "en",
    passes: Annotated[int, typer.Option(min=1, help="times each traffic prompt is asked")] = 2,
    traffic: Annotated[int, typer.Option(min=0, help="prompts per round at most; 0 = all")] = 0,
    eval_samples: Annotated[int, typer.Option(min=1, help="answers per held-out prompt")] = 4,
    max_tokens: Annotated[int, typer.Option(min=8, help="answer length cap")] = 64,
    noise: Annotated[float, typer.Option(min=0, max=1, help="chance a press is wrong")] = 0.1,
    seed: Annotated[int, typer.Option(help="people, prompts and training seed")] = 0,
    control: Annotated[bool, typer.Option(help="train the shuffled-ratings control")] = True,
    control_draws: Annotated[
        int,
        typer.Option(
            min=1,
            help="shuffled controls, each on its own shuffle of the same data: their mean "
            "and range (one draw drifts with its shuffle)",
        ),
    ] = 3,
    moderators: Annotated[
        int, typer.Option(min=0, help="simulated moderators working the review queue")
    ] = 1,
    correct_share: Annotated[
        float, typer.Option(min=0, max=1, help="share of fixable disliked answers corrected")
    ] = 0.5,
    canary_ratings: Annotated[
        int,
        typer.Option(
            min=20,
            help="live canary ratings by which a canary must show it is not worse, else it "
            "is rolled back",
        ),
    ] = 80,
    train_config: Annotated[
        Path | None,
        typer.Option(help="YAML of training options (TrainConfig fields) over the simulation's"),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="policy training: dpo, orpo or kto (default: --train-config's, dpo)"),
    ] = None,
    best_of_n: Annotated[
        int,
        typer.Option(
            help="answer candidates the reward model picks from, 2-8 (1 = off); trains the "
            "reward model every round"
        ),
    ] = 1,
    reward_pairs: Annotated[
        bool,
        typer.Option(
            "--reward-pairs",
            help="also train the policy on best-of-n pairs the reward model labelled "
            "(needs --best-of-n 2 or more)",
        ),
    ] = False,
    measure_discarded: Annotated[
        bool,
        typer.Option(
            "--measure-discarded",
            help="after the rounds, measure each candidate the gate rejected or the canary "
            "rolled back on the held-out prompts too",
        ),
    ] = False,
    data_dir: Annotated[Path, typer.Option(help="the simulated deployment's files")] = Path(
        "./data/simulation"
    ),
    out: Annotated[Path, typer.Option(help="report folder (JSON, PNG, Markdown, HTML)")] = Path(
        "./data/simulation/report"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """Closed-loop simulation: simulated people rate the real bot, the loop trains, and the
    held-out 👍 rate per round is compared with no training and with shuffled ratings."""
    _settings()
    from bot.simulation.command import run_simulation_command

    code = run_simulation_command(
        rounds=rounds,
        people=people,
        assistants=assistants,
        languages=languages,
        passes=passes,
        traffic=traffic,
        eval_samples=eval_samples,
        max_tokens=max_tokens,
        noise=noise,
        seed=seed,
        control=control,
        control_draws=control_draws,
        moderators=moderators,
        correct_share=correct_share,
        canary_ratings=canary_ratings,
        train_config=train_config,
        method=method,
        best_of_n=best_of_n,
        reward_pairs=reward_pairs,
        measure_discarded=measure_discarded,
        data_dir=data_dir,
        out=out,
        as_json=as_json,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def loadtest(
    users: Annotated[int, typer.Option(min=1, help="simulated users")] = 50,
    minutes: Annotated[float, typer.Option(min=0.05, help="length of the run")] = 2.0,
    think_seconds: Annotated[
        float, typer.Option(min=0, help="a user's pause between actions (±50 %)")
    ] = 2.0,
    model: Annotated[
        str, typer.Option(help="fast (scripted, in-process) or builtin (SmolLM2, slow)")
    ] = "fast",
    answer_timeout: Annotated[
        float, typer.Option(min=1, help="seconds without an answer that count as failed")
    ] = 60.0,
    data_dir: Annotated[
        Path | None, typer.Option(help="keep the run's files here; default a temporary dir")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """Simulated users talk to the real bot (its own process) through the local Bot API
    emulator with Telegram's limits, on 127.0.0.1 only; reports answered / failed, latency,
    rates and each process' memory, which must stay flat. Exit 1 on failures or growth."""
    settings = _settings()
    from loopgram.i18n import pick_language, t

    lang = pick_language(None, settings.bot.default_language)
    if model not in ("fast", "builtin"):
        fail(t(lang, "loadtest-bad-model", model=model))
    from bot.loadtest import LoadtestError, LoadtestOptions, loadtest_command

    options = LoadtestOptions(
        users=users,
        minutes=minutes,
        think_seconds=think_seconds,
        model="fast" if model == "fast" else "builtin",
        answer_timeout=answer_timeout,
        data_dir=data_dir,
    )
    try:
        code = loadtest_command(options, as_json=as_json, lang=lang)
    except LoadtestError as exc:
        fail(t(lang, exc.key, **exc.params))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if code:
        raise typer.Exit(code)


@app.command("backup")
def backup_command(
    path: Annotated[Path, typer.Argument(help="the archive to write (.tar.gz)")],
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """The database (every table, portable JSON lines) and the knowledge base (Qdrant points)
    in one tar.gz archive."""
    _backup_or_restore("backup", path, force=force, as_json=as_json)


@app.command("restore")
def restore_command(
    path: Annotated[Path, typer.Argument(help="an archive written by `loopgram backup`")],
    force: Annotated[
        bool, typer.Option("--force", help="replace what the database and knowledge base hold")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """Restore a backup into an empty database at the backup's revision (SQLite or Postgres)."""
    _backup_or_restore("restore", path, force=force, as_json=as_json)


def _backup_or_restore(what: str, path: Path, *, force: bool, as_json: bool) -> None:
    settings = _settings()
    from loopgram import backup as ops
    from loopgram.i18n import pick_language, t

    lang = pick_language(None, settings.bot.default_language)

    def progress(name: str, count: int) -> None:
        if not as_json:
            typer.echo(t(lang, "backup-progress", what=name, count=count), err=True)

    run = ops.backup if what == "backup" else ops.restore
    try:
        summary = run(settings, path, force=force, progress=progress)
    except LoopgramError as exc:
        fail(t(lang, exc.key, **exc.params))
    except Exception as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        fail(t(lang, "backup-failed", detail=detail))
    if as_json:
        typer.echo(json.dumps(summary.as_json(), ensure_ascii=False))
        return
    typer.echo(
        t(
            lang,
            "backup-done" if what == "backup" else "restore-done",
            path=str(path),
            rows=summary.rows,
            tables=len(summary.tables),
            points=summary.points,
            revision=summary.revision,
            size=max(1, summary.bytes // 1024),
        )
    )


def _stop_on_signals() -> asyncio.Event:
    """SIGTERM (docker stop) and SIGINT end the process cleanly: in-flight work finishes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _run_async(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return None
    except LoopgramError as exc:
        fail(str(exc))


def main() -> None:
    try:
        app()
    except Exception as exc:
        problem = _database_problem(exc)
        if problem is None:
            raise
        _say_error(problem)  # outside click's handling, where `fail`'s typer.Exit would not land
        raise SystemExit(2) from None


def _database_problem(exc: BaseException) -> str | None:
    """One line for the database errors any command meets before it does anything: a schema
    never migrated, a server that does not answer. Anything else keeps its traceback."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if not isinstance(exc, OperationalError | ProgrammingError):
        return None
    detail = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
    lowered = detail.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"the database is not migrated ({detail}): run `loopgram db upgrade`"
    unreachable = ("connection", "could not connect", "unable to open database file")
    if isinstance(exc, OperationalError) and any(word in lowered for word in unreachable):
        return f"database unreachable: {detail}"
    return None


if __name__ == "__main__":
    main()
