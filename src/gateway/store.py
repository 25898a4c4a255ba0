"""The gateway's memory: every fanned-out request with its input embedding and each backend's
answer and answer embedding, in SQLite (WAL mode, so readers never block the writer).

Why SQLite: a restarted gateway must route exactly as one that never stopped, so what it learnt
must be on disk when the response is sent. A row is keyed by its request's sequence number (the
explore draws and the routing lag are counted in those), and rows are kept per embedder, since
vectors from two embedders cannot be compared; the oldest go once ``max_rows`` is reached.

An explore fan-out that finishes after its response (``--explore_answer policy``) is written to
``pending`` before the response is sent and leaves it in the transaction that stores its row, so
a gateway restarted in between finishes it. ``src.replay`` uses the same class in memory.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, replace

import numpy as np

from src.io import private_file

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
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    job TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (seq INTEGER PRIMARY KEY, score REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    seq INTEGER NOT NULL,
    judge TEXT NOT NULL,
    first TEXT NOT NULL,
    second TEXT NOT NULL,
    outcome TEXT NOT NULL
);
"""
SCORES_KEPT = 1000  # the adaptive policy compares with the last 200 of them (src.gateway.policy)


@dataclass
class Fanout:
    """One stored fan-out: the answers of the backends that answered with text."""

    seq: int
    request_id: str
    input_text: str
    input_vec: np.ndarray  # (d,)
    answers: dict[str, str]  # backend -> text
    vecs: dict[str, np.ndarray]  # backend -> (d,)
    late: bool = False  # an explore fan-out finished after its response: seen --explore_lag requests later


class StoreUnavailable(Exception):
    """A store call failed or timed out (the database is down, restarting or locked)."""


def store_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the database, not our code, failed."""
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, ConnectionError, TimeoutError)
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        return errors
    return (*errors, psycopg.Error, psycopg_pool.PoolTimeout)


def digest(text: str) -> str:
    """What ``--store_text off`` keeps of a text: equal texts give equal digests (so a backend
    that repeats itself is still noticed), and the text cannot be read back."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def without_text(row: Fanout) -> Fanout:
    """``row`` with its input and answers replaced by their digests (``--store_text off``)."""
    return replace(row, input_text=digest(row.input_text), answers={b: digest(t) for b, t in row.answers.items()})


