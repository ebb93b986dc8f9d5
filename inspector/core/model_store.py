"""The on-disk store of product models (core.model.Model): immutable versions.

One folder per product under the models directory, one subfolder per version:

    <product>/v0001/model.json               metadata, settings, calibration, thresholds,
    <product>/v0001/memory_bank.safetensors  the memory bank, the inspection region and the
                                             calibration's patch scores (data only, never unpickled)
    <product>/v0002/...                      the next change (training, tolerance, bank)

A version is never changed once written. A change writes the next version into a hidden
staging folder, makes it durable (fsync) and renames it into place, so a crash, a power cut
or a full disk leaves the versions before it intact, and a reader never sees half a version.
The newest version is the product's model; the last KEEP_VERSIONS are kept (a roll-back is
a new version holding an old one's content). The product's name is its folder's name.

`model.json` carries a SHA-256 checksum over everything that decides a verdict (settings,
calibration, thresholds and the memory bank's own SHA-256) and a signature (see "signing"),
and every field is validated on load. Older formats are read for re-signing: each is upgraded
to the newest, step by step (UPGRADES), before its fields are read."""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..files import read_regular
from ..signing import station_key
from .backbones import BACKBONES, FEATURE_VERSION
from .calibration import Calibration
from .model import PRODUCT_NAME, Model, Settings, check_product_name, field_problems, finite, validate

FORMAT = "inspector-model"
META_FILE = "model.json"
BANK_FILE = "memory_bank.safetensors"
KEEP_VERSIONS = 10
MAX_META_BYTES = 64 << 20  # larger model.json or memory bank files are refused before reading
MAX_BANK_BYTES = 4 << 30
STALE_STAGING_S = 3600.0  # a staging folder this old is left over from a crash
_VERSION_DIR = re.compile(r"^v(\d{4,})$")


# ---- the format and its upgrades ----------------------------------------------------------
# UPGRADES[n - 1] makes model.json of format n the same model in format n + 1 (the checksum and
# signature are those of the file as stored). Changing the fields of Settings or Calibration
# changes the format: add the step to the next, saying what the new fields are in older files.

def _settings(meta: dict, change) -> dict:
    settings = meta.get("settings")
    return meta | {"settings": change(settings)} if isinstance(settings, dict) else meta


def _to_format_2(meta: dict) -> dict:
    """Format 1 (in the product's folder, read as version 1) checksummed only the bank; settings
    older than their weight file and feature version have none and features of version 1 (refused)."""
    meta = {k: v for k, v in meta.items() if k != "bank_sha256"} | {
        "bank": {"file": BANK_FILE, "sha256": meta.get("bank_sha256")}}
    return _settings(meta, lambda s: {"weights": None, "feature_version": 1} | s)


def _to_format_4(meta: dict) -> dict:
    """Format 4 scales images by the smallest defect to find (`defect_size`, None before) instead of
    squashing them to image_size (None since), and calibrates k-fold (no held-out fraction)."""
    return _settings(meta, lambda s: {"defect_size": None} | {k: v for k, v in s.items() if k != "holdout"})


def _to_format_5(meta: dict) -> dict:
    """Format 5 names the threshold's k `tolerance` (`sigma` before) and the versions of the libraries
    that made the model `libraries` (`versions` before)."""
    meta = {("libraries" if k == "versions" else k): v for k, v in meta.items()}
    return _settings(meta, lambda s: {("tolerance" if k == "sigma" else k): v for k, v in s.items()})


# Format 3 adds the region and the calibration's patch scores beside the bank (an older Inspector
# must refuse them): model.json is unchanged.
UPGRADES = (_to_format_2, lambda meta: meta, _to_format_4, _to_format_5)
FORMAT_VERSION = len(UPGRADES) + 1
FORMAT_FIELDS = {  # the fields the newest format stores
    "settings": ("backbone", "defect_size", "image_size", "sampler", "sampling_ratio", "tolerance", "seed",
                 "min_region_area", "weights", "feature_version"),
    "calibration": ("image_scores", "pixel_mean", "pixel_std", "method")}


def _upgraded(meta: dict) -> dict:
    """model.json as read (of any format _read_meta accepts) in the newest format."""
    for number, step in enumerate(UPGRADES[meta["format_version"] - 1:], meta["format_version"] + 1):
        meta = step(meta) | {"format_version": number}
    return meta


