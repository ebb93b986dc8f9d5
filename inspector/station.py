"""The inspection line: frames from a source go through an Inspector into the sinks (the result log, OK/NG sorting of
files, an archive of heatmap overlays). Every frame ends as one logged verdict, OK, NG or ERROR with its reason; no
failure of one item stops the line.

Each item is inspected with one immutable model, and its record holds that model's id, version and the threshold
that decided it. With a models folder, the line follows the product: between items it switches to a newer saved
version (a retraining, a new tolerance) and says so. Used by the CLI and, from worker threads, by the GUI,
through inspector.services."""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .common import text, utc_time
from .core.features import FeatureExtractor, Prepared
from .core.model import Model
from .core.model_store import current_version, load_model
from .core.profile import ADVICE, differences
from .core.scoring import Inspector, Result
from .data.images import file_key, load_image, read_ahead, save_image
from .drawing import overlay
from .errors import IncompleteImage, InspectorError, SourceError, StoreError, describe
from .frames import FrameKeeper, frame_file_name, part_name
from .sources.trigger import Trigger
from .store.results import InspectionRecord, NotLogged, ResultStore

log = logging.getLogger(__name__)

RETRY_S = 5.0  # how often verdicts that could not be logged are tried again
SNAP_TIMEOUT_S = 2.0  # a triggered camera part without a frame by then is logged as an ERROR
Message = Callable[[str, str], None]  # level ("info", "warning", "error"), text
SourceStatus = Callable[[str, "str | None"], None]  # "live" | "lost", and why


def no_message(level: str, text: str) -> None:
    pass


def no_status(state: str, reason: str | None) -> None:
    pass


@dataclass
class Outcome:
    """What happened to one frame: the logged record, and for the display the image and the engine's result (None for
    an ERROR). `log_error` says what went wrong with logging, sorting or archiving; `safe` is False when the
    verdict is not yet durably recorded (kept in memory only): its file is then not moved. `drift`: how the image
    differs from the model's good images (core.profile.differences, by kind), empty when it looks like them."""
    record: InspectionRecord
    image: np.ndarray | None = None
    result: Result | None = None
    log_error: str | None = None
    safe: bool = True
    drift: dict[str, str] = field(default_factory=dict)


def inspector_for(model: Model, device: str = "cpu", extractors: dict | None = None) -> Inspector:
    """An Inspector for the model, reusing a backbone built with the same arguments (kept in `extractors`)."""
    if extractors is None:
        return Inspector(model, device)
    s = model.settings
    key = (s.backbone, device, s.weights)  # FeatureExtractor's arguments
    if key not in extractors:
        extractors[key] = FeatureExtractor(*key)
    return Inspector(model, device, extractors[key])


