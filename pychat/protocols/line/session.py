"""The per-connection session: a small state machine over lines.

States: waiting for a name, then chatting, then closed. A clean line and the
current time go in; replies go to the connection's outbox, and everything
else happens through the Hall. Commands are dispatched from the table in
:mod:`pychat.protocols.line.commands`; each command name maps to one handler below.
"""

from __future__ import annotations

import logging
from typing import Callable

from pychat.protocols.line import render
from pychat.protocols.line.commands import COMMANDS, Command, UsageError, help_lines, lookup, parse_args, split_command
from pychat.core.model import GREETING_ROOMS, ChatError, Hall, Outbox, User

log = logging.getLogger("pychat.protocols.line.session")

NAME_PROMPT = "what is your name? (press Enter for a guest name)"
HISTORY_DEFAULT = 20
HISTORY_MAX = 500
HISTORY_OWED = 256 * 1024  # unread output beyond which /history waits

Handler = Callable[["Session", list[str], float], None]
_HANDLERS: dict[str, Handler] = {}


def _handles(name: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _HANDLERS[name] = func
        return func
    return register


class Session:
    """One client's conversation with the Hall."""

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

    def start(self) -> None:
        """Greet a new connection and ask for a name."""
        self.send(render.info("welcome to pychat, a small chat server") + render.info(NAME_PROMPT))

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
            if user.room is not None:
                self.hall.say(user, line, now)  # the common case: a message to the room
            elif lookup(split_command(line)[0]) is not None:
                self._command(line, now)  # in the hall a command may be typed without its slash
            else:
                self._not_in_room()
        elif line.startswith("//"):
            self._say(line[1:], now)
        else:
            self._command(line[1:], now)

    def _say(self, text: str, now: float) -> None:
        if self._me.room is None:
            self._not_in_room()
        else:
            self.hall.say(self._me, text, now)

    def disconnected(self, reason: str, now: float, *, said: bool = False) -> None:
        """The connection is gone (or going): leave the hall.

        SAID marks a reason the user typed: it is shown to the room but,
        like everything users say, never written to the log.
        """
        if self.user is not None:
            self._log(logging.INFO, "%s (%s) quit%s", self.user.name, self.peer, "" if said else f": {reason or 'quit'}")
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
            user = hall.register(name or hall.guest_name(), self.outbox, self.address)
        except ChatError as exc:
            self.send(render.error(str(exc)) + render.info(NAME_PROMPT))
            return
        self.user = user
        self._log(logging.INFO, "%s registered as %s", self.peer, user.name)
        out = [render.info(f"hello {user.name}! /help lists the commands")]
        if hall.rooms or not self.default_room:
            out.extend(render.info(line) for line in hall.room_list(limit=GREETING_ROOMS))
        self.send(b"".join(out))
        if self.default_room:
            try:
                # Not limited: a login must not fail because of room budgets.
                room = hall.join(user, self.default_room, None, now, limited=False)
                self._log(logging.INFO, "%s joined #%s", user.name, room.name)
            except ChatError as exc:
                self.send(render.error(str(exc)))

    # -- commands ---------------------------------------------------------

    def _not_in_room(self) -> None:
        self.send(render.error("you are not in a room: /join ROOM joins one, /list shows rooms"))

    def _command(self, text: str, now: float) -> None:
        word, rest = split_command(text)
        cmd = lookup(word)
        if cmd is None:
            self.send(render.error(f"unknown command /{word}; /help lists the commands"))
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
                raise ChatError(f"no such command: {args[0]}; /help lists the commands")
        self._info(help_lines(cmd))

    @_handles("nick")
    def _nick(self, args: list[str], now: float) -> None:
        old = self._me.name
        self.hall.rename(self._me, args[0], now)
        self._log(logging.INFO, "%s is now known as %s", old, self._me.name)

    @_handles("list")
    def _list(self, args: list[str], now: float) -> None:
        self._info(self.hall.room_list(args[0] if args else None))

    @_handles("join")
    def _join(self, args: list[str], now: float) -> None:
        room = self.hall.join(self._me, args[0], args[1] if len(args) > 1 else None, now)
        self._log(logging.INFO, "%s joined #%s", self._me.name, room.name)

    @_handles("create")
    def _create(self, args: list[str], now: float) -> None:
        room = self.hall.create(self._me, args[0], args[1] if len(args) > 1 else None, now)
        self._log(logging.INFO, "%s created #%s%s", self._me.name, room.name, " (locked)" if room.locked else "")

    @_handles("leave")
    def _leave(self, args: list[str], now: float) -> None:
        room = self.hall.leave(self._me, now)
        self._log(logging.INFO, "%s left #%s", self._me.name, room.name)

    @_handles("roominfo")
    def _roominfo(self, args: list[str], now: float) -> None:
        self._info(self.hall.room_info(self._me))

    @_handles("users")
    def _users(self, args: list[str], now: float) -> None:
        self._info(self.hall.user_list(self._me, args[0] if args else None))

    @_handles("dm")
    def _dm(self, args: list[str], now: float) -> None:
        target = self.hall.direct(self._me, args[0], args[1], now)
        self._log(logging.DEBUG, "direct message %s -> %s", self._me.name, target.name)

    @_handles("bc")
    def _bc(self, args: list[str], now: float) -> None:
        self.hall.broadcast(self._me, args[0], now)

    @_handles("message")
    def _message(self, args: list[str], now: float) -> None:
        self.hall.say(self._me, args[0], now)

    @_handles("me")
    def _me_action(self, args: list[str], now: float) -> None:
        self.hall.act(self._me, args[0], now)

    @_handles("history")
    def _history(self, args: list[str], now: float) -> None:
        count = HISTORY_DEFAULT
        if args:
            if not (args[0].isascii() and args[0].isdigit()) or int(args[0]) < 1:
                raise UsageError(f"usage: /history [N], N a whole number from 1 to {HISTORY_MAX}")
            count = min(int(args[0]), HISTORY_MAX)
        user = self._me
        if user.room is None:
            self._not_in_room()
            return
        if self.outbox.unsent > HISTORY_OWED:
            # Asked again and again without reading: the answers would pile up here.
            raise ChatError("your earlier answers are still on their way; ask for history again in a moment")
        self.hall.replay(user, user.room, count)

    @_handles("quit")
    def _quit(self, args: list[str], now: float) -> None:
        self.send(render.info(f"goodbye, {self._me.name}!"))
        self.disconnected(args[0] if args else "", now, said=True)


_missing = {c.name for c in COMMANDS} ^ set(_HANDLERS)
assert not _missing, f"command table and handlers disagree: {_missing}"