def _metadata(model: Model) -> dict:
    """What model.json holds, but the checksum (and the bank's digest and shape)."""
    return ({"profile": model.profile} if model.profile is not None else {}) | {
        "format": FORMAT, "format_version": FORMAT_VERSION, "version": model.version,
        "created": model.created, "change": model.change, "libraries": model.libraries,
        "settings": asdict(model.settings), "counts": model.counts,
        "threshold": model.threshold, "pixel_threshold": model.pixel_threshold,
        "calibration": asdict(model.calibration),
    } | ({"defect_heads": model.heads.counts} if model.heads is not None else {}) | (
        {"acceptance": {"min_defect_area": model.min_defect_area, "mm_per_px": model.mm_per_px}}
        if model.min_defect_area or model.mm_per_px is not None else {}) | (
        {"good_folder": model.good_folder} if model.good_folder is not None else {})


# ---- saving --------------------------------------------------------------------------

HEADS_PREFIX = "defect_heads."  # the arrays of core.supervised.Heads, in the bank's file (its digest, signed)


def _bank_bytes(bank: np.ndarray, roi: np.ndarray | None = None, patch_scores: np.ndarray | None = None,
                heads=None) -> bytes:
    from safetensors.numpy import save

    arrays = {"memory_bank": np.ascontiguousarray(bank, dtype=np.float32)}
    if heads is not None:
        arrays |= {HEADS_PREFIX + k: np.ascontiguousarray(v) for k, v in heads.arrays().items()}
    if roi is not None:
        arrays["roi"] = np.ascontiguousarray(roi, dtype=np.uint8)
    if patch_scores is not None:
        arrays["calibration_patch_scores"] = np.concatenate([g.ravel() for g in patch_scores]).astype(np.float32)
        arrays["calibration_patch_shapes"] = np.array([g.shape for g in patch_scores], np.int64)
    return save(arrays)


def _checksum(meta: dict) -> str:
    return hashlib.sha256(_signed_bytes(meta)).hexdigest()


# ---- signing -----------------------------------------------------------------------------
# The checksum stops accidents; the signature stops edits. It is an HMAC-SHA256, with the
# station's key (inspector.signing), of the product's name and everything model.json holds
# but the checksum and the signature themselves: settings, calibration, thresholds, format,
# version number and the memory bank's digest, whatever fields a format adds. A model that
# is not signed with this station's key for this product (edited, copied from another
# product or station, or written before models were signed) is refused until an engineer
# re-signs it (services.resign: load_model(signed=False), saved as a new version).

def _signed_bytes(meta: dict) -> bytes:
    signed = {k: v for k, v in meta.items() if k not in ("checksum", "signature")}
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _signature(meta: dict, product: str, key: bytes) -> str:
    message = product.casefold().encode("utf-8", "surrogateescape") + b"\0" + _signed_bytes(meta)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _check_signature(meta: dict, product: str, version: int, key: bytes) -> None:
    signature = meta.get("signature")
    if not (isinstance(signature, str) and hmac.compare_digest(signature, _signature(meta, product, key))):
        why = ("it was written before models were signed" if signature is None else
               "it was edited, or copied from another product or another station")
        raise ModelError(f"Version {version} of the model of '{product}' is not signed by this station ({why}): "
                         f"it is not used. An engineer who has checked it can sign it as a new version: "
                         f"inspector models --resign --product '{product}' --version {version}.")


def signed_with(models_dir: str | Path, product: str, key: bytes) -> bool:
    """Is the product's newest version signed with `key` (a key about to be imported)?
    Only its signature is checked here; load_model checks everything."""
    folder = _product_folder(Path(models_dir), product)
    versions = _version_dirs(folder)
    if not versions:
        return False
    number = max(versions)
    try:
        _check_signature(_read_meta(versions[number] / META_FILE), folder.name, number, key)
    except (ModelError, OSError):
        return False
    return True


