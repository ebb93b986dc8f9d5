"""Saving and loading product models: immutable versions, every kind of damage, older
formats, crashes mid-save and loading while another process saves."""
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from inspector.core import model as model_module
from inspector.core.calibration import Calibration
from inspector.core.model import Model, Settings, check_product_name, with_tolerance
from inspector.core.model_store import (BANK_FILE, FORMAT_FIELDS, KEEP_VERSIONS, META_FILE, _bank_bytes, current_version,
                                        delete_model, list_models, load_model, rename_model, save_model)
from inspector.errors import ModelError


def make_model(product="Gear 7", seed=0) -> Model:
    bank = np.random.default_rng(seed).normal(size=(40, 152)).astype(np.float32)
    return Model(product, Settings(defect_size=8.0), bank, Calibration([1.0, 1.5, 2.0, 2.5], 0.4, 0.1, "5-fold"),
                 {"good_images": 20}, created="2026-01-01T00:00:00+00:00", libraries={"inspector": "t"})


def test_round_trip(tmp_path):
    model = make_model()
    saved = save_model(model, tmp_path, change="trained")
    folder = tmp_path / "Gear 7" / "v0001"
    assert sorted(p.name for p in folder.iterdir()) == sorted([META_FILE, BANK_FILE])
    assert saved.version == 1 and len(saved.model_id) == 12 and saved.change == "trained"
    loaded = load_model(tmp_path, "Gear 7")
    assert np.array_equal(loaded.memory_bank, model.memory_bank)
    assert loaded.settings == model.settings and loaded.calibration == model.calibration
    assert (loaded.model_id, loaded.version, loaded.change) == (saved.model_id, 1, "trained")
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["threshold"] == pytest.approx(model.threshold) and meta["checksum"].startswith(saved.model_id)
    assert [(m["product"], m["version"]) for m in list_models(tmp_path)] == [("Gear 7", 1)]


def test_a_model_is_immutable():
    model = make_model()
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.settings.tolerance = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.calibration = None
    with pytest.raises(ValueError):
        model.memory_bank[0, 0] = 1.0


def test_every_change_is_a_new_version_and_the_old_ones_stay(tmp_path):
    first = save_model(make_model(), tmp_path)
    second = save_model(with_tolerance(first, 1.0), tmp_path)
    assert (first.version, second.version) == (1, 2) and second.model_id != first.model_id
    assert second.threshold < first.threshold and second.change == "tolerance 3 -> 1"
    assert current_version(tmp_path, "Gear 7") == 2
    now = load_model(tmp_path, "Gear 7")
    assert now.version == 2 and now.settings.tolerance == 1.0 and np.array_equal(now.memory_bank, first.memory_bank)
    before = load_model(tmp_path, "Gear 7", version=1)
    assert before.settings.tolerance == 3.0 and before.model_id == first.model_id
    assert not [p for p in (tmp_path / "Gear 7").iterdir() if p.name.startswith(".")]  # no staging left


def test_the_folder_of_good_images_is_kept_checksummed_and_optional(tmp_path):
    """The folder a model's good images came from (which a rebuild reads again) is saved with
    it, kept by a derived version and covered by the checksum; only an absolute path is
    valid; a model without it, as an older Inspector saved it, loads with None."""
    older = save_model(make_model(), tmp_path)
    assert "good_folder" not in json.loads((tmp_path / "Gear 7" / "v0001" / META_FILE).read_text())
    assert load_model(tmp_path, "Gear 7").good_folder is None
    good = str(tmp_path / "good")
    save_model(with_tolerance(dataclasses.replace(older, good_folder=good), 2.0), tmp_path)
    assert load_model(tmp_path, "Gear 7").good_folder == good
    assert save_model(with_tolerance(load_model(tmp_path, "Gear 7"), 1.0), tmp_path).good_folder == good
    assert load_model(tmp_path, "Gear 7").good_folder == good
    folder = tmp_path / "Gear 7" / "v0003"
    original = (folder / META_FILE).read_text()
    rewrite(folder, lambda m: json.dumps(m | {"good_folder": str(tmp_path / "elsewhere")}))
    with pytest.raises(ModelError, match="checksum"):
        load_model(tmp_path, "Gear 7")
    for odd in ("good", 5, [good]):
        (folder / META_FILE).write_text(original)
        rewrite(folder, lambda m: json.dumps(m | {"good_folder": odd}), checksum=True)
        with pytest.raises(ModelError, match="folder of good images"):
            load_model(tmp_path, "Gear 7", signed=False)
    with pytest.raises(ModelError, match="not an absolute path"):
        save_model(dataclasses.replace(older, good_folder="good"), tmp_path)
    assert current_version(tmp_path, "Gear 7") == 3


