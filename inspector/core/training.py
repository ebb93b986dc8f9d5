"""Teaching a product: good images -> patch features -> memory bank -> calibration -> Model.

`extract_features` is the slow part; `fit` works from its output, so a new sampling ratio
rebuilds the bank from cached features without reading the images again."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..data.images import read_ahead
from ..errors import Cancelled, TrainingError, describe
from .features import FeatureExtractor
from .memory_bank import Progress, bank_size, no_progress, sample_indices, squared_norms
from .model import Calibration, Model, Settings, check_product_name, runtime_versions
from .scoring import score

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


def _calibration_scores(held_out: np.ndarray, bank: np.ndarray, image_size: int) -> tuple[list[float], np.ndarray]:
    """Good images scored against a bank built without them, through the inspection path."""
    bank_sq = squared_norms(bank)
    results = [score(feats, bank, bank_sq, image_size) for feats in held_out]
    return [s for s, _ in results], np.stack([m for _, m in results])


def fit(product: str, good: GoodFeatures, settings: Settings, progress: Progress = no_progress,
        cancel: threading.Event | None = None) -> Model:
    """Build the memory bank from every good image and calibrate the thresholds from good
    images scored against banks built without them."""
    product = check_product_name(product)
    feats = good.features
    n = len(feats)
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
        scores, maps = _calibration_scores(feats[held], calibration_bank, settings.image_size)
    else:
        # Too few images to spare a held-out set: every image is scored against a bank built
        # from the other folds, and the final bank uses all of them.
        folds = np.array_split(rng.permutation(n), min(n, FOLDS))
        method = "leave-one-out" if len(folds) == n else f"{len(folds)}-fold"
        scores, maps = [], []
        for i, fold in enumerate(folds):
            _check_cancel(cancel)
            progress("calibrating", i, len(folds))
            others = np.setdiff1d(np.arange(n), fold)
            subset = patches[rows(others)]
            s, m = _calibration_scores(feats[fold], subset[choose(subset)], settings.image_size)
            scores += s
            maps.append(m)
        maps = np.concatenate(maps)
        bank_rows = choose(patches, report=progress)
    progress("calibrating", 1, 1)
    bank = np.ascontiguousarray(patches[bank_rows])
    calibration = Calibration(scores, float(maps.mean()), float(maps.std()), method)
    counts = {"good_images": n, "bank_images": n, "calibration_images": len(scores),
              "skipped_images": len(good.skipped), "patches": int(n * per_image),
              "memory_bank": int(len(bank))}
    return Model(product, settings, bank, calibration, counts,
                 created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 versions=runtime_versions())


def train(product: str, paths: list[Path], settings: Settings, progress: Progress = no_progress,
          cancel: threading.Event | None = None, device: str = "cpu") -> tuple[Model, GoodFeatures]:
    """Train from image files. Returns the model and the features (kept for re-fitting)."""
    check_product_name(product)
    if not paths:
        raise TrainingError("No good images given: choose a folder that contains good part images.")
    extractor = FeatureExtractor(settings.backbone, settings.image_size, device, settings.weights)
    good = extract_features(paths, extractor, progress, cancel)
    return fit(product, good, settings, progress, cancel), good
