"""`loopgram loadtest`: simulated users talk to the real bot for minutes, on loopback only.

The bot runs as its own process (`loopgram bot`, polling, embedded worker, its training
worker as a child), exactly as deployed, against the Bot API emulator in this process with
Telegram's real limits active (the emulator enforces flood control too). The model is either
a scripted OpenAI-compatible server in this process with a small fixed token delay (`fast`:
the bot is measured, not the model) or `loopgram serve-model` as a separate process
(`builtin`: the local SmolLM2, slow).

Each simulated user is a closed loop: act, wait for the bot's answer (or give up after the
answer timeout: a failure), think, act again. Actions mix questions in the private chat,
questions in a group (with a mention), 👍 / 👎 / 🔄 presses on the last answer and /help.
The resident memory of every process of the run is sampled every few seconds; the growth
between the end of the warm-up (the first 20 % of the run) and the end must stay under a
bound (5 % and 20 MB) for the verdict "flat". Two signals are reported per process: that
end-to-end growth (medians of the samples just after the warm-up and of the last 10 % of the
run, so a single garbage-collection spike does not decide) and the least-squares slope of all
samples after the warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Kind = Literal["question", "group_question", "regenerate", "help", "press"]

WARMUP_FRACTION = 0.2
END_FRACTION = 0.1
MAX_GROWTH_PCT = 5.0
MAX_GROWTH_MB = 20.0
MIN_SAMPLES_AFTER_WARMUP = 4
USERS_PER_GROUP = 10  # with GROUP_SHARE: about 6 questions a minute a group
GROUP_SHARE = 0.03  # a group allows 20 messages a minute: group questions must stay rare
HELP_SHARE = 0.04
PRESS_SHARES = (("👍", 0.15), ("👎", 0.07), ("🔄", 0.05))
FAST_REPLY = (
    "A short answer from the scripted load-test model: plan the three most important tasks "
    "first, then fit the rest around them."
)
FAST_TOKEN_DELAY = 0.01
BOT_TOKEN = "770077:LOADTEST-emulated-token"  # noqa: S105 - the emulator's, not a secret
FIRST_USER, FIRST_GROUP = 7_700_000, -1_007_700_000
WATCH_INTERVAL = 0.02
# This process: the emulator (which keeps every call and message: not judged), the users and
# the fast model.
DRIVER = "driver"
# Environment the bot must not inherit: anything pointing outside this run or binding ports.
_FOREIGN_ENV = (
    "REDIS_URL",
    "QDRANT_URL",
    "QDRANT_API_KEY",
    "METRICS_PORT",
    "METRICS_HOST",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_HOST",
    "WEBHOOK_PORT",
    "ALLOWED_CHAT_IDS",
    "MODERATOR_CHAT_ID",
    "ADMIN_IDS",
    "MODERATOR_IDS",
    "LLM_API_KEY",
    "LLM_REPLICAS",
    "LLM_MODEL",
    "TELEGRAM_API_URL",
    "TELEGRAM_BOT_TOKEN",
    "DEFAULT_LANGUAGE",
)


class LoadtestError(Exception):
    """A problem the command reports in one line (message key + parameters)."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass(frozen=True)
class LoadtestOptions:
    users: int = 50
    minutes: float = 2.0
    think_seconds: float = 2.0
    model: Literal["fast", "builtin"] = "fast"
    answer_timeout: float = 60.0
    data_dir: Path | None = None
    sample_seconds: float | None = None  # default: 2 s, finer for short runs
    seed: int = 0

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    @property
    def sample_interval(self) -> float:
        if self.sample_seconds is not None:
            return self.sample_seconds
        return max(0.25, min(2.0, self.seconds / 40))


# --- memory -------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a live process (Linux /proc), else None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                    stat = f.read()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1] == str(pid):
                children.append(int(entry.name))
    return children


