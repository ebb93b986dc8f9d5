"""The inspection region (ROI): where on a part the station looks.

A region is a boolean mask over the whole image, True where to inspect; None inspects everything. It is stretched
over every image like the image itself, so one region serves images of any size, and it is data, saved with the
model. A patch counts when at least half of it lies in the region; patches outside never raise the image score and
never produce boxes (see scoring.score_patches).

Made from a mask image (white = inspect) or from shapes drawn on a part image: include areas (none: the whole
image) minus exclude areas."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError

MAX_SIDE = 1024  # a region is kept at most this large (it is stretched over each image anyway)


def _stretched(roi: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(roi.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def patch_mask(roi: np.ndarray | None, grid: tuple[int, int]) -> np.ndarray | None:
    """The patches of a (rows, columns) grid at least half inside the region; None: every patch."""
    if roi is None:
        return None
    return _stretched(roi, grid) >= 0.5


def region_on(roi: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The region as a bool mask of `shape` (an anomaly map's)."""
    return roi if roi.shape == tuple(shape) else _stretched(roi, shape) >= 0.5


def check_roi(roi: np.ndarray) -> np.ndarray:
    """The region as a contiguous bool mask; ModelError when it is not a 2-D mask or holds no
    patch of a 256 x 256 working image (1/32 of its width and height)."""
    roi = np.asarray(roi)
    if roi.ndim != 2 or not 8 <= min(roi.shape) or max(roi.shape) > MAX_SIDE:
        raise ModelError(f"The inspection region is a mask of shape {roi.shape}, expected a 2-D mask "
                         f"of 8 to {MAX_SIDE} pixels a side.")
    roi = np.ascontiguousarray(roi.astype(bool))
    if not patch_mask(roi, (32, 32)).any():
        raise ModelError("The inspection region covers no patch: make it at least 3 % of the image wide and high.")
    return roi


def _kept_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of a region made for an image of this size: at most MAX_SIDE a side."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(8, int(round(width * scale))), max(8, int(round(height * scale)))


def roi_from_mask(path: str | Path) -> np.ndarray:
    """A region from a mask image file: white (at least mid-grey) = inspect, black = ignore."""
    from ..data.images import load_image

    mask = load_image(path).max(axis=2)  # RGB uint8, any depth or channel count made plain
    mask = cv2.resize(mask, _kept_size(mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_AREA)
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


def roi_from_shapes(shapes: list[Shape], image_wh: tuple[int, int]) -> np.ndarray | None:
    """A region from shapes drawn on a part image of size (width, height): the include areas
    (the whole image when there is none) minus the exclude areas. None: no shape at all."""
    if not shapes:
        return None
    width, height = _kept_size(*image_wh)
    scale = np.array([width / image_wh[0], height / image_wh[1]])
    includes = [s for s in shapes if s.include]
    mask = np.zeros((height, width), np.uint8) if includes else np.ones((height, width), np.uint8)
    for shape in includes + [s for s in shapes if not s.include]:
        points = np.round(shape.polygon() * scale).astype(np.int32)
        cv2.fillPoly(mask, [points], 1 if shape.include else 0)
    return mask.astype(bool)


def describe_roi(roi: np.ndarray | None) -> str:
    """The region in words, for events and screens."""
    return "the whole image" if roi is None else f"a region of {100.0 * roi.mean():.0f} % of the image"
