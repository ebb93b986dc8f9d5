import csv
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import as_unprivileged

from inspector.common import login_name
from inspector.errors import StoreError
from inspector.store.results import SCHEMA_VERSION, InspectionRecord, NotLogged, ResultStore


def rec(product="bolt", verdict="OK", **kw):
    return InspectionRecord(product=product, source="folder", verdict=verdict, **kw)


def at(minute):
    return f"2024-05-01T10:{minute:02d}:00.000+00:00"


@pytest.fixture
def db(tmp_path):
    return tmp_path / "log" / "results.db"  # the folder does not exist yet


@pytest.fixture
def store(db):
    with ResultStore(db) as s:
        yield s


def test_round_trip_of_every_field(store):
    original = InspectionRecord(
        product="bolt", source="camera", verdict="NG", image_path="C:/img/001.png",
        score=3.25, threshold=2.5, model_id="bolt-2024-05-01", error=None,
        regions=[{"x": 1, "y": 2, "w": 30, "h": 40, "area": 900, "peak": 4.5}],
        latency_ms=12.5, time="2024-05-01T10:00:00.123+00:00", file_key="C:/img/001.png|1234|99",
    )
    assert store.record(original) is True
    assert original.id is not None
    [back] = store.query()
    assert back == original


def test_record_fills_time_in_utc_with_milliseconds(store):
    r = rec(verdict="ERROR", error="image is truncated")
    before = datetime.now(timezone.utc)
    store.record(r)
    t = datetime.fromisoformat(r.time)
    assert t.utcoffset() == timedelta(0)
    assert len(r.time) == len("2024-05-01T10:00:00.123+00:00")
    assert before - timedelta(seconds=1) <= t <= datetime.now(timezone.utc)
    assert store.query()[0].error == "image is truncated"


def test_numpy_like_values_are_stored_as_plain_numbers(store):
    class Scalar:  # stands for a numpy scalar: has .item() and converts with float()
        def __init__(self, v): self.v = v
        def item(self): return self.v
        def __float__(self): return float(self.v)

    store.record(rec(score=Scalar(1.5), regions=[{"x": Scalar(3), "peak": Scalar(2.0)}]))
    [back] = store.query()
    assert back.score == 1.5 and back.regions == [{"x": 3, "peak": 2.0}]


def test_wal_mode_and_schema_version(store, db):
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    indexes = {row[1] for row in con.execute("PRAGMA index_list(inspections)")}
    assert {"inspections_product_time", "inspections_verdict_time", "inspections_time",
            "inspections_file_key"} <= indexes
    con.close()


def test_database_from_a_newer_inspector_is_refused(db):
    ResultStore(db).close()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer version of Inspector.*Update Inspector"):
        ResultStore(db)


def test_garbage_file_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "results.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="results.db.*not an Inspector result database"):
        ResultStore(bad)


def test_same_file_key_is_logged_once_even_after_reopening(db):
    with ResultStore(db) as s:
        assert s.record(rec(file_key="a.png|10|1")) is True
        assert s.record(rec(file_key="a.png|10|1", verdict="NG")) is False
        assert s.is_logged("bolt", "a.png|10|1")
        assert not s.is_logged("bolt", "b.png|10|1")
        assert not s.is_logged("nut", "a.png|10|1")  # same file, another product: its own log
        assert s.record(rec(product="nut", file_key="a.png|10|1")) is True
    with ResultStore(db) as s:  # restart after a crash: the watcher sees the file again
        assert s.record(rec(file_key="a.png|10|1")) is False
        assert s.count(product="bolt") == 1
        assert s.query(product="bolt")[0].verdict == "OK"


def test_rows_without_file_key_are_always_logged(store):
    assert store.record(rec()) is True
    assert store.record(rec()) is True
    assert store.count() == 2


