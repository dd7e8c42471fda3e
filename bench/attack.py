"""Attacks at the default limits: what a bystander's round trip costs while one
address attacks a pychat server started with its defaults.

    python3 -m bench.attack --tiny      # a few seconds; checks that it runs
    python3 -m bench.attack --quick     # 5 s per attack
    python3 -m bench.attack             # 12 s per attack, writes docs/
    python3 -m bench.attack --attacks password-guess,password-guess-spread
                                        # just those; the other rows in docs/ are kept

Each attack runs against a fresh server started only as
``pychat_server.py 127.0.0.1 --port P --db FILE`` (so flood control at 10
lines/s with a burst of 20 per connection, 100 connections per address;
plus ``--irc-port off`` where pychat has an IRC listener: the attacks are
on the line port, and IRC's default port may be taken), pinned to core 0.
Everything else runs on core 1, in three processes:

* bystanders (``--worker bystanders``): a few clients, each from its own
  loopback address (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8
  to lo) so the attacker's per-address limit never applies to them. Each
  sends ``/dm SELF SEQ`` at a steady rate under the flood limit and times
  the ``(dm) SELF: SEQ`` line, checking that every reply comes once and in
  order. They run with real-time priority where allowed, so that a busy
  attacker process on the same core does not delay their clocks;
* attackers (``--worker attackers``): N connections from 127.0.0.1 (or,
  with ``--spread M``, from M addresses 127.0.1.1 and up) that keep going
  whatever they are told: they read and discard everything, reconnect when
  closed or refused, and count what they did;
* this controller, which starts the server, samples its CPU time and
  memory, and writes the report.

Attacks: ``none`` (the baseline), ``key-guess`` (``/join vault guessN`` as
fast as the server reads them; each is a slow key hash on the server's one
thread), ``room-spam`` (``/create`` with fresh names), ``line-flood`` (``ab``
lines as fast as the sockets take them, all in one room; the server's RSS
per flooding connection is measured), ``churn`` (connect, name,
``/quit``, wait for the close, again), ``password-guess`` (``/login victim
guessN`` once named, one line a guess; the controller registers ``victim``
from another address first) and ``password-guess-spread`` (the same from
1,000 connections on 100 addresses, 10 each: each address's first guess
is not yet a suspect's).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import resource
import selectors
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import (ROOT, checkout, default_out, free_port, irc_off, machine, pin, raise_nofile, server_cpu,
                          server_rss, stop, wait_listening)

ATTACKS = ("none", "key-guess", "room-spam", "line-flood", "churn", "password-guess", "password-guess-spread")
PASSWORD_ATTACKS = ("password-guess", "password-guess-spread")
TARGET_P99_MS = 50.0
FLOOD_RSS_TARGET_KIB = 128
HOST = "127.0.0.1"                # the server, and the attackers' one address
KEEPER_ADDRESS = "127.0.0.250"    # the client that owns #vault, or registers the victim's account
SPREAD_NETWORK = "127.0.1."       # password-guess-spread's addresses: 127.0.1.1 and up
VICTIM = "victim"                 # the account the password attacks guess at
VICTIM_PASSWORD = "not-a-guess-0"
PROBE_ADDRESS = "127.0.0.254"     # "is it listening yet?"
ATTACK_SNDBUF = 64 * 1024         # bounds what the kernel holds for each attacker
FLOOD_CHUNK = b"ab\n" * 4096
SECTION_BEGIN = "<!-- attack:begin -->"
SECTION_END = "<!-- attack:end -->"


@dataclass
class Settings:
    seconds: float = 12.0      # each attack
    baseline: float = 2.0      # bystanders alone, before each attack
    conns: int = 100           # attack connections
    bystanders: int = 5
    rate: float = 8.0          # requests per second per bystander (flood limit: 10)
    drain: float = 5.0         # after an attack: how long bystanders wait for late replies
    spread_conns: int = 1000   # password-guess-spread's connections...
    spread_addresses: int = 100  # ...from this many addresses, as evenly as may be

    def attack_conns(self, attack: str) -> int:
        return self.spread_conns if attack == "password-guess-spread" else self.conns

    def attack_spread(self, attack: str) -> int:
        """The addresses ATTACK spreads over (spread_sources); 0: all from HOST."""
        return self.spread_addresses if attack == "password-guess-spread" else 0


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of SORTED_VALUES."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(p * len(sorted_values)) - 1))]


# -- attackers -------------------------------------------------------------------


class AttackConn:
    __slots__ = ("sock", "slot", "connecting", "welcomed", "quitting", "out", "off", "line_start")

    def __init__(self, sock: socket.socket, slot: int) -> None:
        self.sock = sock
        self.slot = slot
        self.connecting = True
        self.welcomed = False      # the server said "* ..." (it was not refused outright)
        self.quitting = False      # we sent /quit: the close that follows is ours
        self.out = b""
        self.off = 0
        self.line_start = True


def spread_sources(count: int) -> list[str]:
    """COUNT loopback addresses for the spread attack: 127.0.1.1, 127.0.1.2, ...
    (Linux routes all of 127/8 to lo, so a socket bound to any of them connects)."""
    if not 1 <= count <= 254:
        raise ValueError(f"between 1 and 254 addresses, not {count}")
    return [f"{SPREAD_NETWORK}{i}" for i in range(1, count + 1)]


class Attackers:
    """CONNS connections doing KIND until SECONDS have passed, from HOST, or
    (SPREAD > 0) spread evenly over that many addresses of spread_sources."""

    def __init__(self, kind: str, port: int, conns: int, seconds: float, spread: int = 0) -> None:
        self.kind = kind
        self.port = port
        self.conns = conns
        self.seconds = seconds
        self.sources = spread_sources(spread) if spread else [HOST]
        self.welcomed_from: set[str] = set()
        self.sel = selectors.DefaultSelector()
        self.scratch = bytearray(1 << 16)
        self.counter = 0           # makes names, guesses and room names unique
        self.retry: list[tuple[float, int]] = []
        self.stats = {"connections": 0, "refused": 0, "connect_failed": 0, "closed_by_server": 0,
                      "lines_sent": 0, "lines_received": 0, "error_lines": 0}
        self.errors: dict[str, int] = {}

    def run(self) -> dict:
        cpu0 = os.times()
        start = time.monotonic()
        print("go", flush=True)
        end = start + self.seconds
        if self.kind != "none":
            for slot in range(self.conns):
                self._connect(slot)
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if self.retry:
                due = [r for r in self.retry if r[0] <= now]
                if due:
                    self.retry = [r for r in self.retry if r[0] > now]
                    for _, slot in due:
                        self._connect(slot)
            timeout = end - now
            if self.retry:
                timeout = min(timeout, max(0.0, min(r[0] for r in self.retry) - now))
            for key, mask in self.sel.select(timeout):
                self._event(key.data, mask)
        stop_time = time.monotonic()
        cpu1 = os.times()
        for key in list(self.sel.get_map().values()):
            key.data.sock.close()
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        top = sorted(self.errors.items(), key=lambda kv: -kv[1])[:6]
        return {**self.stats, "errors": dict(top), "addresses": len(self.welcomed_from),
                "t_start": start, "t_end": stop_time,
                "harness_cpu_pct": cpu / (stop_time - start) * 100}

    # -- connections --

    def _connect(self, slot: int) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError:  # out of file descriptors: count it and try again later
            self._failed(slot)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ATTACK_SNDBUF)
        source = self.sources[slot % len(self.sources)]
        try:
            if source != HOST:
                sock.bind((source, 0))
            err = sock.connect_ex((HOST, self.port))
        except OSError as exc:  # the source address cannot be bound (ports used up)
            err = exc.errno or errno.EADDRNOTAVAIL
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(slot)
            return
        self.sel.register(sock, selectors.EVENT_WRITE, AttackConn(sock, slot))

    def _failed(self, slot: int) -> None:
        self.stats["connect_failed"] += 1
        self.retry.append((time.monotonic() + 0.02, slot))  # no busy loop while the port refuses

    def _closed(self, conn: AttackConn) -> None:
        self.sel.unregister(conn.sock)
        conn.sock.close()
        if not conn.welcomed:
            self.stats["refused"] += 1
        elif not conn.quitting:
            self.stats["closed_by_server"] += 1
        self._connect(conn.slot)

    def _event(self, conn: AttackConn, mask: int) -> None:
        if conn.connecting:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.sel.unregister(conn.sock)
                conn.sock.close()
                self._failed(conn.slot)
                return
            conn.connecting = False
            self.stats["connections"] += 1
            self.counter += 1
            conn.out = self._login(conn)
            self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            mask = selectors.EVENT_WRITE
        if mask & selectors.EVENT_READ:
            if not self._read(conn):
                return
        if mask & selectors.EVENT_WRITE:
            self._write(conn)

    def _read(self, conn: AttackConn) -> bool:
        try:
            n = conn.sock.recv_into(self.scratch)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            n = 0
        if not n:
            self._closed(conn)
            return False
        buf = self.scratch
        self.stats["lines_received"] += buf.count(b"\n", 0, n)
        if not conn.welcomed and buf.find(b"* ", 0, n) >= 0:
            conn.welcomed = True
            self.welcomed_from.add(self.sources[conn.slot % len(self.sources)])
        pos = buf.find(b"! ", 0, n)
        while pos >= 0:
            if (pos == 0 and conn.line_start) or (pos > 0 and buf[pos - 1] == 10):
                self._error_line(buf, pos, n)
            pos = buf.find(b"! ", pos + 2, n)
        conn.line_start = buf[n - 1] == 10
        return True

    def _error_line(self, buf: bytearray, pos: int, n: int) -> None:
        self.stats["error_lines"] += 1
        end = buf.find(b"\n", pos, n)
        text = bytes(buf[pos:end if end >= 0 else n]).decode(errors="replace").rstrip("\r")
        # Count kinds of answer, not each guess or room name they quote.
        text = re.sub(r"\d+", "N", text)[:100]
        if text in self.errors or len(self.errors) < 50:
            self.errors[text] = self.errors.get(text, 0) + 1

    def _write(self, conn: AttackConn) -> None:
        while True:
            if conn.off >= len(conn.out):
                conn.out, conn.off = self._more(), 0
                if not conn.out:
                    self.sel.modify(conn.sock, selectors.EVENT_READ, conn)  # churn: wait for the close
                    return
            try:
                sent = conn.sock.send(memoryview(conn.out)[conn.off:])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the read side sees the close
            self.stats["lines_sent"] += conn.out.count(b"\n", conn.off, conn.off + sent)
            conn.off += sent
            if conn.off < len(conn.out):
                return

    def _login(self, conn: AttackConn) -> bytes:
        name = f"{self.kind[0]}{conn.slot}x{self.counter}".encode()
        if self.kind == "line-flood":
            return name + b"\n/join flood\n"
        if self.kind == "churn":
            conn.quitting = True
            return name + b"\n/quit\n"
        return name + b"\n"

    def _more(self) -> bytes:
        """The next lines of the attack (empty: nothing more on this connection)."""
        if self.kind == "line-flood":
            return FLOOD_CHUNK
        first = self.counter
        self.counter += 256
        if self.kind == "key-guess":
            return b"".join(b"/join vault guess%d\n" % k for k in range(first, first + 256))
        if self.kind in PASSWORD_ATTACKS:
            # One line per guess (the prompt's NAME, then PASSWORD would take two).
            return b"".join(b"/login %s guess%d\n" % (VICTIM.encode(), k) for k in range(first, first + 256))
        if self.kind == "room-spam":
            return b"".join(b"/create spam%d\n" % k for k in range(first, first + 256))
        return b""


# -- bystanders -------------------------------------------------------------------


class Bystander:
    __slots__ = ("sock", "name", "ready", "buf", "sent", "replies", "next_send", "last_seen", "gaps",
                 "duplicates", "out_of_order", "bad", "closed")

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.ready = False
        self.buf = b""
        self.sent: list[int] = []            # send time (ns) of request seq = index + 1
        self.replies: dict[int, int] = {}    # seq -> receive time (ns)
        self.next_send = 0.0
        self.last_seen = 0
        self.gaps: set[int] = set()
        self.duplicates = 0
        self.out_of_order = 0
        self.bad = 0
        self.closed = False

    def reply(self, seq: int, now: int) -> None:
        """Check one reply's number against those before it."""
        if seq < 1 or seq > len(self.sent):
            self.bad += 1
        elif seq == self.last_seen + 1:
            self.last_seen = seq
            self.replies[seq] = now
        elif seq > self.last_seen + 1:
            self.gaps.update(range(self.last_seen + 1, seq))
            self.last_seen = seq
            self.replies[seq] = now
        elif seq in self.gaps:
            self.gaps.discard(seq)
            self.out_of_order += 1
            self.replies[seq] = now
        else:
            self.duplicates += 1


