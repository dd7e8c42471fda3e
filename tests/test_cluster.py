"""Several pychat nodes sharing one world through a real Redis (README: Several nodes, one Redis).

Each test starts its own redis-server (a free port, a temporary directory,
AOF on) and two or three nodes, and talks to them as users do: raw line
clients and raw IRC clients on each node.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import IrcClient, IrcLine, LineClient, ServerProcess, connects, parse_irc, wait_for
from pychat.core.history import MAX_ID, HistoryStore
from pychat.core.replicated import IDS_PER_EVENT, first_event_id

pytest.importorskip("hiredis", reason="the cluster extra (hiredis) is installed by tests/run")
REDIS = shutil.which("redis-server")
if REDIS is None:  # tests/run installs it; never counted as coverage when missing
    pytest.skip("redis-server is not installed (tests/run installs it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1, its data (AOF, fsync always) in DIR."""

    def __init__(self, directory: Path, password: str = "") -> None:
        self.dir = directory
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", str(self.dir / "log"),
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what="redis-server to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall((f"AUTH {self.password}\r\n" if self.password else "").encode() + b"PING\r\n")
                return b"+PONG" in s.recv(64)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def nodes(tmp_path, redis):
    """make(name): a node of the cluster on REDIS; all stopped at the end."""
    started: list[ServerProcess] = []

    def make(name: str, *args: str) -> ServerProcess:
        node = ServerProcess(tmp_path, "--cluster", redis.url, "--node-name", name, *args,
                             db=str(tmp_path / f"{name}.db"))
        wait_for(lambda: "cluster: node " in node.log(), what=f"node {name} to join the cluster")
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop(signal.SIGKILL)


def irc(node: ServerProcess, nick: str) -> IrcClient:
    client = IrcClient(node.irc_port)
    client.register(nick)
    return client


def said(lines: list[str], text: str) -> int:
    return sum(1 for line in lines if line.endswith(text))


def test_line_and_irc_users_talk_across_nodes(nodes):
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    bob = two.client("bob")
    alice.expect(r"#general --> bob has joined")
    carol = irc(two, "carol")
    dave = irc(one, "dave")
    for client in (carol, dave):
        client.send("JOIN #general")
        names = client.expect_msg("353")
        assert set(names.params[-1].split()) == {"alice", "bob", "carol", "dave"} - (
            {"dave"} if client is carol else set()) | {client.name}
    alice.expect(r"#general --> dave has joined")

    alice.send("hello from one")
    assert bob.expect(r"#general alice: hello from one")
    msg = carol.expect_msg("PRIVMSG")
    assert msg.source.startswith("alice!") and msg.params == ["#general", "hello from one"]
    carol.send("PRIVMSG #general :hello from two")
    assert alice.expect(r"#general carol: hello from two")
    assert parse_irc(dave.expect(r"PRIVMSG #general :hello from two")).source.startswith("carol!")
    bob.send("/me waves")
    assert carol.expect(r"PRIVMSG #general :\x01ACTION waves\x01")

    # Direct messages both ways, between protocols and nodes.
    alice.send("/dm carol psst")
    msg = parse_irc(carol.expect(r"PRIVMSG carol :psst"))
    assert msg.source.startswith("alice!")
    carol.send("PRIVMSG alice :back at you")
    assert alice.expect(r"\(dm\) carol: back at you")
    dave.send("PRIVMSG bob :hi bob")
    assert bob.expect(r"\(dm\) dave: hi bob")

    # A broadcast reaches everyone on every node, once.
    bob.send("/bc all hands")
    assert alice.expect(r"\(all\) bob: all hands")
    assert carol.expect(r"all hands")
    assert dave.expect(r"all hands")

    # /users lists everyone, whichever node is asked.
    for client in (alice, bob):
        client.send("/users")
        lines = client.lines_until(r"^\*   dave")
        assert any("4 users online" in line for line in lines), lines

    # Each message arrived once: nothing more is waiting.
    assert said(bob.sync(), "hello from one") == 0
    assert all("hello from" not in line for line in carol.sync())


def test_a_name_is_taken_on_every_node(nodes):
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    late = two.client()
    late.give_name("ALICE")
    assert late.expect(r"^! ").startswith("! the name ALICE is taken")
    carol = IrcClient(two.irc_port)
    carol.send("NICK alice")
    carol.send("USER u 0 * :x")
    assert carol.expect_msg("433").params[1] == "alice"
    assert all("has quit" not in line for line in alice.sync())


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    base = tmp_path_factory.mktemp("trio")
    redis = RedisServer(base / "redis")
    started = [ServerProcess(base, "--cluster", redis.url, "--node-name", f"n{i}", "--max-per-ip", "0",
                             "--flood-rate", "0", db=str(base / f"n{i}.db")) for i in range(3)]
    for node in started:
        wait_for(lambda: "cluster: node " in node.log(), what="nodes to join")
    yield started
    for node in started:
        node.stop(signal.SIGKILL)
    redis.stop(signal.SIGKILL)


_rounds = itertools.count()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["ann", "Ann", "bo", "cy"])),
                       min_size=2, max_size=8))
def test_concurrent_claims_give_each_name_to_one_user(trio, claims):
    """Claims sent at once on three nodes: each name ends with exactly one holder,
    every other claimant is told it is taken, and every node lists the same users."""
    suffix = f"x{next(_rounds)}z"
    clients = []
    for node_index, name in claims:
        client = trio[node_index].client()
        client.expect(r"^\* what is your name")
        clients.append((client, name + suffix))
    for client, name in clients:
        client.send(name)  # all claims in flight before any answer is read
    winners: dict[str, int] = {}
    for client, name in clients:
        line = client.expect(r"^(\* hello|! the name)")
        if line.startswith("* hello"):
            winners[name.lower()] = winners.get(name.lower(), 0) + 1
        else:
            assert "is taken" in line
    assert set(winners) == {name.lower() for _, name in clients}
    assert all(count == 1 for count in winners.values()), winners
    listings = []
    for i, node in enumerate(trio):
        observer = node.client()
        observer.give_name(f"w{suffix}o{i}")  # not matched by the listing's pattern
        observer.expect(r"^\* hello")
        observer.send(f"/users *{suffix}")
        lines = observer.sync()
        listings.append(sorted(line.split()[1].lower() for line in lines if re.match(r"^\*   [^#\s]", line)))
        observer.close()
    assert listings[0] == listings[1] == listings[2] == sorted(winners)
    for client, _ in clients:
        client.close()


def test_a_killed_node_frees_its_names_and_its_users_quit(nodes):
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    bob = two.client("bob")
    alice.expect(r"#general --> bob has joined")
    killed = time.monotonic()
    two.kill()
    alice.expect(r"#general <-- bob has quit \(node lost\)", timeout=25)
    assert time.monotonic() - killed <= 20
    bob.close()
    assert _named(one.client(), "bob")


def test_a_node_cut_off_for_a_while_keeps_its_users_and_renames_a_taken_name(nodes):
    # Node one stops (SIGSTOP) past its lease: node two sweeps it, its users quit
    # there, and carol takes dave's name. When one runs again, its users keep
    # their connections: alice gets her name back, dave (IRC) a guest name with
    # a notice and a NICK line, and both are in #general again.
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    dave = irc(one, "dave")
    dave.send("JOIN #general")
    dave.expect_msg("366")
    carol = two.client("carol")
    alice.expect(r"#general --> carol has joined")
    os.kill(one.proc.pid, signal.SIGSTOP)
    try:
        carol.expect(r"#general <-- alice has quit \(node lost\)", timeout=25)
        carol.expect(r"#general <-- dave has quit \(node lost\)")
        carol.send("/nick dave")
        carol.expect(r"you are now known as dave")
    finally:
        os.kill(one.proc.pid, signal.SIGCONT)
    assert alice.expect(r"^! ", timeout=20).startswith("! this server was cut off from the cluster")
    alice.expect(r"^\* you are back in the cluster as alice", timeout=20)
    notice = dave.expect(r"your name dave was taken", timeout=20)
    guest = re.search(r"you are now (guest\d+)", notice).group(1)
    nick = dave.expect_msg("NICK")
    assert nick.source.startswith("dave!") and nick.params == [guest]
    lines = carol.lines_until(rf"#general --> ({guest}|alice) has joined")
    lines += carol.lines_until(rf"#general --> ({guest}|alice) has joined")
    assert any("alice has joined" in line for line in lines) and any(guest in line for line in lines), lines
    alice.send("hello again")
    carol.expect(r"#general alice: hello again")
    dave.send("PRIVMSG #general :still here")
    carol.expect(rf"#general {guest}: still here")
    assert parse_irc(dave.expect(r"PRIVMSG #general :hello again")).source.startswith("alice!")
    carol.send("/users")
    listing = carol.lines_until(r"3 users online")
    listing += carol.sync()
    assert sum(1 for line in listing if re.search(rf"^\*   ({guest}|alice|dave)\b", line)) == 3, listing


