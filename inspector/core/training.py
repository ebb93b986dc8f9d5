"""Teaching a product: good images -> patch features -> memory bank -> calibration -> Model.

`extract_features` is the slow part; `fit` works from its output, so a new sampling ratio
rebuilds the bank from cached features without reading the images again. The model keeps the
calibration images' patch scores, so a new inspection region (`with_roi`) and a good image the
line rejected (`teach`) recalibrate without any good image or its features."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..data.images import read_ahead
from ..errors import Cancelled, TrainingError, describe
from .features import FeatureExtractor
from .memory_bank import Progress, bank_size, no_progress, sample_indices, squared_norms
from .model import Calibration, Model, Settings, check_product_name, runtime_versions
from .roi import check_roi, describe_roi, patch_mask
from .scoring import patch_scores, score_patches

MIN_GOOD_IMAGES = 5  # fewer cannot give a meaningful threshold
HOLDOUT_FROM = 50  # from this many good images on, hold out a fraction; below, cross-validate
FOLDS = 5
BATCH = 8


@dataclass
class GoodFeatures:
    """Patch features of the readable good images, and the files that could not be used."""
    features: np.ndarray  # (n, h, w, C) float32
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Training cancelled; the previous model is unchanged.")


def extract_features(paths: list[Path], extractor: FeatureExtractor, progress: Progress = no_progress,
                     cancel: threading.Event | None = None) -> GoodFeatures:
    """Load (in a background thread, ahead of the backbone) and extract every image.
    Unreadable files are skipped and listed, never fatal on their own."""
    paths = [Path(p) for p in paths]
    feats = np.empty((len(paths), extractor.grid, extractor.grid, extractor.feature_dim), np.float32)
    used, skipped = [], []
    batch: list = []
    for i, (path, image) in enumerate(read_ahead(paths, depth=BATCH)):
        _check_cancel(cancel)
        if isinstance(image, Exception):
            skipped.append((path, describe(image)))
        else:
            batch.append((path, image))
        if len(batch) == BATCH or (i == len(paths) - 1 and batch):
            feats[len(used):len(used) + len(batch)] = extractor([im for _, im in batch])
            used += [p for p, _ in batch]
            batch = []
        progress("extracting features", i + 1, len(paths))
    return GoodFeatures(feats[:len(used)], used, skipped)


def _held_out_patch_scores(held_out: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(n, h, w) patch distances of good images to a bank built without them."""
    bank_sq = squared_norms(bank)
    return np.stack([patch_scores(feats, bank, bank_sq) for feats in held_out])


def calibrate(grids: np.ndarray, image_size: int, roi: np.ndarray | None, method: str) -> Calibration:
    """The calibration from good images' patch distances to banks without them, scored through
    the inspection path (scoring.score_patches) in the inspection region; the pixel statistics
    are those of the anomaly maps inside the region."""
    scores, total, total_sq, count = [], 0.0, 0.0, 0
    inside = None if roi is None else roi.ravel()
    for grid in grids:
        image_score, amap = score_patches(grid, image_size, roi)
        pixels = amap.ravel().astype(np.float64) if inside is None else amap.ravel()[inside].astype(np.float64)
        scores.append(image_score)
        total, total_sq, count = total + pixels.sum(), total_sq + (pixels * pixels).sum(), count + len(pixels)
    mean = total / count
    return Calibration(scores, float(mean), float(np.sqrt(max(total_sq / count - mean * mean, 0.0))), method)


def fit(product: str, good: GoodFeatures, settings: Settings, progress: Progress = no_progress,
        cancel: threading.Event | None = None, roi: np.ndarray | None = None) -> Model:
    """Build the memory bank from every good image (the whole image: the region decides what
    is scored, not what is known) and calibrate the thresholds from good images scored, in
    the inspection region `roi` (core.roi), against banks built without them."""
    product = check_product_name(product)
    feats = good.features
    n = len(feats)
    if roi is not None:
        roi = check_roi(roi, settings.image_size, feats.shape[1])
    if n < MIN_GOOD_IMAGES:
        raise TrainingError(f"Only {n} usable good image(s); at least {MIN_GOOD_IMAGES} are needed "
                            f"to train and calibrate a threshold.")
    if not 0.0 < settings.holdout < 1.0:
        raise TrainingError(f"The held-out fraction must be in (0, 1), got {settings.holdout}.")
    patches = feats.reshape(-1, feats.shape[-1])
    per_image = feats.shape[1] * feats.shape[2]
    rng = np.random.default_rng(settings.seed)

    def rows(images: np.ndarray) -> np.ndarray:
        return (images[:, None] * per_image + np.arange(per_image)).ravel()

    def choose(subset: np.ndarray, first: np.ndarray | None = None, report: Progress = no_progress) -> np.ndarray:
        return sample_indices(subset, settings.sampler, settings.sampling_ratio, settings.seed, report, cancel, first)

    if n >= HOLDOUT_FROM:
        # A held-out fraction is scored against a bank of the others; that bank is then
        # extended by the held-out images' patches, so every good image ends in the final bank.
        method = "holdout"
        order = rng.permutation(n)
        n_out = int(round(n * settings.holdout))
        held, kept = np.sort(order[:n_out]), np.sort(order[n_out:])
        bank_rows = choose(patches, rows(kept), progress)
        _check_cancel(cancel)
        progress("calibrating", 0, 1)
        calibration_bank = patches[bank_rows[:bank_size(len(kept) * per_image, settings.sampling_ratio)]]
        grids = _held_out_patch_scores(feats[held], calibration_bank)
    else:
        # Too few images to spare a held-out set: every image is scored against a bank built
        # from the other folds, and the final bank uses all of them.
        folds = np.array_split(rng.permutation(n), min(n, FOLDS))
        method = "leave-one-out" if len(folds) == n else f"{len(folds)}-fold"
        grids = []
        for i, fold in enumerate(folds):
            _check_cancel(cancel)
            progress("calibrating", i, len(folds))
            others = np.setdiff1d(np.arange(n), fold)
            subset = patches[rows(others)]
            grids.append(_held_out_patch_scores(feats[fold], subset[choose(subset)]))
        grids = np.concatenate(grids)
        bank_rows = choose(patches, report=progress)
    progress("calibrating", 1, 1)
    bank = np.ascontiguousarray(patches[bank_rows])
    calibration = calibrate(grids, settings.image_size, roi, method)
    counts = {"good_images": n, "bank_images": n, "calibration_images": len(grids),
              "skipped_images": len(good.skipped), "patches": int(n * per_image),
              "memory_bank": int(len(bank))}
    return Model(product, settings, bank, calibration, counts,
                 created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 versions=runtime_versions(), roi=roi, calibration_patch_scores=grids)


