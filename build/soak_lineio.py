"""Soak of line I/O: N parts (default 5,000) triggered by a Modbus PLC client on a watched
folder of small generated parts, verdicts shipped to a real Mosquitto broker that is killed
and restarted 3 times meanwhile. Checks and prints:

- every verdict reaches an MQTT subscriber at least once, none lost, duplicates only with the same id;
- the PLC reads N results whose counter never skips;
- memory (RSS) does not grow over the parts;
- trigger -> RESULT_VALID median latency, beside the camera-frame latency of the same parts
  (their score time as decoded frames in memory, without the PLC; target: <= frame latency + 10 ms).

The PLC is a process of its own (as a real PLC is a machine of its own), a pymodbus client
polling every --scan-ms like a PLC's cycle; it reports each part on its standard output.

    python build/soak_lineio.py [--parts 5000] [--scan-ms 1]      (needs mosquitto on the PATH)
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pymodbus.client import ModbusTcpClient  # noqa: E402

from inspector.data.images import list_images, load_image  # noqa: E402
from inspector import services  # noqa: E402
from inspector.core.model import Settings  # noqa: E402
from inspector.core.model_store import save_model  # noqa: E402
from inspector.core.training import train  # noqa: E402
from inspector.lineio.line_io import LineIO, LineSettings  # noqa: E402
from inspector.station import inspector_for  # noqa: E402
from inspector.store.results import ResultStore  # noqa: E402
from inspector.synthetic import write_parts  # noqa: E402
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
    ap.add_argument("--scan-ms", type=float, default=1.0, help="the PLC's cycle: how often it polls (ms)")
    ap.add_argument("--plc", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the PLC process itself
    args = ap.parse_args()
    if args.plc:
        return plc(args.plc, args.parts, args.scan_ms / 1000)
    root = Path(tempfile.mkdtemp(prefix="soak-lineio-"))
    try:
        return soak(root, args.parts, args.size, args.scan_ms)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def plc(port: int, parts: int, scan_s: float) -> int:
    """The PLC: per part, the README's handshake, polling every `scan_s`; one JSON line per part
    on stdout: the result counter read and trigger -> RESULT_VALID in ms (from setting TRIGGER)."""
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()

    def until(condition) -> None:
        while not condition():
            time.sleep(scan_s)
    until(lambda: bits(client)["ready"])
    for i in range(1, parts + 1):
        until(lambda: bits(client)["ready"])
        started = time.perf_counter()
        coil(client, "trigger", True)
        until(lambda: client.read_discrete_inputs(3, count=1).bits[0])  # RESULT_VALID
        ms = (time.perf_counter() - started) * 1000
        counter = inputs(client)["result_counter"]
        coil(client, "trigger", False)
        coil(client, "result_ack", True)
        coil(client, "result_ack", False)
        print(json.dumps({"part": i, "counter": counter, "ms": ms}), flush=True)
    client.close()
    return 0


def frame_latencies(model, folder: Path, count: int = 200) -> list[float]:
    """The camera-frame latency of the first `count` parts: their score time, decoded in memory."""
    inspector = inspector_for(model)
    frames = [load_image(p) for p in list_images(folder)[:count]]
    for frame in frames[:5]:
        inspector.inspect(frame)
    out = []
    for frame in frames:
        start = time.perf_counter()
        inspector.inspect(frame)
        out.append((time.perf_counter() - start) * 1000)
    return out


def soak(root: Path, parts: int, size: int, scan_ms: float) -> int:
    t0 = time.monotonic()
    model, _ = train(PRODUCT, write_parts(root / "good", 20, size=size), Settings())
    save_model(model, root / "models")
    folder = root / "in"
    for i in range(parts):  # a few NG among them
        write_parts(folder, 1, defect="scratch" if i % 25 == 0 else None, seed=1000 + i, size=size)
    frame_ms = frame_latencies(model, folder)  # before the line, and again after it
    print(f"set-up {time.monotonic() - t0:.0f} s: model trained, {parts} parts written", flush=True)

    broker = Broker(root)
    broker.start()
    try:
        return _run(root, parts, folder, broker, lambda: frame_ms + frame_latencies(model, folder), scan_ms)
    finally:
        if broker.process.poll() is None:
            broker.kill()


def _run(root: Path, parts: int, folder: Path, broker: Broker, frames, scan_ms: float) -> int:
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
    wait_until(lambda: io.link.state == "ready", "the line ready")
    kills = {parts * k // 4 for k in (1, 2, 3)}
    latencies, counters, memory = [], [], []
    at_start = rss_mb()  # the line started, no part yet
    restart_at = None
    t0 = time.monotonic()
    child = subprocess.Popen([sys.executable, __file__, "--plc", str(modbus), "--parts", str(parts),
                              "--scan-ms", str(scan_ms)], stdout=subprocess.PIPE, text=True)
    for line_ in child.stdout:  # the PLC's parts, as it reads them; the broker goes away meanwhile
        part = json.loads(line_)
        i = part["part"]
        latencies.append(part["ms"])
        counters.append(part["counter"])
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
    child.wait(60)
    elapsed = time.monotonic() - t0
    rows = store.rows_after("inspections", 0, parts + 10)
    try:
        wait_until(lambda: len({m["id"] for m in sub.results()}) >= len(rows), "every verdict at the subscriber", 120)
    except AssertionError as exc:
        print(exc)
    stop.set()
    line.join(60)
    io.stop()
    sub.close()
    frame_ms = frames()

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
    print(f"MQTT: {len(rows)} verdicts logged, {io.shipper.sent} sent, {len(got & ids)} received, lost {lost}, "
          f"duplicates {duplicates} (with a different content: {conflicting})")
    print(f"PLC: {len(counters)} results read, counter 1..{counters[-1]}, skips "
          f"{sum(b - a != 1 for a, b in zip(counters, counters[1:])) + (counters[0] != 1)}")
    print(f"memory: RSS {at_start:.0f} MB before the first part, {memory[0]:.0f} MB after {max(parts // 10, 1)} "
          f"parts, {memory[-1]:.0f} MB after {parts} (growth {memory[-1] - memory[0]:+.0f} MB since part "
          f"{max(parts // 10, 1)})")
    print(f"latency: PLC process (cycle {scan_ms:g} ms) trigger -> result valid median "
          f"{statistics.median(latencies):.1f} ms "
          f"(p95 {sorted(latencies)[int(0.95 * len(latencies))]:.1f}); the line's own (file to verdict) median "
          f"{latency_logged:.1f} ms; camera frame (the same parts in memory, no PLC) median "
          f"{statistics.median(frame_ms):.1f} ms "
          f"(target: <= {statistics.median(frame_ms) + 10:.1f} ms)")
    ok = (lost == 0 and conflicting == 0 and counters == list(range(1, parts + 1)) and len(rows) == parts)
    print("soak passed" if ok else "SOAK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
