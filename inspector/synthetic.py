"""Generated parts for the self-test, the demo and the unit tests: a machined disc on a textured tray, with small
random shifts and lighting changes; a defective part carries a scratch or a stain. Deterministic for a given seed."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .data.images import save_image

DEFECTS = ("scratch", "stain")


def make_part(seed: int, size: int = 256, defect: str | None = None) -> np.ndarray:
    """One RGB uint8 image of a part, good when `defect` is None."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    tray = 90 + 12 * np.sin(xx / 6.0) * np.sin(yy / 6.0)
    img = np.dstack([tray * 0.9, tray, tray * 1.1])
    cx, cy = size / 2 + rng.uniform(-2, 2, 2)
    r = np.hypot(xx - cx, yy - cy)
    disc = r < size * 0.33
    rings = 170 + 25 * np.cos(r / 3.0)
    img[disc] = np.stack([rings * 0.95, rings * 0.97, rings], axis=-1)[disc]
    img[r < size * 0.08] = (40, 40, 45)  # the bore
    img = img * rng.uniform(0.95, 1.05) + rng.normal(0, 2.0, img.shape)
    if defect == "scratch":
        a = rng.uniform(0, np.pi)
        p0 = (cx + size * 0.12 * np.cos(a), cy + size * 0.12 * np.sin(a))
        p1 = (cx + size * 0.3 * np.cos(a + 0.5), cy + size * 0.3 * np.sin(a + 0.5))
        cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), (20, 20, 20), max(2, size // 64))
    elif defect == "stain":
        a, d = rng.uniform(0, 2 * np.pi), size * rng.uniform(0.15, 0.25)
        cv2.circle(img, (int(cx + d * np.cos(a)), int(cy + d * np.sin(a))), size // 14, (150, 60, 20), -1)
    elif defect is not None:
        raise ValueError(f"unknown defect {defect!r}; choose from {DEFECTS}")
    return np.clip(img, 0, 255).astype(np.uint8)


def make_mesh(seed: int, size: int = 256, width: int | None = None) -> np.ndarray:
    """One RGB uint8 image of a woven mesh (a texture), size x size or size high and `width`
    wide: its lines' phase and angle change from image to image, so what a border patch sees
    differs from part to part, as on real textures."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:width or size].astype(np.float32)
    a = rng.uniform(-0.05, 0.05)
    ox, oy = rng.uniform(0, 12, 2)
    u = np.cos(a) * xx + np.sin(a) * yy + ox
    v = -np.sin(a) * xx + np.cos(a) * yy + oy
    wire = (np.abs(u % 12 - 6) < 1.5) | (np.abs(v % 12 - 6) < 1.5)
    gray = np.clip(150 - 90 * wire + rng.normal(0, 6, wire.shape), 0, 255).astype(np.uint8)
    return np.dstack([gray] * 3)


def write_parts(folder: Path, count: int, defect: str | None = None, seed: int = 0, size: int = 256) -> list[Path]:
    """Write `count` part images into `folder` and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    name = defect or "good"
    return [save_image(folder / f"{name}_{seed + i:03d}.png", make_part(seed + i, size, defect)) for i in range(count)]
