"""Durable history in a real SQLite file: restarts, crashes, keys, migration."""

import logging
import os
import re
import sqlite3
import subprocess
import sys

import pytest

from helpers import EVENT, ROOT, LineClient, ServerProcess
from pychat.core import history as history_module
from pychat.core.history import ACTION, MAX_ID, MESSAGE, NOTICE, SCHEMA_VERSION, HistoryError, HistoryStore, migrate


def test_restart_keeps_history_in_order(tmp_path):
    db = str(tmp_path / "chat.db")
    srv = ServerProcess(tmp_path, db=db)
    a, b = srv.client("alice"), srv.client("bob")
    for i in range(30):
        a.send(f"message {i}")
    b.expect("message 29$")
    assert srv.stop() == 0
    srv = ServerProcess(tmp_path, db=db)
    try:
        c = srv.client("carol")
        c.send("/history 30")
        lines = c.lines_until(r"^\* end of history")
        texts = [re.sub(EVENT, "", line) for line in lines if re.match(EVENT, line)]
        assert texts == [f"#general alice: message {i}" for i in range(30)]
    finally:
        srv.stop()


def test_sigkill_loses_nothing_anyone_received(tmp_path):
    db = str(tmp_path / "chat.db")
    srv = ServerProcess(tmp_path, "--flood-rate", "200", db=db)
    a, b = srv.client("alice"), srv.client("bob")
    a.send_raw("".join(f"burst {i}\n" for i in range(200)).encode())
    # Flood control paces the burst; wait until the last one has been received.
    b.expect("alice: burst 199$", timeout=30)
    srv.kill()
    assert srv.proc.returncode == -9
    store = HistoryStore(db)
    room = next(r for r in store.rooms() if r.name == "general")
    texts = [e.text for e in store.recent(room.id, 500) if e.kind == MESSAGE]
    assert texts == [f"burst {i}" for i in range(200)]
    store.close()


def test_every_notice_a_user_saw_is_stored(tmp_path):
    db = str(tmp_path / "chat.db")
    srv = ServerProcess(tmp_path, db=db)
    a, b = srv.client("alice"), srv.client("bob")
    a.expect("bob has joined")
    b.send("/nick robert")
    a.expect("bob is now known as robert")
    srv.kill()
    store = HistoryStore(db)
    rows = store._db.execute("SELECT kind, text FROM events ORDER BY id").fetchall()
    assert (NOTICE, "bob has joined") in rows
    assert (NOTICE, "bob is now known as robert") in rows


def test_private_rooms_stay_private_across_a_restart(tmp_path):
    db = str(tmp_path / "chat.db")
    srv = ServerProcess(tmp_path, db=db)
    a = srv.client("alice")
    a.send("/create vault hunter2")
    a.expect("you joined #vault")
    a.send("the treasure is buried")
    a.sync()
    srv.stop()
    raw = open(db, "rb").read() + (open(db + "-wal", "rb").read() if os.path.exists(db + "-wal") else b"")
    assert b"hunter2" not in raw
    srv = ServerProcess(tmp_path, db=db)
    try:
        m = srv.client("mallory")
        m.send("/join vault")
        assert m.expect("^!").startswith("! #vault is locked")
        m.send("/create vault mine")
        assert m.expect("^!").startswith("! #vault already exists")
        m.send("/join vault guess")
        assert m.expect("^!") == "! wrong key for #vault"
        assert not any("treasure" in line for line in m.sync())
        m.send("/join vault hunter2")
        assert any("alice: the treasure is buried" in line for line in m.lines_until(r"^\* end of history"))
    finally:
        srv.stop()


def test_memory_db_writes_no_file(tmp_path):
    before = set(os.listdir(tmp_path))
    srv = ServerProcess(tmp_path, db=":memory:")
    a, b = srv.client("alice"), srv.client("bob")
    a.send("hello")
    b.expect("alice: hello")
    srv.stop()
    after = {name for name in os.listdir(tmp_path) if not name.startswith("server-")}
    assert after == before


