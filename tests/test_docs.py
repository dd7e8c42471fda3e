"""/help, README and the command table must never disagree."""

import re
from pathlib import Path

from pychat.protocols.line.commands import COMMANDS, help_lines, lookup

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_rows():
    block = README.split("<!-- commands:start -->")[1].split("<!-- commands:end -->")[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        usage = cells[0].strip("`")
        aliases = tuple(a.strip("` ").lstrip("/") for a in cells[1].split(",") if a.strip())
        rows.append((usage, aliases, cells[2]))
    return rows


def test_readme_table_matches_the_command_table():
    expected = [(c.usage, c.aliases, c.summary) for c in COMMANDS]
    assert readme_rows() == expected


def test_help_lists_every_command_from_the_table():
    text = "\n".join(help_lines())
    for cmd in COMMANDS:
        assert re.search(rf"^\s+{re.escape(cmd.usage)}\s+{re.escape(cmd.summary)}$", text, re.M)


def test_every_alias_resolves_to_its_command():
    for cmd in COMMANDS:
        for word in (cmd.name, *cmd.aliases):
            assert lookup(word) is cmd
            assert lookup("/" + word.upper()) is cmd


def test_readme_flags_match_the_parser():
    from pychat.server.config import server_parser
    flags = {a.option_strings[0] for a in server_parser()._actions
             if a.option_strings and a.option_strings[0] not in ("-h", "--version")}
    documented = set(re.findall(r"^\| `(--[a-z-]+)", README, re.M))
    assert flags == documented
