"""Trust: nobody can freeze the server cheaply, fake what it says, pass for
someone else, or read what is not theirs.

Attackers connect from 127.0.0.1; bystanders from other loopback addresses
(any of 127/8 reaches the server on Linux), as other hosts would.
"""

from __future__ import annotations

import base64
import os
import re
import resource
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time

import pytest

from helpers import EVENT, ROOT, LineClient, wait_for
from pychat.core import roomkeys
from pychat.core.history import HistoryStore
from pychat.core.limits import HallLimits, Rate
from pychat.core.errors import Busy, ChatError
from pychat.core.model import Hall, ListOutbox
from pychat.protocols.line.render import LINE

NOTICE = re.compile(EVENT + r"#\S+ (-->|<--|--) ")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def round_trips(client: LineClient, seconds: float) -> list[float]:
    """Time the client's one-line requests for SECONDS."""
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        client.sync()
        times.append(time.monotonic() - start)
    return times


@pytest.fixture
def alice_and_bob(server):
    alice, bob = server.client("alice"), server.client("bob")
    alice.sync()
    yield alice, bob


@pytest.fixture
def cheap_keys(monkeypatch):
    monkeypatch.setattr(roomkeys, "ITERATIONS", 10)


def hall_with(**limits) -> Hall:
    return Hall(HistoryStore(":memory:"), history_lines=5, limits=HallLimits(**limits))


def user_in(hall: Hall, name: str, address: str = "10.0.0.1"):
    return hall.register(name, ListOutbox(), LINE, address)


# -- 1. slow work is budgeted per address and for the whole server ------------------------

def test_key_guessing_from_one_address_does_not_freeze_anyone(make_server):
    srv = make_server("--log-level", "info")  # the defaults: 10 lines/s, burst 20, 100 per address
    owner = srv.client("owner", source="127.0.0.2")
    owner.send("/create vault s3cret")
    owner.expect("you joined #vault")
    bystander = srv.client("bystander", source="127.0.0.3")
    guessers = [srv.client(f"g{i}") for i in range(12)]
    for i, g in enumerate(guessers):  # 480 guesses: about 10 s of hashing if all were checked
        g.send_raw("".join(f"/join vault guess{i}x{n}\n" for n in range(40)).encode())
    times = round_trips(bystander, 3.0)
    assert max(times) < 1.0, f"a bystander waited {max(times):.2f} s"
    told = guessers[-1].expect(r"^! (too many key checks from your address|the server is busy checking keys); "
                               r"try again in \d+ s$")
    assert told
    owner.send("/leave")
    owner.send("/join vault s3cret")  # the owner's address has its own budget
    owner.expect("you joined #vault")


def test_key_checks_have_a_per_address_and_a_server_wide_budget(cheap_keys):
    hall = hall_with(checks_per_address=Rate(5, 0.5), checks_server=Rate(2, 6), checks_suspect=Rate(1, 2))
    owner = user_in(hall, "owner", "10.0.0.9")
    vault = hall.create(owner, "vault", "right", 0.0)
    guesser = user_in(hall, "guesser", "10.0.0.1")
    # Each wrong key in a row costs the address twice the one before.
    for n in range(3):
        with pytest.raises(ChatError, match="^wrong key for #vault$"):
            hall.join(guesser, "vault", f"guess{n}", 100.0 + n)
    with pytest.raises(ChatError, match=r"^too many key checks from your address; try again in 3 s$"):
        hall.join(guesser, "vault", "guess3", 103.0)
    # Guessers from many addresses empty their share of the server's budget...
    others = [user_in(hall, f"u{i}", f"10.1.0.{i}") for i in range(4)]
    for other in others:
        with pytest.raises(ChatError, match="wrong key"):
            hall.join(other, "vault", "nope", 110.0 + others.index(other))  # one each: now suspects
    with pytest.raises(ChatError, match="wrong key"):
        hall.join(others[0], "vault", "nope", 120.0)
    with pytest.raises(ChatError, match=r"^the server is busy checking keys; try again in 1 s$") as refused:
        hall.join(others[1], "vault", "nope", 120.2)
    assert not isinstance(refused.value, Busy)  # a suspect is refused, not held
    # ...but someone with no wrong key checks from the other share, at that moment.
    vault.good_key = None  # as after a restart: the right key must be hashed again
    friend = user_in(hall, "friend", "10.2.0.1")
    hall.join(friend, "vault", "right", 120.2)
    assert vault in friend.rooms
    # Hashes are spaced out whoever asks: right after one, even an honest check waits (it is held).
    vault.good_key = None
    hall.part(friend, vault, "", 120.25)
    with pytest.raises(Busy) as held:
        hall.join(friend, "vault", "right", 120.25)
    assert held.value.wait == pytest.approx(0.05)
    hall.join(friend, "vault", "right", 120.35)
    # The right key, once known, costs no check at all, however often.
    for i in range(20):
        hall.part(friend, vault, "", 121.0)
        hall.join(friend, "vault", "right", 121.0)


