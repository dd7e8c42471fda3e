"""Web connections: a Connection whose bytes pass through a WebAdapter.

The adapter (pychat.protocols.web.adapter) turns what the browser sends
into IRC lines, so the loop reads a web connection like an IRC one: the
same line framer, flood control and session. On the way out, the IRC
session's lines become WebSocket text frames when the connection is
flushed, after any HTTP response or control frame the adapter has ready.
The same classes serve plain HTTP/WS and, over TLS, HTTPS/WSS.
"""

from __future__ import annotations

import ssl
from typing import Callable

from pychat.server.connection import Connection
from pychat.server.frontends import Frontend
from pychat.server.tls import TlsConnection

try:
    from pychat.protocols.web.adapter import WebAdapter, allowed_origins, load_page
except ImportError as exc:  # the optional extra is not installed
    WebAdapter = None  # type: ignore[assignment,misc]
    allowed_origins = load_page = None  # type: ignore[assignment]
    MISSING = str(exc)
else:
    MISSING = ""


# One room event is one bytes object appended to every member's output;
# framed once per loop pass, it is looked up by identity for the others.
# The object is kept with its frame so that its id cannot be reused within
# the pass; the loop calls forget_frames() when the pass's output is written.
_framed: dict[int, tuple[bytes, bytes]] = {}


def _remember(web: WebAdapter, data: bytes) -> tuple[bytes, bytes]:
    """DATA's frames, made and kept for the other recipients of this pass."""
    known = _framed[id(data)] = (data, web.frame(data))
    return known


def forget_frames() -> None:
    _framed.clear()


class _WebIo:
    """recv() and flush() through the adapter; mixed into both connection classes."""

    __slots__ = ()
    web: WebAdapter
    out: list[bytes]
    wbuf: bytearray

    def recv(self) -> bytes:
        data = super().recv()  # type: ignore[misc]  # BlockingIOError passes through
        web = self.web
        lines = web.receive(data)
        if web.outgoing:
            # A response or pong: written ahead of any IRC output (and, if this
            # is the end, before the connection is closed).
            self.wbuf += web.outgoing
            web.outgoing.clear()
            self.wake()  # type: ignore[attr-defined]
        if lines:
            if web.ended:
                # The last lines came with the end (a close frame, a refusal):
                # they are handled, then the connection ends as at EOF.
                self.eof = True  # type: ignore[misc]
            return lines
        if not data or web.ended:
            return b""  # the end: the loop closes once the output is written
        raise BlockingIOError("no whole WebSocket message yet")

    def flush(self) -> None:
        if getattr(self, "handshaking", False):
            return  # TLS first: the output waits, unframed
        web = self.web  # (its HTTP answers and pongs went to wbuf as they were made: see recv)
        out = self.out
        if out:
            if web.upgraded and not web.ended:
                framed = _framed
                for i, data in enumerate(out):
                    known = framed.get(id(data))
                    if known is None or known[0] is not data:
                        known = _remember(web, data)
                    out[i] = known[1]
            else:
                out.clear()  # before the upgrade there is no one to say IRC to
        super().flush()  # type: ignore[misc]


class WebConnection(_WebIo, Connection):
    __slots__ = ("web",)

    def __init__(self, sock, peer: str, addr: str, max_line: int, mark_dirty: Callable[[Connection], None],
                 web: WebAdapter) -> None:
        super().__init__(sock, peer, addr, max_line, mark_dirty)
        self.web = web


class TlsWebConnection(_WebIo, TlsConnection):
    __slots__ = ("web",)

    def __init__(self, sock: ssl.SSLSocket, peer: str, addr: str, max_line: int,
                 mark_dirty: Callable[[Connection], None], frontend: Frontend, web: WebAdapter) -> None:
        super().__init__(sock, peer, addr, max_line, mark_dirty, frontend)
        self.web = web
