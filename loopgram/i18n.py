"""User-facing texts from Fluent locale files (`loopgram/locales/<lang>/loopgram.ftl`)."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

from fluent.runtime import FluentBundle, FluentResource

from loopgram.logging_setup import mask_secrets

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).parent / "locales"
LANGUAGES = ("ru", "en")
FALLBACK = "en"


def pick_language(telegram_code: str | None, default: str | None = None) -> str:
    """`DEFAULT_LANGUAGE` wins; otherwise Russian for ru/uk/be/kk speakers, English for the rest."""
    if default in LANGUAGES:
        return str(default)
    code = (telegram_code or "").lower().split("-")[0]
    return "ru" if code in ("ru", "uk", "be", "kk") else "en"


@cache
def _bundle(lang: str) -> FluentBundle:
    bundle = FluentBundle([lang], use_isolating=False)
    for path in sorted((LOCALES_DIR / lang).glob("*.ftl")):
        bundle.add_resource(FluentResource(path.read_text(encoding="utf-8")))
    return bundle


def message_ids(lang: str) -> set[str]:
    return set(_bundle(lang)._messages)


def t(lang: str, key: str, **args: Any) -> str:
    """The text `key` in `lang`, falling back to English, then to the key itself."""
    for candidate in (lang if lang in LANGUAGES else FALLBACK, FALLBACK):
        bundle = _bundle(candidate)
        if bundle.has_message(key):
            message = bundle.get_message(key)
            if message.value is None:
                break
            # A detail that quotes an error (a URL with the bot token, a DSN) is masked.
            safe = {k: mask_secrets(v) if isinstance(v, str) else v for k, v in args.items()}
            text, errors = bundle.format_pattern(message.value, safe)
            for error in errors:
                log.warning("i18n.format_error key=%s lang=%s error=%s", key, candidate, error)
            return str(text)
    log.error("i18n.missing key=%s lang=%s", key, lang)
    return key
