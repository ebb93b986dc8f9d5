"""Every operator action as a plain function: the command line and the desktop application
call these, so that a feature of one is a feature of the other. No Qt here.

A change of what decides a verdict (training, sensitivity, memory-bank rebuild, inspection
region, teaching, roll-back) saves a new model version (inspector.core.model) and, like a product's creation, rename and deletion,
is recorded as an event in the result log: who (the station user: `user`, else the OS
login name), when, old -> new. A running line switches to a new version between items.
When saving a change fails, nothing is recorded and the model on disk stays as it was.

Long work takes `progress(stage, done, total)` and a `cancel` threading.Event."""
from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import signing
from .core import training
from .core.features import FeatureExtractor
from .core.memory_bank import Progress, no_progress
from .core.calibration import separating_threshold
from .core.model import Model, Settings, check_product_name, describe_scale, with_sigma
from .core.model_store import delete_model, list_models, list_versions, load_model, rename_model, save_model, signed_with
from .core.product_numbers import product_numbers, rename_number
from .core.profile import profile_of, widened
from .core.roi import describe_roi
from .core.scoring import Inspector, Region, Result
from .core.supervised import probability
from .core.training import GoodFeatures
from .data.images import list_images, load_image, read_ahead, save_image
from .errors import Cancelled, InspectorError, ModelError, SourceError, StoreError, TrainingError, describe
from .frames import FrameKeeper
from .sources.camera import Camera
from .sources.folder import FolderWatcher
from .sources.trigger import Trigger
from .station import (Message, Outcome, SourceStatus, Station, inspector_for, no_message, no_status, unique_path,
                      watch_camera, watch_folder)
from .store.results import STATION, InspectionRecord, ResultStore, utc_time
from .users import Accounts, User

log = logging.getLogger(__name__)


# ---- events ------------------------------------------------------------------------------

def describe_model(model: Model | None) -> str | None:
    """A model version as an event's old or new value."""
    if model is None:
        return None
    s = model.settings
    return (f"version {model.version} (id {model.model_id}): threshold {model.threshold:.6g} at sensitivity "
            f"{s.sigma:g}; memory bank {len(model.memory_bank)} patches ({s.sampler}, ratio {s.sampling_ratio:g}); "
            f"{s.backbone}, {describe_scale(s.defect_size, s.image_size)}; inspecting {describe_roi(model.roi)}")


def _record(store: ResultStore, product: str, kind: str, old: str | None, new: str | None,
            detail: str | None, user: str | None) -> None:
    """Record an event; a log that cannot be written now keeps it for later (see ResultStore)."""
    try:
        store.record_event(product, kind, old, new, detail, user)
    except StoreError as exc:
        log.warning("the %s event of '%s' is not in the log yet: %s", kind, product, exc)


def _save_version(model: Model, models_dir: str | Path, change: str | None = None) -> Model:
    """Save the model as the product's new version, made now (a sensitivity, a region, a taught
    part or a roll-back is a version of its own time, not of the training it comes from)."""
    return save_model(replace(model, created=datetime.now(timezone.utc).isoformat(timespec="seconds")),
                      models_dir, change)


def _current(models_dir: Path, product: str) -> Model | None:
    """The product's model, None when it has none or it cannot be loaded."""
    try:
        return load_model(models_dir, product)
    except InspectorError:
        return None


# ---- the station: shifts and the engineer --------------------------------------------------------

def shift_start(store: ResultStore) -> str | None:
    """When the current shift started (ISO UTC), None before the station's first shift."""
    shifts = [e for e in store.events(STATION, limit=50) if e.kind == "shift"]
    return shifts[0].new if shifts else None


def new_shift(store: ResultStore, user: str | None = None) -> str:
    """Start a new shift now: its counters start from zero (the log keeps everything). Returns
    its start time. Recorded as an event (old start -> new start)."""
    start = utc_time(datetime.now(timezone.utc))
    _record(store, STATION, "shift", shift_start(store), start, None, user)
    return start


