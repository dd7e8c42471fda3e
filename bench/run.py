"""Run pychat's benchmark: pychat (line protocol and IRC) and three IRC daemons side by side.

    python3 -m bench.run --tiny      # a few seconds: checks that everything runs
    python3 -m bench.run --quick     # a few minutes
    python3 -m bench.run             # the full run, about an hour
    python3 -m bench.run --base ../pychat-old --servers pychat --scenarios A,B

Each scenario starts every server fresh, pinned to core 0 with the load
generator (bench/loadgen.py, its own process) on core 1 when there are two,
and alternates the servers run by run. Every delivery is checked by
sequence number (lost, duplicated, reordered; bench/seqcheck.py). The
ATTACK scenario is bench/attack.py; the IRC daemons' configs are in
bench/daemons.py. Writes a table on stdout, a JSON
file, PNG charts and BENCHMARKS.md: into docs/ for a full run, into
bench/results/ (not committed) for --quick and --tiny.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import attack, daemons
from bench.common import (ROOT, checkout, default_out, free_port, irc_off, machine, pin, raise_nofile, speaks_irc,
                          stop, unpin, wait_listening)

# Logins under way at once, for every server. miniircd listens with a
# backlog of 5 and a login under way holds at most one connection not yet
# accepted, so 5 never overflows it (an overflow drops the SYN: a 1 s
# retransmit per connection); pychat's backlog (4096) takes any number.
CONNECT_WINDOW = 5


# InspIRCd 3 completes registrations on its once-a-second timer: with 5
# logins under way it would register 5 clients a second (CONNS-10000 in half
# an hour), so it gets 1000 at once (its listen backlog is 4096).
INSPIRCD_CONNECT_WINDOW = 1000


@dataclass
class ServerKind:
    """How to start one server under test."""

    name: str
    protocol: str                 # what the load generator speaks to it: pychat or irc
    daemon: str = "pychat"        # the program: pychat, miniircd, ngircd or inspircd
    extra: list[str] = field(default_factory=list)
    root: Path = ROOT             # the pychat checkout whose pychat_server.py runs
    conns: bool = True            # runs the CONNS scenarios (not variants that differ only on the message path)
    connect_window: int = CONNECT_WINDOW
    transport: str = "tcp"        # how the load generator connects: tcp, tls or ws (pychat's web port)
    only: tuple[str, ...] = ()    # the scenarios it runs, if not all
    nodes: int = 0                # a cluster: this many nodes sharing the port and one Redis (0: no cluster)

    def needs(self) -> list[str]:
        """The Debian-packaged programs it runs (bench/daemons.py)."""
        return ([self.daemon] if self.daemon in daemons.DEBIAN else []) + (["redis"] if self.nodes else [])

    def node_command(self, port: int, workdir: Path, node: int, redis_port: int) -> list[str]:
        """The command of cluster node NODE (from 0): the port and the history file
        shared, as nodes on one machine are run (one of them writes the file)."""
        return [*self.command(port, workdir), "--cluster", f"redis://127.0.0.1:{redis_port}",
                "--node-name", f"n{node + 1}", "--db", str(workdir / "cluster.db")]

    def command(self, port: int, workdir: Path) -> list[str]:
        if self.daemon == "miniircd":
            return daemons.miniircd_command(port)
        if self.daemon == "ngircd":
            return daemons.ngircd_command(port, workdir)
        if self.daemon == "inspircd":
            return daemons.inspircd_command(port, workdir)
        if self.transport == "tls":
            cert, key = self_signed(workdir)
            listen = ["--port", "0", *irc_off(self.root), "--tls-port", str(port), "--ircs-port", "off",
                      "--tls-cert", str(cert), "--tls-key", str(key)]
        elif self.transport == "ws":
            listen = ["--port", "0", "--irc-port", "off", "--web-port", str(port)]
        elif self.protocol == "irc":
            listen = ["--port", "0", "--irc-port", str(port), *irc_off(self.root)[2:]]
        else:
            listen = ["--port", str(port), *irc_off(self.root)]
        return [sys.executable, str(self.root / "pychat_server.py"), "127.0.0.1", *listen,
                "--flood-rate", "0", "--max-per-ip", "0", *self.extra]

    def unavailable(self) -> str | None:
        """Why this server cannot run here, or None."""
        if self.daemon == "pychat" and self.protocol == "irc" and not speaks_irc(self.root):
            return f"pychat at {checkout(self.root)} has no --irc-port (no IRC front end)"
        if self.nodes and importlib.util.find_spec("hiredis") is None:
            return "hiredis is not installed (python3 -m pip install -e '.[bench]')"
        return None


PYCHAT_FILE = ServerKind("pychat", "pychat")
PYCHAT_MEMORY = ServerKind("pychat-mem", "pychat", extra=["--db", ":memory:"], conns=False)
PYCHAT_FLOODCHECK = ServerKind("pychat-bucket", "pychat", extra=["--flood-rate", "1e9", "--flood-burst", "1000000000"],
                               conns=False)
PYCHAT_LIMITS_OFF = ServerKind("pychat-limits-off", "pychat",
                               extra=["--sendq", "1000000000000", "--max-clients", "1000000",
                                      "--registration-timeout", "0"], conns=False)
PYCHAT_IRC = ServerKind("pychat-irc", "irc")
# What TLS and the web front end cost: the line protocol over TLS, IRC over
# a WebSocket (pychat's web port), in A and LAT beside plain TCP.
PYCHAT_TLS = ServerKind("pychat-tls", "pychat", conns=False, transport="tls", only=("A", "LAT"))
PYCHAT_WS = ServerKind("pychat-ws", "irc", conns=False, transport="ws", only=("A", "LAT"))
# Several nodes, one Redis (--cluster): one node, and two sharing the port
# with SO_REUSEPORT, the kernel spreading the clients over them.
PYCHAT_CLUSTER1 = ServerKind("pychat-cluster1", "pychat", conns=False, only=("A", "B", "LAT"), nodes=1)
PYCHAT_CLUSTER2 = ServerKind("pychat-cluster2", "pychat", conns=False, only=("A", "B", "LAT"), nodes=2)
MINIIRCD = ServerKind("miniircd", "irc", "miniircd")
NGIRCD = ServerKind("ngircd", "irc", "ngircd")
INSPIRCD = ServerKind("inspircd", "irc", "inspircd", connect_window=INSPIRCD_CONNECT_WINDOW)
KINDS = {k.name: k for k in (PYCHAT_FILE, PYCHAT_MEMORY, PYCHAT_FLOODCHECK, PYCHAT_LIMITS_OFF, PYCHAT_IRC,
                             PYCHAT_TLS, PYCHAT_WS, PYCHAT_CLUSTER1, PYCHAT_CLUSTER2, MINIIRCD, NGIRCD, INSPIRCD)}
DEFAULT_SERVERS = ("pychat,pychat-mem,pychat-irc,pychat-tls,pychat-ws,pychat-cluster1,pychat-cluster2,"
                   "miniircd,ngircd,inspircd")

# The cluster's Redis as README's deployment guide sets it up: an append-only
# file with Redis's default fsync, once a second. Like the single process's
# history (WAL, synchronous=NORMAL), what anyone saw survives the process
# being killed, not a power cut; "always" would fsync before every reply,
# which the single process never does.
REDIS_FSYNC = "everysec"


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for the TLS runs (openssl; the generator checks nothing)."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
                       check=True, capture_output=True)
    return cert, key


def base_kind(base: str) -> ServerKind:
    """``pychat-base``: another checkout of pychat, run with exactly pychat's flags."""
    root = Path(base).resolve()
    if not (root / "pychat_server.py").exists():
        raise SystemExit(f"bench: no pychat_server.py in {root}")
    return ServerKind("pychat-base", "pychat", extra=list(PYCHAT_FILE.extra), root=root)


