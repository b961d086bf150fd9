"""`loopgram simulate`: rounds of real traffic, real training and real canaries.

Per round: simulated people talk to the real bot (emulated Telegram, built-in model server,
embedded worker and beat, a training worker process); the beat schedule notices the full
buffer and trains; the gate and the canary decide; then the held-out 👍 rate of whatever
the bot now serves is measured. The people's taste is never handed to the training code:
it sees only their presses. Controls in the same run: the base model (no training) and an
adapter trained on the same pairs with the preferences shuffled.

Options compared run against run: the policy method (dpo, orpo, kto), best-of-n serving
(`best_of_n`) and training on the pairs the reward model labelled (`reward_pairs`). Either
of the last two trains each assistant's reward model every round, right after its policy
run (the same `loopgram.train_assistant` task on the training worker, method "reward"), so
best-of-n serves from the round after a reward model first passed its gate. Each round
records its cost in time: seconds of policy and reward-model training and how long a person
waited for an answer (p50, p90).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Literal

import yaml
from sqlmodel import Session, col, select

from bot.emulated import emulated_bot
from bot.simulation.control import shuffled_what
from bot.simulation.heldout import BestOfNMeasure, RateEstimate, heldout_rate
from bot.simulation.moderators import SimModerator, Tally
from bot.simulation.options import SimulationOptions
from bot.simulation.people import Person
from bot.simulation.prompts import Prompt, load_prompt_set
from bot.simulation.results import (
    DiscardedCandidate,
    RoundResult,
    SimulationResult,
    TrainingSnapshot,
)
from bot.simulation.traffic import Conversation, Exchange, run_traffic
from loopgram import adapters
from loopgram.adapter_server import AdapterServer
from loopgram.canary import look_reached, looks
from loopgram.llm import LLMClient
from loopgram.models import Adapter, AnswerCandidate, Interaction, Rating, TrainingRun
from loopgram.routing import in_canary
from loopgram.settings import Settings
from workers.celery_app import create_celery

log = logging.getLogger(__name__)

_FIRST_USER_ID = 7_000_001
_HOLD = 10**9
"""TRAIN_MIN_NEW_EXAMPLES while a round's traffic is being served: no run starts."""
MODERATOR_BASE = 990_000  # simulated moderators' user ids
_REWARD_RUN_START = 300.0
"""Seconds a queued reward-model run may take to start on the training worker."""


# ------------------------------------------------------------------------ environment


def simulation_env(options: SimulationOptions) -> dict[str, str]:
    """The settings of the simulated deployment, as environment variables: the training
    worker is a separate process and reads them the same way."""
    data = options.data_dir.resolve()
    train_config = data / "train.yaml"
    return {
        "DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'loopgram.db'}",
        "REDIS_URL": "",
        "LLM_BASE_URL": "",
        # A free port: the simulation must not collide with a `loopgram run` on this machine.
        "BUILTIN_MODEL_PORT": "0",
        # Answers seeded by their content and asker: the same seed sends the same prompts, so
        # round 1 (the base model's traffic) is the same in every run and configuration.
        "BUILTIN_MODEL_SEED": str(options.seed),
        "BOT_MODE": "polling",
        "QDRANT_PATH": str(data / "qdrant"),
        "ADAPTERS_DIR": str(data / "adapters"),
        "LLM_MAX_TOKENS": str(options.max_tokens),
        # Many people ask at once and a CPU answers in turn: waiting is expected here.
        "LLM_FIRST_TOKEN_TIMEOUT": "600",
        "LLM_TIMEOUT": "900",
        "STREAM_EDIT_INTERVAL": "0.5",
        # Simulated people ask as fast as the model answers: no per-user limit for them.
        "USER_RATE_LIMIT": "0",
        # Training is held while people talk (see Simulation._release_training).
        "TRAIN_MIN_NEW_EXAMPLES": str(_HOLD),
        "TRAIN_CONFIG": str(train_config),
        "TRAIN_CHECK_SECONDS": "3",
        "CANARY_CHECK_SECONDS": "3",
        "CANARY_SHARE": str(options.canary_share),
        "CANARY_MIN_RATINGS": str(options.canary_min_ratings),
        "CANARY_MAX_RATINGS": str(options.canary_max_ratings),
        "CANARY_MARGIN": str(options.canary_margin),
        "ROUTING_CACHE_SECONDS": "1",
        # Best-of-n as asked (1 = off). Scoring waits its turn on the busy CPU like the
        # answers do: a production-like 10 s limit would leave most candidates unscored here.
        "BEST_OF_N": str(options.best_of_n),
        "REWARD_BASE_URL": "",
        "REWARD_TIMEOUT": "600",
        # The rounds train the reward model themselves (Simulation._train_reward_models), one
        # run per round, so the schedule's own reward-model runs are off.
        "REWARD_TRAIN_MIN_PAIRS": "0",
        # The satisfaction estimate would score answers on the training worker mid-round,
        # competing for the CPU with the traffic whose waiting time is measured.
        "SATISFACTION_CHECK_SECONDS": str(10**7),
        "ADMIN_IDS": "",
        "MODERATOR_IDS": ",".join(str(MODERATOR_BASE + i) for i in range(options.moderators)),
        "MODERATOR_CHAT_ID": "",  # moderators take items with /review in private
        "ALLOWED_CHAT_IDS": "",
    }


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _prepare_data_dir(path: Path) -> None:
    """A fresh deployment each run; the converted base model is kept (half a minute)."""
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.name == "models":
            continue
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()


