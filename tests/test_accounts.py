"""Accounts and moderation over the line protocol (PROTOCOL.md sections 4 and 10).

A real server subprocess and raw socket clients. Each command is shown once
doing what it says (and the other people in the room seeing it) and once
refused: the refused user gets exactly one `! ` line that says why, the others
see nothing, and the state the command would have changed is as it was.

Password checks are budgeted per address and server-wide (pychat.core.limits);
LineClient.password_command sends a password command again while the answer
is "try again in N s". Tests that need more than two checks from 127.0.0.1
start the server with --max-per-ip 0, which turns the per-address budgets off.
"""

from __future__ import annotations

import re
import signal
from typing import NamedTuple

import pytest

from helpers import EVENT, TRY_LATER, LineClient, ServerProcess, connects, wait_for

PASSWORD = "alice-pass-1"
NEW_PASSWORD = "alice-pass-2"
PROMPT = "* what is your name? (press Enter for a guest name)"
ASKED = "* alice is a registered name: type its password (or press Enter to choose another name)"


# -- helpers ---------------------------------------------------------------------------

def said(client: LineClient, line: str) -> list[str]:
    """What CLIENT got in answer to LINE (and anything before it)."""
    client.send(line)
    return client.sync()


def refused(actor: LineClient, line: str, error: str, *others: LineClient) -> None:
    """LINE from ACTOR gets exactly the one line `! ERROR`; OTHERS see nothing of it."""
    assert said(actor, line) == [f"! {error}"]
    for other in others:
        assert other.sync() == []


def event(text: str, where: str = "#den") -> str:
    """The pattern of an event line in WHERE saying TEXT."""
    return EVENT + re.escape(f"{where} {text}") + "$"


def told(actor: LineClient, line: str, text: str, *others: LineClient, where: str = "#den") -> None:
    """LINE from ACTOR is told to its room as the event TEXT: ACTOR's answer
    holds that event line, and each of OTHERS receives it."""
    answer = said(actor, line)
    assert any(re.match(event(text, where), got) for got in answer), answer
    for other in others:
        sees(other, text, where)


def speaks(speaker: LineClient, text: str, *hearers: LineClient) -> None:
    """SPEAKER's plain line TEXT goes through (no error) and each of HEARERS gets it."""
    assert said(speaker, text) == []  # the line protocol does not echo one's own messages
    for hearer in hearers:
        sees(hearer, f"{speaker.name}: {text}")


def sees(client: LineClient, text: str, where: str = "#den") -> str:
    """Wait for the event line in WHERE saying TEXT."""
    return client.expect(event(text, where))


def register(client: LineClient, password: str = PASSWORD) -> None:
    """Make CLIENT's name an account."""
    answer = client.password_command(f"/register {password}")
    assert answer == [f"* the name {client.name} is yours: from now on it needs your password "
                      f"(/login {client.name} PASSWORD)"]


def people(server: ServerProcess, *names: str) -> list[LineClient]:
    """Clients with NAMES in #general, each having read the others' arrivals."""
    clients = [server.client(name) for name in names]
    for client in clients:
        client.sync()
    return clients


def leave_server(client: LineClient) -> None:
    client.send("/quit")
    client.wait_closed()


def at_prompt(client: LineClient, *answers: str, timeout: float = 10.0) -> str:
    """Give ANSWERS at the name prompt (a registered name, then its password; or
    /login NAME PASSWORD): the first line after the last ('* hello ...' or
    '! ...'). While the server says that the password budget is spent, they
    are given again (a refused check costs nothing) until the deadline."""
    def attempt() -> str | None:
        for answer in answers[:-1]:
            client.send(answer)
            assert client.read_line() == ASKED
        client.send(answers[-1])
        first = client.read_line()
        if TRY_LATER.search(first):
            assert client.read_line() == PROMPT
            return None
        return first

    return wait_for(attempt, timeout=timeout, interval=0.05, what="a password check within the budget")


def roominfo(client: LineClient) -> str:
    """The members line of CLIENT's room: '#den: 2 users: @alice, bob'."""
    lines = said(client, "/roominfo")
    return next(line[2:] for line in lines if line.startswith("* #"))