def test_default_db_path_creates_directories(tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "pychat_server.py"), "127.0.0.1", "--port", "0", "--irc-port", "off", "--web-port", "off"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "listening on" in line:
                break
        assert (tmp_path / "xdg" / "pychat" / "pychat.db").exists()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_migration_from_an_empty_file(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    store = HistoryStore(str(path))
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    room_id = store.add_room("general", "general", None, 1.0)
    store.append(room_id, 2.0, MESSAGE, "alice", "hi")
    store.commit()
    assert [e.text for e in store.recent(room_id, 10)] == ["hi"]
    store.close()


def database_at(path: str, version: int, *statements: str) -> None:
    """A database file at schema VERSION holding what STATEMENTS insert (as an older pychat left it)."""
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, target=version)
    for statement in statements:
        db.execute(statement)
    db.close()


def test_migration_from_schema_version_2(tmp_path):
    """v2 had no message chain: the migration builds it from the rows."""
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, target=2)
    db.execute("INSERT INTO rooms (key, name, created) VALUES ('lobby', 'Lobby', 1.0)")
    db.execute("INSERT INTO rooms (key, name, created, key_hash) VALUES ('den', 'den', 1.0, 'h')")
    db.executemany("INSERT INTO events (room_id, ts, kind, sender, text) VALUES (?, ?, ?, ?, ?)", [
        (1, 5.0, MESSAGE, "old", "kept"), (2, 6.0, MESSAGE, "x", "elsewhere"),
        (1, 7.0, NOTICE, "old", "old has left"), (1, 8.0, 1, "old", "waves")])
    db.close()
    store = HistoryStore(path)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    rooms = store.rooms()
    assert [(r.name, r.key_hash) for r in rooms] == [("Lobby", None), ("den", "h")]
    assert [(e.sender, e.text, e.ts) for e in store.recent(rooms[0].id, 10)] == [
        ("old", "kept", 5.0), ("old", "waves", 8.0)]
    assert [e.text for e in store.recent(rooms[1].id, 10)] == ["elsewhere"]
    store.append(rooms[0].id, 9.0, MESSAGE, "new", "after migration")
    store.commit()
    assert [e.text for e in store.recent(rooms[0].id, 2)] == ["waves", "after migration"]
    store.close()


def test_migration_from_schema_version_3_keeps_ids_and_never_reuses_them(tmp_path):
    path = str(tmp_path / "v3.db")
    database_at(path, 3,
                "INSERT INTO rooms (id, key, name, created, last_id) VALUES (7, 'lobby', 'Lobby', 1.0, 1)",
                "INSERT INTO rooms (id, key, name, created) VALUES (9, 'idle', 'idle', 1.0)",
                "INSERT INTO events (id, room_id, ts, kind, sender, text) VALUES (1, 7, 2.0, 0, 'old', 'kept')")
    store = HistoryStore(path)
    assert [(r.id, r.name) for r in store.rooms()] == [(7, "Lobby"), (9, "idle")]
    assert [e.text for e in store.recent(7, 5)] == ["kept"]
    store.forget_room(9)  # the highest id goes...
    store.commit()
    store.close()
    store = HistoryStore(path)
    assert store.add_room("new", "new", None, 3.0) == 10  # ...and is still never given again
    store.commit()
    store.close()


