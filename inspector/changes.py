"""The one owner of every change of a model or a product, for every shell (the command line,
the window, a PLC, the plant database): `Changes` checks who may make it, makes the new model,
saves it as a version and records the event, in one call, so that a change exists in every
shell or in none. No Qt here.

Each kind of change is named once, in `KINDS`: what only an engineer may do (the words of a
refusal; None: anyone at the station), the event that records it, the command that makes it
and the window's control for it (None: the command line only).

An event records who (`Changes.user`: the station user, else the OS login name), when,
old -> new. A running line switches to a new version between items. When saving a change
fails, nothing is recorded and the model on disk stays as it was."""
from __future__ import annotations

import logging
import math
import os
import shutil
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from . import signing
from .core import training
from .core.features import FeatureExtractor
from .core.memory_bank import Progress, no_progress
from .core.model import Model, Settings, check_product_name, describe_scale, with_tolerance
from .core.model_store import delete_model, list_models, load_model, rename_model, save_model, signed_with
from .core.product_numbers import product_numbers, rename_number
from .core.profile import profile_of, widened
from .core.roi import describe_roi
from .core.scoring import Inspector
from .core.training import GoodFeatures
from .data.images import list_images, load_image
from .errors import InspectorError, ModelError, StoreError, TrainingError, describe
from .files import is_in_use
from .services import (GOOD_SUBFOLDER, MASK_SUFFIX, known_defects_dir, line_mark, shift_start, taught_dir,
                       taught_images)
from .station import Station, inspector_for, unique_path
from .common import utc_time
from .store.results import STATION, ResultStore
from .users import Accounts, AccessDenied, User, accounts_path, require_engineer

log = logging.getLogger(__name__)


class LineRunning(InspectorError):
    """A change that makes a model to check before a line uses it, asked for while a line runs."""


@dataclass(frozen=True)
class Kind:
    permission: str | None  # "Only an engineer may <permission>"; None: anyone at the station
    event: str  # the event kind in the result log
    command: str  # the command line that makes it: inspector <command>
    label: str | None  # the window's control that makes it; None: the command line only
    idle: bool = False  # refused while a line runs at the station: it makes a model to check before use


KINDS = {
    "create": Kind("create a product", "create", "products create", "New…"),
    "rename": Kind("rename a product", "rename", "products rename", "Rename…"),
    "delete": Kind("delete a product", "delete", "products delete", "Delete"),
    "train": Kind("train a product", "train", "train", "Start training", idle=True),
    "tolerance": Kind("change the tolerance", "tolerance", "calibrate --tolerance", "Apply tolerance"),
    "bank": Kind("rebuild the memory bank", "bank", "rebuild", "Rebuild memory bank", idle=True),
    "region": Kind("change the inspection region", "region", "region", "Save region"),
    "teach": Kind("teach the model a good part", "teach", "teach", "This part is good"),
    "defect": Kind(None, "defect", "defect", "This part is a defect"),
    "learn": Kind("train the defect heads of a product", "learn", "train-defects", "Train on known defects", idle=True),
    "rollback": Kind("roll back the model", "rollback", "rollback", "Roll back to this version"),
    "resign": Kind("sign a model", "resign", "models --resign", "Sign this version"),
    "install": Kind("install a model", "install", "plant install", None),
    "publish": Kind("publish a model", "publish", "plant publish", None),
    "export key": Kind("export the signing key", "key", "key export", None),
    "import key": Kind("import a signing key", "key", "key import", None),
    "engineer": Kind(None, "engineer", "engineer", "Engineer…"),  # the current PIN decides (Accounts)
    "shift": Kind(None, "shift", "shift --new", "New shift…"),
    "product": Kind(None, "product", "watch --plc-product-select", None),  # a PLC's product select
}


def describe_model(model: Model | None) -> str | None:
    """A model version as an event's old or new value."""
    if model is None:
        return None
    s = model.settings
    return (f"version {model.version} (id {model.model_id}): threshold {model.threshold:.6g} at tolerance "
            f"{s.tolerance:g}; memory bank {len(model.memory_bank)} patches ({s.sampler}, ratio {s.sampling_ratio:g}); "
            f"{s.backbone}, {describe_scale(s.defect_size, s.image_size)}; inspecting {describe_roi(model.roi)}")