def registered(srv, names: list[str], password: str) -> None:
    """Accounts NAMES with PASSWORD, registered one after another (each from its own address); nobody online."""
    for i, name in enumerate(names):
        owner = srv.client(name, source=f"127.0.1.{i + 1}")
        owner.send(f"/register {password}")
        owner.expect(rf"^\* the name {name} is yours")
        owner.send("/quit")
        owner.wait_closed()


@pytest.mark.parametrize("flood", [[], ["--flood-rate", "0"]], ids=["flood-control", "no-flood-control"])
def test_when_the_server_is_busy_checking_passwords_honest_logins_wait_their_turn(make_server, flood):
    srv = make_server("--log-level", "debug", *flood)
    names = ["ann", "ben", "cat", "dan"]
    registered(srv, names, "correct horse")
    watcher = srv.client("watcher")
    logins = [LineClient(srv.port, source=f"127.0.2.{i + 1}") for i in range(len(names))]
    for client, name in zip(logins, names):  # all at once: the server's burst is one password check
        client.send_raw(f"{name}\r\ncorrect horse\r\nhello from {name}\r\n".encode())
    for client, name in zip(logins, names):
        client.expect(rf"^\* hello {name}! you are logged in;")
        assert not [line for line in client.seen if line.startswith("! ")], client.seen
    said = [watcher.expect(EVENT + r"#general (\w+): hello from \1$") for _ in names]
    assert sorted(line.split()[-1] for line in said) == sorted(names)  # each line waited for its login
    assert wait_for(lambda: "waits" in srv.log(), what="a held check in the log")


def test_irc_sasl_logins_wait_their_turn_too(make_server):
    srv = make_server()
    names = ["eve", "fay", "gus"]
    registered(srv, names, "correct horse")
    clients = [LineClient(srv.irc_port, source=f"127.0.3.{i + 1}") for i in range(len(names))]
    for client, name in zip(clients, names):
        creds = base64.b64encode(f"{name}\0{name}\0correct horse".encode()).decode()
        client.send_raw(("CAP LS 302\r\nCAP REQ :sasl\r\nAUTHENTICATE PLAIN\r\n"
                         f"AUTHENTICATE {creds}\r\nCAP END\r\nNICK {name}\r\nUSER {name} 0 * :{name}\r\n").encode())
    for client, name in zip(clients, names):
        client.expect(r" 903 \S+ :SASL authentication successful$")
        client.expect(rf" 001 {name} ")
        assert not [line for line in client.seen if " 904 " in line], client.seen


def test_passwords_reach_neither_the_log_nor_the_database(make_server, tmp_path):
    db = tmp_path / "chat.db"
    srv = make_server("--log-level", "debug", "--max-per-ip", "0", db=str(db))
    owner = srv.client("owner")
    owner.send("/register first-Secret-1")
    owner.expect(r"^\* the name owner is yours")
    owner.send("/password first-Secret-1 second-Secret-2")
    owner.expect(r"^\* your password is changed")
    owner.send("/logout")
    owner.expect(r"^\* you are logged out")
    owner.send("/login owner wrong-Secret-3")
    owner.expect(r"^! wrong password for owner")
    irc = LineClient(srv.irc_port)
    creds = base64.b64encode(b"owner\0owner\0second-Secret-2").decode()
    irc.send_raw(f"CAP LS 302\r\nCAP REQ :sasl\r\nAUTHENTICATE PLAIN\r\nAUTHENTICATE {creds}\r\n".encode())
    irc.expect(r" 903 ")
    srv.stop()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("chat.db*"))
    assert b"scrypt$" in stored  # the hash is there...
    for secret in ("first-Secret-1", "second-Secret-2", "wrong-Secret-3", creds):
        assert secret not in srv.log()
        assert secret.encode() not in stored  # ...and no password in clear


def test_refused_checks_cost_no_hashing(cheap_keys, monkeypatch):
    hall = hall_with(checks_per_address=Rate(1, 0.001))
    owner = user_in(hall, "owner", "10.0.0.9")
    hall.create(owner, "vault", "right", 0.0)
    calls = []
    real = roomkeys.verify_key
    monkeypatch.setattr("pychat.core.model.verify_key", lambda k, h: calls.append(k) or real(k, h))
    guesser = user_in(hall, "guesser")
    for n in range(50):
        with pytest.raises(ChatError):
            hall.join(guesser, "vault", f"g{n}", 1.0)
    assert calls == ["g0"]


