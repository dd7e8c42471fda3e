"""Hall, Room and User: the chat world, its invariants, and its routing.

The Hall owns every room and user, the name -> user map and the user ->
room relation, and it is the only code that changes them. Each operation
takes the time as an argument and delivers rendered lines to the users'
outboxes; it knows nothing of sockets. A user's mistake raises
:class:`ChatError`, whose text the session sends back as an error line.

The hot path is a room message: it is rendered once, and the same bytes
are appended to every other member's outbox list with a bare
``list.append``. Instead of waking each recipient's outbox, the Hall notes
the room in :attr:`Hall.touched`; the shell flushes the members of the
touched rooms once per loop iteration.
"""

from __future__ import annotations

from typing import Callable, Protocol

from pychat import render
from pychat.history import ACTION, MESSAGE, NOTICE, HistoryStore
from pychat.roomkeys import hash_key, verify_key
from pychat.text import fold, name_problem, normalize_name, room_name, room_problem

Sink = Callable[[bytes], None]


class ChatError(Exception):
    """A user's mistake; the message is shown to that user as ``! text``."""


class Outbox(Protocol):
    """Where a user's output goes until the shell writes it.

    ``out`` collects the bytes of the current loop iteration; ``queue``
    appends and makes sure the shell will write them; ``wake`` does the
    latter alone (for bytes appended to ``out`` directly).
    """

    out: list[bytes]

    def queue(self, data: bytes) -> None: ...

    def wake(self) -> None: ...


