"""IRC commands and replies that irctest's core selection checks, over real
sockets: HELP, INFO, WHOX, user mode +w for WALLOPS, STATUSMSG, LIST with
ELIST conditions, NAMES and KICK of several targets, and an invitation past
a member limit. Each one also as a line user sees it, where it reaches one."""

from __future__ import annotations

import pytest

from helpers import EVENT, IrcClient, IrcLine, LineClient, ServerProcess, parse_irc


def irc_user(server: ServerProcess, nick: str) -> IrcClient:
    irc = IrcClient(server.irc_port)
    irc.register(nick)
    return irc


def answer(irc: IrcClient, command: str) -> list[IrcLine]:
    """Send COMMAND; the messages it caused (everything before the PONG of a PING sent after it)."""
    irc.send(command)
    return [parse_irc(line) for line in irc.sync()]


def isupport(irc: IrcClient) -> dict[str, str]:
    """The ISUPPORT tokens of the welcome (RPL_ISUPPORT, 005)."""
    tokens: dict[str, str] = {}
    for msg in map(parse_irc, irc.seen):
        if msg.command == "005":
            for token in msg.params[1:-1]:
                name, _, value = token.partition("=")
                tokens[name] = value
    return tokens


@pytest.fixture
def ann(server) -> IrcClient:
    return irc_user(server, "ann")


def test_help_lists_the_commands_and_explains_one(ann):
    index = answer(ann, "HELP")
    assert [m.command for m in index] == ["704"] + ["705"] * (len(index) - 2) + ["706"]
    listed = " ".join(m.params[-1] for m in index[1:-1]).split()
    assert {"PRIVMSG", "JOIN", "MODE", "KICK", "WHO", "HELP"} <= set(listed)
    privmsg = answer(ann, "HELPOP privmsg")
    assert privmsg[0].command == "704" and privmsg[0].params[1] == "PRIVMSG"
    assert any("PRIVMSG target :text" in m.params[-1] for m in privmsg if m.command == "705")
    assert privmsg[-1].command == "706"
    assert [(m.command, m.params[1]) for m in answer(ann, "HELP NOSUCHTHING")] == [("524", "NOSUCHTHING")]


def test_info_is_a_few_lines_and_an_end(ann):
    info = answer(ann, "INFO")
    assert info[-1].command == "374" and info[:-1] and all(m.command == "371" for m in info[:-1])


def test_whox_answers_the_fields_asked_in_their_fixed_order_with_the_token(server, ann):
    ann.send("JOIN #den")
    bob = irc_user(server, "bob")
    bob.send("JOIN #den")
    bob.sync()
    ann.sync()
    assert "WHOX" in isupport(ann)
    (reply, end) = answer(ann, "WHO bob %rnatc,42")  # asked out of order: t c n a r
    assert reply.command == "354" and reply.params == ["ann", "42", "#den", "bob", "0", "bob"]
    assert end.command == "315"
    assert {tuple(m.params[1:]) for m in answer(ann, "WHO #den %nf") if m.command == "354"} == {
        ("ann", "H@"), ("bob", "H")}


def test_wallops_reaches_irc_users_with_user_mode_w_and_every_line_user(make_server, tmp_path):
    srv = make_server("--oper", "boss", "--max-per-ip", "0")
    boss = srv.client("boss")
    boss.password_command("/register boss-password")
    watcher = irc_user(srv, "wendy")
    assert answer(watcher, "MODE wendy +w")[0].params[-1] == "+w"
    quiet = irc_user(srv, "quinn")
    line_user = srv.client("lina")
    boss.send("/wall servers restart at noon")
    msg = watcher.expect_msg("WALLOPS")
    assert msg.source.startswith("boss!") and msg.params == ["servers restart at noon"]
    line_user.expect(r"\(wall\) boss: servers restart at noon$")
    assert not any("WALLOPS" in line for line in quiet.sync())
    assert answer(quiet, "MODE quinn")[0].params[-1] == "+"  # no w: IRC users ask for it