class Bystanders:
    """COUNT clients from their own addresses, each timing /dm to itself at RATE/s."""

    def __init__(self, port: int, count: int, rate: float, drain: float) -> None:
        self.port = port
        self.rate = rate
        self.drain = drain
        self.count = count
        self.sel = selectors.DefaultSelector()
        self.members: list[Bystander] = []
        self.priority = raise_priority()

    def run(self) -> dict:
        for i in range(self.count):
            # 127.0.0.2 and up: never the attackers' address.
            sock = socket.create_connection((HOST, self.port), timeout=10,
                                            source_address=(f"127.0.0.{2 + i}", 0))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            member = Bystander(sock, f"by{i + 1}")
            sock.sendall(member.name.encode() + b"\n")
            self.members.append(member)
            self.sel.register(sock, selectors.EVENT_READ, member)
        self.sel.register(sys.stdin, selectors.EVENT_READ, None)
        deadline = time.monotonic() + 30
        while not all(m.ready for m in self.members):
            if time.monotonic() > deadline:
                raise SystemExit("bystanders: not all could log in")
            self._poll(0.05)
        print("ready", flush=True)
        cpu0 = os.times()
        start = time.monotonic()
        for i, m in enumerate(self.members):
            m.next_send = start + i / (self.rate * len(self.members))  # spread out
        stopping = False
        while not stopping:
            now = time.monotonic()
            for m in self.members:
                if m.next_send <= now and not m.closed:
                    self._request(m)
                    m.next_send += 1.0 / self.rate
            wait = min(m.next_send for m in self.members) - time.monotonic()
            stopping = self._poll(max(0.0, wait))
        # Late replies still count (as slow ones), until the drain time is up.
        deadline = time.monotonic() + self.drain
        while time.monotonic() < deadline and any(len(m.replies) + len(m.gaps) < len(m.sent)
                                                  and not m.closed for m in self.members):
            self._poll(0.05)
        end = time.monotonic_ns()
        cpu1 = os.times()
        return {"end_ns": end, "priority": self.priority,
                "harness_cpu_pct": ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system))
                / (end / 1e9 - start) * 100,
                "bystanders": [{"name": m.name, "sent": m.sent, "replies": m.replies,
                                "lost": len(m.gaps), "duplicates": m.duplicates,
                                "out_of_order": m.out_of_order, "bad": m.bad, "closed": m.closed}
                               for m in self.members]}

    def _request(self, m: Bystander) -> None:
        seq = len(m.sent) + 1
        m.sent.append(time.monotonic_ns())
        try:
            m.sock.send(b"/dm %s %d\n" % (m.name.encode(), seq))  # a few bytes: never blocks
        except OSError:
            m.closed = True

    def _poll(self, timeout: float) -> bool:
        """One select(); True once the controller said stop."""
        stop_now = False
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                stop_now = True  # a line, or EOF, on stdin: stop sending
                self.sel.unregister(sys.stdin)
                continue
            m: Bystander = key.data
            try:
                data = m.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            now = time.monotonic_ns()
            if not data:
                m.closed = True
                self.sel.unregister(m.sock)
                continue
            lines = (m.buf + data).split(b"\n")
            m.buf = lines.pop()
            for line in lines:
                self._line(m, line, now)
        return stop_now

    def _line(self, m: Bystander, line: bytes, now: int) -> None:
        if not m.ready:
            m.ready = line.startswith(b"* hello ")
            return
        at = line.find(b"] (dm) ")
        if at < 0:
            return  # room traffic, notices, our own "(dm to ...)" echo
        who, _, text = line[at + 7:].rstrip(b"\r").partition(b": ")
        if who != m.name.encode() or not text.isdigit():
            m.bad += 1
            return
        m.reply(int(text), now)


