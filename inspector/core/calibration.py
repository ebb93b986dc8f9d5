"""The threshold from good images alone.

A good image's score is the largest of about a thousand patch distances: right-skewed, with
a long upper tail from the odd unusual good part. Its mean and standard deviation follow that
tail, and mean + 3 std then lets through defects that score just above the good parts. The
threshold is therefore median + k * robust spread (the median absolute deviation scaled to
match a normal distribution's std), which the tail does not drag upwards."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_STD = 1.4826


def robust_centre_spread(scores) -> tuple[float, float]:
    """The median of the scores and their robust spread (MAD scaled to a normal std; the std
    when more than half the scores are equal)."""
    s = np.asarray(scores, np.float64)
    centre = float(np.median(s))
    spread = MAD_TO_STD * float(np.median(np.abs(s - centre)))
    if spread <= 0.0 and len(s) > 1:
        spread = float(s.std(ddof=1))
    return centre, max(spread, 1e-12)


def separating_threshold(good: list[float], defects: list[float]) -> float:
    """The image threshold that best separates good scores from known defect scores: the
    fewest false rejects plus escapes and, of those, the lowest (a defect milder than the
    known ones scores lower, and must not pass). It lies on the good side of its gap: one
    robust spread of the good scores above the score below it, at most midway across."""
    good, defects = np.sort(np.asarray(good, float)), np.sort(np.asarray(defects, float))
    edges = np.unique(np.concatenate([good, defects]))
    if len(edges) < 2:
        return float(edges[0]) if len(edges) else 0.0
    candidates = (edges[:-1] + edges[1:]) / 2
    errors = (len(good) - np.searchsorted(good, candidates)) + np.searchsorted(defects, candidates)
    best = int(np.argmin(errors))  # the first of the fewest: the lowest
    low, high = edges[best], edges[best + 1]
    margin = robust_centre_spread(good)[1] if len(good) else (high - low) / 2
    return float(low + min(margin, (high - low) / 2))


@dataclass(frozen=True)
class Calibration:
    """Scores of good images against memory banks built without them. Thresholds follow from
    the operator's tolerance k without rescoring: median + k * robust spread."""
    image_scores: list[float]
    pixel_mean: float
    pixel_std: float
    method: str  # "holdout", "N-fold" or "leave-one-out"

    def _centre_spread(self) -> tuple[float, float]:
        return robust_centre_spread(self.image_scores)

    def image_threshold(self, tolerance: float) -> float:
        centre, spread = self._centre_spread()
        return centre + tolerance * spread

    def pixel_threshold(self, tolerance: float) -> float:
        return float(self.pixel_mean + tolerance * self.pixel_std)

    def tolerance_for(self, threshold: float) -> float:
        """The k that gives this image threshold (a dragged line, a separating threshold)."""
        centre, spread = self._centre_spread()
        return float((threshold - centre) / spread)

    def false_reject_rate(self, threshold: float) -> float:
        """Expected share of good parts rejected: the calibration images at or above it (they
        were scored against banks without them, as a new good part is)."""
        return float(np.mean(np.asarray(self.image_scores) >= threshold))

