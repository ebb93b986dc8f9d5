"""The plant database (PostgreSQL, psycopg 3): every station's verdicts and events in one place, and product models
shared between stations. Protocol code at the edge: the core, the store and the services never import psycopg.

- Shipping: the station's SQLite log stays the source of truth and is the outbox. The Shipper reads it in row order
  after its bookmark (the log's `outbox` table, one row per table: 'plant.inspections', 'plant.events') and inserts
  batches keyed by (station, local row id) with ON CONFLICT DO NOTHING, in one transaction each; the bookmark moves
  only after the commit, so a crash or an outage delays rows and never loses or doubles them. A station's name in
  the plant is its database login (row-level security, see plant_schema.sql).
- Models: an engineer publishes a kept version (its two files, their checksum, who, when); a station lists them and
  installs one, checked against the checksum and in full before it becomes the product's new local version
  (Changes.install). Following a product, the shipper installs each newly published version, and the line switches
  to it between two parts.
- The plant view: stations, model versions, counts, yield and NG rate per hour and per station.

The connection comes from a URL (`--plant`, or INSPECTOR_PLANT); its password from libpq's password file
(~/.pgpass, PGPASSFILE) or PGPASSWORD, never from the URL; libpq's TLS options (sslmode=verify-full,
sslrootcert=...) in the URL are passed through."""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import conninfo, errors

from .changes import Changes
from .common import yield_rate
from .core.model_store import BANK_FILE, META_FILE, load_model, version_folder
from .errors import ModelError, PlantError
from .station import Message, no_message
from .store.results import COLUMNS, EVENT_COLUMNS, ResultStore

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
URL_VARIABLE = "INSPECTOR_PLANT"
SHIPPER = "plant"  # the shipper's name in the log's outbox table
BATCH = 2000
SILENT_S = 600.0  # a station that has not reported for this long is silent
CONNECT_TIMEOUT_S = 5

_RESULT_COLUMNS = ("product", "source", "verdict", "image_path", "score", "threshold", "model_id", "model_version",
                   "error", "regions", "latency_ms", "time")
_TYPES = {"score": "float8", "threshold": "float8", "latency_ms": "float8", "model_version": "int4",
          "regions": "jsonb", "time": "timestamptz"}
assert set(_RESULT_COLUMNS) <= set(COLUMNS)

_SHIP_RESULTS = f"""
WITH rows AS (
    SELECT * FROM unnest(%s::int8[], {', '.join(f'%s::{_TYPES.get(c, "text")}[]' for c in _RESULT_COLUMNS)})
        AS r(local_id, {', '.join(_RESULT_COLUMNS)})
), ins AS (
    INSERT INTO results (local_id, {', '.join(_RESULT_COLUMNS)}) SELECT * FROM rows
    ON CONFLICT DO NOTHING
    RETURNING local_id, product, verdict, time, model_version, model_id
), counted AS (
    INSERT INTO hourly (product, hour, ok, ng, error)
    SELECT product, date_trunc('hour', time, 'UTC'), count(*) FILTER (WHERE verdict = 'OK'),
           count(*) FILTER (WHERE verdict = 'NG'), count(*) FILTER (WHERE verdict = 'ERROR')
    FROM ins GROUP BY 1, 2
    ON CONFLICT (station, product, hour) DO UPDATE
        SET ok = hourly.ok + excluded.ok, ng = hourly.ng + excluded.ng, error = hourly.error + excluded.error
)
INSERT INTO station_products (product, model_version, model_id, last_local_id, last_time)
SELECT DISTINCT ON (product) product, model_version, model_id, local_id, time FROM ins ORDER BY product, local_id DESC
ON CONFLICT (station, product) DO UPDATE
    SET model_version = excluded.model_version, model_id = excluded.model_id,
        last_local_id = excluded.last_local_id, last_time = excluded.last_time
    WHERE station_products.last_local_id < excluded.last_local_id
"""
_SHIP_EVENTS = f"""
INSERT INTO events (local_id, {', '.join(f'"{c}"' for c in EVENT_COLUMNS)})
SELECT * FROM unnest(%s::int8[], {', '.join(f'%s::{_TYPES.get(c, "text")}[]' for c in EVENT_COLUMNS)})
ON CONFLICT DO NOTHING
"""
_REPORT = """
INSERT INTO stations (last_seen, behind, clock_skew_s) VALUES (now(), %s, extract(epoch FROM now() - %s::timestamptz))
ON CONFLICT (station) DO UPDATE SET last_seen = excluded.last_seen, behind = excluded.behind,
    clock_skew_s = excluded.clock_skew_s
"""
TABLES = {"inspections": (_SHIP_RESULTS, _RESULT_COLUMNS), "events": (_SHIP_EVENTS, EVENT_COLUMNS)}


