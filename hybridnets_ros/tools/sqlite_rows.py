"""The messages of a damaged rosbag2 sqlite3 file, as far as sqlite reads them, row by row.

rosbags reads a sqlite3 bag with one query in time order: a damaged page ends it, and a
truncated file whose schema names pages past its end does not open at all. Here the rows
are listed as far as sqlite lists them (the schema's entries past the end tolerated), and
each message's data is read on its own, so an unreadable row costs only its message.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

MAGIC = b"SQLite format 3\x00"


class NotSqlite(Exception):
    """The file is not an sqlite database."""


class SqliteRows:
    """``topics`` (id -> (name, type)) and ``messages`` of one rosbag2 sqlite3 file; what
    could not be read is in ``damage``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as file:
            if file.read(len(MAGIC)) != MAGIC:
                raise NotSqlite(f"{self.path}: not an sqlite database")
        self.damage: list[str] = []
        self._db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True)
        # Lets sqlite read the tables although the schema lists objects (the timestamp index,
        # written last) on pages that were lost.
        self._db.execute("PRAGMA writable_schema=ON")
        self.topics: dict[int, tuple[str, str]] = {}
        try:
            self.topics = {i: (name, kind) for i, name, kind in
                           self._db.execute("SELECT id, name, type FROM topics")}
        except sqlite3.DatabaseError as exc:
            self.damage.append(f"{self.path.name}: its topics table is unreadable ({exc})")

    def messages(self, topic_ids: set[int]) -> Iterator[tuple[int, int, bytes]]:
        """(timestamp ns, topic id, data) of ``topic_ids``, of every row sqlite can read, in
        the order they were written (rosbag2's receive order: its time order)."""
        last, unreadable = None, []
        try:
            for row_id, topic_id, timestamp in self._db.execute(
                    "SELECT id, topic_id, timestamp FROM messages ORDER BY id"):
                last = row_id
                if topic_id not in topic_ids:
                    continue
                try:
                    (data,) = self._db.execute("SELECT data FROM messages WHERE id = ?",
                                               (row_id,)).fetchone()
                except (sqlite3.DatabaseError, TypeError) as exc:  # TypeError: no such row
                    unreadable.append((row_id, exc))
                    continue
                yield timestamp, topic_id, data
        except sqlite3.DatabaseError as exc:
            which = "all message rows" if last is None else f"the message rows after id {last}"
            self._note(f"{self.path.name}: {which} unreadable ({exc})")
        if unreadable:
            ids = ", ".join(str(i) for i, _ in unreadable[:10])
            self._note(f"{self.path.name}: the data of {len(unreadable)} "
                       f"message{'s' if len(unreadable) > 1 else ''} unreadable "
                       f"(ids {ids}{', ...' if len(unreadable) > 10 else ''}: {unreadable[0][1]})")

    def _note(self, what: str) -> None:
        if what not in self.damage:  # messages() may run several times
            self.damage.append(what)

    def close(self) -> None:
        self._db.close()
