"""How a result is drawn, in one place for the line's archive, the GUI and the evaluation gallery: the heat scale (the
anomaly map from 0, blue, to twice the threshold, red, so the threshold sits mid-scale and a heatmap means the same
on every screen and file), the JET colours, the heatmap overlay and the region boxes. numpy and OpenCV only."""
from __future__ import annotations

import cv2
import numpy as np

RED = (255, 0, 0)  # RGB
YELLOW = (255, 255, 0)
# JET as an RGB lookup table (256 x 3 uint8), for painters that colour a map themselves
JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1].copy()


def heat_range(threshold: float) -> tuple[float, float]:
    """The heat scale of a result: (blue, red) anomaly-map values."""
    return 0.0, 2.0 * float(threshold)


def map_to_image(anomaly_map: np.ndarray, width: int, height: int) -> np.ndarray:
    """An anomaly map (kept at the model's size) stretched bilinearly over a width x height image, to draw."""
    anomaly_map = np.asarray(anomaly_map, np.float32)
    if anomaly_map.shape == (height, width):
        return anomaly_map
    return cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR)


def overlay_heatmap(image, anomaly_map, vmin: float, vmax: float, alpha: float = 0.5):
    """RGB uint8 image with the anomaly map blended on it as a JET heatmap; the map is scaled so that vmin is blue and
    vmax is red (values outside are clipped), so that images overlaid with the same vmin, vmax share one scale. A
    map of another size than the image is resized to it; a grey image is made RGB."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    anomaly_map = map_to_image(anomaly_map, image.shape[1], image.shape[0])
    scaled = (anomaly_map - vmin) / max(vmax - vmin, 1e-12)
    levels = np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


def draw_boxes(image, boxes, color, thickness: int = 2):
    """A copy of the image with a `color` rectangle whose outer edge is each (x, y, w, h) box's edge."""
    out = np.array(image, np.uint8, copy=True)
    for x, y, w, h in boxes:
        cv2.rectangle(out, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), color, thickness)
    return out


def overlay(image: np.ndarray, result, alpha: float = 0.5) -> np.ndarray:
    """The image with its result drawn: heatmap on the heat scale and red region boxes."""
    shown = overlay_heatmap(image, result.anomaly_map, *heat_range(result.threshold), alpha)
    return draw_boxes(shown, [(r.x, r.y, r.w, r.h) for r in result.regions], RED, max(2, image.shape[1] // 300))
