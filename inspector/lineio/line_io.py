"""Line I/O around one run of the line, as its settings ask: the OPC UA and Modbus TCP servers for a PLC (the line is
then triggered by it) and the MQTT shipper. The CLI's `watch` / `camera` and the window's Monitor start it the same
way:

    with LineIO(settings, models_dir, store) as io:
        run_line(..., on_outcome=io.on_outcome(mine), on_status=io.on_status(mine), **io.line_options())"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..common import Started
from ..station import Outcome
from ..store.results import ResultStore
from .link import LineIOError, LineLink

OPCUA_PORT, MODBUS_PORT, MQTT_PORT = 4840, 502, 1883


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """'HOST:PORT', 'PORT' or 'HOST' as (host, port); 127.0.0.1 (this machine only) and `default_port` by default."""
    host, colon, port = str(text).strip().rpartition(":")
    if not colon:
        host, port = ("", port) if port.isdigit() else (port, "")
    number = int(port) if port.isdigit() else -1 if port else default_port
    if not 0 < number < 65536:
        raise LineIOError(f"'{text}' is not an address: give HOST:PORT, PORT or HOST (e.g. 127.0.0.1:{default_port}).")
    return host or "127.0.0.1", number


def default_station() -> str:
    """This computer's name, as MQTT topics can hold it."""
    return "".join(c for c in socket.gethostname() if c not in "/+#") or "station"


@dataclass
class LineSettings:
    """Off by default. Addresses are 'HOST:PORT' or 'PORT' (then 127.0.0.1: this machine only)."""
    opcua: str | None = None
    modbus: str | None = None
    mqtt: str | None = None
    station: str = ""  # the station's name in MQTT topics (default: the computer's name)
    product_select: bool = False  # whether a PLC may select the product

    @property
    def plc(self) -> bool:
        return bool(self.opcua or self.modbus)

    def check(self) -> None:
        """Raise an InspectorError on an address or a station name that cannot be used."""
        for address, port in ((self.opcua, OPCUA_PORT), (self.modbus, MODBUS_PORT), (self.mqtt, MQTT_PORT)):
            if address:
                parse_address(address, port)
        from .mqtt_shipper import check_station_name
        check_station_name(self.station or default_station())


class LineIO(Started):
    def __init__(self, settings: LineSettings, models_dir: str | Path, store: ResultStore):
        settings.check()
        self.settings = settings
        self.link = LineLink(models_dir, store, settings.product_select)
        self.servers = []  # OpcUaServer, ModbusServer
        self.shipper = None
        if settings.opcua:
            from .opcua_server import OpcUaServer
            host, port = parse_address(settings.opcua, OPCUA_PORT)
            self.servers.append(OpcUaServer(self.link, port, host))
        if settings.modbus:
            from .modbus_server import ModbusServer
            host, port = parse_address(settings.modbus, MODBUS_PORT)
            self.servers.append(ModbusServer(self.link, port, host))
        if settings.mqtt:
            from .mqtt_shipper import MqttShipper
            self.shipper = MqttShipper(store, *parse_address(settings.mqtt, MQTT_PORT),
                                       settings.station or default_station())

    def start(self) -> None:
        started = []
        try:
            for server in self.servers:
                server.start()
                started.append(server)
        except BaseException:
            for server in started:
                server.stop()
            raise
        if self.shipper is not None:
            self.shipper.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.shipper is not None:
            self.shipper.stop()

    # ---- wiring to run_line ------------------------------------------------------------------
    def line_options(self) -> dict:
        """run_line's trigger (with a PLC server) and on_station."""
        return {"trigger": self.link.trigger if self.settings.plc else None, "on_station": self.link.on_station}

    def on_outcome(self, then: Callable[[Outcome], None]) -> Callable[[Outcome], None]:
        """The PLC hears a result first, then `then` (the shell's own)."""
        def on_outcome(outcome: Outcome) -> None:
            self.link.on_outcome(outcome)
            if self.shipper is not None:
                self.shipper.notify()
            then(outcome)
        return on_outcome

    def on_status(self, then: Callable[[str, "str | None"], None]) -> Callable[[str, "str | None"], None]:
        def on_status(state: str, reason: str | None) -> None:
            self.link.on_status(state, reason)
            then(state, reason)
        return on_status

    def status(self) -> list[str]:
        """How the connections are, in words: one line per server and the broker."""
        lines = []
        for server in self.servers:
            n = server.connected
            lines.append(f"PLC ({server.kind} {server.host}:{server.port}): "
                         + (f"{n} connected" if n else "not connected"))
        if self.shipper is not None:
            s = self.shipper
            lines.append(f"MQTT {s.host}:{s.port}: " + ("connected" if s.connected else "not connected, verdicts wait "
                                                        "in the log") + f", {s.sent} sent")
        return lines

    @property
    def products_line(self) -> str:
        return "PLC product numbers: " + self.link.describe_numbers()
