"""Line and IRC sessions on one Hall, driven by Hypothesis.

Random steps: users of both protocols join and leave rooms, talk, act,
send direct messages, rename and quit, each through its own session with
the lines its protocol uses. After each step every user's output must hold
each event exactly once (per shared room for the line protocol's quits and
renames, which name their room), written in that user's protocol; and
nothing else may mention the event's marker.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pychat.core.history import HistoryStore
from pychat.core.limits import HallLimits, Rate
from pychat.core.model import Hall, ListOutbox
from pychat.protocols.irc.message import parse
from pychat.protocols.irc.session import IrcSession
from pychat.protocols.line.session import Session as LineSession

ROOMS = ["r1", "r2", "r3"]
LINE_EVENT = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (\S+) (.*)$")


class Person:
    """One user: its session, what it has received, and the model's view of it."""

    def __init__(self, name: str, protocol: str, session, outbox: ListOutbox, echo: bool) -> None:
        self.name = name
        self.protocol = protocol
        self.session = session
        self.outbox = outbox
        self.echo = echo
        self.rooms: set[str] = set()

    def lines(self) -> list[str]:
        return b"".join(self.outbox.out).decode().split("\r\n")[:-1]


class Mixed(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        unlimited = Rate(1e9, 1e9)
        self.hall = Hall(HistoryStore(":memory:"), history_lines=3,
                         limits=HallLimits(rooms_per_user=unlimited, rooms_per_address=unlimited,
                                           checks_per_address=unlimited, checks_server=unlimited,
                                           checks_suspect=unlimited), default_room="")
        self.people: dict[str, Person] = {}
        self.names = itertools.count()
        self.markers = itertools.count()

    # -- driving ------------------------------------------------------------------

    def _type(self, person: Person, *lines: str) -> None:
        for line in lines:
            if person.protocol == "line":
                person.session.handle_line(line, 1.0)
            else:
                person.session.handle_line(line.encode(), 1.0)

    def _clear(self) -> None:
        for person in self.people.values():
            person.outbox.out.clear()

    def _members(self, room: str) -> set[str]:
        return {name for name, p in self.people.items() if room in p.rooms}

    def _marker(self) -> str:
        return f"m{next(self.markers)}x"

    def _pick(self, data, protocol: str | None = None) -> Person:
        names = sorted(n for n, p in self.people.items() if protocol in (None, p.protocol))
        return self.people[data.draw(st.sampled_from(names), label="who")]

    # -- checking --------------------------------------------------------------------

    @staticmethod
    def _mentioning(person: Person, name: str) -> list[str]:
        """PERSON's lines that name NAME (as a word: p1 is not p10)."""
        pattern = re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")
        return [line for line in person.lines() if pattern.search(line)]

    def _received(self, marker: str) -> dict[str, list[str]]:
        """The lines holding MARKER, by recipient."""
        got: dict[str, list[str]] = {}
        for name, person in self.people.items():
            lines = [line for line in person.lines() if marker in line]
            if lines:
                got[name] = lines
        return got

    def _check_room_text(self, marker: str, sender: str, room: str, action: bool) -> None:
        expected = self._members(room) - {sender}
        if self.people[sender].echo:
            expected.add(sender)
        got = self._received(marker)
        assert set(got) == expected, (got, expected)
        for name, lines in got.items():
            assert len(lines) == 1, lines
            line = lines[0]
            if self.people[name].protocol == "line":
                what = f"* {sender} {marker}" if action else f"{sender}: {marker}"
                match = LINE_EVENT.match(line)
                assert match and match.groups() == (f"#{room}", what), line
            else:
                msg = parse(line.encode())
                assert msg is not None and msg.command == "PRIVMSG", line
                text = f"\x01ACTION {marker}\x01" if action else marker
                assert msg.params == (f"#{room}", text), line
                assert msg.source is not None and msg.source.startswith(f"{sender}!"), line

    # -- rules ------------------------------------------------------------------------------

    @initialize()
    def three_people(self) -> None:
        self.arrive("line", False)
        self.arrive("irc", False)
        self.arrive("irc", True)

    @rule(protocol=st.sampled_from(["line", "irc"]), echo=st.booleans())
    def arrive(self, protocol: str, echo: bool) -> None:
        name = f"p{next(self.names)}"
        outbox = ListOutbox()
        if protocol == "line":
            session = LineSession(self.hall, outbox, name, "", "10.0.0.1")
            person = Person(name, protocol, session, outbox, False)
            self._type(person, name)
        else:
            session = IrcSession(self.hall, outbox, name, "10.0.0.2", "test.server")
            person = Person(name, protocol, session, outbox, echo)
            caps = "CAP REQ :echo-message" if echo else "CAP REQ :multi-prefix"
            self._type(person, "CAP LS 302", caps, f"NICK {name}", f"USER {name} 0 * :{name}", "CAP END")
        assert session.registered
        self.people[name] = person

    @precondition(lambda self: self.people)
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def join(self, data, room: str) -> None:
        self._join(self._pick(data), room)

    @precondition(lambda self: any(p.protocol == "irc" for p in self.people.values()))
    @rule(data=st.data())
    def join_everywhere(self, data) -> None:
        """An IRC user in every room: quits and renames are then seen in several."""
        person = self._pick(data, "irc")
        for room in ROOMS:
            self._join(person, room)

    def _join(self, person: Person, room: str) -> None:
        if room in person.rooms:
            return
        left = set(person.rooms) if person.protocol == "line" else set()  # /join switches rooms
        self._clear()
        self._type(person, f"/join {room}" if person.protocol == "line" else f"JOIN #{room}")
        person.rooms -= left
        person.rooms.add(room)
        for name, other in self.people.items():
            if name == person.name:
                continue
            lines = self._mentioning(other, person.name)
            expected = int(room in other.rooms) + int(bool(left & other.rooms))
            assert len(lines) == expected, (name, lines)
            joins = [line for line in lines if "has joined" in line or " JOIN " in line]
            assert len(joins) == int(room in other.rooms), lines

    @precondition(lambda self: any(p.rooms for p in self.people.values()))
    @rule(data=st.data())
    def part(self, data) -> None:
        person = self.people[data.draw(st.sampled_from(sorted(n for n, p in self.people.items() if p.rooms)))]
        room = data.draw(st.sampled_from(sorted(person.rooms)))
        self._clear()
        self._type(person, "/leave" if person.protocol == "line" else f"PART #{room}")
        person.rooms.discard(room)
        for other in self._members(room):
            lines = self._mentioning(self.people[other], person.name)
            assert len(lines) == 1 and ("has left" in lines[0] or " PART " in lines[0]), lines

    @precondition(lambda self: any(p.rooms for p in self.people.values()))
    @rule(data=st.data(), action=st.booleans())
    def talk(self, data, action: bool) -> None:
        person = self.people[data.draw(st.sampled_from(sorted(n for n, p in self.people.items() if p.rooms)))]
        room = data.draw(st.sampled_from(sorted(person.rooms)))
        marker = self._marker()
        self._clear()
        if person.protocol == "line":
            self._type(person, f"/me {marker}" if action else marker)
        else:
            text = f"\x01ACTION {marker}\x01" if action else marker
            self._type(person, f"PRIVMSG #{room} :{text}")
        self._check_room_text(marker, person.name, room, action)

    @precondition(lambda self: len(self.people) >= 2)
    @rule(data=st.data())
    def direct(self, data) -> None:
        sender = self._pick(data)
        target = self.people[data.draw(st.sampled_from(sorted(set(self.people) - {sender.name})))]
        marker = self._marker()
        self._clear()
        if sender.protocol == "line":
            self._type(sender, f"/dm {target.name} {marker}")
        else:
            self._type(sender, f"PRIVMSG {target.name} :{marker}")
        got = self._received(marker)
        expected = {target.name}
        if sender.protocol == "line" or sender.echo:
            expected.add(sender.name)  # the line protocol's (dm to ...) confirmation, IRC's echo-message
        assert set(got) == expected and all(len(lines) == 1 for lines in got.values()), got
        line = got[target.name][0]
        if target.protocol == "line":
            assert LINE_EVENT.match(line).groups() == ("(dm)", f"{sender.name}: {marker}"), line
        else:
            assert parse(line.encode()).params == (target.name, marker), line

    @precondition(lambda self: self.people)
    @rule(data=st.data())
    def rename(self, data) -> None:
        person = self._pick(data)
        old, new = person.name, f"p{next(self.names)}"
        rooms = set(person.rooms)
        self._clear()
        self._type(person, f"/nick {new}" if person.protocol == "line" else f"NICK {new}")
        person.name = new
        self.people[new] = self.people.pop(old)
        for name, other in self.people.items():
            if name == new:
                continue
            shared = len(rooms & other.rooms)
            lines = self._mentioning(other, old)
            expected = shared if other.protocol == "line" else min(shared, 1)
            assert len(lines) == expected, (name, lines, shared)

    @precondition(lambda self: len(self.people) > 1)
    @rule(data=st.data())
    def leave_the_server(self, data) -> None:
        person = self._pick(data)
        rooms = set(person.rooms)
        self._clear()
        self._type(person, "/quit bye" if person.protocol == "line" else "QUIT :bye")
        del self.people[person.name]
        for name, other in self.people.items():
            shared = len(rooms & other.rooms)
            lines = self._mentioning(other, person.name)
            expected = shared if other.protocol == "line" else min(shared, 1)
            assert len(lines) == expected, (name, lines, shared)
            for line in lines:
                assert ("has quit" in line) if other.protocol == "line" else (" QUIT " in line), line

    @invariant()
    def hall_agrees(self) -> None:
        self.hall.check_invariants()
        for name, person in self.people.items():
            user = self.hall.users[self.hall.users[person.session.user.key].key]
            assert user.name == name
            assert {room.name for room in user.rooms} == person.rooms


Mixed.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
TestMixedProtocols = Mixed.TestCase