def modes(client: LineClient) -> str:
    """The answer to /mode."""
    answer = said(client, "/mode")
    assert len(answer) == 1, answer
    return answer[0]


def bans(client: LineClient) -> list[str]:
    return said(client, "/bans")


def joins(client: LineClient, room: str = "den") -> list[str]:
    """Try to join ROOM: the answer."""
    return said(client, f"/join {room}")


# -- fixtures ---------------------------------------------------------------------------

class Den(NamedTuple):
    """#den, created by alice (its operator), with bob in it; carol is in #general."""

    server: ServerProcess
    alice: LineClient
    bob: LineClient
    carol: LineClient

    def setup(self, *lines: str) -> None:
        """alice types LINES; then everyone has read what they caused."""
        for line in lines:
            said(self.alice, line)
        for client in (self.bob, self.carol):
            client.sync()


def open_den(server: ServerProcess, alice: LineClient | None = None) -> Den:
    alice = alice or server.client("alice")
    bob, carol = server.client("bob"), server.client("carol")
    assert said(alice, "/join den")[-2:] == ["* you joined #den: 1 user here", "* no messages in #den yet"]
    said(bob, "/join den")
    sees(alice, "--> bob has joined")
    for client in (alice, bob, carol):
        client.sync()
    return Den(server, alice, bob, carol)


@pytest.fixture
def den(server) -> Den:
    return open_den(server)


class Opers(NamedTuple):
    """A server run with --oper admin: admin logged in, bob and carol in #general."""

    server: ServerProcess
    admin: LineClient
    bob: LineClient
    carol: LineClient


@pytest.fixture
def opers(make_server) -> Opers:
    server = make_server("--oper", "admin")
    admin = server.client("admin")
    register(admin, "admin-pass-1")
    bob, carol = server.client("bob"), server.client("carol")
    for client in (admin, bob, carol):
        client.sync()
    return Opers(server, admin, bob, carol)


@pytest.fixture
def alice_registered(server) -> ServerProcess:
    """alice registered an account and left: her name waits for its password."""
    alice = server.client("alice")
    register(alice)
    leave_server(alice)
    return server


# -- /register ---------------------------------------------------------------------------

def test_register_makes_the_name_ask_for_its_password(alice_registered):
    newcomer = LineClient(alice_registered.port)
    newcomer.give_name("alice")
    assert newcomer.read_line() == ASKED


def test_register_refuses_a_short_password_and_reserves_nothing(server):
    alice, bob = people(server, "alice", "bob")
    refused(alice, "/register short", "a password needs at least 8 characters", bob)
    leave_server(alice)
    newcomer = LineClient(server.port)
    newcomer.give_name("alice")
    assert newcomer.expect(r"^[*!] ").startswith("* hello alice!")  # no password asked


# -- /login, /identify --------------------------------------------------------------------

@pytest.mark.parametrize("command", ["login", "identify"])
def test_login_gives_the_account_and_its_name_back(server, command):
    alice, bob = people(server, "alice", "bob")
    register(alice)
    guest = said(alice, "/logout")[0].removeprefix("* you are now known as ")
    sees(bob, f"-- alice is now known as {guest}", "#general")
    answer = alice.password_command(f"/{command} alice {PASSWORD}")
    assert answer[-2:] == ["* you are now known as alice", "* you are logged in as alice"]
    sees(bob, f"-- {guest} is now known as alice", "#general")


def test_login_refused_with_a_wrong_password(server):
    alice, bob = people(server, "alice", "bob")
    register(alice)
    guest = said(alice, "/logout")[0].removeprefix("* you are now known as ")
    bob.sync()
    assert alice.password_command("/login alice wrong-password") == ["! wrong password for alice"]
    assert bob.sync() == []
    assert roominfo(alice) == f"#general: 2 users: {guest}, bob"  # still the guest


def test_login_refused_for_a_name_without_an_account(server):
    guest = server.client("bob")
    refused(guest, "/login nobody whatever-pass", "no account is called nobody")


# -- /logout -----------------------------------------------------------------------------

