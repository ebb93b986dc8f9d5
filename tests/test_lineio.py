"""Line I/O with real parts: a real Mosquitto broker started on a free 127.0.0.1 port, a real
asyncua client, a real pymodbus client, the real line on a watched folder of generated parts."""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from asyncua import Client, ua
from pymodbus.client import ModbusTcpClient

from conftest import PRODUCT, copy_models
from inspector.changes import Changes
from inspector import services
from inspector.core.model import with_tolerance
from inspector.core.model_store import load_model, save_model
from inspector.core.product_numbers import NUMBERS_FILE, product_numbers
from inspector.lineio.line_io import LineIO, LineSettings
from inspector.lineio.modbus_server import COILS, DISCRETE, ERRORS, INPUT
from inspector.lineio.mqtt_shipper import MqttShipper
from inspector.lineio.opcua_server import NAMESPACE
from inspector.store.results import InspectionRecord, ResultStore
from inspector.synthetic import write_parts

WAIT_S = 60.0  # generous, for a loaded 2-core machine
OTHER = "Gear"


def free_ports(n: int) -> list[int]:
    """n different free ports (each held until all are chosen: two picked one after the other may be the same)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_until(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# ---- a real broker ---------------------------------------------------------------------------

class Broker:
    """Debian's mosquitto on a free local port, with a generated config; killed and restarted at will.
    It saves its sessions on every change, so that a subscriber's session (its subscription and
    the verdicts queued for it) outlives a kill, as on a plant's broker."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                               f"persistence_location {folder}/\nautosave_interval 1\nautosave_on_changes true\n"
                               + ("user root\n" if os.geteuid() == 0 else ""))
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                assert self.process.poll() is None, "mosquitto ended"
                return False
        wait_until(listening, "mosquitto to listen")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT_S)


@pytest.fixture
def broker(tmp_path):
    assert shutil.which("mosquitto"), "mosquitto is needed: apt-get install -y mosquitto (.ci/run installs it)"
    b = Broker(tmp_path)
    b.start()
    yield b
    if b.process.poll() is None:
        b.kill()


