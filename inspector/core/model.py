"""The saved model of a product: memory bank, calibration and settings.

One folder per product under the models directory: `model.json` (metadata, settings,
calibration scores, a checksum of the arrays) and `memory_bank.safetensors`. Both are data
only; nothing is ever unpickled. Writes are atomic: a failed or cancelled training never
damages the model already there."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ModelError
from .backbones import BACKBONES, FEATURE_VERSION

FORMAT = "inspector-model"
FORMAT_VERSION = 1
META_FILE = "model.json"
BANK_FILE = "memory_bank.safetensors"
_PRODUCT_NAME = re.compile(r"^[^\\/:*?\"<>|\x00-\x1f.][^\\/:*?\"<>|\x00-\x1f]{0,63}$")


def check_product_name(name: str) -> str:
    name = name.strip()
    if not _PRODUCT_NAME.match(name) or name.endswith((" ", ".")):
        raise ModelError(f"'{name}' is not a usable product name: use 1-64 letters, digits, spaces, "
                         f"'-' or '_', not starting with a dot.")
    return name


# A good image's score is the largest of about a thousand patch distances: right-skewed, with
# a long upper tail from the odd unusual good part. Its mean and standard deviation follow that
# tail, and mean + 3 std then lets through defects that score just above the good parts. The
# threshold is therefore median + k * robust spread (the median absolute deviation scaled to
# match a normal distribution's std), which the tail does not drag upwards.
MAD_TO_STD = 1.4826


def separating_threshold(good: list[float], defects: list[float]) -> float:
    """The image threshold that best separates good scores from known defect scores: the
    fewest false rejects plus escapes, and of those the one in the widest gap, midway."""
    good, defects = np.sort(np.asarray(good, float)), np.sort(np.asarray(defects, float))
    edges = np.unique(np.concatenate([good, defects]))
    if len(edges) < 2:
        return float(edges[0]) if len(edges) else 0.0
    candidates = (edges[:-1] + edges[1:]) / 2
    errors = (len(good) - np.searchsorted(good, candidates)) + np.searchsorted(defects, candidates)
    gaps = np.diff(edges)
    best = np.lexsort((-gaps, errors))[0]
    return float(candidates[best])


@dataclass
class Calibration:
    """Scores of good images against memory banks built without them. Thresholds follow from
    the operator's sensitivity k without rescoring: median + k * robust spread."""
    image_scores: list[float]
    pixel_mean: float
    pixel_std: float
    method: str  # "holdout", "N-fold" or "leave-one-out"

    def _centre_spread(self) -> tuple[float, float]:
        s = np.asarray(self.image_scores, np.float64)
        centre = float(np.median(s))
        spread = MAD_TO_STD * float(np.median(np.abs(s - centre)))
        if spread <= 0.0:  # more than half the scores are equal: fall back to the std
            spread = float(s.std(ddof=1))
        return centre, max(spread, 1e-12)

    def image_threshold(self, sigma: float) -> float:
        centre, spread = self._centre_spread()
        return centre + sigma * spread

    def pixel_threshold(self, sigma: float) -> float:
        return float(self.pixel_mean + sigma * self.pixel_std)

    def sigma_for(self, threshold: float) -> float:
        """The k that gives this image threshold (a dragged line, a separating threshold)."""
        centre, spread = self._centre_spread()
        return float((threshold - centre) / spread)

    def false_reject_rate(self, threshold: float) -> float:
        """Expected share of good parts rejected: the calibration images at or above it (they
        were scored against banks without them, as a new good part is)."""
        return float(np.mean(np.asarray(self.image_scores) >= threshold))


@dataclass
class Settings:
    backbone: str = "efficientnet_lite0"
    image_size: int = 256
    sampler: str = "greedy"
    sampling_ratio: float = 0.01
    sigma: float = 3.0
    seed: int = 0
    holdout: float = 0.2
    min_region_area: int = 16  # pixels on the model's input-size map
    weights: str | None = None  # an explicit backbone weight file; None: embedded or torch hub cache
    feature_version: int = FEATURE_VERSION  # the patch features the bank holds (see backbones)


@dataclass
class Model:
    product: str
    settings: Settings
    memory_bank: np.ndarray  # (K, C) float32 patch features
    calibration: Calibration
    counts: dict = field(default_factory=dict)
    created: str = ""
    versions: dict = field(default_factory=dict)
    model_id: str = ""

    @property
    def threshold(self) -> float:
        return self.calibration.image_threshold(self.settings.sigma)

    @property
    def pixel_threshold(self) -> float:
        return self.calibration.pixel_threshold(self.settings.sigma)

    def metadata(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "product": self.product,
            "model_id": self.model_id, "created": self.created, "versions": self.versions,
            "settings": asdict(self.settings), "counts": self.counts,
            "threshold": self.threshold, "pixel_threshold": self.pixel_threshold,
            "calibration": asdict(self.calibration),
        }