def test_logout_leaves_a_guest_name_and_the_account_name_reserved(server):
    alice, bob = people(server, "alice", "bob")
    register(alice)
    bob.sync()
    answer = said(alice, "/logout")
    assert re.fullmatch(r"\* you are now known as (guest\d+)", answer[0])
    guest = answer[0].removeprefix("* you are now known as ")
    assert answer[1:] == ["* you are logged out; alice needs its password again"]
    sees(bob, f"-- alice is now known as {guest}", "#general")
    refused(alice, "/nick alice", "the name alice is registered: /login alice PASSWORD", bob)


def test_logout_refused_when_not_logged_in(server):
    alice, bob = people(server, "alice", "bob")
    refused(alice, "/logout", "you are not logged in", bob)
    assert roominfo(bob) == "#general: 2 users: alice, bob"


# -- /password ---------------------------------------------------------------------------

def test_password_change_makes_only_the_new_password_work(make_server):
    server = make_server("--max-per-ip", "0")  # five password checks from one address
    alice = server.client("alice")
    register(alice)
    assert alice.password_command(f"/password {PASSWORD} {NEW_PASSWORD}") == ["* your password is changed"]
    said(alice, "/logout")
    assert alice.password_command(f"/login alice {PASSWORD}") == ["! wrong password for alice"]
    assert alice.password_command(f"/login alice {NEW_PASSWORD}")[-1] == "* you are logged in as alice"


def test_password_change_refused_with_a_wrong_old_password(make_server):
    server = make_server("--max-per-ip", "0")
    alice = server.client("alice")
    register(alice)
    assert alice.password_command(f"/password wrong-password {NEW_PASSWORD}") == ["! wrong password for alice"]
    said(alice, "/logout")
    assert alice.password_command(f"/login alice {PASSWORD}")[-1] == "* you are logged in as alice"


# -- /unregister -------------------------------------------------------------------------

def test_unregister_deletes_the_account_and_frees_the_name(server):
    alice = server.client("alice")
    register(alice)
    assert alice.password_command(f"/unregister {PASSWORD}") == [
        "* the account alice is deleted: anyone may take the name once you leave it"]
    refused(alice, "/logout", "you are not logged in")
    leave_server(alice)
    newcomer = LineClient(server.port)
    newcomer.give_name("alice")
    assert newcomer.expect(r"^[*!] ").startswith("* hello alice!")  # no password asked


def test_unregister_refused_with_a_wrong_password(server):
    alice = server.client("alice")
    register(alice)
    assert alice.password_command("/unregister wrong-password") == ["! wrong password for alice"]
    leave_server(alice)
    newcomer = LineClient(server.port)
    newcomer.give_name("alice")
    assert newcomer.read_line() == ASKED  # the account is still there


# -- the name prompt (section 4) ------------------------------------------------------------

def test_prompt_enter_at_the_password_question_goes_back_to_the_name_prompt(alice_registered):
    client = LineClient(alice_registered.port)
    client.give_name("alice")
    assert client.read_line() == ASKED
    client.send("")
    assert client.read_line() == PROMPT
    client.send("bob")  # the prompt takes another name
    assert client.read_line().startswith("* hello bob!")


def test_prompt_wrong_password_gets_an_error_and_the_prompt_again(alice_registered):
    client = LineClient(alice_registered.port)
    client.expect(r"^\* what is your name")
    assert at_prompt(client, "alice", "wrong-password") == "! wrong password for alice"
    assert client.read_line() == PROMPT


def test_prompt_right_password_logs_in(alice_registered):
    client = LineClient(alice_registered.port)
    client.expect(r"^\* what is your name")
    assert at_prompt(client, "alice", PASSWORD) == "* hello alice! you are logged in; /help lists the commands"
    client.expect(r"^\* you joined #general")


@pytest.mark.parametrize("command", ["login", "identify"])
def test_prompt_login_command_logs_in(alice_registered, command):
    client = LineClient(alice_registered.port)
    client.expect(r"^\* what is your name")
    answer = at_prompt(client, f"/{command} alice {PASSWORD}")
    assert answer == "* hello alice! you are logged in; /help lists the commands"


# -- name squatting ------------------------------------------------------------------------