def raise_priority() -> str:
    """Run before the attackers on the shared core: their busy loop must not
    delay the bystanders' wake-ups and clocks."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "SCHED_FIFO"
    except (AttributeError, OSError):
        pass
    try:
        os.nice(-10)
        return "nice -10"
    except OSError:
        return "normal"


# -- the controller ---------------------------------------------------------------


@dataclass
class Target:
    """A pychat checkout to attack."""

    name: str
    root: Path


def _worker(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bench.attack", "--worker", *args], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pin(proc.pid, 1)
    return proc


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise RuntimeError("a worker did not answer in time")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a worker exited with {proc.wait()}")
    return line


def _keeper(port: int) -> socket.socket:
    """The client that creates #vault with a key and stays in it, so it exists."""
    sock = socket.create_connection((HOST, port), timeout=10, source_address=(KEEPER_ADDRESS, 0))
    sock.sendall(b"keeper\n/create vault not-a-guess-0\n")
    buf = b""
    deadline = time.monotonic() + 10
    while b"* you joined #vault" not in buf:
        if time.monotonic() > deadline:
            raise RuntimeError("could not create #vault")
        buf += sock.recv(4096)
    sock.setblocking(False)
    return sock


def _register_victim(port: int) -> None:
    """Register the account the password attacks guess at, from an address of
    its own, and leave: the account stays, and nobody online holds its name."""
    with socket.create_connection((HOST, port), timeout=10, source_address=(KEEPER_ADDRESS, 0)) as sock:
        sock.sendall(f"{VICTIM}\n/register {VICTIM_PASSWORD}\n/quit\n".encode())
        buf = b""
        deadline = time.monotonic() + 10
        while f"* the name {VICTIM} is yours".encode() not in buf:
            data = sock.recv(4096) if time.monotonic() < deadline else b""
            if not data:
                last = [line for line in buf.decode(errors="replace").splitlines() if line.startswith("! ")]
                raise RuntimeError(f"could not register {VICTIM}" + (f": {last[-1]}" if last else ""))
            buf += data