def unique_path(folder: Path, stem: str, suffix: str) -> Path:
    """A new file name in `folder`, reserved by creating it (empty) so that nothing is
    ever overwritten: `stem.suffix`, else with the time, else with the time and a count."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = itertools.chain([f"{stem}{suffix}", f"{stem}_{stamp}{suffix}"],
                            (f"{stem}_{stamp}_{n}{suffix}" for n in itertools.count(2)))
    for name in names:
        try:
            os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return folder / name
        except FileExistsError:
            continue


class Station:
    def __init__(self, inspector: Inspector, store: ResultStore, source: str, sort_files: bool = False,
                 archive_dir: str | Path | None = None, models_dir: str | Path | None = None,
                 on_message: Message = no_message, device: str = "cpu", frames: FrameKeeper | None = None):
        self.inspector, self.store, self.on_message, self.device = inspector, store, on_message, device
        self.source = source  # "file" | "folder" | "camera"
        self.sort_files = sort_files
        self.archive_dir = Path(archive_dir) if archive_dir else None
        self.models_dir = Path(models_dir) if models_dir else None
        self.frames = frames  # keeps NG camera frames (a file is its own evidence)
        m = inspector.model.settings
        self._extractors = {(m.backbone, device, m.weights): inspector.extractor}
        self._refused: int | None = None  # a newer version that could not be loaded
        self._gone = False  # the product's model is no longer on disk
        self._retry_at: float | None = None  # when to try again to log what could not be logged
        self._to_sort: dict[Path, str] = {}  # files to sort once their verdict is logged
        self._selected: Model | None = None  # another product's model, to use from the next item
        self.part_id: int | None = None  # the number of the triggered part under way
        self._drift_said: set[str] = set()  # kinds of difference from the good images already said

    @property
    def product(self) -> str:
        return self.inspector.model.product

    # ---- the model -----------------------------------------------------------------------
    def select(self, model: Model) -> None:
        """Inspect another product (model checked, change recorded: services.select_product) from the next item."""
        self._selected = model

    def follow(self) -> None:
        """Between items: switch to the product selected, or to the product's newest saved version."""
        selected, self._selected = self._selected, None
        if selected is not None:
            old = self.inspector.model
            self.inspector = inspector_for(selected, self.device, self._extractors)
            self._refused, self._gone = None, False
            self.on_message("info", f"The line now inspects '{selected.product}' (model version {selected.version}, "
                                    f"threshold {selected.threshold:.4g}); it inspected '{old.product}'.")
        if self.models_dir is None:
            return
        model = self.inspector.model
        try:
            newest = current_version(self.models_dir, model.product)
        except InspectorError:
            newest = None
        if newest is None:
            if not self._gone:
                self._gone = True
                self.on_message("warning", f"The model of '{model.product}' is no longer in {self.models_dir}; "
                                           f"the line goes on with version {model.version} until it is stopped.")
            return
        self._gone = False
        if newest == model.version or newest == self._refused:
            return
        try:
            new = load_model(self.models_dir, model.product, newest)
            inspector = inspector_for(new, self.device, self._extractors)
        except Exception as exc:  # noqa: BLE001 - the line keeps the model it has
            self._refused = newest
            self.on_message("error", f"Version {newest} of the model of '{model.product}' cannot be used "
                                     f"({describe(exc)}); the line goes on with version {model.version}.")
            return
        self.inspector = inspector
        self.on_message("info", f"The line now inspects '{new.product}' with model version {new.version} "
                                f"({new.change or 'changed'}; threshold {new.threshold:.4g}, was "
                                f"{model.threshold:.4g} in version {model.version}).")

    # ---- one item ------------------------------------------------------------------------
    def _record(self, model: Model, verdict: str, path: str | None, key: str | None, result: Result | None = None,
                error: str | None = None, latency_ms: float | None = None) -> InspectionRecord:
        return InspectionRecord(
            product=model.product, source=self.source, verdict=verdict,
            image_path=text(path) if path else None, score=result.score if result else None,
            threshold=result.threshold if result else None, model_id=model.model_id,
            model_version=model.version, error=text(error) if error else None,
            regions=[r.as_dict() for r in result.regions] if result else [],
            latency_ms=latency_ms, file_key=key, part_id=self.part_id)

    def _error(self, model: Model, path: str | None, key: str | None, exc: BaseException) -> Outcome:
        if not isinstance(exc, InspectorError):  # not the input's fault: keep the trace
            log.error("inspecting %s failed", path, exc_info=exc)
        return self._log(Outcome(self._record(model, "ERROR", path, key, error=describe(exc))))

    def _log(self, outcome: Outcome) -> Outcome:
        try:
            self.store.record(outcome.record)
        except NotLogged as exc:
            outcome.log_error, outcome.safe = str(exc), False
        except StoreError as exc:  # kept in the journal: safe
            outcome.log_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the line goes on; the store keeps nothing
            log.error("logging %s failed", outcome.record.image_path, exc_info=exc)
            outcome.log_error, outcome.safe = f"The verdict could not be logged: {describe(exc)}", False
        if outcome.log_error and self._retry_at is None:
            self._retry_at = time.monotonic() + RETRY_S
        return outcome

    def retry_pending(self, force: bool = False) -> None:
        """Try again (at most every RETRY_S) to log what could not be logged."""
        if self._retry_at is None or (not force and time.monotonic() < self._retry_at):
            return
        try:
            left = self.store.retry_pending()
        except StoreError as exc:
            self._retry_at = time.monotonic() + RETRY_S
            log.info("still not logged: %s", exc)
            return
        if left:
            self._retry_at = time.monotonic() + RETRY_S
            return
        self._retry_at = None
        self.on_message("info", "The verdicts that could not be logged are now in the result log.")
        to_sort, self._to_sort = self._to_sort, {}
        for path, verdict in to_sort.items():
            error = self._sort(path, verdict)
            if error:
                self.on_message("warning", error)

    def no_part(self, name: str, reason: str) -> Outcome:
        """A triggered part that could not be taken (no camera frame): logged as its ERROR."""
        self.retry_pending()
        self.follow()
        return self._error(self.inspector.model, name, None, SourceError(reason))

    def inspect_image(self, image: np.ndarray, name: str | None = None, started: float | None = None,
                      key: str | None = None) -> Outcome:
        """Inspect one decoded frame and log it."""
        self.retry_pending()
        self.follow()
        return self._inspect(image, name, started or time.perf_counter(), key)

    def _inspect(self, image: np.ndarray, name: str | None, started: float, key: str | None,
                 ready: Prepared | None = None) -> Outcome:
        inspector = self.inspector  # one model for the whole item
        try:
            result = inspector.inspect(image, ready)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime, OpenCV, memory: this item's ERROR
            return self._error(inspector.model, name, key, exc)
        latency = (time.perf_counter() - started) * 1000.0
        record = self._record(inspector.model, result.verdict, name, key, result, latency_ms=latency)
        kept = self._keep_frame(record, image)
        outcome = self._log(Outcome(record, image, result, drift=self._drift(inspector.model, name, image)))
        outcome.log_error = outcome.log_error or kept
        self._archive(outcome, name)
        return outcome

    def _drift(self, model: Model, name: str | None, image: np.ndarray) -> dict[str, str]:
        """How the image differs from the model's good images; each kind of difference is said
        once while the line runs (the Outcome carries it for every part)."""
        try:
            drift = differences(model.profile, name, image)
        except Exception as exc:  # noqa: BLE001 - a warning that cannot be worked out never stops the line
            log.warning("comparing %s with the good images failed: %s", name, exc)
            return {}
        for kind in drift.keys() - self._drift_said:
            self._drift_said.add(kind)
            self.on_message("warning", f"{part_name(name)} does not look like the good images '{model.product}' "
                                       f"was trained on: {drift[kind]} {ADVICE}")
        return drift

    def _keep_frame(self, record: InspectionRecord, image: np.ndarray) -> str | None:
        """Keep an NG camera frame; the record then points at the kept file. Returns what went wrong, if anything."""
        if self.frames is None or self.source != "camera" or record.verdict != "NG":
            return None
        record.time = utc_time(datetime.now(timezone.utc))
        try:
            record.image_path = text(str(self.frames.keep(image, frame_file_name(record.time, record.image_path
                                                                                   or "frame"))))
        except Exception as exc:  # noqa: BLE001 - the verdict is logged; only the picture is missing
            return text(f"Could not keep the NG frame {record.image_path} in {self.frames.folder}: {describe(exc)}")
        return None

    def inspect_file(self, path: str | Path, loaded: np.ndarray | Prepared | Exception | None = None,
                     waiting_since: float | None = None, max_wait_s: float = 0.0) -> Outcome | None:
        """Inspect one file and log it exactly once: a file already in the log is skipped
        (returns None; with sorting, it is moved now if a crash kept it from being moved).
        `loaded` is the already decoded (or prepared) image, or its load error, when a reader
        thread ran ahead. A file still arriving (`waiting_since`, a time.monotonic()) that is empty or
        cut short raises IncompleteImage until it has been waited for `max_wait_s`."""
        self.retry_pending()
        self.follow()
        model = self.inspector.model
        path = Path(os.path.abspath(path))
        started = time.perf_counter()
        try:
            key = file_key(path)
        except Exception as exc:  # noqa: BLE001
            return self._error(model, str(path), None, exc)
        try:
            logged = self.store.logged_verdict(model.product, key)
        except StoreError as exc:  # unreadable now: inspect; the log keeps one row per file anyway
            log.warning("%s", exc)
            logged = None
        if logged is not None:
            if self.sort_files:
                self._sort(path, logged)
            return None
        ready = loaded if isinstance(loaded, Prepared) else None
        try:
            image = load_image(path) if loaded is None else ready.image if ready else loaded
            if isinstance(image, Exception):
                raise image
        except IncompleteImage as exc:
            waited = 0.0 if waiting_since is None else time.monotonic() - waiting_since
            if waiting_since is not None and waited < max_wait_s:
                raise
            if waiting_since is not None:
                exc = IncompleteImage(f"{exc} It was still incomplete after {waited:.0f} s.")
            outcome = self._error(model, str(path), key, exc)
        except Exception as exc:  # noqa: BLE001
            outcome = self._error(model, str(path), key, exc)
        else:
            outcome = self._inspect(image, str(path), started, key, ready)
        if self.sort_files:
            if outcome.safe:
                error = self._sort(path, outcome.record.verdict)
                if error:
                    outcome.log_error = error
            else:
                self._to_sort[path] = outcome.record.verdict
                outcome.log_error += f" {text(path.name)} stays where it is until its verdict is logged."
        return outcome

    def inspect_files(self, paths: Iterable[str | Path], cancel: threading.Event | None = None) -> Iterator[Outcome]:
        """Inspect many files; a reader thread reads and prepares the next one while the current one is scored."""
        for path, image in read_ahead(paths, prepare=self._prepare):
            if cancel is not None and cancel.is_set():
                return
            outcome = self.inspect_file(path, image)
            if outcome is not None:
                yield outcome

    def _prepare(self, image: np.ndarray) -> Prepared:
        return self.inspector.prepare(image)  # the model now; a newer one prepares again

    def _sort(self, path: Path, verdict: str) -> str | None:
        """Move the file into an OK/, NG/ or ERROR/ folder beside it, over no file; returns what went wrong."""
        dest_dir = path.parent / verdict
        dest = None
        try:
            dest_dir.mkdir(exist_ok=True)
            dest = unique_path(dest_dir, path.stem, path.suffix)
            os.replace(path, dest)
        except OSError as exc:
            if dest is not None:
                dest.unlink(missing_ok=True)
            return text(f"Could not move {path} into {dest_dir}: {exc}")
        return None

    def _archive(self, outcome: Outcome, name: str | None) -> None:
        if self.archive_dir is None or outcome.result is None:
            return
        stem = Path(name).stem if name else "frame"
        stamp = outcome.record.time.replace(":", "").replace("-", "")
        dest = None
        try:
            folder = self.archive_dir / outcome.record.verdict
            folder.mkdir(parents=True, exist_ok=True)
            dest = unique_path(folder, f"{stamp}_{stem}", ".jpg")
            save_image(dest, overlay(outcome.image, outcome.result))
        except Exception as exc:  # noqa: BLE001 - the verdict is logged; only the picture is missing
            if dest is not None:
                dest.unlink(missing_ok=True)
            outcome.log_error = text(f"Could not archive the overlay to {dest or self.archive_dir}: {describe(exc)}")


