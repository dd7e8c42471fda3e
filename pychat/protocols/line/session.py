"""The line protocol's session: a small state machine over lines.

States: waiting for a name, then chatting, then closed. A clean line and the
current time go in; replies go to the connection's outbox, and everything
else happens through the Hall. Commands are dispatched from the table in
:mod:`pychat.protocols.line.commands`; each command name maps to one handler
below.

A line user is in at most one room at a time (the seeds' protocol: /join
switches); the Hall allows several, so the current room is simply the one
the user is in.
"""

from __future__ import annotations

import logging
from typing import Callable

from pychat.core.events import ACTION, MESSAGE
from pychat.core.history import HistoryError, StoredEvent
from pychat.core.history import MESSAGE as STORED_MESSAGE
from pychat.core.errors import ChatError
from pychat.core.model import Hall, Outbox, Room, User
from pychat.core.text import clip
from pychat.protocols.line import render
from pychat.protocols.line.commands import (COMMANDS, Command, UsageError, help_lines, lookup, parse_args,
                                            split_command)

log = logging.getLogger("pychat.protocols.line.session")

NAME_PROMPT = "what is your name? (press Enter for a guest name)"
GREETING_ROOMS = 10    # rooms in the greeting
LIST_LIMIT = 50        # rooms in one /list answer
HISTORY_DEFAULT = 20
HISTORY_MAX = 500
HISTORY_OWED = 256 * 1024  # unread output beyond which /history waits
REPLAY_CLIP = 400      # characters of one message replayed on join (/history shows it whole)
REPLAY_BYTES = 64 * 1024  # at most this much history in one answer

Handler = Callable[["Session", list[str], float], None]
_HANDLERS: dict[str, Handler] = {}