def _fd_problem(conns: int, bystanders: int) -> str | None:
    """Why this process's children could not hold CONNS attack connections
    (the attackers' process) and as many again plus the bystanders (the server)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = conns + bystanders + 64
    if hard != resource.RLIM_INFINITY and hard < needed:
        return f"the open-files hard limit is {hard}; this attack needs {needed} (raise it with ulimit -Hn)"
    return None


def _drain_keeper(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        while sock.recv(1 << 16):
            pass
    except (BlockingIOError, OSError):
        pass


def run_attack(target: Target, attack: str, settings: Settings, workdir: Path) -> dict:
    """One attack against a fresh server; the figures of one report row."""
    conns = settings.attack_conns(attack)
    problem = _fd_problem(conns, settings.bystanders)
    if problem:
        return {"error": problem}
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    # Every file descriptor allowed from the start (pychat raises its own
    # limit, but an older checkout given with --base might not).
    server = subprocess.Popen([sys.executable, str(target.root / "pychat_server.py"), HOST,
                               "--port", str(port), "--db", str(workdir / "pychat.db"), *irc_off(target.root)],
                              cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
    pin(server.pid, 0)
    keeper = bystanders = attackers = None
    try:
        if not wait_listening(port, server, source=PROBE_ADDRESS):
            return {"error": "server did not start"}
        keeper = _keeper(port) if attack == "key-guess" else None
        if attack in PASSWORD_ATTACKS:
            _register_victim(port)
        bystanders = _worker(["bystanders", "--port", str(port), "--count", str(settings.bystanders),
                              "--rate", str(settings.rate), "--drain", str(settings.drain)])
        _read_line(bystanders, 30)
        baseline_start = time.monotonic()
        time.sleep(settings.baseline)
        rss_before = server_rss(server.pid)
        attackers = _worker(["attackers", "--kind", attack, "--port", str(port), "--conns", str(conns),
                             "--spread", str(settings.attack_spread(attack)), "--seconds", str(settings.seconds)])
        _read_line(attackers, 30)  # "go": it starts now
        cpu0, wall0 = server_cpu(server.pid), time.monotonic()
        rss_peak = rss_before
        while attackers.poll() is None:
            rss_peak = max(rss_peak, server_rss(server.pid))
            _drain_keeper(keeper)
            time.sleep(0.2)
        cpu1, wall1 = server_cpu(server.pid), time.monotonic()
        assert attackers.stdout is not None and bystanders.stdin is not None
        attack_result = json.loads(attackers.stdout.read())
        bystanders.stdin.write("stop\n")
        bystanders.stdin.flush()
        by_result = json.loads(_read_line(bystanders, settings.drain + 30))
    except (RuntimeError, json.JSONDecodeError, OSError) as exc:
        return {"error": str(exc) + ("" if server.poll() is None else " (server died)")}
    finally:
        for proc in (attackers, bystanders):
            if proc is not None:
                stop(proc, 5)
        if keeper is not None:
            keeper.close()
        stop(server, 5)
    row = {
        "attack": attack,
        "server_cpu_pct": (cpu1 - cpu0) / (wall1 - wall0) * 100,
        "rss_before_kib": rss_before / 1024,
        "rss_peak_kib": rss_peak / 1024,
        "conns": conns,
        "addresses": settings.attack_spread(attack) or 1,
        "rss_per_conn_kib": (rss_peak - rss_before) / 1024 / conns if attack != "none" else None,
        "attackers": attack_result,
        "bystander_priority": by_result["priority"],
        "bystander_harness_cpu_pct": by_result["harness_cpu_pct"],
    }
    row["baseline"] = rtt_stats(by_result, int((baseline_start + 0.2) * 1e9), int(attack_result["t_start"] * 1e9))
    row["bystander"] = rtt_stats(by_result, int(attack_result["t_start"] * 1e9), int(attack_result["t_end"] * 1e9))
    row["bystander"].update(sequence_totals(by_result))
    row["verdict"] = verdict(row)
    return row


def rtt_stats(by_result: dict, start_ns: int, end_ns: int) -> dict:
    """Round trips of the requests sent in [START_NS, END_NS). A request never
    answered counts with the time it waited (a lower bound)."""
    rtts: list[float] = []
    unanswered = 0
    for m in by_result["bystanders"]:
        replies = {int(k): v for k, v in m["replies"].items()}
        for seq, sent in enumerate(m["sent"], 1):
            if not start_ns <= sent < end_ns:
                continue
            got = replies.get(seq)
            if got is None:
                unanswered += 1
                got = by_result["end_ns"]
            rtts.append((got - sent) / 1e6)
    rtts.sort()
    return {"samples": len(rtts), "unanswered": unanswered, "p50_ms": percentile(rtts, 0.50),
            "p99_ms": percentile(rtts, 0.99), "max_ms": rtts[-1] if rtts else None,
            # How many missed the target: p99 alone hides whether that was 1 % or 1 in 480.
            "over_target": sum(1 for rtt in rtts if rtt > TARGET_P99_MS)}


def sequence_totals(by_result: dict) -> dict:
    """Lost, duplicated and reordered replies over the whole run, every bystander."""
    keys = ("lost", "duplicates", "out_of_order", "bad")
    out = {k: sum(m[k] for m in by_result["bystanders"]) for k in keys}
    out["closed"] = sum(1 for m in by_result["bystanders"] if m["closed"])
    out["requests"] = sum(len(m["sent"]) for m in by_result["bystanders"])
    return out


def verdict(row: dict) -> str:
    """pass only if p99 is within the target and every reply came, once, in order."""
    b = row["bystander"]
    problems = []
    if b["p99_ms"] is None or b["p99_ms"] > TARGET_P99_MS:
        problems.append("p99")
    if b["unanswered"] or b["lost"] or b["duplicates"] or b["out_of_order"] or b["bad"] or b["closed"]:
        problems.append("replies")
    rss = row.get("rss_per_conn_kib")
    if row["attack"] == "line-flood" and rss is not None and rss > FLOOD_RSS_TARGET_KIB:
        problems.append("memory")
    return "pass" if not problems else "FAIL (" + ", ".join(problems) + ")"


def run_all(targets: list[Target], attacks: list[str], settings: Settings, log=sys.stderr) -> dict:
    """Every attack against every target, alternating targets; fresh server each time."""
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="pychat-attack-") as tmp:
        for attack in attacks:
            results[attack] = {}
            for target in targets:
                row = run_attack(target, attack, settings, Path(tmp) / f"{attack}-{target.name}")
                results[attack][target.name] = row
                print(f"  ATTACK {attack} {target.name}: {brief(row)}", file=log)
    return {"settings": asdict(settings), "target_p99_ms": TARGET_P99_MS,
            "flood_rss_target_kib": FLOOD_RSS_TARGET_KIB,
            "servers": {t.name: checkout(t.root) for t in targets}, "results": results}


def brief(row: dict) -> str:
    if "error" in row:
        return "error: " + row["error"]
    b = row["bystander"]
    return (f"bystander p50 {fmt_ms(b['p50_ms'])} p99 {fmt_ms(b['p99_ms'])} max {fmt_ms(b['max_ms'])} ms, "
            f"{b['samples']} samples ({b.get('over_target', '?')} over {TARGET_P99_MS:g} ms), "
            f"{b['unanswered']} unanswered, server CPU {row['server_cpu_pct']:.0f}%: "
            f"{row['verdict']}")


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


# -- the report ---------------------------------------------------------------


def table(data: dict) -> list[str]:
    rows = [f"| attack | server | bystander RTT p50 / p99 / max (ms) | samples (over {data['target_p99_ms']:g} ms) | "
            "lost / dup / reordered / "
            "unanswered | verdict | server CPU % | attack lines sent | connections made / refused | "
            "server RSS per attack connection (KiB) | harness CPU % (attackers / bystanders) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for attack, per_server in data["results"].items():
        for server, row in per_server.items():
            if "error" in row:
                rows.append(f"| {attack} | {server} | failed: {row['error']} |" + " |" * 8)
                continue
            b, a = row["bystander"], row["attackers"]
            rss = row["rss_per_conn_kib"]
            rows.append(
                f"| {attack} | {server} | {fmt_ms(b['p50_ms'])} / {fmt_ms(b['p99_ms'])} / {fmt_ms(b['max_ms'])} | "
                f"{b['samples']} ({b.get('over_target', '-')}) | "
                f"{b['lost']} / {b['duplicates']} / {b['out_of_order']} / {b['unanswered']} | "
                f"{row['verdict']} | {row['server_cpu_pct']:.0f} | {a['lines_sent']:,} | "
                f"{a['connections']:,} / {a['refused'] + a['connect_failed']:,} | "
                f"{'-' if rss is None else f'{rss:.0f}'} | "
                f"{a['harness_cpu_pct']:.0f} / {row['bystander_harness_cpu_pct']:.0f} |")
    return rows


def answers(data: dict) -> list[str]:
    """What the server told the attackers, most frequent first."""
    out = []
    for attack, per_server in data["results"].items():
        for server, row in per_server.items():
            errors = row.get("attackers", {}).get("errors")
            if errors:
                said = "; ".join(f"`{text}` x{count:,}" for text, count in errors.items())
                out.append(f"- {attack}, {server}: {said}")
    return out


def priorities(data: dict) -> set[str]:
    return {row["bystander_priority"] for per_server in data["results"].values()
            for row in per_server.values() if "bystander_priority" in row} or {"unknown"}


def section(data: dict) -> str:
    """The markdown section for BENCHMARKS.md."""
    s = {**asdict(Settings()), **data["settings"]}  # an older attack.json lacks the newer settings
    lines = [
        SECTION_BEGIN,
        "## Attacks at the default limits",
        "",
        *provenance(data),
        "",
        f"Each attack runs for {s['seconds']:g} s against a fresh server started with only "
        "`pychat_server.py 127.0.0.1 --port P --db FILE` (and `--irc-port off` where it has an IRC "
        "listener; its defaults: flood control at 10 lines/s "
        "with a burst of 20 per connection, at most 100 connections per address), pinned to core 0, "
        f"after {s['baseline']:g} s of bystanders alone. {s['conns']} attack connections come from "
        f"127.0.0.1 (password-guess-spread: {s['spread_conns']:,} from {s['spread_addresses']} addresses, "
        f"{SPREAD_NETWORK}1 and up, {spread_each(s)} each); "
        f"{s['bystanders']} bystanders, each from its own address (127.0.0.2 and up), each send "
        f"`/dm SELF SEQ` {s['rate']:g} times a second and time the `(dm) SELF: SEQ` line (requests sent "
        "during the attack; a request never answered counts with the time it waited). Attackers read "
        "and discard everything and reconnect whenever they are closed or refused. Attacks: "
        "key-guess = `/join vault guessN` as fast as the server reads them (#vault has a key); "
        "room-spam = `/create spamN`; line-flood = `ab` lines as fast as the sockets take them, "
        "all in #flood; churn = connect, name, `/quit`, wait for the close, again; "
        f"password-guess = `/login {VICTIM} guessN` once named, as fast as the server reads them (one line a "
        f"guess; the account {VICTIM} is registered from another address before the attack, and nobody "
        "holds its name); password-guess-spread = the same from the addresses above (an address is a "
        "suspect only after its first wrong password: until then a check that does not fit the server's "
        "budget waits instead of being refused). Attack lines sent = "
        "lines the attackers' sockets took: when the server reads slowly most of them still wait in "
        "socket buffers. Harness CPU % shows that the attackers and bystanders (on core 1) were not "
        "the limit.",
        "",
        "Bystanders ran with " + ", ".join(sorted(priorities(data))) + " scheduling. "
        f"Target: bystander p99 <= {data['target_p99_ms']:g} ms with every reply once and in order, and "
        f"(line-flood) at most {data['flood_rss_target_kib']} KiB of server RSS per flooding connection "
        "(peak RSS during the attack minus RSS before it, over the attack connections; for the password "
        "attacks the peak includes the 16 MiB scrypt uses while it checks a password).",
        "",
        *table(data),
        "",
        "What the server answered the attackers (digits shown as N):",
        "",
        *(answers(data) or ["- nothing but what every client sees"]),
        "",
        f"Figures: `{data['json']}`.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def spread_each(s: dict) -> str:
    """How many of the spread attack's connections each of its addresses makes."""
    low, extra = divmod(s["spread_conns"], s["spread_addresses"])
    return f"{low}" if not extra else f"{low} or {low + 1}"


