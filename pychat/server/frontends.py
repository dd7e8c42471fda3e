"""What the loop needs to know of each protocol it listens for.

A :class:`Frontend` makes the session of a new connection, says how long
an input line may be, how to refuse a connection in that protocol, and
whether idle connections are pinged. The loop treats every session alike
through :class:`SessionLike`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Union

from pychat.core.model import Hall, Outbox
from pychat.protocols.irc import message as irc_message
from pychat.protocols.irc.session import IrcSession
from pychat.protocols.line import render as line_render
from pychat.protocols.line.session import Session as LineSession
from pychat.server.config import ServerSettings

# IRC clients are asked for a sign of life after this long in silence, and
# dropped if none comes within as long again.
IRC_PING_INTERVAL = 120.0


class SessionLike(Protocol):
    """The session interface the loop uses (line and IRC sessions have it)."""

    closing: bool
    wants_text: bool   # decoded, clean text (the line protocol) or raw lines (IRC)
    # Set by handle_line when a request must wait (a slow check the server has
    # no time for now): the loop calls retry() after that many seconds, and
    # holds the connection's later lines until the request is done.
    held: float

    @property
    def registered(self) -> bool: ...

    def start(self) -> None: ...

    def handle_line(self, line: Union[str, bytes], now: float) -> None: ...

    def retry(self, now: float) -> None: ...

    def line_too_long(self, max_line: int) -> None: ...

    def disconnected(self, reason: str, now: float) -> None: ...

    def timed_out(self, seconds: float) -> None: ...

    def shutting_down(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Frontend:
    name: str
    max_line: int
    make_session: Callable[[Hall, Outbox, str, str], SessionLike]   # hall, outbox, peer, address
    refusal: Callable[[str], bytes]
    ping_interval: float | None = None


def line_frontend(settings: ServerSettings) -> Frontend:
    def make(hall: Hall, outbox: Outbox, peer: str, address: str) -> SessionLike:
        return LineSession(hall, outbox, peer, settings.default_room, address)  # type: ignore[return-value]
    return Frontend("line protocol", settings.max_line, make, line_render.error)


def irc_frontend(settings: ServerSettings) -> Frontend:
    name, info = settings.server_name, settings.server_info

    def make(hall: Hall, outbox: Outbox, peer: str, address: str) -> SessionLike:
        return IrcSession(hall, outbox, peer, address, name, info)  # type: ignore[return-value]

    def refusal(text: str) -> bytes:
        return irc_message.format_message("ERROR", f"Closing link: {text}")

    return Frontend("IRC", irc_message.MAX_CLIENT_LINE, make, refusal, IRC_PING_INTERVAL)


def web_frontend(settings: ServerSettings) -> Frontend:
    """IRC over WebSocket (pychat.server.web): IRC's sessions; a refusal is an HTTP answer."""
    irc = irc_frontend(settings)

    def refusal(text: str) -> bytes:
        body = f"{text}\n".encode()
        return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body

    return Frontend("web", irc.max_line, irc.make_session, refusal, irc.ping_interval)
