"""The plant database: a real PostgreSQL started here (tests/postgres.py), real SQLite logs,
real model folders. Stations and engineers log in over 127.0.0.1 with passwords from a
password file, as on a plant network."""
import itertools
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from inspector.changes import Changes
from inspector.users import ENGINEER, User
from inspector import plant
from inspector.cli import main
from inspector.core.model import with_tolerance
from inspector.core.model_store import list_versions, load_model, save_model
from inspector.errors import ModelError, PlantError
from inspector.signing import station_key
from inspector.store.results import InspectionRecord, ResultStore

from conftest import PRODUCT, copy_models
from postgres import Server

WAIT_S = 120  # generous, for a loaded 2-core machine
PASSWORDS = {"line1": "pw-line1", "line2": "pw-line2", "anna": "pw-anna"}
_numbers = itertools.count()


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One PostgreSQL for the session: the two roles, two station logins and an engineer's,
    their passwords in a password file (PGPASSFILE), and a set-up template database."""
    pg = Server()
    try:
        pg.sql("CREATE DATABASE plant_template", "postgres")
        plant.setup(pg.admin_url("plant_template"))
        for user, password in PASSWORDS.items():
            group = "inspector_engineer" if user == "anna" else "inspector_station"
            pg.sql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {group}", "postgres")
        passfile = tmp_path_factory.mktemp("pgpass") / "pgpass"
        passfile.write_text("".join(f"127.0.0.1:{pg.port}:*:{u}:{p}\n" for u, p in PASSWORDS.items()))
        passfile.chmod(0o600)
        saved = os.environ.get("PGPASSFILE")
        os.environ["PGPASSFILE"] = str(passfile)
        yield pg
    finally:
        if saved is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = saved
        pg.close()


@pytest.fixture
def db(server, monkeypatch):
    """A fresh plant database (from the template) for one test; the server is running."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    name = f"plant{next(_numbers)}"
    server.sql(f"CREATE DATABASE {name} TEMPLATE plant_template", "postgres")
    server.name = name
    yield server
    try:
        server.start()  # a test that stopped it
    except RuntimeError:
        pass  # running already


def url(server, user):
    return server.url(user, server.name)


def sql(server, statement):
    return server.sql(statement, server.name)


def log_with(path, n, product=PRODUCT, start=0, **fields):
    store = ResultStore(path)
    for i in range(start, start + n):
        store.record(InspectionRecord(product, "file", "NG" if i % 4 == 0 else "OK", f"/parts/{i}.png", 1.0 + i,
                                      2.0, "abc123", model_version=1, **fields))
    return store


def test_verdicts_and_events_are_shipped_in_order_exactly_once(db, tmp_path):
    store = log_with(tmp_path / "line1.db", 25)
    store.record_event(PRODUCT, "train", None, "version 1")
    shipper = plant.Shipper(store, url(db, "line1"), batch=10)
    assert shipper.ship() == 26
    assert shipper.status().connected and shipper.status().behind == 0
    rows = sql(db, "SELECT station, local_id, image_path FROM results ORDER BY received, local_id")
    assert [r[1] for r in rows] == list(range(1, 26)) and {r[0] for r in rows} == {"line1"}
    assert rows[3][2] == "/parts/3.png"
    assert sql(db, "SELECT station, kind, new FROM events") == [("line1", "train", "version 1")]
    assert shipper.ship() == 0
    # a crash after the commit, before the bookmark was saved: the replay inserts nothing twice
    store.set_outbox_position("plant.inspections", 0)
    store.set_outbox_position("plant.events", 0)
    assert shipper.ship() == 26
    assert sql(db, "SELECT count(*), count(DISTINCT local_id) FROM results") == [(25, 25)]
    assert sql(db, "SELECT sum(ok), sum(ng) FROM hourly") == [(18, 7)]
    assert sql(db, "SELECT count(*) FROM events") == [(1,)]
    shipper.stop()
    store.close()


