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
from .memory_bank import Progress, no_progress, sample
from .model import Calibration, Model, Settings, check_product_name, runtime_versions
from .scoring import anomaly_map, patch_scores

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
    bank_sq = np.einsum("ij,ij->i", bank, bank)
    scores, maps = [], []
    for feats in held_out:
        s = patch_scores(feats, bank, bank_sq)
        scores.append(float(s.max()))
        maps.append(anomaly_map(s, image_size))
    return scores, np.stack(maps)


def fit(product: str, good: GoodFeatures, settings: Settings, progress: Progress = no_progress,
        cancel: threading.Event | None = None) -> Model:
    """Build the memory bank and calibrate the thresholds from good images alone."""
    product = check_product_name(product)
    feats = good.features
    n = len(feats)
    if n < MIN_GOOD_IMAGES:
        raise TrainingError(f"Only {n} usable good image(s); at least {MIN_GOOD_IMAGES} are needed "
                            f"to train and calibrate a threshold.")
    if not 0.0 < settings.holdout < 1.0:
        raise TrainingError(f"The held-out fraction must be in (0, 1), got {settings.holdout}.")
    dim = feats.shape[-1]
    rng = np.random.default_rng(settings.seed)

    def flat(indices: np.ndarray) -> np.ndarray:
        return feats[indices].reshape(-1, dim)

    if n >= HOLDOUT_FROM:
        method = "holdout"
        order = rng.permutation(n)
        n_out = int(round(n * settings.holdout))
        held, kept = np.sort(order[:n_out]), np.sort(order[n_out:])
        bank = sample(flat(kept), settings.sampler, settings.sampling_ratio, settings.seed, progress, cancel)
        _check_cancel(cancel)
        progress("calibrating", 0, 1)
        scores, maps = _calibration_scores(feats[held], bank, settings.image_size)
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
            b = sample(flat(others), settings.sampler, settings.sampling_ratio, settings.seed)
            s, m = _calibration_scores(feats[fold], b, settings.image_size)
            scores += s
            maps.append(m)
        maps = np.concatenate(maps)
        kept = np.arange(n)
        bank = sample(flat(kept), settings.sampler, settings.sampling_ratio, settings.seed, progress, cancel)
    progress("calibrating", 1, 1)
    calibration = Calibration(scores, float(maps.mean()), float(maps.std()), method)
    counts = {"good_images": n, "bank_images": int(len(kept)), "calibration_images": len(scores),
              "skipped_images": len(good.skipped), "patches": int(len(kept) * feats.shape[1] * feats.shape[2]),
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