@dataclass
class Scenario:
    name: str
    title: str
    loadgen: list[str]
    timeout: float = 300.0


def scenarios(quick: bool, tiny: bool) -> list[Scenario]:
    duration = "0.5" if tiny else ("2" if quick else "3")
    members = "5" if tiny else "50"
    rooms_b = "3" if tiny else "100"
    # Flat out, the generator's receivers wake only for 8 KiB or more (SO_RCVLOWAT),
    # so that its reads are large and it is not the bottleneck. (A tiny run's
    # window is smaller than that.)
    large_reads = [] if tiny else ["--rcvlowat", "8192"]
    out = [
        Scenario("A", "1 room x 50 members, 10 senders, flat out",
                 ["--rooms", "1", "--members", members, "--senders", "2" if tiny else "10",
                  "--duration", duration, *large_reads]),
        Scenario("B", "100 rooms x 10 members, all send, flat out",
                 ["--rooms", rooms_b, "--members", "10", "--senders", "10", "--duration", duration,
                  *large_reads]),
        Scenario("LAT", "A at 11,000 messages/s",
                 ["--rooms", "1", "--members", members, "--senders", "2" if tiny else "10",
                  "--duration", duration, "--rate", "200" if tiny else "11000"]),
    ]
    sizes = [20] if tiny else ([1000] if quick else [1000, 5000, 10000])
    for n in sizes:
        setup = conns_setup_timeout(n)
        out.append(Scenario(f"CONNS-{n}", f"{n} clients in one room",
                            ["--mode", "conns", "--rooms", "1", "--members", str(n), "--senders", "0",
                             "--setup-timeout", str(setup)],
                            timeout=setup + 60.0))
    return out


