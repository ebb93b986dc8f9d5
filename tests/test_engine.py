"""The engine on generated parts: backbones, ONNX runtime, memory bank, scoring, calibration."""
import os
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from inspector.core import backbones
from inspector.core.features import (EMBEDDED_BACKBONE, EXPORT_TOLERANCE, FeatureExtractor, Prepared, export_graph,
                                     find_graph, graph_name)
from inspector.core.memory_bank import bank_size, greedy_coreset, nearest_distance, random_sample, sample, search_index
from inspector.core.calibration import Calibration, separating_threshold
from inspector.core.model import Settings
from inspector.core.scoring import Inspector, anomaly_map, find_regions, patch_scores
from inspector.core.training import extract_features, fit, train
from inspector.errors import BackboneError, Cancelled, TrainingError
from inspector.data.images import save_image
from inspector.drawing import overlay
from inspector.paths import SHIPPED_GRAPHS
from inspector.synthetic import make_mesh, make_part, write_parts


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    good = write_parts(tmp_path_factory.mktemp("good"), 20, seed=0)
    model, features = train("part", good, Settings())
    return model, features


def test_unknown_backbone_is_refused():
    with pytest.raises(BackboneError, match="Unknown backbone 'vgg'"):
        backbones.get_spec("vgg")


def test_missing_torchvision_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BackboneError, match=r"resnet18-f37072fd\.pth.*--backbone-weights"):
        backbones.find_weights("resnet18")
    with pytest.raises(BackboneError, match="not found"):
        backbones.find_weights("resnet18", tmp_path / "nope.pth")


def test_wrong_weight_file_is_refused(tmp_path):
    import torch

    bad = tmp_path / "resnet18.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(BackboneError, match="does not hold resnet18 weights"):
        backbones.build_feature_module("resnet18", bad)


def test_shipped_graph_equals_the_feature_module(tmp_path):
    """The embedded backbone's graph ships inside the package, takes any size (multiples of 16),
    and computes what the feature module computes from the weights now, within the export
    tolerance, at square and elongated sizes; a fresh export agrees with it too. So the shipped
    graph cannot drift from the code: after a change of the feature module, run
    build/export_graphs.py and commit its graph."""
    import onnxruntime as ort
    import torch

    assert [p.name for p in SHIPPED_GRAPHS.glob("*.onnx")] == [graph_name(EMBEDDED_BACKBONE)]
    assert find_graph(EMBEDDED_BACKBONE) == SHIPPED_GRAPHS / graph_name(EMBEDDED_BACKBONE)
    module = backbones.build_feature_module(EMBEDDED_BACKBONE)
    extractor = FeatureExtractor(EMBEDDED_BACKBONE)
    noise = np.random.default_rng(0).integers(0, 256, (320, 320, 3), np.uint8)
    fresh = ort.InferenceSession(str(export_graph(EMBEDDED_BACKBONE, dest_dir=tmp_path)),
                                 providers=["CPUExecutionProvider"])
    for shape in ((256, 256), (96, 400), (224, 160)):
        batch = np.stack([extractor.preprocess(im, shape) for im in (make_part(1), make_part(2, defect="stain"), noise)])
        got = extractor._run(batch)
        with torch.no_grad():
            want = module(torch.from_numpy(batch)).numpy().transpose(0, 2, 3, 1)
        assert got.shape == (3, shape[0] // 8, shape[1] // 8, backbones.get_spec(EMBEDDED_BACKBONE).feature_dim)
        assert np.abs(got - want).max() <= EXPORT_TOLERANCE, shape
        again = fresh.run(None, {"image": batch})[0].transpose(0, 2, 3, 1)
        assert np.abs(got - again).max() <= EXPORT_TOLERANCE


def test_inspecting_a_saved_model_does_not_import_torch(trained, tmp_path):
    from inspector.core.model_store import save_model

    save_model(trained[0], tmp_path)
    code = (
        "import sys\n"
        "from inspector.core.model_store import load_model\n"
        "from inspector.core.scoring import Inspector\n"
        "from inspector.synthetic import make_part\n"
        f"r = Inspector(load_model({str(tmp_path)!r}, 'part')).inspect(make_part(5))\n"
        "print(r.verdict, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["OK", "False"]


def test_bank_size_bounds():
    assert bank_size(1000, 0.01) == 10
    assert bank_size(10, 0.001) == 1
    assert bank_size(10, 1.0) == 10
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(TrainingError):
            bank_size(10, bad)


def test_greedy_coreset_covers_every_cluster_and_is_deterministic():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [100, 0], [0, 100], [100, 100], [50, 50]], np.float32)
    points = np.concatenate([c + rng.normal(0, 1, (200, 2)) for c in centers]).astype(np.float32)
    picked = greedy_coreset(points, 5, seed=3)
    clusters = {int(np.argmin(((centers - points[i]) ** 2).sum(1))) for i in picked}
    assert clusters == {0, 1, 2, 3, 4}
    assert np.array_equal(picked, greedy_coreset(points, 5, seed=3))
    # a random sample of 5 out of 1000 almost never covers all 5 clusters; greedy always does
    assert np.array_equal(random_sample(points, 100, 7), random_sample(points, 100, 7))
    assert len(set(random_sample(points, 100, 7))) == 100


