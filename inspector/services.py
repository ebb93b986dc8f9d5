"""Every operator action that changes no model, as a plain function: inspecting, the line,
scores and rates, the shift, the product folders' files. The command line and the desktop
application call these, so that a feature of one is a feature of the other; every change of a
model or a product goes through inspector.changes. No Qt here.

Long work takes `progress(stage, done, total)` and a `cancel` threading.Event."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .core.memory_bank import Progress, no_progress
from .core.calibration import separating_threshold
from .core.model import Model, check_product_name
from .core.model_store import current_version, list_models, list_versions, load_model  # noqa: F401 - for the shells
from .core.scoring import Region, Result
from .core.supervised import probability
from .data.images import list_images, load_image, read_ahead, save_image
from .errors import Cancelled, InspectorError, SourceError, StoreError, TrainingError, describe
from .files import in_use
from .frames import FrameKeeper
from .sources.camera import Camera
from .sources.folder import FolderWatcher
from .sources.trigger import Trigger
from .station import (Message, Outcome, SourceStatus, Station, inspector_for, no_message, no_status, unique_path,
                      watch_camera, watch_folder)
from .store.results import STATION, InspectionRecord, ResultStore

# ---- the station's shift ------------------------------------------------------------------------

def shift_start(store: ResultStore) -> str | None:
    """When the current shift started (ISO UTC), None before the station's first shift."""
    shifts = [e for e in store.events(STATION, limit=50) if e.kind == "shift"]
    return shifts[0].new if shifts else None


# ---- products -------------------------------------------------------------------------------

def products(models_dir: str | Path) -> list[dict]:
    """Metadata of every product's current model; an untrained or damaged one carries an 'error'."""
    return list_models(models_dir)


# ---- teaching ---------------------------------------------------------------------------------

def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """The image files of files and folders given to inspect (a folder: its images). A path
    that does not exist is refused, all of them named, before anything is inspected: a
    mistyped name is not a part."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SourceError(f"No such file or folder: {', '.join(missing)}. Check the path(s); nothing was inspected.")
    files: list[Path] = []
    for p in paths:
        files += list_images(p) if p.is_dir() else [p]
    return files


FRAME_TIMEOUT_S = 10.0  # a camera that gives no new frame for this long ends a capture


def capture_good_frames(source, n: int, folder: str | Path, progress: Progress = no_progress,
                        cancel: threading.Event | None = None, interval_s: float = 0.0,
                        timeout_s: float = FRAME_TIMEOUT_S) -> list[Path]:
    """Save `n` frames of good parts from a camera (an index, a stream URL or a video file,
    through the line's own Camera) as PNG files in `folder` (usually the product's taught_dir,
    which every training uses): a product inspected from a camera is taught from its frames,
    compression and lighting included. A new frame at most every `interval_s` seconds. Returns
    the files; a video file that ends first gives fewer. Raises SourceError when no frame
    came, Cancelled when cancelled (the frames saved so far stay)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SourceError(f"The number of frames to capture must be 1 or more, not {n!r}.")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create {folder} for the captured frames: {exc}") from exc
    saved: list[Path] = []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    pause = cancel if cancel is not None else threading.Event()
    with Camera(source) as camera:
        last = time.monotonic()  # of the last frame (or the start)
        while len(saved) < n and not pause.is_set():
            frame = camera.latest(0.5)
            if frame is None:
                if camera.status in ("ended", "stopped") or time.monotonic() - last > timeout_s:
                    break
                continue
            last = time.monotonic()
            path = unique_path(folder, f"camera_{stamp}_{camera.frame_number:05d}", ".png")
            try:
                save_image(path, frame)
            except Exception as exc:  # noqa: BLE001 - a full disk, a folder gone: said, with what was kept
                path.unlink(missing_ok=True)
                raise StoreError(f"Cannot save a captured frame in {folder} ({describe(exc)}); "
                                 f"{len(saved)} frame(s) were saved there.") from exc
            saved.append(path)
            progress("capturing good frames", len(saved), n)
            if interval_s > 0:
                pause.wait(interval_s)
        status, error = camera.status, camera.last_error
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"Capturing frames from {source} was cancelled after {len(saved)} of {n}; "
                        f"those are kept in {folder}.")
    if not saved:
        raise SourceError(f"No frame came from {source} within {timeout_s:g} s ({error or status}): check the "
                          f"camera, or the stream's address.")
    return saved


