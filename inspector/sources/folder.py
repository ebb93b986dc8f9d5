"""Watch a folder for new image files and hand each one out once, after it is fully written."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (EVENT_TYPE_CLOSED, EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MODIFIED,
                             EVENT_TYPE_MOVED, FileSystemEvent, FileSystemEventHandler)
from watchdog.observers import Observer

from inspector.common import Started
from inspector.data.images import is_image_file, list_images
from inspector.errors import SourceError

POLL_S = 0.05  # how often next_ready re-checks pending files
REMEMBERED = 10_000  # files handed out that are remembered (the result log keeps the rest once)


@dataclass
class _Pending:
    signature: tuple | None  # (size, mtime_ns); ("link", mtime_ns) for a link that leads nowhere,
    # ("special", mtime_ns) for what is not a regular file (a named pipe, a device): never opened here
    stable_since: float  # monotonic time the signature was first seen
    first_seen: float  # monotonic time the file was first seen, kept across re-checks
    not_before: float = 0.0


def _signature(path: Path) -> tuple | None:
    """What identifies this version of the file; None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        try:  # a dangling or looping link, or a file that cannot be looked at
            return ("link", os.lstat(path).st_mtime_ns)
        except OSError:
            return None
    if not stat.S_ISREG(st.st_mode):
        return "special", st.st_mtime_ns
    return st.st_size, st.st_mtime_ns


class FolderWatcher(Started):
    """Image files arriving directly in `folder` (subfolders are ignored).

    A file is ready once its size and modification time have not changed for `settle_s` seconds and it is not empty
    and can be opened, or, whatever it is, once it has been seen for `max_wait_s` (an empty file, a link that leads
    nowhere: the reader logs why it cannot be used). Each version of a file (path, size, mtime) is returned once; a
    file rewritten in place is returned again; `recheck` hands a file back to be waited for again (it was still
    incomplete). Paths handed out are absolute. Thread-safe; usable as a context manager."""

    def __init__(self, folder: str | Path, settle_s: float = 0.5, max_wait_s: float = 30.0):
        self.folder = Path(folder).resolve()
        self.settle_s, self.max_wait_s = settle_s, max_wait_s
        self._lock = threading.Lock()
        self._pending: dict[Path, _Pending] = {}
        self._ready: OrderedDict[Path, float] = OrderedDict()  # path -> first seen; each path queued once
        self._since: dict[Path, float] = {}  # first-seen times of the files handed out, for since()
        self._returned: OrderedDict[Path, tuple] = OrderedDict()  # path -> signature handed out
        self._observer: Observer | None = None

    @property
    def running(self) -> bool:
        return self._observer is not None

    def start(self) -> None:
        """Start watching; image files already in the folder are queued too."""
        if self._observer is not None:
            return
        if not self.folder.is_dir():
            raise SourceError(f"Cannot watch {self.folder}: it does not exist or is not a folder. Choose a folder.")
        observer = Observer()
        observer.schedule(_Handler(self), str(self.folder), recursive=False)
        try:
            observer.start()
        except OSError as exc:
            raise SourceError(f"Cannot watch {self.folder}: {exc.strerror or exc}.") from exc
        self._observer = observer
        for path in list_images(self.folder):  # after the observer, so no file slips between
            self._add(path)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()

    def next_ready(self, timeout: float) -> Path | None:
        """The next fully written new image file, or None after `timeout` seconds or once stopped."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._check_pending()
                while self._ready:
                    path, first_seen = self._ready.popitem(last=False)
                    if _signature(path) is None:  # gone meanwhile (moved by the line): nothing to hand out
                        continue
                    self._since[path] = first_seen
                    return path
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._observer is None:
                return None
            time.sleep(min(POLL_S, remaining))

    def waiting(self, after_s: float = 1.0) -> tuple[Path, float] | None:
        """The file waited for the longest (empty, still being written, not yet settled), with
        how long in seconds, once that is more than `after_s`; None otherwise."""
        now = time.monotonic()
        with self._lock:
            longest = max(((now - e.first_seen, p) for p, e in self._pending.items()), default=None)
        return None if longest is None or longest[0] <= after_s else (longest[1], longest[0])

    def since(self, path: Path) -> float | None:
        """When a file just handed out was first seen (time.monotonic())."""
        with self._lock:
            return self._since.pop(path, None)

    def recheck(self, path: Path, since: float | None = None, delay_s: float | None = None) -> None:
        """Wait for a file handed out again: it is handed out once more after it has been stable for settle_s (and at
        least `delay_s`), or when it has been waited for max_wait_s since `since` (when it was first seen)."""
        now = time.monotonic()
        with self._lock:
            self._returned.pop(path, None)
            self._pending[path] = _Pending(None, now, now if since is None else since,
                                           now + (self.settle_s if delay_s is None else delay_s))

    def _add(self, path: Path) -> None:
        if path.parent == self.folder and is_image_file(path):
            now = time.monotonic()
            with self._lock:
                if path not in self._pending:
                    self._pending[path] = _Pending(None, now, now)

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)
            self._ready.pop(path, None)
            self._returned.pop(path, None)

    def _check_pending(self) -> None:
        now = time.monotonic()
        for path in sorted(self._pending):
            entry = self._pending[path]
            if now < entry.not_before:
                continue
            signature = _signature(path)
            if signature is None:  # gone
                del self._pending[path]
                continue
            waited_out = now - entry.first_seen >= self.max_wait_s
            if entry.signature != signature:
                entry.signature, entry.stable_since = signature, now
                if not waited_out:
                    continue
            if not waited_out and (now - entry.stable_since < self.settle_s or not (
                    isinstance(signature[0], str) or (signature[0] > 0 and _can_open(path)))):
                continue
            del self._pending[path]
            if self._returned.get(path) != signature:
                self._returned[path] = signature
                self._returned.move_to_end(path)
                while len(self._returned) > REMEMBERED:
                    self._returned.popitem(last=False)
                if path not in self._ready:  # queued already: handed out once, as it is then
                    self._ready[path] = entry.first_seen


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher):
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if event.event_type in (EVENT_TYPE_DELETED, EVENT_TYPE_MOVED):
            self._watcher._forget(Path(event.src_path))
        if event.event_type == EVENT_TYPE_MOVED:
            self._watcher._add(Path(event.dest_path))
        elif event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED):
            self._watcher._add(Path(event.src_path))


def _can_open(path: Path) -> bool:
    """Whether the file can be opened and read (non-blocking: a named pipe swapped in for it cannot stop the watch)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and bool(os.read(fd, 1))
    except OSError:
        return False
    finally:
        os.close(fd)
