"""The prompt-prefix cache's bookkeeping: LRU within a byte budget, per adapter."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM  # noqa: E402

from training.model_server.prefix_cache import KV, PrefixCache, cache_argument  # noqa: E402


def _kv(tokens: int) -> KV:
    """Two layers of 1 head × 4 dims: 2 × 2 × tokens × 4 floats = 64 bytes a token."""
    return tuple((torch.zeros(1, 1, tokens, 4), torch.zeros(1, 1, tokens, 4)) for _ in range(2))


def test_least_recently_used_prefixes_go_first_within_the_budget() -> None:
    cache = PrefixCache(max_bytes=64 * 30)
    cache.put(None, (1, 2), _kv(10))
    cache.put("a", (1, 2), _kv(10))  # same tokens, another adapter: another entry
    assert cache.get(None, (1, 2)) is not None  # now the most recently used
    cache.put(None, (3,), _kv(10))
    assert (len(cache), cache.size_bytes) == (3, 64 * 30)
    cache.put(None, (4,), _kv(5))  # over the budget: "a"'s entry, the least recent, goes
    assert cache.get("a", (1, 2)) is None
    assert cache.get(None, (1, 2)) is not None and cache.get(None, (4,)) is not None
    assert cache.size_bytes == 64 * 25
    assert (cache.hits, cache.misses) == (3, 1)


def test_a_prefix_larger_than_the_budget_is_not_kept_and_unloading_drops_an_adapter() -> None:
    cache = PrefixCache(max_bytes=64 * 8)
    cache.put(None, (1,), _kv(9))
    assert len(cache) == 0 and cache.size_bytes == 0
    cache.put("a", (1,), _kv(2))
    cache.put("a", (2,), _kv(2))
    cache.put("b", (1,), _kv(2))
    cache.put("a", (1,), _kv(2))  # stored again: counted once
    assert cache.size_bytes == 64 * 6
    cache.drop_adapter("a")
    assert len(cache) == 1 and cache.size_bytes == 64 * 2 and cache.get("b", (1,)) is not None


def test_only_models_with_a_full_attention_cache_get_prefixes() -> None:
    small = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32}
    small |= {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}
    llama = LlamaForCausalLM(LlamaConfig(**small))
    assert cache_argument(llama) in {"cache", "past_key_values"}
    windowed = MistralForCausalLM(MistralConfig(**small, sliding_window=8))
    assert cache_argument(windowed) is None  # keys beyond the window are dropped: not reusable
    llama.generation_config.cache_implementation = "static"
    assert cache_argument(llama) is None
