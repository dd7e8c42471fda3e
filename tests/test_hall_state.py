"""A stateful Hypothesis test of the Hall against a simple reference model.

Random register/join/create/part/nick/say/dm/bc/quit steps, by users of
three renderers: the line protocol's (quits and renames told per room, no
echo) and two of another kind, as IRC's (told once per recipient), with and
without echo of one's own messages. Users may be in several rooms. After
each step the Hall's invariants must hold, its state must match the model,
and every event must have reached exactly the users the contract names,
exactly as many times as it says.
"""

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pychat.core import roomkeys
from pychat.core.events import ACTION, MESSAGE, Broadcast, Direct, Joined, Parted, Quit, Renamed, Said, SaidFields
from pychat.core.history import HistoryStore
from pychat.core.limits import HallLimits, Rate
from pychat.core.errors import ChatError
from pychat.core.model import Hall, ListOutbox
from pychat.core.text import fold, name_key
from pychat.protocols.line.render import LINE

# "\u0412\u041e\u0412" is Cyrillic BOB, a look-alike of bob; "b\u043eb" mixes in a Cyrillic o (invalid).
LOOKALIKE_BOB, MIXED = "\u0412\u041e\u0412", "b\u043eb"
INVALID = ("bad name", "", MIXED)
NAMES = st.sampled_from(["ann", "Ann", "bob", LOOKALIKE_BOB, "cy", "dee", "Eve", *INVALID])
ROOMS = st.sampled_from(["r1", "R1", "#r2", "r3", "bad.room"])
KEYS = st.sampled_from([None, None, "k1", "k2"])


class Once:
    """A renderer like IRC's: quits and renames told once per recipient."""

    per_room = False
    delivers = True

    def __init__(self, echo: bool) -> None:
        self.echo = echo

    def said(self, e: SaidFields) -> bytes:
        event = Said(*e)
        return f"O said {event.room} {event.sender} {event.text}\n".encode()

    def joined(self, e: Joined) -> bytes:
        return f"O {e.room} {e.who} has joined\n".encode()

    def parted(self, e: Parted) -> bytes:
        return f"O {e.room} {e.who} has left\n".encode()

    def quit(self, e: Quit, room: str) -> bytes:
        assert room == ""
        return f"O {e.who} has quit ({e.reason})\n".encode()

    def renamed(self, e: Renamed, room: str) -> bytes:
        assert room == ""
        return f"O {e.old} is now known as {e.new}\n".encode()

    def direct(self, e: Direct) -> bytes:
        return f"O dm {e.sender} {e.text}\n".encode()

    def direct_echo(self, e: Direct) -> bytes | None:
        return f"O dm-echo {e.sender} {e.text}\n".encode() if self.echo else None

    def broadcast(self, e: Broadcast) -> bytes:
        return f"O all {e.sender} {e.text}\n".encode()

    def to_operators(self, e) -> bytes:
        return f"O {e.status}{e.room} {e.sender} {e.text}\n".encode()

    def invited(self, e) -> bytes:
        return f"O invite {e.sender} {e.room}\n".encode()

    def error(self, text: str) -> bytes:
        return f"O error {text}\n".encode()


RENDERERS = {"line": LINE, "once": Once(echo=False), "echo": Once(echo=True)}


class HallMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # Budgets out of reach: they have tests of their own (test_trust.py).
        unlimited = Rate(1e9, 1e9)
        self.hall = Hall(HistoryStore(":memory:"), history_lines=5,
                         limits=HallLimits(rooms_per_user=unlimited, rooms_per_address=unlimited,
                                           checks_per_address=unlimited, checks_server=unlimited,
                                           checks_suspect=unlimited))
        self.inboxes: dict[str, list[bytes]] = {}   # name key -> received bytes
        self.kinds: dict[str, str] = {}             # name key -> renderer name
        self.rooms_of: dict[str, set[str]] = {}     # model: user's name key -> folded rooms
        self.room_keys: dict[str, str | None] = {}  # model: folded room -> key
        self.chatty: set[str] = set()               # model: rooms with messages (never forgotten)
        self.counter = itertools.count()
        self.clock = itertools.count(1)  # each step is a pass of the loop, with a clock of its own

    # -- helpers --------------------------------------------------------------

    def _now(self) -> float:
        return float(next(self.clock))

    def _pick(self, data):
        return data.draw(st.sampled_from(sorted(self.rooms_of)), label="user")

    def _user(self, key):
        return self.hall.users[key]

    def _clear(self):
        for box in self.inboxes.values():
            box.clear()

    def _count(self, marker: str) -> dict[str, int]:
        """How many received lines hold MARKER, for each user that got any."""
        token = marker.encode()
        counts = {}
        for key, box in self.inboxes.items():
            n = sum(line.count(token) for line in b"".join(box).split(b"\n"))
            if n:
                counts[key] = n
        return counts

    def _members(self, room):
        return {u for u, rooms in self.rooms_of.items() if room in rooms}

    def _marker(self):
        return f"m{next(self.counter)}x"

    def _vacated(self, room):
        """An empty room with no messages is forgotten: its name is free again."""
        if room is not None and not self._members(room) and room not in self.chatty:
            del self.room_keys[room]

    def _told_across(self, subject, rooms, marker):
        """Who should get a quit or rename notice, and how often: per shared room
        for the line protocol, once for the other kind."""
        expected = {}
        for other, kind in self.kinds.items():
            if other == subject:
                continue
            shared = sum(1 for room in rooms if other in self._members(room))
            if shared:
                expected[other] = shared if kind == "line" else 1
        return expected

    # -- rules ----------------------------------------------------------------

    @initialize()
    def two_users(self):
        self.register("ann", "line")
        self.register("bob", "echo")

    @rule(name=NAMES, kind=st.sampled_from(sorted(RENDERERS)))
    def register(self, name, kind):
        valid = name not in INVALID and name_key(name) not in self.rooms_of
        outbox = ListOutbox()
        try:
            user = self.hall.register(name, outbox, RENDERERS[kind])
        except ChatError:
            assert not valid
            return
        assert valid
        self.rooms_of[user.key] = set()
        self.inboxes[user.key] = outbox.out
        self.kinds[user.key] = kind

    @precondition(lambda self: self.rooms_of)
    @rule(data=st.data(), room=ROOMS, key=KEYS, create=st.booleans(), switch=st.booleans())
    def join_or_create(self, data, room, key, create, switch):
        """Join (or create) a room; SWITCH leaves one room first, as the line protocol does."""
        me = self._pick(data)
        user = self._user(me)
        rkey = fold(room.lstrip("#"))
        before = set(self.rooms_of[me])
        leave = next(iter(user.rooms), None) if switch else None
        if rkey == "bad.room":
            ok = False
        elif rkey in self.room_keys:
            ok = (not create and rkey not in before
                  and (self.room_keys[rkey] is None or self.room_keys[rkey] == key))
        else:
            ok = True
        self._clear()
        try:
            (self.hall.create if create else self.hall.join)(user, room, key, self._now(), leave=leave)
        except ChatError:
            assert not ok
            assert self.rooms_of[me] == before
            assert not self._count("has joined") and not self._count("has left")
            return
        assert ok
        left = leave.key if leave is not None else None
        if left is not None:
            self.rooms_of[me].discard(left)
            assert self._count(f"{user.name} has left") == {m: 1 for m in self._members(left)}
        if rkey not in self.room_keys:
            self.room_keys[rkey] = key
        self.rooms_of[me].add(rkey)
        assert self._count(f"{user.name} has joined") == {m: 1 for m in self._members(rkey) - {me}}
        self._vacated(left)

    @precondition(lambda self: any(self.rooms_of.values()))
    @rule(data=st.data())
    def part(self, data):
        me = data.draw(st.sampled_from(sorted(u for u, rooms in self.rooms_of.items() if rooms)), label="user")
        user = self._user(me)
        room = data.draw(st.sampled_from(sorted(user.rooms, key=lambda r: r.key)), label="room")
        self._clear()
        self.hall.part(user, room, "", self._now())
        self.rooms_of[me].discard(room.key)
        assert self._count(f"{user.name} has left") == {m: 1 for m in self._members(room.key)}
        self._vacated(room.key)

    @precondition(lambda self: self.rooms_of)
    @rule(data=st.data(), new=NAMES)
    def nick(self, data, new):
        me = self._pick(data)
        user = self._user(me)
        old_name = user.name
        new_key = name_key(new)
        ok = (new not in INVALID and (new_key not in self.rooms_of or new_key == me)
              and new != old_name)
        self._clear()
        try:
            self.hall.rename(user, new, self._now())
        except ChatError:
            assert not ok
            return
        assert ok
        rooms = self.rooms_of.pop(me)
        self.rooms_of[new_key] = rooms
        self.inboxes[new_key] = self.inboxes.pop(me)
        self.kinds[new_key] = self.kinds.pop(me)
        assert self._count(f"{old_name} is now known as {user.name}") == self._told_across(new_key, rooms, "")

    @precondition(lambda self: self.rooms_of)
    @rule(data=st.data(), action=st.booleans())
    def say(self, data, action):
        me = self._pick(data)
        user = self._user(me)
        marker = self._marker()
        room = next(iter(user.rooms), None)
        if room is None:
            room = next(iter(self.hall.rooms.values()), None)
            if room is None:
                return
        self._clear()
        try:
            self.hall.say(user, room, marker, self._now(), ACTION if action else MESSAGE)
        except ChatError:
            assert room.key not in self.rooms_of[me]
            assert not self._count(marker)
            return
        recipients = self._members(room.key) - {me}
        if self.kinds[me] == "echo":
            recipients.add(me)
        assert self._count(marker) == {m: 1 for m in recipients}
        self.chatty.add(room.key)

    @precondition(lambda self: self.rooms_of)
    @rule(data=st.data(), to=NAMES)
    def dm(self, data, to):
        me = self._pick(data)
        marker = self._marker()
        self._clear()
        try:
            self.hall.direct(self._user(me), to, marker, self._now())
        except ChatError:
            assert name_key(to) not in self.rooms_of
            return
        target = name_key(to)
        expected = {target: 1}
        if self.kinds[me] in ("line", "echo"):  # the sender's confirmation
            expected[me] = expected.get(me, 0) + 1
        assert self._count(marker) == expected

    @precondition(lambda self: self.rooms_of)
    @rule(data=st.data())
    def bc(self, data):
        me = self._pick(data)
        marker = self._marker()
        self._clear()
        self.hall.broadcast(self._user(me), marker, self._now())
        assert self._count(marker) == {u: 1 for u in self.rooms_of}

    @precondition(lambda self: self.rooms_of)
    @rule(data=st.data())
    def quit(self, data):
        me = self._pick(data)
        user = self._user(me)
        rooms = set(self.rooms_of[me])
        expected = self._told_across(me, rooms, "")
        self._clear()
        self.hall.quit(user, "bye", self._now())
        del self.rooms_of[me]
        del self.inboxes[me]
        del self.kinds[me]
        assert self._count(f"{user.name} has quit (bye)") == expected
        for room in rooms:
            self._vacated(room)

    # -- invariants -----------------------------------------------------------

    @invariant()
    def hall_matches_model(self):
        self.hall.check_invariants()
        assert set(self.hall.users) == set(self.rooms_of)
        for key, rooms in self.rooms_of.items():
            assert {room.key for room in self.hall.users[key].rooms} == rooms
        assert set(self.hall.rooms) == set(self.room_keys)
        for rkey, room in self.hall.rooms.items():
            assert {m.key for m in room.members} == self._members(rkey)
            assert room.locked == (self.room_keys[rkey] is not None)