@pytest.mark.parametrize("spelling, nick_error", [
    ("alice", "the name alice is registered: /login alice PASSWORD"),
    ("ALICE", "the name ALICE is registered: /login ALICE PASSWORD"),
    ("\u0430lice", "invalid name '\u0430lice': a name mixes scripts (Cyrillic and Latin)"),  # Cyrillic а
    ("\uff41\uff4c\uff49\uff43\uff45", "the name alice is registered: /login alice PASSWORD"),  # fullwidth
])
def test_registered_name_and_its_lookalikes_need_the_password(make_server, spelling, nick_error):
    server = make_server("--max-per-ip", "0")  # three password checks from one address
    alice = server.client("alice")
    register(alice)
    leave_server(alice)
    guest = server.client("guest1")

    newcomer = LineClient(server.port)
    newcomer.give_name(spelling)
    assert newcomer.read_line() == ASKED  # the prompt names the account the spelling stands for
    newcomer.send("")
    assert newcomer.read_line() == PROMPT
    assert at_prompt(newcomer, spelling, "wrong-password") == "! wrong password for alice"
    assert newcomer.read_line() == PROMPT

    refused(guest, f"/nick {spelling}", nick_error)
    assert roominfo(guest) == "#general: 1 user: guest1"  # nobody took the name

    assert at_prompt(newcomer, spelling, PASSWORD).startswith("* hello alice! you are logged in")
    sees(guest, "--> alice has joined", "#general")


# -- /topic --------------------------------------------------------------------------------

def test_topic_set_by_an_operator_reaches_the_room(den):
    told(den.alice, '/topic "plans for the den"', "-- alice set the topic: plans for the den", den.bob)
    answer = said(den.bob, "/topic")
    assert re.fullmatch(r"\* topic: plans for the den \(set by alice, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)", answer[0])


def test_topic_locked_refuses_a_member_who_is_not_an_operator(den):
    assert modes(den.bob) == "* #den modes: topic locked"  # a new room's topic is locked
    refused(den.bob, "/topic my topic", "the topic of #den is locked: only operators set it", den.alice)
    assert said(den.bob, "/topic") == ["* #den has no topic"]


# -- /op, /deop ------------------------------------------------------------------------------

def test_op_makes_a_member_an_operator(den):
    told(den.alice, "/op bob", "-- alice made bob an operator", den.bob)
    assert roominfo(den.alice) == "#den: 2 users: @alice, @bob"
    told(den.bob, "/topic set by bob", "-- bob set the topic: set by bob", den.alice)  # the locked topic


def test_op_refused_for_a_member_who_is_not_an_operator(den):
    refused(den.bob, "/op bob", "only operators of #den may do that", den.alice)
    assert roominfo(den.alice) == "#den: 2 users: @alice, bob"


def test_deop_takes_operator_away(den):
    den.setup("/op bob")
    told(den.alice, "/deop bob", "-- alice took operator from bob", den.bob)
    assert roominfo(den.alice) == "#den: 2 users: @alice, bob"
    refused(den.bob, "/topic mine", "the topic of #den is locked: only operators set it", den.alice)


def test_deop_refused_for_the_rooms_owner(server):
    alice = server.client("alice")
    register(alice)  # logged in: the room she creates is hers
    den = open_den(server, alice)
    den.setup("/op bob")
    refused(den.bob, "/deop alice", "alice owns #den", den.alice)
    assert roominfo(den.alice) == "#den: 2 users: @alice, @bob"


# -- /voice, /devoice ------------------------------------------------------------------------

def test_voice_lets_a_member_speak_in_a_moderated_room(den):
    den.setup("/mode +m")
    told(den.alice, "/voice bob", "-- alice gave bob a voice", den.bob)
    assert roominfo(den.alice) == "#den: 2 users: @alice, +bob"
    speaks(den.bob, "may I?", den.alice)


def test_voice_refused_for_a_member_who_is_not_an_operator(den):
    refused(den.bob, "/voice bob", "only operators of #den may do that", den.alice)
    assert roominfo(den.alice) == "#den: 2 users: @alice, bob"


def test_devoice_silences_a_member_of_a_moderated_room_again(den):
    den.setup("/mode +m", "/voice bob")
    told(den.alice, "/devoice bob", "-- alice took the voice of bob", den.bob)
    refused(den.bob, "still here?", "#den is moderated: only operators and voiced members speak", den.alice)


