"""The web front end's wire, sans I/O: HTTP for the page, then a WebSocket
that carries IRC (PROTOCOL.md section 12).

h11 parses the HTTP requests; a GET for the page or one of its files is
answered from memory, and a WebSocket upgrade switches the connection to
wsproto's frame parser. From then on each text message is one IRC line:
:meth:`WebAdapter.receive` turns what arrived into CRLF-ended IRC lines for
the server's usual line framer (so flood control, the line limit and
held lines work as on the IRC port), and :meth:`WebAdapter.frame` turns
the IRC session's output into one text frame per line.

The optional extra ``pychat[web]`` installs h11 and wsproto; importing
this module without them raises ImportError, which the server reports.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from http import HTTPStatus
from importlib import resources
from typing import Final
from urllib.parse import urlsplit

import h11
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

SUBPROTOCOL: Final = "text.ircv3.net"
WS_PATH: Final = "/ws"
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The page and its files, served from memory: path -> (content type, body).
_PAGE_FILES: Final = {"/": "index.html", "/app.js": "app.js", "/app.css": "app.css"}
_TYPES: Final = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
                 "css": "text/css; charset=utf-8"}
_COMMON_HEADERS: Final = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
]
_PAGE_POLICY: Final = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                       "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
# An HTTP request line and headers may take this much before the connection
# is refused (h11 buffers at most this).
MAX_REQUEST_HEAD: Final = 16384
# Requests one connection may make before it is closed: a page load is a few;
# a client pipelining thousands would have them all answered at once.
MAX_REQUESTS: Final = 32
# Frames in one read that complete no message (pings, empty or partial
# fragments) before the connection is closed (1008): each costs a parse, and
# flood control, which counts lines, would never see them.
MAX_IDLE_FRAMES: Final = 64
_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")


def load_page() -> dict[str, tuple[str, bytes]]:
    """The page's files from the package, read once at start."""
    static = resources.files("pychat.protocols.web") / "static"
    page = {}
    for path, name in _PAGE_FILES.items():
        page[path] = (_TYPES[name.rsplit(".", 1)[1]], (static / name).read_bytes())
    return page


def allowed_origins(listed: tuple[str, ...]) -> frozenset[str]:
    """--web-origin values as browsers send them (no trailing slash); made once, shared by every connection."""
    return frozenset(origin.rstrip("/") for origin in listed)


