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

import fnmatch
import hmac
import logging
import re
from typing import Callable, Iterable, Protocol

from pychat.protocols.line import render
from pychat.core.history import ACTION, MESSAGE, NOTICE, HistoryError, HistoryStore
from pychat.core.limits import SUSPECT_PENALTY_MAX, SUSPECT_SECONDS, HallLimits, KeyedBuckets, TokenBucket, seconds_text
from pychat.core.ranking import Ranking
from pychat.core.roomkeys import hash_key, verify_key
from pychat.core.text import (MAX_ROOM, MAX_TYPED, clip, fold, name_key, name_problem, normalize_name, room_key, room_name,
                         room_problem)

Sink = Callable[[bytes], None]
log = logging.getLogger("pychat.core.model")

LIST_LIMIT = 50        # rooms in one /list answer
GREETING_ROOMS = 10    # rooms in the greeting
USERS_LIMIT = 100      # users in one /users answer
REPLAY_CLIP = 400      # characters of one message replayed on join (/history shows it whole)
REPLAY_BYTES = 64 * 1024  # at most this much history in one answer


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

    @property
    def unsent(self) -> int:
        """Bytes queued and not yet taken by the peer."""


class ListOutbox:
    """An outbox that only collects (tests, and anything without a socket)."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def queue(self, data: bytes) -> None:
        self.out.append(data)

    def wake(self) -> None:
        pass

    @property
    def unsent(self) -> int:
        return sum(map(len, self.out))


class User:
    """One named connection.

    ``address`` is what per-address limits count (see
    :func:`pychat.limits.address_key`); ``room_budget`` paces the rooms
    this user creates.
    """

    __slots__ = ("name", "key", "room", "outbox", "send", "address", "room_budget")

    def __init__(self, name: str, outbox: Outbox, address: str = "") -> None:
        self.name = name
        self.key = name_key(name)  # look-alike names share a key: one of them at a time
        self.room: Room | None = None
        self.outbox = outbox
        self.send: Sink = outbox.queue
        self.address = address
        self.room_budget: TokenBucket | None = None

    def __repr__(self) -> str:
        return f"User({self.name!r})"


class Room:
    """A named space; only its members see what is said in it."""

    __slots__ = ("name", "key", "id", "key_hash", "members", "good_key")

    def __init__(self, name: str, room_id: int, key_hash: str | None) -> None:
        self.name = name
        self.key = room_key(name)
        self.id = room_id
        self.key_hash = key_hash
        # Each member with the bare append of its outbox list, for fan-out.
        self.members: dict[User, Sink] = {}
        # The last key that passed the slow hash check, so that members who
        # rejoin with the right key do not cost the server a hash each time.
        self.good_key: str | None = None

    @property
    def locked(self) -> bool:
        return self.key_hash is not None

    def __repr__(self) -> str:
        return f"Room({self.name!r})"


def _busiest_first(room: Room) -> tuple[int, str]:
    return (-len(room.members), room.key)


def _by_name(user: User) -> tuple[str, str]:
    return (fold(user.name), user.key)


class Hall:
    """Owns rooms and users and routes every command between them."""

    def __init__(self, history: HistoryStore | None = None, history_lines: int = 20,
                 limits: HallLimits | None = None, default_room: str = "") -> None:
        self.history = history if history is not None else HistoryStore()
        self.history_lines = history_lines
        self.limits = limits if limits is not None else HallLimits()
        # Where everyone lands: never locked, never forgotten, so that nobody
        # can take it over while it happens to be empty.
        self.default_room = room_key(room_name(default_room)) if default_room else ""
        self.users: dict[str, User] = {}  # name key (pychat.text.name_key) -> user
        self.rooms: dict[str, Room] = {}  # room key (pychat.text.room_key) -> room
        self._lookalikes: dict[str, Room] = {}  # name_key of a room's name -> room
        self._ranked_rooms: Ranking[Room] = Ranking(_busiest_first)
        self._ranked_users: Ranking[User] = Ranking(_by_name)
        self._rooms_by_address = KeyedBuckets(self.limits.rooms_per_address)
        self._checks_by_address = KeyedBuckets(self.limits.checks_per_address)
        self._checks = TokenBucket(self.limits.checks_server, 0.0)
        self._suspect_checks = TokenBucket(self.limits.checks_suspect, 0.0)
        # Addresses that gave a wrong key: (wrong keys in a row, when the last).
        self._suspects: dict[str, tuple[int, float]] = {}
        for stored in self.history.rooms():
            room = Room(stored.name, stored.id, stored.key_hash)
            if not self.history.has_chat(room.id) and room.key != self.default_room:
                self.history.forget_room(room.id)  # nothing to keep: the name is free again
            elif room.key in self.rooms:
                log.warning("room %r (id %d) has the same name as another once normalized; it is not loaded",
                            room.name, room.id)
            else:
                self._add_room(room)
        # Room events (and replays) written since the last commit, with the
        # sender of each message or action: if the commit fails, the shell
        # withholds these bytes and tells the senders.
        self.uncommitted: list[tuple[bytes, User | None]] = []
        # Rooms whose members were sent bytes without a wake-up; the shell
        # flushes their members and clears this once per loop iteration.
        self.touched: set[Room] = set()

    # -- users ------------------------------------------------------------

    def check_name(self, name: str, current: User | None = None) -> str:
        """Return NAME normalized, or raise ChatError if invalid or taken."""
        if len(name) > MAX_TYPED:  # before NFKC, which can make a character 18
            raise ChatError(f"invalid name {clip(name)!r}: a name has at most 20 characters")
        name = normalize_name(name)
        problem = name_problem(name)
        if problem:
            raise ChatError(f"invalid name {clip(name)!r}: {problem}")
        holder = self.users.get(name_key(name))
        if holder is not None and holder is not current:
            raise ChatError(f"the name {name} is taken; choose another")
        return name

    def register(self, name: str, outbox: Outbox, address: str = "") -> User:
        """Add a named user (in the hall, in no room)."""
        name = self.check_name(name)
        user = User(name, outbox, address)
        self.users[user.key] = user
        self._ranked_users.add(user)
        return user

    def guest_name(self) -> str:
        """A free generated name: guest1, guest2, ..."""
        n = len(self.users) + 1
        while name_key(f"guest{n}") in self.users:
            n += 1
        return f"guest{n}"

    def rename(self, user: User, new_name: str, now: float) -> None:
        new_name = self.check_name(new_name, current=user)
        old = user.name
        if new_name == old:
            raise ChatError(f"you are already called {old}")
        del self.users[user.key]
        self._ranked_users.remove(user)
        user.name, user.key = new_name, name_key(new_name)
        self.users[user.key] = user
        self._ranked_users.add(user)
        user.send(render.info(f"you are now known as {new_name}"))
        if user.room is not None:
            self._notice(user.room, user, render.CHANGED, f"{old} is now known as {new_name}", now)

    def quit(self, user: User, reason: str, now: float) -> None:
        """Remove USER from the hall; the room sees that they quit."""
        if self.users.get(user.key) is not user:
            return
        room = user.room
        if room is not None:
            self._remove_member(room, user)
            text = f"{user.name} has quit ({reason})" if reason else f"{user.name} has quit"
            self._notice(room, user, render.LEFT, text, now)
            self._forget_if_idle(room)
        del self.users[user.key]
        self._ranked_users.remove(user)

    # -- rooms ------------------------------------------------------------

    def find_room(self, raw: str) -> Room | None:
        if len(raw) > MAX_TYPED:
            return None
        return self.rooms.get(room_key(room_name(raw)))

    def _add_room(self, room: Room) -> None:
        self.rooms[room.key] = room
        self._ranked_rooms.add(room)
        self._lookalikes.setdefault(name_key(room.name), room)

    def _forget_if_idle(self, room: Room) -> None:
        """Forget an empty room that has no messages: nothing of it is worth keeping."""
        if (not room.members and not self.history.has_chat(room.id) and room.key != self.default_room
                and self.rooms.get(room.key) is room):
            del self.rooms[room.key]
            self._ranked_rooms.remove(room)
            if self._lookalikes.get(name_key(room.name)) is room:
                del self._lookalikes[name_key(room.name)]
            self.history.forget_room(room.id)

    def forget_idle(self, rooms: Iterable[Room]) -> None:
        """Forget those of ROOMS left idle (after a failed commit took their messages back)."""
        for room in list(rooms):
            self._forget_if_idle(room)

    def _new_room(self, user: User, raw: str, key: str | None, now: float, *, limited: bool = True) -> Room:
        """Create a room for USER, within the room cap and creation budgets."""
        name = room_name(raw) if len(raw) <= MAX_TYPED else raw
        problem = room_problem(name)
        if problem:
            raise ChatError(f"invalid room name {clip(raw)!r}: {problem}")
        twin = self._lookalikes.get(name_key(name))
        if twin is not None:
            raise ChatError(f"#{name} looks too much like #{twin.name}: /join {twin.name}, or choose another name")
        if key and room_key(name) == self.default_room:
            raise ChatError(f"#{name} is where everyone lands; it cannot be locked")
        if limited:
            self._check_room_budgets(user, now)
        if key:
            self._spend_slow_check(user, now)  # hashing a new key costs what checking one does
        if limited:
            self._spend_room_budgets(user, now)
        key_hash = hash_key(key) if key else None
        room = Room(name, self.history.add_room(room_key(name), name, key_hash, now), key_hash)
        if key:
            room.good_key = key
        self._add_room(room)
        return room

    def _check_room_budgets(self, user: User, now: float) -> None:
        limits = self.limits
        if len(self.rooms) >= limits.max_rooms:
            raise ChatError(f"the server holds its maximum of {limits.max_rooms} rooms; "
                            "join an existing one (/list shows them)")
        if user.room_budget is None:
            user.room_budget = TokenBucket(limits.rooms_per_user, now)
        wait = user.room_budget.wait(now)
        if wait > 0:
            raise ChatError(f"you are creating rooms too fast; try again in {seconds_text(wait)}")
        if limits.per_address:
            wait = self._rooms_by_address.wait(user.address, now)
            if wait > 0:
                raise ChatError(f"too many rooms created from your address; try again in {seconds_text(wait)}")

    def _spend_room_budgets(self, user: User, now: float) -> None:
        assert user.room_budget is not None
        user.room_budget.take(now)
        if self.limits.per_address:
            self._rooms_by_address.take(user.address, now)

    def _spend_slow_check(self, user: User, now: float) -> None:
        """Allow one slow hash for USER, or refuse it with when to try again.

        Refused checks cost nothing: they are never queued on the loop's time.
        """
        if self.limits.per_address:
            wait = self._checks_by_address.wait(user.address, now)
            if wait > 0:
                raise ChatError(f"too many key checks from your address; try again in {seconds_text(wait)}")
        shared = self._suspect_checks if self._is_suspect(user.address, now) else self._checks
        wait = shared.wait(now)
        if wait > 0:
            raise ChatError(f"the server is busy checking keys; try again in {seconds_text(wait)}")
        shared.take(now)
        if self.limits.per_address:
            self._checks_by_address.take(user.address, now)

    def _is_suspect(self, address: str, now: float) -> bool:
        entry = self._suspects.get(address)
        return entry is not None and now - entry[1] < SUSPECT_SECONDS

    def _wrong_key(self, user: User, now: float) -> None:
        """Remember a wrong key from USER's address; each one in a row costs double."""
        suspects = self._suspects
        if len(suspects) >= 10_000:  # bounded: the oldest are forgotten first
            for address in [a for a, (_, when) in suspects.items() if now - when >= SUSPECT_SECONDS]:
                del suspects[address]
            if len(suspects) >= 10_000:
                suspects.clear()
        count = suspects[user.address][0] + 1 if self._is_suspect(user.address, now) else 1
        suspects[user.address] = (count, now)
        if self.limits.per_address and count > 1:
            penalty = min(SUSPECT_PENALTY_MAX, 2.0 ** (count - 1)) - 1
            bucket = self._checks_by_address.bucket(user.address, now)
            bucket.charge(penalty, floor=-SUSPECT_PENALTY_MAX)

    def _check_key(self, user: User, room: Room, key: str, now: float) -> None:
        assert room.key_hash is not None
        if room.good_key is not None and hmac.compare_digest(key.encode(), room.good_key.encode()):
            return
        self._spend_slow_check(user, now)
        if not verify_key(key, room.key_hash):
            self._wrong_key(user, now)
            raise ChatError(f"wrong key for #{room.name}")
        room.good_key = key

    def join(self, user: User, raw_room: str, key: str | None, now: float, *, limited: bool = True) -> Room:
        """Join a room, creating it (locked if KEY is given) when missing.

        LIMITED=False exempts a creation from the room budgets (the default
        room, joined at login, must not fail because of someone else).
        """
        room = self.find_room(raw_room)
        if room is None:
            room = self._new_room(user, raw_room, key, now, limited=limited)
        elif room is user.room:
            raise ChatError(f"you are already in #{room.name}")
        elif room.locked:
            if not key:
                raise ChatError(f"#{room.name} is locked: /join {room.name} KEY")
            self._check_key(user, room, key, now)
        self._enter(user, room, now)
        return room

    def create(self, user: User, raw_room: str, key: str | None, now: float) -> Room:
        """Create a new room and join it; an existing room is an error."""
        existing = self.find_room(raw_room)
        if existing is not None:
            raise ChatError(f"#{existing.name} already exists: /join {existing.name}")
        room = self._new_room(user, raw_room, key, now)
        self._enter(user, room, now)
        return room

    def leave(self, user: User, now: float) -> Room:
        room = self._require_room(user)
        self._remove_member(room, user)
        user.send(render.info(f"you left #{room.name}; you are in the hall (/list shows rooms)"))
        self._notice(room, user, render.LEFT, f"{user.name} has left", now)
        self._forget_if_idle(room)
        return room

    def _enter(self, user: User, room: Room, now: float) -> None:
        old = user.room
        if old is not None:
            self._remove_member(old, user)
            self._notice(old, user, render.LEFT, f"{user.name} has left", now)
            self._forget_if_idle(old)
        rank = self._ranked_rooms.before_change(room)
        room.members[user] = user.outbox.out.append
        self._ranked_rooms.after_change(room, rank)
        user.room = room
        count = len(room.members)
        lock = " (locked)" if room.locked else ""
        user.send(render.info(f"you joined #{room.name}{lock}: {count} {_users(count)} here"))
        self.replay(user, room, self.history_lines, clip=REPLAY_CLIP)
        self._notice(room, user, render.JOINED, f"{user.name} has joined", now)

    def _remove_member(self, room: Room, user: User) -> None:
        rank = self._ranked_rooms.before_change(room)
        del room.members[user]
        self._ranked_rooms.after_change(room, rank)
        user.room = None
        if room in self.touched:
            # Room output already appended for this user must still be
            # written, though the shell will not find the user in the room.
            user.outbox.wake()

    def _require_room(self, user: User) -> Room:
        if user.room is None:
            raise ChatError("you are not in a room: /join ROOM joins one, /list shows rooms")
        return user.room

    def replay(self, user: User, room: Room, limit: int, clip: int | None = None,
               max_bytes: int = REPLAY_BYTES) -> None:
        """Send USER the last LIMIT messages of ROOM between two info lines.

        With CLIP, a longer message is cut to that many characters: one
        long line must not fill the screen of everyone who joins later. The
        answer holds at most MAX_BYTES of messages (the newest that fit), so
        that asking for history cannot make the server hold megabytes.
        """
        if limit <= 0:
            return
        try:
            events = self.history.recent(room.id, limit)
        except HistoryError:
            user.send(render.error(f"the history of #{room.name} cannot be read right now"))
            return
        if not events:
            user.send(render.info(f"no messages in #{room.name} yet"))
            return
        where = render.room_where(room.name)
        lines: list[bytes] = []
        size = 0
        for ev in reversed(events):
            text = ev.text
            if clip is not None and len(text) > clip:
                text = f"{text[:clip]}... [{len(text) - clip} more characters: /history shows it whole]"
            what = render.message(ev.sender, text) if ev.kind == MESSAGE else render.action(ev.sender, text)
            line = render.event(ev.ts, where, what)
            size += len(line)
            if size > max_bytes and lines:
                break
            lines.append(line)
        lines.reverse()
        count = len(lines)
        head = f"last {count} messages of #{room.name}" if count > 1 else f"last message of #{room.name}"
        if count < len(events):
            head += " (older ones do not fit in one answer)"
        data = b"".join([render.info(head + ":"), *lines, render.info(f"end of history of #{room.name}")])
        self.uncommitted.append((data, None))  # it may show rows of this batch
        user.send(data)

    # -- talking ----------------------------------------------------------

    def say(self, user: User, text: str, now: float) -> None:
        """A message to the user's room: every other member receives it."""
        room = self._require_room(user)
        data = render.event(now, "#" + room.name, f"{user.name}: {text}")
        self.history.append(room.id, now, MESSAGE, user.name, text)
        self.uncommitted.append((data, user))
        self._fanout(room, data, user)

    def act(self, user: User, text: str, now: float) -> None:
        """An action (/me) in the user's room."""
        room = self._require_room(user)
        data = render.event(now, "#" + room.name, render.action(user.name, text))
        self.history.append(room.id, now, ACTION, user.name, text)
        self.uncommitted.append((data, user))
        self._fanout(room, data, user)

    def _notice(self, room: Room, subject: User, arrow: str, text: str, now: float) -> None:
        """A room notice (join, leave, quit, rename) to the members but its subject.

        A notice nobody else is there to see is neither sent nor stored.
        """
        if not room.members or (len(room.members) == 1 and subject in room.members):
            return
        data = render.event(now, "#" + room.name, render.notice(arrow, text))
        self.history.append(room.id, now, NOTICE, subject.name, text)
        self.uncommitted.append((data, None))
        self._fanout(room, data, subject)

    def _fanout(self, room: Room, data: bytes, skip: User) -> None:
        """Append DATA for every member of ROOM but SKIP: one bare append each."""
        self.touched.add(room)
        for member, push in room.members.items():
            if member is not skip:
                push(data)

    def direct(self, user: User, target_name: str, text: str, now: float) -> User:
        """A direct message; the sender gets an echo as confirmation."""
        target = self.users.get(name_key(target_name)) if len(target_name) <= MAX_TYPED else None
        if target is None:
            raise ChatError(f"no such user: {clip(target_name)}")
        target.send(render.event(now, "(dm)", render.message(user.name, text)))
        user.send(render.event(now, f"(dm to {target.name})", render.message(user.name, text)))
        return target

    def broadcast(self, user: User, text: str, now: float) -> None:
        """A message to everyone online, the sender included (as confirmation)."""
        data = render.event(now, "(all)", render.message(user.name, text))
        for member in self.users.values():
            member.send(data)

    # -- reports ----------------------------------------------------------

    def room_list(self, pattern: str | None = None, limit: int = LIST_LIMIT) -> list[str]:
        """Rooms busiest first, at most LIMIT, with a count of the rest.

        PATTERN keeps the rooms whose name contains it (or matches it, with
        ``*`` and ``?``), ignoring case.
        """
        if pattern:
            match = _matcher(pattern)
            rooms = [room for room in self._ranked_rooms if match(room.key)]
            if not rooms:
                return [f"no room matches {pattern!r}"]
        else:
            rooms = self._ranked_rooms.first(limit)
            if not rooms:
                return ["no rooms yet: /join ROOM creates one"]
        total = len(rooms) if pattern else len(self.rooms)
        lines = [f"{total} {'room' if total == 1 else 'rooms'}, busiest first:"]
        for room in rooms[:limit]:
            lock = " (locked)" if room.locked else ""
            count = len(room.members)
            lines.append(f"  #{room.name}: {count} {_users(count)}{lock}")
        if total > limit:
            lines.append(f"and {total - limit} more: /list PATTERN shows the rooms whose name contains PATTERN")
        return lines

    def user_list(self, viewer: User, pattern: str | None = None, limit: int = USERS_LIMIT) -> list[str]:
        """Users online in name order, at most LIMIT, and the room each is in.

        A locked room is named only to its own members; others see that
        the user is in a private room.
        """
        if pattern:
            match = _matcher(pattern)
            users = [user for (folded, _), user in self._ranked_users.keyed() if match(folded)]
            total = len(users)
            if not users:
                return [f"nobody online matches {pattern!r}"]
        else:
            users = self._ranked_users.first(limit)
            total = len(self.users)
        lines = [f"{total} {_users(total)} online:"]
        for user in users[:limit]:
            room = user.room
            if room is None:
                where = "the hall"
            elif room.locked and viewer.room is not room:
                where = "a private room"
            else:
                where = f"#{room.name}"
            lines.append(f"  {user.name} in {where}")
        if total > limit:
            lines.append(f"and {total - limit} more: /users PATTERN shows the names that contain PATTERN")
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
            assert key == user.key == name_key(user.name), (key, user)
            if user.room is not None:
                assert self.rooms.get(user.room.key) is user.room, user
                assert user in user.room.members, user
        for key, room in self.rooms.items():
            assert key == room.key, (key, room)
            assert room.members or self.history.has_chat(room.id) or key == self.default_room, \
                f"{room} is idle and was not forgotten"
            for member in room.members:
                assert member.room is room, (member, room)
                assert self.users.get(member.key) is member, member
        assert list(self._ranked_rooms) == sorted(self.rooms.values(), key=_busiest_first)
        assert list(self._ranked_users) == sorted(self.users.values(), key=_by_name)


def _matcher(pattern: str) -> Callable[[str], bool]:
    """Case-insensitive substring test, or a whole-name wildcard match if
    PATTERN has * or ?. Patterns are as short as names; fnmatch.translate
    gives a regex that cannot backtrack without bound, compiled here rather
    than through fnmatch's cache, which would keep every pattern ever sent."""
    folded = fold(pattern.lstrip("#"))
    if len(folded) > MAX_ROOM:
        raise ChatError(f"a pattern has at most {MAX_ROOM} characters")
    if "*" in folded or "?" in folded or "[" in folded:
        regex = re.compile(fnmatch.translate(folded))
        return lambda key: regex.match(key) is not None
    return lambda key: folded in key


def _users(count: int) -> str:
    return "user" if count == 1 else "users"
