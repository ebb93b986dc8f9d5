"""Verdicts over MQTT (paho-mqtt), shipped from the result log: the log is the outbox.

Every logged verdict is published, in the log's order, as JSON on `inspector/<station>/<product>/result` with QoS
1. Its "id" is the row's unique id: a verdict published again (after a broker outage, or a restart of the station
before the broker acknowledged it) carries the same id, so a consumer de-duplicates on it. The shipper's bookmark
(the last row the broker acknowledged) is kept in the log (table outbox), so an outage, or the station stopped
meanwhile, delays verdicts and never loses one. A new shipper starts at the end of the log (it sends what is logged
from then on).

`inspector/<station>/state` is retained: "online" while the station is connected, "offline" when it stops, and, as
its last will, "offline" when it vanishes."""
from __future__ import annotations

import json
import logging
import re
import threading

import paho.mqtt.client as mqtt

from ..common import Started
from ..errors import StoreError
from ..store.results import ResultStore
from .link import LineIOError

log = logging.getLogger(__name__)

BATCH = 100  # rows sent before the bookmark moves
POLL_S = 0.5  # how often the log is read when nothing woke the shipper
RETRY_S = 2.0  # after the log could not be read
STOP_GRACE_S = 2.0  # how long a stop waits for the broker's acknowledgements under way
OUTBOX = "mqtt"
_TOPIC_LEVEL = re.compile(r"^[^/+#\x00]{1,64}$")


def check_station_name(name: str) -> str:
    if not _TOPIC_LEVEL.match(name):
        raise LineIOError(f"'{name}' cannot be a station name in MQTT topics: use 1-64 characters without "
                        f"'/', '+' or '#'.")
    return name


def result_topic(station: str, product: str) -> str:
    return f"inspector/{station}/{product}/result"


def message(row_id: int, row: dict, station: str) -> dict:
    """A verdict (a row of the log's inspections, as ResultStore.rows_after gives it) as it is published."""
    return {"id": row["uid"], "row": row_id, "station": station, "product": row["product"],
            "verdict": row["verdict"], "score": row["score"], "threshold": row["threshold"],
            "model_id": row["model_id"], "model_version": row["model_version"], "part_id": row["part_id"],
            "source": row["source"], "image": row["image_path"], "time": row["time"], "error": row["error"],
            "latency_ms": row["latency_ms"], "regions": json.loads(row["regions"])}


class MqttShipper(Started):
    """Ships the log to a broker on its own thread; `connected`, `position` (the last row
    acknowledged) say how it goes. `notify()` when a verdict was logged: it goes out at once."""

    def __init__(self, store: ResultStore, host: str, port: int, station: str):
        self.store, self.host, self.port = store, host, port
        self.station = check_station_name(station)
        self.state_topic = f"inspector/{station}/state"
        self.position: int | None = None
        self.sent = 0  # verdicts acknowledged by the broker since the start
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"inspector-{station}")
        self._client.will_set(self.state_topic, "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(1, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._cond = threading.Condition()
        self._acked: set[int] = set()
        self._connected = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        self._client.connect_async(self.host, self.port, keepalive=10)
        self._client.loop_start()  # connects, and reconnects, in the background
        self._thread = threading.Thread(target=self._run, name="MQTT shipper", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop; say "offline" when connected. Rows not yet acknowledged go out on the next start."""
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._connected:
            self._client.publish(self.state_topic, "offline", qos=1, retain=True).wait_for_publish(2.0)
        self._client.disconnect()
        self._client.loop_stop()

    # ---- paho's callbacks (its network thread) ---------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("the MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        client.publish(self.state_topic, "online", qos=1, retain=True)
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        self._wake.set()
        log.info("connected to the MQTT broker %s:%d", self.host, self.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self._connected = False
        if not self._stop.is_set():
            log.warning("lost the MQTT broker %s:%d (%s); verdicts wait in the log", self.host, self.port, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    # ---- shipping -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.position is None:
                    self.position = self.store.outbox_position(OUTBOX, new_at_end=True)
                with self._cond:
                    self._cond.wait_for(lambda: self._connected or self._stop.is_set())
                rows = self.store.rows_after("inspections", self.position, BATCH)
                if not rows:
                    self._wake.wait(POLL_S)
                    self._wake.clear()
                    continue
                if not self._send(rows):
                    return  # stopped: the rest goes out on the next start
                self.store.set_outbox_position(OUTBOX, rows[-1][0])
                self.position = rows[-1][0]
                self.sent += len(rows)
            except StoreError as exc:
                log.warning("verdicts wait to be shipped over MQTT: %s", exc)
                self._stop.wait(RETRY_S)

    def _send(self, rows: list[tuple[int, dict]]) -> bool:
        """Publish the rows, wait for the broker's acknowledgement of each (paho resends); False when stopped first."""
        with self._cond:
            self._acked.clear()
        mids = {self._client.publish(result_topic(self.station, row["product"]),
                                     json.dumps(message(row_id, row, self.station)), qos=1).mid
                for row_id, row in rows}
        with self._cond:
            self._cond.wait_for(lambda: mids <= self._acked or self._stop.is_set())
            if self._connected:  # stopping: the acknowledgements under way still count
                self._cond.wait_for(lambda: mids <= self._acked, STOP_GRACE_S)
            return mids <= self._acked
