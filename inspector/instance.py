"""One station per data folder: a second window on the same result log would count the same watched folder twice. The
first instance holds an OS file lock (released by the OS when the process ends, however it ends, so a crash leaves
no stale lock) and writes its process id and start time into the lock file for the refusal message."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import StoreError


class InstanceLock:
    def __init__(self, db_path: str | Path):
        self.path = Path(db_path).with_name(Path(db_path).name + ".lock")
        self._file = None

    def acquire(self) -> "InstanceLock":
        """Hold the lock, or raise StoreError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            _lock(f)
        except OSError:
            try:
                f.seek(0)
                holder = f.read().strip() or "another process"
            except OSError:  # Windows: the locked byte cannot be read either
                holder = "another process"
            f.close()
            raise StoreError(f"Inspector is already running on this station's data ({self.path.parent}): {holder}. "
                             f"Use that window, or close it before starting another.") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None


if os.name == "nt":
    import msvcrt

    def _lock(f) -> None:
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
else:
    import fcntl

    def _lock(f) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