class ListOutbox:
    """An outbox that only collects (tests, and anything without a socket)."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def queue(self, data: bytes) -> None:
        self.out.append(data)

    def wake(self) -> None:
        pass


class User:
    """One named connection."""

    __slots__ = ("name", "key", "room", "outbox", "send")

    def __init__(self, name: str, outbox: Outbox) -> None:
        self.name = name
        self.key = fold(name)
        self.room: Room | None = None
        self.outbox = outbox
        self.send: Sink = outbox.queue

    def __repr__(self) -> str:
        return f"User({self.name!r})"


class Room:
    """A named space; only its members see what is said in it."""

    __slots__ = ("name", "key", "id", "key_hash", "members", "_good_key")

    def __init__(self, name: str, room_id: int, key_hash: str | None) -> None:
        self.name = name
        self.key = fold(name)
        self.id = room_id
        self.key_hash = key_hash
        # Each member with the bare append of its outbox list, for fan-out.
        self.members: dict[User, Sink] = {}
        # The last key that passed the slow hash check, so that members who
        # rejoin with the right key do not cost the server a hash each time.
        self._good_key: str | None = None

    @property
    def locked(self) -> bool:
        return self.key_hash is not None

    def key_matches(self, key: str) -> bool:
        if self.key_hash is None:
            return True
        if key == self._good_key:
            return True
        if verify_key(key, self.key_hash):
            self._good_key = key
            return True
        return False

    def __repr__(self) -> str:
        return f"Room({self.name!r})"


class Hall:
    """Owns rooms and users and routes every command between them."""

    def __init__(self, history: HistoryStore | None = None, history_lines: int = 20) -> None:
        self.history = history if history is not None else HistoryStore()
        self.history_lines = history_lines
        self.users: dict[str, User] = {}  # folded name -> user
        self.rooms: dict[str, Room] = {}  # folded name -> room
        for stored in self.history.rooms():
            room = Room(stored.name, stored.id, stored.key_hash)
            self.rooms[room.key] = room
        # Lines for the server log (room messages, broadcasts); the shell
        # drains it once per loop iteration.
        self.chat_log: list[bytes] = []
        # Rooms whose members were sent bytes without a wake-up; the shell
        # flushes their members and clears this once per loop iteration.
        self.touched: set[Room] = set()

    # -- users ------------------------------------------------------------

    def check_name(self, name: str, current: User | None = None) -> str:
        """Return NAME normalized, or raise ChatError if invalid or taken."""
        name = normalize_name(name)
        problem = name_problem(name)
        if problem:
            raise ChatError(f"invalid name {name!r}: {problem}")
        holder = self.users.get(fold(name))
        if holder is not None and holder is not current:
            raise ChatError(f"the name {name} is taken; choose another")
        return name

    def register(self, name: str, outbox: Outbox) -> User:
        """Add a named user (in the hall, in no room)."""
        name = self.check_name(name)
        user = User(name, outbox)
        self.users[user.key] = user
        return user

    def guest_name(self) -> str:
        """A free generated name: guest1, guest2, ..."""
        n = len(self.users) + 1
        while fold(f"guest{n}") in self.users:
            n += 1
        return f"guest{n}"

    def rename(self, user: User, new_name: str, now: float) -> None:
        new_name = self.check_name(new_name, current=user)
        old = user.name
        if new_name == old:
            raise ChatError(f"you are already called {old}")
        del self.users[user.key]
        user.name, user.key = new_name, fold(new_name)
        self.users[user.key] = user
        user.send(render.info(f"you are now known as {new_name}"))
        if user.room is not None:
            self._notice(user.room, user, f"{old} is now known as {new_name}", now)

    def quit(self, user: User, reason: str, now: float) -> None:
        """Remove USER from the hall; the room sees that they quit."""
        if self.users.get(user.key) is not user:
            return
        room = user.room
        if room is not None:
            self._remove_member(room, user)
            text = f"{user.name} has quit ({reason})" if reason else f"{user.name} has quit"
            self._notice(room, user, text, now)
        del self.users[user.key]

    # -- rooms ------------------------------------------------------------

    def find_room(self, raw: str) -> Room | None:
        return self.rooms.get(fold(room_name(raw)))

    def _new_room(self, raw: str, key: str | None, now: float) -> Room:
        name = room_name(raw)
        problem = room_problem(name)
        if problem:
            raise ChatError(f"invalid room name {raw!r}: {problem}")
        key_hash = hash_key(key) if key else None
        room_id = self.history.add_room(fold(name), name, key_hash, now)
        room = Room(name, room_id, key_hash)
        self.rooms[room.key] = room
        return room

    def join(self, user: User, raw_room: str, key: str | None, now: float) -> Room:
        """Join a room, creating it (locked if KEY is given) when missing."""
        room = self.find_room(raw_room)
        if room is None:
            room = self._new_room(raw_room, key, now)
        elif room is user.room:
            raise ChatError(f"you are already in #{room.name}")
        elif room.locked:
            if not key:
                raise ChatError(f"#{room.name} is locked: /join {room.name} KEY")
            if not room.key_matches(key):
                raise ChatError(f"wrong key for #{room.name}")
        self._enter(user, room, now)
        return room

    def create(self, user: User, raw_room: str, key: str | None, now: float) -> Room:
        """Create a new room and join it; an existing room is an error."""
        existing = self.find_room(raw_room)
        if existing is not None:
            raise ChatError(f"#{existing.name} already exists: /join {existing.name}")
        room = self._new_room(raw_room, key, now)
        self._enter(user, room, now)
        return room

    def leave(self, user: User, now: float) -> Room:
        room = self._require_room(user)
        self._remove_member(room, user)
        user.send(render.info(f"you left #{room.name}; you are in the hall (/list shows rooms)"))
        self._notice(room, user, f"{user.name} has left", now)
        return room

    def _enter(self, user: User, room: Room, now: float) -> None:
        old = user.room
        if old is not None:
            self._remove_member(old, user)
            self._notice(old, user, f"{user.name} has left", now)
        room.members[user] = user.outbox.out.append
        user.room = room
        count = len(room.members)
        lock = " (locked)" if room.locked else ""
        user.send(render.info(f"you joined #{room.name}{lock}: {count} {_users(count)} here"))
        self.replay(user, room, self.history_lines)
        self._notice(room, user, f"{user.name} has joined", now)

    def _remove_member(self, room: Room, user: User) -> None:
        del room.members[user]
        user.room = None
        if room in self.touched:
            # Room output already appended for this user must still be
            # written, though the shell will not find the user in the room.
            user.outbox.wake()

    def _require_room(self, user: User) -> Room:
        if user.room is None:
            raise ChatError("you are not in a room: /join ROOM joins one, /list shows rooms")
        return user.room

    def replay(self, user: User, room: Room, limit: int) -> None:
        """Send USER the last LIMIT messages of ROOM between two info lines."""
        if limit <= 0:
            return
        events = self.history.recent(room.id, limit)
        if not events:
            user.send(render.info(f"no messages in #{room.name} yet"))
            return
        where = render.room_where(room.name)
        out = [render.info(f"last {len(events)} messages of #{room.name}:")]
        for ev in events:
            what = render.message(ev.sender, ev.text) if ev.kind == MESSAGE else render.action(ev.sender, ev.text)
            out.append(render.event(ev.ts, where, what))
        out.append(render.info(f"end of history of #{room.name}"))
        user.send(b"".join(out))

    # -- talking ----------------------------------------------------------

    def say(self, user: User, text: str, now: float) -> None:
        """A message to the user's room: every other member receives it."""
        room = self._require_room(user)
        data = render.event(now, "#" + room.name, f"{user.name}: {text}")
        self.history.append(room.id, now, MESSAGE, user.name, text)
        self.chat_log.append(data)
        self._fanout(room, data, user)

    def act(self, user: User, text: str, now: float) -> None:
        """An action (/me) in the user's room."""
        room = self._require_room(user)
        data = render.event(now, "#" + room.name, render.action(user.name, text))
        self.history.append(room.id, now, ACTION, user.name, text)
        self.chat_log.append(data)
        self._fanout(room, data, user)

    def _notice(self, room: Room, subject: User, text: str, now: float) -> None:
        """A room notice (join, leave, quit, rename) to the members but its subject."""
        data = render.event(now, "#" + room.name, f"* {text}")
        self.history.append(room.id, now, NOTICE, subject.name, text)
        self._fanout(room, data, subject)

    def _fanout(self, room: Room, data: bytes, skip: User) -> None:
        """Append DATA for every member of ROOM but SKIP: one bare append each."""
        self.touched.add(room)
        for member, push in room.members.items():
            if member is not skip:
                push(data)

    def direct(self, user: User, target_name: str, text: str, now: float) -> User:
        """A direct message; the sender gets an echo as confirmation."""
        target = self.users.get(fold(normalize_name(target_name)))
        if target is None:
            raise ChatError(f"no such user: {target_name}")
        target.send(render.event(now, "(dm)", render.message(user.name, text)))
        user.send(render.event(now, f"(dm to {target.name})", render.message(user.name, text)))
        return target

    def broadcast(self, user: User, text: str, now: float) -> None:
        """A message to everyone online, the sender included (as confirmation)."""
        data = render.event(now, "(all)", render.message(user.name, text))
        self.chat_log.append(data)
        for member in self.users.values():
            member.send(data)

    # -- reports ----------------------------------------------------------

    def room_list(self) -> list[str]:
        if not self.rooms:
            return ["no rooms yet: /join ROOM creates one"]
        lines = [f"{len(self.rooms)} {'room' if len(self.rooms) == 1 else 'rooms'}:"]
        for room in sorted(self.rooms.values(), key=lambda r: r.key):
            lock = " (locked)" if room.locked else ""
            count = len(room.members)
            lines.append(f"  #{room.name}: {count} {_users(count)}{lock}")
        return lines

    def user_list(self) -> list[str]:
        count = len(self.users)
        lines = [f"{count} {_users(count)} online:"]
        for user in sorted(self.users.values(), key=lambda u: u.key):
            where = f"#{user.room.name}" if user.room else "the hall"
            lines.append(f"  {user.name} in {where}")
        return lines

    def room_info(self, user: User) -> list[str]:
        room = self._require_room(user)
        lock = " (locked)" if room.locked else ""
        count = len(room.members)
        names = ", ".join(m.name for m in room.members)
        return [f"#{room.name}{lock}: {count} {_users(count)}: {names}"]

    # -- invariants -------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise AssertionError if the hall's maps disagree (tests call this)."""
        for key, user in self.users.items():
            assert key == user.key == fold(user.name), (key, user)
            if user.room is not None:
                assert self.rooms.get(user.room.key) is user.room, user
                assert user in user.room.members, user
        for key, room in self.rooms.items():
            assert key == room.key, (key, room)
            for member in room.members:
                assert member.room is room, (member, room)
                assert self.users.get(member.key) is member, member


def _users(count: int) -> str:
    return "user" if count == 1 else "users"