def test_redis_restart_loses_and_repeats_nothing(nodes, redis):
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    bob = two.client("bob")
    alice.expect(r"#general --> bob has joined")
    for i in range(5):
        alice.send(f"before {i}")
    bob.expect(r"before 4")
    redis.stop()
    alice.send("while down")
    assert alice.expect(r"^! ").startswith("! cluster unavailable")
    redis.start()
    accepted = wait_for(lambda: _accepted(alice, "after 0"), timeout=20, what="the cluster to be back")
    assert accepted
    for i in range(1, 5):
        alice.send(f"after {i}")
    lines = bob.lines_until(r"after 4")
    lines += bob.sync()
    texts = [line.split(": ", 1)[1] for line in lines if "#general alice:" in line]
    assert texts == [f"after {i}" for i in range(5)], lines
    assert all("while down" not in line for line in lines)


def _request(*args: bytes) -> bytes:
    """A command to Redis as RESP."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _redis_command(redis: RedisServer, *args: bytes) -> bytes:
    """One command to REDIS over a raw socket (RESP); its reply's first line."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as s:
        s.sendall(_request(*args))
        return s.recv(4096).split(b"\r\n", 1)[0]


def test_an_entry_of_the_stream_that_cannot_be_read_is_skipped(nodes, redis):
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    bob = two.client("bob")
    alice.expect(r"#general --> bob has joined")
    # Not marshal; marshal but not a list; a list whose events are not events; bad JSON.
    for field, value in ((b"m", b"[\xff\xff"), (b"m", b"\xe9\x03\x00\x00\x00"), (b"m", b"\xdb\x01\x00\x00\x00\xe9\x07\x00\x00\x00"),
                         (b"e", b"[not json")):
        assert _redis_command(redis, b"XADD", b"pychat:events", b"*", b"n", b"elsewhere", b"s", b"1",
                              field, value).startswith(b"$"), "XADD refused"
    # Fields that cannot be read: a fence that is no number, a node name that is not
    # UTF-8, and (for node one only) a batch number that is no number.
    for fields in ((b"n", b"elsewhere", b"f", b"x", b"e", b"[]"), (b"n", b"\xff", b"m", b"\xdb\x00\x00\x00\x00"),
                   (b"n", b"one", b"s", b"x", b"m", b"\xdb\x00\x00\x00\x00")):
        assert _redis_command(redis, b"XADD", b"pychat:events", b"*", *fields).startswith(b"$"), "XADD refused"
    alice.send("after the bad entries")
    bob.expect(r"#general alice: after the bad entries$")
    bob.send("and back")
    alice.expect(r"#general bob: and back$")
    for node in (one, two):
        log = node.log()
        assert log.count("cannot be read was skipped") == (6 if node is one else 5), log
        assert "internal error carrying out an event" in log, log
        assert "Traceback" in log  # the event that is not one: logged with its traceback, once


def _accepted(client, text: str) -> bool:
    """Send TEXT; True once it is not refused."""
    client.send(text)
    lines = client.sync()
    return not any(line.startswith("! cluster unavailable") for line in lines)


def test_chat_is_refused_while_redis_is_down_and_nothing_forks(nodes, redis):
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    bob = two.client("bob")
    alice.expect(r"#general --> bob has joined")
    redis.stop()
    alice.send("only on one")
    assert alice.expect(r"^! ").startswith("! cluster unavailable")
    bob.send("only on two")
    assert bob.expect(r"^! ").startswith("! cluster unavailable")
    newcomer = one.client()
    newcomer.give_name("carol")
    assert newcomer.expect(r"^! ").startswith("! cluster unavailable")
    redis.start()
    wait_for(lambda: _accepted(bob, "back"), timeout=20, what="the cluster to be back")
    lines = alice.lines_until(r"bob: back")
    assert all("only on" not in line for line in lines), lines
    alice.send("/history 10")
    history = alice.lines_until(r"end of history")
    assert all("only on" not in line for line in history), history


def test_a_lost_redis_gives_a_gap_notice(nodes, redis):
    one = nodes("one")
    alice = one.client("alice")
    redis.stop(signal.SIGKILL)
    shutil.rmtree(redis.dir)
    redis.dir.mkdir()
    redis.start()
    line = alice.expect(r"^! ", timeout=20)
    assert "lost recent events" in line, one.log()[-3000:]
    alice.wait_closed()
    wait_for(lambda: _named(one.client(), "alice"), timeout=20, what="the node to start over")


def test_a_node_that_missed_trimmed_entries_tells_its_users_and_starts_over(nodes, redis):
    """Entries trimmed from the stream before a node read them (it lagged behind
    more than the stream keeps) leave a gap the node finds by their numbers:
    its users are told and let go (their quits reach the other nodes), and it
    starts over from the others' world. A node that had read them goes on."""
    one, two = nodes("one"), nodes("two")
    alice, carol = one.client("alice"), one.client("carol")
    bob = two.client("bob")
    alice.expect(r"#general --> bob has joined")
    two.proc.send_signal(signal.SIGSTOP)
    try:
        alice.send("read by two after its stop")  # answers the read node two had asked for
        carol.expect(r"alice: read by two after its stop$")
        alice.send("never read by two")
        carol.expect(r"alice: never read by two$")
        assert _redis_command(redis, b"XTRIM", b"pychat:events", b"MAXLEN", b"0").startswith(b":")
        alice.send("after the trim")
        carol.expect(r"alice: after the trim$")
    finally:
        two.proc.send_signal(signal.SIGCONT)
    bob.expect(r"alice: read by two after its stop$")
    assert bob.expect(r"^! ", timeout=20) == "! the cluster lost recent events; please reconnect"
    closing = bob.wait_closed()
    assert not any("never read by two" in line or "after the trim" in line for line in closing), closing
    carol.expect(r"#general <-- bob has quit \(its server lost touch with the cluster\)$", timeout=20)
    assert "were trimmed before this node read them" in two.log()
    assert "trimmed" not in one.log() and "starts over" not in one.log()
    # Node two serves again, with the world of node one.
    wait_for(lambda: _named(two.client(), "eve"), timeout=20, what="node two to start over")
    dave = two.client("dave")
    dave.send("/users")
    dave.expect(r"alice")
    alice.send("welcome back")
    dave.expect(r"#general alice: welcome back$")


