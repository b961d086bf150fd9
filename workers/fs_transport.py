"""kombu's file-system transport, with messages that appear atomically.

kombu writes a message file in place; a consumer in another thread or process can list and
read it before the producer has written a byte, get an empty payload and stop the worker
(JSONDecodeError: "Unrecoverable error"). Here a message is written to a temporary name the
consumer ignores, fsync'd, and renamed into place.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = final + ".writing"  # `.msg.writing` never matches a queue's `.msg` filter
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # Folders, not a host: with kombu's default ("localhost") every connection without
        # a hostname logs "No hostname was supplied" as a warning.
        return {"port": self.default_port}
