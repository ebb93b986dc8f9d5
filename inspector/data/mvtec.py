"""MVTec-AD-layout datasets: one category folder with

    train/good/*.png
    test/good/*.png, test/<defect>/*.png
    ground_truth/<defect>/<name>_mask.png"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.data.images import list_images, load_image
from inspector.errors import SourceError

GOOD = "good"

_EXPECTED = ("expected an MVTec-AD category folder holding train/good/*.png, test/<defect>/*.png "
             "(test/good for good parts) and ground_truth/<defect>/<name>_mask.png")


@dataclass(frozen=True)
class TestSample:
    """One test image: its defect type ('good' for good parts), label 0 good / 1 defect,
    and its ground-truth mask (None for good parts, or when the dataset has no mask)."""

    __test__ = False  # not a pytest test class

    path: Path
    defect_type: str
    label: int
    mask_path: Path | None


class MVTecCategory:
    """The training images and labelled test samples of one category folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.name = self.root.name
        train_dir, test_dir = self.root / "train" / GOOD, self.root / "test"
        for needed in (train_dir, test_dir):
            if not needed.is_dir():
                folder = needed.relative_to(self.root).as_posix()
                raise SourceError(f"{self.root} has no {folder} folder: {_EXPECTED}.")
        self.train_images: list[Path] = list_images(train_dir)
        self.test_samples: list[TestSample] = [self._sample(path, defect_dir.name)
                                               for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir())
                                               for path in list_images(defect_dir)]
        if not self.train_images or not self.test_samples:
            missing = "train/good" if not self.train_images else "test/<defect>"
            raise SourceError(f"{self.root} has no images in {missing}: {_EXPECTED}.")

    def _sample(self, path: Path, defect_type: str) -> TestSample:
        if defect_type == GOOD:
            return TestSample(path, GOOD, 0, None)
        mask = self.root / "ground_truth" / defect_type / f"{path.stem}_mask.png"
        return TestSample(path, defect_type, 1, mask if mask.is_file() else None)


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A ground-truth mask as a bool HxW array (non-zero: defect), resized (nearest) to `size` = (w, h)."""
    mask = load_image(path)[:, :, 0]
    if size is not None:
        mask = cv2.resize(mask, tuple(size), interpolation=cv2.INTER_NEAREST)
    return mask > 0
