"""The benchmark's code runs: a tiny scenario against pychat (timing is not tested)."""

import json
import subprocess
import sys

from helpers import ROOT


def test_tiny_benchmark_runs_and_loses_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.run", "--tiny", "--servers", "pychat",
                             "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    scenarios = data["results"]
    assert {"A", "B", "LAT", "CONNS-20"} <= set(scenarios)
    for name, per_server in scenarios.items():
        (run,) = per_server["pychat"]
        assert "error" not in run, (name, run)
        if name.startswith("CONNS"):
            assert run["clients"] == 20 and run["fanout_s"] > 0
        else:
            assert run["deliveries"] > 0 and run["lost"] == 0, (name, run)
            assert run["latency_ms"]["samples"] > 0
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| A | pychat |" in markdown
    assert "| scenario | server |" in result.stdout
