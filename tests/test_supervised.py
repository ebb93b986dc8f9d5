"""Learning from known defects (core.supervised, evaluate --known-defects): the classifier learns
a recurring defect kind the bank scores like good parts, the segmentation head sharpens a blurred
map into the defect's mask, bad input is refused, small defects are accepted by size."""
import cv2
import numpy as np
import pytest

from conftest import known_defects_category
from inspector.cli import main
from inspector.core import supervised
from inspector.core.scoring import Region, anomaly_map
from inspector.errors import TrainingError

GRID = (12, 12)
C = 16


def _good(rng, n):
    return [supervised.Example(rng.normal(0, 1, GRID + (C,)).astype(np.float32),
                               rng.uniform(0.8, 1.2, GRID).astype(np.float32), "good") for _ in range(n)]


def _defect(rng, kind, blur=False):
    """A defect of a 3 x 3 patch square: its features are shifted along a direction of its kind;
    its bank distance is high (blurred over the neighbours) for 'hot' kinds, good-like otherwise."""
    f = rng.normal(0, 1, GRID + (C,)).astype(np.float32)
    d = rng.uniform(0.8, 1.2, GRID).astype(np.float32)
    y, x = rng.integers(1, GRID[0] - 4, 2)
    f[y:y + 3, x:x + 3, {"dent": 0, "hot": 1}[kind]] += 6.0
    if kind == "hot":
        spot = np.zeros(GRID, np.float32)
        spot[y:y + 3, x:x + 3] = 3.0
        d += cv2.GaussianBlur(spot, (0, 0), 2.0) * 4 if blur else spot
    mask = np.zeros((GRID[0] * 8, GRID[1] * 8), bool)
    mask[y * 8:(y + 3) * 8, x * 8:(x + 3) * 8] = True
    return supervised.Example(f, d, kind, mask)


def _heads(rng, defects_per_kind=6, blur=False):
    good = _good(rng, 40)
    defects = [_defect(rng, k, blur) for k in ("dent", "hot") for _ in range(defects_per_kind)]
    return supervised.train_heads(good, defects, 1.0, 1.5, seed=0)


def test_the_classifier_learns_a_defect_kind_the_bank_scores_like_good_parts():
    rng = np.random.default_rng(0)
    heads = _heads(rng)
    good, dents = _good(rng, 30), [_defect(rng, "dent") for _ in range(10)]
    assert all(d.bank_score < 1.5 for d in dents)  # the bank alone passes every one
    logit = lambda e: heads.classify(heads.inputs(e.features, e.distances), GRID)[0]  # noqa: E731
    assert sum(logit(d) >= heads.classifier_threshold for d in dents) >= 9
    # its threshold lies above the 40 good images it was set on: a new good one exceeds it about 1 in 41
    assert sum(logit(g) >= heads.classifier_threshold for g in good) <= 1
    # its class-activation map points at the defect
    d = dents[0]
    cam = heads.classify(heads.inputs(d.features, d.distances), GRID)[1]
    y, x = np.unravel_index(np.argmax(cam), GRID)
    assert d.mask[y * 8 + 4, x * 8 + 4]


def test_the_segmentation_head_sharpens_a_blurred_map_into_the_mask():
    rng = np.random.default_rng(1)
    heads = _heads(rng, blur=True)
    tests = [_defect(rng, "hot", blur=True) for _ in range(8)]

    def dice(pred, mask):
        return 2 * np.sum(pred & mask) / (pred.sum() + mask.sum())

    def drawn(t):  # the mask as the verdict draws it (core.scoring)
        segmentation = heads.segment(heads.inputs(t.features, t.distances), GRID)
        amap, threshold = heads.mask_map(segmentation, anomaly_map(t.distances))
        return amap >= threshold

    seg = np.mean([dice(drawn(t), t.mask) for t in tests])
    # the best a threshold on the blurred distances does
    up = lambda d: cv2.resize(d, (GRID[1] * 8, GRID[0] * 8), interpolation=cv2.INTER_LINEAR)  # noqa: E731
    blurred = max(np.mean([dice(up(t.distances) >= v, t.mask) for t in tests]) for v in np.linspace(1.5, 12, 40))
    assert seg >= 0.8 and seg > blurred + 0.05