# ---- the connection ----------------------------------------------------------------------------

def plant_url(url: str | None = None) -> str | None:
    """The plant database's URL: the one given, else INSPECTOR_PLANT, else None (no plant)."""
    return url or os.environ.get(URL_VARIABLE) or None


def where(url: str) -> str:
    """The database a URL names, for messages: user@host:port/dbname."""
    try:
        p = conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "(an unreadable address)"
    return f"{p.get('user', '')}@{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '')}"


def _checked(url: str) -> str:
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise PlantError(f"The plant database address {url!r} cannot be read ({exc}): give a URL such as "
                         f"postgresql://line1@plant-db/inspector.") from None
    if "password" in params:
        raise PlantError("The plant database address holds a password: take it out of the address and put it "
                         "in the password file (~/.pgpass, or the file PGPASSFILE names) or in PGPASSWORD.")
    return url


def connect(url: str, check_schema: bool = True) -> psycopg.Connection:
    """A connection to the plant database, its schema checked; raises PlantError saying what
    to do (a wrong password, an unreachable server, a login without rights, an old schema)."""
    try:
        con = psycopg.connect(_checked(url), connect_timeout=CONNECT_TIMEOUT_S, application_name="inspector")
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        hint = (" Check the password in the password file (~/.pgpass or PGPASSFILE) or PGPASSWORD."
                if "password" in reason else "")
        raise PlantError(f"Cannot connect to the plant database {where(url)}: {reason}.{hint}") from None
    if not check_schema:
        return con
    try:
        found = con.execute("SELECT max(version) FROM plant_schema").fetchone()[0]
        con.rollback()
    except psycopg.Error as exc:
        con.close()
        if isinstance(exc, errors.UndefinedTable):
            raise PlantError(f"The plant database {where(url)} has no Inspector tables: its owner sets them up "
                             f"with 'inspector plant setup' (or psql -f plant_schema.sql).") from None
        if isinstance(exc, errors.InsufficientPrivilege):
            raise PlantError(f"The login of {where(url)} may not use the Inspector tables: make it a member of "
                             f"inspector_station (a station) or inspector_engineer.") from None
        raise _lost(url, exc) from None
    if found != SCHEMA_VERSION:
        con.close()
        if found is None or found < SCHEMA_VERSION:
            raise PlantError(f"The plant database {where(url)} has the Inspector schema version {found}; this "
                             f"Inspector needs version {SCHEMA_VERSION}: its owner upgrades it with "
                             f"'inspector plant setup'. Nothing was shipped or changed.")
        raise PlantError(f"The plant database {where(url)} has the Inspector schema version {found}, newer than "
                         f"this Inspector knows ({SCHEMA_VERSION}): update Inspector on this station.")
    return con


def _lost(url: str, exc: psycopg.Error) -> PlantError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PlantError(f"The plant database {where(url)} failed: {reason}")


def setup(url: str) -> None:
    """Create or upgrade the plant schema (plant_schema.sql), as the database's owner."""
    script = resources.files("inspector").joinpath("plant_schema.sql").read_text(encoding="utf-8")
    with connect(url, check_schema=False) as con:
        try:
            con.execute(script)
            con.commit()
        except psycopg.Error as exc:
            raise PlantError(f"Setting up the plant database {where(url)} failed (run it as the database's "
                             f"owner): {exc}") from None


# ---- shipping the log --------------------------------------------------------------------------

@dataclass
class PlantStatus:
    """Where shipping stands: connected or not (and why), how many rows are behind."""
    connected: bool = False
    behind: int = 0
    error: str | None = None
    shipped: int = 0  # rows shipped since the shipper started

    def describe(self) -> str:
        if self.connected:
            return f"Plant database: connected, {self.behind} row(s) behind."
        return f"Plant database: NOT connected, {self.behind} row(s) waiting" + (f" ({self.error})" if self.error else "")


