"""The operator's actions (inspector.services) on generated parts, a real models folder and a
real SQLite log: every change makes a model version and an event; nothing else does."""
import re
import shutil
import threading
from dataclasses import replace

import pytest

from inspector.changes import Changes
from inspector.users import ENGINEER, User
from inspector import services
from inspector.common import login_name
from inspector.core.model import Settings
from inspector.core.model_store import current_version, load_model, save_model
from inspector.errors import Cancelled, ModelError, StoreError, TrainingError
from inspector.store.results import ResultStore
from inspector.synthetic import write_parts


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_parts(tmp_path_factory.mktemp("good"), 12, seed=0)


@pytest.fixture
def trained(tmp_path, good):
    """(models folder, store, model, features): 'Disc' trained through the service."""
    models = tmp_path / "models"
    store = ResultStore(tmp_path / "log.db")
    model, features = Changes(models, store, User("trainer", ENGINEER)).train("Disc", good[0].parent, Settings(sampling_ratio=0.02))
    yield models, store, model, features
    store.close()


def kinds(store, product):
    return [e.kind for e in store.events(product)]


def test_training_saves_a_version_and_records_who_and_what(trained, good):
    models, store, model, features = trained
    assert model.version == 1 and load_model(models, "Disc").model_id == model.model_id
    [event] = store.events("Disc")
    assert (event.kind, event.user, event.old) == ("train", "trainer (engineer)", None)
    assert event.new.startswith(f"version 1 (id {model.model_id})") and "12 good image(s)" in event.detail
    again, _ = Changes(models, store).train("Disc", good, Settings(sampling_ratio=0.02))
    newest = store.events("Disc")[0]
    assert again.version == 2 and newest.old.startswith("version 1") and newest.user == login_name()
    assert model.good_folder == str(good[0].parent) and again.good_folder is None  # from a folder, from files


def test_a_cancelled_or_failed_training_changes_nothing(trained, tmp_path):
    models, store, model, _ = trained
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        Changes(models, store).train("Disc", write_parts(tmp_path / "more", 6), Settings(), cancel=cancel)
    with pytest.raises(TrainingError):
        Changes(models, store).train("Disc", write_parts(tmp_path / "few", 2), Settings())
    assert current_version(models, "Disc") == 1 and kinds(store, "Disc") == ["train"]


def test_tolerance(trained):
    models, store, model, _ = trained
    new = Changes(models, store, User("engineer", ENGINEER)).set_tolerance("Disc", 1.0, expected_version=1)
    assert (new.version, new.settings.tolerance) == (2, 1.0) and new.threshold < model.threshold
    event = store.events("Disc")[0]
    assert (event.kind, event.user) == ("tolerance", "engineer") and "tolerance 3 -> 1" in event.detail
    with pytest.raises(ModelError, match="changed meanwhile"):  # the caller looked at version 1
        Changes(models, store).set_tolerance("Disc", 2.0, expected_version=1)
    with pytest.raises(ModelError, match="tolerance"):  # refused before anything is saved or recorded
        Changes(models, store).set_tolerance("Disc", 5000.0)
    assert current_version(models, "Disc") == 2 and kinds(store, "Disc") == ["tolerance", "train"]


def test_rebuilding_the_bank_from_kept_features_or_from_the_images(trained, good, tmp_path):
    models, store, model, features = trained
    kept, same = Changes(models, store).rebuild_bank("Disc", 0.05, good=features)
    assert same is features and kept.version == 2 and kept.settings.sampling_ratio == 0.05
    assert len(kept.memory_bank) > len(model.memory_bank) and kept.settings.tolerance == model.settings.tolerance
    reread, _ = Changes(models, store).rebuild_bank("Disc", 0.02, images=good[0].parent)
    assert reread.version == 3 and len(reread.memory_bank) == len(model.memory_bank)
    assert kinds(store, "Disc") == ["bank", "bank", "train"]
    assert "ratio 0.05 -> 0.02" in store.events("Disc")[0].detail
    recorded, _ = Changes(models, store).rebuild_bank("Disc", 0.03)  # no folder given: the one the model records
    assert recorded.version == 4 and f"from {good[0].parent}" in recorded.change
    assert model.good_folder == kept.good_folder == recorded.good_folder == str(good[0].parent)

    moved = shutil.copytree(good[0].parent, tmp_path / "copy")
    assert Changes(models, store).rebuild_bank("Disc", 0.02, images=moved)[0].good_folder == str(moved)
    moved.rename(tmp_path / "moved")
    with pytest.raises(TrainingError, match=f"good images {re.escape(str(moved))} is no longer there"):
        Changes(models, store).rebuild_bank("Disc", 0.1)
    save_model(replace(load_model(models, "Disc"), good_folder=None), models)  # as an older Inspector saved it
    with pytest.raises(TrainingError, match="does not say which folder its good images came from"):
        Changes(models, store).rebuild_bank("Disc", 0.1)
    assert current_version(models, "Disc") == 6 and kinds(store, "Disc") == ["bank"] * 4 + ["train"]


