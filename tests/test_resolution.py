"""Images keep their shape and are seen at the resolution the defect needs: elongated images,
products whose images differ in size, large images in tiles, and a bank whose cost stays linear."""
import cv2
import numpy as np
import pytest

from inspector.core.features import (STRIDE, TILE, FeatureExtractor, default_defect_size, tile_spans,
                                     working_shape)
from inspector.core.memory_bank import BANK_PATCHES_PER_IMAGE, bank_entries
from inspector.core.model import Settings
from inspector.core.model_store import load_model, save_model
from inspector.core.scoring import Inspector
from inspector.core.training import train
from inspector.data.images import save_image
from inspector.synthetic import make_mesh


def meshes(folder, shapes, first=0):
    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(folder / f"mesh_{first + i:03d}.png", make_mesh(first + i, h, w))
            for i, (h, w) in enumerate(shapes)]


def test_the_working_size_keeps_the_aspect_ratio():
    # a 900 px square part works at 256 px by default, as before; an elongated one keeps its shape
    defect = default_defect_size([(900, 900)] * 3)
    assert working_shape(900, 900, defect) == (256, 256)
    assert working_shape(500, 1240, default_defect_size([(500, 1240)])) == (256, 640)
    assert working_shape(400, 1600, 4.0) == (800, 3200)  # a 4 px defect: twice the camera's pixels
    h, w = working_shape(333, 517, 8.0)
    assert (h % 16, w % 16) == (0, 0) and abs(h - 333) <= 8 and abs(w - 517) <= 8
    assert working_shape(900, 1200, None, 256) == (256, 256)  # models of format 3 and older: squashed


def test_tiles_cover_a_side_and_each_kept_patch_has_context():
    assert tile_spans(TILE) == (TILE, [(0, 0, TILE)])
    for length in (528, 640, 1008, 1024, 2000, 4096):
        size, spans = tile_spans(length)
        assert spans[0][1] == 0 and spans[-1][2] == length and size % 16 == 0 and size <= TILE
        assert len(spans) * size < 1.4 * length  # the overlap costs little
        for (start, keep_from, keep_to), following in zip(spans, spans[1:] + [None]):
            assert start % 16 == 0 and keep_from % STRIDE == 0 and start + size <= length
            if following is not None:
                assert keep_to == following[1]  # no gap, no overlap of what is kept
                assert keep_to - start >= TILE_CONTEXT and start + size - keep_to >= TILE_CONTEXT


TILE_CONTEXT = 56  # pixels: each kept patch sees at least this much of the image around it in its tile


def test_tiled_features_equal_the_whole_image_features():
    """A 1024 x 1024 image goes through the backbone as 2 x 2 overlapping tiles, stitched; its
    patch features are those of the whole image run at once, to 3 % on average and a fifth of a
    typical patch's length at the worst seam (the tiles' own borders are zero-padded)."""
    extractor = FeatureExtractor("efficientnet_lite0")
    batch = extractor.preprocess(make_mesh(3, 1024, 1024), (1024, 1024))[None]
    tiled, whole = extractor.features(batch)[0], extractor._run(batch)[0]
    assert tiled.shape == whole.shape == (128, 128, extractor.feature_dim)
    error = np.linalg.norm(tiled - whole, axis=-1) / np.linalg.norm(whole, axis=-1).mean()
    assert error.mean() < 0.03 and error.max() < 0.2


@pytest.fixture(scope="module")
def elongated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("elongated")
    return train("strip", meshes(folder, [(400, 1600)] * 10), Settings())[0]


