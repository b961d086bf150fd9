"""Drawing each batch row's next token: one uniform per row, inverse CDF, nucleus by top-k.

The model thread samples up to 16 rows per decoding step over a 49k-token vocabulary.
``torch.multinomial`` per row cost ~0.9 ms each (15 ms a step, a sixth of a decoding step
of SmolLM2-135M on 2 cores), and sorting the whole vocabulary for top-p another 25 ms. Here
every row draws one uniform from its own generator and takes the token where the cumulative
probability passes it (exact for a categorical distribution, ~1 ms for 16 rows). For top-p
the nucleus is looked for among the ``candidates`` most likely tokens first; it lies there
whenever their mass reaches top_p (nearly always), else the row's vocabulary is sorted.
"""

from __future__ import annotations

import torch

NUCLEUS_CANDIDATES = 256
"""Most likely tokens searched for the top-p nucleus before sorting the whole vocabulary."""


def sample_tokens(
    probs: torch.Tensor,
    top_p: torch.Tensor,
    uniforms: torch.Tensor,
    *,
    candidates: int = NUCLEUS_CANDIDATES,
) -> torch.Tensor:
    """One token id per row of ``probs`` (rows × vocabulary, each row summing to 1).

    ``top_p`` (rows) keeps each row's smallest set of most likely tokens holding that much
    mass (1 = all; the most likely token always stays, so 0 is greedy); ``uniforms`` (rows,
    in [0, 1)) are the rows' random draws. Returns a (rows,) tensor of token ids.
    """
    picked = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    whole = top_p >= 1.0
    if bool(whole.any()):
        picked[whole] = _inverse_cdf(probs[whole], uniforms[whole])
    nucleus = ~whole
    if bool(nucleus.any()):
        picked[nucleus] = _sample_nucleus(
            probs[nucleus], top_p[nucleus], uniforms[nucleus], candidates
        )
    return picked


def _sample_nucleus(
    probs: torch.Tensor, top_p: torch.Tensor, uniforms: torch.Tensor, candidates: int
) -> torch.Tensor:
    width = min(candidates, probs.shape[-1])
    values, order = probs.topk(width, dim=-1)  # sorted, most likely first
    # A token beyond the candidates has at least their whole mass before it: if that
    # reaches top_p, the nucleus lies among them.
    if bool((values.sum(dim=-1) < top_p).any()):
        values, order = probs.sort(dim=-1, descending=True)
    mass_before = values.cumsum(dim=-1) - values
    drop = mass_before >= top_p.unsqueeze(-1)
    drop[:, 0] = False
    chosen = _inverse_cdf(values.masked_fill(drop, 0.0), uniforms)
    return order.gather(1, chosen.unsqueeze(-1)).squeeze(-1)


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the index where the running sum of ``weights`` first exceeds uniform × sum.

    Never an index of zero weight: past the running sum's last rise (a uniform rounding
    up to the total) the last index with weight is taken instead.
    """
    cumulative = weights.to(torch.float64).cumsum(dim=-1)
    total = cumulative[:, -1:].contiguous()
    target = uniforms.to(torch.float64).unsqueeze(-1) * total
    index = torch.searchsorted(cumulative, target, right=True)
    last_with_weight = torch.searchsorted(cumulative, total, right=False)
    return torch.minimum(index, last_with_weight).squeeze(-1)
