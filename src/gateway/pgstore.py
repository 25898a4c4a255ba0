"""The gateway's memory on PostgreSQL, shared by several gateway replicas (``--store postgresql://...``).

Why: one SQLite file serves one process. Behind a load balancer, replicas must learn from each
other's fan-outs and forget the same evicted rows, and request numbers (the explore draws and the
routing lag are counted in them) must never repeat. Here:

- request numbers come from a database sequence, so they are unique across replicas and a
  restart continues them;
- each replica keeps its in-memory mirror (the router) and :meth:`poll` fetches the rows other
  replicas stored since its last look, and the lowest row still kept: rows below it were evicted
  (eviction drops the oldest by request number, under one lock, whoever triggers it);
- an explore fan-out answered but not yet stored is in ``pending`` with its replica's id. Each
  replica holds a session advisory lock named by its id while it lives; a replica that starts
  takes over the pending jobs of replicas whose lock is free (they died), never a live one's.

The interface is ``src.gateway.ports.Store``, as :class:`src.gateway.store.FanoutStore`'s.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import zlib
from collections import deque

import numpy as np

from src.gateway.store import SCORES_KEPT, Fanout

_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS smoothie_requests MINVALUE 0 START 0;
CREATE TABLE IF NOT EXISTS smoothie_fanouts (
    id BIGSERIAL PRIMARY KEY,
    seq BIGINT UNIQUE NOT NULL,
    request_id TEXT UNIQUE NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    embedder TEXT NOT NULL,
    input_text TEXT NOT NULL,
    input_vec BYTEA NOT NULL,
    late BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS smoothie_fanouts_embedder ON smoothie_fanouts (embedder, id);
CREATE TABLE IF NOT EXISTS smoothie_answers (
    seq BIGINT NOT NULL REFERENCES smoothie_fanouts(seq) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    text TEXT NOT NULL,
    vec BYTEA NOT NULL,
    PRIMARY KEY (seq, backend)
);
CREATE TABLE IF NOT EXISTS smoothie_scores (seq BIGINT PRIMARY KEY, score DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS smoothie_verdicts (
    id BIGSERIAL PRIMARY KEY,
    seq BIGINT NOT NULL,
    judge TEXT NOT NULL,
    first TEXT NOT NULL,
    second TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS smoothie_pending (
    seq BIGINT PRIMARY KEY,
    request_id TEXT NOT NULL,
    job TEXT NOT NULL,
    owner TEXT NOT NULL
);
"""
_SCHEMA_LOCK = 0x5A00_0001  # advisory lock: one replica creates the schema at a time
_EVICT_LOCK = 0x5A00_0002  # advisory lock: one eviction at a time
RESCAN_SECONDS = 5.0  # ids are drawn before commit: rows with ids this recent are looked at again


