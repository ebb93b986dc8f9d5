"""An asyncio event loop on a thread of its own, for a protocol server beside the line."""
from __future__ import annotations

import asyncio
import logging
import threading

from ..common import Started
from ..errors import describe

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


class LoopThread:
    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = START_TIMEOUT_S):
        """Run a coroutine on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args) -> None:
        """Call `fn(*args)` on the loop, soon; from any thread."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """Cancel what still runs on the loop (a server's reconnection tasks), then stop it."""
        try:
            self.run(_cancel_tasks())
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(START_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class LoopServer(Started):
    """A server of the line running `_start()` and `_stop()` on a LoopThread of its own; `kind` names it."""
    kind = ""

    def __init__(self, link, port: int, host: str = "127.0.0.1"):
        self.link, self.host, self.port = link, host, port
        self._loop: LoopThread | None = None

    def start(self) -> None:
        self._loop = LoopThread(f"{self.kind}({self.host}:{self.port})")
        try:
            self._loop.run(self._start())
        except BaseException:
            self._loop.close()
            self._loop = None
            raise

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._loop.run(self._stop())
        except Exception as exc:  # noqa: BLE001 - stopping: the loop goes anyway
            log.warning("the %s server did not stop cleanly: %s", self.kind, describe(exc))
        self._loop.close()
        self._loop = None