def set_engineer(accounts: Accounts, store: ResultStore, name: str, pin: str, old_pin: str | None = None) -> User:
    """Set the engineer's name and PIN (the first time freely, later with the current PIN);
    recorded as an event, the PIN itself never."""
    had = accounts.engineer_name()
    user = accounts.set_engineer(name, pin, old_pin)
    _record(store, STATION, "engineer", had, user.name, "engineer PIN set" if had is None else "engineer PIN changed",
            str(user))
    return user


# ---- products -------------------------------------------------------------------------------

def products(models_dir: str | Path) -> list[dict]:
    """Metadata of every product's current model; an untrained or damaged one carries an 'error'."""
    return list_models(models_dir)


def create_product(models_dir: str | Path, store: ResultStore, name: str, user: str | None = None) -> str:
    """A new, untrained product (an empty folder). Returns its name as stored."""
    name = check_product_name(name)
    folder = Path(models_dir) / name
    if folder.exists():
        raise ModelError(f"A product named '{name}' already exists.")
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise ModelError(f"Cannot create the product '{name}' in {models_dir}: {exc}") from exc
    product_numbers(models_dir)  # its number, given now
    _record(store, name, "create", None, name, None, user)
    return name


def rename_product(models_dir: str | Path, store: ResultStore, product: str, new_name: str,
                   user: str | None = None) -> str:
    """Rename a product: its model versions, and its history in the log, which keeps every
    verdict and event under the new name, and its product number. Returns the new name."""
    new_name = check_product_name(new_name)
    rename_number(models_dir, product, new_name)
    try:
        rename_model(models_dir, product, new_name)
        try:
            store.rename_product(product, new_name, user)
        except StoreError:
            rename_model(models_dir, new_name, product)  # the history could not follow: undo
            raise
    except InspectorError:
        rename_number(models_dir, new_name, product)
        raise
    return new_name


def delete_product(models_dir: str | Path, store: ResultStore, product: str, user: str | None = None) -> None:
    """Delete a product and every version of its model; its history stays in the log."""
    old = _current(Path(models_dir), product)
    delete_model(models_dir, product)
    _record(store, product, "delete", describe_model(old) or "untrained", None, None, user)


# ---- checking what is asked, before any work ------------------------------------------------

def check_sensitivity(sigma) -> float:
    """The sensitivity k (threshold = median + k robust spreads of the good scores): 0 or more."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma):
        raise TrainingError(f"The sensitivity must be a number of 0 or more (3 is usual), not {sigma!r}.")
    if sigma < 0:
        raise TrainingError(f"The sensitivity must be 0 or more (3 is usual), not {sigma:g}: below 0 the threshold "
                            f"falls under the typical good part's score and most good parts are rejected.")
    return float(sigma)


def check_sampling_ratio(ratio) -> float:
    """The share of patch features kept in the memory bank: more than 0, at most 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise TrainingError(f"The sampling ratio is a share of the patch features: more than 0 and at most 1 "
                            f"(0.01 is usual), not {ratio!r}.")
    return float(ratio)


def check_settings(settings: Settings) -> Settings:
    """The training settings an operator chooses, checked before any image is read."""
    check_sensitivity(settings.sigma)
    check_sampling_ratio(settings.sampling_ratio)
    return settings


def _with_skipped(exc: TrainingError, skipped: list[tuple[Path, str]]) -> TrainingError:
    """The error of a failed training, with the files it skipped and why."""
    return TrainingError(f"{exc}{training.skipped_note(skipped)}") if skipped else exc


# ---- teaching ---------------------------------------------------------------------------------

def _images(images: str | Path | Iterable[str | Path]) -> tuple[list[Path], str]:
    """Image files from a folder (not its subfolders) or a list, and where they came from."""
    if isinstance(images, (str, Path)):
        return list_images(images), str(images)
    paths = [Path(p) for p in images]
    return paths, f"{len(paths)} file(s)"


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


