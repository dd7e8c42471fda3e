"""Protection and limits (PROTOCOL.md section 6), each with real sockets."""

import re
import signal
import socket
import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import LineClient, wait_for
from pychat.server.config import ServerSettings
from pychat.server.loop import Server


def test_a_member_who_never_reads_is_dropped_and_the_reader_gets_everything(make_server):
    srv = make_server("--sendq", "65536", "--flood-rate", "0")
    reader = srv.client("reader")
    lazy = LineClient(srv.port, rcvbuf=4096)
    lazy.register("lazy")
    sender = srv.client("sender")
    reader.sync()
    payload = "p" * 3000
    count = 0
    dropped = False
    for batch in range(40):  # 40 x 100 x 3 KB = 12 MB through the room
        sender.send_raw("".join(f"{count + i} {payload}\n" for i in range(100)).encode())
        for i in range(100):
            line = reader.expect(r"sender: \d+ |lazy has quit")
            if "lazy has quit" in line:
                assert line.endswith("<-- lazy has quit (send queue exceeded)")
                dropped = True
                line = reader.expect(r"sender: \d+ ")
            assert re.search(rf"sender: {count + i} p+$", line)
        count += 100
    assert dropped
    assert "send queue exceeded" in srv.log()


def test_flood_is_paced_not_dropped_and_others_are_not_slowed(make_server):
    srv = make_server("--flood-rate", "50", "--flood-burst", "10")
    flooder, other, watcher = srv.client("flooder"), srv.client("other"), srv.client("watcher")
    flooder.sync(), other.sync()
    start = time.monotonic()
    flooder.send_raw("".join(f"f{i}\n" for i in range(110)).encode())
    received = []
    quick_at = None
    while len(received) < 110:
        line = watcher.expect(r"(flooder: f\d+|other: quick)$")
        if line.endswith("other: quick"):
            quick_at = len(received)
        else:
            received.append(line.rsplit(": ", 1)[1])
            if len(received) == 1:
                other.send("quick")  # sent while the flood is under way
    elapsed = time.monotonic() - start
    assert received == [f"f{i}" for i in range(110)]
    assert quick_at is not None and quick_at < 100, "the other user's line waited behind the flood"
    assert elapsed >= 1.5


def test_max_clients_refuses_and_frees_its_count(make_server):
    srv = make_server("--max-clients", "3")
    first, second, third = srv.client("a1"), srv.client("a2"), srv.client("a3")
    refused = LineClient(srv.port)
    assert refused.read_line() == "! server full"
    assert refused.wait_closed() == []
    first.send("/quit")
    first.wait_closed()

    def accepted():
        c = LineClient(srv.port)
        line = c.read_line()
        return c if line.startswith("* welcome") else None

    newcomer = wait_for(accepted, what="a free slot after a client left")
    newcomer.expect("what is your name")
    second.sync(), third.sync()


def test_max_per_ip_refuses_and_zero_turns_it_off(make_server):
    srv = make_server("--max-per-ip", "2")
    keep = [srv.client("p1"), srv.client("p2")]
    refused = LineClient(srv.port)
    assert refused.read_line() == "! too many connections from your address"
    assert refused.wait_closed() == []
    off = make_server("--max-per-ip", "0")
    many = [off.client(f"u{i}") for i in range(6)]
    many[0].send("/users")
    many[0].expect(r"^\* 6 users online")
    keep[0].send("/users")  # the refusal cost the others nothing
    keep[0].expect(r"^\* 2 users online")


def test_registration_timeout(make_server):
    srv = make_server("--registration-timeout", "0.5")
    named = srv.client("named")
    silent = LineClient(srv.port)
    silent.expect("what is your name")
    start = time.monotonic()
    assert silent.expect("^!") == "! no name given within 0.5 s; goodbye"
    assert time.monotonic() - start > 0.3
    assert silent.wait_closed() == []
    assert named.sync() == []  # a named client is not timed out