def test_statusmsg_reaches_only_the_operators_of_the_room(server, ann):
    ann.send("JOIN #den")  # the creator runs the room
    bob = irc_user(server, "bob")
    bob.send("JOIN #den")
    ops_line = server.client("olga")
    ops_line.send("/join den")
    ops_line.expect("you joined #den")
    ann.send("MODE #den +o olga")
    ops_line.expect(r"-- ann made olga an operator")
    lurker = server.client("lou")
    lurker.send("/join den")
    lurker.expect("you joined #den")
    bob.sync()
    assert "@" in isupport(bob).get("STATUSMSG", "")
    bob.send("PRIVMSG @#den :psst, operators")
    msg = ann.expect_msg("PRIVMSG")
    assert msg.source.startswith("bob!") and msg.params == ["@#den", "psst, operators"]
    ops_line.expect(EVENT + r"@#den bob: psst, operators$")
    assert not any("psst" in line for line in lurker.sync())
    assert not any("psst" in line for line in bob.sync())  # no echo without echo-message


def test_list_takes_masks_negated_masks_and_member_counts(server, ann):
    for room in ("#chan1", "#chan2", "#other"):
        ann.send(f"JOIN {room}")
    bob = irc_user(server, "bob")
    bob.send("JOIN #chan2")
    bob.sync()
    ann.sync()
    assert isupport(ann).get("ELIST") == "MNU"

    def listed(query: str) -> set[str]:
        return {m.params[1] for m in answer(ann, f"LIST {query}") if m.command == "322"}

    assert listed("#chan*") == {"#chan1", "#chan2"}
    assert listed("*an1") == {"#chan1"}
    everything = listed("*")
    assert {"#chan1", "#chan2", "#other"} <= everything
    assert listed("!#chan*") == everything - {"#chan1", "#chan2"}
    assert listed(">1") == {"#chan2"}
    assert listed("<2,#chan*") == {"#chan1"}
    assert listed("#chan1,#other") == {"#chan1", "#other"}


def test_names_of_several_rooms_end_once(server, ann):
    ann.send("JOIN #a")
    ann.send("JOIN #b")
    ann.sync()
    got = answer(ann, "NAMES #a,#b")
    assert [(m.command, m.params[2] if m.command == "353" else None) for m in got] == [
        ("353", "#a"), ("353", "#b"), ("366", None)]


@pytest.mark.parametrize("rooms", ["#den", "#den,#den"])
def test_kick_takes_several_names(server, ann, rooms):
    ann.send("JOIN #den")
    others = [irc_user(server, nick) for nick in ("bob", "cy", "dee")]
    for other in others:
        other.send("JOIN #den")
        other.sync()
    ann.sync()
    ann.send(f"KICK {rooms} bob,cy :bye")
    kicks = [others[2].expect_msg("KICK") for _ in range(2)]
    assert sorted(k.params[1] for k in kicks) == ["bob", "cy"] and all(k.params[2] == "bye" for k in kicks)
    assert [m.params[-1].split() for m in answer(others[2], "NAMES #den") if m.command == "353"] == [
        ["@ann", "dee"]]


def test_an_invitation_lets_someone_past_the_member_limit(server, ann):
    ann.send("JOIN #den")
    ann.send("MODE #den +l 1")
    ann.sync()
    bob = irc_user(server, "bob")
    assert answer(bob, "JOIN #den")[0].command == "471"  # full
    ann.send("INVITE bob #den")
    assert bob.expect_msg("INVITE").params == ["bob", "#den"]
    bob.send("JOIN #den")
    assert bob.expect_msg("JOIN").params == ["#den"]


