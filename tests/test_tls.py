"""TLS listeners for real: certificates from trustme, the server in a subprocess,
TLS clients from Python's ssl, the bundled client and openssl s_client."""

import re
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
import trustme

from helpers import EVENT, ROOT, LineClient, SocketLines, wait_for

CLIENT = [sys.executable, str(ROOT / "pychat_client.py")]


class Certs:
    """A certificate authority and the server certificate it issued, as PEM files."""

    def __init__(self, tmp_path, label: str) -> None:
        self.ca = trustme.CA()
        self.ca_file = tmp_path / f"{label}-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file = tmp_path / "server-cert.pem"
        self.key_file = tmp_path / "server-key.pem"
        self.install()

    def install(self) -> None:
        """Write a certificate for localhost and 127.0.0.1 where the server reads it."""
        issued = self.ca.issue_cert("localhost", "127.0.0.1")
        issued.private_key_pem.write_to_path(str(self.key_file))
        with open(self.cert_file, "wb") as out:
            for blob in issued.cert_chain_pems:
                out.write(blob.bytes())

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path, "first")


@pytest.fixture
def tls_server(make_server, certs):
    srv = make_server("--tls-cert", str(certs.cert_file), "--tls-key", str(certs.key_file),
                      "--tls-port", "0", "--ircs-port", "0")
    log = wait_for(lambda: re.search(r"port (\d+) \(IRC over TLS\)", srv.log()) and srv.log(), what="TLS listeners")
    srv.tls_port = int(re.search(r"port (\d+) \(line protocol over TLS\)", log).group(1))
    srv.ircs_port = int(re.search(r"port (\d+) \(IRC over TLS\)", log).group(1))
    return srv


class TlsLineClient(LineClient):
    """A line-protocol client whose socket is wrapped in TLS after connecting."""

    def __init__(self, port: int, context: ssl.SSLContext, **kw) -> None:
        super().__init__(port, **kw)
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.certificate = self.sock.getpeercert()


class TlsIrcClient(SocketLines):
    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__(port)
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")


def subject_serial(sock: ssl.SSLSocket) -> int:
    return int(sock.getpeercert()["serialNumber"], 16)


def test_line_protocol_over_tls_talks_with_a_plain_client(tls_server, certs):
    secure = TlsLineClient(tls_server.tls_port, certs.client_context())
    secure.register("alice")
    plain = tls_server.client("bob")
    secure.expect(EVENT + r"#general --> bob has joined$")
    secure.send("hello over TLS")
    plain.expect(EVENT + r"#general alice: hello over TLS$")
    plain.send("and back in clear")
    secure.expect(EVENT + r"#general bob: and back in clear$")
    assert secure.sock.version() in ("TLSv1.2", "TLSv1.3")


def test_irc_over_tls(tls_server, certs):
    line = TlsLineClient(tls_server.tls_port, certs.client_context())
    line.register("alice")
    irc = TlsIrcClient(tls_server.ircs_port, certs.client_context())
    irc.send("NICK carol")
    irc.send("USER carol 0 * :Carol")
    irc.expect(r"^:\S+ 001 carol ")
    irc.send("JOIN #general")
    irc.expect(r"^:\S+ 366 carol #general ")
    line.send("hi carol")
    irc.expect(r"^:alice!\S+ PRIVMSG #general :hi carol$")
    irc.send("PRIVMSG #general :hi alice, from irc over TLS")
    line.expect(EVENT + r"#general carol: hi alice, from irc over TLS$")