def _rebind(folder: Path, old: str, new: str, key: bytes) -> None:
    """Sign each version of a renamed product, that was signed for its old name, for the new
    one (model.json replaced in one rename; nothing else in it changes, nor its model id)."""
    for number, path in _version_dirs(folder).items():
        try:
            meta = _read_meta(path / META_FILE)
            _check_signature(meta, old, number, key)
        except (ModelError, OSError):
            continue  # not signed for the old name: it stays refused under the new one
        meta["signature"] = _signature(meta, new, key)
        tmp = path / f".{META_FILE}.{os.getpid()}.tmp"
        _write_durably(tmp, json.dumps(meta, indent=2, allow_nan=False).encode("utf-8"))
        os.replace(tmp, path / META_FILE)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename into it) durable; Windows has no directory fsync."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version_dirs(folder: Path) -> dict[int, Path]:
    """Every complete version of a product: number -> folder (format 1: the product's folder)."""
    found = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise ModelError(f"Cannot read the models folder {folder}: {exc}") from exc
    for entry in entries:
        match = _VERSION_DIR.match(entry.name)
        if match and entry.is_dir() and os.path.exists(os.path.join(entry.path, META_FILE)):
            found[int(match.group(1))] = Path(entry.path)
    if 1 not in found and (folder / META_FILE).is_file():
        found[1] = folder
    return found


def current_version(models_dir: str | Path, product: str) -> int | None:
    """The number of the product's newest model version, None when it has none (cheap: one
    folder listing, for the line to notice a change between items)."""
    versions = _version_dirs(Path(models_dir) / product)
    return max(versions) if versions else None


def version_folder(models_dir: str | Path, product: str, version: int) -> Path:
    """The folder holding the files (META_FILE, BANK_FILE) of a kept version of the product."""
    versions = _version_dirs(_product_folder(Path(models_dir), product))
    if version not in versions:
        raise ModelError(f"No version {version} of '{product}' in {models_dir}.")
    return versions[version]


def save_model(model: Model, models_dir: str | Path, change: str | None = None) -> Model:
    """Save the model as the product's next version; returns it as saved (with its version
    and model_id). Raises ModelError, leaving the earlier versions as they were, when the
    model is not valid or cannot be written."""
    validate(model)
    models_dir = Path(models_dir)
    folder = models_dir / check_product_name(model.product)
    bank = _bank_bytes(model.memory_bank, model.roi, model.calibration_patch_scores, model.heads)
    model = replace(model, change=model.change if change is None else change)
    key = station_key(models_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(folder)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    except OSError as exc:
        raise ModelError(f"Cannot save the model of '{model.product}' in {folder}: {exc}") from exc
    try:
        _write_durably(staging / BANK_FILE, bank)
        version = 0
        while True:
            version = max(max(_version_dirs(folder), default=0), version) + 1
            meta = _metadata(replace(model, version=version)) | {
                "bank": {"file": BANK_FILE, "sha256": hashlib.sha256(bank).hexdigest(),
                         "shape": list(model.memory_bank.shape)}}
            meta["checksum"] = _checksum(meta)
            meta["signature"] = _signature(meta, folder.name, key)
            _write_durably(staging / META_FILE, json.dumps(meta, indent=2, allow_nan=False).encode("utf-8"))
            _fsync_dir(staging)
            target = folder / f"v{version:04d}"
            try:
                os.rename(staging, target)
                break
            except OSError:
                if not target.exists():
                    raise
                # another process saved this version number meanwhile: take the next one
        _fsync_dir(folder)
    except OSError as exc:
        raise ModelError(f"Cannot save the model of '{model.product}' in {folder} ({exc}); "
                         f"the model there is unchanged.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(folder)
    return replace(model, version=version, model_id=meta["checksum"][:12])


def _remove_stale_staging(folder: Path) -> None:
    now = time.time()
    for path in folder.glob(".staging-*"):
        try:
            if now - path.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _prune(folder: Path) -> None:
    """Remove all but the last KEEP_VERSIONS versions (format 1 files with version 1)."""
    versions = _version_dirs(folder)
    for number in sorted(versions)[:-KEEP_VERSIONS]:
        path = versions[number]
        if path == folder:
            for name in (META_FILE, BANK_FILE):
                (folder / name).unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


# ---- loading ---------------------------------------------------------------------------

def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(read_regular(path, MAX_META_BYTES).decode("utf-8"), parse_constant=_no_constant,
                          parse_float=_finite_float)
    except FileNotFoundError:
        raise
    except RecursionError as exc:
        raise ModelError(f"The model file {path} is damaged (nested too deeply); train the product again.") from exc
    except (OSError, UnicodeDecodeError, ValueError, MemoryError) as exc:
        raise ModelError(f"The model file {path} is damaged ({exc}); train the product again.") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path} is not an Inspector model file.")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ModelError(f"{path} has model format {version!r}; this Inspector reads formats 1 to "
                         f"{FORMAT_VERSION}. Update Inspector, or train the product again.")
    return meta