def train(models_dir: str | Path, store: ResultStore, product: str, images: str | Path | Iterable[str | Path],
          settings: Settings, progress: Progress = no_progress, cancel: threading.Event | None = None,
          device: str = "cpu", user: str | None = None, roi: np.ndarray | None = None) -> tuple[Model, GoodFeatures]:
    """Train the product from good images (a folder or files), inspecting the region `roi`
    (core.roi; None: the whole image), and save the model as its new version. Returns it and
    the patch features (kept to rebuild the bank without reading the images again)."""
    product = check_product_name(product)
    check_settings(settings)
    paths, origin = _images(images)
    taught = taught_images(models_dir, product, paths)
    old = _current(Path(models_dir), product)
    if not paths + taught:
        raise TrainingError(f"No good images in {origin}: choose a folder that contains good part images.")
    settings = training.with_defect_size(settings, paths + taught)
    extractor = FeatureExtractor(settings.backbone, device, settings.weights)
    good = training.extract_features(paths + taught, extractor, settings, progress, cancel)
    try:
        model = training.fit(product, good, settings, progress, cancel, roi)
    except TrainingError as exc:
        raise _with_skipped(exc, good.skipped) from exc
    model = replace(model, profile=profile_of(good.paths), good_folder=_folder_of(models_dir, product, images, paths))
    detail = (f"{len(good.paths)} good image(s): from {origin}" + _taught_detail(taught)
              + (f", {len(good.skipped)} unreadable skipped" if good.skipped else ""))
    saved = _save_version(model, models_dir, change=f"trained on {detail}")
    _record(store, product, "train", describe_model(old), describe_model(saved), detail, user)
    return saved, good


def set_sensitivity(models_dir: str | Path, store: ResultStore, product: str, sigma: float,
                    user: str | None = None, expected_version: int | None = None) -> Model:
    """Save the product's model at another sensitivity (sigma) as its new version. With
    `expected_version`, refused when the model changed since the caller looked at it."""
    sigma = check_sensitivity(sigma)
    current = load_model(models_dir, product)
    if expected_version is not None and current.version != expected_version:
        raise ModelError(f"The model of '{product}' changed meanwhile (now version {current.version}, "
                         f"not {expected_version}): look at it again before changing its sensitivity.")
    saved = _save_version(with_sigma(current, sigma), models_dir)
    _record(store, product, "sensitivity", describe_model(current), describe_model(saved), saved.change, user)
    return saved


def _folder_of(models_dir: str | Path, product: str, images, paths: list[Path]) -> str | None:
    """The folder good images came from, which the model records for its rebuilds: the folder
    given, or the product's taught images' folder when they are frames captured into it."""
    if isinstance(images, (str, Path)):
        return os.path.abspath(images)
    if paths and all(_is_taught(models_dir, product, p) for p in paths):
        return os.path.abspath(taught_dir(models_dir, product))
    return None


def rebuild_folder(model: Model, known: str | Path | None = None) -> Path:
    """The folder of good images a rebuild of the model's bank (or a training of its defect heads)
    reads again: the one it records, else (a model that records none) `known`, the folder the
    caller remembers. TrainingError saying why when neither is known or the folder is no longer there."""
    folder = model.good_folder or known
    if not folder:
        raise TrainingError(f"Cannot read the good images of '{model.product}' again: its model does not say which "
                            f"folder its good images came from (trained from files, or by an older Inspector). "
                            f"Choose the folder it was trained from.")
    if not Path(folder).is_dir():
        raise TrainingError(f"Cannot read the good images of '{model.product}' again: the folder of good images "
                            f"{folder} is no longer there. Choose the folder it was trained from, or train it again.")
    return Path(folder)