def test_heads_are_data_only_arrays_that_round_trip():
    rng = np.random.default_rng(2)
    heads = _heads(rng)
    again = supervised.Heads.from_arrays(heads.arrays())
    e = _defect(rng, "hot")
    x = heads.inputs(e.features, e.distances)
    assert again.classify(x, GRID)[0] == pytest.approx(heads.classify(x, GRID)[0])
    assert np.allclose(again.segment(x, GRID), heads.segment(x, GRID))
    assert all(isinstance(v, np.ndarray) for v in heads.arrays().values())


def test_the_mask_rule_is_the_map_and_share_of_its_peak_with_the_best_dice_on_the_known_defects():
    rng = np.random.default_rng(4)
    masks, sharp, loose = [], [], []
    for _ in range(6):
        m = np.zeros((32, 32), bool)
        y, x = rng.integers(2, 20, 2)
        m[y:y + 3, x:x + 8] = True  # a thin defect
        masks.append(m)
        sharp.append(m * 1.0 + rng.uniform(0, 0.3, m.shape))  # peaks on the defect alone
        loose.append(cv2.GaussianBlur(m * 1.0, (0, 0), 4.0) + rng.uniform(0, 0.05, m.shape))  # a blur around it
    assert supervised._mask_rule(loose, sharp, masks)[0] == supervised.MASK_BANK_PEAK
    rule, share = supervised._mask_rule(sharp, loose, masks)
    assert rule == supervised.MASK_SEGMENTATION_PEAK
    assert all(np.array_equal(a >= share * a.max(), m) for a, m in zip(sharp, masks))  # Dice 1 on each
    heads = _heads(np.random.default_rng(5))
    heads.mask_rule, heads.segment_threshold = rule, share
    bank_map = sharp[0] * 2.0
    assert heads.mask_map(sharp[0], bank_map)[1] == pytest.approx(share * sharp[0].max())
    heads.mask_rule = supervised.MASK_BANK_PEAK
    drawn, threshold = heads.mask_map(None, bank_map)  # the bank's map needs no segmentation head
    assert drawn is bank_map and threshold == pytest.approx(share * bank_map.max())
    # heads saved before the rule (4 scalars) keep their absolute threshold on the segmentation
    arrays = heads.arrays()
    arrays["scalars"] = arrays["scalars"][:4]
    old = supervised.Heads.from_arrays(arrays)
    assert old.mask_rule == supervised.MASK_ABSOLUTE and old.mask_map(sharp[0], bank_map)[1] == pytest.approx(share)
    arrays["scalars"] = np.append(arrays["scalars"], 7.0)
    with pytest.raises(ValueError):
        supervised.Heads.from_arrays(arrays)


@pytest.mark.parametrize("case, words", [
    ("one defect", "Only 1 known defect"),
    ("one kind", "all of one kind"),
    ("wrong mask", "give each defect the mask of its own image"),
    ("good parts", "folder of good parts"),
])
def test_bad_known_defects_are_refused_with_what_to_do(case, words):
    rng = np.random.default_rng(3)
    good = _good(rng, 20)
    defects = {"one defect": [_defect(rng, "hot")],
               "one kind": [_defect(rng, "hot") for _ in range(6)],
               "wrong mask": [_defect(rng, k) for k in ("dent", "hot") for _ in range(3)],
               "good parts": [supervised.Example(g.features, g.distances, k) for g, k in
                              zip(_good(rng, 6), ["a", "b"] * 3)]}[case]
    if case == "wrong mask":
        defects[0].mask = np.zeros((50, 70), bool)
    with pytest.raises(TrainingError, match=words):
        supervised.train_heads(good, defects, 1.19, 1.5)


def test_regions_smaller_than_the_minimum_defect_area_are_accepted():
    regions = [Region(0, 0, 10, 10, 80, 2.0), Region(50, 50, 4, 4, 12, 1.5)]
    rejecting, accepted = supervised.accept_by_size(regions, 20)
    assert [r.area for r in rejecting] == [80] and [r.area for r in accepted] == [12]
    # in mm2 with the engineer's scale (0.1 mm a pixel): 80 px = 0.8 mm2, 12 px = 0.12 mm2
    assert supervised.area_in_mm2(80, 0.1) == pytest.approx(0.8)
    rejecting, accepted = supervised.accept_by_size(regions, 1.0, mm_per_px=0.1)
    assert rejecting == [] and len(accepted) == 2


