"""sendPhoto, sendDocument and getFile."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .. import errors
from ..errors import bad_request
from ..files import (
    KIND_TITLE,
    MAX_DOWNLOAD_SIZE,
    StoredFile,
    document_json,
    image_size,
    photo_sizes,
)
from ..formatting import CAPTION_LIMIT, check_length, formatted
from ..outgoing import read_envelope, send
from ..params import Upload
from .registry import api_method

if TYPE_CHECKING:
    from ..core import EmulatorCore
    from ..params import Params

JsonDict = dict[str, Any]


def _input_file(core: EmulatorCore, p: Params, field: str, kind: str) -> StoredFile:
    """Resolve an upload, a known file_id, or a URL (stored unfetched) to a stored file."""
    value = p.file(field)
    if value is None:
        raise bad_request(f"there is no {field} in the request")
    if isinstance(value, Upload):
        if kind == "photo" and image_size(value.data) is None:
            raise bad_request("IMAGE_PROCESS_FAILED")  # the server decodes every photo
        return core.state.files.add(kind, value.data, value.filename, _mime(value))
    if value.lower().startswith(("http://", "https://")):
        name = value.rsplit("/", 1)[-1] or None
        return core.state.files.add(
            kind, b"", name if kind == "document" else None, source_url=value
        )
    stored = core.state.files.get(value)
    if stored is None:
        raise bad_request("wrong file identifier/HTTP URL specified")
    if stored.kind != kind:
        raise bad_request(f"can't use file of type {KIND_TITLE[stored.kind]} as {KIND_TITLE[kind]}")
    return stored


def _mime(upload: Upload) -> str | None:
    # aiohttp labels every part application/octet-stream; then the file name decides.
    generic = upload.content_type in ("", "application/octet-stream")
    return None if generic else upload.content_type


def _caption(p: Params) -> JsonDict:
    caption, entities = formatted(p, "caption", "parse_mode", "caption_entities")
    check_length(caption, CAPTION_LIMIT, errors.CAPTION_TOO_LONG)
    content: JsonDict = {}
    if caption:
        content["caption"] = caption
    if entities:
        content["caption_entities"] = entities
    if p.flag("show_caption_above_media"):
        content["show_caption_above_media"] = True
    if p.flag("has_spoiler"):
        content["has_media_spoiler"] = True
    return content


@api_method("sendPhoto")
async def send_photo(core: EmulatorCore, p: Params) -> JsonDict:
    chat_ref = p.chat_id()
    caption = _caption(p)
    envelope = read_envelope(p)
    stored = _input_file(core, p, "photo", "photo")
    content = {"photo": photo_sizes(stored, core.state.files), **caption}
    message = send(core, core.chat_for_sending(chat_ref), envelope, content)
    return copy.deepcopy(message.data)


@api_method("sendDocument")
async def send_document(core: EmulatorCore, p: Params) -> JsonDict:
    chat_ref = p.chat_id()
    caption = _caption(p)
    envelope = read_envelope(p)
    stored = _input_file(core, p, "document", "document")
    content = {"document": document_json(stored), **caption}
    message = send(core, core.chat_for_sending(chat_ref), envelope, content)
    return copy.deepcopy(message.data)


@api_method("getFile")
async def get_file(core: EmulatorCore, p: Params) -> JsonDict:
    stored = core.state.files.get(p.text("file_id") or "")
    if stored is None:
        raise bad_request("invalid file_id")
    if len(stored.data) > MAX_DOWNLOAD_SIZE:
        raise bad_request("file is too big")
    return stored.file_json()