def test_a_voice_overrides_a_mute(server, ann):
    ann.send("JOIN #den")
    bob = LineClient(server.port)
    bob.register("bob")
    bob.send("/join den")
    bob.expect("you joined #den")
    ann.send("MODE #den +b m:bob!*@*")
    bob.expect(r"-- ann muted bob!\*@\*")
    bob.send("anyone?")
    bob.expect(r"^! you are muted in #den$")
    ann.send("MODE #den +v bob")
    bob.expect(r"-- ann gave bob a voice")
    bob.send("now?")
    assert ann.expect_msg("PRIVMSG").params == ["#den", "now?"]


def tagged_user(server: ServerProcess, nick: str, caps: str) -> IrcClient:
    irc = IrcClient(server.irc_port)
    irc.send("CAP LS 302")
    irc.send(f"CAP REQ :{caps}")
    irc.send(f"NICK {nick}")
    irc.send(f"USER u 0 * :{nick}")
    irc.send("CAP END")
    irc.welcome()
    irc.send("JOIN #den")
    irc.sync()
    return irc


def tags_of(line: str) -> dict[str, str]:
    """The tags of a received line, values as sent (escaped)."""
    if not line.startswith("@"):
        return {}
    return dict(item.partition("=")[::2] for item in line[1:].split(" ", 1)[0].split(";"))


def test_client_only_tags_reach_message_tags_clients_and_nobody_else(server):
    """A client's +tags go with its message to those who asked for message-tags
    (the sender too, with echo-message); the server's own tags cannot be forged,
    and plain IRC users and line users get the text alone."""
    tagged = tagged_user(server, "tia", "message-tags")
    sender = tagged_user(server, "sam", "message-tags echo-message")
    plain = tagged_user(server, "pat", "server-time")
    line_user = server.client("lou")
    line_user.send("/join den")
    line_user.expect(r"you joined #den")
    for irc in (tagged, sender, plain):
        irc.sync()

    sender.send(r"@+draft/reply=7;+x=a\sb\:c;msgid=forged;time=forged;+bad!key=1 PRIVMSG #den :hello")
    got = tagged.expect(r"PRIVMSG #den :hello$")
    tags = tags_of(got)
    assert tags["+draft/reply"] == "7" and tags["+x"] == r"a\sb\:c"
    assert tags["msgid"] != "forged" and "time" not in tags and "+bad!key" not in tags
    assert tags_of(sender.expect(r"PRIVMSG #den :hello$")) == tags  # the echo matches the relay
    seen_plain = plain.expect(r"PRIVMSG #den :hello$")
    assert "+x" not in tags_of(seen_plain) and "time" in tags_of(seen_plain)
    line_user.expect(EVENT + r"#den sam: hello$")

    sender.send("@+typing=active TAGMSG #den")
    typing = tagged.expect(r" TAGMSG #den$")
    assert tags_of(typing)["+typing"] == "active" and typing.split(" ")[1].startswith(":sam!")
    assert tags_of(sender.expect(r" TAGMSG #den$"))["+typing"] == "active"
    assert not [line for line in plain.sync() if "TAGMSG" in line]
    assert not [line for line in line_user.sync() if "typing" in line or "sam" in line]

    sender.send("@+react=1 TAGMSG tia")
    assert tags_of(tagged.expect(r" TAGMSG tia$"))["+react"] == "1"
    assert [parse_irc(line).command for line in sender.sync() if "TAGMSG" in line or " 401 " in line] == ["TAGMSG"]
    assert answer(sender, "@+react=1 TAGMSG nobody")[0].command == "401"


def test_a_tagmsg_follows_the_rooms_rules_for_speaking(server):
    owner = tagged_user(server, "ola", "message-tags")
    guest = tagged_user(server, "gus", "message-tags")
    owner.send("MODE #den +m")
    owner.expect(r" MODE #den \+m$")
    guest.sync()
    refusal = answer(guest, "@+typing=active TAGMSG #den")
    assert [m.command for m in refusal] == ["404"]
    assert not [line for line in owner.sync() if "TAGMSG" in line]