def test_query_filters_and_order(store):
    store.record(rec("bolt", "OK", time=at(0)))
    store.record(rec("bolt", "NG", time=at(1)))
    store.record(rec("nut", "OK", time=at(2)))
    store.record(rec("bolt", "ERROR", time=at(3), error="unreadable"))
    store.record(rec("bolt", "OK", time=at(4)))

    assert [r.time for r in store.query()] == [at(4), at(3), at(2), at(1), at(0)]
    assert [r.time for r in store.query(product="bolt")] == [at(4), at(3), at(1), at(0)]
    assert [r.time for r in store.query(verdict="OK")] == [at(4), at(2), at(0)]
    assert [r.time for r in store.query(product="bolt", verdict="OK")] == [at(4), at(0)]
    # since inclusive, until exclusive; strings or datetimes, any offset
    assert [r.time for r in store.query(since=at(1), until=at(3))] == [at(2), at(1)]
    since = datetime(2024, 5, 1, 12, 1, tzinfo=timezone(timedelta(hours=2)))  # 10:01 UTC
    assert [r.time for r in store.query(since=since)] == [at(4), at(3), at(2), at(1)]
    assert [r.time for r in store.query(limit=2)] == [at(4), at(3)]
    assert [r.time for r in store.query(limit=2, offset=2)] == [at(2), at(1)]

    assert store.count() == 5
    assert store.count(product="bolt", since=at(1)) == 3
    assert store.summary() == {"OK": 3, "NG": 1, "ERROR": 1, "total": 5}
    assert store.summary(product="bolt", since=at(1)) == {"OK": 1, "NG": 1, "ERROR": 1, "total": 3}
    assert store.summary(product="washer") == {"OK": 0, "NG": 0, "ERROR": 0, "total": 0}
    assert store.products() == ["bolt", "nut"]


def test_same_time_is_ordered_newest_id_first(store):
    store.record(rec(image_path="first.png", time=at(0)))
    store.record(rec(image_path="second.png", time=at(0)))
    assert [r.image_path for r in store.query()] == ["second.png", "first.png"]


def test_bad_record_is_rejected_before_anything_is_written(store):
    with pytest.raises(ValueError, match="verdict"):
        store.record(rec(verdict="MAYBE"))
    with pytest.raises(ValueError, match="product"):
        store.record(rec(product=""))
    assert store.count() == 0 and store.pending_count() == 0


def test_csv_export(store, tmp_path):
    store.record(rec("bolt", "NG", time=at(1), score=3.5, threshold=2.0,
                     regions=[{"x": 1, "y": 2, "w": 3, "h": 4, "area": 12, "peak": 3.5}]))
    store.record(rec("bolt", "OK", time=at(0), score=0.5, file_key="k"))
    store.record(rec("nut", "OK", time=at(2)))

    dest = tmp_path / "export.csv"
    assert store.export_csv(dest, product="bolt") == 2
    with open(dest, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["product", "source", "verdict", "image_path", "score", "threshold",
                             "model_id", "error", "regions", "latency_ms", "time", "file_key", "model_version", "part_id", "id"]
    assert [r["time"] for r in rows] == [at(1), at(0)]
    assert rows[0]["verdict"] == "NG" and float(rows[0]["score"]) == 3.5
    assert rows[0]["regions"] == '[{"x": 1, "y": 2, "w": 3, "h": 4, "area": 12, "peak": 3.5}]'
    assert rows[1]["file_key"] == "k" and rows[1]["regions"] == "[]"

    buffer = io.StringIO()
    assert store.export_csv(buffer, verdict="OK") == 2
    assert [r["product"] for r in csv.DictReader(io.StringIO(buffer.getvalue()))] == ["nut", "bolt"]


def test_csv_export_to_unwritable_place_is_a_store_error(store, tmp_path):
    with pytest.raises(StoreError, match="nowhere"):
        store.export_csv(tmp_path / "nowhere" / "export.csv")


def hold_write_lock(db):
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    return con


def test_locked_database_keeps_the_verdict_in_the_journal(db):
    store = ResultStore(db, timeout_s=0.1)
    store.record(rec(image_path="before.png"))
    other = hold_write_lock(db)
    with pytest.raises(StoreError, match="locked by another program.*kept in.*pending.jsonl"):
        store.record(rec(image_path="during.png", verdict="NG", file_key="during"))
    journal = db.with_name("results.db.pending.jsonl")
    assert journal.exists() and store.pending_count() == 1
    assert "during.png" in journal.read_text()
    other.execute("ROLLBACK")
    other.close()

    assert store.record(rec(image_path="after.png")) is True
    assert not journal.exists() and store.pending_count() == 0
    assert [r.image_path for r in store.query()] == ["after.png", "during.png", "before.png"]
    assert store.is_logged("bolt", "during")
    store.close()


def test_journal_is_written_on_reopen_and_respects_exactly_once(db):
    store = ResultStore(db, timeout_s=0.1)
    store.record(rec(file_key="a"))
    other = hold_write_lock(db)
    for key in ("a", "b", "b"):  # "a" is already logged, "b" comes twice
        with pytest.raises(StoreError):
            store.record(rec(file_key=key))
    assert store.pending_count() == 3
    store.close()
    other.execute("ROLLBACK")
    other.close()

    with ResultStore(db) as reopened:
        assert reopened.pending_count() == 0
        assert sorted(r.file_key for r in reopened.query()) == ["a", "b"]
    assert not db.with_name("results.db.pending.jsonl").exists()


def test_opening_while_locked_keeps_the_journal(db):
    store = ResultStore(db, timeout_s=0.1)
    other = hold_write_lock(db)
    with pytest.raises(StoreError):
        store.record(rec())
    store.close()
    with ResultStore(db, timeout_s=0.1) as reopened:  # still locked: opens, journal stays
        assert reopened.pending_count() == 1 and reopened.count() == 0
    other.execute("ROLLBACK")
    other.close()
    with ResultStore(db) as reopened:
        assert reopened.pending_count() == 0 and reopened.count() == 1


def test_verdict_that_cannot_be_saved_anywhere(db):
    store = ResultStore(db, timeout_s=0.1)
    db.with_name("results.db.pending.jsonl").mkdir()  # the journal cannot be written
    other = hold_write_lock(db)
    with pytest.raises(NotLogged, match="NOT logged yet; it is kept in memory"):
        store.record(rec(image_path="kept.png"))
    assert store.pending_count() == 1
    other.execute("ROLLBACK")
    other.close()
    assert store.retry_pending() == 0  # once the database works again, the verdict is written
    assert [r.image_path for r in store.query()] == ["kept.png"]
    store.close()


def test_read_only_database_file_keeps_the_verdict_in_the_journal(open_tmp):
    db = open_tmp / "results.db"
    ResultStore(db).close()
    db.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)

    def check():
        with ResultStore(db) as store:  # reading still works
            assert store.count() == 0
            with pytest.raises(StoreError, match="read-only.*kept in"):
                store.record(rec(image_path="while-read-only.png"))
            assert store.pending_count() == 1

    as_unprivileged(check)
    # SQLite gives the -wal and -shm files it creates the database file's permissions.
    for path in (db, db.with_name("results.db-wal"), db.with_name("results.db-shm")):
        if path.exists():
            path.chmod(0o666)
    with ResultStore(db) as store:
        assert store.pending_count() == 0
        assert [r.image_path for r in store.query()] == ["while-read-only.png"]


