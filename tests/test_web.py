"""The web front end for real: HTTP for the page, IRC over a WebSocket, from
raw sockets (with wsproto as the client's frame parser), in plain and over TLS."""

import re
import socket
import ssl
import subprocess
import sys

import pytest
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import (AcceptConnection, CloseConnection, Ping, Pong, RejectConnection, RejectData, Request,
                            TextMessage)

from helpers import EVENT, ROOT, wait_for
from test_tls import Certs

SUBPROTOCOL = "text.ircv3.net"


def web_port(srv) -> int:
    return int(wait_for(lambda: re.search(r"port (\d+) \(web( over TLS)?\)", srv.log()),
                        what="the web listener").group(1))


@pytest.fixture
def web_server(make_server):
    srv = make_server("--web-port", "0")
    srv.web_port = web_port(srv)
    return srv


def http_get(port: int, path: str, extra: str = "", context: ssl.SSLContext | None = None) -> tuple[str, dict, bytes]:
    """One HTTP/1.1 GET; (status line, headers, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{extra}\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return status, headers, body


class WsIrc:
    """An IRC client over a WebSocket: one IRC line per text message."""

    def __init__(self, port: int, origin: str | None = None, subprotocols=(SUBPROTOCOL,),
                 context: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if context is not None:
            self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"Origin", origin.encode())] if origin else []
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target="/ws",
                                               subprotocols=list(subprotocols), extra_headers=headers)))
        self.lines: list[str] = []
        self.seen: list[str] = []
        self.accepted: AcceptConnection | None = None
        self.rejected: int | None = None
        self.closed: CloseConnection | None = None
        self.pongs: list[bytes] = []
        self._partial = ""
        while self.accepted is None and self.rejected is None:
            self._pump()

    def _pump(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"closed; seen {self.seen[-10:]}")
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = event
            elif isinstance(event, RejectConnection):
                self.rejected = event.status_code
            elif isinstance(event, RejectData):
                pass
            elif isinstance(event, TextMessage):
                self._partial += event.data
                if event.message_finished:
                    self.lines.append(self._partial)
                    self._partial = ""
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                self.closed = event

    def send(self, line: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=line)))

    def read_line(self) -> str:
        while not self.lines:
            self._pump()
        line = self.lines.pop(0)
        self.seen.append(line)
        return line

    def expect(self, pattern: str) -> str:
        while True:
            line = self.read_line()
            if re.search(pattern, line):
                return line

    def register(self, nick: str) -> None:
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        self.expect(rf"^:\S+ 001 {nick} ")


def test_the_page_and_its_files_are_served(web_server):
    status, headers, body = http_get(web_server.web_port, "/")
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/html")
    assert b"<title>pychat</title>" in body
    assert "default-src 'self'" in headers["content-security-policy"]
    for path, kind in (("/app.js", "text/javascript"), ("/app.css", "text/css")):
        status, headers, body = http_get(web_server.web_port, path)
        assert status == "HTTP/1.1 200 OK" and headers["content-type"].startswith(kind)
        assert int(headers["content-length"]) == len(body) > 0
    status, _, _ = http_get(web_server.web_port, "/nothing-here")
    assert status.startswith("HTTP/1.1 404")


def test_irc_over_websocket_talks_with_a_line_user(web_server):
    line = web_server.client("alice")
    browser = WsIrc(web_server.web_port)
    assert browser.accepted.subprotocol == SUBPROTOCOL
    browser.register("webby")
    browser.send("JOIN #general")
    browser.expect(r"^:\S+ 366 webby #general ")
    line.expect(EVENT + r"#general --> webby has joined$")
    browser.send("PRIVMSG #general :hello from a browser")
    line.expect(EVENT + r"#general webby: hello from a browser$")
    line.send("hello web")
    assert re.fullmatch(r":alice!\S+ PRIVMSG #general :hello web", browser.expect(r"PRIVMSG #general"))
    browser.send("PRIVMSG alice :a direct word")
    line.expect(r"\(dm\) webby: a direct word$")
    assert not any("\r" in seen or "\n" in seen for seen in browser.seen)  # one line per message, no CRLF


def test_websocket_ping_is_answered(web_server):
    browser = WsIrc(web_server.web_port)
    browser.sock.sendall(browser.ws.send(Ping(payload=b"are you there")))
    wait_for(lambda: browser._pump() or browser.pongs, what="the pong")
    assert browser.pongs == [b"are you there"]


def test_a_foreign_origin_is_refused_and_the_own_one_accepted(web_server):
    port = web_server.web_port
    assert WsIrc(port, origin="https://evil.example").rejected == 403
    assert WsIrc(port, origin="null").rejected == 403
    assert WsIrc(port, origin=f"http://127.0.0.1:{port}").accepted is not None


def test_an_allowed_origin_list_replaces_the_default(make_server):
    srv = make_server("--web-port", "0", "--web-origin", "https://chat.example.org")
    port = web_port(srv)
    assert WsIrc(port, origin="https://chat.example.org").accepted is not None
    assert WsIrc(port, origin=f"http://127.0.0.1:{port}").rejected == 403


def test_other_subprotocols_are_refused(web_server):
    assert WsIrc(web_server.web_port, subprotocols=("binary.ircv3.net",)).rejected == 400


def test_an_oversized_message_closes_with_1009(web_server):
    line = web_server.client("alice")
    browser = WsIrc(web_server.web_port)
    browser.register("big")
    browser.send("PRIVMSG alice :" + "x" * 20000)
    while browser.closed is None:
        try:
            browser._pump()
        except (EOFError, ConnectionResetError):
            break
    assert browser.closed is not None and browser.closed.code == 1009

    def big_gone() -> bool:
        line.send("/users")
        return not any(re.search(r"\bbig\b", seen) for seen in line.sync())
    wait_for(big_gone, what="big to be gone")
    assert not any("xxxx" in seen for seen in line.seen)


def test_flood_control_applies_to_websocket_lines(make_server):
    srv = make_server("--web-port", "0", "--flood-rate", "1", "--flood-burst", "3")
    line = srv.client("alice")
    browser = WsIrc(web_port(srv))
    browser.register("flooder")
    for n in range(8):
        browser.send(f"PRIVMSG alice :n{n}")
    line.expect(r"\(dm\) flooder: n0$")
    seen = line.sync()
    assert not any(s.endswith("flooder: n7") for s in seen)  # the later ones wait for the budget


def test_without_the_web_extra_the_server_starts_and_says_how(tmp_path):
    # A Python that cannot import h11 stands for an installation without the extra.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "h11.py").write_text("raise ImportError('No module named h11')\n")
    proc = subprocess.Popen([sys.executable, str(ROOT / "pychat_server.py"), "127.0.0.1", "--port", "0",
                             "--irc-port", "off", "--web-port", "0", "--db", ":memory:"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"})
    try:
        lines = []
        while not any("history in" in line for line in lines):
            lines.append(proc.stderr.readline())
        text = "".join(lines)
        assert "web front end off" in text and "pip install '.[web]'" in text
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)


def test_https_and_wss_with_tls(make_server, tmp_path):
    certs = Certs(tmp_path, "web")
    srv = make_server("--web-port", "0", "--tls-cert", str(certs.cert_file), "--tls-key", str(certs.key_file),
                      "--tls-port", "off", "--ircs-port", "off")
    port = web_port(srv)
    assert "(web over TLS)" in srv.log()
    status, _, body = http_get(port, "/", context=certs.client_context())
    assert status == "HTTP/1.1 200 OK" and b"<title>pychat</title>" in body
    line = srv.client("alice")
    browser = WsIrc(port, context=certs.client_context(), origin=f"https://127.0.0.1:{port}")
    browser.register("secure")
    browser.send("JOIN #general")
    browser.expect(r"366 secure #general")
    browser.send("PRIVMSG #general :over wss")
    line.expect(EVENT + r"#general secure: over wss$")


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked frame as a browser sends it (the mask is all zeros: valid, and readable here)."""
    size = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode, 0x80 | size)) if size < 126 else \
        bytes(((0x80 if fin else 0) | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


def test_pipelined_requests_are_answered_up_to_a_limit_then_closed(web_server):
    sock = socket.create_connection(("127.0.0.1", web_server.web_port), timeout=10)
    sock.sendall(f"GET /app.css HTTP/1.1\r\nHost: 127.0.0.1:{web_server.web_port}\r\n\r\n".encode() * 200)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 32


def test_a_flood_of_control_frames_closes_with_1008(web_server):
    browser = WsIrc(web_server.web_port)
    browser.sock.sendall(client_frame(0x9, b"p") * 200)  # pings
    while browser.closed is None:
        browser._pump()
    assert browser.closed.code == 1008
    assert len(browser.pongs) <= 64


def test_a_message_and_a_close_in_one_read_are_both_taken(web_server):
    line = web_server.client("alice")
    browser = WsIrc(web_server.web_port)
    browser.register("leaver")
    browser.send("JOIN #general")
    browser.expect(r" 366 leaver #general ")
    line.expect(EVENT + r"#general --> leaver has joined$")
    browser.sock.sendall(client_frame(0x1, b"PRIVMSG #general :last words") + client_frame(0x8, b"\x03\xe8"))
    line.expect(EVENT + r"#general leaver: last words$")
    line.expect(EVENT + r"#general <-- leaver has quit")  # the close ended the session at once


def test_only_a_whole_message_is_acted_on(web_server):
    line = web_server.client("alice")
    cut = WsIrc(web_server.web_port)
    cut.register("cutter")
    cut.sock.sendall(client_frame(0x1, b"PRIVMSG alice :never finished", fin=False))
    cut.sock.close()  # the end of the connection, in the middle of the message
    refused = WsIrc(web_server.web_port)
    refused.register("refused")
    refused.sock.sendall(client_frame(0x1, b"PRIVMSG alice :first part", fin=False)
                         + client_frame(0x0, b"y" * 9000))
    while refused.closed is None:
        refused._pump()
    assert refused.closed.code == 1009
    whole = WsIrc(web_server.web_port)
    whole.register("whole")
    whole.sock.sendall(client_frame(0x1, b"PRIVMSG alice :in two ", fin=False) + client_frame(0x0, b"pieces"))
    line.expect(r"\(dm\) whole: in two pieces$")
    assert not any("never finished" in seen or "first part" in seen for seen in line.seen + line.sync())


def test_a_malformed_key_is_refused_without_an_internal_error(web_server):
    sock = socket.create_connection(("127.0.0.1", web_server.web_port), timeout=10)
    sock.sendall("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: \u00e9\u00e9\u00e9\r\n\r\n".encode("latin-1"))
    assert sock.recv(65536).startswith(b"HTTP/1.1 426 ")
    assert "Traceback" not in web_server.log() and "internal error" not in web_server.log()