def watch_folder(station: Station, watcher, stop: threading.Event, on_outcome: Callable[[Outcome], None],
                 poll_s: float = 0.2, on_status: SourceStatus = no_status, trigger: Trigger | None = None) -> None:
    """Inspect each new file from a started FolderWatcher until `stop` is set; with a `trigger`, one file per trigger
    (the next one ready, waited for). A file still being written is handed back to the watcher until it is complete
    or has waited the watcher's max_wait_s. `on_status` hears 'live', and 'lost' with the reason when the folder
    disappears (an unplugged drive, a lost share): the watch resumes by itself when the folder is back; and
    'pending' with which file is waited for, and how long, while a file stays empty or incomplete."""
    try:
        _watch_folder(station, watcher, stop, on_outcome, poll_s, on_status, trigger)
    finally:
        if trigger is not None and station.part_id is not None:
            station.part_id = None
            trigger.done()


def _watch_folder(station, watcher, stop, on_outcome, poll_s, on_status, trigger) -> None:
    status, pending = None, None
    while not stop.is_set():
        if not watcher.folder.is_dir():
            if status != "lost":
                status = "lost"
                on_status("lost", f"The watched folder {watcher.folder} is gone (an unplugged drive or a "
                                  f"lost network share?). Waiting for it to come back.")
            stop.wait(1.0)
            continue
        if status == "lost":  # back: watch the folder as it is now
            watcher.stop()
            try:
                watcher.start()
            except InspectorError:
                stop.wait(1.0)
                continue
        waited = watcher.waiting(max(1.0, 2 * watcher.settle_s))
        if waited is not None:  # said each second: which file, and how long until it is an ERROR
            path, seconds = waited
            text = (f"Waiting for {path.name} to be completely written: {seconds:.0f} s so far (an empty or "
                    f"incomplete file is an ERROR after {watcher.max_wait_s:g} s).")
            if (status, text) != ("pending", pending):
                status, pending = "pending", text
                on_status("pending", text)
        elif status != "live":
            status = "live"
            on_status("live", f"Watching {watcher.folder}.")
        if trigger is not None and station.part_id is None:
            station.part_id = trigger.take(poll_s)
            if station.part_id is None:
                station.retry_pending()
                continue
        path = watcher.next_ready(poll_s)
        if path is None:
            station.retry_pending()
            continue
        since = watcher.since(path)
        try:
            outcome = station.inspect_file(path, waiting_since=since, max_wait_s=watcher.max_wait_s)
        except IncompleteImage:
            watcher.recheck(path, since)
            continue
        if outcome is not None:
            on_outcome(outcome)
            if trigger is not None:
                station.part_id = None
                trigger.done()


