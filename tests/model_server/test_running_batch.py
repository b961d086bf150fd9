"""The running batch on its own: rows joining and leaving between steps decode exactly as
each row alone (greedy, on a tiny random Llama), and the cache stays as narrow as its rows."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from training.model_server.running_batch import RunningBatch, supports_own_decoding  # noqa: E402

PAD = 0


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config).eval()


def _alone(model: Any, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens of ``prompt`` alone, without any cache: the whole sequence each step."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([tokens])).logits
            tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


def _left_padded(prompts: list[list[int]]) -> tuple[Any, Any]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(prompt)
        mask[i, width - len(prompt) :] = 1
    return ids, mask


def test_rows_that_join_and_leave_decode_as_each_row_alone(model: Any) -> None:
    prompts = {
        "a": [5, 17, 23, 42, 8, 9, 11],
        "b": [3, 4],
        "c": list(range(60, 76)),
    }
    wanted = {name: _alone(model, prompt, 12) for name, prompt in prompts.items()}
    got: dict[str, list[int]] = {name: [] for name in prompts}
    batch = RunningBatch(model.config, "cache")

    def take(rows: list[str], logits: Any) -> None:
        for name, row_logits in zip(rows, logits, strict=True):
            got[name].append(int(row_logits.argmax()))

    with torch.no_grad():
        ids, mask = _left_padded([prompts["a"]])
        take(["a"], batch.prefill(model, ["a"], ids, mask, None))
        for step in range(11):
            rows = list(batch.rows)
            if rows:
                take(rows, batch.step(model, [got[name][-1] for name in rows]))
            if step == 2:  # two rows of other lengths join a running row
                ids, mask = _left_padded([prompts["b"], prompts["c"]])
                take(["b", "c"], batch.prefill(model, ["b", "c"], ids, mask, None))
            if step == 5:  # the longest prompt leaves; the columns only it used go
                width = batch.width
                batch.keep([name != "c" for name in batch.rows])
                assert batch.rows == ["a", "b"] and batch.width < width
                assert bool(batch.mask[:, 0].any())  # no column is masked in every row
        while len(got["b"]) < 12:
            take(batch.rows, batch.step(model, [got[name][-1] for name in batch.rows]))

    assert got["a"][:12] == wanted["a"]
    assert got["b"][:12] == wanted["b"]
    assert got["c"] == wanted["c"][: len(got["c"])] and len(got["c"]) == 4
    batch.keep([False] * len(batch))
    assert len(batch) == 0 and batch.cache is None and batch.width == 0


def test_a_model_whose_config_changes_the_logits_keeps_generate() -> None:
    assert supports_own_decoding(GenerationConfig())
    assert supports_own_decoding(GenerationConfig(repetition_penalty=1.0, temperature=0.7))
    assert not supports_own_decoding(GenerationConfig(repetition_penalty=1.2))
    assert not supports_own_decoding(GenerationConfig(no_repeat_ngram_size=3))
    assert not supports_own_decoding(GenerationConfig(suppress_tokens=[5]))