def _section(meta: dict, name: str, cls, product: str):
    """Settings or Calibration from model.json: every field known, present and of the right type."""
    values = meta.get(name)
    if not isinstance(values, dict):
        raise ModelError(f"The model of '{product}' has no {name}: it is incomplete or damaged.")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ModelError(f"The model of '{product}' has unknown {name} {', '.join(unknown)}: it was "
                         f"written by a newer Inspector, or damaged.")
    missing = [n for n in known if n not in values]
    if missing:
        raise ModelError(f"The model of '{product}' lacks the {name} {', '.join(missing)}: it is "
                         f"incomplete or damaged.")
    obj = cls(**values)
    problems = field_problems(obj)
    if problems:
        raise ModelError(f"The model of '{product}' has invalid {name}: {'; '.join(problems)}.")
    return obj


def _checked_meta(folder: Path, product: str, version: int) -> tuple[dict, dict, str, Settings, Calibration]:
    """A version's model.json as stored, with its checksum checked, and in the newest format,
    with its fields checked: (as stored, newest, model id, settings, calibration)."""
    raw = _read_meta(folder / META_FILE)
    meta = _upgraded(raw)
    bank = meta.get("bank")
    if raw["format_version"] > 1:  # format 1 checksummed only the bank and stored no version number
        if raw.get("checksum") != _checksum(raw) or not isinstance(bank, dict):
            raise ModelError(f"The model of '{product}' (version {version}) does not match its checksum: "
                             f"it was modified or damaged. Train the product again.")
        if bank.get("file") != BANK_FILE:
            raise ModelError(f"The model of '{product}' names an unexpected bank file {bank.get('file')!r}.")
        if meta.get("version") != version:
            raise ModelError(f"The folder of version {version} of '{product}' holds version "
                             f"{meta.get('version')!r} (copied?): it is not used.")
    model_id = _checksum(raw)[:12]  # of what is loaded: never a stored claim
    settings = _section(meta, "settings", Settings, product)
    calibration = _section(meta, "calibration", Calibration, product)
    if settings.feature_version != FEATURE_VERSION:
        raise ModelError(f"The model of '{product}' was trained with patch features of version "
                         f"{settings.feature_version}, which scored the image border wrongly; this Inspector "
                         f"uses version {FEATURE_VERSION}. Train the product again.")
    return raw, meta, model_id, settings, calibration


def _grids(flat: np.ndarray | None, shapes: np.ndarray | None) -> list[np.ndarray] | None:
    """The calibration images' patch scores, one grid each: format 3 stored them as one (n, h, w)
    array, format 4 flat with each grid's shape."""
    if flat is None:
        return None
    if shapes is None:
        return list(flat) if flat.ndim == 3 else None
    if shapes.ndim != 2 or shapes.shape[1] != 2 or (shapes < 1).any() or int(shapes.prod(axis=1).sum()) != flat.size:
        raise ValueError("the calibration's patch scores do not match their shapes")
    ends = np.cumsum(shapes.prod(axis=1))
    return [part.reshape(shape) for part, shape in zip(np.split(flat, ends[:-1]), shapes.tolist())]


