"""The Hall of one node in a cluster: the same world, changed only by the
events that come back from the cluster's one ordered stream.

Every node holds the whole world: its own users, and the users of the
other nodes as stand-ins that receive nothing. A request from a local user
is checked here against that world (so most mistakes are answered at
once), then published to the stream instead of being carried out. Every
node, the one that published it included, carries it out when it comes
back from the stream, in the stream's order, with the base Hall's own
methods: the worlds of all nodes go through the same changes in the same
order, and nobody is shown anything before it is in the stream.

A request whose answer the session needs (a name, a join, a part, a new
name) raises :class:`Pending`, which the sessions hold like any Busy
request; when the request comes back from the stream, its outcome is kept
for the connection and the shell is asked (``resume``) to try the held
request again at once, which then returns the outcome (or raises the
refusal). A request that needs no answer (a message) is simply published;
a refusal found only when it comes back is written to the user as an error.

Carrying an event out must come to the same on every node, so whatever
depends on one node (a random salt, a password or key check and its
budget, this node's clock or history file) is decided once, where the
request is made, and travels in the event: a new room key goes hashed, a
password is checked before its request is published, an event carries its
time, and what the world is (rooms spoken in, operator status, addresses,
the host secret) is kept in the world, not read from a node's file.

What crosses the stream is a short list per event (see ``apply``): a
loop pass's events go together as one entry in Python's marshal format,
the cheapest to write and read there is (Redis is trusted like the nodes
themselves: whoever can write to it can act as anyone already), and the
events that Redis's scripts write, and snapshots, go as JSON; the bus
(:class:`ClusterBus`) is the server's, which owns the sockets.
This module has names, rooms and chat; a request's trip through the
stream is replicated_base.py, rooms' settings and moderation are
replicated_rooms.py, and accounts and server operators replicated_accounts.py.
"""

from __future__ import annotations

import json
import logging
import marshal
from typing import Any, Callable, NamedTuple

from pychat.core.accounts import Kline
from pychat.core.errors import ALREADY_IN_ROOM, NAME_TAKEN, NEEDS_KEY, NO_SUCH_USER, NOT_IN_ROOM, ROOM_EXISTS, ChatError
from pychat.core.events import MESSAGE, Renamed, Renderer
from pychat.core.model import Hall, Room, User
from pychat.core.records import Account, Ban, Topic
from pychat.core.replicated_accounts import AccountRequests
from pychat.core.replicated_base import CLUSTER_UNAVAILABLE, NO_OUTCOME, REMOTE, REMOTE_OUTBOX, ClusterBus, unavailable
from pychat.core.replicated_rooms import RoomRequests
from pychat.core.text import MAX_TYPED, clip, name_key, room_key, room_name

log = logging.getLogger("pychat.cluster")

RECLAIM_TRIES = 10   # names a user cut off from the cluster tries (its own, then guest names) before it is let go

# A message's id (its msgid, which CHATHISTORY takes; and the id of a DM or a
# TAGMSG) comes from its place in the stream, so that every node gives it the
# same: the entry's millisecond since 2020 (40 bits, until 2054) and its
# sequence within that millisecond (9 bits), then 16 ids for each event of
# the entry (10 bits of events), of which carrying the event out uses one or
# a few. Ids only grow, so an entry or event past those bounds (a quit shown
# in many rooms, a burst of entries in one millisecond) takes the ids after
# the one before it: the same on every node that carried out the ones before,
# and a node that joins later starts from the counters of the snapshot it takes.
STREAM_EPOCH_MS = 1_577_836_800_000
IDS_PER_EVENT = 16
_EVENT_BITS = 10 + 4   # 1024 events an entry, IDS_PER_EVENT ids each
_SEQ_BITS = 9
_MS_BITS = 40


def first_event_id(entry_id: str) -> int:
    """The first id of the events of the stream's entry ENTRY_ID ("ms-seq"); 0 if unreadable."""
    ms, _, seq = entry_id.partition("-")
    try:
        since = int(ms) - STREAM_EPOCH_MS
        if not 0 <= since < 1 << _MS_BITS:  # a clock before 2020 or past 2054: the ids just count on
            return 0
        return (since << _SEQ_BITS | min(int(seq or 0), (1 << _SEQ_BITS) - 1)) << _EVENT_BITS
    except ValueError:
        return 0


