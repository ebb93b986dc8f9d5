"""Safe image loading: every failure becomes an `ImageError` naming the file and the cause.

Files are read as bytes and decoded with `cv2.imdecode`, so paths with any characters work
on every OS (`cv2.imread` cannot open non-ASCII paths on Windows).
"""

from __future__ import annotations

import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

try:  # optional: libspng decodes 8-bit RGB PNGs ~25% faster than OpenCV
    import pyspng
except ImportError:
    pyspng = None

from inspector.errors import ImageError, SourceError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

# Larger images are refused before decoding (where the header is cheap to read) or after.
MAX_SIDE = 20_000
MAX_PIXELS = 100_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8"
_TAIL = 32  # trailing bytes searched for the end marker (tolerates a little padding)


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of the image suffixes (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_image(path: str | Path) -> np.ndarray:
    """Load an image as an HxWx3 uint8 RGB C-contiguous array.

    Gray images are replicated to three channels, alpha is dropped, and 16-bit images are
    reduced to 8 bits by keeping the high byte (`value >> 8`), with no rescaling to the
    range actually used by the image.
    """
    path = Path(path)
    data = _read_bytes(path)
    _check_complete(path, data)
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 26:
        width, height, depth, color = struct.unpack(">IIBB", data[16:26])  # IHDR, the first chunk
        _check_size(path, width, height)
        if depth == 8 and color == 2 and pyspng is not None:  # 8-bit RGB, what cameras write
            try:
                return np.ascontiguousarray(pyspng.load(data))
            except Exception:  # not decodable by libspng: OpenCV below gives the error message
                pass
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"Cannot decode image {path}: {exc}".strip()) from exc
    if image is None:
        raise ImageError(
            f"Cannot decode {path}: not an image or an unsupported format "
            f"(supported: {', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    _check_size(path, image.shape[1], image.shape[0])
    return to_rgb8(image, path)


def _load_or_error(path: Path) -> np.ndarray | ImageError:
    try:
        return load_image(path)
    except ImageError as exc:
        return exc


def read_ahead(paths: Iterable[str | Path], depth: int = 2) -> Iterator[tuple[Path, np.ndarray | ImageError]]:
    """(path, image or its ImageError) for each path, in order, decoded by a background thread
    at most `depth` images ahead of the consumer (so memory stays bounded and stopping early
    waits for at most `depth` decodes)."""
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=1) as reader:
        for path in map(Path, paths):
            pending.append((path, reader.submit(_load_or_error, path)))
            if len(pending) > depth:
                path, future = pending.popleft()
                yield path, future.result()
        while pending:
            path, future = pending.popleft()
            yield path, future.result()


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in `folder` (not in subfolders), sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise SourceError(f"Folder {folder} does not exist. Choose an existing folder of images.")
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder. Choose a folder that holds the images.")
    try:
        return sorted(p for p in folder.iterdir() if is_image_file(p) and p.is_file())
    except OSError as exc:
        raise SourceError(f"Cannot list folder {folder}: {exc.strerror or exc}.") from exc


def file_key(path: str | Path) -> str:
    """Identity of one version of a file: "<resolved path>|<size>|<mtime_ns>"."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise ImageError(f"Cannot read file {path}: {exc.strerror or exc}.") from exc
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def to_rgb8(image: np.ndarray, name: str | Path = "image") -> np.ndarray:
    """Convert an OpenCV array (gray, BGR or BGRA; 8 or 16 bit) to HxWx3 uint8 RGB.
    16-bit values keep their high byte (`>> 8`). `name` goes into the error message."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"Image {name} has {image.dtype} pixels; only 8- and 16-bit images are supported.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"Image {name} has an unsupported channel layout {image.shape}.")


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image; the format follows the suffix; unicode paths work."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"Cannot encode an image as {path.suffix!r} for {path}.")
    path.write_bytes(data.tobytes())
    return path


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file.")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"Image file {path} does not exist (moved or deleted?).") from exc
    except PermissionError as exc:
        raise ImageError(f"No permission to read {path}. Check the file's access rights.") from exc
    except OSError as exc:
        raise ImageError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    if not data:
        raise ImageError(f"Image file {path} is empty (0 bytes): still being written, or the copy failed.")
    return data


def _check_complete(path: Path, data: bytes) -> None:
    """PNG must end with its IEND chunk, JPEG with the EOI marker; otherwise it was cut off."""
    tail = data[-_TAIL:]
    if (data.startswith(_PNG_SIGNATURE) and b"IEND" not in tail) or (
        data.startswith(_JPEG_SIGNATURE) and b"\xff\xd9" not in tail
    ):
        raise ImageError(
            f"Image file {path} is truncated ({len(data)} bytes, end marker missing): "
            "half-written or a failed copy. Copy it again."
        )


def _check_size(path: Path, width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(
            f"Image {path} is {width}x{height} pixels, larger than the limit "
            f"({MAX_SIDE} px per side, {MAX_PIXELS:.0e} pixels). Use a smaller image."
        )