def conns_setup_timeout(n: int) -> int:
    """Seconds N clients may take to log in. Every join is announced to the
    room (N squared deliveries), and ngIRCd, which scans all its connections
    on every pass of its loop, took 5 to 9 s for 1000, 203 to 230 s for 5000 and
    1,755 s for 10,000 here. Some margin over that, never under 9 minutes."""
    return max(540, 60 + n * n // 40_000)


def run_once(kind: ServerKind, scenario: Scenario, workdir: Path) -> dict:
    problem = kind.unavailable()
    if problem:
        return {"error": problem}
    port = free_port()
    started: list[tuple[subprocess.Popen, Path]] = []  # every process, with its log, to stop at the end
    try:
        problem = start_cluster(kind, port, workdir, started) if kind.nodes else start_server(kind, port, workdir,
                                                                                              started)
        if problem:
            return {"error": problem}
        servers = [proc for proc, log in started if log.name != "redis.log"]
        redis = [proc for proc, log in started if log.name == "redis.log"]
        cmd = [sys.executable, "-m", "bench.loadgen", "--protocol", kind.protocol, "--transport", kind.transport,
               "--port", str(port), *(f"--server-pid={proc.pid}" for proc in servers),
               *(["--redis-pid", str(redis[0].pid)] if redis else []),
               "--connect-window", str(kind.connect_window), *scenario.loadgen]
        gen = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # A cluster's nodes take a core each; the generator (and Redis) go where there is room.
        if kind.nodes:
            unpin(gen.pid)
        else:
            pin(gen.pid, 1)
        try:
            out, err = gen.communicate(timeout=scenario.timeout)
        except subprocess.TimeoutExpired:
            gen.kill()
            gen.communicate()
            return {"error": "timed out"}
        if gen.returncode != 0:
            dead = [(proc, log) for proc, log in started if proc.poll() is not None]
            return {"error": (err.strip().splitlines() or ["failed"])[-1]
                    + "".join(f" ({log.stem} died{last_words(log)})" for proc, log in dead)}
        return json.loads(out)
    finally:
        for proc, _ in reversed(started):
            stop(proc)


def server_env(workdir: Path) -> dict[str, str]:
    return dict(os.environ, XDG_DATA_HOME=str(workdir / "xdg"))


def start_server(kind: ServerKind, port: int, workdir: Path, started: list[tuple[subprocess.Popen, Path]]) -> str:
    """One server on PORT, pinned to core 0; why it did not start, or ''."""
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        # Pinned and with every file descriptor allowed from the start, before
        # the server makes any thread or sizes anything by its limit.
        server = subprocess.Popen(kind.command(port, workdir), cwd=workdir, env=server_env(workdir), stdout=log,
                                  stderr=log, stdin=subprocess.DEVNULL, preexec_fn=server_setup)
    started.append((server, log_path))
    if not wait_listening(port, server):
        return "server did not start" + last_words(log_path)
    return ""


def start_cluster(kind: ServerKind, port: int, workdir: Path, started: list[tuple[subprocess.Popen, Path]]) -> str:
    """Redis (on any core), then KIND.nodes nodes sharing PORT, node i pinned
    to core i, each started once the one before is serving; why not, or ''."""
    redis_port = free_port()
    redis_log = workdir / "redis.log"
    redis = subprocess.Popen(daemons.redis_command(redis_port, workdir, REDIS_FSYNC), cwd=workdir,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                             preexec_fn=raise_nofile)
    started.append((redis, redis_log))
    unpin(redis.pid)
    if not wait_listening(redis_port, redis):
        return "redis-server did not start" + last_words(redis_log)
    for node in range(kind.nodes):
        log_path = workdir / f"node{node + 1}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(kind.node_command(port, workdir, node, redis_port), cwd=workdir,
                                    env=server_env(workdir), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    preexec_fn=functools.partial(server_setup, node))
        started.append((proc, log_path))
        if not wait_for_line(log_path, f"cluster: node n{node + 1} connected", proc):
            return f"node {node + 1} did not join the cluster" + last_words(log_path)
    return ""


def wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    """Wait until the log at PATH has TEXT (False if PROC exited or time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def server_setup(core: int = 0) -> None:
    """In the server's process, before it starts: its core, all the files it may open."""
    pin(0, core)
    raise_nofile()


def last_words(log_path: Path) -> str:
    """': ' and the last line the server wrote, if any (one line for a table row)."""
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f": {lines[-1].strip()[:200]}".replace("|", "/") if lines else ""


def summarize(runs: list[dict], key: str, sub: str | None = None) -> dict | None:
    values = []
    for r in runs:
        if "error" in r:
            continue
        v = r.get(key)
        if sub is not None and isinstance(v, dict):
            v = v.get(sub)
        if v is not None:
            values.append(v)
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(stat: dict | None, scale: float = 1.0, digits: int = 3) -> str:
    if stat is None:
        return "-"
    m = stat["median"] * scale
    spread = (stat["max"] - stat["min"]) * scale / 2
    return f"{m:.{digits}f} ±{spread:.{digits}f}" if stat["n"] > 1 else f"{m:.{digits}f}"


CHECKS = ("lost", "duplicates", "out_of_order", "bad_records")


def check_totals(runs: list[dict]) -> str:
    """lost / duplicated / reordered / malformed deliveries, added up over the runs."""
    ok = [r for r in runs if "error" not in r and "lost" in r]
    if not ok:
        return "-"
    return " / ".join(str(sum(r.get(k, 0) for r in ok)) for k in CHECKS)