class FanoutStore:
    """SQLite-backed fan-outs by sequence number. ``path=":memory:"`` keeps it in memory. One
    process owns it (``shared`` is False): nothing else writes rows it must poll for."""

    shared = False
    threads = 1  # one writer; numbering in the order requests asked (replay relies on it)

    def __init__(self, path: str, embedder: str, max_rows: int = 100_000, timeout: float = 5.0):
        self.path, self.embedder, self.max_rows = path, embedder, max_rows
        if path != ":memory:":
            private_file(path)
        # timeout: how long a call waits for another process's write lock before it fails
        self.con = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
        self.con.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            self.con.execute("PRAGMA journal_mode = WAL")
            self.con.execute("PRAGMA synchronous = NORMAL")
        self.con.executescript(_SCHEMA)
        if "late" not in {r[1] for r in self.con.execute("PRAGMA table_info(fanouts)")}:  # a store from before
            self.con.execute("ALTER TABLE fanouts ADD COLUMN late INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self.con.close()

    def poll(self) -> tuple[list[Fanout], list[str]]:
        """Nothing to learn: no other process writes this file."""
        return [], []

    def add(self, row: Fanout, embedder: str | None = None) -> list[str]:
        """Store a fan-out (and clear its pending job) in one transaction; returns the request
        ids of the rows dropped. When the store holds more than ``max_rows``, the oldest tenth
        goes at once, so that the router's in-memory copy, which drops the same rows, compacts rarely."""
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.execute(
                "INSERT INTO fanouts (seq, request_id, created, embedder, input_text, input_vec, late) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.seq, row.request_id, time.time(), embedder or self.embedder, row.input_text,
                 np.asarray(row.input_vec, np.float32).tobytes(), int(row.late)))
            self.con.executemany(
                "INSERT INTO answers (seq, backend, text, vec) VALUES (?, ?, ?, ?)",
                [(row.seq, b, row.answers[b], np.asarray(row.vecs[b], np.float32).tobytes()) for b in row.answers])
            self.con.execute("DELETE FROM pending WHERE seq = ?", (row.seq,))
            n = self.con.execute("SELECT COUNT(*) FROM fanouts").fetchone()[0]
            if n <= self.max_rows:
                return []
            keep = self.max_rows - self.max_rows // 10
            oldest = self.con.execute("SELECT seq, request_id FROM fanouts ORDER BY seq LIMIT ?",
                                      (n - keep,)).fetchall()
            self.con.execute("DELETE FROM fanouts WHERE seq <= ?", (oldest[-1][0],))
            self.con.execute("DELETE FROM verdicts WHERE seq <= ?", (oldest[-1][0],))
            return [rid for _, rid in oldest]

    def rows(self) -> list[Fanout]:
        """Every stored fan-out made with this store's embedder, by sequence number."""
        found: dict[int, Fanout] = {}
        for seq, rid, text, vec, late in self.con.execute(
                "SELECT seq, request_id, input_text, input_vec, late FROM fanouts WHERE embedder = ? ORDER BY seq",
                (self.embedder,)):
            found[seq] = Fanout(seq, rid, text, np.frombuffer(vec, np.float32), {}, {}, bool(late))
        for seq, backend, text, vec in self.con.execute(
                "SELECT a.seq, a.backend, a.text, a.vec FROM answers a JOIN fanouts f ON f.seq = a.seq "
                "WHERE f.embedder = ?", (self.embedder,)):
            found[seq].answers[backend] = text
            found[seq].vecs[backend] = np.frombuffer(vec, np.float32)
        return list(found.values())

    def next_sequence(self) -> int:
        """The number of routed requests so far, then counts this one (the explore draws and
        the routing lag are keyed by it, so a restart continues the same sequence)."""
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            row = self.con.execute("SELECT value FROM meta WHERE key = 'routed'").fetchone()
            n = int(row[0]) if row else 0
            # a store written before rows were keyed by request number: never reuse one of its numbers
            top = self.con.execute("SELECT COALESCE(MAX(seq), -1) FROM fanouts").fetchone()[0]
            n = max(n, top + 1)
            self.con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('routed', ?)", (str(n + 1),))
        return n

    # -- the adaptive policy's history -----------------------------------------------------------
    def add_score(self, seq: int, score: float) -> None:
        """Keep request ``seq``'s uncertainty, so that a restarted gateway's adaptive policy
        compares with the same history as one that never stopped."""
        with self.con:
            self.con.execute("INSERT OR REPLACE INTO scores (seq, score) VALUES (?, ?)", (seq, float(score)))
            self.con.execute("DELETE FROM scores WHERE seq < ?", (seq - SCORES_KEPT,))

    def scores(self) -> dict[int, float]:
        return dict(self.con.execute("SELECT seq, score FROM scores"))

    # -- a judge's verdicts on a fan-out's answers ----------------------------------------------------
    def add_verdicts(self, seq: int, verdicts: list[dict]) -> None:
        """Keep the judge's verdicts on request ``seq``'s answers (a fan-out's or a duel's), so
        a restart and a replay see the same verdicts. Evicted with the rows of their age; a
        verdict is on texts, so it holds whatever the embedder."""
        with self.con:
            self.con.executemany("INSERT INTO verdicts (seq, judge, first, second, outcome) VALUES (?, ?, ?, ?, ?)",
                                 [(seq, v["judge"], v["first"], v["second"], v["outcome"]) for v in verdicts])

    def verdicts(self) -> list[dict]:
        """Every verdict kept, by request."""
        return [{"seq": seq, "judge": j, "first": f, "second": sec, "outcome": o} for seq, j, f, sec, o in
                self.con.execute("SELECT seq, judge, first, second, outcome FROM verdicts ORDER BY seq, rowid")]

    def new_verdicts(self) -> list[dict]:
        """Verdicts other writers stored since the last look: none, this store has one writer."""
        return []

    # -- fan-outs finished after their response ------------------------------------------------------
    def add_pending(self, seq: int, request_id: str, job: dict) -> None:
        with self.con:
            self.con.execute("INSERT OR REPLACE INTO pending (seq, request_id, job) VALUES (?, ?, ?)",
                             (seq, request_id, json.dumps(job)))

    def drop_pending(self, seq: int) -> None:
        with self.con:
            self.con.execute("DELETE FROM pending WHERE seq = ?", (seq,))

    def pending_count(self) -> int:
        return self.con.execute("SELECT COUNT(*) FROM pending").fetchone()[0]

    def pending(self) -> list[tuple[int, str, dict]]:
        """The explore fan-outs whose responses were sent but whose rows are not stored yet."""
        return [(seq, rid, json.loads(job)) for seq, rid, job in
                self.con.execute("SELECT seq, request_id, job FROM pending ORDER BY seq")]
