"""The benchmark's code: the sequence checker on made-up streams, and tiny real
runs against pychat (timing is not tested, only that nothing was lost)."""

import dataclasses
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT

from bench import attack, common, daemons, run, seqcheck

PAYLOAD = 60


def pychat_line(sender: int, seq: int) -> bytes:
    name = seqcheck.name(sender).encode()
    return (b"[2026-11-21 15:00:05] #general " + name + b": "
            + seqcheck.make_payload(sender, seq, 1234567890, PAYLOAD) + b"\r\n")


def irc_line(sender: int, seq: int) -> bytes:
    name = seqcheck.name(sender).encode()
    return (b":" + name + b"!" + name + b"@127.0.0.1 PRIVMSG #r12 :"
            + seqcheck.make_payload(sender, seq, 1234567890, PAYLOAD) + b"\r\n")


def feed_in_pieces(checker: seqcheck.RoomChecker, receiver: int, data: bytes, piece: int) -> None:
    """As a socket would: arbitrary cuts, records split across reads."""
    for i in range(0, len(data), piece):
        checker.feed(receiver, data[i:i + piece])


@pytest.mark.parametrize("line", [pychat_line, irc_line], ids=["pychat", "irc"])
@pytest.mark.parametrize("buffer_size", [2048, 1 << 20], ids=["many-batches", "one-batch"])
def test_checker_reports_a_lost_a_duplicated_and_a_reordered_message(line, buffer_size):
    # Members 0, 1, 2; senders 0 and 1, 100 messages each.
    checker = seqcheck.RoomChecker([0, 1, 2], [0, 1], PAYLOAD, buffer_size)
    # Receiver 0 gets everything sender 1 sent, in order.
    feed_in_pieces(checker, 0, b"".join(line(1, q) for q in range(1, 101)), 777)
    # Receiver 1, from sender 0: 10 never comes, 50 comes twice, 71 after 72.
    seqs = [q for q in range(1, 101) if q != 10]
    seqs.insert(seqs.index(50) + 1, 50)
    i = seqs.index(71)
    seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]
    feed_in_pieces(checker, 1, b"".join(line(0, q) for q in seqs), 500)
    # Receiver 2 gets both senders interleaved, with a server notice between two messages.
    mixed = [line(s, q) for q in range(1, 101) for s in (0, 1)]
    mixed.insert(37, b"* a notice from the server\r\n")
    feed_in_pieces(checker, 2, b"".join(mixed), 1000)
    result = checker.finish({0: 100, 1: 100})
    assert result["lost"] == 1
    assert result["duplicates"] == 1
    assert result["out_of_order"] == 1
    assert result["bad_records"] == 0
    assert result["other_lines"] == 1
    assert result["expected"] == 400
    assert result["deliveries"] == 399
    assert result["records"] == 400  # 399 distinct + the duplicate


@pytest.mark.parametrize("line", [pychat_line, irc_line], ids=["pychat", "irc"])
def test_checker_passes_a_clean_stream_and_flags_a_malformed_line(line):
    checker = seqcheck.RoomChecker([5, 6], [5], PAYLOAD, 4096)
    feed_in_pieces(checker, 1, b"".join(line(5, q) for q in range(1, 301)), 333)
    clean = checker.finish({5: 300})
    assert clean == {"expected": 300, "deliveries": 300, "records": 300, "lost": 0, "duplicates": 0,
                     "out_of_order": 0, "bad_records": 0, "other_lines": 0}

    checker = seqcheck.RoomChecker([5, 6], [5], PAYLOAD, 4096)
    good = [line(5, q) for q in range(1, 301)]
    good[100] = good[100][:-10] + b"\r\n"  # a message cut short
    feed_in_pieces(checker, 1, b"".join(good), 333)
    result = checker.finish({5: 300})
    assert result["bad_records"] == 1 and result["lost"] == 1
    assert result["duplicates"] == 0 and result["out_of_order"] == 0