def test_devoice_refused_for_someone_not_in_the_room(den):
    refused(den.alice, "/devoice carol", "carol is not in #den", den.bob, den.carol)


# -- /kick -------------------------------------------------------------------------------------

def test_kick_removes_a_member_and_the_room_sees_it(den):
    told(den.alice, "/kick bob enough now", "<-- bob was kicked by alice (enough now)", den.bob)
    assert roominfo(den.alice) == "#den: 1 user: @alice"
    assert said(den.bob, "/roominfo") == ["! you are not in a room: /join ROOM joins one, /list shows rooms"]
    assert joins(den.bob)[0] == "* you joined #den: 2 users here"  # a kick is no ban


def test_kick_refused_for_a_member_who_is_not_an_operator(den):
    refused(den.bob, "/kick alice", "only operators of #den may do that", den.alice)
    assert roominfo(den.alice) == "#den: 2 users: @alice, bob"


# -- /ban, /unban, /bans ---------------------------------------------------------------------------

def test_ban_kicks_the_banned_member_and_keeps_them_out(den):
    told(den.alice, "/ban bob", "<-- bob was kicked by alice (banned)", den.bob)
    assert [line[22:] for line in den.bob.seen[-2:]] == ["#den -- alice banned bob!*@*",
                                                        "#den <-- bob was kicked by alice (banned)"]
    assert joins(den.bob) == ["! you are banned from #den"]
    assert bans(den.alice) == ["* #den: bans and mutes (1):", "*   banned: bob!*@* (by alice)"]


def test_ban_with_a_duration_ends_by_itself(den):
    told(den.alice, "/ban bob 3s", "-- alice banned bob!*@* for 3 s", den.bob)
    assert re.fullmatch(r"\*   banned: bob!\*@\* \(by alice, for [123] s more\)", bans(den.alice)[1])
    assert said(den.bob, "/join den")[-1] == "! you are banned from #den"
    wait_for(lambda: joins(den.bob)[0].startswith("* you joined #den"), interval=0.1, what="the ban to end")
    sees(den.alice, "--> bob has joined")
    assert bans(den.alice) == ["* #den: bans and mutes (0)"]


def test_ban_refused_for_a_member_who_is_not_an_operator(den):
    refused(den.bob, "/ban alice", "only operators of #den may do that", den.alice)
    assert bans(den.alice) == ["* #den: bans and mutes (0)"]


def test_unban_lets_them_back_in(den):
    den.setup("/ban bob")
    told(den.alice, "/unban bob", "-- alice lifted the ban on bob!*@*")
    assert joins(den.bob)[0] == "* you joined #den: 2 users here"


def test_unban_refused_without_such_a_ban(den):
    refused(den.alice, "/unban bob", "no ban for bob in #den", den.bob)


def test_bans_lists_bans_and_mutes(den):
    den.setup("/ban dave", "/mute bob 10m")  # dave is not online: his name is banned
    answer = bans(den.bob)  # anyone in the room may look
    assert answer[:2] == ["* #den: bans and mutes (2):", "*   banned: dave!*@* (by alice)"]
    assert re.fullmatch(r"\*   muted: bob!\*@\* \(by alice, for (10 min|59\d s) more\)", answer[2])


def test_bans_refused_outside_a_room(den):
    said(den.carol, "/leave")  # from #general to the hall
    refused(den.carol, "/bans", "you are not in a room: /join ROOM joins one, /list shows rooms")


# -- /invite -------------------------------------------------------------------------------------------

def test_invite_lets_someone_into_an_invite_only_room(den):
    den.setup("/mode +i")
    assert joins(den.carol) == ["! #den is invite-only: an operator must /invite you"]
    assert said(den.alice, "/invite carol") == ["* you invited carol to #den"]
    assert den.carol.read_line() == "* alice invites you to #den: /join den"
    assert joins(den.carol)[-2] == "* you joined #den: 3 users here"
    sees(den.bob, "--> carol has joined")


def test_invite_refused_from_a_member_who_is_not_an_operator_of_an_invite_only_room(den):
    den.setup("/mode +i")
    refused(den.bob, "/invite carol", "#den is invite-only: only its operators invite", den.alice, den.carol)
    assert joins(den.carol) == ["! #den is invite-only: an operator must /invite you"]


