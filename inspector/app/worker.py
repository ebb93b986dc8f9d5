"""The one way the GUI runs engine work: a function in a thread of its own.

`Worker(fn, *args, **kwargs)` calls `fn(job, *args, **kwargs)` in its own thread, where `job` is the Worker: the
function may call `job.report(value)` to send progress or results as they come, and should honour `job.cancel` (a
threading.Event). The GUI hears plain data through the signals started, yielded(value), returned(result),
errored(exception) and finished, always emitted on the GUI thread, so any callable may be connected to them.

The threads are daemon threads: closing the window cancels every worker and waits a bounded time (`stop_all`) for
them to finish; one stuck in a call that cannot be interrupted (a camera scan, a first export of the backbone
graph) is left behind so the window can still close."""
from __future__ import annotations

import logging
import threading
import time

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal, Slot

from ..errors import InspectorError

log = logging.getLogger(__name__)
STOP_WAIT_S = 1.0  # closing the window waits at most this long for the workers


class Worker(QObject):
    started = Signal()
    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(object)
    finished = Signal()

    _event = Signal(str, object)  # from the worker thread, relayed on the GUI thread
    running: set["Worker"] = set()  # keeps every started worker alive until it finishes

    def __init__(self, fn, *args, **kwargs):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"Worker({getattr(fn, '__name__', 'function')})")
        self._event.connect(self._relay, Qt.ConnectionType.QueuedConnection)

    def start(self) -> "Worker":
        Worker.running.add(self)
        self._thread.start()
        return self

    def report(self, value) -> None:
        """Send a value to the GUI (call it from the worker function)."""
        self._event.emit("yielded", value)

    def is_running(self) -> bool:
        return self in Worker.running

    def stop(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Ask the function to stop; with `wait`, join it (up to `timeout` s) and deliver what it sent. True: ended."""
        self.cancel.set()
        if wait:
            self._thread.join(timeout)
            QCoreApplication.sendPostedEvents(self)  # deliver what it sent while receivers exist
        return not self._thread.is_alive()

    def _run(self) -> None:
        self._event.emit("started", None)
        try:
            result = self.fn(self, *self.args, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure goes to the GUI, never lost
            if not isinstance(exc, InspectorError):  # a bug, not the operator's input: keep the trace
                log.exception("worker %s failed", getattr(self.fn, "__name__", self.fn))
            self._event.emit("errored", exc)
        else:
            self._event.emit("returned", result)
        finally:
            self._event.emit("finished", None)

    @Slot(str, object)
    def _relay(self, kind: str, value) -> None:
        if kind == "finished":
            self._thread.join()  # _run() is returning; let the thread end before it can be freed
            Worker.running.discard(self)
            self.finished.emit()
        elif kind == "started":
            self.started.emit()
        else:
            getattr(self, kind).emit(value)

    @classmethod
    def stop_all(cls, timeout: float = STOP_WAIT_S) -> list[str]:
        """Cancel every worker and wait for them, `timeout` seconds in all; returns the names
        of those still running then (left behind: their threads end with the process)."""
        for worker in list(cls.running):
            worker.cancel.set()
        deadline = time.monotonic() + timeout
        for worker in list(cls.running):
            worker.stop(wait=True, timeout=max(0.0, deadline - time.monotonic()))
        return [worker._thread.name for worker in cls.running if worker._thread.is_alive()]