KNOWN_DEFECTS = "known_defects"
TAUGHT = "taught"


def taught_dir(models_dir: str | Path, product: str) -> Path:
    """Where the product's taught good parts are kept (beside its model versions): a file
    deleted there is left out of the next training or rebuild."""
    return Path(models_dir) / check_product_name(product) / TAUGHT


def taught_images(models_dir: str | Path, product: str, given: Iterable[Path] = ()) -> list[Path]:
    """The product's taught images (that are not among the `given` good images), which its
    next training or rebuild uses with the good images."""
    folder = taught_dir(models_dir, product)
    if not folder.is_dir():
        return []
    seen = {Path(p).resolve() for p in given}
    return [p for p in list_images(folder) if p.resolve() not in seen]


def known_defects_dir(models_dir: str | Path, product: str) -> Path:
    """Where the product's confirmed defect images are kept (beside its model versions)."""
    return Path(models_dir) / check_product_name(product) / KNOWN_DEFECTS


# ---- versions ---------------------------------------------------------------------------------

def versions(models_dir: str | Path, product: str) -> list[dict]:
    """The kept versions of the product's model, newest first (see core.model_store.list_versions)."""
    return list_versions(models_dir, product)


# ---- looking at scores --------------------------------------------------------------------------

GOOD_SUBFOLDER = "good"  # in a folder of known defects (a test folder's usual layout): good parts
FEW_KINDS, FEW_DEFECTS = 2, 10  # a proposed threshold resting on fewer is said to be shaky


@dataclass
class DefectScores:
    """Scores of a folder of known defect images, its subfolders included: each subfolder is a
    kind of defect (images directly in the folder are one kind), except a subfolder named
    'good', whose images are good parts (a test folder's usual layout) and scored as such."""
    root: Path
    paths: list[Path] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # the defects'
    kinds: list[str] = field(default_factory=list)  # each defect's kind
    good_paths: list[Path] = field(default_factory=list)
    good_scores: list[float] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)  # files that could not be scored

    def add(self, path: Path, score: float) -> None:
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:  # not below the root as given (a link, another spelling): its folder is its kind
            parts = (Path(path).parent.name, Path(path).name)
        if len(parts) > 1 and parts[0].lower() == GOOD_SUBFOLDER:
            self.good_paths.append(Path(path))
            self.good_scores.append(score)
        else:
            self.paths.append(Path(path))
            self.scores.append(score)
            self.kinds.append(parts[0] if len(parts) > 1 else self.root.name)

    def escapes(self, threshold: float) -> int:
        """Known defects that would pass as OK at this threshold (NG: score >= threshold)."""
        return int((np.asarray(self.scores, float) < threshold).sum())

    def good_rejects(self, threshold: float) -> int:
        """Good parts of the folder that would be NG at this threshold."""
        return int((np.asarray(self.good_scores, float) >= threshold).sum())

    def kind_count(self) -> int:
        return len(set(self.kinds))

    def describe(self) -> str:
        """What was scored: 'N known defect(s) of T kind(s), M good part(s) (good/)'."""
        text = f"{len(self.scores)} known defect(s) of {self.kind_count()} kind(s)"
        if self.good_scores:
            text += f" and {len(self.good_scores)} good part(s) (its {GOOD_SUBFOLDER}/ subfolder, scored as good)"
        return text


def _share(n: int, total: int, what: str) -> str:
    return f"{n} of {total} {what}" + (f" ({100.0 * n / total:.1f} %)" if total else "")


