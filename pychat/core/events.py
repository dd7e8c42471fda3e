"""What the Hall tells the protocols: typed, immutable events, and the
interface a protocol implements to render them.

The Hall decides who receives an event; a :class:`Renderer` turns it into
wire bytes, once for all the members of a room who share that renderer.
Every member of a room is in the group of its renderer, so the cost per
recipient stays one ``list.append`` of shared bytes, however many protocols
there are.

Events are NamedTuples rather than frozen dataclasses: they are made for
every message on the hot path, and a frozen dataclass costs three times as
much to build (its ``__init__`` goes through ``object.__setattr__``).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

# What kind of text an event carries. MESSAGE and ACTION are the history
# store's codes too; NOTICE (IRC's: a message no program may answer
# automatically) is stored as a MESSAGE. (The store's code 2 is a room notice:
# a join, leave, quit or rename.)
MESSAGE = 0
ACTION = 1
NOTICE = 3


class Said(NamedTuple):
    """A message, action or notice in a room."""

    ts: float
    room: str       # the room's name
    sender: str     # the sender's name
    prefix: str     # nick!user@host, for protocols that show it
    text: str
    kind: int       # MESSAGE, ACTION or NOTICE
    msgid: int      # unique for the server's life (IRC's msgid tag)
    tags: str       # the sender's client-only tags, as IRC writes them ("+typing=active"), or ""


# What Hall.say() hands the renderers: Said's fields, in Said's order, as a
# plain tuple. It is made for every message, and a plain tuple costs a third
# of a Said (40 ns, against 140 even without NamedTuple's __new__), so the
# renderers read it by position; a Said is one too.
SaidFields = tuple[float, str, str, str, str, int, int, str]


class Joined(NamedTuple):
    ts: float
    room: str
    who: str
    prefix: str


class Parted(NamedTuple):
    """Someone left a room (reason empty if none was given)."""

    ts: float
    room: str
    who: str
    prefix: str
    reason: str


class Quit(NamedTuple):
    """Someone left the server; sent to those who shared a room with them."""

    ts: float
    who: str
    prefix: str
    reason: str


class Renamed(NamedTuple):
    ts: float
    old: str
    new: str
    prefix: str     # the old prefix


class Direct(NamedTuple):
    """A message from one user to another."""

    ts: float
    sender: str
    prefix: str
    target: str
    text: str
    kind: int
    msgid: int
    tags: str       # client-only tags, as in Said


class ToOperators(NamedTuple):
    """A message in a room for its operators only (STATUS '@'), or its
    operators and voiced members ('+'): IRC's STATUSMSG. Not stored."""

    ts: float
    room: str
    sender: str
    prefix: str
    text: str
    kind: int
    msgid: int
    status: str
    tags: str       # client-only tags, as in Said


class Tagged(NamedTuple):
    """Client-only tags with no text (IRC's TAGMSG: typing notices, reactions,
    replies). Only renderers that carry tags show it; it is not stored."""

    ts: float
    sender: str
    prefix: str
    target: str     # "#room", or the recipient's name
    tags: str       # as IRC writes them, never empty
    msgid: int


class Invited(NamedTuple):
    """Someone asks another user to join a room."""

    ts: float
    room: str
    sender: str
    prefix: str
    target: str


class TopicSet(NamedTuple):
    """A room's topic was set (TEXT empty: cleared)."""

    ts: float
    room: str
    setter: str
    prefix: str
    text: str


class ModeChanged(NamedTuple):
    """Someone changed a room's modes or members' roles.

    MODES and ARGS as IRC writes them (``+ov``, ``("bob", "carl")``); TEXT
    says the same in words, for people (``made bob an operator``).
    """

    ts: float
    room: str
    setter: str
    prefix: str
    modes: str
    args: tuple[str, ...]
    text: str


class Kicked(NamedTuple):
    """Someone was removed from a room (the room, and its target, are told)."""

    ts: float
    room: str
    kicker: str
    prefix: str
    target: str
    reason: str


class Wall(NamedTuple):
    """A server operator's message to everyone online."""

    ts: float
    sender: str
    prefix: str
    text: str


class Broadcast(NamedTuple):
    """A message to everyone online."""

    ts: float
    sender: str
    prefix: str
    text: str


class Renderer(Protocol):
    """How one protocol (with one set of options) writes events.

    PER_ROOM: a quit or rename is announced in each room the recipient shares
    with its subject (the line protocol names the room), or once per
    recipient (IRC's QUIT and NICK name no room). ECHO: senders receive their
    own room messages (IRC's echo-message). DELIVERS: false for users this
    process sends nothing to (a cluster's users on other nodes): they are
    members of their rooms but left out of the rooms' fan-out groups.
    """

    per_room: bool
    echo: bool
    delivers: bool

    def said(self, e: SaidFields) -> bytes: ...

    def joined(self, e: Joined) -> bytes: ...

    def parted(self, e: Parted) -> bytes: ...

    def quit(self, e: Quit, room: str) -> bytes: ...

    def renamed(self, e: Renamed, room: str) -> bytes: ...

    def direct(self, e: Direct) -> bytes: ...

    def to_operators(self, e: ToOperators) -> bytes: ...

    def direct_echo(self, e: Direct) -> bytes | None:
        """What the sender of a direct message is shown, if anything."""

    def broadcast(self, e: Broadcast) -> bytes: ...

    def invited(self, e: Invited) -> bytes: ...

    def topic(self, e: TopicSet) -> bytes: ...

    def mode(self, e: ModeChanged) -> bytes: ...

    def kicked(self, e: Kicked) -> bytes: ...

    def wall(self, e: Wall) -> bytes: ...

    def tagged(self, e: Tagged) -> bytes | None:
        """Tags alone (IRC's TAGMSG), or None for a protocol without tags."""

    def error(self, text: str) -> bytes:
        """A refusal the server tells this user of on its own (not as a reply)."""

    def notice(self, text: str) -> bytes:
        """News the server tells this user of on its own that is not a refusal."""
