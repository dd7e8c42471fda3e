"""A real `nc` session: pipe a short script, read the answers."""

import re
import shutil
import subprocess

import pytest

from helpers import EVENT

NC = shutil.which("nc")


@pytest.fixture
def nc():
    if NC is None:
        pytest.fail("nc is not installed (apt-get install netcat-openbsd); .ci/run installs it")
    return NC


def test_scripted_nc_session(server, nc):
    watcher = server.client("bob")
    script = "alice\nhello from nc\n/me waves\n/users\n/dm bob psst\n/nosuch\n/quit done\n"
    result = subprocess.run([nc, "-N", "127.0.0.1", str(server.port)], input=script.encode(),
                            capture_output=True, timeout=20)
    out = result.stdout.decode()
    lines = out.split("\r\n")
    assert lines[-1] == "", "every line ends in CRLF"
    assert "* hello alice! /help lists the commands" in lines
    assert "*   alice in #general" in lines and "*   bob in #general" in lines
    assert any(re.match(EVENT + r"\(dm to bob\) alice: psst$", line) for line in lines)
    assert "! unknown command /nosuch; /help lists the commands" in lines
    assert "* goodbye, alice!" in lines
    watcher.expect(EVENT + r"#general alice: hello from nc$")
    watcher.expect(EVENT + r"#general \* alice waves$")
    watcher.expect(EVENT + r"\(dm\) alice: psst$")
    watcher.expect(EVENT + r"#general <-- alice has quit \(done\)$")


def test_nc_half_close_gets_its_answers(server, nc):
    """`printf 'alice\\n/users\\n' | nc -N` prints the answer: the server answers before closing."""
    result = subprocess.run([nc, "-N", "127.0.0.1", str(server.port)], input=b"carol\n/users",
                            capture_output=True, timeout=20)
    out = result.stdout.decode()
    assert "* 1 user online:" in out
    assert "*   carol in #general" in out