class _Orphan:
    """A local user whose claim the cluster ended while this node lived (its
    lease expired): its connection stays, and it takes a name again (its own
    if still free, else a guest name) and its rooms once the node is back."""

    __slots__ = ("user", "rooms", "since", "claiming", "tries")

    def __init__(self, user: User, rooms: list[tuple[str, str]], since: float) -> None:
        self.user = user
        self.rooms = rooms      # (name, key hash) of the rooms it was in
        self.since = since
        self.claiming = False   # a claim of a name is on its way
        self.tries = 0


class _Registration(NamedTuple):
    outbox: Any
    renderer: Renderer
    address: str
    orphan: _Orphan | None = None


class ReplicatedHall(RoomRequests, AccountRequests):
    """A Hall that changes only through the cluster's stream (see the module's text)."""

    def __init__(self, *args: Any, node: str, **kwargs: Any) -> None:
        # Rooms anyone ever spoke in, as the world knows it (each node's own file
        # may lack the start): an empty room is kept or forgotten alike on every
        # node. Made once the base Hall has loaded this node's file.
        self._chatted: set[str] = set()
        self._file_loaded = False
        # Rooms of this node's file (with messages) that the world does not have: key -> id.
        self._dormant: dict[str, int] = {}
        super().__init__(*args, **kwargs)
        self.node = node
        self.bus: ClusterBus | None = None
        # Set by the shell: try a connection's held request again now.
        self.resume: Callable[[Any], None] = lambda outbox: None
        # Set by the cluster: another node asks for the world as of now (its token, the snapshot maker).
        self.on_snapshot_request: Callable[[str, Callable[[], bytes]], None] = lambda token, make: None
        self._applying = False
        self._tokens = 0
        self._registrations: dict[str, _Registration] = {}
        # Per local connection: what it waits for, and what came back.
        self._expected: dict[Any, set[tuple[str, str]]] = {}
        self._settled: dict[Any, dict[tuple[str, str], Any]] = {}
        self._to_resume: list[Any] = []
        self._orphans: dict[Any, _Orphan] = {}  # by outbox
        self._chatted = {room.key for room in self.rooms.values() if self.history.has_chat(room.id)}
        self._file_loaded = True

    def forget_connection(self, outbox: Any) -> None:
        """A connection closed: nothing is kept for it."""
        self._expected.pop(outbox, None)
        self._settled.pop(outbox, None)
        self._orphans.pop(outbox, None)

    # -- requests from local users ---------------------------------------------

    def register(self, name: str, outbox: Any, renderer: Renderer, address: str = "",
                 ident: str = "", account: str | None = None) -> User:
        if self._applying:
            return super().register(name, outbox, renderer, address, ident, account)
        done = self._outcome(outbox, "hello", "")
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        name = self.check_name(name, account=account)
        bus = self._bus()
        self._tokens += 1
        token = str(self._tokens)
        self._registrations[token] = _Registration(outbox, renderer, address)
        # The address goes too: room bans and server bans of an address must
        # cover this user on every node alike.
        event = ["hello", name, ident or "pychat", self.cloak(address), token, account or "", address]

        answer = self._claim_refused(outbox, "hello", name)

        def refused(why: str) -> None:
            self._registrations.pop(token, None)
            answer(why)

        pending = self._expect(outbox, "hello", "")
        bus.claim(name_key(name), event, refused)
        raise pending

    def rename(self, user: User, new_name: str, now: float) -> str:
        if self._applying:
            return super().rename(user, new_name, now)
        done = self._outcome(user.outbox, "nick", "")
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        new_name = self.check_name(new_name, current=user)
        if new_name == user.name:
            return super().rename(user, new_name, now)  # the base Hall's refusal
        self._move_claim(user, "nick", new_name, ["nick", user.key, new_name, now])

    def quit(self, user: User, reason: str, now: float) -> None:
        if self._applying:
            super().quit(user, reason, now)
            return
        self.forget_connection(user.outbox)
        if self.users.get(user.key) is not user or not self._local(user):
            return  # gone, or let go already (_send_away)
        self._release(user, reason, now)

    def join(self, user: User, raw_room: str, key: str | None, now: float, *, limited: bool = True,
             leave: Room | None = None) -> Room:
        if self._applying:
            return super().join(user, raw_room, key, now, limited=limited, leave=leave)
        return self._join(user, raw_room, key, now, limited=limited, leave=leave, create=False)

    def create(self, user: User, raw_room: str, key: str | None, now: float, *,
               leave: Room | None = None) -> Room:
        if self._applying:
            return super().create(user, raw_room, key, now, leave=leave)
        return self._join(user, raw_room, key, now, limited=True, leave=leave, create=True)

    def _join(self, user: User, raw_room: str, key: str | None, now: float, *, limited: bool,
              leave: Room | None, create: bool) -> Room:
        room = self.find_room(raw_room)
        wanted = room.key if room is not None else room_key(room_name(raw_room) if len(raw_room) <= MAX_TYPED
                                                            else raw_room)
        done = self._outcome(user.outbox, "join", wanted)
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        if room is None:
            bus = self._bus()  # before any budget is spent
            name, new_hash = self._admit_new_room(user, raw_room, key, now, limited=limited)
            key_hash, checked = new_hash or "", ""
        else:
            if create:
                raise ChatError(f"#{room.name} already exists: /join {room.name}", ROOM_EXISTS)
            if user in room.members:
                raise ChatError(f"you are already in #{room.name}", ALREADY_IN_ROOM)
            bus = self._bus()
            self._may_enter(user, room, key, now)  # the key's slow check is made here, once
            name, key_hash, checked = room.name, "", room.key_hash or ""
        pending = self._expect(user.outbox, "join", room_key(name))
        bus.publish(["join", user.key, user.fence, name, key_hash, checked, int(create),
                     leave.key if leave is not None else "", now])
        raise pending

    def part(self, user: User, room: Room, reason: str, now: float) -> None:
        if self._applying:
            super().part(user, room, reason, now)
            return
        done = self._outcome(user.outbox, "part", room.key)
        if done is not NO_OUTCOME:
            return
        if user not in room.members:
            raise ChatError(f"you are not in #{room.name}", NOT_IN_ROOM)
        bus = self._bus()
        pending = self._expect(user.outbox, "part", room.key)
        bus.publish(["part", user.key, user.fence, room.key, reason, now])
        raise pending

    def say(self, user: User, room: Room, text: str, now: float, kind: int = MESSAGE, tags: str = "",
            id_at_least: int = 0) -> None:
        if self._applying:
            super().say(user, room, text, now, kind, tags, id_at_least)
            return
        if room.gated or user not in room.members:
            self._check_may_speak(user, room, now)
        self._bus().publish(["say", user.key, user.fence, room.key, text, kind, now, tags])

    def direct(self, user: User, target_name: str, text: str, now: float, kind: int = MESSAGE,
               tags: str = "") -> User:
        if self._applying:
            return super().direct(user, target_name, text, now, kind, tags)
        target = self.user_named(target_name)
        self._bus().publish(["dm", user.key, user.fence, target.key, text, kind, now, tags])
        return target

    def broadcast(self, user: User, text: str, now: float) -> None:
        if self._applying:
            super().broadcast(user, text, now)
            return
        self._bus().publish(["bc", user.key, user.fence, text, now])

    # -- what comes back from the stream ---------------------------------------

    def apply(self, node: str, fence: int, data: bytes, batch: bool = False, entry_id: str = "",
              events: list[Any] | None = None) -> None:
        """Carry out the stream's entry ENTRY_ID from NODE: one event in JSON (FENCE:
        the claim's, for claims) or, BATCH, a list of events (encode_batch), one by one.
        EVENTS: the batch as this node published it, when DATA is its own (no decoding)."""
        try:
            value = events if events is not None else decode_batch(data) if batch else decode(data)
        except ValueError:
            log.warning("cluster: an entry that cannot be read was skipped: %r", clip(repr(data), 80))
            return
        first = first_event_id(entry_id)
        if not batch:
            self._number_from(first)
            self._carry_out(node, fence, value)
            return
        # A room message is most of what crosses the stream, and always in a
        # batch: it is carried out here, and only here, straight to the base
        # Hall (it needs no ``_applying``), with no call per message but
        # Hall.say's, which numbers what it stores (ID_AT_LEAST).
        users, rooms, chatted, say = self.users, self.rooms, self._chatted, Hall.say
        for event in value if isinstance(value, list) else ():
            try:
                if event[0] == "say":
                    _, key, user_fence, room_id, text, kind, now, tags = event
                    user = users.get(key)
                    room = rooms.get(room_id)
                    # No user of that claim: it ended (its node was declared lost).
                    if user is not None and room is not None and user.fence == user_fence:
                        try:
                            say(self, user, room, text, now, kind, tags, first)
                        except ChatError as exc:
                            self._tell(user, exc)
                        else:
                            chatted.add(room_id)
                else:
                    self._number_from(first)
                    self._carry_out(node, fence, event)
            except Exception:
                log.exception("cluster: internal error carrying out an event from %s; skipped", node)
            first += IDS_PER_EVENT

    def _number_from(self, first: int) -> None:
        """What the next event stores or sends is numbered from FIRST on (ids only grow)."""
        self.history.number_from(first)
        if self.msgids < first:
            self.msgids = first

    def _carry_out(self, node: str, fence: int, event: Any) -> None:
        try:
            handler = _APPLY.get(event[0])
        except (TypeError, IndexError, KeyError):
            log.warning("cluster: an event that cannot be read was skipped: %r", clip(repr(event), 80))
            return
        if handler is None:
            log.warning("cluster: unknown event %r skipped", event[0])
            return
        self._applying = True
        try:
            handler(self, node, fence, event)
        finally:
            self._applying = False
        while self._to_resume:
            outbox = self._to_resume.pop(0)
            self.resume(outbox)
            # What the retry did not take is stale: no later request may take it for its own.
            self._settled.pop(outbox, None)

    def publish_failed(self, events: list[list[Any]]) -> None:
        """EVENTS may not have reached the stream (the link to Redis failed): their senders are told."""
        senders = {self.users.get(event[1]) for event in events if len(event) > 1 and isinstance(event[1], str)}
        for user in senders:
            if user is not None:
                self._tell(user, ChatError("cluster unavailable: your last request may not have been carried out",
                                           CLUSTER_UNAVAILABLE))
        for outbox, expected in list(self._expected.items()):
            for op, key in list(expected):
                self._settle(outbox, op, key, unavailable())

    def lose_local_users(self, text: str, now: float) -> None:
        """This node's world is no longer the cluster's (Redis lost its data, or
        events this node had not carried out): its users are told TEXT and
        disconnected, their names given up (their quits go through the stream,
        where the claim is still theirs), and its world is emptied (it is
        rebuilt from the other nodes' world, or the stream)."""
        for user in list(self.users.values()):
            if self._local(user):
                self._tell(user, ChatError(text, CLUSTER_UNAVAILABLE))
                user.outbox.disconnect()
                self._release(user, "its server lost touch with the cluster", now)
        for user in list(self.users.values()):
            for room in list(user.rooms):
                self._remove_member(room, user)
            del self.users[user.key]
            self._ranked_users.remove(user)
            self._stop_ignoring(user)
        for room in list(self.rooms.values()):
            self._forget_if_idle(room)
        self._registrations.clear()
        self._expected.clear()
        self._settled.clear()
        for orphan in self._orphans.values():
            self._tell(orphan.user, ChatError(text, CLUSTER_UNAVAILABLE))
            orphan.user.outbox.disconnect()
        self._orphans.clear()

    # -- users cut off from the cluster while this node lived -----------------------

    def reclaim_orphans(self) -> None:
        """This node is back in the cluster: each of its users that the cluster let
        go meanwhile claims a name again (see _Orphan)."""
        for orphan in list(self._orphans.values()):
            if not orphan.claiming:
                self._reclaim(orphan, orphan.user.name)

    def _reclaim(self, orphan: _Orphan, name: str) -> None:
        bus = self.bus
        if bus is None or not bus.available:
            return  # at the next reclaim_orphans()
        user = orphan.user
        orphan.tries += 1
        if orphan.tries > RECLAIM_TRIES:
            del self._orphans[user.outbox]
            self._tell(user, ChatError("no name could be taken back for you; please reconnect", NAME_TAKEN))
            user.outbox.disconnect()
            return
        orphan.claiming = True
        self._tokens += 1
        token = str(self._tokens)
        self._registrations[token] = _Registration(user.outbox, user.renderer, user.address, orphan)

        def refused(why: str) -> None:
            self._registrations.pop(token, None)
            orphan.claiming = False
            if why == "taken" and self._orphans.get(user.outbox) is orphan:
                self._reclaim(orphan, self.guest_name())
            # unavailable: tried again when the node is back (reclaim_orphans)
        # Its own name back keeps its login; a guest name is logged out.
        account = user.account if user.account == name_key(name) else ""
        bus.claim(name_key(name), ["hello", name, user.ident, user.host, token, account or "", user.address],
                  refused)

    def _orphaned(self, user: User, now: float) -> None:
        """The cluster let USER (local) go: keep its connection, take a name back (see _Orphan)."""
        rooms = [(room.name, room.key_hash or "") for room in user.rooms]
        Hall.quit(self, user, "node lost", now)
        self.forget_connection(user.outbox)
        self._tell(user, ChatError("this server was cut off from the cluster for a while; "
                                   "taking your name back", CLUSTER_UNAVAILABLE))
        orphan = self._orphans[user.outbox] = _Orphan(user, rooms, now)
        self._reclaim(orphan, user.name)

    def _adopted(self, orphan: _Orphan, name: str, node: str, fence: int, account: str | None) -> None:
        """ORPHAN's claim of NAME came back: the same user (and session) goes on
        under NAME (logged in to ACCOUNT), told so if its name changed, and joins its rooms again."""
        user = orphan.user
        del self._orphans[user.outbox]
        old, old_prefix = user.name, user.prefix
        user.take_name(name)
        user.node, user.fence = node, fence
        user.account, user.oper = None, False
        self._add_user(user, account)
        if name != old:
            self._tell(user, ChatError(f"your name {old} was taken while this server was cut off from the "
                                       f"cluster; you are now {name}", NAME_TAKEN))
            if not user.renderer.per_room:  # IRC: a client learns its new nick from a NICK line
                user.send(user.renderer.renamed(Renamed(orphan.since, old, name, old_prefix), ""))
        else:
            user.send(user.renderer.notice(f"you are back in the cluster as {name}"))
        bus = self.bus
        if bus is not None:
            for name_of_room, key_hash in orphan.rooms:
                bus.publish(["join", user.key, fence, name_of_room, key_hash, key_hash, 0, "", orphan.since])

    # -- a node that joins a running cluster --------------------------------------

    def snapshot(self) -> bytes:
        """The world as of the event being carried out: users (with their rooms
        and roles) and rooms, for a node that joins (see load_snapshot)."""
        rooms = [[room.name, room.key_hash or "", room.created, "".join(sorted(room.modes)), room.limit,
                  list(room.topic) if room.topic is not None else None,
                  [[kind, mask, *ban] for kind, table in (("b", room.bans), ("m", room.mutes))
                   for mask, ban in table.items()],
                  room.invited, room.owner, sorted(room.op_accounts), sorted(room.voice_accounts),
                  room.id, self.history.last_message(room.id)]
                 for room in self.rooms.values()]
        users = [[user.name, user.node, user.fence, user.ident, user.host, user.realname,
                  [[room.key, user in room.ops, user in room.voiced] for room in user.rooms], user.account or "",
                  user.address, user.oper]
                 for user in self.users.values()]
        accounts = [list(account) for account in self.accounts.values()]
        ignores = [[account, sorted(names)] for account, names in self.account_ignores.items()]
        klines = [[mask, *kline] for mask, kline in self.klines.items()]
        return encode({"rooms": rooms, "users": users, "accounts": accounts, "ignores": ignores,
                       "klines": klines, "chatted": sorted(self._chatted),
                       "ids": [self.history.next_event_id, self.msgids], "file": self.history.file_id})

    def load_snapshot(self, data: bytes) -> None:
        """Take the world of another node's snapshot (this node's own world is empty of users)."""
        world = decode(data)
        next_event_id, msgids = world["ids"]  # numbered on from here as the other node does
        self.history.number_from(next_event_id)
        self.history.keep_from_here()
        self.msgids = max(self.msgids, msgids)
        self._load_accounts_of(world)
        self._chatted = set(world["chatted"])
        kept = {room_key(entry[0]) for entry in world["rooms"]}
        for stale in [room for room in self.rooms.values() if room.key not in kept and not room.members]:
            self._drop_stale_room(stale)
        # A node that shares this node's file gave the rooms the ids of the
        # file's rows, and knows their last messages, which the file may not
        # have yet (see HistoryStore): this node takes both.
        same_file = world.get("file") == self.history.file_id
        for (name, key_hash, created, modes, limit, topic, bans, invited,
             owner, op_accounts, voice_accounts, *where) in world["rooms"]:
            room_id, last = (where + [0, None])[:2]
            key = room_key(name)
            room = self.rooms.get(key)
            if room is None:
                if same_file and key not in self._dormant and self.history.room_id_for(key, room_id):
                    self.history.add_room_as(room_id, key, name, key_hash or None, created, last)
                else:
                    room_id = self._new_room_id(name, key_hash or None, created)
                room = Room(name, room_id, key_hash or None, created)
                self._add_room(room)
            elif same_file and room.id == room_id:
                self.history.move_last(room.id, last)
            if (key_hash or None) != room.key_hash:
                room.key_hash, room.good_key = key_hash or None, None
                self.history.set_room_key(room.id, room.key_hash)
            room.modes = set(modes)
            room.limit = limit
            room.topic = Topic(*topic) if topic is not None else None
            old = [("b", mask) for mask in room.bans] + [("m", mask) for mask in room.mutes]
            room.bans, room.mutes = {}, {}
            for kind, mask, shown, by, at, expires in bans:
                (room.bans if kind == "b" else room.mutes)[mask] = Ban(shown, by, at, expires)
                self.history.save_ban(room.id, kind, mask, shown, by, at, expires)
            for kind, mask in old:  # lifted while this node was away
                if mask not in (room.bans if kind == "b" else room.mutes):
                    self.history.delete_ban(room.id, kind, mask)
            room.invited = dict(invited)
            room.owner = owner
            for letter, kept, given in (("o", room.op_accounts, op_accounts), ("v", room.voice_accounts, voice_accounts)):
                for account in kept - set(given):
                    self.history.save_role(room.id, account, None)
                for account in set(given) - kept:
                    self.history.save_role(room.id, account, letter)
                kept.clear()
                kept.update(given)
            self._save_settings(room)
            self._regate(room)
            if "s" in room.modes:
                self.secret_rooms.add(room)
            else:
                self.secret_rooms.discard(room)
        for name, node, fence, ident, host, realname, seats, account, address, oper in world["users"]:
            if name_key(name) in self.users:
                continue
            user = User(name, REMOTE_OUTBOX, REMOTE, address, ident, host)
            user.node, user.fence, user.realname = node, fence, realname
            self._add_user(user, account if account in self.accounts else None)
            user.oper = oper  # as the world has it (IRC's OPER and MODE -o change it)
            for key, op, voiced in seats:
                room = self.rooms.get(key)
                if room is None:
                    continue
                self._seat(user, room)
                if op:
                    room.ops.add(user)
                if voiced:
                    room.voiced.add(user)

    def _drop_stale_room(self, room: Room) -> None:
        """ROOM, from this node's file, is not in the world: without messages it
        is forgotten, with messages it stays in the file, dormant, until the world
        makes a room of that name again (_new_room_id)."""
        if room.key == self.default_room:
            return
        if not self.history.has_chat(room.id):
            self.history.forget_room(room.id)
        else:
            self._dormant[room.key] = room.id
        del self.rooms[room.key]
        self._ranked_rooms.remove(room)
        self.secret_rooms.discard(room)
        if self._lookalikes.get(name_key(room.name)) is room:
            del self._lookalikes[name_key(room.name)]

    def _load_accounts_of(self, world: dict[str, Any]) -> None:
        """Take the accounts and their ignore lists of a snapshot, in memory and in this node's file."""
        accounts = {key: Account(key, name, hashed, created) for key, name, hashed, created in world["accounts"]}
        for key in self.accounts.keys() - accounts.keys():
            self.history.delete_account(key)
        for account in accounts.values():
            if self.accounts.get(account.key) != account:
                self.history.save_account(account.key, account.name, account.password_hash, account.created)
        self.accounts.clear()
        self.accounts.update(accounts)
        ignores = {account: set(names) for account, names in world["ignores"]}
        for key in self.account_ignores.keys() | ignores.keys():
            kept, given = self.account_ignores.get(key, set()), ignores.get(key, set())
            for name in kept - given:
                self.history.save_ignore(key, name, False)
            for name in given - kept:
                self.history.save_ignore(key, name, True)
        self.account_ignores.clear()
        self.account_ignores.update(ignores)
        klines = {mask: Kline(by, at, expires, reason) for mask, by, at, expires, reason in world["klines"]}
        for mask in self.klines.keys() - klines.keys():
            self.history.delete_kline(mask)
        for mask, kline in klines.items():
            self.history.save_kline(mask, kline.by, kline.at, kline.expires, kline.reason)
        self.klines.clear()
        self.klines.update(klines)

    def _apply_snapreq(self, node: str, fence: int, event: list[Any]) -> None:
        if node != self.node:
            self.on_snapshot_request(event[1], self.snapshot)

    def _apply_hello(self, node: str, fence: int, event: list[Any]) -> None:
        _, name, ident, host, token, *more = event
        account, address = (more + ["", ""])[:2]  # (a node of an older version sends neither)
        key = name_key(name)
        logged_in = account if account in self.accounts else None  # (unless it was deleted on the way)
        if key in self.users:
            log.warning("cluster: %s claimed %r, which %s holds here; skipped", node, name, self.users[key].node)
            return
        registration = self._registrations.pop(token, None) if node == self.node else None
        orphan = registration.orphan if registration is not None else None
        if registration is not None and orphan is not None and self._orphans.get(registration.outbox) is orphan:
            self._adopted(orphan, name, node, fence, logged_in)
            return
        gone = orphan is not None or (registration is not None and getattr(registration.outbox, "closed", False))
        if registration is not None and not gone:
            user = User(name, registration.outbox, registration.renderer, registration.address, ident, host)
        else:
            user = User(name, REMOTE_OUTBOX, REMOTE, address, ident, host)
        user.node, user.fence = node, fence
        self._add_user(user, logged_in)
        if registration is not None:
            if gone:  # its connection closed on the way: it leaves at once
                if self.bus is not None:
                    self.bus.release(key, fence, ["quit", key, fence, "", 0.0])
            else:
                self._settle(registration.outbox, "hello", "", user)

    def _apply_quit(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, user_fence, reason, now = event
        user = self._sender(key, user_fence)
        if user is None:
            return
        if self._local(user):  # its node was declared lost while it was still here
            self._orphaned(user, now)
            return
        super().quit(user, reason, now)

    def _apply_nick(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, new_name, now = event
        user = self.users.get(key)
        if user is None or user.node != node:
            return
        try:
            old = self._rename_claimed(user, new_name, now)
        except ChatError as exc:
            self._settle(user.outbox, "nick", "", exc)
            return
        user.fence = fence
        self._settle(user.outbox, "nick", "", old)
        self._release_if_gone(user, now)

    def _apply_join(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, user_fence, name, key_hash, checked, create, leave_key, now = event
        user = self._sender(key, user_fence)
        if user is None:
            return
        wanted = room_key(name)
        room = self.rooms.get(wanted)
        try:
            created = room is None
            if room is None:
                room = self._make_room(user, name, key_hash or None, now)
            elif create:
                raise ChatError(f"#{room.name} already exists: /join {room.name}", ROOM_EXISTS)
            elif user in room.members:
                raise ChatError(f"you are already in #{room.name}", ALREADY_IN_ROOM)
            else:
                if room.locked and checked != room.key_hash:
                    raise ChatError(f"#{room.name} is locked: /join {room.name} KEY", NEEDS_KEY)
                self._may_enter(user, room, None, now, key_checked=True)
            leave = self.rooms.get(leave_key) if leave_key else None
            if leave is not None and user in leave.members:
                super().part(user, leave, "", now)
            self._enter(user, room, now, creator=created)
        except ChatError as exc:
            self._settle(user.outbox, "join", wanted, exc)
            return
        self._settle(user.outbox, "join", wanted, room)

    def _apply_part(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, user_fence, room_id, reason, now = event
        user = self._sender(key, user_fence)
        room = self.rooms.get(room_id)
        if user is None or room is None:
            return
        try:
            super().part(user, room, reason, now)
        except ChatError as exc:
            self._settle(user.outbox, "part", room_id, exc)
            return
        self._settle(user.outbox, "part", room_id, None)

    def _apply_dm(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, user_fence, target_key, text, kind, now, tags = event
        user = self._sender(key, user_fence)
        if user is None:
            return
        target = self.users.get(target_key)
        if target is None:
            self._tell(user, ChatError("that user has left", NO_SUCH_USER))
            return
        if not (self._local(user) or self._local(target)):
            return  # nothing to do here, not even a message id
        super().direct(user, target.name, text, now, kind, tags)

    def _apply_bc(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, user_fence, text, now = event
        user = self._sender(key, user_fence)
        if user is not None:
            super().broadcast(user, text, now)

    def _has_chat(self, room: Room) -> bool:
        if not self._file_loaded:
            return super()._has_chat(room)
        return room.key in self._chatted

    def _forget_if_idle(self, room: Room) -> None:
        if (self._file_loaded and room.key not in self._chatted and self.history.has_chat(room.id)
                and not room.members and room.key != self.default_room and self.rooms.get(room.key) is room
                and not self._has_settings(room)):
            self._drop_stale_room(room)  # the world forgets it; this node's file keeps its messages
            return
        super()._forget_if_idle(room)

    def _new_room_id(self, name: str, key_hash: str | None, now: float) -> int:
        dormant = self._dormant.pop(room_key(name), None)
        if dormant is None:
            return super()._new_room_id(name, key_hash, now)
        self.history.reset_room(dormant, name, key_hash, now)  # the key is UNIQUE in the file: its row is taken again
        return dormant

    def check_invariants(self) -> None:
        super().check_invariants()
        for user in self.users.values():
            assert user.node, user
            assert (user.outbox is REMOTE_OUTBOX) == (user.renderer is REMOTE) or user.node == self.node, user


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # made once: json.dumps makes one per call
_DECODE = json.JSONDecoder().decode


def encode(value: Any) -> bytes:
    """An event (or a snapshot) as it crosses Redis: compact JSON, UTF-8."""
    return _ENCODER.encode(value).encode()


def decode(data: bytes) -> Any:
    """What encode() made (ValueError if it is not that)."""
    return _DECODE(data.decode())


def encode_batch(events: list[list[Any]]) -> bytes:
    """A loop pass's events as one entry of the stream. Every message crosses
    the stream so, and is read by every node: marshal writes and reads a
    list of short lists ten times faster than JSON."""
    return marshal.dumps(events)


def decode_batch(data: bytes) -> list[Any]:
    """What encode_batch() made (ValueError if it is not that)."""
    try:
        value = marshal.loads(data)
    except (EOFError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(value, list):
        raise ValueError("not a list of events")
    return value


_APPLY: dict[str, Callable[[ReplicatedHall, str, int, list[Any]], None]] = {
    "hello": ReplicatedHall._apply_hello,
    "quit": ReplicatedHall._apply_quit,
    "nick": ReplicatedHall._apply_nick,
    "join": ReplicatedHall._apply_join,
    "part": ReplicatedHall._apply_part,
    "dm": ReplicatedHall._apply_dm,
    "bc": ReplicatedHall._apply_bc,
    "snapreq": ReplicatedHall._apply_snapreq,
    "room": ReplicatedHall._apply_room,
    "toops": ReplicatedHall._apply_toops,
    "acct": ReplicatedHall._apply_acct,
    "login": ReplicatedHall._apply_login,
    "oper": ReplicatedHall._apply_oper,
    "tag": ReplicatedHall._apply_tag,
    "logout": ReplicatedHall._apply_logout,
}
