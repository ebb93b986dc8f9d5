import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from conftest import as_unprivileged

from inspector.data import images
from inspector.data.images import IMAGE_SUFFIXES, file_key, list_images, load_image
from inspector.errors import ImageError, IncompleteImage, SourceError

RGB = (200, 100, 30)


def color_bgr(dtype=np.uint8, scale=1):
    """A 24x32 image, left half RGB, right half black, as OpenCV's BGR."""
    image = np.zeros((24, 32, 3), dtype)
    image[:, :16] = np.array(RGB[::-1]) * scale
    return image


def check_rgb(loaded, tolerance=0):
    assert loaded.shape == (24, 32, 3) and loaded.dtype == np.uint8 and loaded.flags.c_contiguous
    assert np.abs(loaded[12, 4].astype(int) - RGB).max() <= tolerance
    assert loaded[12, 28].max() <= tolerance


@pytest.mark.parametrize("suffix, tolerance", [(".png", 0), (".jpg", 6), (".jpeg", 6), (".bmp", 0), (".tif", 0)])
def test_color_round_trip(tmp_path, suffix, tolerance):
    path = tmp_path / f"part{suffix}"
    assert cv2.imwrite(str(path), color_bgr())
    check_rgb(load_image(path), tolerance)


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_16_bit_color_keeps_high_byte(tmp_path, suffix):
    path = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(path), color_bgr(np.uint16, 256) + 0x7F)  # low byte must be dropped
    check_rgb(load_image(path))


@pytest.mark.parametrize("suffix, dtype, value, expected", [
    (".png", np.uint8, 77, 77), (".jpg", np.uint8, 77, 77), (".bmp", np.uint8, 77, 77),
    (".png", np.uint16, 0xABCD, 0xAB), (".tif", np.uint16, 0xABCD, 0xAB),
])
def test_gray_is_replicated_to_three_channels(tmp_path, suffix, dtype, value, expected):
    path = tmp_path / f"gray{suffix}"
    assert cv2.imwrite(str(path), np.full((10, 12), value, dtype))
    loaded = load_image(path)
    assert loaded.shape == (10, 12, 3) and loaded.dtype == np.uint8
    assert np.abs(loaded.astype(int) - expected).max() <= 1


def test_alpha_is_dropped(tmp_path):
    bgra = np.dstack([color_bgr(), np.full((24, 32), 10, np.uint8)])
    path = tmp_path / "alpha.png"
    assert cv2.imwrite(str(path), bgra)
    check_rgb(load_image(path))


def test_unicode_file_name(tmp_path):
    path = tmp_path / "prüfteil_ß_検査.png"
    cv2.imencode(".png", color_bgr())[1].tofile(path)
    check_rgb(load_image(path))
    check_rgb(load_image(str(path)))


def encoded(suffix):
    return cv2.imencode(suffix, np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[1].tobytes()


def png_claiming(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name, content, cause", [
    ("empty.png", b"", "empty"),
    ("cut.png", encoded(".png")[:3000], "truncated"),
    ("cut.jpg", encoded(".jpg")[:1500], "truncated"),
    ("noise.png", np.random.default_rng(1).bytes(2000), "not an image"),
    ("notes.jpg", b"this is a text file, not a photo", "not an image"),
    ("huge.png", png_claiming(100_000, 100_000), "100000x100000"),
    ("wide.png", png_claiming(30_000, 10), "30000x10"),
])
def test_bad_file_raises_image_error_naming_file_and_cause(tmp_path, name, content, cause):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert name in str(error.value) and cause in str(error.value)


def test_size_limit_applies_to_formats_without_cheap_header(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    assert cv2.imwrite(str(path), color_bgr())
    monkeypatch.setattr(images, "MAX_PIXELS", 500)
    with pytest.raises(ImageError, match="32x24"):
        load_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_unreadable_file(open_tmp):
    path = open_tmp / "locked.png"
    assert cv2.imwrite(str(path), color_bgr())
    path.chmod(0)

    def check():
        with pytest.raises(ImageError, match="permission"):
            load_image(path)

    as_unprivileged(check)


def test_list_images_sorted_flat_case_insensitive(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.Tiff", "d.bmp", "e.jpeg", "f.tif", "notes.txt", "g.png.part"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "OK").mkdir()
    (tmp_path / "OK" / "inner.png").write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "c.Tiff", "d.bmp", "e.jpeg", "f.tif"]
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} == set(IMAGE_SUFFIXES)


def test_list_images_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(SourceError, match="not a folder"):
        list_images(tmp_path / "file.png")


def test_file_key_changes_with_content(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"12345")
    key = file_key(path)
    resolved, size, mtime_ns = key.rsplit("|", 2)
    assert resolved == str(path.resolve()) and size == "5" and int(mtime_ns) == path.stat().st_mtime_ns
    assert file_key(tmp_path / "." / "a.png") == key
    path.write_bytes(b"123456")
    assert file_key(path) != key
    with pytest.raises(ImageError):
        file_key(tmp_path / "gone.png")


def test_valid_images_with_padding_or_a_trailer_are_not_truncated(tmp_path):
    jpeg = tmp_path / "padded.jpg"
    jpeg.write_bytes(cv2.imencode(".jpg", color_bgr())[1].tobytes() + bytes(1024))  # a camera's zero padding
    check_rgb(load_image(jpeg), tolerance=6)
    png = tmp_path / "trailer.png"
    png.write_bytes(cv2.imencode(".png", color_bgr())[1].tobytes() + b"vendor trailer " * 5 + bytes(5))  # 80 bytes
    check_rgb(load_image(png))


