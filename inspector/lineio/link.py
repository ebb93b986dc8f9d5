"""What the PLC servers (OPC UA, Modbus TCP) share with the running line, free of any
protocol: the trigger (a source of parts, like the camera and the folder), the line's state,
the results of triggered parts with a counter that never skips, and product select, which
goes through Changes.select_product (checked, recorded as an event) like every change.

Wiring: `run_line(..., trigger=link.trigger, on_outcome=link.on_outcome (and the shell's
own), on_status=link.on_status, on_station=link.on_station)`."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..changes import Changes
from ..core.model import Model
from ..core.product_numbers import product_numbers
from ..errors import InspectorError
from ..sources.trigger import Trigger
from ..station import Outcome, Station
from ..store.results import ResultStore
from ..users import LINE, AccessDenied, User

STATES = ("stopped", "ready", "busy", "error")  # as OPC 40100 names a vision system's states


class LineIOError(InspectorError):
    """A PLC's request cannot be carried out (line stopped, unknown product number), or a port cannot be listened on."""


@dataclass(frozen=True)
class LineResult:
    """A triggered part's result, as the PLC reads it."""
    counter: int  # 1, 2, 3 ... one per result, never skipping
    part_id: int
    verdict: str  # OK | NG | ERROR
    score: float | None
    threshold: float | None
    model_version: int | None
    product: str
    time: str
    error: str | None
    row_id: int | None  # the row in the result log (None while it waits in the journal)


class LineLink:
    def __init__(self, models_dir: str | Path, store: ResultStore, product_select: bool = False):
        self.models_dir = Path(models_dir)
        self.store = store
        self.product_select = product_select  # whether a PLC may change the product
        self.trigger = Trigger()
        self.numbers = product_numbers(models_dir)  # the PLC's product numbers, kept in the models folder
        self.product: str | None = None
        self.counter = 0
        self.last: LineResult | None = None
        self.source_error: str | None = None
        self._station: Station | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[LineResult], None]] = []
        self._select_listeners: list[Callable[[Model], None]] = []

    # ---- wiring to the line ------------------------------------------------------------
    def on_station(self, station: Station | None) -> None:
        self._station = station
        if station is not None:
            self.product = station.product

    def on_status(self, state: str, reason: str | None) -> None:
        self.source_error = reason if state == "lost" else None

    def on_outcome(self, outcome: Outcome) -> None:
        """A part's outcome: a triggered one becomes the next result."""
        record = outcome.record
        if record.part_id is None:
            return
        with self._lock:
            self.counter += 1
            result = LineResult(self.counter, record.part_id, record.verdict, record.score, record.threshold,
                                record.model_version, record.product, record.time, record.error, record.id)
            self.last = result
            self.product = record.product
            listeners = list(self._listeners)
        for listener in listeners:
            listener(result)

    def listen(self, on_result: Callable[[LineResult], None]) -> None:
        """Hear every result (called on the line's thread, in order)."""
        with self._lock:
            self._listeners.append(on_result)

    def listen_select(self, on_select: Callable[[Model], None]) -> None:
        """Hear the model of every product the PLC selects (called on the server's thread)."""
        with self._lock:
            self._select_listeners.append(on_select)

    # ---- what a PLC asks ------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self._station is None:
            return "stopped"
        if self.source_error:
            return "error"
        return "busy" if self.trigger.busy else "ready"

    def fire(self, part_id: int | None = None, refuse: bool = False) -> int | None:
        """A PLC's trigger: the part's number, or None when it is missed (a part under way,
        the line stopped, or `refuse`: the PLC's result buffer is full); counted as missed."""
        return self.trigger.fire(part_id, refuse or self._station is None)

    @property
    def products(self) -> list[str]:
        """The products a PLC may select, in number order."""
        return list(self.numbers)

    def describe_numbers(self) -> str:
        return ", ".join(f"{n} {p}" for p, n in self.numbers.items()) or "none"

    def product_number(self, product: str | None) -> int:
        """The PLC's number of a product (core.product_numbers; 0 for none or an unknown one)."""
        return self.numbers.get(product, 0)

    def product_name(self, number: int) -> str:
        """The product of a PLC's number (a product added since the line started included)."""
        self.numbers = product_numbers(self.models_dir)
        for product, n in self.numbers.items():
            if n == number:
                return product
        raise LineIOError(f"There is no product number {number} (products: {self.describe_numbers()}).")

    def select_product(self, product: str, who: str) -> Model:
        """A PLC's product select (Changes.select_product): refused with the reason when the
        station does not allow it, the line is stopped, or the product has no usable model."""
        if not self.product_select:
            raise AccessDenied(f"The {who} may not select the product on this station: allow it with "
                               f"--plc-product-select (or in Options > Line I/O).")
        station = self._station
        if station is None:
            raise LineIOError("The line is not running: start it before selecting a product.")
        model = Changes(self.models_dir, self.store, User(who, LINE)).select_product(station, product)
        self.product = model.product
        with self._lock:
            listeners = list(self._select_listeners)
        for listener in listeners:
            listener(model)
        return model
