import cv2
import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from inspector.evaluation.metrics import (aupro, best_f1, confusion, dice, image_auroc,
                                          per_type_auroc, pixel_auroc, roc)

LABELS = [0, 0, 1, 1, 1]
SCORES = [0.1, 0.6, 0.4, 0.7, 0.9]


def test_image_auroc_hand_cases():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert image_auroc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert image_auroc([0, 1], [0.5, 0.5]) == 0.5
    # pairs (good, defect): (.1,.5) (.1,.9) (.5,.9) won, (.5,.5) tied -> 3.5 / 4
    assert image_auroc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_image_auroc_matches_sklearn_with_many_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300) / 20 + 0.3 * labels
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_roc_curve_runs_from_origin_to_one():
    fpr, tpr, auc = roc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert auc == pytest.approx(0.875)


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        image_auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        image_auroc([0, 2], [0.1, 0.2])


def test_pixel_auroc_matches_sklearn_and_perfect_map():
    rng = np.random.default_rng(2)
    masks = rng.random((3, 8, 8)) < 0.2
    maps = (rng.integers(0, 10, (3, 8, 8)) + 4 * masks).astype(np.float32)
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert pixel_auroc(masks, masks.astype(np.float32)) == 1.0
    with pytest.raises(ValueError):
        pixel_auroc(masks, maps[:2])


def test_confusion_counts_and_rates():
    c = confusion(LABELS, SCORES, 0.6)  # 0.6 itself is NG
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 1, 1, 1)
    assert c["precision"] == pytest.approx(2 / 3)
    assert c["recall"] == pytest.approx(2 / 3)
    assert c["f1"] == pytest.approx(2 / 3)
    assert c["false_reject_rate"] == pytest.approx(1 / 2)
    assert c["escape_rate"] == pytest.approx(1 / 3)


def test_confusion_with_nothing_judged_ng_has_zero_precision():
    c = confusion(LABELS, SCORES, 5.0)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (0, 0, 2, 3)
    assert c["precision"] == 0.0 and c["f1"] == 0.0 and c["escape_rate"] == 1.0


def test_best_f1_hand_case():
    # threshold .4 -> tp 3, fp 1 (0.6), fn 0: F1 = 6/7, better than .7 (0.8) and .1 (0.75)
    f1, threshold = best_f1(LABELS, SCORES)
    assert f1 == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.4)


def test_best_f1_matches_exhaustive_search():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 30, 200) + 5 * labels
    f1, threshold = best_f1(labels, scores)
    brute = max(f1_score(labels, scores >= t) for t in np.unique(scores))
    assert f1 == pytest.approx(brute)
    assert confusion(labels, scores, threshold)["f1"] == pytest.approx(f1)


def test_dice_known_masks():
    pred = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 0]]], bool)
    gt = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 0]]], bool)
    # 2*1/(2+1), both empty -> 1, miss -> 0
    assert dice(pred, gt) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_per_type_auroc_against_all_good_images():
    types = ["good", "good", "good", "scratch", "scratch", "dent"]
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.5, 0.6, 0.15]
    assert per_type_auroc(types, labels, scores) == pytest.approx(
        {"dent": 1 / 3, "scratch": 1.0})


def brute_force_aupro(masks, maps, fpr_limit):
    """Threshold by threshold, region by region, then a clipped trapezoid loop."""
    regions = []
    for mask, amap in zip(masks, maps):
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [amap[labels == k] for k in range(1, count)]
    normal_scores = maps[~masks]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pro = np.mean([np.mean(r >= t) for r in regions])
        points.append((np.mean(normal_scores >= t), pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def test_aupro_hand_case():
    # region scores .9 .5, normal .8 .2 .1: PRO 1/2 until FPR 1/3, then 1
    masks = np.array([[[1, 1, 0, 0, 0]]], bool)
    maps = np.array([[[0.9, 0.5, 0.8, 0.2, 0.1]]], np.float32)
    assert aupro(masks, maps) == pytest.approx(0.5)
    assert aupro(masks, maps, fpr_limit=0.5) == pytest.approx((1 / 6 + 1 / 6) / 0.5)


def test_aupro_averages_regions_not_pixels():
    # region A (1 px) found at .9, region B (3 px) only at .1; normal pixels at .5
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0] = True
    masks[1, 0, :3] = True
    maps = np.full((2, 4, 4), 0.5, np.float32)
    maps[0, 0, 0] = 0.9
    maps[1, 0, :3] = 0.1
    assert aupro(masks, maps) == pytest.approx(0.5)  # pixel overlap would say 0.25


def test_aupro_regions_are_8_connected():
    mask = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], bool)
    amap = np.where(mask, 0.1, 0.5).astype(np.float32)
    amap[0, 0] = 0.9  # the diagonal pixel belongs to one 4-pixel region: PRO 1/4
    assert aupro(mask[None], amap[None]) == pytest.approx(0.25)


def test_aupro_perfect_map_is_one():
    rng = np.random.default_rng(4)
    masks = rng.random((4, 16, 16)) < 0.1
    assert aupro(masks, masks.astype(np.float32) + 0.01 * rng.random((4, 16, 16))) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fpr_limit", [0.3, 1.0])
def test_aupro_equals_brute_force(seed, fpr_limit):
    rng = np.random.default_rng(seed)
    masks = rng.random((3, 10, 10)) < 0.15
    masks[2] = False  # a good image: its pixels still count as normal
    maps = (rng.integers(0, 25, (3, 10, 10)) + 8 * masks).astype(np.float32)  # many ties
    assert aupro(masks, maps, fpr_limit) == pytest.approx(
        brute_force_aupro(masks, maps, fpr_limit))


def test_aupro_needs_regions():
    with pytest.raises(ValueError):
        aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), np.float32))


def test_curves_of_many_pixels_are_binned_to_within_1e_4_of_the_exact_area(monkeypatch):
    """Beyond EXACT_LIMIT samples (a test set's maps at their working sizes) the curve is made
    from evenly spaced score levels: the same area to 1e-4, in a few bytes a sample."""
    from inspector.evaluation import metrics

    rng = np.random.default_rng(0)
    labels = rng.random(300_000) < 0.05
    scores = (rng.normal(0, 1, labels.size) + 1.2 * labels).astype(np.float32)
    exact = metrics.image_auroc(labels, scores)
    monkeypatch.setattr(metrics, "EXACT_LIMIT", 1000)
    monkeypatch.setattr(metrics, "_CHUNK", 70_000)  # several chunks
    assert metrics.image_auroc(labels, scores) == pytest.approx(exact, abs=1e-4)
