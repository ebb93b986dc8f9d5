"""PatchCore (the station's method): a memory bank of the good images' patch features,
calibrated k-fold on every good image (core.training)."""
from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...core.memory_bank import Progress, no_progress
from ...core.model import Model
from ...core.scoring import Inspector
from ...core.training import train
from .base import Method


class PatchCore(Method):
    name = "patchcore"

    model: Model | None = None

    def fit(self, paths: list[Path], progress: Progress = no_progress, cancel: threading.Event | None = None) -> None:
        self.model = train("evaluation", list(paths), self.settings, progress, cancel, self.device)[0]
        self.calibration, self.counts = self.model.calibration, self.model.counts
        self._inspector = Inspector(self.model, self.device)

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        result = self._inspector.inspect(image)
        return result.score, result.anomaly_map

    @property
    def threshold(self) -> float:
        return self.model.threshold

    @property
    def pixel_threshold(self) -> float:
        return self.model.pixel_threshold

    def metadata(self) -> dict:
        return asdict(self.model.settings)