def test_the_last_versions_are_kept(tmp_path):
    model = make_model()
    for i in range(KEEP_VERSIONS + 3):
        model = save_model(with_tolerance(model, 1.0 + i), tmp_path)
    names = sorted(p.name for p in (tmp_path / "Gear 7").iterdir())
    assert names == [f"v{n:04d}" for n in range(4, KEEP_VERSIONS + 4)]
    assert load_model(tmp_path, "Gear 7").version == KEEP_VERSIONS + 3


def test_an_invalid_model_is_never_saved(tmp_path):
    bad = dataclasses.replace(make_model(), calibration=Calibration([1.0, float("nan")], 0.4, 0.1, "holdout"))
    with pytest.raises(ModelError, match="image_scores"):
        save_model(bad, tmp_path)
    (tmp_path / "Gear 7").write_text("a file where the product's folder belongs")
    with pytest.raises(ModelError, match="Cannot save"):
        save_model(make_model(), tmp_path)


def test_format_version_changes_with_the_fields():
    """A field added to Settings or Calibration changes what model.json holds: the format
    needs a new version (an upgrade step, FORMAT_FIELDS) so that older Inspectors refuse it
    clearly and this one loads the older files with known values for the new field."""
    assert FORMAT_FIELDS == {
        "settings": tuple(f.name for f in dataclasses.fields(Settings)),
        "calibration": tuple(f.name for f in dataclasses.fields(Calibration))}, \
        "Settings or Calibration changed: add the step to the next format to UPGRADES (core/model_store.py)"


# ---- damage --------------------------------------------------------------------------------

def rewrite(folder, change, checksum=False):
    """Edit model.json; with `checksum`, write a matching checksum too (as a buggy writer would)."""
    meta = json.loads((folder / META_FILE).read_text())
    text = change(meta)
    if checksum:
        meta = json.loads(text, parse_constant=float)
        meta["checksum"] = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k not in ("checksum", "signature")},
                                                     sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        text = json.dumps(meta)
    (folder / META_FILE).write_text(text)


def edit(section, **values):
    return lambda m: json.dumps(m | {section: m[section] | values})


