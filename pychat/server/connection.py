"""One client socket on the server: reading, framing, and the output buffer.

Output is queued as bytes objects during a loop iteration and written by
:meth:`Connection.flush` once per iteration, in one ``send()`` where the
kernel takes it all. What the kernel does not take waits in ``wbuf`` and
is retried when the socket is writable. ``send()`` is never ``sendall()``:
a client that does not read can never block the server.
"""

from __future__ import annotations

import socket
from typing import Callable

from pychat.protocols.framing import LineBuffer
from pychat.server.frontends import SessionLike

READ_SIZE = 65536


class Connection:
    """A connected socket and everything the loop keeps for it."""

    __slots__ = (
        "sock", "fd", "peer", "addr", "framer", "session", "out", "wbuf",
        "closed", "eof", "tokens", "token_time", "paused", "held", "last_input",
        "interest", "dirty", "mark_dirty", "close_deadline",
    )

    def __init__(self, sock: socket.socket, peer: str, addr: str, max_line: int,
                 mark_dirty: Callable[["Connection"], None]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.addr = addr                    # what per-address limits count
        self.framer = LineBuffer(max_line)
        self.session: SessionLike | None = None
        self.out: list[bytes] = []          # queued this iteration
        self.wbuf = bytearray()             # what the kernel has not taken yet
        self.closed = False
        self.eof = False                    # the peer shut its write side
        self.tokens = 0.0                   # flood-control budget
        self.token_time = 0.0
        self.last_input = 0.0               # when the peer last sent anything (monotonic)
        self.paused = False                 # reading stopped by flood control; the
                                            # framer holds the read that waits
        self.held = False                   # the session waits to retry a request; later
                                            # lines wait in the framer (reading is paused)
        self.interest = 0                   # selector events registered
        self.dirty = False                  # on the loop's list of connections to flush
        self.mark_dirty = mark_dirty
        self.close_deadline = 0.0

    def queue(self, data: bytes) -> None:
        """Queue bytes for this client; they go out at the end of the iteration."""
        if not self.dirty:
            self.dirty = True
            self.mark_dirty(self)
        self.out.append(data)

    def disconnect(self) -> None:
        """Close once what is queued is written (the Hall has already let the user go)."""
        if self.session is not None:
            self.session.closing = True
        self.wake()

    def wake(self) -> None:
        """Make sure bytes appended to ``out`` directly are flushed."""
        if not self.dirty:
            self.dirty = True
            self.mark_dirty(self)

    @property
    def unsent(self) -> int:
        return len(self.wbuf) + sum(map(len, self.out))

    def recv(self) -> bytes:
        """One bounded read; b'' at EOF. Socket errors propagate."""
        return self.sock.recv(READ_SIZE)

    def flush(self) -> None:
        """Write queued output with as few send() calls as the kernel allows.

        Raises OSError if the peer is gone.
        """
        out = self.out
        if out:
            chunk = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if self.wbuf:
                self.wbuf += chunk
            else:
                sent = self._send(chunk)
                if sent < len(chunk):
                    self.wbuf += chunk[sent:]
                return
        if self.wbuf:
            sent = self._send(self.wbuf)
            del self.wbuf[:sent]

    def _send(self, data: bytes | bytearray) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