class Subscriber:
    """Every message on inspector/#, in order of arrival; a persistent session (QoS 1): what is
    published while it is away waits for it at the broker."""

    def __init__(self, port: int):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{time.monotonic_ns()}",
                                  clean_session=False)
        self.client.on_connect = lambda c, *_: c.subscribe("inspector/#", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def results(self) -> list[dict]:
        return [json.loads(p) for t, p, _ in list(self.messages) if t.endswith("/result")]

    def states(self) -> list[str]:
        return [p.decode() for t, p, _ in list(self.messages) if t.endswith("/state")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def record(store: ResultStore, n: int) -> None:
    store.record(InspectionRecord(PRODUCT, "camera", "OK" if n % 3 else "NG", f"cam#{n}", score=n / 10,
                                  threshold=1.0, part_id=n))


def test_every_verdict_reaches_the_broker_across_outages_once_per_id_in_order(tmp_path, broker):
    store = ResultStore(tmp_path / "inspections.db")
    record(store, 0)  # logged before the shipper's first start: not shipped
    sub = Subscriber(broker.port)
    shipper = MqttShipper(store, "127.0.0.1", broker.port, "line 1")
    with shipper:
        wait_until(lambda: shipper.connected and "online" in sub.states(), "online")
        for n in range(1, 31):
            record(store, n)
            shipper.notify()
        wait_until(lambda: len({m["id"] for m in sub.results()}) == 30, "30 verdicts")
        broker.kill()  # verdicts logged while the broker is away wait in the log
        wait_until(lambda: not shipper.connected, "the shipper to notice")
        for n in range(31, 61):
            record(store, n)
            shipper.notify()
        broker.start()
        wait_until(lambda: len({m["id"] for m in sub.results()}) == 60, "60 verdicts after the restart")
    # restarted station: what was logged while it was stopped goes out from its bookmark
    for n in range(61, 71):
        record(store, n)
    with MqttShipper(store, "127.0.0.1", broker.port, "line 1") as again:
        wait_until(lambda: len({m["id"] for m in sub.results()}) == 70, "70 verdicts after a station restart")
        wait_until(lambda: again.position == store.rows_after("inspections", 70, 1)[0][0], "the last acknowledgement")
    sub.close()
    rows = [i for i, _ in store.rows_after("inspections", 0, 1000)]  # row ids
    messages = sub.results()
    first_seen = list(dict.fromkeys(m["id"] for m in messages))
    by_id = {m["id"]: m for m in messages}
    assert [by_id[i]["part_id"] for i in first_seen] == list(range(1, 71))  # in the log's order, none lost
    assert [by_id[i]["row"] for i in first_seen] == rows[1:]
    for m in messages:  # a duplicate is the same verdict under the same id
        assert m == by_id[m["id"]]
    assert messages[0]["station"] == "line 1" and messages[0]["product"] == PRODUCT
    assert {t for t, _, _ in sub.messages if t.endswith("/result")} == {f"inspector/line 1/{PRODUCT}/result"}
    assert sub.states()[-1] == "offline"
    assert store.outbox_position("mqtt") == rows[-1]


def test_last_will_says_offline_when_the_station_dies(tmp_path, broker, trained_models):
    folder = tmp_path / "in"
    folder.mkdir()
    sub = Subscriber(broker.port)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    process = subprocess.Popen([sys.executable, "-m", "inspector.cli", "watch", str(folder), "--product", PRODUCT,
                                "--models-dir", str(trained_models), "--db", str(tmp_path / "inspections.db"),
                                "--mqtt", f"127.0.0.1:{broker.port}", "--station", "s1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "online" in sub.states(), "the station online")
        write_parts(folder, 2, seed=5)
        wait_until(lambda: len(sub.results()) >= 2, "the watched parts' verdicts")
        process.send_signal(signal.SIGKILL)
        process.wait(WAIT_S)
        wait_until(lambda: sub.states()[-1] == "offline", "the last will")
    finally:
        if process.poll() is None:
            process.kill()
        sub.close()
    late = Subscriber(broker.port)  # the state is retained: a newcomer reads it at once
    wait_until(lambda: late.states() == ["offline"], "the retained state")
    late.close()


# ---- the line with its PLC servers -------------------------------------------------------------

class Line:
    """The line watching a folder, triggered by the PLC through LineIO; the test writes parts."""

    def __init__(self, root: Path, models: Path, **settings):
        self.folder = root / "in"
        self.folder.mkdir()
        self.store = ResultStore(root / "inspections.db")
        self.modbus, self.opcua = free_ports(2)
        self.io = LineIO(LineSettings(opcua=str(self.opcua), modbus=str(self.modbus), **settings), models, self.store)
        self.stop = threading.Event()
        self.outcomes = []
        self.io.start()
        options = self.io.line_options() | {"on_status": self.io.on_status(lambda *_: None)}
        self.thread = threading.Thread(target=services.run_line, args=(
            models, self.store, PRODUCT, "folder", self.folder, self.stop, self.io.on_outcome(self.outcomes.append)),
            kwargs=dict(settle_s=0.05, **options), daemon=True)
        self.thread.start()
        wait_until(lambda: self.io.link.state == "ready", "the line ready")

    def close(self):
        self.stop.set()
        self.thread.join(WAIT_S)
        self.io.stop()
        self.store.close()


@pytest.fixture
def models(trained_models, tmp_path):
    models = tmp_path / "models"
    copy_models(trained_models, models)
    save_model(replace(load_model(models, PRODUCT), product=OTHER), models)  # a second product, signed as its own
    return models


@pytest.fixture
def line(tmp_path, models):
    lines = []

    def open_(**settings):
        lines.append(Line(tmp_path, models, **settings))
        return lines[-1]
    yield open_
    for line_ in lines:
        line_.close()


def bits(plc: ModbusTcpClient) -> dict:
    return dict(zip(DISCRETE, plc.read_discrete_inputs(0, count=len(DISCRETE)).bits))


def inputs(plc: ModbusTcpClient) -> dict:
    regs = plc.read_input_registers(0, count=sum(n for _, n in INPUT.values())).registers
    return {name: (regs[a] << 16 | regs[a + 1]) if n == 2 else regs[a] for name, (a, n) in INPUT.items()}


def coil(plc: ModbusTcpClient, name: str, value: bool) -> None:
    assert not plc.write_coil(COILS.index(name), value).isError()


def read_result(plc: ModbusTcpClient) -> dict:
    """The PLC's side of the result handshake: wait for RESULT_VALID, read, acknowledge."""
    wait_until(lambda: bits(plc)["result_valid"], "result valid")
    result = inputs(plc) | bits(plc)
    coil(plc, "result_ack", True)
    wait_until(lambda: not bits(plc)["result_valid"], "result valid to fall")
    coil(plc, "result_ack", False)
    return result


def pulse(plc: ModbusTcpClient) -> bool:
    """One trigger: rising edge, then reset; whether it was acknowledged."""
    coil(plc, "trigger", True)
    acked = bits(plc)["trigger_ack"]
    coil(plc, "trigger", False)
    return acked


def test_modbus_trigger_handshake_buffers_results_and_counts_missed_triggers(line):
    ln = line()
    plc = ModbusTcpClient("127.0.0.1", port=ln.modbus)
    assert plc.connect()
    wait_until(lambda: ln.io.servers[1].connected == 1, "the PLC connection seen")
    assert bits(plc)["ready"] and inputs(plc)["state"] == 1
    plc.write_registers(0, [0, 777])  # the PLC's part number for the next trigger
    assert pulse(plc)
    assert bits(plc)["busy"]  # no file yet: the trigger waits for the next part
    plc.write_registers(0, [0, 0])
    assert not pulse(plc) and bits(plc)["missed_trigger"] and inputs(plc)["missed_count"] == 1
    write_parts(ln.folder, 1, seed=11)
    first = read_result(plc)
    assert first["result_counter"] == 1 and first["result_part_id"] == 777 and first["verdict"] in (1, 2)
    [logged] = ln.store.query()
    assert logged.part_id == 777 and logged.verdict == ("OK", "NG")[first["verdict"] - 1]
    assert first["score"] == min(round(logged.score * 1000), 65535) and first["ok"] == (logged.verdict == "OK")
    # three parts while the PLC does not acknowledge: the results wait in order
    for n in range(3):
        wait_until(lambda: bits(plc)["ready"], "ready")
        assert pulse(plc)
        write_parts(ln.folder / f"p{n}", 1, seed=20 + n)
        os.replace(next((ln.folder / f"p{n}").iterdir()), ln.folder / f"part{n}.png")
        wait_until(lambda: len(ln.outcomes) == 2 + n, "the part inspected")
    assert inputs(plc)["buffered"] == 3
    results = [read_result(plc) for _ in range(3)]
    assert [r["result_counter"] for r in results] == [2, 3, 4]
    assert [r["result_part_id"] for r in results] == [2, 3, 4]  # the station numbers the accepted triggers
    assert inputs(plc)["trigger_count"] == 4 and inputs(plc)["buffered"] == 0
    assert sorted(r.part_id for r in ln.store.query()) == [2, 3, 4, 777]
    plc.close()


def test_modbus_bad_input_is_refused_with_a_reason_and_the_line_goes_on(line, models):
    ln = line()
    plc = ModbusTcpClient("127.0.0.1", port=ln.modbus)
    assert plc.connect()
    assert plc.write_register(2, 99).isError() and inputs(plc)["error_code"] == ERRORS["unknown product"]
    assert plc.write_register(2, 2).isError() and inputs(plc)["error_code"] == ERRORS["not allowed"]
    assert plc.write_register(40, 1).isError() and plc.write_coil(30, True).isError()  # out of range
    assert plc.read_input_registers(100, count=2).isError()
    assert plc.write_registers(0, [1, 2, 3, 4]).isError()  # past the holding registers
    assert all(e.kind != "product" for e in ln.store.events())
    assert ln.io.link.product == PRODUCT
    # disconnect mid-handshake: the part is inspected, its result waits for the next connection
    assert pulse(plc) is True
    coil(plc, "trigger", True)  # a second PLC program sets the trigger again and vanishes
    plc.close()
    write_parts(ln.folder, 1, seed=31)
    wait_until(lambda: len(ln.outcomes) == 1, "the part inspected")
    again = ModbusTcpClient("127.0.0.1", port=ln.modbus)
    assert again.connect()
    assert read_result(again)["result_counter"] == 1
    coil(again, "trigger", False)
    assert pulse(again)
    write_parts(ln.folder / "b", 1, seed=32)
    os.replace(next((ln.folder / "b").iterdir()), ln.folder / "b.png")
    assert read_result(again)["result_counter"] == 2
    again.close()


def test_modbus_product_select_goes_through_the_service_and_is_recorded(line):
    ln = line(product_select=True)
    plc = ModbusTcpClient("127.0.0.1", port=ln.modbus)
    assert plc.connect()
    number = ln.io.link.numbers[OTHER]
    assert not plc.write_register(2, number).isError()
    assert inputs(plc)["error_code"] == 0 and inputs(plc)["product"] == number
    [event] = [e for e in ln.store.events() if e.kind == "product"]
    assert (event.old, event.new, event.user) == (PRODUCT, OTHER, "PLC over Modbus")
    assert pulse(plc)
    write_parts(ln.folder, 1, seed=41)
    read_result(plc)
    assert ln.store.query()[0].product == OTHER
    plc.close()


def test_product_numbers_never_change_when_products_come_and_go(line, models, tmp_path):
    store = ResultStore(tmp_path / "changes.db")
    assert product_numbers(models) == {PRODUCT: 1, OTHER: 2}  # older products: name order, recorded on first use
    Changes(models, store).create_product("Axle")  # first in name order: an index by name would shift
    Changes(models, store).create_product("Bolt")
    Changes(models, store).delete_product("Bolt")  # its number is never given to another product
    Changes(models, store).create_product("Cam")
    Changes(models, store).rename_product("Axle", "Axle 2")  # keeps its number
    assert product_numbers(models) == {PRODUCT: 1, OTHER: 2, "Axle 2": 3, "Cam": 5}
    saved = json.loads((models / NUMBERS_FILE).read_text())  # data only, stored once
    assert saved == {"format": "inspector-product-numbers",
                     "products": {PRODUCT: 1, OTHER: 2, "Axle 2": 3, "Bolt": 4, "Cam": 5}}
    store.close()
    ln = line(product_select=True)
    plc = ModbusTcpClient("127.0.0.1", port=ln.modbus)
    assert plc.connect()
    assert plc.write_register(2, 4).isError() and inputs(plc)["error_code"] == ERRORS["unknown product"]
    assert plc.write_register(2, 3).isError() and inputs(plc)["error_code"] == ERRORS["model unusable"]
    assert inputs(plc)["product"] == 1 and ln.io.link.product == PRODUCT
    assert not plc.write_register(2, 2).isError()
    assert inputs(plc)["error_code"] == 0 and inputs(plc)["product"] == 2 and ln.io.link.product == OTHER
    assert "PLC product numbers: 1 Disc, 2 Gear, 3 Axle 2, 5 Cam" == ln.io.products_line
    plc.close()


def test_a_thousand_triggers_a_second_lose_nothing_and_the_counter_never_skips(line):
    ln = line()
    plc = ModbusTcpClient("127.0.0.1", port=ln.modbus)
    assert plc.connect()
    write_parts(ln.folder, 80, seed=50)  # parts waiting for their triggers
    accepted = 0
    for _ in range(1000):  # as fast as the PLC can write, no acknowledgement meanwhile
        accepted += pulse(plc)
    wait_until(lambda: not ln.io.link.trigger.busy, "the last part done")
    status = inputs(plc)
    assert status["trigger_count"] == accepted and status["missed_count"] == 1000 - accepted
    assert 0 < accepted <= 64 + 1  # a full result buffer refuses triggers rather than losing results
    counters = []
    while bits(plc)["result_valid"]:
        counters.append(read_result(plc)["result_counter"])
    assert counters == list(range(1, accepted + 1))
    assert ln.store.count() == accepted == len(ln.outcomes)
    plc.close()


# ---- OPC UA --------------------------------------------------------------------------------------

async def _opcua_session(ln: Line, product_select: bool):
    async with Client(f"opc.tcp://127.0.0.1:{ln.opcua}/inspector/") as client:
        idx = await client.get_namespace_index(NAMESPACE)
        station = await client.nodes.objects.get_child([f"{idx}:Inspector"])

        async def value(path: str):
            node = station
            for name in path.split("."):
                node = await node.get_child(f"{idx}:{name}")
            return await node.read_value()

        async def until(condition, what):
            deadline = time.monotonic() + WAIT_S
            while not await condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.02)

        await until(lambda: _is(value("State"), "ready"), "the line ready")  # the variables follow the line
        await until(lambda: _is(value("Product"), PRODUCT), "the product shown")
        assert await station.call_method(f"{idx}:Trigger", ua.Variant(42, ua.VariantType.UInt32)) == 42
        with pytest.raises(ua.UaStatusCodeError) as missed:  # a part is under way: missed, and said so
            await station.call_method(f"{idx}:Trigger", ua.Variant(0, ua.VariantType.UInt32))
        assert missed.value.code == ua.StatusCodes.BadInvalidState
        await until(lambda: _is(value("ErrorText"), "Trigger missed: a part is under way."), "the reason")
        write_parts(ln.folder, 1, seed=61)
        await until(lambda: _is(value("Result.Counter"), 1), "the result")
        logged = ln.store.query()[0]
        assert await value("Result.PartId") == 42 and await value("Result.Verdict") == logged.verdict
        assert await value("Result.Score") == pytest.approx(logged.score)
        assert await value("MissedTriggers") == 1
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await station.call_method(f"{idx}:SelectProduct", "No such product")
        expected = ua.StatusCodes.BadInvalidArgument if product_select else ua.StatusCodes.BadUserAccessDenied
        assert refused.value.code == expected
        await until(lambda: _has(value("ErrorText"), "Product select 'No such product' refused"), "the reason")
        if product_select:
            assert await station.call_method(f"{idx}:SelectProduct", OTHER) == OTHER
        # a flood: many clients' calls and reads as fast as they go; the server answers throughout
        async def flood():
            for _ in range(150):
                try:
                    await station.call_method(f"{idx}:Trigger", ua.Variant(0, ua.VariantType.UInt32))
                except ua.UaStatusCodeError:
                    pass
                await value("State")
        await asyncio.gather(*(flood() for _ in range(4)))
        await until(lambda: _is(value("State"), "busy"), "the flood's part waiting")
        write_parts(ln.folder / "f", 1, seed=62)
        os.replace(next((ln.folder / "f").iterdir()), ln.folder / "f.png")
        await until(lambda: _is(value("Result.Counter"), 2), "the flood's one accepted part")
        assert await value("Triggers") == 2 and await value("MissedTriggers") == 600 - 1 + 1
        return await value("Result.Product")


async def _is(read, expected) -> bool:
    return await read == expected


async def _has(read, part: str) -> bool:
    return part in await read


@pytest.mark.parametrize("product_select", [False, True])
def test_opcua_trigger_result_product_select_and_flood(line, product_select):
    ln = line(product_select=product_select)
    product = asyncio.run(_opcua_session(ln, product_select))
    assert product == (OTHER if product_select else PRODUCT)
    assert ln.store.count() == 2 and [r.part_id for r in ln.store.query()] == [2, 42]
    events = [e for e in ln.store.events() if e.kind == "product"]
    assert [(e.new, e.user) for e in events] == ([(OTHER, "PLC over OPC UA")] if product_select else [])


def test_the_window_runs_the_line_for_a_plc_and_shows_the_connection(line_window, tmp_path, qtbot):
    from conftest import WAIT

    window, monitor = line_window, line_window.monitor
    port = free_port()
    monitor.line_io["modbus"].setText(str(port))
    folder = tmp_path / "watched"
    folder.mkdir()
    monitor.source.setCurrentIndex(monitor.source.findData("folder"))
    monitor.folder.set_path(str(folder))
    monitor.start_stop()
    qtbot.waitUntil(lambda: monitor.io is not None and monitor.io.link.state == "ready", timeout=WAIT)
    qtbot.waitUntil(lambda: f"PLC (Modbus 127.0.0.1:{port}): not connected" in monitor.line_io_status.text(),
                    timeout=WAIT)
    plc = ModbusTcpClient("127.0.0.1", port=port)
    assert plc.connect()
    qtbot.waitUntil(lambda: "1 connected" in monitor.line_io_status.text(), timeout=WAIT)
    write_parts(folder, 2, seed=70)
    assert pulse(plc)
    result = read_result(plc)
    assert result["result_counter"] == 1 and result["result_part_id"] == 1
    qtbot.waitUntil(lambda: monitor.painted >= 1, timeout=WAIT)
    assert window.session.store.count() == 1  # one trigger, one part: the second file waits
    plc.close()
    monitor.start_stop()
    qtbot.waitUntil(lambda: monitor.io is None and not monitor.line_io_status.isVisible(), timeout=WAIT)


def test_the_window_follows_a_product_the_plc_selects(line_window, tmp_path, qtbot):
    from conftest import WAIT

    window, monitor, session = line_window, line_window.monitor, line_window.session
    models = session.models_dir
    other = replace(load_model(models, PRODUCT), product=OTHER)
    save_model(other, models)
    other = save_model(with_tolerance(other, 6.0), models)  # version 2, another threshold than the product's
    assert other.threshold != session.model.threshold
    window.products.reload(PRODUCT)
    qtbot.waitUntil(lambda: session.model is not None and session.model.product == PRODUCT, timeout=WAIT)
    port, opcua = free_ports(2)
    monitor.line_io["modbus"].setText(str(port))
    monitor.line_io["opcua"].setText(str(opcua))
    monitor.plc_select.setChecked(True)
    folder = tmp_path / "watched"
    folder.mkdir()
    monitor.source.setCurrentIndex(monitor.source.findData("folder"))
    monitor.folder.set_path(str(folder))
    monitor.start_stop()
    qtbot.waitUntil(lambda: monitor.io is not None and monitor.io.link.state == "ready", timeout=WAIT)
    plc = ModbusTcpClient("127.0.0.1", port=port)
    assert plc.connect()
    assert not plc.write_register(2, product_numbers(models)[OTHER]).isError()  # the PLC selects the product
    qtbot.waitUntil(lambda: session.product == OTHER, timeout=WAIT)
    station = monitor.io.link._station
    assert session.model is station._selected  # the line's own model, not a second copy
    assert window.products.combo.currentText() == OTHER
    assert window.products.state.text().startswith(f"Version 2 · threshold {other.threshold:.4g}")
    assert monitor.scale.threshold == other.threshold
    assert monitor.counter_labels["inspected"].text() == "0"  # the shift's counters are the new product's
    write_parts(folder, 1, seed=71)
    assert pulse(plc)
    result = read_result(plc)
    assert result["product"] == 2 and result["model_version"] == 2
    assert result["threshold"] == min(round(other.threshold * 1000), 65535)
    qtbot.waitUntil(lambda: monitor.painted >= 1, timeout=WAIT)
    assert station.inspector.model is session.model
    assert monitor.counter_labels["inspected"].text() == "1" and monitor.scale.threshold == other.threshold
    [record] = session.store.query()
    assert (record.product, record.model_version) == (OTHER, 2)
    plc.close()

    async def select_over_opcua(product: str) -> str:
        async with Client(f"opc.tcp://127.0.0.1:{opcua}/inspector/") as client:
            idx = await client.get_namespace_index(NAMESPACE)
            station_node = await client.nodes.objects.get_child([f"{idx}:Inspector"])
            return await station_node.call_method(f"{idx}:SelectProduct", product)
    assert asyncio.run(select_over_opcua(PRODUCT)) == PRODUCT
    qtbot.waitUntil(lambda: session.product == PRODUCT and window.products.combo.currentText() == PRODUCT,
                    timeout=WAIT)
    assert session.model is station._selected and monitor.scale.threshold == session.model.threshold
    assert [(e.new, e.user) for e in session.store.events() if e.kind == "product"] == [  # newest first
        (PRODUCT, "PLC over OPC UA"), (OTHER, "PLC over Modbus")]
    monitor.start_stop()
    qtbot.waitUntil(lambda: monitor.io is None, timeout=WAIT)
    assert session.product == PRODUCT and window.products.combo.isEnabled()  # the next start inspects it