def test_server_stopped_mid_shipping_and_restarted_loses_and_doubles_nothing(db, tmp_path):
    store = log_with(tmp_path / "line1.db", 3000)
    messages = []
    shipper = plant.Shipper(store, url(db, "line1"), batch=50, interval_s=0.1,
                            on_message=lambda level, text: messages.append(text)).start()
    try:
        wait_for(lambda: sql(db, "SELECT count(*) FROM results")[0][0] > 0, "the first batches")
        db.stop("immediate")  # under way: a batch is cut off
        wait_for(lambda: not shipper.status().connected, "the shipper to notice")
        more = log_with(tmp_path / "line1.db", 500, start=3000)  # the line goes on meanwhile
        more.close()
        assert shipper.status().behind > 0
        db.start()
        wait_for(lambda: shipper.status().connected and shipper.status().behind == 0, "the catch-up")
    finally:
        shipper.stop()
    assert sql(db, "SELECT count(*), count(DISTINCT local_id), min(local_id), max(local_id) FROM results") == [
        (3500, 3500, 1, 3500)]
    assert sql(db, "SELECT sum(ok + ng + error) FROM hourly") == [(3500,)]
    assert any("line goes on" in m for m in messages) and any("again" in m for m in messages)
    store.close()


def test_a_wrong_password_is_said_clearly_and_the_line_keeps_logging(db, tmp_path, monkeypatch):
    store = log_with(tmp_path / "line1.db", 3)
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    shipper = plant.Shipper(store, url(db, "line1"))
    with pytest.raises(PlantError, match="password authentication failed.*password file"):
        shipper.ship()
    status = shipper.status()
    assert not status.connected and status.behind == 3 and "password" in status.error
    assert "NOT connected, 3 row(s) waiting" in status.describe()
    store.record(InspectionRecord(PRODUCT, "file", "OK"))  # the log is unaffected
    monkeypatch.delenv("PGPASSWORD")  # the password file's is right
    assert shipper.ship() == 4
    store.close()


def test_a_password_in_the_address_is_refused(db, tmp_path):
    with pytest.raises(PlantError, match="holds a password.*pgpass"):
        plant.connect(f"postgresql://line1:pw-line1@127.0.0.1:{db.port}/{db.name}")


def test_an_older_schema_is_refused_until_its_owner_upgrades_it_and_a_newer_one_too(db, tmp_path):
    store = log_with(tmp_path / "line1.db", 2)
    sql(db, "UPDATE plant_schema SET version = 0")
    shipper = plant.Shipper(store, url(db, "line1"))
    with pytest.raises(PlantError, match="schema version 0.*needs version 1.*inspector plant setup"):
        shipper.ship()
    assert sql(db, "SELECT count(*) FROM results") == [(0,)] and shipper.status().behind == 2
    with pytest.raises(PlantError, match="owner"):
        plant.setup(url(db, "line1"))  # a station cannot
    plant.setup(db.admin_url(db.name))
    assert shipper.ship() == 2
    sql(db, "UPDATE plant_schema SET version = 7")
    shipper.stop()
    with pytest.raises(PlantError, match="newer than this Inspector knows.*update Inspector"):
        shipper.ship()
    store.close()


def test_no_schema_and_no_rights_are_said_clearly(server, db):
    server.sql("CREATE DATABASE empty_plant", "postgres")
    with pytest.raises(PlantError, match="no Inspector tables.*inspector plant setup"):
        plant.connect(server.url("line1", "empty_plant"))
    server.sql("DROP DATABASE empty_plant", "postgres")


