"""The inspection log: one SQLite row per inspected image.

One connection (WAL mode, autocommit, ``check_same_thread=False``) is shared by every
thread of a process and guarded by a lock; other processes may read the file at the
same time. Each record is committed on its own, so a crash or kill loses nothing that
``record`` returned for.

No verdict is silently lost: when the database cannot be written (locked by another
program, read-only, damaged) the record goes to a journal beside it
(``<db name>.pending.jsonl``) and ``record`` raises StoreError. The journal is written
into the database, and removed, on the next successful ``record`` and on every open.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sqlite3
import threading
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from inspector.errors import StoreError

log = logging.getLogger(__name__)

VERDICTS = ("OK", "NG", "ERROR")
SOURCES = ("file", "folder", "camera")


@dataclass
class InspectionRecord:
    product: str
    source: str                 # "file" | "folder" | "camera"
    verdict: str                # "OK" | "NG" | "ERROR"
    image_path: str | None = None
    score: float | None = None
    threshold: float | None = None
    model_id: str | None = None
    error: str | None = None    # reason, for ERROR rows
    regions: list[dict] = field(default_factory=list)  # [{"x","y","w","h","area","peak"}], stored as JSON
    latency_ms: float | None = None
    time: str = ""              # ISO-8601 UTC with milliseconds, filled on record() when empty
    file_key: str | None = None # identity of a file (path|size|mtime_ns) for exactly-once logging; None = always log
    id: int | None = None


# Record fields stored as columns (all but id), in dataclass order; also the CSV columns.
COLUMNS = tuple(f.name for f in fields(InspectionRecord) if f.name != "id")

# Schema migrations: entry i takes the database from version i to version i + 1
# (PRAGMA user_version). A new schema version is one more entry at the end.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: the inspection log
        """CREATE TABLE inspections (
            id          INTEGER PRIMARY KEY,
            product     TEXT NOT NULL,
            source      TEXT NOT NULL,
            verdict     TEXT NOT NULL CHECK (verdict IN ('OK', 'NG', 'ERROR')),
            image_path  TEXT,
            score       REAL,
            threshold   REAL,
            model_id    TEXT,
            error       TEXT,
            regions     TEXT NOT NULL DEFAULT '[]',
            latency_ms  REAL,
            time        TEXT NOT NULL,
            file_key    TEXT
        )""",
        "CREATE INDEX inspections_product_time ON inspections (product, time)",
        "CREATE INDEX inspections_verdict_time ON inspections (verdict, time)",
        "CREATE INDEX inspections_time ON inspections (time)",
        """CREATE UNIQUE INDEX inspections_file_key ON inspections (product, file_key)
            WHERE file_key IS NOT NULL""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT = (
    f"INSERT INTO inspections ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (product, file_key) WHERE file_key IS NOT NULL DO NOTHING"
)
_SELECT = f"SELECT {', '.join(COLUMNS)}, id FROM inspections"


def utc_time(value: str | datetime) -> str:
    """``value`` as the log's time format: ISO-8601 UTC with milliseconds.
    Naive values (no offset) are local time, as in ``datetime.astimezone``."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO-8601 date/time (e.g. 2024-05-01 or 2024-05-01T13:30:00)"
            ) from None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _plain(value):
    """JSON fallback for numpy scalars in regions (the store does not import numpy)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be stored as JSON")


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def _reason(error: sqlite3.Error) -> str:
    """Why the database could not be used, in words, after 'The result database X'."""
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "is locked by another program"
    if code == sqlite3.SQLITE_READONLY:
        return "is read-only (check the permissions of the folder, the file and its -wal and -shm files)"
    if code == sqlite3.SQLITE_NOTADB or code == sqlite3.SQLITE_CORRUPT:
        return "is not an Inspector result database or is damaged (move it away to start a new log)"
    if code == sqlite3.SQLITE_CANTOPEN:
        return "cannot be opened (check that the folder exists and can be written)"
    return f"cannot be used ({error})"


