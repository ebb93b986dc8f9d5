"""Small helpers every layer uses: the log's time format, text that can always be stored and
printed, the station user's login name, the yield, and `with` for what starts and stops."""
from __future__ import annotations

import getpass
from datetime import datetime, timezone


def utc_time(value: str | datetime) -> str:
    """``value`` in the log's time format, ISO-8601 UTC with ms; a naive value is local time (``astimezone``)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 date/time (e.g. 2024-05-01 or "
                             f"2024-05-01T13:30:00)") from None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def text(value: str) -> str:
    """A string that can be stored, printed and written as UTF-8. File names that are not
    valid UTF-8 (Latin-1, from a Windows share or a camera) reach Python with lone
    surrogates; their bytes show as \\xNN escapes, e.g. 'caf\\xe9.png'."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def login_name() -> str:
    """The OS login name of the station user ("unknown" where the OS cannot say)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in the environment or the user database
        return "unknown"


def yield_rate(ok: int, ng: int) -> float | None:
    """The yield: OK of the judged parts (OK + NG; errors are not judged), None before any."""
    return ok / (ok + ng) if ok + ng else None


class Started:
    """`with thing:` starts it (`start()`) and stops it (`stop()`) after."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