DAMAGE = {  # name: (edit of model.json, message)
    "scores x10": (lambda m: json.dumps(m | {"calibration": m["calibration"] | {
        "image_scores": [s * 10 for s in m["calibration"]["image_scores"]]}}), "checksum"),
    "scores NaN": (lambda m: json.dumps(m).replace('"image_scores": [1.0', '"image_scores": [NaN'), "NaN"),
    "tolerance Infinity": (lambda m: json.dumps(m).replace('"tolerance": 3.0', '"tolerance": Infinity'), "Infinity"),
    "defect size changed": (edit("settings", defect_size=4.0), "checksum"),
    "string for a number": (edit("settings", sampling_ratio="0.01"), "checksum"),
    "threshold edited": (lambda m: json.dumps(m | {"threshold": 99.0}), "checksum"),
    "no calibration": (lambda m: json.dumps({k: v for k, v in m.items() if k != "calibration"}), "checksum"),
    "not JSON": (lambda m: "{not json", "damaged"),
    "other format": (lambda m: json.dumps(m | {"format": "other"}), "not an Inspector model"),
    "newer format": (lambda m: json.dumps(m | {"format_version": 99}), "format 99"),
    "no checksum": (lambda m: json.dumps({k: v for k, v in m.items() if k != "checksum"}), "checksum"),
}
# the same damage with a matching checksum: validation must still refuse it
DAMAGE_WITH_CHECKSUM = {
    "tolerance huge": (edit("settings", tolerance=1e308), "tolerance is 1e"),
    "string for a number": (edit("settings", sampling_ratio="0.01"), "sampling_ratio"),
    "bool for a number": (edit("settings", defect_size=True), "defect_size"),
    "negative std": (edit("calibration", pixel_std=-1.0), "pixel_std"),
    "one score": (edit("calibration", image_scores=[1.0]), "image_scores"),
    "scores x10": (lambda m: json.dumps(m | {"calibration": m["calibration"] | {
        "image_scores": [s * 10 for s in m["calibration"]["image_scores"]]}}), "threshold"),
    "unknown backbone": (edit("settings", backbone="vgg"), "backbone"),
    "unknown setting": (edit("settings", colour="red"), "unknown settings colour"),
    "retired setting": (edit("settings", holdout=0.2), "unknown settings holdout"),
    "missing setting": (lambda m: json.dumps(m | {"settings": {k: v for k, v in m["settings"].items()
                                                               if k != "weights"}}), "lacks the settings weights"),
    "no settings": (lambda m: json.dumps({k: v for k, v in m.items() if k != "settings"}), "no settings"),
    "bank digest": (lambda m: json.dumps(m | {"bank": m["bank"] | {"sha256": "0" * 64}}), "memory bank"),
    "bank file": (lambda m: json.dumps(m | {"bank": m["bank"] | {"file": "../x"}}), "bank file"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_model_json_is_refused(tmp_path, name):
    change, message = DAMAGE[name]
    save_model(make_model(), tmp_path)
    rewrite(tmp_path / "Gear 7" / "v0001", change)
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path, "Gear 7")


@pytest.mark.parametrize("name", list(DAMAGE_WITH_CHECKSUM))
def test_damage_with_a_matching_checksum_is_refused(tmp_path, name):
    change, message = DAMAGE_WITH_CHECKSUM[name]
    save_model(make_model(), tmp_path)
    rewrite(tmp_path / "Gear 7" / "v0001", change, checksum=True)
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path, "Gear 7")


def leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    elif isinstance(value, list) and value:
        yield from leaves(value[0], path + (0,))
    else:
        yield path


def set_leaf(meta, path, value):
    meta = json.loads(json.dumps(meta))
    target = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return meta


def test_any_field_set_to_any_odd_value_is_a_model_error_or_a_valid_model(tmp_path):
    """Every leaf of model.json set to a string, null, a negative or huge number, a list or
    an object, with and without a matching checksum: never a traceback, never an invalid model."""
    save_model(make_model(), tmp_path)
    folder = tmp_path / "Gear 7" / "v0001"
    original = json.loads((folder / META_FILE).read_text())
    tried = 0
    for path in leaves(original):
        for value in ("x", None, -1, 1e308, [], {}, True):
            for checksum in (False, True):
                rewrite(folder, lambda m: json.dumps(set_leaf(m, path, value)), checksum)
                tried += 1
                try:
                    loaded = load_model(tmp_path, "Gear 7")
                except ModelError:
                    continue
                assert checksum, f"{path} = {value!r} was accepted without a matching checksum"
                model_module.validate(loaded)
                assert np.isfinite(loaded.threshold)
        (folder / META_FILE).write_text(json.dumps(original))
    assert tried > 300


def test_tampered_bank_is_refused(tmp_path):
    save_model(make_model(), tmp_path)
    bank = tmp_path / "Gear 7" / "v0001" / BANK_FILE
    data = bytearray(bank.read_bytes())
    data[-1] ^= 0xFF
    bank.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_model(tmp_path, "Gear 7")


@pytest.mark.parametrize("bank, message", [
    (np.zeros((0, 152), np.float32), "N >= 1"),
    (np.zeros((4, 100), np.float32), "100 values per patch"),
    (np.full((4, 152), np.inf, np.float32), "not finite"),
])
def test_a_bank_that_matches_its_checksum_but_cannot_decide_is_refused(tmp_path, bank, message):
    save_model(make_model(), tmp_path)
    folder = tmp_path / "Gear 7" / "v0001"
    data = _bank_bytes(bank)
    (folder / BANK_FILE).write_bytes(data)
    rewrite(folder, lambda m: json.dumps(m | {"bank": m["bank"] | {"sha256": hashlib.sha256(data).hexdigest()}}),
            checksum=True)
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path, "Gear 7")


