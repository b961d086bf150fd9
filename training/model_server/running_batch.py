"""Continuous batching for the transformers backend: rows join and leave a running batch
between decoding steps (what vLLM and TGI call continuous or in-flight batching).

With static batching a request that arrives while a batch runs waits for the whole batch,
and the batch runs until its longest row ends. Here the batch is one ``DynamicCache`` with
an attention mask, and between two steps finished rows are dropped and new ones join:

* joining: the new rows are prefilled on their own (with their cached prompt starts), then
  both caches are left-padded to the same width and stacked; the padding is masked;
* leaving: the kept rows are selected, and columns now masked in every row are cut off;
* a step: each row's last token goes in at the position after its own unmasked tokens, so a
  row's answer does not depend on which rows share the batch.

Only for models whose cache is one plain full-attention layer per decoder layer
(``prefix_cache.cache_argument``); the others keep static batching in ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from transformers import DynamicCache

from training.model_server.prefix_cache import cache_from_layers, cache_layers, output_cache

Forward = Callable[..., Any]
"""The model's forward with the batch's adapters set (see the backend)."""

_NO_GENERATE_PROCESSORS = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
}
"""Generation-config fields that make ``generate`` change the logits; the decoding loop here
applies none of them, so a model that sets one keeps static batching."""


def supports_own_decoding(generation_config: Any) -> bool:
    """Whether greedy ``generate`` would pick the plain argmax of the model's logits."""
    return all(
        getattr(generation_config, field, None) in neutral
        for field, neutral in _NO_GENERATE_PROCESSORS.items()
    )


class RunningBatch:
    """The rows decoding together: their cache, attention mask and per-row payload."""

    def __init__(self, config: Any, cache_argument: str) -> None:
        self._config = config
        self._cache_argument = cache_argument
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)
        self.rows: list[Any] = []

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def prefill(
        self,
        forward: Forward,
        rows: Sequence[Any],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: DynamicCache | None,
    ) -> torch.Tensor:
        """Run ``rows``' prompts (their first ``cache``'s columns already computed), add them
        to the batch and return their next-token logits, (rows, vocabulary)."""
        cached = cache.get_seq_length() if cache is not None else 0
        if cache is None:
            cache = DynamicCache(config=self._config)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        output = forward(
            input_ids=input_ids[:, cached:],
            attention_mask=attention_mask,
            position_ids=positions[:, cached:],
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_argument: cache},
        )
        self._join(_cache_of(output, cache), attention_mask, rows)
        return cast(torch.Tensor, output.logits[:, -1, :])

    def step(self, forward: Forward, tokens: Sequence[int]) -> torch.Tensor:
        """Feed each row its last token; returns the next-token logits, (rows, vocabulary)."""
        assert self.cache is not None and len(tokens) == len(self.rows)
        device = self.mask.device
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        output = forward(
            input_ids=torch.tensor([[token] for token in tokens], dtype=torch.long, device=device),
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_argument: self.cache},
        )
        self.cache = _cache_of(output, self.cache)
        return cast(torch.Tensor, output.logits[:, -1, :])

    def keep(self, keep: Sequence[bool]) -> None:
        """Drop the rows not kept, and the leading columns no kept row uses any more."""
        if all(keep):
            return
        index = torch.tensor([i for i, kept in enumerate(keep) if kept], dtype=torch.long)
        self.rows = [row for row, kept in zip(self.rows, keep, strict=True) if kept]
        if not self.rows:
            self.cache, self.mask = None, self.mask.new_zeros((0, 0))
            return
        mask = self.mask[index.to(self.mask.device)]
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else mask.shape[1]
        self.mask = mask[:, start:]
        assert self.cache is not None
        layers = [
            (keys[index.to(keys.device), :, start:], values[index.to(values.device), :, start:])
            for keys, values in cache_layers(self.cache)
        ]
        self.cache = cache_from_layers(layers, self._config)

    def _join(self, cache: DynamicCache, mask: torch.Tensor, rows: Sequence[Any]) -> None:
        if self.cache is None:
            self.cache, self.mask, self.rows = cache, mask, list(rows)
            return
        width = max(self.width, int(mask.shape[1]))
        layers = [
            (
                torch.cat([_pad_left(old_k, width), _pad_left(new_k, width)]),
                torch.cat([_pad_left(old_v, width), _pad_left(new_v, width)]),
            )
            for (old_k, old_v), (new_k, new_v) in zip(
                cache_layers(self.cache), cache_layers(cache), strict=True
            )
        ]
        self.cache = cache_from_layers(layers, self._config)
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(mask, width)])
        self.rows += rows


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros in front along the sequence axis (2 for keys/values, 1 for a mask)."""
    axis = 2 if tensor.dim() == 4 else 1
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _cache_of(output: Any, fallback: DynamicCache) -> DynamicCache:
    cache = output_cache(output)
    return cache if cache is not None else fallback
