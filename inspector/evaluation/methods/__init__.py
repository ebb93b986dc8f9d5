"""The methods `inspector evaluate --method` and `inspector compare` run on a product's own
images, beside PatchCore (the station's method): see base.Method for what a method is."""
from __future__ import annotations

from pathlib import Path

from ...core.model import Settings
from ...errors import TrainingError
from .ae import PixelAE, PixelAESSIM, UNetAE
from .base import Method
from .feature_ae import FeatureAE
from .knn import Knn
from .patchcore import PatchCore
from .vit_knn import VitKnn

METHODS = {m.name: m for m in (PatchCore, Knn, FeatureAE, PixelAE, PixelAESSIM, UNetAE, VitKnn)}
DEFAULT = PatchCore.name


def make_method(name: str, settings: Settings, device: str = "cpu", vit_weights: str | Path | None = None,
                max_epochs: int | None = None) -> Method:
    """A new, unfitted method by its name; `max_epochs` bounds a network's training
    (default networks.MAX_EPOCHS; it stops earlier when its validation loss stops improving)."""
    if name not in METHODS:
        raise TrainingError(f"Unknown method '{name}'. Choose one of: {', '.join(METHODS)}.")
    if name == VitKnn.name:
        return VitKnn(settings, device, vit_weights)
    return METHODS[name](settings, device, max_epochs)
