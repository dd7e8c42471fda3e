"""Durable room history in SQLite.

One connection, WAL journal, ``synchronous=NORMAL``: a commit survives the
server being killed (it is in the WAL before the commit returns), though
not a power cut between checkpoints. Writes are buffered in memory and go
to the database in one transaction per loop iteration: the server calls
:meth:`HistoryStore.commit` before it writes that iteration's output, so
nothing a user has seen can be missing after a crash.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS`
holds one step per version, applied in order on open.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from bisect import bisect_left, bisect_right
from itertools import chain
from operator import itemgetter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger("pychat.core.history")

MEMORY: Final = ":memory:"
# Rows after which the server checkpoints the WAL into the database, after
# it has written that iteration's output. A checkpoint blocks the loop for
# about 13 us per page plus one fsync (about 0.6 ms here, whatever its
# size): checkpoints of about 140 pages, some 2 ms each, keep the latency
# tail low, where SQLite's own (every 1000 pages, inside a commit) would
# hold up the output just committed for 15-30 ms. Every 1000 rows cost
# about 0.8 us per stored message, every 4000 about 0.5 (the fsync shared).
CHECKPOINT_ROWS: Final = 4000
# Rows after which a commit also saves each room's last message (rooms.last_id)
# and the event id they are exact up to (positions.heads_through). Saving them
# with every commit cost one UPDATE per room that spoke, about 1 us per stored
# message with 100 busy rooms; on open, the few rows written since the last
# save are read back to bring the heads up to date.
HEADS_ROWS: Final = 4000
# Events are inserted this many to a statement: SQLite's work per statement
# (binding, stepping, resetting) is then paid once for all of them, and a
# row costs a third less than with a statement per row.
ROWS_PER_INSERT: Final = 64
# Rows a node that follows the file (see HistoryStore) keeps at most, while
# the file's writer is behind: about 30 s of messages at 10,000 a second.
TAIL_ROWS: Final = 300_000
_ROW = "(?, ?, ?, ?, ?, ?, ?)"
_INSERT_EVENTS = "INSERT OR IGNORE INTO events (id, room_id, prev_id, ts, kind, sender, text) VALUES "
_INSERT_ONE: Final = _INSERT_EVENTS + _ROW
_INSERT_MANY: Final = _INSERT_EVENTS + ", ".join([_ROW] * ROWS_PER_INSERT)
_ROOM_INSERT: Final = "INSERT OR IGNORE INTO rooms (id, key, name, created, key_hash) VALUES (?, ?, ?, ?, ?)"
_ROOM_DELETE: Final = "DELETE FROM rooms WHERE id = ?"
# How long a following node that stops waits for the file's writer to finish a commit.
STOP_WAIT_MS: Final = 2000

# The largest id SQLite can hold (a signed 64-bit integer): a msgid typed
# past it names no message.
MAX_ID: Final = 2**63 - 1

# Event kinds as stored.
MESSAGE: Final = 0
ACTION: Final = 1
NOTICE: Final = 2

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: rooms and their events.
    """
    CREATE TABLE rooms (
        id      INTEGER PRIMARY KEY,
        key     TEXT NOT NULL UNIQUE,   -- casefolded name
        name    TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        room_id INTEGER NOT NULL REFERENCES rooms(id),
        ts      REAL NOT NULL,
        kind    INTEGER NOT NULL,
        sender  TEXT NOT NULL,
        text    TEXT NOT NULL
    );
    CREATE INDEX events_by_room ON events(room_id, id);
    """,
    # 2: private rooms keep a hashed key; replay reads messages and actions
    # only, through a partial index, however many notices pile up.
    """
    ALTER TABLE rooms ADD COLUMN key_hash TEXT;
    CREATE INDEX chat_by_room ON events(room_id, id) WHERE kind IN (0, 1);
    """,
    # 3: the per-room index becomes a chain: each message or action points
    # at the room's previous one, and the room at its last. Inserts only
    # append (a B-tree index made each commit rewrite one index page per
    # active room), and replay follows the chain: N primary-key lookups,
    # however long the history grows.
    """
    ALTER TABLE events ADD COLUMN prev_id INTEGER;
    ALTER TABLE rooms ADD COLUMN last_id INTEGER;
    UPDATE events SET prev_id = (
        SELECT max(e.id) FROM events AS e
        WHERE e.room_id = events.room_id AND e.kind IN (0, 1) AND e.id < events.id
    ) WHERE kind IN (0, 1);
    UPDATE rooms SET last_id = (SELECT max(id) FROM events WHERE room_id = rooms.id AND kind IN (0, 1));
    DROP INDEX events_by_room;
    DROP INDEX chat_by_room;
    """,
    # 4: room ids are never reused (AUTOINCREMENT keeps the highest id ever
    # given, in sqlite_sequence), because rooms without history are now
    # forgotten: a new room must not inherit a forgotten one's stored notices.
    """
    CREATE TABLE rooms_v4 (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        key      TEXT NOT NULL UNIQUE,
        name     TEXT NOT NULL,
        created  REAL NOT NULL,
        key_hash TEXT,
        last_id  INTEGER
    );
    INSERT INTO rooms_v4 (id, key, name, created, key_hash, last_id)
        SELECT id, key, name, created, key_hash, last_id FROM rooms;
    DROP TABLE rooms;
    ALTER TABLE rooms_v4 RENAME TO rooms;
    """,
    # 5: accounts and what rooms keep of their moderation: owner, topic,
    # modes, roles by account, bans and mutes; server bans (klines); each
    # account's ignore list. Passwords are stored only as hashes.
    """
    CREATE TABLE accounts (
        key     TEXT PRIMARY KEY,       -- the name's look-alike key
        name    TEXT NOT NULL,
        hash    TEXT NOT NULL,
        created REAL NOT NULL
    );
    ALTER TABLE rooms ADD COLUMN owner TEXT;
    ALTER TABLE rooms ADD COLUMN topic TEXT;
    ALTER TABLE rooms ADD COLUMN topic_by TEXT;
    ALTER TABLE rooms ADD COLUMN topic_at REAL;
    ALTER TABLE rooms ADD COLUMN modes TEXT NOT NULL DEFAULT 'nt';
    ALTER TABLE rooms ADD COLUMN user_limit INTEGER;
    CREATE TABLE room_roles (
        room_id INTEGER NOT NULL,
        account TEXT NOT NULL,
        role    TEXT NOT NULL,          -- 'o' operator, 'v' voice
        PRIMARY KEY (room_id, account)
    );
    CREATE TABLE room_bans (
        room_id INTEGER NOT NULL,
        mask    TEXT NOT NULL,          -- canonical (pychat.core.masks)
        shown   TEXT NOT NULL,          -- as it was given
        set_by  TEXT NOT NULL,
        set_at  REAL NOT NULL,
        expires REAL,
        kind    TEXT NOT NULL DEFAULT 'b',   -- 'b' ban, 'm' mute
        PRIMARY KEY (room_id, kind, mask)
    );
    CREATE TABLE klines (
        mask    TEXT PRIMARY KEY,
        set_by  TEXT NOT NULL,
        set_at  REAL NOT NULL,
        expires REAL,
        reason  TEXT NOT NULL
    );
    CREATE TABLE ignores (
        account TEXT NOT NULL,
        ignored TEXT NOT NULL,          -- a name's look-alike key
        PRIMARY KEY (account, ignored)
    );
    """,
    # 6: rooms.last_id is saved every HEADS_ROWS rows, not with every commit;
    # heads_through is the event id up to which it is exact (until now, all).
    """
    CREATE TABLE positions (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO positions (name, value) VALUES ('heads_through', (SELECT coalesce(max(id), 0) FROM events));
    """,
    # 7: nodes of a cluster may share the file, one of them writing it: the file
    # has an id of its own (the name of the lock they take turns with), and
    # the id of the last event in it (the others keep what comes after).
    """
    INSERT INTO positions (name, value) VALUES ('file_id', abs(random() % 1000000000000000));
    INSERT INTO positions (name, value) VALUES ('archived_through', (SELECT coalesce(max(id), 0) FROM events));
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


_row_id = itemgetter(0)


class HistoryError(Exception):
    """The database cannot be opened or used."""


@dataclass(frozen=True, slots=True)
class StoredRoom:
    id: int
    name: str
    key_hash: str | None
    created: float = 0.0
    owner: str | None = None
    topic: str | None = None
    topic_by: str | None = None
    topic_at: float | None = None
    modes: str = "nt"
    user_limit: int | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    ts: float
    kind: int
    sender: str
    text: str
    id: int = 0     # its place in the store: the message id clients see


def default_db_path() -> str:
    """``$XDG_DATA_HOME/pychat/pychat.db``, XDG_DATA_HOME defaulting to ~/.local/share."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "pychat", "pychat.db")


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION) -> None:
    """Bring the schema of DB up to version TARGET, one step at a time. Each
    step reads the version inside its own write transaction: two processes
    opening one file at once (a cluster's nodes) take the steps once."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise HistoryError(f"database schema version {version} is newer than this pychat ({SCHEMA_VERSION})")
            if version >= target:
                db.execute("COMMIT")
                return
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


_REPLAY = """
    WITH RECURSIVE chain(id, n) AS (
        SELECT ?, 1
        UNION ALL
        SELECT events.prev_id, chain.n + 1 FROM events JOIN chain ON events.id = chain.id
        WHERE events.prev_id IS NOT NULL AND chain.n < ?
    )
    SELECT ts, kind, sender, text, id FROM events WHERE id IN (SELECT id FROM chain) ORDER BY id
"""

# The messages after an id: the chain walked back from the room's last one
# while it is newer, and at most AFTER_WALK steps.
_AFTER = """
    WITH RECURSIVE chain(id, n) AS (
        SELECT ?, 1
        UNION ALL
        SELECT events.prev_id, chain.n + 1 FROM events JOIN chain ON events.id = chain.id
        WHERE events.prev_id IS NOT NULL AND events.prev_id > ? AND chain.n < ?
    )
    SELECT ts, kind, sender, text, id FROM events WHERE id IN (SELECT id FROM chain ORDER BY id LIMIT ?) ORDER BY id
"""
# How far back AFTER looks from the newest message: a client asking for what
# followed a message older than that gets the oldest of these (a gap it can
# see: the first id it gets is not the next one it knew).
AFTER_WALK: Final = 1000


class HistoryStore:
    """Rooms and their events; writes are batched until :meth:`commit`.

    Event and room ids are given here, not by SQLite, so that a room's chain
    of messages (``prev_id`` and the room's ``last_id``) can be built without
    a round trip per insert, and so that a room exists (with its id) the
    moment it is created, even while its row waits for the next commit.

    A failed commit (disk full, I/O error) loses that batch's events, which
    the server then withholds from everyone; room rows and deletions stay
    queued and are written by the next commit that succeeds. Ids only ever
    grow, in memory and on disk, so no id is given twice.

    Nodes of a cluster on one machine may share one file: they carry out the
    same events in the same order, so they queue the same rows with the same
    ids, and one of them (``archiving``, the holder of the file's lock in
    Redis) writes them. The others only read the file, and keep what they
    queued until the file has it (its ``archived_through`` position, read
    by :meth:`commit`): their reads join that tail to the file's rows, and
    if the writer dies, the one that takes its place writes the tail first;
    one that stops writes the tail's events (see :meth:`_save_tail`).
    Rows written twice (by two writers for a moment) are the same rows,
    so the second is ignored.
    """

    def __init__(self, path: str = MEMORY) -> None:
        self.path = path
        self.archiving = True    # this process writes the file (see lead and follow)
        self.shared = False      # other processes may read the file: each commit saves archived_through
        # Written at the next commit: room inserts and deletions (in order),
        # each with the next event id when it was queued (its place among the
        # events, by which a node that follows the file drops it), then events.
        self._writes: list[tuple[str, tuple, int]] = []
        self._pending: list[tuple[int, int, int | None, float, int, str, str]] = []
        self._tail_cut = False   # following: the tail outgrew TAIL_ROWS and lost its oldest rows
        # Already in the open transaction, not yet committed: what a failed
        # commit must undo in memory or try again.
        self._txn_writes: list[tuple[str, tuple, int]] = []
        self._txn_events = 0
        self._txn_rows: list[tuple[int, int, int | None, float, int, str, str]] = []  # shared: kept if it fails
        # Following: the first id this process numbered itself (the file must hold
        # every event before it for this process to be a complete writer), and
        # whether it does, as of the last read of the file's position.
        self._kept_from = 0
        self.complete = True
        self._broken = False                     # a write in the open transaction failed
        self._last: dict[int, int | None] = {}   # room id -> its last message or action
        self._committed_last: dict[int, int | None] = {}
        self._moved: set[int] = set()            # rooms whose last message changed since the commit
        self._txn_moved: set[int] = set()
        self._stale_heads: set[int] = set()      # rooms whose saved last_id is behind
        self._rows_since_heads = 0
        self._next_id = 1
        self._next_room_id = 1
        self._rows_since_checkpoint = 0
        self.failed_commits = 0
        self.file_id = ""
        try:
            if path != MEMORY:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun and committed by hand.
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 5000")  # at open only: another node may be migrating it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            migrate(self._db)
            # Another process holding the write lock must not stall the loop
            # for the default 5 s: a commit that cannot go ahead fails fast.
            self._db.execute("PRAGMA busy_timeout = 100")
            self._load_positions()
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(f"cannot open history database {path}: {exc}") from exc

    def _load_positions(self) -> None:
        """Read the next ids and each room's last message from the database."""
        db = self._db
        file_id = db.execute("SELECT value FROM positions WHERE name = 'file_id'").fetchone()[0]
        # Copies of a file have the same id but are not the same file: the
        # lock is named by the id and where the file is.
        where = os.stat(self.path) if self.path != MEMORY else None
        self.file_id = f"{file_id}:{where.st_dev}:{where.st_ino}" if where else f"{file_id}:{id(self)}"
        self._next_id = db.execute("SELECT coalesce(max(id), 0) + 1 FROM events").fetchone()[0]
        highest = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rooms'").fetchone()
        top_row = db.execute("SELECT coalesce(max(id), 0) FROM rooms").fetchone()[0]
        self._next_room_id = max(highest[0] if highest else 0, top_row) + 1
        self._last = dict(db.execute("SELECT id, last_id FROM rooms"))
        # The heads were saved up to heads_through; the rows after it (at most
        # about HEADS_ROWS, a range of the primary key) move them on.
        through = db.execute("SELECT value FROM positions WHERE name = 'heads_through'").fetchone()[0]
        for event_id, room_id in db.execute("SELECT id, room_id FROM events WHERE id > ? AND kind != ? ORDER BY id",
                                            (through, NOTICE)):
            if room_id in self._last:
                self._last[room_id] = event_id
                self._stale_heads.add(room_id)
        self._committed_last = dict(self._last)
        self._moved.clear()

    def _queue(self, write: tuple[str, tuple]) -> None:
        self._writes.append((*write, self._next_id))

    def rooms(self) -> list[StoredRoom]:
        rows = self._db.execute("SELECT id, name, key_hash, created, owner, topic, topic_by, topic_at, modes, "
                                "user_limit FROM rooms ORDER BY id")
        return [StoredRoom(*row) for row in rows]

    # -- accounts and moderation: read at start, written with the next commit --

    # Each change below is queued for the next commit, in order with the room
    # rows, and kept for the commit after if one fails.

    def save_account(self, key: str, name: str, password_hash: str, created: float) -> None:
        self._queue(("INSERT OR REPLACE INTO accounts (key, name, hash, created) VALUES (?, ?, ?, ?)",
                     (key, name, password_hash, created)))

    def delete_account(self, key: str) -> None:
        """An account and everything kept for it: its roles, its ignore list, its rooms' ownership."""
        self._queue(("DELETE FROM accounts WHERE key = ?", (key,)))
        self._queue(("DELETE FROM room_roles WHERE account = ?", (key,)))
        self._queue(("DELETE FROM ignores WHERE account = ?", (key,)))
        self._queue(("UPDATE rooms SET owner = NULL WHERE owner = ?", (key,)))

    def save_room_settings(self, room_id: int, owner: str | None, topic: str | None, topic_by: str | None,
                           topic_at: float | None, modes: str, user_limit: int | None) -> None:
        self._queue(("UPDATE rooms SET owner = ?, topic = ?, topic_by = ?, topic_at = ?, modes = ?, "
                     "user_limit = ? WHERE id = ?",
                     (owner, topic, topic_by, topic_at, modes, user_limit, room_id)))

    def set_room_key(self, room_id: int, key_hash: str | None) -> None:
        self._queue(("UPDATE rooms SET key_hash = ? WHERE id = ?", (key_hash, room_id)))

    def save_role(self, room_id: int, account: str, role: str | None) -> None:
        """ROLE ('o' or 'v') for ACCOUNT in the room, or none."""
        if role is None:
            self._queue(("DELETE FROM room_roles WHERE room_id = ? AND account = ?", (room_id, account)))
        else:
            self._queue(("INSERT OR REPLACE INTO room_roles (room_id, account, role) VALUES (?, ?, ?)",
                         (room_id, account, role)))

    def save_ban(self, room_id: int, kind: str, mask: str, shown: str, set_by: str, set_at: float,
                 expires: float | None) -> None:
        self._queue(("INSERT OR REPLACE INTO room_bans (room_id, kind, mask, shown, set_by, set_at, expires) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", (room_id, kind, mask, shown, set_by, set_at, expires)))

    def delete_ban(self, room_id: int, kind: str, mask: str) -> None:
        self._queue(("DELETE FROM room_bans WHERE room_id = ? AND kind = ? AND mask = ?",
                     (room_id, kind, mask)))

    def save_kline(self, mask: str, set_by: str, set_at: float, expires: float | None, reason: str) -> None:
        self._queue(("INSERT OR REPLACE INTO klines (mask, set_by, set_at, expires, reason) "
                     "VALUES (?, ?, ?, ?, ?)", (mask, set_by, set_at, expires, reason)))

    def delete_kline(self, mask: str) -> None:
        self._queue(("DELETE FROM klines WHERE mask = ?", (mask,)))

    def save_ignore(self, account: str, ignored: str, on: bool) -> None:
        if on:
            self._queue(("INSERT OR REPLACE INTO ignores (account, ignored) VALUES (?, ?)",
                         (account, ignored)))
        else:
            self._queue(("DELETE FROM ignores WHERE account = ? AND ignored = ?", (account, ignored)))

    def accounts(self) -> list[tuple[str, str, str, float]]:
        """(key, name, hash, created) of every account."""
        return self._db.execute("SELECT key, name, hash, created FROM accounts").fetchall()

    def room_roles(self) -> list[tuple[int, str, str]]:
        return self._db.execute("SELECT room_id, account, role FROM room_roles").fetchall()

    def room_bans(self) -> list[tuple[int, str, str, str, str, float, float | None]]:
        """(room id, kind, mask, shown, set by, set at, expires) of every ban and mute."""
        return self._db.execute("SELECT room_id, kind, mask, shown, set_by, set_at, expires FROM room_bans").fetchall()

    def klines(self) -> list[tuple[str, str, float, float | None, str]]:
        return self._db.execute("SELECT mask, set_by, set_at, expires, reason FROM klines").fetchall()

    def ignores(self) -> list[tuple[str, str]]:
        return self._db.execute("SELECT account, ignored FROM ignores").fetchall()

    def add_room(self, key: str, name: str, key_hash: str | None, ts: float) -> int:
        """A new room's id, at once; its row is written with the next commit."""
        room_id = self._next_room_id
        self.add_room_as(room_id, key, name, key_hash, ts, None)
        return room_id

    def reset_room(self, room_id: int, name: str, key_hash: str | None, ts: float) -> None:
        """The room ROOM_ID's row becomes a new room's: its settings, roles and bans go
        (its messages stay). A cluster's node takes a room of its file again so."""
        self._queue(("UPDATE rooms SET name = ?, created = ?, key_hash = ?, owner = NULL, topic = NULL, "
                     "topic_by = NULL, topic_at = NULL, modes = 'nt', user_limit = NULL WHERE id = ?",
                     (name, ts, key_hash, room_id)))
        self._queue(("DELETE FROM room_roles WHERE room_id = ?", (room_id,)))
        self._queue(("DELETE FROM room_bans WHERE room_id = ?", (room_id,)))

    def has_chat(self, room_id: int) -> bool:
        """True if the room has messages or actions (history worth keeping)."""
        return self._last.get(room_id) is not None

    def forget_room(self, room_id: int) -> None:
        """Delete a room that has no messages; its id is never given again.

        Notices stored for it stay, under an id no other room will have.
        """
        if self.has_chat(room_id):
            raise ValueError("a room with history is not forgotten")
        self._queue((_ROOM_DELETE, (room_id,)))
        self._queue(("DELETE FROM room_roles WHERE room_id = ?", (room_id,)))
        self._queue(("DELETE FROM room_bans WHERE room_id = ?", (room_id,)))
        self._last.pop(room_id, None)
        self._committed_last.pop(room_id, None)
        self._moved.discard(room_id)

    def append(self, room_id: int, ts: float, kind: int, sender: str, text: str, at_least: int = 0) -> int:
        """Queue one event; it reaches the database at the next commit. Returns its
        id: the next one, or AT_LEAST if that is past it (number_from, in one call)."""
        event_id = self._next_id if self._next_id >= at_least else at_least
        self._next_id = event_id + 1
        prev = None
        if kind != NOTICE:  # notices are stored, not replayed: not in the chain
            prev = self._last[room_id]
            self._last[room_id] = event_id
            self._moved.add(room_id)
        self._pending.append((event_id, room_id, prev, ts, kind, sender, text))
        return event_id

    @property
    def next_event_id(self) -> int:
        """The id the next event will have (unless number_from moves it on)."""
        return self._next_id

    def number_from(self, first: int) -> None:
        """Give the next events (and a new room) ids from FIRST on, if that is
        past the ids given so far (ids only grow). A cluster node numbers an
        event after its place in the stream, so that every node gives its
        message, and a room it makes, the same id."""
        if first > self._next_id:
            self._next_id = first
        if first > self._next_room_id:
            self._next_room_id = first

    def room_id_for(self, key: str, room_id: int) -> bool:
        """True if ROOM_ID may be the id of the new room KEY here: no other room
        has it, in memory or in the file (a node that shares the file takes the
        id the others gave the room)."""
        if room_id <= 0 or room_id > MAX_ID or room_id in self._last:
            return False
        row = self._db.execute("SELECT key FROM rooms WHERE id = ?", (room_id,)).fetchone()
        return row is None or row[0] == key

    def add_room_as(self, room_id: int, key: str, name: str, key_hash: str | None, ts: float,
                    last: int | None) -> None:
        """The new room KEY with the id ROOM_ID (and last message LAST): add_room's, or
        the ones a node sharing the file gave it (see room_id_for)."""
        self._next_room_id = max(self._next_room_id, room_id + 1)
        self._queue((_ROOM_INSERT, (room_id, key, name, ts, key_hash)))
        self._last[room_id] = self._committed_last[room_id] = last

    def last_message(self, room_id: int) -> int | None:
        return self._last.get(room_id)

    def move_last(self, room_id: int, last: int | None) -> None:
        """The room's last message is LAST (a later one than this process
        stored, that a node sharing the file gave it before this one joined)."""
        if last is not None and room_id in self._last and (self._last[room_id] or 0) < last:
            self._last[room_id] = last
            self._moved.add(room_id)

    def recent(self, room_id: int, limit: int) -> list[StoredEvent]:
        """The last LIMIT messages and actions of a room, oldest first.

        Raises HistoryError if they cannot be read.
        """
        last = self._last.get(room_id)
        if last is None or limit <= 0:
            return []
        return self._chain(last, limit)

    def _chain(self, last: int, limit: int) -> list[StoredEvent]:
        """The last LIMIT messages of the chain that ends with LAST, oldest first:
        the tail's (a following node's, see the class), then the file's."""
        newest, at = self._walk_tail(last, limit, 0)
        if at is not None and len(newest) < limit:
            return [StoredEvent(*row) for row in self._read(_REPLAY, (at, limit - len(newest)))] + newest
        return newest

    def _walk_tail(self, last: int, steps: int, after: int) -> tuple[list[StoredEvent], int | None]:
        """Up to STEPS messages of the chain that ends with LAST and are past AFTER,
        from this following node's tail, oldest first; and where the chain goes on
        (None: it ended, or went past AFTER), which the file has."""
        walked: list[StoredEvent] = []
        at: int | None = last
        while at is not None and at > after and len(walked) < steps:
            row = self._tail_row(at)
            if row is None:
                break  # archived already (or not following): in the file
            walked.append(StoredEvent(row[3], row[4], row[5], row[6], row[0]))
            at = row[2]
        walked.reverse()
        if at is not None and (at <= after or len(walked) >= steps):
            at = None
        return walked, at

    def _tail_row(self, event_id: int) -> tuple[int, int, int | None, float, int, str, str] | None:
        """The row of EVENT_ID in this following node's tail, if it is there."""
        tail = self._pending if not self.archiving else ()
        index = bisect_left(tail, event_id, key=_row_id) if tail else 0
        return tail[index] if index < len(tail) and tail[index][0] == event_id else None

    def before(self, room_id: int, event_id: int, limit: int) -> list[StoredEvent]:
        """Up to LIMIT messages and actions of the room just before its message
        EVENT_ID, oldest first ([] if that is not one of the room's messages).
        Raises HistoryError if they cannot be read."""
        if limit <= 0 or not 0 < event_id <= MAX_ID:
            return []
        kept = self._tail_row(event_id)
        if kept is not None:
            row = [(kept[1], kept[4], kept[2])]
        else:
            row = self._read("SELECT room_id, kind, prev_id FROM events WHERE id = ?", (event_id,))
        if not row or row[0][0] != room_id or row[0][1] == NOTICE or row[0][2] is None:
            return []
        return self._chain(row[0][2], limit)

    def after(self, room_id: int, event_id: int, limit: int) -> list[StoredEvent]:
        """Up to LIMIT messages and actions of the room after EVENT_ID, oldest
        first, among its last AFTER_WALK. Raises HistoryError if they cannot be read."""
        last = self._last.get(room_id)
        if last is None or last <= event_id or limit <= 0:
            return []
        newest, at = self._walk_tail(last, AFTER_WALK, event_id)
        older = [] if at is None else self._read(_AFTER, (at, event_id, AFTER_WALK - len(newest), limit))
        return ([StoredEvent(*row) for row in older] + newest)[:limit]

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        try:
            self._flush_pending()
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._broken = True  # the commit will roll back and report the batch lost
            log.error("history read failed: %s", exc)
            raise HistoryError(str(exc)) from exc

    def _flush_pending(self) -> None:
        """Write what is queued into the open transaction (begun if needed); a
        node that follows the file keeps it queued (see the class)."""
        if not self.archiving:
            return
        db = self._db
        if not db.in_transaction:
            db.execute("BEGIN")
        if self._writes:
            ops, self._writes = self._writes, []
            self._txn_writes.extend(ops)
            for op in ops:
                sql, args, _ = op
                try:
                    db.execute(sql, args)
                except sqlite3.IntegrityError as exc:
                    # A row the database will never take would fail every
                    # commit from now on if it were retried: it is dropped.
                    log.error("room change not stored (%s): %s %r", exc, sql.split()[0], args[:3])
                    self._txn_writes.remove(op)
        if self._pending:
            rows, self._pending = self._pending, []
            self._txn_events += len(rows)
            if self.shared:
                self._txn_rows.extend(rows)
            self._insert_events(rows)
        if self._moved:
            self._txn_moved |= self._moved
            self._moved = set()

    def _insert_events(self, rows: list[tuple[int, int, int | None, float, int, str, str]]) -> None:
        """Insert ROWS into the open transaction, ROWS_PER_INSERT to a statement."""
        db = self._db
        whole = len(rows) - len(rows) % ROWS_PER_INSERT
        if whole:
            db.executemany(_INSERT_MANY, [tuple(chain.from_iterable(rows[i:i + ROWS_PER_INSERT]))
                                          for i in range(0, whole, ROWS_PER_INSERT)])
        if whole < len(rows):
            db.executemany(_INSERT_ONE, rows[whole:])

    def _save_heads(self) -> None:
        """Write each stale room's last message, and the event id every saved head
        is exact up to, into the open transaction."""
        last = self._last
        rooms = [room for room in self._stale_heads if room in last]
        self._db.executemany("UPDATE rooms SET last_id = ? WHERE id = ?", [(last[room], room) for room in rooms])
        self._db.execute("UPDATE positions SET value = ? WHERE name = 'heads_through'", (self._next_id - 1,))

    def unsaved(self) -> bool:
        """True if anything waits for the next commit (following: for the file's writer)."""
        return bool(self._pending or self._writes or self._moved or self._db.in_transaction)

    def unsaved_events(self) -> int:
        """How many events wait for the next commit (following, none: what waits is the writer's to commit)."""
        return len(self._pending) + self._txn_events if self.archiving else 0

    def commit(self) -> bool:
        """Make everything written so far durable; False if that failed.

        Errors are logged, not raised: the chat goes on when the disk fails,
        and the caller withholds what this batch would have shown.
        """
        if not self.archiving:
            return self._follow()
        heads_due = self._rows_since_heads >= HEADS_ROWS and self._stale_heads
        if not heads_due and not self.unsaved():
            return True
        try:
            if self._broken:
                raise sqlite3.OperationalError("an earlier write in this batch failed")
            self._flush_pending()
            self._stale_heads |= self._txn_moved
            heads = self._rows_since_heads + self._txn_events >= HEADS_ROWS
            if heads:
                self._save_heads()
            if self.shared:
                self._db.execute("UPDATE positions SET value = max(value, ?) WHERE name = 'archived_through'",
                                 (self._next_id - 1,))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._roll_back(exc)
            return False
        self._rows_since_checkpoint += self._txn_events
        if heads:
            self._stale_heads.clear()
            self._rows_since_heads = 0
        else:
            self._rows_since_heads += self._txn_events
        for room in self._txn_moved:
            if room in self._last:
                self._committed_last[room] = self._last[room]
        self._txn_writes.clear()
        self._txn_rows.clear()
        self._txn_moved.clear()
        self._txn_events = 0
        return True

    def _roll_back(self, exc: sqlite3.Error) -> None:
        """Undo in memory what the failed transaction held; keep room changes for the next commit."""
        lost = self._txn_events + len(self._pending)
        self.failed_commits += 1
        log.error("history write failed, %d events not stored%s: %s", lost,
                  " (kept for the next commit)" if self.shared else "", exc)
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error as again:
            log.error("history rollback failed: %s", again)
        self._writes[:0] = self._txn_writes
        self._txn_writes.clear()
        self._txn_events = 0
        self._broken = False
        if self.shared:
            # An archive behind the stream (a cluster node's): its users saw these
            # events already, and nodes sharing the file drop them once its position
            # passes them, so they are kept for the next commit, not dropped.
            self._pending[:0] = self._txn_rows
            self._txn_rows.clear()
            self._moved |= self._txn_moved
            self._txn_moved.clear()
            self._cap_kept()
            return
        self._pending.clear()
        # The chains ran ahead of the database: back to what is committed.
        # Ids keep growing (the next event id is not taken back).
        for room in self._txn_moved | self._moved:
            if room in self._committed_last:
                self._last[room] = self._committed_last[room]
        self._txn_moved.clear()
        self._moved.clear()

    def _follow(self) -> bool:
        """A following node: drop what the file has now (everything queued when
        the ids had not passed its archived_through). False if it cannot be read."""
        try:
            through = self._archived_through()
        except sqlite3.Error as exc:
            log.error("history read failed: %s", exc)
            return False
        self._broken = False  # (a failed read; no transaction is open while following)
        self.complete = through + 1 >= self._kept_from
        self._writes = [write for write in self._writes if write[2] > through]
        del self._pending[:bisect_right(self._pending, through, key=_row_id)]
        self._cap_kept()
        self._moved.clear()
        return True

    def _archived_through(self) -> int:
        """The file's position: the id of the last event its writer wrote."""
        row = self._db.execute("SELECT value FROM positions WHERE name = 'archived_through'").fetchone()
        return row[0] if row else 0

    def _cap_kept(self) -> None:
        """Keep at most TAIL_ROWS events and room changes waiting (the file's writer is
        gone or failing, and no node took its place yet): the oldest go."""
        if len(self._pending) > TAIL_ROWS or len(self._writes) > TAIL_ROWS:
            if not self._tail_cut:
                log.error("history: %d events wait for the file; the oldest are no longer kept",
                          len(self._pending))
            self._tail_cut = True
            del self._pending[:len(self._pending) - TAIL_ROWS]
            del self._writes[:len(self._writes) - TAIL_ROWS]

    def keep_from_here(self) -> None:
        """This process carries out events from here on (it joined a cluster): the
        file must hold every one before for it to write the file alone (complete)."""
        self._kept_from = self._next_id
        if not self.archiving:
            self._follow()

    def lead(self) -> None:
        """This process writes the file from now on (it took the file's lock): what
        it kept (its tail and the room changes) goes first, with every room's
        last message and where those are exact."""
        if self.archiving:
            return
        self._follow()
        self.archiving = True
        self._tail_cut = False
        self._stale_heads = set(self._last)
        self._rows_since_heads = HEADS_ROWS

    def follow(self) -> None:
        """Another process writes the file from now on: what this one has is
        committed now (harmless if the other has it too), then kept, not written."""
        if self.archiving:
            self.commit()
            self.archiving = False
            self._kept_from = self._kept_from or self._next_id
            self._follow()

    def checkpoint_if_due(self) -> None:
        """Copy the WAL into the database when enough has been written (called
        by the server after it has written an iteration's output)."""
        if self._rows_since_checkpoint < CHECKPOINT_ROWS or self.path == MEMORY:
            return
        self._rows_since_checkpoint = 0
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.error("history checkpoint failed: %s", exc)

    def close(self) -> None:
        try:
            if self.archiving:
                self._rows_since_heads = HEADS_ROWS  # a clean close saves the heads: the next open reads no rows back
                self.commit()
            else:
                self._save_tail()
        finally:
            self._db.close()

    def _save_tail(self) -> None:
        """A following process that stops writes the events it kept and the file
        lacks. Were the writer dead, nobody would write them later: a node
        started afterwards reads the stream on from where the running nodes
        are, not from the file's end.

        Only what a live writer (or the next one) cannot be harmed by is
        written: event rows, which it writes again as the same rows (ignored);
        the row of each room they belong to, unless the room was forgotten
        since; and the deletion of a room this node saw forgotten, which frees
        its name for a room made again. Other room changes (topics, roles,
        bans, accounts) stay the writer's: written here, one could land after
        a newer one the writer already wrote. The file's positions stay too,
        so the other followers keep their tails. The next open reads these
        rows back to find each room's last message; a node that then follows
        the file sees events past its position and waits, as for any file
        that may lack some, before it writes the file alone."""
        if not self._pending or not self._follow() or not self._pending:
            return  # nothing kept, the file unreadable, or (read without the lock) the file has it all
        db = self._db
        try:
            db.execute(f"PRAGMA busy_timeout = {STOP_WAIT_MS}")  # the writer may be committing
            db.execute("BEGIN IMMEDIATE")  # the file's position and the writes in one transaction
            try:
                through = self._archived_through()
                rows = self._pending[bisect_right(self._pending, through, key=_row_id):]
                rooms = {room_id for _, room_id, *_ in rows}
                for sql, args, at in self._writes:
                    if at > through and (sql == _ROOM_INSERT and args[0] in rooms and args[0] in self._last
                                         or sql == _ROOM_DELETE and args[0] not in self._last):
                        db.execute(sql, args)
                self._insert_events(rows)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            log.error("history write failed as this node stopped, %d events it kept for the file not stored: %s",
                      len(self._pending), exc)
            return
        if rows:
            log.info("history: wrote the %d events this node kept and the file lacked", len(rows))
