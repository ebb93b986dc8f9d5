"""A camera, network stream or video file read by a background thread into a one-slot
holder: only the newest frame is kept, older ones are dropped, never queued."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from inspector.common import Started
from inspector.data.images import to_rgb8
from inspector.errors import SourceError

log = logging.getLogger(__name__)

STREAM_TIMEOUT_MS = 5000  # open/read timeout for network streams, so a dead stream is noticed
DEFAULT_FILE_FPS = 25.0  # for video files that do not state a usable frame rate
STOP_TIMEOUT_S = 2.0  # stop() waits this long for a read that does not return, then leaves it


def _quiet_opencv() -> None:
    """OpenCV's own warnings off (one per failed open): the camera says once, in status and last_error."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class Camera(Started):
    """`source`: a camera index (int or a string of digits), a stream URL ("rtsp://...") or a video file path. Live
    sources are reopened every `reconnect_s` seconds after a failure; a video file is read at its own frame rate
    (or `fps`) and ends with status 'ended'.

    `status` is 'connecting', 'live', 'no frames' (a live source that has delivered no frame for `stall_s` seconds,
    whether its reads hang, its stream stalls with the connection open, or it cannot be opened: its reader is
    replaced by a new one, which reconnects), 'reconnecting', 'ended' or 'stopped'; `last_error` keeps the most
    recent failure (it is not cleared when the source comes back). `stop` returns within STOP_TIMEOUT_S even when a
    read never returns."""

    def __init__(self, source: int | str | Path, fps: float | None = None, reconnect_s: float = 1.0,
                 stall_s: float = 5.0):
        if isinstance(source, str) and source.strip().isdigit():
            source = int(source)
        self.source, self.fps, self.reconnect_s, self.stall_s = source, fps, reconnect_s, stall_s
        self._status = "stopped"
        self.last_error: str | None = None
        self._is_file = False
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None  # newest frame as read (BGR)
        self._count = 0  # frames read so far
        self._taken = 0  # number of the last frame handed out
        self._last_frame = 0.0  # monotonic time of the newest frame (or of the start)
        self._stop = threading.Event()  # the current reader's stop request
        self._thread: threading.Thread | None = None
        self._abandoned: threading.Thread | None = None  # a reader stuck in a read, left behind

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def status(self) -> str:
        """The source's state; reading it notices a live source that stopped delivering frames."""
        with self._cond:
            if (not self._is_file and self._status in ("connecting", "live", "reconnecting")
                    and time.monotonic() - self._last_frame > self.stall_s):
                self._stalled()
            return self._status

    def _stalled(self) -> None:
        """No frame for stall_s: report it, and replace a reader stuck in a read by a new one
        (one at a time: while a left-behind reader is still stuck, the state stays 'no frames')."""
        self._status = "no frames"
        self.last_error = (f"No frame from {self._describe()} for {time.monotonic() - self._last_frame:.0f} s. "
                           f"Reconnecting.")
        self._cond.notify_all()
        if self._abandoned is not None and self._abandoned.is_alive():
            return
        self._stop.set()  # the stuck reader ends, releasing its capture, if its read ever returns
        self._abandoned = self._thread
        self._last_frame = time.monotonic()
        self._start_reader(None, "no frames")  # said until the new reader delivers a frame or fails

    @property
    def frame_number(self) -> int:
        """Number of the frame last handed out by latest() or snap(): frames read since start (1, 2, …)."""
        return self._taken

    def start(self) -> None:
        """Start reading; SourceError for a bad video file (a live source that cannot be opened keeps retrying)."""
        if self.running:
            return
        _quiet_opencv()
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
        self.last_error = None
        with self._cond:
            self._last_frame = time.monotonic()
            self._start_reader(capture)

    def _start_reader(self, capture, status: str = "connecting") -> None:
        self._status = status
        self._stop = stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(capture, stop), name=f"Camera({self.source})",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reading thread and release the source; a read that does not return
        within STOP_TIMEOUT_S is left behind (it releases the source if it ever returns)."""
        with self._cond:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning("%s does not answer; stopped without waiting for it", self._describe())
        with self._cond:
            self._status = "stopped"
            self._cond.notify_all()

    def latest(self, timeout: float) -> np.ndarray | None:
        """The newest frame not yet handed out (RGB uint8), waiting up to `timeout` seconds."""
        return self._wait_for_frame_after(self._taken, timeout)

    def snap(self, timeout: float) -> np.ndarray | None:
        """The next frame read after this call (RGB uint8), waiting up to `timeout` seconds."""
        return self._wait_for_frame_after(self._count, timeout)

    def _wait_for_frame_after(self, number: int, timeout: float) -> np.ndarray | None:
        with self._cond:
            self._cond.wait_for(lambda: self._count > number or self._status in ("ended", "stopped"), timeout)
            if self._count <= number:
                return None
            self._taken, frame = self._count, self._frame
        return to_rgb8(frame, self._describe())

    def _run(self, capture: cv2.VideoCapture | None, stop: threading.Event) -> None:
        interval, next_time = 0.0, time.monotonic()
        while not stop.is_set():
            try:
                if capture is None:
                    capture = self._open(stop)
                if capture is None:
                    stop.wait(self.reconnect_s)
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
                    self._set_status(stop, "ended")
                    return
                self._set_status(stop, "reconnecting",
                                 f"Lost {self._describe()}: {error}. Reconnecting every {self.reconnect_s:g} s.")
                stop.wait(self.reconnect_s)
                continue
            with self._cond:
                if stop.is_set():  # left behind, or stopped, while it read
                    break
                self._frame = frame
                self._count += 1
                self._last_frame = time.monotonic()
                self._status = "live"
                self._cond.notify_all()
            if interval:  # pace a file like a live camera
                next_time = max(next_time + interval, time.monotonic())
                stop.wait(next_time - time.monotonic())
        if capture is not None:
            capture.release()

    def _open(self, stop: threading.Event) -> cv2.VideoCapture | None:
        if isinstance(self.source, str) and "://" in self.source:
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            capture = cv2.VideoCapture(self.source, cv2.CAP_ANY, timeouts)
        else:
            capture = cv2.VideoCapture(self.source if isinstance(self.source, int) else str(self.source))
        if not capture.isOpened():
            capture.release()
            self._set_status(stop, "reconnecting",
                             f"Cannot open {self._describe()}" + (": no such camera, or another program uses it"
                                                                  if isinstance(self.source, int) else "")
                             + f". Retrying every {self.reconnect_s:g} s.")
            return None
        if self.fps and not self._is_file:
            capture.set(cv2.CAP_PROP_FPS, self.fps)  # a request; the device may ignore it
        return capture

    def _set_status(self, stop: threading.Event, status: str, error: str | None = None) -> None:
        with self._cond:
            if stop.is_set():
                return  # stop() (or the reader that replaced this one) owns the status
            self._status = status  # a source that keeps failing delivers no frame: 'no frames' after stall_s
            if error:
                self.last_error = error
            self._cond.notify_all()

    def _describe(self) -> str:
        if isinstance(self.source, int):
            return f"camera {self.source}"
        return f"video file {self.source}" if self._is_file else f"stream {self.source}"


def list_cameras(max_index: int = 5) -> list[int]:
    """The camera indices 0 .. max_index-1 that can be opened."""
    _quiet_opencv()
    found = []
    for index in range(max_index):
        capture = cv2.VideoCapture(index)
        if capture.isOpened():
            found.append(index)
        capture.release()
    return found