def test_evaluate_known_defects_puts_bank_classifier_and_both_side_by_side(tmp_path, capsys):
    import json

    category = known_defects_category(tmp_path / "disc")
    out = tmp_path / "report.json"
    assert main(["evaluate", str(category), "--known-defects", "3", "--json", str(out),
                 "--models-dir", str(tmp_path / "m"), "--db", str(tmp_path / "l.db")]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["known_defects"] == 6 and report["held_back"] == {"good": 4, "defects": 6}
    for column in ("bank", "classifier", "both"):
        assert column in printed and 0.0 <= report[column]["image_auroc"] <= 1.0
    assert report["both"]["dice"] is not None
    # more known defects of a kind than it has: refused, said why
    assert main(["evaluate", str(category), "--known-defects", "6",
                 "--models-dir", str(tmp_path / "m"), "--db", str(tmp_path / "l.db")]) == 2
    assert "leaves none to score" in capsys.readouterr().err


def test_train_defects_makes_a_signed_version_whose_verdict_uses_both(tmp_path, capsys):
    from inspector.core.model_store import list_versions, load_model
    from inspector.core.scoring import Inspector
    from inspector.data.images import load_image

    category = known_defects_category(tmp_path / "disc")
    where = ["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]
    assert main(["train", str(category / "train" / "good"), "--product", "Disc"] + where) == 0
    assert main(["train-defects", str(category / "test"), "--product", "Disc",  # the good folder the model records
                 "--min-defect-area", "5"] + where) == 0
    assert "12 known defect(s) of 2 kind(s) (12 with masks)" in capsys.readouterr().out
    model = load_model(tmp_path / "models", "Disc")  # signed, checked in full
    assert model.version == 2 and model.heads is not None and model.min_defect_area == 5
    assert "known defect" in next(v["change"] for v in list_versions(tmp_path / "models", "Disc") if v["version"] == 2)
    inspector = Inspector(model)
    stain = inspector.inspect(load_image(category / "test" / "stain" / "000.png"))
    assert stain.verdict == "NG" and stain.regions and all(r.area >= 5 for r in stain.regions)
    assert stain.activation_map.shape == stain.segmentation.shape == stain.anomaly_map.shape
    good = inspector.inspect(load_image(category / "test" / "good" / "000.png"))
    assert good.verdict == "OK" and good.regions == [] and good.defect_logit is not None
    capsys.readouterr()  # inspect prints what the heads found under each part
    assert main(["inspect", str(category / "test" / "stain" / "000.png"), "--product", "Disc"] + where) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("NG") and out[1].strip().startswith("Defect classifier: probability")
    assert out[2].strip().startswith("Defects: ") and out[2].strip().endswith(" px")
    # a region smaller than the product accepts makes the part OK, its area said
    from dataclasses import replace

    lenient = Inspector(replace(model, min_defect_area=1e9), extractor=inspector.extractor)
    result = lenient.inspect(load_image(category / "test" / "stain" / "000.png"))
    assert result.verdict == "OK" and result.regions == [] and result.accepted and result.accepted[0].area > 0
    # a scale given is kept by a learning that does not name one, and 0 removes it
    for scale, kept in (("0.1", 0.1), (None, 0.1), ("0", None)):
        extra = [] if scale is None else ["--mm-per-px", scale]
        assert main(["train-defects", str(category / "test"), "--product", "Disc"] + extra + where) == 0
        assert load_model(tmp_path / "models", "Disc").mm_per_px == kept


def test_train_defects_refuses_a_mask_of_another_size(tmp_path, capsys):
    category = known_defects_category(tmp_path / "disc")
    cv2.imwrite(str(category / "ground_truth" / "stain" / "001_mask.png"), np.zeros((50, 60), np.uint8))
    where = ["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]
    assert main(["train", str(category / "train" / "good"), "--product", "Disc"] + where) == 0
    assert main(["train-defects", str(category / "train" / "good"), str(category / "test"), "--product", "Disc"]
                + where) == 2
    assert "is 60 x 50, its image 001.png 128 x 128" in capsys.readouterr().err