def test_invite_from_a_member_who_is_not_an_operator_lets_nobody_past_a_ban(den):
    den.setup("/ban carol")
    assert said(den.bob, "/invite carol") == ["* you invited carol to #den"]
    assert den.carol.read_line() == "* bob invites you to #den: /join den"
    assert joins(den.carol) == ["! you are banned from #den"]


def test_invite_from_someone_ignored_is_not_delivered(den):
    said(den.carol, "/ignore bob")
    assert said(den.bob, "/invite carol") == ["* you invited carol to #den"]  # not told it is ignored
    assert den.carol.sync() == []


# -- /mode --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, before, what, after", [
    ("+i", None, "made the room invite-only", "invite-only, topic locked"),
    ("-i", "+i", "opened the room to everyone", "topic locked"),
    ("+m", None, "made the room moderated: only operators and voiced members speak", "moderated, topic locked"),
    ("-m", "+m", "let everyone speak again", "topic locked"),
    ("+t", "-t", "locked the topic to operators", "topic locked"),
    ("-t", None, "let everyone set the topic", "none"),
])
def test_mode_change_reaches_the_room(den, change, before, what, after):
    if before:
        den.setup(f"/mode {before}")
    told(den.alice, f"/mode {change}", f"-- alice {what}", den.bob)
    assert modes(den.bob) == f"* #den modes: {after}"


def test_mode_several_changes_at_once_are_one_event(den):
    what = ("-- alice made the room invite-only; made the room moderated: only operators and voiced "
            "members speak; let everyone set the topic")
    told(den.alice, "/mode +im-t", what, den.bob)
    assert modes(den.bob) == "* #den modes: invite-only, moderated"


def test_mode_refused_for_a_member_who_is_not_an_operator(den):
    refused(den.bob, "/mode +i", "only operators of #den may do that", den.alice)
    assert modes(den.bob) == "* #den modes: topic locked"


def test_mode_refuses_an_unknown_letter(den):
    refused(den.alice, "/mode +x", "unknown mode 'x': /help mode lists them", den.bob)
    assert modes(den.bob) == "* #den modes: topic locked"


# -- /mute, /unmute ----------------------------------------------------------------------------------

def test_mute_with_a_duration_silences_a_member(den):
    told(den.alice, "/mute bob 10m", "-- alice muted bob!*@* for 10 min", den.bob)
    refused(den.bob, "hello?", "you are muted in #den", den.alice)
    refused(den.bob, "/me waves", "you are muted in #den", den.alice)


def test_mute_refused_for_a_member_who_is_not_an_operator(den):
    refused(den.bob, "/mute alice", "only operators of #den may do that", den.alice)
    assert bans(den.alice) == ["* #den: bans and mutes (0)"]


def test_unmute_lets_a_member_speak_again(den):
    den.setup("/mute bob")
    told(den.alice, "/unmute bob", "-- alice let bob!*@* speak again", den.bob)
    speaks(den.bob, "thanks", den.alice)


def test_unmute_refused_without_such_a_mute(den):
    refused(den.alice, "/unmute bob", "no mute for bob in #den", den.bob)


# -- a moderated room ---------------------------------------------------------------------------------

def test_moderated_room_refuses_a_plain_line_from_an_unvoiced_member(den):
    den.setup("/mode +m")
    refused(den.bob, "can anyone hear me", "#den is moderated: only operators and voiced members speak", den.alice)
    speaks(den.alice, "operators speak", den.bob)  # the room itself works


def test_a_mute_silences_a_member_until_given_a_voice(den):
    den.setup("/mute bob")
    refused(den.bob, "and now?", "you are muted in #den", den.alice)
    den.setup("/voice bob")  # as on IRC: a voice overrides a mute
    speaks(den.bob, "and now?", den.alice)


# -- /ignore, /unignore, /ignores --------------------------------------------------------------------

@pytest.fixture
def three(den) -> Den:
    """carol in #den too."""
    said(den.carol, "/join den")
    for client in den[1:]:
        client.sync()
    return den


