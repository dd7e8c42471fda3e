"""Accounts and moderation through the IRC front end (PROTOCOL.md sections 9 and 10).

A real server subprocess; IRC users are raw-socket clients (helpers.IrcClient),
line users raw LineClients, in the same rooms. Accounts registered over the
line protocol log in over IRC with SASL PLAIN or PASS. Moderation by an IRC
operator reaches the IRC user as the IRC message and the line user as its
event line, and the other way round; refusals are the IRC numerics, and the
others in the room see nothing of them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import pytest

from helpers import EVENT, IrcClient, IrcLine, LineClient, ServerProcess, parse_irc, wait_for

PASSWORD = "alice-pass-1"


# -- helpers ---------------------------------------------------------------------------

def register_account(server: ServerProcess, name: str = "alice", password: str = PASSWORD) -> None:
    """NAME registers over the line protocol and leaves: an account waiting for a login."""
    client = server.client(name)
    assert client.password_command(f"/register {password}")[-1].startswith(f"* the name {name} is yours")
    client.send("/quit")
    client.wait_closed()


def ask_for_sasl(server: ServerProcess, nick: str) -> IrcClient:
    """A new IRC connection that negotiated the sasl capability and sent NICK and USER."""
    irc = IrcClient(server.irc_port)
    irc.send("CAP LS 302")
    offered = irc.expect_msg("CAP")
    assert offered.params[1] == "LS" and "sasl=PLAIN" in offered.params[-1].split()
    irc.send(f"NICK {nick}")
    irc.send(f"USER u 0 * :{nick}")
    irc.send("CAP REQ :sasl")
    assert irc.expect_msg("CAP").params[1:] == ["ACK", "sasl"]
    return irc


def connect_with_pass(server: ServerProcess, nick: str, password: str,
                      timeout: float = 10.0) -> tuple[IrcClient, IrcLine]:
    """PASS, NICK and USER on a new connection: the client and its first answer
    (001, or 464 and the connection closed). A wrong PASS closes the connection,
    so while the answer is that the password budget is spent, a new connection
    tries again (a refused check costs nothing) until the deadline."""
    def attempt() -> tuple[IrcClient, IrcLine] | None:
        irc = IrcClient(server.irc_port)
        irc.send(f"PASS {password}")
        irc.send(f"NICK {nick}")
        irc.send("USER u 0 * :u")
        first = parse_irc(irc.expect(r"^:\S+ (001|464) "))
        if first.command == "464" and re.search(r"try again in \d+", first.params[-1]):
            irc.close()
            return None
        return irc, first

    return wait_for(attempt, timeout=timeout, interval=0.05, what="a password check within the budget")


def event(text: str, where: str = "#den") -> str:
    return EVENT + re.escape(f"{where} {text}") + "$"


def sees(client: LineClient, text: str, where: str = "#den") -> str:
    """Wait for the line user's event line in WHERE saying TEXT."""
    return client.expect(event(text, where))


def numeric(irc: IrcClient, line: str, code: str) -> IrcLine:
    """Send LINE; its answer must be the one numeric CODE (and nothing else before a sync)."""
    irc.send(line)
    answer = [parse_irc(got) for got in irc.sync()]
    assert [msg.command for msg in answer] == [code], answer
    return answer[0]


# -- accounts: SASL PLAIN, PASS, NICK ------------------------------------------------------------

@pytest.mark.parametrize("nick", ["alice", "someone"])
def test_sasl_plain_logs_in_to_an_account_registered_over_the_line_protocol(server, nick):
    register_account(server)
    irc = ask_for_sasl(server, nick)
    answer = irc.sasl_plain("alice", PASSWORD)
    assert [msg.command for msg in answer] == ["900", "903"]
    assert answer[0].params[2:] == ["alice", "You are now logged in as alice"]
    irc.send("CAP END")
    assert irc.welcome().params[0] == "alice"  # the account's name, not the nick asked for
    irc.send("WHOIS alice")
    assert irc.expect_msg("330").params[1:3] == ["alice", "alice"]  # RPL_WHOISACCOUNT


