"""LineBuffer: turn an arbitrarily chunked byte stream into lines.

Every byte stream pychat reads (client sockets on the server, the server
socket and stdin on the client) goes through this one framer, so the rules
are the same everywhere: lines end in ``\\n`` or ``\\r\\n``; the unterminated
tail still counts at EOF; a line longer than ``max_line`` bytes is reported
once as :data:`LINE_TOO_LONG` and skipped up to its newline, and the framer
never holds more than about ``max_line`` bytes of an unfinished line.
"""

from __future__ import annotations

from typing import Final, Union


class _LineTooLong:
    """Marker for a line that exceeded the limit and was discarded."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LINE_TOO_LONG"


LINE_TOO_LONG: Final = _LineTooLong()

Frame = Union[bytes, _LineTooLong]


class LineBuffer:
    """Incremental line framer with a bound on the unfinished line."""

    __slots__ = ("max_line", "_buf", "_discarding")

    def __init__(self, max_line: int = 4096) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        # True while skipping the rest of an overlong line up to its newline.
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held for the current unfinished line."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return the lines they complete, in order."""
        frames: list[Frame] = []
        buf = self._buf
        if not buf and not self._discarding and data.endswith(b"\n"):
            # Hot path: the chunk holds whole lines only.
            self._split_whole(data, frames)
            return frames
        # Bytes already in buf hold no newline, so only the new part is scanned.
        scan = len(buf)
        buf += data
        start = 0
        max_line = self.max_line
        while True:
            nl = buf.find(b"\n", scan)
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                end = nl - 1 if nl > start and buf[nl - 1] == 13 else nl
                if end - start > max_line:
                    frames.append(LINE_TOO_LONG)
                else:
                    frames.append(bytes(buf[start:end]))
            start = scan = nl + 1
        if start:
            del buf[:start]
        # One byte of slack: a trailing "\r" may belong to a "\r\n" to come.
        if len(buf) > max_line + 1:
            if not self._discarding:
                frames.append(LINE_TOO_LONG)
                self._discarding = True
            buf.clear()
        return frames

    def _split_whole(self, data: bytes, frames: list[Frame]) -> None:
        max_line = self.max_line
        for line in data.split(b"\n")[:-1]:
            if line.endswith(b"\r"):
                line = line[:-1]
            frames.append(LINE_TOO_LONG if len(line) > max_line else line)

    def finish(self) -> list[Frame]:
        """End of stream: return the unterminated tail as a last line, if any."""
        tail = bytes(self._buf)
        self._buf.clear()
        if self._discarding:
            self._discarding = False
            return []
        if tail.endswith(b"\r"):
            tail = tail[:-1]
        if not tail:
            return []
        return [LINE_TOO_LONG if len(tail) > self.max_line else tail]