def test_missing_model_and_missing_bank(tmp_path):
    with pytest.raises(ModelError, match="train the product first"):
        load_model(tmp_path, "Nope")
    save_model(make_model(), tmp_path)
    (tmp_path / "Gear 7" / "v0001" / BANK_FILE).unlink()
    with pytest.raises(ModelError, match="cannot be read"):
        load_model(tmp_path, "Gear 7")


# ---- older formats ---------------------------------------------------------------------------

def save_format_1(model: Model, models_dir, added: tuple[str, ...] = ("weights", "feature_version")):
    """A model as Inspector wrote it with format 1: model.json and the bank directly in the
    product's folder, only the bank checksummed; its settings held the fields `added` of
    those that came later (the backbone weight file, then the feature version)."""
    folder = models_dir / model.product
    folder.mkdir(parents=True)
    data = _bank_bytes(model.memory_bank)
    (folder / BANK_FILE).write_bytes(data)
    settings = {("sigma" if k == "tolerance" else k): v for k, v in dataclasses.asdict(model.settings).items()
                if k in added or k not in ("weights", "feature_version")}
    digest = hashlib.sha256(data).hexdigest()
    meta = {"format": "inspector-model", "format_version": 1, "product": model.product, "model_id": digest[:12],
            "created": model.created, "versions": model.libraries, "settings": settings, "counts": model.counts,
            "threshold": model.threshold, "pixel_threshold": model.pixel_threshold,
            "calibration": dataclasses.asdict(model.calibration), "bank_sha256": digest}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return digest[:12]


def test_format_1_models_are_refused_until_an_engineer_signs_them(tmp_path):
    """Models written before models were signed are refused; re-signing reads them checked in
    full but for the signature, and saves them signed as a new version."""
    model = make_model()
    save_format_1(model, tmp_path)
    with pytest.raises(ModelError, match="not signed by this station.*before models were signed.*--resign"):
        load_model(tmp_path, "Gear 7")
    assert "not signed" in list_models(tmp_path)[0]["error"]
    found = load_model(tmp_path, "Gear 7", signed=False)
    assert (found.version, found.settings) == (1, model.settings)
    assert found.threshold == pytest.approx(model.threshold)
    signed = save_model(found, tmp_path)
    assert signed.version == 2 and load_model(tmp_path, "Gear 7").model_id == signed.model_id
    assert [(m["product"], m["version"]) for m in list_models(tmp_path)] == [("Gear 7", 2)]


@pytest.mark.parametrize("added", [(), ("weights",)])
def test_format_1_models_of_the_first_patch_features_ask_for_retraining(tmp_path, added):
    """Before the feature version was stored, models held features of version 1, which this
    Inspector cannot score: refused as such, not as damaged."""
    save_format_1(make_model(), tmp_path, added)
    with pytest.raises(ModelError, match="patch features of version 1.*Train the product again"):
        load_model(tmp_path, "Gear 7")
    assert "features of version 1" in list_models(tmp_path)[0]["error"]


def test_format_1_edits_of_the_thresholds_are_refused(tmp_path):
    """Format 1 checksummed only the bank; scores edited without the stored threshold still show."""
    save_format_1(make_model(), tmp_path)
    rewrite(tmp_path / "Gear 7", lambda m: json.dumps(m | {"calibration": m["calibration"] | {
        "image_scores": [s * 10 for s in m["calibration"]["image_scores"]]}}))
    with pytest.raises(ModelError, match="stores the threshold"):
        load_model(tmp_path, "Gear 7")


def _as_format_4(meta: dict) -> dict:
    """model.json as format 4 named the tolerance (`sigma`) and the library versions (`versions`)."""
    meta = {("versions" if k == "libraries" else k): v for k, v in meta.items()}
    return meta | {"settings": {("sigma" if k == "tolerance" else k): v for k, v in meta["settings"].items()}}


