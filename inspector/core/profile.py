"""What the good images of a training look like, cheaply: their file format, size, brightness, contrast and JPEG
blockiness. Stored in the model (signed with it), it lets the line say when the images it inspects differ
systematically from the ones it was trained on (a camera's MJPG frames against PNG files, another resolution, other
lighting) instead of silently rejecting every part.

`profile_of(paths)` at training; `differences(profile, name, image)` for each inspected image: a few readable
warnings, in well under a millisecond. A profile is a plain dict (JSON in model.json); keys this Inspector does not
know are ignored."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InspectorError
from ..data.images import load_image

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
MAX_IMAGES = 200  # a larger training is profiled on this many of its images, evenly spread
BLOCK = 8  # the JPEG block
CROP = 256  # blockiness is measured on a central crop of at most this side (full resolution)
STRIDE = 8  # brightness and contrast on every STRIDE-th pixel of the green channel
# Beyond the good images' own range by more than these, an image is said to differ.
BLOCKINESS_MARGIN = 0.1  # blockiness 1.0: no block edges; JPEG quality 90: ~1.1, MJPG: ~1.5
BRIGHTNESS_MARGIN = 12.0  # grey levels of 255
CONTRAST_FACTOR = 1.35  # the spread of grey levels, this many times smaller or larger
SIZE_FACTOR = 1.1  # a side this many times smaller or larger
RANGES = ("height", "width", "brightness", "contrast", "blockiness")  # a profile's [low, high] of each Look field
ADVICE = ("Its verdicts may be wrong: teach the product from images like these "
          "(inspector train --camera, or the Train tab's camera).")


def image_format(name: str | Path | None) -> str | None:
    """The file format a name says (PNG, JPEG, BMP, TIFF), None for a camera frame."""
    return FORMATS.get(Path(str(name)).suffix.lower()) if name else None


def blockiness(image: np.ndarray) -> float:
    """Mean grey-level step across the 8-pixel block edges over the mean step inside the blocks, of a central crop
    aligned to the block grid: about 1 without JPEG compression, more the stronger it is."""
    h, w = image.shape[:2]
    ch, cw = min(h, CROP) // BLOCK * BLOCK, min(w, CROP) // BLOCK * BLOCK
    if ch < 2 * BLOCK or cw < 2 * BLOCK:
        return 1.0
    y0, x0 = (h - ch) // 2 // BLOCK * BLOCK, (w - cw) // 2 // BLOCK * BLOCK
    g = image[y0:y0 + ch, x0:x0 + cw, 1].astype(np.int16)
    ratios = []
    for steps in (np.abs(np.diff(g, axis=1)).mean(axis=0), np.abs(np.diff(g, axis=0)).mean(axis=1)):
        edges = steps[BLOCK - 1::BLOCK]
        inner = (steps.sum() - edges.sum()) / (len(steps) - len(edges))
        ratios.append(edges.mean() / max(inner, 1e-3))
    return float(np.mean(ratios))


@dataclass(frozen=True)
class Look:
    """One image's looks."""
    height: int
    width: int
    brightness: float  # mean grey level
    contrast: float  # standard deviation of the grey levels
    blockiness: float

    @classmethod
    def of(cls, image: np.ndarray) -> Look:
        sample = image[::STRIDE, ::STRIDE, 1]
        return cls(image.shape[0], image.shape[1], float(sample.mean()), float(sample.std()), blockiness(image))


def _range(values: list[float]) -> list[float]:
    return [round(float(min(values)), 4), round(float(max(values)), 4)]


def profile_of(paths: Iterable[str | Path]) -> dict | None:
    """The profile of good images (at most MAX_IMAGES of them read), None when none is readable."""
    paths = [Path(p) for p in paths]
    if len(paths) > MAX_IMAGES:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, MAX_IMAGES).round().astype(int)]
    looks, formats = [], set()
    for path in paths:
        try:
            looks.append(Look.of(load_image(path)))
        except InspectorError:
            continue
        formats.add(image_format(path) or "other")
    if not looks:
        return None
    return {"images": len(looks), "formats": sorted(formats)} | {k: _range([getattr(x, k) for x in looks])
                                                                 for k in RANGES}


def check_profile(profile) -> str | None:
    """What is wrong with a stored profile, None when it is usable (or absent)."""
    if profile is None:
        return None
    if not isinstance(profile, dict):
        return "the good images' profile is not a mapping"
    for key in RANGES:
        pair = profile.get(key)
        if not (isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
                and pair[0] <= pair[1]):
            return f"the good images' profile has no usable {key} range"
    formats = profile.get("formats")
    if not (isinstance(formats, list) and all(isinstance(f, str) for f in formats)):
        return "the good images' profile has no list of formats"
    return None


def _between(low: float, high: float) -> str:
    return f"{low:.0f}" if round(low) == round(high) else f"{low:.0f} to {high:.0f}"


def differences(profile: dict | None, name: str | Path | None, image: np.ndarray) -> dict[str, str]:
    """How the image (named `name`: a file, or a camera frame) differs from the good images of
    the profile, by kind ('format', 'compression', 'size', 'brightness', 'contrast'): readable
    sentences; empty when it looks like them or there is no profile."""
    if not profile:
        return {}
    out = {}
    fmt = image_format(name)
    if fmt is not None and fmt not in profile["formats"]:
        out["format"] = f"The image is a {fmt} file; the good images were {' and '.join(profile['formats'])}."
    look = Look.of(image)
    low, high = profile["blockiness"]
    if look.blockiness > max(high, 1.0) + BLOCKINESS_MARGIN:
        out["compression"] = (f"The image shows JPEG compression blocks (blockiness {look.blockiness:.2f}); the "
                              f"good images did not (at most {high:.2f}).")
    (hl, hh), (wl, wh) = profile["height"], profile["width"]
    if not (hl / SIZE_FACTOR <= look.height <= hh * SIZE_FACTOR and wl / SIZE_FACTOR <= look.width <= wh * SIZE_FACTOR):
        out["size"] = (f"The image is {look.width} x {look.height} px; the good images were "
                       f"{_between(wl, wh)} x {_between(hl, hh)} px.")
    low, high = profile["brightness"]
    if not low - BRIGHTNESS_MARGIN <= look.brightness <= high + BRIGHTNESS_MARGIN:
        out["brightness"] = (f"The image is {'darker' if look.brightness < low else 'brighter'} (mean grey level "
                             f"{look.brightness:.0f}) than the good images ({_between(low, high)}).")
    low, high = profile["contrast"]
    if not low / CONTRAST_FACTOR <= look.contrast <= high * CONTRAST_FACTOR:
        out["contrast"] = (f"The image has {'less' if look.contrast < low else 'more'} contrast (grey-level spread "
                           f"{look.contrast:.0f}) than the good images ({_between(low, high)}).")
    return out


def widened(profile: dict | None, other: dict | None) -> dict | None:
    """One profile of the good images of both (a taught part joins the good images)."""
    if not profile or not other:
        return profile or other
    ranges = {key: [min(profile[key][0], other[key][0]), max(profile[key][1], other[key][1])] for key in RANGES}
    return profile | other | ranges | {"images": profile.get("images", 0) + other.get("images", 0),
                                       "formats": sorted(set(profile["formats"]) | set(other["formats"]))}