@dataclass(frozen=True)
class Rates:
    """What a threshold does, counted in one place for every screen and command: false rejects
    among the calibration's good images (and the good parts of a known-defects folder),
    escapes among the known defects (None when there are none)."""
    threshold: float
    false_rejects: int
    good: int
    folder_rejects: int = 0
    folder_good: int = 0
    escapes: int | None = None
    defects: int = 0

    def false_rejects_text(self) -> str:
        text = _share(self.false_rejects, self.good, "good images")
        if self.folder_good:
            text += f"; {_share(self.folder_rejects, self.folder_good, 'good parts of the defects folder')}"
        return text

    def escapes_text(self) -> str:
        if self.escapes is None:
            return "unknown (give a folder of known defects)"
        return _share(self.escapes, self.defects, "known defects")


def rates(model: Model, threshold: float, defects: DefectScores | None = None) -> Rates:
    """The false rejects and escapes the model would have at `threshold`."""
    good = np.asarray(model.calibration.image_scores, float)
    if defects is None:
        return Rates(threshold, int((good >= threshold).sum()), len(good))
    return Rates(threshold, int((good >= threshold).sum()), len(good), defects.good_rejects(threshold),
                 len(defects.good_scores), defects.escapes(threshold) if defects.scores else None,
                 len(defects.scores))


@dataclass(frozen=True)
class Proposal:
    """A threshold proposed from the known defects, with what it rests on."""
    threshold: float
    tolerance: float
    rates: Rates
    defects: int
    kinds: int

    @property
    def warning(self) -> str | None:
        if self.kinds >= FEW_KINDS and self.defects >= FEW_DEFECTS:
            return None
        return (f"It rests on only {self.defects} known defect(s) of {self.kinds} kind(s): milder defects of "
                f"other kinds may score lower and pass. Add known defects of more kinds (at least {FEW_KINDS} "
                f"kinds, {FEW_DEFECTS} defects) before relying on it.")

    def describe(self) -> str:
        return (f"threshold {self.threshold:.4g} (tolerance {self.tolerance:.2f}), resting on {self.defects} known "
                f"defect(s) of {self.kinds} kind(s): expected false rejects {self.rates.false_rejects_text()}, "
                f"escapes {self.rates.escapes_text()}")


def propose_threshold(model: Model, defects: DefectScores) -> Proposal:
    """The threshold that best separates the good images (the calibration's and the folder's
    good parts) from the known defects, on the good side of the gap (core.calibration.separating_threshold)."""
    if not defects.scores:
        raise TrainingError("No known defect has been scored: a threshold cannot be proposed from them.")
    best = separating_threshold(list(model.calibration.image_scores) + defects.good_scores, defects.scores)
    return Proposal(best, model.calibration.tolerance_for(best), rates(model, best, defects), len(defects.scores),
                    defects.kind_count())


ScoreReport = Callable[[int, int, Path, "float | None", "str | None"], None]  # done, total, path, score, problem


def score_defects(model: Model, folder: str | Path, on_score: ScoreReport | None = None,
                  cancel: threading.Event | None = None, device: str = "cpu",
                  extractors: dict | None = None) -> DefectScores:
    """Score every image of a folder of known defects, its subfolders included (a test
    folder often holds one per defect type, and good/ with good parts: see DefectScores);
    nothing is logged. Files that cannot be scored are listed with their reason. Raises
    Cancelled when cancelled."""
    paths = list_images(folder, recursive=True)
    inspector = inspector_for(model, device, {} if extractors is None else extractors)
    out = DefectScores(Path(folder))
    for done, (path, image) in enumerate(read_ahead(paths), 1):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Scoring the known defects was cancelled.")
        try:
            if isinstance(image, Exception):
                raise image
            score, problem = inspector.inspect(image).score, None
            out.add(path, score)
        except Exception as exc:  # noqa: BLE001 - one file's problem, reported with it
            score, problem = None, describe(exc)
            out.problems.append((path, problem))
        if on_score is not None:
            on_score(done, len(paths), path, score, problem)
    return out