def test_names_that_normalize_to_megabytes_are_refused_cheaply(server):
    """U+FDFA becomes 18 characters under NFKC: a line of them must not cost the loop."""
    alice = server.client("alice")
    huge = "\ufdfa" * 1300
    c = LineClient(server.port)
    c.give_name(huge)
    reply = c.read_line()
    assert reply.startswith("! invalid name") and len(reply) < 200
    alice.send(f"/dm {huge} hi")
    reply = alice.expect("^!")
    assert reply.startswith("! no such user") and len(reply) < 200
    alice.send(f"/nick {huge}")
    assert len(alice.expect("^!")) < 200


def test_list_patterns_are_bounded_and_match_whole_names_with_wildcards(make_server):
    srv = make_server("--max-per-ip", "0")
    alice = srv.client("alice")
    for name in ("dev", "devops", "webdev"):
        alice.send(f"/join {name}")
        alice.send("hi")
    alice.send("/join general")
    alice.expect("you joined #general")
    alice.send("/list " + "*a" * 20)
    assert alice.expect("^!") == "! a pattern has at most 32 characters"
    alice.send("/list dev*")  # a wildcard pattern is matched against the whole name
    assert alice.lines_until(r"#devops")[-3:] == ["* 2 rooms, busiest first:", "*   #dev: 0 users",
                                                  "*   #devops: 0 users"]
    alice.send("/list dev")  # a plain one anywhere in it
    assert alice.expect(r"^\* \d+ rooms") == "* 3 rooms, busiest first:"


def test_history_answers_are_bounded_and_wait_for_the_reader(make_server):
    srv = make_server("--flood-rate", "0")
    alice = srv.client("alice")
    alice.send_raw(("w" * 3000 + "\n").encode() * 100)  # 300 KB of history
    alice.sync()
    bob = LineClient(srv.port, rcvbuf=4096)
    bob.register("bob")
    bob.send("/history 500")
    lines = bob.lines_until(r"^\* end of history")
    head = next(line for line in lines if line.startswith("* last "))
    assert head.endswith("(older ones do not fit in one answer):")
    assert sum(len(line) + 2 for line in lines if "alice: w" in line) <= 64 * 1024
    bob.send_raw(b"/history 500\n" * 20)  # asked again and again without reading
    bob.expect(r"^! your earlier answers are still on their way; ask for history again in a moment$", timeout=30)


def test_a_client_dropped_during_the_flush_is_announced_only_once_stored(tmp_path):
    """Dropping a client tells its room; that notice must be committed before anyone gets it."""
    class FailsOnQuitNotices(HistoryStore):
        """A disk that fails whenever a batch holds a quit notice."""
        def commit(self) -> bool:
            if any(row[4] == NOTICE_KIND and "has quit" in row[6] for row in self._pending):
                self._pending.clear()
                return False
            return super().commit()

    from pychat.server.config import ServerSettings
    from pychat.core.history import NOTICE as NOTICE_KIND
    from pychat.server.loop import Server
    started: dict = {}
    ready = threading.Event()

    def serve():  # the store is used in the thread that made it, as SQLite requires
        server = Server(ServerSettings(host="127.0.0.1", port=0, flood_rate=0.5, flood_burst=2),
                        FailsOnQuitNotices())
        started.update(server=server, port=server.listen()[0][1])
        ready.set()
        server.run()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    server, port = started["server"], started["port"]
    try:
        alice = socket.create_connection(("127.0.0.1", port))
        alice.sendall(b"alice\n" + b"x\n" * 50)  # then paused: the server stops reading alice
        wait_for(lambda: any(c.paused for c in list(server.conns.values())), what="alice to be paused")
        bob, carol = LineClient(port), LineClient(port)
        bob.register("bob")
        carol.register("carol")
        alice.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        alice.close()  # a reset the server only sees when it next writes to alice
        carol.send("hello")
        bob.expect("carol: hello$")
        bob.sync()
        carol.send("again")
        bob.expect("carol: again$")
        assert not any("alice has quit" in line for line in bob.seen)
    finally:
        server.request_stop()
        thread.join(10)


