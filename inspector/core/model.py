"""A product's model as objects: its settings, calibration and memory bank (Model, one
immutable version; core.model_store saves and loads them), and the checks that every field
can decide a verdict (validate)."""
from __future__ import annotations

import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields, replace

import numpy as np

from .. import __version__
from ..errors import ModelError
from .backbones import BACKBONES, FEATURE_VERSION
from .calibration import Calibration
from .features import working_shape
from .memory_bank import SAMPLERS
from .profile import check_profile
from .roi import check_roi

PRODUCT_NAME = re.compile(r"^[^\\/:*?\"<>|\x00-\x1f.][^\\/:*?\"<>|\x00-\x1f]{0,63}$")


def check_product_name(name: str) -> str:
    name = name.strip()
    if not PRODUCT_NAME.match(name) or name.endswith((" ", ".")):
        raise ModelError(f"'{name}' is not a usable product name: use 1-64 letters, digits, spaces, "
                         f"'-' or '_', not starting with a dot.")
    return name


@dataclass(frozen=True)
class Settings:
    backbone: str = "efficientnet_lite0"
    # The smallest defect to find, in the camera image's pixels: it spans one patch at the working
    # size (features.working_shape). None before training: chosen from the good images.
    defect_size: float | None = None
    # Models of format 3 and older squashed every image into image_size x image_size (None since).
    image_size: int | None = None
    sampler: str = "greedy"
    sampling_ratio: float = 0.01
    tolerance: float = 3.0
    seed: int = 0
    min_region_area: int = 16  # pixels on the working-size map
    weights: str | None = None  # an explicit backbone weight file; None: embedded or torch hub cache
    feature_version: int = FEATURE_VERSION  # the patch features the bank holds (see backbones)

    def working_shape(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) at which the backbone sees an image of this size."""
        return working_shape(height, width, self.defect_size, self.image_size)


def describe_scale(defect_size: float | None, image_size: int | None) -> str:
    """How a model sees its images, in words (settings as stored)."""
    if defect_size is None:
        return f"images squashed to {image_size} x {image_size} px (an older model: train again to keep their shape)"
    return f"smallest defect {defect_size:g} px (images scaled x{8 / defect_size:.3g}, aspect kept)"


@dataclass(frozen=True)
class Model:
    """One immutable version of a product's model. `version` and `model_id` (the first 12
    hex digits of the checksum) are set by save_model and load_model; `change` says what
    made this version; `libraries` are the versions of the libraries that made it. `roi`: the
    inspection region (core.roi; None: the whole image); `calibration_patch_scores`: the
    patch distances (n, h, w) behind the calibration's image scores, from which a new region
    or a taught image recalibrates without the good images (None in models of format 2);
    `profile`: how its good images look (core.profile), stored and signed with it when known;
    `good_folder`: the absolute path of the folder of good images it was trained from, which a
    rebuild of its bank reads again (None: trained from files, or by an older Inspector)."""
    product: str
    settings: Settings
    memory_bank: np.ndarray  # (K, C) float32 patch features, read-only
    calibration: Calibration
    counts: dict = field(default_factory=dict)
    created: str = ""
    libraries: dict = field(default_factory=dict)
    model_id: str = ""
    version: int = 0
    change: str = ""
    roi: np.ndarray | None = None
    calibration_patch_scores: np.ndarray | None = None
    profile: dict | None = None  # how the good images look (core.profile); None in older models
    # Learnt from known defects (core.supervised.Heads; None: the bank alone decides), and the
    # smallest defect area that rejects a part (camera pixels, or mm2 with mm_per_px; 0: any).
    heads: typing.Any = None
    min_defect_area: float = 0.0
    mm_per_px: float | None = None
    good_folder: str | None = None

    def __post_init__(self):
        for array in (self.memory_bank, self.roi, self.calibration_patch_scores):
            if isinstance(array, np.ndarray):
                array.flags.writeable = False

    @property
    def threshold(self) -> float:
        return self.calibration.image_threshold(self.settings.tolerance)

    @property
    def pixel_threshold(self) -> float:
        return self.calibration.pixel_threshold(self.settings.tolerance)


def with_tolerance(model: Model, tolerance: float) -> Model:
    """The same model at another tolerance (unsaved: save_model makes it a version)."""
    return replace(model, settings=replace(model.settings, tolerance=float(tolerance)),
                   change=f"tolerance {model.settings.tolerance:g} -> {float(tolerance):g}")


# ---- validation --------------------------------------------------------------------

def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_ok(value, hint) -> bool:
    """Does a JSON value fit a dataclass field's type (int, float, str, bool, X | None, list[float], dict)?"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return finite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value) if args else True
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # a type this check does not know: left to the range checks


