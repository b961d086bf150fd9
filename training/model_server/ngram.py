"""A tiny bilingual word-level n-gram language model: the server's default backend.

**This is a placeholder.**  It is a statistical toy, not a neural model: it exists so
that ``loopgram serve-model`` works out of the box, on any machine, with no model
weights to download, until the transformers (+ PEFT/LoRA) backend lands.  Its
answers are fluent-looking recombinations of the sentences in ``corpus/en.txt`` and
``corpus/ru.txt``; they do not actually answer the question.

How it works:

* At load time (well under a second) it counts trigrams, bigrams and unigrams of the
  shipped English and Russian corpora (lower-cased word and punctuation tokens).
* It answers in the language of the last user message (share of Cyrillic letters).
* It seeds the answer from words of the prompt that it knows (exact, or sharing a
  stem-like prefix): the first sentence starts from a corpus context of such a word,
  and those words are favoured in later sentences.
* Next tokens come from the trigram distribution mixed with the bigram one, backing
  off to bigram and unigram counts for unseen contexts, and are sampled with the
  request's ``temperature`` / ``top_p`` and ``seed`` (same seed and prompt, same
  answer; without a seed, answers vary).  ``temperature=0`` is greedy.
* It stops after 2–4 sentences or ``max_tokens`` tokens and yields one token per
  delta (a word with its leading space, or a punctuation mark).
"""

from __future__ import annotations

import bisect
import math
import random
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources

from .protocol import GenerationRequest, UnknownModelError, iterate_in_thread

__all__ = ["LANGUAGES", "NGramBackend", "detect_language", "tokenize"]

LANGUAGES = ("en", "ru")

_BOS = "<s>"
_EOS = "</s>"
_TOKEN_RE = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*|[.,!?;:]|—")
_CYRILLIC_RE = re.compile(r"[\u0400-\u04FF]")
_LATIN_RE = re.compile(r"[A-Za-z]")
_ATTACHED = frozenset(".,!?;:")
_SENTENCE_END = frozenset(".!?")
_PUNCTUATION = _ATTACHED | {"—"}

_TRIGRAM_WEIGHT = 0.75
_PROMPT_BOOST = 4.0
_REPEAT_PENALTY = 0.2
_COMMON_WORDS = 60  # the most frequent words of a language are not used as seeds


def tokenize(text: str) -> list[str]:
    """Word and punctuation tokens of ``text`` (case kept)."""
    return _TOKEN_RE.findall(text)


def detect_language(text: str) -> str:
    """``"ru"`` if most letters of ``text`` are Cyrillic, else ``"en"``."""
    cyrillic = len(_CYRILLIC_RE.findall(text))
    latin = len(_LATIN_RE.findall(text))
    return "ru" if cyrillic and cyrillic >= latin else "en"