def test_the_connections_of_one_address_share_a_line_budget(make_server):
    srv = make_server("--log-level", "info")  # defaults: 10 lines/s and 20 at once per connection
    watcher = srv.client("watcher", source="127.0.0.2")
    senders = [srv.client(f"s{i}") for i in range(50)]
    for i, sender in enumerate(senders):  # 2,000 lines: 1,000 within one connection's burst each
        sender.send_raw("".join(f"m{i}x{n}\n" for n in range(40)).encode())
    start = time.monotonic()
    watcher.expect(r"s\d+: m\d+x\d+$")
    got = 1
    while time.monotonic() - start < 1.0:
        try:
            watcher.expect(r"s\d+: m\d+x\d+$", timeout=max(0.01, 1.0 - (time.monotonic() - start)))
            got += 1
        except AssertionError:
            break
    # The address's share is 200 at once and 100 a second; alone, each connection's
    # burst would have let 1,000 through at once.
    assert got <= 450, got


# -- 2. rooms: paced creation, a cap, idle rooms forgotten, bounded lists ----------------

def test_room_creation_is_paced_per_user_and_per_address():
    hall = hall_with(rooms_per_user=Rate(3, 1 / 10), rooms_per_address=Rate(10, 1 / 6))
    alice = user_in(hall, "alice")
    for n in range(3):
        hall.create(alice, f"a{n}", None, 0.0)
    with pytest.raises(ChatError, match=r"^you are creating rooms too fast; try again in 10 s$"):
        hall.create(alice, "a3", None, 0.0)
    hall.join(alice, "a3", None, 10.0)  # a join that creates counts the same; 10 s later it is allowed
    # Users from one address share its budget of 10.
    mates = [user_in(hall, f"m{i}", "10.0.0.2") for i in range(4)]
    made = 0
    with pytest.raises(ChatError, match=r"^too many rooms created from your address; try again in 6 s$"):
        for mate in mates:
            for n in range(3):
                hall.create(mate, f"{mate.name}r{n}", None, 0.0)
                made += 1
    assert made == 10
    outsider = user_in(hall, "outsider", "10.9.9.9")  # another address is not affected
    hall.create(outsider, "elsewhere", None, 10.0)


def test_max_rooms_and_per_address_off(make_server):
    srv = make_server("--max-rooms", "2", "--max-per-ip", "0")
    alice, bob = srv.client("alice"), srv.client("bob")
    alice.send("kept by its history")
    bob.send("/create second")
    bob.expect("you joined #second")
    bob.send("history here too")
    bob.send("/create third")
    assert bob.expect("^!") == "! the server holds its maximum of 2 rooms; join an existing one (/list shows them)"


def test_idle_rooms_are_forgotten_rooms_with_history_are_kept(tmp_path, make_server):
    db = str(tmp_path / "rooms.db")
    srv = make_server(db=db)
    alice, bob = srv.client("alice"), srv.client("bob")
    alice.send("/create scratch k1")
    alice.expect("you joined #scratch")
    alice.send("/create talk")
    alice.expect("you joined #talk")  # #scratch is empty and never had a message
    alice.send("words keep a room")
    alice.send("/leave")
    alice.expect("you left #talk")
    bob.send("/list")
    listing = bob.lines_until(r"^\*\s+#talk")
    assert not any("scratch" in line for line in listing)
    bob.send("/create scratch k2")  # the name is free again, with another key
    bob.expect(r"you joined #scratch \(locked\)")
    srv.stop()
    # At a restart every room is empty: those without messages are forgotten.
    again = make_server(db=db)
    carol = again.client("carol")
    carol.send("/list")
    assert carol.lines_until(r"^\*\s+#talk")[-3:] == ["* 2 rooms, busiest first:", "*   #general: 1 user",
                                                       "*   #talk: 0 users"]
    again.stop()
    rooms = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM rooms")}
    assert "scratch" not in rooms and "talk" in rooms


def test_the_default_room_cannot_be_taken_over(tmp_path, make_server):
    db = str(tmp_path / "takeover.db")
    srv = make_server(db=db)
    mallory = srv.client("mallory")
    mallory.send("/leave")  # #general is empty and silent now
    mallory.expect("you left")
    mallory.send("/create general mine")
    assert mallory.expect("^!") == "! #general already exists: /join general"
    mallory.send("/join general mine")
    mallory.expect("you joined #general: 1 user here")  # not locked: a key for an open room is ignored
    mallory.send("/leave")
    srv.stop()
    again = make_server(db=db)
    newcomer = again.client("newcomer")
    newcomer.send("/roominfo")
    assert newcomer.expect(r"^\* #general") == "* #general: 1 user: newcomer"
    hall = hall_with()
    maker = user_in(hall, "maker")
    hall.default_room = "lobby"
    with pytest.raises(ChatError, match="^#lobby is where everyone lands; it cannot be locked$"):
        hall.create(maker, "lobby", "key", 0.0)


