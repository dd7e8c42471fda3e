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
    """Incremental line framer with a bound on the unfinished line.

    Two ways to use it: :meth:`feed` returns every line a chunk completes;
    :meth:`push` keeps a chunk as it is and :meth:`pop` cuts lines from it a
    few at a time. The second is for a client that sends faster than flood
    control lets it: its waiting input stays one compact bytes object (at
    most one read), instead of becoming thousands of small line objects.
    """

    __slots__ = ("max_line", "_buf", "_discarding", "_chunk", "_pos", "_held")

    def __init__(self, max_line: int = 4096) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        # True while skipping the rest of an overlong line up to its newline.
        self._discarding = False
        # A pushed chunk and how far lines have been cut from it.
        self._chunk = b""
        self._pos = 0
        # Lines cut but given back (unread) to be handled later, before the rest.
        self._held: list[Frame] = []

    @property
    def pending(self) -> int:
        """Bytes held for the current unfinished line."""
        return len(self._buf)

    @property
    def waiting(self) -> bool:
        """True while a pushed chunk has bytes not yet cut into lines, or lines were given back."""
        return self._pos < len(self._chunk) or bool(self._held)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return the lines they complete, in order."""
        if not self._buf and not self._discarding and not self.waiting and data.endswith(b"\n"):
            # Hot path: the chunk holds whole lines only.
            frames: list[Frame] = []
            self._split_whole(data, frames)
            return frames
        self.push(data)
        return self.pop(len(data) + 1)

    def push(self, data: bytes) -> None:
        """Keep DATA to be cut into lines by :meth:`pop`."""
        if self.waiting:
            raise RuntimeError("push() before the previous chunk was popped")
        self._chunk, self._pos = data, 0

    def unread(self, frames: list[Frame]) -> None:
        """Give back FRAMES, cut but not handled: :meth:`pop` returns them first."""
        self._held[:0] = frames

    def pop(self, limit: int) -> list[Frame]:
        """Up to LIMIT lines (overlong-line markers included) from pushed bytes."""
        frames: list[Frame] = []
        if self._held:
            frames, self._held = self._held[:limit], self._held[limit:]
        chunk, pos, buf, max_line = self._chunk, self._pos, self._buf, self.max_line
        end = len(chunk)
        while pos < end and len(frames) < limit:
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                # An unfinished line: keep it, up to one byte of slack (a
                # trailing "\r" may belong to a "\r\n" still to come).
                if not self._discarding:
                    buf += chunk[pos:]
                    if len(buf) > max_line + 1:
                        frames.append(LINE_TOO_LONG)
                        self._discarding = True
                        buf.clear()
                pos = end
                break
            if self._discarding:
                self._discarding = False
            else:
                stop = nl - 1 if nl > pos and chunk[nl - 1] == 13 else nl
                if buf:
                    buf += chunk[pos:nl]
                    if buf.endswith(b"\r"):
                        del buf[-1]
                    line = bytes(buf)
                    buf.clear()
                else:
                    line = chunk[pos:stop]
                frames.append(LINE_TOO_LONG if len(line) > max_line else line)
            pos = nl + 1
        if pos >= end:
            self._chunk, self._pos = b"", 0
        else:
            self._pos = pos
        return frames

    def _split_whole(self, data: bytes, frames: list[Frame]) -> None:
        max_line = self.max_line
        for line in data.split(b"\n")[:-1]:
            if line.endswith(b"\r"):
                line = line[:-1]
            frames.append(LINE_TOO_LONG if len(line) > max_line else line)

    def finish(self) -> list[Frame]:
        """End of stream: return the unterminated tail as a last line, if any.

        Pushed bytes must have been popped first.
        """
        if self.waiting:
            raise RuntimeError("finish() before the pushed chunk was popped")
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