def test_cut_short_and_empty_files_are_incomplete(tmp_path):
    for suffix in (".png", ".jpg"):
        data = encoded(suffix)
        path = tmp_path / f"half{suffix}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(IncompleteImage, match="truncated"):
            load_image(path)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(IncompleteImage, match="empty"):
        load_image(tmp_path / "zero.png")


def jpeg_claiming(width, height):
    """A real small JPEG whose start-of-frame header claims another size."""
    data = bytearray(encoded(".jpg"))
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    data[at + 5:at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_huge_jpeg_is_refused_from_its_header_before_decoding(tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(jpeg_claiming(20001, 20001))
    code = ("import re\n"
            "from pathlib import Path\n"
            "from inspector.data.images import load_image\n"
            "from inspector.errors import ImageError\n"
            "try:\n"
            f"    load_image({str(path)!r})\n"
            "except ImageError as exc:\n"
            "    print(exc)\n"
            "status = Path('/proc/self/status')\n"  # the peak memory of this program (Linux)
            "print(int(re.search(r'VmHWM:\\s*(\\d+)', status.read_text()).group(1)) // 1024 if status.exists() else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "20001x20001 pixels, larger than the limit" in out[0]
    assert int(out[1]) < 600  # MB: decoding it would take 1.2 GB


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_links_that_lead_nowhere_are_image_errors(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    assert [p.name for p in list_images(tmp_path)] == ["dangling.png", "loop.png"]  # listed: reported, not hidden
    with pytest.raises(ImageError, match="Cannot read"):
        load_image(tmp_path / "loop.png")
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "dangling.png")
    assert file_key(tmp_path / "loop.png").split("|")[1] == "link"  # one key per link: logged once
    assert file_key(tmp_path / "dangling.png") == file_key(tmp_path / "dangling.png")


def test_list_images_recursive(tmp_path):
    for name in ("a.png", "scratch/b.png", "stain/deep/c.jpg", "stain/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "a.png", "scratch/b.png", "stain/deep/c.jpg"]


def test_png_loads_the_same_without_pyspng(tmp_path, monkeypatch):
    """pyspng is optional: without it OpenCV decodes the same pixels and gives the same errors."""
    path = tmp_path / "rgb.png"
    image = np.random.default_rng(2).integers(0, 255, (48, 40, 3), np.uint8)
    path.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    (tmp_path / "cut.png").write_bytes(encoded(".png")[:3000])
    fast = load_image(path)  # with pyspng where it is installed (x86-64, macOS, Windows)
    monkeypatch.setattr(images, "pyspng", None)
    slow = load_image(path)
    assert np.array_equal(fast, slow) and np.array_equal(slow, image[:, :, ::-1])
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "cut.png")


# ---- what a shared folder may hold (issue 19) -----------------------------------------------

@pytest.mark.skipif(os.name == "nt", reason="named pipes and /dev/zero are POSIX")
def test_only_regular_files_are_read(tmp_path):
    """A named pipe never blocks (no writer ever comes); a link to /dev/zero is not read."""
    os.mkfifo(tmp_path / "x.png")
    with pytest.raises(ImageError, match="named pipe"):
        load_image(tmp_path / "x.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(ImageError, match="a device"):
        load_image(tmp_path / "zero.png")


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.png"
    with open(path, "wb") as f:  # sparse: no disk space, but reading it would take a gigabyte
        f.write(encoded(".png"))
        f.truncate(images.MAX_FILE_BYTES + 1)
    with pytest.raises(ImageError, match="more than the limit"):
        load_image(path)


def test_a_jpeg_with_a_long_trailer_after_its_end_is_complete(tmp_path):
    path = tmp_path / "trailer.jpg"
    path.write_bytes(cv2.imencode(".jpg", color_bgr())[1].tobytes() + b"camera vendor data " * 20)  # 380 bytes
    check_rgb(load_image(path), tolerance=6)
    cut = encoded(".jpg")
    path.write_bytes(cut[: len(cut) - 40])
    with pytest.raises(IncompleteImage, match="truncated"):
        load_image(path)


@pytest.mark.parametrize("suffix", [".bmp", ".tif"])
def test_a_bmp_or_tiff_cut_short_is_incomplete(tmp_path, suffix):
    data = cv2.imencode(suffix, np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8))[1].tobytes()
    path = tmp_path / f"half{suffix}"
    for cut in (len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(IncompleteImage, match="truncated"):
            load_image(path)
    path.write_bytes(data)
    assert load_image(path).shape == (64, 80, 3)


def tiff_claiming(width, height):
    """A real small TIFF whose directory claims another size."""
    data = bytearray(encoded(".tif"))
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    for at in range(ifd + 2, ifd + 2 + 12 * struct.unpack(order + "H", data[ifd:ifd + 2])[0], 12):
        tag, kind = struct.unpack(order + "HH", data[at:at + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            data[at + 8:at + 12] = struct.pack(order + ("HH" if kind == 3 else "I"), *(
                (value, 0) if kind == 3 else (value,)))
    return bytes(data)


def test_a_huge_tiff_is_refused_from_its_header_before_decoding(tmp_path):
    path = tmp_path / "huge.tif"
    path.write_bytes(tiff_claiming(30000, 30000))
    with pytest.raises(ImageError, match="30000x30000 pixels, larger than the limit"):
        load_image(path)
