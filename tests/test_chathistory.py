"""CHATHISTORY over real sockets: a room's stored messages by msgid, the same ids
live and replayed, only for members, and nothing from another room."""

from __future__ import annotations

import re

import pytest

from helpers import IrcClient, parse_irc

CAPS = "server-time message-tags batch"


def tagged_user(server, nick: str) -> IrcClient:
    irc = IrcClient(server.irc_port)
    irc.send(f"CAP REQ :{CAPS}")
    irc.send(f"NICK {nick}")
    irc.send(f"USER {nick} 0 * :{nick}")
    irc.expect(r" CAP \S+ ACK ")
    irc.send("CAP END")
    irc.welcome()
    return irc


def msgid(line: str) -> str:
    return re.match(r"^@\S*msgid=([^; ]+)", line).group(1)


def texts_and_ids(lines: list[str]) -> list[tuple[str, str]]:
    return [(parse_irc(line).params[-1], msgid(line)) for line in lines if " PRIVMSG " in line]


def history(irc: IrcClient, request: str) -> list[str]:
    """The lines of the chathistory batch that answers REQUEST."""
    irc.send(request)
    lines = irc.lines_until(r" BATCH -\S+$")
    start = next(i for i, line in enumerate(lines) if re.search(r" BATCH \+\S+ chathistory ", line))
    return lines[start + 1:-1]


@pytest.fixture
def den(server):
    """An IRC reader in #den with 30 messages from a line user, and their live msgids."""
    reader = tagged_user(server, "reader")
    reader.send("JOIN #den")
    reader.expect(r" 366 reader #den ")
    talker = server.client("talker")
    talker.send("/join den")
    talker.sync()
    live = []
    for n in range(1, 31):
        talker.send(f"m{n}")
    for n in range(1, 31):
        line = reader.expect(rf"PRIVMSG #den :m{n}$")
        live.append((f"m{n}", msgid(line)))
    return reader, talker, live


def test_live_msgids_are_the_stored_ones_and_latest_returns_them(den):
    reader, _, live = den
    assert all(ident.isdigit() for _, ident in live)
    assert texts_and_ids(history(reader, "CHATHISTORY LATEST #den * 5")) == live[-5:]


def test_before_pages_back_from_a_msgid(den):
    reader, _, live = den
    oldest_seen = live[25][1]  # m26
    assert texts_and_ids(history(reader, f"CHATHISTORY BEFORE #den msgid={oldest_seen} 10")) == live[15:25]
    assert texts_and_ids(history(reader, f"CHATHISTORY BEFORE #den msgid={live[2][1]} 10")) == live[:2]
    assert history(reader, f"CHATHISTORY BEFORE #den msgid={live[0][1]} 10") == []


def test_after_catches_up_from_a_msgid(den):
    reader, _, live = den
    assert texts_and_ids(history(reader, f"CHATHISTORY AFTER #den msgid={live[9][1]} 3")) == live[10:13]
    assert history(reader, f"CHATHISTORY AFTER #den msgid={live[-1][1]} 10") == []


def test_replay_on_join_carries_the_same_msgids(den, server):
    _, _, live = den
    late = tagged_user(server, "late")
    late.send("JOIN #den")
    replayed = late.lines_until(r" BATCH -\S+$")
    assert texts_and_ids(replayed) == live[-20:]  # the default --history-lines


def test_only_members_read_a_room_and_an_id_from_another_room_gives_nothing(den, server):
    reader, talker, live = den
    outsider = tagged_user(server, "outsider")
    outsider.send("CHATHISTORY LATEST #den * 5")
    fail = outsider.expect(r" FAIL CHATHISTORY ")
    assert "INVALID_TARGET" in fail and "m30" not in " ".join(outsider.sync())
    outsider.send("JOIN #elsewhere")
    outsider.expect(r" 366 outsider #elsewhere ")
    assert history(outsider, f"CHATHISTORY BEFORE #elsewhere msgid={live[-1][1]} 10") == []
    assert history(outsider, f"CHATHISTORY AFTER #elsewhere msgid={live[0][1]} 10") == []


@pytest.mark.parametrize("request_line", ["CHATHISTORY BEFORE #den", "CHATHISTORY AROUND #den msgid=1 5",
                                          "CHATHISTORY BEFORE #den timestamp=2026-01-01T00:00:00.000Z 5",
                                          "CHATHISTORY BEFORE #den msgid=abc 5",
                                          "CHATHISTORY BEFORE #den msgid=1 many"])
def test_bad_requests_are_a_fail_line(den, request_line):
    reader, _, _ = den
    reader.send(request_line)
    assert "INVALID_PARAMS" in reader.expect(r" FAIL CHATHISTORY ")


def test_direct_messages_have_msgids_of_their_own_kind(den, server):
    reader, talker, live = den
    talker.send("/dm reader psst")
    line = reader.expect(r" PRIVMSG reader :psst$")
    assert msgid(line).startswith("x") and msgid(line) not in {ident for _, ident in live}


@pytest.mark.parametrize("request_line", ["CHATHISTORY BEFORE #den msgid=\u00b2 5",
                                          "CHATHISTORY BEFORE #den msgid=1 \u00b2",
                                          "CHATHISTORY AFTER #den msgid=99999999999999999999999 5",
                                          "CHATHISTORY BEFORE #den msgid=9223372036854775808 5"])
def test_numbers_that_are_not_ascii_or_too_large_are_a_fail_line(den, server, request_line):
    reader, _, _ = den
    reader.send(request_line)
    assert "INVALID_PARAMS" in reader.expect(r" FAIL CHATHISTORY ")
    assert "internal error" not in server.log()
