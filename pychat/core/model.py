"""Hall, Room and User: the chat world, its invariants, and its routing.

The Hall owns every room and user, the name -> user map and the user ->
rooms relation, and it is the only code that changes them. Each operation
takes the time as an argument. What users are told happens as typed events
(:mod:`pychat.core.events`) that each protocol renders; the Hall knows no
wire format and no socket. A user's mistake raises :class:`ChatError`, with
a text for people and a code for protocols that answer with numbers.

A user may be in several rooms (IRC's JOIN adds one); the line protocol
keeps one at a time by leaving its room as it joins another.

The hot path is a room message: rendered once per renderer present in the
room, and the same bytes appended to each member's outbox list with a bare
``list.append``. Instead of waking each recipient's outbox, the Hall notes
the room in :attr:`Hall.touched`; the shell flushes the members of the
touched rooms once per loop iteration.
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import hmac
import logging
import os
import re
import time
from typing import Callable, Iterable, NamedTuple, Protocol

from pychat.core.events import (MESSAGE, NOTICE, Broadcast, Direct, Invited, Joined, Parted, Quit, Renamed,
                                Renderer, SaidFields, Tagged, ToOperators)
from pychat.core.history import MESSAGE as STORED_MESSAGE
from pychat.core.history import NOTICE as STORED_NOTICE
from pychat.core.history import HistoryStore, StoredEvent
from pychat.core.limits import (SUSPECT_PENALTY_MAX, SUSPECT_SECONDS, HallLimits, KeyedBuckets, TokenBucket,
                                seconds_text)
from pychat.core.accounts import AccountsMixin
from pychat.core.errors import (ALREADY_IN_ROOM, BAD_NAME, BAD_ROOM_NAME, NAME_REGISTERED, NAME_TAKEN,
                                NO_SUCH_USER, NOT_IN_ROOM, ROOM_EXISTS, ROOM_LIMIT, SAME_NAME, TRY_LATER, WRONG_KEY,
                                Busy, ChatError)
from pychat.core.records import Ban, Topic
from pychat.core.moderation import ModerationMixin
from pychat.core.ranking import Ranking
from pychat.core.roomkeys import hash_key, verify_key
from pychat.core.text import (MAX_ROOM, MAX_TYPED, clip, fold, name_key, name_problem, normalize_name, room_key,
                              room_name, room_problem)

Sink = Callable[[bytes], None]
log = logging.getLogger("pychat.core.model")

LIST_LIMIT = 50        # rooms in one listing
DEPARTED_KEPT = 1000   # names remembered after their users left or changed them
USERS_LIMIT = 100      # users in one listing
HASH_GAP = 0.1         # seconds between two slow hashes (a key or password check), whoever asks

class Departed(NamedTuple):
    """A name a user no longer holds: who it was, and when it was given up."""

    name: str
    ident: str
    host: str
    realname: str
    when: float


class Outbox(Protocol):
    """Where a user's output goes until the shell writes it.

    ``out`` collects the bytes of the current loop iteration; ``queue``
    appends and makes sure the shell will write them; ``wake`` does the
    latter alone (for bytes appended to ``out`` directly).
    """

    out: list[bytes]

    def queue(self, data: bytes) -> None: ...

    def wake(self) -> None: ...

    def disconnect(self) -> None:
        """Close the connection once what is queued is written (a kill, a kline)."""

    @property
    def unsent(self) -> int:
        """Bytes queued and not yet taken by the peer."""


class ListOutbox:
    """An outbox that only collects (tests, and anything without a socket)."""

    __slots__ = ("out", "closed")

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def disconnect(self) -> None:
        self.closed = True

    def queue(self, data: bytes) -> None:
        self.out.append(data)

    def wake(self) -> None:
        pass

    @property
    def unsent(self) -> int:
        return sum(map(len, self.out))


class User:
    """One named connection.

    ``renderer`` writes the events this user receives (its protocol, with
    its options); ``prefix`` is ``nick!ident@host`` for protocols that show
    who speaks that way. ``address`` is what per-address limits count (see
    :func:`pychat.core.limits.address_key`); ``room_budget`` paces the rooms
    this user creates.
    """

    __slots__ = ("name", "key", "rooms", "outbox", "send", "renderer", "ident", "host", "prefix",
                 "address", "room_budget", "realname", "away", "invisible", "wallops", "account", "oper",
                 "ignoring", "ignored_by", "node", "fence")

    def __init__(self, name: str, outbox: Outbox, renderer: Renderer, address: str = "",
                 ident: str = "", host: str = "pychat") -> None:
        self.rooms: dict[Room, None] = {}  # an ordered set
        self.outbox = outbox
        self.send: Sink = outbox.queue
        self.renderer = renderer
        self.ident = ident or "pychat"
        self.host = host
        self.take_name(name)
        self.address = address
        self.room_budget: TokenBucket | None = None
        self.realname = ""            # what the user says of itself (IRC's "real name")
        self.away: str | None = None  # an away message, while away
        self.invisible = False        # left out of listings by mask (IRC's user mode +i)
        self.wallops = True           # receives server operators' /wall (IRC's user mode +w, opt-in there)
        self.account: str | None = None   # the account's key, when logged in
        self.oper = False                  # a server operator (--oper ACCOUNT, logged in)
        self.ignoring: set[str] = set()    # name keys whose messages this user does not want
        # The users ignoring this one, shared with the Hall's map: fan-out
        # skips them (empty for nearly everyone, which costs one test).
        self.ignored_by: set[User] | frozenset[User] = _NOBODY
        # In a cluster: the node this user is connected to, and the fence
        # token of its name's claim (events from an older claim are dropped).
        self.node = ""
        self.fence = 0

    def __repr__(self) -> str:
        return f"User({self.name!r})"

    def take_name(self, name: str) -> None:
        """Go by NAME (the Hall's map of names is the caller's to keep)."""
        self.name = name
        self.key = name_key(name)  # look-alike names share a key: one of them at a time
        self.prefix = f"{name}!{self.ident}@{self.host}"


class Room:
    """A named space; only its members see what is said in it.

    ``members`` maps each member to the bare append of its outbox list;
    ``groups`` holds the same entries by renderer, so that an event is
    rendered once per renderer present.
    """

    __slots__ = ("name", "key", "id", "key_hash", "members", "groups", "good_key", "created", "owner", "topic",
                 "modes", "limit", "op_accounts", "voice_accounts", "ops", "voiced", "bans", "mutes", "invited",
                 "gated")

    def __init__(self, name: str, room_id: int, key_hash: str | None, created: float = 0.0) -> None:
        self.name = name
        self.created = created
        self.owner: str | None = None          # the account of the logged-in creator
        self.topic: Topic | None = None
        self.modes: set[str] = set(DEFAULT_MODES)  # flags among i m n s t (k: key_hash, l: limit)
        self.limit: int | None = None
        self.op_accounts: set[str] = set()     # accounts made operators (kept across restarts)
        self.voice_accounts: set[str] = set()
        self.ops: set[User] = set()            # members with operator status now
        self.voiced: set[User] = set()
        self.bans: dict[str, Ban] = {}         # canonical mask (pychat.core.masks) -> ban
        self.mutes: dict[str, Ban] = {}
        self.invited: dict[str, float] = {}    # name key -> until when the invitation holds
        # True while the room is moderated or has mutes: only then does a
        # message cost more than one test before it is fanned out.
        self.gated = False
        self.key = room_key(name)
        self.id = room_id
        self.key_hash = key_hash
        self.members: dict[User, Sink] = {}
        self.groups: dict[Renderer, dict[User, Sink]] = {}
        # The last key that passed the slow hash check, so that members who
        # rejoin with the right key do not cost the server a hash each time.
        self.good_key: str | None = None

    @property
    def locked(self) -> bool:
        return self.key_hash is not None

    def __repr__(self) -> str:
        return f"Room({self.name!r})"


_NOBODY: frozenset[User] = frozenset()
DEFAULT_MODES = "nt"   # no messages from outside, topic set by operators


def _busiest_first(room: Room) -> tuple[int, str]:
    return (-len(room.members), room.key)


def _by_name(user: User) -> tuple[str, str]:
    return (fold(user.name), user.key)


class Hall(AccountsMixin, ModerationMixin):
    """Owns rooms and users and routes every command between them.

    Accounts and server operators are in :class:`AccountsMixin`, the rules
    of rooms (topics, modes, roles, kicks, bans, mutes, invitations) in
    :class:`ModerationMixin`; both work on the state kept here.
    """

    def __init__(self, history: HistoryStore | None = None, history_lines: int = 20,
                 limits: HallLimits | None = None, default_room: str = "", opers: Iterable[str] = ()) -> None:
        self.history = history if history is not None else HistoryStore()
        self.history_lines = history_lines
        self.limits = limits if limits is not None else HallLimits()
        # Where everyone lands: never locked, never forgotten, so that nobody
        # can take it over while it happens to be empty.
        self.default_room = room_key(room_name(default_room)) if default_room else ""
        self.users: dict[str, User] = {}  # name key (pychat.core.text.name_key) -> user
        self.rooms: dict[str, Room] = {}  # room key (pychat.core.text.room_key) -> room
        self._lookalikes: dict[str, Room] = {}  # name_key of a room's name -> room
        self.secret_rooms: set[Room] = set()  # mode +s: listed only to their members
        self._ranked_rooms: Ranking[Room] = Ranking(_busiest_first)
        self._ranked_users: Ranking[User] = Ranking(_by_name)
        self._rooms_by_address = KeyedBuckets(self.limits.rooms_per_address)
        self._checks_by_address = KeyedBuckets(self.limits.checks_per_address)
        self._checks = TokenBucket(self.limits.checks_server, 0.0)
        self._suspect_checks = TokenBucket(self.limits.checks_suspect, 0.0)
        self._hashed_at = -HASH_GAP  # when the last slow hash was made
        # Addresses that gave a wrong key: (wrong keys in a row, when the last).
        self._suspects: dict[str, tuple[int, float]] = {}
        self._cloak_key = os.urandom(16)
        # The last id given to a message that is not stored (a DM, a TAGMSG). It
        # starts from the clock (microseconds) so that ids are not given again
        # after a restart: clients drop a message whose id they have seen.
        self.msgids = time.time_ns() // 1000
        self.most_users = 0  # the most users online at once since the start
        # Who used which name lately, newest last (IRC's WHOWAS), bounded.
        self.departed: collections.deque[Departed] = collections.deque(maxlen=DEPARTED_KEPT)
        self._load_accounts(opers)
        for stored in self.history.rooms():
            room = Room(stored.name, stored.id, stored.key_hash, stored.created)
            self._load_room_settings(room, stored)
            if room.key in self.rooms:
                log.warning("room %r (id %d) has the same name as another once normalized; it is not loaded",
                            room.name, room.id)
            else:
                self._add_room(room)
        self._load_room_rules()
        for room in list(self.rooms.values()):
            self._forget_if_idle(room)  # nothing to keep: the name is free again
        # Room events (and replays) written since the last commit, with the
        # sender of each message or action: if the commit fails, the shell
        # withholds these bytes and tells the senders.
        self.uncommitted: list[tuple[bytes, User | None]] = []
        # Rooms whose members were sent bytes without a wake-up; the shell
        # flushes their members and clears this once per loop iteration.
        self.touched: set[Room] = set()

    # -- users ------------------------------------------------------------

    def check_name(self, name: str, current: User | None = None, account: str | None = None) -> str:
        """Return NAME normalized, or raise ChatError if invalid or taken.

        A registered name is taken unless ACCOUNT (or CURRENT's account) is its own.
        """
        if len(name) > MAX_TYPED:  # before NFKC, which can make a character 18
            raise ChatError(f"invalid name {clip(name)!r}: a name has at most 20 characters", BAD_NAME)
        name = normalize_name(name)
        problem = name_problem(name)
        if problem:
            raise ChatError(f"invalid name {clip(name)!r}: {problem}", BAD_NAME)
        key = name_key(name)
        holder = self.users.get(key)
        if holder is not None and holder is not current:
            raise ChatError(f"the name {name} is taken; choose another", NAME_TAKEN)
        if key in self.accounts and key != (account or (current.account if current is not None else None)):
            raise ChatError(f"the name {name} is registered: /login {name} PASSWORD", NAME_REGISTERED)
        return name

    def register(self, name: str, outbox: Outbox, renderer: Renderer, address: str = "",
                 ident: str = "", account: str | None = None) -> User:
        """Add a named user (in the hall, in no room), logged in to ACCOUNT if
        given (the caller has checked its password)."""
        name = self.check_name(name, account=account)
        user = User(name, outbox, renderer, address, ident, self.cloak(address))
        self._add_user(user, account)
        return user

    def _add_user(self, user: User, account: str | None) -> None:
        """Put USER, whose name was checked, in the hall."""
        self.users[user.key] = user
        self._ranked_users.add(user)
        self.most_users = max(self.most_users, len(self.users))
        self._watch_ignorers(user)
        if account is not None:
            self._logged_in(user, account)

    def asked(self, outbox: object, op: str, key: str) -> bool:
        """Whether a request of OUTBOX's (OP on KEY) is on its way or came back and
        waits to be answered: never here; in a cluster (pychat.core.replicated),
        from its publishing until the retry takes its answer."""
        return False

    def find_user(self, name: str) -> User | None:
        """The user online under NAME (or a name that looks like it)."""
        return self.users.get(name_key(name)) if len(name) <= MAX_TYPED else None

    @staticmethod
    def members_shown(room: Room, viewer: User | None) -> bool:
        """Whether VIEWER may see who is in ROOM (and its topic): a locked or
        secret room's members are shown to its members only. (Whether the
        room itself is listed is busiest_rooms's rule: secret rooms are not.)"""
        return viewer in room.members or not (room.locked or "s" in room.modes)

    def user_named(self, name: str) -> User:
        """The user online under NAME (or a look-alike); ChatError if none."""
        target = self.find_user(name)
        if target is None:
            raise ChatError(f"no such user: {clip(name)}", NO_SUCH_USER)
        return target

    def set_cloak_key(self, key: bytes) -> None:
        """Make shown hosts with KEY from now on (a cluster's nodes share one)."""
        self._cloak_key = key

    def cloak(self, address: str) -> str:
        """The host others are shown for ADDRESS: stable for the server's life, not the address."""
        if not address:
            return "pychat"
        digest = hmac.new(self._cloak_key, address.encode(), hashlib.sha256).hexdigest()
        return f"{digest[:10]}.pychat"

    def guest_name(self) -> str:
        """A free generated name: guest1, guest2, ... (neither online nor registered)."""
        n = len(self.users) + 1
        while name_key(f"guest{n}") in self.users or name_key(f"guest{n}") in self.accounts:
            n += 1
        return f"guest{n}"

    def rename(self, user: User, new_name: str, now: float) -> str:
        """Give USER a new name; the rooms USER is in are told. Returns the old name."""
        new_name = self.check_name(new_name, current=user)
        old, old_prefix = user.name, user.prefix
        if new_name == old:
            raise ChatError(f"you are already called {old}", SAME_NAME)
        del self.users[user.key]
        self._ranked_users.remove(user)
        self.departed.append(Departed(old, user.ident, user.host, user.realname, now))
        user.take_name(new_name)
        self.users[user.key] = user
        self._ranked_users.add(user)
        self._watch_ignorers(user)
        event = Renamed(now, old, new_name, old_prefix)
        self._announce(user, list(user.rooms), f"{old} is now known as {new_name}", now,
                       lambda r, room: r.renamed(event, room))
        return old

    def set_renderer(self, user: User, renderer: Renderer) -> None:
        """USER's protocol options changed: move it to its new group in each room."""
        old = user.renderer
        if renderer is old:
            return
        user.renderer = renderer
        for room in user.rooms:
            push = room.members[user]
            if old.delivers:
                group = room.groups[old]
                del group[user]
                if not group:
                    del room.groups[old]
            if renderer.delivers:
                room.groups.setdefault(renderer, {})[user] = push

    def quit(self, user: User, reason: str, now: float) -> None:
        """Remove USER from the hall; the rooms it was in see that it quit."""
        if self.users.get(user.key) is not user:
            return
        rooms = list(user.rooms)
        for room in rooms:
            self._remove_member(room, user)
        event = Quit(now, user.name, user.prefix, reason)
        text = f"{user.name} has quit ({reason})" if reason else f"{user.name} has quit"
        self._announce(user, rooms, text, now, lambda r, room: r.quit(event, room))
        for room in rooms:
            self._forget_if_idle(room)
        del self.users[user.key]
        self._ranked_users.remove(user)
        self._stop_ignoring(user)
        self.departed.append(Departed(user.name, user.ident, user.host, user.realname, now))

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
        """Forget an empty room that has no messages and nothing set by anyone
        (owner, topic, roles, bans): nothing of it is worth keeping."""
        if (not room.members and not self._has_chat(room) and room.key != self.default_room
                and self.rooms.get(room.key) is room and not self._has_settings(room)):
            del self.rooms[room.key]
            self._ranked_rooms.remove(room)
            self.secret_rooms.discard(room)
            if self._lookalikes.get(name_key(room.name)) is room:
                del self._lookalikes[name_key(room.name)]
            self.history.forget_room(room.id)

    def _has_chat(self, room: Room) -> bool:
        """Whether ROOM has messages kept (a room with messages is kept when it empties)."""
        return self.history.has_chat(room.id)

    def forget_idle(self, rooms: Iterable[Room]) -> None:
        """Forget those of ROOMS left idle (after a failed commit took their messages back)."""
        for room in list(rooms):
            self._forget_if_idle(room)

    def _new_room(self, user: User, raw: str, key: str | None, now: float, *, limited: bool = True) -> Room:
        """Create a room for USER, within the room cap and creation budgets."""
        name, key_hash = self._admit_new_room(user, raw, key, now, limited=limited)
        return self._make_room(user, name, key_hash, now, key)

    def _admit_new_room(self, user: User, raw: str, key: str | None, now: float, *,
                        limited: bool = True) -> tuple[str, str | None]:
        """Check that USER may create the room RAW (locked with KEY) and spend its
        budgets for it: the room's name and its key's hash. ChatError if it may not."""
        name = room_name(raw) if len(raw) <= MAX_TYPED else raw
        problem = room_problem(name)
        if problem:
            raise ChatError(f"invalid room name {clip(raw)!r}: {problem}", BAD_ROOM_NAME)
        twin = self._lookalikes.get(name_key(name))
        if twin is not None:
            raise ChatError(f"#{name} looks too much like #{twin.name}: /join {twin.name}, or choose another name",
                            BAD_ROOM_NAME)
        if key and room_key(name) == self.default_room:
            raise ChatError(f"#{name} is where everyone lands; it cannot be locked", BAD_ROOM_NAME)
        if limited:
            self._check_room_budgets(user, now)
        if key:
            self._spend_slow_check(user.address, now)  # hashing a new key costs what checking one does
        if limited:
            self._spend_room_budgets(user, now)
        return name, hash_key(key) if key else None

    def _make_room(self, user: User, name: str, key_hash: str | None, now: float, key: str | None = None) -> Room:
        """Create the room NAME (checked) for USER, locked with KEY_HASH if given."""
        room = Room(name, self._new_room_id(name, key_hash, now), key_hash, now)
        if key:
            room.good_key = key
        if room.key == self.default_room:
            room.modes.discard("t")  # it has no operator to set a locked topic
        if user.account is not None and room_key(name) != self.default_room:
            room.owner = user.account  # a logged-in creator owns the room
            self._save_settings(room)
        self._add_room(room)
        return room

    def _new_room_id(self, name: str, key_hash: str | None, now: float) -> int:
        """The id of the new room NAME (its row is written with the next commit)."""
        return self.history.add_room(room_key(name), name, key_hash, now)

    def _check_room_budgets(self, user: User, now: float) -> None:
        limits = self.limits
        if len(self.rooms) >= limits.max_rooms:
            raise ChatError(f"the server holds its maximum of {limits.max_rooms} rooms; "
                            "join an existing one (/list shows them)", ROOM_LIMIT)
        if user.room_budget is None:
            user.room_budget = TokenBucket(limits.rooms_per_user, now)
        wait = user.room_budget.wait(now)
        if wait > 0:
            raise ChatError(f"you are creating rooms too fast; try again in {seconds_text(wait)}", TRY_LATER)
        if limits.per_address:
            wait = self._rooms_by_address.wait(user.address, now)
            if wait > 0:
                raise ChatError(f"too many rooms created from your address; try again in {seconds_text(wait)}",
                                TRY_LATER)

    def _spend_room_budgets(self, user: User, now: float) -> None:
        assert user.room_budget is not None
        user.room_budget.take(now)
        if self.limits.per_address:
            self._rooms_by_address.take(user.address, now)

    def _spend_slow_check(self, address: str, now: float, cost: float = 1.0, what: str = "key") -> None:
        """Allow one slow hash (COST units: a password costs two) from ADDRESS,
        or say when it can be done: a suspect (an address that gave a wrong key
        or password lately) is refused, anyone else is told to wait (Busy).

        Checks not allowed cost nothing: they are never queued on the loop's time.
        """
        since = now - self._hashed_at
        if 0 <= since < HASH_GAP:
            # Slow hashes are spaced out, whoever asks: budgets that each allow
            # one could otherwise add up to a long pause, and a bystander whose
            # line came in during one hash is answered before the next.
            raise Busy(f"the server is busy checking {what}s; try again in 1 s", HASH_GAP - since)
        suspect = self._is_suspect(address, now)
        if self.limits.per_address:
            wait = self._checks_by_address.wait(address, now, cost)
            if wait > 0:
                text = f"too many {what} checks from your address; try again in {seconds_text(wait)}"
                if suspect:
                    raise ChatError(text, TRY_LATER)
                raise Busy(text, wait)
        shared = self._suspect_checks if suspect else self._checks
        # A request may cost more than the share holds at most (/password's two
        # hashes): it goes ahead once the share is full, and leaves it in debt
        # for the rest, so the share's rate holds whatever the request costs.
        units = min(cost, shared.rate.burst)
        wait = shared.wait(now, units)
        if wait > 0:
            text = f"the server is busy checking {what}s; try again in {seconds_text(wait)}"
            if suspect:  # a guesser is refused
                raise ChatError(text, TRY_LATER)
            raise Busy(text, wait)  # anyone else waits their turn
        shared.take(now, units)
        if cost > units:
            shared.charge(cost - units, floor=units - cost)
        self._hashed_at = now
        if self.limits.per_address:
            self._checks_by_address.take(address, now, cost)

    def _is_suspect(self, address: str, now: float) -> bool:
        entry = self._suspects.get(address)
        return entry is not None and now - entry[1] < SUSPECT_SECONDS

    def _wrong_key(self, address: str, now: float) -> None:
        """Remember a wrong key or password from ADDRESS; each one in a row costs double."""
        suspects = self._suspects
        if len(suspects) >= 10_000:  # bounded: the oldest are forgotten first
            for address in [a for a, (_, when) in suspects.items() if now - when >= SUSPECT_SECONDS]:
                del suspects[address]
            if len(suspects) >= 10_000:
                suspects.clear()
        count = suspects[address][0] + 1 if self._is_suspect(address, now) else 1
        suspects[address] = (count, now)
        if self.limits.per_address and count > 1:
            penalty = min(SUSPECT_PENALTY_MAX, 2.0 ** (count - 1)) - 1
            bucket = self._checks_by_address.bucket(address, now)
            bucket.charge(penalty, floor=-SUSPECT_PENALTY_MAX)

    def _check_key(self, user: User, room: Room, key: str, now: float) -> None:
        assert room.key_hash is not None
        if room.good_key is not None and hmac.compare_digest(key.encode(), room.good_key.encode()):
            return
        self._spend_slow_check(user.address, now)
        if not verify_key(key, room.key_hash):
            self._wrong_key(user.address, now)
            raise ChatError(f"wrong key for #{room.name}", WRONG_KEY)
        room.good_key = key

    def join(self, user: User, raw_room: str, key: str | None, now: float, *, limited: bool = True,
             leave: Room | None = None) -> Room:
        """Join a room, creating it (locked if KEY is given) when missing.

        LEAVE is left once the join is known to succeed (the line protocol's
        one room at a time). LIMITED=False exempts a creation from the room
        budgets (the default room, joined at login, must not fail because of
        someone else).
        """
        room = self.find_room(raw_room)
        created = room is None
        if room is None:
            room = self._new_room(user, raw_room, key, now, limited=limited)
        elif user in room.members:
            raise ChatError(f"you are already in #{room.name}", ALREADY_IN_ROOM)
        else:
            self._may_enter(user, room, key, now)
        if leave is not None:
            self.part(user, leave, "", now)
        self._enter(user, room, now, creator=created)
        return room

    def create(self, user: User, raw_room: str, key: str | None, now: float, *,
               leave: Room | None = None) -> Room:
        """Create a new room and join it; an existing room is an error."""
        existing = self.find_room(raw_room)
        if existing is not None:
            raise ChatError(f"#{existing.name} already exists: /join {existing.name}", ROOM_EXISTS)
        room = self._new_room(user, raw_room, key, now)
        if leave is not None:
            self.part(user, leave, "", now)
        self._enter(user, room, now, creator=True)
        return room

    def part(self, user: User, room: Room, reason: str, now: float) -> None:
        """USER leaves ROOM; the other members are told."""
        if user not in room.members:
            raise ChatError(f"you are not in #{room.name}", NOT_IN_ROOM)
        self._remove_member(room, user)
        text = f"{user.name} has left ({reason})" if reason else f"{user.name} has left"
        event = Parted(now, room.name, user.name, user.prefix, reason)
        self._notice(room, user, text, now, lambda r: r.parted(event))
        self._forget_if_idle(room)

    def _seat(self, user: User, room: Room) -> None:
        """Make USER a member of ROOM (nobody is told)."""
        rank = self._ranked_rooms.before_change(room)
        push = user.outbox.out.append
        room.members[user] = push
        if user.renderer.delivers:
            room.groups.setdefault(user.renderer, {})[user] = push
        self._ranked_rooms.after_change(room, rank)
        user.rooms[room] = None

    def _enter(self, user: User, room: Room, now: float, creator: bool = False) -> None:
        self._seat(user, room)
        room.invited.pop(user.key, None)
        if creator and room.key != self.default_room:
            # Whoever makes a room runs it (for as long as they stay, if not its
            # owner); the default room is everyone's, not its first comer's.
            room.ops.add(user)
        else:
            self._restore_roles(user, room)
        event = Joined(now, room.name, user.name, user.prefix)
        self._notice(room, user, f"{user.name} has joined", now, lambda r: r.joined(event))

    def _remove_member(self, room: Room, user: User) -> None:
        rank = self._ranked_rooms.before_change(room)
        del room.members[user]
        if user.renderer.delivers:
            group = room.groups[user.renderer]
            del group[user]
            if not group:
                del room.groups[user.renderer]
        self._ranked_rooms.after_change(room, rank)
        del user.rooms[room]
        room.ops.discard(user)
        room.voiced.discard(user)
        if room in self.touched:
            # Room output already appended for this user must still be
            # written, though the shell will not find the user in the room.
            user.outbox.wake()

    def recent(self, room: Room, limit: int) -> list[StoredEvent]:
        """The last LIMIT messages and actions of ROOM (HistoryError if unreadable)."""
        return self.history.recent(room.id, limit)

    def older(self, room: Room, before_id: int, limit: int) -> list[StoredEvent]:
        """Up to LIMIT messages and actions of ROOM just before its message BEFORE_ID."""
        return self.history.before(room.id, before_id, limit)

    def newer(self, room: Room, after_id: int, limit: int) -> list[StoredEvent]:
        """Up to LIMIT messages and actions of ROOM after its message AFTER_ID (see HistoryStore.after)."""
        return self.history.after(room.id, after_id, limit)

    # -- talking ----------------------------------------------------------

    def say(self, user: User, room: Room, text: str, now: float, kind: int = MESSAGE, tags: str = "",
            id_at_least: int = 0) -> None:
        """A message, action or notice in ROOM: every other member receives it
        (the sender too, if its renderer echoes). TAGS: the sender's
        client-only tags, for the renderers that carry them (not stored).
        ID_AT_LEAST: see HistoryStore.append (a cluster node's numbering)."""
        if room.gated or user not in room.members:  # one test for the common case
            self._check_may_speak(user, room, now)
        # MESSAGE and ACTION are the store's codes too; a NOTICE is kept as a message.
        # Its id in the store is its message id (IRC's msgid, which CHATHISTORY takes).
        msgid = self.history.append(room.id, now, kind if kind != NOTICE else STORED_MESSAGE, user.name, text,
                                    id_at_least)
        event: SaidFields = (now, room.name, user.name, user.prefix, text, kind, msgid, tags)
        uncommitted = self.uncommitted
        self.touched.add(room)
        if user.ignored_by:
            self._say_past_ignorers(user, room, event, None if user.renderer.echo else user)
            return
        # Every member gets the bytes, the sender too; a sender who is not
        # to see its own message then takes its copy back: the last item of
        # its list, appended just now. A bare call per member is the cheapest
        # fan-out there is (a test of each member costs a third more).
        for renderer, members in room.groups.items():
            data = renderer.said(event)
            uncommitted.append((data, user))
            for push in members.values():
                push(data)
        if not user.renderer.echo and user in room.members:
            user.outbox.out.pop()

    def _check_may_speak(self, user: User, room: Room, now: float) -> None:
        """ChatError unless USER may speak in ROOM: a member, or the room lets
        outsiders (-n); and, in a gated room, not muted or moderated out."""
        if user not in room.members and "n" in room.modes:
            raise ChatError(f"you are not in #{room.name}", NOT_IN_ROOM)
        if room.gated:
            self._check_voice(user, room, now)

    def _say_past_ignorers(self, user: User, room: Room, event: SaidFields, skip: User | None) -> None:
        """say()'s fan-out for a sender someone ignores: they are left out."""
        ignored_by = user.ignored_by
        uncommitted = self.uncommitted
        for renderer, members in room.groups.items():
            data = renderer.said(event)
            uncommitted.append((data, user))
            for member, push in members.items():
                if member is not skip and member not in ignored_by:
                    push(data)

    def _notice(self, room: Room, subject: User, text: str, now: float, render: Callable[[Renderer], bytes]) -> None:
        """A room notice (join, leave) to the members but its subject.

        A notice nobody else is there to see is neither sent nor stored.
        """
        if not room.members or (len(room.members) == 1 and subject in room.members):
            return
        self.history.append(room.id, now, STORED_NOTICE, subject.name, text)
        uncommitted = self.uncommitted
        self.touched.add(room)
        for renderer, members in room.groups.items():
            data = render(renderer)
            uncommitted.append((data, None))
            for member, push in members.items():
                if member is not subject:
                    push(data)

    def _announce(self, subject: User, rooms: list[Room], text: str, now: float,
                  render: Callable[[Renderer, str], bytes]) -> None:
        """A quit or rename, to everyone who shares one of ROOMS with SUBJECT.

        A renderer that is per room (the line protocol names the room) gets
        it in each room; the others (IRC's QUIT and NICK) once per recipient.
        Each room stores its notice if anyone else was there to see it.
        """
        once: dict[Renderer, bytes] = {}
        told: set[User] = set()
        uncommitted = self.uncommitted
        for room in rooms:
            members = room.members
            if not members or (len(members) == 1 and subject in members):
                continue
            self.history.append(room.id, now, STORED_NOTICE, subject.name, text)
            self.touched.add(room)
            for renderer, group in room.groups.items():
                if renderer.per_room:
                    data = render(renderer, room.name)
                    uncommitted.append((data, None))
                    for member, push in group.items():
                        if member is not subject:
                            push(data)
                    continue
                data = once.get(renderer) or b""
                if not data:
                    data = once[renderer] = render(renderer, "")
                    uncommitted.append((data, None))
                for member, push in group.items():
                    if member is not subject and member not in told:
                        told.add(member)
                        push(data)

    def direct(self, user: User, target_name: str, text: str, now: float, kind: int = MESSAGE,
               tags: str = "") -> User:
        """A direct message; the sender's renderer decides whether it sees an echo."""
        target = self.user_named(target_name)
        self.msgids += 1
        event = Direct(now, user.name, user.prefix, target.name, text, kind, self.msgids, tags)
        if target not in user.ignored_by:  # the sender is not told it is ignored
            target.send(target.renderer.direct(event))
        echo = user.renderer.direct_echo(event)
        if echo is not None:
            user.send(echo)
        return target

    def say_to_operators(self, user: User, room: Room, text: str, now: float, kind: int = MESSAGE,
                         status: str = "@", tags: str = "") -> None:
        """A message to ROOM's operators (and voiced members, STATUS '+'), under the
        room's rules for speaking; the sender sees it only if it is one of them and echoes."""
        self._check_may_speak(user, room, now)
        self.msgids += 1
        event = ToOperators(now, room.name, user.name, user.prefix, text, kind, self.msgids, status, tags)
        recipients = room.ops | room.voiced if status == "+" else room.ops
        rendered: dict[Renderer, bytes] = {}
        for member in recipients:
            if (member is user and not user.renderer.echo) or member in user.ignored_by:
                continue
            data = rendered.get(member.renderer)
            if data is None:
                data = rendered[member.renderer] = member.renderer.to_operators(event)
            member.send(data)

    def tag_room(self, user: User, room: Room, tags: str, now: float) -> None:
        """Client-only TAGS with no text to ROOM (IRC's TAGMSG), under the
        room's rules for speaking: only members whose renderer carries tags
        see it, the sender too if it echoes. Not stored."""
        self._check_may_speak(user, room, now)
        self.msgids += 1
        event = Tagged(now, user.name, user.prefix, f"#{room.name}", tags, self.msgids)
        skip = None if user.renderer.echo else user
        ignored_by = user.ignored_by
        self.touched.add(room)
        for renderer, members in room.groups.items():
            data = renderer.tagged(event)
            if data is None:
                continue
            for member, push in members.items():
                if member is not skip and member not in ignored_by:
                    push(data)

    def tag_user(self, user: User, target_name: str, tags: str, now: float) -> User:
        """Client-only TAGS with no text to one user (IRC's TAGMSG)."""
        target = self.user_named(target_name)
        self.msgids += 1
        event = Tagged(now, user.name, user.prefix, target.name, tags, self.msgids)
        data = target.renderer.tagged(event)
        if data is not None and target not in user.ignored_by:
            target.send(data)
        if user.renderer.echo:
            echo = user.renderer.tagged(event)
            if echo is not None:
                user.send(echo)
        return target

    def invite(self, user: User, target: User, room: Room, now: float) -> None:
        """USER, a member of ROOM, asks TARGET to join it (and lets it in, if invite-only)."""
        self.allow_in(user, target, room, now)
        if target not in user.ignored_by:  # the sender is not told it is ignored
            target.send(target.renderer.invited(Invited(now, room.name, user.name, user.prefix, target.name)))

    def broadcast(self, user: User, text: str, now: float) -> None:
        """A message to everyone online, the sender included (as confirmation)."""
        event = Broadcast(now, user.name, user.prefix, text)
        rendered: dict[Renderer, bytes] = {}
        ignored_by = user.ignored_by
        for member in self.users.values():
            if member in ignored_by:
                continue
            data = rendered.get(member.renderer)
            if data is None:
                data = rendered[member.renderer] = member.renderer.broadcast(event)
            member.send(data)

    # -- reports ----------------------------------------------------------

    def busiest_rooms(self, pattern: str | None = None, limit: int = LIST_LIMIT,
                      viewer: User | None = None) -> tuple[int, list[Room]]:
        """How many rooms VIEWER may see (that match PATTERN) and the busiest LIMIT of them.

        PATTERN keeps the rooms whose name contains it (or matches it whole,
        with * ? or [), ignoring case. A secret room (+s) is seen by its
        members only. The order is kept up to date as members come and go,
        so this costs what it returns.
        """
        hidden = {room for room in self.secret_rooms if viewer not in room.members}
        if pattern:
            match = _matcher(pattern)
            rooms = [room for room in self._ranked_rooms if match(room.key) and room not in hidden]
            return len(rooms), rooms[:limit]
        if hidden:
            rooms = [room for room in self._ranked_rooms.first(limit + len(hidden)) if room not in hidden]
            return len(self.rooms) - len(hidden), rooms[:limit]
        return len(self.rooms), self._ranked_rooms.first(limit)

    def users_by_name(self, pattern: str | None = None, limit: int = USERS_LIMIT) -> tuple[int, list[User]]:
        """How many users are online (that match PATTERN) and the first LIMIT by name."""
        if pattern:
            match = _matcher(pattern)
            users = [user for (folded, _), user in self._ranked_users.keyed() if match(folded)]
            return len(users), users[:limit]
        return len(self.users), self._ranked_users.first(limit)

    # -- invariants -------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise AssertionError if the hall's maps disagree (tests call this)."""
        for key, user in self.users.items():
            assert key == user.key == name_key(user.name), (key, user)
            assert user.prefix == f"{user.name}!{user.ident}@{user.host}", user
            for room in user.rooms:
                assert self.rooms.get(room.key) is room, (user, room)
                assert user in room.members, (user, room)
        for key, room in self.rooms.items():
            assert key == room.key, (key, room)
            assert (room.members or self._has_chat(room) or key == self.default_room
                    or self._has_settings(room)), f"{room} is idle and was not forgotten"
            grouped = {user: push for group in room.groups.values() for user, push in group.items()}
            assert grouped == {m: push for m, push in room.members.items() if m.renderer.delivers}, room
            for renderer, group in room.groups.items():
                assert group, (room, renderer)
                assert all(member.renderer is renderer for member in group), (room, renderer)
            for member in room.members:
                assert room in member.rooms, (member, room)
                assert self.users.get(member.key) is member, member
        assert list(self._ranked_rooms) == sorted(self.rooms.values(), key=_busiest_first)
        assert self.secret_rooms == {room for room in self.rooms.values() if "s" in room.modes}
        assert list(self._ranked_users) == sorted(self.users.values(), key=_by_name)


def _matcher(pattern: str) -> Callable[[str], bool]:
    """Case-insensitive substring test, or a whole-name wildcard match if
    PATTERN has * ? or [. Patterns are as short as names; fnmatch.translate
    gives a regex that cannot backtrack without bound, compiled here rather
    than through fnmatch's cache, which would keep every pattern ever sent."""
    folded = fold(pattern.lstrip("#"))
    if len(folded) > MAX_ROOM:
        raise ChatError(f"a pattern has at most {MAX_ROOM} characters")
    if "*" in folded or "?" in folded or "[" in folded:
        regex = re.compile(fnmatch.translate(folded))
        return lambda key: regex.match(key) is not None
    return lambda key: folded in key