def _now(model: Model) -> Model:
    """The model as a version made now (a tolerance, a region, a taught part or a roll-back is
    a version of its own time, not of the training it comes from)."""
    return replace(model, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


# ---- checking what is asked, and the files a change keeps ------------------------------------

def check_tolerance(tolerance) -> float:
    """The tolerance k (threshold = median + k robust spreads of the good scores): 0 or more."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance):
        raise TrainingError(f"The tolerance must be a number of 0 or more (3 is usual), not {tolerance!r}.")
    if tolerance < 0:
        raise TrainingError(f"The tolerance must be 0 or more (3 is usual), not {tolerance:g}: below 0 the threshold "
                            f"falls under the typical good part's score and most good parts are rejected.")
    return float(tolerance)


def check_sampling_ratio(ratio) -> float:
    """The share of patch features kept in the memory bank: more than 0, at most 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise TrainingError(f"The sampling ratio is a share of the patch features: more than 0 and at most 1 "
                            f"(0.01 is usual), not {ratio!r}.")
    return float(ratio)


def check_settings(settings: Settings) -> Settings:
    """The training settings an operator chooses, checked before any image is read."""
    check_tolerance(settings.tolerance)
    check_sampling_ratio(settings.sampling_ratio)
    return settings


def _with_skipped(exc: TrainingError, skipped: list[tuple[Path, str]]) -> TrainingError:
    """The error of a failed training, with the files it skipped and why."""
    return TrainingError(f"{exc}{training.skipped_note(skipped)}") if skipped else exc


def _images(images: str | Path | Iterable[str | Path]) -> tuple[list[Path], str]:
    """Image files from a folder (not its subfolders) or a list, and where they came from."""
    if isinstance(images, (str, Path)):
        return list_images(images), str(images)
    paths = [Path(p) for p in images]
    return paths, f"{len(paths)} file(s)"


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


class Changes:
    """Every change of the products in `models_dir`, made by `user` and recorded in `store`.
    `user` is the station user (an engineer after the PIN, or the operator), or None where no
    one has signed in (the command line), which is allowed only while the station has no
    engineer PIN. The engineer account is the one beside the result log unless `accounts`."""

    def __init__(self, models_dir: str | Path, store: ResultStore, user: User | None = None,
                 accounts: Accounts | None = None):
        self.models_dir, self.store, self.user = Path(models_dir), store, user
        self.accounts = accounts or Accounts(accounts_path(store.path.resolve().parent))

    # ---- who may, and what is recorded ----------------------------------------------------
    def check(self, kind: str) -> None:
        """Refuse the change `kind`, saying why: to a user who may not make it (AccessDenied), and while a
        line runs at the station when it makes a model to check first (LineRunning)."""
        permission = KINDS[kind].permission
        if permission is not None and self.user is None and self.accounts.is_set_up():
            raise AccessDenied(f"Only an engineer may {permission} on this station: unlock with the engineer "
                               f"PIN first.")
        if permission is not None and self.user is not None:
            require_engineer(self.user, permission)
        if KINDS[kind].idle and is_in_use(line_mark(self.models_dir)):
            raise LineRunning(f"A line is running at this station: stop it before you {permission}. The line "
                              f"follows new models, and a new model is checked before a line uses it.")

    def _record(self, product: str, kind: str, old: str | None, new: str | None, detail: str | None) -> None:
        """Record the event of a change; a log that cannot be written now keeps it for later."""
        try:
            self.store.record_event(product, KINDS[kind].event, old, new, detail,
                                    None if self.user is None else str(self.user))
        except StoreError as exc:
            log.warning("the %s event of '%s' is not in the log yet: %s", kind, product, exc)

    def _save(self, kind: str, current: Model | None, model: Model, change: str | None = None,
              detail: str | None = None) -> Model:
        """Save `model` as its product's new version and record it (detail: its change, unless given)."""
        saved = save_model(_now(model), self.models_dir, change)
        self._record(saved.product, kind, describe_model(current), describe_model(saved), detail or saved.change)
        return saved

    def _current(self, product: str) -> Model | None:
        """The product's model, None when it has none or it cannot be loaded."""
        try:
            return load_model(self.models_dir, product)
        except InspectorError:
            return None

    # ---- the station: shifts, the engineer, the line's product ------------------------------
    def new_shift(self) -> str:
        """Start a new shift now: its counters start from zero (the log keeps everything). Returns
        its start time. Recorded as an event (old start -> new start)."""
        start = utc_time(datetime.now(timezone.utc))
        self._record(STATION, "shift", shift_start(self.store), start, None)
        return start

    def set_engineer(self, name: str, pin: str, old_pin: str | None = None) -> User:
        """Set the engineer's name and PIN (the first time freely, later with the current PIN);
        recorded as an event, the PIN itself never. The engineer is this object's user then."""
        had = self.accounts.engineer_name()
        self.user = self.accounts.set_engineer(name, pin, old_pin)
        self._record(STATION, "engineer", had, self.user.name,
                     "engineer PIN set" if had is None else "engineer PIN changed")
        return self.user

    def select_product(self, station: Station, product: str) -> Model:
        """Make the running line inspect `product` from its next part (a PLC's product select):
        its current model is loaded and checked first (ModelError: unknown, untrained or damaged,
        and nothing changes); recorded as an event (old product -> new). Returns the model."""
        old = station.product
        model = load_model(self.models_dir, product)
        station.select(model)
        self._record(model.product, "product", old, model.product, f"model version {model.version}")
        return model

    # ---- products -----------------------------------------------------------------------------
    def create_product(self, name: str) -> str:
        """A new, untrained product (an empty folder). Returns its name as stored."""
        self.check("create")
        name = check_product_name(name)
        folder = self.models_dir / name
        if folder.exists():
            raise ModelError(f"A product named '{name}' already exists.")
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise ModelError(f"Cannot create the product '{name}' in {self.models_dir}: {exc}") from exc
        product_numbers(self.models_dir)  # its number, given now
        self._record(name, "create", None, name, None)
        return name

    def rename_product(self, product: str, new_name: str) -> str:
        """Rename a product: its model versions, and its history in the log, which keeps every
        verdict and event under the new name, and its product number. Returns the new name."""
        self.check("rename")
        new_name = check_product_name(new_name)
        rename_number(self.models_dir, product, new_name)
        try:
            rename_model(self.models_dir, product, new_name)
            try:
                self.store.rename_product(product, new_name, None if self.user is None else str(self.user))
            except StoreError:
                rename_model(self.models_dir, new_name, product)  # the history could not follow: undo
                raise
        except InspectorError:
            rename_number(self.models_dir, new_name, product)
            raise
        return new_name

    def delete_product(self, product: str) -> None:
        """Delete a product and every version of its model; its history stays in the log."""
        self.check("delete")
        old = self._current(product)
        delete_model(self.models_dir, product)
        self._record(product, "delete", describe_model(old) or "untrained", None, None)

    # ---- training and its settings --------------------------------------------------------------
    def train(self, product: str, images: str | Path | Iterable[str | Path], settings: Settings,
              progress: Progress = no_progress, cancel: threading.Event | None = None, device: str = "cpu",
              roi: np.ndarray | None = None) -> tuple[Model, GoodFeatures]:
        """Train the product from good images (a folder or files), inspecting the region `roi`
        (core.roi; None: the whole image), and save the model as its new version. Returns it and
        the patch features (kept to rebuild the bank without reading the images again)."""
        self.check("train")
        product = check_product_name(product)
        check_settings(settings)
        paths, origin = _images(images)
        taught = taught_images(self.models_dir, product, paths)
        old = self._current(product)
        if not paths + taught:
            raise TrainingError(f"No good images in {origin}: choose a folder that contains good part images.")
        settings = training.with_defect_size(settings, paths + taught)
        extractor = FeatureExtractor(settings.backbone, device, settings.weights)
        good = training.extract_features(paths + taught, extractor, settings, progress, cancel)
        try:
            model = training.fit(product, good, settings, progress, cancel, roi)
        except TrainingError as exc:
            raise _with_skipped(exc, good.skipped) from exc
        model = replace(model, profile=profile_of(good.paths),
                        good_folder=_folder_of(self.models_dir, product, images, paths))
        detail = (f"{len(good.paths)} good image(s): from {origin}" + _taught_detail(taught)
                  + (f", {len(good.skipped)} unreadable skipped" if good.skipped else ""))
        return self._save("train", old, model, f"trained on {detail}", detail), good

    def set_tolerance(self, product: str, tolerance: float, expected_version: int | None = None) -> Model:
        """Save the product's model at another tolerance as its new version. With
        `expected_version`, refused when the model changed since the caller looked at it."""
        self.check("tolerance")
        tolerance = check_tolerance(tolerance)
        current = load_model(self.models_dir, product)
        if expected_version is not None and current.version != expected_version:
            raise ModelError(f"The model of '{product}' changed meanwhile (now version {current.version}, "
                             f"not {expected_version}): look at it again before changing its tolerance.")
        return self._save("tolerance", current, with_tolerance(current, tolerance))

    def rebuild_bank(self, product: str, sampling_ratio: float, good: GoodFeatures | None = None,
                     images: str | Path | Iterable[str | Path] | None = None, progress: Progress = no_progress,
                     cancel: threading.Event | None = None, device: str = "cpu") -> tuple[Model, GoodFeatures]:
        """Rebuild the product's memory bank at another sampling ratio, with its other settings
        as they are, from the patch features of a training (`good`) or, without them, from the
        good images (`images`, read again; None: the folder the model records, rebuild_folder);
        saves the new version and returns it with the features."""
        self.check("bank")
        check_sampling_ratio(sampling_ratio)
        current = load_model(self.models_dir, product)
        settings = replace(current.settings, sampling_ratio=float(sampling_ratio))
        origin = "the patch features kept from the training"
        paths, folder = [], current.good_folder
        if good is None:
            images = rebuild_folder(current) if images is None else images
            paths, origin = _images(images)
            if not paths:
                raise TrainingError("No good images given: choose the folder the product was trained from.")
            folder = _folder_of(self.models_dir, product, images, paths)
        else:  # a taught image deleted since the features were kept is left out, as it is from a training
            kept = [i for i, p in enumerate(good.paths)
                    if not (_is_taught(self.models_dir, product, p) and not p.is_file())]
            if len(kept) < len(good.paths):
                good = GoodFeatures([good.features[i] for i in kept], [good.paths[i] for i in kept], good.skipped)
        taught = taught_images(self.models_dir, product, paths if good is None else good.paths)
        if paths or taught:
            extractor = FeatureExtractor(settings.backbone, device, settings.weights)
            read = training.extract_features(paths + taught, extractor, settings, progress, cancel)
            good = read if good is None else GoodFeatures(good.features + read.features,
                                                          good.paths + read.paths, good.skipped + read.skipped)
        model = training.fit(current.product, good, settings, progress, cancel, current.roi)
        model = replace(model, profile=profile_of(good.paths) or current.profile, good_folder=folder)
        used = [p for p in good.paths if _is_taught(self.models_dir, product, p)]  # read now or among the kept
        change = (f"memory bank rebuilt at sampling ratio {current.settings.sampling_ratio:g} -> "
                  f"{settings.sampling_ratio:g} from {origin}{_taught_detail(used)}")
        return self._save("bank", current, model, change), good

    def set_region(self, product: str, roi: np.ndarray | None) -> Model:
        """Inspect the product in another region (a mask stretched over each image, core.roi;
        None: the whole image) and save it as its new version. The calibration follows from the
        model's own calibration patch scores: no good image is read."""
        self.check("region")
        current = load_model(self.models_dir, product)
        return self._save("region", current, training.with_roi(current, roi))

    # ---- teaching ---------------------------------------------------------------------------------
    def teach(self, product: str, images: str | Path | Iterable[str | Path], device: str = "cpu",
              extractors: dict | None = None):
        """'This part is good': good parts the line rejected (a folder or files) join the product's
        memory bank and calibration (training.teach), without reading its good images again;
        saved as its new version. Unreadable files are skipped and listed. The taught images are
        kept (taught_dir), and every later training and memory-bank rebuild of the product uses
        them with its good images, so that a taught part never comes back as a false reject.
        """
        self.check("teach")
        current = load_model(self.models_dir, product)
        paths, origin = _images(images)
        extractor = inspector_for(current, device, extractors).extractor
        good = training.extract_features(paths, extractor, current.settings)
        if not good.paths:
            raise TrainingError(f"No good image to teach from {origin}"
                                + "".join(f"; {p.name}: {why}" for p, why in good.skipped))
        what = ", ".join(p.name for p in good.paths) if len(good.paths) <= 3 else f"{len(good.paths)} good images"
        model, before = training.teach(current, good.features, what)
        model = replace(model, profile=widened(current.profile, profile_of(good.paths)))
        copies = _keep_copies(taught_dir(self.models_dir, product), good.paths,
                              f"the taught good parts of '{product}'")
        try:
            saved = self._save("teach", current, model)
        except BaseException:
            for copy in copies:
                copy.unlink(missing_ok=True)
            raise
        after = Inspector(saved, device, extractor)
        scores_after = [after.score_features(f.astype(np.float32))[0] for f in good.features]
        return Taught(current, saved, good.paths, before, scores_after, good.skipped)

    def add_known_defects(self, product: str, images: str | Path | Iterable[str | Path]) -> list[Path]:
        """'This part is a defect': copy confirmed NG parts into the product's known defects,
        which calibration scores (escapes, the separating threshold). Files that are not readable
        images are refused with their reason; nothing is copied over another file. Returns the copies."""
        self.check("defect")
        load_model(self.models_dir, product)  # a product with a model: known defects are scored against it
        paths, origin = _images(images)
        problems = []
        for path in paths:
            try:
                load_image(path)
            except InspectorError as exc:
                problems.append(f"{path.name}: {describe(exc)}")
        if problems or not paths:
            raise TrainingError(f"Nothing was added to the known defects of '{product}': "
                                + ("; ".join(problems) or f"no image in {origin}") + ".")
        copies = _keep_copies(known_defects_dir(self.models_dir, product), paths,
                              f"the known defects of '{product}'")
        self._record(product, "defect", None, ", ".join(c.name for c in copies),
                     f"{len(copies)} confirmed defect image(s) from {origin}")
        return copies

    def learn_defects(self, product: str, good_images: str | Path | Iterable[str | Path] | None,
                      defects_folder: str | Path, min_defect_area: float | None = None,
                      mm_per_px: float | None = None, progress: Progress = no_progress,
                      cancel: threading.Event | None = None, device: str = "cpu") -> Model:
        """Train the defect classifier and segmentation head (core.supervised) of the product's model
        from its good images (those it was trained on: their calibration distances are the model's;
        None: the folder the model records, rebuild_folder) and a folder of known defects (one
        subfolder a kind; masks as _defect_mask finds them), and save the model with them
        as its new version. `min_defect_area` (camera pixels, or mm2 with `mm_per_px`) accepts
        smaller regions; None keeps the model's, a `mm_per_px` of 0 removes its scale."""
        import cv2

        from .core import supervised
        from .core.calibration import robust_centre_spread
        from .core.scoring import patch_scores, score_patches

        self.check("learn")
        current = load_model(self.models_dir, product)
        paths, origin = _images(rebuild_folder(current) if good_images is None else good_images)
        paths += taught_images(self.models_dir, product, paths)
        inspector = Inspector(current, device)
        good = training.extract_features(paths, inspector.extractor, current.settings, progress, cancel)
        grids = current.calibration_patch_scores
        if grids is None or [f.shape[:2] for f in good.features] != [g.shape for g in grids]:
            raise TrainingError(f"The good images in {origin} are not the ones the model of '{product}' was trained "
                                f"on (its calibration does not match them): give the same folder, or train again "
                                f"first.")
        root = Path(defects_folder)
        files = [p for p in list_images(root, recursive=True) if not p.stem.endswith(MASK_SUFFIX)
                 and p.relative_to(root).parts[0].lower() != GOOD_SUBFOLDER]
        defects = []
        for i, path in enumerate(files, 1):
            parts = path.relative_to(root).parts
            kind = parts[0] if len(parts) > 1 else root.name
            image = load_image(path)
            features = inspector.features(image)
            distances = patch_scores(features, inspector.bank_index)
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
        detail = (f"learnt from {c['known_defects']} known defect(s) of {c['kinds']} kind(s) ({c['masks']} with "
                  f"masks) in {root} and {c['good_images']} good image(s) from {origin}")
        model = replace(current, heads=heads,
                        min_defect_area=current.min_defect_area if min_defect_area is None else float(min_defect_area),
                        mm_per_px=current.mm_per_px if mm_per_px is None else float(mm_per_px) or None)
        return self._save("learn", current, model, detail)

    # ---- versions, signatures, the plant ------------------------------------------------------------
    def rollback(self, product: str, version: int) -> Model:
        """Make an earlier version the product's model again: saved as its next version (the
        versions between stay, and can be rolled back to in turn)."""
        self.check("rollback")
        current = load_model(self.models_dir, product)
        old = load_model(self.models_dir, product, version=version)
        return self._save("rollback", current, old,
                          f"rollback to version {version} ({old.change or 'no description'})")

    def resign(self, product: str, version: int | None = None) -> tuple[Model, Model]:
        """Sign a version of the product's model that this station refuses as unsigned (written
        before models were signed, by another station, or edited), after an engineer has checked
        it: saved, in the current format and signed, as the product's next version. Everything
        else is checked as on loading. Returns the version as found and the signed one."""
        self.check("resign")
        old = load_model(self.models_dir, product, version, signed=False)
        change = f"version {old.version} (id {old.model_id}) signed by an engineer ({old.change or 'no description'})"
        return old, self._save("resign", old, old, change)

    def install(self, model: Model, change: str) -> Model:
        """A model version made elsewhere (published in the plant database, checked in full)
        becomes the product's new version here, like a local change; a running line follows it."""
        self.check("install")
        return self._save("install", self._current(model.product), model, change)

    def published(self, model: Model, where: str) -> None:
        """Record that a version of the product's model was published (`where`: e.g. 'plant version 3')."""
        self.check("publish")
        self._record(model.product, "publish", describe_model(model), where,
                     f"version {model.version} published as {where}")

    def export_key(self, file: str | Path) -> str:
        """Write the station's signing key to a new file (0600), for the other stations of the
        plant to import; recorded as an event. Returns the key's fingerprint."""
        self.check("export key")
        fingerprint = signing.export_key(self.models_dir, file)
        self._record(STATION, "export key", fingerprint, None, f"signing key {fingerprint} exported to {file}")
        return fingerprint

    def import_key(self, file: str | Path, resign_models: bool = False) -> tuple[str, list[Model]]:
        """Make the key in `file` (another station's, exported) this station's signing key, so
        that the stations sharing models verify each other's signatures; recorded as an event.
        The products' current versions signed with the old key are no longer signed then: with
        `resign_models` each is signed with the new key as its next version (an event each);
        without, nothing changes and ModelError names them. Returns the key's fingerprint and the
        re-signed versions."""
        self.check("import key")
        key = signing.read_key_file(file)
        old = signing.station_key(self.models_dir)
        if key == old:
            return signing.fingerprint(key), []
        signed = [m["product"] for m in list_models(self.models_dir) if "error" not in m]
        orphaned = [p for p in signed if not signed_with(self.models_dir, p, key)]
        if orphaned and not resign_models:
            raise ModelError(f"The current versions of {', '.join(repr(p) for p in orphaned)} are signed with this "
                             f"station's key, which the key of {file} replaces: they would be refused. Import it "
                             f"with --resign to sign them with the new key (each as its next version, recorded), "
                             f"once you have checked them; nothing was changed.")
        signing.import_key(self.models_dir, key)
        new, was = signing.fingerprint(key), signing.fingerprint(old)
        self._record(STATION, "import key", was, new, f"signing key imported from {file} (the old one kept as "
                     f"{signing.key_path(self.models_dir).name}.{was}.old)")
        return new, [self.resign(product)[1] for product in orphaned]