def test_sampling_reports_progress_and_cancels():
    feats = np.random.default_rng(0).normal(size=(2000, 8)).astype(np.float32)
    seen = []
    sample(feats, "greedy", 0.05, 0, lambda stage, done, total: seen.append((stage, done, total)))
    assert seen[-1] == ("sampling", 100, 100)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        sample(feats, "greedy", 0.05, 0, cancel=cancel)
    with pytest.raises(TrainingError, match="Unknown sampler"):
        sample(feats, "kmeans", 0.05, 0)


def test_nearest_distance_is_exact():
    rng = np.random.default_rng(1)
    q, bank = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(np.float32)
    brute = np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(nearest_distance(q, search_index(bank)), brute, atol=1e-4)


def test_regions_are_boxes_in_original_coordinates():
    amap = np.zeros((64, 64), np.float32)
    amap[10:20, 30:40] = 5.0
    amap[50:51, 5:6] = 9.0  # one pixel: below the minimum area
    regions = find_regions(amap, 1.0, 4, (640, 320))  # original image 640 wide, 320 high
    assert len(regions) == 1
    r = regions[0]
    assert (r.x, r.y, r.w, r.h) == (300, 50, 100, 50)
    assert r.area == 100 * 10 * 5 and r.peak == 5.0


def test_anomaly_map_is_smooth_and_sized():
    scores = np.zeros((32, 32), np.float32)
    scores[16, 16] = 1.0
    amap = anomaly_map(scores)
    assert amap.shape == (256, 256)
    assert anomaly_map(np.zeros((8, 40), np.float32)).shape == (64, 320)  # 8 px a patch, any shape
    assert 0 < amap.max() < 1.0 and np.unravel_index(amap.argmax(), amap.shape) in {(130, 130), (131, 131), (130, 131), (131, 130)}


def test_calibration_threshold_follows_sigma_without_rescoring():
    c = Calibration([10.0, 11.0, 12.0, 13.0, 14.0], pixel_mean=0.5, pixel_std=0.1, method="holdout")
    spread = 1.4826  # the median absolute deviation (1.0) scaled to a normal std
    assert c.image_threshold(0) == pytest.approx(12.0)
    assert c.image_threshold(2) == pytest.approx(12.0 + 2 * spread)
    assert c.tolerance_for(c.image_threshold(2.5)) == pytest.approx(2.5)
    assert c.pixel_threshold(3) == pytest.approx(0.8)
    assert c.false_reject_rate(13.5) == pytest.approx(0.2)


def test_an_unusual_good_part_does_not_lift_the_threshold_over_defects():
    """Max-of-patch scores are right-skewed: one good image far out in the tail inflates a
    standard deviation (mean + 3 std = 37 here, passing a defect at 20) but not the robust spread."""
    scores = [10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0, 13.5, 14.0, 40.0]
    assert np.mean(scores) + 3 * np.std(scores, ddof=1) > 20.0
    c = Calibration(scores, 0.0, 1.0, "holdout")
    assert c.image_threshold(3) < 20.0
    assert c.false_reject_rate(c.image_threshold(3)) == pytest.approx(0.1)


def test_equal_scores_fall_back_to_the_standard_deviation():
    c = Calibration([5.0, 5.0, 5.0, 5.0, 6.0], 0.0, 1.0, "5-fold")
    assert c.image_threshold(1) == pytest.approx(5.0 + np.std([5, 5, 5, 5, 6], ddof=1))


def test_separating_threshold_splits_known_defects_from_good_parts():
    assert separating_threshold([1.0, 2.0, 3.0], [5.0, 6.0]) == pytest.approx(4.0)
    # overlapping: the fewest errors (one good part at 7 rejected) wins over the widest gap
    assert separating_threshold([1.0, 2.0, 3.0, 7.0], [4.0, 5.0, 6.0]) == pytest.approx(3.5)