def test_ignore_hides_messages_actions_dms_and_broadcasts(three):
    alice, bob, carol = three.alice, three.bob, three.carol
    assert said(alice, "/ignore bob") == ["* you ignore bob now (for this session: log in to keep the list)"]
    speaks(bob, "hello all", carol)  # they were sent...
    assert said(bob, "/me waves") == []
    sees(carol, "* bob waves")
    told(bob, "/dm alice psst", "bob: psst", where="(dm to alice)")
    told(bob, "/bc to everyone", "bob: to everyone", carol, where="(all)")
    said(carol, "carol here")
    arrived = alice.sync()  # ...and alice saw none of them, only what carol said after
    assert len(arrived) == 1 and re.match(event("carol: carol here"), arrived[0]), arrived


def test_ignore_refused_for_yourself(three):
    refused(three.alice, "/ignore alice", "you cannot ignore yourself")
    assert said(three.alice, "/ignores") == ["* you ignore nobody"]


def test_unignore_shows_their_messages_again(three):
    said(three.alice, "/ignore bob")
    assert said(three.alice, "/unignore bob") == ["* you see bob again"]
    said(three.bob, "back again")
    sees(three.alice, "bob: back again")


def test_unignore_refused_for_a_name_not_ignored(three):
    refused(three.alice, "/unignore bob", "you do not ignore bob")


def test_ignores_lists_the_ignored_names_online_or_not(three):
    said(three.alice, "/ignore bob")
    said(three.alice, "/ignore dave")
    assert said(three.alice, "/ignores") == ["* you ignore 2: bob, dave"]


def test_ignores_refused_with_an_argument(three):
    refused(three.alice, "/ignores bob", "usage: /ignores")


# -- server operators: /kill ----------------------------------------------------------------------------

def test_kill_disconnects_a_user_and_others_see_why(opers):
    assert said(opers.admin, "/kill bob spamming")[-1] == "* bob is disconnected"
    assert opers.bob.wait_closed()[-1] == "! you were killed by admin: spamming"
    sees(opers.carol, "<-- bob has quit (killed by admin: spamming)", "#general")


def test_kill_refused_for_someone_not_a_server_operator(opers):
    refused(opers.bob, "/kill carol", "only server operators may do that", opers.carol, opers.admin)


def test_kill_refused_for_the_operator_account_when_logged_out(opers):
    said(opers.admin, "/logout")
    opers.carol.sync()
    refused(opers.admin, "/kill carol", "only server operators may do that", opers.carol)


# -- /kline, /unkline ---------------------------------------------------------------------------------
# Clients connect from other loopback addresses (any of 127/8 on Linux) to
# stand for other hosts: a kline of 127.0.0.1 would cut off the test itself.

def test_kline_of_an_address_disconnects_it_and_refuses_new_connections(opers):
    zed = LineClient(opers.server.port, source="127.0.0.2")
    zed.register("zed")
    opers.carol.sync()
    answer = said(opers.admin, "/kline 127.0.0.2 10m flooding")
    assert answer[-1] == "* 127.0.0.2 is banned from the server for 10 min; 1 disconnected"
    assert zed.wait_closed()[-1] == "! you are banned from this server: flooding"
    sees(opers.carol, "<-- zed has quit (banned from this server)", "#general")
    assert connects(opers.server, "127.0.0.2") == ["! you are banned from this server: flooding"]
    assert connects(opers.server, "127.0.0.3") == []  # its neighbours are not


def test_kline_of_a_network_refuses_its_addresses(opers):
    answer = said(opers.admin, "/kline 127.0.0.4/30 1h")
    assert answer == ["* 127.0.0.4/30 is banned from the server for 1 h; 0 disconnected"]
    for inside in ("127.0.0.4", "127.0.0.7"):
        assert connects(opers.server, inside) == ["! you are banned from this server: banned from this server"]
    for outside in ("127.0.0.3", "127.0.0.8"):
        assert connects(opers.server, outside) == []


def test_kline_refused_for_someone_not_a_server_operator(opers):
    refused(opers.bob, "/kline 127.0.0.2 10m", "only server operators may do that", opers.admin)
    assert connects(opers.server, "127.0.0.2") == []


def test_kline_refuses_too_wide_a_network(opers):
    refused(opers.admin, "/kline 0.0.0.0/0", "0.0.0.0/0 is too wide a network to ban", opers.bob)
    assert connects(opers.server, "127.0.0.2") == []