def test_room_names_follow_the_name_rules_and_refuse_look_alikes(server):
    alice = server.client("alice")
    alice.send("/join g\u0435neral")  # a Cyrillic e in a Latin word
    assert alice.expect("^!").endswith("a room name mixes scripts (Latin and Cyrillic)")
    alice.send("/join \uff47eneral")  # fullwidth g: the same room
    assert alice.expect("^[!*]") == "! you are already in #general"
    alice.send("/create coco")
    alice.expect("you joined #coco")
    alice.send("/create \u0441\u043e\u0441\u043e")  # all Cyrillic, and it looks like coco
    assert alice.expect("^!") == "! #\u0441\u043e\u0441\u043e looks too much like #coco: /join coco, or choose another name"


def test_room_listings_are_bounded_busiest_first():
    hall = hall_with(rooms_per_user=Rate(1e9, 1), rooms_per_address=Rate(1e9, 1))
    maker = user_in(hall, "maker")
    for n in range(60):
        room = hall.join(maker, f"room{n:02}", None, 0.0, leave=next(iter(maker.rooms), None))
        hall.say(maker, room, "keep", 0.0)
    crowd = [user_in(hall, f"c{i}") for i in range(5)]
    for i, user in enumerate(crowd):
        hall.join(user, "room07" if i < 3 else "room42", None, 1.0)

    def names(listing):
        total, rooms = listing
        return total, [(room.name, len(room.members)) for room in rooms]

    total, top = names(hall.busiest_rooms(limit=10))
    assert total == 60 and len(top) == 10
    assert top[:4] == [("room07", 3), ("room42", 2), ("room59", 1), ("room00", 0)]
    assert names(hall.busiest_rooms())[0] == 60 and len(hall.busiest_rooms()[1]) == 50
    assert names(hall.busiest_rooms("ROOM1")) == (10, [(f"room1{n}", 0) for n in range(10)])
    assert names(hall.busiest_rooms("room5?")) == (10, [("room59", 1)] + [(f"room5{n}", 0) for n in range(9)])
    assert names(hall.busiest_rooms("nothing")) == (0, [])
    hall.check_invariants()


def test_list_pattern_and_greeting_over_the_wire(make_server):
    srv = make_server("--max-per-ip", "0")
    alice = srv.client("alice")
    for name in ("dev", "devops", "design"):
        alice.send(f"/join {name}")
        alice.expect(f"you joined #{name}")
        alice.send("hello")
    alice.send("/list dev")
    lines = alice.lines_until(r"^\*\s+#devops")
    assert lines[-3:] == ["* 2 rooms, busiest first:", "*   #dev: 0 users", "*   #devops: 0 users"]
    newcomer = LineClient(srv.port)
    newcomer.give_name("newcomer")
    greeting = newcomer.lines_until(r"^\* you joined")
    # alice is in #design; #general, the default room, is kept though empty and silent.
    assert greeting[1:6] == ["* 4 rooms, busiest first:", "*   #design: 1 user", "*   #dev: 0 users",
                             "*   #devops: 0 users", "*   #general: 0 users"]


def test_no_empty_room_list_right_before_joining_the_default_room(server):
    c = LineClient(server.port)
    c.give_name("first")
    lines = c.lines_until(r"^\* you joined #general")
    assert not any("no rooms yet" in line for line in lines)


# -- 3. a flooding client's waiting input stays compact ----------------------------------

def test_a_flooding_clients_waiting_input_stays_compact(make_server):
    srv = make_server("--default-room", "", "--max-per-ip", "0")
    flooders = [srv.client(f"f{i}") for i in range(40)]
    before = rss(srv.proc.pid)
    chunk = b"ab\n" * 21845  # one 64 KiB read: 21,845 lines
    for f in flooders:
        f.sock.setblocking(False)
        try:
            f.sock.send(chunk * 4)
        except BlockingIOError:
            pass
        f.sock.setblocking(True)
    for f in flooders:  # each was read: its first lines were answered
        f.expect(r"^! you are not in a room")
    per_client = (rss(srv.proc.pid) - before) / len(flooders)
    assert per_client < 400 * 1024, f"{per_client / 1024:.0f} KiB per flooding client"


# -- 4. the log: never blocking, throttled, without what users say ----------------------

def start_with_unread_stderr(tmp_path, *args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "pychat_server.py"), "127.0.0.1", "--port", "0", "--irc-port", "off", "--web-port", "off",
                             "--db", ":memory:", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.stderr is not None
    for line in proc.stderr:  # read only up to the port; nobody reads stderr after that
        match = re.search(rb"listening on \S+ port (\d+)", line)
        if match:
            return proc, int(match.group(1))
    raise AssertionError("the server did not start")


