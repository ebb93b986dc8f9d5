"""The inspection line: frames from a source go through an Inspector into the sinks (the
result log, OK/NG sorting of files, an archive of heatmap overlays). Every frame ends as one
logged verdict, OK, NG or ERROR with its reason; a bad item never stops the line. Used by
the CLI and, from worker threads, by the GUI."""
from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .core.scoring import Inspector, Result
from .data.images import file_key, load_image, read_ahead, save_image
from .errors import InspectorError, StoreError
from .evaluation.plots import draw_boxes, overlay_heatmap
from .store.results import InspectionRecord, ResultStore

RED = (255, 0, 0)


@dataclass
class Outcome:
    """What happened to one frame: the logged record, and for the display the image and the
    engine's result (None for an ERROR). `log_error` is set when the log could not be
    written right now (the record is then kept in the journal; see ResultStore)."""
    record: InspectionRecord
    image: np.ndarray | None = None
    result: Result | None = None
    log_error: str | None = None


def overlay(image: np.ndarray, result: Result, alpha: float = 0.5) -> np.ndarray:
    """The image with its heatmap (scaled so the threshold sits mid-range) and region boxes."""
    shown = overlay_heatmap(image, result.anomaly_map, 0.0, 2.0 * result.threshold, alpha)
    return draw_boxes(shown, [(r.x, r.y, r.w, r.h) for r in result.regions], RED,
                      max(2, image.shape[1] // 300))


class Station:
    def __init__(self, inspector: Inspector, store: ResultStore, source: str,
                 sort_files: bool = False, archive_dir: str | Path | None = None):
        self.inspector = inspector
        self.store = store
        self.source = source  # "file" | "folder" | "camera"
        self.sort_files = sort_files
        self.archive_dir = Path(archive_dir) if archive_dir else None

    @property
    def product(self) -> str:
        return self.inspector.model.product

    def _record(self, verdict: str, path: str | None, key: str | None, result: Result | None = None,
                error: str | None = None, latency_ms: float | None = None) -> InspectionRecord:
        m = self.inspector.model
        return InspectionRecord(
            product=m.product, source=self.source, verdict=verdict, image_path=path,
            score=result.score if result else None, threshold=m.threshold, model_id=m.model_id,
            error=error, regions=[r.as_dict() for r in result.regions] if result else [],
            latency_ms=latency_ms, file_key=key)

    def _log(self, outcome: Outcome) -> Outcome:
        try:
            self.store.record(outcome.record)
        except StoreError as exc:
            outcome.log_error = str(exc)
        return outcome

    def inspect_image(self, image: np.ndarray, name: str | None = None, started: float | None = None,
                      key: str | None = None) -> Outcome:
        """Inspect one decoded frame and log it."""
        started = started or time.perf_counter()
        try:
            result = self.inspector.inspect(image)
        except InspectorError as exc:
            return self._log(Outcome(self._record("ERROR", name, key, error=str(exc))))
        latency = (time.perf_counter() - started) * 1000.0
        outcome = self._log(Outcome(self._record(result.verdict, name, key, result, latency_ms=latency),
                                    image, result))
        self._archive(outcome, name)
        return outcome

    def inspect_file(self, path: str | Path, loaded: np.ndarray | Exception | None = None) -> Outcome | None:
        """Inspect one file and log it exactly once: a file already in the log is skipped
        (returns None). `loaded` is the already decoded image (or its load error) when a
        reader thread ran ahead."""
        path = Path(path).absolute()
        started = time.perf_counter()
        try:
            key = file_key(path)
        except InspectorError as exc:
            return self._log(Outcome(self._record("ERROR", str(path), None, error=str(exc))))
        if self.store.is_logged(self.product, key):
            return None
        try:
            image = loaded if loaded is not None else load_image(path)
            if isinstance(image, Exception):
                raise image
        except InspectorError as exc:
            outcome = self._log(Outcome(self._record("ERROR", str(path), key, error=str(exc))))
        else:
            outcome = self.inspect_image(image, str(path), started, key)
        if self.sort_files:
            self._sort(path, outcome)
        return outcome

    def inspect_files(self, paths: Iterable[str | Path], cancel: threading.Event | None = None) -> Iterator[Outcome]:
        """Inspect many files; the next file is read while the current one is scored."""
        for path, image in read_ahead(paths):
            if cancel is not None and cancel.is_set():
                return
            outcome = self.inspect_file(path, image)
            if outcome is not None:
                yield outcome

    def _sort(self, path: Path, outcome: Outcome) -> None:
        """Move the file into an OK/, NG/ or ERROR/ subfolder beside it."""
        dest_dir = path.parent / outcome.record.verdict
        try:
            dest_dir.mkdir(exist_ok=True)
            dest = dest_dir / path.name
            if dest.exists():
                dest = dest_dir / f"{path.stem}_{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}"
            shutil.move(str(path), dest)
        except OSError as exc:
            outcome.log_error = f"Could not move {path} into {dest_dir}: {exc}"

    def _archive(self, outcome: Outcome, name: str | None) -> None:
        if self.archive_dir is None or outcome.result is None:
            return
        stem = Path(name).stem if name else "frame"
        stamp = outcome.record.time.replace(":", "").replace("-", "")
        dest = self.archive_dir / outcome.record.verdict / f"{stamp}_{stem}.jpg"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            save_image(dest, overlay(outcome.image, outcome.result))
        except (OSError, InspectorError) as exc:
            outcome.log_error = f"Could not archive the overlay to {dest}: {exc}"


def watch_folder(station: Station, watcher, stop: threading.Event,
                 on_outcome: Callable[[Outcome], None], poll_s: float = 0.2) -> None:
    """Inspect each new file from a started FolderWatcher until `stop` is set."""
    while not stop.is_set():
        path = watcher.next_ready(poll_s)
        if path is not None:
            outcome = station.inspect_file(path)
            if outcome is not None:
                on_outcome(outcome)


def watch_camera(station: Station, camera, stop: threading.Event, on_outcome: Callable[[Outcome], None],
                 interval_s: float = 0.0, on_status: Callable[[str, str | None], None] | None = None,
                 snap: threading.Event | None = None) -> None:
    """Inspect the newest camera frame continuously (at most one per `interval_s`), or only
    when `snap` is set if a snap event is given, until `stop` is set or a video file ends."""
    status = None
    count = 0
    while not stop.is_set():
        if on_status and camera.status != status:
            status = camera.status
            on_status(status, camera.last_error)
        if camera.status in ("ended", "stopped"):
            return
        if snap is not None:
            if not snap.wait(0.1):
                continue
            snap.clear()
            frame = camera.snap(2.0)
        else:
            frame = camera.latest(0.2)
        if frame is None:
            continue
        started = time.perf_counter()
        count += 1
        on_outcome(station.inspect_image(frame, f"{camera.source}#{count}", started))
        if interval_s > 0:
            stop.wait(max(0.0, interval_s - (time.perf_counter() - started)))
