"""Stored files (uploads by the bot, media sent by emulated users) and their Bot API shapes."""

from __future__ import annotations

import hashlib
import mimetypes
import struct
import zlib
from dataclasses import dataclass
from typing import Any

# file_id prefixes look like the real ones, so logs read naturally
_ID_PREFIX = {"photo": "AgACAgI", "document": "BQACAgI", "voice": "AwACAgI", "sticker": "CAACAgI"}
_FOLDER = {"photo": "photos", "document": "documents", "voice": "voice", "sticker": "stickers"}
_DEFAULT_EXTENSION = {"photo": ".jpg", "voice": ".oga", "sticker": ".webp", "document": ""}
KIND_TITLE = {"photo": "Photo", "document": "Document", "voice": "Voice", "sticker": "Sticker"}
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024  # getFile refuses bigger files, as the cloud server does


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    kind: str
    data: bytes
    file_path: str
    file_name: str | None = None
    mime_type: str | None = None
    source_url: str | None = None  # sent by URL: the emulator does not fetch it

    def file_json(self) -> dict[str, Any]:
        """The ``File`` object of getFile."""
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.data),
            "file_path": self.file_path,
        }


class FileStore:
    def __init__(self) -> None:
        self._by_id: dict[str, StoredFile] = {}
        self._by_path: dict[str, StoredFile] = {}
        self._counter = 0

    def add(
        self,
        kind: str,
        data: bytes,
        file_name: str | None = None,
        mime_type: str | None = None,
        source_url: str | None = None,
    ) -> StoredFile:
        self._counter += 1
        n = self._counter
        digest = hashlib.sha256(data + n.to_bytes(8, "big")).hexdigest()[:24]
        extension = _extension(kind, file_name)
        stored = StoredFile(
            file_id=f"{_ID_PREFIX[kind]}AAx{digest}{n}",
            file_unique_id=f"AQAD{digest[:8]}{n}",
            kind=kind,
            data=data,
            file_path=f"{_FOLDER[kind]}/file_{n}{extension}",
            file_name=file_name,
            mime_type=mime_type or _guess_mime(kind, file_name),
            source_url=source_url,
        )
        self._by_id[stored.file_id] = stored
        self._by_path[stored.file_path] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        return self._by_id.get(file_id)

    def by_path(self, file_path: str) -> StoredFile | None:
        return self._by_path.get(file_path)


def _extension(kind: str, file_name: str | None) -> str:
    if file_name and "." in file_name:
        return "." + file_name.rsplit(".", 1)[1]
    return _DEFAULT_EXTENSION[kind]


def _guess_mime(kind: str, file_name: str | None) -> str | None:
    if kind == "voice":
        return "audio/ogg"
    if kind == "document":
        guessed, _ = mimetypes.guess_type(file_name or "")
        return guessed or "application/octet-stream"
    return None


def photo_sizes(stored: StoredFile, store: FileStore) -> list[dict[str, Any]]:
    """The ``photo`` array: Telegram sends several sizes, smallest first, the last the original."""
    width, height = image_size(stored.data) or (1280, 960)
    sizes: list[dict[str, Any]] = []
    for limit in (90, 320, 800):
        if max(width, height) > limit:
            scale = limit / max(width, height)
            thumb = store.add("photo", stored.data)
            sizes.append(
                {
                    "file_id": thumb.file_id,
                    "file_unique_id": thumb.file_unique_id,
                    "file_size": len(stored.data),
                    "width": max(1, round(width * scale)),
                    "height": max(1, round(height * scale)),
                }
            )
    sizes.append(
        {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "width": width,
            "height": height,
        }
    )
    return sizes


def document_json(stored: StoredFile) -> dict[str, Any]:
    body: dict[str, Any] = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": len(stored.data),
    }
    if stored.file_name:
        body["file_name"] = stored.file_name
    if stored.mime_type:
        body["mime_type"] = stored.mime_type
    return body


def voice_json(stored: StoredFile, duration: int) -> dict[str, Any]:
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "duration": duration,
        "mime_type": stored.mime_type or "audio/ogg",
        "file_size": len(stored.data),
    }


def sticker_json(stored: StoredFile, emoji: str, set_name: str) -> dict[str, Any]:
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": emoji,
        "set_name": set_name,
        "file_size": len(stored.data),
    }


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG image, read from its header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        i += 2 + length
    return None


def tiny_png(
    width: int = 64, height: int = 48, rgb: tuple[int, int, int] = (70, 130, 180)
) -> bytes:
    """A valid solid-colour PNG, so a bot that decodes user photos gets a real image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