def _stream_entries(redis: RedisServer) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of the stream, read with XRANGE: its id and fields."""
    import hiredis
    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as s:
        s.sendall(_request(b"XRANGE", b"pychat:events", b"-", b"+"))
        reply = False
        while reply is False:
            data = s.recv(1 << 20)
            assert data, "Redis closed the connection"
            reader.feed(data)
            reply = reader.gets()
    return [(entry_id, dict(zip(fields[::2], fields[1::2]))) for entry_id, fields in reply]


def test_a_pass_of_many_or_long_messages_goes_in_bounded_entries(nodes, redis):
    """What a node's users said in one pass of its loop is appended in entries of
    at most ENTRY_EVENTS events and about ENTRY_BYTES, numbered one after another
    (so that Redis can keep the stream to a size in bytes), and arrives whole and
    in order."""
    import marshal

    from pychat.server.cluster import ENTRY_BYTES, ENTRY_EVENTS
    one, two = nodes("one", "--flood-rate", "0"), nodes("two")
    alice, carol, dave = one.client("alice"), one.client("carol"), one.client("dave")
    bob = two.client("bob")
    alice.expect(r"#general --> bob has joined")
    shorts = [f"short {i}" for i in range(ENTRY_EVENTS + 500)]
    longs = {name: [f"{name} {i} " + "x" * 3990 for i in range(16)] for name in ("carol", "dave")}  # 64 KiB: one read
    one.proc.send_signal(signal.SIGSTOP)  # so that node one reads all of it in one pass
    try:
        alice.send_raw("".join(f"{text}\n" for text in shorts).encode())
        for writer in (carol, dave):
            writer.send_raw("".join(f"{text}\n" for text in longs[writer.name]).encode())
    finally:
        one.proc.send_signal(signal.SIGCONT)
    got = [bob.expect(r"#general (alice|carol|dave): ", timeout=30) for _ in range(len(shorts) + 32)]
    assert [line.split(": ", 1)[1] for line in got if " alice: " in line] == shorts
    for name, texts in longs.items():
        assert [line.split(": ", 1)[1] for line in got if f" {name}: " in line] == texts
    entries = [fields for _, fields in _stream_entries(redis)]
    batches = [fields for fields in entries if fields.get(b"n") == b"one" and b"m" in fields]
    sizes = [(len(marshal.loads(fields[b"m"])), len(fields[b"m"])) for fields in batches]
    said = [events for events, _ in sizes if events > 1]
    assert sum(said) >= len(shorts) + 32 and len(said) >= 3, sizes  # split by count, then by size
    assert max(events for events, _ in sizes) <= ENTRY_EVENTS, sizes
    assert max(size for _, size in sizes) <= ENTRY_BYTES + 4200, sizes  # one event past the bound at most
    numbers = [int(fields[b"c"]) for fields in entries]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers


def _named(client, name: str) -> bool:
    client.give_name(name)
    line = client.expect(r"^(\* hello|! )")
    client.close()
    return line.startswith(f"* hello {name}")


def test_a_private_room_stays_private_across_nodes(nodes):
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    bob = two.client("bob")
    bob.send("/create secret hunter2")
    bob.expect(r"you joined #secret \(locked\)")
    alice.send("/join secret")
    assert alice.expect(r"^! ") == "! #secret is locked: /join secret KEY"
    alice.send("/join secret wrong")
    assert alice.expect(r"^! ") == "! wrong key for #secret"
    bob.send("for members only")
    carol = irc(one, "carol")
    carol.send("JOIN #secret")
    assert carol.expect_msg("475").params[1] == "#secret"
    carol.send("NAMES #secret")
    assert "bob" not in carol.expect_msg("366").params[-1]
    assert all("members only" not in line for line in alice.sync())
    alice.send("/join secret hunter2")
    alice.expect(r"you joined #secret \(locked\): 2 users here")
    history = alice.lines_until(r"end of history")
    assert any("for members only" in line for line in history)
    assert bob.expect(r"#secret --> alice has joined")


def test_a_node_that_joins_later_takes_the_world_from_the_others(nodes):
    one = nodes("one")
    alice = one.client("alice")
    alice.send("/create den")
    alice.expect(r"you joined #den")
    alice.send("kept in the den")  # a room with messages is kept when its last member leaves
    alice.send("/join general")
    alice.expect(r"you joined #general")
    two = nodes("two")
    assert "took the world from another node" in two.log()
    bob = two.client("bob")
    bob.send("/users")
    assert any("alice in #general" in line for line in bob.sync())
    bob.send("/list")
    assert any("#den" in line for line in bob.sync())
    alice.expect(r"#general --> bob has joined")
    alice.send("seen from two")
    assert bob.expect(r"#general alice: seen from two")
    bob.send("seen from one")
    assert alice.expect(r"#general bob: seen from one")


def test_rooms_are_moderated_across_nodes(nodes):
    one, two = nodes("one"), nodes("two")
    leo = one.client("leo")
    leo.send("/create den")  # its creator is its operator
    leo.expect(r"you joined #den")
    ivy = irc(two, "ivy")
    ivy.send("JOIN #den")
    ivy.expect_msg("366")
    leo.expect(r"#den --> ivy has joined")

    # A topic and modes set on one node hold on the other.
    leo.send("/topic what the den is for")
    topic = ivy.expect_msg("TOPIC")
    assert topic.source.startswith("leo!") and topic.params == ["#den", "what the den is for"]
    leo.send("/mode +m")
    assert ivy.expect_msg("MODE").params == ["#den", "+m"]
    ivy.send("PRIVMSG #den :can anyone hear me")
    assert ivy.expect_msg("404").params[-1] == ("Cannot send to channel: #den is moderated: "
                                                "only operators and voiced members speak")
    leo.send("/voice ivy")
    assert ivy.expect_msg("MODE").params == ["#den", "+v", "ivy"]
    ivy.send("PRIVMSG #den :now I am heard")
    leo.expect(r"#den ivy: now I am heard")
    ivy.send("PRIVMSG @#den :for the operators only")  # IRC's STATUSMSG
    leo.expect(r"@#den ivy: for the operators only")
    # Refused where it is carried out, for the one who asked; nothing changes.
    ivy.send("TOPIC #den :mine now")
    assert ivy.expect_msg("482").params == ["ivy", "#den", "You're not channel operator"]
    ivy.send("TOPIC #den")
    assert ivy.expect_msg("332").params[-1] == "what the den is for"

    # Kicks and bans reach across nodes.
    leo.send("/kick ivy calm down")
    assert ivy.expect_msg("KICK").params == ["#den", "ivy", "calm down"]
    leo.expect(r"#den <-- ivy was kicked by leo \(calm down\)")
    ivy.send("JOIN #den")
    ivy.expect_msg("366")
    leo.send("/ban ivy")  # a line /ban also kicks
    assert ivy.expect_msg("MODE").params == ["#den", "+b", "ivy!*@*"]
    assert ivy.expect_msg("KICK").params == ["#den", "ivy", "banned"]
    ivy.send("JOIN #den")
    assert ivy.expect_msg("474").params == ["ivy", "#den", "Cannot join channel (+b)"]

    # An invitation made on one node lets a user of the other into an invite-only room.
    leo.send("/mode +i")
    leo.expect(r"#den -- leo made the room invite-only")
    carl = two.client("carl")
    carl.send("/join den")
    assert carl.expect(r"^! ") == "! #den is invite-only: an operator must /invite you"
    leo.send("/invite carl")
    assert carl.expect(r"invites you") == "* leo invites you to #den: /join den"
    carl.send("/join den")
    carl.expect(r"you joined #den")

    # A key set on one node (hashed there, once) opens the room on the other.
    leo.send("/op carl")
    carl.expect(r"#den -- leo made carl an operator")
    carl.send("/mode -i +k sesame")
    leo.expect(r"#den -- carl .*locked the room with a key")
    dave = one.client("dave")
    dave.send("/join den")
    assert dave.expect(r"^! ") == "! #den is locked: /join den KEY"
    dave.send("/join den sesame")
    dave.expect(r"you joined #den \(locked\)")
    assert carl.expect(r"#den --> dave has joined")

    # A node that joins later takes the room's topic, modes and bans with the world.
    three = nodes("three")
    zed = irc(three, "zed")
    zed.send("JOIN #den")
    assert zed.expect_msg("475").params[1] == "#den"  # the key holds there too
    zed.send("JOIN #den sesame")
    assert zed.expect_msg("332").params[-1] == "what the den is for"
    zed.send("MODE #den b")
    assert zed.expect_msg("367").params[2] == "ivy!*@*"

    # One key per request (each is hashed where it is typed); a MODE that also asks
    # for the ban list answers it once, though the change comes back from the stream.
    carl.expect(r"#den --> zed has joined")  # node two knows zed is in #den
    carl.send("/op zed")
    assert zed.expect_msg("MODE").params == ["#den", "+o", "zed"]
    zed.send("MODE #den +kkb one two")
    answer = [parse_irc(line) for line in zed.lines_until(r" 525 ")]
    assert [msg.command for msg in answer].count("368") == 1
    assert answer[-1].params[-1] == "one key at a time"


def invite_only_room_with_chat(node: ServerProcess, name: str, room: str) -> LineClient:
    """NAME on NODE creates ROOM, makes it invite-only and speaks in it (a room
    with messages is kept when it empties); NAME's client."""
    client = node.client(name)
    client.send(f"/create {room}")
    client.expect(rf"you joined #{room}")
    client.send("/mode +i")
    client.expect(rf"#{room} -- {name} made the room invite-only")
    client.send(f"said in #{room}")
    return client


def test_an_emptied_room_is_kept_alike_on_every_node(nodes):
    one = nodes("one")
    leo = invite_only_room_with_chat(one, "leo", "den")
    two = nodes("two")  # its own file has no message of #den
    leo.send("/join general")
    leo.expect(r"you joined #general")
    ann = two.client("ann")
    ann.send("/join den")
    assert ann.expect(r"^[!*] ") == "! #den is invite-only: an operator must /invite you"


_WATCHERS = itertools.count(1)


def _online(node: ServerProcess, name: str) -> bool:
    """Whether NODE's world has NAME online (asked with an IRC ISON)."""
    client = IrcClient(node.irc_port, source="127.0.0.250")
    client.register(f"watcher{next(_WATCHERS)}")  # each its own name: the last may not be gone yet
    client.send(f"ISON {name}")
    online = client.expect_msg("303").params[-1].split()
    client.close()
    return name in online


