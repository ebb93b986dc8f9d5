"""The inspection log: one SQLite row per inspected image, and the events that changed what
decides a verdict (training, tolerance, memory bank, product rename and delete).

One connection (WAL mode, autocommit, ``check_same_thread=False``) is shared by every
thread of a process and guarded by a lock; other processes may read and write the file at
the same time. Each record is committed on its own, so a crash or kill loses nothing that
``record`` returned for.

No verdict is silently lost. When the database cannot be written (locked by another
program, read-only, damaged, disk full) the row goes to a journal beside it
(``<db name>.pending.jsonl``, appended and fsynced under a file lock shared by every
process) and ``record`` raises StoreError; when even the journal cannot be written, the row
is kept in memory and ``record`` raises NotLogged. ``retry_pending`` (called on every
``record`` once the database works again, and on open) writes them into the database,
row by row, holding the lock until the journal is removed after the commit (so no process
appends to a journal being replayed). A connection that failed (opened while the file was
read-only) is opened again by ``retry_pending``. Every row carries a unique id, so a replay repeated after a crash
writes nothing twice. A row that cannot be replayed is set aside, not lost, in
``<db name>.rejected.jsonl`` and reported in the log.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sqlite3
import stat
import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from inspector.common import login_name, text, utc_time
from inspector.errors import StoreError
from inspector.files import file_lock

log = logging.getLogger(__name__)

VERDICTS = ("OK", "NG", "ERROR")
SOURCES = ("file", "folder", "camera")
EVENT_KINDS = ("create", "train", "tolerance", "bank", "region", "teach", "defect", "rollback", "rename", "delete",
               "shift", "engineer", "publish", "install", "product", "resign", "key", "learn")
STATION = "*"  # the product of station-wide events: a new shift, the engineer's PIN


@dataclass
class InspectionRecord:
    product: str
    source: str                 # "file" | "folder" | "camera"
    verdict: str                # "OK" | "NG" | "ERROR"
    image_path: str | None = None
    score: float | None = None
    threshold: float | None = None   # the threshold that decided the verdict
    model_id: str | None = None      # checksum prefix of the model version that decided it
    error: str | None = None    # reason, for ERROR rows
    regions: list[dict] = field(default_factory=list)  # [{"x","y","w","h","area","peak"}], stored as JSON
    latency_ms: float | None = None
    time: str = ""              # ISO-8601 UTC with milliseconds, filled on record() when empty
    file_key: str | None = None # identity of a file (path|size|mtime_ns) for exactly-once logging; None = always log
    model_version: int | None = None  # version number of the product's model that decided it
    part_id: int | None = None  # the part's number from its trigger (a PLC's, or the station's count)
    id: int | None = None


@dataclass
class Event:
    """A change of what decides verdicts, as an auditor reads it: who, when, old -> new.
    Station-wide events (a new shift, the engineer's PIN set) have the product STATION."""
    product: str
    kind: str                   # one of EVENT_KINDS
    old: str | None = None
    new: str | None = None
    detail: str | None = None
    user: str = ""              # the station user; the OS login name when not given
    time: str = ""
    id: int | None = None


# Fields stored as columns (all but id), in dataclass order; also the CSV columns.
COLUMNS = tuple(f.name for f in fields(InspectionRecord) if f.name != "id")
EVENT_COLUMNS = tuple(f.name for f in fields(Event) if f.name != "id")
TABLES = {"inspections": (InspectionRecord, COLUMNS), "events": (Event, EVENT_COLUMNS)}

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
    (  # 2: the model version of each verdict, a unique id per row (idempotent replays), events
        "ALTER TABLE inspections ADD COLUMN model_version INTEGER",
        "ALTER TABLE inspections ADD COLUMN uid TEXT",
        "CREATE UNIQUE INDEX inspections_uid ON inspections (uid) WHERE uid IS NOT NULL",
        """CREATE TABLE events (
            id          INTEGER PRIMARY KEY,
            product     TEXT NOT NULL,
            kind        TEXT NOT NULL,
            old         TEXT,
            new         TEXT,
            detail      TEXT,
            user        TEXT NOT NULL,
            time        TEXT NOT NULL,
            uid         TEXT UNIQUE
        )""",
        "CREATE INDEX events_product_time ON events (product, time)",
    ),
    (  # 3: the part number of a triggered inspection (a PLC's); outboxes: how far each shipper
        # (plant database, MQTT) has read each table
        "ALTER TABLE inspections ADD COLUMN part_id INTEGER",
        "CREATE TABLE outbox (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL DEFAULT 0)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT = {table: f"INSERT INTO {table} ({', '.join(columns)}, uid) VALUES ({', '.join('?' * (len(columns) + 1))}) "
                  "ON CONFLICT DO NOTHING" for table, (_, columns) in TABLES.items()}
_SELECT = f"SELECT {', '.join(COLUMNS)}, id FROM inspections"
_SELECT_EVENTS = f"SELECT {', '.join(EVENT_COLUMNS)}, id FROM events"


def _plain(value):
    """JSON fallback for numpy scalars in regions (the store does not import numpy)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be stored as JSON")


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
    if code == sqlite3.SQLITE_FULL:
        return "is on a full disk (free some space)"
    return f"cannot be used ({error})"


@contextmanager
def _transaction(db: sqlite3.Connection):
    """A write transaction (BEGIN IMMEDIATE: the database's write lock first), committed at the
    end unless the body committed it; anything raised rolls it back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        if db.in_transaction:
            db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class NotLogged(StoreError):
    """Neither the database nor its journal could be written: the row is kept in memory only
    and written by a later ``retry_pending``; a file it belongs to must not be moved."""


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append lines to a file and make them durable (fsync)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


class ResultStore:
    def __init__(self, path: str | os.PathLike, timeout_s: float = 5.0):
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".pending.jsonl")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected.jsonl")
        self._lock_path = self.path.with_name(self.path.name + ".pending.lock")
        self._lock = threading.RLock()
        self._unsaved: list[tuple[str, str, dict]] = []  # (table, uid, row) not even in the journal
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"Cannot create the folder for the result database {self.path}: {e}") from e
        self._timeout_s = timeout_s
        self._db = self._connect()
        try:
            self.retry_pending()  # replay a journal left by an earlier run
        except StoreError as e:
            log.warning("%s", e)

    def _connect(self) -> sqlite3.Connection:
        """A connection in WAL mode, the schema migrated. A database whose -wal or -shm file
        SQLite left read-only (it gives them the database's permissions, so after a chmod
        444 they stay read-only once the database is writable again) is made writable first."""
        self._writable_again()
        try:
            db = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"The result database {self.path} {_reason(e)}.") from e
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._migrate(db)
        except sqlite3.Error as e:
            db.close()
            raise StoreError(f"The result database {self.path} {_reason(e)}.") from e
        except StoreError:
            db.close()
            raise
        return db

    def _writable_again(self) -> None:
        if os.name == "nt" or not os.access(self.path, os.W_OK):
            return
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            try:
                if side.exists() and not os.access(side, os.W_OK) and side.stat().st_uid == os.geteuid():
                    os.chmod(side, mode)
                    log.warning("%s was read-only while %s is writable: made it writable again", side, self.path)
            except OSError as e:
                log.warning("cannot make %s writable: %s", side, e)

    def _reconnect(self) -> None:
        """Open the database again: a connection opened while the file was read-only stays
        read-only after the file is writable again."""
        try:
            db = self._connect()
        except StoreError as e:
            log.info("%s", e)
            return
        self._db.close()
        self._db = db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The result database {self.path} was written by a newer version of Inspector "
                f"(schema version {version}; this version knows up to {SCHEMA_VERSION}). "
                "Update Inspector to open it."
            )
        if version == SCHEMA_VERSION:
            return
        with _transaction(db):
            # Read again under the write lock: another process may have migrated meanwhile.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    db.execute(sql)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ---- writing -------------------------------------------------------------------

    def record(self, rec: InspectionRecord) -> bool:
        """Log ``rec`` (filling ``rec.time`` when empty and ``rec.id`` once written).
        Returns False, writing nothing, when (product, file_key) is already logged.
        Raises StoreError when the database cannot be written: the record is then kept in
        the journal, or (NotLogged) in memory, and written by a later ``retry_pending``."""
        if not isinstance(rec.product, str) or not rec.product:
            raise ValueError(f"product must be a non-empty name, not {rec.product!r}")
        if rec.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {rec.verdict!r}")
        if rec.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {rec.source!r}")
        rec.time = utc_time(rec.time) if rec.time else utc_time(datetime.now(timezone.utc))
        return self._insert("inspections", rec, "verdict")

    def record_event(self, product: str, kind: str, old: str | None = None, new: str | None = None,
                     detail: str | None = None, user: str | None = None) -> Event:
        """Record a change (who: ``user``, or the OS login name; when: now; old -> new).
        Like ``record``, an event that cannot be written now is kept and written later."""
        if not isinstance(product, str) or not product:
            raise ValueError(f"product must be a non-empty name, not {product!r}")
        if kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {EVENT_KINDS}, not {kind!r}")
        event = Event(product, kind, old, new, detail, user or login_name(),
                      utc_time(datetime.now(timezone.utc)))
        self._insert("events", event, "event")
        return event

    def _insert(self, table: str, item, what: str) -> bool:
        uid = uuid.uuid4().hex
        row = self._row(table, item)
        with self._lock:
            try:
                with _transaction(self._db):
                    cur = self._db.execute(_INSERT[table], self._values(table, row, uid))
            except sqlite3.Error as e:  # locked, read-only, damaged, disk full ...
                reason = _reason(e)
                self._keep(table, uid, row, reason, what)  # appended; nothing pending is read again
                raise StoreError(
                    f"The result database {self.path} {reason}; the {what} was kept in "
                    f"{self.journal_path} and will be written when the database is available."
                ) from e
            try:  # the database works: what waits goes in now
                self._replay()
            except (sqlite3.Error, OSError) as e:  # the pending rows stay where they are
                log.warning("pending rows of %s not written: %s", self.path, e)
        inserted = cur.rowcount == 1
        item.id = cur.lastrowid if inserted else None
        return inserted

    @staticmethod
    def _row(table: str, item) -> dict:
        """The item as the plain JSON-able values of its columns."""
        row = {name: getattr(item, name) for name in TABLES[table][1]}
        for name, value in row.items():
            if hasattr(value, "item"):  # a numpy scalar
                value = value.item()
            if isinstance(value, str):
                value = text(value)
            elif name in ("score", "threshold", "latency_ms") and value is not None:
                value = float(value)
            row[name] = value
        if table == "inspections":
            row["regions"] = json.loads(json.dumps(item.regions, default=_plain))
        return row

    @staticmethod
    def _values(table: str, row: dict, uid: str | None) -> tuple:
        values = [row[name] for name in TABLES[table][1]]
        if table == "inspections":
            values[COLUMNS.index("regions")] = json.dumps(row["regions"])
        return (*values, uid)

    def _keep(self, table: str, uid: str, row: dict, reason: str, what: str) -> None:
        """Append the row to the journal, durably; else keep it in memory and raise NotLogged."""
        line = json.dumps({"table": table, "uid": uid, "row": row})
        try:
            with file_lock(self._lock_path):
                _append_lines(self.journal_path, [line])
        except OSError as e:
            self._unsaved.append((table, uid, row))
            raise NotLogged(
                f"The result database {self.path} {reason}, and writing {self.journal_path} failed "
                f"({e}): the {what} is NOT logged yet; it is kept in memory and will be written "
                f"when the database is available, unless this program stops first."
            ) from e

    def retry_pending(self) -> int:
        """Write the journal and the rows kept in memory into the database. Returns how many
        rows are still pending; raises StoreError when the database cannot be written."""
        with self._lock:
            try:
                try:
                    self._replay()
                except sqlite3.Error:  # e.g. opened read-only: a new connection may write now
                    self._reconnect()
                    self._replay()
            except sqlite3.Error as e:
                raise StoreError(f"{self._pending()} row(s) stay pending: the result database "
                                 f"{self.path} {_reason(e)}.") from e
            except OSError as e:
                raise StoreError(f"{self._pending()} row(s) stay pending: {e}.") from e
            return self._pending()

    def _claimed(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.name}.pending-*.jsonl"))

    def _replay(self) -> None:
        """Write the journal and the rows kept in memory, row by row, in one transaction; a
        row that cannot be written is set aside. The database's write lock is taken first,
        so nothing is read while it is unavailable; then the journal's file lock, held until
        the journal is removed after the commit, so that no process appends to it meanwhile
        (one journal, appended to, never one file per verdict). Journals claimed by older
        versions (`<db>.pending-<id>.jsonl`) are replayed too."""
        if not (self._unsaved or self.journal_path.is_file() or self._claimed()):
            return
        with _transaction(self._db):
            with file_lock(self._lock_path):
                done, lines = [], []
                for source in [self.journal_path] + self._claimed():
                    try:
                        content = source.read_text(encoding="utf-8", errors="surrogateescape")
                    except FileNotFoundError:  # replayed meanwhile by another process
                        continue
                    except OSError as e:
                        log.warning("cannot read the pending rows in %s: %s", source, e)
                        continue
                    done.append(source)
                    lines += [(line, source) for line in content.splitlines() if line.strip()]
                lines += [(json.dumps({"table": t, "uid": u, "row": r}), None) for t, u, r in self._unsaved]
                rejected = []
                for line, source in lines:
                    self._db.execute("SAVEPOINT line")
                    try:
                        table, uid, row = self._parse(line)
                        self._db.execute(_INSERT[table], self._values(table, row, uid))
                        self._db.execute("RELEASE line")
                    except (ValueError, TypeError, KeyError, sqlite3.IntegrityError, sqlite3.InterfaceError) as e:
                        self._db.execute("ROLLBACK TO line")
                        self._db.execute("RELEASE line")
                        rejected.append(json.dumps({"line": text(line), "reason": f"{type(e).__name__}: {e}",
                                                    "from": str(source) if source else "memory"}))
                if rejected:
                    _append_lines(self.rejected_path, rejected)  # durable before the journal goes
                self._db.execute("COMMIT")  # under the file lock, before the journal goes
                self._unsaved = []
                for source in done:  # a crash before this replays them again: their ids make it harmless
                    source.unlink(missing_ok=True)
        if rejected:
            log.warning("%d pending row(s) could not be written into %s; they are kept in %s",
                        len(rejected), self.path, self.rejected_path)
        if lines:
            log.info("wrote %d pending row(s) into %s", len(lines) - len(rejected), self.path)

    @staticmethod
    def _parse(line: str) -> tuple[str, str | None, dict]:
        """(table, uid, row) of a journal line; a line from before events is a bare record."""
        item = json.loads(line)
        if not isinstance(item, dict):
            raise ValueError("not a JSON object")
        if "table" not in item:  # the same line always gets the same id: replays stay idempotent
            item = {"table": "inspections", "uid": hashlib.sha1(line.encode("utf-8", "replace")).hexdigest(),
                    "row": item}
        table, row = item["table"], item["row"]
        cls, columns = TABLES[table]
        row = asdict(cls(**row))  # every field known, the required ones present
        if table == "inspections":
            if row["verdict"] not in VERDICTS or row["source"] not in SOURCES:
                raise ValueError(f"invalid verdict or source: {row['verdict']!r}, {row['source']!r}")
            row["time"] = utc_time(row["time"])
        return table, item.get("uid"), row

    def _pending(self) -> int:
        count = len(self._unsaved)
        for path in [self.journal_path] + self._claimed():
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    count += sum(1 for line in f if line.strip())
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot count the pending rows in %s: %s", path, e)
        return count

    def pending_files(self) -> list[Path]:
        """The journal files that exist and hold rows not yet in the database."""
        return [p for p in [self.journal_path] + self._claimed() if p.is_file()]

    def pending_count(self) -> int:
        """Rows kept in the journal or in memory, not yet in the database."""
        with self._lock:
            return self._pending()

    def unsaved_count(self) -> int:
        """Rows neither in the database nor in the journal, kept in memory only (after
        ``close``: the rows lost)."""
        with self._lock:
            return len(self._unsaved)

    def rejected_count(self) -> int:
        """Journal lines that could not be written and were set aside in ``rejected_path``."""
        try:
            with open(self.rejected_path, encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def rename_product(self, old: str, new: str, user: str | None = None) -> Event:
        """Move the history (verdicts and events) of ``old`` to ``new`` and record the rename,
        in one transaction. Refused when the log already holds history under ``new``."""
        event = Event(new, "rename", old, new, None, user or login_name(), utc_time(datetime.now(timezone.utc)))
        with self._lock:
            try:
                self._replay()  # pending verdicts of the old name move with it
                with _transaction(self._db):
                    taken = self._db.execute(
                        "SELECT (SELECT COUNT(*) FROM inspections WHERE product = ?) + "
                        "(SELECT COUNT(*) FROM events WHERE product = ?)", (text(new), text(new))).fetchone()[0]
                    if taken:
                        raise StoreError(f"The result log already holds {taken} row(s) under the name '{new}' "
                                         f"(a product deleted earlier?): choose another name.")
                    for table in ("inspections", "events"):
                        self._db.execute(f"UPDATE {table} SET product = ? WHERE product = ?", (text(new), text(old)))
                    self._db.execute(_INSERT["events"], self._values("events", self._row("events", event),
                                                                     uuid.uuid4().hex))
            except sqlite3.Error as e:
                raise StoreError(f"The history of '{old}' cannot be renamed: the result database "
                                 f"{self.path} {_reason(e)}.") from e
        return event

    # ---- outboxes: the log read in order by the shippers (plant database, MQTT) ------

    def outbox_position(self, name: str, new_at_end: bool = False) -> int:
        """The last row id the shipper `name` has shipped. A shipper not seen before starts at
        0 (it ships the whole log), or, with `new_at_end`, at the end of the inspections (it
        ships what is logged from its first start on; remembered at once)."""
        with self._lock:
            try:
                if new_at_end:
                    self._db.execute("INSERT OR IGNORE INTO outbox (name, last_id) "
                                     "SELECT ?, COALESCE(MAX(id), 0) FROM inspections", (name,))
                row = self._db.execute("SELECT last_id FROM outbox WHERE name = ?", (name,)).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"The result database {self.path} {_reason(e)}.") from e
        return 0 if row is None else row[0]

    def set_outbox_position(self, name: str, last_id: int) -> None:
        """Remember that the shipper `name` has shipped every row up to `last_id`."""
        with self._lock:
            try:
                self._db.execute("INSERT INTO outbox (name, last_id) VALUES (?, ?) "
                                 "ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id", (name, int(last_id)))
            except sqlite3.Error as e:
                raise StoreError(f"The result database {self.path} {_reason(e)}.") from e

    def rows_after(self, table: str, last_id: int, limit: int) -> list[tuple[int, dict]]:
        """Up to `limit` rows of `table` ("inspections" or "events") after the id `last_id`,
        in log order, as (id, {column: value, "uid": the row's unique id}): the uid is the
        identity a consumer de-duplicates on; regions as they are stored (JSON text)."""
        columns = TABLES[table][1]
        with self._lock:
            try:
                rows = self._db.execute(f"SELECT id, COALESCE(uid, 'row-' || id), {', '.join(columns)} FROM {table} "
                                        f"WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"The result database {self.path} {_reason(e)}.") from e
        return [(row[0], {"uid": row[1]} | dict(zip(columns, row[2:]))) for row in rows]

    def rows_behind(self, table: str, last_id: int) -> int:
        """How many rows of `table` come after the id `last_id`."""
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM {table} WHERE id > ?", (last_id,)).fetchone()[0]

    # ---- reading -------------------------------------------------------------------

    def logged_verdict(self, product: str, file_key: str) -> str | None:
        """The verdict logged for this version of a file, or None."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT verdict FROM inspections WHERE product = ? AND file_key = ?",
                    (text(product), text(file_key))).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"The result database {self.path} {_reason(e)}.") from e
        return None if row is None else row[0]

    def is_logged(self, product: str, file_key: str) -> bool:
        return self.logged_verdict(product, file_key) is not None

    @staticmethod
    def _where(product=None, verdict=None, since=None, until=None) -> tuple[str, list]:
        """SQL filter: since is inclusive, until exclusive."""
        terms, args = [], []
        if product is not None:
            terms.append("product = ?")
            args.append(text(product))
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

    def events(self, product: str | None = None, since: str | datetime | None = None,
               until: str | datetime | None = None, limit: int | None = None) -> list[Event]:
        """Recorded changes, newest first."""
        where, args = self._where(product, since=since, until=until)
        with self._lock:
            rows = self._db.execute(f"{_SELECT_EVENTS}{where} ORDER BY time DESC, id DESC LIMIT ?",
                                    args + [-1 if limit is None else limit]).fetchall()
        return [Event(**dict(zip(EVENT_COLUMNS + ("id",), row))) for row in rows]

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
            if self._unsaved:  # a last try: the database, else the journal
                try:
                    self._replay()
                except (sqlite3.Error, OSError):
                    try:
                        with file_lock(self._lock_path):
                            _append_lines(self.journal_path, [json.dumps({"table": t, "uid": u, "row": r})
                                                              for t, u, r in self._unsaved])
                        self._unsaved = []
                    except OSError as e:
                        log.error("%d row(s) could not be written into %s nor %s and are lost (%s): %s",
                                  len(self._unsaved), self.path, self.journal_path, e, self._unsaved)
            self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