def _bank_bytes(bank: np.ndarray) -> bytes:
    from safetensors.numpy import save

    return save({"memory_bank": np.ascontiguousarray(bank, dtype=np.float32)})


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def save_model(model: Model, models_dir: str | Path) -> Path:
    """Write the model as `<models_dir>/<product>/`, replacing any previous one atomically."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / check_product_name(model.product)
    data = _bank_bytes(model.memory_bank)
    digest = hashlib.sha256(data).hexdigest()
    model.model_id = digest[:12]
    meta = model.metadata() | {"bank_sha256": digest}
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=models_dir))
    try:
        (staging / BANK_FILE).write_bytes(data)
        _write_json(staging / META_FILE, meta)
        old = None
        if final.exists():
            old = models_dir / f".{final.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def save_sigma(model: Model, models_dir: str | Path, sigma: float) -> None:
    """Store a new sensitivity: only the metadata changes, the memory bank stays."""
    model.settings.sigma = float(sigma)
    path = Path(models_dir) / model.product / META_FILE
    meta = _read_meta(path)
    _write_json(path, meta | model.metadata())


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"No model at {path.parent}: train the product first.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"The model file {path} is damaged ({exc}); train the product again.") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path} is not an Inspector model file.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path} has model format {meta.get('format_version')!r}; this Inspector reads "
                         f"format {FORMAT_VERSION}. Train the product again with this version.")
    return meta


def load_model(models_dir: str | Path, product: str) -> Model:
    folder = Path(models_dir) / check_product_name(product)
    meta = _read_meta(folder / META_FILE)
    try:
        data = (folder / BANK_FILE).read_bytes()
    except OSError as exc:
        raise ModelError(f"The memory bank of '{product}' cannot be read ({exc}); train it again.") from exc
    if hashlib.sha256(data).hexdigest() != meta.get("bank_sha256"):
        raise ModelError(f"The memory bank of '{product}' does not match its checksum: the model "
                         f"was modified or damaged. Train the product again.")
    try:
        from safetensors.numpy import load

        bank = load(data)["memory_bank"]
        raw = meta["settings"] | {"feature_version": meta["settings"].get("feature_version", 1)}
        settings = Settings(**{f.name: raw[f.name] for f in fields(Settings)})
        calibration = Calibration(**meta["calibration"])
        model = Model(product=meta["product"], settings=settings, memory_bank=bank,
                      calibration=calibration, counts=meta["counts"], created=meta["created"],
                      versions=meta["versions"], model_id=meta["model_id"])
    except Exception as exc:  # malformed content of any kind is a damaged model
        raise ModelError(f"The model of '{product}' is incomplete or damaged ({exc!r}); "
                         f"train it again.") from exc
    if settings.feature_version != FEATURE_VERSION:
        raise ModelError(f"The model of '{product}' was trained with patch features of version "
                         f"{settings.feature_version}, which scored the image border wrongly; this Inspector "
                         f"uses version {FEATURE_VERSION}. Train the product again.")
    spec = BACKBONES.get(settings.backbone)
    if spec is None:
        raise ModelError(f"The model of '{product}' uses backbone '{settings.backbone}', which this "
                         f"Inspector does not know.")
    if bank.ndim != 2 or bank.shape[1] != spec.feature_dim or not np.isfinite(bank).all():
        raise ModelError(f"The memory bank of '{product}' has shape {bank.shape}, expected "
                         f"(N, {spec.feature_dim}) finite values; train it again.")
    if len(calibration.image_scores) < 2:
        raise ModelError(f"The model of '{product}' has no usable calibration; train it again.")
    return model


def list_models(models_dir: str | Path) -> list[dict]:
    """Metadata of every readable model, by product name; damaged ones carry an 'error'."""
    out = []
    root = Path(models_dir)
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            out.append(_read_meta(folder / META_FILE))
        except ModelError as exc:
            out.append({"product": folder.name, "error": str(exc)})
    return out


def delete_model(models_dir: str | Path, product: str) -> None:
    shutil.rmtree(Path(models_dir) / check_product_name(product))


def rename_model(models_dir: str | Path, product: str, new_name: str) -> None:
    root = Path(models_dir)
    new_name = check_product_name(new_name)
    if (root / new_name).exists():
        raise ModelError(f"A product named '{new_name}' already exists.")
    os.replace(root / check_product_name(product), root / new_name)
    path = root / new_name / META_FILE
    if path.exists():  # an untrained product is an empty folder
        _write_json(path, _read_meta(path) | {"product": new_name})


def runtime_versions() -> dict:
    import cv2
    import onnxruntime

    return {"inspector": __version__, "numpy": np.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__}