@pytest.mark.parametrize("fmt", [1, 2, 3, 4])
def test_older_formats_are_upgraded_step_by_step_to_the_newest(tmp_path, fmt):
    """Settings as formats 1 to 3 stored them (images squashed to image_size, a held-out
    fraction, no smallest defect size) and the names of format 4 and older (`sigma` for the
    tolerance, `versions` for the library versions) load as the same model in the newest format."""
    model = dataclasses.replace(make_model(), settings=Settings(image_size=256, tolerance=2.5))
    if fmt == 1:
        save_format_1(model, tmp_path)
    else:
        save_model(model, tmp_path)
    folder = tmp_path / "Gear 7" / ("" if fmt == 1 else "v0001")
    older = {"defect_size"} if fmt < 4 else set()
    rewrite(folder, lambda m: json.dumps(_as_format_4(m) | {"format_version": fmt} | {"settings": {
        k: v for k, v in _as_format_4(m)["settings"].items() if k not in older} | ({"holdout": 0.2} if older else {})}),
        checksum=fmt > 1)
    assert '"sigma": 2.5' in (folder / META_FILE).read_text()
    loaded = load_model(tmp_path, "Gear 7", signed=False)
    assert (loaded.version, loaded.settings, loaded.calibration) == (1, model.settings, model.calibration)
    assert loaded.libraries == model.libraries and loaded.threshold == pytest.approx(model.threshold)
    assert np.array_equal(loaded.memory_bank, model.memory_bank)


def test_a_model_left_in_old_by_a_crash_of_format_1_saving_is_recovered(tmp_path):
    save_format_1(make_model(), tmp_path)
    os.replace(tmp_path / "Gear 7", tmp_path / ".Gear 7.old")  # the crash window of the old save
    assert load_model(tmp_path, "Gear 7", signed=False).version == 1
    assert (tmp_path / "Gear 7" / META_FILE).is_file() and not (tmp_path / ".Gear 7.old").exists()


# ---- crashes and concurrency -------------------------------------------------------------------

SAVER = """
import sys, numpy as np
from inspector.core.calibration import Calibration
from inspector.core.model import Model, Settings
from inspector.core.model_store import save_model
bank = np.random.default_rng(0).normal(size=(2000, 152)).astype(np.float32)
print("ready", flush=True)
for i in range(int(sys.argv[2])):
    model = Model("Gear 7", Settings(defect_size=8.0, tolerance=1.0 + i % 7), bank,
                  Calibration([1.0, 1.5, 2.0, 2.5], 0.4, 0.1, "5-fold"))
    save_model(model, sys.argv[1])
"""


def test_kill_9_while_saving_always_leaves_a_complete_model(tmp_path):
    first = save_model(make_model(), tmp_path)
    for _ in range(5):
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), "100000"], stdout=subprocess.PIPE)
        assert saver.stdout.readline().strip() == b"ready"
        start = current_version(tmp_path, "Gear 7")
        deadline = time.monotonic() + 120  # generous: a loaded 2-core machine
        while current_version(tmp_path, "Gear 7") < start + 2:  # a few saves done, one under way
            assert saver.poll() is None and time.monotonic() < deadline, "the saver stopped saving"
            time.sleep(0.001)
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        saver.stdout.close()
        model = load_model(tmp_path, "Gear 7")
        assert model.version > first.version
    # the staging folders a kill leaves behind are ignored, and cleared once stale
    staging = [p for p in (tmp_path / "Gear 7").iterdir() if p.name.startswith(".staging-")]
    for path in staging:
        os.utime(path, (0, 0))
    save_model(make_model(), tmp_path)
    assert not [p for p in (tmp_path / "Gear 7").iterdir() if p.name.startswith(".staging-")]


def test_loading_while_another_process_saves(tmp_path):
    save_model(make_model(), tmp_path)
    saver = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), "60"], stdout=subprocess.PIPE)
    assert saver.stdout.readline().strip() == b"ready"
    loads, versions = 0, set()
    while saver.poll() is None:
        model = load_model(tmp_path, "Gear 7")  # never "damaged", "no model" or "cannot be read"
        versions.add(model.version)
        loads += 1
    saver.stdout.close()
    assert saver.returncode == 0 and loads > 0
    assert load_model(tmp_path, "Gear 7").version == 61


# ---- products ------------------------------------------------------------------------------------

def test_product_names(tmp_path):
    assert check_product_name("  Gear 7 ") == "Gear 7"
    assert check_product_name("Prüfteil_ß-検査") == "Prüfteil_ß-検査"
    for bad in ("", ".hidden", "a/b", "a\\b", "x" * 65, "con:"):
        with pytest.raises(ModelError):
            check_product_name(bad)