CLUSTERS = {k.name for k in KINDS.values() if k.nodes}


def single(results: dict) -> dict:
    """RESULTS without the cluster runs (they have a section of their own)."""
    return {scen: {srv: runs for srv, runs in per_server.items() if srv not in CLUSTERS}
            for scen, per_server in results.items()}


def table(results: dict) -> list[str]:
    rows = ["| scenario | server | thousand deliveries/s | server CPU per delivery (us) | server busy % | "
            "generator busy % | lost / dup / reordered / bad | latency p50 / p90 / p99 / max (ms) | setup (s) | "
            "RSS per client (KiB) | fan-out to all (ms) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scen, per_server in single(results).items():
        for server, runs in per_server.items():
            errors = [r["error"] for r in runs if "error" in r]
            if errors and len(errors) == len(runs):
                rows.append(f"| {scen} | {server} | failed: {errors[0]} |" + " |" * 8)
                continue
            lat = "/".join(fmt(summarize(runs, "latency_ms", p), digits=2).split(" ")[0]
                           for p in ("p50", "p90", "p99", "max"))
            rows.append(
                f"| {scen} | {server} | {fmt(summarize(runs, 'deliveries_per_s'), 1e-3, 0)} | "
                f"{fmt(summarize(runs, 'cpu_us_per_delivery'))} | "
                f"{fmt(summarize(runs, 'server_busy_pct'), digits=0)} | "
                f"{fmt(summarize(runs, 'loadgen_busy_pct'), digits=0)} | {check_totals(runs)} | "
                f"{lat if 'conns' not in scen.lower() else '-'} | {fmt(summarize(runs, 'setup_s'), digits=2)} | "
                f"{fmt(summarize(runs, 'rss_per_client'), 1 / 1024, 2)} | "
                f"{fmt(summarize(runs, 'fanout_s'), 1e3, 1)} |")
    return rows


# Whose CPU per delivery is set against whose: pychat's line protocol and its
# IRC front end (pychat-irc) against the other servers, and each other.
RATIO_PAIRS = (*(("pychat", other) for other in ("pychat-base", "miniircd", "ngircd", "inspircd")),
               *(("pychat-irc", other) for other in ("pychat", "miniircd", "ngircd", "inspircd")),
               ("pychat-tls", "pychat"), ("pychat-ws", "pychat-irc"))

# What a transport adds to its protocol's cost per delivery: (server, over TCP, what it adds).
TRANSPORTS = (("pychat-tls", "pychat", "TLS adds to the line protocol"),
              ("pychat-ws", "pychat-irc", "a WebSocket adds to IRC"))

# The IRC front end's targets: (scenario, server, against, ratio limit, strictly below).
TARGETS = (("B", "pychat-irc", "ngircd", 1.0, True),
           ("A", "pychat-irc", "inspircd", 1.5, False),
           ("B", "pychat-irc", "inspircd", 1.5, False))


# The cluster's targets: its total CPU per delivery (nodes and Redis) in B at
# most twice the single process's, and p99 of the latency across nodes in LAT.
CLUSTER_PAIRS = (("pychat-cluster1", "pychat"), ("pychat-cluster2", "pychat"), ("pychat-cluster2", "pychat-cluster1"))
CLUSTER_CPU_LIMIT = 2.0
CLUSTER_P99_LIMIT_MS = 10.0


def _total_cpu(runs: list[dict]) -> dict | None:
    """CPU per delivery of the nodes and Redis together (of the server alone, for a single process)."""
    return summarize(runs, "total_cpu_us_per_delivery") or summarize(runs, "cpu_us_per_delivery")


def _each_node(runs: list[dict], key: str, digits: int = 0) -> str:
    """Medians of a per-node list figure, node by node (``71/73``)."""
    lists = [r[key] for r in runs if "error" not in r and r.get(key)]
    if not lists:
        return "-"
    return "/".join(f"{statistics.median(values):.{digits}f}" for values in zip(*lists))


def cluster_table(results: dict) -> list[str]:
    """The single process against the cluster runs, Redis's CPU apart."""
    rows = ["| scenario | server | thousand deliveries/s | nodes' CPU per delivery (us) | Redis's (us) | "
            "total (us) | busy %: nodes / Redis / generator | clients per node | lost / dup / reordered / bad | "
            "latency p50 / p99 (ms) | across nodes p50 / p99 (ms) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scen, per_server in results.items():
        if not CLUSTERS & set(per_server):
            continue
        for server in ["pychat", *sorted(CLUSTERS)]:
            runs = per_server.get(server)
            if not runs:
                continue
            errors = [r["error"] for r in runs if "error" in r]
            if len(errors) == len(runs):
                rows.append(f"| {scen} | {server} | failed: {errors[0]} |" + " |" * 8)
                continue

            def ms(key: str) -> str:
                return " / ".join(fmt(summarize(runs, key, p), digits=2).split(" ")[0] for p in ("p50", "p99"))
            nodes_busy = _each_node(runs, "node_busy_pct")  # two or more nodes; else the one process's
            if nodes_busy == "-":
                nodes_busy = fmt(summarize(runs, "server_busy_pct"), digits=0).split(" ")[0]
            redis_busy = fmt(summarize(runs, "redis_busy_pct"), digits=0).split(" ")[0]
            generator_busy = fmt(summarize(runs, "loadgen_busy_pct"), digits=0).split(" ")[0]
            rows.append(
                f"| {scen} | {server} | {fmt(summarize(runs, 'deliveries_per_s'), 1e-3, 0)} | "
                f"{fmt(summarize(runs, 'cpu_us_per_delivery'))} | {fmt(summarize(runs, 'redis_cpu_us_per_delivery'))} | "
                f"{fmt(_total_cpu(runs))} | {nodes_busy} / {redis_busy} / {generator_busy} | "
                f"{_each_node(runs, 'clients_per_node')} | {check_totals(runs)} | {ms('latency_ms')} | "
                f"{ms('cross_latency_ms') if server in CLUSTERS and server != 'pychat-cluster1' else '-'} |")
    return rows if len(rows) > 2 else []


def cluster_lines(results: dict) -> list[str]:
    """Total CPU per delivery of each cluster run against the single process (and each other), and the targets."""
    lines = []
    for scen, per_server in results.items():
        for base, other in CLUSTER_PAIRS:
            a, b = _total_cpu(per_server.get(base, [])), _total_cpu(per_server.get(other, []))
            if not (a and b and b["median"] > 0):
                continue
            ratio = a["median"] / b["median"]
            target = (f"; target at most {CLUSTER_CPU_LIMIT:.1f} against the single process: "
                      f"{'met' if ratio <= CLUSTER_CPU_LIMIT else 'missed'}"
                      if (scen, base, other) == ("B", "pychat-cluster2", "pychat") else "")
            lines.append(f"{scen}: {base}/{other} total CPU per delivery = {ratio:.2f}{target}")
    lat = results.get("LAT", {}).get("pychat-cluster2")
    p99 = summarize(lat or [], "cross_latency_ms", "p99")
    if p99:
        lines.append(f"LAT: pychat-cluster2 latency across nodes p99 = {p99['median']:.2f} ms (max of the runs "
                     f"{p99['max']:.2f}); target at most {CLUSTER_P99_LIMIT_MS:g} ms: "
                     f"{'met' if p99['median'] <= CLUSTER_P99_LIMIT_MS else 'missed'}")
    return lines


def transport_costs(results: dict) -> list[str]:
    """Per scenario, the CPU per delivery each transport adds, in microseconds."""
    lines = []
    for scen, per_server in results.items():
        for server, plain, what in TRANSPORTS:
            a = summarize(per_server.get(server, []), "cpu_us_per_delivery")
            b = summarize(per_server.get(plain, []), "cpu_us_per_delivery")
            if a and b:
                lines.append(f"{scen}: {what} {a['median'] - b['median']:+.3f} us of server CPU per delivery "
                             f"({server} {a['median']:.3f} against {plain} {b['median']:.3f})")
    return lines


def ratios(results: dict, pairs: tuple[tuple[str, str], ...] = RATIO_PAIRS) -> list[str]:
    """CPU per delivery of each pair's first server against its second, with how busy each was."""
    lines = []
    for scen, per_server in results.items():
        for base, other in pairs:
            a = summarize(per_server.get(base, []), "cpu_us_per_delivery")
            b = summarize(per_server.get(other, []), "cpu_us_per_delivery")
            if not (a and b and b["median"] > 0):
                continue  # failed, or too short to measure (CPU time counts in 10 ms ticks)
            ratio = a["median"] / b["median"]
            lines.append(f"{scen}: {base}/{other} CPU per delivery = {ratio:.2f} "
                         f"({base} {ratio - 1:+.1%} against {other}; server busy: {busy(per_server, base, other)})")
    return lines


def busy(per_server: dict, *servers: str) -> str:
    return ", ".join(f"{srv} {st['median']:.0f}%" for srv in servers
                     if (st := summarize(per_server.get(srv, []), "server_busy_pct")))


def targets(results: dict) -> list[str]:
    """Each target whose scenario and servers were in the run: met, missed or not measured."""
    lines = []
    for scen, server, other, limit, strict in TARGETS:
        per_server = results.get(scen, {})
        if server not in per_server or other not in per_server:
            continue
        goal = f"target {'below' if strict else 'at most'} {limit:.2f}"
        a = summarize(per_server[server], "cpu_us_per_delivery")
        b = summarize(per_server[other], "cpu_us_per_delivery")
        if not (a and b and b["median"] > 0):
            why = [f"{srv} failed: {r['error']}" for srv in (server, other) for r in per_server[srv][:1]
                   if "error" in r] or [f"{other} used no measurable CPU time"]
            lines.append(f"{scen}: {server}/{other} CPU per delivery not measured ({'; '.join(why)}); {goal}")
            continue
        ratio = a["median"] / b["median"]
        met = ratio < limit if strict else ratio <= limit
        lines.append(f"{scen}: {server}/{other} CPU per delivery = {ratio:.2f}, {goal}: "
                     f"{'met' if met else 'missed'} (server busy: {busy(per_server, server, other)})")
    return lines


def charts(results: dict, outdir: Path) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed; no charts (pip install -e '.[bench]')", file=sys.stderr)
        return []
    made = []

    def save(fig, name: str) -> None:
        path = outdir / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)

    def grouped_bars(groups: list[str], series: dict[str, list[float]], ylabel: str, title: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / max(1, len(series))
        for i, (label, values) in enumerate(series.items()):
            ax.bar([x + i * width for x in range(len(groups))], values, width, label=label)
        ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(groups))], groups)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        save(fig, name)

    def median(runs: list[dict], key: str, sub: str | None = None) -> float:
        return (summarize(runs, key, sub) or {"median": 0.0})["median"]

    flat = [s for s in results if s in ("A", "B")]
    if flat:
        servers = list(dict.fromkeys(srv for s in flat for srv in results[s]))  # in the run's order
        grouped_bars(flat, {srv: [median(results[s].get(srv, []), "cpu_us_per_delivery") for s in flat]
                            for srv in servers},
                     "server CPU per delivery (us)", "Fan-out cost (lower is better)", "bench-cpu.png")
    if "LAT" in results:
        pcts = ["p50", "p90", "p99", "max"]
        grouped_bars(pcts, {srv: [median(results["LAT"][srv], "latency_ms", p) for p in pcts]
                            for srv in results["LAT"]},
                     "latency (ms)", "Latency at a fixed offered rate (lower is better)", "bench-latency.png")
    conns = [s for s in results if s.startswith("CONNS")]
    if conns:
        fig, ax = plt.subplots(figsize=(7, 4))
        for srv in dict.fromkeys(srv for s in conns for srv in results[s]):
            xs, ys = [], []
            for s in conns:
                st = summarize(results[s].get(srv, []), "setup_s")
                if st:
                    xs.append(int(s.split("-")[1]))
                    ys.append(st["median"])
            if xs:
                ax.plot(xs, ys, marker="o", label=srv)
        ax.set_xlabel("clients in one room")
        ax.set_ylabel("time to register all (s)")
        ax.set_title("Setup time (every join is announced to the room)")
        ax.legend()
        save(fig, "bench-conns.png")
    return made


