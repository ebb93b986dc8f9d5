"""The line as a Modbus TCP server (pymodbus): a PLC triggers a part, reads its result and acknowledges it, and may
select the product. The register map (README, "Line I/O") is REGISTERS below; addresses are 0-based as on the wire
(PLC tools often show them + 1).

The handshake: the PLC sets TRIGGER (rising edge); the station answers TRIGGER_ACK (until TRIGGER falls) and
inspects the part; its result is presented in the input registers with RESULT_VALID; the PLC sets RESULT_ACK,
RESULT_VALID falls; when the PLC resets RESULT_ACK the next result (if any) is presented. Results wait in a FIFO
while the PLC has not acknowledged them (up to BUFFER; a trigger with the buffer full is missed). A trigger while a
part is under way is missed: MISSED_TRIGGER is set (until a trigger is accepted) and MISSED_COUNT counts it."""
from __future__ import annotations

import logging
import threading
from collections import deque

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import ModbusTcpServer

from ..errors import InspectorError, ModelError, describe
from ..users import AccessDenied
from .link import STATES, LineIOError, LineLink, LineResult
from .loop import LoopServer

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # a refused write is logged here, with its reason

BUFFER = 64  # results kept for a PLC that has not acknowledged them
COILS = ("trigger", "result_ack")  # the PLC writes these
DISCRETE = ("ready", "busy", "trigger_ack", "result_valid", "ok", "ng", "error", "missed_trigger")
HOLDING = {"part_id": (0, 2), "product_select": (2, 1)}  # name: (address, registers); 32-bit: high word first
INPUT = {"result_counter": (0, 2), "result_part_id": (2, 2), "verdict": (4, 1), "score": (5, 1),
         "threshold": (6, 1), "model_version": (7, 1), "product": (8, 1), "state": (9, 1), "error_code": (10, 1),
         "missed_count": (11, 1), "buffered": (12, 1), "trigger_count": (13, 2)}
VERDICTS = {"OK": 1, "NG": 2, "ERROR": 3}  # 0: no result yet
ERRORS = {"unknown product": 1, "not allowed": 2, "model unusable": 3, "line stopped": 4, "buffer full": 5}
FC_COILS, FC_DISCRETE, FC_HOLDING, FC_INPUT = 1, 2, 3, 4
WHO = "PLC over Modbus"


def _words(value: int, count: int) -> list[int]:
    value = max(0, min(int(value), 2 ** (16 * count) - 1))
    return [(value >> (16 * i)) & 0xFFFF for i in reversed(range(count))]


def _scaled(value: float | None) -> int:
    return 0 if value is None else max(0, min(round(value * 1000), 0xFFFF))


