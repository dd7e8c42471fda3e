"""The IRC daemons pychat is measured against, and the Redis of its cluster runs:
how to start each, with what config.

miniircd comes from PyPI (the ``bench`` extra). ngIRCd and InspIRCd come
from Debian packages, as does Redis (``redis-server``): when one is missing and we are root, ``install``
installs it with apt-get and stops the system service the package may
have started (so nothing of ours listens on the machine's addresses);
otherwise it says how and the runner leaves that daemon out.

Each daemon runs with a config generated in the run's own directory:
listening on 127.0.0.1 only, no DNS or ident lookups, no MOTD file,
connection limits (per address, in all, open files) high enough for
CONNS-10000 from one address, flood control and penalties out of reach
(as pychat runs with ``--flood-rate 0 --max-per-ip 0``), pings out of
reach (the load generator answers PINGs only until it starts measuring), and
nothing read from or written to the system's own config, pid or log files.

    python3 -m bench.daemons --install   # install the missing ones (as root)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Enough for CONNS-10000 from one address, with room to spare.
MANY = 1_000_000
# pychat's default send queue: a client that is not reading is dropped past it.
SENDQ = 1 << 20
# Seconds: longer than any scenario, so no client is pinged while measuring
# (the load generator answers PINGs only before) or dropped for not answering.
NO_PINGS = 3600


@dataclass(frozen=True)
class Daemon:
    """An IRC daemon from a Debian package."""

    name: str
    package: str
    binary: str
    service: str
    pidfile: str  # where the package's init script keeps the service's pid

    def installed(self) -> bool:
        return shutil.which(self.binary) is not None


NGIRCD = Daemon("ngircd", "ngircd", "ngircd", "ngircd", "/run/ngircd/ngircd.pid")
INSPIRCD = Daemon("inspircd", "inspircd", "inspircd", "inspircd", "/run/inspircd/inspircd.pid")
# Not an IRC daemon: the Redis that pychat's cluster nodes share.
REDIS = Daemon("redis", "redis-server", "redis-server", "redis-server", "/run/redis/redis-server.pid")
DEBIAN = {d.name: d for d in (NGIRCD, INSPIRCD, REDIS)}

# ngIRCd 26. MaxPenaltyTime = 0 turns its penalty times off (it still takes at
# most 3 commands per client per pass of its loop, by design, with no delay).
# It is run as root, so it switches to "nobody" after reading this file.
NGIRCD_CONF = """\
[Global]
\tName = bench.ngircd
\tInfo = pychat benchmark
\tAdminInfo1 = pychat benchmark
\tAdminEMail = bench@localhost
\tListen = 127.0.0.1
\tPorts = {port}
\tMotdPhrase = benchmark
[Limits]
\tMaxConnections = 0
\tMaxConnectionsIP = 0
\tMaxPenaltyTime = 0
\tPingTimeout = {no_pings}
\tPongTimeout = {no_pings}
[Options]
\tDNS = no
\tIdent = no
\tPAM = no
\tIncludeDir = {include_dir}
"""

# InspIRCd 3. Without <module> tags only the core modules load (no ident
# module). Flood control: the penalty threshold (commands) times 1000 must fit
# an unsigned int, and the penalty drains by commandrate (millicommands) a
# second; fakelag="no" makes reaching it a visible "Excess Flood" quit rather
# than a silent delay. softsendq: a client's commands wait while its own send
# queue is above it (4 KiB by default); set to the hard limit, pychat's sendq.
# DNS points at loopback although no lookup is made (resolvehostnames="no").
INSPIRCD_CONF = """\
<server name="bench.inspircd" description="pychat benchmark" network="bench">
<admin name="pychat benchmark" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect allow="*" resolvehostnames="no" useident="no"
         localmax="{many}" globalmax="{many}" limit="{many}" maxconnwarn="no"
         threshold="4000000" commandrate="4000000000" fakelag="no"
         recvq="{sendq}" softsendq="{sendq}" hardsendq="{sendq}" pingfreq="{no_pings}">
<dns server="127.0.0.1" timeout="1">
<path configdir="{dir}" datadir="{dir}" logdir="{dir}">
<performance clonesonconnect="no" somaxconn="4096">
"""


def ngircd_command(port: int, workdir: Path) -> list[str]:
    """Write ngIRCd's config into WORKDIR; the command that runs it in the foreground."""
    include_dir = workdir / "ngircd.conf.d"  # instead of the system's /etc/ngircd/ngircd.conf.d
    include_dir.mkdir(exist_ok=True)
    conf = workdir / "ngircd.conf"
    conf.write_text(NGIRCD_CONF.format(port=port, no_pings=NO_PINGS, include_dir=include_dir))
    return [shutil.which(NGIRCD.binary) or NGIRCD.binary, "--nodaemon", "--config", str(conf)]


