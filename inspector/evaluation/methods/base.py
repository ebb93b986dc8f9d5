"""What every method compared with PatchCore shares: a method learns from good images
(`fit`) and scores one image (`score` -> image score, anomaly map or None), and its threshold
comes from the calibration rule of the product (core.calibration.Calibration: median + k robust
spreads of good images' scores) over good images it did not learn from.

The methods other than PatchCore hold out a seeded fifth of the good images (`split_good`):
a network's validation loss (early stopping) and the calibration scores come from them."""
from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...core.calibration import Calibration
from ...core.memory_bank import Progress, no_progress
from ...core.model import Settings
from ...core.training import MIN_GOOD_IMAGES
from ...data.images import load_image
from ...errors import Cancelled, TrainingError

HELD_OUT = 0.2  # share of the good images held out for validation and calibration


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Evaluation cancelled.")


def split_good(paths: list[Path], seed: int) -> tuple[list[Path], list[Path]]:
    """(learn from, held out): a seeded split, at least MIN_GOOD_IMAGES held out and learnt from."""
    n = len(paths)
    held = max(MIN_GOOD_IMAGES, int(round(n * HELD_OUT)))
    if n - held < MIN_GOOD_IMAGES:
        raise TrainingError(f"Only {n} good image(s); this method needs at least {2 * MIN_GOOD_IMAGES} "
                            f"({MIN_GOOD_IMAGES} to learn from and {MIN_GOOD_IMAGES} held out to calibrate).")
    order = np.random.default_rng(seed).permutation(n)
    return [paths[i] for i in sorted(order[held:])], [paths[i] for i in sorted(order[:held])]


def load_images(paths: list[Path], progress: Progress, cancel: threading.Event | None,
                stage: str = "loading good images") -> list[np.ndarray]:
    images = []
    for i, path in enumerate(paths):
        check_cancel(cancel)
        images.append(load_image(path))
        progress(stage, i + 1, len(paths))
    return images


class Method:
    """A method calibrated on held-out good images. A subclass learns in `learn` and scores in
    `score`; `fit` does the split and the calibration."""
    name = ""
    has_map = True  # False: the method scores whole images and gives no anomaly map
    needs_torch = False  # True: it runs a torch network (checked at once; imported before it is measured)

    def __init__(self, settings: Settings, device: str = "cpu", max_epochs: int | None = None):
        self.settings, self.device, self.max_epochs = settings, device, max_epochs
        if self.needs_torch:
            from .networks import torch_for

            self._torch = torch_for(self.name)
        self.calibration: Calibration | None = None
        self.counts: dict = {}

    def learn(self, paths: list[Path], held_out: list[np.ndarray], progress: Progress,
              cancel: threading.Event | None) -> None:
        raise NotImplementedError

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray | None]:
        raise NotImplementedError

    def fit(self, paths: list[Path], progress: Progress = no_progress, cancel: threading.Event | None = None) -> None:
        learn, held = split_good(list(paths), self.settings.seed)
        held_images = load_images(held, progress, cancel, "loading held-out good images")
        self.learn(learn, held_images, progress, cancel)
        scores, total, total_sq, count = [], 0.0, 0.0, 0
        for i, image in enumerate(held_images):
            check_cancel(cancel)
            value, amap = self.score(image)
            scores.append(value)
            if amap is not None:
                pixels = amap.astype(np.float64).ravel()
                total, total_sq, count = total + pixels.sum(), total_sq + (pixels * pixels).sum(), count + pixels.size
            progress("calibrating", i + 1, len(held_images))
        mean = total / count if count else 0.0
        std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0))) if count else 0.0
        self.calibration = Calibration(scores, float(mean), std, "holdout")
        self.counts = {"good_images": len(paths), "learnt_images": len(learn), "calibration_images": len(held)}

    @property
    def threshold(self) -> float:
        return self.calibration.image_threshold(self.settings.tolerance)

    @property
    def pixel_threshold(self) -> float | None:
        return self.calibration.pixel_threshold(self.settings.tolerance) if self.has_map else None

    def metadata(self) -> dict:
        """The settings the report shows."""
        return asdict(self.settings)