def process_name(pid: int) -> str:
    """The loopgram command a process runs ("worker"), else its program name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return str(pid)
    if "loopgram.cli" in argv and argv.index("loopgram.cli") + 1 < len(argv):
        return argv[argv.index("loopgram.cli") + 1]
    return Path(argv[0]).name if argv else str(pid)


@dataclass
class MemorySeries:
    """RSS samples of one process: (seconds since the run started, bytes)."""

    role: str
    pid: int
    judged: bool
    samples: list[tuple[float, int]] = field(default_factory=list)


def _median_in(samples: Sequence[tuple[float, int]], start: float, end: float) -> float | None:
    values = [rss for at, rss in samples if start <= at <= end]
    return statistics.median(values) if values else None


def judge_growth(
    samples: Sequence[tuple[float, int]],
    duration: float,
    *,
    warmup_fraction: float = WARMUP_FRACTION,
    end_fraction: float = END_FRACTION,
    max_pct: float = MAX_GROWTH_PCT,
    max_mb: float = MAX_GROWTH_MB,
) -> JsonDict:
    """Growth of RSS from the end of the warm-up to the end of the run, and a verdict.

    Baseline: the median of the samples in the `end_fraction` of the run right after the
    warm-up; end: the median of the last `end_fraction`. "flat" needs the growth under both
    `max_pct` percent and `max_mb` MB; "growing" otherwise; "unknown" with too few samples.
    The slope (least squares over every sample after the warm-up, MB per minute) is the
    second signal, reported beside it.
    """
    warm_end = warmup_fraction * duration
    window = max(end_fraction * duration, 1e-9)
    after = [(at, rss) for at, rss in samples if at >= warm_end]
    result: JsonDict = {
        "samples": len(samples),
        "start_mb": _mb(samples[0][1]) if samples else None,
        "peak_mb": _mb(max(rss for _, rss in samples)) if samples else None,
        "warm_mb": None,
        "end_mb": None,
        "growth_mb": None,
        "growth_pct": None,
        "slope_mb_per_min": None,
        "verdict": "unknown",
    }
    if len(after) < MIN_SAMPLES_AFTER_WARMUP:
        return result
    warm = _median_in(after, warm_end, warm_end + window) or float(after[0][1])
    end_start = max(warm_end + window, duration - window)
    end = _median_in(after, end_start, math.inf) or float(after[-1][1])
    growth = end - warm
    pct = 100.0 * growth / warm if warm else 0.0
    result.update(
        warm_mb=_mb(warm),
        end_mb=_mb(end),
        growth_mb=round(growth / 2**20, 2),
        growth_pct=round(pct, 2),
        slope_mb_per_min=round(_slope(after) * 60 / 2**20, 3),
        verdict="flat" if growth / 2**20 < max_mb and pct < max_pct else "growing",
    )
    return result


def _slope(points: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope, bytes per second."""
    n = len(points)
    mean_t = sum(at for at, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((at - mean_t) ** 2 for at, _ in points)
    if var == 0:
        return 0.0
    return sum((at - mean_t) * (v - mean_v) for at, v in points) / var


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


class MemorySampler:
    """Samples the RSS of the given processes and of every child they start."""

    def __init__(self, roots: dict[str, tuple[int, bool]]) -> None:
        """`roots`: role -> (pid, judged). Children of a root are added as `<role>/child`."""
        self.roots = roots
        self.series: dict[int, MemorySeries] = {}
        self.started = time.monotonic()

    def sample(self) -> None:
        at = time.monotonic() - self.started
        for role, (pid, judged) in self.roots.items():
            self._record(role, pid, judged, at)
            if pid != os.getpid():  # this process' own children are ours to ignore
                for child in child_pids(pid):
                    self._record(f"{role} › {process_name(child)}", child, judged, at)

    def _record(self, role: str, pid: int, judged: bool, at: float) -> None:
        rss = rss_bytes(pid)
        if rss is None:
            return
        series = self.series.setdefault(pid, MemorySeries(role, pid, judged))
        series.samples.append((at, rss))

    def report(self, duration: float) -> list[JsonDict]:
        return [
            {
                "process": s.role,
                "pid": s.pid,
                "judged": s.judged,
                **judge_growth(s.samples, duration),
            }
            for s in self.series.values()
        ]


def memory_verdict(processes: Sequence[JsonDict]) -> str:
    judged = [p["verdict"] for p in processes if p["judged"]]
    if not judged or "unknown" in judged:
        return "unknown"
    return "flat" if all(v == "flat" for v in judged) else "growing"


# --- traffic ------------------------------------------------------------------------------


@dataclass
class Pending:
    kind: Kind
    chat_id: int
    sent: float
    key: int | str | None = None  # question message id, or callback query id
    done: asyncio.Future[JsonDict | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class Outcome:
    kind: Kind
    latency: float | None  # None: no answer within the timeout
    throttled: bool = False


def _has_rating_buttons(message: JsonDict) -> bool:
    markup = message.get("reply_markup") or {}
    return any(
        str(b.get("text", "")).startswith("👍")
        for row in markup.get("inline_keyboard", [])
        for b in row
    )


class AnswerWatcher:
    """Reads what the bot sent, in order, and settles the pending action it answers.

    Private chats are closed loops (one action pending per chat); group answers are matched
    to their question by `reply_to_message`. An answer is the first time a bot message shows
    the rating buttons (later edits of it, e.g. a 👍 marked, are not answers again)."""

    def __init__(self, emulator: Any) -> None:
        self._state = emulator._core.state  # incremental reads; the public API copies all
        self._outputs = 0
        self._answers = 0
        self.private: dict[int, Pending] = {}
        self.group: dict[tuple[int, int], Pending] = {}
        self.presses: dict[str, Pending] = {}
        self._answered: set[tuple[int, int]] = set()

    def expect(self, pending: Pending) -> None:
        if pending.kind == "press":
            self.presses[str(pending.key)] = pending
        elif pending.kind == "group_question":
            self.group[(pending.chat_id, int(pending.key or 0))] = pending
        else:
            self.private[pending.chat_id] = pending

    def forget(self, pending: Pending) -> None:
        """Stop waiting for `pending` (timed out): a late answer settles nothing."""
        if pending.kind == "press":
            self.presses.pop(str(pending.key), None)
        elif pending.kind == "group_question":
            self.group.pop((pending.chat_id, int(pending.key or 0)), None)
        elif self.private.get(pending.chat_id) is pending:
            del self.private[pending.chat_id]

    def poll(self) -> None:
        outputs = self._state.outputs
        for output in outputs[self._outputs :]:
            self._on_output(output.chat_id, output.kind, output.message)
        self._outputs = len(outputs)
        answers = self._state.callback_answers
        for answer in answers[self._answers :]:
            pending = self.presses.pop(str(answer.get("callback_query_id")), None)
            _settle(pending, answer)
        self._answers = len(answers)

    def _on_output(self, chat_id: int, kind: str, message: JsonDict) -> None:
        reply_to = (message.get("reply_to_message") or {}).get("message_id")
        if chat_id < 0:
            if _has_rating_buttons(message) and reply_to is not None:
                ident = (chat_id, int(message["message_id"]))
                if ident not in self._answered:
                    self._answered.add(ident)
                    _settle(self.group.pop((chat_id, int(reply_to)), None), message)
            return
        pending = self.private.get(chat_id)
        if pending is None or kind != "sent":
            return
        text = str(message.get("text", ""))
        if pending.kind == "help":
            if not _has_rating_buttons(message):
                _settle(self.private.pop(chat_id), message)
            return
        if _has_rating_buttons(message):
            if pending.kind == "question" and reply_to not in (None, pending.key):
                return  # a late answer to an earlier question that already timed out
            _settle(self.private.pop(chat_id), message)
        elif text.startswith("⏳") and reply_to == pending.key:
            _settle(self.private.pop(chat_id), {**message, "throttled": True})


def _settle(pending: Pending | None, value: JsonDict) -> None:
    if pending is not None and not pending.done.done():
        pending.done.set_result(value)


class Traffic:
    """The simulated users: each one a closed loop of act, wait, think."""

    def __init__(self, emulator: Any, options: LoadtestOptions) -> None:
        self.emulator = emulator
        self.options = options
        self.watcher = AnswerWatcher(emulator)
        self.outcomes: list[Outcome] = []
        self.updates_sent = 0
        groups = max(1, math.ceil(options.users / USERS_PER_GROUP))
        self.groups = [emulator.group(FIRST_GROUP - g, f"Load group {g}") for g in range(groups)]
        self.users = [
            emulator.user(FIRST_USER + i, f"Load{i}", language_code="ru" if i % 3 == 0 else "en")
            for i in range(options.users)
        ]

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.watcher.poll()
            await asyncio.sleep(WATCH_INTERVAL)
        self.watcher.poll()

    async def run_user(self, index: int, until: float) -> None:
        rng = random.Random(self.options.seed * 1_000_003 + index)
        user = self.users[index]
        group = self.groups[index % len(self.groups)]
        last_answer: JsonDict | None = None
        asked = 0
        # Spread the first actions over one think time so users do not all start at once.
        await asyncio.sleep(rng.uniform(0, max(self.options.think_seconds, 0.1)))
        while time.monotonic() < until:
            roll = rng.random()
            pending: Pending
            if last_answer is not None and roll < sum(s for _, s in PRESS_SHARES):
                button = _pick(PRESS_SHARES, roll)
                pending = await self._press(user, last_answer, button)
                last_answer = None
            elif roll > 1 - HELP_SHARE:
                pending = await self._send(user, "/help", "help", None)
            elif roll > 1 - HELP_SHARE - GROUP_SHARE:
                text = f"@loopgram_bot group question {asked} from {user.first_name}"
                pending = await self._send(user, text, "group_question", group)
            else:
                text = f"question {asked}: how do I plan week {rng.randint(1, 52)}?"
                pending = await self._send(user, text, "question", None)
            asked += 1
            result = await self._wait(pending)
            answered = result is not None and not result.get("throttled")
            if answered and pending.kind in ("question", "regenerate"):
                last_answer = result
            think = self.options.think_seconds
            await asyncio.sleep(rng.uniform(0.5 * think, 1.5 * think))

    async def _send(self, user: Any, text: str, kind: Kind, chat: Any) -> Pending:
        sent = time.monotonic()
        message = await user.send_text(text, chat=chat)
        self.updates_sent += 1
        pending = Pending(kind, int(message["chat"]["id"]), sent, int(message["message_id"]))
        self.watcher.expect(pending)
        return pending

    async def _press(self, user: Any, answer: JsonDict, button: str) -> Pending:
        chat_id = int(answer["chat"]["id"])
        if button == "🔄":
            # The new version is the answer awaited; the press itself is acknowledged too.
            pending = Pending("regenerate", chat_id, time.monotonic())
            self.watcher.expect(pending)
            await user.press(answer, button)
            self.updates_sent += 1
            return pending
        sent = time.monotonic()
        query_id = await user.press(answer, button)
        self.updates_sent += 1
        pending = Pending("press", chat_id, sent, query_id)
        self.watcher.expect(pending)
        return pending

    async def _wait(self, pending: Pending) -> JsonDict | None:
        try:
            result = await asyncio.wait_for(
                asyncio.shield(pending.done), timeout=self.options.answer_timeout
            )
        except TimeoutError:
            self.watcher.forget(pending)
            self.outcomes.append(Outcome(pending.kind, None))
            return None
        throttled = bool(result and result.get("throttled"))
        latency = time.monotonic() - pending.sent
        self.outcomes.append(Outcome(pending.kind, latency, throttled))
        return result


def _pick(shares: Sequence[tuple[str, float]], roll: float) -> str:
    total = 0.0
    for name, share in shares:
        total += share
        if roll < total:
            return name
    return shares[-1][0]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of `values` (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(outcomes: Sequence[Outcome]) -> JsonDict:
    def figures(items: Sequence[Outcome]) -> JsonDict:
        latencies = [o.latency for o in items if o.latency is not None and not o.throttled]
        return {
            "sent": len(items),
            "answered": len(latencies),
            "throttled": sum(o.throttled for o in items),
            "failed": sum(o.latency is None for o in items),
            "p50_s": _round(percentile(latencies, 50)),
            "p95_s": _round(percentile(latencies, 95)),
            "max_s": _round(max(latencies, default=None)),
        }

    model = [o for o in outcomes if o.kind in ("question", "group_question", "regenerate")]
    kinds: tuple[Kind, ...] = ("question", "group_question", "regenerate", "press", "help")
    total = figures(outcomes)
    return {
        "actions": total["sent"],
        "answered": total["answered"],
        "failed": total["failed"],
        "throttled": total["throttled"],
        # The headline latency is that of model answers: what a user waits for.
        "p50_s": figures(model)["p50_s"],
        "p95_s": figures(model)["p95_s"],
        "by_kind": {k: figures([o for o in outcomes if o.kind == k]) for k in kinds},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- the run ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bot_environment(data_dir: Path, api_url: str, llm_url: str) -> dict[str, str]:
    """The bot's environment: this run's data dir, the emulator, the model, real limits."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env.update(
        {
            "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
            "TELEGRAM_API_URL": api_url,
            "BOT_MODE": "polling",
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": f"sqlite:///{data_dir / 'loopgram.db'}",
            "QDRANT_PATH": str(data_dir / "qdrant"),
            "ADAPTERS_DIR": str(data_dir / "adapters"),
            "LLM_BASE_URL": llm_url,
            # Telegram's real limits, whatever the caller's environment says.
            "TELEGRAM_PRIVATE_PER_SECOND": "1",
            "TELEGRAM_GROUP_PER_MINUTE": "20",
            "TELEGRAM_GLOBAL_PER_SECOND": "30",
            # The simulated users ask faster than a person: the per-user quota (the bot's
            # own policy, tested elsewhere) would answer most of them with "slow down".
            "USER_RATE_LIMIT": "0",
            "LOG_LEVEL": os.environ.get("LOADTEST_BOT_LOG_LEVEL", "WARNING"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _spawn(
    args: list[str], env: dict[str, str], cwd: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    # cwd = the data dir, so no stray .env of the caller's folder is read.
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "loopgram.cli", *args],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def _stop(process: subprocess.Popen[bytes], within: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, within)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


async def _wait_ready(
    check: Callable[[], bool],
    process: subprocess.Popen[bytes],
    within: float,
    what: str,
    log_path: Path,
) -> None:
    deadline = time.monotonic() + within
    while not check():
        if process.poll() is not None:
            raise LoadtestError(
                "loadtest-process-died", what=what, code=process.returncode, log=_tail(log_path)
            )
        if time.monotonic() > deadline:
            raise LoadtestError(
                "loadtest-not-ready", what=what, seconds=int(within), log=_tail(log_path)
            )
        await asyncio.sleep(0.1)


def _tail(path: Path, lines: int = 3) -> str:
    """The last lines of a process' log, for the error (a temporary data dir goes away)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:]) or "empty log"


@contextlib.asynccontextmanager
async def _data_dir(given: Path | None) -> AsyncIterator[Path]:
    if given is not None:
        await asyncio.to_thread(given.mkdir, parents=True, exist_ok=True)
        yield await asyncio.to_thread(given.resolve)
        return
    with tempfile.TemporaryDirectory(prefix="loopgram-loadtest-") as folder:
        yield Path(folder)


@contextlib.asynccontextmanager
async def _model_server(
    options: LoadtestOptions, data_dir: Path, processes: dict[str, tuple[int, bool]]
) -> AsyncIterator[str]:
    if options.model == "fast":
        from training.model_server.app import create_app, start_server
        from training.model_server.scripted import ScriptedBackend

        backend = ScriptedBackend(FAST_REPLY, token_delay=FAST_TOKEN_DELAY)
        runner, url = await start_server(create_app(backend), "127.0.0.1", 0)
        try:
            yield url
        finally:
            await runner.cleanup()
        return
    import aiohttp

    port = _free_port()
    log_path = data_dir / "model-server.log"
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env["DATA_DIR"] = str(data_dir)
    server = _spawn(
        ["serve-model", "--host", "127.0.0.1", "--port", str(port)], env, data_dir, log_path
    )
    processes["model server"] = (server.pid, True)
    ready = False

    async def probe() -> None:
        nonlocal ready
        async with aiohttp.ClientSession() as session:
            while not ready and server.poll() is None:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://127.0.0.1:{port}/ready") as response:
                        ready = response.status == 200
                await asyncio.sleep(0.5)

    prober = asyncio.create_task(probe())
    try:
        await _wait_ready(lambda: ready, server, 600, "model server", log_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        prober.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await prober
        await _stop(server)


async def run_loadtest(
    options: LoadtestOptions, *, progress: Callable[[float, int, int], None] | None = None
) -> JsonDict:
    """Run the load test and return the report (the `--json` document)."""
    from loopgram.emulator import BotApiEmulator

    processes: dict[str, tuple[int, bool]] = {DRIVER: (os.getpid(), False)}
    # The fast model server's access log would print a line per answer.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    emulator = BotApiEmulator(token=BOT_TOKEN, enforce_limits=True)
    await emulator.start("127.0.0.1", 0)
    try:
        async with (
            _data_dir(options.data_dir) as data_dir,
            _model_server(options, data_dir, processes) as llm_url,
        ):
            log_path = data_dir / "bot.log"
            bot = _spawn(
                ["bot"], bot_environment(data_dir, emulator.api_url, llm_url), data_dir, log_path
            )
            processes["bot"] = (bot.pid, True)
            try:
                core = emulator._core
                # A long poll is recorded when it returns; its arrival bumps the generation.
                await _wait_ready(
                    lambda: core.updates.poll_generation > 0,
                    bot,
                    120,
                    "bot",
                    log_path,
                )
                report = await _drive(emulator, options, processes, progress)
                report["data_dir"] = None if options.data_dir is None else str(data_dir)
                report["bot_log"] = str(log_path) if options.data_dir is not None else None
                if bot.poll() is not None:
                    raise LoadtestError(
                        "loadtest-process-died",
                        what="bot",
                        code=bot.returncode,
                        log=_tail(log_path),
                    )
            finally:
                await _stop(bot)
    finally:
        await emulator.stop()
    return report


async def _drive(
    emulator: Any,
    options: LoadtestOptions,
    processes: dict[str, tuple[int, bool]],
    progress: Callable[[float, int, int], None] | None,
) -> JsonDict:
    traffic = Traffic(emulator, options)
    sampler = MemorySampler(processes)
    core = emulator._core
    calls_before = len(core.calls)
    stop_watching = asyncio.Event()
    watcher = asyncio.create_task(traffic.watch(stop_watching))
    started = time.monotonic()
    sampler.started = started
    until = started + options.seconds
    users = [asyncio.create_task(traffic.run_user(i, until)) for i in range(options.users)]

    async def sample_memory() -> None:
        while True:
            await asyncio.to_thread(sampler.sample)
            if progress is not None:
                answered = sum(o.latency is not None for o in traffic.outcomes)
                failed = sum(o.latency is None for o in traffic.outcomes)
                progress(min(time.monotonic() - started, options.seconds), answered, failed)
            if time.monotonic() >= until:
                return
            await asyncio.sleep(min(options.sample_interval, max(0.0, until - time.monotonic())))

    await sample_memory()
    traffic_seconds = time.monotonic() - started
    # Users stop acting at the deadline; what is pending gets its answer timeout to arrive.
    await asyncio.gather(*users)
    stop_watching.set()
    await watcher
    elapsed = time.monotonic() - started
    calls = core.calls[calls_before:]
    sends = [c for c in calls if c.method not in ("getUpdates", "getMe")]
    summary = summarize(traffic.outcomes)
    memory = sampler.report(options.seconds)
    return {
        "users": options.users,
        "minutes": options.minutes,
        "think_seconds": options.think_seconds,
        "model": options.model,
        "answer_timeout_s": options.answer_timeout,
        "groups": len(traffic.groups),
        "seconds": round(traffic_seconds, 1),
        "drain_seconds": round(elapsed - traffic_seconds, 1),
        **summary,
        "updates_sent": traffic.updates_sent,
        "updates_per_s": round(traffic.updates_sent / traffic_seconds, 2),
        "bot_api_calls": len(sends),
        "bot_api_calls_per_s": round(len(sends) / elapsed, 2),
        "bot_api_errors": sum(not c.ok for c in sends),
        "limit_violations": emulator.limit_violations,
        "memory": {
            "sample_seconds": round(options.sample_interval, 2),
            "warmup_fraction": WARMUP_FRACTION,
            "bound": {"max_growth_pct": MAX_GROWTH_PCT, "max_growth_mb": MAX_GROWTH_MB},
            "verdict": memory_verdict(memory),
            "processes": memory,
        },
        "host": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]},
    }


# --- the command --------------------------------------------------------------------------


_KIND_KEYS = {
    "question": "loadtest-kind-question",
    "group_question": "loadtest-kind-group-question",
    "regenerate": "loadtest-kind-regenerate",
    "press": "loadtest-kind-press",
    "help": "loadtest-kind-help",
}
_KIND_COLUMNS = (
    "loadtest-col-kind",
    "loadtest-col-sent",
    "loadtest-col-answered",
    "loadtest-col-failed",
    "loadtest-col-p50",
    "loadtest-col-p95",
)
_MEMORY_COLUMNS = (
    "loadtest-col-process",
    "loadtest-col-pid",
    "loadtest-col-start",
    "loadtest-col-warm",
    "loadtest-col-end",
    "loadtest-col-peak",
    "loadtest-col-growth",
    "loadtest-col-slope",
    "loadtest-col-verdict",
)
_VERDICT_KEYS = {
    "flat": "loadtest-verdict-flat",
    "growing": "loadtest-verdict-growing",
    "unknown": "loadtest-verdict-unknown",
}


def render(report: JsonDict, lang: str) -> list[Any]:
    """The report as rich tables (texts from the locale files)."""
    from rich.table import Table

    from loopgram.i18n import t

    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} s"

    summary = Table(
        title=t(
            lang,
            "loadtest-title",
            users=str(report["users"]),
            seconds=f"{report['seconds']:.0f}",
            model=report["model"],
        )
    )
    summary.add_column(t(lang, "loadtest-col-figure"))
    summary.add_column(t(lang, "loadtest-col-value"), justify="right")
    rows = [
        ("loadtest-answered", str(report["answered"])),
        ("loadtest-failed", str(report["failed"])),
        ("loadtest-throttled", str(report["throttled"])),
        ("loadtest-latency", f"{seconds(report['p50_s'])} / {seconds(report['p95_s'])}"),
        ("loadtest-updates-rate", f"{report['updates_per_s']:.1f}"),
        ("loadtest-api-rate", f"{report['bot_api_calls_per_s']:.1f}"),
        ("loadtest-limit-violations", str(report["limit_violations"])),
    ]
    for key, value in rows:
        summary.add_row(t(lang, key, timeout=f"{report['answer_timeout_s']:.0f}"), value)

    kinds = Table(title=t(lang, "loadtest-kinds-title"))
    for index, key in enumerate(_KIND_COLUMNS):
        kinds.add_column(t(lang, key), justify="left" if index == 0 else "right")
    for kind, figures in report["by_kind"].items():
        kinds.add_row(
            t(lang, _KIND_KEYS[kind]),
            str(figures["sent"]),
            str(figures["answered"]),
            str(figures["failed"]),
            seconds(figures["p50_s"]),
            seconds(figures["p95_s"]),
        )

    memory = report["memory"]
    mem = Table(
        title=t(lang, "loadtest-memory-title", warmup=f"{100 * memory['warmup_fraction']:.0f}")
    )
    for index, key in enumerate(_MEMORY_COLUMNS):
        mem.add_column(t(lang, key), justify="left" if index == 0 else "right")

    def mb(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    for proc in memory["processes"]:
        growth = (
            "—"
            if proc["growth_mb"] is None
            else f"{proc['growth_mb']:+.1f} MB ({proc['growth_pct']:+.1f} %)"
        )
        verdict = t(lang, _VERDICT_KEYS[proc["verdict"]])
        if not proc["judged"]:
            verdict = t(lang, "loadtest-not-judged")
        mem.add_row(
            proc["process"],
            str(proc["pid"]),
            mb(proc["start_mb"]),
            mb(proc["warm_mb"]),
            mb(proc["end_mb"]),
            mb(proc["peak_mb"]),
            growth,
            "—" if proc["slope_mb_per_min"] is None else f"{proc['slope_mb_per_min']:+.2f}",
            verdict,
        )
    return [summary, kinds, mem]


def loadtest_command(options: LoadtestOptions, *, as_json: bool, lang: str) -> int:
    """Run, print the tables (or one JSON document), and return the exit code: 0 when every
    action was answered and memory stayed flat, 1 otherwise (2 for a run that could not run,
    raised as LoadtestError)."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from loopgram.i18n import t

    err = Console(stderr=True)
    err.print(
        t(
            lang,
            "loadtest-starting",
            users=str(options.users),
            minutes=f"{options.minutes:g}",
            model=options.model,
        )
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=options.seconds)

        def progress(elapsed: float, answered: int, failed: int) -> None:
            text = t(
                lang,
                "loadtest-progress",
                elapsed=f"{elapsed:.0f}",
                total=f"{options.seconds:.0f}",
                answered=str(answered),
                failed=str(failed),
            )
            bar.update(task, completed=elapsed, description=text)

        report = asyncio.run(run_loadtest(options, progress=progress))
    verdict = report["memory"]["verdict"]
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        out = Console()
        for table in render(report, lang):
            out.print(table)
        out.print(t(lang, "loadtest-driver-note"))
        bound = report["memory"]["bound"]
        out.print(
            t(
                lang,
                "loadtest-memory-verdict",
                verdict=t(lang, _VERDICT_KEYS[verdict]),
                pct=f"{bound['max_growth_pct']:g}",
                mb=f"{bound['max_growth_mb']:g}",
            )
        )
        host = report["host"]
        out.print(
            t(
                lang,
                "loadtest-shared-host",
                cpus=str(host["cpus"]),
                load=" ".join(f"{x:.1f}" for x in host["load_avg"]),
            )
        )
    return 0 if report["failed"] == 0 and verdict == "flat" else 1
