"""The canary decision: non-inferiority of the 👍 rate, with honest intervals."""

from __future__ import annotations

import random

import pytest

from loopgram.canary import Decision, Tally, difference_interval, judge, wilson
from loopgram.routing import in_canary

RULES = {"min_ratings": 50, "max_ratings": 400, "margin": 0.05}


def test_wilson_interval_is_sane_at_the_edges() -> None:
    assert wilson(0, 0, 1.96) == (0.0, 1.0)
    low, high = wilson(0, 20, 1.96)
    assert low == 0.0 and 0.1 < high < 0.2
    low, high = wilson(20, 20, 1.96)
    assert 0.8 < low < 0.9 and high == 1.0


def test_difference_interval_covers_the_truth_about_95_percent() -> None:
    rng = random.Random(7)
    covered = 0
    for _ in range(2000):
        a = sum(rng.random() < 0.6 for _ in range(120))
        c = sum(rng.random() < 0.5 for _ in range(80))
        _, low, high = difference_interval(Tally(c, 80), Tally(a, 120))
        covered += low <= -0.1 <= high
    assert 0.93 <= covered / 2000 <= 0.975


@pytest.mark.parametrize(
    ("canary", "active", "expected"),
    [
        (Tally(10, 20), Tally(50, 100), Decision.wait),  # too few ratings
        (Tally(150, 200), Tally(120, 200), Decision.promote),  # clearly better
        (Tally(118, 200), Tally(120, 200), Decision.wait),  # same, not yet sure enough
        (Tally(40, 200), Tally(120, 200), Decision.rollback),  # clearly worse
        (Tally(236, 400), Tally(250, 400), Decision.rollback),  # cap reached, unproven
        (Tally(2850, 5000), Tally(2850, 5000), Decision.promote),  # equal, with evidence
    ],
)
def test_judge(canary: Tally, active: Tally, expected: Decision) -> None:
    rules = dict(RULES)
    if canary.total > 400:
        rules["max_ratings"] = 10_000
    assert judge(canary, active, **rules).decision == expected


def test_canary_share_and_stickiness() -> None:
    users = range(20_000)
    share = sum(in_canary(u, "chat-v3", 0.1) for u in users) / 20_000
    assert 0.09 < share < 0.11
    assert all(in_canary(u, "chat-v3", 0.1) == in_canary(u, "chat-v3", 0.1) for u in range(100))
    # A new canary samples a different set of users.
    overlap = sum(in_canary(u, "chat-v3", 0.1) and in_canary(u, "chat-v4", 0.1) for u in users)
    assert overlap < 0.02 * 20_000
    assert not any(in_canary(u, "x", 0.0) for u in range(1000))
    assert all(in_canary(u, "x", 1.0) for u in range(1000))


def test_adapter_server_from_settings_uses_replicas_and_the_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loopgram.adapter_server import HttpAdapterServer
    from loopgram.settings import Settings

    monkeypatch.setenv("LLM_BASE_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("LLM_API_KEY", "k3y-value")
    server = HttpAdapterServer.from_settings(Settings.load())
    assert (server.base_urls, server.api_key) == (["http://vllm:8000/v1"], "k3y-value")
    monkeypatch.setenv("LLM_REPLICAS", "http://a:8000/v1/, http://b:8000/v1")
    assert HttpAdapterServer.from_settings(Settings.load()).base_urls == [
        "http://a:8000/v1",
        "http://b:8000/v1",
    ]
