"""Soak of line I/O: N parts (default 5,000) triggered by a Modbus PLC client on a watched
folder of small generated parts, verdicts shipped to a real Mosquitto broker that is killed
and restarted 3 times meanwhile. Checks and prints:

- every verdict reaches an MQTT subscriber at least once, none lost, duplicates only with the same id;
- the PLC reads N results whose counter never skips;
- memory (RSS) does not grow over the parts;
- trigger -> RESULT_VALID median latency, beside the in-memory camera-frame latency of the same
  model (target: <= frame latency + 10 ms).

    python build/soak_lineio.py [--parts 5000]      (needs mosquitto on the PATH)
"""
from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pymodbus.client import ModbusTcpClient  # noqa: E402

from inspector import services  # noqa: E402
from inspector.core.model import Settings, save_model  # noqa: E402
from inspector.core.training import train  # noqa: E402
from inspector.lineio.line_io import LineIO, LineSettings  # noqa: E402
from inspector.station import inspector_for  # noqa: E402
from inspector.store.results import ResultStore  # noqa: E402
from inspector.synthetic import make_part, write_parts  # noqa: E402
from test_lineio import Broker, Subscriber, bits, coil, free_port, inputs, wait_until  # noqa: E402

PRODUCT = "Soak"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=5000)
    ap.add_argument("--size", type=int, default=128, help="side of the generated part images (px)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soak-lineio-"))
    try:
        return soak(root, args.parts, args.size)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def soak(root: Path, parts: int, size: int) -> int:
    t0 = time.monotonic()
    model, _ = train(PRODUCT, write_parts(root / "good", 20, size=size), Settings())
    save_model(model, root / "models")
    frame = make_part(999, size)
    inspector = inspector_for(model)
    for _ in range(5):
        inspector.inspect(frame)
    frame_ms = []
    for _ in range(50):
        start = time.perf_counter()
        inspector.inspect(frame)
        frame_ms.append((time.perf_counter() - start) * 1000)
    folder = root / "in"
    for i in range(parts):  # a few NG among them
        write_parts(folder, 1, defect="scratch" if i % 25 == 0 else None, seed=1000 + i, size=size)
    print(f"set-up {time.monotonic() - t0:.0f} s: model trained, {parts} parts written", flush=True)

    broker = Broker(root)
    broker.start()
    try:
        return _run(root, parts, folder, broker, frame_ms)
    finally:
        if broker.process.poll() is None:
            broker.kill()


def _run(root: Path, parts: int, folder: Path, broker: Broker, frame_ms: list[float]) -> int:
    sub = Subscriber(broker.port)
    store = ResultStore(root / "inspections.db")
    modbus = free_port()
    io = LineIO(LineSettings(modbus=str(modbus), mqtt=f"127.0.0.1:{broker.port}", station="soak"),
                root / "models", store)
    stop = threading.Event()
    io.start()
    options = io.line_options() | {"on_status": io.on_status(lambda *_: None)}
    line = threading.Thread(target=services.run_line, args=(root / "models", store, PRODUCT, "folder", folder, stop,
                                                            io.on_outcome(lambda outcome: None)),
                            kwargs=dict(settle_s=0.05, **options), daemon=True)
    line.start()
    plc = ModbusTcpClient("127.0.0.1", port=modbus)
    assert plc.connect()
    wait_until(lambda: bits(plc)["ready"], "the line ready")
    kills = {parts * k // 4 for k in (1, 2, 3)}
    latencies, counters, memory = [], [], []
    restart_at = None
    t0 = time.monotonic()
    for i in range(1, parts + 1):
        wait_until(lambda: bits(plc)["ready"], "ready")
        coil(plc, "trigger", True)
        started = time.perf_counter()
        while not plc.read_discrete_inputs(3, count=1).bits[0]:  # RESULT_VALID
            pass
        latencies.append((time.perf_counter() - started) * 1000)
        counters.append(inputs(plc)["result_counter"])
        coil(plc, "trigger", False)
        coil(plc, "result_ack", True)
        coil(plc, "result_ack", False)
        if i in kills:
            broker.kill()
            restart_at = i + parts // 20  # the broker is away for 5 % of the parts
            print(f"part {i}: broker killed", flush=True)
        if i == restart_at:
            broker.start()
            print(f"part {i}: broker restarted", flush=True)
        if i % max(parts // 10, 1) == 0:
            memory.append(rss_mb())
            print(f"part {i}: {time.monotonic() - t0:.0f} s, RSS {memory[-1]:.0f} MB, shipped {io.shipper.sent}",
                  flush=True)
    elapsed = time.monotonic() - t0
    rows = store.rows_after("inspections", 0, parts + 10)
    try:
        wait_until(lambda: len({m["id"] for m in sub.results()}) >= len(rows), "every verdict at the subscriber", 120)
    except AssertionError as exc:
        print(exc)
    stop.set()
    line.join(60)
    io.stop()
    plc.close()
    sub.close()

    messages = sub.results()
    ids = {row["uid"] for _, row in rows}
    got = {m["id"] for m in messages}
    by_id: dict[str, dict] = {}
    conflicting = 0
    for m in messages:
        conflicting += by_id.setdefault(m["id"], m) != m
    duplicates = len(messages) - len(got)
    lost = len(ids - got)
    latency_logged = statistics.median(row["latency_ms"] for _, row in rows if row["latency_ms"] is not None)
    print(f"\n{parts} triggered parts in {elapsed:.0f} s ({parts / elapsed:.1f} parts/s), broker killed and "
          f"restarted {len(kills)} times")
    print(f"MQTT: {len(rows)} verdicts logged, {len(got & ids)} received, lost {lost}, duplicates {duplicates} "
          f"(with a different content: {conflicting})")
    print(f"PLC: {len(counters)} results read, counter 1..{counters[-1]}, skips "
          f"{sum(b - a != 1 for a, b in zip(counters, counters[1:])) + (counters[0] != 1)}")
    print(f"memory: RSS {memory[0]:.0f} MB after {max(parts // 10, 1)} parts, {memory[-1]:.0f} MB after {parts} "
          f"(growth {memory[-1] - memory[0]:+.0f} MB)")
    print(f"latency: trigger -> result valid median {statistics.median(latencies):.1f} ms "
          f"(p95 {sorted(latencies)[int(0.95 * len(latencies))]:.1f}); the line's own (file to verdict) median "
          f"{latency_logged:.1f} ms; camera frame in memory median {statistics.median(frame_ms):.1f} ms "
          f"(target: <= {statistics.median(frame_ms) + 10:.1f} ms)")
    ok = (lost == 0 and conflicting == 0 and counters == list(range(1, parts + 1)) and len(rows) == parts)
    print("soak passed" if ok else "SOAK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