def test_unkline_lets_the_address_connect_again(opers):
    said(opers.admin, "/kline 127.0.0.2")
    assert connects(opers.server, "127.0.0.2") != []
    assert said(opers.admin, "/unkline 127.0.0.2") == ["* 127.0.0.2 may connect again"]
    assert connects(opers.server, "127.0.0.2") == []


def test_unkline_refused_without_such_a_server_ban(opers):
    refused(opers.admin, "/unkline 127.0.0.9", "no server ban for 127.0.0.9")


def test_unkline_refused_for_someone_not_a_server_operator(opers):
    said(opers.admin, "/kline 127.0.0.2")
    refused(opers.bob, "/unkline 127.0.0.2", "only server operators may do that", opers.admin)
    assert connects(opers.server, "127.0.0.2") != []


# -- /wall ----------------------------------------------------------------------------------------------

def test_wall_reaches_everyone_online_even_in_the_hall(opers):
    said(opers.carol, "/leave")
    told(opers.admin, '/wall "restart at noon"', "admin: restart at noon", opers.bob, opers.carol, where="(wall)")


def test_wall_refused_for_someone_not_a_server_operator(opers):
    refused(opers.bob, "/wall hello", "only server operators may do that", opers.admin, opers.carol)


# -- a restart keeps it all ----------------------------------------------------------------------------

def test_accounts_rooms_bans_and_ignores_survive_a_restart(tmp_path):
    db = str(tmp_path / "chat.db")
    first = ServerProcess(tmp_path, db=db)
    try:
        alice, bob, carol = people(first, "alice", "bob", "carol")
        register(alice)
        register(bob, "bob-pass-123")
        for client in (alice, bob, carol):
            said(client, "/join den")  # logged in: alice owns #den
        told(alice, "/op bob", "-- alice made bob an operator")  # kept for bob's account
        told(alice, '/topic "the den, since today"', "-- alice set the topic: the den, since today")
        told(alice, "/ban carol", "<-- carol was kicked by alice (banned)")  # a guest: her name, for good
        told(alice, "/ban dave 1s", "-- alice banned dave!*@* for 1 s")
        told(alice, "/ban erin 1h", "-- alice banned erin!*@* for 1 h")
        told(alice, "/mode +im", "-- alice made the room invite-only; made the room moderated: "
                                 "only operators and voiced members speak")
        assert said(bob, "/ignore carol")[-1] == "* you ignore carol now"  # kept for bob's account
    finally:
        assert first.stop(signal.SIGTERM) == 0

    second = ServerProcess(tmp_path, db=db)
    try:
        alice = LineClient(second.port)
        alice.expect(r"^\* what is your name")
        assert at_prompt(alice, "alice", PASSWORD).startswith("* hello alice! you are logged in")
        alice.sync()  # the greeting
        assert joins(alice)[0] == "* you joined #den: 1 user here"  # invite-only, but hers
        info = said(alice, "/roominfo")
        assert info[0] == "* #den: 1 user: @alice"
        assert re.fullmatch(r"\* topic: the den, since today \(set by alice, .*\)", info[1])
        assert info[2:] == ["* modes: invite-only, moderated, topic locked", "* owner: alice"]
        assert modes(alice) == "* #den modes: invite-only, moderated, topic locked"

        def bans_once_dave_is_gone() -> list[str] | None:
            listed = bans(alice)
            return None if any("dave" in line for line in listed) else listed
        listed = wait_for(bans_once_dave_is_gone, interval=0.1, what="the one-second ban to expire")
        assert listed[:2] == ["* #den: bans and mutes (2):", "*   banned: carol!*@* (by alice)"]
        assert re.fullmatch(r"\*   banned: erin!\*@\* \(by alice, for 3[45]\d\d s more\)", listed[2])

        bob = second.client("bob2")
        assert bob.password_command("/login bob bob-pass-123")[-1] == "* you are logged in as bob"
        assert said(bob, "/ignores") == ["* you ignore 1: carol"]
        said(bob, "/join den")
        assert roominfo(alice) == "#den: 2 users: @alice, @bob"  # bob is an operator again

        carol = second.client("carol")
        assert joins(carol) == ["! you are banned from #den"]
    finally:
        second.stop()