def cluster_section(results: dict) -> list[str]:
    """BENCHMARKS.md's part on several nodes, if the run had cluster servers."""
    rows = cluster_table(results)
    if not rows:
        return []
    return [
        "## Several nodes, one Redis",
        "",
        "`pychat-cluster1` is one node with `--cluster` (every event goes through Redis and back); "
        "`pychat-cluster2` is two nodes sharing the port with `SO_REUSEPORT`, the kernel spreading the "
        "clients over them (clients per node below), and one history file, which one of them writes; "
        "`pychat` is the single process without Redis. Each node has `pychat`'s flags. Redis is Debian's "
        f"`redis-server` with `appendonly yes`, `appendfsync {REDIS_FSYNC}` and no snapshots, its "
        "files in the run's directory; its CPU includes that of the children it forks to rewrite the AOF "
        "(counted when one ends).",
        "",
        "How the 2 cores were shared: node 1 is pinned to core 0 and node 2 to core 1; Redis and the "
        "load generator are not pinned, so with two nodes four busy processes share the two cores "
        "(the single process runs alone on core 0, its generator on core 1). CPU per delivery counts "
        "CPU time, so sharing a core changes it little; throughput and latency it does change.",
        "",
        "Latency across nodes: of the messages a probe received, those whose sender is on the other "
        "node (which node took each client is read from /proc once every client is in). Every "
        "message goes through Redis, so the same path serves both nodes' members.",
        "",
        *rows,
        "",
        *(f"- {line}" for line in cluster_lines(results)),
        "",
    ]