# Range rules by field name, beyond the types (a field not listed only needs its type).
_RULES = {
    "backbone": (lambda v: v in BACKBONES, f"one of {', '.join(BACKBONES)}"),
    "sampler": (lambda v: v in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
    "image_size": (lambda v: v is None or (32 <= v <= 4096 and v % 32 == 0), "a multiple of 32 from 32 to 4096 pixels"),
    "defect_size": (lambda v: v is None or 0.5 <= v <= 10_000, "0.5 to 10000 pixels"),
    "tolerance": (lambda v: abs(v) <= 1000, "-1000 to 1000"),
    "sampling_ratio": (lambda v: 0 < v <= 1, "above 0 and at most 1"),
    "min_region_area": (lambda v: 0 <= v <= 4096 ** 2, "0 to 4096x4096 pixels"),
    "pixel_std": (lambda v: v >= 0, "0 or more"),
    "image_scores": (lambda v: len(v) >= 2, "at least 2 scores"),
}


def field_problems(obj) -> list[str]:
    """What is wrong with the fields of a Settings or Calibration, in words."""
    hints = typing.get_type_hints(type(obj))
    problems = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not _type_ok(value, hints[f.name]):
            problems.append(f"{f.name} is {value!r}, expected {hints[f.name]} (finite numbers)")
        elif f.name in _RULES and not _RULES[f.name][0](value):
            problems.append(f"{f.name} is {value!r}, expected {_RULES[f.name][1]}")
    return problems


def validate(model: Model) -> None:
    """Raise ModelError naming every field of the model that cannot decide a verdict."""
    problems = field_problems(model.settings) + field_problems(model.calibration)
    if (model.settings.defect_size is None) == (model.settings.image_size is None):
        problems.append("exactly one of defect_size and image_size must be set")
    bank = model.memory_bank
    spec = BACKBONES.get(model.settings.backbone)
    if not isinstance(bank, np.ndarray) or bank.dtype != np.float32 or bank.ndim != 2 or len(bank) < 1:
        problems.append(f"the memory bank is {getattr(bank, 'dtype', type(bank))} of shape "
                        f"{getattr(bank, 'shape', '?')}, expected (N >= 1, C) float32")
    elif spec is not None and bank.shape[1] != spec.feature_dim:
        problems.append(f"the memory bank has {bank.shape[1]} values per patch, {model.settings.backbone} "
                        f"gives {spec.feature_dim}")
    elif not np.isfinite(bank).all():
        problems.append("the memory bank holds values that are not finite")
    problems += _array_problems(model)
    if (problem := check_profile(model.profile)) is not None:
        problems.append(problem)
    if model.good_folder is not None and not (isinstance(model.good_folder, str) and os.path.isabs(model.good_folder)):
        problems.append(f"the folder of good images {model.good_folder!r} is not an absolute path")
    if not problems:
        with np.errstate(over="ignore", invalid="ignore"):
            thresholds = (model.threshold, model.pixel_threshold)
        if not all(math.isfinite(t) for t in thresholds):
            problems.append(f"the thresholds {thresholds} are not finite")
    if problems:
        raise ModelError(f"The model of '{model.product}' is not usable: {'; '.join(problems)}.")


def _array_problems(model: Model) -> list[str]:
    """What is wrong with the inspection region and the calibration's patch scores."""
    problems = []
    if model.roi is not None:
        try:
            check_roi(model.roi)
        except ModelError as exc:
            problems.append(str(exc).rstrip("."))
    grids = model.calibration_patch_scores
    if grids is not None:
        n = len(model.calibration.image_scores) if isinstance(model.calibration.image_scores, list) else -1
        if not isinstance(grids, list) or len(grids) != n or not all(
                isinstance(g, np.ndarray) and g.dtype == np.float32 and g.ndim == 2 and g.size for g in grids):
            problems.append(f"the calibration's patch scores are not {n} float32 grids")
        elif not all(np.isfinite(g).all() for g in grids):
            problems.append("the calibration's patch scores hold values that are not finite")
    return problems


def library_versions() -> dict:
    import cv2
    import onnxruntime

    return {"inspector": __version__, "numpy": np.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__}
