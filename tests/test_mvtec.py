from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.data.mvtec import MVTecCategory, TestSample, load_mask
from inspector.errors import SourceError

REAL_BOTTLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mvtec_ad" / "bottle"


def png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


@pytest.fixture
def category(tmp_path):
    root = tmp_path / "widget"
    part = np.full((16, 16, 3), 120, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 2:6] = 255
    for name in ["001.png", "000.png"]:
        png(root / "train" / "good" / name, part)
    png(root / "test" / "good" / "000.png", part)
    for defect in ["scratch", "crack"]:
        for name in ["000.png", "001.png"]:
            png(root / "test" / defect / name, part)
            png(root / "ground_truth" / defect / name.replace(".png", "_mask.png"), mask)
    (root / "test" / "crack" / "readme.txt").write_text("not an image")
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()  # a defect image without a mask
    return root


def test_parses_layout(category):
    dataset = MVTecCategory(category)
    assert dataset.name == "widget"
    assert [p.name for p in dataset.train_images] == ["000.png", "001.png"]
    assert dataset.test_samples == [
        TestSample(category / "test/crack/000.png", "crack", 1, category / "ground_truth/crack/000_mask.png"),
        TestSample(category / "test/crack/001.png", "crack", 1, None),
        TestSample(category / "test/good/000.png", "good", 0, None),
        TestSample(category / "test/scratch/000.png", "scratch", 1, category / "ground_truth/scratch/000_mask.png"),
        TestSample(category / "test/scratch/001.png", "scratch", 1, category / "ground_truth/scratch/001_mask.png"),
    ]
    with pytest.raises(AttributeError):
        dataset.test_samples[0].label = 0  # frozen


def test_load_mask_and_resize(category):
    path = category / "ground_truth/scratch/000_mask.png"
    mask = load_mask(path)
    assert mask.dtype == bool and mask.shape == (16, 16) and mask.sum() == 16 and mask[5, 3]
    small = load_mask(path, size=(8, 4))  # (width, height)
    assert small.shape == (4, 8) and small.dtype == bool
    assert set(np.unique(small)) == {False, True}


@pytest.mark.parametrize("remove, expected", [("train", "no train/good folder"), ("test", "no test folder")])
def test_not_a_layout(category, remove, expected):
    for path in sorted((category / remove).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (category / remove).rmdir()
    with pytest.raises(SourceError, match=expected):
        MVTecCategory(category)


def test_empty_train_folder(category):
    for path in (category / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(SourceError, match="no images in train/good"):
        MVTecCategory(category)


def test_missing_folder(tmp_path):
    with pytest.raises(SourceError, match="expected an MVTec-AD category folder"):
        MVTecCategory(tmp_path / "nothing")


@pytest.mark.skipif(not REAL_BOTTLE.is_dir(), reason="MVTec-AD bottle not available")
def test_real_bottle():
    dataset = MVTecCategory(REAL_BOTTLE)
    assert len(dataset.train_images) > 0
    defects = [s for s in dataset.test_samples if s.label == 1]
    assert defects and all(s.mask_path is not None and s.mask_path.is_file() for s in defects)
    assert all(s.mask_path is None for s in dataset.test_samples if s.defect_type == "good")
    first = defects[0]
    assert load_mask(first.mask_path, size=(64, 64)).shape == (64, 64)
