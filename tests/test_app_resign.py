"""Signing a refused model version from the window's versions view (Teach tab), as
`inspector models --resign` does: an engineer's, asked first, recorded as an event."""
import shutil

from conftest import PRODUCT, WAIT
from PySide6.QtWidgets import QMessageBox

from inspector.core.model_store import load_model
from inspector.store.results import ResultStore


def test_an_engineer_signs_a_refused_version_and_an_operator_cannot(open_window, trained_models, tmp_path, qtbot,
                                                                    answer_box):
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)  # without the key that signed it: another station's model
    window = open_window(models, engineer=False)
    versions = window.teach.versions
    window.tabs.setCurrentWidget(window.teach)
    assert window.session.model is None  # refused: not signed by this station
    versions.table.selectRow(0)
    assert "not signed by this station" in versions.change.text()
    assert not versions.resign.isEnabled() and "only the engineer may sign a model" in versions.locked.text()
    versions.sign(confirm=False)  # the lock holds whatever calls it
    assert len(list(models.joinpath(PRODUCT).glob("v*"))) == 1

    window.session.unlock("2468")
    versions.table.selectRow(0)
    assert versions.resign.isEnabled() and not versions.rollback.isEnabled()
    seen = []
    answer_box(QMessageBox.StandardButton.Yes, seen)
    versions.resign.click()
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    assert "Sign version 1" in seen[0] and "not signed by this station" in seen[0]
    assert window.session.model.version == 2 == load_model(models, PRODUCT).version
    with ResultStore(tmp_path / "inspections.db") as store:
        [event] = [e for e in store.events(PRODUCT) if e.kind == "resign"]
    assert event.user == "Eve (engineer)" and event.old.startswith("version 1") and event.new.startswith("version 2")
    versions.table.selectRow(0)  # version 2 is signed: nothing to sign
    assert not versions.resign.isEnabled()