def test_read_only_folder_is_refused_naming_the_file(open_tmp):
    db = open_tmp / "log" / "results.db"
    ResultStore(db).close()
    db.parent.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    (db.parent / "results.db").chmod(0o644)

    def check():
        # WAL needs its side files beside the database, and the journal would go there too.
        with pytest.raises(StoreError, match="results.db.*read-only"):
            ResultStore(db)

    try:
        as_unprivileged(check)
    finally:
        db.parent.chmod(stat.S_IRWXU)


def test_one_thread_writes_while_another_reads(store):
    errors = []

    def write():
        try:
            for i in range(200):
                store.record(rec(file_key=str(i)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    seen = 0
    while writer.is_alive():
        n = store.count()
        assert n >= seen
        seen = n
        store.query(limit=10)
    writer.join()
    assert not errors and store.count() == 200


def test_another_process_can_read_while_the_store_is_open(store, db):
    store.record(rec())
    reader = sqlite3.connect(db)
    assert reader.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 1
    reader.close()


# ---- issue 8: one bad journal line, two stations on one database ------------------------------

def test_a_journal_line_that_cannot_be_replayed_is_set_aside_and_logging_goes_on(db):
    ResultStore(db).close()
    journal = db.with_name("results.db.pending.jsonl")
    good = {"product": "bolt", "source": "folder", "verdict": "OK", "image_path": "good.png", "time": at(0)}
    journal.write_text("\n".join([
        json.dumps(good),                                                  # a line of the format before events
        json.dumps(good | {"verdict": "MAYBE", "image_path": "bad.png"}),  # cannot be written
        json.dumps({"table": "inspections", "uid": "u1", "row": good | {"image_path": "new.png"}}),
        '{"product": "bolt", "sou',                                        # cut short by a crash
    ]) + "\n")
    with ResultStore(db) as store:
        assert sorted(r.image_path for r in store.query()) == ["good.png", "new.png"]
        assert store.pending_count() == 0 and store.rejected_count() == 2
        assert store.record(rec(image_path="later.png")) is True  # logging goes on
    rejected = [json.loads(line) for line in db.with_name("results.db.rejected.jsonl").read_text().splitlines()]
    assert "bad.png" in rejected[0]["line"] and "MAYBE" in rejected[0]["reason"]
    assert rejected[1]["line"].startswith('{"product": "bolt", "sou')


def test_a_replay_repeated_after_a_crash_writes_nothing_twice(db):
    ResultStore(db).close()
    line = json.dumps({"table": "inspections", "uid": "same", "row": {
        "product": "bolt", "source": "camera", "verdict": "OK", "time": at(0)}})
    db.with_name("results.db.pending.jsonl").write_text(line + "\n")
    ResultStore(db).close()
    db.with_name("results.db.pending-crashed.jsonl").write_text(line + "\n")  # claimed, written, not yet removed
    with ResultStore(db) as store:
        assert store.count() == 1 and store.pending_count() == 0


WRITER = """
import sys
from inspector.errors import StoreError
from inspector.store.results import InspectionRecord, ResultStore
store = ResultStore(sys.argv[1], timeout_s=0.01)
print("ready", flush=True)
journaled = 0
for i in range(int(sys.argv[3])):
    try:
        store.record(InspectionRecord(product="bolt", source="camera", verdict="OK", image_path=f"{sys.argv[2]}-{i}"))
    except StoreError:
        journaled += 1  # kept in the journal, written later by one of the stations
store.close()
print(journaled, flush=True)
"""


def journal_lines(db) -> int:
    try:
        return db.with_name("results.db.pending.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


def test_two_stations_sharing_a_database_lose_no_pending_verdict(db):
    """Two processes log while a third keeps locking the database until verdicts have piled
    up in the shared journal, which each process replays: none may be lost or doubled."""
    ResultStore(db).close()
    locker = sqlite3.connect(db, isolation_level=None, timeout=60)
    locker.execute("BEGIN EXCLUSIVE")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), name, "150"], stdout=subprocess.PIPE)
               for name in ("a", "b")]
    for writer in writers:
        assert writer.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 300  # generous: a loaded 2-core machine
    while True:
        while True:
            assert time.monotonic() < deadline, "the writers did not finish"
            if journal_lines(db) >= 5 or all(w.poll() is not None for w in writers):
                break
            time.sleep(0.005)  # locked: every verdict goes to the journal
        locker.execute("COMMIT")
        if all(w.poll() is not None for w in writers):
            break
        time.sleep(0.02)  # unlocked: the writers replay the journal, and write
        locker.execute("BEGIN EXCLUSIVE")
    locker.close()
    journaled = 0
    for writer in writers:
        journaled += int(writer.stdout.read())
        writer.stdout.close()
        assert writer.returncode == 0
    assert journaled >= 5, journaled  # the journal was really shared
    with ResultStore(db) as store:
        paths = [r.image_path for r in store.query()]
        assert store.pending_count() == 0 and store.rejected_count() == 0
    assert sorted(paths) == sorted(f"{n}-{i}" for n in "ab" for i in range(150))


