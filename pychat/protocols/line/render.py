"""The three kinds of line the server sends, as wire bytes.

* ``[YYYY-MM-DD HH:MM:SS] WHERE WHAT`` — a timestamped event;
* ``* text`` — information, the reply to a command;
* ``! text`` — an error, the reply to a command.

Each event is rendered and encoded once; the same bytes then go to every
recipient, which keeps per-recipient work to appending bytes.
"""

from __future__ import annotations

import time

from pychat.core.events import (ACTION, Broadcast, Direct, Invited, Joined, Kicked, ModeChanged, Parted, Quit,
                                Renamed, SaidFields, Tagged, ToOperators, TopicSet, Wall)

_EOL = "\r\n"
_stamp_second = -1
_stamp_text = ""


def stamp(ts: float) -> str:
    """``[YYYY-MM-DD HH:MM:SS]`` in server local time, cached per second."""
    global _stamp_second, _stamp_text
    second = int(ts)
    if second != _stamp_second:
        _stamp_text = time.strftime("[%Y-%m-%d %H:%M:%S]", time.localtime(second))
        _stamp_second = second
    return _stamp_text


def info(text: str) -> bytes:
    """An information line."""
    return f"* {text}{_EOL}".encode()


def error(text: str) -> bytes:
    """An error line."""
    return f"! {text}{_EOL}".encode()


def event(ts: float, where: str, what: str) -> bytes:
    """A timestamped event line: WHERE is ``#room``, ``(dm)``, ``(all)``..."""
    return f"{stamp(ts)} {where} {what}{_EOL}".encode()


def message(sender: str, text: str) -> str:
    """The WHAT of a message."""
    return f"{sender}: {text}"


def action(sender: str, text: str) -> str:
    """The WHAT of an action."""
    return f"* {sender} {text}"


# The arrows of room notices. User text always follows "NAME: " or "* NAME ",
# and no name starts with "-" or "<", so a notice cannot be imitated.
JOINED = "-->"
LEFT = "<--"
CHANGED = "--"


def notice(arrow: str, text: str) -> str:
    """The WHAT of a room notice: ``--> bob has joined``."""
    return f"{arrow} {text}"


def room_where(room: str) -> str:
    return f"#{room}"


class LineRenderer:
    """The line protocol's rendering of the Hall's events (one for all line users).

    Quits and renames are told in each room, since every event line names
    its room; senders are not sent their own room messages (the user typed
    them), but a direct message is echoed as ``(dm to NAME)`` for
    confirmation.
    """

    per_room = True
    echo = False
    delivers = True

    def said(self, e: SaidFields) -> bytes:
        # The hot path: one f-string, fields by position (ts, room, sender, _, text, kind),
        # and the stamp of this second without a call.
        ts = e[0]
        when = _stamp_text if int(ts) == _stamp_second else stamp(ts)
        if e[5] == ACTION:
            return f"{when} #{e[1]} * {e[2]} {e[4]}\r\n".encode()
        return f"{when} #{e[1]} {e[2]}: {e[4]}\r\n".encode()

    def joined(self, e: Joined) -> bytes:
        return event(e.ts, f"#{e.room}", notice(JOINED, f"{e.who} has joined"))

    def parted(self, e: Parted) -> bytes:
        text = f"{e.who} has left ({e.reason})" if e.reason else f"{e.who} has left"
        return event(e.ts, f"#{e.room}", notice(LEFT, text))

    def quit(self, e: Quit, room: str) -> bytes:
        text = f"{e.who} has quit ({e.reason})" if e.reason else f"{e.who} has quit"
        return event(e.ts, f"#{room}", notice(LEFT, text))

    def renamed(self, e: Renamed, room: str) -> bytes:
        return event(e.ts, f"#{room}", notice(CHANGED, f"{e.old} is now known as {e.new}"))

    def direct(self, e: Direct) -> bytes:
        what = action(e.sender, e.text) if e.kind == ACTION else message(e.sender, e.text)
        return event(e.ts, "(dm)", what)

    def to_operators(self, e: ToOperators) -> bytes:
        # WHERE "@#room": for the room's operators ("+#room": and its voiced members).
        what = action(e.sender, e.text) if e.kind == ACTION else message(e.sender, e.text)
        return event(e.ts, f"{e.status}#{e.room}", what)

    def direct_echo(self, e: Direct) -> bytes | None:
        what = action(e.sender, e.text) if e.kind == ACTION else message(e.sender, e.text)
        return event(e.ts, f"(dm to {e.target})", what)

    def broadcast(self, e: Broadcast) -> bytes:
        return event(e.ts, "(all)", message(e.sender, e.text))

    def topic(self, e: TopicSet) -> bytes:
        what = f"{e.setter} set the topic: {e.text}" if e.text else f"{e.setter} cleared the topic"
        return event(e.ts, f"#{e.room}", notice(CHANGED, what))

    def mode(self, e: ModeChanged) -> bytes:
        return event(e.ts, f"#{e.room}", notice(CHANGED, f"{e.setter} {e.text}"))

    def kicked(self, e: Kicked) -> bytes:
        reason = f" ({e.reason})" if e.reason else ""
        return event(e.ts, f"#{e.room}", notice(LEFT, f"{e.target} was kicked by {e.kicker}{reason}"))

    def wall(self, e: Wall) -> bytes:
        return event(e.ts, "(wall)", message(e.sender, e.text))

    def invited(self, e: Invited) -> bytes:
        return info(f"{e.sender} invites you to #{e.room}: /join {e.room}")

    def tagged(self, e: Tagged) -> bytes | None:
        return None  # tags without text mean nothing at a line prompt

    def error(self, text: str) -> bytes:
        return error(text)

    def notice(self, text: str) -> bytes:
        return info(text)


LINE = LineRenderer()