def test_a_station_writes_and_reads_only_its_own_rows(db, tmp_path):
    one = log_with(tmp_path / "line1.db", 4)
    two = log_with(tmp_path / "line2.db", 6)
    plant.Shipper(one, url(db, "line1")).ship()
    plant.Shipper(two, url(db, "line2")).ship()
    assert sql(db, "SELECT station, count(*) FROM results GROUP BY 1 ORDER BY 1") == [("line1", 4), ("line2", 6)]
    with psycopg.connect(url(db, "line2")) as con:
        assert con.execute("SELECT count(*) FROM results").fetchone() == (6,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute("INSERT INTO results (station, local_id, product, source, verdict, time) "
                        "VALUES ('line1', 99, 'x', 'file', 'OK', now())")
        con.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute("DELETE FROM results")
    view = plant.plant_view(url(db, "anna"))  # an engineer sees the whole plant
    assert [s["station"] for s in view.stations] == ["line1", "line2"]
    one.close()
    two.close()


def test_a_station_with_a_wrong_clock_is_ordered_by_its_rows_and_received_by_the_server(db, tmp_path):
    store = ResultStore(tmp_path / "line1.db")
    for when in ("2001-03-04T05:06:07+00:00", "2099-01-01T00:00:00+00:00", "1999-12-31T23:00:00+00:00"):
        store.record(InspectionRecord(PRODUCT, "file", "OK", time=when))
    shipper = plant.Shipper(store, url(db, "line1"))
    shipper.clock = lambda: datetime.now(timezone.utc) - timedelta(hours=3)
    shipper.ship()
    rows = sql(db, "SELECT local_id, time, received FROM results ORDER BY local_id")
    assert [r[1].year for r in rows] == [2001, 2099, 1999]  # the station's times, as logged
    now = datetime.now(timezone.utc)
    assert all(abs((now - r[2]).total_seconds()) < 3600 for r in rows)  # the server's time
    assert sql(db, "SELECT tableoid::regclass::text FROM results")[0][0] == "results_default"
    skew = sql(db, "SELECT clock_skew_s FROM stations")[0][0]
    assert 3 * 3600 - 600 < skew < 3 * 3600 + 600
    assert "clock off by +108" in _plant_cli(db, "anna")
    # a month partition made later takes the rows of its month out of the default partition
    sql(db, "SELECT inspector_month_partition('2001-03-01')")
    assert sql(db, "SELECT tableoid::regclass::text FROM results WHERE local_id = 1") == [("results_2001_03",)]
    store.close()


def _plant_cli(server, user, *args, capsys=None):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["plant", *args, "--plant", url(server, user)])
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_the_plant_view_shows_stations_models_counts_and_silent_ones(db, tmp_path):
    one = log_with(tmp_path / "line1.db", 8)
    two = log_with(tmp_path / "line2.db", 4, product="Cap")
    two.record(InspectionRecord("Cap", "file", "ERROR", error="unreadable", model_version=5, model_id="def456"))
    plant.Shipper(one, url(db, "line1")).ship()
    plant.Shipper(two, url(db, "line2")).ship()
    sql(db, "UPDATE stations SET last_seen = now() - interval '2 hours' WHERE station = 'line2'")
    view = plant.plant_view(url(db, "anna"))
    counts = {(c["station"], c["product"]): c for c in view.counts}
    assert counts["line1", PRODUCT]["total"] == 8 and counts["line1", PRODUCT]["ng"] == 2
    assert counts["line1", PRODUCT]["yield"] == 0.75
    assert counts["line2", "Cap"]["error"] == 1 and counts["line2", "Cap"]["ng_rate"] == 1 / 5
    assert {s["station"]: s["silent"] for s in view.stations} == {"line1": False, "line2": True}
    assert view.stations[1]["products"][0]["model_version"] == 5
    assert sum(h["total"] for h in view.hours) == 13
    out = _plant_cli(db, "anna")
    assert "line2" in out and "SILENT" in out and "runs Cap v5" in out and "yield 75.0 %" in out
    one.close()
    two.close()


# ---- shared models -----------------------------------------------------------------------------

@pytest.fixture
def station_models(trained_models, tmp_path):
    """A station's own models folder with the trained product (a copy, with the key that signed it)."""
    return copy_models(trained_models, tmp_path / "models")


