"""A camera, network stream or video file read by a background thread into a one-slot
holder: only the newest frame is kept, older ones are dropped, never queued."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from inspector.data.images import to_rgb8
from inspector.errors import SourceError

STREAM_TIMEOUT_MS = 5000  # open/read timeout for network streams, so a dead stream is noticed
DEFAULT_FILE_FPS = 25.0  # for video files that do not state a usable frame rate


class Camera:
    """`source`: a camera index (int or a string of digits), a stream URL ("rtsp://...") or a
    video file path. Live sources are reopened every `reconnect_s` seconds after a failure;
    a video file is read at its own frame rate (or `fps`) and ends with status 'ended'.

    `status` is 'connecting', 'live', 'reconnecting', 'ended' or 'stopped'; `last_error`
    keeps the most recent failure (it is not cleared when the source comes back).
    """

    def __init__(self, source: int | str | Path, fps: float | None = None, reconnect_s: float = 1.0):
        if isinstance(source, str) and source.strip().isdigit():
            source = int(source)
        self.source = source
        self.fps = fps
        self.reconnect_s = reconnect_s
        self.status = "stopped"
        self.last_error: str | None = None
        self._is_file = False
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None  # newest frame as read (BGR)
        self._count = 0  # frames read so far
        self._taken = 0  # number of the last frame handed out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start reading. A video file that is missing or unreadable raises SourceError;
        live sources that cannot be opened are retried in the background."""
        if self.running:
            return
        capture = None
        self._is_file = False
        if isinstance(self.source, Path) or (isinstance(self.source, str) and "://" not in self.source):
            path = Path(self.source)
            if not path.exists():
                raise SourceError(f"Video file {path} does not exist. Check the path.")
            if path.is_file():  # else a device node such as /dev/video0: a live source
                capture = cv2.VideoCapture(str(path))
                if not capture.isOpened():
                    capture.release()
                    raise SourceError(f"Cannot open video file {path}: not a video or an unsupported format.")
                self._is_file = True
        self._stop.clear()
        self.last_error = None
        self.status = "connecting"
        self._thread = threading.Thread(
            target=self._run, args=(capture,), name=f"Camera({self.source})", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the reading thread and release the source (waits for a pending open/read)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            self.status = "stopped"
            self._cond.notify_all()

    def latest(self, timeout: float) -> np.ndarray | None:
        """The newest frame not yet handed out (RGB uint8), waiting up to `timeout` seconds."""
        return self._wait_for_frame_after(self._taken, timeout)

    def snap(self, timeout: float) -> np.ndarray | None:
        """The next frame read after this call (RGB uint8), waiting up to `timeout` seconds."""
        return self._wait_for_frame_after(self._count, timeout)

    def __enter__(self) -> Camera:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_for_frame_after(self, number: int, timeout: float) -> np.ndarray | None:
        with self._cond:
            self._cond.wait_for(lambda: self._count > number or self.status in ("ended", "stopped"), timeout)
            if self._count <= number:
                return None
            self._taken, frame = self._count, self._frame
        return to_rgb8(frame, self._describe())

    def _run(self, capture: cv2.VideoCapture | None) -> None:
        interval, next_time = 0.0, time.monotonic()
        while not self._stop.is_set():
            try:
                if capture is None:
                    capture = self._open()
                if capture is None:
                    self._stop.wait(self.reconnect_s)
                    continue
                if self._is_file and not interval:
                    fps = self.fps or capture.get(cv2.CAP_PROP_FPS)
                    interval = 1.0 / (fps if 0 < fps < 1000 else DEFAULT_FILE_FPS)
                ok, frame = capture.read()
                error = "no frame could be read"
            except Exception as exc:  # noqa: BLE001 - the thread must never die on a source failure
                ok, error = False, str(exc)
            if not ok:
                if capture is not None:
                    capture.release()
                    capture = None
                if self._is_file:
                    self._set_status("ended")
                    return
                self._set_status(
                    "reconnecting", f"Lost {self._describe()}: {error}. Reconnecting every {self.reconnect_s:g} s."
                )
                self._stop.wait(self.reconnect_s)
                continue
            with self._cond:
                self._frame = frame
                self._count += 1
                self._cond.notify_all()
            if self.status != "live":
                self._set_status("live")
            if interval:  # pace a file like a live camera
                next_time = max(next_time + interval, time.monotonic())
                self._stop.wait(next_time - time.monotonic())
        if capture is not None:
            capture.release()

    def _open(self) -> cv2.VideoCapture | None:
        if isinstance(self.source, str) and "://" in self.source:
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            capture = cv2.VideoCapture(self.source, cv2.CAP_ANY, timeouts)
        else:
            capture = cv2.VideoCapture(self.source if isinstance(self.source, int) else str(self.source))
        if not capture.isOpened():
            capture.release()
            self._set_status("reconnecting", f"Cannot open {self._describe()}. Retrying every {self.reconnect_s:g} s.")
            return None
        if self.fps and not self._is_file:
            capture.set(cv2.CAP_PROP_FPS, self.fps)  # a request; the device may ignore it
        return capture

    def _set_status(self, status: str, error: str | None = None) -> None:
        with self._cond:
            if self._stop.is_set():
                return  # stop() owns the final status
            self.status = status
            if error:
                self.last_error = error
            self._cond.notify_all()

    def _describe(self) -> str:
        if isinstance(self.source, int):
            return f"camera {self.source}"
        return f"video file {self.source}" if self._is_file else f"stream {self.source}"


def list_cameras(max_index: int = 5) -> list[int]:
    """The camera indices 0 .. max_index-1 that can be opened."""
    found = []
    for index in range(max_index):
        capture = cv2.VideoCapture(index)
        if capture.isOpened():
            found.append(index)
        capture.release()
    return found
