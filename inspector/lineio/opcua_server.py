"""The line as an OPC UA server (asyncua), after the ideas of OPC 40100 (machine vision):
the system's state, the product (recipe) in use and its selection, a trigger, and the last
result. Address space (namespace NAMESPACE), under Objects/Inspector:

    State          String   stopped | ready | busy | error
    Product        String   the product the line inspects
    Products       String[] the products that can be selected
    Triggers       UInt32   triggers accepted;  MissedTriggers UInt32: refused (a part under way)
    ErrorText      String   why the last request was refused, or what the line lacks (a lost camera)
    Result/        Counter (UInt32, 1, 2, 3 ... never skipping), PartId (UInt32), Verdict (OK|NG|ERROR),
                   Score, Threshold (Double), ModelVersion (UInt32), Product, Time (ISO UTC), Error (String)
    Trigger(PartId UInt32) -> PartId UInt32     0: the station numbers the part. BadInvalidState
                                                when the trigger is missed (a part under way, line stopped)
    SelectProduct(Product String) -> Product String   BadUserAccessDenied (not allowed on this
                                                station), BadInvalidArgument (no usable model),
                                                BadInvalidState (line stopped); ErrorText says why

The variables follow the line every POLL_S; the result's Counter is written last, so a
client that sees a new counter reads a whole result."""
from __future__ import annotations

import asyncio
import logging

from asyncua import Server, ua

from ..errors import InspectorError, ModelError, describe
from ..users import AccessDenied
from .link import LineIOError, LineLink, LineResult
from .loop import LoopServer

log = logging.getLogger(__name__)
logging.getLogger("asyncua").setLevel(logging.ERROR)  # it reports every call, and the plain endpoint, as warnings

NAMESPACE = "urn:inspector:line"
POLL_S = 0.01
WHO = "PLC over OPC UA"
V = ua.VariantType
RESULT_FIELDS = {"PartId": V.UInt32, "Verdict": V.String, "Score": V.Double, "Threshold": V.Double,
                 "ModelVersion": V.UInt32, "Product": V.String, "Time": V.String, "Error": V.String,
                 "Counter": V.UInt32}  # Counter last


class OpcUaServer(LoopServer):
    """The OPC UA server of the line, on its own thread. `connected`: client sessions now."""
    kind = "OPC UA"

    def __init__(self, link: LineLink, port: int, host: str = "127.0.0.1"):
        super().__init__(link, port, host)
        self.endpoint = f"opc.tcp://{host}:{port}/inspector/"
        self._server: Server | None = None
        self._nodes: dict[str, object] = {}
        self._shown: dict[str, object] = {}
        self._error_text = ""
        self._poller: asyncio.Task | None = None

    async def _start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])  # plain, as Modbus: bind it where it is safe
        server.set_server_name("Inspector")
        idx = await server.register_namespace(NAMESPACE)
        station = await server.nodes.objects.add_object(idx, "Inspector")
        for name, value, kind in (("State", "stopped", V.String), ("Product", "", V.String),
                                  ("Products", list(self.link.products), V.String), ("Triggers", 0, V.UInt32),
                                  ("MissedTriggers", 0, V.UInt32), ("ErrorText", "", V.String)):
            self._nodes[name] = await station.add_variable(idx, name, ua.Variant(value, kind))
        result = await station.add_object(idx, "Result")
        for name, kind in RESULT_FIELDS.items():
            empty = "" if kind == V.String else 0.0 if kind == V.Double else 0
            self._nodes[f"Result.{name}"] = await result.add_variable(idx, name, ua.Variant(empty, kind))
        await station.add_method(idx, "Trigger", self._trigger, [V.UInt32], [V.UInt32])
        await station.add_method(idx, "SelectProduct", self._select, [V.String], [V.String])
        try:
            await server.start()
        except OSError as exc:
            raise LineIOError(f"The OPC UA server cannot listen on {self.host}:{self.port} ({exc.strerror or exc}): "
                              f"choose another port.") from exc
        self._server = server
        self._poller = asyncio.create_task(self._follow())

    # ---- the variables follow the line ----------------------------------------------------
    async def _show(self, name: str, value, kind) -> None:
        if self._shown.get(name) != value:
            self._shown[name] = value
            await self._nodes[name].write_value(ua.Variant(value, kind))

    async def _follow(self) -> None:
        shown_counter = 0
        while True:
            try:
                link = self.link
                await self._show("State", link.state, V.String)
                await self._show("Product", link.product or "", V.String)
                await self._show("Triggers", link.trigger.count, V.UInt32)
                await self._show("MissedTriggers", link.trigger.missed, V.UInt32)
                await self._show("ErrorText", self._error_text or link.source_error or "", V.String)
                last = link.last
                if last is not None and last.counter != shown_counter:
                    await self._write_result(last)
                    shown_counter = last.counter
            except Exception as exc:  # noqa: BLE001 - the server keeps serving
                log.warning("the OPC UA variables could not be updated: %s", describe(exc))
            await asyncio.sleep(POLL_S)

    async def _write_result(self, r: LineResult) -> None:
        values = {"PartId": r.part_id, "Verdict": r.verdict, "Score": r.score or 0.0, "Threshold": r.threshold or 0.0,
                  "ModelVersion": r.model_version or 0, "Product": r.product, "Time": r.time,
                  "Error": r.error or "", "Counter": r.counter}
        for name, kind in RESULT_FIELDS.items():
            await self._show(f"Result.{name}", values[name], kind)

    # ---- methods ---------------------------------------------------------------------------
    async def _trigger(self, parent, part_id: ua.Variant):
        part = self.link.fire(int(part_id.Value or 0) or None)
        if part is None:
            self._error_text = ("Trigger missed: the line is stopped." if self.link.state == "stopped"
                                else "Trigger missed: a part is under way.")
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        self._error_text = ""
        return [ua.Variant(part, V.UInt32)]

    async def _select(self, parent, product: ua.Variant):
        name = str(product.Value or "")
        try:
            model = await asyncio.get_running_loop().run_in_executor(None, self.link.select_product, name, WHO)
        except InspectorError as exc:
            self._error_text = f"Product select '{name}' refused: {describe(exc)}"
            log.warning("%s", self._error_text)
            code = (ua.StatusCodes.BadUserAccessDenied if isinstance(exc, AccessDenied) else
                    ua.StatusCodes.BadInvalidArgument if isinstance(exc, ModelError) else
                    ua.StatusCodes.BadInvalidState if isinstance(exc, LineIOError) else ua.StatusCodes.BadInternalError)
            return ua.StatusCode(code)
        self._error_text = ""
        return [ua.Variant(model.product, V.String)]

    # ---- lifetime --------------------------------------------------------------------------
    @property
    def connected(self) -> int:
        return len(self._server.iserver._external_sessions) if self._server else 0

    async def _stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._server is not None:
            await self._server.stop()
