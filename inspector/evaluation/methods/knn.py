"""kNN on whole images: each image becomes one vector (the backbone's patch features averaged
over the image); its score is the mean distance to its K nearest good images. No anomaly map."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ...core.features import FeatureExtractor
from ...core.memory_bank import Progress
from ...core.training import extract_features, skipped_note, with_defect_size
from ...errors import TrainingError
from .base import Method

K = 5


class BackboneMethod(Method):
    """A method on the backbone's patch features, at the product's scale."""

    def good_features(self, paths: list[Path], progress: Progress, cancel: threading.Event | None) -> list:
        self.settings = with_defect_size(self.settings, paths)
        self._extractor = FeatureExtractor(self.settings.backbone, self.device, self.settings.weights)
        good = extract_features(paths, self._extractor, self.settings, progress, cancel)
        if not good.features:
            raise TrainingError("None of the good images can be read." + skipped_note(good.skipped))
        return good.features

    def patch_features(self, image: np.ndarray) -> np.ndarray:
        return self._extractor([image], self.settings.working_shape(*image.shape[:2]))[0]


class Knn(BackboneMethod):
    name = "knn"
    has_map = False

    def learn(self, paths: list[Path], held_out: list[np.ndarray], progress: Progress,
              cancel: threading.Event | None) -> None:
        features = self.good_features(paths, progress, cancel)
        self.good = np.stack([f.astype(np.float32).mean(axis=(0, 1)) for f in features])

    def embed(self, image: np.ndarray) -> np.ndarray:
        """One image -> its vector."""
        return self.patch_features(image).mean(axis=(0, 1))

    def score(self, image: np.ndarray) -> tuple[float, None]:
        distances = np.linalg.norm(self.good - self.embed(image), axis=1)
        return float(np.sort(distances)[:K].mean()), None