def test_products_create_rename_delete(trained, tmp_path):
    models, store, model, _ = trained
    assert Changes(models, store).create_product(" Gear ") == "Gear" and (models / "Gear").is_dir()
    with pytest.raises(ModelError, match="already exists"):
        Changes(models, store).create_product("Gear")
    Changes(models, store).rename_product("Disc", "Disc 2")
    assert load_model(models, "Disc 2").model_id == model.model_id
    assert kinds(store, "Disc 2") == ["rename", "train"] and kinds(store, "Disc") == []
    Changes(models, store, User("engineer", ENGINEER)).delete_product("Disc 2")
    assert not (models / "Disc 2").exists()
    event = store.events("Disc 2")[0]
    assert (event.kind, event.user, event.new) == ("delete", "engineer", None) and "version 1" in event.old
    # a new product under a name with history in the log: renaming onto it is refused and undone
    Changes(models, store).create_product("Disc 3")
    with pytest.raises(StoreError, match="already holds"):
        Changes(models, store).rename_product("Disc 3", "Disc 2")
    assert (models / "Disc 3").is_dir() and not (models / "Disc 2").exists()


def test_scoring_known_defects_reads_subfolders_logs_nothing_and_can_be_cancelled(trained, tmp_path):
    models, store, model, _ = trained
    write_parts(tmp_path / "defects" / "scratch", 2, "scratch", seed=50)
    write_parts(tmp_path / "defects" / "stain", 2, "stain", seed=60)
    (tmp_path / "defects" / "unreadable.png").write_bytes(b"nope")
    seen = []
    scores = services.score_defects(model, tmp_path / "defects", lambda *item: seen.append(item))
    assert len(scores.scores) == 4 and scores.escapes(model.threshold) == 0
    assert [p.name for p, _ in scores.problems] == ["unreadable.png"]
    assert [done for done, total, *_ in seen] == [1, 2, 3, 4, 5] and seen[-1][1] == 5
    assert store.count() == 0
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        services.score_defects(model, tmp_path / "defects", cancel=cancel)


def test_reinspecting_logs_nothing(trained, tmp_path):
    models, store, model, _ = trained
    [path] = write_parts(tmp_path / "ng", 1, "stain", seed=70)
    image, result, used = services.reinspect(models, "Disc", path)
    assert result.verdict == "NG" and used.version == 1 and image.shape == (256, 256, 3)
    assert store.count() == 0


def test_the_line_on_files_skips_what_is_logged_and_says_so(trained, tmp_path):
    models, store, model, _ = trained
    files = write_parts(tmp_path / "line", 3, seed=80)
    outcomes, messages = [], []
    for _ in range(2):
        services.run_line(models, store, "Disc", "file", files, threading.Event(), outcomes.append,
                          lambda level, text: messages.append(text))
    assert [o.record.verdict for o in outcomes] == ["OK"] * 3 and store.count() == 3
    assert {o.record.model_version for o in outcomes} == {1}
    assert messages == ["3 file(s) already in the log for 'Disc', skipped (see the history)."]
    with pytest.raises(ValueError):
        services.run_line(models, store, "Disc", "fax", files, threading.Event(), outcomes.append)


def test_good_parts_in_a_known_defects_folder_are_scored_as_good(trained, tmp_path):
    """bottle/test's layout: good/ beside one subfolder per kind of defect."""
    models, store, model, _ = trained
    write_parts(tmp_path / "test" / "good", 3, seed=51)
    write_parts(tmp_path / "test" / "scratch", 2, "scratch", seed=52)
    write_parts(tmp_path / "test" / "stain", 2, "stain", seed=53)
    scores = services.score_defects(model, tmp_path / "test")
    assert len(scores.scores) == 4 and len(scores.good_scores) == 3 and scores.kind_count() == 2
    assert set(scores.kinds) == {"scratch", "stain"}
    assert scores.describe() == "4 known defect(s) of 2 kind(s) and 3 good part(s) (its good/ subfolder, scored as good)"
    rates = services.rates(model, model.threshold, scores)
    assert (rates.escapes, rates.defects, rates.folder_good) == (0, 4, 3)  # no good part counted as an escape
    assert rates.folder_rejects == scores.good_rejects(model.threshold)
    low = services.rates(model, 0.0, scores)  # everything NG: every good part is a false reject
    assert low.folder_rejects == 3 and low.false_rejects == low.good and low.escapes == 0
    assert "3 of 3 good parts of the defects folder" in low.false_rejects_text()


