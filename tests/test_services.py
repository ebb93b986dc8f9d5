"""The operator's actions (inspector.services) on generated parts, a real models folder and a
real SQLite log: every change makes a model version and an event; nothing else does."""
import threading

import pytest

from inspector import services
from inspector.core.model import Settings, current_version, load_model
from inspector.errors import Cancelled, ModelError, StoreError, TrainingError
from inspector.store.results import ResultStore, login_name
from inspector.synthetic import write_parts


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_parts(tmp_path_factory.mktemp("good"), 12, seed=0)


@pytest.fixture
def trained(tmp_path, good):
    """(models folder, store, model, features): 'Disc' trained through the service."""
    models = tmp_path / "models"
    store = ResultStore(tmp_path / "log.db")
    model, features = services.train(models, store, "Disc", good[0].parent, Settings(sampling_ratio=0.02),
                                     user="trainer")
    yield models, store, model, features
    store.close()


def kinds(store, product):
    return [e.kind for e in store.events(product)]


def test_training_saves_a_version_and_records_who_and_what(trained, good):
    models, store, model, features = trained
    assert model.version == 1 and load_model(models, "Disc").model_id == model.model_id
    [event] = store.events("Disc")
    assert (event.kind, event.user, event.old) == ("train", "trainer", None)
    assert event.new.startswith(f"version 1 (id {model.model_id})") and "12 good image(s)" in event.detail
    again, _ = services.train(models, store, "Disc", good, Settings(sampling_ratio=0.02))
    newest = store.events("Disc")[0]
    assert again.version == 2 and newest.old.startswith("version 1") and newest.user == login_name()


def test_a_cancelled_or_failed_training_changes_nothing(trained, tmp_path):
    models, store, model, _ = trained
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        services.train(models, store, "Disc", write_parts(tmp_path / "more", 6), Settings(), cancel=cancel)
    with pytest.raises(TrainingError):
        services.train(models, store, "Disc", write_parts(tmp_path / "few", 2), Settings())
    assert current_version(models, "Disc") == 1 and kinds(store, "Disc") == ["train"]


def test_sensitivity(trained):
    models, store, model, _ = trained
    new = services.set_sensitivity(models, store, "Disc", 1.0, user="engineer", expected_version=1)
    assert (new.version, new.settings.sigma) == (2, 1.0) and new.threshold < model.threshold
    event = store.events("Disc")[0]
    assert (event.kind, event.user) == ("sensitivity", "engineer") and "sensitivity 3 -> 1" in event.detail
    with pytest.raises(ModelError, match="changed meanwhile"):  # the caller looked at version 1
        services.set_sensitivity(models, store, "Disc", 2.0, expected_version=1)
    with pytest.raises(ModelError, match="sigma"):  # refused before anything is saved or recorded
        services.set_sensitivity(models, store, "Disc", 5000.0)
    assert current_version(models, "Disc") == 2 and kinds(store, "Disc") == ["sensitivity", "train"]


def test_rebuilding_the_bank_from_kept_features_or_from_the_images(trained, good):
    models, store, model, features = trained
    kept, same = services.rebuild_bank(models, store, "Disc", 0.05, good=features)
    assert same is features and kept.version == 2 and kept.settings.sampling_ratio == 0.05
    assert len(kept.memory_bank) > len(model.memory_bank) and kept.settings.sigma == model.settings.sigma
    reread, _ = services.rebuild_bank(models, store, "Disc", 0.02, images=good[0].parent)
    assert reread.version == 3 and len(reread.memory_bank) == len(model.memory_bank)
    assert kinds(store, "Disc") == ["bank", "bank", "train"]
    assert "ratio 0.05 -> 0.02" in store.events("Disc")[0].detail
    with pytest.raises(TrainingError, match="good images"):
        services.rebuild_bank(models, store, "Disc", 0.1)


def test_products_create_rename_delete(trained, tmp_path):
    models, store, model, _ = trained
    assert services.create_product(models, store, " Gear ") == "Gear" and (models / "Gear").is_dir()
    with pytest.raises(ModelError, match="already exists"):
        services.create_product(models, store, "Gear")
    services.rename_product(models, store, "Disc", "Disc 2")
    assert load_model(models, "Disc 2").model_id == model.model_id
    assert kinds(store, "Disc 2") == ["rename", "train"] and kinds(store, "Disc") == []
    services.delete_product(models, store, "Disc 2", user="engineer")
    assert not (models / "Disc 2").exists()
    event = store.events("Disc 2")[0]
    assert (event.kind, event.user, event.new) == ("delete", "engineer", None) and "version 1" in event.old
    # a new product under a name with history in the log: renaming onto it is refused and undone
    services.create_product(models, store, "Disc 3")
    with pytest.raises(StoreError, match="already holds"):
        services.rename_product(models, store, "Disc 3", "Disc 2")
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