def half_a_client_hello() -> bytes:
    """The first half of a real ClientHello, as a client that stalls would send it."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and len(hello) > 100  # a handshake record
    return hello[: len(hello) // 2]


def test_a_stalled_handshake_does_not_delay_anyone(tls_server, certs):
    stalled = [socket.create_connection(("127.0.0.1", tls_server.tls_port)) for _ in range(3)]
    for sock in stalled:
        sock.sendall(half_a_client_hello())
    wait_for(lambda: tls_server.log().count("(TLS)") >= 3, what="the stalled connections to be accepted")
    started = time.monotonic()
    other = TlsLineClient(tls_server.tls_port, certs.client_context())  # a whole handshake of its own
    other.register("dora")
    other.send("/dm dora ping")
    other.expect(r"\(dm\) dora: ping$")
    # A server that finished handshakes one at a time would still be waiting
    # for the stalled ones (until their 10 s timeout).
    assert time.monotonic() - started < 5.0
    for sock in stalled:
        sock.settimeout(0)
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # still open, still waiting: nobody answered it or closed it
        sock.close()


def test_sighup_swaps_the_certificate_for_new_connections(tls_server, certs, tmp_path):
    before = TlsLineClient(tls_server.tls_port, certs.client_context())
    before.register("early")
    second = Certs(tmp_path, "second")  # a new authority, and its certificate written over the old files
    tls_server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "TLS certificate" in tls_server.log() and "reloaded" in tls_server.log(), what="the reload")
    after = TlsLineClient(tls_server.tls_port, second.client_context())
    after.register("late")
    assert subject_serial(after.sock) != subject_serial(before.sock)
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsLineClient(tls_server.tls_port, certs.client_context())  # the old authority no longer fits
    before.send("still here")  # connections made before the reload go on
    after.expect(EVENT + r"#general early: still here$")
    assert tls_server.proc.poll() is None


def test_sighup_with_a_broken_certificate_keeps_the_old_one(tls_server, certs):
    certs.cert_file.write_text("not a certificate\n")
    tls_server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "stays in use" in tls_server.log(), what="the refused reload")
    client = TlsLineClient(tls_server.tls_port, certs.client_context())
    client.register("steady")
    assert tls_server.proc.poll() is None


def test_bundled_client_refuses_an_unknown_certificate(tls_server):
    result = subprocess.run([*CLIENT, "localhost", "--tls", "--port", str(tls_server.tls_port), "--name", "eve"],
                            input=b"hello\n", capture_output=True, timeout=30)
    assert result.returncode == 1
    errors = result.stderr.decode().splitlines()
    assert len(errors) == 1 and "certificate cannot be trusted" in errors[0] and "--cafile" in errors[0], errors
    assert " registered as eve" not in tls_server.log()


def test_bundled_client_with_cafile_chats_over_tls(tls_server, certs):
    watcher = tls_server.client("watcher")
    result = subprocess.run([*CLIENT, "localhost", "--tls", "--cafile", str(certs.ca_file),
                             "--port", str(tls_server.tls_port), "--name", "bot"],
                            input=b"hello over tls\n/dm watcher psst\n", capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode().splitlines()
    assert "* hello bot! /help lists the commands" in out
    assert any(line.endswith("(dm to watcher) bot: psst") for line in out), out
    watcher.expect(EVENT + r"#general bot: hello over tls$")
    watcher.expect(r"\(dm\) bot: psst$")


def test_bundled_client_insecure_skips_the_check(tls_server):
    result = subprocess.run([*CLIENT, "localhost", "--tls", "--insecure", "--port", str(tls_server.tls_port),
                             "--name", "tester"], input=b"/roominfo\n", capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "* #general: 1 user: tester" in result.stdout.decode().splitlines()


def test_openssl_s_client_is_the_nc_of_tls(tls_server, certs):
    watcher = tls_server.client("watcher")
    proc = subprocess.Popen(["openssl", "s_client", "-quiet", "-CAfile", str(certs.ca_file),
                             "-connect", f"127.0.0.1:{tls_server.tls_port}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"sslnc\nhello from openssl\n")
        proc.stdin.flush()
        watcher.expect(EVENT + r"#general sslnc: hello from openssl$")
        watcher.send("hi openssl")
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            lines.append(line.rstrip("\r\n"))
            if line.rstrip("\r\n").endswith("#general watcher: hi openssl"):
                break
        else:
            pytest.fail(f"no message through openssl s_client: {lines}")
        assert any(line.startswith("* hello sslnc!") for line in lines)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("problem", ["missing", "garbage", "mismatched key"])
def test_an_unusable_certificate_is_one_line_and_status_1(certs, tmp_path, problem):
    cert, key = certs.cert_file, certs.key_file
    if problem == "missing":
        cert = tmp_path / "nowhere.pem"
    elif problem == "garbage":
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    else:
        key = tmp_path / "other-key.pem"
        trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(key))
    result = subprocess.run([sys.executable, str(ROOT / "pychat_server.py"), "127.0.0.1", "--port", "0",
                             "--irc-port", "off", "--db", ":memory:", "--tls-port", "0", "--ircs-port", "0",
                             "--tls-cert", str(cert), "--tls-key", str(key)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pychat-server: "), result.stderr
    assert "Traceback" not in result.stderr
    assert str(cert) in lines[0]


def test_tls_cert_without_key_is_a_usage_error(certs):
    result = subprocess.run([sys.executable, str(ROOT / "pychat_server.py"), "--tls-cert", str(certs.cert_file)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr


def test_a_stalled_handshake_is_closed_at_the_registration_timeout(make_server, certs):
    srv = make_server("--tls-cert", str(certs.cert_file), "--tls-key", str(certs.key_file),
                      "--tls-port", "0", "--ircs-port", "off", "--registration-timeout", "1")
    port = int(wait_for(lambda: re.search(r"port (\d+) \(line protocol over TLS\)", srv.log()),
                        what="the TLS listener").group(1))
    stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
    stalled.sendall(half_a_client_hello())
    started = time.monotonic()
    try:
        assert stalled.recv(1) == b""  # closed by the server...
    except ConnectionResetError:
        pass  # ...abortively
    assert 0.5 < time.monotonic() - started < 8
    wait_for(lambda: "no TLS handshake within 1 s" in srv.log(), what="the log line")


def _register_alice(tls_server, certs) -> None:
    """The account alice, registered over TLS by a client that then leaves."""
    owner = TlsLineClient(tls_server.tls_port, certs.client_context())
    owner.register("alice")
    owner.password_command("/register sesame-1234")
    owner.send("/quit")
    owner.wait_closed()


def test_bundled_client_over_tls_ends_at_a_password_prompt_its_stdin_cannot_answer(tls_server, certs):
    _register_alice(tls_server, certs)
    result = subprocess.run([*CLIENT, "localhost", "--tls", "--cafile", str(certs.ca_file),
                             "--port", str(tls_server.tls_port), "--plain"],
                            input=b"alice\n", capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode().splitlines()
    assert any(line.startswith("* alice is a registered name") for line in out), out
    assert "wrong password" not in result.stdout.decode()  # nothing was sent as a password
    assert "wrong password" not in tls_server.log()


def test_bundled_client_over_tls_ends_when_stdin_ends_after_the_password_prompt(tls_server, certs):
    """The other order: the prompt is shown first, then stdin ends."""
    _register_alice(tls_server, certs)
    client = subprocess.Popen([*CLIENT, "localhost", "--tls", "--cafile", str(certs.ca_file),
                               "--port", str(tls_server.tls_port), "--plain"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(b"alice\n")
        client.stdin.flush()
        shown = b""
        deadline = time.monotonic() + 20
        while b"is a registered name" not in shown:
            assert time.monotonic() < deadline, shown
            shown += client.stdout.read1(4096)
        client.stdin.close()
        assert client.wait(timeout=20) == 0, client.stderr.read() if client.stderr else ""
    finally:
        client.kill()
        client.wait()
    assert "wrong password" not in tls_server.log()


def test_an_encrypted_key_is_refused_without_asking(certs, tmp_path):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(certs.key_file.read_bytes(), password=None)
    locked = tmp_path / "locked-key.pem"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    result = subprocess.run([sys.executable, str(ROOT / "pychat_server.py"), "127.0.0.1", "--port", "0",
                             "--irc-port", "off", "--web-port", "off", "--db", ":memory:", "--tls-port", "0",
                             "--ircs-port", "0", "--tls-cert", str(certs.cert_file), "--tls-key", str(locked)],
                            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"pychat-server: cannot use TLS key {locked}: it is encrypted (give the key without a pass phrase)"]


def test_records_of_one_byte_are_read_a_few_at_a_time(certs):
    # A client sending one-byte records must not hold the loop for a read per
    # byte: one readiness event takes a few records; the rest wait in the kernel.
    from pychat.server.frontends import line_frontend
    from pychat.server.config import ServerSettings
    from pychat.server.tls import TlsConnection, server_context, wrap
    server_sock, client_sock = socket.socketpair()
    server_sock.setblocking(False)
    conn = TlsConnection(wrap(server_context(str(certs.cert_file), str(certs.key_file)), server_sock),
                         "peer", "addr", 4096, lambda c: None, line_frontend(ServerSettings()))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    client_sock.settimeout(5)
    done = False
    while not done:
        try:
            client.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            pass
        client_sock.sendall(outgoing.read())
        if not conn.handshaking:
            continue
        conn.handshake()
        data = client_sock.recv(65536) if not done else b""
        incoming.write(data)
    while conn.handshaking:
        conn.handshake()
    for byte in b"x" * 100:
        client.write(bytes([byte]))
    client_sock.sendall(outgoing.read())
    first = conn.recv()
    assert first == b"x" * 8
    rest = b""
    while len(rest) < 92:
        rest += conn.recv()
    assert rest == b"x" * 92
    server_sock.close()
    client_sock.close()
