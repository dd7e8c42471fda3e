"""Run pychat's benchmark: pychat and miniircd side by side.

    python3 -m bench.run --quick     # about a minute
    python3 -m bench.run             # the full run, a few minutes

Each scenario starts every server fresh, pinned to core 0 with the load
generator (bench/loadgen.py, its own process) on core 1 when there are two,
and alternates the servers run by run. Writes a table on stdout, a JSON
file, PNG charts and docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerKind:
    """How to start one server under test."""

    name: str
    protocol: str
    extra: list[str] = field(default_factory=list)
    connect_window: int = 32

    def command(self, port: int, workdir: Path) -> list[str]:
        if self.protocol == "irc":
            exe = shutil.which("miniircd")
            if exe is None:
                raise SystemExit("bench: miniircd is not installed (pip install -e '.[bench]')")
            cmd = [exe, "--listen", "127.0.0.1", "--ports", str(port)]
            if os.geteuid() == 0:
                cmd += ["--setuid", "root"]  # miniircd refuses to run as root otherwise
            return cmd
        return [sys.executable, str(ROOT / "pychat_server.py"), "127.0.0.1", "--port", str(port),
                "--flood-rate", "0", "--max-per-ip", "0", *self.extra]


PYCHAT_FILE = ServerKind("pychat", "pychat")
PYCHAT_MEMORY = ServerKind("pychat-mem", "pychat", ["--db", ":memory:"])
PYCHAT_FLOODCHECK = ServerKind("pychat-bucket", "pychat", ["--flood-rate", "1e9", "--flood-burst", "1000000000"])
PYCHAT_LIMITS_OFF = ServerKind("pychat-limits-off", "pychat", ["--sendq", "1000000000000", "--max-clients",
                                                              "1000000", "--registration-timeout", "0"])
MINIIRCD = ServerKind("miniircd", "irc", connect_window=4)
KINDS = {k.name: k for k in (PYCHAT_FILE, PYCHAT_MEMORY, PYCHAT_FLOODCHECK, PYCHAT_LIMITS_OFF, MINIIRCD)}


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
        out.append(Scenario(f"CONNS-{n}", f"{n} clients in one room",
                            ["--mode", "conns", "--rooms", "1", "--members", str(n), "--senders", "0",
                             "--setup-timeout", "540"],
                            timeout=600.0))
    return out


def pin(pid: int, cpu: int) -> None:
    if len(os.sched_getaffinity(0)) >= 2:
        try:
            os.sched_setaffinity(pid, {cpu})
        except OSError:
            pass


def run_once(kind: ServerKind, scenario: Scenario, workdir: Path) -> dict:
    port = free_port()
    env = dict(os.environ, XDG_DATA_HOME=str(workdir / "xdg"))
    server = subprocess.Popen(kind.command(port, workdir), cwd=workdir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL)
    try:
        pin(server.pid, 0)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    return {"error": "server did not start"}
                time.sleep(0.05)
        cmd = [sys.executable, "-m", "bench.loadgen", "--protocol", kind.protocol, "--port", str(port),
               "--server-pid", str(server.pid), "--connect-window", str(kind.connect_window),
               *scenario.loadgen]
        gen = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pin(gen.pid, 1)
        try:
            out, err = gen.communicate(timeout=scenario.timeout)
        except subprocess.TimeoutExpired:
            gen.kill()
            gen.communicate()
            return {"error": "timed out"}
        if gen.returncode != 0:
            alive = server.poll() is None
            return {"error": (err.strip().splitlines() or ["failed"])[-1] + ("" if alive else " (server died)")}
        return json.loads(out)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def table(results: dict) -> list[str]:
    rows = ["| scenario | server | thousand deliveries/s | lost | server CPU per delivery (us) | "
            "latency p50 / p90 / p99 / max (ms) | setup (s) | RSS per client (KiB) | fan-out to all (ms) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for scen, per_server in results.items():
        for server, runs in per_server.items():
            errors = [r["error"] for r in runs if "error" in r]
            if errors and len(errors) == len(runs):
                rows.append(f"| {scen} | {server} | failed: {errors[0]} | | | | | | |")
                continue
            lat = "/".join(fmt(summarize(runs, "latency_ms", p), digits=2).split(" ")[0]
                           for p in ("p50", "p90", "p99", "max"))
            lost = summarize(runs, "lost")
            rows.append(
                f"| {scen} | {server} | {fmt(summarize(runs, 'deliveries_per_s'), 1e-3, 0)} | "
                f"{int(lost['max']) if lost else '-'} | {fmt(summarize(runs, 'cpu_us_per_delivery'))} | "
                f"{lat if 'conns' not in scen.lower() else '-'} | {fmt(summarize(runs, 'setup_s'), digits=2)} | "
                f"{fmt(summarize(runs, 'rss_per_client'), 1 / 1024, 2)} | "
                f"{fmt(summarize(runs, 'fanout_s'), 1e3, 1)} |")
    return rows


def ratios(results: dict, base: str = "pychat", other: str = "miniircd") -> list[str]:
    lines = []
    for scen, per_server in results.items():
        a = summarize(per_server.get(base, []), "cpu_us_per_delivery")
        b = summarize(per_server.get(other, []), "cpu_us_per_delivery")
        if a and b:
            lines.append(f"{scen}: {base}/{other} CPU per delivery = {a['median'] / b['median']:.2f} "
                         f"({other} costs {b['median'] / a['median']:.1f}x as much)")
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
        servers = sorted({srv for s in flat for srv in results[s]})
        grouped_bars(flat, {srv: [median(results[s].get(srv, []), "cpu_us_per_delivery") for s in flat]
                            for srv in servers},
                     "server CPU per delivery (us)", "Fan-out cost (lower is better)", "bench-cpu.png")
    if "LAT" in results:
        pcts = ["p50", "p90", "p99", "max"]
        grouped_bars(pcts, {srv: [median(results["LAT"][srv], "latency_ms", p) for p in pcts]
                            for srv in sorted(results["LAT"])},
                     "latency (ms)", "Latency at a fixed offered rate (lower is better)", "bench-latency.png")
    conns = [s for s in results if s.startswith("CONNS")]
    if conns:
        fig, ax = plt.subplots(figsize=(7, 4))
        for srv in sorted({srv for s in conns for srv in results[s]}):
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


def write_markdown(path: Path, rows: list[str], ratio_lines: list[str],
                   pngs: list[Path], args: argparse.Namespace, date: str) -> None:
    mode = "quick" if args.quick else ("tiny" if args.tiny else "full")
    text = [
        "# pychat benchmarks",
        "",
        f"Latest {mode} run: {date}, {args.runs} run(s) per server and "
        f"scenario (median ± half the spread).",
        f"Machine: {machine()}. Server pinned to core 0, load generator to core 1.",
        "",
        "Rerun: `python3 -m pip install -e '.[bench]'` then `python3 -m bench.run` "
        "(full, a few minutes) or `python3 -m bench.run --quick` (about a minute).",
        "",
        "Scenarios: A = 1 room x 50 members, 10 senders, 100-byte payloads, flat out; "
        "B = 100 rooms x 10 members, every member sends, flat out; LAT = A at a fixed offered rate "
        "of 11,000 messages/s; CONNS-N = N clients registered in one room (setup time includes "
        "every join being announced to the room, N squared deliveries), then one message to all.",
        "",
        "Servers: `pychat` as shipped (history in an SQLite file, log at info) with `--flood-rate 0 "
        "--max-per-ip 0`; `pychat-mem` the same with `--db :memory:`; `pychat-bucket` with flood "
        "control on at a rate it never reaches (the token bucket runs for every line); "
        "`pychat-limits-off` with the send queue, client and registration limits set out of reach; "
        "`miniircd` from PyPI.",
        "",
        *rows,
        "",
        *(f"- {line}" for line in ratio_lines),
        "",
        *(f"![{p.stem}]({p.name})" for p in pngs),
        "",
    ]
    path.write_text("\n".join(text))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="pychat benchmark: pychat vs miniircd")
    p.add_argument("--quick", action="store_true", help="one run per scenario, shorter; about a minute")
    p.add_argument("--tiny", action="store_true", help="a few seconds; only checks that everything runs")
    p.add_argument("--runs", type=int, default=None, help="runs per server and scenario (default 3, quick 1)")
    p.add_argument("--servers", default="pychat,pychat-mem,miniircd",
                   help=f"comma-separated, from {', '.join(KINDS)}")
    p.add_argument("--scenarios", default=None, help="comma-separated names (default: all)")
    p.add_argument("--out", default=str(ROOT / "docs"), help="where the JSON, charts and BENCHMARKS.md go")
    p.add_argument("--render", metavar="JSON", help="only rebuild the table, charts and BENCHMARKS.md from a JSON file")
    args = p.parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        args.runs, args.quick, args.tiny = data["runs"], data["mode"] == "quick", data["mode"] == "tiny"
        report(data["results"], Path(args.out), args, data["date"])
        return
    if args.runs is None:
        args.runs = 1 if (args.quick or args.tiny) else 3
    kinds = [KINDS[name] for name in args.servers.split(",")]
    chosen = scenarios(args.quick, args.tiny)
    if args.scenarios:
        wanted = set(args.scenarios.split(","))
        chosen = [s for s in chosen if s.name in wanted or s.name.split("-")[0] in wanted]
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="pychat-bench-") as tmp:
        for scenario in chosen:
            results[scenario.name] = {k.name: [] for k in kinds}
            # One run for CONNS: its setup alone grows with N squared.
            runs = 1 if scenario.name.startswith("CONNS") else args.runs
            for run in range(runs):
                order = kinds if run % 2 == 0 else list(reversed(kinds))
                for kind in order:
                    if scenario.name.startswith("CONNS") and kind.name not in ("pychat", "miniircd"):
                        continue  # the variants differ only on the message path
                    workdir = Path(tmp) / f"{scenario.name}-{kind.name}-{run}"
                    workdir.mkdir()
                    result = run_once(kind, scenario, workdir)
                    results[scenario.name][kind.name].append(result)
                    brief = result.get("error") or (
                        f"{result.get('cpu_us_per_delivery') or 0:.3f} us/delivery, lost {result.get('lost', 0)}"
                        if "fanout_s" not in result else f"setup {result['setup_s']:.1f} s")
                    print(f"  {scenario.name} {kind.name} run {run + 1}: {brief}", file=sys.stderr)
                    shutil.rmtree(workdir, ignore_errors=True)
            results[scenario.name] = {k: v for k, v in results[scenario.name].items() if v}
    data = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "runs": args.runs,
            "mode": "quick" if args.quick else ("tiny" if args.tiny else "full"), "results": results}
    json_path = outdir / "benchmarks.json"
    json_path.write_text(json.dumps(data, indent=1))
    report(results, outdir, args, data["date"])


def report(results: dict, outdir: Path, args: argparse.Namespace, date: str) -> None:
    """Print the table and write the charts and BENCHMARKS.md."""
    rows = table(results)
    ratio_lines = ratios(results)
    print("\n".join(rows))
    print("\n".join(ratio_lines))
    pngs = charts(results, outdir)
    write_markdown(outdir / "BENCHMARKS.md", rows, ratio_lines, pngs, args, date)
    print(f"wrote {outdir / 'BENCHMARKS.md'} and {len(pngs)} chart(s) in {outdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