@pytest.fixture(autouse=True)
def cheap_key_hashing(monkeypatch):
    # Key hashing is deliberately slow; the state machine needs many rooms.
    monkeypatch.setattr(roomkeys, "ITERATIONS", 10)


HallMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHall = HallMachine.TestCase


def test_quits_and_renames_are_told_per_room_to_line_users_and_once_to_others():
    """A subject sharing two rooms with each of them: the line user hears of it
    in both rooms (its lines name the room), the other kind once."""
    hall = Hall(HistoryStore(":memory:"))
    boxes = {name: ListOutbox() for name in ("subj", "liner", "oncer")}
    users = {name: hall.register(name, box, LINE if name != "oncer" else RENDERERS["once"])
             for name, box in boxes.items()}
    for room in ("r1", "r2"):
        for user in users.values():
            hall.join(user, room, None, 0.0)
    for box in boxes.values():
        box.out.clear()
    hall.rename(users["subj"], "subj2", 1.0)
    renamed = [b"".join(boxes[n].out).count(b"subj is now known as subj2") for n in ("liner", "oncer", "subj")]
    assert renamed == [2, 1, 0]
    liner_lines = b"".join(boxes["liner"].out).decode()
    assert "#r1 -- subj is now known as subj2" in liner_lines and "#r2 -- subj is now known as subj2" in liner_lines
    hall.quit(users["subj"], "bye", 2.0)
    quits = [b"".join(boxes[n].out).count(b"subj2 has quit (bye)") for n in ("liner", "oncer")]
    assert quits == [2, 1]
    hall.check_invariants()
