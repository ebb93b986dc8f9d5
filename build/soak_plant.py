"""Soak test of the plant database (a real PostgreSQL started here, tests/postgres.py).

1. 10 simulated stations x 5,000 verdicts (written into 10 SQLite logs through the store
   while their shippers run), the server restarted twice meanwhile: 0 lost, 0 duplicated;
   the ingest rate (target >= 2,000 verdicts/s).
2. A station with a backlog of 50,000 verdicts catches up (target <= 60 s) while its line
   keeps logging: its logging rate during the catch-up beside its rate alone.
3. `inspector plant` over 1,000,000 verdicts made server-side with generate_series (target <= 1 s).

    PYTHONPATH=. .venv/bin/python build/soak_plant.py [--stations 10] [--verdicts 5000]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from postgres import Server  # noqa: E402

from inspector import plant  # noqa: E402
from inspector.cli import main as cli  # noqa: E402
from inspector.store.results import InspectionRecord, ResultStore  # noqa: E402


def record(store: ResultStore, i: int, product: str = "Disc") -> None:
    store.record(InspectionRecord(product, "camera", "NG" if i % 20 == 0 else "OK", f"cam#{i}", 1.0, 2.0,
                                  "abc123", model_version=1, latency_ms=5.0))


def fill(store: ResultStore, n: int, start: int = 0) -> float:
    """Log n verdicts; returns the seconds it took."""
    t = time.perf_counter()
    for i in range(start, start + n):
        record(store, i)
    return time.perf_counter() - t


def wait(condition, limit_s: float = 600.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("gave up waiting")
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=10)
    ap.add_argument("--verdicts", type=int, default=5000)
    ap.add_argument("--backlog", type=int, default=50_000)
    ap.add_argument("--plant-rows", type=int, default=1_000_000)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="soak-plant-"))
    server = Server()
    failed = []
    try:
        server.sql("CREATE DATABASE plant", "postgres")
        plant.setup(server.admin_url("plant"))
        names = [f"station{i:02d}" for i in range(args.stations)] + ["backlog", "engineer"]
        for name in names:
            group = "inspector_engineer" if name == "engineer" else "inspector_station"
            server.sql(f"CREATE ROLE {name} LOGIN PASSWORD 'pw' IN ROLE {group}", "postgres")
        os.environ["PGPASSWORD"] = "pw"

        # 1. stations shipping while they log, the server restarted twice
        stores = [ResultStore(folder / f"{n}.db") for n in names[:args.stations]]
        shippers = [plant.Shipper(s, server.url(n), interval_s=0.2).start() for s, n in zip(stores, names)]
        writers = [threading.Thread(target=fill, args=(s, args.verdicts)) for s in stores]
        total = args.stations * args.verdicts
        started = time.perf_counter()
        for w in writers:
            w.start()
        for restart in range(2):
            wait(lambda: server.sql("SELECT count(*) FROM results")[0][0] >= total * (restart + 1) // 3)
            server.stop("immediate")
            time.sleep(1.0)
            server.start()
            print(f"server restarted ({restart + 1})", flush=True)
        for w in writers:
            w.join()
        wait(lambda: all(s.status().connected and s.status().behind == 0 for s in shippers))
        elapsed = time.perf_counter() - started
        for s in shippers:
            s.stop()
        count, distinct = server.sql("SELECT count(*), count(DISTINCT (station, local_id)) FROM results")[0]
        counted = server.sql("SELECT sum(ok + ng + error) FROM hourly")[0][0]
        lost, doubled = total - distinct, count - distinct
        print(f"1. {args.stations} stations x {args.verdicts} verdicts, 2 server restarts: {count} rows, "
              f"{lost} lost, {doubled} duplicated, hourly counts {counted} (target: 0 lost, 0 duplicated)")
        print(f"   logged and shipped in {elapsed:.1f} s: {total / elapsed:.0f} verdicts/s end to end "
              f"(restarts included)")
        if lost or doubled or counted != total:
            failed.append("exactly once")

        # ingest rate: the same logs shipped again into a fresh database, nothing else running
        server.sql("CREATE DATABASE plant2", "postgres")
        plant.setup(server.admin_url("plant2"))
        for s in stores:
            for table in plant.TABLES:
                s.set_outbox_position(f"plant.{table}", 0)
        t = time.perf_counter()
        threads = [threading.Thread(target=plant.Shipper(s, server.url(n, "plant2")).ship)
                   for s, n in zip(stores, names)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rate = total / (time.perf_counter() - t)
        print(f"   ingest: {rate:.0f} verdicts/s, {args.stations} shippers at once (target >= 2000)")
        if rate < 2000:
            failed.append("ingest rate")
        for s in stores:
            s.close()

        # 2. a backlog of 50,000 caught up while the line keeps logging
        store = ResultStore(folder / "backlog.db")
        fill(store, args.backlog)
        alone = 2000 / fill(store, 2000, args.backlog)
        shipper = plant.Shipper(store, server.url("backlog")).start()
        t = time.perf_counter()
        during, n = [], args.backlog + 2000
        while shipper.status().behind > 500 or not shipper.status().connected:
            during.append(200 / fill(store, 200, n))
            n += 200
            if time.perf_counter() - t > 600:
                break
        wait(lambda: shipper.status().behind == 0)
        catch_up = time.perf_counter() - t
        shipper.stop()
        store.close()
        line = sum(during) / len(during) if during else alone
        print(f"2. backlog of {args.backlog + 2000} verdicts (and {n - args.backlog - 2000} more logged meanwhile) "
              f"caught up in {catch_up:.1f} s (target <= 60 s); the line logged {line:.0f} verdicts/s during it, "
              f"{alone:.0f}/s alone")
        if catch_up > 60:
            failed.append("catch-up")

        # 3. the plant view over 1,000,000 verdicts (made server-side)
        server.sql(f"""
            WITH made AS (
                INSERT INTO results (station, local_id, product, source, verdict, score, threshold, model_id,
                                     model_version, time)
                SELECT 'station' || lpad((g % 50)::text, 2, '0'), 1000000 + g, 'Product' || (g % 3), 'camera',
                       CASE WHEN g % 20 = 0 THEN 'NG' ELSE 'OK' END, 1.0, 2.0, 'abc123', 1,
                       now() - (g * interval '2.592 second')
                FROM generate_series(1, {args.plant_rows}) AS g
                RETURNING station, product, verdict, time)
            INSERT INTO hourly (station, product, hour, ok, ng, error)
            SELECT station, product, date_trunc('hour', time, 'UTC'), count(*) FILTER (WHERE verdict = 'OK'),
                   count(*) FILTER (WHERE verdict = 'NG'), 0 FROM made GROUP BY 1, 2, 3
            ON CONFLICT (station, product, hour) DO UPDATE
                SET ok = hourly.ok + excluded.ok, ng = hourly.ng + excluded.ng""")
        server.sql("VACUUM ANALYZE")
        rows = server.sql("SELECT count(*) FROM results")[0][0]
        times = []
        for _ in range(3):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = cli(["plant", "--plant", server.url("engineer"), "--hours", "720", "--db",
                            str(folder / "view.db"), "--models-dir", str(folder / "models")])
            times.append(time.perf_counter() - t)
            assert code == 0
        print(f"3. inspector plant over {rows} verdicts (a month of 50 stations): {min(times):.2f} s "
              f"(best of 3; first {times[0]:.2f} s) (target <= 1 s)")
        if min(times) > 1:
            failed.append("plant view")
    finally:
        server.close()
    print("FAILED: " + ", ".join(failed) if failed else "all targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
