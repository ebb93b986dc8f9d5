"""Watch a folder for new image files and hand each one out once, after it is fully written."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from inspector.data.images import is_image_file, list_images
from inspector.errors import SourceError

POLL_S = 0.05  # how often next_ready re-checks pending files


class FolderWatcher:
    """Image files arriving directly in `folder` (subfolders are ignored).

    A file is ready once its size and modification time have not changed for `settle_s`
    seconds, it is not empty and it can be opened; until then it is only pending. Each
    version of a file (path, size, mtime) is returned once; a file rewritten in place is
    returned again. Paths handed out are absolute. Thread-safe; usable as a context manager.
    """

    def __init__(self, folder: str | Path, settle_s: float = 0.5):
        self.folder = Path(folder).resolve()
        self.settle_s = settle_s
        self._lock = threading.Lock()
        # path -> ((size, mtime_ns), monotonic time first seen with that signature), None until checked
        self._pending: dict[Path, tuple[tuple[int, int], float] | None] = {}
        self._ready: deque[Path] = deque()
        self._returned: dict[Path, tuple[int, int]] = {}  # path -> signature handed out
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
                if self._ready:
                    return self._ready.popleft()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._observer is None:
                return None
            time.sleep(min(POLL_S, remaining))

    def __enter__(self) -> FolderWatcher:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _add(self, path: Path) -> None:
        if path.parent == self.folder and is_image_file(path):
            with self._lock:
                self._pending.setdefault(path, None)

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)
            self._returned.pop(path, None)

    def _check_pending(self) -> None:
        now = time.monotonic()
        for path in sorted(self._pending):
            try:
                st = path.stat()
            except FileNotFoundError:
                del self._pending[path]
                continue
            except OSError:
                continue  # e.g. locked by the writer on Windows: look again later
            signature = (st.st_size, st.st_mtime_ns)
            seen = self._pending[path]
            if seen is None or seen[0] != signature:
                self._pending[path] = (signature, now)
            elif now - seen[1] >= self.settle_s and st.st_size > 0 and _can_open(path):
                del self._pending[path]
                if self._returned.get(path) != signature:
                    self._returned[path] = signature
                    self._ready.append(path)


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
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False