def test_rename_and_delete(tmp_path):
    saved = save_model(make_model(), tmp_path)
    save_model(with_tolerance(saved, 2.0), tmp_path)
    assert rename_model(tmp_path, "Gear 7", "Gear 8") == "Gear 8"
    renamed = load_model(tmp_path, "Gear 8")
    assert renamed.product == "Gear 8" and renamed.version == 2
    assert load_model(tmp_path, "Gear 8", version=1).model_id == saved.model_id  # history moved along
    save_model(make_model("Gear 7"), tmp_path)
    with pytest.raises(ModelError, match="already exists"):
        rename_model(tmp_path, "Gear 7", "Gear 8")
    delete_model(tmp_path, "Gear 8")
    assert [m["product"] for m in list_models(tmp_path)] == ["Gear 7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Gear 7"]
    with pytest.raises(ModelError, match="no product"):
        delete_model(tmp_path, "Gear 8")


# ---- a models folder that others can write (issue 19) -----------------------------------------

def _resum(meta: dict) -> dict:
    """The checksum an editor can always recompute (it is no secret)."""
    meta["checksum"] = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k not in ("checksum", "signature")},
                                                 sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return meta


def test_a_model_edited_to_claim_the_first_format_is_refused(tmp_path):
    """The edit of the issue: format 1 (no checksum), the bank's digest kept, the thresholds
    deleted, tolerance 50: the station must not load it, nor log a model id it chose."""
    saved = save_model(make_model(), tmp_path)
    path = tmp_path / "Gear 7" / "v0001" / META_FILE
    meta = json.loads(path.read_text())
    bank = meta.pop("bank")
    for name in ("checksum", "signature", "threshold", "pixel_threshold"):
        meta.pop(name)
    meta |= {"format_version": 1, "bank_sha256": bank["sha256"], "model_id": saved.model_id}
    meta["settings"]["tolerance"] = 50.0
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not signed by this station"):
        load_model(tmp_path, "Gear 7")
    found = load_model(tmp_path, "Gear 7", signed=False)  # what an engineer would re-sign
    assert found.settings.tolerance == 50.0 and found.model_id != saved.model_id  # the id of what is there


@pytest.mark.parametrize("edit_", ["scores x10", "tolerance 50", "another key"])
def test_a_model_edited_with_a_matching_checksum_is_refused(tmp_path, edit_):
    save_model(make_model(), tmp_path)
    path = tmp_path / "Gear 7" / "v0001" / META_FILE
    meta = json.loads(path.read_text())
    if edit_ == "scores x10":  # every part passes; the stored threshold deleted, as format 2 allows
        meta["calibration"]["image_scores"] = [10 * s for s in meta["calibration"]["image_scores"]]
        del meta["threshold"], meta["pixel_threshold"]
    elif edit_ == "tolerance 50":
        meta["settings"]["tolerance"] = 50.0
        meta["threshold"] = Calibration(**meta["calibration"]).image_threshold(50.0)
        meta["pixel_threshold"] = Calibration(**meta["calibration"]).pixel_threshold(50.0)
    else:  # signed with another key: another station's model
        meta["signature"] = "0" * 64
    path.write_text(json.dumps(_resum(meta)))
    with pytest.raises(ModelError, match="not signed by this station.*edited"):
        load_model(tmp_path, "Gear 7")
    assert "not signed" in list_models(tmp_path)[0]["error"]


def test_the_station_key_is_created_once_readable_by_its_owner_only(tmp_path):
    from inspector.signing import key_path

    models = tmp_path / "models"
    save_model(make_model(), models)
    key = key_path(models)
    assert key == tmp_path / "station.key" and key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    save_model(make_model(), models)
    assert key.read_bytes() == before and load_model(models, "Gear 7").version == 2
    key.unlink()  # a new key: every model is another station's
    with pytest.raises(ModelError, match="not signed by this station"):
        load_model(models, "Gear 7")


