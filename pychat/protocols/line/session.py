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
from pychat.core.errors import Busy, TARGET_NOT_IN_ROOM, ChatError
from pychat.core.masks import duration_text, parse_duration
from pychat.core.model import Hall, Outbox, Room, User
from pychat.core.moderation import ModeChange, ModeRefusal
from pychat.core.text import clip
from pychat.protocols.line import render
from pychat.protocols.line.commands import (COMMANDS, DURATIONS, Command, UsageError, help_lines, lookup,
                                            parse_args, split_command)

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

    __slots__ = ("hall", "outbox", "send", "peer", "address", "default_room", "user", "closing", "asked",
                 "held", "held_line", "held_action")

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
        # The registered name whose password the prompt asked for, if any.
        self.asked: str | None = None
        # Seconds until the held line (a check the server had no time for) is tried again.
        self.held = 0.0
        self.held_line = ""
        # What to try again instead of the held line, where a request was held
        # half-way through (in a cluster: a join on its way back from the stream).
        self.held_action: Callable[[float], None] | None = None

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
        try:
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
        except Busy as exc:  # a password or key check waits for the server's budget
            self.held, self.held_line = exc.wait, line

    def retry(self, now: float) -> None:
        """Handle the held line again (the loop holds the lines after it)."""
        line, self.held_line = self.held_line, ""
        action, self.held_action = self.held_action, None
        if action is None:
            self.handle_line(line, now)
            return
        try:
            action(now)
        except Busy as exc:  # held again: at the point the action names, if it named one
            self.held = exc.wait
            if self.held_action is None:
                self.held_action = action
        except ChatError as exc:
            self.send(render.error(str(exc)))

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
        """The answer to the name prompt: a name, the password of a registered
        name, or /quit, /help or /login NAME PASSWORD."""
        if self.asked is not None:
            self._password_answer(self.asked, answer, now)
            return
        if answer.startswith("/") and not answer.startswith("//"):
            word, rest = split_command(answer[1:])
            cmd = lookup(word)
            if cmd is not None and cmd.name == "quit":
                self.send(render.info("goodbye!"))
                self.closing = True
            elif cmd is not None and cmd.name == "help":
                self._command(answer[1:], now)
                self.send(render.info(NAME_PROMPT))
            elif cmd is not None and cmd.name == "login":
                try:
                    name, password = parse_args(cmd, rest)
                except UsageError as exc:
                    self.send(render.error(str(exc)) + render.info(NAME_PROMPT))
                    return
                self._log_in_at_prompt(name, password, now)
            else:
                self.send(render.error("choose a name first (or /quit to leave, /help for the commands)")
                          + render.info(NAME_PROMPT))
            return
        self._choose_name(answer, now)

    def _choose_name(self, name: str, now: float) -> None:
        hall = self.hall
        # A registered name, or one that looks like it (ALICE, Cyrillic a), asks for its password.
        account = hall.account_for(name) if name else None
        if account is not None and account.key not in hall.users:
            self.asked = account.key
            self.send(render.info(f"{account.name} is a registered name: type its password "
                                  "(or press Enter to choose another name)"))
            return
        try:
            user = hall.register(name or hall.guest_name(), self.outbox, render.LINE, self.address)
        except Busy:  # in a cluster: the name's claim is on its way
            raise
        except ChatError as exc:
            self.send(render.error(str(exc)) + render.info(NAME_PROMPT))
            return
        self._welcome(user, now)

    def _password_answer(self, key: str, password: str, now: float) -> None:
        """The answer to 'type its password': log in, or back to the name prompt."""
        account = self.hall.accounts.get(key)
        if not password or account is None:  # Enter, or the account was deleted meanwhile
            self.asked = None
            self.send(render.info(NAME_PROMPT))
            return
        self._log_in_at_prompt(account.name, password, now)  # if held (Busy), still asked
        self.asked = None

    def _log_in_at_prompt(self, name: str, password: str, now: float) -> None:
        hall = self.hall
        try:
            # In a cluster, once the name's claim is on its way the password was checked.
            account = (hall.account_for(name) if hall.asked(self.outbox, "hello", "") else None
                       ) or hall.authenticate(name, password, self.address, now)
            user = hall.register(account.name, self.outbox, render.LINE, self.address, account=account.key)
        except Busy:
            raise
        except ChatError as exc:
            self.send(render.error(str(exc)) + render.info(NAME_PROMPT))
            return
        self._welcome(user, now)

    def _welcome(self, user: User, now: float) -> None:
        """USER has a name: greet it, show the rooms, enter the default room."""
        hall = self.hall
        self.user = user
        self._log(logging.INFO, "%s registered as %s%s", self.peer, user.name,
                  " (logged in)" if user.account is not None else "")
        logged_in = " you are logged in;" if user.account is not None else ""
        out = [render.info(f"hello {user.name}!{logged_in} /help lists the commands")]
        if hall.rooms or not self.default_room:
            out.extend(render.info(line) for line in self._room_list(None, GREETING_ROOMS))
        self.send(b"".join(out))
        if self.default_room:
            self._enter_default(now)

    def _enter_default(self, now: float) -> None:
        user = self._me
        try:
            # Not limited: a login must not fail because of room budgets.
            room = self.hall.join(user, self.default_room, None, now, limited=False)
        except Busy:
            self.held_action = self._enter_default
            raise
        except ChatError as exc:
            self.send(render.error(str(exc)))
            return
        self._entered(room)
        self._log(logging.INFO, "%s joined #%s", user.name, room.name)

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
        total, rooms = self.hall.busiest_rooms(pattern, limit, self.user)
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
                where = ", ".join(f"#{room.name}" if self.hall.members_shown(room, me) else "a private room"
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
        except Busy:
            raise
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
        self._leave_room(self._require_room(), now)

    def _leave_room(self, room: Room, now: float) -> None:
        try:
            self.hall.part(self._me, room, "", now)
        except Busy:
            self.held_action = lambda later: self._leave_room(room, later)
            raise
        self.send(render.info(f"you left #{room.name}; you are in the hall (/list shows rooms)"))
        self._log(logging.INFO, "%s left #%s", self._me.name, room.name)

    @_handles("roominfo")
    def _roominfo(self, args: list[str], now: float) -> None:
        room = self._require_room()
        lock = " (locked)" if room.locked else ""
        count = len(room.members)
        names = ", ".join(("@" if m in room.ops else "+" if m in room.voiced else "") + m.name
                          for m in room.members)
        lines = [f"#{room.name}{lock}: {count} {_users(count)}: {names}"]
        if room.topic is not None:
            lines.append(_topic_line(room))
        modes = _mode_words(room)
        if modes:
            lines.append(f"modes: {modes}")
        if room.owner is not None and room.owner in self.hall.accounts:
            lines.append(f"owner: {self.hall.accounts[room.owner].name}")
        self._info(lines)

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


    # -- accounts -----------------------------------------------------------

    @_handles("register")
    def _register(self, args: list[str], now: float) -> None:
        account = self.hall.register_account(self._me, args[0], now)
        self.send(render.info(f"the name {account.name} is yours: from now on it needs your password "
                              f"(/login {account.name} PASSWORD)"))
        self._log(logging.INFO, "%s registered an account", account.name)

    @_handles("login")
    def _login(self, args: list[str], now: float) -> None:
        me = self._me
        account, old = self.hall.login(me, args[0], args[1], now)
        if me.name != old:
            self.send(render.info(f"you are now known as {me.name}"))
        self.send(render.info(f"you are logged in as {account.name}"))
        self._log(logging.INFO, "%s logged in as %s", old, account.name)

    @_handles("logout")
    def _logout(self, args: list[str], now: float) -> None:
        me = self._me
        old = self.hall.logout(me, now)
        self.send(render.info(f"you are now known as {me.name}")
                  + render.info(f"you are logged out; {old} needs its password again"))
        self._log(logging.INFO, "%s logged out, now %s", old, me.name)

    @_handles("password")
    def _password(self, args: list[str], now: float) -> None:
        self.hall.change_password(self._me, args[0], args[1], now)
        self.send(render.info("your password is changed"))
        self._log(logging.INFO, "%s changed its password", self._me.name)

    @_handles("unregister")
    def _unregister(self, args: list[str], now: float) -> None:
        me = self._me
        self.hall.unregister(me, args[0], now)
        self.send(render.info(f"the account {me.name} is deleted: anyone may take the name once you leave it"))
        self._log(logging.INFO, "%s deleted its account", me.name)

    # -- rooms --------------------------------------------------------------

    @_handles("topic")
    def _topic(self, args: list[str], now: float) -> None:
        room = self._require_room()
        if not args:
            self._info([_topic_line(room) if room.topic is not None else f"#{room.name} has no topic"])
            return
        self.hall.set_topic(self._me, room, "" if args[0] == "-" else args[0], now)  # the room is told

    def _change(self, change: ModeChange, now: float) -> None:
        """One mode change in the user's room; the room is told, a refusal raises."""
        room = self._require_room()
        self._changed(change, room, *self.hall.set_modes(self._me, room, [change], now))

    def _changed(self, change: ModeChange, room: Room, made: list[ModeChange], refused: list[ModeRefusal]) -> None:
        """What the user is told of CHANGE: a refusal raises, a change that changed nothing is said."""
        if refused:
            raise ChatError(refused[0].text, refused[0].code)
        if not made:
            self.send(render.info(_UNCHANGED[change.sign + change.letter].format(name=change.arg, room=room.name)))

    @_handles("op")
    def _op(self, args: list[str], now: float) -> None:
        self._change(ModeChange("+", "o", args[0]), now)

    @_handles("deop")
    def _deop(self, args: list[str], now: float) -> None:
        self._change(ModeChange("-", "o", args[0]), now)

    @_handles("voice")
    def _voice(self, args: list[str], now: float) -> None:
        self._change(ModeChange("+", "v", args[0]), now)

    @_handles("devoice")
    def _devoice(self, args: list[str], now: float) -> None:
        self._change(ModeChange("-", "v", args[0]), now)

    @_handles("kick")
    def _kick(self, args: list[str], now: float) -> None:
        target = self.hall.kick(self._me, self._require_room(), args[0], args[1] if len(args) > 1 else "", now)
        self._log(logging.INFO, "%s kicked %s", self._me.name, target.name)

    @_handles("ban")
    def _ban(self, args: list[str], now: float) -> None:
        room = self._require_room()
        duration = _duration(args, "ban")
        made, refused = self.hall.ban_out(self._me, room, args[0], duration, now)
        self._changed(ModeChange("+", "b", args[0], duration), room, made, refused)

    @_handles("unban")
    def _unban(self, args: list[str], now: float) -> None:
        self._change(ModeChange("-", "b", args[0]), now)

    @_handles("mute")
    def _mute(self, args: list[str], now: float) -> None:
        self._change(ModeChange("+", "q", args[0], _duration(args, "mute")), now)

    @_handles("unmute")
    def _unmute(self, args: list[str], now: float) -> None:
        self._change(ModeChange("-", "q", args[0]), now)

    @_handles("bans")
    def _bans(self, args: list[str], now: float) -> None:
        room = self._require_room()
        lines = []
        for kind, what in (("b", "banned"), ("m", "muted")):
            for ban in self.hall.ban_list(room, now, kind):
                until = f", for {duration_text(ban.expires - now)} more" if ban.expires is not None else ""
                lines.append(f"  {what}: {ban.shown} (by {ban.by}{until})")
        self._info([f"#{room.name}: bans and mutes ({len(lines)})" + (":" if lines else ""), *lines])

    @_handles("invite")
    def _invite(self, args: list[str], now: float) -> None:
        room = self._require_room()
        target = self.hall.user_named(args[0])
        if target in room.members:
            raise ChatError(f"{target.name} is in #{room.name} already", TARGET_NOT_IN_ROOM)
        self.hall.invite(self._me, target, room, now)
        self.send(render.info(f"you invited {target.name} to #{room.name}"))

    @_handles("mode")
    def _mode(self, args: list[str], now: float) -> None:
        room = self._require_room()
        if not args:
            self._info([f"#{room.name} modes: {_mode_words(room) or 'none'}"])
            return
        changes = _parse_modes(args[0])
        made, refused = self.hall.set_modes(self._me, room, changes, now)
        if refused:
            self.send(b"".join(render.error(r.text) for r in refused))
        elif not made:
            self.send(render.info(f"#{room.name} modes are so already: {_mode_words(room) or 'none'}"))

    # -- what a user sees ---------------------------------------------------------

    @_handles("ignore")
    def _ignore(self, args: list[str], now: float) -> None:
        me = self._me
        name = self.hall.ignore(me, args[0])
        kept = "" if me.account is not None else " (for this session: log in to keep the list)"
        self.send(render.info(f"you ignore {name} now{kept}"))

    @_handles("unignore")
    def _unignore(self, args: list[str], now: float) -> None:
        self.hall.unignore(self._me, args[0])
        self.send(render.info(f"you see {args[0]} again"))

    @_handles("ignores")
    def _ignores(self, args: list[str], now: float) -> None:
        names = sorted(self.hall.ignored_names(self._me))
        self._info([f"you ignore {len(names)}: {', '.join(names)}" if names else "you ignore nobody"])

    # -- server operators -----------------------------------------------------------

    @_handles("kill")
    def _kill(self, args: list[str], now: float) -> None:
        target = self.hall.kill(self._me, args[0], args[1] if len(args) > 1 else "", now)
        self.send(render.info(f"{target.name} is disconnected"))
        self._log(logging.WARNING, "%s killed %s", self._me.name, target.name)

    @_handles("kline")
    def _kline(self, args: list[str], now: float) -> None:
        mask, reason, duration = args[0], " ".join(args[2:]), None
        if len(args) > 1:
            duration = parse_duration(args[1])
            if duration is None:  # not a duration: the reason's first word
                reason = " ".join(args[1:])
        gone = self.hall.kline(self._me, mask, duration, reason, now)
        lasting = f" for {duration_text(duration)}" if duration else ""
        self.send(render.info(f"{mask} is banned from the server{lasting}; {len(gone)} disconnected"))
        self._log(logging.WARNING, "%s banned %s from the server%s", self._me.name, mask, lasting)

    @_handles("unkline")
    def _unkline(self, args: list[str], now: float) -> None:
        self.hall.unkline(self._me, args[0])
        self.send(render.info(f"{args[0]} may connect again"))
        self._log(logging.WARNING, "%s lifted the server ban on %s", self._me.name, args[0])

    @_handles("wall")
    def _wall(self, args: list[str], now: float) -> None:
        self.hall.wall(self._me, args[0], now)


# What a mode change that changed nothing says.
_UNCHANGED = {
    "+o": "{name} is an operator of #{room} already", "-o": "{name} is not an operator of #{room}",
    "+v": "{name} has a voice in #{room} already", "-v": "{name} has no voice in #{room}",
    "+b": "that ban is in place already", "+q": "that mute is in place already",
}


def _duration(args: list[str], what: str) -> float | None:
    """The optional DURATION of /ban and /mute."""
    if len(args) < 2:
        return None
    duration = parse_duration(args[1])
    if duration is None:
        raise UsageError(f"usage: /{what} NAME [DURATION]: {DURATIONS}")
    return duration


def _parse_modes(text: str) -> list[ModeChange]:
    """``+im -t +k KEY +l 10`` as changes: each letter takes the sign before it;
    k and l take the next word. Roles, bans and mutes have their own commands."""
    words = text.split()
    changes: list[ModeChange] = []
    sign = ""
    while words:
        word = words.pop(0)
        if word[0] not in "+-":
            raise UsageError("usage: /mode [+i -i +m -m +t -t +s -s +k KEY -k +l N -l], several at once: /mode +im-t")
        for letter in word:
            if letter in "+-":
                sign = letter
            elif letter in "kl" and sign == "+":
                if not words:
                    raise UsageError(f"usage: /mode +{letter} {'KEY' if letter == 'k' else 'N'}")
                changes.append(ModeChange(sign, letter, words.pop(0)))
            elif letter in "imnstkl":
                changes.append(ModeChange(sign, letter, None))
            elif letter in "ovbq":
                raise UsageError("roles, bans and mutes have their own commands: /op, /voice, /ban, /mute")
            else:
                raise UsageError(f"unknown mode {letter!r}: /help mode lists them")
    return changes


def _mode_words(room: Room) -> str:
    """ROOM's modes as people read them."""
    words = [_MODE_NAMES[letter] for letter in sorted(room.modes) if letter in _MODE_NAMES]
    if room.locked:
        words.append("locked with a key")
    if room.limit is not None:
        words.append(f"at most {room.limit} members")
    return ", ".join(words)


_MODE_NAMES = {"i": "invite-only", "m": "moderated", "s": "secret", "t": "topic locked"}


def _topic_line(room: Room) -> str:
    topic = room.topic
    assert topic is not None
    return f"topic: {topic.text} (set by {topic.by}, {render.stamp(topic.at)[1:-1]})"


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