def _handles(name: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _HANDLERS[name] = func
        return func
    return register


class Session:
    """One client's conversation with the Hall."""

    wants_text = True  # the server hands this session decoded, clean lines

    __slots__ = ("hall", "outbox", "send", "peer", "address", "default_room", "user", "closing")

    def __init__(self, hall: Hall, outbox: Outbox, peer: str = "", default_room: str = "general",
                 address: str = "") -> None:
        self.hall = hall
        self.outbox = outbox
        self.send = outbox.queue
        self.peer = peer
        self.address = address  # what per-address limits count
        self.default_room = default_room
        self.user: User | None = None
        # Set when the session has said goodbye: the connection closes once
        # its output is flushed.
        self.closing = False

    def _log(self, level: int, msg: str, *args: object) -> None:
        """Log about this client; the log throttles each address (pychat.server.logsink)."""
        log.log(level, msg, *args, extra={"addr": self.address})

    @property
    def registered(self) -> bool:
        return self.user is not None

    @property
    def room(self) -> Room | None:
        """The room the user is in, if any."""
        user = self.user
        if user is None or not user.rooms:
            return None
        return next(iter(user.rooms))

    def start(self) -> None:
        """Greet a new connection and ask for a name."""
        self.send(render.info("welcome to pychat, a small chat server") + render.info(NAME_PROMPT))

    def timed_out(self, seconds: float) -> None:
        """No name was given in time; the connection closes after this."""
        self.send(render.error(f"no name given within {seconds:g} s; goodbye"))
        self.closing = True

    def shutting_down(self) -> None:
        """The server is stopping; the connection closes once this is written."""
        self.send(render.info("server shutting down"))
        self.closing = True

    def line_too_long(self, max_line: int) -> None:
        self.send(render.error(f"line too long (more than {max_line} bytes); it was discarded"))

    def handle_line(self, line: str, now: float) -> None:
        """Act on one clean line of input."""
        user = self.user
        if self.closing:
            return
        if user is None:
            self._at_prompt(line.strip(), now)
        elif not line or line.isspace():
            return
        elif line[0] != "/":
            for room in user.rooms:  # the common case: a message to the user's one room
                try:
                    self.hall.say(user, room, line, now)
                except ChatError as exc:  # a muted user, a moderated room
                    self.send(render.error(str(exc)))
                return
            if lookup(split_command(line)[0]) is not None:
                self._command(line, now)  # in the hall a command may be typed without its slash
            else:
                self._not_in_room()
        elif line.startswith("//"):
            self._say(line[1:], now)
        else:
            self._command(line[1:], now)

    def _say(self, text: str, now: float, kind: int = MESSAGE) -> None:
        room = self.room
        if room is None:
            self._not_in_room()
        else:
            try:
                self.hall.say(self._me, room, text, now, kind)
            except ChatError as exc:
                self.send(render.error(str(exc)))

    def disconnected(self, reason: str, now: float, *, said: bool = False) -> None:
        """The connection is gone (or going): leave the hall.

        SAID marks a reason the user typed: it is shown to the room but,
        like everything users say, never written to the log.
        """
        if self.user is not None:
            self._log(logging.INFO, "%s (%s) quit%s", self.user.name, self.peer,
                      "" if said else f": {reason or 'quit'}")
            self.hall.quit(self.user, reason, now)
            self.user = None
        self.closing = True

    # -- registration -----------------------------------------------------

    def _at_prompt(self, answer: str, now: float) -> None:
        """The answer to the name prompt: a name, or /quit or /help."""
        if answer.startswith("/") and not answer.startswith("//"):
            word, rest = split_command(answer[1:])
            cmd = lookup(word)
            if cmd is not None and cmd.name == "quit":
                self.send(render.info("goodbye!"))
                self.closing = True
            elif cmd is not None and cmd.name == "help":
                self._command(answer[1:], now)
                self.send(render.info(NAME_PROMPT))
            else:
                self.send(render.error("choose a name first (or /quit to leave, /help for the commands)")
                          + render.info(NAME_PROMPT))
            return
        self._choose_name(answer, now)

    def _choose_name(self, name: str, now: float) -> None:
        hall = self.hall
        try:
            user = hall.register(name or hall.guest_name(), self.outbox, render.LINE, self.address)
        except ChatError as exc:
            self.send(render.error(str(exc)) + render.info(NAME_PROMPT))
            return
        self.user = user
        self._log(logging.INFO, "%s registered as %s", self.peer, user.name)
        out = [render.info(f"hello {user.name}! /help lists the commands")]
        if hall.rooms or not self.default_room:
            out.extend(render.info(line) for line in self._room_list(None, GREETING_ROOMS))
        self.send(b"".join(out))
        if self.default_room:
            try:
                # Not limited: a login must not fail because of room budgets.
                room = hall.join(user, self.default_room, None, now, limited=False)
                self._entered(room)
                self._log(logging.INFO, "%s joined #%s", user.name, room.name)
            except ChatError as exc:
                self.send(render.error(str(exc)))

    # -- replies ------------------------------------------------------------

    def _entered(self, room: Room) -> None:
        """What a user sees on entering ROOM: the room, then its recent history."""
        count = len(room.members)
        lock = " (locked)" if room.locked else ""
        self.send(render.info(f"you joined #{room.name}{lock}: {count} {_users(count)} here"))
        self._replay(room, self.hall.history_lines, clip=REPLAY_CLIP)

    def _replay(self, room: Room, limit: int, clip: int | None = None) -> None:
        """The last LIMIT messages of ROOM between two info lines.

        With CLIP, a longer message is cut to that many characters: one long
        line must not fill the screen of everyone who joins later. The answer
        holds at most REPLAY_BYTES of messages (the newest that fit), so that
        asking for history cannot make the server hold megabytes.
        """
        if limit <= 0:
            return
        try:
            events = self.hall.recent(room, limit)
        except HistoryError:
            self.send(render.error(f"the history of #{room.name} cannot be read right now"))
            return
        if not events:
            self.send(render.info(f"no messages in #{room.name} yet"))
            return
        lines = _history_lines(room.name, events, clip)
        count = len(lines)
        head = f"last {count} messages of #{room.name}" if count > 1 else f"last message of #{room.name}"
        if count < len(events):
            head += " (older ones do not fit in one answer)"
        data = b"".join([render.info(head + ":"), *lines, render.info(f"end of history of #{room.name}")])
        self.hall.uncommitted.append((data, None))  # it may show rows of this batch
        self.send(data)

    def _room_list(self, pattern: str | None, limit: int) -> list[str]:
        total, rooms = self.hall.busiest_rooms(pattern, limit)
        if not total:
            return [f"no room matches {pattern!r}"] if pattern else ["no rooms yet: /join ROOM creates one"]
        lines = [f"{total} {'room' if total == 1 else 'rooms'}, busiest first:"]
        for room in rooms:
            lock = " (locked)" if room.locked else ""
            count = len(room.members)
            lines.append(f"  #{room.name}: {count} {_users(count)}{lock}")
        if total > len(rooms):
            lines.append(f"and {total - len(rooms)} more: /list PATTERN shows the rooms whose name contains PATTERN")
        return lines

    def _user_list(self, pattern: str | None) -> list[str]:
        """Users in name order with the rooms they are in; a locked room is
        named only to its own members."""
        total, users = self.hall.users_by_name(pattern)
        if pattern and not total:
            return [f"nobody online matches {pattern!r}"]
        me = self._me
        lines = [f"{total} {_users(total)} online:"]
        for user in users:
            if not user.rooms:
                where = "the hall"
            else:
                where = ", ".join("a private room" if room.locked and me not in room.members else f"#{room.name}"
                                  for room in user.rooms)
            lines.append(f"  {user.name} in {where}")
        if total > len(users):
            lines.append(f"and {total - len(users)} more: /users PATTERN shows the names that contain PATTERN")
        return lines

    # -- commands ---------------------------------------------------------

    def _not_in_room(self) -> None:
        self.send(render.error("you are not in a room: /join ROOM joins one, /list shows rooms"))

    def _require_room(self) -> Room:
        room = self.room
        if room is None:
            raise ChatError("you are not in a room: /join ROOM joins one, /list shows rooms")
        return room

    def _command(self, text: str, now: float) -> None:
        word, rest = split_command(text)
        cmd = lookup(word)
        if cmd is None:
            self.send(render.error(f"unknown command /{clip(word)}; /help lists the commands"))
            return
        try:
            args = parse_args(cmd, rest)
            _HANDLERS[cmd.name](self, args, now)
        except (UsageError, ChatError) as exc:
            self.send(render.error(str(exc)))

    def _info(self, lines: list[str]) -> None:
        self.send(b"".join(render.info(line) for line in lines))

    @property
    def _me(self) -> User:
        assert self.user is not None
        return self.user

    @_handles("help")
    def _help(self, args: list[str], now: float) -> None:
        cmd: Command | None = None
        if args:
            cmd = lookup(args[0])
            if cmd is None:
                raise ChatError(f"no such command: {clip(args[0])}; /help lists the commands")
        self._info(help_lines(cmd))

    @_handles("nick")
    def _nick(self, args: list[str], now: float) -> None:
        old = self.hall.rename(self._me, args[0], now)
        self.send(render.info(f"you are now known as {self._me.name}"))
        self._log(logging.INFO, "%s is now known as %s", old, self._me.name)

    @_handles("list")
    def _list(self, args: list[str], now: float) -> None:
        self._info(self._room_list(args[0] if args else None, LIST_LIMIT))

    @_handles("join")
    def _join(self, args: list[str], now: float) -> None:
        room = self.hall.join(self._me, args[0], args[1] if len(args) > 1 else None, now, leave=self.room)
        self._entered(room)
        self._log(logging.INFO, "%s joined #%s", self._me.name, room.name)

    @_handles("create")
    def _create(self, args: list[str], now: float) -> None:
        room = self.hall.create(self._me, args[0], args[1] if len(args) > 1 else None, now, leave=self.room)
        self._entered(room)
        self._log(logging.INFO, "%s created #%s%s", self._me.name, room.name, " (locked)" if room.locked else "")

    @_handles("leave")
    def _leave(self, args: list[str], now: float) -> None:
        room = self._require_room()
        self.hall.part(self._me, room, "", now)
        self.send(render.info(f"you left #{room.name}; you are in the hall (/list shows rooms)"))
        self._log(logging.INFO, "%s left #%s", self._me.name, room.name)

    @_handles("roominfo")
    def _roominfo(self, args: list[str], now: float) -> None:
        room = self._require_room()
        lock = " (locked)" if room.locked else ""
        count = len(room.members)
        names = ", ".join(m.name for m in room.members)
        self._info([f"#{room.name}{lock}: {count} {_users(count)}: {names}"])

    @_handles("users")
    def _users(self, args: list[str], now: float) -> None:
        self._info(self._user_list(args[0] if args else None))

    @_handles("dm")
    def _dm(self, args: list[str], now: float) -> None:
        target = self.hall.direct(self._me, args[0], args[1], now)
        self._log(logging.DEBUG, "direct message %s -> %s", self._me.name, target.name)

    @_handles("bc")
    def _bc(self, args: list[str], now: float) -> None:
        self.hall.broadcast(self._me, args[0], now)

    @_handles("message")
    def _message(self, args: list[str], now: float) -> None:
        self.hall.say(self._me, self._require_room(), args[0], now)

    @_handles("me")
    def _me_action(self, args: list[str], now: float) -> None:
        self.hall.say(self._me, self._require_room(), args[0], now, ACTION)

    @_handles("history")
    def _history(self, args: list[str], now: float) -> None:
        count = HISTORY_DEFAULT
        if args:
            if not (args[0].isascii() and args[0].isdigit()) or int(args[0]) < 1:
                raise UsageError(f"usage: /history [N], N a whole number from 1 to {HISTORY_MAX}")
            count = min(int(args[0]), HISTORY_MAX)
        room = self._require_room()
        if self.outbox.unsent > HISTORY_OWED:
            # Asked again and again without reading: the answers would pile up here.
            raise ChatError("your earlier answers are still on their way; ask for history again in a moment")
        self._replay(room, count)

    @_handles("quit")
    def _quit(self, args: list[str], now: float) -> None:
        self.send(render.info(f"goodbye, {self._me.name}!"))
        self.disconnected(args[0] if args else "", now, said=True)


def _history_lines(room: str, events: list[StoredEvent], clip: int | None) -> list[bytes]:
    """Event lines for EVENTS, the newest that fit in REPLAY_BYTES, oldest first."""
    where = render.room_where(room)
    lines: list[bytes] = []
    size = 0
    for ev in reversed(events):
        text = ev.text
        if clip is not None and len(text) > clip:
            text = f"{text[:clip]}... [{len(text) - clip} more characters: /history shows it whole]"
        what = render.message(ev.sender, text) if ev.kind == STORED_MESSAGE else render.action(ev.sender, text)
        line = render.event(ev.ts, where, what)
        size += len(line)
        if size > REPLAY_BYTES and lines:
            break
        lines.append(line)
    lines.reverse()
    return lines


def _users(count: int) -> str:
    return "user" if count == 1 else "users"


_missing = {c.name for c in COMMANDS} ^ set(_HANDLERS)
assert not _missing, f"command table and handlers disagree: {_missing}"