def is_postgres(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def check_postgres(dsn: str) -> None:
    """Connect once (at start): a missing driver or an unreachable database is one line naming --store."""
    from src.cli import UserError

    try:
        import psycopg
    except ImportError:
        raise UserError("--store postgresql://...: needs psycopg 3 (pip install 'psycopg[binary]')") from None
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--store {_redact(dsn)}: cannot connect ({first})") from None


def _owner_lock(owner: str) -> int:
    return zlib.crc32(owner.encode()) & 0x7FFF_FFFF


class PostgresFanoutStore:
    """Fan-outs in PostgreSQL (psycopg 3), mirrored in each replica's memory; ``shared``: other
    replicas write rows too, so the core polls for them.

    Connections come from a pool (``psycopg_pool``) that checks each one before use, so a
    restarted or failed-over database costs the calls made while it was down, nothing after.
    Every statement runs under ``statement_timeout`` and ``lock_timeout`` (``timeout``), so a
    table locked by a migration fails a call in bounded time instead of holding it. The
    replica's liveness lock lives on a connection of its own; :meth:`poll` re-opens it and takes
    the lock again when the database dropped it. The methods are called from the core's store
    threads, several at once; the mirror's bookkeeping is guarded by a lock."""

    shared = True
    threads = 4  # a blocked insert must not hold back request numbering

    def __init__(self, dsn: str, embedder: str, max_rows: int = 100_000, timeout: float = 5.0):
        import psycopg
        from psycopg_pool import ConnectionPool

        self.path, self.embedder, self.max_rows, self.timeout = dsn, embedder, max_rows, timeout
        self.owner = uuid.uuid4().hex
        ms = max(int(timeout * 1000), 1)
        self._kwargs = {"autocommit": True, "connect_timeout": max(int(timeout), 2),
                        "options": f"-c statement_timeout={ms} -c lock_timeout={ms}"}
        try:
            self._lock_con = psycopg.connect(dsn, **self._kwargs)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConnectionError(f"cannot connect to {_redact(dsn)}: {first}") from None
        with self._lock_con.transaction():
            self._lock_con.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self._lock_con.execute(_SCHEMA)
        self._lock_con.execute("SELECT pg_advisory_lock(%s)", (_owner_lock(self.owner),))  # held while we live
        self.reconnects = 0
        self.pool = ConnectionPool(dsn, min_size=1, max_size=self.threads + 1, kwargs=self._kwargs,
                                   check=ConnectionPool.check_connection, timeout=timeout, open=True,
                                   name="smoothie-store")
        self._mirror = threading.Lock()
        self._known: dict[int, str] = {}  # seq -> request id of the rows in this replica's mirror
        self._last_id = 0
        # per table: (when seen, highest id then), for the rescan
        self._recent: dict[str, deque[tuple[float, int]]] = {t: deque() for t in ("smoothie_fanouts",
                                                                                 "smoothie_verdicts")}
        self._verdict_ids: set[int] = set()  # verdicts this replica made or has seen
        self._last_verdict = 0

    def close(self) -> None:
        self.pool.close()
        self._lock_con.close()

    def _keep_lock(self) -> None:
        """Re-open the liveness connection and re-take this replica's lock if the database
        dropped them (a restart): until then other replicas may take over its pending jobs."""
        import psycopg

        try:
            self._lock_con.execute("SELECT 1")
            return
        except psycopg.Error:
            pass
        try:
            self._lock_con.close()
        finally:
            self._lock_con = psycopg.connect(self.path, **self._kwargs)
        self._lock_con.execute("SELECT pg_advisory_lock(%s)", (_owner_lock(self.owner),))
        self.reconnects += 1

    # -- rows -------------------------------------------------------------------------------------
    def add(self, row: Fanout, embedder: str | None = None) -> list[str]:
        """Store a fan-out and clear its pending job in one transaction; evict the oldest tenth
        when over ``max_rows`` (whichever replica gets there). Returns the request ids dropped
        that this replica's mirror holds."""
        with self.pool.connection() as con, con.transaction():
            cur = con.execute(
                "INSERT INTO smoothie_fanouts (seq, request_id, created, embedder, input_text, input_vec, late) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                (row.seq, row.request_id, time.time(), embedder or self.embedder, row.input_text,
                 np.asarray(row.input_vec, np.float32).tobytes(), row.late))
            if cur.fetchone() is not None:
                with con.cursor() as c:
                    c.executemany("INSERT INTO smoothie_answers (seq, backend, text, vec) VALUES (%s, %s, %s, %s)",
                                  [(row.seq, b, row.answers[b], np.asarray(row.vecs[b], np.float32).tobytes())
                                   for b in row.answers])
            con.execute("DELETE FROM smoothie_pending WHERE seq = %s", (row.seq,))
            n = con.execute("SELECT COUNT(*) FROM smoothie_fanouts").fetchone()[0]
            if n > self.max_rows:
                con.execute("SELECT pg_advisory_xact_lock(%s)", (_EVICT_LOCK,))
                n = con.execute("SELECT COUNT(*) FROM smoothie_fanouts").fetchone()[0]
                if n > self.max_rows:
                    keep = self.max_rows - self.max_rows // 10
                    con.execute("DELETE FROM smoothie_fanouts WHERE seq IN (SELECT seq FROM smoothie_fanouts "
                                "ORDER BY seq LIMIT %s)", (n - keep,))
                    con.execute("DELETE FROM smoothie_verdicts WHERE seq < (SELECT MIN(seq) FROM smoothie_fanouts)")
        with self._mirror:
            self._known[row.seq] = row.request_id
        return self._forget_evicted()

    def _forget_evicted(self) -> list[str]:
        with self.pool.connection() as con:
            low = con.execute("SELECT MIN(seq) FROM smoothie_fanouts").fetchone()[0]
        with self._mirror:
            gone = [s for s in self._known if low is None or s < low]
            return [self._known.pop(s) for s in sorted(gone)]

    def _fetch(self, con, where: str, params: tuple) -> list[Fanout]:
        found: dict[int, Fanout] = {}
        for seq, rid, text, vec, late in con.execute(
                f"SELECT seq, request_id, input_text, input_vec, late FROM smoothie_fanouts WHERE embedder = %s "
                f"AND {where} ORDER BY seq", (self.embedder, *params)):
            found[seq] = Fanout(seq, rid, text, np.frombuffer(vec, np.float32), {}, {}, bool(late))
        if found:
            for seq, backend, text, vec in con.execute(
                    "SELECT seq, backend, text, vec FROM smoothie_answers WHERE seq = ANY(%s)", (list(found),)):
                found[seq].answers[backend] = text
                found[seq].vecs[backend] = np.frombuffer(vec, np.float32)
        return list(found.values())

    def rows(self) -> list[Fanout]:
        """Every stored fan-out made with this store's embedder, by request number."""
        with self.pool.connection() as con:
            self._mark(con)
            rows = self._fetch(con, "TRUE", ())
        with self._mirror:
            self._known.update((r.seq, r.request_id) for r in rows)
        return rows

    def _mark(self, con, table: str = "smoothie_fanouts") -> int:
        """Note the highest id of ``table`` now; return the id below which every one has been seen
        (the highest id of RESCAN_SECONDS ago: ids are drawn before commit)."""
        now = time.monotonic()
        top = con.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
        recent = self._recent[table]
        with self._mirror:
            recent.append((now, top))
            while len(recent) > 1 and recent[1][0] < now - RESCAN_SECONDS:
                recent.popleft()
            return recent[0][1]

    def poll(self) -> tuple[list[Fanout], list[str]]:
        """(rows other replicas stored since the last look, request ids evicted since). Ids are
        drawn before commit, so the last few seconds' ids are looked at again; rows already in the
        mirror are skipped by request number. Keeps the liveness lock held, too."""
        self._keep_lock()
        with self.pool.connection() as con:
            since = self._last_id
            self._last_id = self._mark(con)
            with self._mirror:
                known = set(self._known)
            new = [s for (s,) in con.execute(
                "SELECT seq FROM smoothie_fanouts WHERE embedder = %s AND id > %s", (self.embedder, since))
                if s not in known]
            rows = self._fetch(con, "seq = ANY(%s)", (new,)) if new else []
        with self._mirror:
            self._known.update((r.seq, r.request_id) for r in rows)
        return rows, self._forget_evicted()

    def next_sequence(self) -> int:
        """This request's number, from the database sequence: unique across replicas and restarts."""
        with self.pool.connection() as con:
            return int(con.execute("SELECT nextval('smoothie_requests')").fetchone()[0])

    # -- the adaptive policy's history -----------------------------------------------------------
    def add_score(self, seq: int, score: float) -> None:
        with self.pool.connection() as con:
            con.execute("INSERT INTO smoothie_scores (seq, score) VALUES (%s, %s) ON CONFLICT (seq) DO UPDATE "
                        "SET score = EXCLUDED.score", (seq, float(score)))
            con.execute("DELETE FROM smoothie_scores WHERE seq < %s", (seq - SCORES_KEPT,))

    def scores(self) -> dict[int, float]:
        with self.pool.connection() as con:
            return dict(con.execute("SELECT seq, score FROM smoothie_scores").fetchall())

    # -- a judge's verdicts on a fan-out's answers ----------------------------------------------------
    def add_verdicts(self, seq: int, verdicts: list[dict]) -> None:
        with self.pool.connection() as con:
            with con.transaction():
                ids = [con.execute("INSERT INTO smoothie_verdicts (seq, judge, first, second, outcome) "
                                   "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                                   (seq, v["judge"], v["first"], v["second"], v["outcome"])).fetchone()[0]
                       for v in verdicts]
                with self._mirror:  # before the commit: the poller never sees them unmarked
                    self._verdict_ids.update(ids)  # this replica's own: never handed back by new_verdicts

    @staticmethod
    def _as_verdicts(found) -> list[dict]:
        return [{"seq": seq, "judge": j, "first": f, "second": sec, "outcome": o} for _, seq, j, f, sec, o in found]

    def verdicts(self) -> list[dict]:
        """Every replica's verdicts, by request (read at start; later ones come by new_verdicts)."""
        with self.pool.connection() as con:
            self._last_verdict = self._mark(con, "smoothie_verdicts")
            found = con.execute("SELECT id, seq, judge, first, second, outcome FROM smoothie_verdicts "
                                "ORDER BY seq, id").fetchall()
        with self._mirror:
            self._verdict_ids.update(row[0] for row in found)
        return self._as_verdicts(found)

    def new_verdicts(self) -> list[dict]:
        """The verdicts other replicas stored since the last look (the poller's, every few seconds),
        so a judge's evidence reaches every replica, not only the one that asked. Ids are drawn
        before commit, so recent ids are looked at again; those already seen are skipped."""
        with self.pool.connection() as con:
            since = self._last_verdict
            self._last_verdict = self._mark(con, "smoothie_verdicts")
            found = con.execute("SELECT id, seq, judge, first, second, outcome FROM smoothie_verdicts WHERE id > %s "
                                "ORDER BY seq, id", (since,)).fetchall()
        with self._mirror:
            fresh = [row for row in found if row[0] not in self._verdict_ids]
            # ids at or below ``since`` are never fetched again: only the window above it is remembered
            self._verdict_ids = {i for i in self._verdict_ids if i > since} | {row[0] for row in fresh}
        return self._as_verdicts(fresh)

    # -- fan-outs finished after their response ------------------------------------------------------
    def add_pending(self, seq: int, request_id: str, job: dict) -> None:
        with self.pool.connection() as con:
            con.execute("INSERT INTO smoothie_pending (seq, request_id, job, owner) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (seq) DO UPDATE SET job = EXCLUDED.job, owner = EXCLUDED.owner",
                        (seq, request_id, json.dumps(job), self.owner))

    def drop_pending(self, seq: int) -> None:
        with self.pool.connection() as con:
            con.execute("DELETE FROM smoothie_pending WHERE seq = %s", (seq,))

    def pending_count(self) -> int:
        with self.pool.connection() as con:
            return con.execute("SELECT COUNT(*) FROM smoothie_pending").fetchone()[0]

    def pending(self) -> list[tuple[int, str, dict]]:
        """Pending jobs this replica owns, after taking over those of replicas that died (their
        session lock is free); a live replica's jobs stay its own."""
        with self.pool.connection() as con:
            owners = [o for (o,) in con.execute("SELECT DISTINCT owner FROM smoothie_pending WHERE owner <> %s",
                                                (self.owner,))]
            for owner in owners:
                with con.transaction():
                    if con.execute("SELECT pg_try_advisory_xact_lock(%s)", (_owner_lock(owner),)).fetchone()[0]:
                        con.execute("UPDATE smoothie_pending SET owner = %s WHERE owner = %s", (self.owner, owner))
            return [(seq, rid, json.loads(job)) for seq, rid, job in con.execute(
                "SELECT seq, request_id, job FROM smoothie_pending WHERE owner = %s ORDER BY seq", (self.owner,))]


def _redact(dsn: str) -> str:
    """The DSN without its password (URL form, or ``password=`` in key=value form)."""
    from src.gateway.redact import Redactor, url_password

    return Redactor([url_password(dsn)])(dsn)