def test_the_message_fast_path_follows_a_user_out_of_a_room_and_back(server):
    """The fast path remembers a room per PRIVMSG target; leaving the room must
    send the next message down the general path (refused), and coming back
    must deliver again."""
    ivy, bob = irc_user(server, "ivy"), irc_user(server, "bob")
    for irc in (ivy, bob):
        irc.send("JOIN #den")
        irc.sync()
    ivy.send("PRIVMSG #den :one")
    assert parse_irc(bob.expect(r" PRIVMSG #den ")).params == ["#den", "one"]
    ivy.send("PART #den")
    bob.expect(r" PART #den")
    assert [m.command for m in answer(ivy, "PRIVMSG #den :two") if m.command not in ("JOIN", "PART")] == ["404"]
    ivy.send("JOIN #den")
    ivy.sync()
    ivy.send("PRIVMSG #den :three")
    assert [parse_irc(line).params for line in bob.lines_until(r" PRIVMSG #den ") if " PRIVMSG " in line] == [
        ["#den", "three"]]


def test_who_of_a_secret_room_lists_nobody_to_an_outsider(server, ann):
    ann.send("JOIN #hush")
    ann.sync()
    ann.send("MODE #hush +s")
    ann.expect_msg("MODE")
    bob = irc_user(server, "bob")
    assert [m.command for m in answer(bob, "WHO #hush")] == ["315"]
    assert [m.params[5] for m in answer(ann, "WHO #hush") if m.command == "352"] == ["ann"]


def test_a_line_that_is_not_utf8_and_has_no_space_is_refused_and_the_connection_stays(ann):
    ann.send_raw(b"@\xff\r\n")
    ann.send_raw(b":\xff\r\n")
    ann.send_raw(b"@a=b :src PRIV\xffMSG #x :y\r\n")
    fails = [m for m in answer(ann, "PING x") if m.command == "FAIL"]
    assert [m.params[:2] for m in fails] == [["*", "INVALID_UTF8"], ["*", "INVALID_UTF8"],
                                             ["PRIV\ufffdMSG", "INVALID_UTF8"]]


def test_a_message_of_spaces_only_is_no_text_on_the_fast_path_too(server, ann):
    bob = irc_user(server, "bob")
    for irc in (ann, bob):
        irc.send("JOIN #den")
        irc.sync()
    assert [m.command for m in answer(ann, "PRIVMSG #den :    ") if m.command != "JOIN"] == ["412"]
    assert not [line for line in bob.sync() if "PRIVMSG" in line]


def test_list_shows_a_locked_room_without_its_topic_and_never_a_secret_one(server, ann):
    """As /list does: a locked room is listed (its members and topic are for
    its members); a secret room is not, not even when asked for by name."""
    for line in ("JOIN #vault sesame", "TOPIC #vault :the code is 4711", "JOIN #hush", "MODE #hush +s"):
        ann.send(line)
    ann.sync()
    bob = irc_user(server, "bob")
    listed = {m.params[1]: m.params[3] for m in answer(bob, "LIST") if m.command == "322"}
    assert listed == {"#vault": ""}
    assert [m.command for m in answer(bob, "LIST #hush,#vault")] == ["321", "322", "323"]
    mine = {m.params[1]: m.params[3] for m in answer(ann, "LIST") if m.command == "322"}
    assert mine == {"#vault": "the code is 4711", "#hush": ""}


def test_a_mode_line_full_of_unknown_letters_gets_one_reply_per_letter(ann):
    ann.send("JOIN #den")
    ann.sync()
    assert [(m.command, m.params[1]) for m in answer(ann, "MODE #den +" + "zy" * 200)] == [
        ("472", "z"), ("472", "y")]
    assert [m.command for m in answer(ann, "MODE ann +" + "z" * 400)] == ["501"]