def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "future.db")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(HistoryError, match="newer"):
        HistoryStore(path)


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_file_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "bad.db"
    path.write_bytes(content)
    result = subprocess.run([sys.executable, str(ROOT / "pychat_server.py"), "127.0.0.1", "--port", "0", "--irc-port", "off", "--web-port", "off",
                             "--db", str(path)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pychat-server: cannot open history database")
    assert "Traceback" not in result.stderr


def test_unwritable_location_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = subprocess.run([sys.executable, str(ROOT / "pychat_server.py"), "--port", "0", "--irc-port", "off", "--web-port", "off",
                             "--db", str(blocker / "sub" / "chat.db")], capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_write_error_is_logged_and_the_store_goes_on(tmp_path, caplog):
    store = HistoryStore(str(tmp_path / "full.db"))
    room_id = store.add_room("general", "general", None, 1.0)
    store.commit()
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow: "disk full"
    for i in range(2000):
        store.append(room_id, 2.0, MESSAGE, "alice", f"message {i} " + "x" * 100)
    with caplog.at_level(logging.ERROR, logger="pychat.core.history"):
        store.commit()
    assert "history write failed" in caplog.text
    store._db.execute("PRAGMA max_page_count = 1000000")
    store.append(room_id, 3.0, MESSAGE, "alice", "after the failure")
    store.commit()
    assert store.recent(room_id, 1)[0].text == "after the failure"
    store.close()


@pytest.mark.parametrize("count", [1, history_module.ROWS_PER_INSERT - 1, history_module.ROWS_PER_INSERT,
                                   2 * history_module.ROWS_PER_INSERT + 5])
def test_a_commit_stores_each_event_once_in_order(tmp_path, count):
    store = HistoryStore(str(tmp_path / "many.db"))
    room_id = store.add_room("general", "general", None, 1.0)
    ids = [store.append(room_id, float(i), ACTION if i % 2 else MESSAGE, f"u{i % 3}", f"m{i}") for i in range(count)]
    assert store.commit()
    rows = store._db.execute("SELECT id, ts, kind, sender, text FROM events ORDER BY id").fetchall()
    assert rows == [(ids[i], float(i), ACTION if i % 2 else MESSAGE, f"u{i % 3}", f"m{i}") for i in range(count)]
    assert [e.text for e in store.recent(room_id, count)] == [f"m{i}" for i in range(count)]
    store.close()


def test_replay_follows_the_chain_not_a_scan(tmp_path):
    store = HistoryStore(str(tmp_path / "plan.db"))
    general = store.add_room("general", "general", None, 1.0)
    other = store.add_room("other", "other", None, 1.0)
    for i in range(3000):
        store.append(other if i % 3 else general, float(i), NOTICE if i % 7 == 0 else MESSAGE, "u", f"m{i}")
    store.commit()
    plan = store._db.execute("EXPLAIN QUERY PLAN " + history_module._REPLAY, (1, 20)).fetchall()
    detail = " | ".join(str(row[-1]) for row in plan)
    assert "SCAN events" not in detail, detail  # primary-key lookups only
    expected = [f"m{i}" for i in range(3000) if i % 3 == 0 and i % 7 != 0][-20:]
    assert [e.text for e in store.recent(general, 20)] == expected
    store.close()
    reopened = HistoryStore(str(tmp_path / "plan.db"))  # the chain's head survives a reopen
    assert [e.text for e in reopened.recent(general, 20)] == expected
    reopened.close()


def test_history_lines_zero_replays_nothing(make_server):
    srv = make_server("--history-lines", "0")
    a = srv.client("alice")
    a.send("something")
    a.sync()
    b = LineClient(srv.port)
    b.give_name("bob")
    lines = b.lines_until(r"you joined")
    lines += b.sync()
    assert not any("something" in line or "history" in line or "no messages" in line for line in lines)


def test_wal_is_checkpointed_after_enough_rows(tmp_path):
    path = tmp_path / "ckpt.db"
    store = HistoryStore(str(path))
    room = store.add_room("general", "general", None, 1.0)
    store.commit()
    store.checkpoint_if_due()
    size_before = path.stat().st_size
    for i in range(history_module.CHECKPOINT_ROWS):
        store.append(room, float(i), MESSAGE, "u", "x" * 100)
    store.commit()
    assert path.stat().st_size == size_before  # committed rows live in the WAL so far
    store.checkpoint_if_due()
    assert path.stat().st_size > size_before + history_module.CHECKPOINT_ROWS * 100
    store.close()


def _saved_heads(path) -> tuple[dict, int]:
    """What the file says, read by another connection: each room's last_id and heads_through."""
    db = sqlite3.connect(str(path))
    try:
        heads = dict(db.execute("SELECT id, last_id FROM rooms"))
        through = db.execute("SELECT value FROM positions WHERE name = 'heads_through'").fetchone()[0]
    finally:
        db.close()
    return heads, through


def test_room_heads_are_rebuilt_from_the_rows_after_the_last_save(tmp_path):
    # A commit does not rewrite the rooms' last_id; a store opened after a
    # crash (the first one is never closed) finds the heads from the rows.
    path = tmp_path / "heads.db"
    first = HistoryStore(str(path))
    den, hall = first.add_room("den", "den", None, 1.0), first.add_room("hall", "hall", None, 1.0)
    first.commit()
    first.append(den, 2.0, MESSAGE, "a", "den one")
    first.append(hall, 3.0, MESSAGE, "b", "hall one")
    first.append(den, 4.0, NOTICE, "a", "a has left")
    first.append(den, 5.0, MESSAGE, "c", "den two")
    first.commit()
    assert _saved_heads(path) == ({den: None, hall: None}, 0)  # nothing saved yet
    second = HistoryStore(str(path))
    assert [e.text for e in second.recent(den, 10)] == ["den one", "den two"]
    assert [e.text for e in second.recent(hall, 10)] == ["hall one"]
    second.append(den, 6.0, MESSAGE, "a", "den three")
    second.close()  # a clean close saves the heads
    assert _saved_heads(path) == ({den: 5, hall: 2}, 5)
    third = HistoryStore(str(path))
    assert [e.text for e in third.recent(den, 10)] == ["den one", "den two", "den three"]
    third.close()
    first._db.close()


def test_room_heads_are_saved_every_heads_rows(tmp_path):
    path = tmp_path / "heads.db"
    store = HistoryStore(str(path))
    room = store.add_room("general", "general", None, 1.0)
    for i in range(history_module.HEADS_ROWS - 1):
        store.append(room, float(i), MESSAGE, "u", "x")
    store.commit()
    assert _saved_heads(path) == ({room: None}, 0)
    store.append(room, 1.0, MESSAGE, "u", "last")
    store.commit()
    assert _saved_heads(path) == ({room: history_module.HEADS_ROWS}, history_module.HEADS_ROWS)
    store.close()


def test_migration_to_version_6_marks_every_saved_head_exact(tmp_path):
    path = str(tmp_path / "v5.db")
    database_at(path, 5,
                "INSERT INTO rooms (id, key, name, created, last_id) VALUES (3, 'den', 'den', 1.0, 2)",
                "INSERT INTO events (id, room_id, prev_id, ts, kind, sender, text) VALUES (1, 3, NULL, 2.0, 0, 'a', 'one')",
                "INSERT INTO events (id, room_id, prev_id, ts, kind, sender, text) VALUES (2, 3, 1, 3.0, 0, 'a', 'two')")
    store = HistoryStore(path)
    assert [e.text for e in store.recent(3, 10)] == ["one", "two"]
    store._db.close()
    assert _saved_heads(path) == ({3: 2}, 2)


def test_a_store_asked_around_an_id_no_message_can_have_finds_nothing(tmp_path):
    """Messages before or after an id past what SQLite holds, or not above 0, are
    none (not an error), in a file that has messages."""
    store = HistoryStore(str(tmp_path / "h.db"))
    room = store.add_room("general", "general", None, 0.0)
    said = [store.append(room, 0.0, 0, "alice", f"m{n}") for n in range(3)]
    assert store.commit()
    for event_id in (0, -1, MAX_ID + 1, 2**64):
        assert store.before(room, event_id, 5) == []
    assert store.after(room, MAX_ID + 1, 5) == []
    assert [e.text for e in store.before(room, said[2], 5)] == ["m0", "m1"]
    store.close()