def test_a_proposed_threshold_stays_on_the_good_side_and_says_what_it_rests_on(trained, tmp_path):
    models, store, model, _ = trained
    write_parts(tmp_path / "one" / "stain", 3, "stain", seed=54)
    one = services.score_defects(model, tmp_path / "one")
    proposal = services.propose_threshold(model, one)
    good = model.calibration.image_scores
    gap_low, gap_high = max(good), min(one.scores)
    # on the good side of the gap: nearer the good parts than midway, so milder defects do not pass
    assert gap_low < proposal.threshold <= (gap_low + gap_high) / 2 + 1e-9
    assert (proposal.defects, proposal.kinds, proposal.rates.escapes) == (3, 1, 0)
    assert "resting on 3 known defect(s) of 1 kind(s)" in proposal.describe()
    assert proposal.warning is not None and "only 3 known defect(s) of 1 kind(s)" in proposal.warning
    many = services.DefectScores(tmp_path)
    for i in range(12):
        many.add(tmp_path / ("scratch" if i % 2 else "stain") / f"{i}.png", gap_high + i)
    assert services.propose_threshold(model, many).warning is None  # 12 defects of 2 kinds
    with pytest.raises(TrainingError, match="No known defect"):
        services.propose_threshold(model, services.DefectScores(tmp_path))


def test_separating_threshold_leaves_a_margin_from_the_good_spread_not_the_middle_of_the_gap():
    from inspector.core.calibration import separating_threshold

    good = [10.0, 11.0, 12.0, 13.0, 14.0]  # robust spread about 1.5
    assert separating_threshold(good, [40.0, 41.0]) == pytest.approx(14.0 + 1.4826)
    assert separating_threshold(good, [14.5, 40.0]) == pytest.approx(14.25)  # a narrow gap: midway
    assert separating_threshold([1.0, 2.0, 3.0, 7.0], [4.0, 5.0, 6.0]) == pytest.approx(3.5)


def test_settings_are_checked_before_any_image_is_read(trained, tmp_path):
    models, store, model, _ = trained
    missing = [tmp_path / "not_read.png"]  # would fail if it were read
    for settings, what in ((Settings(tolerance=-3.0), "0 or more"), (Settings(sampling_ratio=7.0), "at most 1"),
                           (Settings(sampling_ratio=0.0), "more than 0")):
        with pytest.raises(TrainingError, match=what):
            Changes(models, store).train("Disc", missing, settings)
    with pytest.raises(TrainingError, match="0 or more"):
        Changes(models, store).set_tolerance("Disc", -5.0)
    with pytest.raises(TrainingError, match="at most 1"):
        Changes(models, store).rebuild_bank("Disc", 7.0, images=missing)
    assert current_version(models, "Disc") == 1 and kinds(store, "Disc") == ["train"]


def test_a_failed_training_lists_the_files_it_skipped_and_why(trained, tmp_path):
    models, store, model, _ = trained
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_bytes(b"not an image")
    with pytest.raises(TrainingError) as caught:
        Changes(models, store).train("Disc", folder, Settings())
    message = str(caught.value)
    assert "Only 0 usable good image(s)" in message and "Skipped 2 file(s)" in message
    assert "empty.png:" in message and "text.png:" in message


def test_rolling_back_to_a_version_that_does_not_exist_lists_those_that_do(trained):
    models, store, model, _ = trained
    Changes(models, store).set_tolerance("Disc", 2.0)
    with pytest.raises(ModelError, match=r"'Disc' has no version 99: its kept versions are 1, 2"):
        Changes(models, store).rollback("Disc", 99)


def test_a_path_that_does_not_exist_is_refused_before_anything_is_inspected(tmp_path, good):
    from inspector.errors import SourceError

    with pytest.raises(SourceError, match="No such file or folder: .*typo.png"):
        services.image_files([good[0], tmp_path / "typo.png"])
    assert len(services.image_files([good[0].parent])) == 12