# ----------------------------------------------------------------------------- runner


class Simulation:
    def __init__(
        self,
        options: SimulationOptions,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.progress = progress or (lambda _message: None)
        self.prompts = load_prompt_set(
            assistants=list(options.assistants),
            languages=list(options.languages),
            seed=options.seed,
        )
        self.traffic_per_round = len(self.prompts.train) * options.passes
        if options.traffic:
            self.traffic_per_round = min(self.traffic_per_round, options.traffic)
        self.rng = random.Random(options.seed)
        self._canary_queue: dict[int, list[Prompt]] = {}
        # Per assistant, in round order: what each round's runs were about to train on.
        self.trained_on: dict[str, list[TrainingSnapshot]] = {}
        # Held-out estimates by what was measured (see _measure).
        self.measured: dict[tuple[Any, ...], RateEstimate] = {}

    async def run(self) -> SimulationResult:
        started = time.monotonic()
        options = self.options
        await asyncio.to_thread(_prepare_data_dir, options.data_dir)
        train_yaml = options.data_dir / "train.yaml"
        train_yaml.write_text(yaml.safe_dump({**options.train, "seed": options.seed}), "utf-8")
        self.progress("starting the bot, its workers and the model server")
        with environment(simulation_env(options)):
            settings = Settings.load()
            async with emulated_bot(settings, with_training=True) as env:
                self.settings = env.stack.settings
                self.db = env.stack.db
                self.celery = create_celery(self.settings)
                llm = LLMClient(self.settings.llm)
                try:
                    return await self._rounds(env.emulator, llm, started)
                finally:
                    await llm.close()

    async def _rounds(self, emulator: Any, llm: LLMClient, started: float) -> SimulationResult:
        options = self.options
        conversations = self._people(emulator)
        self.moderators = self._moderators(emulator)
        self.progress("measuring the base model on held-out prompts")
        base = self.settings.llm.llm_model
        baseline = await self._measure(llm, {a: base for a in options.assistants})
        self.progress(f"baseline 👍 rate {baseline.rate:.2f} ({baseline.total} answers)")
        rounds = []
        for number in range(1, options.rounds + 1):
            result = await self._round(number, conversations, llm)
            rounds.append(result)
            why = f" ({result.detail})" if result.detail else ""
            self.progress(
                f"round {number}: {result.run_status}{why} {result.candidate or ''} "
                f"{result.canary}; serving {result.adapter or 'base'}: held-out 👍 "
                f"{result.heldout.rate:.2f} [{result.heldout.interval[0]:.2f}–"
                f"{result.heldout.interval[1]:.2f}]"
                + (" (measured before: same model, same items)" if result.heldout_reused else "")
            )
        discarded = await self._measure_discarded(llm, rounds) if options.measure_discarded else []
        controls: list[RateEstimate] = []
        detail = ""
        if options.shuffled_control:
            controls, detail = await self._shuffled_controls(llm)
        return SimulationResult(
            baseline,
            rounds,
            controls[0] if controls else None,
            detail,
            options,
            time.monotonic() - started,
            discarded,
            extra_controls=controls[1:],
        )

    async def _measure_discarded(
        self, llm: LLMClient, rounds: list[RoundResult]
    ) -> list[DiscardedCandidate]:
        """Each candidate the gate rejected or the canary rolled back, loaded again under a
        name of its own and measured on the held-out items, its assistant's answers from it
        and the others' from the base model."""
        from loopgram.adapter_server import HttpAdapterServer

        server = HttpAdapterServer.from_settings(self.settings)
        base = self.settings.llm.llm_model
        measured = []
        for result in rounds:
            for name in result.candidates:
                adapter = await self.db.run(adapters.get_by_name, name=name)
                if adapter.status != "rejected":
                    continue
                canaried = "canary" in (adapter.metrics or {})
                why = "rolled back by the canary" if canaried else "rejected by the gate"
                self.progress(f"measuring {name} ({why}) on held-out prompts")
                loaded = f"{name}-measured"
                await asyncio.to_thread(server.load, loaded, adapter.path)
                try:
                    models = {a: base for a in self.options.assistants}
                    estimate = await self._measure(llm, models | {adapter.assistant: loaded})
                finally:
                    await asyncio.to_thread(server.unload, loaded)
                self.progress(f"{name}: held-out 👍 {estimate.rate:.2f}")
                measured.append(DiscardedCandidate(result.round, name, why, estimate))
        return measured

    def _moderators(self, emulator: Any) -> list[SimModerator]:
        return [
            SimModerator(
                emulator,
                self.db,
                MODERATOR_BASE + index,
                correct_share=self.options.correct_share,
                rng=random.Random(self.options.seed + 1000 + index),
            )
            for index in range(self.options.moderators)
        ]

    def _people(self, emulator: Any) -> list[Conversation]:
        options = self.options
        conversations = []
        for index in range(options.people):
            lang = options.languages[index % len(options.languages)]
            person = Person(_FIRST_USER_ID + index, lang, options.behaviour, options.seed)
            conversations.append(
                Conversation(
                    emulator, person, first_name=f"Sim{index + 1}", timeout=options.round_timeout
                )
            )
        return conversations

    async def _measure(
        self,
        llm: LLMClient,
        models: dict[str, str],
        best_of_n: BestOfNMeasure | Literal["as the bot"] | None = "as the bot",
    ) -> RateEstimate:
        """The held-out 👍 rate of `models`, answered as the bot would answer: best-of-n
        (the bot's `BestOfN`) for the assistants it is on for, else one answer each —
        unless `best_of_n` says which reward models to pick with."""
        if best_of_n == "as the bot":
            best_of_n = await self._best_of_n(llm)
        # The same models on the same seeded items answer the same: a round that ends
        # serving what was measured before (its candidate rejected or rolled back) keeps
        # that estimate. Adapter names are never reused within a run.
        key = _measurement_key(models, best_of_n)
        if key in self.measured:
            return self.measured[key]
        self.measured[key] = await heldout_rate(
            llm,
            self.prompts.heldout,
            models=models,
            samples_per_prompt=self.options.eval_samples,
            concurrency=self.options.concurrency,
            max_tokens=self.options.max_tokens,
            best_of_n=best_of_n,
            seed=self.options.seed,
        )
        return self.measured[key]

    async def _best_of_n(self, llm: LLMClient) -> BestOfNMeasure | None:
        if self.options.best_of_n < 2:
            return None
        from loopgram.best_of_n import BestOfN
        from loopgram.reward_client import RewardClient

        service = BestOfN(
            settings=self.settings.reward,
            llm=llm,
            rewards=RewardClient.from_settings(self.settings),
            cache_seconds=0,
        )
        plans = {}
        for assistant in self.options.assistants:
            plan = await self.db.run(service.plan, assistant=assistant)
            if plan is not None:
                plans[assistant] = plan
        return BestOfNMeasure(service, plans) if plans else None

    def _traffic_prompts(self, count: int | None = None) -> list[Prompt]:
        prompts = list(self.prompts.train) * self.options.passes
        self.rng.shuffle(prompts)
        return prompts[:count] if count else prompts

    def _canary_prompts(self, number: int, count: int) -> list[Prompt]:
        """The next `count` of round `number`'s canary prompts: each is asked once before any
        is asked again (a shuffled pass over the pool at a time)."""
        queue = self._canary_queue.setdefault(number, [])
        while len(queue) < count:
            fresh = self.prompts.canary_pool(number, self.options.rounds)
            self.rng.shuffle(fresh)
            queue += fresh
        taken, queue[:] = queue[:count], queue[count:]
        return taken

    async def _round(
        self, number: int, conversations: list[Conversation], llm: LLMClient
    ) -> RoundResult:
        round_started = time.monotonic()
        last_run = await self.db.run(_last_run_id)
        last_interaction = await self.db.run(_last_interaction_id)
        prompts = self._traffic_prompts(self.traffic_per_round)
        self.progress(f"round {number}: {len(prompts)} prompts from {len(conversations)} people")
        exchanges = await run_traffic(conversations, prompts)
        await self._wait_stored(exchanges)
        best_of_n, unscored = await self.db.run(_best_of_n_answers, after=last_interaction)
        tally = await self._moderate()
        answered = [e for e in exchanges if not e.failed]
        liked = sum(e.judgement.liked for e in answered) / max(1, len(answered))
        self.progress(f"round {number}: traffic 👍 {liked:.2f}; waiting for the training run")
        snapshots = await self._snapshot_training_data()
        self._release_training()
        try:
            runs = await self._wait_runs(after=last_run)
        finally:
            self._hold_training()
        result = RoundResult(
            number,
            heldout=RateEstimate(0, 0, ""),
            adapter=None,
            deployed=False,
            traffic_liked=liked,
            traffic_answers=len(answered),
            traffic_failures=len(exchanges) - len(answered),
            reviewed=tally.decided,
            corrected=tally.corrected,
            answer_seconds=[e.seconds for e in answered],
            traffic_best_of_n=best_of_n,
            traffic_unscored=unscored,
        )
        if self.options.trains_reward_model:
            await self._train_reward_models(number, result)
        statuses, candidates, canaries, details, live = [], [], [], [], []
        for run in runs:
            statuses.append(run.status)
            details.append(str(run.error or (run.evaluation or {}).get("reason", ""))[:300])
            result.pairs += run.train_examples
            result.train_seconds += float((run.metrics or {}).get("train_seconds", 0.0))
            result.policy_run_seconds += _run_seconds(run)
            candidate = await self.db.run(_adapter_of_run, run_id=run.id)
            self._keep_snapshot(snapshots, run, candidate)
            if candidate is None:
                continue
            candidates.append(candidate.name)
            if candidate.status == "canary":
                self.progress(f"round {number}: canary {candidate.name}; serving canary traffic")
                started = time.monotonic()
                outcome = await self._canary_phase(conversations, candidate.name, number)
                result.canary_seconds += time.monotonic() - started
                canaries.append(outcome if len(runs) == 1 else f"{candidate.name} {outcome}")
                result.deployed = result.deployed or outcome == "promoted"
                verdict = await self.db.run(_canary_verdict, name=candidate.name)
                result.canary_ratings += await self.db.run(_canary_look, name=candidate.name)
                if verdict:
                    live.append(verdict if len(runs) == 1 else f"{candidate.name} {verdict}")
                    self.progress(f"round {number}: canary {candidate.name} {outcome}: {verdict}")
        result.run_status = ", ".join(statuses) or "no run"
        result.candidates = candidates
        result.candidate = ", ".join(candidates) or None
        result.canary = ", ".join(canaries)
        result.canary_live = "; ".join(live)
        result.detail = "; ".join(d for d in details if d)
        serving = await self._serving()
        result.adapter = ", ".join(sorted(set(serving.values()) - {self.settings.llm.llm_model}))
        result.adapter = result.adapter or None
        measuring = time.monotonic()
        measured_before = len(self.measured)
        result.heldout = await self._measure(llm, serving)
        result.heldout_reused = len(self.measured) == measured_before
        result.measure_seconds = time.monotonic() - measuring
        result.seconds = time.monotonic() - round_started
        return result

    async def _train_reward_models(self, number: int, result: RoundResult) -> None:
        """Each assistant's reward model, trained on the training worker right after the
        round's policy run, by the task the schedule and `/train` use: best-of-n and the
        reward-labelled pairs use it from the next answer on."""
        after = await self.db.run(_last_run_id)
        self.progress(f"round {number}: training the reward model")
        for assistant in self.options.assistants:
            await asyncio.to_thread(
                self.celery.send_task,
                "loopgram.train_assistant",
                args=(assistant, "reward"),
                queue="training",
            )
        runs = await self._wait_runs(after=after, reward=True)
        statuses, accuracies = [], []
        for run in runs:
            statuses.append(run.status)
            metrics = run.metrics or {}
            result.reward_train_seconds += float(metrics.get("train_seconds", 0.0))
            result.reward_run_seconds += _run_seconds(run)
            if "heldout_accuracy" in metrics:
                accuracies.append(float(metrics["heldout_accuracy"]))
            if run.status != "succeeded":
                why = run.error or (run.evaluation or {}).get("reason", "")
                result.reward_detail = "; ".join(d for d in (result.reward_detail, why) if d)
        result.reward_run_status = ", ".join(statuses) or "no run"
        result.reward_accuracy = round(sum(accuracies) / len(accuracies), 4) if accuracies else None
        names = [
            await self.db.run(_reward_model_name, assistant=a) for a in self.options.assistants
        ]
        result.reward_model = ", ".join(n for n in names if n) or None
        self.progress(
            f"round {number}: reward model {result.reward_run_status}; "
            f"active {result.reward_model or 'none'}"
        )

    async def _moderate(self) -> Tally:
        """The moderators work through (part of) the review queue, one after the other."""
        total = Tally()
        for moderator in self.moderators:
            tally = await moderator.work(self.options.reviews_per_round)
            total.approved += tally.approved
            total.rejected += tally.rejected
            total.corrected += tally.corrected
            total.skipped += tally.skipped
        if total.decided:
            self.progress(
                f"moderators: {total.corrected} corrected, {total.approved} approved, "
                f"{total.rejected} rejected"
            )
        return total

    async def _wait_stored(self, exchanges: list[Exchange], within: float = 120.0) -> None:
        """The worker stores presses asynchronously; a round ends when all of them landed."""
        wanted = {(iid, e.user_id): value for e in exchanges for iid, value in e.presses}
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stored = await self.db.run(_ratings, keys=list(wanted))
            if all(stored.get(key) == value for key, value in wanted.items()):
                return
            await asyncio.sleep(0.5)
        missing = [k for k, v in wanted.items() if stored.get(k) != v]
        raise TimeoutError(f"{len(missing)} of {len(wanted)} presses were not stored in time")

    def _release_training(self) -> None:
        """Let the beat schedule train on what the round stored.

        Like an operator who sets TRAIN_MIN_NEW_EXAMPLES to a round's worth of feedback: each
        round's run sees the whole round (a run that started mid-round would train on part of
        it while competing with the traffic for the CPU). The embedded worker reads these
        settings live; the decision to train is still the scheduled `maybe_train`'s."""
        self.settings.learning.train_min_new_examples = self.options.train.get("min_examples", 8)

    def _hold_training(self) -> None:
        self.settings.learning.train_min_new_examples = _HOLD

    async def _serving(self) -> dict[str, str]:
        """The model the bot serves each assistant now: its active adapter, else the base."""
        base = self.settings.llm.llm_model
        serving = {}
        for assistant in self.options.assistants:
            active: str | None = await self.db.run(_active_name, assistant=assistant)
            serving[assistant] = active or base
        return serving

    async def _wait_runs(self, *, after: int, reward: bool = False) -> list[TrainingRun]:
        """The policy runs the beat schedule starts for this round's feedback (one per
        assistant whose buffer filled), or with `reward` the reward-model runs queued for the
        round, once they have finished."""
        # No run by then: the buffer stayed below the threshold, or the run was refused
        # before it started (the training worker starts a queued run within seconds).
        settle = time.monotonic() + (_REWARD_RUN_START if reward else 60)
        deadline = time.monotonic() + self.options.round_timeout
        while time.monotonic() < deadline:
            runs = [
                r
                for r in await self.db.run(_runs_after, run_id=after)
                if (r.method == "reward") == reward
            ]
            if runs and not reward:
                self._hold_training()  # one run per assistant and round
            done = [r for r in runs if r.status != "running"]
            trained = {r.assistant for r in runs}
            everyone = trained >= set(self.options.assistants)
            if runs and len(done) == len(runs) and (everyone or time.monotonic() > settle):
                return runs
            if not runs and time.monotonic() > settle:
                return []
            await asyncio.sleep(1.0)
        raise TimeoutError("the training runs did not finish within the round's time limit")

    async def _canary_phase(self, conversations: list[Conversation], name: str, number: int) -> str:
        """Serve traffic until the canary is promoted or rolled back, which happens at its
        rating cap at the latest (before, the phase stopped after 8 half-rounds of traffic:
        with 5 of 16 people on the canary that was 90 first answers of a cap of 160, and the
        undecided canary then held back training for the rest of the run); a prompt per person at
        a time, so the phase ends within one short batch of the beat's verdict. The beat
        judges only at looks (`loopgram.canary.looks`), so the phase waits for a verdict only
        when a new look is reached. The prompts are round `number`'s canary prompts, which no
        adapter has trained on (`PromptSet.canary_pool`)."""
        batch = len(conversations)
        routed = sum(
            in_canary(c.person.user_id, name, self.options.canary_share) for c in conversations
        )
        if not routed:  # nobody is served by it: no rating would ever reach a look
            return "undecided"
        # Until the verdict, which comes at the cap at the latest: twice the batches the
        # cap's first answers take from the people routed to the canary (some go unrated).
        rounds = math.ceil(2 * self.options.canary_max_ratings / routed)
        points = looks(self.options.canary_min_ratings, self.options.canary_max_ratings)
        waited: int | None = None
        for _ in range(rounds):
            exchanges = await run_traffic(conversations, self._canary_prompts(number, batch))
            await self._wait_stored(exchanges)
            look = look_reached(await self.db.run(_canary_ratings, name=name), points)
            ticks = 20 if look is not None and look != waited else 1
            waited = look
            for _tick in range(ticks):  # the beat judges canaries every few seconds
                status = await self.db.run(_adapter_status, name=name)
                if status != "canary":
                    return "promoted" if status == "active" else "rolled back"
                if ticks > 1:
                    await asyncio.sleep(0.5)
        return "undecided"

    async def _snapshot_training_data(self) -> dict[str, TrainingSnapshot]:
        """What the round's runs will train on, read while no traffic flows: every press and
        correction of the round is stored, and the runs have not started (nor marked pairs
        consumed). The control trains on exactly this, never on later canary traffic."""
        return {a: await self._training_data(a) for a in self.options.assistants}

    async def _training_data(self, assistant: str) -> TrainingSnapshot:
        """What a policy run (and a reward-model run, when the simulation trains one) for
        `assistant` would train on now."""
        from bot.simulation.control import training_rows
        from training.config import train_config

        policy = train_config(self.settings, assistant=assistant, method=self.options.method)
        rows = await asyncio.to_thread(training_rows, policy, self.db)
        reward_rows = None
        if self.options.trains_reward_model:
            reward = train_config(self.settings, assistant=assistant, method="reward")
            reward_rows = await asyncio.to_thread(training_rows, reward, self.db)
        return TrainingSnapshot(rows=rows, reward_rows=reward_rows)

    def _keep_snapshot(
        self,
        snapshots: dict[str, TrainingSnapshot],
        run: TrainingRun,
        candidate: Adapter | None,
    ) -> None:
        snapshot = snapshots.get(run.assistant)
        if snapshot is None:
            return
        if run.train_examples and run.train_examples != len(snapshot.rows):
            log.warning(
                "simulation.snapshot_mismatch assistant=%s run=%s trained=%s snapshot=%s",
                run.assistant,
                run.id,
                run.train_examples,
                len(snapshot.rows),
            )
        snapshot.adapter = candidate.name if candidate else None
        self.trained_on.setdefault(run.assistant, []).append(snapshot)

    async def _control_data(self, assistant: str) -> TrainingSnapshot:
        """The data of the run whose adapter is served at the end (the one the control is
        compared with); else of the last run; else, with no run at all, the buffer as it is."""
        serving = (await self._serving())[assistant]
        snapshots = self.trained_on.get(assistant, [])
        for snapshot in reversed(snapshots):
            if snapshot.adapter == serving:
                return snapshot
        if snapshots:
            return snapshots[-1]
        return await self._training_data(assistant)

    async def _shuffled_controls(self, llm: LLMClient) -> tuple[list[RateEstimate], str]:
        """`control_draws` shuffled controls, each trained on its own shuffle of the same
        data and measured on the same held-out items. A draw that fails ends the series; the
        draws measured before it stand, and the detail says what failed."""
        draws = self.options.control_draws
        controls: list[RateEstimate] = []
        details: list[str] = []
        for draw in range(draws):
            if draws > 1:
                self.progress(f"shuffled control, draw {draw + 1} of {draws}")
            estimate, detail = await self._shuffled_control(llm, draw=draw)
            if estimate is None:
                details.append(detail if not controls else f"draw {draw + 1}: {detail}")
                break
            controls.append(estimate)
            if not details:
                details.append(detail)  # every draw trains on the same data
        if len(controls) > 1:
            seeds = f"{self.options.seed}…{self.options.seed + len(controls) - 1}"
            details.insert(1, f"{len(controls)} draws, shuffle seeds {seeds}")
        return controls, "; ".join(details)

    async def _shuffled_control(
        self, llm: LLMClient, *, draw: int = 0
    ) -> tuple[RateEstimate | None, str]:
        from loopgram.adapter_server import HttpAdapterServer

        server = HttpAdapterServer.from_settings(self.settings)
        loaded: list[str] = []
        try:
            return await self._train_and_measure_control(llm, server, loaded, draw=draw)
        finally:
            # The model server holds a few LoRAs (max_loras): each draw's adapter leaves it
            # once measured, or the next draw has no room.
            for name in loaded:
                await asyncio.to_thread(server.unload, name)

    async def _train_and_measure_control(
        self, llm: LLMClient, server: AdapterServer, loaded: list[str], *, draw: int
    ) -> tuple[RateEstimate | None, str]:
        from bot.simulation.control import train_shuffled_control, train_shuffled_reward_model
        from loopgram.best_of_n import BestOfNPlan
        from loopgram.reward_client import RewardModelRef
        from training.config import train_config
        from training.pipeline import resolve_model_path

        real_best_of_n = await self._best_of_n(llm)
        plans: dict[str, BestOfNPlan] = {}
        models, notes = {}, []
        for assistant in self.options.assistants:
            config = train_config(self.settings, assistant=assistant, method=self.options.method)
            self.progress(f"training the shuffled-ratings control of {assistant} on the same data")
            real_plan = real_best_of_n.plans.get(assistant) if real_best_of_n else None
            try:
                data = await self._control_data(assistant)
                path, pairs = await asyncio.to_thread(
                    partial(train_shuffled_control, seed=self.options.seed + draw, draw=draw),
                    self.settings,
                    config,
                    data.rows,
                )
                if real_plan is not None:
                    rm_config = train_config(self.settings, assistant=assistant, method="reward")
                    rm_path, rm_pairs = await asyncio.to_thread(
                        partial(
                            train_shuffled_reward_model, seed=self.options.seed + draw, draw=draw
                        ),
                        self.settings,
                        rm_config,
                        data.reward_rows or [],
                    )
                await asyncio.to_thread(server.load, path.name, str(path))
            except Exception as exc:  # reported as missing; the rounds still stand
                log.exception("simulation.control_failed assistant=%s", assistant)
                return None, f"control failed for {assistant}: {exc}"
            loaded.append(path.name)
            models[assistant] = path.name
            note = f"{assistant}: {pairs} {shuffled_what(config.method)}"
            if real_plan is not None:
                base = str(resolve_model_path(self.settings))
                plans[assistant] = BestOfNPlan(
                    real_plan.n, RewardModelRef(rm_path.name, str(rm_path), base)
                )
                note += f"; best-of-{real_plan.n} by a reward model on {rm_pairs} shuffled pairs"
            notes.append(note)
        best_of_n = BestOfNMeasure(real_best_of_n.service, plans) if real_best_of_n else None
        return await self._measure(llm, models, best_of_n), "; ".join(notes)


def _measurement_key(models: dict[str, str], best_of_n: BestOfNMeasure | None) -> tuple[Any, ...]:
    """What decides a held-out estimate besides the fixed items and seed: each assistant's
    model and, where it answers best-of-n, n and the reward model that picks."""
    plans = best_of_n.plans if best_of_n is not None else {}
    return tuple(
        (assistant, model, plans[assistant].n, plans[assistant].reward_model.name)
        if assistant in plans
        else (assistant, model)
        for assistant, model in sorted(models.items())
    )


def _last_run_id(*, session: Session) -> int:
    return max((i for i in session.exec(select(TrainingRun.id)).all() if i is not None), default=0)


def _runs_after(*, session: Session, run_id: int) -> list[TrainingRun]:
    return list(
        session.exec(
            select(TrainingRun).where(col(TrainingRun.id) > run_id).order_by(col(TrainingRun.id))
        ).all()
    )


def _last_interaction_id(*, session: Session) -> int:
    ids = session.exec(select(Interaction.id)).all()
    return max((i for i in ids if i is not None), default=0)


def _best_of_n_answers(*, session: Session, after: int) -> tuple[int, int]:
    """(answers picked from n candidates, of which unscored) among interactions after `after`."""
    rows = session.exec(
        select(AnswerCandidate.interaction_id, AnswerCandidate.reward).where(
            col(AnswerCandidate.interaction_id) > after
        )
    ).all()
    answers: dict[int, bool] = {}
    for interaction_id, reward in rows:
        answers[interaction_id] = answers.get(interaction_id, False) or reward is not None
    return len(answers), sum(1 for scored in answers.values() if not scored)


def _run_seconds(run: TrainingRun) -> float:
    """Wall time of a run (training and its gate), 0 when it never started."""
    if run.started_at is None or run.finished_at is None:
        return 0.0
    return max(0.0, (run.finished_at - run.started_at).total_seconds())


def _reward_model_name(*, session: Session, assistant: str) -> str | None:
    active = adapters.active_reward_model(session=session, assistant=assistant)
    return active.name if active else None


def _adapter_of_run(*, session: Session, run_id: int | None) -> Adapter | None:
    return session.exec(select(Adapter).where(Adapter.training_run_id == run_id)).first()


def _canary_ratings(*, session: Session, name: str) -> int:
    """Rated (👍, 👎 or 🔄) first answers of the canary `name` so far, as the judge counts."""
    canary = adapters.get_by_name(session=session, name=name)
    return adapters.live_tally(
        session=session, assistant=canary.assistant, adapter=name, since=canary.deployed_at
    ).total


def _canary_verdict(*, session: Session, name: str) -> str:
    """The canary's last verdict as the beat stored it, in a few words."""
    verdict = (adapters.get_by_name(session=session, name=name).metrics or {}).get("canary")
    if not verdict:
        return ""
    people = f" from {verdict['people']} people" if "people" in verdict else ""
    return (
        f"live {verdict['difference']:+.2f} ({verdict['low']:+.2f}…{verdict['high']:+.2f}) "
        f"on {verdict.get('look', '?')} rated answers{people}: {verdict['reason']}"
    )


def _canary_look(*, session: Session, name: str) -> int:
    """The rating count of the look the canary's last verdict was made at (0: none yet)."""
    verdict = (adapters.get_by_name(session=session, name=name).metrics or {}).get("canary")
    return int((verdict or {}).get("look") or 0)


def _adapter_status(*, session: Session, name: str) -> str:
    return str(adapters.get_by_name(session=session, name=name).status)


def _active_name(*, session: Session, assistant: str) -> str | None:
    active, _canary = adapters.serving(session=session, assistant=assistant)
    return active.name if active else None


def _ratings(*, session: Session, keys: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    ids = sorted({iid for iid, _ in keys})
    rows = session.exec(select(Rating).where(col(Rating.interaction_id).in_(ids))).all()
    return {(r.interaction_id, r.user_id): r.value for r in rows}
