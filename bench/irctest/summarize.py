"""Counts and failures from irctest's JUnit XML (pytest --junitxml).

    python3 summarize.py LABEL RESULT.xml [--failures FILE]

Prints one line, ``LABEL: P passed, F failed, S skipped (N tests; ...)``,
and with ``--failures`` writes every failed test grouped by test file (the
area), with the first line of its failure message. Counting follows the
issue's table: a test that errors in setup or teardown counts as failed,
and an expected failure (irctest marks some tests xfail for some daemons)
counts as skipped, so passed + failed + skipped is the number of tests
selected. Standard library only: it runs under any Python 3.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

# Worse outcomes win when pytest writes one test twice (a test that passes
# and then errors in teardown appears as two testcase elements).
RANK = {"passed": 0, "skipped": 1, "xfailed": 2, "failed": 3, "error": 4}


def outcomes(xml_path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(file, test) -> (outcome, first line of the message)."""
    result: dict[tuple[str, str], tuple[str, str]] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        module = case.get("classname", "")
        area = module.replace("irctest.server_tests.", "").rsplit(".", 1)[0]
        key = (area, f"{module.rsplit('.', 1)[-1]}::{case.get('name', '')}")
        outcome, message = "passed", ""
        for child in case:
            if child.tag == "failure":
                outcome = "failed"
            elif child.tag == "error":
                outcome = "error"
            elif child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
            else:
                continue
            message = _gist(child.get("message") or child.text or "", child.text or "")
            break
        if key not in result or RANK[outcome] > RANK[result[key][0]]:
            result[key] = (outcome, message)
    return result


def _gist(message: str, report: str) -> str:
    """The first line of a failure message; for a server that stopped, also
    the last line of the report's error (the end of the server's log: the
    reason, e.g. a refused flag)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    gist = lines[0] if lines else ""
    if "ProcessStopped" in gist:
        errors = [line[1:].strip() for line in report.splitlines() if line.startswith("E ")]
        if errors:
            gist += " ... " + errors[-1]
    return gist[:300]


def summary_line(label: str, results: dict[tuple[str, str], tuple[str, str]]) -> str:
    count: dict[str, int] = defaultdict(int)
    for outcome, _ in results.values():
        count[outcome] += 1
    passed = count["passed"]
    failed = count["failed"] + count["error"]
    skipped = count["skipped"] + count["xfailed"]
    return (f"{label}: {passed} passed, {failed} failed, {skipped} skipped "
            f"({len(results)} tests; {count['error']} of the failures are errors, "
            f"{count['xfailed']} of the skips are expected failures)")


def failure_report(results: dict[tuple[str, str], tuple[str, str]]) -> str:
    by_area: dict[str, list[str]] = defaultdict(list)
    for (area, test), (outcome, message) in sorted(results.items()):
        if outcome in ("failed", "error"):
            by_area[area].append(f"  {test}  [{outcome}] {message}")
    lines = []
    for area, tests in by_area.items():
        lines.append(f"{area} ({len(tests)})")
        lines.extend(tests)
    return "\n".join(lines) + ("\n" if lines else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("label")
    p.add_argument("xml", type=Path)
    p.add_argument("--failures", type=Path, help="write the failed tests, by area, here")
    args = p.parse_args(argv)
    if not args.xml.exists():
        print(f"{args.label}: no results ({args.xml} is missing: pytest did not run)")
        return 1
    results = outcomes(args.xml)
    print(summary_line(args.label, results))
    if args.failures:
        args.failures.write_text(failure_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
