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
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger("pychat.core.history")

MEMORY: Final = ":memory:"
# Rows after which the server checkpoints the WAL into the database, after
# it has written that iteration's output. A checkpoint blocks the loop for
# about 13 us per page: small ones often (about 2 ms each) keep the latency
# tail low, where SQLite's own (every 1000 pages, inside a commit) would
# hold up the output just committed for 15-30 ms.
CHECKPOINT_ROWS: Final = 1000

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
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


class HistoryError(Exception):
    """The database cannot be opened or used."""


@dataclass(frozen=True, slots=True)
class StoredRoom:
    id: int
    name: str
    key_hash: str | None
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredEvent:
    ts: float
    kind: int
    sender: str
    text: str


def default_db_path() -> str:
    """``$XDG_DATA_HOME/pychat/pychat.db``, XDG_DATA_HOME defaulting to ~/.local/share."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "pychat", "pychat.db")


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION) -> None:
    """Bring the schema of DB up to version TARGET, one step at a time."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise HistoryError(f"database schema version {version} is newer than this pychat ({SCHEMA_VERSION})")
    for step in range(version, target):
        db.execute("BEGIN")
        try:
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {step + 1}")
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
    SELECT ts, kind, sender, text FROM events WHERE id IN (SELECT id FROM chain) ORDER BY id
