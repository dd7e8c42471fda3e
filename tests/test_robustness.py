"""Abusive clients never affect anyone else (real server, real sockets)."""

import os
import socket
import struct

from helpers import EVENT


def test_random_bytes_do_not_affect_others(make_server):
    srv = make_server("--flood-rate", "0")
    a, b = srv.client("alice"), srv.client("bob")
    noise = srv.client("noise")
    a.sync()
    blob = os.urandom(512 * 1024)
    noise.send_raw(blob)
    a.send("still here")
    b.expect(EVENT + r"#general alice: still here$")
    noise.send_raw(b"\n")  # end the last random line, then check the noisy client is still served
    noise.sync()
    a.send("/users")
    a.expect(r"noise in")


def test_ten_megabyte_line_without_newline(make_server):
    srv = make_server("--flood-rate", "0")
    a, b, big = srv.client("alice"), srv.client("bob"), srv.client("big")
    chunk = b"z" * (1 << 20)
    for _ in range(10):
        big.send_raw(chunk)
        a.send("meanwhile")
        b.expect("alice: meanwhile$")
    big.send_raw(b"\n")
    errors = [line for line in big.sync() if line.startswith("!")]
    assert errors == ["! line too long (more than 4096 bytes); it was discarded"]
    big.send("after")
    b.expect("big: after$")


def test_vanishing_mid_line(server):
    a, b = server.client("alice"), server.client("bob")
    gone = server.client("gone")
    a.sync()
    gone.send_raw("half a lin".encode())
    gone.sock.close()
    a.expect(EVENT + r"#general <-- gone has quit")
    reset = server.client("reset")
    reset.send_raw(b"partial \xe2\x82")  # half a UTF-8 character, then a reset
    reset.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.sock.close()
    a.expect(EVENT + r"#general <-- reset has quit")
    a.send("all fine")
    b.expect("alice: all fine$")
    assert not any("half a lin" in line or "partial" in line for line in b.sync())