class Shipper:
    """Ships the log to the plant database, in order, exactly once; and, for the products in
    `follow`, installs newly published model versions through `changes` (inspector.changes)."""

    def __init__(self, store: ResultStore, url: str, batch: int = BATCH, interval_s: float = 1.0,
                 follow: tuple[str, ...] | list[str] = (), changes: Changes | None = None,
                 on_message: Message = no_message):
        self.store, self.url, self.batch, self.interval_s = store, _checked(url), batch, interval_s
        self.follow, self.changes, self.on_message = tuple(follow), changes, on_message
        self.clock = lambda: datetime.now(timezone.utc)  # the station's clock, reported with each batch
        self._con: psycopg.Connection | None = None
        self._status = PlantStatus()
        self._refused: dict[str, int] = {}  # product -> a published version that could not be installed
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def status(self) -> PlantStatus:
        s = self._status
        return PlantStatus(s.connected, self.behind(), s.error, s.shipped)

    def check(self) -> PlantStatus:
        """Connect (when not connected) and say where shipping stands."""
        try:
            if self._con is None or self._con.closed:
                self._con = connect(self.url)
            self._status.connected, self._status.error = True, None
        except PlantError as exc:
            self._status.connected, self._status.error = False, str(exc)
        return self.status()

    def behind(self) -> int:
        """Rows of the log not yet in the plant database."""
        return sum(self.store.rows_behind(t, self.store.outbox_position(f"{SHIPPER}.{t}")) for t in TABLES)

    def ship(self) -> int:
        """Ship every row the plant database lacks, in batches; returns how many. Raises
        PlantError (nothing lost: the rows stay behind the bookmark) when it fails."""
        shipped = 0
        try:
            if self._con is None or self._con.closed:
                self._con = connect(self.url)
            for table, (sql, columns) in TABLES.items():
                name = f"{SHIPPER}.{table}"
                while True:
                    last = self.store.outbox_position(name)
                    rows = self.store.rows_after(table, last, self.batch)
                    if not rows:
                        break
                    arrays = [[i for i, _ in rows]] + [[row[c] for _, row in rows] for c in columns]
                    behind = self.behind() - len(rows)
                    with self._con.transaction():
                        self._con.execute(sql, arrays)
                        self._con.execute(_REPORT, (behind, self.clock()))
                    self.store.set_outbox_position(name, rows[-1][0])
                    shipped += len(rows)
                    self._status.shipped += len(rows)
            if not shipped:  # a report that the station is alive and has nothing behind
                with self._con.transaction():
                    self._con.execute(_REPORT, (0, self.clock()))
        except (psycopg.Error, PlantError) as exc:
            error = exc if isinstance(exc, PlantError) else _lost(self.url, exc)
            self._drop()
            self._status.connected, self._status.error = False, str(error)
            raise error from None
        self._status.connected, self._status.error = True, None
        return shipped

    def follow_models(self) -> list:
        """Install the newest published version of each followed product, when it is new here."""
        installed = []
        if self.follow and (self._con is None or self._con.closed):
            self._con = connect(self.url)
        for product in self.follow:
            try:
                newest = newest_published(self._con, product)
                if newest is None or newest <= _installed(self.store, product) or self._refused.get(product) == newest:
                    continue
                model = install(self.url, self.changes, product, newest)
            except ModelError as exc:  # refused (changed bytes, a damaged model): said once, tried no more
                self._refused[product] = newest
                self.on_message("error", f"Published version {newest} of '{product}' is not installed: {exc}")
                continue
            except psycopg.Error as exc:
                self._drop()
                raise _lost(self.url, exc) from None
            installed.append(model)
            self.on_message("info", f"Installed published version {newest} of '{product}' as its model "
                                    f"version {model.version}.")
        return installed

    def run(self, stop: threading.Event) -> None:
        """Ship and follow until `stop` is set; after a failure, try again every interval."""
        was = None
        while not stop.is_set():
            try:
                self.ship()
                if self.follow:
                    self.follow_models()
                if was is not None:
                    self.on_message("info", "Connected to the plant database again; the log is shipped.")
                was = None
            except PlantError as exc:
                if str(exc) != was:
                    self.on_message("warning", f"{exc} The line goes on; the log is shipped when it is back.")
                was = str(exc)
            except Exception as exc:  # noqa: BLE001 - the shipper never stops the line
                log.error("shipping to the plant database failed", exc_info=exc)
                was = str(exc)
            stop.wait(self.interval_s)
        self._drop()

    def start(self) -> Shipper:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="plant shipper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the shipping thread (when started) and close the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._drop()

    def _drop(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except psycopg.Error:
                pass
        self._con = None


# ---- shared models -----------------------------------------------------------------------------

def checksum(model_json: bytes, memory_bank: bytes) -> str:
    """SHA-256 over a version's two files (each prefixed by its length)."""
    h = hashlib.sha256()
    for data in (model_json, memory_bank):
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def _model_bookmark(product: str) -> str:
    return f"{SHIPPER}.model.{product}"


def _installed(store: ResultStore, product: str) -> int:
    """The newest published version of the product installed (or published) here."""
    return store.outbox_position(_model_bookmark(product))


def _remember(store: ResultStore, product: str, version: int) -> None:
    store.set_outbox_position(_model_bookmark(product), max(version, _installed(store, product)))


def newest_published(con: psycopg.Connection, product: str) -> int | None:
    version = con.execute("SELECT max(version) FROM models WHERE product = %s", (product,)).fetchone()[0]
    con.rollback()
    return version


def publish(url: str, changes: Changes, product: str, version: int | None = None) -> int:
    """Publish a kept version of the product (default: the current one), checked in full, as the product's next
    published version; returns that number (the one it has when the same files are the newest published). Two
    stations publishing at once get two numbers. Only an engineer's login (inspector_engineer) may, for a user
    `changes` allows."""
    changes.check("publish")
    models_dir, store = changes.models_dir, changes.store
    model = load_model(models_dir, product, version)
    folder = version_folder(models_dir, product, model.version)
    model_json, bank = (folder / META_FILE).read_bytes(), (folder / BANK_FILE).read_bytes()
    digest = checksum(model_json, bank)
    with connect(url) as con:
        try:
            with con.transaction():
                if not con.execute("SELECT has_table_privilege('models', 'INSERT')").fetchone()[0]:
                    raise errors.InsufficientPrivilege("no INSERT on models")
                con.execute("SELECT pg_advisory_xact_lock(hashtext('inspector.models'), hashtext(%s))", (product,))
                newest = con.execute("SELECT version, sha256 FROM models WHERE product = %s "
                                     "ORDER BY version DESC LIMIT 1", (product,)).fetchone()
                if newest is not None and newest[1] == digest:
                    _remember(store, product, newest[0])
                    return newest[0]
                number = (newest[0] if newest else 0) + 1
                con.execute("INSERT INTO models (product, version, model_json, memory_bank, sha256, model_id, station, "
                            "local_version, change) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            (product, number, model_json, bank, digest, model.model_id, socket.gethostname(),
                             model.version, model.change))
        except errors.InsufficientPrivilege:
            raise PlantError(f"The login of {where(url)} may not publish models: only an engineer's login "
                             f"(a member of inspector_engineer) may.") from None
        except psycopg.Error as exc:
            raise _lost(url, exc) from None
    _remember(store, product, number)
    changes.published(model, f"plant version {number}")
    return number


