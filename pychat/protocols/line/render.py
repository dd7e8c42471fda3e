"""The three kinds of line the server sends, as wire bytes.

* ``[YYYY-MM-DD HH:MM:SS] WHERE WHAT`` — a timestamped event;
* ``* text`` — information, the reply to a command;
* ``! text`` — an error, the reply to a command.

Each event is rendered and encoded once; the same bytes then go to every
recipient, which keeps per-recipient work to appending bytes.
"""

from __future__ import annotations

import time

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
