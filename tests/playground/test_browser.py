"""The playground in a real browser: headless Debian Chromium driven by Playwright.

Type a message, see the streamed answer (Markdown rendered bold), press 👍 and see the
rating in the side panel; press a moderator's button as a plain user and see the refusal.
Screenshots land in ARTEFACTS (printed); docs/playground.png is written when missing or when
LOOPGRAM_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.playground import Playground
from loopgram.playground.cast import MODERATORS_CHAT_ID

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is not installed (dev extra)"
)

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "artifacts" / "playground"
DOCS_SCREENSHOT = ROOT / "docs" / "playground.png"
# Flags that work on a machine with no display and a closed network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _installed() -> str | None:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium: found, or installed with apt-get (as root); else the test skips."""
    found = _installed()
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("chromium is not installed and this is not root: apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    errors = ""
    for command in (
        ["apt-get", "install", "-y", "-q", "chromium"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium"],
    ):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors = str(exc)
            continue
        errors = done.stderr[-400:]
        if done.returncode == 0 and (found := _installed()):
            return found
    pytest.skip(f"could not install Debian's chromium with apt-get: {errors.strip()}")


@pytest.fixture(scope="session")
def artefacts() -> Iterator[Path]:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nplayground screenshots: {ARTEFACTS}")
    yield ARTEFACTS


async def test_chat_rate_and_refusal_in_a_real_browser(
    pg: Playground, chromium: str, artefacts: Path
) -> None:
    expect = playwright_api.expect
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            await page.goto(pg.url)
            await expect(page.get_by_test_id("chat-title")).to_have_text("Loopgram")

            # Type a message, see the answer streamed in and rendered as Telegram would.
            box = page.get_by_test_id("input")
            await box.fill("How do I plan my week?")
            await box.press("Enter")
            answer = page.get_by_test_id("bot-message").filter(has_text="most important tasks")
            thumbs_up = answer.first.get_by_role("button", name="👍")
            await expect(thumbs_up).to_be_visible(timeout=30_000)
            await expect(answer.first.locator(".text b")).to_have_text("Plan")
            await page.screenshot(path=artefacts / "01-answer.png")

            # Press 👍: the bot's answerCallbackQuery shows as a toast, the panel the rating.
            await thumbs_up.click()
            await expect(page.get_by_test_id("toast")).to_have_text("Thanks! 👍")
            rating = page.get_by_test_id("rating").first
            await expect(rating).to_have_text(re.compile(r"👍\s*Anna"), timeout=20_000)
            await expect(page.get_by_test_id("buffer-ratings")).to_contain_text("1")
            await expect(answer.first.get_by_role("button", name="👍✓")).to_be_visible()
            await expect(page.get_by_test_id("chart")).to_have_attribute(
                "src", re.compile(r"v=1-"), timeout=10_000
            )
            await page.wait_for_function(
                "document.getElementById('chart').complete"
                " && document.getElementById('chart').naturalWidth > 0"
            )
            await page.screenshot(path=artefacts / "02-rated.png")
            if not DOCS_SCREENSHOT.exists() or os.environ.get("LOOPGRAM_UPDATE_SCREENSHOTS"):
                await page.screenshot(path=DOCS_SCREENSHOT)

            # 👎 with a reason flags the next answer; its card reaches the moderators' group.
            await box.fill("What is the capital of Australia?")
            await box.press("Enter")
            second = answer.nth(1)
            await expect(second.get_by_role("button", name="👎")).to_be_visible(timeout=30_000)
            await second.get_by_role("button", name="👎").click()
            await page.get_by_role("button", name="❌ Wrong").click(timeout=20_000)

            # Anna is a plain user: the moderators' Approve button refuses her with an alert.
            await page.get_by_test_id(f"chat-{MODERATORS_CHAT_ID}").click()
            card = page.get_by_test_id("bot-message").filter(has_text="Review #")
            approve = card.first.get_by_role("button", name="✅ Approve")
            await approve.click(timeout=30_000)
            alert = page.get_by_test_id("alert-text")
            await expect(alert).to_have_text("Only moderators can review answers.")
            await page.screenshot(path=artefacts / "03-refused.png")
            await page.get_by_test_id("alert-ok").click()
            await expect(page.get_by_test_id("alert")).to_be_hidden()

            # A forged press from the page is refused with a readable message, too.
            await page.evaluate(
                "press(Number(document.querySelector('[data-press]').dataset.message),"
                " 'forged:data', null)"
            )
            await expect(page.get_by_test_id("toast")).to_contain_text("not on this message")
            # Entities are drawn as Telegram draws them (UTF-16 offsets, nesting, safe links).
            html = await page.evaluate(
                """renderEntities("👍 bold italic <x> link", [
                    {type: "bold", offset: 3, length: 11},
                    {type: "italic", offset: 8, length: 6},
                    {type: "text_link", offset: 19, length: 4, url: "javascript:alert(1)"},
                    {type: "code", offset: 15, length: 3}])"""
            )
            assert html == ("👍 <b>bold <i>italic</i></b> <code>&lt;x&gt;</code> link")
            assert page_errors == []
        finally:
            await browser.close()
