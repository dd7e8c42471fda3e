"""One non-blocking connection to Redis, driven by the server's selectors loop.

Commands are queued with a callback and written together when the loop
flushes (a pass's XADDs leave in one ``send()``); replies are parsed by
``hiredis.Reader``, a sans-I/O RESP parser, and handed to the callbacks in
order. Nothing here blocks: the connect is a non-blocking ``connect_ex``,
a reply that takes longer than the link's timeout closes the link, and
whoever owns the link decides when to connect again.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import selectors
import socket
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

log = logging.getLogger("pychat.cluster")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
READ_SIZE = 262144
MAX_UNSENT = 64 << 20   # commands queued and not written: past this, the link is failing

Reply = Any  # bytes, int, list, None, or a hiredis.ReplyError / LinkDown instance
Callback = Callable[[Reply], None]


class LinkDown(Exception):
    """The reply a callback gets when the link closed before its answer came."""


PASSWORD_VARIABLE = "PYCHAT_REDIS_PASSWORD"


class RedisAddress:
    """Where Redis is, and how to log in: from ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``,
    the password also from $PYCHAT_REDIS_PASSWORD (so that it need not be on a
    command line, which every local user can read)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:  # (the address is not echoed: it may hold a password)
            raise ValueError("not a redis:// address (redis://[[USER]:PASSWORD@]HOST:PORT[/DB])")
        self.host = parts.hostname
        self.port = parts.port or 6379
        # %XX in the address stands for a character that could not be written there (@ / : # ?).
        self.password = unquote(parts.password or "") or os.environ.get(PASSWORD_VARIABLE) or None
        self.user = unquote(parts.username or "") or None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database in a redis:// address is a number, not {path!r}")
        self.db = int(path) if path else 0

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


class RedisLink:
    """A connection to Redis that never blocks the loop.

    ``on_up`` is called once the link is connected (and the database
    selected), ``on_down(reason)`` once when it closes for any reason; every
    callback still waiting then gets a :class:`LinkDown`.
    """

    def __init__(self, name: str, address: RedisAddress, sel: selectors.BaseSelector,
                 on_up: Callable[[], None], on_down: Callable[[str], None], timeout: float) -> None:
        import hiredis  # the cluster extra; the caller checked it is there
        self._reader_class = hiredis.Reader
        self._pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command  # a command as RESP, in C
        self.name = name
        self.address = address
        self.sel = sel
        self.on_up = on_up
        self.on_down = on_down
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.state = "down"          # down, connecting, up
        self.out: list[bytes] = []   # packed commands not yet written
        self.wbuf = bytearray()
        self.waiting: collections.deque[Callback] = collections.deque()
        self.reader = self._reader_class()
        self.since = 0.0             # when the oldest outstanding command was sent (monotonic)
        self.interest = 0

    # -- the loop's side ------------------------------------------------------

    def connect(self, mono: float) -> None:
        """Start connecting (non-blocking); on_up or on_down tells the outcome."""
        assert self.state == "down"
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in self.address.host else socket.AF_INET)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex((self.address.host, self.address.port))
        except OSError as exc:  # an unknown host name, out of descriptors
            self.on_down(f"cannot connect: {exc}")
            return
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self.on_down(f"cannot connect: {errno.errorcode.get(err, err)}")
            return
        self.sock = sock
        self.state = "connecting"
        self.reader = self._reader_class()
        self.since = mono
        self.interest = WRITE
        self.sel.register(sock, WRITE, self)

    def on_event(self, mask: int, mono: float) -> None:
        if self.sock is None:
            return
        if self.state == "connecting":
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.close(f"cannot connect: {errno.errorcode.get(err, err)}")
                return
            self.state = "up"
            self.since = 0.0
            if self.address.password:  # (AUTH USER PASSWORD for an ACL user)
                login = (self.address.user, self.address.password) if self.address.user else (self.address.password,)
                self.call(self._authed, "AUTH", *login)
            if self.address.db:
                self.call(self._selected, "SELECT", self.address.db)
            self.on_up()
            self.flush(mono)
            return
        if mask & READ:
            self._read(mono)
        if mask & WRITE and self.sock is not None:
            self.flush(mono)

    def _authed(self, reply: Reply) -> None:
        if isinstance(reply, Exception):
            self.close(f"AUTH: {reply}")

    def _selected(self, reply: Reply) -> None:
        if isinstance(reply, Exception):
            self.close(f"SELECT {self.address.db}: {reply}")

    def _read(self, mono: float) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(f"connection lost: {exc}")
            return
        if not data:
            self.close("connection closed by Redis")
            return
        reader = self.reader
        try:
            reader.feed(data)
            waiting = self.waiting
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                if not waiting:
                    self.close("a reply nobody asked for")
                    return
                waiting.popleft()(reply)
        except Exception as exc:  # a protocol error, or a callback's bug
            log.exception("redis link %s: %s", self.name, exc)
            self.close(f"protocol error: {exc}")
            return
        self.since = mono if self.waiting else 0.0

    def flush(self, mono: float) -> None:
        """Write what is queued; wait for writability if the kernel takes less."""
        sock = self.sock
        if sock is None or self.state != "up":
            return
        if self.out:
            self.wbuf += b"".join(self.out)
            self.out.clear()
            if not self.since:
                self.since = mono  # the oldest outstanding command leaves now
        if self.wbuf:
            try:
                sent = sock.send(self.wbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.close(f"connection lost: {exc}")
                return
            del self.wbuf[:sent]
        want = READ | WRITE if self.wbuf else READ
        if want != self.interest:
            self.interest = want
            self.sel.modify(sock, want, self)

    def check_timeout(self, mono: float) -> None:
        """Close the link if the oldest outstanding reply is overdue."""
        if self.state == "connecting" and mono - self.since > self.timeout:
            self.close(f"no connection within {self.timeout:g} s")
        elif self.state == "up" and self.since and mono - self.since > self.timeout:
            self.close(f"no reply within {self.timeout:g} s")

    # -- the owner's side -----------------------------------------------------

    @property
    def up(self) -> bool:
        return self.state == "up"

    def call(self, callback: Callback, *args: bytes | str | int | float) -> None:
        """Queue a command; CALLBACK gets its reply (or a LinkDown)."""
        if self.state != "up":
            callback(LinkDown(f"redis link {self.name} is down"))
            return
        self.out.append(self._pack(args))
        self.waiting.append(callback)
        if len(self.wbuf) > MAX_UNSENT:
            self.close("Redis does not read what is sent")

    def close(self, reason: str) -> None:
        """Close the link; every outstanding callback gets a LinkDown."""
        if self.state == "down":
            return
        sock, self.sock = self.sock, None
        self.state = "down"
        if sock is not None:
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self.out.clear()
        self.wbuf.clear()
        waiting, self.waiting = self.waiting, collections.deque()
        down = LinkDown(reason)
        for callback in waiting:
            try:
                callback(down)
            except Exception:
                log.exception("redis link %s: a callback failed on close", self.name)
        self.on_down(reason)