def known_defects(models_dir: str | Path, product: str) -> Path | None:
    """The product's known defects folder when it holds an image, else None."""
    folder = known_defects_dir(models_dir, product)
    try:
        return folder if folder.is_dir() and list_images(folder, recursive=True) else None
    except InspectorError:
        return None


def trained_text(model: Model, defects: DefectScores | None = None) -> str:
    """What a training (or any new version) predicts on the line, said when it ends."""
    r = rates(model, model.threshold, defects)
    text = (f"at tolerance {model.settings.tolerance:g} (threshold {model.threshold:.4g}) the predicted false rejects "
            f"are {r.false_rejects_text()}")
    if defects is not None and defects.scores:
        text += f", the escapes {r.escapes_text()} ({defects.describe()})"
    return text + "."


def find_image(record: InspectionRecord) -> Path | None:
    """The record's image where it still is: where it was inspected, or sorted into a
    verdict folder beside it."""
    if not record.image_path:
        return None
    path = Path(record.image_path)
    for candidate in (path, path.parent / record.verdict / path.name):
        if candidate.is_file():
            return candidate
    return None


def reinspect(models_dir: str | Path, product: str, path: str | Path, model: Model | None = None,
              device: str = "cpu", extractors: dict | None = None) -> tuple[np.ndarray, Result, Model]:
    """Inspect an image file again with the product's current model (or `model`), without
    logging anything. Returns the image, the result and the model that decided it."""
    model = model if model is not None else load_model(models_dir, product)
    image = load_image(path)
    return image, inspector_for(model, device, extractors).inspect(image), model


# ---- the line ---------------------------------------------------------------------------------

def run_line(models_dir: str | Path, store: ResultStore, product: str, kind: str, target,
             stop: threading.Event, on_outcome: Callable[[Outcome], None], on_message: Message = no_message,
             sort_files: bool = False, archive_dir: str | Path | None = None, trigger: Trigger | None = None,
             settle_s: float = 0.5, max_wait_s: float = 30.0, interval_s: float = 0.0, device: str = "cpu",
             model: Model | None = None, on_status: SourceStatus = no_status,
             frames: FrameKeeper | None = None,
             on_station: Callable[[Station | None], None] | None = None) -> None:
    """Run the line until `stop` is set or its source ends. `kind` is the source: 'folder'
    (watch the folder `target`), 'camera' (a camera index, stream URL or video file; every
    frame at most once per `interval_s`) or 'file' (inspect the files of the list `target`
    once; files already logged are skipped). With a `trigger` (a PLC's, or the operator's
    Snap) a folder gives its next file, a camera its next frame, per trigger. Every item is
    logged (see Station); the line follows new model versions of the product between items.
    `on_status` hears the source's state: 'live', 'lost' with the reason (a folder gone, a
    camera that cannot be opened or sends no frames), or 'pending' with the file a watched
    folder waits for (empty or still being written) and for how long. `frames` keeps NG camera frames.
    `on_station` hears the running Station (to select another product: select_product), and
    None once the line has stopped."""
    model = model if model is not None else load_model(models_dir, product)
    station = Station(inspector_for(model, device), store, kind, sort_files, archive_dir, models_dir,
                      on_message, device, frames)
    if on_station is not None:
        on_station(station)
    try:
        with in_use(line_mark(models_dir)):
            _run_source(station, model, kind, target, stop, on_outcome, on_message, trigger, settle_s,
                        max_wait_s, interval_s, on_status)
    finally:
        if on_station is not None:
            on_station(None)


def line_mark(models_dir: str | Path) -> Path:
    """The file a running line marks in use (files.in_use): as a line follows new model versions,
    a change that makes an unchecked model (changes.KINDS, `idle`) is refused while one runs."""
    return Path(models_dir) / ".line"