def runs_of(data: dict) -> list[dict]:
    """The runs DATA's rows come from (an attack.json from before merging has one)."""
    return data.get("runs") or [{"attacks": list(data["results"]), "date": data["date"],
                                 "command": data["command"], "servers": data["servers"]}]


def provenance(data: dict) -> list[str]:
    """Which run made which rows: when, by what command, on which commits; the machine."""
    runs = runs_of(data)
    said = []
    for run in runs:
        servers = ", ".join(f"`{name}` at {commit}" for name, commit in run["servers"].items())
        said.append(f"{run['date']}, `{run['command']}`; {servers}.")
    machine_line = f"Machine: {data['machine']}."
    if len(runs) == 1:
        return [f"Latest {data['mode']} run: {said[0]} {machine_line}"]
    return [f"Rows from {len(runs)} {data['mode']} runs (a run of some attacks keeps the other rows). "
            + machine_line, "",
            *(f"- {', '.join(run['attacks'])}: {text}" for run, text in zip(runs, said))]


def put_section(markdown: Path, text: str) -> None:
    """Replace the attack section of MARKDOWN (or add it, or start the file)."""
    old = markdown.read_text() if markdown.exists() else "# pychat benchmarks\n\n"
    if SECTION_BEGIN in old and SECTION_END in old:
        head, rest = old.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    markdown.write_text(new)