def known_to(watcher: ServerProcess, node: ServerProcess, name: str, source: str) -> LineClient:
    """A line user NAME on NODE from SOURCE, once WATCHER (another node) knows it."""
    client = LineClient(node.port, source=source)
    client.register(name)
    wait_for(lambda: _online(watcher, name), what=f"the other node to know {name}")
    return client


def irc_with_pass(node: ServerProcess, nick: str, password: str, source: str) -> tuple[IrcClient, IrcLine]:
    """An IRC client from SOURCE that gives PASSWORD at registration: it and its 001 (or 464)."""
    client = IrcClient(node.irc_port, source=source)
    client.send(f"PASS {password}")
    client.send(f"NICK {nick}")
    client.send(f"USER u 0 * :{nick}")
    return client, next(msg for msg in map(parse_irc, iter(client.read_line, None))
                        if msg.command in ("001", "464"))


def test_accounts_are_shared_across_nodes(nodes):
    # Each client comes from its own address: password checks are budgeted per address.
    one, two = nodes("one"), nodes("two")
    alice = LineClient(one.port, source="127.0.0.2")
    alice.register("alice")
    assert alice.password_command("/register alice-pass-1")[0].startswith("* the name alice is yours")
    alice.send("/create den")  # logged in: she owns it
    alice.expect(r"you joined #den")
    alice.send("/quit")
    alice.wait_closed()
    wait_for(lambda: not _online(two, "alice"), what="node two to see alice leave")

    # The name needs its password on the other node too; the account's room knows her there.
    wrong, first = irc_with_pass(two, "alice", "not-her-password", "127.0.0.3")
    assert first.command == "464" and first.params[-1] == "wrong password for alice"
    ivy, first = irc_with_pass(two, "alice", "alice-pass-1", "127.0.0.4")
    assert first.params[0] == "alice"
    ivy.send("JOIN #den")
    assert ivy.expect_msg("353").params[-1] == "@alice"  # the owner's operator status came back
    ivy.send("QUIT")
    ivy.wait_closed()

    # Logged in on one node: her password, ignore list and logout are every node's.
    bob = LineClient(one.port, source="127.0.0.5")
    bob.register("bob")
    assert bob.password_command("/login alice alice-pass-1") == ["* you are now known as alice",
                                                                 "* you are logged in as alice"]
    assert bob.password_command("/password alice-pass-1 alice-pass-2") == ["* your password is changed"]
    bob.send("/ignore carl")
    bob.expect(r"you ignore carl now")
    bob.send("/logout")
    assert bob.expect(r"logged out") == "* you are logged out; alice needs its password again"
    carl = LineClient(two.port, source="127.0.0.6")
    carl.register("carl")
    assert carl.password_command("/login alice alice-pass-1") == ["! wrong password for alice"]
    assert carl.password_command("/login alice alice-pass-2")[-1] == "* you are logged in as alice"
    carl.send("/ignores")
    assert carl.expect(r"you ignore") == "* you ignore 1: carl"

    # A node that joins later takes the accounts with the world.
    three = nodes("three")
    dora = LineClient(three.port, source="127.0.0.7")
    dora.register("dora")
    # The password (the changed one) is right there; carl holds the name, logged in.
    assert dora.password_command("/login alice alice-pass-2") == ["! alice is online with that account's name"]
    carl.password_command("/unregister alice-pass-2")
    carl.send("/quit")
    carl.wait_closed()
    # The account is gone everywhere: once node three has seen carl leave, the name is anyone's.
    wait_for(lambda: _named(LineClient(three.port, source="127.0.0.8"), "alice"),
             what="node three to give the name alice without a password")


def test_server_operators_act_on_every_node(nodes):
    # Every node has the same --oper list; clients stand for hosts of their own.
    one, two = nodes("one", "--oper", "root"), nodes("two", "--oper", "root")
    root = LineClient(one.port, source="127.0.0.2")
    root.register("root")
    root.password_command("/register root-pass-1")
    bob = LineClient(two.port, source="127.0.0.3")
    bob.register("bob")
    zed = LineClient(two.port, source="127.0.0.4")
    zed.register("zed")
    root.expect(r"#general --> zed has joined")

    # A kill made on one node sends away a user of the other; everyone sees the quit.
    root.send("/kill bob spamming")
    assert root.expect(r"disconnected") == "* bob is disconnected"
    assert bob.wait_closed()[-1] == "! you were killed by root: spamming"
    assert zed.expect(r"<-- bob").endswith("#general <-- bob has quit (killed by root: spamming)")
    root.expect(r"#general <-- bob has quit")

    root.send("/wall maintenance at noon")
    assert zed.expect(r"maintenance").endswith("maintenance at noon")

    # A server ban made on one node holds on the other.
    root.send("/kline 127.0.0.4 10m flooding")
    assert root.expect(r"is banned") == "* 127.0.0.4 is banned from the server for 10 min; 1 disconnected"
    assert zed.wait_closed()[-1] == "! you are banned from this server: flooding"
    root.expect(r"#general <-- zed has quit \(banned from this server\)")
    assert connects(two, "127.0.0.4") == ["! you are banned from this server: flooding"]
    assert connects(two, "127.0.0.5") == []
    root.send("/unkline 127.0.0.4")
    assert root.expect(r"may connect") == "* 127.0.0.4 may connect again"
    wait_for(lambda: connects(two, "127.0.0.4") == [], what="node two to lift the server ban")

    # IRC's OPER on the other node: that connection is an operator on every node.
    ivy = IrcClient(two.irc_port, source="127.0.0.8")
    ivy.register("ivy")
    ivy.send("OPER root root-pass-1")
    assert ivy.expect_msg("381").params[-1] == "You are now an IRC operator"
    dan = known_to(two, one, "dan", "127.0.0.9")
    ivy.send("KILL dan :enough")
    assert dan.wait_closed()[-1] == "! you were killed by ivy: enough"

    # A node that joins later knows the server bans, and bob's name is free there.
    root.send("/kline 127.0.0.6")
    root.expect(r"127.0.0.6 is banned")
    three = nodes("three")
    assert connects(three, "127.0.0.6") == ["! you are banned from this server: banned from this server"]
    assert _named(LineClient(three.port, source="127.0.0.7"), "bob")
    eve = known_to(two, three, "eve", "127.0.0.10")  # ivy's OPER came with the world too
    ivy.send("KILL eve :bye")
    assert eve.wait_closed()[-1] == "! you were killed by ivy: bye"

    # MODE -o is made by every node, in order: a request sent right after it is
    # carried out without the status everywhere, her own node included.
    root.send("/create ops")
    root.expect(r"you joined #ops")
    ivy.send("JOIN #ops")
    ivy.expect_msg("366")
    ivy.send_raw(b"MODE ivy -o\r\nTOPIC #ops :taken over\r\n")
    assert ivy.expect_msg("482").params[1] == "#ops"
    assert not [line for line in root.sync() if "taken over" in line]


def tagged(node: ServerProcess, nick: str, caps: str = "message-tags") -> IrcClient:
    """An IRC user with CAPS (message-tags), in #general."""
    client = IrcClient(node.irc_port)
    client.send("CAP LS 302")
    client.send(f"CAP REQ :{caps}")
    client.send(f"NICK {nick}")
    client.send(f"USER u 0 * :{nick}")
    client.send("CAP END")
    client.welcome()
    client.send("JOIN #general")
    client.expect_msg("366")
    return client


def test_typing_notices_cross_nodes(nodes):
    one, two = nodes("one"), nodes("two")
    tia, sam = tagged(one, "tia"), tagged(two, "sam")
    tia.expect(r":sam!\S+ JOIN #general")
    sam.send("@+typing=active TAGMSG #general")
    tags, source, *_ = tia.expect(r" TAGMSG #general$").split(" ")
    assert "+typing=active" in tags.lstrip("@").split(";") and source.startswith(":sam!")
    sam.send("@+react=1 TAGMSG tia")
    tags, source, *_ = tia.expect(r" TAGMSG tia$").split(" ")
    assert "+react=1" in tags.lstrip("@").split(";") and source.startswith(":sam!")


