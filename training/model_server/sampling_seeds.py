"""Content-derived sampling seeds: `serve-model --seed` makes whole runs repeatable.

vLLM's ``--seed`` seeds one random stream shared by all requests, so an answer depends on
which requests happened to arrive before it. Here an unseeded request gets a seed derived
from the server's seed, the conversation it asks about, the asker (OpenAI's ``user`` field,
which the bot fills with a pseudonym) and how many times that asker asked that conversation
before. Two runs in which each person sends the same conversations therefore get the same
answers in whatever order the requests arrive, also when two people ask the same thing
(common random numbers for comparing configurations). A second ask of the same conversation
(the bot's 🔄) is a new draw, not a copy. A request that carries its own ``seed`` keeps it.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence

SEED_BITS = 48
"""Derived seeds stay far below torch's 64-bit limit, so that n candidates' seed + i fit."""


class ContentSeeds:
    """Seeds by content and occurrence, remembering at most ``remember`` conversations."""

    def __init__(self, seed: int, *, remember: int = 100_000) -> None:
        if remember < 1:
            raise ValueError("remember must be at least 1")
        self._key = hashlib.blake2b(str(seed).encode(), digest_size=16).digest()
        self._asked: OrderedDict[bytes, int] = OrderedDict()
        self._remember = remember

    def next_seed(self, messages: Sequence[dict[str, str]], *, user: str | None = None) -> int:
        """The seed for ``user``'s next ask of ``messages``: the same for their k-th ask of
        that conversation in every run with the same server seed."""
        asked = [user, list(messages)]
        content = json.dumps(asked, ensure_ascii=False, sort_keys=True).encode()
        digest = hashlib.blake2b(content, digest_size=16, key=self._key).digest()
        occurrence = self._asked.pop(digest, 0)
        self._asked[digest] = occurrence + 1
        if len(self._asked) > self._remember:  # the least recently asked is forgotten
            self._asked.popitem(last=False)
        derived = hashlib.blake2b(
            digest + occurrence.to_bytes(8, "big"), digest_size=8, key=self._key
        ).digest()
        return int.from_bytes(derived, "big") >> (64 - SEED_BITS)