def test_trained_model_separates_good_and_defective_parts(trained):
    model, _ = trained
    assert model.calibration.method == "5-fold" and model.counts["calibration_images"] == 20
    inspector = Inspector(model)
    good = [inspector.inspect(make_part(s)) for s in range(100, 105)]
    bad = [inspector.inspect(make_part(s, defect=d)) for s, d in ((200, "scratch"), (201, "stain"))]
    assert [r.verdict for r in good] == ["OK"] * 5 and all(not r.regions for r in good)
    assert [r.verdict for r in bad] == ["NG", "NG"]
    assert min(r.score for r in bad) > 1.5 * max(r.score for r in good)
    stain = bad[1]
    assert stain.anomaly_map.shape == (256, 256) and stain.regions
    # the hottest box contains the hottest pixel of the map
    y, x = np.unravel_index(stain.anomaly_map.argmax(), stain.anomaly_map.shape)
    top = stain.regions[0]
    assert top.x <= x < top.x + top.w and top.y <= y < top.y + top.h


def test_the_map_is_at_the_working_size_and_is_stretched_only_where_drawn(trained):
    """The map is at the working size (here the parts' own 256 px), boxes are in the image's
    pixels around the map's hot spot, and the drawn overlay covers the image with the hot spot
    under the box (tests/test_resolution.py: elongated and differently sized images)."""
    model, _ = trained
    inspector = Inspector(model)
    image = make_part(201, defect="stain")
    result = inspector.inspect(image)
    assert result.verdict == "NG" and result.anomaly_map.shape == model.settings.working_shape(256, 256) == (256, 256)
    top = result.regions[0]
    y, x = np.unravel_index(result.anomaly_map.argmax(), result.anomaly_map.shape)
    assert top.x <= x < top.x + top.w and top.y <= y < top.y + top.h
    shown = overlay(image, result)
    assert shown.shape == image.shape
    hot = shown[top.y + top.h // 2, top.x + top.w // 2]
    assert hot[0] > hot[2]  # red over blue where the defect is


def test_an_image_prepared_ahead_is_used_only_by_the_extractor_that_made_it(trained):
    model, _ = trained
    inspector = Inspector(model)
    image = make_part(201, defect="stain")
    plain = inspector.inspect(image).score
    assert inspector.inspect(image, inspector.prepare(image)).score == pytest.approx(plain, abs=1e-5)
    blank = np.zeros((1, 3) + inspector.working_shape(image), np.float32)
    assert inspector.inspect(image, Prepared(image, inspector.extractor, blank)).score != pytest.approx(plain)
    wrong_size = np.zeros((1, 3, 128, 128), np.float32)  # prepared for another scale: prepared again
    assert inspector.inspect(image, Prepared(image, inspector.extractor, wrong_size)).score == pytest.approx(plain, abs=1e-5)
    other = FeatureExtractor(EMBEDDED_BACKBONE)  # e.g. a newer model's: it prepares again
    assert inspector.inspect(image, Prepared(image, other, blank)).score == pytest.approx(plain, abs=1e-5)


def test_blas_threads_sleep_after_work_in_every_process_that_imports_inspector():
    """OpenBLAS reads its spin timeout when numpy loads it: importing inspector sets it first,
    and a value the user set is kept."""
    code = "import os, sys, inspector; print(os.environ['OPENBLAS_THREAD_TIMEOUT'], 'numpy' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    run = [sys.executable, "-c", code]
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.split() == ["4", "False"]
    mine = subprocess.run(run, env=env | {"OPENBLAS_THREAD_TIMEOUT": "10"}, capture_output=True, text=True, check=True)
    assert mine.stdout.split()[0] == "10"
    cli = subprocess.run([sys.executable, "-c", "import sys, inspector.cli; print('numpy' in sys.modules)"],
                         env=env, capture_output=True, text=True, check=True)
    assert cli.stdout.strip() == "True"  # the command line's own import brings numpy after it


def test_refit_from_cached_features_changes_only_the_bank(trained):
    model, features = trained
    bigger = fit("part", features, Settings(sampling_ratio=0.05))
    assert len(bigger.memory_bank) == pytest.approx(5 * len(model.memory_bank), rel=0.05)


def test_calibration_method_follows_the_number_of_good_images(trained):
    _, features = trained
    few = type(features)(features.features[:5], features.paths[:5])
    model = fit("part", few, Settings(defect_size=8.0))
    assert model.calibration.method == "leave-one-out" and len(model.calibration.image_scores) == 5
    many = type(features)(features.features * 3, features.paths * 3)
    model = fit("part", many, Settings(defect_size=8.0))
    assert model.calibration.method == "5-fold" and model.counts["calibration_images"] == 60
    assert model.counts["bank_images"] == 60
    with pytest.raises(TrainingError, match="at least 5"):
        fit("part", type(features)(features.features[:3], features.paths[:3]), Settings(defect_size=8.0))


@pytest.mark.parametrize("copies", [1, 3])  # 20 and 60 images: 5-fold either way
def test_every_good_image_is_calibrated_once_and_reaches_the_memory_bank(trained, copies):
    """Every good image is scored once, against a bank built without its fold, and the final
    bank holds every good image: give each image one patch unlike any other, find all of them
    in the bank, and find each one far from its own calibration bank (it was not in it)."""
    _, features = trained
    feats = [f.astype(np.float32) for f in features.features * copies]
    for i, f in enumerate(feats):
        f[5, 5] = 50.0 + 10.0 * i
    model = fit("part", type(features)(feats, features.paths * copies), Settings(defect_size=8.0))
    bank = model.memory_bank
    for i, f in enumerate(feats):
        assert np.abs(bank - f[5, 5].astype(np.float16).astype(np.float32)).max(axis=1).min() < 0.05, \
            f"image {i} is not in the bank"
    grids = model.calibration_patch_scores
    assert len(grids) == len(model.calibration.image_scores) == len(feats)
    for i, grid in enumerate(grids):  # its own odd patch was not in the bank it was scored against
        assert grid[5, 5] == grid.max() and grid[5, 5] > 30.0, i


def test_unreadable_good_images_are_skipped_and_listed(tmp_path):
    paths = write_parts(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    extractor = FeatureExtractor("efficientnet_lite0")
    good = extract_features(paths + [tmp_path / "broken.png"], extractor, Settings(defect_size=8.0))
    assert len(good.features) == 3 and good.paths == paths
    assert good.skipped[0][0].name == "broken.png" and "truncated" in good.skipped[0][1]


def test_a_torchvision_backbone_runs_from_an_explicit_weight_file(tmp_path, monkeypatch):
    """resnet18 with a weight file given by path: exported to ONNX, cached under the file's
    digest (never confused with another weight file), and remembered by the trained model."""
    import torch
    import torchvision

    monkeypatch.setenv("INSPECTOR_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "my-resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    settings = Settings(backbone="resnet18", weights=str(weights))
    model, _ = train("rn", write_parts(tmp_path / "good", 5, size=64), settings)
    graphs = [p.name for p in (tmp_path / "cache" / "backbones").iterdir()]
    assert len(graphs) == 1 and graphs[0].startswith("resnet18-f2-") and model.memory_bank.shape[1] == 384
    assert Inspector(model).inspect(make_part(9, size=64)).verdict in ("OK", "NG")


def _border(grid: tuple[int, int], width: int = 1) -> np.ndarray:
    ring = np.zeros(grid, bool)
    ring[:width] = ring[-width:] = True
    ring[:, :width] = ring[:, -width:] = True
    return ring


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mesh")
    paths = [save_image(folder / f"{i}.png", make_mesh(i)) for i in range(20)]
    return train("mesh", paths, Settings())[0]


def test_a_good_textures_border_patches_score_like_its_interior(mesh):
    """Border patches must be comparable with interior ones: on good parts of a texture the
    outer ring of patches lies no farther from the memory bank than the rest and never decides
    the image score. (Averaged over fewer neighbours, the ring lay 20 % farther and did.)"""
    inspector = Inspector(mesh)
    ring = _border(tuple(s // 8 for s in inspector.working_shape(make_mesh(0))))
    for seed in (100, 101, 102):
        scores = patch_scores(inspector.features(make_mesh(seed)), search_index(mesh.memory_bank))
        assert scores[ring].mean() < 1.05 * scores[~ring].mean()
        assert not ring.ravel()[scores.argmax()]
        assert scores.max() < mesh.threshold


@pytest.mark.parametrize("where", [(128, 0), (0, 0), (255, 128), (255, 255)])
def test_a_defect_touching_the_image_edge_is_found(mesh, where):
    image = make_mesh(110)
    cv2.circle(image, where, 14, (200, 200, 200), -1)  # at a corner, a quarter of it shows
    result = Inspector(mesh).inspect(image)
    assert result.verdict == "NG" and result.regions
    top = result.regions[0]
    assert top.x <= where[0] < top.x + top.w and top.y <= where[1] < top.y + top.h
