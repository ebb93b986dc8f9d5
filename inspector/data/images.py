"""Safe image loading: every failure becomes an `ImageError` naming the file and the cause.

Files are read as bytes and decoded with `cv2.imdecode`, so paths with any characters work on every OS
(`cv2.imread` cannot open non-ASCII paths on Windows)."""

from __future__ import annotations

import os
import re
import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np

try:  # optional: libspng decodes 8-bit RGB PNGs ~25% faster than OpenCV
    import pyspng
except ImportError:
    pyspng = None

from inspector.errors import ImageError, IncompleteImage, SourceError
from inspector.files import NotReadable, read_regular

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

# Larger images are refused before decoding (where the header is cheap to read) or after.
MAX_SIDE = 20_000
MAX_PIXELS = 100_000_000
MAX_FILE_BYTES = 1 << 30  # larger files are refused before reading (16-bit RGBA at MAX_PIXELS: 800 MB)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8"
_TAIL = 32  # bytes before trailing zero padding searched for the JPEG end marker
# JPEG start-of-frame markers (they carry the size): C0-CF but DHT (C4), JPG (C8), DAC (CC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker after entropy-coded data (not a stuffed 0xFF)
_TIFF_ORDER = {b"II*\x00": "<", b"MM\x00*": ">"}
_TIFF_TYPE_SIZE = {1: 1, 2: 1, 6: 1, 7: 1, 3: 2, 8: 2, 4: 4, 9: 4, 11: 4, 5: 8, 10: 8, 12: 8}


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of the image suffixes (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_image(path: str | Path) -> np.ndarray:
    """Load an image as an HxWx3 uint8 RGB C-contiguous array (`to_rgb8`: gray replicated to three channels, alpha
    dropped, 16-bit images reduced to their high byte, with no rescaling to the range the image uses)."""
    path = Path(path)
    data = _read_bytes(path)
    _check_complete(path, data)
    size = _header_size(data)
    if size is not None:
        _check_size(path, *size)
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 26:
        depth, color = data[24], data[25]  # IHDR, the first chunk
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
        raise ImageError(f"Cannot decode {path}: not an image or an unsupported format "
                         f"(supported: {', '.join(sorted(IMAGE_SUFFIXES))}).")
    _check_size(path, image.shape[1], image.shape[0])
    return to_rgb8(image, path)


def _load_or_error(path: Path, prepare: Callable | None = None):
    try:
        image = load_image(path)
        return image if prepare is None else prepare(image)
    except Exception as exc:  # noqa: BLE001 - a file's failure (ImageError, or e.g. MemoryError) goes with it
        return exc


def read_ahead(paths: Iterable[str | Path], depth: int = 2, prepare: Callable | None = None) -> Iterator[tuple[Path, Any]]:
    """(path, image or the exception loading it raised) for each path, in order, decoded by a
    background thread at most `depth` images ahead of the consumer (so memory stays bounded
    and stopping early waits for at most `depth` decodes). With `prepare`, the thread also
    gives each image to it and hands on what it returns instead of the image."""
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=1) as reader:
        for path in map(Path, paths):
            pending.append((path, reader.submit(_load_or_error, path, prepare)))
            if len(pending) > depth:
                path, future = pending.popleft()
                yield path, future.result()
        while pending:
            path, future = pending.popleft()
            yield path, future.result()


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """The image files in `folder` (with `recursive`, in its subfolders too), sorted by
    path. An entry with an image suffix that is not a folder is listed even when it cannot
    be read (a dangling or looping link): whoever reads it reports why it cannot be used."""
    folder = Path(folder)
    if not folder.exists():
        raise SourceError(f"Folder {folder} does not exist. Choose an existing folder of images.")
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder. Choose a folder that holds the images.")
    try:
        if recursive:
            found = [Path(root) / name for root, _, names in os.walk(folder) for name in names]
        else:
            found = list(folder.iterdir())
        return sorted(p for p in found if is_image_file(p) and not p.is_dir())
    except OSError as exc:
        raise SourceError(f"Cannot list folder {folder}: {exc.strerror or exc}.") from exc


def file_key(path: str | Path) -> str:
    """Identity of one version of a file: "<real path>|<size>|<mtime_ns>"; for a link that
    leads nowhere (dangling, looping), the link's own: "<path>|link|<mtime_ns>"."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise ImageError(f"Cannot read file {path}: {exc.strerror or exc}.") from exc
        return f"{os.path.abspath(path)}|link|{st.st_mtime_ns}"
    return f"{real}|{st.st_size}|{st.st_mtime_ns}"


def to_rgb8(image: np.ndarray, name: str | Path = "image") -> np.ndarray:
    """An OpenCV gray, BGR or BGRA array (8 bit, or 16: its high byte) as HxWx3 uint8 RGB; `name` for errors."""
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
    """The file's bytes; only a regular file is read, and only up to MAX_FILE_BYTES."""
    try:
        data = read_regular(path, MAX_FILE_BYTES)
    except NotReadable as exc:
        raise ImageError(f"Cannot use {exc}: only image files are inspected.") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"Image file {path} does not exist (moved or deleted?).") from exc
    except PermissionError as exc:
        raise ImageError(f"No permission to read {path}. Check the file's access rights.") from exc
    except OSError as exc:
        raise ImageError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    if not data:
        raise IncompleteImage(f"Image file {path} is empty (0 bytes): still being written, or the copy failed.")
    return data


