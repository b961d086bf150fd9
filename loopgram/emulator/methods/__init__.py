"""Bot API methods. Importing the modules registers their handlers."""

from . import bot, callbacks, drafts, media, messages, polling
from .registry import lookup

__all__ = ["bot", "callbacks", "drafts", "lookup", "media", "messages", "polling"]