@dataclass
class Published:
    product: str
    version: int
    model_id: str
    sha256: str
    station: str | None
    local_version: int | None
    change: str | None
    published_by: str
    published_at: datetime
    size: int = 0
    files: tuple[bytes, bytes] | None = field(default=None, repr=False)

    def describe(self) -> str:
        return (f"plant version {self.version} of '{self.product}' (id {self.model_id}), published by "
                f"{self.published_by} at {self.published_at:%Y-%m-%d %H:%M} UTC from {self.station} "
                f"version {self.local_version}")


def published(url: str, product: str | None = None) -> list[Published]:
    """The published versions (of one product, or all), newest first, without their files."""
    with connect(url) as con:
        try:
            rows = con.execute(
                "SELECT product, version, model_id, sha256, station, local_version, change, published_by, "
                "published_at, octet_length(model_json) + octet_length(memory_bank) FROM models "
                "WHERE %(p)s::text IS NULL OR product = %(p)s ORDER BY product, version DESC", {"p": product}).fetchall()
        except psycopg.Error as exc:
            raise _lost(url, exc) from None
    return [Published(*row) for row in rows]


def install(url: str, changes: Changes, product: str, version: int | None = None):
    """Install a published version (default: the newest) as the product's new local version,
    after checking its files against their checksum and the model in full; returns the model."""
    changes.check("install")
    with connect(url) as con:
        try:
            row = con.execute(
                "SELECT product, version, model_id, sha256, station, local_version, change, published_by, "
                "published_at, 0, model_json, memory_bank FROM models WHERE product = %s "
                "AND (%s::int IS NULL OR version = %s) ORDER BY version DESC LIMIT 1",
                (product, version, version)).fetchone()
        except psycopg.Error as exc:
            raise _lost(url, exc) from None
    if row is None:
        raise ModelError(f"No {'version %d of ' % version if version else ''}'{product}' is published in the plant "
                         f"database {where(url)} (see: inspector plant models).")
    p = Published(*row[:10], files=(bytes(row[10]), bytes(row[11])))
    if checksum(*p.files) != p.sha256:
        raise ModelError(f"The files of {p.describe()} do not match their checksum: they were changed or damaged "
                         f"in the plant database. It is not installed; publish the version again.")
    with tempfile.TemporaryDirectory(prefix="inspector-install-") as tmp:
        folder = Path(tmp) / product / f"v{p.local_version or 1:04d}"  # the version its model.json says
        folder.mkdir(parents=True)
        (folder / META_FILE).write_bytes(p.files[0])
        (folder / BANK_FILE).write_bytes(p.files[1])
        # the model's own checksums and every field; not the publishing station's signature (its key
        # is not here): the plant's checksum vouches for the files, and saving signs them with ours
        model = load_model(tmp, product, signed=False)
    saved = changes.install(model, f"installed {p.describe()}: {p.change or '-'}")
    _remember(changes.store, product, p.version)
    return saved