def test_a_long_line_split_for_irc_gives_each_part_its_own_msgid(server):
    reader = tagged_user(server, "rita", "message-tags")
    writer = server.client("walt")
    writer.send("/join den")
    writer.expect(r"you joined #den")
    reader.sync()
    writer.send("w" * 3000)
    parts = [line for line in reader.sync() if " PRIVMSG #den :" in line]
    assert len(parts) > 1 and "".join(parse_irc(line).params[1] for line in parts) == "w" * 3000
    ids = [tags_of(line)["msgid"] for line in parts]
    assert len(set(ids)) == len(ids), ids


def test_a_users_own_part_and_nick_carry_server_time_like_everyone_elses(server):
    tia = tagged_user(server, "tia", "server-time")
    tia.send("PART #den :bye")
    assert "time" in tags_of(tia.expect(r" PART #den :bye$"))
    tia.send("NICK tina")
    assert "time" in tags_of(tia.expect(r" NICK tina$"))


def test_names_lines_stay_within_512_bytes_with_wide_names(make_server):
    srv = make_server("--max-per-ip", "0")
    kana = "あいうえおかきくけこさしすせそたちつてとなにぬねの"
    wide = [kana[i:] + kana[:i] for i in range(12)]  # 25 three-byte letters each, cut to the longest name allowed
    people = [srv.client(name[:20]) for name in wide]
    ann = irc_user(srv, "ann")
    ann.send("JOIN #general")
    ann.expect_msg("366")
    names = answer(ann, "NAMES #general")
    raw = [line for line in ann.seen if " 353 " in line]
    assert all(len(line.encode()) + 2 <= 512 for line in raw), [len(line.encode()) for line in raw]
    listed = {n.lstrip("@+") for msg in names if msg.command == "353" for n in msg.params[-1].split()}
    assert {name[:20] for name in wide} | {"ann"} <= listed
    for person in people:
        person.expect(r"--> ann has joined")


def test_invite_alone_lists_the_rooms_one_is_invited_to(server, ann):
    assert answer(ann, "JOIN #den")
    assert answer(ann, "JOIN #attic")
    bob = irc_user(server, "bob")
    assert [(m.command, m.params[1:]) for m in answer(bob, "INVITE")] == [("337", ["End of /INVITE list"])]
    for room in ("#den", "#attic"):
        assert [m.command for m in answer(ann, f"INVITE bob {room}")] == ["341"]
    bob.sync()
    listed = answer(bob, "INVITE")
    assert [(m.command, m.params[1:]) for m in listed] == [
        ("336", ["#attic"]), ("336", ["#den"]), ("337", ["End of /INVITE list"])]
    assert answer(bob, "JOIN #den")  # an invitation is used up by joining
    assert [m.params[1] for m in answer(bob, "INVITE") if m.command == "336"] == ["#attic"]


def test_links_shows_this_server_alone_with_its_description(make_server):
    srv = make_server("--server-name", "chat.example.org", "--server-info", "the den's own chat")
    eve = irc_user(srv, "eve")
    assert [(m.command, m.params[1:]) for m in answer(eve, "LINKS")] == [
        ("364", ["chat.example.org", "chat.example.org", "0 the den's own chat"]),
        ("365", ["*", "End of /LINKS list"])]
    assert [(m.command, m.params[1:]) for m in answer(eve, "LINKS *.example.org")][0][0] == "364"
    assert [(m.command, m.params[1:]) for m in answer(eve, "LINKS other.net")] == [
        ("365", ["other.net", "End of /LINKS list"])]
    eve.send("WHOIS eve")
    whois = [parse_irc(line) for line in eve.lines_until(r" 318 ")]
    assert [m.params[1:] for m in whois if m.command == "312"] == [["eve", "chat.example.org", "the den's own chat"]]


def test_a_server_description_must_be_one_short_line(tmp_path):
    import subprocess
    import sys
    from helpers import ROOT
    for bad in ("", "x" * 81, "two\nlines"):
        result = subprocess.run([sys.executable, str(ROOT / "pychat_server.py"), "--server-info", bad, "--db", ":memory:"],
                                capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        assert result.returncode == 2 and "not a usable server description" in result.stderr, result.stderr
