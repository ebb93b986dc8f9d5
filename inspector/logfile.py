"""The station's log file: a rotating `inspector.log` in the data folder (beside the result
log), where warnings and the tracebacks of failures nobody sees on a screen go: a worker
thread's error, a failure of one inspected item, a verdict that could not be logged."""
from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from pathlib import Path

LOG_NAME = "inspector.log"
MAX_BYTES = 2_000_000
BACKUPS = 5

_handler: logging.Handler | None = None


class _LogFile(logging.handlers.RotatingFileHandler):
    """A log file that cannot be written (a full disk, a lost share) is said once on stderr,
    in one line, instead of a traceback for every record; the station runs on."""
    _said = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self._said:
            self._said = True
            exc = sys.exc_info()[1]
            try:
                sys.stderr.write(f"WARNING the log file {self.baseFilename} cannot be written ({exc}); "
                                 f"warnings and failures are not kept in it.\n")
            except Exception:  # noqa: BLE001 - nowhere left to say it
                pass


def start_log_file(folder: str | Path) -> Path | None:
    """Log INFO and above of every thread into `folder`/inspector.log (rotated at 2 MB, 5
    old files kept), uncaught exceptions included. Returns the path; None (said on stderr)
    when the folder cannot be written: the station runs on without a log file."""
    global _handler
    path = Path(folder) / LOG_NAME
    if _handler is not None and getattr(_handler, "baseFilename", None) == str(path.absolute()):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", errors="backslashreplace")
    except OSError as exc:
        print(f"WARNING cannot write the log file {path}: {exc}", file=sys.stderr)
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    _handler = handler
    sys.excepthook = _log_uncaught(sys.excepthook)
    threading.excepthook = _log_thread_uncaught(threading.excepthook)
    return path


def _log_uncaught(previous):
    if getattr(previous, "logs_to_file", False):
        return previous

    def hook(kind, value, traceback):
        logging.getLogger("inspector").critical("uncaught exception", exc_info=(kind, value, traceback))
        previous(kind, value, traceback)

    hook.logs_to_file = True
    return hook


def _log_thread_uncaught(previous):
    if getattr(previous, "logs_to_file", False):
        return previous

    def hook(args):
        logging.getLogger("inspector").critical("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                                                exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        previous(args)

    hook.logs_to_file = True
    return hook