def accept_token(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame (a server's frames are never masked)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class WebAdapter:
    """One web connection: HTTP requests, then (after an upgrade) IRC over WebSocket."""

    __slots__ = ("_http", "_ws", "_page", "_origins", "_max_message", "_message", "_message_size", "_requests",
                 "outgoing", "ended", "upgraded")

    def __init__(self, page: dict[str, tuple[str, bytes]], origins: frozenset[str], max_message: int) -> None:
        """ORIGINS: the allowed Origin values (see allowed_origins); empty means the page's own only."""
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self._ws: WsConnection | None = None
        self._page = page
        self._origins = origins
        self._max_message = max_message
        self._message: list[bytes] = []   # the fragments of a message not yet finished
        self._message_size = 0
        self._requests = 0
        self.outgoing = bytearray()  # HTTP responses and WebSocket control frames, ready for the wire
        self.ended = False           # nothing more will be read: close once the output is written
        self.upgraded = False

    # -- input ----------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the socket (b'' at its end); return the IRC lines they
        completed, CRLF-ended. Responses to write appear in ``outgoing``."""
        if self.ended:
            return b""
        if self._ws is None:
            return self._receive_http(data)
        return self._receive_ws(data)

    def _receive_http(self, data: bytes) -> bytes:
        http = self._http
        try:
            http.receive_data(data)
            while not self.ended and self._ws is None:
                event = http.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Request):
                    self._requests += 1
                    self._request(event)
                    if self._requests >= MAX_REQUESTS and self._ws is None:
                        self.ended = True  # closed once the answers are written
                elif isinstance(event, h11.EndOfMessage):
                    if http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
                        self.ended = True
                    elif http.our_state is h11.DONE and http.their_state is h11.DONE:
                        http.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    self.ended = True
        except h11.RemoteProtocolError as exc:
            self._respond(exc.error_status_hint, "bad request\n")
            self.ended = True
        if self._ws is not None:
            trailing, _ = http.trailing_data
            return self._receive_ws(trailing) if trailing else b""
        return b""

    def _request(self, request: h11.Request) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
        target = request.target.decode("latin-1").split("?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            self._respond(405, "only GET\n", [("Allow", "GET, HEAD")])
        elif target == WS_PATH:
            self._upgrade(headers)
        elif target in self._page:
            content_type, body = self._page[target]
            extra = [("Content-Security-Policy", _PAGE_POLICY)] if content_type.startswith("text/html") else []
            self._respond(200, body, extra, content_type, head_only=request.method == b"HEAD")
        else:
            self._respond(404, "not found\n")

    def _upgrade(self, headers: dict[str, str]) -> None:
        """Switch to WebSocket if the request is a good upgrade from an allowed origin."""
        if ("websocket" not in headers.get("upgrade", "").lower()
                or not _KEY.fullmatch(headers.get("sec-websocket-key", ""))):
            self._respond(426, "this is a WebSocket endpoint\n", [("Upgrade", "websocket")])
            return
        if headers.get("sec-websocket-version") != "13":
            self._respond(426, "WebSocket version 13 only\n", [("Sec-WebSocket-Version", "13")])
            return
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, headers.get("host", "")):
            self._respond(403, "origin not allowed\n")
            return
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        if offered and SUBPROTOCOL not in offered:
            self._respond(400, f"subprotocol {SUBPROTOCOL} only\n")
            return
        response_headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                            ("Sec-WebSocket-Accept", accept_token(headers["sec-websocket-key"]))]
        if offered:
            response_headers.append(("Sec-WebSocket-Protocol", SUBPROTOCOL))
        self.outgoing += self._http.send(h11.InformationalResponse(status_code=101, headers=response_headers,
                                                                   reason=b"Switching Protocols"))
        self._ws = WsConnection(ConnectionType.SERVER)
        self.upgraded = True

    def _origin_allowed(self, origin: str, host: str) -> bool:
        """An allowed origin, or (with no list) the page's own: same host and port."""
        if self._origins:
            return origin in self._origins
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc.lower() == host.lower()

    def _respond(self, status: int, body: bytes | str, headers: list[tuple[str, str]] | None = None,
                 content_type: str = "text/plain; charset=utf-8", head_only: bool = False) -> None:
        http = self._http
        if http.our_state is not h11.SEND_RESPONSE:
            self.ended = True  # nothing more can be said on this connection
            return
        data = body.encode() if isinstance(body, str) else body
        all_headers = [("Content-Type", content_type), ("Content-Length", str(len(data))),
                       *_COMMON_HEADERS, *(headers or [])]
        if status >= 400:
            all_headers.append(("Connection", "close"))
        self.outgoing += http.send(h11.Response(status_code=status, headers=all_headers,
                                                reason=HTTPStatus(status).phrase.encode()))
        if data and not head_only:
            self.outgoing += http.send(h11.Data(data=data))
        self.outgoing += http.send(h11.EndOfMessage())
        if status >= 400:
            self.ended = True

    def _receive_ws(self, data: bytes) -> bytes:
        ws = self._ws
        assert ws is not None
        ws.receive_data(data if data else None)
        lines = []
        idle = 0
        for event in ws.events():  # parsed as they are taken: a break leaves the rest unread
            if isinstance(event, (TextMessage, BytesMessage)):
                chunk = event.data.encode() if isinstance(event, TextMessage) else event.data
                self._message_size += len(chunk)
                if self._message_size > self._max_message:
                    self._message.clear()  # nothing of a refused message is acted on
                    self._close(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    break
                if chunk:
                    self._message.append(bytes(chunk))
                if event.message_finished:
                    # Only a whole message is a line: a fragment cut off by the
                    # end of the connection is not.
                    lines.extend(self._message)
                    lines.append(b"\r\n")
                    self._message.clear()
                    self._message_size = 0
                    continue
            elif isinstance(event, Ping):
                self.outgoing += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if ws.state.name == "REMOTE_CLOSING":
                    self.outgoing += ws.send(event.response())
                self.ended = True
                break
            idle += 1
            if idle >= MAX_IDLE_FRAMES:
                self._close(CloseReason.POLICY_VIOLATION, "too many frames")
                break
        return b"".join(lines)

    def _close(self, code: int, reason: str) -> None:
        ws = self._ws
        assert ws is not None
        self.outgoing += ws.send(CloseConnection(code=code, reason=reason))
        self.ended = True

    # -- output ---------------------------------------------------------------------

    def frame(self, irc: bytes) -> bytes:
        """The IRC session's output as one text frame per line (nothing before the upgrade)."""
        if self._ws is None or self.ended:
            return b""
        return b"".join(text_frame(line) for line in irc.split(b"\r\n") if line)