class _Registers(ModbusSlaveContext):
    """The four tables; PLC writes go through the line's rules, reads see the line's state."""

    def __init__(self, link: LineLink):
        super().__init__(co=ModbusSequentialDataBlock(0, [0] * len(COILS)),
                         di=ModbusSequentialDataBlock(0, [0] * len(DISCRETE)),
                         hr=ModbusSequentialDataBlock(0, [0] * sum(n for _, n in HOLDING.values())),
                         ir=ModbusSequentialDataBlock(0, [0] * sum(n for _, n in INPUT.values())),
                         zero_mode=True)
        self.link = link
        self.lock = threading.RLock()
        self.fifo: deque[LineResult] = deque()
        self.error_code = 0

    # ---- the tables --------------------------------------------------------------------
    def _get(self, fc: int, address: int, count: int = 1) -> list[int]:
        return super().getValues(fc, address, count)

    def _set(self, fc: int, address: int, values: list[int]) -> None:
        super().setValues(fc, address, values)

    def _bit(self, name: str, value: bool) -> None:
        self._set(FC_DISCRETE, DISCRETE.index(name), [bool(value)])

    def _input(self, name: str, value: int) -> None:
        address, count = INPUT[name]
        self._set(FC_INPUT, address, _words(value, count))

    def getValues(self, fc_as_hex, address, count=1):
        with self.lock:
            state = self.link.state
            self._bit("ready", state == "ready")
            self._bit("busy", state == "busy")
            self._input("state", STATES.index(state))
            self._input("product", self.link.product_number(self.link.product))
            self._input("missed_count", self.link.trigger.missed & 0xFFFF)
            self._input("trigger_count", self.link.trigger.count)
            self._input("buffered", len(self.fifo))
            self._input("error_code", self.error_code)
            return super().getValues(fc_as_hex, address, count)

    def setValues(self, fc_as_hex, address, values):
        with self.lock:
            if fc_as_hex in (5, 15):  # coils
                for offset, value in enumerate(values):
                    self._coil(COILS[address + offset], bool(value))
            else:
                start, _ = HOLDING["product_select"]
                if address <= start < address + len(values):
                    self._select(values[start - address])  # refused: nothing is written
                self._set(fc_as_hex, address, values)

    # ---- the PLC's writes ---------------------------------------------------------------
    def _coil(self, name: str, value: bool) -> None:
        was = bool(self._get(FC_COILS, COILS.index(name))[0])
        self._set(FC_COILS, COILS.index(name), [value])
        if name == "trigger" and value and not was:
            high, low = self._get(FC_HOLDING, *HOLDING["part_id"])
            full = len(self.fifo) >= BUFFER
            part = self.link.fire((high << 16 | low) or None, refuse=full)
            self._bit("trigger_ack", part is not None)
            self._bit("missed_trigger", part is None)
            if part is None and (full or self.link.state == "stopped"):
                self.error_code = ERRORS["buffer full" if full else "line stopped"]
        elif name == "trigger" and not value:
            self._bit("trigger_ack", False)
        elif name == "result_ack" and value and not was and self._get(FC_DISCRETE, DISCRETE.index("result_valid"))[0]:
            self.fifo.popleft()
            for bit in ("result_valid", "ok", "ng", "error"):
                self._bit(bit, False)
        elif name == "result_ack" and not value:
            self._present()

    def _select(self, number: int) -> None:
        """Product select; refused with the reason in ERROR_CODE and a Modbus exception."""
        try:
            try:
                product = self.link.product_name(number)
            except LineIOError:
                self.error_code = ERRORS["unknown product"]
                raise
            try:
                self.link.select_product(product, WHO)
            except AccessDenied:
                self.error_code = ERRORS["not allowed"]
                raise
            except ModelError:
                self.error_code = ERRORS["model unusable"]
                raise
            except LineIOError:
                self.error_code = ERRORS["line stopped"]
                raise
        except InspectorError as exc:
            log.warning("product select %d from the PLC refused: %s", number, describe(exc))
            raise
        self.error_code = 0

    # ---- results ----------------------------------------------------------------------------
    def result(self, result: LineResult) -> None:
        with self.lock:
            self.fifo.append(result)
            self._present()

    def _present(self) -> None:
        """Show the oldest unacknowledged result, once the PLC is ready for it."""
        if not self.fifo or self._get(FC_DISCRETE, DISCRETE.index("result_valid"))[0] \
                or self._get(FC_COILS, COILS.index("result_ack"))[0]:
            return
        r = self.fifo[0]
        for name, value in (("result_counter", r.counter), ("result_part_id", r.part_id),
                            ("verdict", VERDICTS[r.verdict]), ("score", _scaled(r.score)),
                            ("threshold", _scaled(r.threshold)), ("model_version", r.model_version or 0)):
            self._input(name, value)
        for bit in ("ok", "ng", "error"):
            self._bit(bit, r.verdict == bit.upper())
        self._bit("result_valid", True)


class ModbusServer(LoopServer):
    """The Modbus TCP server of the line, on its own thread. `connected`: PLC connections now."""
    kind = "Modbus"

    def __init__(self, link: LineLink, port: int, host: str = "127.0.0.1"):
        super().__init__(link, port, host)
        self.registers = _Registers(link)
        self._server: ModbusTcpServer | None = None

    def start(self) -> None:
        super().start()
        self.link.listen(self.registers.result)

    async def _start(self) -> None:
        self._server = ModbusTcpServer(ModbusServerContext(slaves=self.registers, single=True),
                                       address=(self.host, self.port))
        if not await self._server.listen():
            raise LineIOError(f"The Modbus server cannot listen on {self.host}:{self.port} (in use by another "
                              f"program, or a port below 1024 without the right): choose another port.")

    @property
    def connected(self) -> int:
        return len(self._server.active_connections) if self._server else 0

    async def _stop(self) -> None:
        await self._server.shutdown()
