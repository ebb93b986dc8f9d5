"""Teaching a product: good images -> patch features -> memory bank -> calibration -> Model.

Every image keeps its aspect ratio and is seen at the scale its smallest defect needs (`Settings.defect_size`).
`extract_features` is the slow part; `fit` works from its output, so a new sampling ratio rebuilds the bank from
cached features without reading the images again. The model keeps the calibration images' patch scores, so a new
inspection region (`with_roi`) and a good image the line rejected (`teach`) recalibrate without any good image."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..data.images import image_shape, load_image, read_ahead
from ..errors import Cancelled, ImageError, TrainingError, describe
from .features import REFERENCE_SIDE, STRIDE, FeatureExtractor, default_defect_size
from .memory_bank import Progress, bank_entries, candidates, no_progress, sample_indices, search_index, squared_norms
from .calibration import Calibration
from .model import Model, Settings, check_product_name, library_versions
from .roi import check_roi, describe_roi, patch_mask, region_on
from .scoring import patch_scores, score_patches

MIN_GOOD_IMAGES = 5  # fewer cannot give a meaningful threshold
FOLDS = 5
BATCH = 8  # images per backbone run while training...
BATCH_PIXELS = 8 * 512 * 512  # ...and at most this many working pixels: a large image goes alone


@dataclass
class GoodFeatures:
    """Patch features of the readable good images, one (h, w, C) float16 array each (images of a product may differ in
    size; half precision halves what training holds), and the files that could not be used."""
    features: list[np.ndarray]
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Training cancelled; the previous model is unchanged.")


def with_defect_size(settings: Settings, paths: list[Path], shorter_side: int = REFERENCE_SIDE) -> Settings:
    """The settings with the smallest defect to find: as given, or the one that puts the good images' median shorter
    side at `shorter_side` working pixels (sizes read from the files' headers; see features.default_defect_size)."""
    if settings.defect_size is not None or settings.image_size is not None:
        return settings
    shapes = [shape for shape in map(image_shape, paths) if shape is not None] or _decoded_shapes(paths)
    # None readable: no image will be used, and the training says which files it skipped and why.
    return replace(settings, defect_size=default_defect_size(shapes, shorter_side) if shapes else float(STRIDE))


def _decoded_shapes(paths: list[Path]) -> list[tuple[int, int]]:
    """The size of the first image that decodes, for files whose headers cannot be read alone."""
    for path in paths:
        try:
            return [load_image(path).shape[:2]]
        except Exception:  # noqa: BLE001 - an unreadable file: extracting the features reports it
            continue
    return []


def extract_features(paths: list[Path], extractor: FeatureExtractor, settings: Settings,
                     progress: Progress = no_progress, cancel: threading.Event | None = None) -> GoodFeatures:
    """Load (a thread reads ahead of the backbone) and extract every image at its working size (settings.working_shape);
    consecutive images of one working size go through the backbone together, at most BATCH of them and BATCH_PIXELS
    working pixels (memory). Unreadable files are skipped and listed, never fatal alone."""
    paths = [Path(p) for p in paths]
    feats, used, skipped = [], [], []
    batch: list = []

    def run() -> None:
        feats.extend(f.astype(np.float16) for f in extractor([im for _, im, _ in batch], batch[0][2]))
        used.extend(p for p, _, _ in batch)
        batch.clear()

    for i, (path, image) in enumerate(read_ahead(paths, depth=BATCH)):
        _check_cancel(cancel)
        shape = None
        if not isinstance(image, Exception):
            try:
                shape = settings.working_shape(*image.shape[:2])
            except ImageError as exc:  # too large for the product's scale: said, skipped
                image = exc
        if isinstance(image, Exception):
            skipped.append((path, describe(image)))
        else:
            if batch and (len(batch) == BATCH or shape != batch[0][2]
                          or (len(batch) + 1) * shape[0] * shape[1] > BATCH_PIXELS):
                run()
            batch.append((path, image, shape))
        progress("extracting features", i + 1, len(paths))
    if batch:
        run()
    return GoodFeatures(feats, used, skipped)


def calibrate(grids: list[np.ndarray], roi: np.ndarray | None, method: str) -> Calibration:
    """The calibration from good images' patch distances to banks without them, scored as the line scores
    (scoring.score_patches) in the inspection region, whose anomaly maps give the pixel statistics."""
    scores, total, total_sq, count = [], 0.0, 0.0, 0
    for grid in grids:
        image_score, amap = score_patches(grid, roi)
        pixels = amap.ravel() if roi is None else amap[region_on(roi, amap.shape)]
        pixels = pixels.astype(np.float64)
        scores.append(image_score)
        total, total_sq, count = total + pixels.sum(), total_sq + (pixels * pixels).sum(), count + len(pixels)
    mean = total / count
    return Calibration(scores, float(mean), float(np.sqrt(max(total_sq / count - mean * mean, 0.0))), method)


def folds_of(n: int, seed: int) -> list[np.ndarray]:
    """The calibration's folds: n images seeded into FOLDS groups (leave-one-out below FOLDS), each in one."""
    return [np.sort(f) for f in np.array_split(np.random.default_rng(seed).permutation(n), min(n, FOLDS))]


def fit(product: str, good: GoodFeatures, settings: Settings, progress: Progress = no_progress,
        cancel: threading.Event | None = None, roi: np.ndarray | None = None) -> Model:
    """Build the memory bank from every good image (the whole image: the region decides what
    is scored, not what is known) and calibrate the thresholds from every good image, scored in
    the inspection region `roi` (core.roi) against a bank built the same way without its fold."""
    product = check_product_name(product)
    feats = good.features
    n = len(feats)
    if roi is not None:
        roi = check_roi(roi)
    if n < MIN_GOOD_IMAGES:
        raise TrainingError(f"Only {n} usable good image(s); at least {MIN_GOOD_IMAGES} are needed "
                            f"to train and calibrate a threshold.")
    c = feats[0].shape[-1]
    patch_counts = np.array([f.shape[0] * f.shape[1] for f in feats])
    pools = []
    for i, f in enumerate(feats):
        _check_cancel(cancel)
        pools.append(candidates(f.reshape(-1, c).astype(np.float32), settings.sampler, settings.sampling_ratio,
                                settings.seed + i, n))
        progress("sampling", i + 1, n)

    def bank_of(images: np.ndarray) -> np.ndarray:
        pool = np.concatenate([pools[j] for j in images])
        k = bank_entries(patch_counts[images], settings.sampling_ratio)
        return np.ascontiguousarray(pool[sample_indices(pool, settings.sampler, k, settings.seed, cancel=cancel)])

    # Every image is scored against a bank built from the other folds; the final bank uses all.
    folds = folds_of(n, settings.seed)
    method = "leave-one-out" if len(folds) == n else f"{len(folds)}-fold"
    grids: list = [None] * n
    for i, fold in enumerate(folds):
        _check_cancel(cancel)
        progress("calibrating", i, len(folds) + 1)
        index = search_index(bank_of(np.setdiff1d(np.arange(n), fold)))
        for j in fold:
            grids[j] = patch_scores(feats[j].astype(np.float32), index)
    bank = bank_of(np.arange(n))
    progress("calibrating", 1, 1)
    calibration = calibrate(grids, roi, method)
    counts = {"good_images": n, "bank_images": n, "calibration_images": n,
              "skipped_images": len(good.skipped), "patches": int(patch_counts.sum()),
              "memory_bank": int(len(bank))}
    return Model(product, settings, bank, calibration, counts,
                 created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 libraries=library_versions(), roi=roi, calibration_patch_scores=grids)


def skipped_note(skipped: list[tuple[Path, str]], most: int = 10) -> str:
    """The skipped files and why, for the message of a training that failed."""
    if not skipped:
        return ""
    listed = "; ".join(f"{p.name}: {why}" for p, why in skipped[:most])
    more = f"; and {len(skipped) - most} more" if len(skipped) > most else ""
    return f" Skipped {len(skipped)} file(s): {listed}{more}."


def _needs_patch_scores(model: Model, what: str) -> list[np.ndarray]:
    if model.calibration_patch_scores is None:
        raise TrainingError(f"The model of '{model.product}' (version {model.version}) was made by an older "
                            f"Inspector and lacks what {what} needs: train the product again once.")
    return model.calibration_patch_scores


def with_roi(model: Model, roi: np.ndarray | None) -> Model:
    """The model with another inspection region (None: the whole image), recalibrated from its
    calibration images' patch scores: no good image is read. Unsaved: save_model makes it a version."""
    grids = _needs_patch_scores(model, "a new inspection region")
    if roi is not None:
        roi = check_roi(roi)
    calibration = calibrate(grids, roi, model.calibration.method)
    return replace(model, roi=roi, calibration=calibration,
                   change=f"inspection region {describe_roi(model.roi)} -> {describe_roi(roi)}")


def teach(model: Model, features: list[np.ndarray], what: str = "") -> tuple[Model, list[float]]:
    """Good parts the line rejected, as patch features (one (h, w, C) array each), join the model. Each is scored
    against the current bank (a bank without it, as a calibration image is) and joins the calibration with that
    score. Its patches in the region that lie farther from the bank than the typical good image's score (the median
    of the calibration) join the bank, farthest first, each one covering the ones near it (a greedy coreset
    extension), so that afterwards it scores at most that much. Returns the unsaved model and the images' scores
    before teaching."""
    grids = _needs_patch_scores(model, "teaching")
    bank = model.memory_bank
    features = [np.asarray(f, np.float32) for f in features]
    index = search_index(bank)
    new_grids = [patch_scores(f, index) for f in features]
    insides = [np.ones(g.shape, bool) if model.roi is None else patch_mask(model.roi, g.shape) for g in new_grids]
    radius = float(np.median(model.calibration.image_scores))
    candidates = np.concatenate([f[inside] for f, inside in zip(features, insides)])
    distance = np.concatenate([g[inside] for g, inside in zip(new_grids, insides)])
    far = distance > radius
    candidates, distance = np.ascontiguousarray(candidates[far]), distance[far]
    sq = squared_norms(candidates)
    added = []
    while len(distance) and distance.max() > radius:
        pick = int(np.argmax(distance))
        added.append(pick)
        d = sq - 2.0 * (candidates @ candidates[pick]) + sq[pick]
        np.minimum(distance, np.sqrt(np.maximum(d, 0.0)), out=distance)
    all_grids = list(grids) + new_grids
    calibration = calibrate(all_grids, model.roi, model.calibration.method)
    n = len(features)
    counts = model.counts | {
        "bank_images": model.counts.get("bank_images", 0) + n, "taught_images": model.counts.get("taught_images", 0) + n,
        "calibration_images": len(all_grids), "memory_bank": len(bank) + len(added)}
    taught = replace(model, memory_bank=np.concatenate([bank, candidates[added]]), calibration=calibration,
                     counts=counts, calibration_patch_scores=all_grids,
                     change=f"taught {what or f'{n} good image(s)'}: {len(added)} patch(es) joined the memory bank")
    return taught, [score_patches(g, model.roi)[0] for g in new_grids]


def train(product: str, paths: list[Path], settings: Settings, progress: Progress = no_progress,
          cancel: threading.Event | None = None, device: str = "cpu",
          roi: np.ndarray | None = None) -> tuple[Model, GoodFeatures]:
    """Train from image files. Returns the model and the features (kept for re-fitting)."""
    check_product_name(product)
    if not paths:
        raise TrainingError("No good images given: choose a folder that contains good part images.")
    settings = with_defect_size(settings, paths)
    extractor = FeatureExtractor(settings.backbone, device, settings.weights)
    good = extract_features(paths, extractor, settings, progress, cancel)
    return fit(product, good, settings, progress, cancel, roi), good