def test_sasl_plain_with_a_wrong_password_gets_904_and_no_account(server):
    register_account(server)
    irc = ask_for_sasl(server, "alice")
    answer = irc.sasl_plain("alice", "wrong-password")
    assert [msg.command for msg in answer] == ["904"]
    assert answer[0].params[-1] == "SASL authentication failed: wrong password for alice"
    irc.send("CAP END")  # registration goes on without the account: the nick is not hers
    assert irc.expect_msg("433").params[1:] == ["alice", "Nickname is registered: log in with SASL or PASS"]
    assert not any(parse_irc(line).command == "001" for line in irc.sync())


@pytest.mark.parametrize("nick", ["alice", "ALICE"])
def test_nick_of_a_registered_name_without_logging_in_gets_433(server, nick):
    register_account(server)
    irc = IrcClient(server.irc_port)
    irc.send(f"NICK {nick}")
    irc.send("USER u 0 * :u")
    assert irc.expect_msg("433").params[1:] == [nick, "Nickname is registered: log in with SASL or PASS"]
    irc.send("NICK carl")  # another nick completes the registration
    assert irc.welcome().params[0] == "carl"


def test_pass_at_registration_logs_in(server):
    register_account(server)
    irc, first = connect_with_pass(server, "alice", PASSWORD)
    assert first.command == "001" and first.params[0] == "alice"


def test_pass_with_a_wrong_password_gets_464_and_the_connection_closes(server):
    register_account(server)
    irc, first = connect_with_pass(server, "alice", "wrong-password")
    assert first.command == "464" and first.params[-1] == "wrong password for alice"
    assert irc.wait_closed()[-1] == "ERROR :Closing link: wrong password"


# -- rooms shared by an IRC user and a line user --------------------------------------------------

class Den(NamedTuple):
    """#den with ivy (IRC) and leo (line protocol) in it; carl (line) is in #general."""

    server: ServerProcess
    ivy: IrcClient
    leo: LineClient
    carl: LineClient

    def settle(self) -> None:
        """Everyone has read what happened so far."""
        self.ivy.sync()
        self.leo.sync()
        self.carl.sync()


@pytest.fixture
def ivy_runs_den(server) -> Den:
    """ivy created #den over IRC (so she is its operator); leo joined it."""
    ivy = IrcClient(server.irc_port)
    ivy.register("ivy")
    ivy.send("JOIN #den")
    ivy.expect_msg("366")
    leo, carl = server.client("leo"), server.client("carl")
    leo.send("/join den")
    assert ivy.expect_msg("JOIN").source.startswith("leo!")
    den = Den(server, ivy, leo, carl)
    den.settle()
    return den


@pytest.fixture
def leo_runs_den(server) -> Den:
    """leo created #den over the line protocol (so he is its operator); ivy joined it."""
    leo, carl = server.client("leo"), server.client("carl")
    leo.send("/join den")
    ivy = IrcClient(server.irc_port)
    ivy.register("ivy")
    ivy.send("JOIN #den")
    ivy.expect_msg("366")
    sees(leo, "--> ivy has joined")
    den = Den(server, ivy, leo, carl)
    den.settle()
    return den


# -- an IRC operator's changes: the IRC message for ivy, the event line for leo ---------------------

@pytest.mark.parametrize("before, change, told", [
    (None, "+o leo", "-- ivy made leo an operator"),
    (None, "+v leo", "-- ivy gave leo a voice"),
    (None, "+b leo!*@*", "-- ivy banned leo!*@*"),
    (None, "+i", "-- ivy made the room invite-only"),
    (None, "+m", "-- ivy made the room moderated: only operators and voiced members speak"),
    ("-t", "+t", "-- ivy locked the topic to operators"),
])
def test_irc_mode_change_is_seen_by_both_protocols(ivy_runs_den, before, change, told):
    den = ivy_runs_den
    if before:
        den.ivy.send(f"MODE #den {before}")
        den.settle()
    den.ivy.send(f"MODE #den {change}")
    mode = den.ivy.expect_msg("MODE")
    assert mode.source.startswith("ivy!") and mode.params == ["#den", *change.split()]
    sees(den.leo, told)