def watch_camera(station: Station, camera, stop: threading.Event, on_outcome: Callable[[Outcome], None],
                 interval_s: float = 0.0, on_status: Callable[[str, str | None], None] | None = None,
                 snap: Trigger | None = None) -> None:
    """Inspect the newest camera frame continuously (at most one per `interval_s`), or one per trigger of `snap`,
    until `stop` is set or a video file ends (its last frame too, however long the one before took)."""
    status = None
    while not stop.is_set():
        current = camera.status
        if on_status and current != status:
            on_status(current, camera.last_error)
        status = current
        if current in ("ended", "stopped"):
            last = camera.latest(0.0) if current == "ended" and snap is None else None
            if last is not None:  # a video file's last frame, read while the one before was inspected
                on_outcome(station.inspect_image(last, f"{camera.source}#{camera.frame_number}", time.perf_counter()))
            return
        if snap is not None:
            part = snap.take(0.1)
            if part is None:
                station.retry_pending()
                continue
            station.part_id = part
            try:
                frame = camera.snap(SNAP_TIMEOUT_S)
                if frame is None:
                    on_outcome(station.no_part(f"{camera.source}#trigger{part}",
                                               f"No frame from {camera.source} within {SNAP_TIMEOUT_S:g} s of the "
                                               f"trigger: check the camera."))
                    continue
                on_outcome(station.inspect_image(frame, f"{camera.source}#{camera.frame_number}"))
            finally:
                station.part_id = None
                snap.done()
            continue
        frame = camera.latest(0.2)
        if frame is None:
            station.retry_pending()
            continue
        started = time.perf_counter()  # '#N': the source's frame number, in continuous and Snap mode
        on_outcome(station.inspect_image(frame, f"{camera.source}#{camera.frame_number}", started))
        if interval_s > 0:
            stop.wait(max(0.0, interval_s - (time.perf_counter() - started)))
