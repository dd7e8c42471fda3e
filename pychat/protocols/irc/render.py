"""The Hall's events as IRC lines.

One :class:`IrcRenderer` per combination of the capabilities that change
the bytes (server-time, message-tags, echo-message): every IRC user with
the same combination shares its renderer, so a room message is written
once for all of them. Lines are built with f-strings, not
:func:`pychat.protocols.irc.message.format_message`: everything in them is
already clean (names and rooms follow the name rules, text has no CR, LF or
NUL), and this is the hot path. A line much longer than IRC's 512 bytes
(see PREFIX_ROOM) is split into several, at character boundaries.
"""

from __future__ import annotations

import time
from functools import lru_cache

from pychat.core.events import (ACTION, MESSAGE, NOTICE, Broadcast, Direct, Invited, Joined, Kicked, ModeChanged, Parted,
                                Quit, Renamed, SaidFields, Tagged, ToOperators, TopicSet, Wall)
from pychat.protocols.irc.message import MAX_BODY

# A line an IRC client could have sent (512 bytes) grows by the sender's
# prefix when it is relayed. Such a line goes out whole, as modern servers
# send it (clients take longer lines); only longer text, such as a line
# user's 4,000-byte message, is split into lines of 512 bytes.
PREFIX_ROOM = 128

_time_second = -1
_time_text = ""


def server_time(ts: float) -> str:
    """IRCv3 server-time: ``2026-11-21T15:00:05.123Z`` (UTC, milliseconds)."""
    global _time_second, _time_text
    second = int(ts)
    if second != _time_second:
        _time_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _time_second = second
    return f"{_time_text}.{int((ts - second) * 1000):03d}Z"


def split_text(head: str, text: str, tail: str = "") -> list[str]:
    """TEXT cut so that each ``head + part + tail`` fits in one IRC line
    (510 bytes without its CRLF), at UTF-8 character boundaries."""
    room = MAX_BODY - len(head.encode()) - len(tail.encode())
    data = text.encode()
    if len(data) <= room:
        return [text]
    room = max(room, 16)
    parts = []
    while data:
        cut = min(room, len(data))
        while cut < len(data) and (data[cut] & 0xC0) == 0x80:  # not in the middle of a character
            cut -= 1
        parts.append(data[:cut].decode())
        data = data[cut:]
    return parts