def test_an_unread_stderr_never_stops_the_server(tmp_path):
    proc, port = start_with_unread_stderr(tmp_path, "--log-level", "debug", "--max-per-ip", "0")
    try:
        bystander = LineClient(port, source="127.0.0.250")
        bystander.register("bystander")
        # Log lines from 40 addresses: far more than a pipe holds (64 KiB).
        for host in range(2, 42):
            for n in range(8):
                s = socket.socket()
                s.settimeout(10)
                s.bind((f"127.0.0.{host}", 0))
                s.connect(("127.0.0.1", port))
                s.sendall(f"h{host}n{n}\n/nick h{host}m{n}\n/quit\n".encode())
                while s.recv(65536):
                    pass
                s.close()
        times = round_trips(bystander, 0.5)
        assert max(times) < 2.0
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_the_log_sink_drops_and_counts_when_nobody_reads(tmp_path):
    from pychat.server.logsink import NonBlockingStderr
    read_end, write_end = os.pipe()
    try:
        sink = NonBlockingStderr(write_end)
        line = "x" * 99 + "\n"
        start = time.monotonic()
        for _ in range(10_000):  # 1 MB into a 64 KiB pipe
            sink.write(line)
            sink.flush()
        assert time.monotonic() - start < 5  # it never waited for a reader
        assert sink.dropped > 0
        os.set_blocking(read_end, False)
        got = b""
        while True:
            sink.flush()
            try:
                chunk = os.read(read_end, 1 << 20)
            except BlockingIOError:
                if not sink.pending:
                    break
                continue
            got += chunk
        assert re.search(rb"WARNING \d+ log lines were dropped: stderr was not being read\n$", got)
        sink.close()
    finally:
        os.close(read_end)
        os.close(write_end)


def test_repeated_refusals_from_one_address_are_throttled_in_the_log(make_server):
    srv = make_server("--max-per-ip", "1")
    holder = srv.client("holder")  # noqa: F841  (the one connection allowed)
    for _ in range(300):
        c = LineClient(srv.port)
        assert c.read_line().startswith("! too many")
        c.close()
    refusals = [line for line in srv.log().splitlines() if "refused 127.0.0.1" in line]
    assert 10 <= len(refusals) <= 60

    def suppressed_said():
        c = LineClient(srv.port)
        c.read_line()
        c.close()
        return re.search(r"refused .*\((\d+) more log lines from 127\.0\.0\.1 were suppressed\)", srv.log())

    assert int(wait_for(suppressed_said, interval=0.2, what="the count of suppressed lines").group(1)) > 200


def test_what_users_say_never_reaches_the_log(make_server):
    srv = make_server("--log-level", "debug")
    alice, bob = srv.client("alice"), srv.client("bob")
    alice.send("/create vault s3cret-key")
    alice.expect("you joined #vault")
    alice.send("the vault code is 4711")
    alice.send("/me hides 4712")
    alice.send("/dm bob direct 4713")
    bob.expect("direct 4713")
    alice.send("/bc broadcast 4714")
    bob.expect("broadcast 4714")
    alice.send("/quit leaving 4715")
    alice.wait_closed()
    bob.sync()
    log = srv.log()
    assert "alice" in log and "vault" in log  # names and rooms are logged
    for said in ("4711", "4712", "4713", "4714", "4715", "s3cret-key"):
        assert said not in log


# -- 5. a failed commit withholds its output and harms nothing stored before -------------