def inspircd_command(port: int, workdir: Path) -> list[str]:
    """Write InspIRCd's config into WORKDIR; the command that runs it in the foreground."""
    conf = workdir / "inspircd.conf"
    conf.write_text(INSPIRCD_CONF.format(port=port, many=MANY, sendq=SENDQ, no_pings=NO_PINGS, dir=workdir))
    cmd = [shutil.which(INSPIRCD.binary) or INSPIRCD.binary, "--nofork", "--nopid", "--config", str(conf)]
    if os.geteuid() == 0:
        cmd.append("--runasroot")  # it refuses to run as root otherwise
    return cmd


def redis_command(port: int, workdir: Path, fsync: str) -> list[str]:
    """Redis for a cluster run: 127.0.0.1 only, its append-only file in WORKDIR
    (``appendfsync`` FSYNC), no snapshots, in the foreground."""
    return [shutil.which(REDIS.binary) or REDIS.binary, "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(workdir), "--appendonly", "yes", "--appendfsync", fsync, "--save", "",
            "--daemonize", "no", "--logfile", str(workdir / "redis.log")]


def miniircd_command(port: int) -> list[str]:
    exe = shutil.which("miniircd")
    if exe is None:
        raise SystemExit("bench: miniircd is not installed (pip install -e '.[bench]')")
    cmd = [exe, "--listen", "127.0.0.1", "--ports", str(port)]
    if os.geteuid() == 0:
        cmd += ["--setuid", "root"]  # miniircd refuses to run as root otherwise
    return cmd


def how_to_install(names: list[str]) -> str:
    packages = " ".join(DEBIAN[n].package for n in names)
    return f"as root: apt-get install {packages}, or python3 -m bench.daemons --install"


def install(names: list[str]) -> list[str]:
    """Install the daemons NAMES that are missing, when we are root and have
    apt-get; return the names still missing (each said on stderr, with how)."""
    missing = [n for n in names if not DEBIAN[n].installed()]
    if not missing:
        return []
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"bench: {', '.join(missing)} not installed; leaving {'it' if len(missing) == 1 else 'them'} "
              f"out ({how_to_install(missing)})", file=sys.stderr)
        return missing
    packages = [DEBIAN[n].package for n in missing]
    print(f"bench: installing {' '.join(packages)} with apt-get", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "-qq", *packages]
    if subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        # Package lists absent or stale (a fresh machine): refresh them once.
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL)
    for n in missing:
        if DEBIAN[n].installed():
            stop_service(DEBIAN[n])
    still = [n for n in missing if not DEBIAN[n].installed()]
    if still:
        print(f"bench: could not install {', '.join(still)}; leaving {'it' if len(still) == 1 else 'them'} out",
              file=sys.stderr)
    return still


def stop_service(daemon: Daemon) -> None:
    """Stop the system service that installing DAEMON's package may have started:
    it would listen on every address with the package's config. Only that
    service: other copies of the daemon (other benchmarks) are left alone."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        if subprocess.run(["systemctl", "is-active", "--quiet", daemon.service]).returncode == 0:
            subprocess.run(["systemctl", "stop", daemon.service])
            print(f"bench: stopped the {daemon.service} service the package started "
                  f"(systemctl disable {daemon.service} keeps it from starting at boot)", file=sys.stderr)
        return
    pid = _service_pid(daemon)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    print(f"bench: stopped the {daemon.service} service the package started", file=sys.stderr)


def _service_pid(daemon: Daemon) -> int | None:
    """The pid in the service's pid file, if that process is the daemon."""
    try:
        pid = int(Path(daemon.pidfile).read_text().split()[0])
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError, IndexError):
        return None
    binary = shutil.which(daemon.binary)
    return pid if binary and Path(exe) == Path(binary).resolve() else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="The IRC daemons of pychat's benchmark")
    p.add_argument("--install", action="store_true",
                   help=f"install the missing ones with apt-get (as root): {', '.join(DEBIAN)}")
    args = p.parse_args(argv)
    if args.install:
        sys.exit(1 if install(list(DEBIAN)) else 0)
    for d in DEBIAN.values():
        print(f"{d.name}: {shutil.which(d.binary) or 'not installed (' + how_to_install([d.name]) + ')'}")


if __name__ == "__main__":
    main()