def _load_version(folder: Path, product: str, version: int, key: bytes | None) -> Model:
    """The version, checked in full; its signature too, unless `key` is None (re-signing)."""
    raw, meta, model_id, settings, calibration = _checked_meta(folder, product, version)
    data = read_regular(folder / BANK_FILE, MAX_BANK_BYTES)
    if hashlib.sha256(data).hexdigest() != meta["bank"].get("sha256"):
        raise ModelError(f"The memory bank of '{product}' does not match its checksum: the model "
                         f"was modified or damaged. Train the product again.")
    try:
        from safetensors.numpy import load

        arrays = load(data)
        bank = arrays.pop("memory_bank")
        roi = arrays.pop("roi", None)
        grids = _grids(arrays.pop("calibration_patch_scores", None), arrays.pop("calibration_patch_shapes", None))
        heads = _heads(arrays, meta)
        if arrays:
            raise ValueError(f"unknown arrays {', '.join(sorted(arrays))}")
        if roi is not None:
            if roi.dtype != np.uint8 or not np.isin(roi, (0, 1)).all():
                raise ValueError("the inspection region is not a mask of 0 and 1")
            roi = roi.astype(bool)
    except Exception as exc:  # noqa: BLE001 - malformed content of any kind is a damaged bank
        raise ModelError(f"The memory bank of '{product}' cannot be read ({exc!r}); train it again.") from exc
    counts, created, libraries = meta.get("counts", {}), meta.get("created", ""), meta.get("libraries", {})
    if not (isinstance(counts, dict) and isinstance(created, str) and isinstance(libraries, dict)):
        raise ModelError(f"The model of '{product}' has damaged counts, creation time or library versions.")
    if settings.backbone not in BACKBONES:  # named apart: a model from a newer Inspector, not damage
        raise ModelError(f"The model of '{product}' uses backbone '{settings.backbone}', which this "
                         f"Inspector does not know.")
    acceptance = meta.get("acceptance", {})
    area, scale = acceptance.get("min_defect_area", 0.0), acceptance.get("mm_per_px")
    if not (isinstance(acceptance, dict) and finite(area) and area >= 0
            and (scale is None or (finite(scale) and scale > 0))):
        raise ModelError(f"The model of '{product}' has a damaged minimum defect area or scale: {acceptance!r}.")
    model = Model(product, settings, bank, calibration, counts, created, libraries, model_id, version,
                  str(meta.get("change", "")), roi, grids, meta.get("profile"), heads, float(area), scale,
                  meta.get("good_folder"))
    validate(model)
    for name in ("threshold", "pixel_threshold"):
        stored, now = meta.get(name), getattr(model, name)
        if stored is not None and not (finite(stored) and math.isclose(stored, now, rel_tol=1e-9, abs_tol=1e-12)):
            raise ModelError(f"The model of '{product}' stores the {name.replace('_', ' ')} {stored!r}, but its "
                             f"calibration gives {now!r}: it was modified, or made by another method. "
                             f"Train the product again.")
    if key is not None:
        _check_signature(raw, product, version, key)
    return model


def _heads(arrays: dict, meta: dict):
    """The defect heads from the bank file's arrays (taken out of `arrays`), None without them."""
    from .supervised import Heads

    mine = {k[len(HEADS_PREFIX):]: arrays.pop(k) for k in list(arrays) if k.startswith(HEADS_PREFIX)}
    if not mine and "defect_heads" not in meta:
        return None
    counts = meta.get("defect_heads")
    if not mine or not isinstance(counts, dict):
        raise ValueError("the defect heads are incomplete")
    return Heads.from_arrays(mine, counts)


def _product_folder(models_dir: Path, product: str) -> Path:
    """The product's folder; a model that a crash of an older Inspector left in its
    '.<product>.old' folder is put back first."""
    folder = models_dir / check_product_name(product)
    old = models_dir / f".{folder.name}.old"
    if not folder.exists() and (old / META_FILE).is_file():
        try:
            os.replace(old, folder)
        except OSError:
            return old
    return folder


def load_model(models_dir: str | Path, product: str, version: int | None = None, signed: bool = True) -> Model:
    """The product's newest model version (or the given one), checked in full; with `signed`
    False its signature is not checked (only to re-sign it: resign_model)."""
    folder = _product_folder(Path(models_dir), product)
    key = station_key(models_dir) if signed else None
    for attempt in range(3):
        versions = _version_dirs(folder)
        number = version if version is not None else max(versions, default=None)
        if number is None or number not in versions:
            if version is not None and versions:
                raise ModelError(f"'{product}' has no version {version}: its kept versions are "
                                 f"{', '.join(map(str, sorted(versions)))} (see: models --product).")
            what = f"version {version} of '{product}'" if version is not None else f"model at {folder}"
            raise ModelError(f"No {what}: train the product first.")
        try:
            return _load_version(versions[number], folder.name, number, key)
        except FileNotFoundError:  # removed meanwhile (pruned, renamed, deleted): look again
            continue
        except OSError as exc:
            raise ModelError(f"The model of '{product}' cannot be read ({exc}); train it again.") from exc
    raise ModelError(f"The model of '{product}' cannot be read: it keeps changing or was removed.")


