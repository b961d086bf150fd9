"""UTF-16 helpers: Telegram measures entity offsets and text limits in UTF-16 code units."""


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (characters outside the BMP count twice)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf16_to_index(text: str, offset: int) -> int:
    """Python string index matching a UTF-16 ``offset``; offsets inside a pair round up."""
    units = 0
    for index, ch in enumerate(text):
        if units >= offset:
            return index
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(text)


def utf16_slice(text: str, offset: int, length: int) -> str:
    """The part of ``text`` that a (UTF-16 offset, length) entity covers."""
    start = utf16_to_index(text, offset)
    end = utf16_to_index(text, offset + length)
    return text[start:end]


def byte_offset(text: str, index: int) -> int:
    """UTF-8 byte offset of ``text[index]``: Telegram's parse errors report positions in bytes."""
    return len(text[:index].encode("utf-8", "surrogatepass"))