def _run_source(station: Station, model: Model, kind: str, target, stop: threading.Event, on_outcome,
                on_message: Message, trigger: Trigger | None, settle_s: float, max_wait_s: float,
                interval_s: float, on_status: SourceStatus) -> None:
    if kind == "folder":
        with FolderWatcher(target, settle_s, max_wait_s) as watcher:
            on_message("info", f"Watching {watcher.folder} for new images of '{model.product}' "
                               f"(model version {model.version}).")
            lost = waiting = False

            def folder_status(state: str, reason: str | None) -> None:
                nonlocal lost, waiting
                if state == "lost" or lost:
                    on_message("warning" if state == "lost" else "info",
                               reason if state == "lost" else f"{watcher.folder} is back: watching it again.")
                elif state == "pending" and not waiting:  # once per wait; the status says it each second
                    on_message("info", reason)
                lost, waiting = state == "lost", state == "pending"
                on_status(state, reason)

            watch_folder(station, watcher, stop, on_outcome, on_status=folder_status, trigger=trigger)
    elif kind == "camera":
        def status(state: str, error: str | None) -> None:
            lost = state in ("reconnecting", "no frames")
            on_message("warning" if lost else "info", (error if lost and error else f"{target}: {state}."))
            if lost or state == "live":
                on_status("lost" if lost else "live", error if lost else f"{target} is live.")

        with Camera(target) as camera:
            watch_camera(station, camera, stop, on_outcome, interval_s, status, trigger)
    elif kind == "file":
        on_status("live", None)
        files = list(dict.fromkeys(Path(os.path.abspath(p)) for p in target))  # a file named twice: once
        done = 0
        for outcome in station.inspect_files(files, stop):
            on_outcome(outcome)
            done += 1
        if done < len(files) and not stop.is_set():
            on_message("info", f"{len(files) - done} file(s) already in the log for '{model.product}', skipped "
                               f"(see the history).")
    else:
        raise ValueError(f"unknown source kind {kind!r}")


# ---- learning from known defects (core.supervised) -----------------------------------------

MASK_SUFFIX = "_mask"  # a defect's mask: <name>_mask.png beside it, or in ../ground_truth/<kind>/ (MVTec layout)


def learnt_text(model: Model) -> str:
    """What a training on known defects saved (the model `learn_defects` returns), as the CLI and
    the window say it."""
    heads, c = model.heads, model.heads.counts
    unit = "mm2" if model.mm_per_px is not None else "px"
    return (f"Saved '{model.product}' version {model.version}: {model.change}; the classifier passed "
            f"{c['known_defects'] - c['out_of_fold_escapes']} of {c['known_defects']} known defects it did not learn "
            f"from; {'a segmentation head from the masks' if heads.segmenter is not None else 'no masks: no segmentation head'}; "
            f"regions under {model.min_defect_area:g} {unit} are accepted")


def area_text(region: Region) -> str:
    return f"{region.area} px" + ("" if region.area_mm2 is None else f" ({region.area_mm2:.3g} mm²)")


def findings_text(result: Result, model: Model | None) -> str:
    """What the defect heads say of a part and the regions accepted for their size, shown under
    the verdict; '' for a model without them."""
    lines = []
    if result.defect_logit is not None:
        heads = model.heads if model is not None else None
        lines.append(f"Defect classifier: probability {probability(result.defect_logit):.2f}"
                     + (f" (NG from {probability(heads.classifier_threshold):.2f})" if heads is not None else ""))
        if result.regions:
            lines.append("Defects: " + ", ".join(area_text(r) for r in result.regions))
    if result.accepted:
        unit = "" if model is None else f" {model.min_defect_area:g} {'mm²' if model.mm_per_px is not None else 'px'}"
        lines.append(f"Accepted, smaller than{unit or ' the minimum defect area'}: "
                     + ", ".join(area_text(r) for r in result.accepted))
    return "\n".join(lines)
