"""Inverse-CDF sampling with a top-k search for the nucleus (`sampling.sample_tokens`)."""

from __future__ import annotations

import torch

from training.model_server.sampling import sample_tokens


def _draw(probs: list[float], top_p: float, draws: int, *, candidates: int = 256) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    rows = torch.tensor([probs] * draws)
    uniforms = torch.rand(draws, generator=generator, dtype=torch.float64)
    return sample_tokens(rows, torch.full((draws,), top_p), uniforms, candidates=candidates)


def test_tokens_are_drawn_in_proportion_to_their_probability() -> None:
    probs = [0.5, 0.0, 0.3, 0.15, 0.05]
    counts = torch.bincount(_draw(probs, 1.0, 20_000), minlength=5).tolist()
    assert counts[1] == 0
    for count, p in zip(counts, probs, strict=True):
        assert abs(count / 20_000 - p) < 0.01  # 20k draws: the standard error is < 0.004


def test_top_p_keeps_the_smallest_set_holding_that_mass() -> None:
    probs = [0.05, 0.5, 0.3, 0.15]
    counts = torch.bincount(_draw(probs, 0.8, 10_000), minlength=4).tolist()
    assert counts[0] == 0 and counts[3] == 0  # 0.5 + 0.3 reach 0.8: the rest is cut
    assert abs(counts[1] / 10_000 - 0.5 / 0.8) < 0.02
    assert set(_draw(probs, 0.0, 50).tolist()) == {1}  # top_p 0: the most likely token only


def test_a_nucleus_wider_than_the_candidates_sorts_the_whole_vocabulary() -> None:
    probs = [0.1] * 10
    narrow = _draw(probs, 0.95, 5_000, candidates=3)  # three candidates hold only 0.3
    counts = torch.bincount(narrow, minlength=10).tolist()
    assert all(abs(count / 5_000 - 0.1) < 0.02 for count in counts)  # all ten, evenly


def test_rows_keep_their_own_top_p_and_a_uniform_at_the_top_never_picks_zero_weight() -> None:
    probs = torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.2, 0.3, 0.5]])
    almost_one = torch.tensor([1.0 - 2**-53, 1.0 - 2**-53, 0.99])
    picked = sample_tokens(probs, torch.tensor([1.0, 0.5, 1.0]), almost_one).tolist()
    assert picked == [1, 0, 2]
    assert sample_tokens(probs, torch.ones(3), torch.zeros(3, dtype=torch.float64)).tolist() == [
        0,
        0,
        0,
    ]
