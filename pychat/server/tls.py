"""TLS for the listeners (PROTOCOL.md section 11), inside the one loop.

A TLS connection is a :class:`Connection` whose socket is an
``ssl.SSLSocket`` in non-blocking mode. Its handshake is driven by the
loop: each readiness event calls :meth:`TlsConnection.handshake`, which
says which readiness it waits for next, so a client that stops half-way
holds nothing but its own socket until the handshake timeout closes it.
Once the handshake is done, reads and writes go through OpenSSL; its
"want read" and "want write" answers are what a plain socket's
``BlockingIOError`` is: nothing to do until the next readiness.
"""

from __future__ import annotations

import socket
import ssl
from typing import Callable

from pychat.server.connection import READ_SIZE, Connection
from pychat.server.frontends import Frontend

# A client gets this long to finish its handshake, then it is closed.
HANDSHAKE_TIMEOUT = 10.0

# One SSL read returns at most one record (16 KiB of plaintext); asking for
# a whole record each time leaves nothing decrypted and unread inside
# OpenSSL, where the selector could not see it.
_RECORD = 16384
# Records read per readiness event, at most: a client sending one-byte
# records must not hold the loop for thousands of reads. OpenSSL does not
# read ahead, so the records left wait in the kernel and wake the loop again.
_RECORDS_PER_READ = 8


class TlsError(Exception):
    """The certificate or key cannot be used; the message is one line for the operator."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for CERT and KEY (PEM files), TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION  # a renegotiation costs the server a handshake
    for path in (cert, key):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from None
    asked = []

    def no_passphrase() -> bytes:
        # OpenSSL would otherwise ask on the terminal, and a SIGHUP reload would wait for it.
        asked.append(True)
        return b""

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        if asked:
            raise TlsError(f"cannot use TLS key {key}: it is encrypted (give the key without a pass phrase)") from None
        raise TlsError(f"cannot use TLS certificate {cert} with key {key}: {exc.reason or exc}") from None
    except OSError as exc:
        raise TlsError(f"cannot use TLS certificate {cert} with key {key}: {exc.strerror or exc}") from None
    return context


class TlsConnection(Connection):
    """A connection over TLS; ``handshaking`` until the handshake is done."""

    __slots__ = ("handshaking", "handshake_want", "frontend")

    def __init__(self, sock: ssl.SSLSocket, peer: str, addr: str, max_line: int,
                 mark_dirty: Callable[[Connection], None], frontend: Frontend) -> None:
        super().__init__(sock, peer, addr, max_line, mark_dirty)
        self.frontend = frontend  # whose session starts after the handshake
        self.handshaking = True
        self.handshake_want = 1  # selectors.EVENT_READ: the client speaks first

    def handshake(self) -> bool:
        """Take the handshake as far as it goes now; True once it is done.

        Sets ``handshake_want`` to the readiness it waits for. Raises OSError
        (ssl.SSLError included) if the handshake failed.
        """
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.handshake_want = 1
            return False
        except ssl.SSLWantWriteError:
            self.handshake_want = 2
            return False
        self.handshaking = False
        self.handshake_want = 0
        return True

    def recv(self) -> bytes:
        """What the client sent, decrypted: up to about READ_SIZE bytes, b'' at its end.

        BlockingIOError if no whole record has arrived yet."""
        sock = self.sock
        chunks: list[bytes] = []
        size = 0
        while size < READ_SIZE and len(chunks) < _RECORDS_PER_READ:
            try:
                chunk = sock.recv(_RECORD)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""  # close_notify, or the TCP connection ended without it
            if not chunk:
                if not chunks:
                    return b""
                break  # the end is read again, and reported, next time
            chunks.append(chunk)
            size += len(chunk)
        if not chunks:
            raise BlockingIOError("no whole TLS record yet")
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def flush(self) -> None:
        if self.handshaking:
            return  # output waits for the handshake
        super().flush()

    def say_goodbye(self) -> None:
        """Send TLS's close_notify before the socket closes (strict clients
        report a connection cut short without it). It does not wait for the
        client's own."""
        if self.handshaking:
            return
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.unwrap()
        except (OSError, ValueError):
            pass  # the client's close_notify is not awaited

    def _send(self, data: bytes | bytearray) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0


def wrap(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """SOCK (accepted, non-blocking) as the server side of a TLS connection not yet shaken hands."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