def rebuild_bank(models_dir: str | Path, store: ResultStore, product: str, sampling_ratio: float,
                 good: GoodFeatures | None = None, images: str | Path | Iterable[str | Path] | None = None,
                 progress: Progress = no_progress, cancel: threading.Event | None = None,
                 device: str = "cpu", user: str | None = None) -> tuple[Model, GoodFeatures]:
    """Rebuild the product's memory bank at another sampling ratio, with its other settings
    as they are, from the patch features of a training (`good`) or, without them, from the
    good images (`images`, read again; None: the folder the model records, rebuild_folder);
    saves the new version and returns it with the features."""
    check_sampling_ratio(sampling_ratio)
    current = load_model(models_dir, product)
    settings = replace(current.settings, sampling_ratio=float(sampling_ratio))
    origin = "the patch features kept from the training"
    paths, folder = [], current.good_folder
    if good is None:
        images = rebuild_folder(current) if images is None else images
        paths, origin = _images(images)
        if not paths:
            raise TrainingError("No good images given: choose the folder the product was trained from.")
        folder = _folder_of(models_dir, product, images, paths)
    else:  # a taught image deleted since the features were kept is left out, as it is from a training
        kept = [i for i, p in enumerate(good.paths) if not (_is_taught(models_dir, product, p) and not p.is_file())]
        if len(kept) < len(good.paths):
            good = GoodFeatures([good.features[i] for i in kept], [good.paths[i] for i in kept], good.skipped)
    taught = taught_images(models_dir, product, paths if good is None else good.paths)
    if paths or taught:
        extractor = FeatureExtractor(settings.backbone, device, settings.weights)
        read = training.extract_features(paths + taught, extractor, settings, progress, cancel)
        good = read if good is None else GoodFeatures(good.features + read.features,
                                                      good.paths + read.paths, good.skipped + read.skipped)
    model = training.fit(current.product, good, settings, progress, cancel, current.roi)
    model = replace(model, profile=profile_of(good.paths) or current.profile, good_folder=folder)
    used = [p for p in good.paths if _is_taught(models_dir, product, p)]  # read now or among the kept features
    change = (f"memory bank rebuilt at sampling ratio {current.settings.sampling_ratio:g} -> "
              f"{settings.sampling_ratio:g} from {origin}{_taught_detail(used)}")
    saved = _save_version(model, models_dir, change=change)
    _record(store, product, "bank", describe_model(current), describe_model(saved), change, user)
    return saved, good


def set_roi(models_dir: str | Path, store: ResultStore, product: str, roi: np.ndarray | None,
            user: str | None = None) -> Model:
    """Inspect the product in another region (a mask stretched over each image, core.roi;
    None: the whole image) and save it as its new version. The calibration follows from the
    model's own calibration patch scores: no good image is read."""
    current = load_model(models_dir, product)
    saved = _save_version(training.with_roi(current, roi), models_dir)
    _record(store, product, "region", describe_model(current), describe_model(saved), saved.change, user)
    return saved


@dataclass
class Taught:
    """What teaching good images changed: the model before and after, and the images'
    scores before and after (the threshold of each model decides)."""
    before: Model
    model: Model
    paths: list[Path]
    scores_before: list[float]
    scores_after: list[float]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def false_reject_rates(self) -> tuple[float, float]:
        """The expected false-reject rate before and after, each at its model's threshold."""
        return tuple(m.calibration.false_reject_rate(m.threshold) for m in (self.before, self.model))


def teach(models_dir: str | Path, store: ResultStore, product: str, images: str | Path | Iterable[str | Path],
          device: str = "cpu", user: str | None = None, extractors: dict | None = None) -> Taught:
    """'This part is good': good parts the line rejected (a folder or files) join the product's
    memory bank and calibration (training.teach), without reading its good images again;
    saved as its new version. Unreadable files are skipped and listed. The taught images are
    kept (taught_dir), and every later training and memory-bank rebuild of the product uses
    them with its good images, so that a taught part never comes back as a false reject."""
    current = load_model(models_dir, product)
    paths, origin = _images(images)
    extractor = inspector_for(current, device, extractors).extractor
    good = training.extract_features(paths, extractor, current.settings)
    if not good.paths:
        raise TrainingError(f"No good image to teach from {origin}"
                            + "".join(f"; {p.name}: {why}" for p, why in good.skipped))
    what = ", ".join(p.name for p in good.paths) if len(good.paths) <= 3 else f"{len(good.paths)} good images"
    model, before = training.teach(current, good.features, what)
    model = replace(model, profile=widened(current.profile, profile_of(good.paths)))
    copies = _keep_copies(taught_dir(models_dir, product), good.paths, f"the taught good parts of '{product}'")
    try:
        saved = _save_version(model, models_dir)
    except BaseException:
        for copy in copies:
            copy.unlink(missing_ok=True)
        raise
    after = Inspector(saved, device, extractor)
    scores_after = [after.score_features(f.astype(np.float32))[0] for f in good.features]
    _record(store, product, "teach", describe_model(current), describe_model(saved), saved.change, user)
    return Taught(current, saved, good.paths, before, scores_after, good.skipped)


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