def test_events_are_recorded_with_user_and_listed_newest_first(store):
    first = store.record_event("bolt", "train", None, "version 1", "20 good images")
    store.record_event("bolt", "tolerance", "version 1", "version 2", user="engineer")
    store.record_event("nut", "create", None, "nut")
    assert first.user and first.user == login_name()
    events = store.events("bolt")
    assert [(e.kind, e.user, e.old, e.new) for e in events] == [
        ("tolerance", "engineer", "version 1", "version 2"), ("train", login_name(), None, "version 1")]
    assert events[1].detail == "20 good images" and events[1].time.endswith("+00:00")
    assert len(store.events()) == 3
    with pytest.raises(ValueError, match="kind"):
        store.record_event("bolt", "coffee")


def test_rename_moves_the_history_and_refuses_a_name_with_history(store):
    store.record(rec("bolt", "OK", file_key="a"))
    store.record_event("bolt", "train", None, "version 1")
    store.record(rec("old nut", "NG"))
    event = store.rename_product("bolt", "screw", user="engineer")
    assert (event.product, event.kind, event.old, event.new, event.user) == ("screw", "rename", "bolt", "screw",
                                                                             "engineer")
    assert store.count(product="bolt") == 0 and store.count(product="screw") == 1
    assert store.is_logged("screw", "a") and not store.is_logged("bolt", "a")
    assert [e.kind for e in store.events("screw")] == ["rename", "train"]
    with pytest.raises(StoreError, match="already holds 1 row"):
        store.rename_product("screw", "old nut")
    assert store.count(product="screw") == 1