def test_a_version_folder_copied_from_another_product_or_version_is_refused(tmp_path):
    import shutil

    save_model(make_model("Gear 7"), tmp_path)
    save_model(make_model("Gear 8", seed=1), tmp_path)
    save_model(with_tolerance(load_model(tmp_path, "Gear 8"), 2.0), tmp_path)
    shutil.copytree(tmp_path / "Gear 8" / "v0001", tmp_path / "Gear 7" / "v0003")  # another product's
    meta = json.loads((tmp_path / "Gear 7" / "v0003" / META_FILE).read_text())
    (tmp_path / "Gear 7" / "v0003" / META_FILE).write_text(json.dumps(_resum(meta | {"version": 3})))
    with pytest.raises(ModelError, match="not signed by this station.*another product"):
        load_model(tmp_path, "Gear 7")
    shutil.copytree(tmp_path / "Gear 8" / "v0001", tmp_path / "Gear 8" / "v0004")  # an old version as the newest
    with pytest.raises(ModelError, match="version 4 of 'Gear 8' holds version 1"):
        load_model(tmp_path, "Gear 8")
    rename_model(tmp_path, "Gear 8", "Gear 9")  # a rename keeps the signed versions signed
    assert load_model(tmp_path, "Gear 9", version=2).settings.tolerance == 2.0


def _healthy_and(tmp_path, damage) -> str:
    """Gear 7 healthy, Gear 8 damaged by `damage(folder)`; the error loading Gear 8."""
    save_model(make_model("Gear 7"), tmp_path)
    save_model(make_model("Gear 8"), tmp_path)
    damage(tmp_path / "Gear 8" / "v0001")
    listed = {m["product"]: m for m in list_models(tmp_path)}
    assert "error" not in listed["Gear 7"] and listed["Gear 7"]["version"] == 1, "a bad product hid a good one"
    with pytest.raises(ModelError) as caught:
        load_model(tmp_path, "Gear 8")
    return str(caught.value)


def _edit_text(change):
    def damage(folder):
        path = folder / META_FILE
        path.write_text(change(path.read_text()))
    return damage


def _fifo(name):
    def damage(folder):
        (folder / name).unlink()
        os.mkfifo(folder / name)
    return damage


def _dev_zero(folder):
    (folder / BANK_FILE).unlink()
    (folder / BANK_FILE).symlink_to("/dev/zero")


def _checksummed(section, **values):
    def damage(folder):
        meta = json.loads((folder / META_FILE).read_text())
        meta[section] |= values
        (folder / META_FILE).write_text(json.dumps(_resum(meta)))
    return damage


MODEL_DAMAGE = {  # name: (damage, what the message says)
    "tolerance 1e999": (_edit_text(lambda t: t.replace('"tolerance": 3.0', '"tolerance": 1e999')), "damaged.*1e999"),
    "threshold 1e999": (_edit_text(lambda t: t.replace('"threshold": ', '"threshold": 1e999, "x": ', 1)), "1e999"),
    "nested 200000 deep": (_edit_text(lambda t: t.replace('"counts": {', '"counts": {"x": ' + "[" * 200_000
                                                          + "]" * 200_000 + ", ", 1)), "damaged"),
    "model.json a named pipe": (_fifo(META_FILE), "named pipe"),
    "bank a named pipe": (_fifo(BANK_FILE), "named pipe"),
    "bank linked to /dev/zero": (_dev_zero, "a device"),
    "min_region_area 1e9": (_checksummed("settings", min_region_area=10 ** 9), "min_region_area"),
}


@pytest.mark.skipif(os.name == "nt", reason="named pipes and /dev/zero are POSIX")
@pytest.mark.parametrize("name", list(MODEL_DAMAGE))
def test_damaged_models_are_a_clear_error_and_never_hide_the_others(tmp_path, name):
    damage, message = MODEL_DAMAGE[name]
    error = _healthy_and(tmp_path, damage)
    assert re.search(message, error), error
    if BANK_FILE not in name and "bank" not in name:  # the list reads model.json, not the bank
        assert "error" in {m["product"]: m for m in list_models(tmp_path)}["Gear 8"]


def test_the_models_command_lists_every_product_when_one_is_damaged(tmp_path, capsys):
    from inspector.cli import main

    _healthy_and(tmp_path / "models", _edit_text(lambda t: t.replace('"tolerance": 3.0', '"tolerance": 1e999')))
    assert main(["models", "--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "x.db")]) == 0
    out = capsys.readouterr().out
    assert "Gear 7 (number 1): version 1" in out and "Gear 8 (number 2): " in out and "damaged" in out
