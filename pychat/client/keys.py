"""Turn the bytes a terminal sends into keys.

The client reads stdin itself (it is one of the sockets of its selectors
loop), so it parses keys itself: UTF-8 text, control keys, the common
escape sequences for cursor and paging keys, and bracketed paste
(``ESC [200~ ... ESC [201~``), which arrives as one ``paste`` key.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"


@dataclass(frozen=True, slots=True)
class Key:
    """A key press: NAME is 'char' (TEXT is the character), 'paste' (TEXT is
    the pasted text), or a key name such as 'enter', 'left', 'ctrl-u'."""

    name: str
    text: str = ""


_CSI_FINAL = {"A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end"}
_CSI_TILDE = {"1": "home", "7": "home", "4": "end", "8": "end", "3": "delete", "2": "insert",
              "5": "pgup", "6": "pgdn"}
_CONTROL = {"\r": "enter", "\n": "enter", "\t": "tab", "\x7f": "backspace", "\x08": "backspace"}


class KeyParser:
    """Incremental: feed any chunking of the byte stream, get the same keys."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""       # an escape sequence not yet complete
        self._paste: list[str] | None = None

    def feed(self, data: bytes) -> list[Key]:
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        keys: list[Key] = []
        i = 0
        n = len(text)
        while i < n:
            if self._paste is not None:
                end = text.find(PASTE_END, i)
                if end < 0:
                    # Keep a possible partial end marker for the next chunk.
                    keep = _partial_suffix(text, PASTE_END)
                    self._paste.append(text[i:n - keep])
                    self._pending = text[n - keep:]
                    return keys
                self._paste.append(text[i:end])
                pasted = "".join(self._paste).replace("\r\n", "\n").replace("\r", "\n")
                keys.append(Key("paste", pasted))
                self._paste = None
                i = end + len(PASTE_END)
                continue
            ch = text[i]
            if ch == "\x1b":
                consumed, key = _escape(text, i)
                if consumed == 0:  # incomplete: wait for more bytes
                    self._pending = text[i:]
                    return keys
                i += consumed
                if key is not None:
                    if key.name == "paste-start":
                        self._paste = []
                    else:
                        keys.append(key)
                continue
            i += 1
            if ch in _CONTROL:
                if ch == "\n" and keys and keys[-1].name == "enter" and text[i - 2:i - 1] == "\r":
                    continue  # CR LF is one Enter
                keys.append(Key(_CONTROL[ch]))
            elif ch < " ":
                keys.append(Key("ctrl-" + chr(ord(ch) + 96)))
            else:
                keys.append(Key("char", ch))
        return keys


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of TEXT that is a proper prefix of MARKER."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _escape(text: str, i: int) -> tuple[int, Key | None]:
    """Parse an escape sequence at TEXT[i]; (0, None) if it is incomplete."""
    if i + 1 >= len(text):
        return 0, None
    kind = text[i + 1]
    if kind == "[":
        j = i + 2
        while j < len(text) and text[j] in "0123456789;?":
            j += 1
        if j >= len(text):
            return 0, None
        params, final = text[i + 2:j], text[j]
        length = j + 1 - i
        if final == "~":
            if params == "200":
                return length, Key("paste-start")
            name = _CSI_TILDE.get(params.split(";")[0])
            return length, Key(name) if name else None
        name = _CSI_FINAL.get(final)
        return length, Key(name) if name else None
    if kind == "O":
        if i + 2 >= len(text):
            return 0, None
        name = _CSI_FINAL.get(text[i + 2])
        return 3, Key(name) if name else None
    if kind == "\x1b":
        return 1, Key("escape")
    return 2, Key("alt", kind)  # Alt+key