"""


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
    """

    def __init__(self, path: str = MEMORY) -> None:
        self.path = path
        # Written at the next commit: room inserts and deletions (in order),
        # then events.
        self._room_ops: list[tuple[str, tuple]] = []
        self._pending: list[tuple[int, int, int | None, float, int, str, str]] = []
        # Already in the open transaction, not yet committed: what a failed
        # commit must undo in memory or try again.
        self._txn_room_ops: list[tuple[str, tuple]] = []
        self._txn_events = 0
        self._broken = False                     # a write in the open transaction failed
        self._last: dict[int, int | None] = {}   # room id -> its last message or action
        self._committed_last: dict[int, int | None] = {}
        self._moved: set[int] = set()            # rooms whose last_id changed since the commit
        self._txn_moved: set[int] = set()
        self._next_id = 1
        self._next_room_id = 1
        self._rows_since_checkpoint = 0
        self.failed_commits = 0
        try:
            if path != MEMORY:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun and committed by hand.
            self._db = sqlite3.connect(path, isolation_level=None)
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
        self._next_id = db.execute("SELECT coalesce(max(id), 0) + 1 FROM events").fetchone()[0]
        highest = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rooms'").fetchone()
        top_row = db.execute("SELECT coalesce(max(id), 0) FROM rooms").fetchone()[0]
        self._next_room_id = max(highest[0] if highest else 0, top_row) + 1
        self._last = dict(db.execute("SELECT id, last_id FROM rooms"))
        self._committed_last = dict(self._last)
        self._moved.clear()

    def rooms(self) -> list[StoredRoom]:
        rows = self._db.execute("SELECT id, name, key_hash, created FROM rooms ORDER BY id")
        return [StoredRoom(*row) for row in rows]

    def add_room(self, key: str, name: str, key_hash: str | None, ts: float) -> int:
        """A new room's id, at once; its row is written with the next commit."""
        room_id = self._next_room_id
        self._next_room_id = room_id + 1
        self._room_ops.append(("INSERT INTO rooms (id, key, name, created, key_hash) VALUES (?, ?, ?, ?, ?)",
                               (room_id, key, name, ts, key_hash)))
        self._last[room_id] = None
        self._committed_last[room_id] = None
        return room_id

    def has_chat(self, room_id: int) -> bool:
        """True if the room has messages or actions (history worth keeping)."""
        return self._last.get(room_id) is not None

    def forget_room(self, room_id: int) -> None:
        """Delete a room that has no messages; its id is never given again.

        Notices stored for it stay, under an id no other room will have.
        """
        if self.has_chat(room_id):
            raise ValueError("a room with history is not forgotten")
        self._room_ops.append(("DELETE FROM rooms WHERE id = ?", (room_id,)))
        self._last.pop(room_id, None)
        self._committed_last.pop(room_id, None)
        self._moved.discard(room_id)

    def append(self, room_id: int, ts: float, kind: int, sender: str, text: str) -> None:
        """Queue one event; it reaches the database at the next commit."""
        event_id = self._next_id
        self._next_id = event_id + 1
        prev = None
        if kind != NOTICE:  # notices are stored, not replayed: not in the chain
            prev = self._last[room_id]
            self._last[room_id] = event_id
            self._moved.add(room_id)
        self._pending.append((event_id, room_id, prev, ts, kind, sender, text))

    def recent(self, room_id: int, limit: int) -> list[StoredEvent]:
        """The last LIMIT messages and actions of a room, oldest first.

        Raises HistoryError if they cannot be read.
        """
        last = self._last.get(room_id)
        if last is None or limit <= 0:
            return []
        try:
            self._flush_pending()
            rows = self._db.execute(_REPLAY, (last, limit)).fetchall()
        except sqlite3.Error as exc:
            self._broken = True  # the commit will roll back and report the batch lost
            log.error("history read failed: %s", exc)
            raise HistoryError(str(exc)) from exc
        return [StoredEvent(*row) for row in rows]

    def _flush_pending(self) -> None:
        """Write what is queued into the open transaction (begun if needed)."""
        db = self._db
        if not db.in_transaction:
            db.execute("BEGIN")
        if self._room_ops:
            ops, self._room_ops = self._room_ops, []
            self._txn_room_ops.extend(ops)
            for sql, args in ops:
                try:
                    db.execute(sql, args)
                except sqlite3.IntegrityError as exc:
                    # A row the database will never take would fail every
                    # commit from now on if it were retried: it is dropped.
                    log.error("room change not stored (%s): %s %r", exc, sql.split()[0], args[:3])
                    self._txn_room_ops.remove((sql, args))
        if self._pending:
            rows, self._pending = self._pending, []
            self._txn_events += len(rows)
            db.executemany(
                "INSERT INTO events (id, room_id, prev_id, ts, kind, sender, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        if self._moved:
            last = self._last
            moved, self._moved = self._moved, set()
            self._txn_moved |= moved
            db.executemany("UPDATE rooms SET last_id = ? WHERE id = ?", [(last[room], room) for room in moved])

    def commit(self) -> bool:
        """Make everything written so far durable; False if that failed.

        Errors are logged, not raised: the chat goes on when the disk fails,
        and the caller withholds what this batch would have shown.
        """
        if not self._pending and not self._room_ops and not self._moved and not self._db.in_transaction:
            return True
        try:
            if self._broken:
                raise sqlite3.OperationalError("an earlier write in this batch failed")
            self._flush_pending()
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._roll_back(exc)
            return False
        self._rows_since_checkpoint += self._txn_events
        for room in self._txn_moved:
            if room in self._last:
                self._committed_last[room] = self._last[room]
        self._txn_room_ops.clear()
        self._txn_moved.clear()
        self._txn_events = 0
        return True

    def _roll_back(self, exc: sqlite3.Error) -> None:
        """Undo in memory what the failed transaction held; keep room changes for the next commit."""
        lost = self._txn_events + len(self._pending)
        self.failed_commits += 1
        log.error("history write failed, %d events not stored (their delivery was withheld): %s", lost, exc)
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error as again:
            log.error("history rollback failed: %s", again)
        self._room_ops[:0] = self._txn_room_ops
        self._txn_room_ops.clear()
        self._pending.clear()
        self._txn_events = 0
        self._broken = False
        # The chains ran ahead of the database: back to what is committed.
        # Ids keep growing (the next event id is not taken back).
        for room in self._txn_moved | self._moved:
            if room in self._committed_last:
                self._last[room] = self._committed_last[room]
        self._txn_moved.clear()
        self._moved.clear()

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
        self.commit()
        self._db.close()