def test_a_failed_commit_withholds_the_batch_and_mixes_no_rooms(tmp_path):
    db = str(tmp_path / "chat.db")

    def ignore_sigxfsz():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    proc = subprocess.Popen([sys.executable, str(ROOT / "pychat_server.py"), "127.0.0.1", "--port", "0", "--irc-port", "off", "--web-port", "off",
                             "--db", db, "--flood-rate", "0"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=tmp_path,
                            preexec_fn=ignore_sigxfsz)
    log_lines: list[str] = []
    port_seen = threading.Event()

    def read_log():  # a pipe: not subject to the file-size limit
        for raw in proc.stderr:
            log_lines.append(raw.decode(errors="replace"))
            if "listening on" in log_lines[-1]:
                port_seen.set()

    threading.Thread(target=read_log, daemon=True).start()
    try:
        assert port_seen.wait(10)
        port = int(re.search(r"port (\d+)", next(l for l in log_lines if "listening on" in l)).group(1))
        alice, bob = LineClient(port), LineClient(port)
        alice.register("alice")
        bob.register("bob")
        alice.send("stored one")
        bob.expect("alice: stored one$")

        _, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1, hard))  # no file can grow now
        alice.send("lost one")
        assert alice.expect("^!") == ("! your message could not be stored (the server cannot write its history), "
                                      "so nobody received it; try again later")
        carol = LineClient(port, source="127.0.0.2")
        carol.register("carol")
        carol.send("/create vault k")
        carol.expect("you joined #vault")
        carol.send("vault secret")
        carol.expect("^! your message could not be stored")
        fay = LineClient(port, source="127.0.0.5")
        fay.register("fay")
        fay.send_raw(b"/create brief\nsaid in brief\n/leave\n")  # one batch: said, then left
        fay.expect("^! your message could not be stored")

        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        carol.send("vault second")
        carol.sync()
        assert not any(line.startswith("!") for line in carol.sync())
        dave = LineClient(port, source="127.0.0.3")
        dave.register("dave")
        dave.send("/create open")
        dave.expect("you joined #open")
        dave.send("open words")
        dave.sync()
        erin = LineClient(port, source="127.0.0.4")
        erin.register("erin")
        erin.send("/join open")
        replay = erin.lines_until(r"^\* end of history")
        assert any(line.endswith("dave: open words") for line in replay)
        assert not any("vault" in line for line in replay)
        fay.send("/list brief")  # its only message was taken back: an idle room, forgotten
        assert fay.expect("^[*!] no room|^\\* 1 room") == "* no room matches 'brief'"
        alice.send("stored two")
        bob.expect("alice: stored two$")
        assert not any("lost one" in line for line in bob.seen)
        assert any(re.search(r"history write failed, [1-9]\d* events not stored", line) for line in log_lines)
    finally:
        proc.kill()
        proc.wait()
    store = HistoryStore(db)
    rooms = {r.name: r.id for r in store.rooms()}
    assert set(rooms) == {"general", "vault", "open"} and len(set(rooms.values())) == 3
    assert [e.text for e in store.recent(rooms["general"], 10)] == ["stored one", "stored two"]
    assert [e.text for e in store.recent(rooms["vault"], 10)] == ["vault second"]
    assert [e.text for e in store.recent(rooms["open"], 10)] == ["open words"]
    store.close()


# -- 6. nobody can fake a notice, pass for someone else, or see into a locked room ------

def test_notices_cannot_be_imitated(make_server):
    srv = make_server()
    alice, bob = srv.client("alice"), srv.client("bob")
    alice.send("/me has joined")
    alice.send("--> mallory has joined")
    alice.send("/me <-- bob has quit")
    fakes = [bob.expect("has joined$"), bob.expect("mallory"), bob.expect("bob has quit")]
    carol = srv.client("carol")
    real = bob.expect("carol has joined")
    assert NOTICE.match(real) and real.endswith("#general --> carol has joined")
    for fake in fakes:
        assert not NOTICE.match(fake), fake
    for name in ("-->", "--", "<--", "-", ".", "..", "1abc"):
        c = LineClient(srv.port)
        c.give_name(name)
        assert c.read_line().startswith("! invalid name"), name
    carol.sync()


def test_nobody_can_take_a_look_alike_of_a_name_online(server):
    alice = server.client("alice")
    for fake in ("\u0430lice", "\uff41lice", "ALICE", "al\u0456ce", "\u0430\u04cf\u0456\u0441\u0435"):
        c = LineClient(server.port)
        c.give_name(fake)
        reply = c.read_line()
        assert reply.startswith("! "), (fake, reply)  # taken, or mixing scripts
        c.close()
    bob = server.client("bob")
    bob.send("/nick \u0430lice")
    assert bob.expect("^!").startswith("! invalid name")
    bob.send("/dm \uff41lice hi")  # a look-alike still reaches the one user it stands for
    alice.expect(r"\(dm\) bob: hi$")


def test_relayed_text_loses_invisible_and_direction_characters(alice_and_bob):
    alice, bob = alice_and_bob
    alice.send("abc\u202edcba \u200bzero\u2060width\u2028next\u2029para \U0001f469\u200d\U0001f4bb a\u200db")
    line = bob.expect("abc")
    assert line.endswith("alice: abcdcba zerowidth next para \U0001f469\u200d\U0001f4bb ab")


def test_a_locked_rooms_members_are_not_shown_to_outsiders(make_server):
    srv = make_server()
    alice, bob, carol = srv.client("alice"), srv.client("bob"), srv.client("carol")
    alice.send("/create vault k")
    alice.expect("you joined #vault")
    bob.send("/join vault k")
    bob.expect("you joined #vault")
    carol.send("/users")
    assert carol.lines_until(r"carol in")[-3:] == [
        "*   alice in a private room", "*   bob in a private room", "*   carol in #general"]
    bob.send("/users")
    assert bob.lines_until(r"carol in")[-3:] == [
        "*   alice in #vault", "*   bob in #vault", "*   carol in #general"]