def test_names_that_are_not_utf8_are_stored(store):
    name = os.fsdecode(b"/line/caf\xe9.png")  # as Python reads a Latin-1 file name
    store.record(rec(image_path=name, file_key=name + "|1|2", error=f"cannot read {name}"))
    assert store.is_logged("bolt", name + "|1|2")
    [back] = store.query()
    assert back.image_path == "/line/caf\\xe9.png" and back.error == "cannot read /line/caf\\xe9.png"


def test_outbox_positions_are_kept_per_shipper_and_a_log_of_schema_2_gets_the_table(db):
    from inspector.store.results import MIGRATIONS

    db.parent.mkdir()
    con = sqlite3.connect(db)  # a log written before outboxes existed: schema version 2
    for statements in MIGRATIONS[:2]:
        for sql in statements:
            con.execute(sql)
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    store = ResultStore(db)
    for i in range(5):
        store.record(rec(image_path=f"/p/{i}.png"))
    assert store.outbox_position("plant.inspections") == 0
    store.set_outbox_position("plant.inspections", 3)
    store.set_outbox_position("mqtt", 1)
    assert [i for i, _ in store.rows_after("inspections", 3, 10)] == [4, 5]
    assert store.rows_after("inspections", 3, 1)[0][1]["image_path"] == "/p/3.png"
    assert store.rows_behind("inspections", store.outbox_position("plant.inspections")) == 2
    assert store.outbox_position("mqtt.new", new_at_end=True) == 5  # a new shipper from the end on, remembered
    store.record(rec(image_path="/p/5.png", part_id=77))  # schema 2 got the part number too
    assert store.outbox_position("mqtt.new", new_at_end=True) == 5
    [(row_id, row)] = store.rows_after("inspections", 5, 10)
    assert row_id == 6 and row["part_id"] == 77 and len(row["uid"]) == 32  # the identity consumers de-duplicate on
    store.close()
    with ResultStore(db) as again:  # kept across restarts
        assert again.outbox_position("plant.inspections") == 3 and again.outbox_position("mqtt") == 1


def test_a_read_only_database_is_written_again_while_running_with_one_journal(open_tmp):
    """Read-only when the line starts, writable later: the running line writes what waits
    (a connection opened read-only stays so: it is opened again), and all that waited was
    in one journal, appended to, which `history` names."""
    import contextlib

    from inspector.cli import main

    db = open_tmp / "results.db"

    def check():
        ResultStore(db).close()
        db.chmod(0o444)
        with ResultStore(db) as store:
            for i in range(5):
                with pytest.raises(StoreError, match="read-only"):
                    store.record(rec(image_path=f"{i}.png"))
            journals = sorted(p.name for p in open_tmp.glob("results.db.pending*.jsonl"))
            assert journals == ["results.db.pending.jsonl"] and store.pending_count() == 5
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                main(["history", "--db", str(db), "--models-dir", str(open_tmp / "models")])
            named = err.getvalue().split("wait in ")[1].split()[0]
            assert os.path.exists(named), err.getvalue()
            db.chmod(0o644)
            assert store.retry_pending() == 0
            assert store.count() == 5 and not list(open_tmp.glob("results.db.pending*.jsonl"))
            store.record(rec(image_path="after.png"))
            assert store.count() == 6

    as_unprivileged(check)


def test_a_database_made_read_only_then_writable_again_works_after_a_restart(open_tmp):
    """SQLite gives the -wal and -shm files it creates the database's permissions: after a
    run on a read-only database they stay read-only when the database is writable again."""
    db = open_tmp / "results.db"

    def check():
        ResultStore(db).close()
        db.chmod(0o444)
        with ResultStore(db) as store:
            with pytest.raises(StoreError, match="read-only"):
                store.record(rec(image_path="while-read-only.png"))
        db.chmod(0o644)  # the operator fixes what the message names
        with ResultStore(db) as store:
            store.record(rec(image_path="after.png"))
            assert sorted(r.image_path for r in store.query()) == ["after.png", "while-read-only.png"]
            assert store.pending_count() == 0

    as_unprivileged(check)