def test_a_redis_that_needs_a_password(tmp_path, monkeypatch):
    redis = RedisServer(tmp_path / "redis", password="s3cret")
    started: list[ServerProcess] = []

    def node(name: str, url: str) -> ServerProcess:
        started.append(ServerProcess(tmp_path, "--cluster", url, "--node-name", name, db=str(tmp_path / f"{name}.db")))
        return started[-1]

    try:
        # The password in the address, or in $PYCHAT_REDIS_PASSWORD (off the command line).
        one = node("one", f"redis://:s3cret@127.0.0.1:{redis.port}")
        monkeypatch.setenv("PYCHAT_REDIS_PASSWORD", "s3cret")
        two = node("two", redis.url)
        for each in (one, two):
            wait_for(lambda: "cluster: node " in each.log(), what="a node to join the cluster")
        assert "s3cret" not in one.log()  # the address is logged without it
        alice, bob = one.client("alice"), two.client("bob")
        alice.expect(r"#general --> bob has joined")
        bob.send("hi through a locked Redis")
        alice.expect(r"#general bob: hi through a locked Redis")
        monkeypatch.setenv("PYCHAT_REDIS_PASSWORD", "wrong")
        three = node("three", redis.url)
        wait_for(lambda: "AUTH" in three.log(), what="node three to be refused by Redis")
        carl = LineClient(three.port)
        carl.give_name("carl")
        assert carl.expect(r"^! ") == "! cluster unavailable: try again in a moment"
    finally:
        for each in started:
            each.stop(signal.SIGKILL)
        redis.stop(signal.SIGKILL)


def test_one_address_has_one_host_whichever_node_it_comes_through(nodes):
    one, two = nodes("one"), nodes("two")
    ann, ben = irc(one, "ann"), irc(two, "ben")  # both from 127.0.0.1
    wait_for(lambda: _online(one, "ben"), what="node one to know ben")
    hosts = []
    for nick in ("ann", "ben"):
        ann.send(f"WHOIS {nick}")
        hosts.append(ann.expect_msg("311").params[3])
    assert hosts[0] == hosts[1] and hosts[0].endswith(".pychat")  # so a ban of the host covers both
    ben.close()


_MODERATION = ["/topic t{n}", "/mode +m", "/mode -m", "/mode +i", "/mode -i", "/mode -t", "/mode +t",
               "/mode +l 3", "/mode -l", "/voice {other}", "/devoice {other}", "/op {other}", "/deop {other}",
               "/kick {other}", "/ban {other}", "/unban {other}", "/mute {other} 10m", "/unmute {other}",
               "/invite {other}", "/join {room}", "said {n}"]


def _room_as_seen(node: ServerProcess, room: str) -> list[str]:
    """What an IRC user of NODE, not in ROOM, is told of it: its modes, members
    with their roles, member count and topic, and ban list."""
    observer = IrcClient(node.irc_port, source="127.0.0.251")
    observer.register(f"obs{next(_WATCHERS)}")
    seen = []
    for line in (f"MODE #{room}", f"NAMES #{room}", f"LIST #{room}", f"MODE #{room} b"):
        observer.send(line)
        for got in observer.sync():
            msg = parse_irc(got)
            if msg.command == "353":
                seen.append("names " + " ".join(sorted(msg.params[-1].split())))
            elif msg.command in ("324", "322", "367"):
                seen.append(" ".join([msg.command, *msg.params[1:4 if msg.command == "367" else None]]))
    observer.close()
    return seen


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, len(_MODERATION) - 1),
                                st.integers(1, 3)), min_size=3, max_size=14))
def test_moderation_sent_at_once_on_two_nodes_leaves_one_world(trio, steps):
    """Two operators and two members on two nodes send moderation at once, in any
    order: afterwards both nodes show the room alike (modes, roles, members, topic, bans)."""
    n = next(_rounds)
    room = f"den{n}"
    names = [f"a{n}", f"b{n}", f"c{n}", f"d{n}"]
    users = [trio[i % 2].client(name) for i, name in enumerate(names)]  # a and c on n0, b and d on n1
    users[0].send(f"/create {room}")
    users[0].expect(r"you joined #")
    for user in users[1:]:
        user.send(f"/join {room}")
        user.expect(r"you joined #")
    users[0].send(f"/op {names[1]}")
    users[1].expect(rf"made {names[1]} an operator")
    for who, what, offset in steps:  # all sent before anything is read
        users[who].send(_MODERATION[what].format(n=n, other=names[(who + offset) % 4], room=room))
    for name, user in zip(names, users):  # each user's lines are carried out in turn
        user.send(f"/dm {name} done")
        user.expect(rf"\(dm\) {name}: done")
    for i in (0, 1):  # and everything sent before this reached each node
        last = trio[i].client(f"z{n}n{i}")
        last.send(f"/dm z{n}n{i} last")
        last.expect(rf"\(dm\) z{n}n{i}: last")
        last.close()
    one, two = _room_as_seen(trio[0], room), _room_as_seen(trio[1], room)
    assert one == two and one, (steps, one, two)
    for user in users:
        user.close()


def test_a_node_restarts_on_its_own_file_and_takes_rooms_of_it_again(nodes):
    one = nodes("one")
    alice = invite_only_room_with_chat(one, "alice", "old")
    alice.send("/quit")
    alice.wait_closed()
    assert one.stop() == 0
    # Node two starts the world alone: #old is not in it. Node one comes back on its file.
    two = nodes("two")
    one = nodes("one")
    assert "took the world from another node" in one.log()
    bob, carol = one.client("bob"), two.client("carol")
    bob.expect(r"#general --> carol has joined")
    bob.send("/list")
    assert not [line for line in bob.sync() if "#old" in line]
    # The world makes #old again: node one takes its row of the file again, as a new room.
    carol.send("/create old")
    carol.expect(r"you joined #old")
    bob.send("/join old")  # not invite-only: the file's settings went with the old room
    assert bob.expect(r"^[*!] ").startswith("* you joined #old")
    carol.send("the new #old")
    bob.expect(r"#old carol: the new #old")
    assert "not stored" not in one.log() and "Traceback" not in one.log()


