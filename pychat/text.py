"""Text at the boundary: decoding, sanitizing, and the name and room rules.

Everything a client sends is decoded and sanitized here before the core
sees it, so the core only ever handles clean ``str`` that cannot drive
another user's terminal.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

MAX_NAME: Final = 20
MAX_ROOM: Final = 32

# Telnet: IAC (255) starts a command. IAC IAC is a literal 255, IAC SB ... IAC
# SE a subnegotiation, WILL/WONT/DO/DONT (251-254) take one option byte,
# every other command is two bytes in all.
_TELNET = re.compile(rb"\xff(?:\xff|\xfa.*?(?:\xff\xf0|\Z)|[\xfb-\xfe].?|.?)", re.S)

# ANSI/VT escape sequences: CSI (ESC [ or 8-bit 0x9b) with parameters,
# OSC/DCS/SOS/PM/APC strings up to BEL or ST, and two-byte ESC sequences.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]?",
    re.S,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def strip_telnet(raw: bytes) -> bytes:
    """Remove telnet IAC negotiation from raw input bytes."""
    if b"\xff" not in raw:
        return raw
    return _TELNET.sub(b"", raw)


def sanitize(text: str) -> str:
    """Remove control characters and escape sequences; TAB becomes a space.

    The result contains no C0 (but TAB), DEL or C1 character, hence no
    escape sequence can start in it, and sanitizing it again changes nothing.
    """
    if text.isprintable():
        return text
    if "\x1b" in text or "\x9b" in text or any(c in text for c in "\x90\x98\x9d\x9e\x9f"):
        text = _ESCAPES.sub("", text)
    text = text.replace("\t", " ")
    return _CONTROLS.sub("", text)


def decode_line(raw: bytes) -> str:
    """Bytes from the wire to clean text: telnet removed, UTF-8, sanitized."""
    if b"\xff" in raw:
        raw = _TELNET.sub(b"", raw)
    text = raw.decode("utf-8", "replace")
    return text if text.isprintable() else sanitize(text)


def fold(name: str) -> str:
    """The key under which names and rooms are compared: case ignored."""
    return name.casefold()


def _name_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_-."


def normalize_name(name: str) -> str:
    """NFC form, so that visually equal names compare equal."""
    return unicodedata.normalize("NFC", name)


def name_problem(name: str) -> str | None:
    """Why NAME is not a valid user name, or None if it is."""
    if not name:
        return "a name needs at least one character"
    if len(name) > MAX_NAME:
        return f"a name has at most {MAX_NAME} characters"
    if not all(_name_char(c) for c in name):
        return "a name may hold letters, digits, '_', '-' and '.' only"
    return None


def room_name(raw: str) -> str:
    """A room name as typed, without its optional leading '#'."""
    raw = normalize_name(raw)
    return raw[1:] if raw.startswith("#") else raw


def room_problem(name: str) -> str | None:
    """Why NAME (without '#') is not a valid room name, or None if it is."""
    if not name:
        return "a room name needs at least one character"
    if len(name) > MAX_ROOM:
        return f"a room name has at most {MAX_ROOM} characters"
    if not all(c.isalnum() or c in "_-" for c in name):
        return "a room name may hold letters, digits, '_' and '-' only"
    return None


def unquote(text: str) -> str:
    """Remove one pair of double quotes wrapping TEXT, if present."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text