def _png_complete(data: bytes) -> bool:
    """Walk the PNG's chunks to its IEND chunk (bytes after it, a trailer, are allowed)."""
    if data[-8:-4] == b"IEND":  # the usual end, without a trailer
        return True
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(data):
        length = struct.unpack(">I", data[at:at + 4])[0]
        if data[at + 4:at + 8] == b"IEND":
            return at + 12 <= len(data)
        at += 12 + length
    return False


def _jpeg_complete(data: bytes) -> bool:
    """The EOI marker ends the JPEG: at its end, before any zero padding a writer added, or
    where its segments and scans end, before a trailer of any length."""
    return b"\xff\xd9" in data.rstrip(b"\x00")[-_TAIL:] or any(m == 0xD9 for m, _ in _jpeg_markers(data))


def _jpeg_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of the JPEG's markers, over segments and scans, until its structure breaks."""
    at = 2
    while at + 2 <= len(data):
        if data[at] != 0xFF:
            return
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        yield marker, at
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        if at + 4 > len(data):
            return
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next marker
            found = _SCAN_END.search(data, at)
            if found is None:
                return
            at = found.start()


def _bmp_layout(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, file size) from a BMP's headers; None when it is not a BMP."""
    if not data.startswith(b"BM") or len(data) < 26:
        return None
    size, header = struct.unpack("<I", data[2:6])[0], struct.unpack("<I", data[14:18])[0]
    if header == 12:  # OS/2 core header: 16-bit sides
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = map(abs, struct.unpack("<ii", data[18:26]))
    return width, height, size


def _tiff_layout(data: bytes) -> tuple[int | None, int | None, int] | None:
    """(width, height, bytes needed) from a TIFF's first directory, read without decoding:
    the bytes needed reach the end of its directory and of its last strip or tile (more
    than the file holds: it is cut short). None when it is not a (classic) TIFF."""
    order = _TIFF_ORDER.get(data[:4])
    if order is None or len(data) < 8:
        return None
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return None, None, ifd + 2
    count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
    if ifd + 2 + 12 * count > len(data):
        return None, None, ifd + 2 + 12 * count
    values, needed = {}, ifd + 2 + 12 * count + 4  # the directory and the next one's offset
    for at in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind, n = struct.unpack(order + "HHI", data[at:at + 8])
        size = _TIFF_TYPE_SIZE.get(kind)
        if size is None:
            continue
        start = at + 8 if n * size <= 4 else struct.unpack(order + "I", data[at + 8:at + 12])[0]
        needed = max(needed, start + n * size)
        if start + n * size > len(data):
            return None, None, needed
        if tag in (256, 257, 273, 279, 324, 325) and kind in (1, 3, 4):  # sizes, strip and tile offsets
            code = order + {1: "B", 2: "H", 4: "I"}[size] * n
            values[tag] = struct.unpack(code, data[start:start + n * size])
    offsets, counts = values.get(273) or values.get(324) or (), values.get(279) or values.get(325) or ()
    needed = max([needed] + [o + c for o, c in zip(offsets, counts)])
    return (values.get(256) or (None,))[0], (values.get(257) or (None,))[0], needed


def _check_complete(path: Path, data: bytes) -> None:
    """A PNG must hold its IEND chunk, a JPEG its EOI marker, a BMP the size its header
    states, a TIFF its directory and every strip or tile; otherwise it was cut off."""
    bmp, tiff = _bmp_layout(data), _tiff_layout(data)
    if ((data.startswith(_PNG_SIGNATURE) and not _png_complete(data))
            or (data.startswith(_JPEG_SIGNATURE) and not _jpeg_complete(data))
            or (bmp is not None and bmp[2] > len(data)) or (tiff is not None and tiff[2] > len(data))):
        raise IncompleteImage(f"Image file {path} is truncated ({len(data)} bytes, its end is missing): "
                              "half-written or a failed copy. Copy it again.")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header, read before decoding (PNG, JPEG, BMP, TIFF)."""
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24:
        return struct.unpack(">II", data[16:24])  # IHDR, the first chunk
    if data.startswith(_JPEG_SIGNATURE):
        return _jpeg_size(data)
    layout = _bmp_layout(data) or _tiff_layout(data)
    if layout is not None and layout[0] is not None and layout[1] is not None:
        return layout[0], layout[1]
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the JPEG's start-of-frame header, read before any decoding."""
    for marker, at in _jpeg_markers(data):
        if marker in _JPEG_SOF and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
    return None


def _check_size(path: Path, width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(f"Image {path} is {width}x{height} pixels, larger than the limit "
                         f"({MAX_SIDE} px per side, {MAX_PIXELS:.0e} pixels). Use a smaller image.")


def image_shape(path: str | Path) -> tuple[int, int] | None:
    """(height, width) of an image file from its header, not decoded; None when unreadable (loading says why)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - any unreadable header (or no Pillow): the loader reports the file
        return None
    return height, width