def test_an_engineer_publishes_and_another_station_installs_a_checked_version(db, station_models, tmp_path):
    here = ResultStore(tmp_path / "here.db")
    number = plant.publish(url(db, "anna"), Changes(station_models, here, User("Anna", ENGINEER)), PRODUCT)
    assert number == 1
    assert plant.publish(url(db, "anna"), Changes(station_models, here), PRODUCT) == 1  # the same files: no new version
    [event] = here.events(PRODUCT)
    assert event.kind == "publish" and event.new == "plant version 1" and event.user == "Anna (engineer)"
    [p] = plant.published(url(db, "line2"), PRODUCT)
    assert p.published_by == "anna" and p.local_version == 1 and p.size > 1000
    with pytest.raises(PlantError, match="only an engineer's login"):
        plant.publish(url(db, "line2"), Changes(station_models, here), PRODUCT)

    # another station: its own data folder, so its own signing key (inspector.signing)
    there, there_models = ResultStore(tmp_path / "line2" / "there.db"), tmp_path / "line2" / "models"
    model = plant.install(url(db, "line2"), Changes(there_models, there), PRODUCT)
    assert station_key(there_models) != station_key(station_models)  # signed with its own key on install
    original = load_model(station_models, PRODUCT)
    assert model.version == 1 and model.threshold == original.threshold
    assert (model.memory_bank == original.memory_bank).all()
    assert load_model(there_models, PRODUCT).change.startswith("installed plant version 1 of")
    assert [e.kind for e in there.events(PRODUCT)] == ["install"]
    here.close()
    there.close()


def test_a_published_model_whose_bytes_were_changed_is_refused(db, station_models, tmp_path):
    store = ResultStore(tmp_path / "there.db")
    plant.publish(url(db, "anna"), Changes(station_models, store), PRODUCT)
    sql(db, "UPDATE models SET memory_bank = overlay(memory_bank PLACING '\\x00'::bytea FROM 200)")
    there = tmp_path / "there_models"
    with pytest.raises(ModelError, match="do not match their checksum.*not installed"):
        plant.install(url(db, "line2"), Changes(there, store), PRODUCT)
    assert not list_versions(there, PRODUCT)
    # changed with a matching plant checksum: the model's own checksum still refuses it
    sql(db, "UPDATE models SET sha256 = 'x'")
    rows = sql(db, "SELECT model_json, memory_bank FROM models")
    sql(db, f"UPDATE models SET sha256 = '{plant.checksum(bytes(rows[0][0]), bytes(rows[0][1]))}'")
    with pytest.raises(ModelError):
        plant.install(url(db, "line2"), Changes(there, store), PRODUCT)
    assert not list_versions(there, PRODUCT)
    store.close()