def _archived(db: str) -> list[str]:
    """The messages in a node's history file, as another process reads it."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as reader:
        return [text for (text,) in reader.execute("SELECT text FROM events WHERE kind = 0 ORDER BY id")]


def test_a_node_archives_behind_the_stream_and_a_locked_file_stops_no_delivery(nodes, tmp_path):
    one, two = nodes("one"), nodes("two")
    alice = one.client("alice")
    bob = two.client("bob")
    alice.expect(r"#general --> bob has joined")
    alice.send("archived")
    bob.expect(r"alice: archived$")
    # Nothing else happens on the node: its file still gets the message, soon.
    wait_for(lambda: "archived" in _archived(str(tmp_path / "one.db")), what="node one to archive the message")

    with contextlib.closing(sqlite3.connect(str(tmp_path / "one.db"), isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")  # node one cannot write its file now
        alice.send("while locked")
        bob.expect(r"alice: while locked$")
        wait_for(lambda: "history write failed" in one.log(), what="node one's archive commit to fail")
        assert not any(line.startswith("!") for line in alice.sync())  # the stream has it: nothing withheld
        locker.execute("ROLLBACK")

    alice.send("after")
    bob.expect(r"alice: after$")
    wait_for(lambda: "after" in _archived(str(tmp_path / "one.db")), what="node one to archive again")
    wait_for(lambda: _archived(str(tmp_path / "two.db")) == ["archived", "while locked", "after"],
             what="node two to archive all three")


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 600), st.integers(1, 1500)), min_size=1, max_size=30),
       st.integers(1, 1000), st.data())
def test_stream_numbering_grows_and_is_the_same_on_every_node(entries, start, data):
    """Entries in stream order (ms steps, sequence, events per entry): every event's
    id grows; a node that started with other ids (its own file's) gives the same;
    and so does a node that joins at any entry with the counter of the snapshot
    it takes, however the entries before overran their bounds. Numbering in the
    append itself (its AT_LEAST, as a node carries out a message) gives the same."""
    def numbered(first_id: int, skip: int = 0, in_append: bool = False) -> tuple[list[int], list[int]]:
        """The events' ids, and the counter before each entry, numbering from entry SKIP on."""
        store = HistoryStore()
        room = store.add_room("general", "general", None, 0.0)
        store.number_from(first_id)
        ms, ids, counters = 1_700_000_000_000, [], []
        for index, (step, seq, events) in enumerate(entries):
            ms += step
            if index < skip:
                continue
            counters.append(store.next_event_id)
            first = first_event_id(f"{ms}-{seq}")
            for _ in range(events):
                if in_append:
                    ids.append(store.append(room, 0.0, 0, "alice", "hi", first))
                else:
                    store.number_from(first)
                    ids.append(store.append(room, 0.0, 0, "alice", "hi"))
                first += IDS_PER_EVENT
        return ids, counters

    ids, counters = numbered(1)
    assert all(a < b for a, b in zip(ids, ids[1:])) and ids == numbered(start)[0] and ids[-1] <= MAX_ID
    assert numbered(1, in_append=True) == (ids, counters) and numbered(start, in_append=True)[0] == ids
    joins_at = data.draw(st.integers(0, len(entries) - 1))
    before = sum(events for _, _, events in entries[:joins_at])
    assert numbered(counters[joins_at], skip=joins_at)[0] == ids[before:]
    assert first_event_id("not-an-id") == 0 and first_event_id("99999999999999-0") == 0


def _msgid(line: str) -> str:
    tags = line.lstrip("@").split(" ", 1)[0].split(";")
    return next(tag[6:] for tag in tags if tag.startswith("msgid="))


def test_a_message_has_one_msgid_on_every_node(nodes, tmp_path):
    # Node one's file numbers past the stream's ids (as after a Redis whose clock
    # ran ahead): a node that joins later numbers on from the snapshot it takes.
    ahead = HistoryStore(str(tmp_path / "one.db"))
    ahead.number_from(2**62)
    ahead.append(ahead.add_room("attic", "attic", None, 0.0), 0.0, 0, "past", "kept")
    ahead.close()
    one = nodes("one")
    alice = one.client("alice")
    for n in range(3):  # node one's file holds messages node two's never will
        alice.send(f"before two {n}")
    alice.sync()
    two = nodes("two")
    tia, sam = (tagged(node, nick, "server-time message-tags batch") for node, nick in ((one, "tia"), (two, "sam")))
    tia.expect(r":sam!\S+ JOIN #general")
    alice.send("first seen by both")
    alice.send("second seen by both")
    firsts = [_msgid(client.expect(r"PRIVMSG #general :first seen by both$")) for client in (tia, sam)]
    seconds = [_msgid(client.expect(r"PRIVMSG #general :second seen by both$")) for client in (tia, sam)]
    assert firsts[0] == firsts[1] and seconds[0] == seconds[1] and 2**62 < int(firsts[0]) < int(seconds[0])

    # A msgid seen on node one finds the same message on node two.
    sam.send(f"CHATHISTORY BEFORE #general msgid={seconds[0]} 10")
    batch = sam.lines_until(r" BATCH -\S+$")
    shown = [line for line in batch if " PRIVMSG #general :" in line]
    assert shown and shown[-1].endswith(":first seen by both") and _msgid(shown[-1]) == firsts[0]
    tia.send(f"CHATHISTORY AFTER #general msgid={firsts[1]} 10")
    batch = tia.lines_until(r" BATCH -\S+$")
    assert [line.rsplit(":", 1)[-1] for line in batch if " PRIVMSG #general :" in line] == ["second seen by both"]

    # What is not stored (a room's TAGMSG, a DM) is numbered alike on every node too.
    uma = tagged(one, "uma")
    sam.expect(r":uma!\S+ JOIN #general")
    tia.send("@+typing=active TAGMSG #general")
    typing = [_msgid(client.expect(r" TAGMSG #general$")) for client in (uma, sam)]
    tia.send("PRIVMSG sam :psst")
    dm = _msgid(sam.expect(r" PRIVMSG sam :psst$"))
    assert typing[0] == typing[1] and re.fullmatch(r"x[0-9]+", typing[0]) and re.fullmatch(r"x[0-9]+", dm)


def test_nodes_that_share_a_file_write_it_once_and_a_survivor_takes_it_over(nodes, tmp_path):
    """Two nodes on one history file: one writes it, the other reads it and keeps
    what the file lacks; when the writer is stopped and then killed, the other
    still shows and pages through the newest messages, takes the file over, and
    the file ends up with every message once, in order."""
    shared = str(tmp_path / "shared.db")
    one = nodes("one", "--db", shared)
    wait_for(lambda: "node one writes its history file" in one.log(), what="node one to take the file's lock")
    two = nodes("two", "--db", shared)
    wait_for(lambda: "node two reads its history file" in two.log(), what="node two to follow the file")
    alice, bob, dan = one.client("alice"), two.client("bob"), two.client("dan")
    alice.expect(r"#general --> dan has joined")
    said_all = []
    for n in range(3):
        said_all.append(f"before {n}")
        alice.send(said_all[-1])
    bob.expect(r"alice: before 2$")
    wait_for(lambda: _archived(shared) == said_all, what="node one to write the file")

    one.proc.send_signal(signal.SIGSTOP)  # the writer writes nothing now; node two carries on
    try:
        for n in range(4):
            said_all.append(f"while one sleeps {n}")
            bob.send(said_all[-1])
        dan.expect(r"bob: while one sleeps 3$")
        carol = two.client("carol")  # her replay: node two's tail after the file's rows
        replay = [line.rsplit(": ", 1)[-1] for line in carol.seen if re.search(r"(alice|bob): ", line)]
        assert replay[-7:] == said_all and _archived(shared) == said_all[:3]
        reader = tagged(two, "reader", "server-time message-tags batch")
        reader.sync()  # its replay

        def chathistory(request: str) -> list[str]:
            reader.send(request)
            return [line for line in reader.lines_until(r" BATCH -\S+$") if " PRIVMSG #general :" in line]

        latest = chathistory("CHATHISTORY LATEST #general * 7")
        assert [line.rsplit(" :", 1)[-1] for line in latest] == said_all
        ids = [_msgid(line) for line in latest]
        before = chathistory(f"CHATHISTORY BEFORE #general msgid={ids[4]} 3")  # from the tail into the file
        assert [line.rsplit(" :", 1)[-1] for line in before] == said_all[1:4]
        after = chathistory(f"CHATHISTORY AFTER #general msgid={ids[1]} 10")  # from the file into the tail
        assert [line.rsplit(" :", 1)[-1] for line in after] == said_all[2:]
    finally:
        one.proc.send_signal(signal.SIGKILL)
        one.proc.send_signal(signal.SIGCONT)
    one.proc.wait(10)

    for n in range(2):
        said_all.append(f"after one died {n}")
        bob.send(said_all[-1])
    dan.expect(r"bob: after one died 1$")
    wait_for(lambda: "node two writes its history file" in two.log(), timeout=30,
             what="node two to take the file over once node one's lock expired")
    wait_for(lambda: _archived(shared) == said_all, what="node two to write what node one never did")
    assert "Traceback" not in two.log()


def test_a_shared_file_keeps_a_failed_batch_and_knows_who_lacks_events(tmp_path):
    """The stores of nodes on one file: a failed commit of the writer is kept and
    written by the next (the followers drop what the file's position passes); a
    node that joined after events the file lacks is not complete, so it waits
    for one that has them before it writes the file (Cluster's HOLD)."""
    path = str(tmp_path / "shared.db")
    writer, follower = HistoryStore(path), HistoryStore(path)
    follower.shared = writer.shared = True
    follower.follow()
    rooms = [store.add_room("general", "general", None, 0.0) for store in (writer, follower)]
    assert rooms[0] == rooms[1] and writer.commit()
    for store, room in zip((writer, follower), rooms):
        for n in range(3):
            store.append(room, 0.0, 0, "alice", f"kept {n}")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")
        assert not writer.commit()  # the file is locked: the batch waits
        locker.execute("ROLLBACK")
    assert follower.commit() and [e.text for e in follower.recent(rooms[1], 10)] == ["kept 0", "kept 1", "kept 2"]
    assert writer.commit() and _archived(path) == ["kept 0", "kept 1", "kept 2"]
    assert follower.commit() and follower.complete and [e.text for e in follower.recent(rooms[1], 2)] == \
        ["kept 1", "kept 2"]

    writer.append(rooms[0], 0.0, 0, "alice", "not written yet")
    latecomer = HistoryStore(path)
    latecomer.shared = True
    latecomer.follow()
    assert latecomer.complete  # the file holds everything before it
    latecomer.number_from(writer.next_event_id)  # it joins after the message the file lacks
    latecomer.keep_from_here()
    assert not latecomer.complete
    assert writer.commit() and latecomer.commit() and latecomer.complete


def test_a_following_store_that_stops_writes_the_messages_the_file_lacks(tmp_path):
    """A node that follows the file and stops writes the messages of its tail that
    the file lacks, the rows of the rooms they were said in, and the deletion of
    a room forgotten since (whose name a new room took); it leaves the other room
    changes to the writer, so a newer one the writer made stays."""
    path = str(tmp_path / "shared.db")
    writer, follower = HistoryStore(path), HistoryStore(path)
    follower.shared = writer.shared = True
    follower.follow()
    general, quiet = ([store.add_room(name, name, None, 0.0) for store in (writer, follower)][0]
                      for name in ("general", "quiet"))
    for store in (writer, follower):
        for text in ("one", "two"):
            store.append(general, 0.0, 0, "alice", text)
        store.save_room_settings(general, None, "old topic", "alice", 0.0, "nt", None)
    writer.save_room_settings(general, None, "new topic", "alice", 1.0, "nt", None)
    assert writer.commit() and follower.commit()
    # The writer stops writing (it died); the follower carries on, then stops.
    follower.append(general, 0.0, 0, "bob", "three")
    late = follower.add_room("late", "late", None, 0.0)
    follower.append(late, 0.0, 0, "bob", "four")
    follower.forget_room(quiet)
    quiet_again = follower.add_room("quiet", "quiet", None, 0.0)
    follower.append(quiet_again, 0.0, 0, "bob", "five")
    gone = follower.add_room("gone", "gone", None, 0.0)
    follower.forget_room(gone)
    follower.close()

    assert _archived(path) == ["one", "two", "three", "four", "five"]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as reader:
        assert reader.execute("SELECT topic FROM rooms WHERE id = ?", (general,)).fetchone() == ("new topic",)
    reopened = HistoryStore(path)
    assert [e.text for e in reopened.recent(general, 10)] == ["one", "two", "three"]
    assert [e.text for e in reopened.recent(late, 10)] == ["four"]
    assert [e.text for e in reopened.recent(quiet_again, 10)] == ["five"]
    assert sorted((room.id, room.name) for room in reopened.rooms()) == \
        [(general, "general"), (late, "late"), (quiet_again, "quiet")]
    reopened.close()
    writer.close()


def test_a_follower_stopped_while_the_writer_is_dead_leaves_no_message_out_of_the_file(nodes, tmp_path):
    """Two nodes on one file: the writer is stopped, then killed, and the other
    node is stopped before it could take the file over; what its users said
    meanwhile is in the file all the same, once."""
    shared = str(tmp_path / "shared.db")
    one = nodes("one", "--db", shared)
    wait_for(lambda: "node one writes its history file" in one.log(), what="node one to take the file's lock")
    two = nodes("two", "--db", shared)
    wait_for(lambda: "node two reads its history file" in two.log(), what="node two to follow the file")
    alice, bob = one.client("alice"), two.client("bob")
    alice.expect(r"#general --> bob has joined")
    said_all = ["before"]
    alice.send("before")
    bob.expect(r"alice: before$")
    wait_for(lambda: _archived(shared) == said_all, what="node one to write the file")

    one.proc.send_signal(signal.SIGSTOP)  # the writer writes nothing now; node two carries on
    for n in range(3):
        said_all.append(f"while one sleeps {n}")
        bob.send(said_all[-1])
    dave = two.client("dave")
    dave.expect(r"bob: while one sleeps 2$")
    one.proc.send_signal(signal.SIGKILL)
    one.proc.send_signal(signal.SIGCONT)
    one.proc.wait(10)
    assert _archived(shared) == said_all[:1]
    assert two.stop() == 0  # well before node one's lock expires
    assert "node two writes its history file" not in two.log()
    assert _archived(shared) == said_all
    assert "Traceback" not in two.log()


def test_a_node_carries_out_its_own_batch_read_back_only_if_the_stream_holds_it(tmp_path):
    """Reading back the entry it appended, a node carries out the events it
    kept instead of decoding them again; an entry of its name that holds
    something else (a process of the same name before a restart numbered its
    batches from 1 too) is decoded as any other, and earlier batches that never
    came back are let go."""
    import selectors

    from pychat.core.replicated import ReplicatedHall, encode_batch
    from pychat.core.timers import Timers
    from pychat.server.cluster import Cluster
    from pychat.server.redis import RedisAddress

    carried: list[tuple[str, list | None]] = []

    class Recording(ReplicatedHall):
        def apply(self, node, fence, data, batch=False, entry_id="", events=None):
            carried.append((entry_id, events))
            super().apply(node, fence, data, batch, entry_id, events)

    hall = Recording(HistoryStore(str(tmp_path / "n1.db")), node="n1")
    with contextlib.closing(selectors.DefaultSelector()) as sel:
        cluster = Cluster(RedisAddress("redis://127.0.0.1:9"), "n1", hall, sel, Timers(), time.monotonic)
        mine = [["bc", "nobody", 1, "sent by this process", 1.0]]
        for seq in (1, 2, 3):
            cluster._in_flight[seq] = (mine, encode_batch(mine))

        def entry(entry_id: str, seq: int, events: list) -> list:
            return [entry_id.encode(), [b"n", b"n1", b"s", str(seq).encode(), b"m", encode_batch(events)]]

        older = [["bc", "nobody", 1, "sent before a restart", 1.0]]
        cluster._entries([[b"pychat:stream", [entry("1-1", 2, older), entry("1-2", 3, mine)]]])
    assert carried == [("1-1", None), ("1-2", mine)]
    assert carried[1][1] is mine  # not decoded again
    assert cluster._in_flight == {}  # batch 1 never came back: let go


def test_a_busy_pass_is_encoded_once_in_entries_within_bounds(tmp_path, monkeypatch):
    """A pass of thousands of events is cut into entries before it is encoded,
    so that each event is encoded once (not once per halving of a batch too
    large); a part of long events too large for one entry is cut by the size
    it came to, and its events encoded a second time, not more."""
    import marshal
    import selectors

    from pychat.core.replicated import ReplicatedHall
    from pychat.core.timers import Timers
    from pychat.server import cluster as cluster_module
    from pychat.server.redis import RedisAddress

    encoded: list[int] = []
    real_encode = cluster_module.encode_batch
    monkeypatch.setattr(cluster_module, "encode_batch", lambda events: encoded.append(len(events)) or real_encode(events))
    hall = ReplicatedHall(HistoryStore(str(tmp_path / "n1.db")), node="n1")
    with contextlib.closing(selectors.DefaultSelector()) as sel:
        cluster = cluster_module.Cluster(RedisAddress("redis://127.0.0.1:9"), "n1", hall, sel, Timers(), time.monotonic)
        appended: list[bytes] = []
        monkeypatch.setattr(cluster.cmd, "call", lambda callback, *args: appended.append(args[-1]))

        def one_pass(texts: list[str]) -> tuple[int, list[bytes]]:
            encoded.clear()
            appended.clear()
            for text in texts:
                cluster.publish(["bc", "nobody", 1, text, 1.0])
            cluster._append_pending()
            assert [event[3] for payload in appended for event in marshal.loads(payload)] == texts
            return sum(encoded), list(appended)

        shorts = [f"short {i}" for i in range(5 * cluster_module.ENTRY_EVENTS - 100)]
        times, entries = one_pass(shorts)
        assert times == len(shorts)
        assert len(entries) >= 5
        assert all(len(marshal.loads(entry)) <= cluster_module.ENTRY_EVENTS for entry in entries)

        longs = [f"long {i} " + "x" * 4000 for i in range(100)]
        times, entries = one_pass(longs)
        assert times == 2 * len(longs)
        assert len(entries) >= 4 and max(map(len, entries)) <= cluster_module.ENTRY_BYTES
        mixed = [f"short {i}" if i % 50 else f"long {i} " + "x" * 4000 for i in range(3000)]
        times, entries = one_pass(mixed)
        assert times <= 2 * len(mixed)
        assert max(map(len, entries)) <= cluster_module.ENTRY_BYTES
        assert all(len(marshal.loads(entry)) <= cluster_module.ENTRY_EVENTS for entry in entries)


def test_a_busy_node_reads_the_stream_at_most_every_read_every(tmp_path, monkeypatch):
    """After two reads in a row of LARGE_READ bytes or more, the node rests (its
    server's loop, rest_until) and the next XREAD waits until READ_EVERY after
    the second arrived, then for the end of that pass (flush), after the pass's
    own appends: a busy node works in a few large passes. After a small read,
    one large read alone, a read that took longer than that to carry out, or a
    full one (the node is behind), it is asked for at once. A node that stops
    reading (its link down) is not busy any more."""
    import selectors

    from pychat.core.replicated import ReplicatedHall, encode_batch
    from pychat.core.timers import Timers
    from pychat.server import cluster as cluster_module
    from pychat.server.redis import RedisAddress

    now = [100.0]
    timers = Timers()
    hall = ReplicatedHall(HistoryStore(str(tmp_path / "n1.db")), node="n1")
    with contextlib.closing(selectors.DefaultSelector()) as sel:
        cluster = cluster_module.Cluster(RedisAddress("redis://127.0.0.1:9"), "n1", hall, sel, timers, lambda: now[0])
        reads: list[tuple] = []

        def call(callback, *args) -> None:  # the feed link, up: its XREAD waits for an answer
            reads.append(args)
            cluster.feed.waiting.append(callback)
        monkeypatch.setattr(cluster.feed, "call", call)
        monkeypatch.setattr(cluster.feed, "flush", lambda mono: None)
        cluster.ready, cluster.last_id = True, "0-0"
        ids = itertools.count(1)

        def answer(entries: list) -> None:
            assert len(cluster.feed.waiting) == 1  # never two XREADs at once
            cluster.feed.waiting.popleft()(entries)

        def reply(entries: int, size: int) -> list:
            text = "x" * (size // entries)  # broadcasts of a user nobody has: carried out as nothing
            payload = encode_batch([["bc", "nobody", 1, text, 1.0]])
            return [[b"pychat:events", [[f"1-{next(ids)}".encode(), [b"n", b"n2", b"m", payload]]
                                        for _ in range(entries)]]]

        cluster._read()
        answer(reply(1, 1000))
        assert len(reads) == 2 and reads[-1][0] == "XREAD"  # small: at once

        answer(reply(2, cluster_module.LARGE_READ))
        assert len(reads) == 3 and len(timers) == 0  # one large read alone: at once
        assert cluster.rest_until == 0.0

        answer(reply(2, cluster_module.LARGE_READ))
        assert len(reads) == 3 and len(timers) == 1  # the second in a row: later, and the node rests
        assert cluster.rest_until == now[0] + cluster_module.READ_EVERY
        now[0] += cluster_module.READ_EVERY / 2
        assert timers.pop_due(now[0]) == []
        now[0] += cluster_module.READ_EVERY / 2
        for callback in timers.pop_due(now[0]):
            callback()
        cluster.publish(["bc", "nobody", 1, "sent during the rest", 1.0])
        sent: list[str] = []
        monkeypatch.setattr(cluster.cmd, "call", lambda callback, *args: sent.append(args[0]))
        assert len(reads) == 3  # not before the end of the pass
        cluster.flush()
        assert sent == ["EVAL"] and len(reads) == 4 and reads[-1][-1] == cluster.last_id  # appended, then read

        carried = cluster.hall.apply

        def slow_apply(*args, **kwargs):  # carrying it out takes longer than READ_EVERY
            now[0] += cluster_module.READ_EVERY
            return carried(*args, **kwargs)
        monkeypatch.setattr(cluster.hall, "apply", slow_apply)
        answer(reply(2, cluster_module.LARGE_READ))
        assert len(reads) == 5 and len(timers) == 0 and cluster.rest_until < now[0]
        monkeypatch.setattr(cluster.hall, "apply", carried)

        answer(reply(cluster_module.READ_COUNT, 2 * cluster_module.LARGE_READ))
        assert len(reads) == 6 and len(timers) == 0  # behind: at once

        answer(reply(2, cluster_module.LARGE_READ))
        cluster.ready = False  # the link went down meanwhile: the rest's end asks for nothing
        for callback in timers.pop_due(now[0] + cluster_module.READ_EVERY):
            callback()
        cluster.flush()
        assert len(reads) == 6 and not cluster.feed.waiting

        answer_later = reply(2, cluster_module.LARGE_READ)
        cluster.ready = True
        cluster._read()
        answer(answer_later)  # busy again; then the link goes down and up, and reads at once
        cluster.ready = False
        cluster.ready = True
        cluster._read()
        assert len(reads) == 8
        now[0] += cluster_module.READ_EVERY
        for callback in timers.pop_due(now[0]):
            callback()  # the rest's end finds that read waiting: no second one
        cluster.flush()
        assert len(reads) == 8 and len(cluster.feed.waiting) == 1

        answer(reply(2, cluster_module.LARGE_READ))  # busy again, and then the link is lost
        assert cluster.rest_until > now[0]
        monkeypatch.setattr(cluster.cmd, "close", lambda reason: None)
        monkeypatch.setattr(cluster.feed, "close", lambda reason: None)
        cluster._link_down("test")
        assert cluster.rest_until == 0.0 and not cluster.ready
        cluster.ready = True
        cluster._read()
        answer(reply(2, cluster_module.LARGE_READ))  # the first large read after it: at once
        assert len(reads) == 10 and cluster.rest_until == 0.0


def test_a_read_asked_before_the_node_started_over_is_not_carried_out(tmp_path, monkeypatch):
    """Redis lost its data while the link stayed up (the lease was found gone):
    the node starts over, and the answer to the XREAD it had asked before moves
    neither its place in the stream nor its world. Once it is ready again, that
    late answer leads to a read from its new place."""
    import selectors

    from pychat.core.replicated import ReplicatedHall, encode_batch
    from pychat.core.timers import Timers
    from pychat.server import cluster as cluster_module
    from pychat.server.redis import RedisAddress

    carried: list[str] = []

    class Recording(ReplicatedHall):
        def apply(self, node, fence, data, batch=False, entry_id="", events=None):
            carried.append(entry_id)

    hall = Recording(HistoryStore(str(tmp_path / "n1.db")), node="n1")
    with contextlib.closing(selectors.DefaultSelector()) as sel:
        cluster = cluster_module.Cluster(RedisAddress("redis://127.0.0.1:9"), "n1", hall, sel, Timers(),
                                         time.monotonic)
        reads: list[tuple] = []

        def call(callback, *args) -> None:
            reads.append(args)
            cluster.feed.waiting.append(callback)
        monkeypatch.setattr(cluster.feed, "call", call)
        monkeypatch.setattr(cluster.feed, "flush", lambda mono: None)
        cluster.ready, cluster.last_id = True, "5-0"
        cluster._read()
        cluster.ready = False
        cluster._start_over("Redis lost its data (new epoch)")
        cluster.last_id, cluster.ready = "9-0", True  # its new place, as _leased or a snapshot sets it
        entry = [b"1-1", [b"n", b"n2", b"m", encode_batch([["bc", "nobody", 1, "from the old world", 1.0]])]]
        cluster.feed.waiting.popleft()([[b"pychat:events", [entry]]])
        assert carried == [] and cluster.last_id == "9-0"
        assert len(reads) == 2 and reads[-1][-1] == "9-0" and len(cluster.feed.waiting) == 1
        cluster.feed.waiting.popleft()([[b"pychat:events", [[b"9-1", entry[1]]]]])
        assert carried == ["9-1"]


def test_a_busy_node_rests_between_passes_and_a_signal_ends_the_rest(tmp_path, redis):
    """While the cluster's rest_until is ahead (a busy node, see the test above),
    a step of the server's loop handles nothing: a line a client sent waits
    until the rest is over. A signal ends a rest at once."""
    import selectors

    from pychat.server.config import ServerSettings
    from pychat.server.loop import Server

    server = Server(ServerSettings(host="127.0.0.1", port=0, flood_rate=0, cluster=redis.url, node_name="n1",
                                   db=str(tmp_path / "n1.db")))
    port = server.listen()[0][1]
    try:
        cluster = server.cluster
        assert cluster is not None
        wait_for(lambda: (server.step(0.05), cluster.ready)[1], what="the node to join the cluster")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            wait_for(lambda: (server.step(0.05), len(server.conns) == 1)[1], what="the connection")
            client.sendall(b"alice\n")
            start = time.monotonic()
            cluster.rest_until = rest_end = start + 0.5
            client.setblocking(False)
            seen, handled_at = b"", None
            while handled_at is None and time.monotonic() < start + 10:
                server.step(0.05)
                with contextlib.suppress(BlockingIOError):
                    seen += client.recv(65536)
                if b"hello alice!" in seen:
                    handled_at = time.monotonic()
            assert handled_at is not None, "the name was never taken"
            assert handled_at >= rest_end  # not read before the rest was over
            while b"no messages in #general yet" not in seen and time.monotonic() < start + 10:
                server.step(0.05)  # the rest of the greeting, so that nothing more is on its way
                with contextlib.suppress(BlockingIOError):
                    seen += client.recv(65536)
            assert seen.endswith(b"no messages in #general yet\r\n"), seen

            cluster.rest_until = time.monotonic() + 60
            client.sendall(b"/list\n")
            conn = next(iter(server.conns.values()))
            with selectors.DefaultSelector() as waiting:
                waiting.register(conn.sock, selectors.EVENT_READ)
                assert waiting.select(5), "the line never reached the server's socket"
            for _ in range(3):
                assert server.step(0.0) is None
            with pytest.raises(BlockingIOError):
                client.recv(65536)  # resting: the line was not read, so not answered
            server.request_stop()  # what a signal does: a byte on the wakeup socket
            start = time.monotonic()
            server.step()
            assert time.monotonic() - start < 1.0  # the rest ended at once
            assert server.stopping
    finally:
        server.close()