def list_models(models_dir: str | Path) -> list[dict]:
    """The model.json of every product's newest version (checked, but not its memory bank,
    which load_model checks), by product name, with 'product', 'version' and 'model_id';
    an untrained or damaged one carries an 'error'."""
    out = []
    root = Path(models_dir)
    if not root.is_dir():
        return out
    for old in root.glob(".*.old"):  # left by a crash of an older Inspector mid-save
        if PRODUCT_NAME.match(old.name[1:-4]):
            _product_folder(root, old.name[1:-4])
    key = station_key(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            versions = _version_dirs(folder)
            if not versions:
                raise ModelError(f"'{folder.name}' is not trained yet.")
            number = max(versions)
            out.append(_listed(versions[number], folder.name, number, key) | {"product": folder.name})
        except Exception as exc:  # noqa: BLE001 - one bad product never hides the others
            out.append({"product": folder.name, "error": _damage(exc)})
    return out


def _listed(folder: Path, product: str, number: int, key: bytes) -> dict:
    """A version's model.json in the newest format, checked (but not its memory bank) and signed,
    with its 'version', 'model_id' and the thresholds it gives (a format 1 file lacks them)."""
    raw, meta, model_id, settings, calibration = _checked_meta(folder, product, number)
    _check_signature(raw, product, number, key)
    return meta | {"version": number, "model_id": model_id, "threshold": calibration.image_threshold(settings.tolerance),
                   "pixel_threshold": calibration.pixel_threshold(settings.tolerance)}


def _damage(exc: BaseException) -> str:
    """Why a model cannot be listed, in words."""
    if isinstance(exc, ModelError):
        return str(exc)
    return f"The model cannot be read ({type(exc).__name__}: {exc}); train the product again."


def list_versions(models_dir: str | Path, product: str) -> list[dict]:
    """The model.json of every kept version of the product (checked, but not its memory bank),
    newest first, with 'version' and 'model_id'; a damaged one carries an 'error'."""
    out = []
    folder = _product_folder(Path(models_dir), product)
    versions, key = _version_dirs(folder), station_key(models_dir)
    for number in sorted(versions, reverse=True):
        try:
            out.append(_listed(versions[number], folder.name, number, key))
        except Exception as exc:  # noqa: BLE001 - one bad version never hides the others
            out.append({"version": number, "error": _damage(exc)})
    return out


def delete_model(models_dir: str | Path, product: str) -> None:
    """Remove the product and every version of its model (first out of sight, in one rename)."""
    root = Path(models_dir)
    folder = root / check_product_name(product)
    if not folder.is_dir():
        raise ModelError(f"There is no product '{product}' in {root}.")
    gone = root / f".deleted-{folder.name}-{os.getpid()}-{time.time_ns()}"
    try:
        os.rename(folder, gone)
    except OSError as exc:
        raise ModelError(f"Cannot delete the product '{product}': {exc}") from exc
    shutil.rmtree(gone, ignore_errors=True)


def rename_model(models_dir: str | Path, product: str, new_name: str) -> str:
    """Rename the product's folder (all its versions move with it); returns the new name."""
    root = Path(models_dir)
    new_name = check_product_name(new_name)
    source = root / check_product_name(product)
    if not source.is_dir():
        raise ModelError(f"There is no product '{product}' in {root}.")
    if (root / new_name).exists() and not (os.path.normcase(new_name) == os.path.normcase(source.name)):
        raise ModelError(f"A product named '{new_name}' already exists.")
    try:
        os.rename(source, root / new_name)
        _rebind(root / new_name, source.name, new_name, station_key(root))
    except OSError as exc:
        raise ModelError(f"Cannot rename the product '{product}' to '{new_name}': {exc}") from exc
    return new_name

