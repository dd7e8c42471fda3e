"""The server's I/O shell: one thread, one selectors loop.

The loop watches the listening sockets, every client socket and a wakeup
socket for signals; the nearest timer sets the ``select()`` timeout. Each
iteration handles the ready sockets and the due timers, then does its
"before sleep" work, in this order (PROTOCOL.md section 7):

1. commit the history written during the iteration;
2. flush every connection that has queued output, one ``send()`` each;
3. checkpoint the database's WAL when enough was written, and write
   waiting log lines without blocking.

So nothing reaches a user before it is in the database. A cluster node
is the exception: an event is in Redis's stream before the node reads it
back, so that is its promise, and its history file is an archive written
behind the stream (``_archive_if_due``), in larger commits. A busy node
also rests between iterations (``_rest``), so that each carries more.
"""

from __future__ import annotations

import collections
import errno
import gc
import importlib.util
import logging
import os
import resource
import selectors
import signal
import socket
import ssl
import struct
import sys
import time

from pychat.server.config import ServerSettings, parse_server_args
from pychat.server.connection import Connection
from pychat.server import web
from pychat.server.frontends import Frontend, irc_frontend, line_frontend, web_frontend
from pychat.protocols.framing import Frame
from pychat.core.history import HistoryError, HistoryStore
from pychat.core.limits import HallLimits, KeyedBuckets, Rate, address_key, seconds_text
from pychat.server.logsink import NonBlockingStderr, Throttle
from pychat.server.tls import HANDSHAKE_TIMEOUT, TlsConnection, TlsError, server_context, wrap
from pychat.core.model import Hall
from pychat.core.replicated import ReplicatedHall
from pychat.server.cluster import Cluster
from pychat.server.redis import RedisAddress, RedisLink
from pychat.core.text import decode_line, sanitize
from pychat.core.timers import Timers

log = logging.getLogger("pychat.server.loop")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
LISTEN_BACKLOG = 4096
# Errors from accept() that mean "out of resources, try again later".
_ACCEPT_PAUSE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_PAUSE = 0.1
GATHER_ROUNDS = 3  # select() passes whose input is flushed together
# A cluster node's archive: commit once this many events wait (checked after
# each loop pass), or this long after the first of them. SQLite's cost per
# event falls by a fifth from commits of 100 events to commits of 500.
ARCHIVE_ROWS = 512
ARCHIVE_DELAY = 0.2
HELD_RETRIES_PER_PASS = 32  # held requests (pychat.core.errors.Busy) tried again in one pass
ACCEPTS_PER_PASS = 64  # connections accepted from one listener per select() pass
# New connections one address may open: --max-per-ip at once (a whole office
# behind one address reconnecting after a restart), then this many a second.
CONNECTS_PER_SECOND = 10.0
# What the connections from one address may send together: this many times
# one connection's flood budget (--flood-rate, --flood-burst).
ADDRESS_LINES_FACTOR = 10
UNSTORED = ("your message could not be stored (the server cannot write its history), "
            "so nobody received it; try again later")
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection


class ListenError(Exception):
    """A listening socket could not be opened; the message names the port."""


class _Listener:
    """Selector data for a listening socket (told apart from connections)."""

    __slots__ = ("sock", "frontend", "tls", "web")

    def __init__(self, sock: socket.socket, frontend: Frontend, tls: bool, web: bool) -> None:
        self.sock = sock
        self.frontend = frontend
        self.tls = tls    # connections start with a TLS handshake
        self.web = web    # HTTP, then IRC over WebSocket


class _LogWriter:
    """Selector data for the log's descriptor, watched while log lines wait."""

    __slots__ = ()


