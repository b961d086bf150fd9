"""A local Telegram Bot API emulator (stdlib + aiohttp only; no aiogram).

Used by end-to-end tests, ``loopgram demo`` and the playground: point a real bot at
``emulator.api_url``, drive emulated users from Python, and inspect what the bot did.
"""

from .core import ApiCall
from .emulator import BotApiEmulator
from .state import EmulatedChat
from .users import EmulatedUser

__all__ = ["ApiCall", "BotApiEmulator", "EmulatedChat", "EmulatedUser"]