# -- 7. rough edges ---------------------------------------------------------------------

def test_quit_and_help_work_at_the_name_prompt(server):
    c = LineClient(server.port)
    c.expect("what is your name")
    c.send("/help")
    c.lines_until(r"/help COMMAND shows")
    c.expect("what is your name")
    c.send("/join general")
    assert c.read_line() == "! choose a name first (or /quit to leave, /help for the commands)"
    c.expect("what is your name")
    c.send("/quit")
    assert c.read_line() == "* goodbye!"
    assert c.wait_closed() == []
    watcher = server.client("watcher")
    watcher.send("/users")
    assert watcher.expect(r"^\* \d+ users? online") == "* 1 user online:"  # no user called "/quit"


def server_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "pychat_server.py"), "--irc-port", "off", "--web-port", "off", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_a_bad_default_room_is_refused_at_start():
    result = server_cli("127.0.0.1", "--port", "0", "--db", ":memory:", "--default-room", "bad room!")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "pychat-server: error: argument --default-room: 'bad room!' is not a valid room name: "
        "U+0020 SPACE is not allowed in a room name (letters, digits, '_' and '-' only)")


def test_flag_errors_say_what_is_wrong():
    result = server_cli("--port", "abc")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "pychat-server: error: argument --port: not a port number (0-65535): 'abc'"
    result = server_cli("--max-line", "lots")
    assert result.stderr.strip().splitlines()[-1] == \
        "pychat-server: error: argument --max-line: not a whole number: 'lots'"


def test_a_port_in_use_is_one_plain_line(server):
    result = server_cli("127.0.0.1", "--port", str(server.port), "--db", ":memory:")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        f"pychat-server: cannot listen on 127.0.0.1 port {server.port} (line protocol): Address already in use"


def test_one_replayed_message_is_singular_and_long_ones_are_clipped(server):
    alice = server.client("alice")
    alice.send("w" * 4000)
    alice.sync()
    bob = LineClient(server.port)
    bob.give_name("bob")
    replay = bob.lines_until(r"^\* end of history")
    assert "* last message of #general:" in replay
    clipped = next(line for line in replay if "alice: w" in line)
    assert clipped.endswith("alice: " + "w" * 400 + "... [3600 more characters: /history shows it whole]")
    bob.send("/history")
    whole = bob.lines_until(r"^\* end of history")
    assert any(line.endswith("alice: " + "w" * 4000) for line in whole)


def test_a_dropped_slow_reader_is_reset_not_trickled(make_server):
    """The kernel's buffers for a reader that was dropped are thrown away at once."""
    srv = make_server("--sendq", "65536", "--flood-rate", "0")
    lazy = LineClient(srv.port, rcvbuf=4096)
    lazy.register("lazy")
    sender, watcher = srv.client("sender"), srv.client("watcher")
    sender.send_raw(("x" * 3000 + "\n").encode() * 1000)
    watcher.expect(r"<-- lazy has quit \(send queue exceeded\)$", timeout=30)
    lazy.sock.settimeout(10)
    with pytest.raises(ConnectionResetError):
        while lazy.sock.recv(1 << 20):
            pass


def test_a_request_dearer_than_the_server_wide_share_leaves_it_in_debt():
    """/password's two scrypt hashes cost four key checks, twice what the
    server-wide share holds: they go ahead when it is full, and the next
    check waits for the whole cost to be paid back, so the rate holds."""
    hall = Hall(HistoryStore(":memory:"))
    share = hall.limits.checks_server
    hall._spend_slow_check("10.0.0.1", 100.0, cost=2 * share.burst, what="password")
    later = 100.2
    with pytest.raises(Busy) as waiting:
        hall._spend_slow_check("10.0.0.2", later, cost=share.burst, what="password")
    paid_back = (later - 100.0) * share.per_second
    assert waiting.value.wait == pytest.approx((2 * share.burst - paid_back) / share.per_second)


@pytest.mark.parametrize("setting", ["topic", "none"])
def test_an_empty_room_is_forgotten_unless_someone_set_something_on_it(setting):
    hall = hall_with()
    guest = user_in(hall, "guest")
    room = hall.join(guest, "den", None, 100.0)
    if setting == "topic":
        hall.set_topic(guest, room, "kept for later", 101.0)
    hall.part(guest, room, "", 102.0)
    hall.check_invariants()
    assert ("den" in hall.rooms) == (setting == "topic")