def write_markdown(path: Path, rows: list[str], ratio_lines: list[str], target_lines: list[str],
                   pngs: list[Path], data: dict) -> None:
    servers = ", ".join(f"`{name}` at {commit}" for name, commit in data.get("checkouts", {}).items())
    window = data.get("connect_window", CONNECT_WINDOW)
    others = "".join(f"; `{name}` {w}" for name, w in data.get("connect_windows", {}).items())
    text = [
        "# pychat benchmarks",
        "",
        f"Latest {data['mode']} run: {data['date']}, `{data.get('command', 'python3 -m bench.run')}`, "
        f"{data['runs']} run(s) per server and scenario (median ± half the spread)"
        + (f"; {servers}" if servers else "") + ".",
        f"Machine: {data['machine']}. Server pinned to core 0, load generator to core 1.",
        "",
        "Rerun: `python3 -m pip install -e '.[bench]'` then `python3 -m bench.run` "
        "(full, about an hour, more than half of it ngIRCd's CONNS-10000; writes docs/) or "
        "`python3 -m bench.run --quick` "
        "(a few minutes; writes bench/results/). As root it installs ngIRCd and InspIRCd "
        "(Debian packages) when they are missing; otherwise it says how and leaves them out.",
        "",
        "Scenarios: A = 1 room x 50 members, 10 senders, 100-byte payloads, flat out; "
        "B = 100 rooms x 10 members, every member sends, flat out; LAT = A at a fixed offered rate "
        "of 11,000 messages/s; CONNS-N = N clients registered in one room (setup time includes "
        "every join being announced to the room, N squared deliveries), then one message to all. "
        "IRC clients send JOIN once registered (RPL_WELCOME). "
        f"Login window, the logins under way at once: {window} for every server{others} "
        "(miniircd listens with a backlog of 5 and ngIRCd of 10; more would drop connections; "
        "InspIRCd completes registrations on a once-a-second timer, so 5 would make it register "
        "5 clients a second).",
        "",
        "Servers: `pychat` as shipped (history in an SQLite file, log at info) with `--flood-rate 0 "
        "--max-per-ip 0`; `pychat-mem` the same with `--db :memory:`; `pychat-bucket` with flood "
        "control on at a rate it never reaches (the token bucket runs for every line); "
        "`pychat-limits-off` with the send queue, client and registration limits set out of reach; "
        "`pychat-base` another checkout of pychat (`--base DIR`) with exactly `pychat`'s flags; "
        "`pychat-irc` `pychat` measured through its IRC listener (`--irc-port`; the line port is "
        "the OS's choice); `pychat-tls` `pychat`'s line protocol over TLS (`--tls-port`, a throwaway "
        "self-signed EC P-256 certificate; TLS 1.3, the generator checks nothing) and `pychat-ws` IRC "
        "over a WebSocket (`--web-port`, one text frame per line, masked by the generator as browsers "
        "do), both in A and LAT only; `miniircd` from PyPI; `ngircd` (ngIRCd) and `inspircd` (InspIRCd) from "
        "Debian's packages, each started with a config generated for the run (bench/daemons.py): "
        "127.0.0.1 only, no DNS or ident lookups, no MOTD file, no limit on connections per address "
        "or in all, penalties and flood control off or out of reach, pings out of reach, InspIRCd's "
        "send and receive queues at pychat's send queue (1 MiB; ngIRCd's is fixed at 32 KiB).",
        "",
        "Every delivery is checked by sequence number: each sender numbers its messages and every "
        "receiver must get each one exactly once and in order; lost / dup / reordered / bad count "
        "the exceptions over all runs (bad = malformed or unexpected lines). Server busy % = the "
        "server's CPU seconds / wall seconds while measuring; generator busy % the same for the "
        "load generator. A server well below 100% busy was not saturated: the clients, not the "
        "server, set the pace, and its CPU per delivery includes the cost of waking up for less work. "
        "miniircd, ngIRCd and InspIRCd leave Nagle's algorithm on (pychat sets TCP_NODELAY): "
        "flat out, a delivery often waits for the receiver's delayed ACK, so in A they are far "
        "from saturated.",
        "",
        *rows,
        "",
        *(f"- {line}" for line in ratio_lines),
        "",
        *(["Targets for the IRC front end (CPU per delivery):", "",
           *(f"- {line}" for line in target_lines), ""] if target_lines else []),
        *(f"![{p.stem}]({p.name})" for p in pngs),
        "",
        *cluster_section(data["results"]),
    ]
    attack_json = path.parent / "attack.json"
    if attack_json.exists():
        text.append(attack.section(json.loads(attack_json.read_text())))
    path.write_text("\n".join(text))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description="pychat benchmark: pychat vs miniircd, ngIRCd and InspIRCd")
    p.add_argument("--quick", action="store_true", help="one run per scenario, shorter; a couple of minutes")
    p.add_argument("--tiny", action="store_true", help="a few seconds; only checks that everything runs")
    p.add_argument("--runs", type=int, default=None, help="runs per server and scenario (default 3, quick 1)")
    p.add_argument("--servers", default=DEFAULT_SERVERS,
                   help=f"comma-separated, from {', '.join(KINDS)}, pychat-base")
    p.add_argument("--base", metavar="DIR",
                   help="another pychat checkout, run as pychat-base with exactly pychat's flags "
                        "(added after pychat unless --servers names it); ATTACK attacks it too")
    p.add_argument("--scenarios", default=None,
                   help="comma-separated names: A, B, LAT, CONNS (or CONNS-N), ATTACK (default: all)")
    p.add_argument("--out", default=None,
                   help="where the JSON, charts and BENCHMARKS.md go (default: docs/ for a full run, "
                        "bench/results/ for --quick and --tiny)")
    p.add_argument("--render", metavar="JSON", help="only rebuild the table, charts and BENCHMARKS.md from a JSON file")
    args = p.parse_args(argv)
    outdir = Path(args.out) if args.out else default_out(args.quick, args.tiny)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        report(data, Path(args.out) if args.out else Path(args.render).parent)
        return
    if args.runs is None:
        args.runs = 1 if (args.quick or args.tiny) else 3
    kinds = choose_kinds(args)
    left_out = set(daemons.install(sorted({name for k in kinds for name in k.needs()})))
    kinds = [k for k in kinds if not set(k.needs()) & left_out]
    if not kinds:
        raise SystemExit("bench: no server left to run")
    chosen = scenarios(args.quick, args.tiny)
    wanted = set(args.scenarios.split(",")) if args.scenarios else None
    if wanted:
        chosen = [s for s in chosen if s.name in wanted or s.name.split("-")[0] in wanted]
    outdir.mkdir(parents=True, exist_ok=True)
    pin(os.getpid(), 1)
    command = "python3 -m bench.run" + "".join(" " + shlex.quote(a) for a in argv)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="pychat-bench-") as tmp:
        for scenario in chosen:
            results[scenario.name] = run_scenario(scenario, kinds, args.runs, Path(tmp))
    if wanted is None or "ATTACK" in wanted:
        attack_args = argparse.Namespace(tiny=args.tiny, quick=args.quick, base=args.base, attacks=None)
        attack.run_and_report(attack_args, outdir, command)
    data = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "runs": args.runs,
            "mode": "quick" if args.quick else ("tiny" if args.tiny else "full"), "command": command,
            "connect_window": CONNECT_WINDOW,
            "connect_windows": {k.name: k.connect_window for k in kinds if k.connect_window != CONNECT_WINDOW},
            "checkouts": {k.name: checkout(k.root) for k in kinds if k.daemon == "pychat"},
            "results": results}
    if results:
        (outdir / "benchmarks.json").write_text(json.dumps(data, indent=1))
        report(data, outdir)


