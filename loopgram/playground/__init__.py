"""The playground: a local web page that looks and behaves like a Telegram chat.

The page talks to :class:`PlaygroundServer`, which drives the Bot API emulator's users
(``loopgram.emulator``) and reads what the bot stored (``loopgram.playground.panel``). The
real bot runs unchanged against the emulator; ``bot/playground.py`` wires the two together.
"""

from .cast import Cast, Identity, PlaygroundChat, default_cast
from .server import PlaygroundServer

__all__ = ["Cast", "Identity", "PlaygroundChat", "PlaygroundServer", "default_cast"]