def _is_taught(models_dir: str | Path, product: str, path: Path) -> bool:
    return Path(path).resolve().parent == taught_dir(models_dir, product).resolve()


def _taught_detail(taught: list[Path]) -> str:
    return f" and {len(taught)} taught good image(s) kept in {taught[0].parent}" if taught else ""


def _keep_copies(folder: Path, paths: list[Path], what: str) -> list[Path]:
    """Copy the files into `folder` under new names (nothing is overwritten); all or none."""
    copies = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            copies.append(unique_path(folder, path.stem, path.suffix))
            shutil.copyfile(path, copies[-1])
    except OSError as exc:
        for copy in copies:
            copy.unlink(missing_ok=True)
        raise StoreError(f"Cannot copy into {what} ({folder}): {exc}") from exc
    return copies


def known_defects_dir(models_dir: str | Path, product: str) -> Path:
    """Where the product's confirmed defect images are kept (beside its model versions)."""
    return Path(models_dir) / check_product_name(product) / KNOWN_DEFECTS


def add_known_defects(models_dir: str | Path, store: ResultStore, product: str,
                      images: str | Path | Iterable[str | Path], user: str | None = None) -> list[Path]:
    """'This part is a defect': copy confirmed NG parts into the product's known defects,
    which calibration scores (escapes, the separating threshold). Files that are not readable
    images are refused with their reason; nothing is copied over another file. Returns the copies."""
    load_model(models_dir, product)  # a product with a model: known defects are scored against it
    paths, origin = _images(images)
    folder = known_defects_dir(models_dir, product)
    problems = []
    for path in paths:
        try:
            load_image(path)
        except InspectorError as exc:
            problems.append(f"{path.name}: {describe(exc)}")
    if problems or not paths:
        raise TrainingError(f"Nothing was added to the known defects of '{product}': "
                            + ("; ".join(problems) or f"no image in {origin}") + ".")
    copies = _keep_copies(folder, paths, f"the known defects of '{product}'")
    _record(store, product, "defect", None, ", ".join(c.name for c in copies),
            f"{len(copies)} confirmed defect image(s) from {origin}", user)
    return copies


# ---- versions ---------------------------------------------------------------------------------

def versions(models_dir: str | Path, product: str) -> list[dict]:
    """The kept versions of the product's model, newest first (see core.model.list_versions)."""
    return list_versions(models_dir, product)


def rollback(models_dir: str | Path, store: ResultStore, product: str, version: int,
             user: str | None = None) -> Model:
    """Make an earlier version the product's model again: saved as its next version (the
    versions between stay, and can be rolled back to in turn)."""
    current = load_model(models_dir, product)
    old = load_model(models_dir, product, version=version)
    saved = _save_version(old, models_dir, change=f"rollback to version {version} ({old.change or 'no description'})")
    _record(store, product, "rollback", describe_model(current), describe_model(saved), saved.change, user)
    return saved


def install_model(models_dir: str | Path, store: ResultStore, model: Model, change: str,
                  user: str | None = None) -> Model:
    """A model version made elsewhere (published in the plant database, checked in full)
    becomes the product's new version here, like a local change; a running line follows it."""
    current = _current(Path(models_dir), model.product)
    saved = _save_version(model, models_dir, change=change)
    _record(store, model.product, "install", describe_model(current), describe_model(saved), change, user)
    return saved


def record_published(store: ResultStore, model: Model, where: str, user: str | None = None) -> None:
    """Record that a version of the product's model was published (`where`: e.g. 'plant version 3')."""
    _record(store, model.product, "publish", describe_model(model), where, f"version {model.version} published as "
            f"{where}", user)