# ---- the plant view ----------------------------------------------------------------------------

@dataclass
class PlantView:
    since: datetime
    stations: list[dict]   # station, last_seen, behind, clock_skew_s, silent, products [{product, model_version, ...}]
    counts: list[dict]     # per station and product over the window: ok, ng, error, total, yield, ng_rate
    hours: list[dict]      # per hour over the window, every station together: hour, ok, ng, error, ...


def _rates(row: dict) -> dict:
    """The yield, as the shift's; NG rate: NG of all inspected."""
    total = row["ok"] + row["ng"] + row["error"]
    return row | {"total": total, "yield": yield_rate(row["ok"], row["ng"]),
                  "ng_rate": row["ng"] / total if total else None}


def plant_view(url: str, hours: float = 24, silent_s: float = SILENT_S) -> PlantView:
    """Stations (behind, silent, their clock, each product's model version), and counts, yield and NG rate per station
    and product and per hour over the last `hours`, from the hourly counts (fast over any number of verdicts)."""
    with connect(url) as con:
        try:
            now = con.execute("SELECT now()").fetchone()[0]
            since = (now - timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)
            stations = [dict(zip(("station", "last_seen", "behind", "clock_skew_s"), r)) for r in con.execute(
                "SELECT station, last_seen, behind, clock_skew_s FROM stations ORDER BY station")]
            products = con.execute("SELECT station, product, model_version, model_id, last_time FROM station_products "
                                   "ORDER BY station, product").fetchall()
            counts = con.execute("SELECT station, product, sum(ok)::int8, sum(ng)::int8, sum(error)::int8 FROM hourly "
                                 "WHERE hour >= %s GROUP BY 1, 2 ORDER BY 1, 2", (since,)).fetchall()
            per_hour = con.execute("SELECT hour, sum(ok)::int8, sum(ng)::int8, sum(error)::int8 FROM hourly "
                                   "WHERE hour >= %s GROUP BY 1 ORDER BY 1", (since,)).fetchall()
        except psycopg.Error as exc:
            raise _lost(url, exc) from None
    for s in stations:
        s["silent"] = (now - s["last_seen"]).total_seconds() > silent_s
        s["products"] = [dict(zip(("product", "model_version", "model_id", "last_time"), p[1:]))
                         for p in products if p[0] == s["station"]]
    return PlantView(since, stations,
                     [_rates(dict(zip(("station", "product", "ok", "ng", "error"), r))) for r in counts],
                     [_rates(dict(zip(("hour", "ok", "ng", "error"), r))) for r in per_hour])
