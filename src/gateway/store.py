"""The gateway's memory: every fanned-out request with its input embedding and each backend's
answer and answer embedding, in SQLite (WAL mode, so readers never block the writer).

Why SQLite: a restarted gateway must route exactly as one that never stopped, so what it learnt
must be on disk the moment a response is sent. Rows are kept per embedder, since vectors from two
embedders cannot be compared; the oldest rows go once ``max_rows`` is reached. The replay command
uses the same class on an in-memory database.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fanouts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT UNIQUE NOT NULL,
    created REAL NOT NULL,
    embedder TEXT NOT NULL,
    input_text TEXT NOT NULL,
    input_vec BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    seq INTEGER NOT NULL REFERENCES fanouts(seq) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    text TEXT NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (seq, backend)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class Fanout:
    """One stored fan-out: the answers of the backends that answered."""

    request_id: str
    input_text: str
    input_vec: np.ndarray  # (d,)
    answers: dict[str, str]  # backend -> text
    vecs: dict[str, np.ndarray]  # backend -> (d,)


class FanoutStore:
    """SQLite-backed list of fan-outs, oldest first. ``path=":memory:"`` keeps it in memory."""

    def __init__(self, path: str, embedder: str, max_rows: int = 100_000):
        self.path, self.embedder, self.max_rows = path, embedder, max_rows
        self.con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.con.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            self.con.execute("PRAGMA journal_mode = WAL")
            self.con.execute("PRAGMA synchronous = NORMAL")
        self.con.executescript(_SCHEMA)

    def close(self) -> None:
        self.con.close()

    def add(self, row: Fanout) -> list[str]:
        """Store a fan-out, in one transaction; returns the request ids of the rows dropped.

        When the store holds more than ``max_rows``, the oldest tenth goes at once, so that the
        router's in-memory copy, which drops the same rows, compacts rarely."""
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            cur = self.con.execute(
                "INSERT INTO fanouts (request_id, created, embedder, input_text, input_vec) VALUES (?, ?, ?, ?, ?)",
                (row.request_id, time.time(), self.embedder, row.input_text,
                 np.asarray(row.input_vec, np.float32).tobytes()))
            seq = cur.lastrowid
            self.con.executemany(
                "INSERT INTO answers (seq, backend, text, vec) VALUES (?, ?, ?, ?)",
                [(seq, b, row.answers[b], np.asarray(row.vecs[b], np.float32).tobytes()) for b in row.answers])
            n = self.con.execute("SELECT COUNT(*) FROM fanouts").fetchone()[0]
            if n <= self.max_rows:
                return []
            keep = self.max_rows - self.max_rows // 10
            oldest = self.con.execute("SELECT seq, request_id FROM fanouts ORDER BY seq LIMIT ?",
                                      (n - keep,)).fetchall()
            self.con.execute("DELETE FROM fanouts WHERE seq <= ?", (oldest[-1][0],))
            return [rid for _, rid in oldest]

    def rows(self) -> list[Fanout]:
        """Every stored fan-out made with this store's embedder, oldest first."""
        found: dict[int, Fanout] = {}
        for seq, rid, text, vec in self.con.execute(
                "SELECT seq, request_id, input_text, input_vec FROM fanouts WHERE embedder = ? ORDER BY seq",
                (self.embedder,)):
            found[seq] = Fanout(rid, text, np.frombuffer(vec, np.float32), {}, {})
        for seq, backend, text, vec in self.con.execute(
                "SELECT a.seq, a.backend, a.text, a.vec FROM answers a JOIN fanouts f ON f.seq = a.seq "
                "WHERE f.embedder = ?", (self.embedder,)):
            found[seq].answers[backend] = text
            found[seq].vecs[backend] = np.frombuffer(vec, np.float32)
        return list(found.values())

    def count(self) -> int:
        return self.con.execute("SELECT COUNT(*) FROM fanouts").fetchone()[0]

    def request_ids(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT request_id FROM fanouts ORDER BY seq")]

    def next_sequence(self) -> int:
        """The number of routed requests so far, then counts this one (the explore draws are
        keyed by it, so a restart continues the same sequence of draws)."""
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            row = self.con.execute("SELECT value FROM meta WHERE key = 'routed'").fetchone()
            n = int(row[0]) if row else 0
            self.con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('routed', ?)", (str(n + 1),))
        return n