def settings_for(args: argparse.Namespace) -> Settings:
    if args.tiny:
        s = Settings(seconds=1.0, baseline=0.3, conns=4, bystanders=2, drain=2.0, spread_conns=20,
                     spread_addresses=4)
    elif args.quick:
        s = Settings(seconds=5.0, baseline=1.0)
    else:
        s = Settings()
    for name in ("seconds", "baseline", "conns", "bystanders", "rate", "spread_conns", "spread_addresses"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(s, name, value)
    if not 1 <= s.spread_addresses <= 254:
        raise SystemExit("bench: --spread-addresses is between 1 and 254 (127.0.1.1 to 127.0.1.254)")
    return s


def targets_for(base: str | None) -> list[Target]:
    targets = [Target("pychat", ROOT)]
    if base:
        root = Path(base).resolve()
        if not (root / "pychat_server.py").exists():
            raise SystemExit(f"bench: no pychat_server.py in {root}")
        targets.append(Target("pychat-base", root))
    return targets


def run_and_report(args: argparse.Namespace, outdir: Path, command: str) -> dict:
    """Run the attacks ARGS asks for; write attack.json and the section of BENCHMARKS.md in OUTDIR."""
    settings = settings_for(args)
    attacks = args.attacks.split(",") if getattr(args, "attacks", None) else list(ATTACKS)
    for a in attacks:
        if a not in ATTACKS:
            raise SystemExit(f"bench: unknown attack {a}; choose from {', '.join(ATTACKS)}")
    data = run_all(targets_for(args.base), attacks, settings)
    outdir.mkdir(parents=True, exist_ok=True)
    data.update(date=time.strftime("%Y-%m-%d %H:%M %Z"), machine=machine(), command=command,
                mode="tiny" if args.tiny else ("quick" if args.quick else "full"), json="attack.json")
    data["runs"] = [{"attacks": attacks, "date": data["date"], "command": command, "servers": data["servers"]}]
    earlier = read_json(outdir / "attack.json")
    kept = keep_earlier_rows(data, earlier)
    if kept:
        print(f"kept the earlier rows of {', '.join(kept)} from {outdir / 'attack.json'}", file=sys.stderr)
    elif earlier and set(earlier.get("results", {})) - set(attacks):
        print(f"dropped the earlier rows in {outdir / 'attack.json'}: that run was made differently "
              "(mode, machine, servers or settings)", file=sys.stderr)
    (outdir / "attack.json").write_text(json.dumps(data, indent=1))
    print("\n".join(table(data)))
    put_section(outdir / "BENCHMARKS.md", section(data))
    print(f"wrote {outdir / 'attack.json'} and the attack section of {outdir / 'BENCHMARKS.md'}", file=sys.stderr)
    return data


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def keep_earlier_rows(data: dict, old: dict | None) -> list[str]:
    """Add to DATA the rows of OLD (an earlier attack.json) for the attacks
    DATA did not run, if OLD was made the same way (mode, machine, target and
    the settings both know) on at least DATA's servers; the attacks kept, in
    ATTACKS order. So a run of a few attacks updates their rows and keeps the
    others (each run's date, command and commits are listed)."""
    if not old or "results" not in old:
        return []
    same = (old.get("mode") == data["mode"] and old.get("machine") == data["machine"]
            and set(data["servers"]) <= set(old.get("servers", {}))
            and old.get("target_p99_ms") == data["target_p99_ms"]
            and all(old["settings"][k] == v for k, v in data["settings"].items() if k in old.get("settings", {})))
    kept = [a for a in old["results"] if a not in data["results"] and a in ATTACKS]
    if not same or not kept:
        return []
    merged = {**old["results"], **data["results"]}
    data["results"] = {a: merged[a] for a in ATTACKS if a in merged}
    earlier = [{**run, "attacks": [a for a in run["attacks"] if a in kept]} for run in runs_of(old)]
    data["runs"] = [run for run in earlier if run["attacks"]] + data["runs"]
    data["settings"] = {**old["settings"], **data["settings"]}
    return [a for a in ATTACKS if a in kept]


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="bench.attack --worker")
    p.add_argument("role", choices=["attackers", "bystanders"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--kind", choices=ATTACKS, default="none")
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--spread", type=int, default=0,
                   help="spread the connections over this many addresses (127.0.1.1 and up); 0: all from 127.0.0.1")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--rate", type=float, default=8.0)
    p.add_argument("--drain", type=float, default=5.0)
    args = p.parse_args(argv)
    if args.role == "attackers":
        raise_nofile()  # a socket per connection: 1,000 of them pass the usual soft limit of 1,024 with little room
        result = Attackers(args.kind, args.port, args.conns, args.seconds, args.spread).run()
    else:
        result = Bystanders(args.port, args.count, args.rate, args.drain).run()
    print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker_main(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a few seconds, 4 attack connections: checks that it runs")
    p.add_argument("--quick", action="store_true", help="5 s per attack")
    p.add_argument("--attacks", default=None, help=f"comma-separated, from {', '.join(ATTACKS)} (default: all)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per attack (default 12)")
    p.add_argument("--baseline", type=float, default=None, help="seconds of bystanders alone first (default 2)")
    p.add_argument("--conns", type=int, default=None, help="attack connections (default 100)")
    p.add_argument("--spread-conns", type=int, default=None,
                   help="password-guess-spread's attack connections (default 1000)")
    p.add_argument("--spread-addresses", type=int, default=None,
                   help="password-guess-spread's addresses, 127.0.1.1 and up (default 100, at most 254)")
    p.add_argument("--bystanders", type=int, default=None, help="bystanders (default 5)")
    p.add_argument("--rate", type=float, default=None, help="requests per second per bystander (default 8)")
    p.add_argument("--base", metavar="DIR", help="also attack the pychat checkout in DIR (as pychat-base)")
    p.add_argument("--out", default=None,
                   help="where attack.json and BENCHMARKS.md go (default: docs/ for a full run, "
                        "bench/results/ for --quick and --tiny)")
    args = p.parse_args(argv)
    outdir = Path(args.out) if args.out else default_out(args.quick, args.tiny)
    pin(os.getpid(), 1)
    run_and_report(args, outdir, "python3 -m bench.attack" + "".join(" " + shlex.quote(a) for a in argv))


if __name__ == "__main__":
    main()