def resign(models_dir: str | Path, store: ResultStore, product: str, version: int | None = None,
           user: str | None = None) -> tuple[Model, Model]:
    """Sign a version of the product's model that this station refuses as unsigned (written
    before models were signed, by another station, or edited), after an engineer has checked
    it: saved, in the current format and signed, as the product's next version. Everything
    else is checked as on loading. Returns the version as found and the signed one."""
    old = load_model(models_dir, product, version, signed=False)
    saved = _save_version(old, models_dir, change=f"version {old.version} (id {old.model_id}) signed by an engineer "
                                                  f"({old.change or 'no description'})")
    _record(store, product, "resign", describe_model(old), describe_model(saved), saved.change, user)
    return old, saved


# ---- the plant's signing key --------------------------------------------------------------------

def export_key(models_dir: str | Path, store: ResultStore, file: str | Path, user: str | None = None) -> str:
    """Write the station's signing key to a new file (0600), for the other stations of the
    plant to import; recorded as an event. Returns the key's fingerprint."""
    fingerprint = signing.export_key(models_dir, file)
    _record(store, STATION, "key", fingerprint, None, f"signing key {fingerprint} exported to {file}", user)
    return fingerprint


def import_key(models_dir: str | Path, store: ResultStore, file: str | Path, resign_models: bool = False,
               user: str | None = None) -> tuple[str, list[Model]]:
    """Make the key in `file` (another station's, exported) this station's signing key, so
    that the stations sharing models verify each other's signatures; recorded as an event.
    The products' current versions signed with the old key are no longer signed then: with
    `resign_models` each is signed with the new key as its next version (an event each);
    without, nothing changes and ModelError names them. Returns the key's fingerprint and the
    re-signed versions."""
    key = signing.read_key_file(file)
    old = signing.station_key(models_dir)
    if key == old:
        return signing.fingerprint(key), []
    signed = [m["product"] for m in list_models(models_dir) if "error" not in m]
    orphaned = [p for p in signed if not signed_with(models_dir, p, key)]
    if orphaned and not resign_models:
        raise ModelError(f"The current versions of {', '.join(repr(p) for p in orphaned)} are signed with this "
                         f"station's key, which the key of {file} replaces: they would be refused. Import it with "
                         f"--resign to sign them with the new key (each as its next version, recorded), once you "
                         f"have checked them; nothing was changed.")
    signing.import_key(models_dir, key)
    new, was = signing.fingerprint(key), signing.fingerprint(old)
    _record(store, STATION, "key", was, new, f"signing key imported from {file} (the old one kept as "
            f"{signing.key_path(models_dir).name}.{was}.old)", user)
    return new, [resign(models_dir, store, product, user=user)[1] for product in orphaned]


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
    sigma: float
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
        return (f"threshold {self.threshold:.4g} (sensitivity {self.sigma:.2f}), resting on {self.defects} known "
                f"defect(s) of {self.kinds} kind(s): expected false rejects {self.rates.false_rejects_text()}, "
                f"escapes {self.rates.escapes_text()}")