def choose_kinds(args: argparse.Namespace) -> list[ServerKind]:
    names = args.servers.split(",")
    kinds = dict(KINDS)
    if args.base:
        kinds["pychat-base"] = base_kind(args.base)
        if "pychat-base" not in names:
            # Right after pychat, so the two alternate run by run.
            names.insert(names.index("pychat") + 1 if "pychat" in names else len(names), "pychat-base")
    unknown = [n for n in names if n not in kinds]
    if unknown:
        raise SystemExit(f"bench: unknown server {', '.join(unknown)}"
                         + ("; pychat-base needs --base DIR" if "pychat-base" in unknown else ""))
    return [kinds[n] for n in names]


def run_scenario(scenario: Scenario, kinds: list[ServerKind], runs: int, tmp: Path) -> dict:
    """Every server RUNS times (CONNS once), alternating their order run by run."""
    results: dict = {k.name: [] for k in kinds}
    # One run for CONNS: its setup alone grows with N squared.
    runs = 1 if scenario.name.startswith("CONNS") else runs
    for run in range(runs):
        order = kinds if run % 2 == 0 else list(reversed(kinds))
        for kind in order:
            if scenario.name.startswith("CONNS") and not kind.conns:
                continue  # the variants differ only on the message path
            if kind.only and scenario.name not in kind.only:
                continue
            workdir = tmp / f"{scenario.name}-{kind.name}-{run}"
            workdir.mkdir()
            result = run_once(kind, scenario, workdir)
            results[kind.name].append(result)
            print(f"  {scenario.name} {kind.name} run {run + 1}: {brief(result)}", file=sys.stderr)
            shutil.rmtree(workdir, ignore_errors=True)
    return {k: v for k, v in results.items() if v}