def test_two_stations_publishing_the_same_product_at_once_get_distinct_versions(db, station_models, tmp_path):
    import shutil

    other = tmp_path / "other_models"
    shutil.copytree(station_models, other)
    save_model(with_tolerance(load_model(other, PRODUCT), 4.0), other)  # a different version there
    stores = [ResultStore(tmp_path / "a.db"), ResultStore(tmp_path / "b.db")]
    start, numbers = threading.Barrier(2), []

    def publish(models, store):
        start.wait()
        numbers.append(plant.publish(url(db, "anna"), Changes(models, store), PRODUCT))

    threads = [threading.Thread(target=publish, args=a) for a in zip((station_models, other), stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert sorted(numbers) == [1, 2]
    assert sql(db, "SELECT version, local_version FROM models ORDER BY version") in ([(1, 1), (2, 2)],
                                                                                     [(1, 2), (2, 1)])
    for store in stores:
        store.close()


def test_a_station_following_a_product_installs_new_published_versions_once(db, station_models, tmp_path):
    engineer = ResultStore(tmp_path / "engineer.db")
    plant.publish(url(db, "anna"), Changes(station_models, engineer), PRODUCT)
    there, there_models = ResultStore(tmp_path / "there.db"), tmp_path / "there_models"
    messages = []
    follower = plant.Shipper(there, url(db, "line2"), follow=[PRODUCT], changes=Changes(there_models, there),
                             on_message=lambda level, text: messages.append(text))
    follower.ship()
    [model] = follower.follow_models()
    assert model.version == 1 and follower.follow_models() == []  # installed once
    save_model(with_tolerance(load_model(station_models, PRODUCT), 5.0), station_models)
    plant.publish(url(db, "anna"), Changes(station_models, engineer), PRODUCT)
    [model] = follower.follow_models()
    assert model.version == 2 and model.settings.tolerance == 5.0
    assert "Installed published version 2" in messages[-1]
    # a damaged publication is refused once, and the station keeps its version
    save_model(with_tolerance(model, 6.0), station_models)
    plant.publish(url(db, "anna"), Changes(station_models, engineer), PRODUCT)
    sql(db, "UPDATE models SET model_json = model_json || '\\x20'::bytea WHERE version = 3")
    assert follower.follow_models() == [] and follower.follow_models() == []
    assert load_model(there_models, PRODUCT).version == 2
    assert sum("not installed" in m for m in messages) == 1
    follower.stop()
    engineer.close()
    there.close()


def test_cli_publish_install_models_and_status(db, station_models, tmp_path, capsys):
    common = ["--models-dir", str(station_models), "--db", str(tmp_path / "here.db")]
    assert main(["plant", "publish", "--product", PRODUCT, *common, "--plant", url(db, "anna")]) == 0
    assert "plant version 1" in capsys.readouterr().out
    there = ["--models-dir", str(tmp_path / "there"), "--db", str(tmp_path / "there.db")]
    assert main(["plant", "models", *there, "--plant", url(db, "line2")]) == 0
    assert "plant version 1 of 'Disc'" in capsys.readouterr().out
    assert main(["plant", "install", "--product", PRODUCT, *there, "--plant", url(db, "line2")]) == 0
    assert "Installed as version 1" in capsys.readouterr().out
    assert main(["plant", "status", *there, "--plant", url(db, "line2")]) == 0
    assert "connected, 1 row(s) behind" in capsys.readouterr().out  # the install event
    assert main(["plant", "ship", *there, "--plant", url(db, "line2")]) == 0
    assert "connected, 0 row(s) behind" in capsys.readouterr().out
    db.stop()
    assert main(["plant", "status", *there, "--plant", url(db, "line2")]) == 2
    assert "NOT connected" in capsys.readouterr().out


def test_the_line_ships_while_it_inspects(db, trained_models, tmp_path, capsys):
    from inspector.synthetic import write_parts

    parts = write_parts(tmp_path / "parts", 3)
    code = main(["inspect", *map(str, parts), "--product", PRODUCT, "--models-dir", str(trained_models),
                 "--db", str(tmp_path / "line.db"), "--plant", url(db, "line1")])
    assert code in (0, 1)
    assert "connected, 0 row(s) behind" in capsys.readouterr().err
    assert sql(db, "SELECT count(*) FROM results") == [(3,)]


def test_the_monitor_tab_shows_the_plant_connection_and_the_rows_behind(db, open_window, trained_models, qtbot):
    window = open_window(trained_models, plant_url=url(db, "line1"))
    window.tabs.setCurrentWidget(window.monitor)
    label = window.monitor.plant
    for i in range(5):
        window.session.store.record(InspectionRecord(PRODUCT, "file", "OK", f"/parts/{i}.png"))
    qtbot.waitUntil(lambda: sql(db, "SELECT count(*) FROM results") == [(5,)], timeout=WAIT_S * 1000)
    qtbot.waitUntil(lambda: label.isVisible() and "connected, 0 row(s) behind" in label.text(), timeout=WAIT_S * 1000)
    db.stop()
    window.session.store.record(InspectionRecord(PRODUCT, "file", "NG", "/parts/5.png"))
    qtbot.waitUntil(lambda: "NOT connected, 1 row(s) waiting" in label.text(), timeout=WAIT_S * 1000)
    db.start()
    qtbot.waitUntil(lambda: sql(db, "SELECT count(*) FROM results") == [(6,)], timeout=WAIT_S * 1000)
    qtbot.waitUntil(lambda: "Plant database: connected, 0 row(s) behind" in label.text(), timeout=WAIT_S * 1000)