def _needs_patch_scores(model: Model, what: str) -> np.ndarray:
    if model.calibration_patch_scores is None:
        raise TrainingError(f"The model of '{model.product}' (version {model.version}) was made by an older "
                            f"Inspector and lacks what {what} needs: train the product again once.")
    return model.calibration_patch_scores


def with_roi(model: Model, roi: np.ndarray | None) -> Model:
    """The model with another inspection region (None: the whole image), recalibrated from its
    calibration images' patch scores: no good image is read. Unsaved: save_model makes it a version."""
    grids = _needs_patch_scores(model, "a new inspection region")
    size = model.settings.image_size
    if roi is not None:
        roi = check_roi(roi, size, grids.shape[1])
    calibration = calibrate(grids, size, roi, model.calibration.method)
    return replace(model, roi=roi, calibration=calibration,
                   change=f"inspection region {describe_roi(model.roi)} -> {describe_roi(roi)}")


def teach(model: Model, features: np.ndarray, what: str = "") -> tuple[Model, list[float]]:
    """Good parts the line rejected, as patch features (n, h, w, C), join the model without
    reading any other image. Each is scored against the current bank (a bank without it, as
    a calibration image is) and joins the calibration with that score. Its patches in the
    region that lie farther from the bank than the typical good image's score (the median of
    the calibration) join the bank, farthest first, each one covering the ones near it (a
    greedy coreset extension), so that afterwards it scores at most that much. Returns the
    unsaved model and the images' scores before teaching."""
    grids = _needs_patch_scores(model, "teaching")
    s, bank = model.settings, model.memory_bank
    new_grids = np.stack([patch_scores(f, bank, squared_norms(bank)) for f in features])
    inside = patch_mask(model.roi, new_grids.shape[1])
    inside = np.ones(new_grids.shape[1:], bool) if inside is None else inside
    radius = float(np.median(model.calibration.image_scores))
    candidates = features[:, inside].reshape(-1, features.shape[-1])
    distance = new_grids[:, inside].ravel()
    far = distance > radius
    candidates, distance = np.ascontiguousarray(candidates[far]), distance[far]
    sq = squared_norms(candidates)
    added = []
    while len(distance) and distance.max() > radius:
        pick = int(np.argmax(distance))
        added.append(pick)
        d = sq - 2.0 * (candidates @ candidates[pick]) + sq[pick]
        np.minimum(distance, np.sqrt(np.maximum(d, 0.0)), out=distance)
    all_grids = np.concatenate([grids, new_grids])
    calibration = calibrate(all_grids, s.image_size, model.roi, model.calibration.method)
    n = len(features)
    counts = model.counts | {
        "bank_images": model.counts.get("bank_images", 0) + n, "taught_images": model.counts.get("taught_images", 0) + n,
        "calibration_images": len(all_grids), "memory_bank": len(bank) + len(added)}
    taught = replace(model, memory_bank=np.concatenate([bank, candidates[added]]), calibration=calibration,
                     counts=counts, calibration_patch_scores=all_grids,
                     change=f"taught {what or f'{n} good image(s)'}: {len(added)} patch(es) joined the memory bank")
    return taught, [score_patches(g, s.image_size, model.roi)[0] for g in new_grids]


def train(product: str, paths: list[Path], settings: Settings, progress: Progress = no_progress,
          cancel: threading.Event | None = None, device: str = "cpu",
          roi: np.ndarray | None = None) -> tuple[Model, GoodFeatures]:
    """Train from image files. Returns the model and the features (kept for re-fitting)."""
    check_product_name(product)
    if not paths:
        raise TrainingError("No good images given: choose a folder that contains good part images.")
    extractor = FeatureExtractor(settings.backbone, settings.image_size, device, settings.weights)
    good = extract_features(paths, extractor, progress, cancel)
    return fit(product, good, settings, progress, cancel, roi), good
