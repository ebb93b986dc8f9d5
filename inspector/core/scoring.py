"""Scoring: patch features against the memory bank -> image score, anomaly map, regions,
verdict. `Inspector` is the runtime object the CLI, the watch loop and the GUI call."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from .features import STRIDE, FeatureExtractor, Prepared
from .memory_bank import nearest_distance, search_index
from .calibration import robust_centre_spread
from .model import Model
from .roi import patch_mask, region_on
from .supervised import accept_by_size, area_in_mm2, combined_margin, upsample

SMOOTHING_SIGMA = 4.0  # pixels on the working-size map, as in PatchCore
MAX_REGIONS = 32


@dataclass
class Region:
    x: int
    y: int
    w: int
    h: int
    area: int  # pixels, in original image coordinates
    peak: float
    area_mm2: float | None = None  # with the product's scale (mm per camera pixel)

    def as_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h, "area": self.area, "peak": self.peak} | (
            {} if self.area_mm2 is None else {"area_mm2": self.area_mm2})


@dataclass
class Result:
    score: float
    threshold: float
    verdict: str  # "OK" or "NG"
    anomaly_map: np.ndarray  # float32, at the image's working size: stretched over the image where drawn
    regions: list[Region]
    latency_ms: float
    # With defect heads (core.supervised): the classifier's image logit, its class-activation map
    # (probabilities at the working size, shown beside the bank's heatmap) and the segmentation.
    defect_logit: float | None = None
    activation_map: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    accepted: list[Region] = field(default_factory=list)  # smaller than the minimum defect area: OK


def patch_scores(features: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(h, w, C) patch features -> (h, w) distance of each patch to its nearest entry of the bank (`search_index`)."""
    h, w, c = features.shape
    return nearest_distance(features.reshape(-1, c), index).reshape(h, w)


def anomaly_map(scores: np.ndarray) -> np.ndarray:
    """(h, w) patch scores upsampled to the working size (8h, 8w) and smoothed (Gaussian, sigma 4 px)."""
    h, w = scores.shape
    up = cv2.resize(scores, (w * STRIDE, h * STRIDE), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(up, (0, 0), SMOOTHING_SIGMA)


def score_patches(scores: np.ndarray, roi: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(h, w) patch distances -> (image score, anomaly map). Every patch in the inspection region counts, the border
    ones too; the image score is the largest. Patches outside the region count as 0, and the map is 0 outside it,
    so they never raise the score nor make a box. Calibration calls this too: a new region needs no features."""
    if roi is None:
        return float(scores.max()), anomaly_map(scores)
    scores = np.where(patch_mask(roi, scores.shape), scores, np.float32(0.0))
    amap = anomaly_map(scores)
    return float(scores.max()), amap * region_on(roi, amap.shape)


def find_regions(amap: np.ndarray, threshold: float, min_area: int, out_size: tuple[int, int]) -> list[Region]:
    """Connected areas of the map above the pixel threshold, at least `min_area` map pixels,
    as boxes in original image coordinates (out_size = (width, height)), hottest first."""
    mask = (amap >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return []
    peaks = np.full(n, -np.inf, dtype=np.float32)
    np.maximum.at(peaks, labels.ravel(), amap.ravel())
    sx, sy = out_size[0] / amap.shape[1], out_size[1] / amap.shape[0]
    regions = []
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area < min_area:
            continue
        x0, y0 = int(x * sx), int(y * sy)
        regions.append(Region(x0, y0, int(round((x + w) * sx)) - x0, int(round((y + h) * sy)) - y0,
                              int(round(area * sx * sy)), float(peaks[i])))
    regions.sort(key=lambda r: r.peak, reverse=True)
    return regions[:MAX_REGIONS]


class Inspector:
    """Scores images against one product's model."""

    def __init__(self, model: Model, device: str = "cpu", extractor: FeatureExtractor | None = None):
        s = model.settings
        self.model = model
        self.extractor = extractor or FeatureExtractor(s.backbone, device, s.weights)
        self.bank_index = search_index(model.memory_bank)
        self._spread = robust_centre_spread(model.calibration.image_scores)[1]

    def working_shape(self, image: np.ndarray) -> tuple[int, int]:
        return self.model.settings.working_shape(*image.shape[:2])

    def prepare(self, image: np.ndarray) -> Prepared:
        """The image with its backbone input, made now (by a reader thread, ahead of the backbone)."""
        return self.extractor.prepare(image, self.working_shape(image))

    def features(self, image: np.ndarray) -> np.ndarray:
        """One RGB uint8 image -> its (h, w, C) patch features at its working size."""
        return self.extractor([image], self.working_shape(image))[0]

    def score_features(self, features: np.ndarray) -> tuple[float, np.ndarray]:
        """(h, w, C) features -> (image score, anomaly map at the working size), scored as `inspect` scores."""
        return score_patches(patch_scores(features, self.bank_index), self.model.roi)

    def inspect(self, image: np.ndarray, ready: Prepared | None = None) -> Result:
        """Score one RGB uint8 image; `ready` is the same image prepared ahead (by a reader thread)."""
        start = time.perf_counter()
        if (ready is not None and ready.extractor is self.extractor
                and ready.batch.shape[2:] == self.working_shape(image)):
            features = self.extractor.features(ready.batch)[0]
        else:
            features = self.features(image)
        m = self.model
        distances = patch_scores(features, self.bank_index)
        score, amap = score_patches(distances, m.roi)
        return self._result(image, score, amap, start, features, distances)

    def _result(self, image: np.ndarray, score: float, amap: np.ndarray, start: float,
                features: np.ndarray | None = None, distances: np.ndarray | None = None) -> Result:
        m = self.model
        threshold = m.threshold
        verdict = "NG" if score >= threshold else "OK"
        height, width = image.shape[:2]
        extra: dict = {}
        masks, mask_threshold = amap, m.pixel_threshold
        if m.heads is not None and features is not None:
            heads, grid = m.heads, distances.shape
            x = heads.inputs(features, distances)
            logit, cam = heads.classify(x, grid)
            segmentation = heads.segment(x, grid)
            if m.roi is not None:  # outside the region neither head sees anything
                inside = patch_mask(m.roi, grid)
                logit, cam = heads.classify(x[inside.ravel()], (int(inside.sum()), 1))[0], np.where(inside, cam, -60.0)
                if segmentation is not None:
                    segmentation = segmentation * region_on(m.roi, segmentation.shape)
            verdict = "NG" if combined_margin(score, threshold, self._spread, logit, heads) >= 0 else "OK"
            extra = {"defect_logit": logit, "activation_map": upsample(cam), "segmentation": segmentation}
            drawn = heads.mask_map(segmentation, amap)
            if drawn is not None:
                masks, mask_threshold = drawn
        # An OK part shows no boxes; an NG part shows where it differs from the good ones.
        regions = (find_regions(masks, mask_threshold, m.settings.min_region_area, (width, height))
                   if verdict == "NG" else [])
        for r in regions:
            r.area_mm2 = area_in_mm2(r.area, m.mm_per_px)
        accepted = []
        if m.min_defect_area and regions:
            regions, accepted = accept_by_size(regions, m.min_defect_area, m.mm_per_px)
            if not regions:
                verdict = "OK"  # every region is smaller than the product accepts
        return Result(score, threshold, verdict, amap, regions, (time.perf_counter() - start) * 1000.0,
                      accepted=accepted, **extra)