def brief(result: dict) -> str:
    if "error" in result:
        return result["error"]
    checks = ", ".join(f"{k} {result.get(k, 0)}" for k in CHECKS)
    if "fanout_s" in result:
        return f"setup {result['setup_s']:.1f} s, {checks}"
    return (f"{result.get('cpu_us_per_delivery') or 0:.3f} us/delivery, server busy "
            f"{result.get('server_busy_pct') or 0:.0f}%, generator busy {result.get('loadgen_busy_pct') or 0:.0f}%, "
            f"{checks}")


def report(data: dict, outdir: Path) -> None:
    """Print the table and write the charts and BENCHMARKS.md."""
    results = data["results"]
    outdir.mkdir(parents=True, exist_ok=True)
    rows = table(results)
    ratio_lines = ratios(results) + transport_costs(results)
    target_lines = targets(results)
    print("\n".join(rows))
    print("\n".join(ratio_lines))
    if target_lines:
        print("targets:\n" + "\n".join(target_lines))
    cluster = cluster_table(results)
    if cluster:
        print("\n".join(cluster + cluster_lines(results)))
    pngs = charts(single(results), outdir)
    write_markdown(outdir / "BENCHMARKS.md", rows, ratio_lines, target_lines, pngs, data)
    print(f"wrote {outdir / 'BENCHMARKS.md'} and {len(pngs)} chart(s) in {outdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