class ResultStore:
    def __init__(self, path: str | os.PathLike, timeout_s: float = 5.0):
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".pending.jsonl")
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"Cannot create the folder for the result database {self.path}: {e}") from e
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreError(f"The result database {self.path} {_reason(e)}.") from e
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.Error as e:
            self._db.close()
            raise StoreError(f"The result database {self.path} {_reason(e)}.") from e
        except StoreError:
            self._db.close()
            raise
        with self._lock:
            try:
                self._write([])  # replay a journal left by an earlier run
            except sqlite3.Error as e:
                log.warning("%d verdict(s) stay in %s: the result database %s %s",
                            self._pending(), self.journal_path, self.path, _reason(e))

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The result database {self.path} was written by a newer version of Inspector "
                f"(schema version {version}; this version knows up to {SCHEMA_VERSION}). "
                "Update Inspector to open it."
            )
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated meanwhile.
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    self._db.execute(sql)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # ---- writing -------------------------------------------------------------------

    def record(self, rec: InspectionRecord) -> bool:
        """Log ``rec`` (filling ``rec.time`` when empty and ``rec.id`` once written).
        Returns False, writing nothing, when (product, file_key) is already logged.
        Raises StoreError when the database cannot be written; the record is then kept
        in the journal, unless the error says it could not be saved anywhere."""
        if not isinstance(rec.product, str) or not rec.product:
            raise ValueError(f"product must be a non-empty name, not {rec.product!r}")
        if rec.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {rec.verdict!r}")
        if rec.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {rec.source!r}")
        rec.time = utc_time(rec.time) if rec.time else utc_time(datetime.now(timezone.utc))
        with self._lock:
            try:
                return self._write([rec])
            except sqlite3.DatabaseError as e:  # locked, read-only, damaged, disk full ...
                if isinstance(e, sqlite3.IntegrityError):  # a bug, not an unavailable database
                    raise
                reason = _reason(e)
                self._keep_in_journal(rec, reason)
                raise StoreError(
                    f"The result database {self.path} {reason}; the verdict was kept in "
                    f"{self.journal_path} and will be written when the database is available."
                ) from e

    def _write(self, new: list[InspectionRecord]) -> bool:
        """In one transaction, write the journal (if any) and then ``new``, and remove
        the journal after commit. Returns whether the last of ``new`` was inserted."""
        pending = self._read_journal()
        if not pending and not new:
            return False
        inserted = False
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for rec in pending + new:
                cur = self._db.execute(_INSERT, self._row(rec))
                inserted = cur.rowcount == 1
                rec.id = cur.lastrowid if inserted else None
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        if pending:
            self.journal_path.unlink(missing_ok=True)
            log.info("wrote %d pending verdict(s) from %s into %s", len(pending), self.journal_path, self.path)
        return inserted

    @staticmethod
    def _row(rec: InspectionRecord) -> tuple:
        values = asdict(rec)
        values["regions"] = json.dumps(rec.regions, default=_plain)
        for name in ("score", "threshold", "latency_ms"):
            values[name] = _optional_float(values[name])
        return tuple(values[name] for name in COLUMNS)

    def _keep_in_journal(self, rec: InspectionRecord, reason: str) -> None:
        """Append ``rec`` to the journal, durably; StoreError if even that fails."""
        line = json.dumps({name: getattr(rec, name) for name in COLUMNS}, default=_plain)
        try:
            with open(self.journal_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise StoreError(
                f"The result database {self.path} {reason}, and the verdict could not be saved "
                f"anywhere: writing {self.journal_path} failed ({e}). "
                "The verdict for this image is NOT logged."
            ) from e

    def _read_journal(self) -> list[InspectionRecord]:
        try:
            text = self.journal_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as e:
            log.warning("cannot read the pending verdicts in %s: %s", self.journal_path, e)
            return []
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(InspectionRecord(**json.loads(line)))
            except (ValueError, TypeError) as e:  # a line cut short by a crash mid-write
                log.warning("skipping unreadable line %d of %s: %s", n, self.journal_path, e)
        return records

    def _pending(self) -> int:
        try:
            with open(self.journal_path, encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def pending_count(self) -> int:
        """Verdicts kept in the journal, not yet in the database."""
        with self._lock:
            return self._pending()

    # ---- reading -------------------------------------------------------------------

    def is_logged(self, product: str, file_key: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM inspections WHERE product = ? AND file_key = ?", (product, file_key)
            ).fetchone()
        return row is not None

    @staticmethod
    def _where(product=None, verdict=None, since=None, until=None) -> tuple[str, list]:
        """SQL filter: since is inclusive, until exclusive."""
        terms, args = [], []
        if product is not None:
            terms.append("product = ?")
            args.append(product)
        if verdict is not None:
            terms.append("verdict = ?")
            args.append(verdict)
        if since is not None:
            terms.append("time >= ?")
            args.append(utc_time(since))
        if until is not None:
            terms.append("time < ?")
            args.append(utc_time(until))
        return (" WHERE " + " AND ".join(terms) if terms else ""), args

    def query(self, product: str | None = None, verdict: str | None = None,
              since: str | datetime | None = None, until: str | datetime | None = None,
              limit: int | None = None, offset: int = 0) -> list[InspectionRecord]:
        """Logged records, newest first. ``since`` is inclusive, ``until`` exclusive."""
        where, args = self._where(product, verdict, since, until)
        sql = f"{_SELECT}{where} ORDER BY time DESC, id DESC LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        records = []
        for row in rows:
            rec = InspectionRecord(**dict(zip(COLUMNS + ("id",), row)))
            rec.regions = json.loads(rec.regions)
            records.append(rec)
        return records

    def count(self, product: str | None = None, verdict: str | None = None,
              since: str | datetime | None = None, until: str | datetime | None = None) -> int:
        where, args = self._where(product, verdict, since, until)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM inspections{where}", args).fetchone()[0]

    def summary(self, product: str | None = None, since: str | datetime | None = None) -> dict[str, int]:
        """Counts per verdict: {"OK": n, "NG": n, "ERROR": n, "total": n}."""
        where, args = self._where(product, since=since)
        with self._lock:
            rows = self._db.execute(
                f"SELECT verdict, COUNT(*) FROM inspections{where} GROUP BY verdict", args
            ).fetchall()
        counts = dict.fromkeys(VERDICTS, 0) | dict(rows)
        counts["total"] = sum(counts.values())
        return counts

    def products(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT product FROM inspections ORDER BY product").fetchall()
        return [product for (product,) in rows]

    def export_csv(self, dest, **filters) -> int:
        """Write the records matching ``filters`` (those of ``query``) as CSV to ``dest``
        (a path, written UTF-8 with BOM so spreadsheets read it, or an open text file).
        Columns are the record fields, regions as JSON. Returns the number of rows."""
        records = self.query(**filters)
        if hasattr(dest, "write"):
            return self._write_csv(dest, records)
        try:
            with open(dest, "w", newline="", encoding="utf-8-sig") as f:
                return self._write_csv(f, records)
        except OSError as e:
            raise StoreError(f"Cannot write the CSV export {dest}: {e}") from e

    @staticmethod
    def _write_csv(out, records: list[InspectionRecord]) -> int:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(InspectionRecord)])
        writer.writeheader()
        for rec in records:
            row = asdict(rec)
            row["regions"] = json.dumps(rec.regions)
            writer.writerow(row)
        return len(records)

    # ---- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