def test_irc_ban_keeps_the_line_user_out_once_gone(ivy_runs_den):
    den = ivy_runs_den
    den.ivy.send("MODE #den +b leo")
    sees(den.leo, "-- ivy banned leo!*@*")
    den.leo.send("/leave")
    assert den.ivy.expect_msg("PART").source.startswith("leo!")
    den.leo.sync()
    den.leo.send("/join den")
    assert den.leo.sync() == ["! you are banned from #den"]


def test_irc_kick_is_seen_by_both_protocols(ivy_runs_den):
    den = ivy_runs_den
    den.ivy.send("KICK #den leo :calm down")
    kick = den.ivy.expect_msg("KICK")
    assert kick.source.startswith("ivy!") and kick.params == ["#den", "leo", "calm down"]
    sees(den.leo, "<-- leo was kicked by ivy (calm down)")
    den.ivy.send("NAMES #den")
    assert den.ivy.expect_msg("353").params[-1] == "@ivy"


def test_irc_topic_is_seen_by_both_protocols(ivy_runs_den):
    den = ivy_runs_den
    den.ivy.send("TOPIC #den :what the den is for")
    topic = den.ivy.expect_msg("TOPIC")
    assert topic.source.startswith("ivy!") and topic.params == ["#den", "what the den is for"]
    sees(den.leo, "-- ivy set the topic: what the den is for")


def test_irc_invite_lets_the_line_user_into_an_invite_only_room(ivy_runs_den):
    den = ivy_runs_den
    den.ivy.send("MODE #den +i")
    den.leo.send("/leave")
    den.settle()
    den.leo.send("/join den")
    assert den.leo.sync() == ["! #den is invite-only: an operator must /invite you"]
    den.ivy.send("INVITE leo #den")
    assert den.ivy.expect_msg("341").params == ["ivy", "leo", "#den"]  # RPL_INVITING
    assert den.leo.read_line() == "* ivy invites you to #den: /join den"
    den.leo.send("/join den")
    assert den.leo.expect(r"^[*!] ") == "* you joined #den: 2 users here"
    assert den.ivy.expect_msg("JOIN").source.startswith("leo!")


# -- a line operator's changes: the event line for leo, the IRC message for ivy ----------------------

@pytest.mark.parametrize("typed, command, params, told", [
    ("/topic what the den is for", "TOPIC", ["#den", "what the den is for"],
     "-- leo set the topic: what the den is for"),
    ("/mode +m", "MODE", ["#den", "+m"], "-- leo made the room moderated: only operators and voiced members speak"),
    ("/mode +i -t", "MODE", ["#den", "+i-t"], "-- leo made the room invite-only; let everyone set the topic"),
    ("/op ivy", "MODE", ["#den", "+o", "ivy"], "-- leo made ivy an operator"),
    ("/voice ivy", "MODE", ["#den", "+v", "ivy"], "-- leo gave ivy a voice"),
    ("/mute ivy 10m", "MODE", ["#den", "+b", "m:ivy!*@*"], "-- leo muted ivy!*@* for 10 min"),
    ("/kick ivy calm down", "KICK", ["#den", "ivy", "calm down"], "<-- ivy was kicked by leo (calm down)"),
])
def test_line_operator_change_is_seen_by_both_protocols(leo_runs_den, typed, command, params, told):
    den = leo_runs_den
    den.leo.send(typed)
    sees(den.leo, told)
    msg = den.ivy.expect_msg(command)
    assert msg.source.startswith("leo!") and msg.params == params


def test_line_ban_is_a_mode_and_a_kick_for_the_irc_user(leo_runs_den):
    den = leo_runs_den
    den.leo.send("/ban ivy")
    mode = den.ivy.expect_msg("MODE")
    assert mode.params == ["#den", "+b", "ivy!*@*"]
    assert den.ivy.expect_msg("KICK").params == ["#den", "ivy", "banned"]


