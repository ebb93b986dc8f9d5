"""Evidence of camera NG parts: a camera frame exists nowhere but in memory, so the frames
judged NG are kept as PNG files in one folder, with bounded disk use: once the folder holds
more than its limit, the oldest frames are dropped first. The logged record points at the
kept file, so History and the NG strip show the part after a restart."""
from __future__ import annotations

import re
import threading
from datetime import datetime
from pathlib import Path

import numpy as np

from .data.images import save_image

DEFAULT_LIMIT_GB = 2.0
FOLDER = "ng_frames"
_UNSAFE = re.compile(r"[^A-Za-z0-9._#-]+")
_STAMP = re.compile(r"^\d{8}-\d{6}\.\d{3}_")


def short_name(frame: str) -> str:
    """A camera frame's short name, 'parts.avi#13' for '/videos/parts.avi#13' (the source's last part and the frame
    number; a stream's host too: 'cam_stream#12' for 'rtsp://cam/stream#12'): on screen, in the kept file's name."""
    if "://" in frame:
        host, *path = frame.split("://", 1)[1].split("/")
        return f"{host}_{path[-1]}" if path and path[-1] else host
    return Path(frame).name or frame


def frame_file_name(time_iso: str, source: str) -> str:
    """'20240501-101112.345_parts.avi#37.png' from the record time and the frame's name."""
    stamp = datetime.fromisoformat(time_iso).astimezone().strftime("%Y%m%d-%H%M%S.%f")[:-3]
    return f"{stamp}_{_UNSAFE.sub('_', short_name(source)).strip('_')[-80:] or 'frame'}.png"


def part_name(image_path: str | None) -> str:
    """What a logged part is called on screen: its file's name, or a camera frame's short name
    ('parts.avi#13'), whether the frame was kept (as a time-stamped PNG) or not."""
    if not image_path:
        return "frame"
    name = short_name(image_path)
    stamp = _STAMP.match(name)
    return name[stamp.end():-len(".png")] if stamp and name.endswith(".png") and "#" in name else name


class FrameKeeper:
    def __init__(self, folder: str | Path, limit_bytes: int = int(DEFAULT_LIMIT_GB * 1e9)):
        self.folder = Path(folder)
        self.limit_bytes = int(limit_bytes)
        self._lock = threading.Lock()
        self._files: list[tuple[str, int]] | None = None  # (name, size), oldest first; read once

    def _index(self) -> list[tuple[str, int]]:
        if self._files is None:
            found = sorted(self.folder.glob("*.png")) if self.folder.is_dir() else []
            self._files = [(p.name, p.stat().st_size) for p in found]  # names start with the time
        return self._files

    def used_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._index())

    def keep(self, image: np.ndarray, name: str) -> Path:
        """Save the frame as `name`, then drop the oldest frames over the limit; OSError or ImageError if it cannot."""
        with self._lock:
            files = self._index()
            self.folder.mkdir(parents=True, exist_ok=True)
            path = save_image(self.folder / name, image)
            files.append((path.name, path.stat().st_size))
            total = sum(size for _, size in files)
            while total > self.limit_bytes and len(files) > 1:
                old, size = files.pop(0)
                (self.folder / old).unlink(missing_ok=True)
                total -= size
            return path