def test_a_thin_scratch_in_an_elongated_image_is_found_and_boxed_at_its_place(elongated):
    """A 400 x 1600 image is seen at 256 x 1024 (not squashed into a square), in tiles; a scratch
    2 px wide shows as one NG box around it, and the good parts pass."""
    model = elongated
    assert model.settings.working_shape(400, 1600) == (256, 1024)
    inspector = Inspector(model)
    assert [inspector.inspect(make_mesh(s, 400, 1600)).verdict for s in (100, 101)] == ["OK", "OK"]
    image = make_mesh(102, 400, 1600)
    cv2.line(image, (1100, 120), (1300, 260), (255, 255, 255), 2)
    result = inspector.inspect(image)
    assert result.verdict == "NG" and result.anomaly_map.shape == (256, 1024)
    top = result.regions[0]
    assert top.x <= 1200 <= top.x + top.w and top.y <= 190 <= top.y + top.h
    assert 1000 <= top.x and top.x + top.w <= 1400 and top.h <= 300  # at its place, not the whole strip


def test_images_of_three_sizes_train_one_product(tmp_path):
    shapes = [(200, 312), (256, 256), (304, 176)] * 3
    model = train("tiles", meshes(tmp_path / "good", shapes), Settings())[0]
    grids = model.calibration_patch_scores
    expected = {tuple(side // 8 for side in model.settings.working_shape(h, w)) for h, w in shapes}
    assert len(grids) == 9 and {g.shape for g in grids} == expected and len(expected) == 3
    save_model(model, tmp_path / "models")
    loaded = load_model(tmp_path / "models", "tiles")
    assert all(np.array_equal(a, b) for a, b in zip(loaded.calibration_patch_scores, grids))
    inspector = Inspector(loaded)
    for h, w in ((200, 312), (304, 176), (240, 400)):  # the last size was never seen in training
        good = inspector.inspect(make_mesh(500 + h, h, w))
        bad = make_mesh(600 + h, h, w)
        cv2.circle(bad, (w // 2, h // 2), 9, (255, 255, 255), -1)
        flagged = inspector.inspect(bad)
        assert good.verdict == "OK" and flagged.verdict == "NG", (h, w, good.score, flagged.score)
        assert good.anomaly_map.shape == model.settings.working_shape(h, w)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large")
    return train("sheet", meshes(folder, [(768, 768)] * 8), Settings(defect_size=8.0))[0]


def test_a_defect_across_a_tile_border_scores_like_one_inside_a_tile(large):
    """The 768 px working image is four tiles cut at 384 px: the same spot on the cut and well
    inside a tile scores alike, and the good part passes."""
    assert len(tile_spans(768)[1]) == 2 and tile_spans(768)[1][0][2] == 384
    inspector = Inspector(large)
    assert inspector.inspect(make_mesh(300, 768, 768)).verdict == "OK"
    scores = []
    for where in ((384, 384), (180, 180), (580, 220)):  # on both cuts; inside; inside
        image = make_mesh(301, 768, 768)
        cv2.circle(image, where, 6, (255, 255, 255), -1)
        result = inspector.inspect(image)
        assert result.verdict == "NG"
        scores.append(result.score)
    assert scores[0] == pytest.approx(np.mean(scores[1:]), rel=0.1)


def test_the_bank_grows_with_the_images_not_with_their_pixels():
    assert bank_entries([1024] * 200, 0.01) == 2048  # 256 px images: as many as before
    assert bank_entries([62_500] * 200, 0.01) == bank_entries([BANK_PATCHES_PER_IMAGE] * 200, 0.01)


def test_an_image_too_large_for_the_products_scale_is_refused_with_the_reason():
    from inspector.errors import ImageError

    with pytest.raises(ImageError, match="smallest defect 2 px"):
        working_shape(8000, 8000, 2.0)


def test_a_good_image_too_large_for_the_scale_is_skipped_with_the_reason(tmp_path, monkeypatch):
    from inspector.core import features

    monkeypatch.setattr(features, "MAX_WORKING_PIXELS", 300 * 300)
    paths = meshes(tmp_path / "good", [(256, 256)] * 6 + [(400, 400)])
    model, good = train("sizes", paths, Settings(defect_size=8.0))
    assert len(good.paths) == 6 and good.skipped[0][0] == paths[-1] and "more than" in good.skipped[0][1]
    assert model.counts["skipped_images"] == 1
