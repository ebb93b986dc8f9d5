"""The inspection region (ROI): where on a part the station looks.

A region is a boolean mask at the model's input size (the image as the backbone sees it,
stretched to image_size x image_size), True where to inspect; None inspects everything. It
is data, saved with the model. A patch counts when at least half of it lies in the region;
patches outside never raise the image score and never produce boxes (see scoring.score).

Made from a mask image (white = inspect, any size: it is stretched like the part images) or
from shapes drawn on a part image: include areas (none: the whole image) minus exclude areas."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError


def patch_mask(roi: np.ndarray | None, grid: int) -> np.ndarray | None:
    """The patches (grid x grid, bool) at least half inside the region; None: every patch."""
    if roi is None:
        return None
    return cv2.resize(roi.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA) >= 0.5


def check_roi(roi: np.ndarray, image_size: int, grid: int) -> np.ndarray:
    """The region as a contiguous bool mask; ModelError when it has the wrong size or holds no patch."""
    roi = np.asarray(roi)
    if roi.shape != (image_size, image_size):
        raise ModelError(f"The inspection region is {roi.shape}, expected ({image_size}, {image_size}).")
    roi = np.ascontiguousarray(roi.astype(bool))
    if not patch_mask(roi, grid).any():
        raise ModelError(f"The inspection region covers no patch: make it at least "
                         f"{100.0 / grid:.0f} % of the image wide and high.")
    return roi


def roi_from_mask(path: str | Path, image_size: int) -> np.ndarray:
    """A region from a mask image file: white (at least mid-grey) = inspect, black = ignore."""
    from ..data.images import load_image

    mask = load_image(path)  # RGB uint8, any depth or channel count made plain
    mask = cv2.resize(mask.max(axis=2), (image_size, image_size), interpolation=cv2.INTER_AREA)
    return mask >= 128


@dataclass(frozen=True)
class Shape:
    """An area drawn on a part image, in that image's pixel coordinates: a rectangle
    (two corners) or a polygon (three or more points); include or exclude."""
    points: tuple[tuple[float, float], ...]
    include: bool = True
    kind: str = "polygon"  # "rectangle" | "polygon"

    def polygon(self) -> np.ndarray:
        if self.kind == "rectangle":
            (x0, y0), (x1, y1) = self.points[:2]
            return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float64)
        return np.array(self.points, np.float64)


def roi_from_shapes(shapes: list[Shape], image_wh: tuple[int, int], image_size: int) -> np.ndarray | None:
    """A region from shapes drawn on a part image of size (width, height): the include areas
    (the whole image when there is none) minus the exclude areas. None: no shape at all."""
    if not shapes:
        return None
    scale = np.array([image_size / image_wh[0], image_size / image_wh[1]])
    includes = [s for s in shapes if s.include]
    mask = np.zeros((image_size, image_size), np.uint8) if includes else np.ones((image_size, image_size), np.uint8)
    for shape in includes + [s for s in shapes if not s.include]:
        points = np.round(shape.polygon() * scale).astype(np.int32)
        cv2.fillPoly(mask, [points], 1 if shape.include else 0)
    return mask.astype(bool)


def describe_roi(roi: np.ndarray | None) -> str:
    """The region in words, for events and screens."""
    return "the whole image" if roi is None else f"a region of {100.0 * roi.mean():.0f} % of the image"
