"""Prompt-prefix caching for the transformers backend (vLLM's automatic prefix caching, by
message boundary instead of by token block).

An assistant's requests share their start: the system prompt and its few-shot example are
~90 of a paraphrase request's ~120 tokens, and prefilling them was a third of a batch's time
on 2 CPU cores. A request with two messages or more has as its prefix the tokens of every
message but the last; their keys and values are computed alone (batch of one) once per
adapter, kept (LRU, bounded in bytes), and put in front of each row that starts with them.

Which tokens a row takes from the cache depends on its messages only, and the prefix is
always computed the same way, so a seeded answer does not depend on what was cached before.
A batch lays every row out as ``[pad][prefix][pad][rest of the prompt]``: the prefixes
right-aligned in the cached columns, the rest right-aligned after them; the attention mask
hides the gaps, and positions count unmasked tokens, so each row sees its prompt as if it
were alone.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per layer: keys and values of one sequence, (1, kv heads, tokens, head size)."""

MIN_PREFIX_TOKENS = 16
"""Shorter shared starts are not worth a separate forward pass."""


@dataclass(frozen=True, slots=True)
class PrefixedRow:
    """One row of a batch: its prompt so far and the cached start of it (may be empty)."""

    context: list[int]
    prefix: Sequence[int]
    kv: KV | None


class PrefixCache:
    """Keys and values of prompt prefixes per adapter, least recently used dropped first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str | None, tuple[int, ...]], tuple[KV, int]] = (
            OrderedDict()
        )
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, adapter: str | None, tokens: tuple[int, ...]) -> KV | None:
        entry = self._entries.get((adapter, tokens))
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end((adapter, tokens))
        return entry[0]

    def put(self, adapter: str | None, tokens: tuple[int, ...], kv: KV) -> None:
        size = sum(keys.nbytes + values.nbytes for keys, values in kv)
        if size > self.max_bytes:
            return  # used for the batch that computed it, never kept
        old = self._entries.pop((adapter, tokens), None)
        if old is not None:
            self._bytes -= old[1]
        self._entries[(adapter, tokens)] = (kv, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped

    def drop_adapter(self, adapter: str) -> None:
        """Forget an unloaded adapter's prefixes (its key is never reused)."""
        for key in [key for key in self._entries if key[0] == adapter]:
            self._bytes -= self._entries.pop(key)[1]


def cache_argument(model: Any) -> str | None:
    """The name under which ``generate`` takes a prefilled cache, or None when this model's
    cache is not one full-attention layer per decoder layer (sliding windows, recurrent
    state): then nothing is cached."""
    if getattr(model.generation_config, "cache_implementation", None):
        return None
    layers = DynamicCache(config=model.config).layers
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    parameters = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def compute_prefix(model: Any, tokens: Sequence[int]) -> KV:
    """Keys and values of ``tokens`` alone (call with the row's adapter active)."""
    with torch.no_grad():
        output = model(
            input_ids=torch.tensor([list(tokens)], dtype=torch.long, device=model.device),
            use_cache=True,
        )
    return tuple(cache_layers(output_cache(output)))


def output_cache(output: Any) -> Any:
    """The cache a forward pass returned (named ``cache`` or ``past_key_values``), or None."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def cache_layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values per layer of a cache of plain ``DynamicLayer``s (`cache_argument`)."""
    layers: list[Any] = list(cache.layers)
    return [(layer.keys, layer.values) for layer in layers]


def cache_from_layers(
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]], config: Any
) -> DynamicCache:
    """A ``DynamicCache`` holding ``layers``' keys and values."""
    cache = DynamicCache(config=config)
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def prefixed_batch(
    rows: Sequence[PrefixedRow], pad_id: int, config: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
    """Input ids, attention mask and a prefilled cache for ``rows`` (see the module doc)."""
    cached = max(len(row.prefix) for row in rows if row.kv is not None)
    rests = [row.context[len(row.prefix) :] if row.kv is not None else row.context for row in rows]
    width = cached + max(map(len, rests))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, rest) in enumerate(zip(rows, rests, strict=True)):
        if row.kv is not None:
            start = cached - len(row.prefix)
            input_ids[i, start:cached] = torch.tensor(list(row.prefix), dtype=torch.long)
            attention_mask[i, start:cached] = 1
        input_ids[i, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
        attention_mask[i, width - len(rest) :] = 1
    layers = []
    template = next(row.kv for row in rows if row.kv is not None)
    for layer, (keys, values) in enumerate(template):
        batch_keys = keys.new_zeros((len(rows), keys.shape[1], cached, keys.shape[3]))
        batch_values = values.new_zeros((len(rows), values.shape[1], cached, values.shape[3]))
        for i, row in enumerate(rows):
            if row.kv is not None:
                start = cached - len(row.prefix)
                batch_keys[i, :, start:] = row.kv[layer][0][0]
                batch_values[i, :, start:] = row.kv[layer][1][0]
        layers.append((batch_keys, batch_values))
    return input_ids.to(device), attention_mask.to(device), cache_from_layers(layers, config)