class IrcRenderer:
    """IRC lines for one set of capabilities."""

    per_room = False  # QUIT and NICK name no room: each recipient is told once
    delivers = True

    def __init__(self, server_name: str, server_time: bool, message_tags: bool, echo: bool) -> None:
        self.server_name = server_name
        self.server_time = server_time
        self.message_tags = message_tags
        self.echo = echo
        self._untagged = not (server_time or message_tags)

    def _tags(self, ts: float, msgid: int | str = 0, client_tags: str = "") -> str:
        parts = []
        if self.server_time:
            parts.append(f"time={server_time(ts)}")
        if self.message_tags:
            if msgid:
                parts.append(f"msgid={msgid}")
            if client_tags:  # the sender's own tags, for clients that asked for tags
                parts.append(client_tags)
        return f"@{';'.join(parts)} " if parts else ""

    def _message(self, ts: float, msgid: int | str, client_tags: str, source: str, command: str, target: str,
                 text: str, kind: int) -> bytes:
        tags = self._tags(ts, msgid, client_tags)
        head = f":{source} {command} {target} :"
        if kind == ACTION:
            head, tail = head + "\x01ACTION ", "\x01"
        else:
            tail = ""
        line = f"{tags}{head}{text}{tail}\r\n".encode()
        # len(tags) counts characters; a client tag with UTF-8 in its value only
        # makes this split a little sooner.
        if len(line) - len(tags) <= MAX_BODY + 2 + PREFIX_ROOM:
            return line
        # Split: each line has its own msgid (clients drop a msgid seen before).
        parts = split_text(head, text, tail)
        return "".join(f"{self._tags(ts, f'{msgid}-{n}' if n and msgid else msgid, client_tags)}{head}{part}{tail}\r\n"
                       for n, part in enumerate(parts)).encode()

    def said(self, e: SaidFields) -> bytes:
        ts, room, _, prefix, text, kind, msgid, tags = e
        if self._untagged and kind == MESSAGE:
            # The hot path: a plain message to a client without tags, short enough for one line.
            line = f":{prefix} PRIVMSG #{room} :{text}\r\n".encode()
            if len(line) <= MAX_BODY + 2 + PREFIX_ROOM:
                return line
        command = "NOTICE" if kind == NOTICE else "PRIVMSG"
        return self._message(ts, msgid, tags, prefix, command, f"#{room}", text, kind)

    def joined(self, e: Joined) -> bytes:
        return f"{self._tags(e.ts)}:{e.prefix} JOIN #{e.room}\r\n".encode()

    def parted(self, e: Parted) -> bytes:
        reason = f" :{e.reason}" if e.reason else ""
        return f"{self._tags(e.ts)}:{e.prefix} PART #{e.room}{reason}\r\n".encode()

    def quit(self, e: Quit, room: str) -> bytes:
        return f"{self._tags(e.ts)}:{e.prefix} QUIT :{quit_reason(e.reason)}\r\n".encode()

    def renamed(self, e: Renamed, room: str) -> bytes:
        return f"{self._tags(e.ts)}:{e.prefix} NICK {e.new}\r\n".encode()

    def direct(self, e: Direct) -> bytes:
        command = "NOTICE" if e.kind == NOTICE else "PRIVMSG"
        return self._message(e.ts, other_msgid(e.msgid), e.tags, e.prefix, command, e.target, e.text, e.kind)

    def to_operators(self, e: ToOperators) -> bytes:
        command = "NOTICE" if e.kind == NOTICE else "PRIVMSG"
        return self._message(e.ts, other_msgid(e.msgid), e.tags, e.prefix, command, f"{e.status}#{e.room}", e.text,
                             e.kind)

    def direct_echo(self, e: Direct) -> bytes | None:
        return self.direct(e) if self.echo else None

    def broadcast(self, e: Broadcast) -> bytes:
        # A notice to the whole server ($mask, as IRC operators' global notices are).
        return self._message(e.ts, 0, "", e.prefix, "NOTICE", f"${self.server_name}", e.text, 0)

    def topic(self, e: TopicSet) -> bytes:
        return f"{self._tags(e.ts)}:{e.prefix} TOPIC #{e.room} :{e.text}\r\n".encode()

    def mode(self, e: ModeChanged) -> bytes:
        args = "".join(f" {arg}" for arg in e.args)
        return f"{self._tags(e.ts)}:{e.prefix} MODE #{e.room} {e.modes}{args}\r\n".encode()

    def kicked(self, e: Kicked) -> bytes:
        return f"{self._tags(e.ts)}:{e.prefix} KICK #{e.room} {e.target} :{e.reason or e.kicker}\r\n".encode()

    def wall(self, e: Wall) -> bytes:
        return f"{self._tags(e.ts)}:{e.prefix} WALLOPS :{e.text}\r\n".encode()

    def invited(self, e: Invited) -> bytes:
        return f"{self._tags(e.ts)}:{e.prefix} INVITE {e.target} #{e.room}\r\n".encode()

    def tagged(self, e: Tagged) -> bytes | None:
        if not self.message_tags:
            return None
        return f"{self._tags(e.ts, other_msgid(e.msgid), e.tags)}:{e.prefix} TAGMSG {e.target}\r\n".encode()

    def error(self, text: str) -> bytes:
        return f":{self.server_name} NOTICE * :{text}\r\n".encode()

    def notice(self, text: str) -> bytes:
        return self.error(text)  # IRC has one kind of server notice


def other_msgid(number: int) -> str:
    """The msgid of anything but a room message: a room message's is its id in
    the history store (CHATHISTORY finds it by that), so the others, counted
    apart, are told apart by a letter."""
    return f"x{number}"


def quit_reason(reason: str) -> str:
    """A QUIT's text; IRC clients expect one."""
    return reason or "Client Quit"


@lru_cache(maxsize=None)
def renderer_for(server_name: str, server_time: bool, message_tags: bool, echo: bool) -> IrcRenderer:
    """The one renderer for this set of capabilities (users who share it share bytes)."""
    return IrcRenderer(server_name, server_time, message_tags, echo)
