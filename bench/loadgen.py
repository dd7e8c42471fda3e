"""Load generator for chat servers: pychat's line protocol or IRC, over TCP,
TLS (``--transport tls``) or a WebSocket (``--transport ws``: IRC in text
frames, as pychat's web front end speaks it).

Runs in its own process, one selectors loop. Every client has a
fixed-width name (``u00012``) and sends fixed-size payloads (its number
and a sequence number, 8 digits each, then the monotonic send time, then
padding: bench/seqcheck.py) in its room, so every delivery of every
scenario is checked by sequence number for loss, duplicates and order. To stay cheaper than the server it measures, each
receiver reads straight into a preallocated buffer that is checked in
large batches with numpy; only one "probe" client per room parses its
lines as they come, for latency.

Prints one JSON object on stdout. Run ``python3 -m bench.loadgen --help``.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from bench import seqcheck
from bench.common import raise_nofile, server_cpu, server_rss, socket_owners

SCRATCH_SIZE = 1 << 18   # setup reads: one buffer, reused (a fresh 256 KiB bytes per read is costly)
CHECK_MEMORY = 256 << 20  # bytes of check buffers for all receivers together


@dataclass
class Room:
    name: str
    members: list["Client"] = field(default_factory=list)
    senders: list["Client"] = field(default_factory=list)
    sent: int = 0              # messages sent into the room
    delivered_bytes: int = 0   # bytes its members read while measuring
    checker: seqcheck.RoomChecker | None = None

    @property
    def delivered(self) -> int:
        """Lines received by its members while measuring (every line of a room
        has the same length; the checker counts what each one really was)."""
        return self.checker.records_received(self.delivered_bytes) if self.checker else 0

    @property
    def in_flight(self) -> int:
        return self.sent * (len(self.members) - 1) - self.delivered


class Client:
    __slots__ = ("sock", "index", "member", "name", "room", "steps", "probe", "buf", "seq", "out", "wsin", "wsframe",
                 "node")

    def __init__(self, sock: socket.socket, index: int, prefix: str, room: Room) -> None:
        self.sock = sock
        self.index = index                # the number in its name and payloads
        self.member = len(room.members)   # its position in the room
        self.name = seqcheck.name(index, prefix)
        self.room = room
        self.steps: list[tuple[bytes, bytes]] = []  # of the login still to come, the current one first
        self.probe = False
        self.buf = b""
        self.seq = 0
        self.out = b""
        self.wsin = b""      # WebSocket: the start of a frame not yet whole
        self.wsframe = b""   # WebSocket, measuring: the header every message frame of its room starts with
        self.node = 0        # of several server processes sharing the port: the one that took it

    @property
    def ready(self) -> bool:
        """Logged in and in its room."""
        return not self.steps


class Protocol:
    pings = False  # the server may PING an idle client, which must answer

    def login(self, name: str, room: str) -> list[tuple[bytes, bytes]]:
        """The login as steps: what to send, then what ends the step; the
        last step ends with the client in ROOM."""
        raise NotImplementedError

    def say(self, room: str, payload: bytes) -> bytes:
        raise NotImplementedError


class PychatProtocol(Protocol):
    def login(self, name: str, room: str) -> list[tuple[bytes, bytes]]:
        # New users land in #general by default.
        send = f"{name}\n".encode() if room == "general" else f"{name}\n/join {room}\n".encode()
        return [(send, b"* you joined #")]

    def say(self, room: str, payload: bytes) -> bytes:
        return payload + b"\n"


class IrcProtocol(Protocol):
    pings = True

    def login(self, name: str, room: str) -> list[tuple[bytes, bytes]]:
        # JOIN only once registered (RPL_WELCOME), as IRC clients do: InspIRCd
        # completes registrations on a timer and refuses a JOIN before then.
        return [(f"NICK {name}\r\nUSER {name} 0 * :{name}\r\n".encode(), b" 001 "),
                (f"JOIN #{room}\r\n".encode(), b" 366 ")]

    def say(self, room: str, payload: bytes) -> bytes:
        return b"PRIVMSG #" + room.encode() + b" :" + payload + b"\r\n"


class PychatHallProtocol(PychatProtocol):
    """Clients that register and stay in the hall (server run with --default-room '')."""

    def login(self, name: str, room: str) -> list[tuple[bytes, bytes]]:
        return [(f"{name}\n".encode(), b"* hello ")]


PROTOCOLS = {"pychat": PychatProtocol, "pychat-hall": PychatHallProtocol, "irc": IrcProtocol}

# -- WebSocket framing (RFC 6455) -------------------------------------------------------

_MASK = b"\x5a\xa5\x3c\xc3"  # one key for every frame: this generator must stay cheap


def ws_frames(data: bytes) -> bytes:
    """Each CRLF-ended line of DATA as one masked text frame, as a browser sends them."""
    out = []
    for line in data.split(b"\r\n"):
        if not line:
            continue
        size = len(line)
        head = bytes((0x81, 0x80 | size)) if size < 126 else struct.pack("!BBH", 0x81, 0xFE, size)
        key = (_MASK * (size // 4 + 1))[:size]
        masked = (int.from_bytes(line, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
        out.append(head + _MASK + masked)
    return b"".join(out)


def ws_lines(client: Client, data: bytes) -> bytes:
    """The server's text frames in CLIENT's input so far, as CRLF-ended lines;
    an unfinished frame waits in ``client.wsin``."""
    data = client.wsin + data if client.wsin else data
    out = []
    at, end = 0, len(data)
    while end - at >= 2:
        size = data[at + 1] & 0x7F
        head = 2
        if size == 126:
            if end - at < 4:
                break
            size, head = struct.unpack_from("!H", data, at + 2)[0], 4
        elif size == 127:
            if end - at < 10:
                break
            size, head = struct.unpack_from("!Q", data, at + 2)[0], 10
        if end - at < head + size:
            break
        if data[at] & 0x0F == 1:  # text; the server sends no other kind here
            out.append(data[at + head:at + head + size] + b"\r\n")
        at += head + size
    client.wsin = data[at:]
    return b"".join(out)


def ws_measured_lines(client: Client, data: bytes) -> bytes:
    """ws_lines() for the measured messages: every frame of a room has the same
    length, so whole frames become lines in a few numpy operations (anything
    else, or a frame split across reads, takes the general way)."""
    data = client.wsin + data if client.wsin else data
    head = client.wsframe
    if not head:
        if len(data) < 4 or data[0] != 0x81 or data[1] == 127:
            client.wsin = b""
            return ws_lines(client, data)
        head = client.wsframe = data[:2] if data[1] < 126 else data[:4]
    hsize = len(head)
    size = head[1] if hsize == 2 else struct.unpack_from("!H", head, 2)[0]
    record = hsize + size
    count = len(data) // record
    frames = np.frombuffer(data, dtype=np.uint8, count=count * record).reshape(count, record)
    if count and not (frames[:, :hsize] == np.frombuffer(head, dtype=np.uint8)).all():
        client.wsin = b""
        return ws_lines(client, data)
    lines = np.empty((count, size + 2), dtype=np.uint8)
    lines[:, :size] = frames[:, hsize:]
    lines[:, size] = 13
    lines[:, size + 1] = 10
    client.wsin = data[count * record:]
    return lines.tobytes()


def ws_upgrade(sock: socket.socket, host: str, port: int) -> None:
    """The WebSocket opening handshake, blocking (setup only)."""
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Protocol: text.ircv3.net\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("loadgen: the server closed the WebSocket handshake")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"loadgen: WebSocket refused: {answer.splitlines()[0]!r}")


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.proto: Protocol = PROTOCOLS[args.protocol]()
        self.sel = selectors.DefaultSelector()
        # Room 0 is pychat's default room, so its members need no /join.
        self.rooms = [Room("general" if i == 0 else f"r{i}") for i in range(args.rooms)]
        self.clients: list[Client] = []
        self.measuring = False
        # CONNS: clients idle through a long setup are PINGed by the server
        # while the one message is measured; they answer, and the PING is
        # no delivery (A and B are too short for a PING, and not slowed).
        self.strip_pings = self.proto.pings and args.mode == "conns"
        self.latencies: list[int] = []
        self.cross_latencies: list[int] = []  # several nodes: of messages from a sender on another node
        self.nodes = len(args.server_pid)
        self.node_of: dict[int, int] = {}     # client index -> its node, while measuring
        self.pending_out: set[Client] = set()
        self.scratch = bytearray(SCRATCH_SIZE)
        self.ws = args.transport == "ws"
        self.tls: ssl.SSLContext | None = None
        if args.transport == "tls":
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE  # the server's certificate is the run's own
        self.time_at = seqcheck.time_field(args.size, 1)  # lines end in CR once split on LF
        self.sender_at = seqcheck.sender_field(args.size, 1)

    # -- setup ------------------------------------------------------------

    def connect_all(self) -> float:
        """Connect and log in every client; return the seconds it took until all
        were in their rooms and the server went quiet."""
        args = self.args
        start = time.monotonic()
        plan = [(room, m) for room in self.rooms for m in range(args.members)]
        deadline = time.monotonic() + args.setup_timeout
        registering: list[Client] = []
        for index, (room, m) in enumerate(plan):
            # A bounded number of logins at once: some servers listen with a
            # tiny backlog and drop SYNs beyond it (a 1 s retransmit each).
            while len(registering) >= args.connect_window:
                if args.read_pause:
                    time.sleep(args.read_pause)  # larger reads of the join notices
                self._poll(0.01)
                registering = [c for c in registering if not c.ready]
                if time.monotonic() > deadline:
                    raise SystemExit(f"loadgen: only {index} clients could log in within the setup timeout")
            try:
                sock = socket.create_connection((args.host, args.port), timeout=30)
            except OSError as exc:
                raise SystemExit(f"loadgen: connection {index + 1} failed: {exc}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock)
            elif self.ws:
                ws_upgrade(sock, args.host, args.port)
            sock.setblocking(False)
            client = Client(sock, index, args.name_prefix, room)
            room.members.append(client)
            if m < args.senders:
                room.senders.append(client)
            if m == args.members - 1:
                room.members[-1].probe = True
            self.clients.append(client)
            registering.append(client)
            self.sel.register(sock, selectors.EVENT_READ, client)
            client.steps = self.proto.login(client.name, room.name)
            self._send(client, client.steps[0][0])
            self._poll(0)
        waiting = len(self.clients)
        while any(not c.ready for c in self.clients):
            if args.read_pause:
                time.sleep(args.read_pause)
            if time.monotonic() > deadline:
                missing = sum(not c.ready for c in self.clients)
                raise SystemExit(f"loadgen: {missing} of {waiting} clients not ready in time")
            self._poll(0.05)
        ready_time = time.monotonic() - start
        self._quiet(args.quiet)
        if self.nodes > 1:
            self._find_nodes()
        return ready_time

    def _find_nodes(self) -> None:
        """Which server process took each client (several nodes share the port)."""
        owners = socket_owners(self.args.port, self.args.server_pid)
        for c in self.clients:
            c.node = owners.get(c.sock.getsockname()[1], -1)
        unknown = sum(c.node < 0 for c in self.clients)
        if unknown:
            raise SystemExit(f"loadgen: {unknown} clients on none of the server processes given")

    def per_node(self) -> list[int]:
        """How many clients each server process took."""
        return [sum(c.node == n for c in self.clients) for n in range(self.nodes)]

    def _quiet(self, seconds: float) -> None:
        """Read until nothing has arrived for SECONDS."""
        last = time.monotonic()
        while time.monotonic() - last < seconds:
            if self._poll(seconds / 4):
                last = time.monotonic()

    # -- I/O ----------------------------------------------------------------

    def _send(self, client: Client, data: bytes) -> None:
        if self.ws:
            data = ws_frames(data)
        if client.out:
            client.out += data
            return
        try:
            sent = client.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            client.out = data[sent:]
            self.pending_out.add(client)
            self.sel.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _flush_pending(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except BlockingIOError:
            return
        client.out = client.out[sent:]
        if not client.out:
            self.pending_out.discard(client)
            self.sel.modify(client.sock, selectors.EVENT_READ, client)

    def _poll(self, timeout: float) -> int:
        """One select(); returns the number of bytes read."""
        total = 0
        for key, mask in self.sel.select(timeout):
            client: Client = key.data
            if mask & selectors.EVENT_WRITE:
                self._flush_pending(client)
            if mask & selectors.EVENT_READ:
                checker = client.room.checker
                try:
                    if checker is None or self.ws:
                        n = client.sock.recv_into(self.scratch)
                    else:
                        view = checker.buffer(client.member)
                        n = client.sock.recv_into(view)
                except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                    continue
                if not n:
                    raise SystemExit(f"loadgen: server closed {client.name} with {len(self.clients)} clients connected")
                total += n
                if checker is not None and self.strip_pings and not self.ws:
                    n = self._answer_pings(client, view, n)
                if self.ws:
                    lines = (ws_measured_lines if checker is not None else ws_lines)(client, bytes(self.scratch[:n]))
                    n = len(lines)
                    if checker is not None:
                        client.room.delivered_bytes += n
                        if client.probe:
                            self._probe(client, lines)
                        checker.feed(client.member, lines)
                        continue
                    self.scratch[:n] = lines
                if checker is None:
                    if not self._setup_received(client, n):
                        total -= n  # PINGs only: for _quiet, the server said nothing
                    continue
                client.room.delivered_bytes += n
                if client.probe:
                    self._probe(client, bytes(view[:n]))  # before the checker may move them
                checker.received(client.member, n)
        return total

    def _setup_received(self, client: Client, n: int) -> bool:
        """Look for the end of the login's current step in the N bytes just
        read into the scratch buffer; then send the next step, if any. Answer
        a PING in them, as IRC clients do: a CONNS setup can outlast a
        server's idle timeout. False if the bytes were whole PINGs and
        nothing else (a server that pings its idle clients is quiet still)."""
        if self.proto.pings and self.scratch.find(b"PING ", 0, n) >= 0:
            data = bytes(self.scratch[:n])
            self._pong(client, data)
            if data.endswith(b"\n") and all(_is_ping(line) for line in data.splitlines()):
                return False
        if client.ready:
            return True
        # Search the new bytes and, for a marker split across reads, the
        # tail of the old ones joined to the head of the new.
        marker = client.steps[0][1]
        keep = len(marker) - 1
        if (self.scratch.find(marker, 0, n) >= 0
                or marker in client.buf + bytes(self.scratch[:min(n, keep)])):
            client.steps.pop(0)
            client.buf = b""
            if client.steps:
                self._send(client, client.steps[0][0])
        else:
            client.buf = (client.buf + bytes(self.scratch[max(0, n - keep):n]))[-keep:]
        return True

    def _answer_pings(self, client: Client, view: memoryview, n: int) -> int:
        """Answer the whole PING lines among the N bytes in VIEW and take them
        out (they are not deliveries); the number of bytes left."""
        data = bytes(view[:n])
        if b"PING " not in data:
            return n
        self._pong(client, data)
        kept = b"".join(line for line in data.splitlines(keepends=True)
                        if not (line.endswith(b"\n") and _is_ping(line)))
        view[:len(kept)] = kept
        return len(kept)

    def _pong(self, client: Client, data: bytes) -> None:
        """PONG every whole ``PING`` line in DATA (``PING token`` or ``:server PING :token``)."""
        for line in data.split(b"\n"):
            if _is_ping(line):
                self._send(client, b"PONG " + line.rstrip(b"\r").split(b" ")[-1] + b"\r\n")

    def _probe(self, client: Client, data: bytes) -> None:
        now = time.monotonic_ns()
        lines = (client.buf + data).split(b"\n")
        client.buf = lines.pop()
        at = self.time_at
        append = self.latencies.append
        if self.nodes > 1:
            self._probe_nodes(client, lines, now)
            return
        for line in lines:
            try:
                append(now - int(line[at]))
            except ValueError:
                pass  # not a message (the checker counts those)

    def _probe_nodes(self, client: Client, lines: list[bytes], now: int) -> None:
        """_probe() with several nodes: also set apart the messages whose
        sender is on another node than CLIENT."""
        at, sender_at = self.time_at, self.sender_at
        node_of = self.node_of
        for line in lines:
            try:
                latency = now - int(line[at])
                sender = int(line[sender_at])
            except ValueError:
                continue  # not a message (the checker counts those)
            self.latencies.append(latency)
            if node_of.get(sender, client.node) != client.node:
                self.cross_latencies.append(latency)

    def _start_checking(self) -> None:
        """From now on every read goes to its room's sequence checker."""
        # Large batches keep numpy's per-call cost small; the buffers are
        # mappings, so a receiver that gets one line (CONNS) touches one page.
        receivers = sum(len(r.members) for r in self.rooms)
        size = self.args.check_buffer or max(64 << 10, min(1 << 20, CHECK_MEMORY // max(1, receivers)))
        self.node_of = {c.index: c.node for c in self.clients}
        for room in self.rooms:
            room.checker = seqcheck.RoomChecker([c.index for c in room.members],
                                                [c.index for c in room.senders], self.args.size, size)
            for c in room.members:
                c.buf = b""
                c.wsframe = b""  # learnt from the first message frame
        self.measuring = True

    def _finish_checking(self) -> dict:
        return seqcheck.merge([r.checker.finish({c.index: c.seq for c in r.senders})
                               for r in self.rooms if r.checker])

    # -- load ---------------------------------------------------------------

    def _send_batch(self, client: Client, count: int) -> None:
        """COUNT messages in one send(); they share a send time."""
        room = client.room
        now = time.monotonic_ns()
        first = client.seq + 1
        client.seq += count
        make, say, size, index = seqcheck.make_payload, self.proto.say, self.args.size, client.index
        data = b"".join([say(room.name, make(index, seq, now, size)) for seq in range(first, first + count)])
        room.sent += count
        self._send(client, data)

    def run_load(self) -> dict:
        args = self.args
        pids = args.server_pid
        cpu0 = [server_cpu(pid) for pid in pids]
        redis0 = server_cpu(args.redis_pid, children=True) if args.redis_pid else 0.0
        own0 = time.process_time()
        self._start_checking()
        self._set_lowat(args.rcvlowat)
        start = time.monotonic()
        stop_sending = start + args.duration
        if args.rate > 0:
            self._fixed_rate(start, stop_sending)
        else:
            self._flat_out(stop_sending)
        self._set_lowat(1)  # the last deliveries must not wait for a full chunk
        sent_messages = sum(r.sent for r in self.rooms)
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            if all(r.delivered >= r.sent * (len(r.members) - 1) for r in self.rooms):
                break
            self._poll(0.05)
        end = time.monotonic()
        cpu1 = [server_cpu(pid) for pid in pids]
        redis1 = server_cpu(args.redis_pid, children=True) if args.redis_pid else 0.0
        own1 = time.process_time()
        elapsed = end - start
        # After the clock stopped: take any stragglers (the byte count that
        # ended the drain would also count a stray line), then check the rest.
        self._quiet(0.05)
        check = self._finish_checking()
        delivered = check["deliveries"]
        node_cpu = [b - a for a, b in zip(cpu0, cpu1)]
        server_cpu_s = sum(node_cpu)
        result = {
            "messages": sent_messages,
            **check,
            "seconds": elapsed,
            "deliveries_per_s": delivered / elapsed if elapsed else 0.0,
            "messages_per_s": sent_messages / elapsed if elapsed else 0.0,
            "server_cpu_s": server_cpu_s,
            "server_busy_pct": server_cpu_s / elapsed * 100 if elapsed else None,
            "loadgen_cpu_s": own1 - own0,
            "loadgen_busy_pct": (own1 - own0) / elapsed * 100 if elapsed else None,
            "cpu_us_per_delivery": server_cpu_s / delivered * 1e6 if delivered else None,
            "latency_ms": percentiles(self.latencies),
        }
        if self.nodes > 1:
            result.update(node_cpu_s=node_cpu, node_busy_pct=[c / elapsed * 100 for c in node_cpu],
                          clients_per_node=self.per_node(), cross_latency_ms=percentiles(self.cross_latencies))
        if args.redis_pid:
            redis_cpu = redis1 - redis0
            result.update(redis_cpu_s=redis_cpu, redis_busy_pct=redis_cpu / elapsed * 100 if elapsed else None,
                          redis_cpu_us_per_delivery=redis_cpu / delivered * 1e6 if delivered else None,
                          total_cpu_us_per_delivery=(server_cpu_s + redis_cpu) / delivered * 1e6
                          if delivered else None)
        return result

    def _set_lowat(self, size: int) -> None:
        """Report a socket readable only once SIZE bytes wait: fewer, larger reads."""
        if size > 1 or self.args.rcvlowat > 1:
            for c in self.clients:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)

    def _flat_out(self, stop: float) -> None:
        window = self.args.window
        batch = self.args.batch
        while time.monotonic() < stop:
            for room in self.rooms:
                limit = window * len(room.senders) * (len(room.members) - 1)
                if room.in_flight < limit:
                    for sender in room.senders:
                        if not sender.out:
                            self._send_batch(sender, batch)
            self._poll(0.001 if self.pending_out else 0.0005)
            if self.args.read_pause:
                # Let deliveries pile up in the kernel: fewer, larger reads
                # keep the generator cheaper than the server it measures.
                time.sleep(self.args.read_pause)

    def _fixed_rate(self, start: float, stop: float) -> None:
        senders = [s for r in self.rooms for s in r.senders]
        per_sender = self.args.rate / len(senders)
        while True:
            now = time.monotonic()
            if now >= stop:
                break
            due_total = per_sender * (now - start)
            for s in senders:
                count = int(due_total) - s.seq
                if count > 0:
                    self._send_batch(s, count)
            self._poll(0.0005)

    def single_message_fanout(self) -> dict:
        """Seconds for one message to reach every other member of room 0, and
        the check that each got it exactly once."""
        room = self.rooms[0]
        room.senders = [room.members[0]]
        self._start_checking()
        start = time.monotonic()
        self._send_batch(room.members[0], 1)
        target = len(room.members) - 1
        deadline = start + self.args.drain_timeout
        while room.delivered < target:
            if time.monotonic() > deadline:
                break  # the check below says how many never got it
            self._poll(0.01)
        fanout = time.monotonic() - start
        self._quiet(0.05)
        return {"fanout_s": fanout, **self._finish_checking()}


def _is_ping(line: bytes) -> bool:
    """``PING token`` or ``:server PING :token`` (with or without its line end)."""
    words = line.rstrip(b"\r\n").split(b" ")
    if words[0].startswith(b":"):
        words = words[1:]
    return len(words) >= 2 and words[0] == b"PING"


def percentiles(samples: list[int]) -> dict:
    """p50, p90, p99 and max of SAMPLES (nanoseconds) in milliseconds, and their count."""
    lat = sorted(samples)

    def pct(p: float) -> float | None:
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6 if lat else None

    return {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": lat[-1] / 1e6 if lat else None,
            "samples": len(lat)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="pychat")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--transport", choices=["tcp", "tls", "ws"], default="tcp",
                   help="plain TCP, TLS (the certificate is not checked) or a WebSocket at /ws (IRC only)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="read the server's CPU time and RSS from /proc; given more than once (nodes sharing "
                        "the port), their CPU is summed and latency is also reported across nodes")
    p.add_argument("--redis-pid", type=int, default=0, help="a Redis the server uses: its CPU time is reported apart")
    p.add_argument("--rooms", type=int, default=1)
    p.add_argument("--members", type=int, default=50, help="members per room")
    p.add_argument("--senders", type=int, default=10, help="senders per room")
    p.add_argument("--size", type=int, default=100, help=f"payload bytes (at least {seqcheck.HEAD_SIZE})")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of sending")
    p.add_argument("--rate", type=float, default=0.0, help="messages/s in all; 0 = flat out")
    p.add_argument("--window", type=int, default=20, help="flat out: messages in flight per sender")
    p.add_argument("--batch", type=int, default=5, help="flat out: messages per send() call")
    p.add_argument("--rcvlowat", type=int, default=1,
                   help="flat out: SO_RCVLOWAT while measuring, so that reads are large (1 = off)")
    p.add_argument("--read-pause", type=float, default=0.0,
                   help="seconds to pause between reads (setup and flat out), so that reads are larger")
    p.add_argument("--mode", choices=["load", "conns", "idle"], default="load",
                   help="load: send messages; conns: one message to a big room; idle: only log in")
    p.add_argument("--connect-window", type=int, default=5, help="setup: logins under way at once")
    p.add_argument("--setup-timeout", type=float, default=300.0)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--quiet", type=float, default=0.3, help="setup: seconds of silence before measuring")
    p.add_argument("--name-prefix", default="u")
    p.add_argument("--check-buffer", type=int, default=0,
                   help="bytes each receiver reads before its sequence check runs (0 = by the number of receivers)")
    args = p.parse_args(argv)
    raise_nofile()
    gen = LoadGen(args)
    rss0 = sum(server_rss(pid) for pid in args.server_pid)
    setup = gen.connect_all()
    result: dict = {"setup_s": setup, "clients": len(gen.clients)}
    if args.server_pid:
        rss1 = sum(server_rss(pid) for pid in args.server_pid)
        result.update(rss_before=rss0, rss_after=rss1,
                      rss_per_client=(rss1 - rss0) / len(gen.clients))
    if args.mode == "conns":
        result.update(gen.single_message_fanout())
    elif args.mode == "idle":
        pass  # setup time and RSS are the figures
    else:
        result.update(gen.run_load())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