# -- refusals as numerics; the others see nothing ----------------------------------------------------

@pytest.mark.parametrize("line", ["MODE #den +m", "KICK #den leo", "TOPIC #den :mine now", "MODE #den +o ivy"])
def test_482_for_an_irc_user_who_is_not_an_operator(leo_runs_den, line):
    den = leo_runs_den
    refusal = numeric(den.ivy, line, "482")
    assert refusal.params == ["ivy", "#den", "You're not channel operator"]
    assert den.leo.sync() == []
    den.leo.send("/roominfo")
    assert den.leo.sync()[:2] == ["* #den: 2 users: @leo, ivy", "* modes: topic locked"]


@pytest.mark.parametrize("line", ["KICK #elsewhere carl", "TOPIC #elsewhere :mine now", "MODE #elsewhere +m"])
def test_442_for_an_irc_user_not_in_the_room(ivy_runs_den, line):
    den = ivy_runs_den
    den.carl.send("/join elsewhere")
    den.carl.sync()
    refusal = numeric(den.ivy, line, "442")
    assert refusal.params == ["ivy", "#elsewhere", "You're not on that channel"]
    assert den.carl.sync() == []


def test_441_for_a_kick_of_someone_not_in_the_room(ivy_runs_den):
    den = ivy_runs_den
    refusal = numeric(den.ivy, "KICK #den carl", "441")  # carl is online, in #general
    assert refusal.params == ["ivy", "carl", "#den", "They aren't on that channel"]
    assert den.carl.sync() == [] and den.leo.sync() == []


def test_404_for_an_unvoiced_irc_user_in_a_moderated_room(leo_runs_den):
    den = leo_runs_den
    den.leo.send("/mode +m")
    den.settle()
    refusal = numeric(den.ivy, "PRIVMSG #den :can anyone hear me", "404")
    assert refusal.params == ["ivy", "#den", "Cannot send to channel: #den is moderated: "
                                             "only operators and voiced members speak"]
    assert den.leo.sync() == []


def test_404_for_a_muted_irc_user(leo_runs_den):
    den = leo_runs_den
    den.leo.send("/mute ivy")
    den.settle()
    refusal = numeric(den.ivy, "PRIVMSG #den :can anyone hear me", "404")
    assert refusal.params == ["ivy", "#den", "Cannot send to channel: you are muted in #den"]
    assert den.leo.sync() == []


def test_473_for_joining_an_invite_only_room(leo_runs_den):
    den = leo_runs_den
    den.ivy.send("PART #den")
    den.leo.send("/mode +i")
    den.settle()
    refusal = numeric(den.ivy, "JOIN #den", "473")
    assert refusal.params == ["ivy", "#den", "Cannot join channel (+i)"]
    assert den.leo.sync() == []


def test_474_for_joining_a_room_one_is_banned_from(leo_runs_den):
    den = leo_runs_den
    den.leo.send("/ban ivy")  # a line /ban also kicks
    den.settle()
    refusal = numeric(den.ivy, "JOIN #den", "474")
    assert refusal.params == ["ivy", "#den", "Cannot join channel (+b)"]
    assert den.leo.sync() == []


# -- server operators over IRC ------------------------------------------------------------------------

def test_wallops_from_an_irc_server_operator_reaches_line_users(make_server):
    server = make_server("--oper", "admin")
    register_account(server, "admin", "admin-pass-1")
    carl = server.client("carl")
    irc = ask_for_sasl(server, "admin")
    assert irc.sasl_plain("admin", "admin-pass-1")[-1].command == "903"
    irc.send("CAP END")
    irc.welcome()
    irc.send("WALLOPS :restart at noon")
    sees(carl, "admin: restart at noon", "(wall)")


def test_kill_from_an_irc_user_who_is_not_a_server_operator_gets_481(ivy_runs_den):
    den = ivy_runs_den
    refusal = numeric(den.ivy, "KILL leo :go away", "481")
    assert refusal.params == ["ivy", "Permission Denied- You're not an IRC operator"]
    assert den.leo.sync() == []
