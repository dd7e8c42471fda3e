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

log = logging.getLogger("pychat.history")

MEMORY: Final = ":memory:"

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
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


class HistoryError(Exception):
    """The database cannot be opened or used."""


@dataclass(frozen=True, slots=True)
class StoredRoom:
    id: int
    name: str
    key_hash: str | None


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


class HistoryStore:
    """Rooms and their events; writes are batched until :meth:`commit`."""

    def __init__(self, path: str = MEMORY) -> None:
        self.path = path
        self._pending: list[tuple[int, float, int, str, str]] = []
        try:
            if path != MEMORY:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun and committed by hand.
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            migrate(self._db)
            self._db.execute("SELECT count(*) FROM rooms").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(f"cannot open history database {path}: {exc}") from exc

    def rooms(self) -> list[StoredRoom]:
        rows = self._db.execute("SELECT id, name, key_hash FROM rooms ORDER BY id")
        return [StoredRoom(*row) for row in rows]

    def add_room(self, key: str, name: str, key_hash: str | None, ts: float) -> int:
        """Store a new room and return its id (written at once, not batched)."""
        self._flush_pending()
        cur = self._db.execute(
            "INSERT INTO rooms (key, name, created, key_hash) VALUES (?, ?, ?, ?)",
            (key, name, ts, key_hash),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def append(self, room_id: int, ts: float, kind: int, sender: str, text: str) -> None:
        """Queue one event; it reaches the database at the next commit."""
        self._pending.append((room_id, ts, kind, sender, text))

    def recent(self, room_id: int, limit: int) -> list[StoredEvent]:
        """The last LIMIT messages and actions of a room, oldest first."""
        self._flush_pending()
        rows = self._db.execute(
            "SELECT ts, kind, sender, text FROM events INDEXED BY chat_by_room"
            " WHERE room_id = ? AND kind IN (0, 1) ORDER BY id DESC LIMIT ?",
            (room_id, limit),
        ).fetchall()
        rows.reverse()
        return [StoredEvent(*row) for row in rows]

    def _flush_pending(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        if self._pending:
            self._db.executemany(
                "INSERT INTO events (room_id, ts, kind, sender, text) VALUES (?, ?, ?, ?, ?)",
                self._pending,
            )
            self._pending.clear()

    def commit(self) -> None:
        """Make everything written so far durable. Errors are logged, not raised:
        the chat goes on even when the disk fails."""
        if not self._pending and not self._db.in_transaction:
            return
        try:
            self._flush_pending()
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("history write failed, %d events not stored: %s", len(self._pending), exc)
            self._pending.clear()
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass

    def close(self) -> None:
        self.commit()
        self._db.close()