class Server:
    """The chat server: owns the Hall, the sockets and the loop."""

    def __init__(self, settings: ServerSettings, history: HistoryStore | None = None,
                 log_sink: NonBlockingStderr | None = None) -> None:
        """Raises TlsError if the TLS certificate or key cannot be used."""
        self.settings = settings
        self.tls_context: ssl.SSLContext | None = None
        self._web_page: dict[str, tuple[str, bytes]] = {}
        self._web_origins: frozenset[str] = frozenset()
        if settings.tls_cert is not None and settings.tls_key is not None:
            self.tls_context = server_context(settings.tls_cert, settings.tls_key)
        self.history = history if history is not None else HistoryStore(settings.db)
        per_address = settings.max_per_ip > 0
        limits = HallLimits(max_rooms=settings.max_rooms, per_address=per_address)
        self.sel = selectors.DefaultSelector()
        self.timers = Timers()
        self.cluster: Cluster | None = None
        if settings.cluster is None:
            self.hall = Hall(self.history, settings.history_lines, limits, settings.default_room, settings.opers)
        else:
            node = settings.node_name or f"{socket.gethostname()}-{os.getpid()}"
            replicated = ReplicatedHall(self.history, settings.history_lines, limits, settings.default_room,
                                        settings.opers, node=node)
            replicated.resume = self._resume_held
            self.hall = replicated
            self.cluster = Cluster(RedisAddress(settings.cluster), node, replicated, self.sel, self.timers,
                                   time.monotonic)
        # A cluster node commits its history file behind the stream (_archive_if_due):
        # whether a timer for that commit is set.
        self._archive_timer_set = False
        self.listeners: list[_Listener] = []
        self.conns: dict[int, Connection] = {}
        self.per_ip: collections.Counter[str] = collections.Counter()
        self._connects = (KeyedBuckets(Rate(settings.max_per_ip, CONNECTS_PER_SECOND))
                          if per_address else None)
        self._lines_by_address = (
            KeyedBuckets(Rate(settings.flood_burst * ADDRESS_LINES_FACTOR, settings.flood_rate * ADDRESS_LINES_FACTOR))
            if per_address and settings.flood_rate > 0 else None)
        self.log_sink = log_sink
        self._log_watched = False
        # Connections that failed while output was being written: dropped
        # after the batch, since dropping tells their rooms, and those notices
        # must be committed before anyone is sent them.
        self._flushing = False
        self._drop_after_flush: list[tuple[Connection, str, bool]] = []
        self._retry_pass = -1.0   # the pass (its clock) that _retries counts for
        self._retries = 0
        self._dirty: list[Connection] = []
        self._signals: list[int] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, READ, None)
        # A busy cluster node rests between passes (_rest) on this, which only a signal wakes.
        self._rest_sel: selectors.BaseSelector | None = None
        if self.cluster is not None:
            self._rest_sel = selectors.DefaultSelector()
            self._rest_sel.register(self._wake_r, READ, None)
        self.now = time.time()
        self.mono = time.monotonic()
        self.stopping = False
        self._stop_deadline = 0.0

    # -- setup --------------------------------------------------------------

    def listen(self) -> list[tuple[str, int]]:
        """Bind the listening sockets, the line protocol's first; return their
        (address, port). Raises OSError."""
        settings = self.settings
        bound = self._listen_for(line_frontend(settings), settings.port)
        if settings.irc_port is not None:
            bound += self._listen_for(irc_frontend(settings), settings.irc_port)
        if settings.web_port is not None:
            if web.MISSING:
                log.warning("web front end off (%s): python3 -m pip install '.[web]' in the checkout "
                            "(or 'pychat[web]') turns it on", web.MISSING)
            else:
                self._web_page = web.load_page()
                self._web_origins = web.allowed_origins(settings.web_origins)
                bound += self._listen_for(web_frontend(settings), settings.web_port,
                                          tls=self.tls_context is not None, web=True)
        if self.tls_context is not None:
            if settings.tls_port is not None:
                bound += self._listen_for(line_frontend(settings), settings.tls_port, tls=True)
            if settings.ircs_port is not None:
                bound += self._listen_for(irc_frontend(settings), settings.ircs_port, tls=True)
        if self.cluster is not None:
            self.cluster.start()  # once listening: a node is not announced before it can serve
        return bound

    def _listen_for(self, frontend: Frontend, port: int, tls: bool = False, web: bool = False) -> list[tuple[str, int]]:
        """Listen on PORT for FRONTEND; ListenError (naming the port) if that fails."""
        try:
            return self._bind(frontend, port, tls, web)
        except OSError as exc:
            where = f"{self.settings.host or '*'} port {port} ({frontend.name}{' over TLS' if tls else ''})"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(f"cannot listen on {where}: {reason}") from None

    def _bind(self, frontend: Frontend, port: int, tls: bool, web: bool) -> list[tuple[str, int]]:
        host = self.settings.host
        # The nodes of a cluster on one host share their ports: the kernel spreads the connections.
        reuse = self.cluster is not None and hasattr(socket, "SO_REUSEPORT")
        if not host:
            if socket.has_dualstack_ipv6():
                socks = [socket.create_server(("", port), family=socket.AF_INET6,
                                              dualstack_ipv6=True, backlog=LISTEN_BACKLOG, reuse_port=reuse)]
            else:
                socks = [socket.create_server(("", port), backlog=LISTEN_BACKLOG, reuse_port=reuse)]
        else:
            socks = []
            seen = set()
            for family, _, _, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE):
                if (family, addr[0]) in seen:
                    continue
                seen.add((family, addr[0]))
                # With port 0 every address shares the port the first one got.
                bind_port = socks[0].getsockname()[1] if socks else port
                socks.append(socket.create_server((addr[0], bind_port), family=family,
                                                  backlog=LISTEN_BACKLOG, reuse_port=reuse))
        bound = []
        for sock in socks:
            sock.setblocking(False)
            listener = _Listener(sock, frontend, tls, web)
            self.sel.register(sock, READ, listener)
            self.listeners.append(listener)
            name = sock.getsockname()
            bound.append((name[0], name[1]))
            log.info("listening on %s port %d (%s%s)", name[0] or "*", name[1], frontend.name,
                     " over TLS" if tls else "")
        return bound

    def raise_file_limit(self) -> None:
        """Raise the open-files limit as far as allowed; warn if too low for --max-clients."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = max(soft, self.settings.max_clients + 64)
        if soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError) as exc:
                log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
        needed = self.settings.max_clients + 32
        if soft < needed:
            log.warning("the open-files limit is %d: fewer than --max-clients %d connections "
                        "can be held (raise it with ulimit -n)", soft, self.settings.max_clients)

    def install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM wake the loop through the wakeup socket."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        if self.tls_context is not None:
            signal.signal(signal.SIGHUP, self._on_signal)  # reloads the certificate

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def request_stop(self) -> None:
        """Ask the loop to shut down gracefully; safe to call from another thread."""
        self._signals.append(signal.SIGTERM)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        """Serve until shut down; return the exit status."""
        while True:
            status = self.step()
            if status is not None:
                return status

    def step(self, max_wait: float | None = None) -> int | None:
        """One loop iteration: wait for events (at most MAX_WAIT seconds), handle
        them and the due timers, then commit and flush. Returns the exit status
        once the server has stopped, else None."""
        if (self.cluster is not None and self.cluster.rest_until > time.monotonic() and not self.stopping
                and not self._rest(self.cluster.rest_until, max_wait)):
            return None  # MAX_WAIT ran out first: still resting
        timeout = self.timers.timeout(time.monotonic(), max_wait)
        events = self.sel.select(timeout)
        self.now = time.time()
        self.mono = time.monotonic()
        for _ in range(GATHER_ROUNDS):
            for key, mask in events:
                data = key.data
                if data.__class__ is Connection:
                    self._on_event(data, mask)
                elif data is None:
                    if self._on_wakeup():
                        return self._exit_now()
                elif data.__class__ is _Listener:
                    self._accept(data)
                elif isinstance(data, TlsConnection):
                    self._on_tls_event(data, mask)
                elif isinstance(data, Connection):
                    self._on_event(data, mask)  # a web connection
                elif data.__class__ is RedisLink:
                    self._on_redis_event(data, mask)
                else:
                    self._write_log()
            if not self._dirty and not self.hall.touched:
                break
            # Input that arrived meanwhile joins this iteration's output, so
            # one send() per client carries more: it costs no waiting.
            events = self.sel.select(0)
            if not events:
                break
        if self.timers:
            for callback in self.timers.pop_due(self.mono):
                try:
                    callback()
                except Exception:
                    log.exception("internal error in a timer")
        self._before_sleep()
        if self.cluster is not None:
            self._archive_if_due()
        self.history.checkpoint_if_due()  # after the output: it never waits for this
        if self.log_sink is not None and (self.log_sink.pending or self._log_watched):
            self._write_log()
        if self.stopping and (not self.conns or self.mono >= self._stop_deadline):
            return self._exit_now()
        return None

    def _rest(self, until: float, max_wait: float | None) -> bool:
        """Wait, handling nothing, until UNTIL (the cluster's rest_until): a busy
        node works in passes about READ_EVERY apart (Cluster._entries), so that
        each carries what arrived meanwhile in fewer, larger recv()s, stream
        appends and send()s. A signal ends the rest at once; timers due
        meanwhile run after it (none needs to be more exact than a rest, and
        a connection's timer would otherwise end most rests when there are
        thousands). False if MAX_WAIT ran out first."""
        assert self._rest_sel is not None
        rest = until - time.monotonic()
        waited = rest if max_wait is None else min(rest, max_wait)
        woken = self._rest_sel.select(waited) if waited > 0 else []
        return bool(woken) or waited >= rest

    def _on_event(self, conn: Connection, mask: int) -> None:
        if conn.closed:
            return  # closed earlier in this batch of events
        try:
            if mask & READ:
                self._on_readable(conn)
            if mask & WRITE and not conn.closed:
                # Written before sleeping, after the commit: output queued in
                # this iteration must not leave before it is stored.
                conn.wake()
        except Exception:
            log.exception("internal error on connection %s; closing it", conn.peer, extra={"addr": conn.addr})
            self._drop(conn, "internal error")

    def _on_redis_event(self, link: RedisLink, mask: int) -> None:
        try:
            link.on_event(mask, self.mono)
        except Exception:
            log.exception("internal error on the cluster's Redis link %s; closing it", link.name)
            link.close("internal error")

    def _resume_held(self, outbox: object) -> None:
        """The cluster carried out what a held request waited for: try it again now."""
        conn = outbox
        if isinstance(conn, Connection) and conn.held and not conn.closed:
            self._retry_held(conn, limited=False)

    def _on_tls_event(self, conn: TlsConnection, mask: int) -> None:
        """A TLS connection's readiness: its handshake's next step, or as any connection's."""
        if conn.closed:
            return
        if not conn.handshaking:
            self._on_event(conn, mask)
            return
        try:
            done = conn.handshake()
        except (OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else str(exc) or type(exc).__name__
            log.info("%s: TLS handshake failed: %s", conn.peer, reason, extra={"addr": conn.addr})
            self._close(conn, abort=True)
            return
        except Exception:
            log.exception("internal error in the TLS handshake with %s; closing it", conn.peer,
                          extra={"addr": conn.addr})
            self._close(conn, abort=True)
            return
        if done:
            self._begin_session(conn, conn.frontend)
        self._update_interest(conn)

    def _handshake_expired(self, conn: TlsConnection, timeout: float) -> None:
        if conn.closed or not conn.handshaking:
            return
        log.info("%s: no TLS handshake within %g s", conn.peer, timeout, extra={"addr": conn.addr})
        self._close(conn, abort=True)

    def _reload_tls(self) -> None:
        """SIGHUP: load the certificate and key again; new connections use them.
        If they cannot be used, the old ones stay (and the log says why)."""
        settings = self.settings
        if self.tls_context is None or settings.tls_cert is None or settings.tls_key is None:
            return
        try:
            self.tls_context = server_context(settings.tls_cert, settings.tls_key)
        except TlsError as exc:
            log.error("SIGHUP: %s; the certificate loaded before stays in use", exc)
            return
        log.info("SIGHUP: TLS certificate %s reloaded", settings.tls_cert)

    def _before_sleep(self) -> None:
        """Commit history, then flush every connection with output.

        If the commit fails, the room output it would have made durable is
        withheld (PROTOCOL.md section 7).
        """
        dirty = self._dirty
        touched = self.hall.touched
        if self.cluster is not None:
            self.cluster.flush()  # this pass's events leave for the stream together
        while True:
            if self.cluster is None and not self.history.commit():  # a node's: _archive_if_due
                self._withhold_unstored()
            self.hall.uncommitted.clear()
            if touched:
                for room in touched:
                    for user in room.members:
                        user.outbox.wake()
                touched.clear()
            if not dirty:
                return
            batch = dirty[:]
            dirty.clear()
            self._flushing = True
            for conn in batch:
                conn.dirty = False
                if conn.closed:
                    conn.out.clear()
                else:
                    self._flush(conn)
            self._flushing = False
            web.forget_frames()
            failed, self._drop_after_flush = self._drop_after_flush, []
            for conn, reason, abort in failed:
                self._drop(conn, reason, abort)

    def _archive_if_due(self) -> None:
        """A cluster node's commit of its history file, behind the stream:
        once ARCHIVE_ROWS events wait, or ARCHIVE_DELAY after the first one
        (a timer then wakes a quiet loop). What a user saw is already in
        Redis, so a failed commit withholds nothing; it is logged, and its
        events are kept for the next commit (HistoryStore, shared). A node killed with
        ``kill -9`` loses at most the last ARCHIVE_DELAY from a file it
        writes alone; nodes sharing the file keep that, and one of them
        writes it (HistoryStore.lead). A node that reads a file another
        writes commits nothing: its commit drops what the file now has."""
        history = self.history
        if not history.unsaved():
            return
        if history.unsaved_events() >= ARCHIVE_ROWS:
            history.commit()  # a timer still set finds less, or nothing, to do
        elif not self._archive_timer_set:
            self._archive_timer_set = True
            self.timers.call_at(self.mono + ARCHIVE_DELAY, self._archive_now)

    def _archive_now(self) -> None:
        self._archive_timer_set = False
        self.history.commit()

    def _withhold_unstored(self) -> None:
        """Take this batch's room events out of every outbox, and tell their senders.

        The Hall appended the same bytes objects to each recipient's list,
        so they are found by identity; this costs nothing unless a commit
        has failed.
        """
        uncommitted = self.hall.uncommitted
        if not uncommitted:
            return
        log.error("the delivery of %d room events was withheld: they are not in the history", len(uncommitted))
        unstored = {id(data) for data, _ in uncommitted}
        outs = [user.outbox.out for room in self.hall.touched for user in room.members]
        outs += [conn.out for conn in self._dirty]
        for out in outs:
            if out:
                out[:] = [data for data in out if id(data) not in unstored]
        senders = dict.fromkeys(sender for _, sender in uncommitted if sender is not None)
        for sender in senders:
            if self.hall.users.get(sender.key) is sender:
                sender.send(sender.renderer.error(UNSTORED))
        # A room whose only messages were taken back may be idle now.
        self.hall.forget_idle(self.hall.touched)

    def _write_log(self) -> None:
        """Write waiting log lines without blocking; watch the descriptor while some wait."""
        sink = self.log_sink
        assert sink is not None
        sink.flush()
        want = sink.pending
        if want != self._log_watched:
            try:
                if want:
                    self.sel.register(sink.fileno(), WRITE, _LogWriter())
                else:
                    self.sel.unregister(sink.fileno())
                self._log_watched = want
            except (OSError, ValueError, KeyError):
                pass  # a regular file cannot be watched; it is written next iteration

    def _flush(self, conn: Connection) -> None:
        try:
            conn.flush()
        except OSError:
            self._drop_soon(conn, "connection lost")
            return
        if len(conn.wbuf) > self.settings.sendq:
            log.warning("%s: send queue exceeded (%d bytes unsent)", conn.peer, len(conn.wbuf),
                        extra={"addr": conn.addr})
            conn.wbuf.clear()
            self._drop_soon(conn, "send queue exceeded", abort=True)
            return
        if not conn.wbuf and conn.session is not None and conn.session.closing:
            self._close(conn)
            return
        self._update_interest(conn)

    def _update_interest(self, conn: Connection) -> None:
        """Watch READ unless input is paused or over; WRITE only while output is pending."""
        want = 0
        session = conn.session
        if isinstance(conn, TlsConnection) and conn.handshaking:
            want = 0 if self.stopping else conn.handshake_want
        elif not (conn.paused or conn.eof or self.stopping or (session is not None and session.closing)):
            want = READ
        if conn.wbuf:
            want |= WRITE
        if want != conn.interest:
            if conn.interest == 0:
                self.sel.register(conn.sock, want, conn)
            elif want == 0:
                self.sel.unregister(conn.sock)
            else:
                self.sel.modify(conn.sock, want, conn)
            conn.interest = want

    # -- accepting ----------------------------------------------------------------

    def _accept(self, listener: _Listener) -> None:
        """Accept until the listener would block, or ACCEPTS_PER_PASS connections:
        under a storm of connections the listener never runs dry, and the
        clients already connected must still be served."""
        settings = self.settings
        frontend = listener.frontend
        for _ in range(ACCEPTS_PER_PASS):
            try:
                sock, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_PAUSE_ERRORS:
                    log.warning("cannot accept connections now: %s; pausing accepts briefly", exc)
                    self._pause_accepting()
                    return
                raise
            ip = addr[0]
            if ip.startswith("::ffff:"):
                ip = ip[7:]
            peer = f"[{ip}]:{addr[1]}" if ":" in ip else f"{ip}:{addr[1]}"
            where = address_key(ip)
            why = ""
            if len(self.conns) >= settings.max_clients:
                why = "server full"
            elif settings.max_per_ip and self.per_ip[where] >= settings.max_per_ip:
                why = "too many connections from your address"
            elif self._connects is not None and not self._connects.take(where, self.mono):
                wait = seconds_text(self._connects.wait(where, self.mono))
                why = f"too many new connections from your address; try again in {wait}"
            elif self.hall.klines and (kline := self.hall.kline_for(where, self.now)) is not None:
                why = f"you are banned from this server: {kline.reason}"
            if why:
                # A TLS client would read the refusal as a broken handshake: it is just closed.
                self._refuse(sock, peer, where, b"" if listener.tls else frontend.refusal(why), why)
            else:
                self._add_connection(sock, peer, where, frontend, listener.tls, listener.web)

    def _refuse(self, sock: socket.socket, peer: str, where: str, refusal: bytes, why: str) -> None:
        log.warning("refused %s: %s", peer, why, extra={"addr": where})
        sock.setblocking(False)
        if refusal:
            try:
                sock.send(refusal)
            except OSError:
                pass
        sock.close()

    def _pause_accepting(self) -> None:
        for listener in self.listeners:
            self.sel.unregister(listener.sock)
        self.timers.call_at(self.mono + ACCEPT_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self.stopping:
            return
        for listener in self.listeners:
            self.sel.register(listener.sock, READ, listener)

    def _add_connection(self, sock: socket.socket, peer: str, where: str, frontend: Frontend,
                        tls: bool = False, is_web: bool = False) -> None:
        settings = self.settings
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _set_keepalive(sock)
        except OSError:
            pass
        conn: Connection
        adapter = (web.WebAdapter(self._web_page, self._web_origins, frontend.max_line)
                   if is_web else None)
        if tls and self.tls_context is not None:
            try:
                secure = wrap(self.tls_context, sock)
            except OSError as exc:
                log.info("%s: cannot start TLS: %s", peer, exc, extra={"addr": where})
                sock.close()
                return
            if adapter is not None:
                conn = web.TlsWebConnection(secure, peer, where, frontend.max_line, self._dirty.append, frontend,
                                            adapter)
            else:
                conn = TlsConnection(secure, peer, where, frontend.max_line, self._dirty.append, frontend)
        elif adapter is not None:
            conn = web.WebConnection(sock, peer, where, frontend.max_line, self._dirty.append, adapter)
        else:
            conn = Connection(sock, peer, where, frontend.max_line, self._dirty.append)
        conn.tokens = float(settings.flood_burst)
        conn.token_time = self.mono
        conn.last_input = self.mono
        conn.session = frontend.make_session(self.hall, conn, peer, where)
        self.conns[conn.fd] = conn
        self.per_ip[where] += 1
        self._update_interest(conn)
        log.info("connection from %s%s", peer, " (TLS)" if tls else "", extra={"addr": where})
        if isinstance(conn, TlsConnection):
            # The session starts once the handshake is done; the handshake is part
            # of registering, so a shorter --registration-timeout bounds it too.
            timeout = HANDSHAKE_TIMEOUT
            if 0 < settings.registration_timeout < timeout:
                timeout = settings.registration_timeout
            self.timers.call_at(self.mono + timeout, lambda: self._handshake_expired(conn, timeout))
        else:
            self._begin_session(conn, frontend)

    def _begin_session(self, conn: Connection, frontend: Frontend) -> None:
        """Greet (in the protocols that speak first) and start the session's timers."""
        settings = self.settings
        assert conn.session is not None
        conn.session.start()
        if settings.registration_timeout > 0:
            self.timers.call_at(self.mono + settings.registration_timeout,
                                lambda: self._registration_expired(conn))
        if frontend.ping_interval:
            interval = frontend.ping_interval
            self.timers.call_at(self.mono + interval, lambda: self._check_idle(conn, interval))

    def _check_idle(self, conn: Connection, interval: float) -> None:
        """Ping a connection that has been silent for INTERVAL; drop it if the
        last ping went unanswered for as long."""
        if conn.closed or conn.session is None or conn.session.closing:
            return
        silent = self.mono - conn.last_input
        if silent >= interval:
            if not conn.session.ping():  # type: ignore[attr-defined]
                log.info("%s: ping timeout", conn.peer, extra={"addr": conn.addr})
                self._drop(conn, f"Ping timeout: {int(silent)} seconds")
                return
            silent = 0.0
        self.timers.call_at(self.mono + interval - silent, lambda: self._check_idle(conn, interval))

    def _registration_expired(self, conn: Connection) -> None:
        if conn.closed or conn.session is None or conn.session.registered or conn.session.closing:
            return
        log.info("%s gave no name in time", conn.peer, extra={"addr": conn.addr})
        conn.session.timed_out(self.settings.registration_timeout)
        self._close_after_flush(conn)

    # -- input ------------------------------------------------------------------------

    def _on_readable(self, conn: Connection) -> None:
        try:
            data = conn.recv()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn, "connection lost")
            return
        conn.last_input = self.mono
        if not data:
            conn.eof = True
            self._update_interest(conn)
        if self.settings.flood_rate > 0:
            if data:
                # Kept as the one bytes object it arrived in; lines are cut
                # from it as the flood budget allows.
                conn.framer.push(data)
            self._drain(conn)
            return
        self._handle_all(conn, conn.framer.feed(data) if data else conn.framer.finish())
        if conn.eof and not conn.closed and not conn.held:
            self._input_ended(conn)

    def _handle_all(self, conn: Connection, frames: list[Frame]) -> None:
        """No flood control: every line at once. This is the hot path, so the
        per-line work of _handle_frame is inlined here."""
        if not frames:
            return
        session = conn.session
        assert session is not None
        if session.closing:
            return
        handle, now, text = session.handle_line, self.now, session.wants_text
        rest = iter(frames)
        for frame in rest:
            if frame.__class__ is bytes:
                if text:
                    # decode_line(), inlined for the common case: no telnet
                    # commands, and all printable once decoded.
                    if b"\xff" in frame:
                        handle(decode_line(frame), now)
                    else:
                        line = frame.decode("utf-8", "replace")
                        handle(line if line.isprintable() else sanitize(line), now)
                else:
                    handle(frame, now)
                if session.closing:
                    break
                if session.held:
                    self._hold(conn, list(rest))
                    return
            else:
                session.line_too_long(conn.framer.max_line)
        if session.closing:
            self._close_after_flush(conn)

    def _hold(self, conn: Connection, later: list[Frame]) -> None:
        """The session holds a request for a while (pychat.core.errors.Busy):
        the lines after it wait, unread, and reading pauses until it is done."""
        session = conn.session
        assert session is not None
        wait, session.held = session.held, 0.0
        log.debug("%s waits (at most %.2f s) for a request it made: a slow check's turn, or the cluster",
                  conn.peer, wait, extra={"addr": conn.addr})
        conn.framer.unread(later)
        conn.held = True
        was_paused, conn.paused = conn.paused, True
        self.timers.call_at(self.mono + wait, lambda: self._retry_held(conn))
        if not was_paused:
            self._update_interest(conn)

    def _retry_held(self, conn: Connection, limited: bool = True) -> None:
        """Try the held request again; then the lines that waited, as usual.

        At most HELD_RETRIES_PER_PASS are tried in one pass of the loop: a
        thousand requests held at once, all due at once, would otherwise
        make one long pause for everyone. The others wait for the next pass.
        """
        session = conn.session
        if conn.closed or session is None:
            return
        if self._retry_pass != self.now:
            self._retry_pass, self._retries = self.now, 0
        if self._retries >= HELD_RETRIES_PER_PASS and limited:
            self.timers.call_at(self.mono, lambda: self._retry_held(conn))
            return
        self._retries += 1
        try:
            session.retry(self.now)
            if session.closing:
                self._close_after_flush(conn)
                return
            if session.held:
                self._hold(conn, [])
                return
            conn.held = False
            if self.settings.flood_rate > 0:
                self._drain(conn)
                return
            self._handle_all(conn, conn.framer.pop(1 << 30))
            if conn.closed or conn.held:
                return
            conn.paused = False
            self._update_interest(conn)
            if conn.eof:
                self._input_ended(conn)
        except Exception:
            log.exception("internal error on connection %s; closing it", conn.peer, extra={"addr": conn.addr})
            self._drop(conn, "internal error")

    def _drain(self, conn: Connection) -> None:
        """Handle waiting lines while the flood budget allows; pause reading otherwise.

        The budget is the connection's own, and its address's share
        (ADDRESS_LINES_FACTOR): 100 connections from one address get no more
        than ten would.
        """
        if conn.held:
            return  # _retry_held drains once the held request is done
        rate = self.settings.flood_rate
        conn.tokens = min(float(self.settings.flood_burst),
                          conn.tokens + (self.mono - conn.token_time) * rate)
        conn.token_time = self.mono
        framer = conn.framer
        lines_by_address = self._lines_by_address
        shared = lines_by_address.bucket(conn.addr, self.mono) if lines_by_address is not None else None
        while framer.waiting and not conn.closed:
            allowed = int(conn.tokens) if shared is None else int(min(conn.tokens, shared.available(self.mono)))
            if allowed < 1:
                break
            frames = framer.pop(allowed)
            conn.tokens -= len(frames)
            if shared is not None:
                shared.tokens -= len(frames)
            rest = iter(frames)
            for frame in rest:
                self._handle_frame(conn, frame)
                if conn.session is not None and conn.session.held and not conn.closed:
                    later = list(rest)
                    conn.tokens += len(later)  # not handled yet: they are paid for when they are
                    if shared is not None:
                        shared.tokens += len(later)
                    self._hold(conn, later)
                    return
        if conn.closed:
            return
        if conn.eof and not framer.waiting:
            for frame in framer.finish():  # the unterminated tail still counts
                self._handle_frame(conn, frame)
            if not conn.closed:
                self._input_ended(conn)
            return
        was_paused = conn.paused
        conn.paused = framer.waiting
        if conn.paused:
            wait = max(0.0, (1.0 - conn.tokens) / rate)
            if shared is not None:
                # Woken when the address can send a burst, not a line at a
                # time: its paused connections then do not all wake per line.
                wait = max(wait, shared.wait(self.mono, min(float(self.settings.flood_burst), shared.rate.burst)))
            self.timers.call_at(self.mono + wait, lambda: self._resume(conn))
        if conn.paused != was_paused:
            self._update_interest(conn)

    def _resume(self, conn: Connection) -> None:
        if conn.closed or not conn.paused:
            return
        try:
            self._drain(conn)
        except Exception:
            log.exception("internal error on connection %s; closing it", conn.peer, extra={"addr": conn.addr})
            self._drop(conn, "internal error")

    def _handle_frame(self, conn: Connection, frame: Frame) -> None:
        session = conn.session
        assert session is not None
        if session.closing:
            return
        if isinstance(frame, bytes):
            session.handle_line(decode_line(frame) if session.wants_text else frame, self.now)
            if session.closing:
                self._close_after_flush(conn)
        else:
            session.line_too_long(conn.framer.max_line)

    def _input_ended(self, conn: Connection) -> None:
        """The peer half-closed and all its lines are handled: say goodbye after the answers."""
        session = conn.session
        if session is not None and not session.closing:
            session.disconnected("connection closed", self.now)
        self._close_after_flush(conn)

    # -- closing ------------------------------------------------------------------------

    def _close_after_flush(self, conn: Connection) -> None:
        """Stop reading; close once the output is written, or at the flush deadline."""
        if conn.closed:
            return
        if conn.session is not None:
            conn.session.closing = True
        conn.close_deadline = self.mono + self.settings.flush_deadline
        self.timers.call_at(conn.close_deadline, lambda: self._close(conn, abort=True))
        if not conn.out and not conn.wbuf:
            self._close(conn)
        else:
            self._update_interest(conn)

    def _drop_soon(self, conn: Connection, reason: str, abort: bool = False) -> None:
        """Drop CONN now, or after the output batch being written (see _flushing)."""
        if self._flushing:
            self._drop_after_flush.append((conn, reason, abort))
        else:
            self._drop(conn, reason, abort)

    def _drop(self, conn: Connection, reason: str, abort: bool = False) -> None:
        """Close at once: the peer is gone or misbehaved. The room is told why.

        ABORT resets the connection, so that what the kernel still holds
        for a peer that stopped reading is thrown away, not trickled out.
        """
        if conn.closed:
            return
        session = conn.session
        if session is not None and not self.stopping:
            try:
                session.disconnected(reason, self.now)
            except Exception:
                log.exception("error while removing %s", conn.peer, extra={"addr": conn.addr})
        self._close(conn, abort)

    def _close(self, conn: Connection, abort: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        session = conn.session
        if session is not None and session.registered and not self.stopping:
            session.disconnected("connection closed", self.now)
        if self.cluster is not None:
            self.cluster.hall.forget_connection(conn)
        if conn.interest:
            self.sel.unregister(conn.sock)
            conn.interest = 0
        if abort:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
            except OSError:
                pass
        elif isinstance(conn, TlsConnection):
            conn.say_goodbye()
        conn.sock.close()
        del self.conns[conn.fd]
        self.per_ip[conn.addr] -= 1
        if not self.per_ip[conn.addr]:
            del self.per_ip[conn.addr]
        log.info("closed %s", conn.peer, extra={"addr": conn.addr})

    # -- signals and shutdown ---------------------------------------------------------

    def _on_wakeup(self) -> bool:
        """Drain the wakeup socket and act on signals; True means exit at once."""
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        signals, self._signals = self._signals, []
        for signum in signals:
            if signum == signal.SIGHUP:
                self._reload_tls()
                continue
            if self.stopping:
                log.warning("second signal (%s): exiting at once", signal.Signals(signum).name)
                return True
            log.info("%s: shutting down", signal.Signals(signum).name)
            self._begin_shutdown()
        return False

    def _begin_shutdown(self) -> None:
        """Stop accepting, tell everyone, and close each connection once flushed."""
        self.stopping = True
        self._stop_deadline = self.mono + self.settings.flush_deadline
        for listener in self.listeners:
            try:
                self.sel.unregister(listener.sock)
            except (KeyError, ValueError):
                pass
            listener.sock.close()
        self.listeners.clear()
        for conn in list(self.conns.values()):
            if conn.session is not None:
                conn.session.shutting_down()
            self._update_interest(conn)

    def _exit_now(self) -> int:
        self.stopping = True
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster.flush()
        for conn in list(self.conns.values()):
            self._close(conn)
        self.history.close()
        log.info("server stopped")
        return 0

    def close(self) -> None:
        """Release sockets (for tests that run a server in-process)."""
        for listener in self.listeners:
            listener.sock.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._rest_sel is not None:
            self._rest_sel.close()
        self.sel.close()


def _set_keepalive(sock: socket.socket) -> None:
    """Probe idle peers so that dead ones are found (after about two minutes)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def configure_logging(level: str) -> NonBlockingStderr:
    """Log to stderr without ever blocking the loop, throttled per address."""
    sink = NonBlockingStderr(sys.stderr.fileno() if sys.stderr is not None else 2)
    handler = logging.StreamHandler(sink)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(Throttle())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    return sink


# Container objects (lists, dicts, instances...) made and not yet freed that
# start a collection of the youngest generation; Python's default is 700.
# A busy loop pass holds tens of thousands of them (a message's event, its
# output, its history row) until the pass ends: a collection started in
# the middle walks them all, for nothing.
YOUNG_GENERATION_THRESHOLD = 100_000


def tune_garbage_collector() -> None:
    """Make the cyclic garbage collector cheap for the objects a server has.

    What startup made (modules, classes, the world loaded from the history
    file) lives as long as the process, and what a message makes dies young,
    freed by reference counting, since it holds no cycles. With Python's
    defaults the collector still ran after every 700 new containers and,
    every hundredth time, walked every object of the process: 7% of a busy
    server's CPU, 12 to 18% of a cluster node's, in pauses of 20 to 40 ms.
    So what startup made is frozen (never walked again) and the young
    generation is collected once 100,000 containers are alive that were
    not there at the last collection. Cycles are still collected, a little
    later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, 10, 10)


def main(argv: list[str] | None = None) -> None:
    settings = parse_server_args(argv)
    sink = configure_logging(settings.log_level)
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            server_context(settings.tls_cert, settings.tls_key)  # before anything else is opened
        except TlsError as exc:
            print(f"pychat-server: {exc}", file=sys.stderr)
            sys.exit(1)
    try:
        history = HistoryStore(settings.db)
    except HistoryError as exc:
        print(f"pychat-server: {exc}", file=sys.stderr)
        sys.exit(1)
    if settings.cluster is not None:
        if importlib.util.find_spec("hiredis") is None:  # the cluster extra
            print("pychat-server: --cluster needs hiredis: python3 -m pip install '.[cluster]' in the checkout "
                  "(or 'pychat[cluster]')", file=sys.stderr)
            sys.exit(1)
    try:
        server = Server(settings, history, sink)
    except TlsError as exc:  # the files changed since they were checked just now
        print(f"pychat-server: {exc}", file=sys.stderr)
        sys.exit(1)
    # Before listening: a signal that comes as soon as clients can connect
    # must already find its handler.
    server.install_signal_handlers()
    server.raise_file_limit()
    try:
        server.listen()
    except ListenError as exc:
        print(f"pychat-server: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("history in %s", settings.db)
    tune_garbage_collector()
    status = server.run()
    sink.flush()
    sys.exit(status)
