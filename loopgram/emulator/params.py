"""Method parameters as the server reads them.

Bodies arrive as JSON (native types) or as form fields (all strings, complex values as JSON
text, which is how aiogram sends them). Like the real server, numbers are read leniently
("12abc" -> 12, garbage -> 0), booleans are "true"/"1", and an empty string means "not given".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import bad_request

_LEADING_INT = re.compile(r"\s*([+-]?\d+)")
T = TypeVar("T")


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    filename: str
    content_type: str
    data: bytes

    def describe(self) -> dict[str, Any]:
        return {
            "file_name": self.filename,
            "content_type": self.content_type,
            "size": len(self.data),
        }


class Params:
    def __init__(self, raw: dict[str, Any], uploads: dict[str, Upload] | None = None) -> None:
        self.raw = raw
        self.uploads = uploads or {}
        # Values as the handler understood them; recorded in ApiCall for readable assertions.
        self.normalized: dict[str, Any] = {}

    def present(self, name: str) -> bool:
        value = self.raw.get(name)
        return value is not None and value != ""

    def integer(self, name: str) -> int | None:
        if not self.present(name):
            return None
        value = self.raw[name]
        if isinstance(value, bool):
            number = int(value)
        elif isinstance(value, int):
            number = value
        elif isinstance(value, float):
            number = int(value)
        else:
            match = _LEADING_INT.match(str(value))
            number = int(match.group(1)) if match else 0
        self.normalized[name] = number
        return number

    def text(self, name: str) -> str | None:
        if name not in self.raw or self.raw[name] is None:
            return None
        value = self.raw[name]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        self.normalized[name] = text
        return text

    def flag(self, name: str) -> bool:
        if not self.present(name):
            return False
        value = self.raw[name]
        flag = value is True or (
            not isinstance(value, bool) and str(value).lower() in ("true", "1")
        )
        self.normalized[name] = flag
        return flag

    def json_value(self, name: str, invalid: str) -> Any:
        """A JSON-serialized parameter; ``invalid`` is the server's reason when it is not JSON."""
        if not self.present(name):
            return None
        value = self.raw[name]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise bad_request(invalid) from None
        self.normalized[name] = value
        return value

    def chat_id(self, name: str = "chat_id") -> int | str:
        """A chat id or ``@username``; required."""
        if not self.present(name):
            raise bad_request(f"{name} is empty")
        value = self.raw[name]
        if isinstance(value, str) and value.strip().startswith("@"):
            self.normalized[name] = value.strip()
            return value.strip()
        number = self.integer(name)
        if number is None or number == 0:
            raise bad_request("chat not found")
        return number

    def file(self, name: str) -> Upload | str | None:
        """An input file: an upload (direct or ``attach://<part>``) or a file_id/URL string."""
        if name in self.uploads:
            upload = self.uploads[name]
            self.normalized[name] = upload.describe()
            return upload
        text = self.text(name)
        if text is None or text == "":
            return None
        if text.startswith("attach://"):
            upload_or_none = self.uploads.get(text[len("attach://") :])
            if upload_or_none is None:
                raise bad_request(f'file "{text[len("attach://") :]}" must be uploaded')
            self.normalized[name] = upload_or_none.describe()
            return upload_or_none
        return text

    def recorded(self) -> dict[str, Any]:
        """JSON-safe view of all parameters, normalized where the handler read them."""
        view: dict[str, Any] = {}
        attached = set()
        for key, value in self.raw.items():
            if isinstance(value, str) and value.startswith("attach://"):
                attached.add(value[len("attach://") :])
            view[key] = value
        for key, upload in self.uploads.items():
            if key not in attached:
                view[key] = upload.describe()
        view.update(self.normalized)
        return view


def require(value: T | None, reason: str) -> T:
    """Return ``value`` or fail with "Bad Request: <reason>" when it is missing."""
    if value is None or value == "":
        raise bad_request(reason)
    return value