def _normalized(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {word: count / total for word, count in counts.items()}


@dataclass
class _LanguageModel:
    trigrams: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    bigrams: dict[str, Counter[str]] = field(default_factory=dict)
    unigrams: Counter[str] = field(default_factory=Counter)
    sentences: list[list[str]] = field(default_factory=list)
    occurrences: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    surface: dict[str, str] = field(default_factory=dict)
    common: frozenset[str] = frozenset()
    vocabulary: list[str] = field(default_factory=list)

    @classmethod
    def train(cls, lines: Iterable[str]) -> _LanguageModel:
        model = cls()
        forms: dict[str, Counter[str]] = {}
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            raw = tokenize(line)
            if not raw:
                continue
            tokens = [token.lower() for token in raw]
            if tokens[-1] not in _SENTENCE_END:
                tokens.append(".")
                raw.append(".")
            index = len(model.sentences)
            model.sentences.append(tokens)
            for position, (token, form) in enumerate(zip(tokens, raw, strict=True)):
                model.occurrences.setdefault(token, []).append((index, position))
                if position > 0:
                    forms.setdefault(token, Counter())[form] += 1
            padded = [_BOS, _BOS, *tokens, _EOS]
            for i in range(2, len(padded)):
                u, v, w = padded[i - 2], padded[i - 1], padded[i]
                model.trigrams.setdefault((u, v), Counter())[w] += 1
                model.bigrams.setdefault(v, Counter())[w] += 1
                model.unigrams[w] += 1
        model.surface = {token: counts.most_common(1)[0][0] for token, counts in forms.items()}
        words = [word for word, _ in model.unigrams.most_common() if word not in _PUNCTUATION]
        model.common = frozenset(words[:_COMMON_WORDS])
        model.vocabulary = sorted(word for word in model.occurrences if word not in _PUNCTUATION)
        return model

    def display(self, token: str) -> str:
        return self.surface.get(token, token)

    def lookup(self, word: str) -> str | None:
        """The vocabulary word for a prompt word: exact, or the most frequent with its stem."""
        if word in self.occurrences:
            return word
        if len(word) < 5:
            return None
        stem = word[: max(4, min(6, len(word) - 2))]
        start = bisect.bisect_left(self.vocabulary, stem)
        candidates: list[str] = []
        for candidate in self.vocabulary[start:]:
            if not candidate.startswith(stem):
                break
            candidates.append(candidate)
        if not candidates:
            return None
        return max(candidates, key=lambda candidate: (self.unigrams[candidate], candidate))

    def distribution(self, u: str, v: str) -> dict[str, float]:
        trigram = self.trigrams.get((u, v))
        bigram = self.bigrams.get(v)
        if trigram and bigram:
            mixed = {w: _TRIGRAM_WEIGHT * p for w, p in _normalized(trigram).items()}
            for w, p in _normalized(bigram).items():
                mixed[w] = mixed.get(w, 0.0) + (1 - _TRIGRAM_WEIGHT) * p
            return mixed
        if bigram:
            return _normalized(bigram)
        unigram = Counter({w: c for w, c in self.unigrams.items() if w != _EOS})
        return _normalized(unigram)


def _sample(
    distribution: dict[str, float], temperature: float, top_p: float, rng: random.Random
) -> str:
    ranked = sorted(distribution.items(), key=lambda item: (-item[1], item[0]))
    ranked = [(token, p) for token, p in ranked if p > 0] or ranked[:1]
    if temperature <= 1e-3 or len(ranked) == 1:
        return ranked[0][0]
    top_log = math.log(ranked[0][1])
    weights = [math.exp((math.log(p) - top_log) / temperature) for _, p in ranked]
    total = sum(weights)
    kept: list[tuple[str, float]] = []
    cumulative = 0.0
    for (token, _), weight in zip(ranked, weights, strict=True):
        kept.append((token, weight))
        cumulative += weight / total
        if cumulative >= top_p:
            break
    point = rng.random() * sum(weight for _, weight in kept)
    for token, weight in kept:
        point -= weight
        if point < 0:
            return token
    return kept[-1][0]


def _read_corpus(language: str) -> list[str]:
    text = resources.files(__package__).joinpath("corpus").joinpath(f"{language}.txt")
    return text.read_text(encoding="utf-8").splitlines()


class NGramBackend:
    """Placeholder :class:`~training.model_server.protocol.GenerationBackend`.

    A word-level trigram model (backoff to bigram/unigram) trained at start-up on the
    small English and Russian corpora shipped in ``corpus/``.  It produces plausible
    sentences in the prompt's language but does not understand the prompt; it will be
    replaced by the transformers backend.  See the module docstring for details.
    """

    def __init__(
        self,
        model_id: str = "loopgram-base",
        *,
        corpora: dict[str, Iterable[str]] | None = None,
        max_sentence_tokens: int = 32,
    ) -> None:
        self.model_id = model_id
        self.max_sentence_tokens = max_sentence_tokens
        sources = corpora or {language: _read_corpus(language) for language in LANGUAGES}
        self._models = {
            language: _LanguageModel.train(lines) for language, lines in sources.items()
        }

    def model_ids(self) -> list[str]:
        return [self.model_id]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str]:
        if request.model != self.model_id:
            raise UnknownModelError(request.model)
        async for delta in iterate_in_thread(lambda stop: self.generate_sync(request, stop)):
            yield delta

    def generate_sync(
        self, request: GenerationRequest, stop: threading.Event | None = None
    ) -> Iterator[str]:
        """Yield the answer's deltas (blocking; ``generate`` runs this in a thread)."""
        prompt = _last_user_text(request.messages)
        language = detect_language(prompt)
        model = self._models.get(language) or next(iter(self._models.values()))
        rng = random.Random(request.seed)  # not for security (S311 is off)
        prompt_words = self._prompt_words(model, prompt)
        sentences = rng.randint(2, 4)
        emitted = 0
        first_token = True
        for sentence_index in range(sentences):
            prefix: list[str] = []
            if sentence_index == 0 and prompt_words:
                prefix = self._seed_prefix(model, prompt_words, rng)
            for token, starts_sentence in self._sentence(
                model, prefix, set(prompt_words), request, rng
            ):
                if stop is not None and stop.is_set():
                    return
                text = model.display(token)
                if starts_sentence:
                    text = text[:1].upper() + text[1:]
                attached = first_token or token in _ATTACHED
                delta = text if attached else " " + text
                first_token = False
                yield delta
                emitted += 1
                if emitted >= request.max_tokens:
                    return

    def _prompt_words(self, model: _LanguageModel, prompt: str) -> list[str]:
        words: list[str] = []
        for token in tokenize(prompt.lower()):
            if token in _PUNCTUATION:
                continue
            word = model.lookup(token)
            if word is not None and word not in model.common and word not in words:
                words.append(word)
        return words

    def _seed_prefix(
        self, model: _LanguageModel, prompt_words: list[str], rng: random.Random
    ) -> list[str]:
        # Rare words say more about the prompt than frequent ones.
        weights = [1.0 / model.unigrams[word] for word in prompt_words]
        word = rng.choices(prompt_words, weights=weights)[0]
        sentence_index, position = rng.choice(model.occurrences[word])
        return model.sentences[sentence_index][: position + 1]

    def _sentence(
        self,
        model: _LanguageModel,
        prefix: list[str],
        boosted: set[str],
        request: GenerationRequest,
        rng: random.Random,
    ) -> Iterator[tuple[str, bool]]:
        """Yield (token, starts_sentence) for one sentence ending in . ! or ?"""
        history = [_BOS, _BOS]
        for token in prefix:
            yield token, len(history) == 2
            history.append(token)
        while True:
            if len(history) - 2 >= self.max_sentence_tokens:
                if history[-1] not in _SENTENCE_END:
                    yield ".", False
                return
            distribution = dict(model.distribution(history[-2], history[-1]))
            used = set(history)
            for token in distribution:
                if token in boosted and token not in used:
                    distribution[token] *= _PROMPT_BOOST
                elif token in used and token not in _PUNCTUATION and token not in model.common:
                    distribution[token] *= _REPEAT_PENALTY
            token = _sample(distribution, request.temperature, request.top_p, rng)
            if token == _EOS:
                if history[-1] not in _SENTENCE_END:
                    yield ".", False
                return
            yield token, len(history) == 2
            history.append(token)
            if token in _SENTENCE_END:
                return


def _last_user_text(messages: list[dict[str, str]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and message.get("content", "").strip():
            return message["content"]
    return messages[-1].get("content", "") if messages else ""