def propose_threshold(model: Model, defects: DefectScores) -> Proposal:
    """The threshold that best separates the good images (the calibration's and the folder's
    good parts) from the known defects, on the good side of the gap (core.model.separating_threshold)."""
    if not defects.scores:
        raise TrainingError("No known defect has been scored: a threshold cannot be proposed from them.")
    best = separating_threshold(list(model.calibration.image_scores) + defects.good_scores, defects.scores)
    return Proposal(best, model.calibration.sigma_for(best), rates(model, best, defects), len(defects.scores),
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
    text = (f"at sensitivity {model.settings.sigma:g} (threshold {model.threshold:.4g}) the predicted false rejects "
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

def select_product(models_dir: str | Path, store: ResultStore, station: Station, product: str,
                   user: str | None = None) -> Model:
    """Make the running line inspect `product` from its next part (a PLC's product select):
    its current model is loaded and checked first (ModelError: unknown, untrained or damaged,
    and nothing changes); recorded as an event (old product -> new). Returns the model."""
    old = station.product
    model = load_model(models_dir, product)
    station.select(model)
    _record(store, model.product, "product", old, model.product, f"model version {model.version}", user)
    return model


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
        _run_source(station, model, kind, target, stop, on_outcome, on_message, trigger, settle_s,
                    max_wait_s, interval_s, on_status)
    finally:
        if on_station is not None:
            on_station(None)


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


def _defect_mask(path: Path, kind: str, root: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """A known defect's mask at its image's size (bool), None without one; a mask of another size
    than its image is refused, named."""
    import cv2

    for candidate in (path.with_name(path.stem + MASK_SUFFIX + ".png"),
                      root.parent / "ground_truth" / kind / f"{path.stem}{MASK_SUFFIX}.png"):
        if candidate.is_file():
            mask = cv2.imread(str(candidate), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise TrainingError(f"The mask {candidate} cannot be read: give a PNG of 0 (good) and 255 (defect).")
            if mask.shape != shape:
                raise TrainingError(f"The mask {candidate} is {mask.shape[1]} x {mask.shape[0]}, its image {path.name} "
                                    f"{shape[1]} x {shape[0]}: give each defect the mask of its own image (same size).")
            return mask > 0
    return None


def learn_defects(models_dir: str | Path, store: ResultStore, product: str,
                  good_images: str | Path | Iterable[str | Path] | None, defects_folder: str | Path,
                  min_defect_area: float | None = None, mm_per_px: float | None = None,
                  progress: Progress = no_progress, cancel: threading.Event | None = None,
                  device: str = "cpu", user: str | None = None) -> Model:
    """Train the defect classifier and segmentation head (core.supervised) of the product's model
    from its good images (those it was trained on: their calibration distances are the model's;
    None: the folder the model records, rebuild_folder) and a folder of known defects (one subfolder a kind; masks as `_defect_mask` finds them), and
    save the model with them as its new version (an event). `min_defect_area` (camera pixels, or
    mm2 with `mm_per_px`) accepts smaller regions."""
    import cv2

    from .core import supervised
    from .core.calibration import robust_centre_spread
    from .core.scoring import patch_scores, score_patches

    current = load_model(models_dir, product)
    paths, origin = _images(rebuild_folder(current) if good_images is None else good_images)
    paths += taught_images(models_dir, product, paths)
    inspector = Inspector(current, device)
    good = training.extract_features(paths, inspector.extractor, current.settings, progress, cancel)
    grids = current.calibration_patch_scores
    if grids is None or [f.shape[:2] for f in good.features] != [g.shape for g in grids]:
        raise TrainingError(f"The good images in {origin} are not the ones the model of '{product}' was trained on "
                            f"(its calibration does not match them): give the same folder, or train again first.")
    root = Path(defects_folder)
    files = [p for p in list_images(root, recursive=True) if not p.stem.endswith(MASK_SUFFIX)
             and p.relative_to(root).parts[0].lower() != GOOD_SUBFOLDER]
    defects = []
    for i, path in enumerate(files, 1):
        parts = path.relative_to(root).parts
        kind = parts[0] if len(parts) > 1 else root.name
        image = load_image(path)
        features = inspector.features(image)
        distances = patch_scores(features, current.memory_bank, inspector._bank_sq)
        mask = _defect_mask(path, kind, root, image.shape[:2])
        if mask is not None:
            h, w = features.shape[0] * 8, features.shape[1] * 8
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        defects.append(supervised.Example(features.astype(np.float16), distances, kind, mask, path.name,
                                          score_patches(distances, current.roi)[0]))
        progress("scoring known defects", i, len(files))
    examples = [supervised.Example(f, g, "good", score=s)
                for f, g, s in zip(good.features, grids, current.calibration.image_scores)]
    centre = robust_centre_spread(current.calibration.image_scores)[0]
    heads = supervised.train_heads(examples, defects, centre, current.threshold, current.settings.seed, cancel)
    c = heads.counts
    detail = (f"learnt from {c['known_defects']} known defect(s) of {c['kinds']} kind(s) ({c['masks']} with masks) "
              f"in {root} and {c['good_images']} good image(s) from {origin}")
    model = replace(current, heads=heads,
                     min_defect_area=current.min_defect_area if min_defect_area is None else float(min_defect_area),
                     mm_per_px=current.mm_per_px if mm_per_px is None else float(mm_per_px))
    saved = _save_version(model, models_dir, change=detail)
    _record(store, product, "learn", describe_model(current), describe_model(saved), detail, user)
    return saved


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
