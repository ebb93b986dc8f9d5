"""Saving and loading product models: round trip, atomic replace, and every kind of damage."""
import json

import numpy as np
import pytest

from inspector.core.model import (BANK_FILE, META_FILE, Calibration, Model, Settings, check_product_name,
                                  delete_model, list_models, load_model, rename_model, save_model, save_sigma)
from inspector.errors import ModelError


def make_model(product="Gear 7", seed=0) -> Model:
    bank = np.random.default_rng(seed).normal(size=(40, 152)).astype(np.float32)
    return Model(product, Settings(), bank, Calibration([1.0, 1.5, 2.0, 2.5], 0.4, 0.1, "holdout"),
                 {"good_images": 20}, created="2026-01-01T00:00:00+00:00", versions={"inspector": "t"})


def test_round_trip(tmp_path):
    model = make_model()
    folder = save_model(model, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted([META_FILE, BANK_FILE])
    loaded = load_model(tmp_path, "Gear 7")
    assert np.array_equal(loaded.memory_bank, model.memory_bank)
    assert loaded.settings == model.settings and loaded.calibration == model.calibration
    assert loaded.model_id == model.model_id and len(model.model_id) == 12
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["threshold"] == pytest.approx(model.threshold)
    assert [m["product"] for m in list_models(tmp_path)] == ["Gear 7"]


def test_replacing_a_model_leaves_no_staging_folders(tmp_path):
    save_model(make_model(seed=0), tmp_path)
    second = make_model(seed=1)
    save_model(second, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["Gear 7"]
    assert load_model(tmp_path, "Gear 7").model_id == second.model_id


def test_new_sigma_moves_the_threshold_and_keeps_the_bank(tmp_path):
    model = make_model()
    save_model(model, tmp_path)
    before = model.threshold
    save_sigma(model, tmp_path, 1.0)
    loaded = load_model(tmp_path, "Gear 7")
    assert loaded.settings.sigma == 1.0 and loaded.threshold < before
    assert loaded.model_id == model.model_id


def test_tampered_bank_is_refused(tmp_path):
    folder = save_model(make_model(), tmp_path)
    data = bytearray((folder / BANK_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / BANK_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_model(tmp_path, "Gear 7")


@pytest.mark.parametrize("damage, message", [
    (lambda m: "{not json", "damaged"),
    (lambda m: json.dumps(m | {"format": "other"}), "not an Inspector model"),
    (lambda m: json.dumps(m | {"format_version": 99}), "format 99"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "calibration"}), "incomplete or damaged"),
    (lambda m: json.dumps(m | {"settings": m["settings"] | {"backbone": "vgg"}}), "does not know"),
])
def test_damaged_metadata_is_refused(tmp_path, damage, message):
    folder = save_model(make_model(), tmp_path)
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(damage(meta))
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path, "Gear 7")


def test_missing_model_and_missing_bank(tmp_path):
    with pytest.raises(ModelError, match="train the product first"):
        load_model(tmp_path, "Nope")
    folder = save_model(make_model(), tmp_path)
    (folder / BANK_FILE).unlink()
    with pytest.raises(ModelError, match="cannot be read"):
        load_model(tmp_path, "Gear 7")


def test_bank_of_the_wrong_shape_is_refused(tmp_path):
    model = make_model()
    model.memory_bank = model.memory_bank[:, :100]
    save_model(model, tmp_path)
    with pytest.raises(ModelError, match="shape"):
        load_model(tmp_path, "Gear 7")


def test_product_names(tmp_path):
    assert check_product_name("  Gear 7 ") == "Gear 7"
    assert check_product_name("Prüfteil_ß-検査") == "Prüfteil_ß-検査"
    for bad in ("", ".hidden", "a/b", "a\\b", "x" * 65, "con:"):
        with pytest.raises(ModelError):
            check_product_name(bad)


def test_rename_and_delete(tmp_path):
    save_model(make_model(), tmp_path)
    rename_model(tmp_path, "Gear 7", "Gear 8")
    assert load_model(tmp_path, "Gear 8").product == "Gear 8"
    save_model(make_model("Gear 7"), tmp_path)
    with pytest.raises(ModelError, match="already exists"):
        rename_model(tmp_path, "Gear 7", "Gear 8")
    delete_model(tmp_path, "Gear 8")
    assert [m["product"] for m in list_models(tmp_path)] == ["Gear 7"]
