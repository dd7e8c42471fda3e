"""The server log on stderr, written so that it never stops the loop.

A blocking write to a pipe that nobody reads would freeze every user, so
the log goes through :class:`NonBlockingStderr`: lines wait in a bounded
buffer and are written without blocking when the descriptor takes them;
when the buffer is full, lines are dropped and counted, and the count is
logged once writing works again. The loop registers :meth:`fileno` for
writing while lines wait (:attr:`pending`).

:class:`Throttle` keeps any one client from filling the log: records that
name an address (``extra={"addr": ...}``) share a budget per address, and
other warnings a budget per message, with the number suppressed said on the
next line that passes.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import time

from pychat.core.limits import KeyedBuckets, Rate

BUFFER_LIMIT = 256 * 1024


class NonBlockingStderr:
    """A write-only text stream for :class:`logging.StreamHandler`."""

    def __init__(self, fd: int = 2) -> None:
        self._fd = -1                       # a descriptor of our own, non-blocking
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self.dropped = 0                    # lines dropped since the last report
        self._open(fd)

    def _open(self, fd: int) -> None:
        """Get a non-blocking handle on FD without changing it for other processes.

        O_NONBLOCK belongs to the open file description, which stderr
        usually shares with the shell (and stdin): setting it there would
        leave the terminal broken. So a pipe or terminal is opened anew
        through /proc, a socket is written with MSG_DONTWAIT, and a regular
        file (which never blocks) is written as it is.
        """
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return  # no stderr: every line is dropped
        if stat.S_ISREG(mode):
            self._fd = os.dup(fd)
        elif stat.S_ISSOCK(mode):
            self._sock = socket.socket(fileno=os.dup(fd))
        else:
            try:
                self._fd = os.open(f"/proc/self/fd/{fd}",
                                   os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_APPEND)
            except OSError:
                self._fd = os.dup(fd)  # no /proc: writes may block, as any program's would

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else self._fd

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        if len(self._buf) + len(data) > BUFFER_LIMIT:
            self.dropped += max(1, text.count("\n"))
        else:
            self._buf += data
        return len(text)

    def flush(self) -> None:
        """Write what the descriptor takes now; keep the rest."""
        while self._buf:
            try:
                sent = self._write(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # A full disk, a closed reader: nothing can be written now,
                # and raising would only make logging print to stderr itself.
                self.dropped += max(1, self._buf.count(b"\n"))
                self._buf.clear()
                return
            del self._buf[:sent]
            if not self._buf and self.dropped:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                self._buf += (f"[{stamp}] WARNING {self.dropped} log lines were dropped: "
                              "stderr was not being read\n").encode()
                self.dropped = 0

    def _write(self, data: bytearray) -> int:
        if self._sock is not None:
            return self._sock.send(data, socket.MSG_DONTWAIT)
        if self._fd < 0:
            raise BrokenPipeError(errno.EPIPE, "no stderr")
        return os.write(self._fd, data)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


class Throttle(logging.Filter):
    """Rate-limits log records per client address, and repeated warnings.

    A record with an ``addr`` attribute spends from that address's budget
    (every level: a client that reconnects in a loop must not fill the disk
    with "connection from" lines). Other records of WARNING and above spend
    from a budget per message template (a failing disk must not write one
    line per loop iteration).
    """

    MAX_TRACKED = 4096

    def __init__(self, per_address: Rate = Rate(30, 1.0), per_message: Rate = Rate(10, 0.2)) -> None:
        super().__init__()
        self._addresses = KeyedBuckets(per_address)
        self._messages = KeyedBuckets(per_message)
        self._suppressed: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        addr = getattr(record, "addr", None)
        if addr is not None:
            key, buckets = f"from {addr}", self._addresses
        elif record.levelno >= logging.WARNING:
            key, buckets = f"like {str(record.msg)[:60]!r}", self._messages
        else:
            return True
        now = time.monotonic()
        if not buckets.take(key, now):
            if len(self._suppressed) >= self.MAX_TRACKED:
                self._suppressed.clear()  # counts are a courtesy; memory is bounded
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        count = self._suppressed.pop(key, 0)
        if count:
            record.msg = f"{record.getMessage()} ({count} more log lines {key} were suppressed)"
            record.args = ()
        return True
