"""Helpers shared by the benchmark's parts: ports, CPU pinning, /proc figures."""

from __future__ import annotations

import functools
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"  # git-ignored: where quick and tiny runs write
CLK_TCK = os.sysconf("SC_CLK_TCK")


def default_out(quick: bool, tiny: bool) -> Path:
    """Only a full run replaces the committed figures in docs/."""
    return RESULTS if (quick or tiny) else ROOT / "docs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The CPUs this process may use, before it pins itself anywhere: a
# controller pins itself to core 1 and must still pin its server to core 0.
_CPUS = sorted(os.sched_getaffinity(0))


def pin(pid: int, cpu: int) -> None:
    """Pin PID to the CPU-th CPU we may use, when there are two or more
    (server on 0, load and controller on 1)."""
    if len(_CPUS) >= 2:
        try:
            os.sched_setaffinity(pid, {_CPUS[cpu % len(_CPUS)]})
        except OSError:
            pass


def unpin(pid: int) -> None:
    """Let PID run on every CPU we may use (children inherit their parent's pinning)."""
    try:
        os.sched_setaffinity(pid, set(_CPUS))
    except OSError:
        pass


def raise_nofile() -> int:
    """Raise this process's open-files limit to its hard limit (many sockets
    in one process); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def server_cpu(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of process PID; with CHILDREN, those of the
    children it has waited for too (Redis rewrites its AOF in a child)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def socket_owners(port: int, pids: list[int], listening: bool = False) -> dict[int, int]:
    """Which of PIDS holds each TCP socket whose local port is PORT: the
    sockets' remote ports (or, LISTENING, their inodes) mapped to the
    position of their owner in PIDS. Read from /proc (the processes'
    descriptors and the kernel's socket tables); for nodes that share one
    port with SO_REUSEPORT, which node took which client."""
    inodes: dict[str, int] = {}
    for i, pid in enumerate(pids):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[link[8:-1]] = i
    owners: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                    if int(local.rsplit(":", 1)[1], 16) != port or inode not in inodes:
                        continue
                    if listening and state == "0A":
                        owners[int(inode)] = inodes[inode]
                    elif not listening and state != "0A":
                        owners[int(remote.rsplit(":", 1)[1], 16)] = inodes[inode]
        except OSError:
            continue
    return owners


def server_rss(pid: int) -> int:
    """Resident set size of PID in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0,
                   source: str | None = None) -> bool:
    """Wait until something accepts on 127.0.0.1:PORT (False if PROC exited or time ran out).
    SOURCE: the local address to connect from, so the check is not counted
    against another address's connection limit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1,
                                     source_address=(source, 0) if source else None).close()
            return True
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after GRACE seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def checkout(root: Path) -> str:
    """The commit of the checkout at ROOT (``abc1234``, ``+`` if it has changes), or ``?``."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (head or "?") + ("+" if dirty else "")


@functools.cache
def speaks_irc(root: Path) -> bool:
    """Whether the pychat checkout at ROOT has an IRC listener (``--irc-port``)."""
    out = subprocess.run([sys.executable, str(root / "pychat_server.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    return "--irc-port" in out.stdout


@functools.cache
def _help(root: Path) -> str:
    return subprocess.run([sys.executable, str(root / "pychat_server.py"), "--help"],
                          capture_output=True, text=True, timeout=60).stdout


def irc_off(root: Path) -> list[str]:
    """The flags that keep the pychat at ROOT off the default ports of its other
    listeners (IRC's 6667, the web's 8080), where another server may listen;
    none for a pychat without them."""
    flags = ["--irc-port", "off"] if speaks_irc(root) else []
    if "--web-port" in _help(root):
        flags += ["--web-port", "off"]
    return flags
