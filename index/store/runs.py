"""The run log: one row per `kb index` run, `running` until it ends `ok`, `partial` (some files
could not be read) or never (killed: the next run checks the store once before writing)."""

from __future__ import annotations

import json
import sqlite3
import time


def start(conn: sqlite3.Connection, started: float) -> int:
    """Log a run as running; its id. Call inside a (bookkeeping) transaction."""
    return conn.execute("INSERT INTO runs(started, status) VALUES (?, 'running')", (started,)).lastrowid


def finish(conn: sqlite3.Connection, run_id: int, status: str, stats: dict) -> None:
    """Log a run's end with its report. Call inside a (bookkeeping) transaction."""
    conn.execute("UPDATE runs SET finished=?, status=?, stats=? WHERE id=?",
                 (time.time(), status, json.dumps(stats), run_id))


def last(conn: sqlite3.Connection) -> tuple[int, float, float | None, str, str | None] | None:
    """(id, started, finished, status, stats JSON) of the latest run, None before the first."""
    return conn.execute("SELECT id, started, finished, status, stats FROM runs ORDER BY id DESC LIMIT 1").fetchone()


def last_stats(conn: sqlite3.Connection) -> dict | None:
    """The report of the latest run that finished, None if none did."""
    row = conn.execute("SELECT stats FROM runs WHERE stats IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(row[0]) if row else None
