"""Teaching a running station (issue 11): inspection regions, 'this part is good' / 'is a
defect', model versions and roll-back. Generated parts, a real models folder, a real SQLite
log, the real command line."""
import dataclasses
import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest

from inspector.changes import Changes
from inspector.users import ENGINEER, User
from inspector import changes, services
from inspector.cli import main
from inspector.core.model import Settings
from inspector.core.model_store import BANK_FILE, META_FILE, load_model, save_model
from inspector.core.roi import Shape, check_roi, roi_from_mask, roi_from_shapes
from inspector.core.scoring import Inspector
from inspector.core.training import teach, train, with_roi
from inspector.data.images import save_image
from inspector.errors import ModelError, TrainingError
from inspector.store.results import ResultStore
from inspector.synthetic import make_part, write_parts

SIZE = 256
DISC = np.zeros((SIZE, SIZE), np.uint8)
cv2.circle(DISC, (SIZE // 2, SIZE // 2), 86, 1, -1)  # the part; the tray around it is not inspected
DISC = DISC.astype(bool)


def blob(seed: int, centre: tuple[int, int]) -> np.ndarray:
    """A good part with a stain at `centre`."""
    image = make_part(seed)
    cv2.circle(image, centre, 10, (150, 60, 20), -1)
    return image


def drifted(seed: int, noise: int | None = None) -> np.ndarray:
    """A good part under brighter light (a lighting drift, a new batch of material); with
    `noise` (a seed), the same part shot again: other sensor noise."""
    image = make_part(seed).astype(np.float32) * 1.35 + 10
    if noise is not None:
        image += np.random.default_rng(noise).normal(0, 3.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def labelled(seed: int, text: str) -> np.ndarray:
    """A good part with a label on the tray that carries a changing date code."""
    image = make_part(seed)
    cv2.rectangle(image, (150, 200), (250, 250), (235, 235, 235), -1)
    cv2.putText(image, text, (154, 235), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (20, 20, 20), 2)
    return image


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_parts(tmp_path_factory.mktemp("good"), 12, seed=0)


@pytest.fixture(scope="module")
def disc_model(good):
    """Trained to inspect the disc only."""
    return train("Disc", good, Settings(), roi=DISC)[0]


@pytest.fixture
def station(tmp_path, good):
    """(models folder, store, model): 'Disc' trained through the service, whole image."""
    models = tmp_path / "models"
    store = ResultStore(tmp_path / "log.db")
    model, _ = Changes(models, store, User("trainer", ENGINEER)).train("Disc", good, Settings())
    yield models, store, model
    store.close()


# ---- 1. the inspection region ------------------------------------------------------------------

def test_a_defect_outside_the_region_is_ok_inside_it_is_ng(disc_model):
    inside, outside = Inspector(disc_model), Inspector(with_roi(disc_model, None))
    on_tray, on_disc = blob(50, (22, 22)), blob(50, (178, 128))
    assert outside.inspect(on_tray).verdict == "NG"  # the stain is found when the tray counts...
    result = inside.inspect(on_tray)
    assert result.verdict == "OK" and result.regions == []  # ...and ignored when it does not
    assert result.anomaly_map[~DISC].max() == 0.0  # nothing outside the region is drawn either
    result = inside.inspect(on_disc)
    assert result.verdict == "NG" and result.regions
    for r in result.regions:  # the boxes lie on the disc
        assert DISC[r.y:r.y + r.h, r.x:r.x + r.w].mean() > 0.5


def test_an_exclude_area_over_a_changing_label_stops_its_false_rejects(tmp_path):
    paths = [save_image(tmp_path / f"{i}.png", labelled(i, "LOT")) for i in range(12)]
    model = train("Labelled", paths, Settings())[0]
    rng = np.random.default_rng(0)
    parts = [labelled(100 + i, f"{rng.integers(1000, 9999)}") for i in range(8)]
    before = [Inspector(model).inspect(p).verdict for p in parts]
    assert before.count("NG") >= 4, before  # the new date codes make false rejects
    label = Shape(((140, 190), (256, 256)), include=False, kind="rectangle")
    excluded = with_roi(model, roi_from_shapes([label], (SIZE, SIZE)))
    assert [Inspector(excluded).inspect(p).verdict for p in parts] == ["OK"] * 8


def test_shapes_and_mask_files_make_the_same_region(tmp_path):
    square = Shape(((0, 0), (100, 100)), kind="rectangle")
    hole = Shape(((20, 20), (80, 20), (50, 70)), include=False)  # a triangle, 2x on a 512 px image
    roi = roi_from_shapes([square, hole], (512, 512))
    assert roi.shape == (512, 512)  # kept at the image's size (at most 1024 px): stretched over each image
    assert roi[10, 10] and not roi[30, 50] and not roi[120, 120]  # in the square, in the hole, outside
    assert roi.sum() == pytest.approx(100 * 100 - 0.5 * 60 * 50, rel=0.15)
    assert roi_from_shapes([], (512, 512)) is None
    assert roi_from_shapes([hole], (512, 512)).mean() > 0.9  # only an exclude area: the rest
    assert roi_from_shapes([square], (4000, 2000)).shape == (512, 1024)
    mask = np.zeros((600, 400), np.uint8)  # any size and depth: stretched like the images
    mask[:300] = 255
    save_image(tmp_path / "mask.png", np.dstack([mask] * 3))
    from_file = roi_from_mask(tmp_path / "mask.png")
    assert from_file.shape == (600, 400) and from_file[:300].all() and not from_file[300:].any()
    with pytest.raises(ModelError, match="covers no patch"):
        check_roi(np.zeros((SIZE, SIZE), bool))


def test_a_new_region_needs_no_good_image_and_calibrates_as_training_with_it(tmp_path, disc_model):
    folder = tmp_path / "good"
    paths = write_parts(folder, 12, seed=0)
    models = tmp_path / "models"
    with ResultStore(tmp_path / "log.db") as store:
        Changes(models, store).train("Disc", folder, Settings())
        shutil.rmtree(folder)  # the good images are gone: the region still changes
        changed = Changes(models, store, User("engineer", ENGINEER)).set_region("Disc", DISC)
        [event] = store.events("Disc")[:1]
    assert not paths[0].exists() and changed.version == 2
    assert changed.calibration == disc_model.calibration  # the same as training with the region
    assert np.array_equal(changed.roi, DISC) and np.array_equal(load_model(models, "Disc").roi, DISC)
    assert (event.kind, event.user) == ("region", "engineer")
    assert "the whole image" in event.old and "a region of" in event.new


def test_the_region_is_saved_with_the_model_and_checksummed(tmp_path, disc_model):
    saved = save_model(disc_model, tmp_path)
    loaded = load_model(tmp_path, "Disc")
    assert np.array_equal(loaded.roi, DISC) and loaded.threshold == disc_model.threshold
    assert np.array_equal(loaded.calibration_patch_scores, disc_model.calibration_patch_scores)
    bank = tmp_path / "Disc" / f"v{saved.version:04d}" / BANK_FILE
    data = bytearray(bank.read_bytes())
    data[-1] ^= 1  # one bit of the arrays
    bank.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_model(tmp_path, "Disc")


def test_a_model_without_calibration_patch_scores_loads_but_must_be_retrained_to_change(tmp_path, disc_model):
    """As a model saved in format 2 (before regions): it inspects; a region or teaching asks
    for a training."""
    old = dataclasses.replace(disc_model, roi=None, calibration_patch_scores=None)
    save_model(old, tmp_path)
    folder = tmp_path / "Disc" / "v0001"
    meta = json.loads((folder / META_FILE).read_text()) | {"format_version": 2}
    meta["checksum"] = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k not in ("checksum", "signature")},
                                                 sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (folder / META_FILE).write_text(json.dumps(meta))
    loaded = load_model(tmp_path, "Disc", signed=False)  # unsigned: as an engineer re-signs it
    assert loaded.roi is None and loaded.calibration_patch_scores is None
    assert Inspector(loaded).inspect(make_part(3)).verdict == "OK"
    for change in (lambda m: with_roi(m, DISC), lambda m: teach(m, np.zeros((1, 32, 32, 152), np.float32))):
        with pytest.raises(TrainingError, match="train the product again"):
            change(loaded)


def test_cli_train_with_a_region_and_change_it(tmp_path, good, capsys):
    mask = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask[DISC] = 255
    save_image(tmp_path / "mask.png", mask)
    common = ["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]
    assert main(["train", str(good[0].parent), "--product", "Disc", "--roi", str(tmp_path / "mask.png")] + common) == 0
    assert load_model(tmp_path / "models", "Disc").roi.mean() == pytest.approx(DISC.mean(), abs=0.01)
    assert main(["region", "--clear", "--product", "Disc"] + common) == 0
    assert load_model(tmp_path / "models", "Disc").roi is None and "now called" not in capsys.readouterr().err
    assert main(["roi", str(tmp_path / "mask.png"), "--product", "Disc"] + common) == 0  # its older name
    assert "'inspector roi' is now called 'inspector region'" in capsys.readouterr().err
    assert load_model(tmp_path / "models", "Disc").roi is not None
    assert main(["region", "--product", "Disc"] + common) == 2  # neither a mask nor --clear


# ---- 2. 'this part is good', 'this part is a defect' --------------------------------------------

def test_a_taught_part_and_its_like_pass_and_defects_still_fail(station, tmp_path):
    models, store, model = station
    rejected = save_image(tmp_path / "drift_60.png", drifted(60))
    before = Inspector(model)
    assert [before.inspect(drifted(60, noise)).verdict for noise in (None, 1)] == ["NG", "NG"]
    taught = Changes(models, store, User("engineer", ENGINEER)).teach("Disc", [rejected])
    new = taught.model
    assert new.version == 2 and load_model(models, "Disc").model_id == new.model_id
    assert taught.scores_before[0] >= model.threshold > 0 and taught.scores_after[0] < new.threshold
    after = Inspector(new)
    assert after.inspect(drifted(60, noise=1)).verdict == "OK"  # the part shot again passes too
    assert [after.inspect(make_part(s, defect="scratch")).verdict for s in (70, 71, 72)] == ["NG"] * 3
    assert len(new.memory_bank) > len(model.memory_bank)
    assert len(new.calibration.image_scores) == len(model.calibration.image_scores) + 1
    assert taught.scores_before[0] in new.calibration.image_scores  # its score joined the calibration
    assert new.counts["taught_images"] == 1
    old_rate, new_rate = taught.false_reject_rates()
    assert (old_rate, new_rate) == (model.calibration.false_reject_rate(model.threshold),
                                    new.calibration.false_reject_rate(new.threshold))
    event = store.events("Disc")[0]
    assert (event.kind, event.user) == ("teach", "engineer") and "drift_60.png" in event.detail


def test_a_taught_part_stays_taught_through_rebuilds_and_trainings(station, tmp_path, good):
    """The taught image is kept with the product: a rebuild of the memory bank (from features
    kept from the training or from the images) and a new training use it with the good images."""
    models, store, model = station
    rejected = save_image(tmp_path / "drift_60.png", drifted(60))
    Changes(models, store).teach("Disc", [rejected])
    [kept] = services.list_images(services.taught_dir(models, "Disc"))
    assert kept.name == "drift_60.png" and kept.read_bytes() == rejected.read_bytes()
    rejected.unlink()  # the operator's file is gone; the product keeps its copy
    features = train("Disc", good, Settings())[1]  # as the desktop keeps them after its training
    rebuilt = [Changes(models, store).rebuild_bank("Disc", 0.02, good=features)[0],
               Changes(models, store).rebuild_bank("Disc", 0.02, images=good[0].parent)[0],
               Changes(models, store).train("Disc", good[0].parent, Settings())[0]]
    for new in rebuilt:
        assert new.counts["good_images"] == len(good) + 1
        assert Inspector(new).inspect(drifted(60, noise=1)).verdict == "OK"
    assert "1 taught good image(s)" in store.events("Disc")[0].detail
    assert "1 taught good image(s)" in rebuilt[0].change
    kept.unlink()  # deleted there: left out from then on
    assert Changes(models, store).train("Disc", good[0].parent, Settings())[0].counts["good_images"] == len(good)


def test_a_rebuild_from_kept_features_says_the_taught_images_in_them_and_drops_deleted_ones(station, tmp_path, good):
    """The desktop keeps the features of its last rebuild, the taught image's among them: the
    next rebuild from them says it uses that image, and leaves it out once it is deleted."""
    models, store, model = station
    Changes(models, store).teach("Disc", [save_image(tmp_path / "drift_60.png", drifted(60))])
    [kept] = services.list_images(services.taught_dir(models, "Disc"))
    first, features = Changes(models, store).rebuild_bank("Disc", 0.02, images=good[0].parent)
    assert kept in features.paths and "1 taught good image(s)" in first.change
    again, features = Changes(models, store).rebuild_bank("Disc", 0.03, good=features)
    assert again.counts["good_images"] == len(good) + 1 and "1 taught good image(s)" in again.change
    kept.unlink()
    left_out, features = Changes(models, store).rebuild_bank("Disc", 0.02, good=features)
    assert left_out.counts["good_images"] == len(good) and kept not in features.paths
    assert "taught" not in left_out.change
    assert Inspector(left_out).inspect(drifted(60, noise=1)).verdict == "NG"


def test_a_taught_part_is_kept_only_when_the_model_is_saved(station, tmp_path, monkeypatch):
    models, store, model = station
    rejected = save_image(tmp_path / "drift_60.png", drifted(60))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(changes, "save_model", full)
    with pytest.raises(OSError):
        Changes(models, store).teach("Disc", [rejected])
    assert services.list_images(services.taught_dir(models, "Disc")) == []
    assert load_model(models, "Disc").version == 1


def test_teaching_keeps_the_region(disc_model):
    inspector = Inspector(disc_model)
    brighter = np.clip(drifted(60).astype(np.float32) * 1.2, 0, 255).astype(np.uint8)
    taught, [before] = teach(disc_model, [inspector.features(brighter)])
    assert np.array_equal(taught.roi, disc_model.roi) and before >= disc_model.threshold
    assert Inspector(taught, extractor=inspector.extractor).inspect(brighter).verdict == "OK"


def test_cli_teach_shows_the_threshold_and_the_false_reject_rate(station, tmp_path, capsys):
    models, store, model = station
    store.close()
    path = save_image(tmp_path / "drift.png", drifted(60))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    common = ["--models-dir", str(models), "--db", str(tmp_path / "log.db")]
    assert main(["teach", str(path), str(tmp_path / "broken.png"), "--product", "Disc"] + common) == 0
    out, err = capsys.readouterr()
    new = load_model(models, "Disc")
    assert f"threshold {model.threshold:.4g} -> {new.threshold:.4g}" in out
    assert "expected false rejects" in out and "OK " in out and "broken.png" in err


def test_a_confirmed_defect_joins_the_known_defects_that_calibration_scores(station, tmp_path, capsys):
    models, store, model = station
    ng = write_parts(tmp_path / "ng", 2, "scratch", seed=80)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(TrainingError, match="broken.png"):
        Changes(models, store).add_known_defects("Disc", [ng[0], tmp_path / "broken.png"])
    assert not services.known_defects_dir(models, "Disc").exists()  # nothing of a refused batch
    copies = Changes(models, store, User("engineer", ENGINEER)).add_known_defects("Disc", ng)
    again = Changes(models, store).add_known_defects("Disc", ng[:1])
    assert len({*copies, *again}) == 3 and all(c.parent == services.known_defects_dir(models, "Disc") for c in copies)
    assert [e.kind for e in store.events("Disc")][:2] == ["defect", "defect"]
    assert load_model(models, "Disc").version == 1  # the model itself is unchanged
    store.close()
    assert main(["calibrate", "--product", "Disc", "--models-dir", str(models), "--db", str(tmp_path / "log.db")]) == 0
    out = capsys.readouterr().out
    assert "escapes 0 of 3 known defects" in out and "Proposed: threshold" in out


# ---- 3. versions -------------------------------------------------------------------------------

def test_versions_list_what_changed_and_roll_back(station, tmp_path, capsys):
    models, store, model = station
    Changes(models, store).set_tolerance("Disc", 1.0)
    Changes(models, store).set_region("Disc", DISC)
    kept = services.versions(models, "Disc")
    assert [v["version"] for v in kept] == [3, 2, 1]
    assert [v["change"].split()[0] for v in kept] == ["inspection", "tolerance", "trained"]
    back = Changes(models, store, User("engineer", ENGINEER)).rollback("Disc", 1)
    assert back.version == 4 and back.roi is None and back.threshold == model.threshold
    assert np.array_equal(back.memory_bank, model.memory_bank) and "rollback to version 1" in back.change
    event = store.events("Disc")[0]
    assert (event.kind, event.user) == ("rollback", "engineer") and event.old.startswith("version 3")
    with pytest.raises(ModelError, match="has no version 9: its kept versions are 1, 2, 3, 4"):
        Changes(models, store).rollback("Disc", 9)
    store.close()
    common = ["--models-dir", str(models), "--db", str(tmp_path / "log.db")]
    capsys.readouterr()
    assert main(["models", "--product", "Disc"] + common) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["4", "3", "2", "1"] and "rollback to version 1" in lines[0]
    assert main(["rollback", "--product", "Disc", "--version", "3"] + common) == 0
    assert load_model(models, "Disc").version == 5 and np.array_equal(load_model(models, "Disc").roi, DISC)


def test_every_version_carries_the_time_it_was_made(station, tmp_path):
    """The versions list shows when each version was made: a tolerance, a region, a taught
    part or a roll-back made today is not dated at the training it comes from."""
    models, store, model = station
    save_model(dataclasses.replace(model, created="2020-01-02T03:04:05+00:00"), models)  # trained long ago
    Changes(models, store).set_tolerance("Disc", 2.0)
    Changes(models, store).set_region("Disc", DISC)
    Changes(models, store).teach("Disc", [save_image(tmp_path / "drift_60.png", drifted(60))])
    Changes(models, store).rollback("Disc", 2)
    kept = services.versions(models, "Disc")
    assert [v["version"] for v in kept] == [6, 5, 4, 3, 2, 1]
    assert kept[-2]["created"].startswith("2020-01-02")
    assert not any(v["created"].startswith("2020") for v in kept[:4])