def test_checker_flags_a_message_from_the_wrong_sender():
    checker = seqcheck.RoomChecker([0, 1], [0], PAYLOAD, 4096)
    data = [pychat_line(0, q) for q in range(1, 51)]
    data.insert(20, pychat_line(7, 1))  # client 7 is not in this room
    feed_in_pieces(checker, 1, b"".join(data), 1 << 16)
    result = checker.finish({0: 50})
    assert result["bad_records"] == 1 and result["lost"] == 0 and result["deliveries"] == 50


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_controller_on_core_1_still_pins_its_server_to_core_0():
    # In a child process: pinning the test process itself would outlive the test.
    script = ("import os, subprocess, sys\n"
              "from bench.common import pin\n"
              "pin(os.getpid(), 1)\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
              "pin(child.pid, 0)\n"
              "print(sorted(os.sched_getaffinity(0)), sorted(os.sched_getaffinity(child.pid)))\n"
              "child.kill()\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cpus = sorted(os.sched_getaffinity(0))
    assert out.stdout.split("] [") == [f"[{cpus[1]}", f"{cpus[0]}]\n"]


def test_quick_and_tiny_runs_do_not_write_docs():
    assert run.default_out(quick=True, tiny=False) == ROOT / "bench" / "results"
    assert run.default_out(quick=False, tiny=True) == ROOT / "bench" / "results"
    assert run.default_out(quick=False, tiny=False) == ROOT / "docs"


def assert_nothing_lost(name: str, run_result: dict) -> None:
    assert "error" not in run_result, (name, run_result)
    assert run_result["deliveries"] == run_result["expected"] > 0, (name, run_result)
    for key in ("lost", "duplicates", "out_of_order", "bad_records"):
        assert run_result[key] == 0, (name, key, run_result)


def test_tiny_benchmark_side_by_side_with_a_base_checkout_loses_nothing(tmp_path):
    # The worktree itself as the "other" checkout: pychat-base runs the same code with the same flags.
    result = subprocess.run([sys.executable, "-m", "bench.run", "--tiny", "--servers", "pychat",
                             "--base", str(ROOT), "--scenarios", "A,B,LAT,CONNS", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert data["connect_window"] == run.CONNECT_WINDOW
    assert_tiny_scenarios_lose_nothing(data, {"pychat", "pychat-base"})
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| A | pychat-base |" in markdown
    assert "| scenario | server |" in result.stdout
    assert "A: pychat/pychat-base CPU per delivery = " in result.stdout


def assert_tiny_scenarios_lose_nothing(data: dict, servers: set[str], cheap: bool = False) -> None:
    """Every tiny scenario ran for each of SERVERS and lost nothing. CHEAP: a
    server whose CPU time in a tiny scenario may round to 0 (at 10 ms a tick)."""
    scenarios = data["results"]
    assert {"A", "B", "LAT", "CONNS-20"} == set(scenarios)
    for name, per_server in scenarios.items():
        assert set(per_server) == servers
        for server, runs in per_server.items():
            (one,) = runs
            assert_nothing_lost(f"{name} {server}", one)
            if name.startswith("CONNS"):
                assert one["clients"] == 20 and one["fanout_s"] > 0 and one["deliveries"] == 19
            else:
                assert one["latency_ms"]["samples"] > 0
                # CPU time counts in 10 ms ticks: a tiny LAT (200 messages/s for 0.5 s) may use less.
                assert (0 <= one["server_busy_pct"] if cheap or name == "LAT" else 0 < one["server_busy_pct"])
                assert 0 < one["loadgen_busy_pct"]


IRC_DAEMONS = [daemons.NGIRCD.name, daemons.INSPIRCD.name]


@pytest.mark.skipif(not all(daemons.DEBIAN[n].installed() for n in IRC_DAEMONS),
                    reason="ngircd and inspircd are not installed (bash tests/run installs them as root: "
                           "python3 -m bench.daemons --install)")
def test_tiny_benchmark_against_ngircd_and_inspircd_loses_nothing(tmp_path):
    # Each daemon runs with the config generated for it, and the load generator
    # logs in, joins and sends over IRC: every delivery checked by sequence number.
    scratch = tmp_path / "scratch"  # the run's temporary directory: configs and workdirs
    scratch.mkdir()
    result = subprocess.run([sys.executable, "-m", "bench.run", "--tiny", "--servers", ",".join(IRC_DAEMONS),
                             "--scenarios", "A,B,LAT,CONNS", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TMPDIR=str(scratch)))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert_tiny_scenarios_lose_nothing(data, set(IRC_DAEMONS), cheap=True)
    assert data["connect_windows"] == {"inspircd": run.INSPIRCD_CONNECT_WINDOW}
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| B | ngircd |" in markdown and "| B | inspircd |" in markdown
    assert "`inspircd` 1000" in markdown
    # Nothing left behind: the run's directory (configs, logs) is gone and no daemon outlived the run.
    assert list(scratch.iterdir()) == []
    assert running_with(str(scratch)) == [], "a daemon outlived the run"


def running_with(text: str) -> list[int]:
    """The processes whose command line contains TEXT."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass  # gone meanwhile
    return found


def test_ratios_and_targets_set_pychat_against_the_irc_daemons():
    def runs(cpu: float, busy: float) -> list[dict]:
        return [{"cpu_us_per_delivery": cpu, "server_busy_pct": busy}]

    results = {
        "A": {"pychat": runs(0.3, 80), "pychat-irc": runs(0.6, 90), "ngircd": runs(0.5, 20),
              "inspircd": runs(0.5, 20)},
        "B": {"pychat": runs(0.7, 95), "pychat-irc": runs(0.9, 97), "ngircd": runs(1.0, 99),
              "inspircd": runs(0.5, 70)},
        "LAT": {"pychat": runs(0.8, 45), "pychat-irc": [{"error": "server did not start"}], "ngircd": runs(0.5, 30)},
    }
    lines = run.ratios(results)
    assert "A: pychat/ngircd CPU per delivery = 0.60 (pychat -40.0% against ngircd; " \
           "server busy: pychat 80%, ngircd 20%)" in lines
    assert "B: pychat-irc/inspircd CPU per delivery = 1.80 (pychat-irc +80.0% against inspircd; " \
           "server busy: pychat-irc 97%, inspircd 70%)" in lines
    assert "A: pychat-irc/pychat CPU per delivery = 2.00 (pychat-irc +100.0% against pychat; " \
           "server busy: pychat-irc 90%, pychat 80%)" in lines
    assert not any(line.startswith("LAT: pychat-irc") for line in lines)  # it failed: no ratio
    assert run.targets(results) == [
        "B: pychat-irc/ngircd CPU per delivery = 0.90, target below 1.00: met "
        "(server busy: pychat-irc 97%, ngircd 99%)",
        "A: pychat-irc/inspircd CPU per delivery = 1.20, target at most 1.50: met "
        "(server busy: pychat-irc 90%, inspircd 20%)",
        "B: pychat-irc/inspircd CPU per delivery = 1.80, target at most 1.50: missed "
        "(server busy: pychat-irc 97%, inspircd 70%)",
    ]
    results["B"]["pychat-irc"] = [{"error": "pychat has no --irc-port"}]
    assert run.targets(results)[0] == ("B: pychat-irc/ngircd CPU per delivery not measured "
                                       "(pychat-irc failed: pychat has no --irc-port); target below 1.00")
    assert run.targets({"A": {"pychat": runs(0.3, 80)}}) == []  # targets only for servers in the run
    # A run too short for a server's CPU time to reach one clock tick: no ratio, no division by zero.
    results["A"]["inspircd"] = runs(0.0, 0)
    assert not any(line.startswith("A: pychat/inspircd") for line in run.ratios(results))
    assert run.targets(results)[1] == ("A: pychat-irc/inspircd CPU per delivery not measured "
                                       "(inspircd used no measurable CPU time); target at most 1.50")


def fake_pychat(root: Path, body: str) -> Path:
    """A pychat checkout whose pychat_server.py has an IRC listener in its --help
    and otherwise runs BODY (its arguments are in sys.argv)."""
    root.mkdir()
    (root / "pychat_server.py").write_text(
        "import sys\n"
        "if '--help' in sys.argv:\n"
        "    print('usage: pychat_server.py [--port PORT] [--irc-port PORT|off]')\n"
        "    sys.exit(0)\n" + body)
    return root


def test_pychat_irc_is_a_clean_failed_row_for_a_checkout_without_irc(tmp_path):
    # An older checkout (no --irc-port in its --help): no server is started at all.
    root = tmp_path / "old"
    root.mkdir()
    (root / "pychat_server.py").write_text(
        "import sys\nprint('usage: pychat_server.py [--port PORT]')\nsys.exit(0 if '--help' in sys.argv else 1)\n")
    assert not common.speaks_irc(root) and common.speaks_irc(ROOT)
    kind = run.ServerKind("pychat-irc", "irc", root=root)
    result = run.run_once(kind, run.scenarios(quick=False, tiny=True)[0], tmp_path)
    assert result == {"error": f"pychat at {run.checkout(root)} has no --irc-port (no IRC front end)"}
    (row,) = run.table({"A": {"pychat-irc": [result]}})[2:]
    assert row.startswith("| A | pychat-irc | failed: pychat at ") and "\n" not in row


def test_a_server_that_exits_at_start_is_one_failed_row_with_its_last_words(tmp_path):
    # A checkout that claims an IRC listener but exits at once: the row says why,
    # in the server's own words, and says how it was started (line port 0, IRC port P).
    root = fake_pychat(tmp_path / "checkout",
                       "open('argv.txt', 'w').write(' '.join(sys.argv[1:]))\n"
                       "print('starting', file=sys.stderr)\n"
                       "sys.exit('pychat_server.py: error: the IRC | listener failed')\n")
    kind = run.ServerKind("pychat-irc", "irc", root=root)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run.run_once(kind, run.scenarios(quick=False, tiny=True)[0], workdir)
    assert result == {"error": "server did not start: pychat_server.py: error: the IRC / listener failed"}
    argv = (workdir / "argv.txt").read_text().split()
    irc_port = argv[argv.index("--irc-port") + 1]
    assert argv[:4] == ["127.0.0.1", "--port", "0", "--irc-port"] and int(irc_port) > 0
    assert ["--flood-rate", "0", "--max-per-ip", "0"] == argv[5:9]
    (row,) = run.table({"A": {"pychat-irc": [result]}})[2:]
    assert row.count("|") == 12  # the markdown table's 11 columns: the server's "|" cannot break it


def test_the_line_protocol_runs_keep_pychat_off_the_default_irc_port(tmp_path):
    # With an IRC listener (default 6667), the line-protocol kinds turn it off;
    # a checkout without one gets no flag it would refuse.
    irc = run.ServerKind("pychat", "pychat", root=fake_pychat(tmp_path / "new", ""))
    assert irc.command(4321, tmp_path)[2:7] == ["127.0.0.1", "--port", "4321", "--irc-port", "off"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "pychat_server.py").write_text("print('usage: pychat_server.py [--port PORT]')\n")
    line = run.ServerKind("pychat", "pychat", root=old)
    assert "--irc-port" not in line.command(4321, tmp_path)


def test_tiny_attack_measures_every_attack_and_loses_no_reply(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.attack", "--tiny", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "attack.json").read_text())
    rows = {attack: per_server["pychat"] for attack, per_server in data["results"].items()}
    assert list(rows) == ["none", "key-guess", "room-spam", "line-flood", "churn", "password-guess",
                          "password-guess-spread"]
    settings = data["settings"]
    conns = settings["conns"]
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        by = row["bystander"]
        assert by["samples"] > 0 and by["p99_ms"] is not None, (name, by)
        assert (by["over_target"] > 0) == (by["max_ms"] > attack.TARGET_P99_MS), (name, by)
        for key in ("lost", "duplicates", "out_of_order", "bad", "closed"):
            assert by[key] == 0, (name, key, by)
        if name != "none":
            assert row["attackers"]["connections"] >= row["conns"], (name, row["attackers"])
            assert row["attackers"]["lines_sent"] > 0
            assert row["rss_per_conn_kib"] is not None
    # Churn keeps reconnecting: many more connections than loops.
    assert rows["churn"]["attackers"]["connections"] > 2 * conns
    # The spread attack comes from all its addresses at once, the other from one.
    spread, single = rows["password-guess-spread"], rows["password-guess"]
    assert spread["conns"] == settings["spread_conns"] > conns and single["conns"] == conns
    assert spread["attackers"]["addresses"] == spread["addresses"] == settings["spread_addresses"] > 1
    assert single["attackers"]["addresses"] == single["addresses"] == 1
    for row in (single, spread):
        # Real guesses were checked (and were wrong), and the rest were refused.
        answers = row["attackers"]["errors"]
        assert answers.get("! wrong password for victim", 0) >= 1, answers
        assert any(text.endswith("try again in N s") for text in answers), answers
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- attack:begin -->" in markdown and "`python3 -m bench.attack --tiny" in markdown
    assert "| key-guess | pychat |" in markdown and "| password-guess-spread | pychat |" in markdown
    assert "- password-guess, pychat: " in markdown  # what the server answered the guesses

    # Then one attack again into the same place: its row is new, the others are kept.
    again = subprocess.run([sys.executable, "-m", "bench.attack", "--tiny", "--attacks", "password-guess",
                            "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    newer = json.loads((tmp_path / "attack.json").read_text())
    assert list(newer["results"]) == list(rows)
    assert newer["results"]["churn"] == data["results"]["churn"]
    assert newer["results"]["password-guess"] != data["results"]["password-guess"]
    assert [run["attacks"] for run in newer["runs"]] == [[a for a in rows if a != "password-guess"],
                                                         ["password-guess"]]
    assert "Rows from 2 tiny runs" in (tmp_path / "BENCHMARKS.md").read_text()


def test_attackers_keep_reconnecting_when_refused(make_server):
    # Two connections per address: the other three attackers are refused
    # with a "! " line and closed, again and again.
    server = make_server("--max-per-ip", "2")
    result = subprocess.run([sys.executable, "-m", "bench.attack", "--worker", "attackers", "--kind", "key-guess",
                             "--port", str(server.port), "--conns", "5", "--seconds", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    go, report = result.stdout.splitlines()
    assert go == "go"
    stats = json.loads(report)
    assert stats["refused"] > 3
    assert stats["connections"] >= stats["refused"] + 2  # the two accepted, and every refused one
    assert any("too many connections" in text for text in stats["errors"]), stats["errors"]
    assert stats["lines_sent"] > 0


def attack_row(name: str, p99: float) -> dict:
    """A made-up row of bench.attack's results, with every field the report reads."""
    return {"attack": name, "server_cpu_pct": 5.0, "rss_per_conn_kib": None, "verdict": "pass",
            "bystander_priority": "SCHED_FIFO", "bystander_harness_cpu_pct": 1.0,
            "bystander": {"samples": 480, "unanswered": 0, "p50_ms": 0.4, "p99_ms": p99, "max_ms": p99,
                          "lost": 0, "duplicates": 0, "out_of_order": 0, "bad": 0, "closed": 0},
            "attackers": {"lines_sent": 10, "connections": 100, "refused": 0, "connect_failed": 0,
                          "harness_cpu_pct": 2.0, "errors": {}}}


def attack_data(attacks: list[str], servers: dict, date: str, command: str, mode: str = "full",
                settings: dict | None = None) -> dict:
    return {"settings": settings or dataclasses.asdict(attack.Settings()), "target_p99_ms": attack.TARGET_P99_MS,
            "flood_rss_target_kib": attack.FLOOD_RSS_TARGET_KIB, "servers": servers, "date": date,
            "machine": "the machine", "command": command, "mode": mode, "json": "attack.json",
            "results": {a: {s: attack_row(a, 1.0 + i) for s in servers} for i, a in enumerate(attacks)}}


def test_a_run_of_some_attacks_keeps_the_other_rows_of_the_same_kind_of_run():
    older = list(attack.ATTACKS[:5])  # an attack.json from before the password attacks...
    old = attack_data(older, {"pychat": "aaa1111", "pychat-base": "bbb2222"}, "D1", "python3 -m bench.run")
    for key in ("spread_conns", "spread_addresses"):  # ...and before their settings
        del old["settings"][key]
    assert "Latest full run: D1, `python3 -m bench.run`; `pychat` at aaa1111" in attack.section(old)

    def new_run(attacks: list[str], date: str, **kw) -> dict:
        data = attack_data(attacks, {"pychat": "ccc3333"}, date, f"python3 -m bench.attack {date}", **kw)
        data["runs"] = [{"attacks": attacks, "date": date, "command": data["command"], "servers": data["servers"]}]
        return data

    password = ["password-guess", "password-guess-spread"]
    # Another mode, or other settings: nothing is kept.
    for other in (new_run(password, "D2", mode="quick"),
                  new_run(password, "D2", settings={**dataclasses.asdict(attack.Settings()), "seconds": 5.0})):
        assert attack.keep_earlier_rows(other, old) == [] and list(other["results"]) == password

    new = new_run(password, "D2")
    assert attack.keep_earlier_rows(new, old) == older
    assert list(new["results"]) == list(attack.ATTACKS)
    assert new["results"]["key-guess"] == old["results"]["key-guess"]
    assert new["results"]["password-guess"]["pychat"]["bystander"]["p99_ms"] == 1.0
    markdown = attack.section(new)
    assert "Rows from 2 full runs" in markdown
    assert "- none, key-guess, room-spam, line-flood, churn: D1, `python3 -m bench.run`; `pychat` at aaa1111" \
        in markdown
    assert "- password-guess, password-guess-spread: D2, `python3 -m bench.attack D2`; `pychat` at ccc3333" \
        in markdown
    assert "| key-guess | pychat-base |" in markdown and "| password-guess-spread | pychat |" in markdown

    # Again, one attack: three runs, each named with the rows it still holds.
    newer = new_run(["key-guess"], "D3")
    assert attack.keep_earlier_rows(newer, new) == [a for a in attack.ATTACKS if a != "key-guess"]
    assert [run["attacks"] for run in newer["runs"]] == [["none", "room-spam", "line-flood", "churn"], password,
                                                         ["key-guess"]]
    assert newer["results"]["key-guess"] == {"pychat": attack_row("key-guess", 1.0)}


def test_the_load_generator_answers_a_ping_while_it_logs_in():
    """A CONNS setup can outlast an IRC server's idle timeout: like any IRC
    client, the generator answers PING, here one sent before the welcome."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def scripted_server() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        reader = conn.makefile("rb")
        seen.append(reader.readline())  # NICK
        seen.append(reader.readline())  # USER
        conn.sendall(b":srv PING :are-you-there\r\n")
        seen.append(reader.readline())  # the answer, before anything else is sent
        conn.sendall(b":srv 001 u00000 :welcome\r\n")
        seen.append(reader.readline())  # JOIN
        conn.sendall(b":u00000!u@h JOIN #general\r\n:srv 366 u00000 #general :End\r\n")
        conn.sendall(b":u00000!u@h PRIVMSG #general :x\r\n")
        reader.readline()  # until the generator hangs up
        conn.close()

    thread = threading.Thread(target=scripted_server, daemon=True)
    thread.start()
    gen = subprocess.run([sys.executable, "-m", "bench.loadgen", "--protocol", "irc", "--port", str(port),
                          "--mode", "idle", "--rooms", "1", "--members", "1", "--senders", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    thread.join(10)
    listener.close()
    assert seen[:2] == [b"NICK u00000\r\n", b"USER u00000 0 * :u00000\r\n"], (seen, gen.stderr)
    assert seen[2] == b"PONG :are-you-there\r\n"
    assert seen[3] == b"JOIN #general\r\n"


def test_a_ping_during_the_conns_measurement_is_answered_and_is_no_delivery():
    """CONNS-10000's setup outlasts an IRC server's idle timeout, so a PING
    can come with the one message that is measured: the generator answers
    it, and counts only the message."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pongs: list[bytes] = []
    measured_while_pinged: list[bool] = []

    def scripted_server() -> None:
        readers = []
        for i in range(2):  # the generator logs its clients in one after the other
            conn, _ = listener.accept()
            conn.settimeout(10)
            reader = conn.makefile("rb")
            reader.readline(), reader.readline()  # NICK, USER
            conn.sendall(b":srv 001 u%05d :welcome\r\n" % i)
            reader.readline()  # JOIN
            conn.sendall(b":u%05d!u@h JOIN #general\r\n:srv 366 u%05d #general :End\r\n" % (i, i))
            readers.append((conn, reader))
        (first_conn, first), (second, reader) = readers
        # A server that pings its idle clients all along: the generator's
        # wait for quiet before measuring must not count the PINGs.
        deadline = time.monotonic() + 10
        while not select.select([first_conn], [], [], 0.05)[0] and time.monotonic() < deadline:
            second.sendall(b":srv PING :still-there\r\n")
        measured_while_pinged.append(time.monotonic() < deadline)
        said = first.readline()  # the one message, relayed with a PING before it
        assert said.startswith(b"PRIVMSG #general :")
        second.sendall(b":srv PING :idle-check\r\n:u00000!u@h " + said)
        line = reader.readline()
        while line == b"PONG :still-there\r\n":  # the answers to the pings before
            line = reader.readline()
        pongs.append(line)
        reader.readline()  # until the generator hangs up
        for conn, _ in readers:
            conn.close()

    thread = threading.Thread(target=scripted_server, daemon=True)
    thread.start()
    gen = subprocess.run([sys.executable, "-m", "bench.loadgen", "--protocol", "irc", "--port", str(port),
                          "--mode", "conns", "--rooms", "1", "--members", "2", "--senders", "0",
                          "--drain-timeout", "10"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    thread.join(10)
    listener.close()
    assert gen.returncode == 0, gen.stderr
    result = json.loads(gen.stdout)
    assert measured_while_pinged == [True]  # the PINGs did not hold the measurement back
    assert pongs == [b"PONG :idle-check\r\n"]
    assert (result["lost"], result["duplicates"], result["bad_records"]) == (0, 0, 0), result


def test_tiny_benchmark_over_tls_and_websocket_loses_nothing(tmp_path):
    # The load generator's TLS and WebSocket clients, with every delivery checked
    # by sequence number, against pychat's TLS port and its web port.
    result = subprocess.run([sys.executable, "-m", "bench.run", "--tiny", "--servers", "pychat,pychat-irc,pychat-tls,pychat-ws",
                             "--scenarios", "A,LAT", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    for name in ("A", "LAT"):
        per_server = data["results"][name]
        assert set(per_server) == {"pychat", "pychat-irc", "pychat-tls", "pychat-ws"}
        for server, (one,) in per_server.items():
            assert_nothing_lost(f"{name} {server}", one)
            assert one["latency_ms"]["samples"] > 0
    assert "A: TLS adds to the line protocol " in result.stdout
    assert "A: a WebSocket adds to IRC " in result.stdout


def test_websocket_frames_become_lines_for_the_checker():
    from bench import loadgen
    client = loadgen.Client.__new__(loadgen.Client)
    client.wsin = client.wsframe = b""
    lines = [b":u00001!u@h PRIVMSG #r :" + bytes([65 + n]) * 130 for n in range(3)]
    frames = b"".join(b"\x81\x7e" + len(line).to_bytes(2, "big") + line for line in lines)
    # Split inside the second frame's header, then inside the third's payload.
    first = loadgen.ws_measured_lines(client, frames[:len(frames) // 3 + 1])
    second = loadgen.ws_measured_lines(client, frames[len(frames) // 3 + 1:-5])
    third = loadgen.ws_measured_lines(client, frames[-5:])
    assert first + second + third == b"".join(line + b"\r\n" for line in lines)
    assert client.wsin == b""


@pytest.mark.skipif(not daemons.REDIS.installed(), reason="redis-server is not installed (tests/run installs it)")
def test_tiny_cluster_benchmark_spreads_clients_over_two_nodes_and_loses_nothing(tmp_path):
    # Two nodes share one port (SO_REUSEPORT) and one Redis: every delivery is
    # checked, each client is found on one of the nodes, and the probes tell
    # the messages from the other node apart.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = subprocess.run([sys.executable, "-m", "bench.run", "--tiny", "--servers", "pychat,pychat-cluster2",
                             "--scenarios", "A,B,LAT", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TMPDIR=str(scratch)))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    for name in ("A", "B", "LAT"):
        (one,) = data["results"][name]["pychat-cluster2"]
        assert_nothing_lost(f"{name} pychat-cluster2", one)
        assert sum(one["clients_per_node"]) == one["clients"]
        assert len(one["node_cpu_s"]) == 2 and one["redis_cpu_s"] >= 0
        assert one["cross_latency_ms"]["samples"] <= one["latency_ms"]["samples"]
    (b,) = data["results"]["B"]["pychat-cluster2"]
    assert min(b["clients_per_node"]) > 0, "the kernel gave one node every client of B"
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Several nodes, one Redis" in markdown
    assert "| B | pychat-cluster2 |" in markdown
    assert "B: pychat-cluster2/pychat total CPU per delivery = " in markdown
    assert "| B | pychat-cluster2 |" not in markdown.split("## Several nodes")[0]
    # Redis and both nodes are gone with the run's directory.
    assert list(scratch.iterdir()) == []
    assert running_with(str(scratch)) == [], "a node or Redis outlived the run"


def test_socket_owners_tells_which_process_holds_each_connection():
    # Two listeners of this process on one port: the connections are all this
    # process's, found by their remote ports; a pid that holds none finds none.
    with socket.create_server(("127.0.0.1", 0), reuse_port=True) as first:
        port = first.getsockname()[1]
        with socket.create_server(("127.0.0.1", port), reuse_port=True) as second:
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
            accepted = []
            for listener in (first, second):
                listener.setblocking(False)
                while True:
                    try:
                        accepted.append(listener.accept()[0])
                    except BlockingIOError:
                        break
            try:
                assert len(accepted) == 6
                owners = common.socket_owners(port, [os.getppid(), os.getpid()])
                assert {c.getsockname()[1]: 1 for c in clients} == owners
                listening = common.socket_owners(port, [os.getpid()], listening=True)
                assert len(listening) == 2 and set(listening.values()) == {0}
            finally:
                for s in clients + accepted:
                    s.close()