def test_sigterm_tells_everyone_closes_and_exits_0(tmp_path, make_server):
    srv = make_server()
    a, b = srv.client("alice"), srv.client("bob")
    unnamed = LineClient(srv.port)
    unnamed.expect("what is your name")
    a.sync()
    srv.proc.send_signal(signal.SIGTERM)
    for c in (a, b, unnamed):
        c.expect(r"^\* server shutting down$")
        c.wait_closed()
    assert srv.proc.wait(10) == 0
    assert "SIGTERM: shutting down" in srv.log()


def test_second_signal_exits_at_once(make_server):
    srv = make_server("--flood-rate", "0", "--sendq", "100000000")
    lazy = LineClient(srv.port, rcvbuf=4096)
    lazy.register("lazy")
    talker = srv.client("talker")
    talker.send_raw(("x" * 4000 + "\n").encode() * 3000)  # 12 MB the lazy reader will never take
    talker.sync()
    srv.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting down" in srv.log(), what="the first signal to be handled")
    start = time.monotonic()
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(10) == 0
    assert time.monotonic() - start < 4, "the second signal did not cut the flush deadline short"
    assert "second signal" in srv.log()


def test_two_thousand_clients_all_get_one_broadcast(make_server):
    srv = make_server("--max-per-ip", "0", "--default-room", "", "--flood-rate", "0")
    socks = []
    for i in range(2000):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        s.sendall(f"c{i}\n".encode())
        socks.append(s)
    boss = srv.client("boss")
    wait_for(lambda: (boss.send("/users"), boss.expect(r"^\* \d+ users online"))[1] == "* 2001 users online:",
             timeout=60, interval=0.2, what="all clients to register")
    boss.send("/bc hello everyone")
    for s in socks:
        data = b""
        while b"(all) boss: hello everyone\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, "connection closed before the broadcast arrived"
            data += chunk
        s.close()


# -- random bytes from many connections at a live server ---------------------------

def pump(server, rounds=20):
    for _ in range(rounds):
        server.step(0.005)


chunks = st.lists(st.tuples(st.integers(0, 5), st.binary(max_size=200),
                            st.sampled_from(["keep", "keep", "keep", "close", "reset"])),
                  max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks, st.lists(st.sampled_from([b"alice\n", b"/join x\n", b"hi\n", b"/nick bob\n",
                                         b"/leave\n", b"/bc yo\n", b"\n", b"/quit\n"]), max_size=8))
def test_random_bytes_and_resets_leave_the_hall_consistent(ops, prefix):
    server = Server(ServerSettings(host="127.0.0.1", port=0, flood_rate=0, history_lines=5))
    port = server.listen()[0][1]
    conns: dict[int, socket.socket] = {}
    try:
        for index, data, how in ops:
            if index not in conns:
                conns[index] = socket.create_connection(("127.0.0.1", port))
                conns[index].sendall(b"".join(prefix))
            sock = conns[index]
            try:
                sock.sendall(data)
            except OSError:
                pass
            if how == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if how != "keep":
                sock.close()
                del conns[index]
            pump(server, 3)
        pump(server)
        server.hall.check_invariants()
        for sock in conns.values():
            sock.close()
        wait_for(lambda: (pump(server, 2), not server.conns)[1], what="all connections to close")
        server.hall.check_invariants()
        assert server.hall.users == {}
        assert all(not room.members for room in server.hall.rooms.values())
        # A normal client is still served.
        normal = socket.create_connection(("127.0.0.1", port))
        normal.setblocking(False)
        normal.sendall(b"zed\n/users\n")
        got = b""

        def answered():
            nonlocal got
            pump(server, 2)
            try:
                got += normal.recv(65536)
            except BlockingIOError:
                pass
            return b"zed in" in got

        wait_for(answered, what="the normal client's answer")
        assert b"* 1 user online:" in got
        normal.close()
    finally:
        for sock in conns.values():
            sock.close()
        server._exit_now()
        server.close()
