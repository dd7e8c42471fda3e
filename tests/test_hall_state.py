"""A stateful Hypothesis test of the Hall against a simple reference model.

Random register/join/create/leave/nick/say/me/dm/bc/quit steps; after each
step the Hall's invariants must hold, its state must match the model, and
every delivery must have reached exactly the users the contract names.
"""

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pychat.core import roomkeys
from pychat.core.history import HistoryStore
from pychat.core.limits import HallLimits, Rate
from pychat.core.model import ChatError, Hall, ListOutbox
from pychat.core.text import fold, name_key

# "\u0412\u041e\u0412" is Cyrillic BOB, a look-alike of bob; "b\u043eb" mixes in a Cyrillic o (invalid).
LOOKALIKE_BOB, MIXED = "\u0412\u041e\u0412", "b\u043eb"
INVALID = ("bad name", "", MIXED)
NAMES = st.sampled_from(["ann", "Ann", "bob", LOOKALIKE_BOB, "cy", "dee", "Eve", *INVALID])
ROOMS = st.sampled_from(["r1", "R1", "#r2", "r3", "bad.room"])
KEYS = st.sampled_from([None, None, "k1", "k2"])


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
        self.where: dict[str, str | None] = {}      # model: user's name key -> folded room
        self.room_keys: dict[str, str | None] = {}  # model: folded room -> key
        self.chatty: set[str] = set()               # model: rooms with messages (never forgotten)
        self.counter = itertools.count()

    # -- helpers --------------------------------------------------------------

    def _pick(self, data):
        return data.draw(st.sampled_from(sorted(self.where)), label="user")

    def _user(self, key):
        return self.hall.users[key]

    def _clear(self):
        for box in self.inboxes.values():
            box.clear()

    def _got(self, marker: str) -> set[str]:
        token = marker.encode()
        return {k for k, box in self.inboxes.items() if any(token in b for b in box)}

    def _members(self, room):
        return {u for u, r in self.where.items() if r == room}

    def _marker(self):
        return f"m{next(self.counter)}x"

    def _vacated(self, room):
        """An empty room with no messages is forgotten: its name is free again."""
        if room is not None and not self._members(room) and room not in self.chatty:
            del self.room_keys[room]

    # -- rules ----------------------------------------------------------------

    @initialize()
    def two_users(self):
        self.register("ann")
        self.register("bob")

    @rule(name=NAMES)
    def register(self, name):
        valid = name not in INVALID and name_key(name) not in self.where
        outbox = ListOutbox()
        box = outbox.out
        try:
            user = self.hall.register(name, outbox)
        except ChatError:
            assert not valid
            return
        assert valid
        self.where[user.key] = None
        self.inboxes[user.key] = box

    @precondition(lambda self: self.where)
    @rule(data=st.data(), room=ROOMS, key=KEYS, create=st.booleans())
    def join_or_create(self, data, room, key, create):
        me = self._pick(data)
        rkey = fold(room.lstrip("#"))
        old = self.where[me]
        if rkey == "bad.room":
            ok = False
        elif rkey in self.room_keys:
            ok = (not create and rkey != old
                  and (self.room_keys[rkey] is None or self.room_keys[rkey] == key))
        else:
            ok = True
        self._clear()
        try:
            (self.hall.create if create else self.hall.join)(self._user(me), room, key, 0.0)
        except ChatError:
            assert not ok
            assert self.where[me] == old
            assert not (self._got("has joined") | self._got("has left"))
            return
        assert ok
        if rkey not in self.room_keys:
            self.room_keys[rkey] = key
        self.where[me] = rkey
        assert self._got("has joined") == self._members(rkey) - {me}
        if old is not None:
            assert self._got("has left") == self._members(old)
        self._vacated(old)

    @precondition(lambda self: self.where)
    @rule(data=st.data())
    def leave(self, data):
        me = self._pick(data)
        old = self.where[me]
        self._clear()
        try:
            self.hall.leave(self._user(me), 0.0)
        except ChatError:
            assert old is None
            return
        assert old is not None
        self.where[me] = None
        assert self._got("has left") == self._members(old)
        self._vacated(old)

    @precondition(lambda self: self.where)
    @rule(data=st.data(), new=NAMES)
    def nick(self, data, new):
        me = self._pick(data)
        user = self._user(me)
        old_name = user.name
        new_key = name_key(new)
        ok = (new not in INVALID and (new_key not in self.where or new_key == me)
              and new != old_name)
        self._clear()
        try:
            self.hall.rename(user, new, 0.0)
        except ChatError:
            assert not ok
            return
        assert ok
        room = self.where.pop(me)
        self.where[new_key] = room
        self.inboxes[new_key] = self.inboxes.pop(me)
        if room is not None:
            assert self._got("is now known as") == self._members(room) - {new_key}

    @precondition(lambda self: self.where)
    @rule(data=st.data(), action=st.booleans())
    def say(self, data, action):
        me = self._pick(data)
        marker = self._marker()
        self._clear()
        try:
            (self.hall.act if action else self.hall.say)(self._user(me), marker, 0.0)
        except ChatError:
            assert self.where[me] is None
            return
        assert self._got(marker) == self._members(self.where[me]) - {me}
        self.chatty.add(self.where[me])

    @precondition(lambda self: self.where)
    @rule(data=st.data(), to=NAMES)
    def dm(self, data, to):
        me = self._pick(data)
        marker = self._marker()
        self._clear()
        try:
            self.hall.direct(self._user(me), to, marker, 0.0)
        except ChatError:
            assert name_key(to) not in self.where
            return
        assert self._got(marker) == {me, name_key(to)}

    @precondition(lambda self: self.where)
    @rule(data=st.data())
    def bc(self, data):
        me = self._pick(data)
        marker = self._marker()
        self._clear()
        self.hall.broadcast(self._user(me), marker, 0.0)
        assert self._got(marker) == set(self.where)

    @precondition(lambda self: self.where)
    @rule(data=st.data())
    def quit(self, data):
        me = self._pick(data)
        room = self.where.pop(me)
        self._clear()
        self.hall.quit(self._user(me), "bye", 0.0)
        del self.inboxes[me]
        if room is not None:
            assert self._got("has quit (bye)") == self._members(room)
        self._vacated(room)

    # -- invariants -----------------------------------------------------------

    @invariant()
    def hall_matches_model(self):
        self.hall.check_invariants()
        assert set(self.hall.users) == set(self.where)
        for key, room in self.where.items():
            user = self.hall.users[key]
            assert (user.room.key if user.room else None) == room
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
